//! The garbage collector: a graph of ownerReferences over every watched
//! type, kept from the informers, and three rules:
//!
//! - an object all of whose owners are gone is deleted (background
//!   propagation: owners go first, dependents after);
//! - an owner being deleted with the `foregroundDeletion` finalizer gets its
//!   dependents deleted (in the foreground too), and loses the finalizer
//!   once no dependent with `blockOwnerDeletion` is left;
//! - an owner being deleted with the `orphan` finalizer has its dependents'
//!   ownerReferences to it removed, then loses the finalizer.
//!
//! "Gone" is confirmed with a live GET before anything is deleted, since an
//! owner may simply not have reached this process's cache yet.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PropagationPolicy};
use kube::Resource;
use serde_json::json;

use crate::context::{api_resource, Ctx};
use crate::runtime::{run_workers, Action, Change, Informer, WorkQueue};

const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";

/// What the graph knows of one object.
#[derive(Debug, Clone)]
struct Vertex {
    ar: ApiResource,
    namespace: Option<String>,
    name: String,
    owners: Vec<OwnerReference>,
    finalizers: Vec<String>,
    deleting: bool,
    resource_version: Option<String>,
}

#[derive(Default)]
struct Graph {
    vertices: HashMap<String, Vertex>,
    /// owner uid → dependent uids
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    fn unlink(&mut self, uid: &str) {
        if let Some(v) = self.vertices.get(uid) {
            for o in &v.owners {
                if let Some(d) = self.dependents.get_mut(&o.uid) {
                    d.remove(uid);
                    if d.is_empty() {
                        self.dependents.remove(&o.uid);
                    }
                }
            }
        }
    }
}

struct Gc {
    ctx: Arc<Ctx>,
    queue: Arc<WorkQueue<String>>,
    graph: Mutex<Graph>,
}

fn interesting(meta: &ObjectMeta) -> bool {
    let fin = meta.finalizers.iter().flatten().any(|f| f == FOREGROUND || f == ORPHAN);
    meta.owner_references.as_ref().is_some_and(|o| !o.is_empty()) || (meta.deletion_timestamp.is_some() && fin)
}

