//! Applying rulesets: full resyncs and incremental syncs.
//!
//! A sync is up to three kernel transactions, ordered so that the table is
//! whole between any two of them:
//! 1. `nft -f -` adds what the new state needs (sets, chains, their rules;
//!    a chain whose rules change is flushed and refilled inside it);
//! 2. one netlink batch ([`super::nfnl`]) changes the map and set elements,
//!    the switch packets see, all at once;
//! 3. `nft -f -` removes the chains and sets nothing points to any more.
//!
//! Most syncs (an endpoint coming or going) are step 2 alone.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::nfnl::{Batch, Conn};
use super::render::{
    render, render_global, render_service, service_key, Chain, Data, Fragment, Key, Ruleset, Select, SetDecl,
    DYNAMIC_CHAIN_PREFIXES, DYNAMIC_SET_PREFIX, RETIRED_SETS, TABLE,
};
use super::{nft, text};
use super::{Family, ProxyState, Service};
use crate::Result;

/// Names of the chains and sets already in the kernel's table.
#[derive(Debug, Clone, Default)]
pub(crate) struct Existing {
    pub chains: BTreeSet<String>,
    pub sets: BTreeSet<String>,
}

/// Commands of one transaction, in the order nft must see them, each one
/// line of nft's syntax.
struct Tx {
    /// The table's family (`ip`, `ip6`).
    family: &'static str,
    cmds: Vec<String>,
}

impl Tx {
    fn new(family: Family) -> Tx {
        Tx { family: family.nft(), cmds: Vec::new() }
    }

    fn add_table(&mut self) {
        let family = self.family;
        self.cmds.push(format!("add table {family} {TABLE}"));
    }

    fn add_set(&mut self, name: &str, decl: &SetDecl) {
        let kind = if decl.is_map { "map" } else { "set" };
        self.cmds.push(format!("add {kind} {} {TABLE} {name} {}", self.family, text::set_spec(decl)));
    }

    fn delete_set(&mut self, name: &str) {
        self.cmds.push(format!("delete set {} {TABLE} {name}", self.family));
    }

    fn add_chain(&mut self, name: &str, chain: &Chain) {
        match chain.base {
            Some(b) => self.cmds.push(format!(
                "add chain {} {TABLE} {name} {{ type {} hook {} priority {} ; policy accept ; }}",
                self.family, b.kind, b.hook, b.prio
            )),
            None => self.cmds.push(format!("add chain {} {TABLE} {name}", self.family)),
        }
    }

    fn flush_chain(&mut self, name: &str) {
        self.cmds.push(format!("flush chain {} {TABLE} {name}", self.family));
    }

    fn delete_chain(&mut self, name: &str) {
        self.cmds.push(format!("delete chain {} {TABLE} {name}", self.family));
    }

    fn add_rules(&mut self, name: &str, chain: &Chain) {
        for rule in &chain.rules {
            self.cmds.push(format!("add rule {} {TABLE} {name} {}", self.family, text::rule(rule)));
        }
    }

    fn is_empty(&self) -> bool {
        self.cmds.is_empty()
    }

    fn len(&self) -> usize {
        self.cmds.len()
    }

    /// The transaction as input for `nft -f -`.
    fn into_string(self) -> String {
        let mut out = String::with_capacity(self.cmds.iter().map(|c| c.len() + 1).sum::<usize>());
        for c in &self.cmds {
            out.push_str(c);
            out.push('\n');
        }
        out
    }
}

/// Whether nft's syntax can name the object: its scanner takes letters,
/// digits, `/`, `-`, `_` and `.`. Older Skiff versions named ClientIP
/// affinity chains and sets with a `:`; those are left in place (unused)
/// rather than failing every full sync.
fn sayable(name: &str) -> bool {
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "/-_.".contains(c));
    if !ok {
        tracing::warn!(name, "nftables object of table ip skiff with a name nft cannot parse: left in place");
    }
    ok
}

