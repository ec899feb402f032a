//! A node simulator, for tests and benchmarks only (feature `simulator`):
//! it registers fake Nodes with capacity and a Lease it renews, plays the
//! kubelet for pods bound to them (Running and Ready after a delay, a pod IP
//! from the node's own range, containerStatuses, startTime), finishes the
//! graceful deletion of their pods, and can let a node "die" (stop renewing
//! its Lease and stop answering for its pods).
//!
//! Nothing here runs containers; the IP addresses it hands out are data in
//! objects, never a destination of any traffic.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::pod;
use crate::time::{now, now_time};

/// What the simulated nodes look like and how fast their "kubelets" are.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub nodes: usize,
    /// Nodes are `<prefix>-0`, `<prefix>-1`, ...
    pub prefix: String,
    pub cpu: String,
    pub memory: String,
    pub max_pods: u32,
    /// How often each node renews its Lease.
    pub lease_renew: Duration,
    /// From binding to Running and Ready.
    pub ready_after: Duration,
    /// From deletionTimestamp to gone (capped by the pod's grace period).
    pub delete_after: Duration,
    /// Pods go Running but never Ready (a readiness probe that never passes).
    pub never_ready: bool,
    /// Play kubelet at all (false: pods stay Pending where they are bound).
    pub run_pods: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 3,
            prefix: "sim".into(),
            cpu: "4".into(),
            memory: "8Gi".into(),
            max_pods: 110,
            lease_renew: Duration::from_secs(2),
            ready_after: Duration::from_millis(200),
            delete_after: Duration::from_millis(100),
            never_ready: false,
            run_pods: true,
        }
    }
}

struct State {
    cfg: SimConfig,
    /// node name → index (for its address range)
    nodes: HashMap<String, usize>,
    /// nodes that answer (renew leases, run pods)
    alive: Mutex<HashSet<String>>,
    /// pods already being started or deleted, by uid
    handled: Mutex<HashSet<String>>,
    next_ip: Mutex<HashMap<String, u32>>,
    never_ready: Mutex<bool>,
}

/// A running simulator; `shutdown` stops it (dropping it stops it too).
pub struct Simulator {
    state: Arc<State>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn node_name(cfg: &SimConfig, i: usize) -> String {
    format!("{}-{i}", cfg.prefix)
}

fn node_ip(i: usize) -> String {
    format!("10.255.{}.{}", (i / 250) % 256, i % 250 + 1)
}

impl Simulator {
    /// Register the nodes and their Leases, and start playing kubelet.
    pub async fn start(client: kube::Client, cfg: SimConfig) -> Result<Simulator, kube::Error> {
        let nodes: HashMap<String, usize> = (0..cfg.nodes).map(|i| (node_name(&cfg, i), i)).collect();
        let state = Arc::new(State {
            alive: Mutex::new(nodes.keys().cloned().collect()),
            nodes,
            handled: Mutex::new(HashSet::new()),
            next_ip: Mutex::new(HashMap::new()),
            never_ready: Mutex::new(cfg.never_ready),
            cfg,
        });
        let names: Vec<(String, usize)> = state.nodes.iter().map(|(n, i)| (n.clone(), *i)).collect();
        futures::stream::iter(names)
            .map(|(name, i)| register(client.clone(), state.clone(), name, i))
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<()>, kube::Error>>()?;
        let stop = CancellationToken::new();
        let tasks = vec![
            tokio::spawn(renew_loop(client.clone(), state.clone(), stop.clone())),
            tokio::spawn(pod_loop(client, state.clone(), stop.clone())),
        ];
        Ok(Simulator { state, stop, tasks })
    }

    pub fn node_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.state.nodes.keys().cloned().collect();
        v.sort_by_key(|n| self.state.nodes.get(n).copied().unwrap_or(0));
        v
    }

    /// The node dies: no more Lease renewals, its pods are left as they are.
    pub fn stop_node(&self, name: &str) {
        self.state.alive.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
    }

    /// Whether new pods become Ready (false: Running, never Ready).
    pub fn set_never_ready(&self, never: bool) {
        *self.state.never_ready.lock().unwrap_or_else(|e| e.into_inner()) = never;
    }

