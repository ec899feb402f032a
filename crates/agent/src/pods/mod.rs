//! Pods on this node: a watch on the pods bound to the node feeds one worker
//! per pod (`sync`), each converging its pod level-triggered: read the pod,
//! read the runtime, act, write the status. A periodic garbage collection
//! removes what belongs to no pod.
//!
//! Module map: `sync` (one pod's worker), `status` (pure status
//! computation), `volumes`, `token` (service account tokens for projected
//! volumes), `env` (argv and environment), `dns`
//! (resolv.conf, hosts, hostname), `probes`, `backoff`, `resources`
//! (quantities, cgroups, QoS), `gc` (restart adoption and garbage collection).

pub mod backoff;
pub mod cgroups;
pub mod dns;
pub mod env;
pub mod gc;
pub mod probes;
pub mod resources;
pub mod status;
pub mod sync;
#[cfg(test)]
pub(crate) mod tests;
pub mod token;
pub mod volumes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodStatus, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use skiff_net::PodNetwork;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::AgentConfig;
use crate::events::Recorder;
use crate::runtime::{ImageInfo, Runtime};
use dns::DnsSettings;
use env::Objects;
use resources::Amount;

/// The writes a pod worker makes to the API server.
#[async_trait::async_trait]
pub trait PodApi: Send + Sync {
    async fn patch_status(&self, pod: &Pod, status: &PodStatus) -> Result<(), String>;
    /// Delete the pod for good (grace period 0, on its uid).
    async fn delete(&self, pod: &Pod) -> Result<(), String>;
}

/// [`Objects`] and [`PodApi`] over the API server.
#[derive(Clone)]
pub struct KubeApi {
    pub client: kube::Client,
    pub tokens: Arc<token::TokenCache>,
}

impl KubeApi {
    pub fn new(client: kube::Client) -> Self {
        KubeApi { client, tokens: Arc::default() }
    }
}

fn ns_name(pod: &Pod) -> (String, String) {
    (pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()), pod.metadata.name.clone().unwrap_or_default())
}

#[async_trait::async_trait]
impl Objects for KubeApi {
    async fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>, String> {
        Api::<ConfigMap>::namespaced(self.client.clone(), namespace).get_opt(name).await.map_err(|e| e.to_string())
    }
    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, String> {
        Api::<Secret>::namespaced(self.client.clone(), namespace).get_opt(name).await.map_err(|e| e.to_string())
    }
    async fn services(&self, namespace: &str) -> Result<Vec<Service>, String> {
        Api::<Service>::namespaced(self.client.clone(), namespace)
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .map_err(|e| e.to_string())
    }
    async fn service_account_token(&self, key: &token::TokenKey) -> Result<String, String> {
        self.tokens.get(key, chrono::Utc::now(), || token::request(&self.client, key)).await
    }
}

