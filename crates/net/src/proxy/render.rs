//! [`ProxyState`] → [`Ruleset`]: pure, no I/O.
//!
//! A ruleset is a global part (hooks, dispatch maps, checks, HostPorts) and
//! one [`Fragment`] per Service: the map elements and, for ClientIP affinity,
//! the chains and sets that Service owns. Incremental syncs diff fragments.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{json, Value};

use super::{Endpoint, Family, HostPort, Protocol, ProxyState, Service, ServicePort};

/// The table Skiff owns (family `ip`, and `ip6` on dual-stack nodes).
pub const TABLE: &str = "skiff";
/// The packet mark bit that asks `nat-postrouting` to masquerade (kube-proxy's).
pub(crate) const MASQ_MARK: u64 = 0x4000;

/// The maps keyed on a `numgen` index are declared by `typeof` (nft has no
/// type name for the index), one per protocol: nft 1.0.6 evaluates a map's
/// stored `typeof` again in every later rule that uses it, and a data type
/// written as `tcp dport` then conflicts with a UDP rule ("conflicting
/// protocols specified"); `th dport` conflicts with every rule.
fn endpoints_typeof(family: Family, nodeport: bool, proto: Protocol) -> String {
    let l3 = family.nft();
    let key = if nodeport { String::new() } else { format!("{l3} daddr . ") };
    format!("{key}meta l4proto . th dport . numgen random mod 1 : {l3} daddr . {proto} dport")
}

/// The map of a ClusterIP's, external or load-balancer address's endpoints
/// for `proto`, keyed on `address . protocol . port . index`.
pub(crate) fn cluster_endpoints(proto: Protocol) -> &'static str {
    match proto {
        Protocol::Tcp => "cluster-endpoints-tcp",
        Protocol::Udp => "cluster-endpoints-udp",
        Protocol::Sctp => "cluster-endpoints-sctp",
    }
}

/// The map of NodePort endpoints for `proto`, keyed on `protocol . port . index`.
pub(crate) fn nodeport_endpoints(proto: Protocol) -> &'static str {
    match proto {
        Protocol::Tcp => "nodeport-endpoints-tcp",
        Protocol::Udp => "nodeport-endpoints-udp",
        Protocol::Sctp => "nodeport-endpoints-sctp",
    }
}

pub(crate) const PROTOCOLS: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

/// Maps older Skiff versions used (one endpoint map for all protocols):
/// removed by a full sync.
pub(crate) const RETIRED_SETS: &[&str] = &["cluster-endpoints", "nodeport-endpoints"];

// Names of the fixed objects.
pub(crate) const SERVICE_IPS: &str = "service-ips";
pub(crate) const SERVICE_NODEPORTS: &str = "service-nodeports";
pub(crate) const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
pub(crate) const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
pub(crate) const CLUSTER_IPS: &str = "cluster-ips";
pub(crate) const HAIRPIN: &str = "hairpin";
const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
const REJECT_CHAIN: &str = "reject-chain";

/// Chains the proxy makes and removes as Services come and go; any other
/// chain in the table is fixed (or belongs to the pod network).
pub(crate) const DYNAMIC_CHAIN_PREFIXES: &[&str] =
    &["cluster-", "external-", "local-", "np-external-", "np-local-", "svc-", "ext-", "ep-"];
/// Sets the proxy makes and removes (ClientIP affinity).
pub(crate) const DYNAMIC_SET_PREFIX: &str = "affinity-";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BaseHook {
    pub kind: &'static str,
    pub hook: &'static str,
    pub prio: i32,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Chain {
    pub base: Option<BaseHook>,
    /// Each rule is its list of statements, as nft JSON `expr` values
    /// (written out in nft syntax by `text`).
    pub rules: Vec<Vec<Value>>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SetDecl {
    pub is_map: bool,
    /// The key type (a name, or an array of names for a concatenation).
    pub key: Value,
    /// The data type of a map.
    pub data: Option<String>,
    pub flags: Vec<&'static str>,
    pub timeout: Option<u32>,
    /// Declared by these `typeof` expressions instead of `key` and `data`
    /// (which then only describe it).
    pub type_of: Option<String>,
}

/// The key of a set or map element. Elements are the bulk of a table
/// (100,000 endpoints), so they are plain values, written out without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Key {
    Addr(IpAddr),
    AddrAddr(IpAddr, IpAddr),
    AddrProtoPort(IpAddr, Protocol, u16),
    ProtoPort(Protocol, u16),
    AddrProtoPortIndex(IpAddr, Protocol, u16, u32),
    ProtoPortIndex(Protocol, u16, u32),
}

/// The data of a map element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Data {
    Goto(String),
    Drop,
    AddrPort(IpAddr, u16),
}

