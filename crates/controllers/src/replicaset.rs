//! The ReplicaSet controller: keep `spec.replicas` pods that match the
//! selector, adopt orphans and release pods that stopped matching, delete
//! the least valuable pods first, and never over-create thanks to
//! expectations (creations and deletions asked for but not yet seen in the
//! informer cache).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::context::{Ctx, Key};
use crate::events::Recorder;
use crate::labels;
use crate::pod;
use crate::runtime::{run_workers, Action, Change, WorkQueue};

const COMPONENT: &str = "replicaset-controller";
/// At most this many creations or deletions per sync (Kubernetes' burstReplicas).
const BURST: usize = 500;
/// Expectations older than this are given up on (Kubernetes: 5 minutes).
const EXPECTATIONS_TTL: Duration = Duration::from_secs(300);

/// Creations and deletions a ReplicaSet waits to see.
#[derive(Debug)]
struct Expectation {
    add: i64,
    del: i64,
    since: Instant,
}

#[derive(Default)]
pub struct Expectations {
    inner: Mutex<HashMap<Key, Expectation>>,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Expectation>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn satisfied(&self, key: &Key) -> bool {
        match self.lock().get(key) {
            None => true,
            Some(e) => (e.add <= 0 && e.del <= 0) || e.since.elapsed() > EXPECTATIONS_TTL,
        }
    }

    pub fn expect(&self, key: &Key, add: i64, del: i64) {
        self.lock().insert(key.clone(), Expectation { add, del, since: Instant::now() });
    }

    pub fn lower(&self, key: &Key, add: i64, del: i64) {
        if let Some(e) = self.lock().get_mut(key) {
            e.add -= add;
            e.del -= del;
        }
    }

    pub fn forget(&self, key: &Key) {
        self.lock().remove(key);
    }
}

pub struct Rs {
    ctx: Arc<Ctx>,
    queue: Arc<WorkQueue<Key>>,
    expectations: Expectations,
    recorder: Recorder,
}

fn owner_rs_key(p: &Pod) -> Option<Key> {
    let c = pod::controller_ref(p)?;
    (c.kind == "ReplicaSet").then(|| Key::new(p.metadata.namespace.as_deref(), &c.name))
}

pub fn start(ctx: Arc<Ctx>) -> impl Future<Output = ()> + Send + 'static {
    let rs = Arc::new(Rs {
        queue: WorkQueue::new(),
        expectations: Expectations::default(),
        recorder: ctx.recorder.for_component(COMPONENT),
        ctx: ctx.clone(),
    });
    {
        let q = rs.queue.clone();
        ctx.informers.replicasets.on_change(move |c| q.add(Key::of(&**c.object())));
    }
    {
        let this = rs.clone();
        ctx.informers.pods.on_change(move |c| this.on_pod(c));
    }
    async move {
        if !rs.ctx.wait_synced().await {
            return;
        }
        let this = rs.clone();
        run_workers("replicaset", rs.queue.clone(), 4, rs.ctx.stop.clone(), move |key| {
            let this = this.clone();
            async move { this.reconcile(key).await }
        })
        .await;
    }
}

impl Rs {
    fn on_pod(&self, c: &Change<Pod>) {
        let p = c.object();
        match c {
            Change::Apply { old, new } => {
                if let Some(key) = owner_rs_key(new) {
                    if old.is_none() {
                        self.expectations.lower(&key, 1, 0);
                    }
                    let newly_terminating = new.metadata.deletion_timestamp.is_some()
                        && old.as_ref().is_none_or(|o| o.metadata.deletion_timestamp.is_none());
                    if newly_terminating {
                        self.expectations.lower(&key, 0, 1);
                    }
                    self.queue.add(key);
                } else {
                    // an orphan: whoever selects it may adopt it
                    self.enqueue_selecting(new);
                }
                if let Some(old) = old {
                    if let Some(k) = owner_rs_key(old) {
                        if owner_rs_key(new).as_ref() != Some(&k) {
                            self.queue.add(k);
                        }
                    }
                    if old.labels() != new.labels() {
                        self.enqueue_selecting(new);
                    }
                }
            }
            Change::Delete(_) => {
                if let Some(key) = owner_rs_key(p) {
                    if p.metadata.deletion_timestamp.is_none() {
                        self.expectations.lower(&key, 0, 1);
                    }
                    self.queue.add(key);
                }
            }
        }
    }