#[async_trait::async_trait]
impl PodApi for KubeApi {
    async fn patch_status(&self, pod: &Pod, status: &PodStatus) -> Result<(), String> {
        let (ns, name) = ns_name(pod);
        let patch = serde_json::json!({"status": status});
        Api::<Pod>::namespaced(self.client.clone(), &ns)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    async fn delete(&self, pod: &Pod) -> Result<(), String> {
        let (ns, name) = ns_name(pod);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }),
            ..Default::default()
        };
        match Api::<Pod>::namespaced(self.client.clone(), &ns).delete(&name, &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// What every pod worker shares.
pub struct Ctx {
    pub config: AgentConfig,
    pub runtime: Arc<dyn Runtime>,
    pub network: Arc<dyn PodNetwork>,
    pub objects: Arc<dyn Objects>,
    pub api: Arc<dyn PodApi>,
    pub recorder: Recorder,
    /// The node's resolv.conf.
    pub host_dns: DnsSettings,
    /// The node's /etc/hosts (hostNetwork pods).
    pub node_hosts: String,
    pub node_allocatable: BTreeMap<String, Amount>,
    /// Image details by reference (for imageID).
    pub images: Mutex<HashMap<String, ImageInfo>>,
}

impl Ctx {
    pub fn new(
        config: AgentConfig,
        runtime: Arc<dyn Runtime>,
        network: Arc<dyn PodNetwork>,
        objects: Arc<dyn Objects>,
        api: Arc<dyn PodApi>,
        recorder: Recorder,
    ) -> Ctx {
        let host_dns = dns::parse_resolv_conf(&std::fs::read_to_string(&config.resolv_conf).unwrap_or_default());
        let node_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        let mut node_allocatable = BTreeMap::new();
        let machine = crate::node::Machine::measure(&config.data_dir);
        for (k, v) in crate::node::capacity(&config, &machine) {
            if let Some(a) = resources::amount(&v) {
                node_allocatable.insert(k, a);
            }
        }
        Ctx {
            config,
            runtime,
            network,
            objects,
            api,
            recorder,
            host_dns,
            node_hosts,
            node_allocatable,
            images: Mutex::new(HashMap::new()),
        }
    }
}

struct WorkerHandle {
    tx: watch::Sender<Option<Pod>>,
}

/// Watch the node's pods and run one worker per pod until `stop`. Workers
/// stop without touching containers, so a restarted agent adopts them.
pub async fn run(ctx: Arc<Ctx>, client: kube::Client, stop: CancellationToken) {
    let api: Api<Pod> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.config.node_name));
    let mut stream = watcher(api, cfg).default_backoff().boxed();
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut relist: Option<HashSet<String>> = None;
    let mut listed = false;
    let mut gc_tick = tokio::time::interval(Duration::from_secs(60));
    gc_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let dispatch = |pod: Pod, workers: &mut HashMap<String, WorkerHandle>, tasks: &mut tokio::task::JoinSet<()>| {
        let Some(uid) = pod.metadata.uid.clone() else { return };
        if let Some(w) = workers.get(&uid) {
            let _ = w.tx.send(Some(pod));
            return;
        }
        let (ns, name) = ns_name(&pod);
        let (tx, rx) = watch::channel(Some(pod));
        let span = tracing::info_span!("pod", namespace = %ns, name = %name);
        tasks.spawn(worker_loop(ctx.clone(), uid.clone(), rx, stop.clone(), done_tx.clone()).instrument(span));
        workers.insert(uid, WorkerHandle { tx });
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(uid) = done_rx.recv() => { workers.remove(&uid); }
            _ = gc_tick.tick(), if listed => {
                let active: HashSet<String> = workers.keys().cloned().collect();
                gc::collect(&ctx, &active).await;
            }
            ev = stream.next() => match ev {
                Some(Ok(watcher::Event::Init)) => relist = Some(HashSet::new()),
                Some(Ok(watcher::Event::InitApply(p))) => {
                    if let (Some(set), Some(uid)) = (relist.as_mut(), p.metadata.uid.clone()) {
                        set.insert(uid);
                    }
                    dispatch(p, &mut workers, &mut tasks);
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    let seen = relist.take().unwrap_or_default();
                    for (uid, w) in &workers {
                        if !seen.contains(uid) {
                            let _ = w.tx.send(None);
                        }
                    }
                    if !listed {
                        listed = true;
                        let active: HashSet<String> = workers.keys().cloned().collect();
                        gc::collect(&ctx, &active).await;
                    }
                }
                Some(Ok(watcher::Event::Apply(p))) => dispatch(p, &mut workers, &mut tasks),
                Some(Ok(watcher::Event::Delete(p))) => {
                    if let Some(w) = p.metadata.uid.as_ref().and_then(|u| workers.get(u)) {
                        let _ = w.tx.send(None);
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "watching pods failed; retrying"),
                None => break,
            }
        }
    }
    // the workers see `stop` too; give them a moment to finish what they are writing
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
}

async fn worker_loop(
    ctx: Arc<Ctx>,
    uid: String,
    mut rx: watch::Receiver<Option<Pod>>,
    stop: CancellationToken,
    done: mpsc::UnboundedSender<String>,
) {
    let mut w = sync::PodWorker::new(ctx, uid.clone());
    let notify = w.notify.clone();
    let mut last: Option<Pod> = None;
    let mut finished = false;
    loop {
        let current = rx.borrow_and_update().clone();
        let next = match current {
            None => {
                if !finished {
                    w.cleanup(last.as_ref()).await;
                }
                break;
            }
            Some(_) if finished => Duration::from_secs(3600),
            Some(pod) => {
                let next = w.sync(&pod).await;
                last = Some(pod);
                match next {
                    Some(n) => n,
                    None => {
                        finished = true;
                        Duration::from_secs(3600)
                    }
                }
            }
        };
        tokio::select! {
            _ = stop.cancelled() => { w.stop(); return; }
            r = rx.changed() => if r.is_err() { w.stop(); return; },
            _ = notify.notified() => {}
            _ = tokio::time::sleep(next) => {}
        }
    }
    w.stop();
    let _ = done.send(uid);
}
