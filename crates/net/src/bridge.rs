//! The bridge pod network: one bridge per node (`skiff0`) holding the first
//! address of the node's podCIDR as the pods' gateway, a veth pair per pod
//! (`eth0` inside the pod's namespace), host-gw routes to the other nodes'
//! podCIDRs, and masquerade of pod traffic leaving the cluster CIDR.
//!
//! Dual-stack: when the node also has an IPv6 podCIDR, the bridge holds its
//! first address as the IPv6 gateway, a second IPAM hands out the pods' IPv6
//! addresses (added without duplicate address detection, so they work at
//! once), host-gw routes cover both families, and IPv6 egress is
//! masqueraded in the table `ip6 skiff-podnet`, which only the pod network
//! writes. The VXLAN backend carries both families (see [`crate::vxlan`]).
//!
//! Every netlink call runs on a dedicated thread that has joined the right
//! namespace (the node's or the pod's) and opens its socket there, so the
//! agent's own threads never change namespace.

use std::collections::HashSet;
use std::fs::File;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use futures::TryStreamExt;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use serde_json::json;

use crate::ipam::{first_host, Ipam};
use crate::pod::{PodAddresses, PodNetwork, PodRef};
use crate::{netns, Error, Result};

/// The routing protocol number that marks Skiff's routes to other nodes, so
/// that a resync removes only its own (`ip route show proto 99`).
pub const ROUTE_PROTOCOL: u8 = 99;
/// The interface name a pod sees.
pub const POD_INTERFACE: &str = "eth0";

/// How the node's pod network is laid out.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The bridge's name (`skiff0`).
    pub bridge: String,
    /// This node's podCIDR (node.spec.podCIDR).
    pub pod_cidr: Ipv4Net,
    /// The whole cluster's pod CIDR (`--cluster-cidr`): traffic from it to
    /// anywhere outside it is masqueraded.
    pub cluster_cidr: Ipv4Net,
    /// IPAM state lives under `<data_dir>/ipam/<podCIDR>`.
    pub data_dir: PathBuf,
    /// The node's network namespace: `None` is this process's (a real node);
    /// tests and namespace-per-node clusters pin one.
    pub node_netns: Option<PathBuf>,
    /// The pods' MTU; `None` takes the uplink's (the default route's device),
    /// less the VXLAN overhead with that backend.
    pub mtu: Option<u32>,
    /// `Some`: reach other nodes' pods through VXLAN instead of host-gw routes.
    pub vxlan: Option<crate::vxlan::VxlanConfig>,
    /// `Some` on a dual-stack node: pods get an IPv6 address too.
    pub ipv6: Option<Ipv6Pods>,
}

/// The IPv6 half of a dual-stack node's pod network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Pods {
    /// This node's IPv6 podCIDR (the IPv6 entry of node.spec.podCIDRs).
    pub pod_cidr: Ipv6Net,
    /// The cluster's IPv6 pod range: IPv6 traffic from it to anywhere
    /// outside it is masqueraded.
    pub cluster_cidr: Ipv6Net,
}

/// The nftables table (family `ip6`) that holds the pod network's IPv6
/// masquerade; the service proxy never touches it.
pub const IPV6_TABLE: &str = "skiff-podnet";

impl BridgeConfig {
    pub fn new(pod_cidr: Ipv4Net, cluster_cidr: Ipv4Net, data_dir: impl Into<PathBuf>) -> BridgeConfig {
        BridgeConfig {
            bridge: "skiff0".into(),
            pod_cidr,
            cluster_cidr,
            data_dir: data_dir.into(),
            node_netns: None,
            mtu: None,
            vxlan: None,
            ipv6: None,
        }
    }
}

/// What [`BridgeNetwork::start`] set up and found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub gateway: Ipv4Addr,
    /// The bridge's IPv6 address (dual-stack nodes).
    pub gateway_v6: Option<Ipv6Addr>,
    pub mtu: u32,
    /// Whether bridged traffic passes netfilter (br_netfilter loaded and
    /// `bridge-nf-call-iptables` on). Without it, a pod reaching another pod
    /// on the same node through a Service sees replies from the pod's own
    /// address instead of the Service's.
    pub bridge_netfilter: bool,
    /// The VXLAN device's MAC (the VXLAN backend): other nodes need it.
    pub vtep_mac: Option<[u8; 6]>,
}

/// The [`PodNetwork`] of a node: call [`BridgeNetwork::start`] once before
/// the first pod, [`BridgeNetwork::set_peer_routes`] whenever the set of
/// nodes changes, and [`BridgeNetwork::gc`] after the agent has listed its pods.
#[derive(Clone)]
pub struct BridgeNetwork {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: BridgeConfig,
    ipam: Ipam,
    /// The IPv6 podCIDR's addresses (dual-stack nodes).
    ipam6: Option<Ipam>,
    mtu: AtomicU32,
}

impl BridgeNetwork {
    pub fn new(cfg: BridgeConfig) -> Result<BridgeNetwork> {
        if !cfg.cluster_cidr.contains(&cfg.pod_cidr) {
            return Err(Error::Node {
                message: format!(
                    "podCIDR {} is not inside the cluster CIDR {} (check --cluster-cidr)",
                    cfg.pod_cidr, cfg.cluster_cidr
                ),
            });
        }
        let ipam_dir = |cidr: String| cfg.data_dir.join("ipam").join(cidr.replace('/', "_"));
        let ipam = Ipam::open(ipam_dir(cfg.pod_cidr.to_string()), cfg.pod_cidr)?;
        let ipam6 = match cfg.ipv6 {
            Some(v6) if !v6.cluster_cidr.contains(&v6.pod_cidr) => {
                return Err(Error::Node {
                    message: format!(
                        "IPv6 podCIDR {} is not inside the cluster's IPv6 range {} (check --cluster-cidr)",
                        v6.pod_cidr, v6.cluster_cidr
                    ),
                })
            }
            Some(v6) => Some(Ipam::open(ipam_dir(v6.pod_cidr.trunc().to_string()), v6.pod_cidr)?),
            None => None,
        };
        Ok(BridgeNetwork { inner: Arc::new(Inner { cfg, ipam, ipam6, mtu: AtomicU32::new(0) }) })
    }

