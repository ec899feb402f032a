//! Node lifecycle: a node's heartbeat is its Lease in kube-node-lease (and
//! its Ready condition's lastHeartbeatTime). One not renewed within the
//! grace period becomes Ready=Unknown (NodeStatusUnknown), gets the
//! unreachable taints (NoSchedule and NoExecute), and its pods are marked not
//! ready so that endpoints drop them. Pods on a node with a NoExecute taint
//! are evicted once their toleration runs out (pods without one get the
//! default, as Kubernetes' DefaultTolerationSeconds admission gives them).
//! Pods bound to nodes that no longer exist are force-deleted (pod GC).
//!
//! Heartbeats are timed on this process's clock from when a change was
//! seen, as Kubernetes does, so a controller restart gives every node a full
//! grace period and clock skew between machines does not matter.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::ResourceExt;
use serde_json::json;

use crate::context::{Ctx, Key};
use crate::events::Recorder;
use crate::pod;
use crate::runtime::{run_workers, Action, Change, WorkQueue};
use crate::time::{now, now_time};

const COMPONENT: &str = "node-controller";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
const LEASE_NAMESPACE: &str = "kube-node-lease";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Item {
    Node(String),
    /// Pods bound to nodes that do not exist.
    Orphans,
}

/// The last heartbeat seen for a node and when (on our clock) it was seen.
struct Beat {
    value: String,
    seen: Instant,
}

struct Nlc {
    ctx: Arc<Ctx>,
    queue: Arc<WorkQueue<Item>>,
    beats: Mutex<HashMap<String, Beat>>,
    recorder: Recorder,
}

pub fn start(ctx: Arc<Ctx>) -> impl Future<Output = ()> + Send + 'static {
    let nlc = Arc::new(Nlc {
        queue: WorkQueue::new(),
        beats: Mutex::new(HashMap::new()),
        recorder: ctx.recorder.for_component(COMPONENT),
        ctx: ctx.clone(),
    });
    {
        let q = nlc.queue.clone();
        ctx.informers.nodes.on_change(move |c| match c {
            Change::Apply { .. } => q.add(Item::Node(c.object().name_any())),
            Change::Delete(_) => q.add(Item::Orphans),
        });
    }
    {
        let q = nlc.queue.clone();
        ctx.informers.leases.on_change(move |c| {
            if c.object().metadata.namespace.as_deref() == Some(LEASE_NAMESPACE) {
                q.add(Item::Node(c.object().name_any()));
            }
        });
    }
    {
        let this = nlc.clone();
        ctx.informers.pods.on_change(move |c| {
            // a pod placed on a tainted node may need evicting
            if let Change::Apply { old, new } = c {
                let node = pod::node_name(new);
                if !node.is_empty() && old.as_ref().is_none_or(|o| pod::node_name(o) != node) {
                    this.queue.add(Item::Node(node.to_string()));
                }
            }
        });
    }
    async move {
        if !nlc.ctx.wait_synced().await {
            return;
        }
        nlc.queue.add(Item::Orphans);
        let this = nlc.clone();
        run_workers("nodelifecycle", nlc.queue.clone(), 2, nlc.ctx.stop.clone(), move |item| {
            let this = this.clone();
            async move {
                match item {
                    Item::Node(name) => this.reconcile(&name).await,
                    Item::Orphans => this.collect_orphans().await,
                }
            }
        })
        .await;
    }
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")
}

/// The taints a node's Ready condition calls for.
fn wanted_taint_key(node: &Node) -> Option<&'static str> {
    match ready_condition(node).map(|c| c.status.as_str()) {
        Some("True") => None,
        Some("False") => Some(NOT_READY),
        _ => Some(UNREACHABLE),
    }
}

/// The pod's toleration of a NoExecute taint: None = not tolerated,
/// Some(None) = forever, Some(Some(s)) = for s seconds.
pub fn toleration_seconds(tolerations: &[Toleration], taint: &Taint, default: Duration) -> Option<Option<u64>> {
    let matching: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
    if matching.is_empty() {
        // DefaultTolerationSeconds gives every pod these two
        if taint.key == NOT_READY || taint.key == UNREACHABLE {
            return Some(Some(default.as_secs()));
        }
        return None;
    }
    if matching.iter().any(|t| t.toleration_seconds.is_none()) {
        return Some(None);
    }
    Some(matching.iter().filter_map(|t| t.toleration_seconds).map(|s| s.max(0) as u64).min())
}

/// v1.Toleration.ToleratesTaint.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if e != taint.effect {
            return false;
        }
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        _ => key == taint.key && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
    }
}

