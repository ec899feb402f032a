//! What the loops share while this process leads: the client, the
//! informers (one per resource type), the event recorder and the options.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::Resource;
use tokio_util::sync::CancellationToken;

use crate::events::Recorder;
use crate::runtime::Informer;
use crate::ControllerOptions;

/// A namespaced (or cluster-scoped, `ns: None`) object's name: a queue key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub ns: Option<String>,
    pub name: String,
}

impl Key {
    pub fn new(ns: Option<&str>, name: &str) -> Key {
        Key { ns: ns.map(str::to_string), name: name.to_string() }
    }

    pub fn of<K: Resource>(obj: &K) -> Key {
        Key { ns: obj.meta().namespace.clone(), name: obj.meta().name.clone().unwrap_or_default() }
    }

    pub fn ns(&self) -> &str {
        self.ns.as_deref().unwrap_or("")
    }

    pub fn store_ref<K: Resource<DynamicType = ()>>(&self) -> kube::runtime::reflector::ObjectRef<K> {
        let r = kube::runtime::reflector::ObjectRef::new(&self.name);
        match &self.ns {
            Some(ns) => r.within(ns),
            None => r,
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.ns {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// One informer per resource type the loops read.
pub struct Informers {
    pub pods: Arc<Informer<Pod>>,
    pub nodes: Arc<Informer<Node>>,
    pub replicasets: Arc<Informer<ReplicaSet>>,
    pub deployments: Arc<Informer<Deployment>>,
    pub services: Arc<Informer<Service>>,
    pub endpoints: Arc<Informer<Endpoints>>,
    pub slices: Arc<Informer<EndpointSlice>>,
    pub leases: Arc<Informer<Lease>>,
    pub namespaces: Arc<Informer<Namespace>>,
    /// Every other served type, for the garbage collector.
    pub others: Vec<(ApiResource, Arc<Informer<DynamicObject>>)>,
}

/// Kinds with a typed informer above (the garbage collector watches the
/// rest dynamically). Events are left out on purpose: they churn, and
/// nothing owns them.
pub const TYPED_KINDS: &[&str] = &[
    "Pod",
    "Node",
    "ReplicaSet",
    "Deployment",
    "Service",
    "Endpoints",
    "EndpointSlice",
    "Lease",
    "Namespace",
    "Event",
];

impl Informers {
    fn new(client: &kube::Client, with_others: bool) -> Informers {
        let others = if with_others {
            skiff_api::catalogue::all()
                .iter()
                .filter(|rt| !TYPED_KINDS.contains(&rt.kind))
                .map(|rt| {
                    let ar = api_resource(rt);
                    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
                    (ar.clone(), Informer::new_with(api, ar, None))
                })
                .collect()
        } else {
            Vec::new()
        };
        Informers {
            pods: Informer::new(Api::all(client.clone())),
            nodes: Informer::new(Api::all(client.clone())),
            replicasets: Informer::new(Api::all(client.clone())),
            deployments: Informer::new(Api::all(client.clone())),
            services: Informer::new(Api::all(client.clone())),
            endpoints: Informer::new(Api::all(client.clone())),
            slices: Informer::new(Api::all(client.clone())),
            leases: Informer::new(Api::all(client.clone())),
            namespaces: Informer::new(Api::all(client.clone())),
            others,
        }
    }

    fn run_all(&self, stop: &CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = vec![
            tokio::spawn(self.pods.clone().run(stop.clone())),
            tokio::spawn(self.nodes.clone().run(stop.clone())),
            tokio::spawn(self.replicasets.clone().run(stop.clone())),
            tokio::spawn(self.deployments.clone().run(stop.clone())),
            tokio::spawn(self.services.clone().run(stop.clone())),
            tokio::spawn(self.endpoints.clone().run(stop.clone())),
            tokio::spawn(self.slices.clone().run(stop.clone())),
            tokio::spawn(self.leases.clone().run(stop.clone())),
            tokio::spawn(self.namespaces.clone().run(stop.clone())),
        ];
        for (_, inf) in &self.others {
            tasks.push(tokio::spawn(inf.clone().run(stop.clone())));
        }
        tasks
    }

    /// Wait for every first list.
    pub async fn synced(&self) {
        self.pods.synced().await;
        self.nodes.synced().await;
        self.replicasets.synced().await;
        self.deployments.synced().await;
        self.services.synced().await;
        self.endpoints.synced().await;
        self.slices.synced().await;
        self.leases.synced().await;
        self.namespaces.synced().await;
        for (_, inf) in &self.others {
            inf.synced().await;
        }
    }
}

/// The kube-rs ApiResource of a served type.
pub fn api_resource(rt: &skiff_api::ResourceType) -> ApiResource {
    ApiResource {
        group: rt.group.to_string(),
        version: rt.version.to_string(),
        api_version: rt.api_version(),
        kind: rt.kind.to_string(),
        plural: rt.plural.to_string(),
    }
}

pub struct Ctx {
    pub client: kube::Client,
    pub opts: ControllerOptions,
    pub informers: Informers,
    pub recorder: Recorder,
    pub stop: CancellationToken,
}

impl Ctx {
    /// Wait for the informers' first lists (false: stopped first).
    pub async fn wait_synced(&self) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = self.informers.synced() => true,
        }
    }
}

/// Everything that runs while this process leads, until `stop` fires.
pub async fn run_loops(client: kube::Client, opts: ControllerOptions, identity: String, stop: CancellationToken) {
    let informers = Informers::new(&client, opts.enabled("garbagecollector"));
    let (recorder, events) = Recorder::new(client.clone(), identity, stop.clone());
    let events = tokio::spawn(events);
    let ctx = Arc::new(Ctx { client, opts: opts.clone(), informers, recorder, stop: stop.clone() });
    // register every handler before the informers start
    let mut loops: Vec<BoxFuture<'static, ()>> = Vec::new();
    if opts.enabled("scheduler") {
        loops.push(crate::scheduler::start(ctx.clone()).boxed());
    }
    if opts.enabled("replicaset") {
        loops.push(crate::replicaset::start(ctx.clone()).boxed());
    }
    if opts.enabled("deployment") {
        loops.push(crate::deployment::start(ctx.clone()).boxed());
    }
    if opts.enabled("endpoints") {
        loops.push(crate::endpoints::start(ctx.clone()).boxed());
    }
    if opts.enabled("endpointslice") {
        loops.push(crate::endpointslice::start(ctx.clone()).boxed());
    }
    if opts.enabled("nodelifecycle") {
        loops.push(crate::nodelifecycle::start(ctx.clone()).boxed());
    }
    if opts.enabled("garbagecollector") {
        loops.push(crate::gc::start(ctx.clone()).boxed());
    }
    if opts.enabled("namespace") {
        loops.push(crate::namespace::start(ctx.clone()).boxed());
    }
    if opts.enabled("servicelb") {
        loops.push(crate::servicelb::start(ctx.clone(), opts.service_lb_pool).boxed());
    }
    if opts.enabled("serviceaccount") {
        loops.push(crate::serviceaccount::start_service_accounts(ctx.clone()).boxed());
    }
    if let Some(ca) = opts.root_ca_pem.clone().filter(|_| opts.enabled("root-ca-cert-publisher")) {
        loops.push(crate::serviceaccount::start_root_ca_publisher(ctx.clone(), ca).boxed());
    }
    if opts.enabled("nodeipam") {
        loops.push(
            crate::nodeipam::start(ctx.clone(), opts.cluster_cidr, opts.node_cidr_mask, opts.node_cidr_mask_v6).boxed(),
        );
    }
    let informer_tasks = ctx.informers.run_all(&stop);
    tracing::info!(loops = loops.len(), "control loops starting");
    let handles: Vec<_> = loops.into_iter().map(tokio::spawn).collect();
    stop.cancelled().await;
    for h in handles {
        let _ = h.await;
    }
    for t in informer_tasks {
        let _ = t.await;
    }
    let _ = events.await;
    tracing::info!("control loops stopped");
}