    pub fn gateway(&self) -> Ipv4Addr {
        gateway_of(self.inner.cfg.pod_cidr)
    }

    /// The pods' IPv6 gateway (the bridge's IPv6 address) on a dual-stack node.
    pub fn gateway_v6(&self) -> Option<Ipv6Addr> {
        self.inner.cfg.ipv6.map(|v6| gateway_v6_of(v6.pod_cidr))
    }

    pub fn ipam(&self) -> &Ipam {
        &self.inner.ipam
    }

    /// The IPv6 IPAM of a dual-stack node.
    pub fn ipam_v6(&self) -> Option<&Ipam> {
        self.inner.ipam6.as_ref()
    }

    /// Set the node up: forwarding sysctls (set, then read back), the bridge
    /// with the gateway address, and masquerade of pod traffic leaving the
    /// cluster CIDR. Idempotent; call it at every agent start.
    pub async fn start(&self) -> Result<NodeStatus> {
        let inner = self.inner.clone();
        blocking(move || inner.start()).await
    }

    /// Routes to the other nodes' podCIDRs via their node addresses
    /// (host-gw), IPv4 and IPv6 alike (an IPv6 podCIDR via the node's IPv6
    /// address): adds the missing ones and removes Skiff's routes that are
    /// no longer wanted. The node's own podCIDRs are skipped.
    pub async fn set_peer_routes<N: Into<IpNet>, A: Into<IpAddr>>(&self, peers: Vec<(N, A)>) -> Result<()> {
        let peers: Vec<(IpNet, IpAddr)> = peers.into_iter().map(|(n, a)| (n.into(), a.into())).collect();
        let inner = self.inner.clone();
        blocking(move || inner.set_peer_routes(peers)).await
    }

    /// The VXLAN backend's peers: neighbour, forwarding entries and routes for
    /// each; the routes, neighbour and forwarding entries of nodes no longer
    /// listed (or of a peer's old MAC or node address) removed.
    pub async fn set_vxlan_peers(&self, peers: Vec<crate::vxlan::VxlanPeer>) -> Result<()> {
        let inner = self.inner.clone();
        blocking(move || inner.set_vxlan_peers(peers)).await
    }

    /// Collect what pods that are gone left behind: their addresses and
    /// host-side veths. `live_pod_uids` are the UIDs of every pod the node
    /// still runs. Returns the addresses released (both families).
    pub async fn gc(&self, live_pod_uids: HashSet<String>) -> Result<Vec<IpAddr>> {
        let inner = self.inner.clone();
        blocking(move || inner.gc(&live_pod_uids)).await
    }
}

#[async_trait::async_trait]
impl PodNetwork for BridgeNetwork {
    async fn setup(&self, pod: &PodRef, netns: &Path) -> Result<PodAddresses> {
        let inner = self.inner.clone();
        let (pod, netns) = (pod.clone(), netns.to_path_buf());
        blocking(move || inner.setup(&pod, &netns)).await
    }

    async fn teardown(&self, pod: &PodRef, netns: &Path) -> Result<()> {
        let inner = self.inner.clone();
        let (pod, netns) = (pod.clone(), netns.to_path_buf());
        blocking(move || inner.teardown(&pod, &netns)).await
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Node { message: format!("the pod network's worker thread failed: {e}") })?
}

impl Inner {
    fn node_ns(&self) -> Option<&Path> {
        self.cfg.node_netns.as_deref()
    }

    fn node_label(&self) -> String {
        self.node_ns().map_or_else(|| "(node)".to_string(), |p| p.display().to_string())
    }