    fn enqueue_selecting(&self, p: &Pod) {
        let ns = p.metadata.namespace.clone();
        for rs in self.ctx.informers.replicasets.store().state() {
            if rs.metadata.namespace != ns {
                continue;
            }
            let Some(spec) = &rs.spec else { continue };
            if !labels::is_empty(&spec.selector) && labels::matches(&spec.selector, p.labels()) {
                self.queue.add(Key::of(&*rs));
            }
        }
    }

    async fn reconcile(&self, key: Key) -> Result<Action, kube::Error> {
        let Some(rs) = self.ctx.informers.replicasets.store().get(&key.store_ref()) else {
            self.expectations.forget(&key);
            return Ok(Action::await_change());
        };
        let pods = self.claim_pods(&rs).await?;
        let mut create_error = None;
        if self.expectations.satisfied(&key) && rs.metadata.deletion_timestamp.is_none() {
            if let Err(e) = self.manage_replicas(&key, &rs, &pods).await {
                create_error = Some(e);
            }
        }
        let action = self.update_status(&rs, &pods, create_error.as_ref()).await?;
        match create_error {
            Some(e) => Err(e),
            None => Ok(action),
        }
    }

    /// The active pods this ReplicaSet controls, after adopting matching
    /// orphans and releasing pods it controls that no longer match.
    async fn claim_pods(&self, rs: &ReplicaSet) -> Result<Vec<Arc<Pod>>, kube::Error> {
        let ns = rs.namespace();
        let uid = rs.uid().unwrap_or_default();
        let Some(selector) = rs.spec.as_ref().map(|s| &s.selector) else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        let pods = self.ctx.informers.pods.store().state();
        for p in pods {
            if p.metadata.namespace != ns {
                continue;
            }
            let matches = !labels::is_empty(selector) && labels::matches(selector, p.labels());
            match pod::controller_ref(&p) {
                Some(c) if c.uid == uid => {
                    if matches {
                        if pod::is_active(&p) {
                            out.push(p);
                        }
                    } else if pod::is_active(&p) {
                        self.release(rs, &p).await?;
                    }
                }
                Some(_) => {}
                None => {
                    if matches && pod::is_active(&p) && rs.metadata.deletion_timestamp.is_none() {
                        if let Some(adopted) = self.adopt(rs, &p).await? {
                            out.push(Arc::new(adopted));
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    async fn adopt(&self, rs: &ReplicaSet, p: &Pod) -> Result<Option<Pod>, kube::Error> {
        let mut refs = p.owner_references().to_vec();
        refs.push(controller_reference(rs));
        let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": p.resource_version()}});
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &p.namespace().unwrap_or_default());
        match api.patch(&p.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(p) => Ok(Some(p)),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn release(&self, rs: &ReplicaSet, p: &Pod) -> Result<(), kube::Error> {
        let uid = rs.uid().unwrap_or_default();
        let refs: Vec<_> = p.owner_references().iter().filter(|o| o.uid != uid).cloned().collect();
        let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": p.resource_version()}});
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &p.namespace().unwrap_or_default());
        match api.patch(&p.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn manage_replicas(&self, key: &Key, rs: &ReplicaSet, pods: &[Arc<Pod>]) -> Result<(), kube::Error> {
        let want = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as usize;
        let have = pods.len();
        if have < want {
            let n = (want - have).min(BURST);
            self.expectations.expect(key, n as i64, 0);
            self.create_pods(key, rs, n).await
        } else if have > want {
            let n = (have - want).min(BURST);
            let victims = pods_to_delete(pods, n);
            self.expectations.expect(key, 0, victims.len() as i64);
            self.delete_pods(key, rs, &victims).await
        } else {
            Ok(())
        }
    }

    /// Create in batches of 1, 2, 4, ... (slow start), stopping at the
    /// first failed batch so a broken template does not make hundreds of
    /// failing requests.
    async fn create_pods(&self, key: &Key, rs: &ReplicaSet, n: usize) -> Result<(), kube::Error> {
        let ns = rs.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
        let template = rs.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default();
        let pod = pod_from_template(rs, &template);
        let mut remaining = n;
        let mut batch = 1usize;
        while remaining > 0 {
            let size = batch.min(remaining);
            let pp = PostParams::default();
            let results = futures::future::join_all((0..size).map(|_| api.create(&pp, &pod))).await;
            let mut failed = None;
            for r in results {
                match r {
                    Ok(p) => self.recorder.normal(rs, "SuccessfulCreate", format!("Created pod: {}", p.name_any())),
                    Err(e) => {
                        self.expectations.lower(key, 1, 0);
                        let terminating = matches!(&e, kube::Error::Api(ae) if ae.code == 403 && ae.message.contains("being terminated"));
                        if !terminating {
                            self.recorder.warning(rs, "FailedCreate", format!("Error creating: {}", error_message(&e)));
                        }
                        failed = Some(e);
                    }
                }
            }
            remaining -= size;
            if let Some(e) = failed {
                // the rest will not be made in this sync
                self.expectations.lower(key, remaining as i64, 0);
                return Err(e);
            }
            batch *= 2;
        }
        Ok(())
    }

    async fn delete_pods(&self, key: &Key, rs: &ReplicaSet, victims: &[Arc<Pod>]) -> Result<(), kube::Error> {
        let ns = rs.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
        let results = futures::future::join_all(victims.iter().map(|p| {
            let dp = DeleteParams {
                preconditions: Some(Preconditions { uid: p.uid(), resource_version: None }),
                ..DeleteParams::default()
            };
            let api = api.clone();
            let name = p.name_any();
            async move { (name.clone(), api.delete(&name, &dp).await) }
        }))
        .await;
        let mut first_err = None;
        for (name, r) in results {
            match r {
                Ok(_) => self.recorder.normal(rs, "SuccessfulDelete", format!("Deleted pod: {name}")),
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => self.expectations.lower(key, 0, 1),
                Err(e) => {
                    self.expectations.lower(key, 0, 1);
                    self.recorder.warning(rs, "FailedDelete", format!("Error deleting: {}", error_message(&e)));
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn update_status(
        &self,
        rs: &ReplicaSet,
        pods: &[Arc<Pod>],
        create_error: Option<&kube::Error>,
    ) -> Result<Action, kube::Error> {
        let spec = rs.spec.clone().unwrap_or_default();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let template_labels =
            spec.template.as_ref().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone()).unwrap_or_default();
        let replicas = pods.len() as i32;
        let fully_labeled =
            pods.iter().filter(|p| template_labels.iter().all(|(k, v)| p.labels().get(k) == Some(v))).count() as i32;
        let ready = pods.iter().filter(|p| pod::is_ready(p)).count() as i32;
        let available = pods.iter().filter(|p| pod::is_available(p, min_ready)).count() as i32;
        let old = rs.status.clone().unwrap_or_default();
        let mut conditions = old.conditions.clone().unwrap_or_default();
        let failure = conditions.iter().position(|c| c.type_ == "ReplicaFailure");
        match (create_error, failure) {
            (Some(e), None) => conditions.push(k8s_openapi::api::apps::v1::ReplicaSetCondition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                reason: Some("FailedCreate".into()),
                message: Some(error_message(e)),
                last_transition_time: Some(crate::time::now_time()),
            }),
            (None, Some(i)) => {
                conditions.remove(i);
            }
            _ => {}
        }
        let generation = rs.metadata.generation.unwrap_or(0);
        let unchanged = old.replicas == replicas
            && old.fully_labeled_replicas.unwrap_or(0) == fully_labeled
            && old.ready_replicas.unwrap_or(0) == ready
            && old.available_replicas.unwrap_or(0) == available
            && old.observed_generation.unwrap_or(0) == generation
            && old.conditions.clone().unwrap_or_default() == conditions;
        if !unchanged {
            let status = json!({"status": {
                "replicas": replicas,
                "fullyLabeledReplicas": fully_labeled,
                "readyReplicas": ready,
                "availableReplicas": available,
                "observedGeneration": generation,
                "conditions": if conditions.is_empty() { serde_json::Value::Null } else { json!(conditions) },
            }});
            let api: Api<ReplicaSet> = Api::namespaced(self.ctx.client.clone(), &rs.namespace().unwrap_or_default());
            match api.patch_status(&rs.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Action::await_change()),
                Err(e) => return Err(e),
            }
        }
        // pods that are ready but not yet available need another look
        if min_ready > 0 && ready != available {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        Ok(Action::await_change())
    }
}

pub fn error_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(ae) => ae.message.clone(),
        other => other.to_string(),
    }
}

/// An ownerReference to `owner` that marks it the controller.
pub fn controller_reference<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn pod_from_template(rs: &ReplicaSet, template: &PodTemplateSpec) -> Pod {
    let tm = template.metadata.clone().unwrap_or_default();
    let mut prefix = format!("{}-", rs.name_any());
    if prefix.len() > 58 {
        prefix.truncate(58);
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(prefix),
            namespace: rs.namespace(),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![controller_reference(rs)]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Kubernetes' ActivePods ordering: the pods to delete first come first.
fn less_valuable(a: &Pod, b: &Pod) -> Ordering {
    // unassigned < assigned
    let assigned = |p: &Pod| !pod::node_name(p).is_empty();
    if assigned(a) != assigned(b) {
        return assigned(a).cmp(&assigned(b));
    }
    // Pending < Unknown < Running
    let rank = |p: &Pod| match pod::phase(p) {
        "Pending" | "" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    };
    if rank(a) != rank(b) {
        return rank(a).cmp(&rank(b));
    }
    // not ready < ready
    if pod::is_ready(a) != pod::is_ready(b) {
        return pod::is_ready(a).cmp(&pod::is_ready(b));
    }
    // ready for less time < ready for longer
    if pod::is_ready(a) {
        let since = |p: &Pod| pod::condition(p, "Ready").and_then(|c| c.last_transition_time.clone());
        if let (Some(x), Some(y)) = (since(a), since(b)) {
            if x != y {
                return y.cmp(&x);
            }
        }
    }
    // more restarts < fewer restarts
    let restarts = |p: &Pod| -> i32 {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
            .unwrap_or(0)
    };
    if restarts(a) != restarts(b) {
        return restarts(b).cmp(&restarts(a));
    }
    // newer < older
    b.metadata.creation_timestamp.cmp(&a.metadata.creation_timestamp)
}

pub(crate) fn pods_to_delete(pods: &[Arc<Pod>], n: usize) -> Vec<Arc<Pod>> {
    let mut sorted = pods.to_vec();
    sorted.sort_by(|a, b| less_valuable(a, b));
    sorted.truncate(n);
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn p(name: &str, node: &str, phase: &str, ready: bool, created: i64) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(jiff::Timestamp::from_second(created).unwrap_or_default())),
                ..Default::default()
            },
            spec: Some(PodSpec { node_name: (!node.is_empty()).then(|| node.to_string()), ..Default::default() }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn deletes_unscheduled_then_pending_then_unready_then_newest() {
        let pods = vec![
            p("ready-old", "n1", "Running", true, 100),
            p("ready-new", "n1", "Running", true, 200),
            p("unready", "n1", "Running", false, 50),
            p("pending", "n1", "Pending", false, 10),
            p("unscheduled", "", "Pending", false, 5),
        ];
        let order: Vec<String> = pods_to_delete(&pods, 5).iter().map(|p| p.name_any()).collect();
        assert_eq!(order, ["unscheduled", "pending", "unready", "ready-new", "ready-old"]);
    }

    #[test]
    fn expectations_block_until_observed() {
        let e = Expectations::default();
        let k = Key::new(Some("default"), "web");
        assert!(e.satisfied(&k));
        e.expect(&k, 2, 0);
        assert!(!e.satisfied(&k));
        e.lower(&k, 1, 0);
        assert!(!e.satisfied(&k));
        e.lower(&k, 1, 0);
        assert!(e.satisfied(&k));
    }
}
