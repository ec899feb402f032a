//! What the table does with UDP, for deleting stale conntrack entries the
//! way kube-proxy does: the endpoints it sends Service traffic to, and the
//! Service addresses and NodePorts that have endpoints. Read either from the
//! Services last applied or, after a restart, from the kernel's table.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use super::render::{
    cluster_endpoints, nodeport_endpoints, Data, Fragment, Key, SERVICE_IPS, SERVICE_NODEPORTS, TABLE,
};
use super::{Family, Protocol};
use crate::{netns, Error, Result};

/// The UDP side of a table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdpState {
    /// (address, port) of every endpoint UDP Service traffic is sent to.
    pub endpoints: BTreeSet<(IpAddr, u16)>,
    /// Destinations of UDP Services that have endpoints: (address, port) of
    /// ClusterIPs, external and load-balancer addresses; (None, nodePort).
    pub active: BTreeSet<(Option<IpAddr>, u16)>,
}

impl UdpState {
    /// Endpoints that `self` sends to and `now` no longer does: their
    /// clients' conntrack entries pin them to an endpoint that is gone.
    pub fn removed_endpoints(&self, now: &UdpState) -> Vec<(IpAddr, u16)> {
        self.endpoints.difference(&now.endpoints).copied().collect()
    }

    /// Destinations that have endpoints in `now` and had none in `self`:
    /// datagrams sent while they were rejected left entries without NAT.
    pub fn newly_active(&self, now: &UdpState) -> Vec<(Option<IpAddr>, u16)> {
        now.active.difference(&self.active).copied().collect()
    }

    pub(crate) fn add_fragment(&mut self, f: &Fragment) {
        for ((set, key), data) in &f.elements {
            self.add_element(set, key, data.as_ref());
        }
        for chain in f.chains.keys() {
            self.add_chain_name(chain);
        }
    }

    fn add_element(&mut self, set: &str, key: &Key, data: Option<&Data>) {
        let endpoint_map = is_udp_endpoint_map(set);
        match (set, key, data) {
            (_, Key::AddrProtoPortIndex(..) | Key::ProtoPortIndex(..), Some(Data::AddrPort(ip, port)))
                if endpoint_map =>
            {
                self.endpoints.insert((*ip, *port));
            }
            (SERVICE_IPS, Key::AddrProtoPort(ip, Protocol::Udp, port), _) => {
                self.active.insert((Some(*ip), *port));
            }
            (SERVICE_NODEPORTS, Key::ProtoPort(Protocol::Udp, port), _) => {
                self.active.insert((None, *port));
            }
            _ => {}
        }
    }

    /// A ClientIP-affinity endpoint chain, `ep-<ns>/<name>/udp/<port>/<ip>/<port>`.
    fn add_chain_name(&mut self, chain: &str) {
        let Some(rest) = chain.strip_prefix("ep-") else { return };
        let parts: Vec<&str> = rest.split('/').collect();
        if let [_, _, "udp", _, ip, port] = parts.as_slice() {
            if let (Ok(ip), Ok(port)) = (ip.parse(), port.parse()) {
                self.endpoints.insert((ip, port));
            }
        }
    }

    /// Read it from the kernel's table (empty when there is none): what an
    /// agent that restarts compares its first sync with. Lists the four maps
    /// with their elements, which takes nft about a second per 100,000.
    pub fn programmed(netns_path: Option<&Path>, family: Family) -> Result<UdpState> {
        let read = || -> Result<UdpState> {
            let mut state = UdpState::default();
            for set in
                [SERVICE_IPS, SERVICE_NODEPORTS, cluster_endpoints(Protocol::Udp), nodeport_endpoints(Protocol::Udp)]
            {
                let out = Command::new("nft")
                    .args(["list", "map", family.nft(), TABLE, set])
                    .output()
                    .map_err(|e| Error::Nftables { message: format!("running nft: {e}") })?;
                let stderr = String::from_utf8_lossy(&out.stderr);
                if !out.status.success() {
                    if stderr.contains("No such file or directory") {
                        continue;
                    }
                    return Err(Error::Nftables {
                        message: format!("listing map {} {TABLE} {set}: {}", family.nft(), stderr.trim()),
                    });
                }
                for (key, data) in parse_elements(&String::from_utf8_lossy(&out.stdout)) {
                    state.add_listed(set, &key, data.as_deref());
                }
            }
            for chain in super::nft::existing(None, family)?.chains {
                state.add_chain_name(&chain);
            }
            Ok(state)
        };
        match netns_path {
            Some(p) => netns::run_in(p, read)?,
            None => read(),
        }
    }