    fn start(&self) -> Result<NodeStatus> {
        let ipv6 = self.cfg.ipv6.is_some();
        let bridge_netfilter = match self.node_ns() {
            Some(p) => netns::run_in(p, move || ensure_sysctls(ipv6))??,
            None => ensure_sysctls(ipv6)?,
        };
        if !bridge_netfilter {
            tracing::warn!(
                "br_netfilter is not loaded: a pod reaching a pod on the same node through a Service will not work \
                 (load it with `modprobe br_netfilter`)"
            );
        }
        let (bridge, gateway, prefix, mtu_cfg) =
            (self.cfg.bridge.clone(), gateway_of(self.cfg.pod_cidr), self.cfg.pod_cidr.prefix_len(), self.cfg.mtu);
        let gateway6 = self.cfg.ipv6.map(|v6| (gateway_v6_of(v6.pod_cidr), v6.pod_cidr.prefix_len()));
        let (vxlan, pod_cidr) = (self.cfg.vxlan, self.cfg.pod_cidr);
        let label = self.node_label();
        let (mtu, vtep_mac) = netlink(self.node_ns(), &label, move |h| async move {
            let uplink = uplink_mtu(&h).await?.unwrap_or(1500);
            let mtu = match (mtu_cfg, vxlan) {
                (Some(m), _) => m,
                (None, Some(_)) => uplink - crate::vxlan::OVERHEAD,
                (None, None) => uplink,
            };
            let idx = ensure_bridge(&h, &bridge, gateway, prefix, mtu, gateway6.is_some()).await?;
            if let Some((gw6, prefix6)) = gateway6 {
                ensure_address(&h, idx, &bridge, IpAddr::V6(gw6), prefix6).await?;
                ensure_address(&h, idx, &bridge, IpAddr::V6(BRIDGE_LINK_LOCAL), 64).await?;
                // Without an MLD querier, multicast snooping sometimes drops a pod's neighbour
                // solicitation for the gateway (the first packet to another node then waits 1 s
                // for the retry); flooded like broadcast, neighbour discovery is as reliable as ARP.
                tracing::debug!(bridge, "netlink: multicast snooping off");
                h.link()
                    .change(LinkMessageBuilder::<LinkBridge>::new(&bridge).index(idx).mcast_snooping(false).build())
                    .execute()
                    .await
                    .map_err(|e| nl(format!("turning multicast snooping off on {bridge}: {e}")))?;
            }
            let vtep_mac = match vxlan {
                Some(v) => {
                    Some(crate::vxlan::ensure_device(&h, &v, pod_cidr, uplink - crate::vxlan::OVERHEAD).await?.1)
                }
                None => None,
            };
            Ok((mtu, vtep_mac))
        })?;
        self.mtu.store(mtu, Ordering::Relaxed);
        self.masquerade_egress()?;
        if let Some(v6) = self.cfg.ipv6 {
            self.masquerade_egress_v6(v6.cluster_cidr)?;
        }
        let gateway_v6 = gateway6.map(|(g, _)| g);
        tracing::info!(bridge = %self.cfg.bridge, %gateway, ?gateway_v6, mtu, bridge_netfilter, vxlan = vtep_mac.is_some(), "pod network ready");
        Ok(NodeStatus { gateway, gateway_v6, mtu, bridge_netfilter, vtep_mac })
    }

