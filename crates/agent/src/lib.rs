//! skiff-agent: the node agent. It registers its Node, keeps the node's
//! Lease fresh, and turns the pods bound to its node into running containers
//! through containerd, reporting their status back through the API server.
//!
//! Module map:
//! - `runtime`: the seam to the container runtime (`Runtime` trait) and its
//!   containerd implementation; the only module that speaks to containerd.
//! - `agent`: [`Agent`] (wiring and the run loop), [`AgentOptions`] and
//!   [`run_agent`] for `skiff agent` and the agent inside `skiff server`.
//! - `config`: [`AgentConfig`].
//! - `client`: connecting to the API server (CA from `/cacerts`, token hash).
//! - `node`: Node registration, status and Lease heartbeat.
//! - `pods`: the pod workers (sandbox, containers, volumes, probes, status).
//! - `events`: core/v1 Events as the kubelet writes them.
//! - `logs`: container log files and `kubectl logs` semantics.
//! - `http`: the agent's HTTP endpoints (container logs) as an axum router.

pub mod addons;
pub mod agent;
pub mod client;
pub mod config;
pub mod events;
pub mod healthcheck;
pub mod http;
pub mod https;
pub mod images;
pub mod logs;
pub mod network;
pub mod node;
pub mod pods;
pub mod proxy;
pub mod runtime;
pub mod stream;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use agent::{run_agent, start_agent, start_agent_with, Agent, AgentError, AgentOptions};
pub use config::AgentConfig;
