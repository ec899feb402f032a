//! The Deployment controller, after Kubernetes' (pkg/controller/deployment):
//! one ReplicaSet per pod template (`<name>-<pod-template-hash>`), rolled
//! out by RollingUpdate (maxSurge/maxUnavailable) or Recreate, proportional
//! scaling, pause/resume, revision annotations and history cleanup, and the
//! status `kubectl rollout status` reads (observedGeneration, replica counts,
//! Available and Progressing conditions, ProgressDeadlineExceeded).

mod util;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::ResourceExt;
use serde_json::json;

use crate::context::{Ctx, Key};
use crate::events::Recorder;
use crate::labels;
use crate::pod;
use crate::replicaset::{controller_reference, error_message};
use crate::runtime::{run_workers, Action, Change, WorkQueue};
use util::*;

const COMPONENT: &str = "deployment-controller";

pub struct Dc {
    ctx: Arc<Ctx>,
    queue: Arc<WorkQueue<Key>>,
    recorder: Recorder,
}

fn owner_deployment_key(rs: &ReplicaSet) -> Option<Key> {
    let c = pod::controller_of(rs.owner_references())?;
    (c.kind == "Deployment").then(|| Key::new(rs.metadata.namespace.as_deref(), &c.name))
}

pub fn start(ctx: Arc<Ctx>) -> impl Future<Output = ()> + Send + 'static {
    let dc =
        Arc::new(Dc { queue: WorkQueue::new(), recorder: ctx.recorder.for_component(COMPONENT), ctx: ctx.clone() });
    {
        let q = dc.queue.clone();
        ctx.informers.deployments.on_change(move |c| q.add(Key::of(&**c.object())));
    }
    {
        let this = dc.clone();
        ctx.informers.replicasets.on_change(move |c| this.on_replicaset(c));
    }
    {
        let this = dc.clone();
        ctx.informers.pods.on_change(move |c| {
            // Recreate waits for old pods to be gone
            if let Change::Delete(p) = c {
                this.enqueue_for_pod(p);
            }
        });
    }
    async move {
        if !dc.ctx.wait_synced().await {
            return;
        }
        let this = dc.clone();
        run_workers("deployment", dc.queue.clone(), 4, dc.ctx.stop.clone(), move |key| {
            let this = this.clone();
            async move { this.reconcile(key).await }
        })
        .await;
    }
}

fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> std::cmp::Ordering {
    a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp).then_with(|| a.name_any().cmp(&b.name_any()))
}

fn refs(rss: &[ReplicaSet]) -> Vec<&ReplicaSet> {
    rss.iter().collect()
}

impl Dc {
    fn on_replicaset(&self, c: &Change<ReplicaSet>) {
        let rs = c.object();
        match owner_deployment_key(rs) {
            Some(k) => self.queue.add(k),
            None => self.enqueue_selecting(rs),
        }
        if let Some(old) = c.old() {
            if let Some(k) = owner_deployment_key(old) {
                self.queue.add(k);
            }
        }
    }

    fn enqueue_selecting(&self, rs: &ReplicaSet) {
        for d in self.ctx.informers.deployments.store().state() {
            if d.metadata.namespace != rs.metadata.namespace {
                continue;
            }
            let Some(spec) = &d.spec else { continue };
            if !labels::is_empty(&spec.selector) && labels::matches(&spec.selector, rs.labels()) {
                self.queue.add(Key::of(&*d));
            }
        }
    }

    fn enqueue_for_pod(&self, p: &Pod) {
        let Some(c) = pod::controller_ref(p).filter(|c| c.kind == "ReplicaSet") else { return };
        let key = Key::new(p.metadata.namespace.as_deref(), &c.name);
        if let Some(rs) = self.ctx.informers.replicasets.store().get(&key.store_ref()) {
            if let Some(k) = owner_deployment_key(&rs) {
                self.queue.add(k);
            }
        }
    }