    /// `pod-egress` in the table `ip6 skiff-podnet`: masquerade IPv6 traffic
    /// from the cluster's IPv6 range to anywhere outside it (multicast
    /// excepted), as [`Inner::masquerade_egress`] does for IPv4. The table
    /// is the pod network's alone, so this is all it holds.
    fn masquerade_egress_v6(&self, cidr: Ipv6Net) -> Result<()> {
        let cidr = cidr.trunc();
        let base = |m: serde_json::Value| {
            let mut m = m;
            m["family"] = json!("ip6");
            m["table"] = json!(IPV6_TABLE);
            m
        };
        let net = json!({"prefix": {"addr": cidr.network().to_string(), "len": cidr.prefix_len()}});
        let daddr = json!({"payload": {"protocol": "ip6", "field": "daddr"}});
        let doc = json!({"nftables": [
            {"add": {"table": {"family": "ip6", "name": IPV6_TABLE}}},
            {"add": {"chain": base(json!({"name": POD_EGRESS_CHAIN, "type": "nat", "hook": "postrouting", "prio": 110, "policy": "accept"}))}},
            {"flush": {"chain": base(json!({"name": POD_EGRESS_CHAIN}))}},
            {"add": {"rule": base(json!({"chain": POD_EGRESS_CHAIN, "expr": [
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}}, "right": net}},
                {"match": {"op": "!=", "left": daddr, "right": net}},
                {"match": {"op": "!=", "left": daddr, "right": {"prefix": {"addr": "ff00::", "len": 8}}}},
                {"masquerade": null}
            ]}))}},
        ]});
        crate::proxy::apply_json(self.node_ns(), &doc.to_string())
    }

    /// `pod-egress` in Skiff's table: masquerade what leaves the cluster
    /// CIDR. The proxy's syncs leave this chain alone.
    fn masquerade_egress(&self) -> Result<()> {
        let cidr = self.cfg.cluster_cidr;
        let base = |m: serde_json::Value| {
            let mut m = m;
            m["family"] = json!("ip");
            m["table"] = json!(crate::proxy::TABLE);
            m
        };
        let net = json!({"prefix": {"addr": cidr.network().to_string(), "len": cidr.prefix_len()}});
        let doc = json!({"nftables": [
            {"add": {"table": {"family": "ip", "name": crate::proxy::TABLE}}},
            {"add": {"chain": base(json!({"name": POD_EGRESS_CHAIN, "type": "nat", "hook": "postrouting", "prio": 110, "policy": "accept"}))}},
            {"flush": {"chain": base(json!({"name": POD_EGRESS_CHAIN}))}},
            {"add": {"rule": base(json!({"chain": POD_EGRESS_CHAIN, "expr": [
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": net}},
                {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": net}},
                {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                           "right": {"prefix": {"addr": "224.0.0.0", "len": 4}}}},
                {"masquerade": null}
            ]}))}},
        ]});
        crate::proxy::apply_json(self.node_ns(), &doc.to_string())
    }

    fn mtu(&self) -> u32 {
        match self.mtu.load(Ordering::Relaxed) {
            0 => self.cfg.mtu.unwrap_or(1500),
            m => m,
        }
    }

    fn setup(&self, pod: &PodRef, pod_ns: &Path) -> Result<PodAddresses> {
        let pod_err = |m: String| Error::Pod { pod: pod.to_string(), message: m };
        let IpAddr::V4(ip) = self.ipam.allocate(&pod.uid)? else {
            return Err(pod_err("the IPv4 IPAM handed out an IPv6 address".into()));
        };
        let v6 = match (&self.ipam6, self.cfg.ipv6) {
            (Some(ipam6), Some(cfg6)) => match ipam6.allocate(&pod.uid)? {
                IpAddr::V6(ip6) => Some((ip6, cfg6.pod_cidr.prefix_len(), gateway_v6_of(cfg6.pod_cidr))),
                IpAddr::V4(_) => return Err(pod_err("the IPv6 IPAM handed out an IPv4 address".into())),
            },
            _ => None,
        };
        let ips: Vec<IpAddr> = std::iter::once(IpAddr::V4(ip)).chain(v6.map(|(ip6, _, _)| IpAddr::V6(ip6))).collect();
        let prefix = self.cfg.pod_cidr.prefix_len();
        let gateway = gateway_of(self.cfg.pod_cidr);
        let mtu = self.mtu();
        let host = host_veth_name(&pod.uid);
        let peer = peer_veth_name(&pod.uid);
        let pod_label = pod_ns.display().to_string();

        // adopted after a restart: the pod already has its address
        let wired = netlink(Some(pod_ns), &pod_label, move |h| async move {
            Ok(match link_index(&h, POD_INTERFACE).await? {
                Some(idx) => has_address(&h, idx, IpAddr::V4(ip), prefix).await?,
                None => false,
            })
        })
        .map_err(|e| pod_err(e.to_string()))?;
        let bridge = self.cfg.bridge.clone();
        if wired {
            let host = host.clone();
            netlink(self.node_ns(), &self.node_label(), move |h| async move {
                let Some(bridge_idx) = link_index(&h, &bridge).await? else {
                    return Err(nl(format!("bridge {bridge} is missing (was the pod network started?)")));
                };
                if let Some(idx) = link_index(&h, &host).await? {
                    h.link()
                        .set(LinkUnspec::new_with_index(idx).controller(bridge_idx).up().build())
                        .execute()
                        .await
                        .map_err(|e| nl(format!("attaching {host} to {bridge}: {e}")))?;
                }
                Ok(())
            })?;
            if let Some((ip6, prefix6, gw6)) = v6 {
                // a pod wired before its node turned dual-stack gets its IPv6 address now
                netlink(Some(pod_ns), &pod_label, move |h| async move {
                    let idx =
                        link_index(&h, POD_INTERFACE).await?.ok_or_else(|| nl(format!("{POD_INTERFACE} vanished")))?;
                    add_pod_ipv6(&h, idx, ip6, prefix6, gw6).await
                })
                .map_err(|e| pod_err(e.to_string()))?;
            }
            return Ok(PodAddresses { ips });
        }

        // half-wired (or never): start over
        netlink(Some(pod_ns), &pod_label, |h| async move {
            delete_link(&h, POD_INTERFACE).await?;
            delete_link(&h, &peer_veth_name(&pod.uid)).await
        })
        .map_err(|e| pod_err(e.to_string()))?;
        let ns_path = pod_ns.to_path_buf();
        let (host_c, peer_c) = (host.clone(), peer.clone());
        netlink(self.node_ns(), &self.node_label(), move |h| async move {
            let Some(bridge_idx) = link_index(&h, &bridge).await? else {
                return Err(nl(format!("bridge {bridge} is missing (was the pod network started?)")));
            };
            delete_link(&h, &host_c).await?;
            delete_link(&h, &peer_c).await?;
            tracing::debug!(host = %host_c, peer = %peer_c, "netlink: add veth");
            h.link()
                .add(LinkVeth::new(&host_c, &peer_c).mtu(mtu).build())
                .execute()
                .await
                .map_err(|e| nl(format!("adding veth {host_c}: {e}")))?;
            let peer_idx = link_index(&h, &peer_c).await?.ok_or_else(|| nl(format!("veth peer {peer_c} vanished")))?;
            let ns_file = File::open(&ns_path).map_err(|e| nl(format!("opening {}: {e}", ns_path.display())))?;
            h.link()
                .set(LinkUnspec::new_with_index(peer_idx).setns_by_fd(ns_file.as_raw_fd()).build())
                .execute()
                .await
                .map_err(|e| nl(format!("moving {peer_c} into {}: {e}", ns_path.display())))?;
            let host_idx = link_index(&h, &host_c).await?.ok_or_else(|| nl(format!("veth {host_c} vanished")))?;
            h.link()
                .set(LinkUnspec::new_with_index(host_idx).controller(bridge_idx).mtu(mtu).up().build())
                .execute()
                .await
                .map_err(|e| nl(format!("attaching {host_c} to {bridge}: {e}")))?;
            // a pod may reach itself through a Service: its frames come back out of its own port
            h.link()
                .set_port(LinkBridgePort::new(host_idx).hairpin(true).build())
                .execute()
                .await
                .map_err(|e| nl(format!("hairpin on {host_c}: {e}")))?;
            Ok(())
        })
        .map_err(|e| pod_err(e.to_string()))?;
        netlink(Some(pod_ns), &pod_label, move |h| async move {
            let idx = link_index(&h, &peer).await?.ok_or_else(|| nl(format!("veth {peer} did not arrive")))?;
            h.link()
                .set(LinkUnspec::new_with_index(idx).name(POD_INTERFACE.to_string()).mtu(mtu).build())
                .execute()
                .await
                .map_err(|e| nl(format!("renaming {peer} to {POD_INTERFACE}: {e}")))?;
            h.link()
                .set(LinkUnspec::new_with_index(idx).up().build())
                .execute()
                .await
                .map_err(|e| nl(format!("setting {POD_INTERFACE} up: {e}")))?;
            h.address()
                .add(idx, IpAddr::V4(ip), prefix)
                .execute()
                .await
                .map_err(|e| nl(format!("adding {ip}/{prefix}: {e}")))?;
            h.route()
                .add(RouteMessageBuilder::<Ipv4Addr>::new().gateway(gateway).output_interface(idx).build())
                .replace()
                .execute()
                .await
                .map_err(|e| nl(format!("default route via {gateway}: {e}")))?;
            if let Some((ip6, prefix6, gw6)) = v6 {
                add_pod_ipv6(&h, idx, ip6, prefix6, gw6).await?;
            }
            if let Some(lo) = link_index(&h, "lo").await? {
                h.link()
                    .set(LinkUnspec::new_with_index(lo).up().build())
                    .execute()
                    .await
                    .map_err(|e| nl(format!("setting lo up: {e}")))?;
            }
            Ok(())
        })
        .map_err(|e| pod_err(e.to_string()))?;
        tracing::debug!(pod = %pod, ips = ?ips, veth = %host, "pod wired to the bridge");
        Ok(PodAddresses { ips })
    }

    fn teardown(&self, pod: &PodRef, pod_ns: &Path) -> Result<()> {
        if netns::exists(pod_ns) {
            let label = pod_ns.display().to_string();
            netlink(Some(pod_ns), &label, |h| async move { delete_link(&h, POD_INTERFACE).await })
                .map_err(|e| Error::Pod { pod: pod.to_string(), message: e.to_string() })?;
        }
        let host = host_veth_name(&pod.uid);
        netlink(self.node_ns(), &self.node_label(), move |h| async move { delete_link(&h, &host).await })?;
        self.ipam.release(&pod.uid)?;
        if let Some(ipam6) = &self.ipam6 {
            ipam6.release(&pod.uid)?;
        }
        Ok(())
    }

    fn set_peer_routes(&self, peers: Vec<(IpNet, IpAddr)>) -> Result<()> {
        let own: Vec<IpNet> = std::iter::once(IpNet::V4(self.cfg.pod_cidr.trunc()))
            .chain(self.cfg.ipv6.map(|v6| IpNet::V6(v6.pod_cidr.trunc())))
            .collect();
        let same_family = |n: &IpNet, gw: &IpAddr| n.network().is_ipv4() == gw.is_ipv4();
        let mut want: Vec<(IpNet, IpAddr)> = peers
            .into_iter()
            .map(|(n, gw)| (n.trunc(), gw))
            .filter(|(n, gw)| !own.contains(n) && same_family(n, gw))
            .collect();
        want.sort();
        want.dedup();
        netlink(self.node_ns(), &self.node_label(), move |h| async move {
            let have = delete_routes_not_in(&h, &want).await?;
            for (net, gw) in &want {
                if have.contains(&(*net, *gw)) {
                    continue;
                }
                tracing::debug!(%net, %gw, "netlink: add route");
                h.route()
                    .add(route_via(*net, *gw, ROUTE_PROTOCOL, None)?)
                    .replace()
                    .execute()
                    .await
                    .map_err(|e| nl(format!("adding the route to {net} via {gw}: {e}")))?;
            }
            Ok(())
        })
    }

    fn set_vxlan_peers(&self, peers: Vec<crate::vxlan::VxlanPeer>) -> Result<()> {
        let own = self.cfg.pod_cidr;
        let own6 = self.cfg.ipv6.map(|v6| v6.pod_cidr.trunc());
        let mut want: Vec<crate::vxlan::VxlanPeer> = peers
            .into_iter()
            .filter(|p| p.pod_cidr.trunc() != own)
            .map(|mut p| {
                // IPv6 only between dual-stack nodes
                p.pod_cidr_v6 = p.pod_cidr_v6.filter(|c| own6.is_some() && Some(c.trunc()) != own6);
                p
            })
            .collect();
        want.sort();
        want.dedup();
        netlink(self.node_ns(), &self.node_label(), move |h| async move {
            let idx = link_index(&h, crate::vxlan::DEVICE)
                .await?
                .ok_or_else(|| nl(format!("{} is missing: start the pod network first", crate::vxlan::DEVICE)))?;
            let mut routes: Vec<(IpNet, IpAddr)> = Vec::new();
            for p in &want {
                routes.push((IpNet::V4(p.pod_cidr.trunc()), IpAddr::V4(crate::vxlan::vtep_address(p.pod_cidr))));
                if let Some(cidr6) = p.pod_cidr_v6 {
                    routes.push((IpNet::V6(cidr6.trunc()), IpAddr::V6(crate::vxlan::vtep_address_v6(&p.mac))));
                }
            }
            delete_routes_not_in(&h, &routes).await?;
            for p in &want {
                crate::vxlan::program_peer(&h, idx, p, ROUTE_PROTOCOL).await?;
            }
            crate::vxlan::prune_peers(&h, idx, &want).await
        })
    }

    fn gc(&self, live: &HashSet<String>) -> Result<Vec<IpAddr>> {
        let mut released = self.ipam.gc(live)?;
        if let Some(ipam6) = &self.ipam6 {
            released.extend(ipam6.gc(live)?);
        }
        let keep: HashSet<String> = live.iter().map(|uid| host_veth_name(uid)).collect();
        let bridge = self.cfg.bridge.clone();
        netlink(self.node_ns(), &self.node_label(), move |h| async move {
            let Some(bridge_idx) = link_index(&h, &bridge).await? else { return Ok(()) };
            let links: Vec<LinkMessage> =
                h.link().get().execute().try_collect().await.map_err(|e| nl(format!("listing links: {e}")))?;
            for link in links {
                let name = link_name(&link);
                let on_bridge =
                    link.attributes.iter().any(|a| matches!(a, LinkAttribute::Controller(c) if *c == bridge_idx));
                if on_bridge && name.starts_with(HOST_VETH_PREFIX) && !keep.contains(&name) {
                    tracing::info!(veth = %name, "collecting the veth of a pod that is gone");
                    h.link().del(link.header.index).execute().await.map_err(|e| nl(format!("deleting {name}: {e}")))?;
                }
            }
            Ok(())
        })?;
        Ok(released)
    }
}

