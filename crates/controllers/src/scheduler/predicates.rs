//! The scheduler's filters and scores, as pure functions over a node's
//! accounted state and a pod's needs, with Kubernetes' reasons so that the
//! FailedScheduling message reads the same.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;

use crate::nodelifecycle::{tolerates, NOT_READY, UNREACHABLE};
use crate::pod;

/// Parse a resource quantity ("100m", "1.5", "512Mi", "1G", "2e3") into
/// base units.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+')).unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let (num, suffix) =
        if suffix.starts_with(['e', 'E']) && suffix[1..].parse::<i32>().is_ok() { (q, "") } else { (num, suffix) };
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "u" => 1e-6,
        "n" => 1e-9,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0f64.powi(2),
        "Gi" => 1024.0f64.powi(3),
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        _ => return None,
    };
    Some(n * mult)
}

/// Resources in integer units: cpu in millicores, everything else in base units.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Res {
    pub cpu_m: i64,
    pub memory: i64,
    pub pods: i64,
    pub other: BTreeMap<String, i64>,
}

impl Res {
    fn add_quantity(&mut self, name: &str, q: &Quantity) {
        let Some(v) = parse_quantity(&q.0) else { return };
        match name {
            "cpu" => self.cpu_m += (v * 1000.0).ceil() as i64,
            "memory" => self.memory += v.ceil() as i64,
            "pods" => self.pods += v as i64,
            other => *self.other.entry(other.to_string()).or_insert(0) += v.ceil() as i64,
        }
    }

    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Res {
        let mut r = Res::default();
        for (k, q) in list.into_iter().flatten() {
            r.add_quantity(k, q);
        }
        r
    }

    pub fn add(&mut self, o: &Res) {
        self.cpu_m += o.cpu_m;
        self.memory += o.memory;
        self.pods += o.pods;
        for (k, v) in &o.other {
            *self.other.entry(k.clone()).or_insert(0) += v;
        }
    }

    pub fn sub(&mut self, o: &Res) {
        self.cpu_m -= o.cpu_m;
        self.memory -= o.memory;
        self.pods -= o.pods;
        for (k, v) in &o.other {
            *self.other.entry(k.clone()).or_insert(0) -= v;
        }
    }

    fn max_with(&mut self, o: &Res) {
        self.cpu_m = self.cpu_m.max(o.cpu_m);
        self.memory = self.memory.max(o.memory);
        for (k, v) in &o.other {
            let e = self.other.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
    }
}

const DEFAULT_CPU_M: i64 = 100;
const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// What a pod needs from a node, computed once per scheduling attempt.
#[derive(Debug, Clone)]
pub struct PodNeeds {
    pub requests: Res,
    /// Requests with Kubernetes' non-zero defaults (for scoring only).
    pub nonzero: Res,
    pub host_ports: Vec<(String, String, i32)>,
    pub tolerations: Vec<Toleration>,
    pub node_selector: BTreeMap<String, String>,
    pub required_terms: Option<Vec<NodeSelectorTerm>>,
    pub owner: Option<String>,
}

impl PodNeeds {
    pub fn of(p: &Pod) -> PodNeeds {
        let spec = p.spec.clone().unwrap_or_default();
        let mut requests = Res::default();
        let mut nonzero = Res::default();
        for c in &spec.containers {
            let r = Res::from_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
            nonzero.cpu_m += if r.cpu_m == 0 { DEFAULT_CPU_M } else { r.cpu_m };
            nonzero.memory += if r.memory == 0 { DEFAULT_MEMORY } else { r.memory };
            requests.add(&r);
        }
        for c in spec.init_containers.iter().flatten() {
            let r = Res::from_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
            requests.max_with(&r);
        }
        if let Some(o) = &spec.overhead {
            requests.add(&Res::from_list(Some(o)));
        }
        requests.pods = 1;
        nonzero.pods = 1;
        let host_ports = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter(|cp| cp.host_port.is_some_and(|h| h > 0))
            .map(|cp| {
                (
                    cp.host_ip.clone().filter(|ip| !ip.is_empty()).unwrap_or_else(|| "0.0.0.0".into()),
                    cp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    cp.host_port.unwrap_or(0),
                )
            })
            .collect();
        let required_terms = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref())
            .map(|r| r.node_selector_terms.clone());
        PodNeeds {
            requests,
            nonzero,
            host_ports,
            tolerations: spec.tolerations.unwrap_or_default(),
            node_selector: spec.node_selector.unwrap_or_default(),
            required_terms,
            owner: pod::controller_ref(p).map(|o| o.uid.clone()),
        }
    }
}

/// A node and what the pods on it (bound or assumed) take.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub allocatable: Res,
    pub requested: Res,
    pub nonzero: Res,
    pub ports: Vec<(String, String, i32)>,
    pub owners: HashMap<String, u32>,
    pub pods: HashSet<String>,
}

impl NodeInfo {
    pub fn new(node: Arc<Node>) -> NodeInfo {
        let status = node.status.as_ref();
        let alloc = status.and_then(|s| s.allocatable.as_ref()).or_else(|| status.and_then(|s| s.capacity.as_ref()));
        NodeInfo {
            allocatable: Res::from_list(alloc),
            node,
            requested: Res::default(),
            nonzero: Res::default(),
            ports: Vec::new(),
            owners: HashMap::new(),
            pods: HashSet::new(),
        }
    }

