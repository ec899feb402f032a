//! The namespace controller: a Terminating namespace (deletionTimestamp and
//! the `kubernetes` finalizer in spec.finalizers) is emptied (every
//! namespaced type the server serves, deleted collection by collection),
//! and once nothing is left its finalizer is removed through
//! `PUT /api/v1/namespaces/NAME/finalize`, after which the API server
//! deletes it.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams, PropagationPolicy};
use kube::ResourceExt;

use crate::context::{api_resource, Ctx, Key};
use crate::runtime::{run_workers, Action, WorkQueue};

const FINALIZER: &str = "kubernetes";

struct Nc {
    ctx: Arc<Ctx>,
    queue: Arc<WorkQueue<Key>>,
    /// Namespaces seen empty once: finalized when seen empty again, so a
    /// create that passed the API server's namespace check just before the
    /// namespace turned Terminating is not left behind.
    seen_empty: Mutex<HashSet<String>>,
}

/// Controllers' objects go first, so that they do not replace what is deleted.
fn deletion_order() -> Vec<&'static skiff_api::ResourceType> {
    let mut types: Vec<_> = skiff_api::catalogue::all().iter().filter(|rt| rt.namespaced && !rt.is_view()).collect();
    types.sort_by_key(|rt| match rt.kind {
        "Deployment" => 0,
        "ReplicaSet" => 1,
        _ => 2,
    });
    types
}

pub fn start(ctx: Arc<Ctx>) -> impl Future<Output = ()> + Send + 'static {
    let nc = Arc::new(Nc { queue: WorkQueue::new(), ctx: ctx.clone(), seen_empty: Mutex::new(HashSet::new()) });
    {
        let q = nc.queue.clone();
        ctx.informers.namespaces.on_change(move |c| {
            if c.object().metadata.deletion_timestamp.is_some() {
                q.add(Key::of(&**c.object()));
            }
        });
    }
    async move {
        if !nc.ctx.wait_synced().await {
            return;
        }
        let this = nc.clone();
        run_workers("namespace", nc.queue.clone(), 2, nc.ctx.stop.clone(), move |key| {
            let this = this.clone();
            async move { this.reconcile(key).await }
        })
        .await;
    }
}

impl Nc {
    async fn reconcile(&self, key: Key) -> Result<Action, kube::Error> {
        let Some(ns) = self.ctx.informers.namespaces.store().get(&key.store_ref()) else {
            return Ok(Action::await_change());
        };
        let finalizers = ns.spec.as_ref().and_then(|s| s.finalizers.clone()).unwrap_or_default();
        if ns.metadata.deletion_timestamp.is_none() || !finalizers.iter().any(|f| f == FINALIZER) {
            return Ok(Action::await_change());
        }
        let name = ns.name_any();
        let mut remaining = 0usize;
        let mut with_finalizers = Vec::new();
        for rt in deletion_order() {
            let ar = api_resource(rt);
            let api: Api<DynamicObject> = Api::namespaced_with(self.ctx.client.clone(), &name, &ar);
            let list = api.list(&ListParams::default()).await?;
            if list.items.is_empty() {
                continue;
            }
            let dp = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
            for obj in &list.items {
                if obj.metadata.deletion_timestamp.is_none() {
                    match api.delete(&obj.name_any(), &dp).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                        Err(e) => return Err(e),
                    }
                }
                if obj.metadata.finalizers.as_ref().is_some_and(|f| !f.is_empty()) {
                    with_finalizers.extend(obj.metadata.finalizers.iter().flatten().cloned());
                }
            }
            // what is still there after the deletes (graceful pods, finalizers)
            remaining += api.list(&ListParams::default()).await?.items.len();
        }
        if remaining > 0 {
            // Kubernetes also reports NamespaceContentRemaining and
            // NamespaceFinalizersRemaining conditions here; writing a
            // Terminating namespace's status makes Skiff's API server delete
            // it at once (see the report of this change), so they are not
            // written yet.
            tracing::debug!(namespace = %name, remaining, finalizers = ?with_finalizers, "namespace not empty yet");
            self.seen_empty.lock().unwrap_or_else(|e| e.into_inner()).remove(&name);
            return Ok(Action::requeue(Duration::from_millis(500)));
        }
        if self.seen_empty.lock().unwrap_or_else(|e| e.into_inner()).insert(name.clone()) {
            return Ok(Action::requeue(Duration::from_millis(300)));
        }
        self.seen_empty.lock().unwrap_or_else(|e| e.into_inner()).remove(&name);
        let rest: Vec<String> = finalizers.into_iter().filter(|f| f != FINALIZER).collect();
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "resourceVersion": ns.resource_version()},
            "spec": {"finalizers": rest},
        });
        let api: Api<Namespace> = Api::all(self.ctx.client.clone());
        match api.replace_subresource("finalize", &name, &PostParams::default(), &body).await {
            Ok(_) => {
                tracing::info!(namespace = %name, "namespace emptied and finalized");
                Ok(Action::await_change())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(Action::await_change()),
            Err(e) => Err(e),
        }
    }
}
