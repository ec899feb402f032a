//! The scheduler: pending pods of `default-scheduler` are placed one at a
//! time against an in-memory account of every node (requests, host ports,
//! pods per owner), which includes pods it has just bound but not yet seen
//! back from the watch ("assumed"), and bound through `pods/binding` by
//! concurrent tasks. A pod that fits nowhere gets PodScheduled=False
//! (Unschedulable) and a FailedScheduling event, and waits until a node or a
//! pod changes.

mod predicates;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use rand::Rng;
use serde_json::json;
use tokio::sync::Semaphore;

pub use predicates::fit_error_message;
use predicates::{filter, least_allocated, NodeInfo, PodNeeds, Reason};

use crate::context::{Ctx, Key};
use crate::events::Recorder;
use crate::pod;
use crate::runtime::{Change, WorkQueue};
use crate::time::now_time;

pub const SCHEDULER_NAME: &str = "default-scheduler";
/// Bindings in flight at once.
const BIND_CONCURRENCY: usize = 64;
const BACKOFF_INITIAL: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Unschedulable pods are retried at least this often, change or not.
const FLUSH_EVERY: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Cache {
    nodes: HashMap<String, NodeInfo>,
    /// pod uid → (node, needs), for bound and assumed pods
    pods: HashMap<String, (String, PodNeeds)>,
}

impl Cache {
    fn add_pod(&mut self, uid: &str, node: &str, needs: PodNeeds) {
        if let Some((cur, _)) = self.pods.get(uid) {
            if cur == node {
                return;
            }
            self.remove_pod(uid);
        }
        if let Some(ni) = self.nodes.get_mut(node) {
            ni.add(uid, &needs);
        }
        self.pods.insert(uid.to_string(), (node.to_string(), needs));
    }

    fn remove_pod(&mut self, uid: &str) {
        if let Some((node, needs)) = self.pods.remove(uid) {
            if let Some(ni) = self.nodes.get_mut(&node) {
                ni.remove(uid, &needs);
            }
        }
    }

    fn set_node(&mut self, node: Arc<Node>) {
        let name = node.name_any();
        match self.nodes.get_mut(&name) {
            Some(ni) => ni.set_node(node),
            None => {
                let mut ni = NodeInfo::new(node);
                for (uid, (n, needs)) in &self.pods {
                    if *n == name {
                        ni.add(uid, needs);
                    }
                }
                self.nodes.insert(name, ni);
            }
        }
    }
}

struct Scheduler {
    ctx: Arc<Ctx>,
    cache: Mutex<Cache>,
    queue: Arc<WorkQueue<Key>>,
    /// Pods that fit nowhere, with how often they failed.
    unschedulable: Mutex<HashMap<Key, u32>>,
    binds: Arc<Semaphore>,
    recorder: Recorder,
}

fn wants_scheduling(p: &Pod) -> bool {
    let spec = p.spec.as_ref();
    spec.is_some_and(|s| s.node_name.as_deref().unwrap_or("").is_empty())
        && spec.and_then(|s| s.scheduler_name.as_deref()).unwrap_or(SCHEDULER_NAME) == SCHEDULER_NAME
        && !pod::is_terminating(p)
        && !pod::is_terminal(p)
}

/// Node changes that can make a pod fit where it did not.
fn node_changed_for_scheduling(old: Option<&Node>, new: &Node) -> bool {
    let Some(old) = old else { return true };
    old.labels() != new.labels()
        || old.spec.as_ref().map(|s| (&s.taints, s.unschedulable))
            != new.spec.as_ref().map(|s| (&s.taints, s.unschedulable))
        || old.status.as_ref().map(|s| &s.allocatable) != new.status.as_ref().map(|s| &s.allocatable)
        || ready_status(old) != ready_status(new)
}

fn ready_status(n: &Node) -> Option<String> {
    n.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready").map(|c| c.status.clone())
}