const POD_EGRESS_CHAIN: &str = "pod-egress";
const HOST_VETH_PREFIX: &str = "skf";

/// The host side of a pod's veth: `skf` + 11 hex digits of a hash of its UID
/// (interface names have at most 15 bytes).
pub fn host_veth_name(uid: &str) -> String {
    format!("{HOST_VETH_PREFIX}{:011x}", fnv1a(uid) & 0xfff_ffff_ffff)
}

/// The pod side's name until it is renamed to `eth0` inside the pod.
fn peer_veth_name(uid: &str) -> String {
    format!("skp{:011x}", fnv1a(uid) & 0xfff_ffff_ffff)
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// `net.ipv4.ip_forward` on (and `net.ipv6.conf.all.forwarding` on a
/// dual-stack node), br_netfilter loaded if it is a module, and
/// `bridge-nf-call-iptables` (and `-ip6tables`) on when it is there; all
/// read back. In the calling thread's
/// namespace (`/proc/sys/net` follows the thread). Returns whether bridge
/// netfilter is on.
fn ensure_sysctls(ipv6: bool) -> Result<bool> {
    set_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
    if ipv6 {
        set_sysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1")?;
    }
    let bridge_nf = Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables");
    if !bridge_nf.exists() {
        load_br_netfilter();
    }
    if bridge_nf.exists() {
        set_sysctl(bridge_nf, "1")?;
        if ipv6 {
            set_sysctl("/proc/sys/net/bridge/bridge-nf-call-ip6tables", "1")?;
        }
        return Ok(true);
    }
    Ok(false)
}

/// Load the br_netfilter module where the kernel has it as a module and
/// nothing loaded it yet (Debian's kernels), as k3s's agent does. Without it,
/// a pod's connection through a Service to a pod on the same bridge sees its
/// answer come straight from that pod's address, and fails.
fn load_br_netfilter() {
    match std::process::Command::new("modprobe").arg("br_netfilter").output() {
        Ok(out) if out.status.success() => tracing::info!("loaded the br_netfilter module"),
        Ok(out) => tracing::warn!(
            stderr = %String::from_utf8_lossy(&out.stderr).trim(),
            "modprobe br_netfilter failed"
        ),
        Err(e) => tracing::warn!("running modprobe br_netfilter: {e}"),
    }
}

fn set_sysctl(path: impl AsRef<Path>, value: &str) -> Result<()> {
    let path = path.as_ref();
    let err = |m: String| Error::Node { message: format!("sysctl {}: {m}", path.display()) };
    let current = std::fs::read_to_string(path).map_err(|e| err(format!("reading: {e}")))?;
    if current.trim() != value {
        tracing::debug!(path = %path.display(), value, "sysctl");
        std::fs::write(path, value).map_err(|e| err(format!("setting {value}: {e}")))?;
        let now = std::fs::read_to_string(path).map_err(|e| err(format!("reading back: {e}")))?;
        if now.trim() != value {
            return Err(err(format!("is {} after setting {value}", now.trim())));
        }
    }
    Ok(())
}

fn nl(message: String) -> Error {
    Error::Netlink { path: String::new(), message }
}

/// Run `f` with a netlink handle whose socket lives in the namespace at
/// `ns` (this process's own when `None`), on a thread of its own.
fn netlink<T, F, Fut>(ns: Option<&Path>, label: &str, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T>>,
{
    let label = label.to_string();
    let relabel = |e: Error| match e {
        Error::Netlink { path, message } if path.is_empty() => Error::Netlink { path: label.clone(), message },
        other => other,
    };
    let run = || -> Result<T> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| nl(format!("starting a runtime: {e}")))?;
        rt.block_on(async move {
            let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| nl(format!("opening a socket: {e}")))?;
            let conn = tokio::spawn(conn);
            let r = f(handle).await;
            conn.abort();
            r
        })
    };
    let r = match ns {
        Some(p) => netns::run_in(p, run)?,
        None => std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("skiff-netlink".into())
                .spawn_scoped(s, run)
                .map_err(|e| nl(format!("starting a thread: {e}")))?
                .join()
                .map_err(|_| nl("the netlink thread panicked".into()))?
        }),
    };
    r.map_err(relabel)
}

