//! The node agent as one value: [`Agent::new`] wires the pieces,
//! [`Agent::run`] registers the node and runs its pods until shutdown.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use skiff_net::PodNetwork;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::events::Recorder;
use crate::node::{Machine, NodeAgent};
use crate::pods::{self, Ctx, KubeApi};
use crate::runtime::Runtime;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("data dir {path}: {message}")]
    DataDir { path: String, message: String },
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error("--node-ip: {0}")]
    NodeIp(String),
    #[error(transparent)]
    Https(#[from] crate::https::HttpsError),
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
}

/// Where pods get their network from.
enum Network {
    /// Given by the caller (tests; [`skiff_net::LoopbackOnly`]).
    Fixed(Arc<dyn PodNetwork>),
    /// The node's bridge, set up once the server has given the node a podCIDR.
    Bridge(crate::network::NetworkOptions),
}

/// A node agent, ready to run.
pub struct Agent {
    config: AgentConfig,
    runtime: Arc<dyn Runtime>,
    network: Network,
    client: kube::Client,
}

impl Agent {
    pub fn new(
        config: AgentConfig,
        runtime: Arc<dyn Runtime>,
        network: Arc<dyn PodNetwork>,
        client: kube::Client,
    ) -> Agent {
        Agent { config, runtime, network: Network::Fixed(network), client }
    }

    /// An agent whose pods join the node's bridge network (with the service
    /// proxy, unless `opts.proxy` is off).
    pub fn with_bridge(
        config: AgentConfig,
        runtime: Arc<dyn Runtime>,
        opts: crate::network::NetworkOptions,
        client: kube::Client,
    ) -> Agent {
        Agent { config, runtime, network: Network::Bridge(opts), client }
    }

    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// State for [`crate::http::router`] (container logs).
    pub fn http_state(&self) -> crate::http::State {
        crate::http::State {
            pods_dir: self.config.pods_dir(),
            node_name: self.config.node_name.clone(),
            runtime: self.runtime.clone(),
        }
    }

    /// The agent's HTTP endpoints (to be served behind TLS by the caller).
    pub fn router(&self) -> axum::Router {
        crate::http::router(self.http_state())
    }

    /// Register the node, keep its Lease and status fresh, and run its pods
    /// until `shutdown`. Containers keep running when the agent stops.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AgentError> {
        let cfg = self.config.clone();
        for dir in [cfg.pods_dir(), cfg.netns_dir()] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| AgentError::DataDir { path: dir.display().to_string(), message: e.to_string() })?;
        }
        let runtime_version = match self.runtime.version().await {
            Ok(v) => crate::node::runtime_version(&v),
            Err(e) => {
                tracing::warn!(error = %e, "asking the runtime for its version failed");
                cfg.container_runtime_version.clone()
            }
        };
        let own_mounts = std::fs::read_link("/proc/self/ns/mnt").ok();
        if own_mounts.is_some() && own_mounts != std::fs::read_link("/proc/1/ns/mnt").ok() {
            tracing::warn!(
                "the agent runs in a mount namespace of its own (under `ip netns exec`?): containerd cannot see the \
                 network namespaces and tmpfs volumes it mounts, so pods will fail to start; run it in the host's \
                 mount namespace (e.g. `nsenter --net=/run/netns/NAME skiff agent ...`)"
            );
        }
        let machine = Machine::measure(&cfg.data_dir);
        let events_stop = CancellationToken::new();
        let (recorder, events) = Recorder::new(self.client.clone(), cfg.node_name.clone(), events_stop.clone());
        let events = tokio::spawn(events);
        // the HTTPS endpoint the API server proxies logs to; a taken port is fatal
        let https_addr = std::net::SocketAddr::new(cfg.node_ip, cfg.kubelet_port);
        let https =
            crate::https::start(&self.client, &cfg.node_name, https_addr, self.router(), shutdown.clone()).await?;
        let node = NodeAgent { config: cfg.clone(), client: self.client.clone(), machine, runtime_version };
        let node = tokio::spawn(node.run(shutdown.clone()));
        let network: Arc<dyn PodNetwork> = match &self.network {
            Network::Fixed(n) => n.clone(),
            Network::Bridge(opts) => match crate::network::start(&self.client, &cfg, opts, &shutdown).await {
                Ok(bridge) => Arc::new(bridge),
                Err(crate::network::NetworkError::Stopped(_)) => {
                    let _ = node.await;
                    https.abort();
                    events_stop.cancel();
                    let _ = events.await;
                    return Ok(());
                }
                Err(e) => {
                    shutdown.cancel();
                    let _ = node.await;
                    https.abort();
                    events_stop.cancel();
                    let _ = events.await;
                    return Err(e.into());
                }
            },
        };
        let api = Arc::new(KubeApi::new(self.client.clone()));
        let ctx = Arc::new(Ctx::new(cfg.clone(), self.runtime.clone(), network, api.clone(), api, recorder));
        tracing::info!(node = %cfg.node_name, ip = %cfg.node_ip, data_dir = %cfg.data_dir.display(), "node agent running");
        pods::run(ctx, self.client.clone(), shutdown.clone()).await;
        let _ = node.await;
        https.abort();
        // let queued events go out
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        events_stop.cancel();
        let _ = events.await;
        tracing::info!("node agent stopped; its containers keep running");
        Ok(())
    }
}