impl Nlc {
    /// How long since the node's heartbeat last changed (on our clock).
    fn since_heartbeat(&self, node: &Node) -> Duration {
        let name = node.name_any();
        let lease = self.ctx.informers.leases.store().get(&Key::new(Some(LEASE_NAMESPACE), &name).store_ref());
        let lease_time = lease.and_then(|l| l.spec.as_ref()?.renew_time.clone()).map(|t| t.0.to_string());
        let cond_time = ready_condition(node).and_then(|c| c.last_heartbeat_time.clone()).map(|t| t.0.to_string());
        let value = format!("{}|{}", lease_time.unwrap_or_default(), cond_time.unwrap_or_default());
        let mut beats = self.beats.lock().unwrap_or_else(|e| e.into_inner());
        let beat = beats.entry(name).or_insert_with(|| Beat { value: value.clone(), seen: Instant::now() });
        if beat.value != value {
            beat.value = value;
            beat.seen = Instant::now();
        }
        beat.seen.elapsed()
    }

    async fn reconcile(&self, name: &str) -> Result<Action, kube::Error> {
        let Some(node) = self.ctx.informers.nodes.store().get(&Key::new(None, name).store_ref()) else {
            self.beats.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
            return Ok(Action::await_change());
        };
        let grace = self.ctx.opts.node_monitor_grace_period;
        let elapsed = self.since_heartbeat(&node);
        let mut action = Action::await_change();
        let ready = ready_condition(&node);
        if elapsed > grace {
            if ready.is_none_or(|c| c.status != "Unknown") {
                self.mark_unknown(&node).await?;
                // the node update brings us back for taints and pods
                return Ok(Action::await_change());
            }
        } else {
            action = Action::requeue(grace - elapsed + Duration::from_millis(100));
        }
        self.reconcile_taints(&node).await?;
        if ready.is_none_or(|c| c.status != "True") {
            self.mark_pods_not_ready(&node).await?;
        }
        Ok(action.min(self.evict(&node).await?))
    }