fn link_name(link: &LinkMessage) -> String {
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    match h.link().get().match_name(name.to_string()).execute().try_next().await {
        Ok(m) => Ok(m),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -(nix::errno::Errno::ENODEV as i32) => Ok(None),
        Err(e) => Err(nl(format!("looking up {name}: {e}"))),
    }
}

/// A link's index and MAC address, if it exists.
pub(crate) async fn link_with_mac(h: &Handle, name: &str) -> Result<Option<(u32, [u8; 6])>> {
    Ok(link_by_name(h, name).await?.map(|l| {
        let mac = l.attributes.iter().find_map(|a| match a {
            LinkAttribute::Address(m) => <[u8; 6]>::try_from(m.as_slice()).ok(),
            _ => None,
        });
        (l.header.index, mac.unwrap_or_default())
    }))
}

async fn link_index(h: &Handle, name: &str) -> Result<Option<u32>> {
    Ok(link_by_name(h, name).await?.map(|l| l.header.index))
}

async fn delete_link(h: &Handle, name: &str) -> Result<()> {
    if let Some(idx) = link_index(h, name).await? {
        tracing::debug!(name, "netlink: delete link");
        match h.link().del(idx).execute().await {
            Ok(()) => {}
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -(nix::errno::Errno::ENODEV as i32) => {}
            Err(e) => return Err(nl(format!("deleting {name}: {e}"))),
        }
    }
    Ok(())
}