/// How `skiff agent` (and the agent inside `skiff server`) starts.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// `https://host:port` of the API server.
    pub server: String,
    /// The join token (also the bearer token).
    pub token: String,
    /// The cluster CA when already known (the embedded agent); else fetched from `/cacerts`.
    pub ca_pem: Option<String>,
    /// Default: the machine's hostname.
    pub node_name: Option<String>,
    /// Default: the address this machine uses to reach the server.
    pub node_ip: Option<IpAddr>,
    /// A dual-stack node's IPv6 InternalIP (the IPv6 entry of `--node-ip`);
    /// default, when `--cluster-cidr` is dual-stack: the first global IPv6
    /// address on the interface that holds `node_ip`.
    pub node_ip_v6: Option<std::net::Ipv6Addr>,
    /// The agent's own directory (pods, logs, netns), e.g. `<data-dir>/agent`.
    pub data_dir: PathBuf,
    pub container_runtime_endpoint: PathBuf,
    /// containerd namespace for this agent's containers.
    pub containerd_namespace: String,
    pub cluster_dns: IpAddr,
    pub cluster_domain: String,
    pub kubelet_port: u16,
    /// The pod network; `None`: pods get only loopback.
    pub network: Option<crate::network::NetworkOptions>,
}

impl AgentOptions {
    pub fn new(server: impl Into<String>, token: impl Into<String>, data_dir: impl Into<PathBuf>) -> AgentOptions {
        AgentOptions {
            server: server.into(),
            token: token.into(),
            ca_pem: None,
            node_name: None,
            node_ip: None,
            node_ip_v6: None,
            data_dir: data_dir.into(),
            container_runtime_endpoint: PathBuf::from("/run/containerd/containerd.sock"),
            containerd_namespace: "k8s.io".into(),
            cluster_dns: IpAddr::from([10, 96, 0, 10]),
            cluster_domain: "cluster.local".into(),
            kubelet_port: 10250,
            network: None,
        }
    }
}

/// The address this machine would use to reach `server` (no packet is sent).
fn route_ip(server: &str) -> Option<IpAddr> {
    let uri: http::Uri = server.parse().ok()?;
    let host = uri.host()?.trim_matches(['[', ']']);
    let port = uri.port_u16().unwrap_or(443);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port)).ok()?.next()?;
    let bind = if addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(addr).ok()?;
    Some(s.local_addr().ok()?.ip())
}

/// Connect to the API server and containerd, import the pause image, and
/// return the agent ready to run (serve `agent.router()` beside it).
pub async fn start_agent(opts: AgentOptions) -> Result<Agent, AgentError> {
    let runtime = crate::runtime::containerd::ContainerdRuntime::connect(
        &opts.container_runtime_endpoint,
        &opts.containerd_namespace,
    )
    .await?;
    start_agent_with(opts, runtime).await
}

/// [`start_agent`] with a containerd connection made by the caller (tests
/// choose its logger program).
pub async fn start_agent_with(
    opts: AgentOptions,
    runtime: crate::runtime::containerd::ContainerdRuntime,
) -> Result<Agent, AgentError> {
    let client = match &opts.ca_pem {
        Some(ca) => crate::client::client(&opts.server, &opts.token, ca)?,
        None => crate::client::connect(&opts.server, &opts.token).await?,
    };
    let node_name = opts.node_name.clone().filter(|n| !n.is_empty()).unwrap_or_else(crate::node::hostname);
    let node_ip = match opts.node_ip.or_else(|| route_ip(&opts.server)) {
        Some(ip) => ip,
        None => {
            return Err(AgentError::NodeIp(format!(
                "cannot tell this node's address from --server {}; pass --node-ip",
                opts.server
            )))
        }
    };
    crate::runtime::containerd::ensure_pause_image(&runtime).await?;
    // air gap: archives dropped into <data-dir>/agent/images are imported once
    crate::images::import_dir(&runtime, &opts.data_dir.join("images")).await?;
    let mut config = AgentConfig::new(node_name, node_ip, &opts.data_dir);
    let dual_stack = opts.network.as_ref().is_some_and(|n| n.cluster_cidr_v6.is_some());
    config.node_ip_v6 = match opts.node_ip_v6 {
        Some(ip) => Some(ip),
        None if dual_stack => match skiff_net::bridge::ipv6_beside(node_ip).await {
            Ok(found) => {
                tracing::info!(node_ip = %node_ip, ipv6 = ?found, "this node's IPv6 address (for dual-stack pods)");
                found
            }
            Err(e) => {
                tracing::warn!(error = %e, "looking for this node's IPv6 address failed; pass it in --node-ip");
                None
            }
        },
        None => None,
    };
    config.cluster_dns = vec![opts.cluster_dns];
    config.cluster_domain = opts.cluster_domain.clone();
    config.kubelet_port = opts.kubelet_port;
    config.pause_image = crate::runtime::containerd::PAUSE_IMAGE.to_string();
    config.pod_cgroup_root = Some(format!("/skiff/{}", config.node_name));
    Ok(match opts.network {
        Some(net) => Agent::with_bridge(config, Arc::new(runtime), net, client),
        None => Agent::new(config, Arc::new(runtime), Arc::new(skiff_net::LoopbackOnly), client),
    })
}

/// [`start_agent`], then [`Agent::run`] until `shutdown`.
pub async fn run_agent(opts: AgentOptions, shutdown: CancellationToken) -> Result<(), AgentError> {
    start_agent(opts).await?.run(shutdown).await
}
