//! The service proxy: Services, NodePorts, LoadBalancer and external
//! addresses, and HostPorts, programmed as one nftables table (`ip skiff`)
//! the way kube-proxy's nftables mode (KEP-3866) does it: verdict maps keyed
//! on `address . protocol . port` dispatch to a handful of shared chains, and
//! endpoints are picked with `numgen random mod N` from a map, so neither the
//! lookup nor the size of a sync grows with a chain per service.
//!
//! - [`render`] turns a [`ProxyState`] into a [`Ruleset`]: pure, no I/O,
//!   what the unit tests look at (as nft-like text, [`Ruleset::to_text`]).
//! - [`Proxy`] applies rulesets: a full resync at start and periodically,
//!   and incremental syncs that touch only the services that changed. Each
//!   is up to three kernel transactions in an order that keeps the table
//!   whole between them (new chains and rules through `nft`, then every
//!   element change in one nf_tables netlink batch, then removals through
//!   `nft`); an endpoint change is the element batch alone.
//!
//! Why the table looks the way it does (measured on nftables 1.0.6, kernel
//! 6.18, 10,000 services × 10 endpoints):
//! - an anonymous map per service (`numgen … vmap { … }` in every service
//!   chain) costs the kernel quadratic time to name the sets: 18 s;
//! - a chain per endpoint (kube-proxy's layout) adds 100,000 chains: 133 s;
//! - a rule per endpoint (`numgen random mod k == 0 dnat …`): 6 s;
//! - one map for all endpoints looked up from 10,000 service chains: every
//!   rule that binds a map makes the kernel walk all its elements, 26 s.
//!
//! So services that need no per-service state share their chains: one per
//! (path, endpoint count, protocol), e.g. `cluster-3-tcp`, which picks
//! `numgen random mod 3` and looks the endpoint up in `cluster-endpoints`
//! keyed on `ip daddr . meta l4proto . th dport . index`. Only services with
//! ClientIP session affinity get chains of their own (kube-proxy's per-endpoint
//! chains and dynamic sets), since affinity needs per-endpoint state.
//!
//! Chains, rules and set declarations go to `nft -f -` in nft's own syntax
//! (it reads only the table's objects, not their elements, into its cache,
//! and can declare the maps keyed on a `numgen` index with `typeof`, which
//! its JSON cannot). Elements, 130,000 of them at 10,000 Services, go
//! straight to the kernel over netlink ([`nfnl`]): nft spends 7–10 µs
//! parsing each, the kernel about 2.

mod nfnl;
mod nft;
mod render;
mod sync;
mod text;
mod udp;

#[cfg(test)]
mod tests;

pub mod bench;

use std::net::IpAddr;

use ipnet::IpNet;

pub use nft::{delete_family_table, delete_table, list_family_table, list_table};
pub use render::{render, Ruleset, TABLE};
pub use sync::{Proxy, SyncKind, SyncStats};
pub use udp::UdpState;

/// Reads single elements of the proxy's tables straight from the kernel
/// (one netlink request each, on a socket it keeps): how a benchmark sees a
/// change land without `nft`, which reads whole sets for it.
pub struct Lookup {
    conn: nfnl::Conn,
}

impl Lookup {
    /// For the namespace pinned at `netns` (this thread's when `None`).
    pub fn open(netns: Option<&std::path::Path>) -> crate::Result<Lookup> {
        Ok(Lookup { conn: nfnl::Conn::open(netns)? })
    }

    /// The endpoint a ClusterIP (or external address) port's `index`-th
    /// choice DNATs to now, if any.
    pub fn cluster_endpoint(
        &self,
        vip: IpAddr,
        protocol: Protocol,
        port: u16,
        index: u32,
    ) -> crate::Result<Option<(IpAddr, u16)>> {
        let key = render::Key::AddrProtoPortIndex(vip, protocol, port, index);
        let data = self.conn.element_data(Family::of(vip), render::cluster_endpoints(protocol), &key)?;
        Ok(data.and_then(|d| {
            let (addr, rest): (IpAddr, &[u8]) = match (vip, d.len()) {
                (IpAddr::V4(_), 8) => (std::net::Ipv4Addr::new(d[0], d[1], d[2], d[3]).into(), &d[4..]),
                (IpAddr::V6(_), 20) => {
                    (std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&d[..16]).ok()?).into(), &d[16..])
                }
                _ => return None,
            };
            Some((addr, u16::from_be_bytes([rest[0], rest[1]])))
        }))
    }
}