pub(crate) async fn has_address(h: &Handle, idx: u32, ip: IpAddr, prefix: u8) -> Result<bool> {
    let addrs: Vec<_> = h
        .address()
        .get()
        .set_link_index_filter(idx)
        .execute()
        .try_collect()
        .await
        .map_err(|e| nl(format!("listing addresses: {e}")))?;
    Ok(addrs.iter().any(|a| {
        a.header.prefix_len == prefix
            && a.attributes.iter().any(|attr| matches!(attr, AddressAttribute::Address(x) if *x == ip))
    }))
}

/// `ip/prefix` on the link `idx` unless it is there. IPv6 addresses skip
/// duplicate address detection (`IFA_F_NODAD`): the IPAM guarantees they
/// are unique, and a tentative address would not work for a second or so.
pub(crate) async fn ensure_address(h: &Handle, idx: u32, link: &str, ip: IpAddr, prefix: u8) -> Result<()> {
    if has_address(h, idx, ip, prefix).await? {
        return Ok(());
    }
    tracing::debug!(link, %ip, prefix, "netlink: add address");
    let mut req = h.address().add(idx, ip, prefix);
    if ip.is_ipv6() {
        req.message_mut().attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    req.execute().await.map_err(|e| nl(format!("adding {ip}/{prefix} to {link}: {e}")))
}

/// A pod's IPv6 address on `eth0` (index `idx`, up) and its default IPv6
/// route via the bridge; idempotent.
async fn add_pod_ipv6(h: &Handle, idx: u32, ip: Ipv6Addr, prefix: u8, gateway: Ipv6Addr) -> Result<()> {
    ensure_address(h, idx, POD_INTERFACE, IpAddr::V6(ip), prefix).await?;
    h.route()
        .add(RouteMessageBuilder::<Ipv6Addr>::new().gateway(gateway).output_interface(idx).build())
        .replace()
        .execute()
        .await
        .map_err(|e| nl(format!("default IPv6 route via {gateway}: {e}")))
}

/// The link-local address of the bridge on a dual-stack node, the only one
/// it has, present without duplicate address detection. The node needs a
/// usable link-local address to send a neighbour solicitation for a packet
/// it forwards; the one the kernel makes stays tentative for about a second
/// after the first pod's veth gives the bridge a carrier, and the first
/// packet from another node to a pod that has not spoken yet waited a second
/// for the solicitation's retry.
pub const BRIDGE_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// The bridge's own MAC address: locally administered and derived from its
/// gateway address, so fixed. A bridge left to choose takes the lowest of
/// its ports' addresses and changes it when that port goes; every pod that
/// had resolved the gateway then sent to an address nobody answers until
/// its neighbour entry expired.
pub fn bridge_mac(gateway: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = gateway.octets();
    [0x02, 0x6b, a, b, c, d]
}

/// The bridge, up, with `gateway/prefix` and its fixed MAC address
/// ([`bridge_mac`]); made if missing, and then, on a dual-stack node,
/// without an address the kernel would generate (see
/// [`BRIDGE_LINK_LOCAL`]).
async fn ensure_bridge(h: &Handle, name: &str, gateway: Ipv4Addr, prefix: u8, mtu: u32, ipv6: bool) -> Result<u32> {
    let mac = bridge_mac(gateway);
    let idx = match link_with_mac(h, name).await? {
        Some((i, current)) => {
            if current != mac {
                // a bridge from before the address was fixed: the ports' own
                // addresses stay local to the bridge, so pods that resolved
                // the old one keep reaching it
                tracing::debug!(name, "netlink: fix the bridge's MAC address");
                h.link()
                    .set(LinkUnspec::new_with_index(i).address(mac.to_vec()).build())
                    .execute()
                    .await
                    .map_err(|e| nl(format!("setting the MAC address of {name}: {e}")))?;
            }
            i
        }
        None => {
            tracing::debug!(name, "netlink: add bridge");
            h.link()
                .add(LinkBridge::new(name).mtu(mtu).address(mac.to_vec()).build())
                .execute()
                .await
                .map_err(|e| nl(format!("adding bridge {name}: {e}")))?;
            if ipv6 {
                // before it is up: no link-local address of the kernel's making
                set_sysctl(format!("/proc/sys/net/ipv6/conf/{name}/addr_gen_mode"), "1")?;
            }
            link_index(h, name).await?.ok_or_else(|| nl(format!("bridge {name} vanished")))?
        }
    };
    ensure_address(h, idx, name, IpAddr::V4(gateway), prefix).await?;
    h.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .map_err(|e| nl(format!("setting {name} up: {e}")))?;
    Ok(idx)
}

async fn ipv4_routes(h: &Handle) -> Result<Vec<RouteMessage>> {
    h.route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(|e| nl(format!("listing routes: {e}")))
}

async fn ipv6_routes(h: &Handle) -> Result<Vec<RouteMessage>> {
    h.route()
        .get(RouteMessageBuilder::<Ipv6Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(|e| nl(format!("listing IPv6 routes: {e}")))
}

/// The MTU of the default route's device, if there is a default route.
async fn uplink_mtu(h: &Handle) -> Result<Option<u32>> {
    let routes = ipv4_routes(h).await?;
    let oif = routes.iter().filter(|r| r.header.destination_prefix_length == 0).find_map(|r| {
        r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        })
    });
    let Some(oif) = oif else { return Ok(None) };
    let link =
        h.link().get().match_index(oif).execute().try_next().await.map_err(|e| nl(format!("link {oif}: {e}")))?;
    Ok(link.and_then(|l| {
        l.attributes.iter().find_map(|a| match a {
            LinkAttribute::Mtu(m) => Some(*m),
            _ => None,
        })
    }))
}