fn is_dynamic_chain(name: &str) -> bool {
    DYNAMIC_CHAIN_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The kernel transactions of one sync, in order (see the module's doc).
pub(crate) struct Plan {
    pre: Tx,
    elements: Batch,
    post: Tx,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.pre.is_empty() && self.elements.is_empty() && self.post.is_empty()
    }

    /// nft commands plus element changes.
    fn commands(&self) -> usize {
        self.pre.len() + self.elements.elements() + self.post.len()
    }

    /// Apply the three steps; returns the bytes sent to nft. A failure
    /// leaves the table whole (each step is a transaction, and a step never
    /// needs one that did not happen).
    fn apply(self, netns: Option<&std::path::Path>, conn: &mut Option<Conn>) -> Result<usize> {
        let mut bytes = 0;
        if !self.pre.is_empty() {
            let text = self.pre.into_string();
            bytes += text.len();
            nft::apply(netns, &text)?;
        }
        if !self.elements.is_empty() {
            let c = match conn.take() {
                Some(c) => c,
                None => Conn::open(netns)?,
            };
            self.elements.commit(&c)?;
            // kept only after a clean exchange
            *conn = Some(c);
        }
        if !self.post.is_empty() {
            let text = self.post.into_string();
            bytes += text.len();
            nft::apply(netns, &text)?;
        }
        Ok(bytes)
    }
}

/// The full sync of `parts`: every object added (a no-op where it exists),
/// every chain flushed and refilled, then every map and set flushed and
/// refilled in one element batch, then the proxy's chains and sets that
/// `existing` has and the state does not removed. ClientIP affinity sets
/// that stay are not flushed (clients keep their endpoints).
pub(crate) fn full_plan(
    family: Family,
    parts: &[&Fragment],
    selects: &BTreeMap<String, Chain>,
    existing: &Existing,
) -> Plan {
    let mut sets: BTreeMap<&str, &SetDecl> = BTreeMap::new();
    let mut chains: BTreeMap<&str, &Chain> = selects.iter().map(|(n, c)| (n.as_str(), c)).collect();
    for f in parts {
        sets.extend(f.sets.iter().map(|(n, d)| (n.as_str(), d)));
        chains.extend(f.chains.iter().map(|(n, c)| (n.as_str(), c)));
    }
    let mut pre = Tx::new(family);
    let mut elements = Batch::new(family);
    pre.add_table();
    for (&name, &decl) in &sets {
        if name.starts_with(DYNAMIC_SET_PREFIX) {
            // declared again it would be emptied of its clients: left alone
            if !existing.sets.contains(name) {
                pre.add_set(name, decl);
            }
            continue;
        }
        pre.add_set(name, decl);
        elements.flush(name);
    }
    for (&name, &chain) in &chains {
        pre.add_chain(name, chain);
        pre.flush_chain(name);
    }
    for (&name, &chain) in &chains {
        pre.add_rules(name, chain);
    }
    // two Services claiming one address and port: the first one wins
    let mut seen = HashSet::new();
    let mut by_set: BTreeMap<&'static str, Vec<(&Key, &Option<Data>)>> = BTreeMap::new();
    for ((set, key), data) in
        parts.iter().flat_map(|f| f.elements.iter()).filter(|((set, key), _)| seen.insert((*set, *key)))
    {
        by_set.entry(set).or_default().push((key, data));
    }
    // grouped by set: a message of the batch holds elements of one set
    for (set, elems) in by_set {
        for (key, data) in elems {
            elements.add(set, key, data.as_ref());
        }
    }
    let mut post = Tx::new(family);
    let stale_chains: Vec<&String> = existing
        .chains
        .iter()
        .filter(|c| is_dynamic_chain(c) && !chains.contains_key(c.as_str()) && sayable(c))
        .collect();
    for c in &stale_chains {
        post.flush_chain(c);
    }
    for c in &stale_chains {
        post.delete_chain(c);
    }
    for s in existing.sets.iter().filter(|s| {
        let stale = s.starts_with(DYNAMIC_SET_PREFIX) && !sets.contains_key(s.as_str());
        (stale || RETIRED_SETS.contains(&s.as_str())) && sayable(s)
    }) {
        post.delete_set(s);
    }
    Plan { pre, elements, post }
}

/// The first and second step of a full sync into an empty table: nft's
/// input, and the element batch line by line (for tests).
#[cfg(test)]
pub(crate) fn full_plan_text(parts: &[&Fragment], selects: &BTreeMap<String, Chain>) -> (String, Vec<String>) {
    let plan = full_plan(Family::V4, parts, selects, &Existing::default());
    (plan.pre.into_string(), plan.elements.log)
}

/// What one sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    Full,
    Incremental,
    /// Nothing changed; nothing was sent.
    Unchanged,
}