pub fn start(ctx: Arc<Ctx>) -> impl Future<Output = ()> + Send + 'static {
    let s = Arc::new(Scheduler {
        cache: Mutex::new(Cache::default()),
        queue: WorkQueue::new(),
        unschedulable: Mutex::new(HashMap::new()),
        binds: Arc::new(Semaphore::new(BIND_CONCURRENCY)),
        recorder: ctx.recorder.for_component(SCHEDULER_NAME),
        ctx: ctx.clone(),
    });
    {
        let this = s.clone();
        ctx.informers.pods.on_change(move |c| this.on_pod(c));
    }
    {
        let this = s.clone();
        ctx.informers.nodes.on_change(move |c| this.on_node(c));
    }
    async move {
        if !s.ctx.wait_synced().await {
            return;
        }
        let flusher = {
            let this = s.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = this.ctx.stop.cancelled() => return,
                        _ = tokio::time::sleep(FLUSH_EVERY) => this.retry_unschedulable(),
                    }
                }
            })
        };
        loop {
            let key = tokio::select! {
                _ = s.ctx.stop.cancelled() => break,
                k = s.queue.get() => match k { Some(k) => k, None => break },
            };
            // hold a binding slot before deciding, so decisions never run
            // far ahead of the API server
            let permit = tokio::select! {
                _ = s.ctx.stop.cancelled() => break,
                p = s.binds.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            s.schedule_one(&key, permit);
            s.queue.done(&key);
        }
        s.queue.shut_down();
        flusher.abort();
    }
}