    fn rs_api(&self, ns: &str) -> Api<ReplicaSet> {
        Api::namespaced(self.ctx.client.clone(), ns)
    }

    async fn reconcile(&self, key: Key) -> Result<Action, kube::Error> {
        let Some(d) = self.ctx.informers.deployments.store().get(&key.store_ref()) else {
            return Ok(Action::await_change());
        };
        let mut d = (*d).clone();
        let selector = d.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default();
        if labels::is_empty(&selector) {
            self.recorder.warning(
                &d,
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.".into(),
            );
            return Ok(Action::await_change());
        }
        let rs_list = self.claim_replicasets(&d, &selector).await?;
        if d.metadata.deletion_timestamp.is_some() {
            let (new_rs, old) = self.get_all_replicasets(&mut d, &rs_list, false).await?;
            return self.sync_deployment_status(&d, &old, new_rs.as_ref()).await;
        }
        self.check_paused_conditions(&mut d).await?;
        let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        if paused || self.is_scaling_event(&mut d, &rs_list).await? {
            return self.sync(&mut d, &rs_list).await;
        }
        if is_rolling(&d) {
            self.rollout_rolling(&mut d, &rs_list).await
        } else {
            self.rollout_recreate(&mut d, &rs_list).await
        }
    }

    /// The ReplicaSets this deployment controls, adopting matching orphans
    /// and releasing those that stopped matching.
    async fn claim_replicasets(
        &self,
        d: &Deployment,
        selector: &LabelSelector,
    ) -> Result<Vec<ReplicaSet>, kube::Error> {
        let uid = d.uid().unwrap_or_default();
        let ns = d.namespace();
        let mut out = Vec::new();
        for rs in self.ctx.informers.replicasets.store().state() {
            if rs.metadata.namespace != ns {
                continue;
            }
            let matches = labels::matches(selector, rs.labels());
            match pod::controller_of(rs.owner_references()) {
                Some(c) if c.uid == uid => {
                    if matches {
                        out.push((*rs).clone());
                    } else {
                        let refs: Vec<_> = rs.owner_references().iter().filter(|o| o.uid != uid).cloned().collect();
                        self.patch_owner_refs(&rs, json!(refs)).await?;
                    }
                }
                Some(_) => {}
                None => {
                    if matches && d.metadata.deletion_timestamp.is_none() && rs.metadata.deletion_timestamp.is_none() {
                        let mut refs = rs.owner_references().to_vec();
                        refs.push(controller_reference(d));
                        if let Some(adopted) = self.patch_owner_refs(&rs, json!(refs)).await? {
                            out.push(adopted);
                        }
                    }
                }
            }
        }
        out.sort_by(by_creation);
        Ok(out)
    }