    /// An element as `nft list` prints it: `10.96.0.10 . udp . 53 . 0` : `10.244.0.3 . 53`.
    fn add_listed(&mut self, set: &str, key: &str, data: Option<&str>) {
        let k: Vec<&str> = key.split(" . ").map(str::trim).collect();
        let addr_port = |d: Option<&str>| -> Option<(IpAddr, u16)> {
            let (ip, port) = d?.split_once(" . ")?;
            Some((ip.trim().parse().ok()?, port.trim().parse().ok()?))
        };
        let endpoint_map = is_udp_endpoint_map(set);
        match (set, k.as_slice()) {
            (_, [_, "udp", _, _] | ["udp", _, _]) if endpoint_map => {
                if let Some(e) = addr_port(data) {
                    self.endpoints.insert(e);
                }
            }
            (SERVICE_IPS, [ip, "udp", port]) => {
                if let (Ok(ip), Ok(port)) = (ip.parse(), port.parse()) {
                    self.active.insert((Some(ip), port));
                }
            }
            (SERVICE_NODEPORTS, ["udp", port]) => {
                if let Ok(port) = port.parse() {
                    self.active.insert((None, port));
                }
            }
            _ => {}
        }
    }
}

/// Whether `set` is one of the maps of UDP endpoints.
fn is_udp_endpoint_map(set: &str) -> bool {
    set == cluster_endpoints(Protocol::Udp) || set == nodeport_endpoints(Protocol::Udp)
}

/// The elements of `nft list map` output: (key, data).
fn parse_elements(listing: &str) -> Vec<(String, Option<String>)> {
    let Some(start) = listing.find("elements = {") else { return Vec::new() };
    let body = &listing[start + "elements = {".len()..];
    let body = body.split('}').next().unwrap_or_default();
    body.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| match e.split_once(" : ") {
            Some((k, d)) => (k.trim().to_string(), Some(d.trim().to_string())),
            None => (e.to_string(), None),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        Ipv4Addr::new(a, b, c, d).into()
    }

    #[test]
    fn a_listing_is_read_back_into_udp_endpoints_and_active_destinations() {
        let mut s = UdpState::default();
        let listing = "table ip skiff {\n\tmap cluster-endpoints-udp {\n\t\ttypeof ip daddr . meta l4proto . th dport . numgen random mod 1 : ip daddr . udp dport\n\t\telements = { 10.96.0.10 . udp . 53 . 0 : 10.244.0.3 . 53,\n\t\t\t     10.96.0.11 . udp . 53 . 0 : 10.244.0.3 . 53 }\n\t}\n}\n";
        for (k, d) in parse_elements(listing) {
            s.add_listed(cluster_endpoints(Protocol::Udp), &k, d.as_deref());
        }
        s.add_listed(cluster_endpoints(Protocol::Tcp), "10.96.0.1 . tcp . 443 . 0", Some("198.18.0.1 . 6443"));
        let listing = "table ip skiff {\n\tmap service-ips {\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n\t\telements = { 10.96.0.10 . udp . 53 : goto cluster-1-udp, 10.96.0.1 . tcp . 443 : goto cluster-1-tcp }\n\t}\n}\n";
        for (k, d) in parse_elements(listing) {
            s.add_listed(SERVICE_IPS, &k, d.as_deref());
        }
        s.add_listed(SERVICE_NODEPORTS, "udp . 30053", Some("goto np-external-1-udp"));
        s.add_chain_name("ep-default/dns/udp/53/10.244.0.9/5353");
        s.add_chain_name("ep-default/web/tcp/80/10.244.0.9/8080");
        assert_eq!(s.endpoints, [(v4(10, 244, 0, 3), 53), (v4(10, 244, 0, 9), 5353)].into_iter().collect());
        assert_eq!(s.active, [(Some(v4(10, 96, 0, 10)), 53), (None, 30053)].into_iter().collect());
    }

    #[test]
    fn from_rejecting_to_active_and_removed_endpoints() {
        let before = UdpState { endpoints: [(v4(10, 244, 0, 3), 53)].into(), active: BTreeSet::new() };
        let after =
            UdpState { endpoints: [(v4(10, 244, 0, 4), 53)].into(), active: [(Some(v4(10, 96, 0, 10)), 53)].into() };
        assert_eq!(before.removed_endpoints(&after), vec![(v4(10, 244, 0, 3), 53)]);
        assert_eq!(before.newly_active(&after), vec![(Some(v4(10, 96, 0, 10)), 53)]);
        assert!(after.newly_active(&after).is_empty());
    }
}