impl Gc {
    fn lock(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn observe(&self, ar: &ApiResource, meta: &ObjectMeta, deleted: bool) {
        let Some(uid) = meta.uid.clone() else { return };
        let mut g = self.lock();
        g.unlink(&uid);
        let mut wake: Vec<String> = Vec::new();
        if deleted {
            let v = g.vertices.remove(&uid);
            // its dependents may be orphans now; its owners may be waiting for it
            wake.extend(g.dependents.get(&uid).into_iter().flatten().cloned());
            wake.extend(v.iter().flat_map(|v| v.owners.iter().map(|o| o.uid.clone())));
        } else {
            let owners = meta.owner_references.clone().unwrap_or_default();
            for o in &owners {
                g.dependents.entry(o.uid.clone()).or_default().insert(uid.clone());
            }
            wake.extend(owners.iter().map(|o| o.uid.clone()));
            let v = Vertex {
                ar: ar.clone(),
                namespace: meta.namespace.clone(),
                name: meta.name.clone().unwrap_or_default(),
                owners,
                finalizers: meta.finalizers.clone().unwrap_or_default(),
                deleting: meta.deletion_timestamp.is_some(),
                resource_version: meta.resource_version.clone(),
            };
            g.vertices.insert(uid.clone(), v);
            if interesting(meta) {
                wake.push(uid);
            }
        }
        drop(g);
        for w in wake {
            self.queue.add(w);
        }
    }

    fn watch<K>(self: &Arc<Self>, informer: &Informer<K>, ar: ApiResource)
    where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
        K::DynamicType: Clone + Eq + std::hash::Hash + Send + Sync,
    {
        let this = self.clone();
        informer.on_change(move |c: &Change<K>| match c {
            Change::Apply { new, .. } => this.observe(&ar, new.meta(), false),
            Change::Delete(o) => this.observe(&ar, o.meta(), true),
        });
    }

    fn api(&self, ar: &ApiResource, ns: Option<&str>) -> Api<DynamicObject> {
        match ns {
            Some(ns) => Api::namespaced_with(self.ctx.client.clone(), ns, ar),
            None => Api::all_with(self.ctx.client.clone(), ar),
        }
    }

    async fn reconcile(&self, uid: String) -> Result<Action, kube::Error> {
        let Some(v) = self.lock().vertices.get(&uid).cloned() else { return Ok(Action::await_change()) };
        if v.deleting && v.finalizers.iter().any(|f| f == ORPHAN) {
            return self.orphan_dependents(&uid, &v).await;
        }
        if v.deleting && v.finalizers.iter().any(|f| f == FOREGROUND) {
            return self.delete_dependents(&uid, &v).await;
        }
        if v.owners.is_empty() || v.deleting {
            return Ok(Action::await_change());
        }
        self.check_owners(&uid, &v).await
    }

    /// Classify the owners: alive, gone, or waiting for their dependents.
    async fn check_owners(&self, uid: &str, v: &Vertex) -> Result<Action, kube::Error> {
        let mut solid = 0;
        let mut dangling: Vec<String> = Vec::new();
        let mut waiting = 0;
        for o in &v.owners {
            let cached = self.lock().vertices.get(&o.uid).cloned();
            let state = match cached {
                Some(ov) => Some((ov.deleting, ov.finalizers.iter().any(|f| f == FOREGROUND))),
                None => self.live_owner(o, v.namespace.as_deref()).await?,
            };
            match state {
                None => dangling.push(o.uid.clone()),
                Some((true, true)) => waiting += 1,
                Some(_) => solid += 1,
            }
        }
        let api = self.api(&v.ar, v.namespace.as_deref());
        if solid > 0 {
            if dangling.is_empty() {
                return Ok(Action::await_change());
            }
            // keep the living owners, drop the dead ones
            let keep: Vec<&OwnerReference> = v.owners.iter().filter(|o| !dangling.contains(&o.uid)).collect();
            let patch = json!({"metadata": {"ownerReferences": keep, "resourceVersion": v.resource_version}});
            return match api.patch(&v.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => Ok(Action::await_change()),
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(Action::await_change()),
                Err(e) => Err(e),
            };
        }
        let policy = if waiting > 0 { PropagationPolicy::Foreground } else { PropagationPolicy::Background };
        let dp = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(kube::api::Preconditions { uid: Some(uid.to_string()), resource_version: None }),
            ..Default::default()
        };
        match api.delete(&v.name, &dp).await {
            Ok(_) => {
                tracing::debug!(object = %format!("{}/{}", v.ar.plural, v.name), "deleted: its owners are gone");
                Ok(Action::await_change())
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(Action::await_change()),
            Err(e) => Err(e),
        }
    }

    /// Ask the API server about an owner missing from the cache:
    /// None = gone, Some((deleting, foreground)) otherwise.
    async fn live_owner(&self, o: &OwnerReference, ns: Option<&str>) -> Result<Option<(bool, bool)>, kube::Error> {
        let Some(rt) = skiff_api::catalogue::find_kind(&o.api_version, &o.kind) else {
            // a kind this server does not serve cannot be an owner that exists
            return Ok(None);
        };
        let ar = api_resource(rt);
        let api = self.api(&ar, if rt.namespaced { ns } else { None });
        match api.get_opt(&o.name).await? {
            Some(obj) if obj.metadata.uid.as_deref() == Some(&o.uid) => {
                let fg = obj.metadata.finalizers.iter().flatten().any(|f| f == FOREGROUND);
                Ok(Some((obj.metadata.deletion_timestamp.is_some(), fg)))
            }
            _ => Ok(None),
        }
    }

    fn dependents_of(&self, uid: &str) -> Vec<(String, Vertex)> {
        let g = self.lock();
        g.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| g.vertices.get(d).map(|v| (d.clone(), v.clone())))
            .collect()
    }