    pub fn set_node(&mut self, node: Arc<Node>) {
        let fresh = NodeInfo::new(node);
        self.node = fresh.node;
        self.allocatable = fresh.allocatable;
    }

    pub fn add(&mut self, uid: &str, needs: &PodNeeds) {
        if !self.pods.insert(uid.to_string()) {
            return;
        }
        self.requested.add(&needs.requests);
        self.nonzero.add(&needs.nonzero);
        self.ports.extend(needs.host_ports.iter().cloned());
        if let Some(o) = &needs.owner {
            *self.owners.entry(o.clone()).or_insert(0) += 1;
        }
    }

    pub fn remove(&mut self, uid: &str, needs: &PodNeeds) {
        if !self.pods.remove(uid) {
            return;
        }
        self.requested.sub(&needs.requests);
        self.nonzero.sub(&needs.nonzero);
        for hp in &needs.host_ports {
            if let Some(i) = self.ports.iter().position(|p| p == hp) {
                self.ports.remove(i);
            }
        }
        if let Some(o) = &needs.owner {
            if let Some(n) = self.owners.get_mut(o) {
                *n -= 1;
                if *n == 0 {
                    self.owners.remove(o);
                }
            }
        }
    }
}

/// Why a node does not fit; `unresolvable` ones are those preemption
/// could not help with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub text: String,
    pub unresolvable: bool,
}

fn reason(text: impl Into<String>, unresolvable: bool) -> Vec<Reason> {
    vec![Reason { text: text.into(), unresolvable }]
}

fn taints_with_readiness(node: &Node) -> Vec<Taint> {
    let mut taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    // a node that is not Ready counts as tainted even before the node
    // lifecycle loop has put the taint on
    let ready =
        node.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    let key = match ready.map(|c| c.status.as_str()) {
        Some("True") => None,
        Some("False") => Some(NOT_READY),
        _ => Some(UNREACHABLE),
    };
    if let Some(key) = key {
        if !taints.iter().any(|t| t.key == key && t.effect == "NoSchedule") {
            taints.push(Taint { key: key.into(), effect: "NoSchedule".into(), value: None, time_added: None });
        }
    }
    taints
}

fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let labels = node.labels();
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|e| requirement_matches(e, labels.get(&e.key).map(String::as_str)))
        && fields.iter().all(|f| f.key == "metadata.name" && requirement_matches(f, node.metadata.name.as_deref()))
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) =
                (value.and_then(|v| v.parse::<i64>().ok()), values.first().and_then(|b| b.parse::<i64>().ok()))
            else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Run the filters in Kubernetes' order; the first that fails gives the reasons.
pub fn filter(needs: &PodNeeds, ni: &NodeInfo) -> Result<(), Vec<Reason>> {
    let node = &ni.node;
    // NodeUnschedulable
    if node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) {
        let t = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            value: None,
            time_added: None,
        };
        if !needs.tolerations.iter().any(|tol| tolerates(tol, &t)) {
            return Err(reason("node(s) were unschedulable", true));
        }
    }
    // TaintToleration
    for t in taints_with_readiness(node) {
        if (t.effect == "NoSchedule" || t.effect == "NoExecute")
            && !needs.tolerations.iter().any(|tol| tolerates(tol, &t))
        {
            return Err(reason(
                format!("node(s) had untolerated taint {{{}: {}}}", t.key, t.value.as_deref().unwrap_or("")),
                true,
            ));
        }
    }
    // NodeAffinity (nodeSelector and required affinity)
    let labels = node.labels();
    let selector_ok = needs.node_selector.iter().all(|(k, v)| labels.get(k) == Some(v));
    let affinity_ok = needs.required_terms.as_ref().is_none_or(|terms| terms.iter().any(|t| term_matches(t, node)));
    if !selector_ok || !affinity_ok {
        return Err(reason("node(s) didn't match Pod's node affinity/selector", true));
    }
    // NodePorts
    for (ip, proto, port) in &needs.host_ports {
        let clash = ni.ports.iter().any(|(uip, uproto, uport)| {
            uport == port && uproto == proto && (uip == ip || uip == "0.0.0.0" || ip == "0.0.0.0")
        });
        if clash {
            return Err(reason("node(s) didn't have free ports for the requested pod ports", false));
        }
    }
    // NodeResourcesFit
    let mut insufficient = Vec::new();
    let r = &needs.requests;
    if ni.requested.pods + 1 > ni.allocatable.pods {
        insufficient.push("Too many pods".to_string());
    }
    if r.cpu_m > 0 && r.cpu_m > ni.allocatable.cpu_m - ni.requested.cpu_m {
        insufficient.push("Insufficient cpu".into());
    }
    if r.memory > 0 && r.memory > ni.allocatable.memory - ni.requested.memory {
        insufficient.push("Insufficient memory".into());
    }
    for (k, v) in &r.other {
        let have = ni.allocatable.other.get(k).copied().unwrap_or(0) - ni.requested.other.get(k).copied().unwrap_or(0);
        if *v > 0 && *v > have {
            insufficient.push(format!("Insufficient {k}"));
        }
    }
    if !insufficient.is_empty() {
        return Err(insufficient.into_iter().map(|text| Reason { text, unresolvable: false }).collect());
    }
    Ok(())
}