#[derive(Debug, Clone, Copy)]
pub struct SyncStats {
    pub kind: SyncKind,
    /// Services rendered again (all of them on a full sync).
    pub services_changed: usize,
    /// nft commands and element changes.
    pub commands: usize,
    /// What went to `nft -f -` (the elements go over netlink).
    pub bytes: usize,
    /// Rendering and building the transactions.
    pub render: Duration,
    /// Running `nft` and the element batch (the kernel's commits).
    pub apply: Duration,
}

struct Applied {
    cluster_cidr: Option<ipnet::IpNet>,
    /// What the global part was rendered from (`render_global` reads only these).
    pod_cidr: Option<ipnet::IpNet>,
    host_ports: Vec<super::HostPort>,
    global: Fragment,
    /// namespace/name → (the Service as applied, its fragment)
    services: HashMap<String, (Service, Fragment)>,
    /// select chains in the kernel (removed only by full syncs)
    selects: BTreeSet<Select>,
}

/// Programs the table on a node: [`Proxy::sync`] with the whole desired
/// state, as often as it changes; it chooses between a full and an
/// incremental transaction. Not shared between threads: the agent owns one
/// and calls it from its proxy loop.
pub struct Proxy {
    netns: Option<PathBuf>,
    family: Family,
    /// The netlink socket element batches go out on (opened at the first).
    conn: Option<Conn>,
    applied: Option<Applied>,
    /// Force a full resync after this long (a periodic resync repairs what
    /// someone else changed in the table).
    full_every: Duration,
    last_full: Option<Instant>,
}

impl Proxy {
    /// A proxy for this process's network namespace (the node's).
    pub fn new() -> Proxy {
        Proxy {
            netns: None,
            family: Family::V4,
            conn: None,
            applied: None,
            full_every: Duration::from_secs(3600),
            last_full: None,
        }
    }

    /// A proxy that programs the network namespace pinned at `path` (tests,
    /// and nodes that are namespaces).
    pub fn in_netns(path: impl Into<PathBuf>) -> Proxy {
        Proxy { netns: Some(path.into()), ..Proxy::new() }
    }

    /// The proxy of `family`'s table (IPv4 unless set): its states must be of it.
    pub fn with_family(mut self, family: Family) -> Proxy {
        self.family = family;
        self
    }

    pub fn family(&self) -> Family {
        self.family
    }

    /// How often [`Proxy::sync`] does a full resync regardless (an hour unless set).
    pub fn set_full_resync_interval(&mut self, every: Duration) {
        self.full_every = every;
    }

    /// Make the next sync a full one.
    pub fn invalidate(&mut self) {
        self.applied = None;
    }

    /// Bring the kernel's table to `state`: incrementally when only Services
    /// changed since the last sync, in full at the first sync, when the
    /// cluster-wide settings or HostPorts changed, and periodically.
    pub fn sync(&mut self, state: &ProxyState) -> Result<SyncStats> {
        if state.family != self.family {
            return Err(crate::Error::Nftables {
                message: format!("the {} proxy was given an {} state", self.family, state.family),
            });
        }
        let due = self.last_full.is_none_or(|t| t.elapsed() >= self.full_every);
        match &self.applied {
            Some(a) if !due && a.cluster_cidr == state.cluster_cidr => {
                // the global part is rendered again only when what it is made of changed
                if a.pod_cidr != state.pod_cidr || a.host_ports != state.host_ports {
                    if render_global(state) != a.global {
                        return self.full_sync(state);
                    }
                    if let Some(a) = self.applied.as_mut() {
                        a.pod_cidr = state.pod_cidr;
                        a.host_ports = state.host_ports.clone();
                    }
                }
                self.incremental(state)
            }
            _ => self.full_sync(state),
        }
    }