    async fn mark_unknown(&self, node: &Node) -> Result<(), kube::Error> {
        let t = now_time();
        let mut conditions = node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        let has_ready = conditions.iter().any(|c| c.type_ == "Ready");
        for c in conditions.iter_mut() {
            if matches!(c.type_.as_str(), "Ready" | "MemoryPressure" | "DiskPressure" | "PIDPressure")
                && c.status != "Unknown"
            {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(t.clone());
            }
        }
        if !has_ready {
            conditions.push(NodeCondition {
                type_: "Ready".into(),
                status: "Unknown".into(),
                reason: Some("NodeStatusNeverUpdated".into()),
                message: Some("Kubelet never posted node status.".into()),
                last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                last_transition_time: Some(t),
            });
        }
        let patch = json!({
            "metadata": {"resourceVersion": node.resource_version()},
            "status": {"conditions": conditions},
        });
        let api: Api<Node> = Api::all(self.ctx.client.clone());
        api.patch_status(&node.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        tracing::info!(node = %node.name_any(), "node stopped renewing its lease: Ready=Unknown");
        self.recorder.normal(node, "NodeNotReady", format!("Node {} status is now: NodeNotReady", node.name_any()));
        Ok(())
    }

    async fn reconcile_taints(&self, node: &Node) -> Result<(), kube::Error> {
        let taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        let wanted = wanted_taint_key(node);
        let ours = |t: &Taint| {
            (t.key == NOT_READY || t.key == UNREACHABLE) && (t.effect == "NoSchedule" || t.effect == "NoExecute")
        };
        let mut next: Vec<Taint> =
            taints.iter().filter(|t| !ours(t) || Some(t.key.as_str()) == wanted).cloned().collect();
        if let Some(key) = wanted {
            for effect in ["NoSchedule", "NoExecute"] {
                if !next.iter().any(|t| t.key == key && t.effect == effect) {
                    next.push(Taint {
                        key: key.into(),
                        effect: effect.into(),
                        value: None,
                        time_added: (effect == "NoExecute").then(now_time),
                    });
                }
            }
        }
        if next == taints {
            return Ok(());
        }
        let patch = json!({
            "metadata": {"resourceVersion": node.resource_version()},
            "spec": {"taints": if next.is_empty() { serde_json::Value::Null } else { json!(next) }},
        });
        let api: Api<Node> = Api::all(self.ctx.client.clone());
        api.patch(&node.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        Ok(())
    }

    fn pods_on(&self, node: &str) -> Vec<Arc<Pod>> {
        self.ctx.informers.pods.store().state().into_iter().filter(|p| pod::node_name(p) == node).collect()
    }

    /// MarkPodsNotReady: the node cannot say its pods are ready, so they are not.
    async fn mark_pods_not_ready(&self, node: &Node) -> Result<(), kube::Error> {
        for p in self.pods_on(&node.name_any()) {
            if pod::is_terminal(&p) || pod::condition(&p, "Ready").is_none_or(|c| c.status == "False") {
                continue;
            }
            let patch = json!({"status": {"conditions": [
                {"type": "Ready", "status": "False", "lastProbeTime": null, "lastTransitionTime": now_time()}
            ]}});
            let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &p.namespace().unwrap_or_default());
            match api.patch_status(&p.name_any(), &PatchParams::default(), &Patch::Strategic(&patch)).await {
                Ok(_) => self.recorder.warning(&*p, "NodeNotReady", "Node is not ready".into()),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The NoExecute taint manager: evict pods whose toleration ran out;
    /// ask to come back when the next one will.
    async fn evict(&self, node: &Node) -> Result<Action, kube::Error> {
        let taints: Vec<Taint> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.effect == "NoExecute")
            .collect();
        if taints.is_empty() {
            return Ok(Action::await_change());
        }
        let mut action = Action::await_change();
        let default = self.ctx.opts.pod_eviction_timeout;
        for p in self.pods_on(&node.name_any()) {
            if pod::is_terminating(&p) || pod::is_terminal(&p) {
                continue;
            }
            let tolerations = p.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
            let mut evict_at: Option<jiff::Timestamp> = None;
            let mut never = true;
            let mut now_please = false;
            for taint in &taints {
                match toleration_seconds(&tolerations, taint, default) {
                    None => now_please = true,
                    Some(None) => {}
                    Some(Some(secs)) => {
                        never = false;
                        let added = taint.time_added.as_ref().map(|t| t.0).unwrap_or_else(now);
                        let at = crate::time::add(&added, Duration::from_secs(secs));
                        evict_at = Some(evict_at.map_or(at, |e: jiff::Timestamp| e.min(at)));
                    }
                }
            }
            let due = now_please || evict_at.is_some_and(|at| at <= now());
            if due {
                self.evict_pod(&p).await?;
            } else if !never {
                if let Some(at) = evict_at {
                    action = action.min(Action::requeue(crate::time::until(&at) + Duration::from_millis(100)));
                }
            }
        }
        Ok(action)
    }

    async fn evict_pod(&self, p: &Pod) -> Result<(), kube::Error> {
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &p.namespace().unwrap_or_default());
        let cond = json!({"status": {"conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
            "message": "Taint manager: deleting due to NoExecute taint", "lastTransitionTime": now_time(),
        }]}});
        let _ = api.patch_status(&p.name_any(), &PatchParams::default(), &Patch::Strategic(&cond)).await;
        let dp = DeleteParams {
            preconditions: Some(Preconditions { uid: p.uid(), resource_version: None }),
            ..Default::default()
        };
        match api.delete(&p.name_any(), &dp).await {
            Ok(_) => {
                tracing::info!(pod = %format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()), "evicted from a tainted node");
                self.recorder.normal(
                    p,
                    "TaintManagerEviction",
                    format!("Marking for deletion Pod {}/{}", p.namespace().unwrap_or_default(), p.name_any()),
                );
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Pod GC: pods bound to a node that does not exist are deleted at once.
    async fn collect_orphans(&self) -> Result<Action, kube::Error> {
        let nodes = self.ctx.informers.nodes.store();
        let api_nodes: Api<Node> = Api::all(self.ctx.client.clone());
        let mut confirmed_gone: HashMap<String, bool> = HashMap::new();
        for p in self.ctx.informers.pods.store().state() {
            let node = pod::node_name(&p).to_string();
            if node.is_empty() || nodes.get(&Key::new(None, &node).store_ref()).is_some() {
                continue;
            }
            let gone = match confirmed_gone.get(&node) {
                Some(g) => *g,
                None => {
                    let g = api_nodes.get_opt(&node).await?.is_none();
                    confirmed_gone.insert(node.clone(), g);
                    g
                }
            };
            if !gone {
                continue;
            }
            let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &p.namespace().unwrap_or_default());
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions { uid: p.uid(), resource_version: None }),
                ..Default::default()
            };
            match api.delete(&p.name_any(), &dp).await {
                Ok(_) => {
                    tracing::info!(pod = %p.name_any(), node = %node, "deleted a pod bound to a node that no longer exists")
                }
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Action::await_change())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str) -> Taint {
        Taint { key: key.into(), effect: "NoExecute".into(), value: None, time_added: None }
    }

    #[test]
    fn default_toleration_applies_to_unreachable_only() {
        let d = Duration::from_secs(300);
        assert_eq!(toleration_seconds(&[], &taint(UNREACHABLE), d), Some(Some(300)));
        assert_eq!(toleration_seconds(&[], &taint("example.com/gpu"), d), None);
        let t = Toleration {
            key: Some(UNREACHABLE.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: Some(5),
            value: None,
        };
        assert_eq!(toleration_seconds(&[t], &taint(UNREACHABLE), d), Some(Some(5)));
        let forever = Toleration { operator: Some("Exists".into()), ..Default::default() };
        assert_eq!(toleration_seconds(&[forever], &taint(UNREACHABLE), d), Some(None));
    }
}
