//! skiff-apiserver: the Kubernetes REST API over a [`skiff_store::Store`].
//!
//! Entry points: [`Config`] and [`start`], which binds the HTTPS listener and
//! returns a [`Running`] server. Requests flow `listener` (TLS, identity) →
//! `server` (routing, authentication, metrics) → `handlers` (the verbs) →
//! the store; `watch` streams changes; `discovery` and `skiff_api::openapi`
//! answer what clients ask before they do anything.

mod alloc;
mod bootstrap;
mod discovery;
mod error;
mod handlers;
mod listener;
mod metrics;
mod nodeproxy;
mod objects;
mod patch;
mod query;
mod request;
mod selectors;
mod server;
pub mod serviceaccount;
mod services;
mod stream;
mod table;
pub mod tls;
mod watch;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

pub use error::ApiError;
pub use server::{start, Running};

/// Everything the API server needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where TLS material lives (`<data-dir>/tls`).
    pub tls_dir: PathBuf,
    pub bind: SocketAddr,
    /// Addresses to put in the serving certificate besides the standard ones.
    pub extra_sans: Vec<IpAddr>,
    /// The address other nodes and the `kubernetes` Endpoints use.
    pub advertise: IpAddr,
    /// The service CIDRs, one per family, the primary first (`--service-cidr`).
    pub service_cidr: skiff_api::families::DualCidr,
    pub node_port_range: (u16, u16),
    /// The secret of the join token nodes present as a bearer token (the
    /// part after `::server:` in `K10<ca hash>::server:<secret>`).
    pub node_token: String,
}

/// Shared state of a running API server.
pub struct Api {
    pub(crate) store: skiff_store::DynStore,
    pub(crate) alloc: alloc::Allocator,
    pub(crate) metrics: metrics::Metrics,
    pub(crate) config: Config,
    pub(crate) tls: tls::ClusterTls,
    /// TLS towards node agents (pods/log and, later, exec and port-forward).
    pub(crate) agent_tls: Arc<rustls::ClientConfig>,
    /// Signs and verifies service account tokens.
    pub(crate) signer: serviceaccount::Signer,
}

pub type SharedApi = Arc<Api>;