impl Scheduler {
    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn on_pod(&self, c: &Change<Pod>) {
        match c {
            Change::Apply { old, new } => {
                let uid = new.uid().unwrap_or_default();
                let node = pod::node_name(new);
                let frees = pod::is_terminal(new) && old.as_ref().is_some_and(|o| !pod::is_terminal(o));
                if !node.is_empty() && !pod::is_terminal(new) {
                    self.lock().add_pod(&uid, node, PodNeeds::of(new));
                } else if pod::is_terminal(new) {
                    self.lock().remove_pod(&uid);
                }
                if wants_scheduling(new) {
                    let key = Key::of(&**new);
                    // a status-only change (our own condition) is no reason to retry
                    let changed =
                        old.as_ref().is_none_or(|o| o.spec != new.spec || o.metadata.labels != new.metadata.labels);
                    let parked = self.unschedulable.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&key);
                    if changed || !parked {
                        self.unschedulable.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
                        self.queue.add(key);
                    }
                }
                if frees {
                    self.retry_unschedulable();
                }
            }
            Change::Delete(p) => {
                self.lock().remove_pod(&p.uid().unwrap_or_default());
                self.unschedulable.lock().unwrap_or_else(|e| e.into_inner()).remove(&Key::of(&**p));
                if !pod::node_name(p).is_empty() {
                    self.retry_unschedulable();
                }
            }
        }
    }

    fn on_node(&self, c: &Change<Node>) {
        match c {
            Change::Apply { old, new } => {
                self.lock().set_node(new.clone());
                if node_changed_for_scheduling(old.as_deref(), new) {
                    self.retry_unschedulable();
                }
            }
            Change::Delete(n) => {
                self.lock().nodes.remove(&n.name_any());
            }
        }
    }

    /// Move every parked pod back to the queue, each after its backoff.
    fn retry_unschedulable(&self) {
        let parked: Vec<(Key, u32)> = self.unschedulable.lock().unwrap_or_else(|e| e.into_inner()).drain().collect();
        for (key, attempts) in parked {
            let backoff = BACKOFF_INITIAL.saturating_mul(1 << attempts.saturating_sub(1).min(8)).min(BACKOFF_MAX);
            self.queue.add_after(key, backoff);
        }
    }

    fn schedule_one(self: &Arc<Self>, key: &Key, permit: tokio::sync::OwnedSemaphorePermit) {
        let Some(p) = self.ctx.informers.pods.store().get(&key.store_ref()) else { return };
        if !wants_scheduling(&p) {
            return;
        }
        let uid = p.uid().unwrap_or_default();
        let needs = PodNeeds::of(&p);
        let decision = {
            let mut cache = self.lock();
            if cache.pods.contains_key(&uid) {
                // bound by us already; the watch has not caught up
                return;
            }
            let mut failures: Vec<Vec<Reason>> = Vec::new();
            let mut feasible: Vec<&NodeInfo> = Vec::new();
            for ni in cache.nodes.values() {
                match filter(&needs, ni) {
                    Ok(()) => feasible.push(ni),
                    Err(r) => failures.push(r),
                }
            }
            let total = cache.nodes.len();
            match pick(&needs, &feasible) {
                Some(node) => {
                    cache.add_pod(&uid, &node, needs);
                    Ok(node)
                }
                None => Err(fit_error_message(total, &failures)),
            }
        };
        match decision {
            Ok(node) => {
                let this = self.clone();
                let key = key.clone();
                tokio::spawn(async move {
                    this.bind(&p, &key, &uid, &node).await;
                    drop(permit);
                });
            }
            Err(message) => {
                drop(permit);
                {
                    let mut parked = self.unschedulable.lock().unwrap_or_else(|e| e.into_inner());
                    let n = parked.entry(key.clone()).or_insert(0);
                    *n += 1;
                }
                let this = self.clone();
                tokio::spawn(async move { this.report_unschedulable(&p, message).await });
            }
        }
    }

    async fn bind(&self, p: &Pod, key: &Key, uid: &str, node: &str) {
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), key.ns());
        let binding = json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": key.name, "namespace": key.ns(), "uid": uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        match api
            .create_subresource::<_, serde_json::Value>("binding", &key.name, &PostParams::default(), &binding)
            .await
        {
            Ok(_) => {
                self.recorder.normal(
                    p,
                    "Scheduled",
                    format!("Successfully assigned {}/{} to {node}", key.ns(), key.name),
                );
            }
            Err(e) => {
                self.lock().remove_pod(uid);
                match &e {
                    // gone, or bound by someone else: the watch tells the rest
                    kube::Error::Api(ae) if ae.code == 404 || ae.code == 409 => {}
                    _ => {
                        tracing::debug!(pod = %key, error = %e, "binding failed; will retry");
                        self.queue.add_rate_limited(key.clone());
                    }
                }
            }
        }
    }

    async fn report_unschedulable(&self, p: &Pod, message: String) {
        self.recorder.warning(p, "FailedScheduling", message.clone());
        let current = pod::condition(p, "PodScheduled");
        let same = current.is_some_and(|c| {
            c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(message.as_str())
        });
        if same {
            return;
        }
        let patch = json!({"status": {"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
            "lastProbeTime": null, "lastTransitionTime": now_time(),
        }]}});
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &p.namespace().unwrap_or_default());
        if let Err(e) = api.patch_status(&p.name_any(), &PatchParams::default(), &Patch::Strategic(&patch)).await {
            tracing::debug!(pod = %p.name_any(), error = %e, "setting PodScheduled=False failed");
        }
    }
}

/// The best feasible node: least allocated, plus (twice as much) spreading
/// of the pod's siblings (same controller); ties broken at random.
fn pick(needs: &PodNeeds, feasible: &[&NodeInfo]) -> Option<String> {
    if feasible.is_empty() {
        return None;
    }
    let siblings = |ni: &NodeInfo| needs.owner.as_ref().and_then(|o| ni.owners.get(o)).copied().unwrap_or(0) as i64;
    let max_siblings = feasible.iter().map(|ni| siblings(ni)).max().unwrap_or(0);
    let mut rng = rand::rng();
    let mut best: Option<(i64, &NodeInfo)> = None;
    let mut ties = 0u32;
    for ni in feasible {
        let spread = if max_siblings == 0 { 100 } else { 100 * (max_siblings - siblings(ni)) / max_siblings };
        let score = least_allocated(needs, ni) + 2 * spread;
        match best {
            Some((b, _)) if score < b => {}
            Some((b, _)) if score == b => {
                ties += 1;
                if rng.random_range(0..=ties) == 0 {
                    best = Some((score, ni));
                }
            }
            _ => {
                best = Some((score, ni));
                ties = 0;
            }
        }
    }
    best.map(|(_, ni)| ni.node.name_any())
}