    /// Replace the table's contents with `state` in one transaction.
    pub fn full_sync(&mut self, state: &ProxyState) -> Result<SyncStats> {
        let started = Instant::now();
        let ruleset = render(state);
        let existing = match &self.applied {
            Some(a) => Existing {
                chains: a
                    .services
                    .values()
                    .flat_map(|(_, f)| f.chains.keys().cloned())
                    .chain(a.selects.iter().map(|s| s.chain()))
                    .collect(),
                sets: a.services.values().flat_map(|(_, f)| f.sets.keys().cloned()).collect(),
            },
            None => nft::existing(self.netns.as_deref(), self.family)?,
        };
        let selects = ruleset.select_chains();
        let parts: Vec<&Fragment> = std::iter::once(&ruleset.global).chain(ruleset.services.values()).collect();
        let plan = full_plan(self.family, &parts, &selects, &existing);
        let commands = plan.commands();
        let render_time = started.elapsed();
        let t = Instant::now();
        // a failed full sync leaves the kernel's table whole, and ours
        // unknown: the next sync is a full one again
        self.applied = None;
        let bytes = plan.apply(self.netns.as_deref(), &mut self.conn)?;
        let apply = t.elapsed();
        let selects = ruleset.services.values().flat_map(|f| f.selects.iter().copied()).collect();
        let mut fragments = ruleset.services;
        let services = state
            .services
            .iter()
            .map(|s| {
                let key = service_key(s);
                let f = fragments.remove(&key).unwrap_or_default();
                (key, (s.clone(), f))
            })
            .collect();
        self.applied = Some(Applied {
            cluster_cidr: state.cluster_cidr,
            pod_cidr: state.pod_cidr,
            host_ports: state.host_ports.clone(),
            global: ruleset.global,
            services,
            selects,
        });
        self.last_full = Some(Instant::now());
        tracing::debug!(commands, bytes, ?apply, "nftables: full sync");
        Ok(SyncStats {
            kind: SyncKind::Full,
            services_changed: state.services.len(),
            commands,
            bytes,
            render: render_time,
            apply,
        })
    }

    fn incremental(&mut self, state: &ProxyState) -> Result<SyncStats> {
        let started = Instant::now();
        let Some(applied) = self.applied.as_mut() else {
            return self.full_sync(state);
        };
        let mut changed: Vec<(String, Option<(Service, Fragment)>)> = Vec::new();
        let mut seen = HashSet::with_capacity(state.services.len());
        for svc in &state.services {
            let key = service_key(svc);
            match applied.services.get(&key) {
                Some((old, _)) if old == svc => {}
                _ => {
                    let f = render_service(svc, self.family, applied.cluster_cidr);
                    changed.push((key.clone(), Some((svc.clone(), f))));
                }
            }
            seen.insert(key);
        }
        if seen.len() != applied.services.len() || changed.iter().any(|(k, _)| !applied.services.contains_key(k)) {
            for key in applied.services.keys() {
                if !seen.contains(key) {
                    changed.push((key.clone(), None));
                }
            }
        }
        if changed.is_empty() {
            return Ok(SyncStats {
                kind: SyncKind::Unchanged,
                services_changed: 0,
                commands: 0,
                bytes: 0,
                render: started.elapsed(),
                apply: Duration::ZERO,
            });
        }
        let empty = Fragment::default();
        let mut diff = Diff::default();
        let mut new_selects = BTreeSet::new();
        for (key, new) in &changed {
            let old = applied.services.get(key).map(|(_, f)| f).unwrap_or(&empty);
            let new_f = new.as_ref().map(|(_, f)| f).unwrap_or(&empty);
            diff.add(old, new_f);
            new_selects.extend(new_f.selects.iter().filter(|s| !applied.selects.contains(s)).copied());
        }
        let cluster_cidr = applied.cluster_cidr;
        let selects: BTreeMap<String, Chain> = Ruleset {
            services: [(String::new(), Fragment { selects: new_selects.clone(), ..Default::default() })].into(),
            cluster_cidr,
            family: self.family,
            ..Default::default()
        }
        .select_chains();
        let plan = diff.plan(self.family, &selects);
        if plan.is_empty() {
            // the Services changed in ways that render the same
            for (key, new) in changed {
                match new {
                    Some(v) => applied.services.insert(key, v),
                    None => applied.services.remove(&key),
                };
            }
            return Ok(SyncStats {
                kind: SyncKind::Unchanged,
                services_changed: 0,
                commands: 0,
                bytes: 0,
                render: started.elapsed(),
                apply: Duration::ZERO,
            });
        }
        let commands = plan.commands();
        let render_time = started.elapsed();
        let t = Instant::now();
        let bytes = match plan.apply(self.netns.as_deref(), &mut self.conn) {
            Ok(b) => b,
            Err(e) => {
                self.applied = None;
                return Err(e);
            }
        };
        let apply = t.elapsed();
        let services_changed = changed.len();
        for (key, new) in changed {
            match new {
                Some(v) => applied.services.insert(key, v),
                None => applied.services.remove(&key),
            };
        }
        applied.selects.extend(new_selects);
        tracing::debug!(services_changed, commands, ?apply, "nftables: incremental sync");
        Ok(SyncStats { kind: SyncKind::Incremental, services_changed, commands, bytes, render: render_time, apply })
    }
}