/// Apply one nft JSON transaction (the pod network's chain shares the table).
pub(crate) fn apply_json(netns: Option<&std::path::Path>, payload: &str) -> crate::Result<()> {
    nft::apply_json(netns, payload)
}

/// The address family a proxy programs: one table each, `ip skiff` and
/// `ip6 skiff`, as kube-proxy runs one proxier per family on dual-stack nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Family {
    #[default]
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// The nftables family of its table (`ip`, `ip6`), also the payload
    /// protocol of its network header.
    pub fn nft(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    /// Kubernetes' name for it (`ipFamilies`, an EndpointSlice's `addressType`).
    pub fn k8s_name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// The netlink family number (NFPROTO_IPV4, NFPROTO_IPV6).
    pub(crate) fn nfproto(self) -> u8 {
        match self {
            Family::V4 => 2,
            Family::V6 => 10,
        }
    }

    /// nft's type name for an address.
    pub(crate) fn addr_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }

    /// The ICMP version a reject answers with.
    pub(crate) fn icmp(self) -> &'static str {
        match self {
            Family::V4 => "icmp",
            Family::V6 => "icmpv6",
        }
    }

    pub(crate) fn loopback(self) -> IpNet {
        match self {
            Family::V4 => "127.0.0.0/8".parse().expect("a valid CIDR"),
            Family::V6 => "::1/128".parse().expect("a valid CIDR"),
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.k8s_name())
    }
}

/// A transport protocol a Service port or HostPort uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The name nft uses (`tcp`, `udp`, `sctp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// The IP protocol number (as in the IPv4 header's protocol field).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// From a Kubernetes protocol name (`TCP`, `UDP`, `SCTP`).
    pub fn from_k8s(name: &str) -> Option<Protocol> {
        match name {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the proxy programs on one node for one address family: every
/// address in it is of that family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyState {
    pub family: Family,
    /// The cluster's pod CIDR (`--cluster-cidr`) of this family. Traffic to a
    /// ClusterIP from outside it is masqueraded, as kube-proxy does with
    /// `--cluster-cidr`.
    pub cluster_cidr: Option<IpNet>,
    /// This node's podCIDR of this family: a pod reaching itself through a
    /// Service (hairpin) is masqueraded so that its reply comes back through the node.
    pub pod_cidr: Option<IpNet>,
    pub services: Vec<Service>,
    /// HostPorts of the pods on this node.
    pub host_ports: Vec<HostPort>,
}

/// A Service as the proxy needs it. A Service without a ClusterIP (headless)
/// is programmed only for its external addresses, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub cluster_ip: Option<IpAddr>,
    /// spec.externalIPs
    pub external_ips: Vec<IpAddr>,
    /// status.loadBalancer.ingress[].ip
    pub load_balancer_ips: Vec<IpAddr>,
    /// sessionAffinity ClientIP: its timeout in seconds
    /// (sessionAffinityConfig.clientIP.timeoutSeconds, 10800 by default).
    pub session_affinity_timeout: Option<u32>,
    /// internalTrafficPolicy Local: the ClusterIP uses only this node's endpoints.
    pub internal_traffic_local: bool,
    /// externalTrafficPolicy Local: NodePorts, external and load-balancer
    /// addresses use only this node's endpoints and keep the client's address.
    pub external_traffic_local: bool,
    pub ports: Vec<ServicePort>,
}

/// One port of a Service with the endpoints that serve it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    /// For NodePort and LoadBalancer Services.
    pub node_port: Option<u16>,
    /// The ready endpoints, each with the port its targetPort resolved to
    /// (a named targetPort may resolve to a different port per endpoint).
    /// Only ready endpoints belong here.
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
    /// Whether the endpoint runs on this node.
    pub local: bool,
}

/// A container port published on the node (`hostPort`): DNAT of the node's
/// addresses (or `host_ip` only) to the pod, programmed only on the pod's node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostPort {
    pub protocol: Protocol,
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub pod_ip: IpAddr,
    pub container_port: u16,
}