impl Key {
    /// The key in nft's syntax, appended to `out` (no allocation: a full
    /// sync writes 100,000 of them).
    pub fn write_text(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = match *self {
            Key::Addr(a) => write!(out, "{a}"),
            Key::AddrAddr(a, b) => write!(out, "{a} . {b}"),
            Key::AddrProtoPort(a, p, n) => write!(out, "{a} . {p} . {n}"),
            Key::ProtoPort(p, n) => write!(out, "{p} . {n}"),
            Key::AddrProtoPortIndex(a, p, n, i) => write!(out, "{a} . {p} . {n} . {i}"),
            Key::ProtoPortIndex(p, n, i) => write!(out, "{p} . {n} . {i}"),
        };
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        self.write_text(&mut out);
        out
    }
}

impl Data {
    pub fn write_text(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = match self {
            Data::Goto(chain) => write!(out, "goto {chain}"),
            Data::Drop => write!(out, "drop"),
            Data::AddrPort(a, n) => write!(out, "{a} . {n}"),
        };
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        self.write_text(&mut out);
        out
    }
}

/// The kind of a shared endpoint-picking chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum SelectKind {
    /// ClusterIP: masquerade sources outside the cluster CIDR.
    Cluster,
    /// External/LoadBalancer address, externalTrafficPolicy Cluster: masquerade.
    External,
    /// External/LoadBalancer address, externalTrafficPolicy Local: keep the source.
    Local,
    NodePortExternal,
    NodePortLocal,
}

/// A chain shared by every Service port with the same path, endpoint count
/// and protocol: it picks `numgen random mod n` and looks the endpoint up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Select {
    pub kind: SelectKind,
    pub n: usize,
    pub proto: Protocol,
}

impl Select {
    pub fn chain(&self) -> String {
        let kind = match self.kind {
            SelectKind::Cluster => "cluster",
            SelectKind::External => "external",
            SelectKind::Local => "local",
            SelectKind::NodePortExternal => "np-external",
            SelectKind::NodePortLocal => "np-local",
        };
        format!("{kind}-{}-{}", self.n, self.proto)
    }

    fn render(&self, family: Family, cluster_cidr: Option<IpNet>) -> Chain {
        let l3 = family.nft();
        let mut rules = Vec::new();
        match self.kind {
            SelectKind::Cluster => {
                if let Some(cidr) = cluster_cidr {
                    rules.push(vec![matches("!=", payload(l3, "saddr"), prefix(cidr)), jump(MARK_FOR_MASQUERADE)]);
                }
            }
            SelectKind::External | SelectKind::NodePortExternal => rules.push(vec![jump(MARK_FOR_MASQUERADE)]),
            SelectKind::Local | SelectKind::NodePortLocal => {}
        }
        let index = json!({"numgen": {"mode": "random", "mod": self.n, "offset": 0}});
        let (key, map) = match self.kind {
            SelectKind::NodePortExternal | SelectKind::NodePortLocal => {
                (json!({"concat": [meta("l4proto"), payload("th", "dport"), index]}), nodeport_endpoints(self.proto))
            }
            _ => (
                json!({"concat": [payload(l3, "daddr"), meta("l4proto"), payload("th", "dport"), index]}),
                cluster_endpoints(self.proto),
            ),
        };
        rules.push(vec![
            matches("==", meta("l4proto"), json!(self.proto.as_str())),
            json!({"dnat": {"family": l3, "addr": {"map": {"key": key, "data": format!("@{map}")}}}}),
        ]);
        Chain { base: None, rules }
    }
}