    async fn orphan_dependents(&self, uid: &str, v: &Vertex) -> Result<Action, kube::Error> {
        for (_, dep) in self.dependents_of(uid) {
            let keep: Vec<&OwnerReference> = dep.owners.iter().filter(|o| o.uid != uid).collect();
            let patch = json!({"metadata": {
                "ownerReferences": if keep.is_empty() { serde_json::Value::Null } else { json!(keep) },
                "resourceVersion": dep.resource_version,
            }});
            match self
                .api(&dep.ar, dep.namespace.as_deref())
                .patch(&dep.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        self.remove_finalizer(v, ORPHAN).await
    }

    async fn delete_dependents(&self, uid: &str, v: &Vertex) -> Result<Action, kube::Error> {
        let mut blocking = 0;
        for (dep_uid, dep) in self.dependents_of(uid) {
            let blocks = dep.owners.iter().any(|o| o.uid == uid && o.block_owner_deletion == Some(true));
            if blocks {
                blocking += 1;
            }
            if dep.deleting {
                continue;
            }
            let dp = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Foreground),
                preconditions: Some(kube::api::Preconditions { uid: Some(dep_uid), resource_version: None }),
                ..Default::default()
            };
            match self.api(&dep.ar, dep.namespace.as_deref()).delete(&dep.name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        if blocking > 0 {
            // the dependents' deletions bring us back
            return Ok(Action::await_change());
        }
        self.remove_finalizer(v, FOREGROUND).await
    }

    async fn remove_finalizer(&self, v: &Vertex, finalizer: &str) -> Result<Action, kube::Error> {
        let rest: Vec<&String> = v.finalizers.iter().filter(|f| *f != finalizer).collect();
        let patch = json!({"metadata": {
            "finalizers": if rest.is_empty() { serde_json::Value::Null } else { json!(rest) },
            "resourceVersion": v.resource_version,
        }});
        match self
            .api(&v.ar, v.namespace.as_deref())
            .patch(&v.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(Action::await_change()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(Action::await_change()),
            Err(e) => Err(e),
        }
    }
}

pub fn start(ctx: Arc<Ctx>) -> impl Future<Output = ()> + Send + 'static {
    let gc = Arc::new(Gc { queue: WorkQueue::new(), graph: Mutex::new(Graph::default()), ctx: ctx.clone() });
    let inf = &ctx.informers;
    gc.watch(&inf.pods, ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&()));
    gc.watch(&inf.nodes, ApiResource::erase::<k8s_openapi::api::core::v1::Node>(&()));
    gc.watch(&inf.replicasets, ApiResource::erase::<k8s_openapi::api::apps::v1::ReplicaSet>(&()));
    gc.watch(&inf.deployments, ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&()));
    gc.watch(&inf.services, ApiResource::erase::<k8s_openapi::api::core::v1::Service>(&()));
    gc.watch(&inf.endpoints, ApiResource::erase::<k8s_openapi::api::core::v1::Endpoints>(&()));
    gc.watch(&inf.slices, ApiResource::erase::<k8s_openapi::api::discovery::v1::EndpointSlice>(&()));
    gc.watch(&inf.leases, ApiResource::erase::<k8s_openapi::api::coordination::v1::Lease>(&()));
    gc.watch(&inf.namespaces, ApiResource::erase::<k8s_openapi::api::core::v1::Namespace>(&()));
    for (ar, informer) in &inf.others {
        gc.watch(informer, ar.clone());
    }
    async move {
        if !gc.ctx.wait_synced().await {
            return;
        }
        let this = gc.clone();
        run_workers("garbagecollector", gc.queue.clone(), 4, gc.ctx.stop.clone(), move |uid| {
            let this = this.clone();
            async move { this.reconcile(uid).await }
        })
        .await;
    }
}
