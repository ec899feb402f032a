//! skiff-net: the pod network. It is the only crate that speaks netlink (and,
//! later, nftables).
//!
//! Module map:
//! - [`netns`]: network namespaces pinned by a bind mount, and running code
//!   inside one (probes connect from there).
//! - [`pod`]: the [`PodNetwork`] seam the agent calls to wire a pod's netns
//!   (addresses, routes), with [`LoopbackOnly`] until the bridge network lands.

pub mod netns;
pub mod pod;

pub use pod::{LoopbackOnly, PodAddresses, PodNetwork, PodRef};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("netns {path}: {message}")]
    Netns { path: String, message: String },
    #[error("netlink in netns {path}: {message}")]
    Netlink { path: String, message: String },
    #[error("pod network for {pod}: {message}")]
    Pod { pod: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