/// The objects one part of the state (a Service, or the global part) owns.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Fragment {
    pub chains: BTreeMap<String, Chain>,
    pub sets: BTreeMap<String, SetDecl>,
    /// (set, key) → data (`None` for a set)
    pub elements: BTreeMap<(&'static str, Key), Option<Data>>,
    pub selects: BTreeSet<Select>,
}

impl Fragment {
    fn elem(&mut self, set: &'static str, key: Key, data: Option<Data>) {
        self.elements.insert((set, key), data);
    }
}

/// A rendered table: what [`super::Proxy`] applies.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ruleset {
    pub(crate) global: Fragment,
    /// `namespace/name` → the Service's fragment
    pub(crate) services: BTreeMap<String, Fragment>,
    pub(crate) cluster_cidr: Option<IpNet>,
    pub(crate) family: Family,
}

/// Render the whole table for `state`.
pub fn render(state: &ProxyState) -> Ruleset {
    let mut services = BTreeMap::new();
    for svc in &state.services {
        services.insert(service_key(svc), render_service(svc, state.family, state.cluster_cidr));
    }
    Ruleset { global: render_global(state), services, cluster_cidr: state.cluster_cidr, family: state.family }
}

pub(crate) fn service_key(svc: &Service) -> String {
    format!("{}/{}", svc.namespace, svc.name)
}

impl Ruleset {
    /// Every select chain any Service uses, rendered.
    pub(crate) fn select_chains(&self) -> BTreeMap<String, Chain> {
        let selects: BTreeSet<Select> = self.services.values().flat_map(|f| f.selects.iter().copied()).collect();
        selects.into_iter().map(|s| (s.chain(), s.render(self.family, self.cluster_cidr))).collect()
    }

    /// All chains, sets and elements of the table in one fragment.
    pub(crate) fn merged(&self) -> Fragment {
        let mut all = self.global.clone();
        all.chains.extend(self.select_chains());
        for f in self.services.values() {
            all.chains.extend(f.chains.iter().map(|(k, v)| (k.clone(), v.clone())));
            all.sets.extend(f.sets.iter().map(|(k, v)| (k.clone(), v.clone())));
            all.elements.extend(f.elements.iter().map(|(k, v)| (*k, v.clone())));
        }
        all
    }

    /// The table in nft's own syntax, the way `nft list table ip skiff`
    /// shows it (in a stable order): for tests, logs and people.
    pub fn to_text(&self) -> String {
        super::text::table(self.family, &self.merged())
    }

    /// (chains, rules, map and set elements)
    pub fn counts(&self) -> (usize, usize, usize) {
        let all = self.merged();
        let rules = all.chains.values().map(|c| c.rules.len()).sum();
        (all.chains.len(), rules, all.elements.len())
    }
}