    async fn patch_owner_refs(
        &self,
        rs: &ReplicaSet,
        refs: serde_json::Value,
    ) -> Result<Option<ReplicaSet>, kube::Error> {
        let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": rs.resource_version()}});
        match self
            .rs_api(&rs.namespace().unwrap_or_default())
            .patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(rs) => Ok(Some(rs)),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The new ReplicaSet (the one whose template is the deployment's, if
    /// any, created when `create`) and the old ones; keeps revisions in step.
    async fn get_all_replicasets(
        &self,
        d: &mut Deployment,
        rs_list: &[ReplicaSet],
        create: bool,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>), kube::Error> {
        let template = d.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
        let existing = rs_list
            .iter()
            .find(|rs| {
                rs.spec.as_ref().and_then(|s| s.template.as_ref()).is_some_and(|t| equal_ignore_hash(t, &template))
            })
            .cloned();
        let old: Vec<ReplicaSet> =
            rs_list.iter().filter(|rs| existing.as_ref().is_none_or(|e| e.uid() != rs.uid())).cloned().collect();
        let new_rs = self.get_new_replicaset(d, &old, existing, create).await?;
        Ok((new_rs, old))
    }

    async fn get_new_replicaset(
        &self,
        d: &mut Deployment,
        old: &[ReplicaSet],
        existing: Option<ReplicaSet>,
        create: bool,
    ) -> Result<Option<ReplicaSet>, kube::Error> {
        let new_revision = max_revision(old) + 1;
        let ns = d.namespace().unwrap_or_default();
        if let Some(existing) = existing {
            let mut rs = existing.clone();
            let annotations_updated = set_new_rs_annotations(d, &mut rs, new_revision, true);
            let min_ready = d.spec.as_ref().and_then(|s| s.min_ready_seconds);
            let min_ready_update =
                rs.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0) != min_ready.unwrap_or(0);
            if annotations_updated || min_ready_update {
                if let Some(s) = rs.spec.as_mut() {
                    s.min_ready_seconds = min_ready;
                }
                let updated = self.rs_api(&ns).replace(&rs.name_any(), &PostParams::default(), &rs).await?;
                return Ok(Some(updated));
            }
            let rev = rs.annotations().get(REVISION).cloned().unwrap_or_default();
            self.set_deployment_revision(d, &rev).await?;
            let has_progressing = d.status.as_ref().is_some_and(|s| condition(s, PROGRESSING).is_some());
            if progress_deadline(d).is_some() && !has_progressing {
                let mut status = d.status.clone().unwrap_or_default();
                set_condition(
                    &mut status,
                    new_condition(
                        PROGRESSING,
                        "True",
                        FOUND_NEW_RS_REASON,
                        format!("Found new replica set \"{}\"", rs.name_any()),
                    ),
                );
                self.write_status(d, status).await?;
            }
            return Ok(Some(rs));
        }
        if !create {
            return Ok(None);
        }
        let mut template = d.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
        let collision = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = compute_hash(&template, collision);
        let tm = template.metadata.get_or_insert_with(Default::default);
        tm.labels.get_or_insert_with(Default::default).insert(HASH_LABEL.into(), hash.clone());
        let mut selector = d.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default();
        selector.match_labels.get_or_insert_with(Default::default).insert(HASH_LABEL.into(), hash.clone());
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{}-{hash}", d.name_any())),
                namespace: Some(ns.clone()),
                owner_references: Some(vec![controller_reference(d)]),
                labels: tm.labels.clone(),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: d.spec.as_ref().and_then(|s| s.min_ready_seconds),
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let all: Vec<&ReplicaSet> = old.iter().chain(std::iter::once(&rs)).collect();
        let count = new_rs_new_replicas(d, &all, &rs);
        if let Some(s) = rs.spec.as_mut() {
            s.replicas = Some(count);
        }
        set_new_rs_annotations(d, &mut rs, new_revision, false);
        let (created, already) = match self.rs_api(&ns).create(&PostParams::default(), &rs).await {
            Ok(c) => (c, false),
            Err(kube::Error::Api(e)) if e.code == 409 && e.reason == "AlreadyExists" => {
                let found = self.rs_api(&ns).get(&rs.name_any()).await?;
                let ours =
                    pod::controller_of(found.owner_references()).is_some_and(|c| Some(&c.uid) == d.uid().as_ref());
                let same = found.spec.as_ref().and_then(|s| s.template.as_ref()).is_some_and(|t| {
                    equal_ignore_hash(t, &d.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default())
                });
                if ours && same {
                    (found, true)
                } else {
                    // a hash collision: try another name next time
                    let mut status = d.status.clone().unwrap_or_default();
                    status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
                    self.write_status(d, status).await?;
                    return Err(kube::Error::Api(e));
                }
            }
            Err(e) => {
                let msg = format!("Failed to create new replica set \"{}\": {}", rs.name_any(), error_message(&e));
                if progress_deadline(d).is_some() {
                    let mut status = d.status.clone().unwrap_or_default();
                    set_condition(
                        &mut status,
                        new_condition(PROGRESSING, "False", FAILED_RS_CREATE_REASON, msg.clone()),
                    );
                    let _ = self.write_status(d, status).await;
                }
                self.recorder.warning(d, FAILED_RS_CREATE_REASON, msg);
                return Err(e);
            }
        };
        if !already && count > 0 {
            self.recorder.normal(
                d,
                "ScalingReplicaSet",
                format!("Scaled up replica set {} from 0 to {count}", created.name_any()),
            );
        }
        self.set_deployment_revision(d, &new_revision.to_string()).await?;
        if !already && progress_deadline(d).is_some() {
            let mut status = d.status.clone().unwrap_or_default();
            set_condition(
                &mut status,
                new_condition(
                    PROGRESSING,
                    "True",
                    NEW_RS_REASON,
                    format!("Created new replica set \"{}\"", created.name_any()),
                ),
            );
            self.write_status(d, status).await?;
        }
        Ok(Some(created))
    }

    /// The deployment's revision annotation follows its new ReplicaSet's.
    async fn set_deployment_revision(&self, d: &mut Deployment, revision: &str) -> Result<(), kube::Error> {
        if revision.is_empty() || d.annotations().get(REVISION).map(String::as_str) == Some(revision) {
            return Ok(());
        }
        let api: Api<Deployment> = Api::namespaced(self.ctx.client.clone(), &d.namespace().unwrap_or_default());
        let patch = json!({"metadata": {"annotations": {REVISION: revision}}});
        let updated = api.patch(&d.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        d.metadata.annotations = updated.metadata.annotations;
        d.metadata.resource_version = updated.metadata.resource_version;
        Ok(())
    }

    /// Write `status` (every count explicit, so a merge patch leaves no
    /// stale field behind) and keep `d` in step.
    async fn write_status(&self, d: &mut Deployment, mut status: DeploymentStatus) -> Result<(), kube::Error> {
        for f in [
            &mut status.replicas,
            &mut status.updated_replicas,
            &mut status.ready_replicas,
            &mut status.available_replicas,
            &mut status.unavailable_replicas,
        ] {
            f.get_or_insert(0);
        }
        if d.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let api: Api<Deployment> = Api::namespaced(self.ctx.client.clone(), &d.namespace().unwrap_or_default());
        let mut body = serde_json::to_value(&status).unwrap_or_default();
        if status.conditions.is_none() {
            body["conditions"] = serde_json::Value::Null;
        }
        let patch = json!({ "status": body });
        api.patch_status(&d.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        d.status = Some(status);
        Ok(())
    }

    async fn check_paused_conditions(&self, d: &mut Deployment) -> Result<(), kube::Error> {
        let status = d.status.clone().unwrap_or_default();
        let cond = condition(&status, PROGRESSING);
        if cond.is_some_and(|c| c.reason.as_deref() == Some(TIMED_OUT_REASON)) {
            return Ok(());
        }
        let paused_exists = cond.is_some_and(|c| c.reason.as_deref() == Some(PAUSED_REASON));
        let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        let mut status = status.clone();
        if paused && !paused_exists {
            set_condition(
                &mut status,
                new_condition(PROGRESSING, "Unknown", PAUSED_REASON, "Deployment is paused".into()),
            );
        } else if !paused && paused_exists {
            set_condition(
                &mut status,
                new_condition(PROGRESSING, "Unknown", RESUMED_REASON, "Deployment is resumed".into()),
            );
        } else {
            return Ok(());
        }
        self.write_status(d, status).await
    }

    async fn is_scaling_event(&self, d: &mut Deployment, rs_list: &[ReplicaSet]) -> Result<bool, kube::Error> {
        let (new_rs, old) = self.get_all_replicasets(d, rs_list, false).await?;
        let want = replicas(d);
        Ok(old
            .iter()
            .chain(new_rs.iter())
            .filter(|rs| rs_replicas(rs) > 0)
            .any(|rs| desired_replicas_annotation(rs).is_some_and(|desired| desired != want)))
    }

    /// Scale a ReplicaSet (and keep its desired/max annotations current).
    async fn scale_replicaset(
        &self,
        rs: &mut ReplicaSet,
        to: i32,
        d: &Deployment,
        op: &str,
    ) -> Result<bool, kube::Error> {
        let from = rs_replicas(rs);
        let size_changed = from != to;
        let desired = replicas(d);
        let max = desired + max_surge(d);
        if !size_changed && !replicas_annotations_need_update(rs, desired, max) {
            return Ok(false);
        }
        let mut copy = rs.clone();
        if let Some(s) = copy.spec.as_mut() {
            s.replicas = Some(to);
        }
        set_replicas_annotations(&mut copy, desired, max);
        let updated = self
            .rs_api(&rs.namespace().unwrap_or_default())
            .replace(&rs.name_any(), &PostParams::default(), &copy)
            .await?;
        if size_changed {
            self.recorder.normal(
                d,
                "ScalingReplicaSet",
                format!("Scaled {op} replica set {} from {from} to {to}", rs.name_any()),
            );
        }
        *rs = updated;
        Ok(size_changed)
    }

    async fn scale_and_record(&self, rs: &mut ReplicaSet, to: i32, d: &Deployment) -> Result<bool, kube::Error> {
        if rs_replicas(rs) == to {
            return Ok(false);
        }
        let op = if rs_replicas(rs) > to { "down" } else { "up" };
        self.scale_replicaset(rs, to, d, op).await
    }

    /// A scaling event or a paused deployment: resize, no rollout.
    async fn sync(&self, d: &mut Deployment, rs_list: &[ReplicaSet]) -> Result<Action, kube::Error> {
        let (mut new_rs, mut old) = self.get_all_replicasets(d, rs_list, false).await?;
        self.scale(d, new_rs.as_mut(), &mut old).await?;
        if d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
            self.cleanup(d, &old).await?;
        }
        self.sync_deployment_status(d, &old, new_rs.as_ref()).await
    }

    async fn scale(
        &self,
        d: &Deployment,
        mut new_rs: Option<&mut ReplicaSet>,
        old: &mut [ReplicaSet],
    ) -> Result<(), kube::Error> {
        let want = replicas(d);
        // one active (or else the newest) ReplicaSet takes the whole count
        let active: Vec<usize> = (0..old.len()).filter(|i| rs_replicas(&old[*i]) > 0).collect();
        let new_active = new_rs.as_ref().is_some_and(|r| rs_replicas(r) > 0);
        match (new_active, active.len()) {
            (true, 0) => {
                if let Some(rs) = new_rs.as_deref_mut() {
                    if rs_replicas(rs) != want {
                        self.scale_and_record(rs, want, d).await?;
                    }
                }
                return Ok(());
            }
            (false, 1) => {
                let rs = &mut old[active[0]];
                if rs_replicas(rs) != want {
                    self.scale_and_record(rs, want, d).await?;
                }
                return Ok(());
            }
            (false, 0) => {
                // nothing active: the newest gets the count
                let newest = match new_rs.as_deref_mut() {
                    Some(n) => Some(n),
                    None => old.iter_mut().max_by(|a, b| by_creation(a, b)),
                };
                if let Some(rs) = newest {
                    if rs_replicas(rs) != want {
                        self.scale_and_record(rs, want, d).await?;
                    }
                }
                return Ok(());
            }
            _ => {}
        }
        if is_saturated(d, new_rs.as_deref()) {
            for i in active {
                self.scale_and_record(&mut old[i], 0, d).await?;
            }
            return Ok(());
        }
        if !is_rolling(d) {
            return Ok(());
        }
        // proportional scaling across the active ReplicaSets
        let mut all: Vec<&mut ReplicaSet> = old.iter_mut().filter(|r| rs_replicas(r) > 0).collect();
        if let Some(n) = new_rs.filter(|r| rs_replicas(r) > 0) {
            all.push(n);
        }
        let current: i32 = all.iter().map(|r| rs_replicas(r)).sum();
        let allowed = if want > 0 { want + max_surge(d) } else { 0 };
        let to_add = allowed - current;
        let op = if to_add > 0 { "up" } else { "down" };
        if to_add > 0 {
            // larger first; among equals, newer first
            all.sort_by(|a, b| rs_replicas(b).cmp(&rs_replicas(a)).then_with(|| by_creation(b, a)));
        } else if to_add < 0 {
            // larger first; among equals, older first
            all.sort_by(|a, b| rs_replicas(b).cmp(&rs_replicas(a)).then_with(|| by_creation(a, b)));
        }
        let mut added = 0;
        let mut sizes = Vec::with_capacity(all.len());
        for rs in all.iter() {
            if to_add != 0 {
                let p = proportion(rs, d, to_add, added);
                sizes.push(rs_replicas(rs) + p);
                added += p;
            } else {
                sizes.push(rs_replicas(rs));
            }
        }
        if let Some(first) = sizes.first_mut() {
            if to_add != 0 {
                *first = (*first + to_add - added).max(0);
            }
        }
        for (rs, size) in all.into_iter().zip(sizes) {
            self.scale_replicaset(rs, size, d, op).await?;
        }
        Ok(())
    }

    async fn rollout_rolling(&self, d: &mut Deployment, rs_list: &[ReplicaSet]) -> Result<Action, kube::Error> {
        let (new_rs, mut old) = self.get_all_replicasets(d, rs_list, true).await?;
        let Some(mut new_rs) = new_rs else { return Ok(Action::requeue(Duration::from_secs(1))) };
        // scale up the new ReplicaSet as far as maxSurge allows
        if self.reconcile_new_rs(d, &mut new_rs, &old).await? {
            return self.sync_rollout_status(d, &old, Some(&new_rs)).await;
        }
        if self.reconcile_old_rss(d, &new_rs, &mut old).await? {
            return self.sync_rollout_status(d, &old, Some(&new_rs)).await;
        }
        if deployment_complete(d, &d.status.clone().unwrap_or_default()) {
            self.cleanup(d, &old).await?;
        }
        self.sync_rollout_status(d, &old, Some(&new_rs)).await
    }

    async fn reconcile_new_rs(
        &self,
        d: &Deployment,
        new_rs: &mut ReplicaSet,
        old: &[ReplicaSet],
    ) -> Result<bool, kube::Error> {
        let want = replicas(d);
        if rs_replicas(new_rs) == want {
            return Ok(false);
        }
        if rs_replicas(new_rs) > want {
            return self.scale_and_record(new_rs, want, d).await;
        }
        let all: Vec<&ReplicaSet> = old.iter().chain(std::iter::once(&*new_rs)).collect();
        let count = new_rs_new_replicas(d, &all, new_rs);
        self.scale_and_record(new_rs, count, d).await
    }

    async fn reconcile_old_rss(
        &self,
        d: &Deployment,
        new_rs: &ReplicaSet,
        old: &mut [ReplicaSet],
    ) -> Result<bool, kube::Error> {
        let old_count = sum_spec_replicas(&refs(old));
        if old_count == 0 {
            return Ok(false);
        }
        let all_count = old_count + rs_replicas(new_rs);
        let min_available = replicas(d) - max_unavailable(d);
        let new_unavailable =
            rs_replicas(new_rs) - new_rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
        let max_scaled_down = all_count - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        old.sort_by(by_creation);
        // unhealthy old replicas go first
        let mut cleaned = 0;
        for rs in old.iter_mut() {
            if cleaned >= max_scaled_down {
                break;
            }
            let size = rs_replicas(rs);
            let available = rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
            if size == 0 || available == size {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(size - available);
            self.scale_and_record(rs, size - down, d).await?;
            cleaned += down;
        }
        // then healthy ones, as long as enough stay available
        let mut all: Vec<&ReplicaSet> = old.iter().collect();
        all.push(new_rs);
        let available = available_replicas(&all);
        let mut scaled = 0;
        if available > min_available {
            let total = available - min_available;
            for rs in old.iter_mut() {
                if scaled >= total {
                    break;
                }
                let size = rs_replicas(rs);
                if size == 0 {
                    continue;
                }
                let down = size.min(total - scaled);
                self.scale_and_record(rs, size - down, d).await?;
                scaled += down;
            }
        }
        Ok(cleaned + scaled > 0)
    }

    async fn rollout_recreate(&self, d: &mut Deployment, rs_list: &[ReplicaSet]) -> Result<Action, kube::Error> {
        let (mut new_rs, mut old) = self.get_all_replicasets(d, rs_list, false).await?;
        let mut scaled_down = false;
        for rs in old.iter_mut().filter(|r| rs_replicas(r) > 0) {
            scaled_down |= self.scale_and_record(rs, 0, d).await?;
        }
        if scaled_down || self.old_pods_running(new_rs.as_ref(), &old) {
            return self.sync_rollout_status(d, &old, new_rs.as_ref()).await;
        }
        if new_rs.is_none() {
            let (n, o) = self.get_all_replicasets(d, rs_list, true).await?;
            new_rs = n;
            old = o;
        }
        if let Some(rs) = new_rs.as_mut() {
            let want = replicas(d);
            self.scale_and_record(rs, want, d).await?;
        }
        if deployment_complete(d, &d.status.clone().unwrap_or_default()) {
            self.cleanup(d, &old).await?;
        }
        self.sync_rollout_status(d, &old, new_rs.as_ref()).await
    }

    fn old_pods_running(&self, new_rs: Option<&ReplicaSet>, old: &[ReplicaSet]) -> bool {
        if actual_replicas(&refs(old)) > 0 {
            return true;
        }
        let old_uids: Vec<String> = old.iter().filter_map(|r| r.uid()).collect();
        let new_uid = new_rs.and_then(|r| r.uid());
        self.ctx.informers.pods.store().state().iter().any(|p| {
            pod::controller_ref(p).is_some_and(|c| old_uids.contains(&c.uid) && Some(&c.uid) != new_uid.as_ref())
                && !pod::is_terminal(p)
        })
    }

    /// Delete old, empty ReplicaSets beyond revisionHistoryLimit, oldest
    /// revision first.
    async fn cleanup(&self, d: &Deployment, old: &[ReplicaSet]) -> Result<(), kube::Error> {
        let Some(limit) = d.spec.as_ref().and_then(|s| s.revision_history_limit) else { return Ok(()) };
        let mut cleanable: Vec<&ReplicaSet> = old.iter().filter(|r| r.metadata.deletion_timestamp.is_none()).collect();
        let diff = cleanable.len() as i32 - limit;
        if diff <= 0 {
            return Ok(());
        }
        cleanable.sort_by(|a, b| revision(a).cmp(&revision(b)).then_with(|| by_creation(a, b)));
        for rs in cleanable.into_iter().take(diff as usize) {
            let status = rs.status.clone().unwrap_or_default();
            if status.replicas != 0
                || rs_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > status.observed_generation.unwrap_or(0)
            {
                continue;
            }
            let dp = DeleteParams {
                preconditions: Some(Preconditions { uid: rs.uid(), resource_version: None }),
                ..Default::default()
            };
            match self.rs_api(&rs.namespace().unwrap_or_default()).delete(&rs.name_any(), &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn calculate_status(&self, d: &Deployment, old: &[ReplicaSet], new_rs: Option<&ReplicaSet>) -> DeploymentStatus {
        let mut all: Vec<&ReplicaSet> = old.iter().collect();
        all.extend(new_rs);
        let available = available_replicas(&all);
        let total = sum_spec_replicas(&all);
        let prev = d.status.clone().unwrap_or_default();
        let mut status = DeploymentStatus {
            observed_generation: d.metadata.generation,
            replicas: Some(actual_replicas(&all)),
            updated_replicas: Some(new_rs.map(|r| actual_replicas(&[r])).unwrap_or(0)),
            ready_replicas: Some(ready_replicas(&all)),
            available_replicas: Some(available),
            unavailable_replicas: Some((total - available).max(0)),
            collision_count: prev.collision_count,
            conditions: prev.conditions.clone(),
            terminating_replicas: None,
        };
        if available >= replicas(d) - max_unavailable(d) {
            set_condition(
                &mut status,
                new_condition(AVAILABLE, "True", MIN_AVAILABLE_REASON, "Deployment has minimum availability.".into()),
            );
        } else {
            set_condition(
                &mut status,
                new_condition(
                    AVAILABLE,
                    "False",
                    MIN_UNAVAILABLE_REASON,
                    "Deployment does not have minimum availability.".into(),
                ),
            );
        }
        status
    }

    async fn sync_deployment_status(
        &self,
        d: &Deployment,
        old: &[ReplicaSet],
        new_rs: Option<&ReplicaSet>,
    ) -> Result<Action, kube::Error> {
        let status = self.calculate_status(d, old, new_rs);
        let mut d = d.clone();
        self.write_status(&mut d, status).await?;
        Ok(Action::await_change())
    }

    async fn sync_rollout_status(
        &self,
        d: &mut Deployment,
        old: &[ReplicaSet],
        new_rs: Option<&ReplicaSet>,
    ) -> Result<Action, kube::Error> {
        let mut status = self.calculate_status(d, old, new_rs);
        let deadline = progress_deadline(d).is_some();
        if !deadline {
            remove_condition(&mut status, PROGRESSING);
        }
        let prev = d.status.clone().unwrap_or_default();
        let current = condition(&prev, PROGRESSING).cloned();
        let complete_before = status.replicas == status.updated_replicas
            && current.as_ref().is_some_and(|c| c.reason.as_deref() == Some(NEW_RS_AVAILABLE_REASON));
        let name = new_rs.map(|r| r.name_any());
        if deadline && !complete_before {
            if deployment_complete(d, &status) {
                let msg = match &name {
                    Some(n) => format!("ReplicaSet \"{n}\" has successfully progressed."),
                    None => format!("Deployment \"{}\" has successfully progressed.", d.name_any()),
                };
                set_condition(&mut status, new_condition(PROGRESSING, "True", NEW_RS_AVAILABLE_REASON, msg));
            } else if deployment_progressing(d, &status) {
                let msg = match &name {
                    Some(n) => format!("ReplicaSet \"{n}\" is progressing."),
                    None => format!("Deployment \"{}\" is progressing.", d.name_any()),
                };
                let mut c = new_condition(PROGRESSING, "True", RS_UPDATED_REASON, msg);
                if let Some(cur) = &current {
                    if cur.status == "True" {
                        c.last_transition_time = cur.last_transition_time.clone();
                    }
                    remove_condition(&mut status, PROGRESSING);
                }
                status.conditions.get_or_insert_with(Vec::new).push(c);
            } else if deployment_timed_out(d, &status) {
                let msg = match &name {
                    Some(n) => format!("ReplicaSet \"{n}\" has timed out progressing."),
                    None => format!("Deployment \"{}\" has timed out progressing.", d.name_any()),
                };
                set_condition(&mut status, new_condition(PROGRESSING, "False", TIMED_OUT_REASON, msg.clone()));
            }
        }
        let action = match progress_deadline_at(d, &status) {
            Some(at) if !deployment_complete(d, &status) => {
                Action::requeue(crate::time::until(&at) + Duration::from_secs(1))
            }
            _ => Action::await_change(),
        };
        self.write_status(d, status).await?;
        Ok(action)
    }
}
