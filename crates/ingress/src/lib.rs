//! skiff-ingress: the HTTP(S) ingress proxy every node runs.
//!
//! [`run`] follows Ingresses, IngressClasses, Services, EndpointSlices and
//! Secrets through the API (kube-runtime reflectors), turns them into an
//! immutable routing snapshot ([`model::build`] → [`model::Routes`]), swaps it
//! into a [`RoutesHandle`] and serves with [`serve`]. [`serve`] needs no API
//! server: tests and benchmarks hand it a snapshot of their own.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

#[cfg(feature = "bench")]
pub mod bench;
pub mod metrics;
pub mod model;
mod proxy;
mod tls;
mod watch;

pub use metrics::Metrics;
pub use model::{Objects, Route, Routes, Upstream};
pub use proxy::{serve, Serving, ACCESS_LOG};
pub use tls::self_signed;
pub use watch::run;

/// How a node's ingress proxy listens and behaves.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// Plain HTTP listener (`0.0.0.0:80` on a node).
    pub http: SocketAddr,
    /// HTTPS listener (`0.0.0.0:443` on a node).
    pub https: SocketAddr,
    /// Written to `status.loadBalancer.ingress` of served Ingresses.
    pub node_addresses: Vec<IpAddr>,
    /// The IngressClass served (and created if absent): `skiff`.
    pub class: String,
    /// Whether this proxy writes Ingress status.
    pub update_status: bool,
    /// Connecting to an endpoint.
    pub connect_timeout: Duration,
    /// From sending a request upstream to its response head.
    pub response_timeout: Duration,
    /// Largest request body forwarded.
    pub max_body_bytes: u64,
    /// How long an endpoint that refused a connection gets no traffic.
    pub eject_for: Duration,
    /// How long to gather API changes before one rebuild.
    pub debounce: Duration,
    /// Data-path threads (each a single-threaded runtime with its own
    /// listeners and upstream pool); defaults to the number of CPUs.
    pub workers: usize,
    /// Where requests are counted; mount [`Metrics::encode`] at `/metrics`.
    pub metrics: Metrics,
}

impl IngressConfig {
    /// The defaults with these listeners.
    pub fn new(http: SocketAddr, https: SocketAddr) -> IngressConfig {
        IngressConfig {
            http,
            https,
            node_addresses: Vec::new(),
            class: "skiff".to_string(),
            update_status: true,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            max_body_bytes: 64 << 20,
            eject_for: Duration::from_secs(10),
            debounce: Duration::from_millis(50),
            metrics: Metrics::new(),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// The proxy's metrics in the Prometheus text format.
pub fn metrics(config: &IngressConfig) -> String {
    config.metrics.encode()
}

/// Errors of the ingress proxy.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("ingress: binding {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("ingress: TLS setup: {0}")]
    Tls(String),
    #[error("ingress: creating IngressClass {0}: {1}")]
    Class(String, kube::Error),
}

/// The routing snapshot in force; swapping it is atomic, and requests in
/// flight keep the snapshot they started with. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct RoutesHandle(Arc<ArcSwap<Routes>>);

impl RoutesHandle {
    pub fn new(routes: Routes) -> RoutesHandle {
        RoutesHandle(Arc::new(ArcSwap::from_pointee(routes)))
    }

    /// Put a new snapshot in force.
    pub fn store(&self, routes: Routes) {
        self.0.store(Arc::new(routes));
    }

    /// The snapshot in force.
    pub fn load(&self) -> arc_swap::Guard<Arc<Routes>> {
        self.0.load()
    }
}
