//! The cluster zone as a pure model: the records the Kubernetes DNS-Based
//! Service Discovery specification asks for, built from Services,
//! EndpointSlices and Pods, and looked up by name and type. No sockets here;
//! [`crate::wire`] compiles this model into ready-made answers.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use rustc_hash::FxHashMap;

/// The schema version served at `dns-version.<zone>` (what CoreDNS serves).
pub const SCHEMA_VERSION: &str = "1.1.0";

/// Weight and priority of SRV records (the specification leaves them free;
/// these are CoreDNS's).
const SRV_PRIORITY: u16 = 0;
const SRV_WEIGHT: u16 = 100;

/// An SRV record's data.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Srv {
    pub port: u16,
    /// Lowercase, without the trailing dot.
    pub target: String,
}

/// The records of one name. An entry with no records is an empty
/// non-terminal: the name exists (NODATA), it just has no data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameData {
    pub a: Vec<Ipv4Addr>,
    pub aaaa: Vec<Ipv6Addr>,
    pub srv: Vec<Srv>,
    /// Lowercase names without the trailing dot.
    pub ptr: Vec<String>,
    pub cname: Option<String>,
    pub txt: Vec<String>,
}

impl NameData {
    /// The record types this name has data of (SOA is added for the apex by the caller).
    pub fn types(&self) -> Vec<RecordType> {
        let mut t = Vec::new();
        if !self.a.is_empty() {
            t.push(RecordType::A);
        }
        if !self.aaaa.is_empty() {
            t.push(RecordType::AAAA);
        }
        if !self.srv.is_empty() {
            t.push(RecordType::SRV);
        }
        if !self.ptr.is_empty() {
            t.push(RecordType::PTR);
        }
        if self.cname.is_some() {
            t.push(RecordType::CNAME);
        }
        if !self.txt.is_empty() {
            t.push(RecordType::TXT);
        }
        t
    }
}

/// What a lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// In the cluster zone (or a reverse name we own): authoritative answer.
    /// `answers` empty with `NoError` is NODATA; `NXDomain` has no answers;
    /// both then carry the zone's SOA in `authorities`.
    Authoritative { rcode: ResponseCode, answers: Vec<Record>, authorities: Vec<Record>, additionals: Vec<Record> },
    /// The name is an ExternalName alias to a name outside the zone: answer
    /// the CNAME and resolve `target` for the rest of the chain.
    Alias { cname: Box<Record>, target: Name },
    /// Not ours: forward upstream.
    NotOurs,
}

/// The cluster zone: every name with data, every empty non-terminal above
/// them, and the PTR names of service, endpoint and pod addresses.
#[derive(Clone, Debug)]
pub struct Records {
    zone: String,
    ttl: u32,
    serial: u32,
    names: FxHashMap<String, NameData>,
}

/// Lowercase, trailing dot removed.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// `10-1-2-3` for 10.1.2.3, `fd00--1` for fd00::1.
pub fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

fn undashed(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label.replace('-', ":").parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// The reverse-lookup name of an address, lowercase, without the trailing dot.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for b in v6.octets().iter().rev() {
                s.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
                s.push('.');
                s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
                s.push('.');
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

/// Is this endpoint ready in the specification's sense? A missing `ready`
/// condition means ready (EndpointSlice API).
fn endpoint_ready(ep: &k8s_openapi::api::discovery::v1::Endpoint, publish_not_ready: bool) -> bool {
    publish_not_ready || ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true)
}

fn tolerates_unready(svc: &Service) -> bool {
    let annotated = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("service.alpha.kubernetes.io/tolerate-unready-endpoints"))
        .is_some_and(|v| v == "true");
    annotated || svc.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false)
}

impl Records {
    /// An empty zone (only its apex, SOA and `dns-version`).
    pub fn empty(zone: &str, ttl: u32) -> Records {
        Records::build(zone, ttl, &[], &[], &[])
    }

