//! The node's pod network and service proxy, as the agent runs them: wait for
//! the server to give the Node a podCIDR, set up the bridge (skiff-net's
//! [`BridgeNetwork`]), keep routes to the other nodes' podCIDRs, collect what
//! vanished pods left behind, and run the nftables service proxy.
//!
//! Dual-stack: when `--cluster-cidr` has an IPv6 range and the server gave
//! the node an IPv6 podCIDR (node.spec.podCIDRs), pods get an IPv6 address
//! too and the host-gw routes cover the other nodes' IPv6 podCIDRs via their
//! IPv6 InternalIPs; the VXLAN backend carries IPv6 through the same
//! (IPv4) tunnel and needs no IPv6 node address.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use skiff_net::bridge::{BridgeConfig, BridgeNetwork, Ipv6Pods};
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;

/// How pods on other nodes are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A route to every other node's podCIDR via that node's address: nodes
    /// must share a layer-2 segment (or a router that knows the podCIDRs).
    HostGw,
    /// Pod traffic to other nodes is wrapped in VXLAN (UDP 8472) to their
    /// node addresses: nodes only need to reach each other by IP.
    Vxlan,
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Backend, String> {
        match s {
            "host-gw" => Ok(Backend::HostGw),
            "vxlan" => Ok(Backend::Vxlan),
            other => Err(format!("{other:?} is not a pod network backend: use host-gw, or none for no pod network")),
        }
    }
}

/// The agent's pod network settings (`None` in [`crate::AgentOptions`] means
/// pods get only loopback).
#[derive(Debug, Clone)]
pub struct NetworkOptions {
    /// The cluster's IPv4 pod range (`--cluster-cidr`); the node's podCIDR is inside it.
    pub cluster_cidr: Ipv4Net,
    /// The cluster's IPv6 pod range (the IPv6 part of a dual `--cluster-cidr`):
    /// with it, pods also get an IPv6 address from the node's IPv6 podCIDR,
    /// and Services' IPv6 addresses are programmed into table `ip6 skiff`.
    pub cluster_cidr_v6: Option<Ipv6Net>,
    pub backend: Backend,
    /// Program Services into nftables (kube-proxy's job); off with `--disable-kube-proxy`.
    pub proxy: bool,
    /// The shortest time between two proxy syncs (the changes of a burst go into one).
    pub proxy_debounce: Duration,
    /// Cluster DNS and ingress on this node.
    pub addons: crate::addons::AddonOptions,
}