/// The part of the table that does not depend on the Services.
pub(crate) fn render_global(state: &ProxyState) -> Fragment {
    let mut f = Fragment::default();
    let family = state.family;
    let l3 = family.nft();
    let addr = family.addr_type();
    let addr_proto_port = json!([addr, "inet_proto", "inet_service"]);
    let proto_port = json!(["inet_proto", "inet_service"]);
    let map = |key: &Value| SetDecl {
        is_map: true,
        key: key.clone(),
        data: Some("verdict".into()),
        flags: vec![],
        timeout: None,
        type_of: None,
    };
    f.sets.insert(SERVICE_IPS.into(), map(&addr_proto_port));
    f.sets.insert(SERVICE_NODEPORTS.into(), map(&proto_port));
    f.sets.insert(NO_ENDPOINT_SERVICES.into(), map(&addr_proto_port));
    f.sets.insert(NO_ENDPOINT_NODEPORTS.into(), map(&proto_port));
    let set = |key: Value| SetDecl { is_map: false, key, data: None, flags: vec![], timeout: None, type_of: None };
    f.sets.insert(CLUSTER_IPS.into(), set(json!(addr)));
    f.sets.insert(HAIRPIN.into(), set(json!([addr, addr])));
    let typed = |key: Value, type_of| SetDecl {
        is_map: true,
        key,
        data: Some(format!("{addr} . inet_service")),
        flags: vec![],
        timeout: None,
        type_of: Some(type_of),
    };
    for proto in PROTOCOLS {
        f.sets.insert(
            cluster_endpoints(proto).into(),
            typed(json!([addr, "inet_proto", "inet_service", "integer"]), endpoints_typeof(family, false, proto)),
        );
        f.sets.insert(
            nodeport_endpoints(proto).into(),
            typed(json!(["inet_proto", "inet_service", "integer"]), endpoints_typeof(family, true, proto)),
        );
    }

    let base = |kind, hook, prio, rules| Chain { base: Some(BaseHook { kind, hook, prio }), rules };
    let new_only = || matches("in", json!({"ct": {"key": "state"}}), json!("new"));
    f.chains.insert("nat-prerouting".into(), base("nat", "prerouting", -100, vec![vec![jump("services")]]));
    f.chains.insert("nat-output".into(), base("nat", "output", -100, vec![vec![jump("services")]]));
    let mut post = vec![vec![
        matches("==", json!({"&": [meta("mark"), MASQ_MARK]}), json!(MASQ_MARK)),
        json!({"mangle": {"key": meta("mark"), "value": {"^": [meta("mark"), MASQ_MARK]}}}),
        json!({"masquerade": {"flags": "fully-random"}}),
    ]];
    if state.pod_cidr.is_some() {
        post.push(vec![
            matches("in", json!({"ct": {"key": "status"}}), json!("dnat")),
            matches(
                "==",
                json!({"concat": [payload(l3, "saddr"), payload(l3, "daddr")]}),
                json!(format!("@{HAIRPIN}")),
            ),
            json!({"masquerade": null}),
        ]);
    }
    f.chains.insert("nat-postrouting".into(), base("nat", "postrouting", 100, post));
    // after DNAT (dstnat is -100), so a packet still addressed to a Service
    // here found no endpoint
    f.chains.insert(
        "filter-prerouting".into(),
        base(
            "filter",
            "prerouting",
            -90,
            vec![
                vec![new_only(), jump("service-endpoints-check")],
                vec![new_only(), jump("nodeport-endpoints-check")],
                vec![new_only(), jump("cluster-ips-check")],
            ],
        ),
    );
    f.chains.insert(
        "filter-output".into(),
        base(
            "filter",
            "output",
            -110,
            vec![vec![new_only(), jump("service-endpoints-check")], vec![new_only(), jump("nodeport-endpoints-check")]],
        ),
    );
    f.chains.insert(
        "filter-output-post-dnat".into(),
        base("filter", "output", -90, vec![vec![new_only(), jump("cluster-ips-check")]]),
    );

    let dispatch_key = json!({"concat": [payload(l3, "daddr"), meta("l4proto"), payload("th", "dport")]});
    let local_daddr = || {
        [
            matches("==", json!({"fib": {"result": "type", "flags": ["daddr"]}}), json!("local")),
            matches("!=", payload(l3, "daddr"), prefix(family.loopback())),
        ]
    };
    let port_key = json!({"concat": [meta("l4proto"), payload("th", "dport")]});
    let mut services = vec![vec![json!({"vmap": {"key": dispatch_key, "data": format!("@{SERVICE_IPS}")}})]];
    if !state.host_ports.is_empty() {
        services.push(vec![jump("hostports")]);
    }
    let mut nodeports = local_daddr().to_vec();
    nodeports.push(json!({"vmap": {"key": port_key, "data": format!("@{SERVICE_NODEPORTS}")}}));
    services.push(nodeports);
    f.chains.insert("services".into(), Chain { base: None, rules: services });
    if !state.host_ports.is_empty() {
        f.chains.insert(
            "hostports".into(),
            Chain { base: None, rules: host_port_rules(family, &state.host_ports, local_daddr) },
        );
    }
    f.chains.insert(
        MARK_FOR_MASQUERADE.into(),
        Chain {
            base: None,
            rules: vec![vec![json!({"mangle": {"key": meta("mark"), "value": {"|": [meta("mark"), MASQ_MARK]}}})]],
        },
    );
    f.chains.insert(
        "service-endpoints-check".into(),
        Chain {
            base: None,
            rules: vec![vec![json!({"vmap": {"key": dispatch_key, "data": format!("@{NO_ENDPOINT_SERVICES}")}})]],
        },
    );
    let mut np_check = local_daddr().to_vec();
    np_check.push(json!({"vmap": {"key": port_key, "data": format!("@{NO_ENDPOINT_NODEPORTS}")}}));
    f.chains.insert("nodeport-endpoints-check".into(), Chain { base: None, rules: vec![np_check] });
    f.chains.insert(
        "cluster-ips-check".into(),
        Chain {
            base: None,
            rules: vec![vec![
                matches("==", payload(l3, "daddr"), json!(format!("@{CLUSTER_IPS}"))),
                goto(REJECT_CHAIN),
            ]],
        },
    );
    f.chains.insert(
        REJECT_CHAIN.into(),
        Chain {
            base: None,
            rules: vec![
                vec![matches("==", meta("l4proto"), json!("tcp")), json!({"reject": {"type": "tcp reset"}})],
                vec![json!({"reject": {"type": family.icmp(), "expr": "port-unreachable"}})],
            ],
        },
    );
    if let Some(pod_cidr) = state.pod_cidr {
        // a pod reaching itself through a Service: masquerade so that the
        // reply comes back through the node (one element per address, so no
        // per-endpoint rules)
        match pod_cidr {
            IpNet::V4(net) if net.prefix_len() < 16 => {
                tracing::warn!(%pod_cidr, "pod CIDR larger than a /16: hairpin traffic is not masqueraded");
            }
            IpNet::V4(net) => {
                for ip in net.hosts() {
                    f.elem(HAIRPIN, Key::AddrAddr(ip.into(), ip.into()), None);
                }
            }
            // a /64 is far too large to list: the node's IPAM hands out
            // only the addresses of its pool, and those are listed
            IpNet::V6(net) => {
                let start = u128::from(net.network());
                for offset in 2..2 + crate::ipam::V6_POOL {
                    let ip = std::net::Ipv6Addr::from(start + offset);
                    if net.contains(&ip) {
                        f.elem(HAIRPIN, Key::AddrAddr(ip.into(), ip.into()), None);
                    }
                }
            }
        }
    }
    f
}