    pub async fn shutdown(mut self) {
        self.stop.cancel();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

async fn register(client: kube::Client, state: Arc<State>, name: String, i: usize) -> Result<(), kube::Error> {
    let cfg = &state.cfg;
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "skiff.dev/simulated": "true",
            },
        },
        "spec": {"podCIDR": format!("10.244.{}.0/24", i % 256), "podCIDRs": [format!("10.244.{}.0/24", i % 256)]},
    }))
    .unwrap_or_default();
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e),
    }
    let resources = json!({"cpu": cfg.cpu, "memory": cfg.memory, "pods": cfg.max_pods.to_string()});
    let t = now_time();
    let status = json!({"status": {
        "capacity": resources,
        "allocatable": resources,
        "conditions": node_conditions(&t),
        "addresses": [{"type": "InternalIP", "address": node_ip(i)}, {"type": "Hostname", "address": name}],
        "nodeInfo": {
            "machineID": format!("sim{i:029}"), "systemUUID": format!("sim-{i}"), "bootID": format!("sim-{i}"),
            "kernelVersion": "6.0.0-sim", "osImage": "Skiff simulated node", "containerRuntimeVersion": "sim://0",
            "kubeletVersion": "v1.33.0-sim", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
        },
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
    }});
    nodes.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await?;
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let lease: Lease = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": micro_now()},
    }))
    .unwrap_or_default();
    match leases.create(&PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            renew(&leases, &name).await;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn node_conditions(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> serde_json::Value {
    let c = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": t, "lastTransitionTime": t})
    };
    json!([
        c("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        c("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        c("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        c("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ])
}

fn micro_now() -> String {
    now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

async fn renew(leases: &Api<Lease>, name: &str) {
    let patch = json!({"spec": {"renewTime": micro_now(), "holderIdentity": name}});
    if let Err(e) = leases.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        tracing::debug!(node = name, error = %e, "sim: renewing the lease failed");
    }
}

async fn renew_loop(client: kube::Client, state: Arc<State>, stop: CancellationToken) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let nodes: Api<Node> = Api::all(client);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(state.cfg.lease_renew) => {}
        }
        let alive: Vec<String> = state.alive.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
        futures::stream::iter(alive)
            .for_each_concurrent(16, |name| {
                let leases = leases.clone();
                let nodes = nodes.clone();
                async move {
                    renew(&leases, &name).await;
                    // a live kubelet puts Ready back if someone said otherwise
                    if let Ok(n) = nodes.get(&name).await {
                        let ready = n
                            .status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                            .is_some_and(|c| c.status == "True");
                        if !ready {
                            let patch = json!({"status": {"conditions": node_conditions(&now_time())}});
                            let _ = nodes.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await;
                        }
                    }
                }
            })
            .await;
    }
}

async fn pod_loop(client: kube::Client, state: Arc<State>, stop: CancellationToken) {
    let api: Api<Pod> = Api::all(client.clone());
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return,
            e = stream.next() => e,
        };
        let pods = match ev {
            None => return,
            Some(Err(_)) => continue,
            Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => vec![p],
            Some(Ok(watcher::Event::Delete(p))) => {
                let uid = p.uid().unwrap_or_default();
                let mut handled = state.handled.lock().unwrap_or_else(|e| e.into_inner());
                handled.remove(&format!("{uid}/start"));
                handled.remove(&format!("{uid}/delete"));
                continue;
            }
            Some(Ok(_)) => continue,
        };
        for p in pods {
            handle_pod(&client, &state, p, &stop);
        }
    }
}

fn use_once(state: &State, key: String) -> bool {
    state.handled.lock().unwrap_or_else(|e| e.into_inner()).insert(key)
}

fn handle_pod(client: &kube::Client, state: &Arc<State>, p: Pod, stop: &CancellationToken) {
    let node = pod::node_name(&p).to_string();
    if node.is_empty() || !state.alive.lock().unwrap_or_else(|e| e.into_inner()).contains(&node) {
        return;
    }
    let uid = p.uid().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &p.namespace().unwrap_or_default());
    if pod::is_terminating(&p) {
        if !use_once(state, format!("{uid}/delete")) {
            return;
        }
        let grace = Duration::from_secs(p.metadata.deletion_grace_period_seconds.unwrap_or(0).max(0) as u64);
        let delay = state.cfg.delete_after.min(grace);
        let stop = stop.clone();
        let state = state.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            if !state.alive.lock().unwrap_or_else(|e| e.into_inner()).contains(&node) {
                return;
            }
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions { uid: Some(uid), resource_version: None }),
                ..Default::default()
            };
            let _ = api.delete(&p.name_any(), &dp).await;
        });
        return;
    }
    if !state.cfg.run_pods
        || pod::is_terminal(&p)
        || pod::pod_ip(&p).is_some()
        || !use_once(state, format!("{uid}/start"))
    {
        return;
    }
    let ip = {
        let idx = state.nodes.get(&node).copied().unwrap_or(0);
        let mut next = state.next_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = next.entry(node.clone()).or_insert(1);
        *n += 1;
        format!("10.244.{}.{}", idx % 256, (*n % 254) + 1)
    };
    let host_ip = node_ip(state.nodes.get(&node).copied().unwrap_or(0));
    let never_ready = *state.never_ready.lock().unwrap_or_else(|e| e.into_inner());
    let delay = state.cfg.ready_after;
    let stop = stop.clone();
    let state = state.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        if !state.alive.lock().unwrap_or_else(|e| e.into_inner()).contains(&node) {
            return;
        }
        let patch = running_status(&p, &ip, &host_ip, !never_ready);
        if let Err(e) = api.patch_status(&p.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            tracing::debug!(pod = %p.name_any(), error = %e, "sim: starting the pod failed");
        }
    });
}

/// The status a kubelet reports for a started pod.
fn running_status(p: &Pod, ip: &str, host_ip: &str, ready: bool) -> serde_json::Value {
    let t = now_time();
    let flag = if ready { "True" } else { "False" };
    let cond = |kind: &str, status: &str| json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": t});
    let mut conditions = vec![
        cond("PodReadyToStartContainers", "True"),
        cond("Initialized", "True"),
        cond("Ready", flag),
        cond("ContainersReady", flag),
        cond("PodScheduled", "True"),
    ];
    if !ready {
        for c in conditions.iter_mut().filter(|c| c["status"] == "False") {
            c["reason"] = json!("ContainersNotReady");
        }
    }
    let statuses: Vec<serde_json::Value> = p
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "image": c.image.clone().unwrap_or_default(),
                "imageID": format!("sim://{}", c.image.clone().unwrap_or_default()),
                "containerID": format!("sim://{}-{}", p.uid().unwrap_or_default(), c.name),
                "ready": ready,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": t}},
            })
        })
        .collect();
    json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": t,
        "conditions": conditions,
        "containerStatuses": statuses,
    }})
}