impl NetworkOptions {
    /// The options for a cluster whose pods draw from `cluster` (`--cluster-cidr`:
    /// IPv4, or IPv4 and IPv6 for dual-stack pods).
    pub fn new(cluster: skiff_api::families::DualCidr) -> Result<NetworkOptions, String> {
        let Some(cluster_cidr) = cluster.v4() else {
            return Err("the pod network needs an IPv4 range (IPv6-only pod networks are not supported)".into());
        };
        Ok(NetworkOptions {
            cluster_cidr,
            cluster_cidr_v6: cluster.v6(),
            backend: Backend::HostGw,
            proxy: true,
            proxy_debounce: Duration::from_millis(50),
            addons: crate::addons::AddonOptions::default(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("the agent stopped before node {0} got a podCIDR")]
    Stopped(String),
    #[error("pod network: {0}")]
    Net(#[from] skiff_net::Error),
}

/// A node's podCIDR of one family: `Ipv4Net` (node.spec.podCIDR, or the
/// IPv4 entry of podCIDRs) or `Ipv6Net` (the IPv6 entry of podCIDRs).
fn pod_cidr<T: std::str::FromStr>(node: &Node) -> Option<T> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidr.iter().chain(spec.pod_cidrs.iter().flatten()).find_map(|c| c.parse::<T>().ok())
}

/// The node's podCIDRs once the server has allocated them (node.spec.podCIDRs):
/// the IPv4 one, and the IPv6 one of a dual-stack cluster.
async fn wait_pod_cidr(
    client: &kube::Client,
    node: &str,
    shutdown: &CancellationToken,
) -> Option<(Ipv4Net, Option<Ipv6Net>)> {
    let nodes: Api<Node> = Api::all(client.clone());
    let started = std::time::Instant::now();
    let mut warned = false;
    loop {
        if let Ok(Some(n)) = nodes.get_opt(node).await {
            if let Some(cidr) = pod_cidr::<Ipv4Net>(&n) {
                return Some((cidr, pod_cidr::<Ipv6Net>(&n)));
            }
        }
        if !warned && started.elapsed() > Duration::from_secs(15) {
            warned = true;
            tracing::warn!(
                node,
                "still waiting for the server to give this node a podCIDR (is the node-ipam controller running, \
                 and is --cluster-cidr large enough?)"
            );
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// A node's InternalIP of one family (`Ipv4Addr` or `Ipv6Addr`).
fn internal_ip<T: std::str::FromStr>(node: &Node) -> Option<T> {
    let addrs = node.status.as_ref()?.addresses.as_ref()?;
    addrs.iter().filter(|a| a.type_ == "InternalIP").find_map(|a| a.address.parse::<T>().ok())
}

/// The annotation where each node's agent publishes its VXLAN device's MAC.
pub const VTEP_MAC_ANNOTATION: &str = "skiff.io/vtep-mac";

/// The other nodes' VTEPs (those that published their MAC).
pub fn vxlan_peers(nodes: &[Arc<Node>], own: &str) -> Vec<skiff_net::vxlan::VxlanPeer> {
    let mut out: Vec<skiff_net::vxlan::VxlanPeer> = nodes
        .iter()
        .filter(|n| n.metadata.name.as_deref() != Some(own))
        .filter_map(|n| {
            let mac = n.metadata.annotations.as_ref()?.get(VTEP_MAC_ANNOTATION)?;
            Some(skiff_net::vxlan::VxlanPeer {
                pod_cidr: pod_cidr::<Ipv4Net>(n)?,
                node_ip: internal_ip::<Ipv4Addr>(n)?,
                mac: skiff_net::vxlan::parse_mac(mac)?,
                pod_cidr_v6: pod_cidr::<Ipv6Net>(n),
            })
        })
        .collect();
    out.sort();
    out
}

/// The other nodes' podCIDRs and the addresses that reach them: the IPv4
/// podCIDR via the IPv4 InternalIP, the IPv6 podCIDR via the IPv6 InternalIP
/// (a node without an IPv6 InternalIP gets no IPv6 route).
pub fn peer_routes(nodes: &[Arc<Node>], own: &str) -> Vec<(IpNet, IpAddr)> {
    let mut out: Vec<(IpNet, IpAddr)> = Vec::new();
    for n in nodes.iter().filter(|n| n.metadata.name.as_deref() != Some(own)) {
        if let (Some(cidr), Some(ip)) = (pod_cidr::<Ipv4Net>(n), internal_ip::<Ipv4Addr>(n)) {
            out.push((IpNet::V4(cidr), IpAddr::V4(ip)));
        }
        if let (Some(cidr), Some(ip)) = (pod_cidr::<Ipv6Net>(n), internal_ip::<Ipv6Addr>(n)) {
            out.push((IpNet::V6(cidr), IpAddr::V6(ip)));
        }
    }
    out.sort();
    out
}

/// Set the node's pod network up and start the loops that keep it right.
/// Returns `None` when the agent is stopped before the node has a podCIDR.
pub async fn start(
    client: &kube::Client,
    cfg: &AgentConfig,
    opts: &NetworkOptions,
    shutdown: &CancellationToken,
) -> Result<BridgeNetwork, NetworkError> {
    let Some((pod_cidr, pod_cidr_v6)) = wait_pod_cidr(client, &cfg.node_name, shutdown).await else {
        return Err(NetworkError::Stopped(cfg.node_name.clone()));
    };
    let mut bridge_cfg = BridgeConfig::new(pod_cidr, opts.cluster_cidr, cfg.data_dir.join("net"));
    bridge_cfg.ipv6 = match (pod_cidr_v6, opts.cluster_cidr_v6) {
        (Some(pod_cidr), Some(cluster_cidr)) => Some(Ipv6Pods { pod_cidr, cluster_cidr }),
        (Some(v6), None) => {
            tracing::warn!(
                pod_cidr = %v6,
                "the node has an IPv6 podCIDR but this agent's --cluster-cidr has no IPv6 range: pods get IPv4 only \
                 (give the agent the server's --cluster-cidr)"
            );
            None
        }
        (None, Some(_)) => {
            tracing::warn!(
                "--cluster-cidr is dual-stack but the server gave this node no IPv6 podCIDR: pods get IPv4 only"
            );
            None
        }
        (None, None) => None,
    };
    if bridge_cfg.ipv6.is_some() && cfg.node_ip_v6.is_none() && opts.backend == Backend::HostGw {
        tracing::warn!(
            "this node has no IPv6 address to advertise (pass it in --node-ip): other nodes cannot route to its pods' \
             IPv6 addresses"
        );
    }
    if opts.backend == Backend::Vxlan {
        let IpAddr::V4(local) = cfg.node_ip else {
            return Err(NetworkError::Net(skiff_net::Error::Node {
                message: format!("--flannel-backend=vxlan needs an IPv4 node address, not {}", cfg.node_ip),
            }));
        };
        bridge_cfg.vxlan = Some(skiff_net::vxlan::VxlanConfig::new(local));
    }
    let bridge = BridgeNetwork::new(bridge_cfg)?;
    let status = bridge.start().await?;
    tracing::info!(%pod_cidr, ?pod_cidr_v6, gateway = %status.gateway, mtu = status.mtu, "pod network up");
    if let Some(mac) = status.vtep_mac {
        publish_vtep_mac(client, &cfg.node_name, &mac, shutdown).await;
    }
    tokio::spawn(keep_routes(client.clone(), cfg.node_name.clone(), bridge.clone(), opts.backend, shutdown.clone()));
    tokio::spawn(collect_leaks(client.clone(), cfg.node_name.clone(), bridge.clone(), shutdown.clone()));
    if opts.proxy {
        let ipv6 = opts.cluster_cidr_v6.map(|cluster| (cluster, pod_cidr_v6));
        let proxy_cfg = crate::proxy::ProxyConfig {
            node_name: cfg.node_name.clone(),
            cluster_cidr: Some(opts.cluster_cidr),
            pod_cidr: Some(pod_cidr),
            ipv6,
            debounce: opts.proxy_debounce,
        };
        let proxies = proxy_cfg.families().into_iter().map(|f| skiff_net::proxy::Proxy::new().with_family(f)).collect();
        tokio::spawn(crate::proxy::run(client.clone(), proxy_cfg, proxies, shutdown.clone()));
    }
    crate::addons::start(client, cfg, &opts.addons, gateway(&bridge), shutdown);
    Ok(bridge)
}

/// Write this node's VTEP MAC into its Node's annotations (retried until it sticks or the agent stops).
async fn publish_vtep_mac(client: &kube::Client, node: &str, mac: &[u8; 6], shutdown: &CancellationToken) {
    let nodes: Api<Node> = Api::all(client.clone());
    let patch =
        serde_json::json!({"metadata": {"annotations": {VTEP_MAC_ANNOTATION: skiff_net::vxlan::format_mac(mac)}}});
    loop {
        match nodes.patch(node, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await {
            Ok(_) => return,
            Err(e) => tracing::warn!(error = %e, "publishing this node's VXLAN MAC failed; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Follow the Nodes and keep this node's way to each other node's podCIDR:
/// host-gw routes, or VXLAN neighbours, forwarding entries and routes.
async fn keep_routes(
    client: kube::Client,
    own: String,
    bridge: BridgeNetwork,
    backend: Backend,
    shutdown: CancellationToken,
) {
    let (store, writer) = reflector::store::<Node>();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let watch = reflector(writer, watcher(Api::<Node>::all(client), watcher::Config::default()))
        .default_backoff()
        .for_each(move |_| {
            let _ = tx.try_send(());
            futures::future::ready(())
        });
    let watch = tokio::spawn(watch);
    let mut last: Option<String> = None;
    let mut resync = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = rx.recv() => {}
            // routes someone removed by hand come back
            _ = resync.tick() => last = None,
        }
        let nodes = store.state();
        let (result, key) = match backend {
            Backend::HostGw => {
                let want = peer_routes(&nodes, &own);
                let key = format!("{want:?}");
                if last.as_ref() == Some(&key) {
                    continue;
                }
                (bridge.set_peer_routes(want).await, key)
            }
            Backend::Vxlan => {
                let want = vxlan_peers(&nodes, &own);
                let key = format!("{want:?}");
                if last.as_ref() == Some(&key) {
                    continue;
                }
                (bridge.set_vxlan_peers(want).await, key)
            }
        };
        match result {
            Ok(()) => {
                tracing::debug!(peers = %key, "ways to other nodes' pods set");
                last = Some(key);
            }
            Err(e) => tracing::warn!(error = %e, "setting routes to other nodes' pods failed; retrying"),
        }
    }
    watch.abort();
}

/// Release the addresses and veths of pods that no longer exist (a crash
/// between teardown steps, pods deleted while the agent was down).
async fn collect_leaks(client: kube::Client, node: String, bridge: BridgeNetwork, shutdown: CancellationToken) {
    let pods: Api<Pod> = Api::all(client);
    let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = every.tick() => {}
        }
        let live: HashSet<String> = match pods.list(&lp).await {
            Ok(list) => list.items.into_iter().filter_map(|p| p.metadata.uid).collect(),
            Err(e) => {
                tracing::debug!(error = %e, "listing this node's pods for the network's leak collection failed");
                continue;
            }
        };
        match bridge.gc(live).await {
            Ok(released) if !released.is_empty() => {
                tracing::info!(addresses = ?released, "released addresses of pods that are gone")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "collecting the pod network's leftovers failed"),
        }
    }
}

/// The address the node's pods use as their gateway, for services that listen
/// on the node for its pods (cluster DNS).
pub fn gateway(bridge: &BridgeNetwork) -> IpAddr {
    IpAddr::V4(bridge.gateway())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};

    fn node(name: &str, cidr: Option<&str>, ip: &str) -> Arc<Node> {
        Arc::new(Node {
            metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
            spec: Some(NodeSpec { pod_cidr: cidr.map(Into::into), ..Default::default() }),
            status: Some(NodeStatus {
                addresses: Some(vec![
                    NodeAddress { type_: "Hostname".into(), address: name.into() },
                    NodeAddress { type_: "InternalIP".into(), address: ip.into() },
                ]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn routes_go_to_the_other_nodes_with_a_pod_cidr() {
        let nodes = vec![
            node("a", Some("10.244.0.0/24"), "198.18.0.1"),
            node("b", Some("10.244.1.0/24"), "198.18.0.2"),
            node("c", None, "198.18.0.3"),
        ];
        assert_eq!(peer_routes(&nodes, "a"), vec![("10.244.1.0/24".parse().unwrap(), "198.18.0.2".parse().unwrap())]);
    }

    fn dual_node(name: &str, cidrs: &[&str], ips: &[&str]) -> Arc<Node> {
        let mut n = (*node(name, None, ips[0])).clone();
        if let Some(spec) = n.spec.as_mut() {
            spec.pod_cidr = Some(cidrs[0].into());
            spec.pod_cidrs = Some(cidrs.iter().map(|c| c.to_string()).collect());
        }
        if let Some(addrs) = n.status.as_mut().and_then(|s| s.addresses.as_mut()) {
            addrs.extend(ips[1..].iter().map(|ip| NodeAddress { type_: "InternalIP".into(), address: ip.to_string() }));
        }
        Arc::new(n)
    }

    #[test]
    fn ipv6_pod_cidrs_are_routed_via_the_nodes_ipv6_addresses() {
        let nodes = vec![
            dual_node("a", &["10.244.0.0/24", "fd00:10:244::/64"], &["198.18.0.1", "2001:2::1"]),
            dual_node("b", &["10.244.1.0/24", "fd00:10:244:1::/64"], &["198.18.0.2", "2001:2::2"]),
            // no IPv6 address: no IPv6 route
            dual_node("c", &["10.244.2.0/24", "fd00:10:244:2::/64"], &["198.18.0.3"]),
        ];
        let want: Vec<(IpNet, IpAddr)> =
            [("10.244.1.0/24", "198.18.0.2"), ("10.244.2.0/24", "198.18.0.3"), ("fd00:10:244:1::/64", "2001:2::2")]
                .iter()
                .map(|(n, ip)| (n.parse().unwrap(), ip.parse().unwrap()))
                .collect();
        assert_eq!(peer_routes(&nodes, "a"), want);
        assert_eq!(pod_cidr::<Ipv6Net>(&nodes[1]), Some("fd00:10:244:1::/64".parse().unwrap()));
    }

    #[test]
    fn vxlan_peers_carry_their_ipv6_pod_cidr() {
        let mut b = (*dual_node("b", &["10.244.1.0/24", "fd00:10:244:1::/64"], &["198.18.0.2"])).clone();
        b.metadata.annotations = Some([(VTEP_MAC_ANNOTATION.to_string(), "0a:1b:2c:3d:4e:5f".to_string())].into());
        let nodes = vec![dual_node("a", &["10.244.0.0/24", "fd00:10:244::/64"], &["198.18.0.1"]), Arc::new(b)];
        let peers = vxlan_peers(&nodes, "a");
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].pod_cidr_v6, Some("fd00:10:244:1::/64".parse().unwrap()));
        assert_eq!(peers[0].node_ip, Ipv4Addr::new(198, 18, 0, 2));
    }

    #[test]
    fn backend_names_are_checked() {
        assert_eq!("host-gw".parse::<Backend>(), Ok(Backend::HostGw));
        assert_eq!("vxlan".parse::<Backend>(), Ok(Backend::Vxlan));
        assert!("wireguard".parse::<Backend>().unwrap_err().contains("host-gw"));
    }
}