    /// Build the zone from the API's objects.
    pub fn build(zone: &str, ttl: u32, services: &[Service], slices: &[EndpointSlice], pods: &[Pod]) -> Records {
        let zone = normalize(zone);
        let mut r = Records { zone: zone.clone(), ttl, serial: 1, names: FxHashMap::default() };
        r.names.entry(zone.clone()).or_default();
        r.add(&format!("dns-version.{zone}")).txt.push(SCHEMA_VERSION.to_string());

        // endpoints by (namespace, service name)
        let mut slices_of: FxHashMap<(String, String), Vec<&EndpointSlice>> = FxHashMap::default();
        for s in slices {
            let ns = s.metadata.namespace.clone().unwrap_or_default();
            let Some(svc) = s.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")) else {
                continue;
            };
            slices_of.entry((ns, svc.clone())).or_default().push(s);
        }
        // reverse names claimed by services and endpoints (pods only get the rest)
        let mut claimed: BTreeSet<IpAddr> = BTreeSet::new();

        for svc in services {
            let (Some(name), Some(ns)) = (svc.metadata.name.as_deref(), svc.metadata.namespace.as_deref()) else {
                continue;
            };
            let Some(spec) = svc.spec.as_ref() else { continue };
            let fqdn = normalize(&format!("{name}.{ns}.svc.{zone}"));
            if spec.type_.as_deref() == Some("ExternalName") {
                if let Some(ext) = spec.external_name.as_deref().filter(|e| !e.is_empty()) {
                    r.add(&fqdn).cname = Some(normalize(ext));
                }
                continue;
            }
            let mut ips: Vec<IpAddr> = spec.cluster_ips.iter().flatten().filter_map(|s| s.parse().ok()).collect();
            if ips.is_empty() {
                ips.extend(spec.cluster_ip.as_deref().and_then(|s| s.parse::<IpAddr>().ok()));
            }
            let headless = spec.cluster_ip.as_deref() == Some("None");
            if !headless {
                if ips.is_empty() {
                    continue; // not allocated yet
                }
                let d = r.add(&fqdn);
                for ip in &ips {
                    match ip {
                        IpAddr::V4(v4) => d.a.push(*v4),
                        IpAddr::V6(v6) => d.aaaa.push(*v6),
                    }
                }
                for p in spec.ports.iter().flatten() {
                    let Some(pname) = p.name.as_deref().filter(|n| !n.is_empty()) else { continue };
                    let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                    let port = u16::try_from(p.port).unwrap_or(0);
                    r.add(&normalize(&format!("_{pname}._{proto}.{fqdn}")))
                        .srv
                        .push(Srv { port, target: fqdn.clone() });
                }
                for ip in ips {
                    claimed.insert(ip);
                    r.add(&reverse_name(ip)).ptr.push(fqdn.clone());
                }
                continue;
            }
            // headless: one record per ready endpoint, and a name per endpoint
            let publish_not_ready = tolerates_unready(svc);
            let Some(its_slices) = slices_of.get(&(ns.to_string(), name.to_string())) else { continue };
            for slice in its_slices {
                if slice.address_type == "FQDN" {
                    continue;
                }
                for ep in slice.endpoints.iter().filter(|e| endpoint_ready(e, publish_not_ready)) {
                    for ip in ep.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                        let host = ep.hostname.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| dashed(ip));
                        let host_fqdn = normalize(&format!("{host}.{fqdn}"));
                        for n in [&fqdn, &host_fqdn] {
                            let d = r.add(n);
                            match ip {
                                IpAddr::V4(v4) => d.a.push(v4),
                                IpAddr::V6(v6) => d.aaaa.push(v6),
                            }
                        }
                        for p in slice.ports.iter().flatten() {
                            let (Some(pname), Some(port)) = (p.name.as_deref().filter(|n| !n.is_empty()), p.port)
                            else {
                                continue;
                            };
                            let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                            r.add(&normalize(&format!("_{pname}._{proto}.{fqdn}")))
                                .srv
                                .push(Srv { port: u16::try_from(port).unwrap_or(0), target: host_fqdn.clone() });
                        }
                        claimed.insert(ip);
                        r.add(&reverse_name(ip)).ptr.push(host_fqdn);
                    }
                }
            }
        }

        // pods: `a-b-c-d.<ns>.pod.<zone>` (answered for any address anyway,
        // see `lookup`; listed here for the fast path) and their PTR names
        for pod in pods {
            let Some(ns) = pod.metadata.namespace.as_deref() else { continue };
            if pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false) {
                continue; // the node's address, shared by many pods
            }
            let Some(status) = pod.status.as_ref() else { continue };
            let mut ips: Vec<IpAddr> = status.pod_ips.iter().flatten().filter_map(|p| p.ip.parse().ok()).collect();
            if ips.is_empty() {
                ips.extend(status.pod_ip.as_deref().and_then(|s| s.parse::<IpAddr>().ok()));
            }
            for ip in ips {
                let pod_fqdn = normalize(&format!("{}.{ns}.pod.{zone}", dashed(ip)));
                let d = r.add(&pod_fqdn);
                match ip {
                    IpAddr::V4(v4) if !d.a.contains(&v4) => d.a.push(v4),
                    IpAddr::V6(v6) if !d.aaaa.contains(&v6) => d.aaaa.push(v6),
                    _ => {}
                }
                if !claimed.contains(&ip) {
                    let d = r.add(&reverse_name(ip));
                    if !d.ptr.contains(&pod_fqdn) {
                        d.ptr.push(pod_fqdn);
                    }
                }
            }
        }
        for d in r.names.values_mut() {
            d.a.sort();
            d.a.dedup();
            d.aaaa.sort();
            d.aaaa.dedup();
            d.srv.sort();
            d.srv.dedup();
            d.ptr.sort();
            d.ptr.dedup();
        }
        r
    }

    /// The entry of `name`, created with the empty non-terminals above it
    /// (within the zone; reverse names get no ancestors: those are not ours).
    fn add(&mut self, name: &str) -> &mut NameData {
        if let Some(rest) = name.strip_suffix(self.zone.as_str()) {
            let mut prefix = rest.trim_end_matches('.');
            while let Some((_, parent)) = prefix.split_once('.') {
                let p = format!("{parent}.{}", self.zone);
                self.names.entry(p).or_default();
                prefix = parent;
            }
        }
        self.names.entry(name.to_string()).or_default()
    }

    pub fn zone(&self) -> &str {
        &self.zone
    }

    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// Every name with its data (names lowercase, without trailing dot).
    pub fn names(&self) -> impl Iterator<Item = (&str, &NameData)> {
        self.names.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn get(&self, name: &str) -> Option<&NameData> {
        self.names.get(&normalize(name))
    }

    /// Is `name` (lowercase, no trailing dot) the zone or below it?
    pub fn in_zone(&self, name: &str) -> bool {
        name == self.zone || name.strip_suffix(self.zone.as_str()).is_some_and(|p| p.ends_with('.'))
    }

    fn fqdn(name: &str) -> Name {
        // names here come from validated API objects; a bad one becomes the root
        Name::from_ascii(format!("{name}.")).unwrap_or_else(|_| Name::root())
    }

    /// The zone's SOA record (for the authority section of negative answers).
    pub fn soa(&self) -> Record {
        let zone = &self.zone;
        let soa = SOA::new(
            Self::fqdn(&format!("ns.dns.{zone}")),
            Self::fqdn(&format!("hostmaster.{zone}")),
            self.serial,
            7200,
            1800,
            86400,
            self.ttl,
        );
        Record::from_rdata(Self::fqdn(zone), self.ttl, RData::SOA(soa))
    }

    /// The records of `data` at `name` of type `qtype` (ANY: all of them).
    pub fn records_of(&self, name: &Name, data: &NameData, qtype: RecordType) -> Vec<Record> {
        let ttl = self.ttl;
        let mut out = Vec::new();
        let want = |t: RecordType| qtype == t || qtype == RecordType::ANY;
        if want(RecordType::A) {
            out.extend(data.a.iter().map(|ip| Record::from_rdata(name.clone(), ttl, RData::A(A(*ip)))));
        }
        if want(RecordType::AAAA) {
            out.extend(data.aaaa.iter().map(|ip| Record::from_rdata(name.clone(), ttl, RData::AAAA(AAAA(*ip)))));
        }
        if want(RecordType::SRV) {
            out.extend(data.srv.iter().map(|s| {
                let srv = SRV::new(SRV_PRIORITY, SRV_WEIGHT, s.port, Self::fqdn(&s.target));
                Record::from_rdata(name.clone(), ttl, RData::SRV(srv))
            }));
        }
        if want(RecordType::PTR) {
            out.extend(data.ptr.iter().map(|p| Record::from_rdata(name.clone(), ttl, RData::PTR(PTR(Self::fqdn(p))))));
        }
        if want(RecordType::CNAME) {
            out.extend(
                data.cname.iter().map(|c| Record::from_rdata(name.clone(), ttl, RData::CNAME(CNAME(Self::fqdn(c))))),
            );
        }
        if want(RecordType::TXT) && !data.txt.is_empty() {
            out.push(Record::from_rdata(name.clone(), ttl, RData::TXT(TXT::new(data.txt.clone()))));
        }
        if want(RecordType::SOA) && normalize(&name.to_ascii()) == self.zone {
            out.push(self.soa());
        }
        out
    }

    /// The additional records for SRV answers: the targets' addresses.
    fn additionals_for(&self, answers: &[Record]) -> Vec<Record> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for r in answers {
            if let RData::SRV(srv) = &r.data {
                let target = normalize(&srv.target.to_ascii());
                if !seen.insert(target.clone()) {
                    continue;
                }
                if let Some(d) = self.names.get(&target) {
                    let n = Self::fqdn(&target);
                    out.extend(self.records_of(&n, d, RecordType::A));
                    out.extend(self.records_of(&n, d, RecordType::AAAA));
                }
            }
        }
        out
    }

    fn negative(&self, rcode: ResponseCode) -> Lookup {
        Lookup::Authoritative { rcode, answers: Vec::new(), authorities: vec![self.soa()], additionals: Vec::new() }
    }

    /// Answer `qtype` at `qname` (any case, trailing dot or not) from the
    /// zone. Record owner names are `qname` as asked.
    pub fn lookup(&self, qname: &Name, qtype: RecordType) -> Lookup {
        let key = normalize(&qname.to_ascii());
        let Some(data) = self.names.get(&key) else {
            if !self.in_zone(&key) {
                return Lookup::NotOurs;
            }
            if let Some(ip) = self.pod_address(&key) {
                let data = match ip {
                    IpAddr::V4(v4) => NameData { a: vec![v4], ..Default::default() },
                    IpAddr::V6(v6) => NameData { aaaa: vec![v6], ..Default::default() },
                };
                return self.answer(qname, &data, qtype);
            }
            if self.is_pod_namespace(&key) {
                return self.negative(ResponseCode::NoError);
            }
            return self.negative(ResponseCode::NXDomain);
        };
        if let Some(target) = &data.cname {
            if qtype != RecordType::CNAME && qtype != RecordType::ANY {
                let cname = Record::from_rdata(qname.clone(), self.ttl, RData::CNAME(CNAME(Self::fqdn(target))));
                if self.in_zone(target) {
                    // an alias into our own zone: follow it here
                    let mut answers = vec![cname];
                    let tname = Self::fqdn(target);
                    let (rcode, more, authorities) = match self.lookup(&tname, qtype) {
                        Lookup::Authoritative { rcode, answers, authorities, .. } => (rcode, answers, authorities),
                        _ => (ResponseCode::NoError, Vec::new(), Vec::new()),
                    };
                    answers.extend(more);
                    return Lookup::Authoritative { rcode, answers, authorities, additionals: Vec::new() };
                }
                return Lookup::Alias { cname: Box::new(cname), target: Self::fqdn(target) };
            }
        }
        self.answer(qname, data, qtype)
    }

    fn answer(&self, qname: &Name, data: &NameData, qtype: RecordType) -> Lookup {
        let answers = self.records_of(qname, data, qtype);
        if answers.is_empty() {
            return self.negative(ResponseCode::NoError);
        }
        let additionals = self.additionals_for(&answers);
        Lookup::Authoritative { rcode: ResponseCode::NoError, answers, authorities: Vec::new(), additionals }
    }

    /// `a-b-c-d.<ns>.pod.<zone>` → a.b.c.d (any namespace, as the
    /// specification's deprecated-but-required pod records ask).
    pub fn pod_address(&self, key: &str) -> Option<IpAddr> {
        let rest = key.strip_suffix(self.zone.as_str())?.strip_suffix(".pod.")?;
        let (label, ns) = rest.split_once('.')?;
        if ns.is_empty() || ns.contains('.') {
            return None;
        }
        undashed(label)
    }

    /// `pod.<zone>` and `<ns>.pod.<zone>` exist (pod names live below them).
    fn is_pod_namespace(&self, key: &str) -> bool {
        let Some(rest) = key.strip_suffix(self.zone.as_str()) else { return false };
        rest == "pod." || rest.strip_suffix(".pod.").is_some_and(|ns| !ns.is_empty() && !ns.contains('.'))
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    pub(crate) fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    pub(crate) fn fixture() -> Records {
        let services = vec![
            svc(json!({"metadata": {"name": "service-test", "namespace": "default"},
                "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                         "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 81}]}})),
            svc(json!({"metadata": {"name": "dual", "namespace": "default"},
                "spec": {"clusterIP": "10.96.0.21", "clusterIPs": ["10.96.0.21", "fd00:96::21"]}})),
            svc(json!({"metadata": {"name": "headless", "namespace": "db"},
                "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}})),
            svc(json!({"metadata": {"name": "empty-headless", "namespace": "db"},
                "spec": {"clusterIP": "None"}})),
            svc(json!({"metadata": {"name": "ext", "namespace": "default"},
                "spec": {"type": "ExternalName", "externalName": "www.example.com"}})),
            svc(json!({"metadata": {"name": "inner", "namespace": "default"},
                "spec": {"type": "ExternalName", "externalName": "service-test.default.svc.cluster.local"}})),
        ];
        let slices = vec![serde_json::from_value(json!({
            "metadata": {"name": "headless-abc", "namespace": "db", "labels": {"kubernetes.io/service-name": "headless"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.244.1.5"], "hostname": "pg-0", "conditions": {"ready": true}},
                {"addresses": ["10.244.2.6"]},
                {"addresses": ["10.244.2.7"], "conditions": {"ready": false}}
            ],
            "ports": [{"name": "pg", "port": 5433, "protocol": "TCP"}]
        }))
        .unwrap()];
        let pods = vec![serde_json::from_value(json!({
            "metadata": {"name": "client", "namespace": "default"},
            "spec": {"containers": []},
            "status": {"podIP": "10.244.1.9", "podIPs": [{"ip": "10.244.1.9"}]}
        }))
        .unwrap()];
        Records::build("cluster.local", 5, &services, &slices, &pods)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::tests_support::{fixture, svc};
    use super::*;
    use serde_json::json;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn answers(r: &Records, q: &str, t: RecordType) -> (ResponseCode, Vec<String>) {
        match r.lookup(&name(q), t) {
            Lookup::Authoritative { rcode, answers, authorities, .. } => {
                if answers.is_empty() {
                    assert_eq!(authorities.len(), 1, "negative answers carry the SOA");
                    assert_eq!(authorities[0].record_type(), RecordType::SOA);
                }
                (rcode, answers.iter().map(|a| a.data.to_string()).collect())
            }
            other => panic!("{q}: {other:?}"),
        }
    }

    #[test]
    fn cluster_ip_service_a_aaaa_and_srv_for_named_ports_only() {
        let r = fixture();
        assert_eq!(
            answers(&r, "service-test.default.svc.cluster.local.", RecordType::A),
            (ResponseCode::NoError, vec!["10.96.0.20".to_string()])
        );
        assert_eq!(answers(&r, "dual.default.svc.cluster.local.", RecordType::AAAA).1, vec!["fd00:96::21"]);
        assert_eq!(
            answers(&r, "_http._tcp.service-test.default.svc.cluster.local.", RecordType::SRV).1,
            vec!["0 100 80 service-test.default.svc.cluster.local."]
        );
        // SRV answers carry the target's address in the additional section
        let Lookup::Authoritative { additionals, .. } =
            r.lookup(&name("_http._tcp.service-test.default.svc.cluster.local."), RecordType::SRV)
        else {
            panic!()
        };
        assert_eq!(additionals.len(), 1);
        assert_eq!(additionals[0].data.to_string(), "10.96.0.20");
        // the unnamed port has none, and no name
        assert_eq!(
            answers(&r, "_81._tcp.service-test.default.svc.cluster.local.", RecordType::SRV).0,
            ResponseCode::NXDomain
        );
    }

    #[test]
    fn headless_service_one_record_per_ready_endpoint_and_hostnames() {
        let r = fixture();
        assert_eq!(
            answers(&r, "headless.db.svc.cluster.local.", RecordType::A).1,
            vec!["10.244.1.5", "10.244.2.6"],
            "the unready endpoint is left out"
        );
        assert_eq!(answers(&r, "pg-0.headless.db.svc.cluster.local.", RecordType::A).1, vec!["10.244.1.5"]);
        assert_eq!(answers(&r, "10-244-2-6.headless.db.svc.cluster.local.", RecordType::A).1, vec!["10.244.2.6"]);
        assert_eq!(
            answers(&r, "_pg._tcp.headless.db.svc.cluster.local.", RecordType::SRV).1,
            vec![
                "0 100 5433 10-244-2-6.headless.db.svc.cluster.local.",
                "0 100 5433 pg-0.headless.db.svc.cluster.local."
            ]
        );
        assert_eq!(answers(&r, "10-244-2-7.headless.db.svc.cluster.local.", RecordType::A).0, ResponseCode::NXDomain);
        // no ready endpoints: NXDOMAIN, as the specification says
        assert_eq!(answers(&r, "empty-headless.db.svc.cluster.local.", RecordType::A).0, ResponseCode::NXDomain);
    }

    #[test]
    fn ptr_for_service_ips_endpoints_and_pods() {
        let r = fixture();
        assert_eq!(
            answers(&r, "20.0.96.10.in-addr.arpa.", RecordType::PTR).1,
            vec!["service-test.default.svc.cluster.local."]
        );
        assert_eq!(
            answers(&r, "5.1.244.10.in-addr.arpa.", RecordType::PTR).1,
            vec!["pg-0.headless.db.svc.cluster.local."]
        );
        assert_eq!(
            answers(&r, "9.1.244.10.in-addr.arpa.", RecordType::PTR).1,
            vec!["10-244-1-9.default.pod.cluster.local."]
        );
        let v6 = reverse_name("fd00:96::21".parse().unwrap());
        assert_eq!(answers(&r, &format!("{v6}."), RecordType::PTR).1, vec!["dual.default.svc.cluster.local."]);
        // an address nobody in the cluster has is not ours: forwarded
        assert_eq!(r.lookup(&name("1.1.1.10.in-addr.arpa."), RecordType::PTR), Lookup::NotOurs);
    }

    #[test]
    fn external_name_is_a_cname_and_inner_aliases_are_followed() {
        let r = fixture();
        assert_eq!(answers(&r, "ext.default.svc.cluster.local.", RecordType::CNAME).1, vec!["www.example.com."]);
        match r.lookup(&name("ext.default.svc.cluster.local."), RecordType::A) {
            Lookup::Alias { cname, target } => {
                assert_eq!(cname.record_type(), RecordType::CNAME);
                assert_eq!(target, name("www.example.com."));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            answers(&r, "inner.default.svc.cluster.local.", RecordType::A).1,
            vec!["service-test.default.svc.cluster.local.", "10.96.0.20"]
        );
    }

    #[test]
    fn pod_names_for_any_address_and_dns_version() {
        let r = fixture();
        assert_eq!(answers(&r, "10-244-1-9.default.pod.cluster.local.", RecordType::A).1, vec!["10.244.1.9"]);
        assert_eq!(answers(&r, "1-2-3-4.other.pod.cluster.local.", RecordType::A).1, vec!["1.2.3.4"]);
        assert_eq!(answers(&r, "fd00--5.other.pod.cluster.local.", RecordType::AAAA).1, vec!["fd00::5"]);
        assert_eq!(answers(&r, "1-2-3-4.other.pod.cluster.local.", RecordType::AAAA).0, ResponseCode::NoError);
        assert_eq!(answers(&r, "1-2-3.other.pod.cluster.local.", RecordType::A).0, ResponseCode::NXDomain);
        assert_eq!(answers(&r, "dns-version.cluster.local.", RecordType::TXT).1, vec!["1.1.0"]);
    }

    #[test]
    fn nxdomain_versus_nodata() {
        let r = fixture();
        // the name exists, without AAAA / TXT: NODATA
        assert_eq!(
            answers(&r, "service-test.default.svc.cluster.local.", RecordType::AAAA),
            (ResponseCode::NoError, vec![])
        );
        assert_eq!(
            answers(&r, "service-test.default.svc.cluster.local.", RecordType::TXT),
            (ResponseCode::NoError, vec![])
        );
        // empty non-terminals exist
        assert_eq!(answers(&r, "default.svc.cluster.local.", RecordType::A), (ResponseCode::NoError, vec![]));
        assert_eq!(answers(&r, "svc.cluster.local.", RecordType::A), (ResponseCode::NoError, vec![]));
        assert_eq!(answers(&r, "_tcp.service-test.default.svc.cluster.local.", RecordType::A).0, ResponseCode::NoError);
        // a search-path miss
        assert_eq!(answers(&r, "google.com.default.svc.cluster.local.", RecordType::A).0, ResponseCode::NXDomain);
        assert_eq!(answers(&r, "nope.default.svc.cluster.local.", RecordType::A).0, ResponseCode::NXDomain);
        // the apex has its SOA
        assert_eq!(answers(&r, "cluster.local.", RecordType::SOA).1.len(), 1);
        // outside the zone: not ours
        assert_eq!(r.lookup(&name("example.com."), RecordType::A), Lookup::NotOurs);
        assert_eq!(r.lookup(&name("notcluster.local."), RecordType::A), Lookup::NotOurs);
    }

    #[test]
    fn lookups_ignore_case_and_answer_with_the_name_as_asked() {
        let r = fixture();
        let q = name("Service-TEST.Default.SVC.Cluster.Local.");
        match r.lookup(&q, RecordType::A) {
            Lookup::Authoritative { answers, .. } => {
                assert_eq!(answers.len(), 1);
                assert_eq!(answers[0].name.to_ascii(), "Service-TEST.Default.SVC.Cluster.Local.");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(answers(&r, "_HTTP._TCP.service-test.default.svc.cluster.local.", RecordType::SRV).1.len(), 1);
    }

    #[test]
    fn another_cluster_domain() {
        let services = vec![svc(json!({"metadata": {"name": "web", "namespace": "prod"},
            "spec": {"clusterIP": "10.0.0.7"}}))];
        let r = Records::build("Corp.Example.", 5, &services, &[], &[]);
        assert_eq!(answers(&r, "web.prod.svc.corp.example.", RecordType::A).1, vec!["10.0.0.7"]);
        assert_eq!(r.lookup(&name("web.prod.svc.cluster.local."), RecordType::A), Lookup::NotOurs);
    }
}