impl Proxy {
    /// The UDP side of the table as last applied (empty before the first sync).
    pub fn udp_state(&self) -> super::UdpState {
        let mut udp = super::UdpState::default();
        if let Some(a) = &self.applied {
            for (_, f) in a.services.values() {
                udp.add_fragment(f);
            }
        }
        udp
    }

    /// The UDP side of the table in the kernel now (see [`super::UdpState::programmed`]).
    pub fn programmed_udp_state(&self) -> Result<super::UdpState> {
        super::UdpState::programmed(self.netns.as_deref(), self.family)
    }
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy::new()
    }
}

/// The changes between old and new fragments of the Services that changed.
#[derive(Default)]
struct Diff<'a> {
    add_sets: Vec<(&'a str, &'a SetDecl)>,
    del_sets: Vec<&'a str>,
    add_chains: Vec<(&'a str, &'a Chain)>,
    changed_chains: Vec<(&'a str, &'a Chain)>,
    del_chains: Vec<&'a str>,
    del_elems: Vec<(&'static str, &'a Key, &'a Option<Data>)>,
    add_elems: Vec<(&'static str, &'a Key, &'a Option<Data>)>,
}

impl<'a> Diff<'a> {
    fn add(&mut self, old: &'a Fragment, new: &'a Fragment) {
        for (name, decl) in &new.sets {
            match old.sets.get(name) {
                Some(o) if o == decl => {}
                Some(_) => {
                    // a new timeout: declared again
                    self.del_sets.push(name);
                    self.add_sets.push((name, decl));
                }
                None => self.add_sets.push((name, decl)),
            }
        }
        self.del_sets.extend(old.sets.keys().filter(|n| !new.sets.contains_key(*n)).map(String::as_str));
        for (name, chain) in &new.chains {
            match old.chains.get(name) {
                Some(o) if o == chain => {}
                Some(_) => self.changed_chains.push((name, chain)),
                None => self.add_chains.push((name, chain)),
            }
        }
        self.del_chains.extend(old.chains.keys().filter(|n| !new.chains.contains_key(*n)).map(String::as_str));
        for (k, d) in &old.elements {
            if new.elements.get(k) != Some(d) {
                self.del_elems.push((k.0, &k.1, d));
            }
        }
        for (k, d) in &new.elements {
            if old.elements.get(k) != Some(d) {
                self.add_elems.push((k.0, &k.1, d));
            }
        }
    }

    fn plan(&self, family: Family, selects: &BTreeMap<String, Chain>) -> Plan {
        let (mut pre, mut elements, mut post) = (Tx::new(family), Batch::new(family), Tx::new(family));
        // a set whose declaration changed (an affinity timeout) is declared
        // again together with the chain that uses it
        let redeclared: BTreeSet<&str> =
            self.add_sets.iter().map(|(n, _)| *n).filter(|n| self.del_sets.contains(n)).collect();
        for (name, _) in &self.changed_chains {
            pre.flush_chain(name);
        }
        for name in &redeclared {
            pre.delete_set(name);
        }
        for (name, decl) in &self.add_sets {
            pre.add_set(name, decl);
        }
        let new_chains = selects.iter().map(|(n, c)| (n.as_str(), c)).chain(self.add_chains.iter().copied());
        for (name, chain) in new_chains.clone() {
            pre.add_chain(name, chain);
        }
        for (name, chain) in new_chains.chain(self.changed_chains.iter().copied()) {
            pre.add_rules(name, chain);
        }
        // grouped by set: a message of the batch holds elements of one set
        let mut del_elems = self.del_elems.clone();
        del_elems.sort_by_key(|(set, _, _)| *set);
        for (set, key, _) in &del_elems {
            elements.delete(set, key);
        }
        let mut add_elems = self.add_elems.clone();
        add_elems.sort_by_key(|(set, _, _)| *set);
        for (set, key, data) in &add_elems {
            elements.add(set, key, data.as_ref());
        }
        for name in &self.del_chains {
            post.flush_chain(name);
        }
        for name in &self.del_chains {
            post.delete_chain(name);
        }
        for name in self.del_sets.iter().filter(|n| !redeclared.contains(*n)) {
            post.delete_set(name);
        }
        Plan { pre, elements, post }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::{Endpoint, Protocol, ServicePort};

    fn web(endpoints: &[&str]) -> Service {
        Service {
            namespace: "default".into(),
            name: "web".into(),
            cluster_ip: Some("10.96.0.20".parse().unwrap()),
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: None,
                endpoints: endpoints
                    .iter()
                    .map(|ip| Endpoint { ip: ip.parse().unwrap(), port: 8080, local: true })
                    .collect(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn an_endpoint_change_touches_only_that_services_elements() {
        let cidr = Some("10.244.0.0/16".parse().unwrap());
        let old = render_service(&web(&["10.244.0.2", "10.244.0.3"]), Family::V4, cidr);
        let new = render_service(&web(&["10.244.0.2", "10.244.0.4"]), Family::V4, cidr);
        let mut diff = Diff::default();
        diff.add(&old, &new);
        let plan = diff.plan(Family::V4, &BTreeMap::new());
        assert!(plan.pre.is_empty() && plan.post.is_empty(), "no nft run for an endpoint change");
        assert_eq!(
            plan.elements.log,
            [
                "delete cluster-endpoints-tcp 10.96.0.20 . tcp . 80 . 1",
                "add cluster-endpoints-tcp 10.96.0.20 . tcp . 80 . 1 : 10.244.0.4 . 8080"
            ]
        );
    }

    #[test]
    fn a_new_endpoint_count_adds_its_shared_chain_once() {
        let cidr = Some("10.244.0.0/16".parse().unwrap());
        let old = render_service(&web(&["10.244.0.2", "10.244.0.3"]), Family::V4, cidr);
        let new = render_service(&web(&["10.244.0.2"]), Family::V4, cidr);
        let mut diff = Diff::default();
        diff.add(&old, &new);
        let selects =
            Ruleset { services: [(String::new(), new.clone())].into(), cluster_cidr: cidr, ..Default::default() }
                .select_chains();
        let plan = diff.plan(Family::V4, &selects);
        // verb, kind, and the name after "ip skiff"
        let verbs: Vec<String> = plan
            .pre
            .into_string()
            .lines()
            .map(|l| {
                l.split(' ')
                    .enumerate()
                    .filter(|(i, _)| ![2, 3].contains(i))
                    .map(|(_, w)| w)
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        assert_eq!(verbs, ["add chain cluster-1-tcp", "add rule cluster-1-tcp", "add rule cluster-1-tcp"]);
        let changes: Vec<&str> = plan.elements.log.iter().map(|l| l.split(' ').take(2).last().unwrap()).collect();
        assert_eq!(changes, ["cluster-endpoints-tcp", "service-ips", "service-ips"]);
        assert!(plan.elements.log[2].starts_with("add service-ips"), "{:?}", plan.elements.log);
        assert!(plan.post.is_empty());
    }

    #[test]
    fn a_full_sync_removes_only_the_proxys_stale_objects() {
        let existing = Existing {
            chains: ["cluster-7-udp", "pod-egress", "svc-gone/x/tcp/80", "ep-old/x/tcp/80/10.0.0.1:80"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            sets: ["affinity-gone/x/tcp/80/10.0.0.1/80".to_string(), "cluster-endpoints".to_string()].into(),
        };
        let ruleset = render(&ProxyState::default());
        let plan = full_plan(Family::V4, &[&ruleset.global], &BTreeMap::new(), &existing);
        let pre = plan.pre.into_string();
        assert!(!pre.contains("delete "), "nothing is removed before the elements switch: {pre}");
        let tx = plan.post.into_string();
        let lines: Vec<&str> = tx.lines().collect();
        assert!(lines.contains(&"delete set ip skiff cluster-endpoints"), "the retired map goes: {tx}");
        assert!(lines.contains(&"delete chain ip skiff cluster-7-udp"), "{tx}");
        assert!(lines.contains(&"delete chain ip skiff svc-gone/x/tcp/80"));
        assert!(lines.contains(&"delete set ip skiff affinity-gone/x/tcp/80/10.0.0.1/80"));
        assert!(!tx.contains("pod-egress"), "the pod network's chain is not the proxy's");
        assert!(!tx.contains("delete table"));
        assert!(!tx.contains("10.0.0.1:80"), "a name nft cannot parse would fail the whole transaction");
    }
}
