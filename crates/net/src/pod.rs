//! The seam between the agent and the pod network: the agent makes a pod's
//! network namespace and asks a [`PodNetwork`] to wire it.

use std::net::IpAddr;
use std::path::Path;

use crate::Result;

/// The pod a network operation is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What a pod got from the network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodAddresses {
    /// The pod's addresses (status.podIPs), the primary first; empty when it
    /// has none.
    pub ips: Vec<IpAddr>,
}

/// Wires a pod's network namespace into the node's pod network.
///
/// `setup` must be idempotent: the agent calls it again for a pod it adopts
/// after a restart, and it must then return the addresses the pod already has.
#[async_trait::async_trait]
pub trait PodNetwork: Send + Sync + 'static {
    async fn setup(&self, pod: &PodRef, netns: &Path) -> Result<PodAddresses>;
    async fn teardown(&self, pod: &PodRef, netns: &Path) -> Result<()>;
}

/// No pod network: the pod's namespace has only `lo` (brought up when the
/// namespace is made), and the pod has no address.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoopbackOnly;

#[async_trait::async_trait]
impl PodNetwork for LoopbackOnly {
    async fn setup(&self, _pod: &PodRef, _netns: &Path) -> Result<PodAddresses> {
        Ok(PodAddresses::default())
    }

    async fn teardown(&self, _pod: &PodRef, _netns: &Path) -> Result<()> {
        Ok(())
    }
}