/// NodeResourcesFit's LeastAllocated score (cpu and memory, equal weight), 0-100.
pub fn least_allocated(needs: &PodNeeds, ni: &NodeInfo) -> i64 {
    let score = |alloc: i64, used: i64| -> i64 {
        if alloc <= 0 || used > alloc {
            0
        } else {
            (alloc - used) * 100 / alloc
        }
    };
    let cpu = score(ni.allocatable.cpu_m, ni.nonzero.cpu_m + needs.nonzero.cpu_m);
    let mem = score(ni.allocatable.memory, ni.nonzero.memory + needs.nonzero.memory);
    (cpu + mem) / 2
}

/// FitError: `0/3 nodes are available: 1 node(s) had untolerated taint
/// {node.kubernetes.io/unreachable: }, 2 Insufficient cpu. preemption: 0/3
/// nodes are available: 1 Preemption is not helpful for scheduling, 2 No
/// preemption victims found for incoming pod.`
pub fn fit_error_message(num_nodes: usize, failures: &[Vec<Reason>]) -> String {
    if num_nodes == 0 {
        return "no nodes available to schedule pods".into();
    }
    let histogram = |items: Vec<String>| -> String {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for i in items {
            *counts.entry(i).or_insert(0) += 1;
        }
        let mut parts: Vec<String> = counts.into_iter().map(|(k, v)| format!("{v} {k}")).collect();
        parts.sort();
        parts.join(", ")
    };
    let mut reasons = Vec::new();
    let mut preemption = Vec::new();
    for f in failures {
        let mut seen = HashSet::new();
        for r in f {
            if seen.insert(&r.text) {
                reasons.push(r.text.clone());
            }
        }
        preemption.push(if f.iter().any(|r| r.unresolvable) {
            "Preemption is not helpful for scheduling".to_string()
        } else {
            "No preemption victims found for incoming pod".to_string()
        });
    }
    format!(
        "0/{num_nodes} nodes are available: {}. preemption: 0/{num_nodes} nodes are available: {}.",
        histogram(reasons),
        histogram(preemption)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, NodeCondition, NodeSpec, NodeStatus, PodSpec, ResourceRequirements};
    use kube::api::ObjectMeta;

    fn node(name: &str, cpu: &str, ready: bool, taints: Vec<Taint>) -> NodeInfo {
        let alloc: BTreeMap<String, Quantity> = [
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity("4Gi".into())),
            ("pods".to_string(), Quantity("110".into())),
        ]
        .into();
        NodeInfo::new(Arc::new(Node {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            spec: Some(NodeSpec { taints: Some(taints), ..Default::default() }),
            status: Some(NodeStatus {
                allocatable: Some(alloc),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "Unknown" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }))
    }

    fn pod_needing(cpu: &str) -> PodNeeds {
        PodNeeds::of(&Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some([("cpu".to_string(), Quantity(cpu.into()))].into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("100m"), Some(0.1));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1Gi"), Some(1073741824.0));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("1.5k"), Some(1500.0));
        assert_eq!(parse_quantity("1Ei"), Some(1024.0f64.powi(6)));
        assert_eq!(parse_quantity("bogus"), None);
    }

    #[test]
    fn failed_scheduling_message_reads_like_kubernetes() {
        let needs = pod_needing("2");
        let nodes = [node("a", "1", true, vec![]), node("b", "1", true, vec![]), node("c", "8", false, vec![])];
        let failures: Vec<Vec<Reason>> = nodes.iter().filter_map(|n| filter(&needs, n).err()).collect();
        assert_eq!(
            fit_error_message(3, &failures),
            "0/3 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }, 2 Insufficient cpu. \
             preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
        );
    }

    #[test]
    fn requests_count_against_allocatable() {
        let needs = pod_needing("600m");
        let mut n = node("a", "1", true, vec![]);
        assert!(filter(&needs, &n).is_ok());
        n.add("p1", &needs);
        assert_eq!(filter(&needs, &n).unwrap_err()[0].text, "Insufficient cpu");
        n.remove("p1", &needs);
        assert!(filter(&needs, &n).is_ok());
    }

    #[test]
    fn tolerations_let_pods_onto_tainted_nodes() {
        let taint =
            Taint { key: "dedicated".into(), value: Some("gpu".into()), effect: "NoSchedule".into(), time_added: None };
        let n = node("a", "4", true, vec![taint]);
        let mut needs = pod_needing("100m");
        assert_eq!(filter(&needs, &n).unwrap_err()[0].text, "node(s) had untolerated taint {dedicated: gpu}");
        needs.tolerations = vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("gpu".into()),
            effect: Some("NoSchedule".into()),
            toleration_seconds: None,
        }];
        assert!(filter(&needs, &n).is_ok());
    }
}