/// Skiff's routes to other nodes (marked with [`ROUTE_PROTOCOL`]), both families.
async fn skiff_routes(h: &Handle) -> Result<Vec<(RouteMessage, IpNet, IpAddr)>> {
    let mut routes = ipv4_routes(h).await?;
    routes.extend(ipv6_routes(h).await?);
    Ok(routes
        .into_iter()
        .filter(|r| r.header.protocol == RouteProtocol::Other(ROUTE_PROTOCOL))
        .filter_map(|r| {
            let dst = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(d)) => Some(IpAddr::V4(*d)),
                RouteAttribute::Destination(RouteAddress::Inet6(d)) => Some(IpAddr::V6(*d)),
                _ => None,
            })?;
            let gw = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(IpAddr::V4(*g)),
                RouteAttribute::Gateway(RouteAddress::Inet6(g)) => Some(IpAddr::V6(*g)),
                _ => None,
            })?;
            let net = IpNet::new(dst, r.header.destination_prefix_length).ok()?;
            Some((r, net, gw))
        })
        .collect())
}

/// Delete Skiff's routes (see [`skiff_routes`]) other than `want`; returns
/// those that stay.
async fn delete_routes_not_in(h: &Handle, want: &[(IpNet, IpAddr)]) -> Result<Vec<(IpNet, IpAddr)>> {
    let mut kept = Vec::new();
    for (msg, net, gw) in skiff_routes(h).await? {
        if want.contains(&(net, gw)) {
            kept.push((net, gw));
            continue;
        }
        tracing::debug!(%net, %gw, "netlink: delete route");
        h.route().del(msg).execute().await.map_err(|e| nl(format!("deleting the route to {net} via {gw}: {e}")))?;
    }
    Ok(kept)
}

/// A route to `dest` via `gateway`, marked with `protocol`, either family.
/// With `onlink`, on that link and `onlink`: the VXLAN backend's next hops
/// are on no subnet of its device.
pub(crate) fn route_via(dest: IpNet, gateway: IpAddr, protocol: u8, onlink: Option<u32>) -> Result<RouteMessage> {
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dest.network(), dest.prefix_len())
        .and_then(|b| b.gateway(gateway))
        .map_err(|e| nl(format!("the route to {dest} via {gateway}: {e}")))?
        .protocol(RouteProtocol::Other(protocol));
    if let Some(idx) = onlink {
        builder = builder.output_interface(idx);
    }
    let mut route = builder.build();
    if onlink.is_some() {
        route.header.flags |= RouteFlags::Onlink;
    }
    Ok(route)
}

/// The first global IPv6 address (not link-local, not tentative, not
/// deprecated) on the interface that holds `ip`, in this process's network
/// namespace: a dual-stack node's IPv6 InternalIP when none is given.
/// `ip` itself when it is IPv6.
pub async fn ipv6_beside(ip: IpAddr) -> Result<Option<Ipv6Addr>> {
    if let IpAddr::V6(v6) = ip {
        return Ok(Some(v6));
    }
    blocking(move || {
        netlink(None, "(node)", move |h| async move {
            let addrs: Vec<_> =
                h.address().get().execute().try_collect().await.map_err(|e| nl(format!("listing addresses: {e}")))?;
            let holds = |a: &rtnetlink::packet_route::address::AddressMessage| {
                a.attributes.iter().any(|attr| matches!(attr, AddressAttribute::Address(x) if *x == ip))
            };
            let Some(link) = addrs.iter().find(|a| holds(a)).map(|a| a.header.index) else { return Ok(None) };
            let unusable = AddressFlags::Tentative | AddressFlags::Deprecated | AddressFlags::Dadfailed;
            Ok(addrs.iter().filter(|a| a.header.index == link).find_map(|a| {
                let flags = a.attributes.iter().find_map(|attr| match attr {
                    AddressAttribute::Flags(f) => Some(*f),
                    _ => None,
                });
                if flags.is_some_and(|f| f.intersects(unusable)) {
                    return None;
                }
                a.attributes.iter().find_map(|attr| match attr {
                    AddressAttribute::Address(IpAddr::V6(v6))
                        if !v6.is_loopback() && (v6.segments()[0] & 0xffc0) != 0xfe80 =>
                    {
                        Some(*v6)
                    }
                    _ => None,
                })
            }))
        })
    })
    .await
}

/// The pod CIDR's gateway (its first host address).
pub fn gateway_of(pod_cidr: Ipv4Net) -> Ipv4Addr {
    first_host(pod_cidr)
}

/// The IPv6 pod CIDR's gateway: the address after the subnet-router anycast
/// address (`fd00:10:244:1::1` for `fd00:10:244:1::/64`).
pub fn gateway_v6_of(pod_cidr: Ipv6Net) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(pod_cidr.network()).saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_fit_and_differ() {
        let a = host_veth_name("0b8f7c1e-5a8e-4a57-9d4e-6f1b2c3d4e5f");
        let b = host_veth_name("0b8f7c1e-5a8e-4a57-9d4e-6f1b2c3d4e60");
        assert_eq!(a.len(), 14);
        assert!(a.starts_with("skf"));
        assert_ne!(a, b);
        assert_eq!(a, host_veth_name("0b8f7c1e-5a8e-4a57-9d4e-6f1b2c3d4e5f"));
        assert!(peer_veth_name("x").len() <= 15);
    }

    #[test]
    fn a_pod_cidr_outside_the_cluster_cidr_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = BridgeConfig::new("10.1.0.0/24".parse().unwrap(), "10.244.0.0/16".parse().unwrap(), dir.path());
        let e = BridgeNetwork::new(cfg).err().unwrap().to_string();
        assert!(e.contains("podCIDR 10.1.0.0/24 is not inside the cluster CIDR 10.244.0.0/16"), "{e}");
    }
}
