//! skiff-net: the pod network. It is the only crate that speaks netlink (and,
//! later, nftables).
//!
//! Module map:
//! - [`netns`]: network namespaces pinned by a bind mount, and running code
//!   inside one (probes connect from there).
//! - [`pod`]: the [`PodNetwork`] seam the agent calls to wire a pod's netns
//!   (addresses, routes), with [`LoopbackOnly`] until the bridge network lands.
//! - [`bridge`]: [`bridge::BridgeNetwork`], the per-node bridge pod network
//!   (veth per pod, host-gw routes to other nodes, pod egress masquerade).
//! - [`ipam`]: pod addresses from the node's podCIDR, persisted on disk.
//! - [`proxy`]: the service proxy, one nftables table (`ip skiff`).

pub mod bridge;
pub mod conntrack;
pub mod ipam;
pub mod netns;
mod nfnetlink;
pub mod pod;
pub mod proxy;
pub mod vxlan;

pub use pod::{LoopbackOnly, PodAddresses, PodNetwork, PodRef};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("netns {path}: {message}")]
    Netns { path: String, message: String },
    #[error("netlink in netns {path}: {message}")]
    Netlink { path: String, message: String },
    #[error("pod network for {pod}: {message}")]
    Pod { pod: String, message: String },
    #[error("nftables: {message}")]
    Nftables { message: String },
    #[error("ipam {dir}: {message}")]
    Ipam { dir: String, message: String },
    #[error("node network: {message}")]
    Node { message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