fn host_port_rules<const N: usize>(
    family: Family,
    host_ports: &[HostPort],
    local_daddr: impl Fn() -> [Value; N],
) -> Vec<Vec<Value>> {
    let mut sorted = host_ports.to_vec();
    sorted.sort();
    sorted.dedup();
    sorted
        .iter()
        .map(|hp| {
            let mut rule = match hp.host_ip {
                Some(ip) if !ip.is_unspecified() => {
                    vec![matches("==", payload(family.nft(), "daddr"), json!(ip.to_string()))]
                }
                _ => local_daddr().to_vec(),
            };
            rule.push(matches("==", meta("l4proto"), json!(hp.protocol.as_str())));
            rule.push(matches("==", payload("th", "dport"), json!(hp.host_port)));
            rule.push(json!({"dnat": {"addr": hp.pod_ip.to_string(), "port": hp.container_port}}));
            rule
        })
        .collect()
}

/// The endpoints of a port: sorted and deduplicated, so that a Service renders
/// the same whatever order its EndpointSlices came in.
fn endpoints(port: &ServicePort) -> Vec<Endpoint> {
    let mut eps = port.endpoints.clone();
    eps.sort();
    eps.dedup_by_key(|e| (e.ip, e.port));
    eps
}

pub(crate) fn render_service(svc: &Service, family: Family, cluster_cidr: Option<IpNet>) -> Fragment {
    let mut f = Fragment::default();
    if let Some(vip) = svc.cluster_ip {
        f.elem(CLUSTER_IPS, Key::Addr(vip), None);
    }
    let mut external: Vec<IpAddr> = svc.external_ips.iter().chain(&svc.load_balancer_ips).copied().collect();
    external.sort();
    external.dedup();
    for port in &svc.ports {
        let all = endpoints(port);
        let local: Vec<Endpoint> = all.iter().filter(|e| e.local).copied().collect();
        let cluster_eps = if svc.internal_traffic_local { &local } else { &all };
        let external_eps = if svc.external_traffic_local { &local } else { &all };
        // nothing to send to: reject when the Service has no endpoint at
        // all, drop when a Local policy leaves none on this node (kube-proxy)
        let empty = |local_policy: bool| {
            if all.is_empty() || !local_policy {
                Data::Goto(REJECT_CHAIN.into())
            } else {
                Data::Drop
            }
        };
        let proto = port.protocol;
        let svc_key = |ip: IpAddr| Key::AddrProtoPort(ip, proto, port.port);
        let np_key = |np: u16| Key::ProtoPort(proto, np);

        if let Some(timeout) = svc.session_affinity_timeout {
            render_affinity(
                svc,
                port,
                &all,
                cluster_eps,
                external_eps,
                timeout,
                family,
                cluster_cidr,
                &external,
                &mut f,
            );
            if let Some(vip) = svc.cluster_ip.filter(|_| cluster_eps.is_empty()) {
                f.elem(NO_ENDPOINT_SERVICES, svc_key(vip), Some(empty(svc.internal_traffic_local)));
            }
            if external_eps.is_empty() {
                for ip in &external {
                    f.elem(NO_ENDPOINT_SERVICES, svc_key(*ip), Some(empty(svc.external_traffic_local)));
                }
                if let Some(np) = port.node_port {
                    f.elem(NO_ENDPOINT_NODEPORTS, np_key(np), Some(empty(svc.external_traffic_local)));
                }
            }
            continue;
        }

        let dispatch = |f: &mut Fragment, ip: IpAddr, eps: &[Endpoint], kind: SelectKind, local_policy: bool| {
            if eps.is_empty() {
                f.elem(NO_ENDPOINT_SERVICES, svc_key(ip), Some(empty(local_policy)));
                return;
            }
            let select = Select { kind, n: eps.len(), proto: port.protocol };
            f.elem(SERVICE_IPS, svc_key(ip), Some(Data::Goto(select.chain())));
            for (i, ep) in eps.iter().enumerate() {
                f.elem(
                    cluster_endpoints(port.protocol),
                    Key::AddrProtoPortIndex(ip, proto, port.port, i as u32),
                    Some(Data::AddrPort(ep.ip, ep.port)),
                );
            }
            f.selects.insert(select);
        };
        if let Some(vip) = svc.cluster_ip {
            dispatch(&mut f, vip, cluster_eps, SelectKind::Cluster, svc.internal_traffic_local);
        }
        let ext_kind = if svc.external_traffic_local { SelectKind::Local } else { SelectKind::External };
        for ip in &external {
            dispatch(&mut f, *ip, external_eps, ext_kind, svc.external_traffic_local);
        }
        if let Some(np) = port.node_port {
            if external_eps.is_empty() {
                f.elem(NO_ENDPOINT_NODEPORTS, np_key(np), Some(empty(svc.external_traffic_local)));
            } else {
                let kind =
                    if svc.external_traffic_local { SelectKind::NodePortLocal } else { SelectKind::NodePortExternal };
                let select = Select { kind, n: external_eps.len(), proto: port.protocol };
                f.elem(SERVICE_NODEPORTS, np_key(np), Some(Data::Goto(select.chain())));
                for (i, ep) in external_eps.iter().enumerate() {
                    f.elem(
                        nodeport_endpoints(port.protocol),
                        Key::ProtoPortIndex(proto, np, i as u32),
                        Some(Data::AddrPort(ep.ip, ep.port)),
                    );
                }
                f.selects.insert(select);
            }
        }
    }
    f
}

