//! skiff-agent: the node agent. It registers its Node, keeps the node's
//! Lease fresh, and turns the pods bound to its node into running containers
//! through containerd, reporting their status back through the API server.
//!
//! Module map:
//! - `runtime`: the seam to the container runtime (`Runtime` trait) and its
//!   containerd implementation; the only module that speaks to containerd.

pub mod runtime;
