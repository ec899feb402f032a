//! skiff-controllers: the control loops of a Skiff cluster, as clients of
//! the API server over kube-rs (never the store).
//!
//! Entry point: [`run`]. It campaigns for the `kube-system/skiff-controller-manager`
//! Lease; while this process holds it, it runs one informer per resource type
//! ([`runtime::Informer`]) and the loops that read them:
//!
//! - `scheduler`: binds pending pods to nodes through `pods/binding`;
//! - `replicaset` and `deployment`: keep replicas, roll out templates;
//! - `endpoints` and `endpointslice`: Service → addresses of ready pods;
//! - `nodelifecycle`: node heartbeats (Leases), taints, evictions;
//! - `gc` and `namespace`: ownerReferences cascades, namespace deletion;
//! - `servicelb`: LoadBalancer Services' addresses (a pool, or the nodes');
//! - `serviceaccount`: the `default` ServiceAccount and the `kube-root-ca.crt`
//!   ConfigMap in every namespace.
//!
//! Every loop is level-triggered: `reconcile(object, ctx) -> Result<Action>`
//! reads the informer caches, writes what differs, and can run twice.
//! The node simulator (`sim`, feature `simulator`) is a test tool.

mod context;
mod deployment;
mod endpoints;
mod endpointslice;
mod events;
mod gc;
mod labels;
mod leader;
mod namespace;
mod nodeipam;
mod nodelifecycle;
mod pod;
mod replicaset;
pub mod runtime;
mod scheduler;
mod serviceaccount;
mod servicelb;
mod time;

#[cfg(feature = "simulator")]
pub mod bench;
#[cfg(feature = "simulator")]
pub mod sim;

use std::collections::HashSet;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The loops [`run`] can run; names for [`ControllerOptions::disabled`].
pub const CONTROLLERS: &[&str] = &[
    "scheduler",
    "deployment",
    "replicaset",
    "endpoints",
    "endpointslice",
    "nodelifecycle",
    "garbagecollector",
    "namespace",
    "nodeipam",
    "servicelb",
    "serviceaccount",
    "root-ca-cert-publisher",
];

/// How the loops behave; `Default` is Kubernetes' defaults.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// This process in the leader Lease (default: hostname and a random suffix).
    pub identity: Option<String>,
    /// A node whose Lease is not renewed for this long becomes Ready=Unknown.
    pub node_monitor_grace_period: Duration,
    /// How long pods stay on a NotReady/unreachable node before eviction,
    /// unless they carry their own toleration (DefaultTolerationSeconds).
    pub pod_eviction_timeout: Duration,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    /// Loops not to run (names from [`CONTROLLERS`]).
    pub disabled: HashSet<String>,
    /// Nodes' podCIDRs come from here (`--cluster-cidr`): one per family.
    pub cluster_cidr: skiff_api::families::DualCidr,
    /// The prefix length of each node's IPv4 podCIDR.
    pub node_cidr_mask: u8,
    /// The prefix length of each node's IPv6 podCIDR.
    pub node_cidr_mask_v6: u8,
    /// LoadBalancer addresses come from here (`--service-lb-pool`); `None`:
    /// the Ready nodes' addresses, as k3s's ServiceLB.
    pub service_lb_pool: Option<ipnet::Ipv4Net>,
    /// The cluster CA (PEM) published as `kube-root-ca.crt` in every
    /// namespace; `None`: not published.
    pub root_ca_pem: Option<String>,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            identity: None,
            node_monitor_grace_period: Duration::from_secs(40),
            pod_eviction_timeout: Duration::from_secs(300),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            disabled: HashSet::new(),
            cluster_cidr: ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(10, 244, 0, 0), 16).unwrap_or_default().into(),
            node_cidr_mask: 24,
            node_cidr_mask_v6: 64,
            service_lb_pool: None,
            root_ca_pem: None,
        }
    }
}

impl ControllerOptions {
    pub fn enabled(&self, name: &str) -> bool {
        !self.disabled.contains(name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("controllers: {0}")]
    Kube(#[from] kube::Error),
    #[error("controllers: unknown loop {0:?} in disabled (known: {known})", known = CONTROLLERS.join(", "))]
    UnknownController(String),
    #[error("controllers: building a client: {0}")]
    Client(String),
}

/// A kube-rs client for `server` with the cluster CA and a client
/// certificate (PEM), as in the admin kubeconfig.
pub async fn client_from_pem(server: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<kube::Client, Error> {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: controllers\ncurrent-context: skiff\nusers:\n- name: controllers\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(ca_pem),
        b64(cert_pem),
        b64(key_pem),
    );
    let kc = kube::config::Kubeconfig::from_yaml(&yaml).map_err(|e| Error::Client(e.to_string()))?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Client(e.to_string()))?;
    // the loops write often; the defaults would throttle nothing anyway
    config.read_timeout = None;
    kube::Client::try_from(config).map_err(|e| Error::Client(e.to_string()))
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "skiff".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}_{}", &suffix[..8])
}

/// Run the control loops until `shutdown` turns true (or its sender goes
/// away): campaign for the leader Lease, run every loop while leading, stop
/// them if the lease is lost and campaign again.
pub async fn run(
    client: kube::Client,
    opts: ControllerOptions,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), Error> {
    if let Some(bad) = opts.disabled.iter().find(|d| !CONTROLLERS.contains(&d.as_str())) {
        return Err(Error::UnknownController(bad.clone()));
    }
    let stop = CancellationToken::new();
    let watcher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !*shutdown.borrow_and_update() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
            stop.cancel();
        })
    };
    let identity = opts.identity.clone().unwrap_or_else(default_identity);
    let mut elector = leader::Elector::new(
        client.clone(),
        leader::LeaderConfig {
            namespace: "kube-system".into(),
            name: "skiff-controller-manager".into(),
            identity: identity.clone(),
            lease_duration: opts.lease_duration,
            renew_deadline: opts.renew_deadline,
            retry_period: opts.retry_period,
        },
    );
    loop {
        if !elector.acquire(&stop).await {
            break;
        }
        let term = stop.child_token();
        // if this future is dropped (the task aborted), the loops stop too
        let _guard = term.clone().drop_guard();
        let loops = tokio::spawn(context::run_loops(client.clone(), opts.clone(), identity.clone(), term.clone()));
        let end = elector.hold(&stop).await;
        term.cancel();
        let _ = loops.await;
        if end == leader::HoldEnd::Stopped {
            elector.release().await;
            break;
        }
    }
    watcher.abort();
    Ok(())
}