/// ClientIP affinity, kube-proxy's way: a chain per endpoint that records the
/// client in the endpoint's dynamic set (with the Service's timeout) and
/// DNATs; the Service's chains first send a client found in one of those sets
/// back to its endpoint, and pick at random otherwise.
#[allow(clippy::too_many_arguments)]
fn render_affinity(
    svc: &Service,
    port: &ServicePort,
    all: &[Endpoint],
    cluster_eps: &[Endpoint],
    external_eps: &[Endpoint],
    timeout: u32,
    family: Family,
    cluster_cidr: Option<IpNet>,
    external: &[IpAddr],
    f: &mut Fragment,
) {
    let l3 = family.nft();
    let proto = port.protocol.as_str();
    let id = format!("{}/{}/{}/{}", svc.namespace, svc.name, proto, port.port);
    // nft's syntax allows `/`, `.` and `-` in a name, not `:`
    let ep_chain = |ep: &Endpoint| format!("ep-{id}/{}/{}", ep.ip, ep.port);
    let ep_set = |ep: &Endpoint| format!("{DYNAMIC_SET_PREFIX}{id}/{}/{}", ep.ip, ep.port);
    let used: BTreeSet<&Endpoint> = cluster_eps.iter().chain(external_eps).collect();
    for ep in all.iter().filter(|e| used.contains(e)) {
        f.sets.insert(
            ep_set(ep),
            SetDecl {
                is_map: false,
                key: json!(family.addr_type()),
                data: None,
                // rules add to it: `dynamic`, as the kernel would flag it anyway
                flags: vec!["dynamic", "timeout"],
                timeout: Some(timeout),
                type_of: None,
            },
        );
        f.chains.insert(
            ep_chain(ep),
            Chain {
                base: None,
                rules: vec![
                    vec![json!({"set": {"op": "update", "elem": payload(l3, "saddr"), "set": format!("@{}", ep_set(ep))}})],
                    vec![
                        matches("==", meta("l4proto"), json!(proto)),
                        json!({"dnat": {"addr": ep.ip.to_string(), "port": ep.port}}),
                    ],
                ],
            },
        );
    }
    let pick = |eps: &[Endpoint]| -> Vec<Vec<Value>> {
        let mut rules: Vec<Vec<Value>> = eps
            .iter()
            .map(|ep| vec![matches("==", payload(l3, "saddr"), json!(format!("@{}", ep_set(ep)))), goto(&ep_chain(ep))])
            .collect();
        if eps.len() == 1 {
            rules.push(vec![goto(&ep_chain(&eps[0]))]);
        } else {
            let targets: Vec<Value> = eps.iter().enumerate().map(|(i, ep)| json!([i, goto(&ep_chain(ep))])).collect();
            rules.push(vec![json!({"vmap": {
                "key": {"numgen": {"mode": "random", "mod": eps.len(), "offset": 0}},
                "data": {"set": targets},
            }})]);
        }
        rules
    };
    let svc_key = |ip: IpAddr| Key::AddrProtoPort(ip, port.protocol, port.port);
    if let (Some(vip), false) = (svc.cluster_ip, cluster_eps.is_empty()) {
        let mut rules = Vec::new();
        if let Some(cidr) = cluster_cidr {
            rules.push(vec![matches("!=", payload(l3, "saddr"), prefix(cidr)), jump(MARK_FOR_MASQUERADE)]);
        }
        rules.extend(pick(cluster_eps));
        let chain = format!("svc-{id}");
        f.chains.insert(chain.clone(), Chain { base: None, rules });
        f.elem(SERVICE_IPS, svc_key(vip), Some(Data::Goto(chain)));
    }
    if !external_eps.is_empty() && (!external.is_empty() || port.node_port.is_some()) {
        let mut rules = Vec::new();
        if !svc.external_traffic_local {
            rules.push(vec![jump(MARK_FOR_MASQUERADE)]);
        }
        rules.extend(pick(external_eps));
        let chain = format!("ext-{id}");
        f.chains.insert(chain.clone(), Chain { base: None, rules });
        for ip in external {
            f.elem(SERVICE_IPS, svc_key(*ip), Some(Data::Goto(chain.clone())));
        }
        if let Some(np) = port.node_port {
            f.elem(SERVICE_NODEPORTS, Key::ProtoPort(port.protocol, np), Some(Data::Goto(chain.clone())));
        }
    }
}

// Building blocks of rules (nft JSON expressions, written out by `text`)

pub(crate) fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

pub(crate) fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

pub(crate) fn matches(op: &str, left: Value, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

pub(crate) fn prefix(net: IpNet) -> Value {
    json!({"prefix": {"addr": net.network().to_string(), "len": net.prefix_len()}})
}

pub(crate) fn jump(target: &str) -> Value {
    json!({"jump": {"target": target}})
}

pub(crate) fn goto(target: &str) -> Value {
    json!({"goto": {"target": target}})
}
