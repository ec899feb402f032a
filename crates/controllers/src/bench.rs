//! Benchmarks of the loops against a running API server (feature
//! `simulator`): each takes a client of an otherwise idle server, works in
//! its own namespace, runs the loops it measures and the node simulator,
//! and stops them before returning.
//!
//! - [`bench_scheduler`]: pods/s binding N pending pods onto M simulated nodes;
//! - [`bench_deployment`]: from creating an N-replica Deployment to N ready pods;
//! - [`bench_endpoints`]: from a pod's Ready change (the status write) to the
//!   EndpointSlice showing it, p50 and p99 over N changes.
//!
//! Each has a baseline measuring the same thing without the loops, for the
//! runner to print beside it (run on its own server, in the same process):
//!
//! - [`bench_scheduler_baseline`]: the client binds the same pods itself
//!   through `pods/{name}/binding` (no scheduling decisions);
//! - [`bench_deployment_baseline`]: the client creates the same pods already
//!   bound (`spec.nodeName`) and waits until all are ready;
//! - [`bench_endpoints_baseline`]: the same status write, seen by a plain
//!   watch on pods (the API's own watch latency).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::ResourceExt;
use serde_json::json;
use tokio::sync::watch;

use crate::sim::{SimConfig, Simulator};
use crate::{ControllerOptions, CONTROLLERS};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bench: {0}")]
    Kube(#[from] kube::Error),
    #[error("bench: {0}")]
    Timeout(String),
}

#[derive(Debug, Clone)]
pub struct SchedulerFigures {
    pub pods: usize,
    pub nodes: usize,
    pub elapsed: Duration,
    pub pods_per_second: f64,
}

#[derive(Debug, Clone)]
pub struct DeploymentFigures {
    pub replicas: usize,
    pub to_ready: Duration,
}

#[derive(Debug, Clone)]
pub struct EndpointFigures {
    pub changes: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// The loops running for one measurement.
struct Loops {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Loops {
    fn start(client: &kube::Client, only: &[&str]) -> Loops {
        let opts = ControllerOptions {
            identity: Some(format!("bench-{}", uuid::Uuid::new_v4().simple())),
            disabled: CONTROLLERS.iter().filter(|c| !only.contains(c)).map(|c| c.to_string()).collect(),
            lease_duration: Duration::from_secs(3),
            retry_period: Duration::from_millis(200),
            ..Default::default()
        };
        let (stop, rx) = watch::channel(false);
        let client = client.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = crate::run(client, opts, rx).await {
                tracing::warn!(error = %e, "bench: controllers ended with an error");
            }
        });
        Loops { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn namespace(client: &kube::Client, name: &str) -> Result<(), kube::Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap_or_default();
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

fn bench_pod(name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1",
                 "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
    }))
    .unwrap_or_default()
}

/// The scheduler's bindings in flight at once (`scheduler::BIND_CONCURRENCY`),
/// which the baseline uses too.
pub const BIND_CONCURRENCY: usize = 64;

type PodEvents = futures::stream::BoxStream<'static, Result<WatchEvent<Pod>, kube::Error>>;

/// The scheduler benchmark's setup: `nodes` simulated nodes (not running
/// pods) and `pods` pending pods, with a watch on them opened after.
async fn scheduler_setup(
    client: &kube::Client,
    ns: &str,
    pods: usize,
    nodes: usize,
) -> Result<(Simulator, Api<Pod>, Vec<Pod>, PodEvents), BenchError> {
    namespace(client, ns).await?;
    let sim = Simulator::start(
        client.clone(),
        SimConfig {
            nodes,
            prefix: "bench-sched".into(),
            run_pods: false,
            lease_renew: Duration::from_secs(10),
            ..Default::default()
        },
    )
    .await?;
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let created =
        futures::stream::iter(0..pods)
            .map(|i| {
                let api = api.clone();
                async move {
                    api.create(&PostParams::default(), &bench_pod(&format!("p-{i}"), json!({"app": "sched"}))).await
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
    let rv = api.list(&ListParams::default().limit(1)).await?.metadata.resource_version.unwrap_or_default();
    let stream = api.watch(&WatchParams::default(), &rv).await?.boxed();
    Ok((sim, api, created, stream))
}

/// Read `stream` until it has shown `pods` distinct pods bound, or 120 s.
async fn wait_bound(stream: &mut PodEvents, pods: usize) -> Result<usize, BenchError> {
    let mut bound: HashSet<String> = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while bound.len() < pods {
        let ev = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            e = stream.next() => e,
        };
        match ev {
            Some(Ok(WatchEvent::Modified(p))) if !crate::pod::node_name(&p).is_empty() => {
                bound.insert(p.name_any());
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => break,
        }
    }
    Ok(bound.len())
}

fn scheduler_figures(
    pods: usize,
    nodes: usize,
    bound: usize,
    elapsed: Duration,
) -> Result<SchedulerFigures, BenchError> {
    if bound < pods {
        return Err(BenchError::Timeout(format!("only {bound} of {pods} pods were bound")));
    }
    Ok(SchedulerFigures { pods, nodes, elapsed, pods_per_second: pods as f64 / elapsed.as_secs_f64() })
}

/// Bind `pods` pending pods onto `nodes` simulated nodes: the pods are
/// created first, then the scheduler starts; the clock runs from its start
/// to the last binding seen through a watch.
pub async fn bench_scheduler(client: kube::Client, pods: usize, nodes: usize) -> Result<SchedulerFigures, BenchError> {
    let (sim, _api, _created, mut stream) = scheduler_setup(&client, "bench-scheduler", pods, nodes).await?;
    let started = Instant::now();
    let loops = Loops::start(&client, &["scheduler"]);
    let bound = wait_bound(&mut stream, pods).await;
    let elapsed = started.elapsed();
    loops.stop().await;
    sim.shutdown().await;
    scheduler_figures(pods, nodes, bound?, elapsed)
}

/// [`bench_scheduler`]'s baseline: the same setup, but no scheduler; the
/// client posts the pods' bindings itself, round-robin over the nodes,
/// [`BIND_CONCURRENCY`] in flight. The clock runs from the first post to
/// the last binding seen through the watch.
pub async fn bench_scheduler_baseline(
    client: kube::Client,
    pods: usize,
    nodes: usize,
) -> Result<SchedulerFigures, BenchError> {
    let (sim, api, created, mut stream) = scheduler_setup(&client, "bench-scheduler-base", pods, nodes).await?;
    let targets = sim.node_names();
    let started = Instant::now();
    let binder = tokio::spawn(async move {
        futures::stream::iter(created.into_iter().enumerate())
            .map(|(i, p)| {
                let api = api.clone();
                let node = targets.get(i % targets.len().max(1)).cloned().unwrap_or_default();
                async move {
                    let name = p.name_any();
                    let binding = json!({
                        "apiVersion": "v1",
                        "kind": "Binding",
                        "metadata": {"name": name, "namespace": p.namespace(), "uid": p.uid()},
                        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
                    });
                    api.create_subresource::<_, serde_json::Value>("binding", &name, &PostParams::default(), &binding)
                        .await
                        .map(|_| ())
                }
            })
            .buffer_unordered(BIND_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
    });
    let bound = wait_bound(&mut stream, pods).await;
    let elapsed = started.elapsed();
    let posted = binder.await;
    sim.shutdown().await;
    if let Err(e) = posted.map_err(|e| BenchError::Timeout(format!("the binding task failed: {e}")))? {
        return Err(e.into());
    }
    scheduler_figures(pods, nodes, bound?, elapsed)
}

/// Create a `replicas`-replica Deployment with every loop running and
/// `nodes` simulated nodes; time until its status shows all ready.
pub async fn bench_deployment(
    client: kube::Client,
    replicas: usize,
    nodes: usize,
) -> Result<DeploymentFigures, BenchError> {
    let ns = "bench-deployment";
    namespace(&client, ns).await?;
    let sim = Simulator::start(
        client.clone(),
        SimConfig { nodes, prefix: "bench-deploy".into(), ready_after: Duration::ZERO, ..Default::default() },
    )
    .await?;
    let loops = Loops::start(&client, CONTROLLERS);
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "web", "image": "registry.example/web:1"}]}},
        },
    }))
    .unwrap_or_default();
    let started = Instant::now();
    api.create(&PostParams::default(), &d).await?;
    let result = wait_ready(&api, replicas as i32, Duration::from_secs(120)).await;
    let to_ready = started.elapsed();
    loops.stop().await;
    sim.shutdown().await;
    result?;
    Ok(DeploymentFigures { replicas, to_ready })
}

/// [`bench_deployment`]'s baseline: no loops; the client creates the same
/// `replicas` pods itself, already bound round-robin to the `nodes`
/// simulated nodes (`spec.nodeName`, 32 creations in flight), and polls the
/// pods as often as [`bench_deployment`] polls its Deployment until all are
/// ready.
pub async fn bench_deployment_baseline(
    client: kube::Client,
    replicas: usize,
    nodes: usize,
) -> Result<DeploymentFigures, BenchError> {
    let ns = "bench-deployment-base";
    namespace(&client, ns).await?;
    let sim = Simulator::start(
        client.clone(),
        SimConfig { nodes, prefix: "bench-deploy".into(), ready_after: Duration::ZERO, ..Default::default() },
    )
    .await?;
    let targets = sim.node_names();
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let started = Instant::now();
    let created = futures::stream::iter(0..replicas)
        .map(|i| {
            let api = api.clone();
            let p: Pod = serde_json::from_value(json!({
                "metadata": {"name": format!("web-{i}"), "labels": {"app": "web"}},
                "spec": {"nodeName": targets.get(i % targets.len().max(1)).cloned().unwrap_or_default(),
                         "containers": [{"name": "web", "image": "registry.example/web:1"}]},
            }))
            .unwrap_or_default();
            async move { api.create(&PostParams::default(), &p).await.map(|_| ()) }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>();
    let result = match created {
        Ok(_) => wait_pods_ready(&api, replicas, Duration::from_secs(120)).await,
        Err(e) => Err(e.into()),
    };
    let to_ready = started.elapsed();
    sim.shutdown().await;
    result?;
    Ok(DeploymentFigures { replicas, to_ready })
}

async fn wait_pods_ready(api: &Api<Pod>, want: usize, timeout: Duration) -> Result<(), BenchError> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let pods = api.list(&ListParams::default().labels("app=web")).await?;
        if pods.items.iter().filter(|p| crate::pod::is_ready(p)).count() >= want {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(BenchError::Timeout(format!("the pods did not reach {want} ready")))
}

async fn wait_ready(api: &Api<Deployment>, want: i32, timeout: Duration) -> Result<(), BenchError> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(d) = api.get_opt("web").await? {
            if d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0) >= want {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(BenchError::Timeout(format!("deployment did not reach {want} ready replicas")))
}

/// Flip pods' Ready condition `changes` times, one at a time, and time each
/// change until the Service's EndpointSlice shows it.
pub async fn bench_endpoints(client: kube::Client, pods: usize, changes: usize) -> Result<EndpointFigures, BenchError> {
    let ns = "bench-endpoints";
    namespace(&client, ns).await?;
    let loops = Loops::start(&client, &["endpointslice"]);
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "lat"},
        "spec": {"selector": {"app": "lat"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }))
    .unwrap_or_default();
    Api::<Service>::namespaced(client.clone(), ns).create(&PostParams::default(), &svc).await?;
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let names = latency_pods(&api, pods).await?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels("kubernetes.io/service-name=lat");
    let rv = slices.list(&lp).await?.metadata.resource_version.unwrap_or_default();
    let mut stream = slices.watch(&WatchParams::default().labels("kubernetes.io/service-name=lat"), &rv).await?.boxed();
    let mut ready: Vec<bool> = vec![false; names.len()];
    let mut samples = Vec::with_capacity(changes);
    for c in 0..changes {
        let i = c % names.len();
        ready[i] = !ready[i];
        let ip = pod_ip(i);
        let started = Instant::now();
        set_ready(&api, &names[i], i, ready[i]).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let ev = tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Err(BenchError::Timeout(format!("change {c} never reached the slice"))),
                e = stream.next() => e,
            };
            let slice = match ev {
                Some(Ok(WatchEvent::Added(s) | WatchEvent::Modified(s))) => s,
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => return Err(BenchError::Timeout("the slice watch ended".into())),
            };
            let shown = slice.endpoints.iter().any(|e| {
                e.addresses.first() == Some(&ip) && e.conditions.as_ref().and_then(|c| c.ready) == Some(ready[i])
            });
            if shown {
                samples.push(started.elapsed());
                break;
            }
        }
    }
    loops.stop().await;
    Ok(endpoint_figures(changes, samples))
}

/// [`bench_endpoints`]'s baseline: no loops and no Service; the same pods
/// and the same status writes, each timed until a watch on the pods
/// (opened before the first write) shows the pod with the new Ready value.
pub async fn bench_endpoints_baseline(
    client: kube::Client,
    pods: usize,
    changes: usize,
) -> Result<EndpointFigures, BenchError> {
    let ns = "bench-endpoints-base";
    namespace(&client, ns).await?;
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let names = latency_pods(&api, pods).await?;
    let lp = ListParams::default().labels("app=lat");
    let rv = api.list(&lp).await?.metadata.resource_version.unwrap_or_default();
    let mut stream = api.watch(&WatchParams::default().labels("app=lat"), &rv).await?.boxed();
    let mut ready: Vec<bool> = vec![false; names.len()];
    let mut samples = Vec::with_capacity(changes);
    for c in 0..changes {
        let i = c % names.len();
        ready[i] = !ready[i];
        let started = Instant::now();
        set_ready(&api, &names[i], i, ready[i]).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let ev = tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Err(BenchError::Timeout(format!("change {c} never reached the watch"))),
                e = stream.next() => e,
            };
            let p = match ev {
                Some(Ok(WatchEvent::Added(p) | WatchEvent::Modified(p))) => p,
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => return Err(BenchError::Timeout("the pod watch ended".into())),
            };
            if p.name_any() == names[i] && crate::pod::is_ready(&p) == ready[i] {
                samples.push(started.elapsed());
                break;
            }
        }
    }
    Ok(endpoint_figures(changes, samples))
}

/// The endpoint benchmarks' `pods` pods, bound to a node that does not
/// exist (no kubelet touches them), with Ready=False.
async fn latency_pods(api: &Api<Pod>, pods: usize) -> Result<Vec<String>, kube::Error> {
    let mut names = Vec::new();
    for i in 0..pods.max(1) {
        let name = format!("lat-{i}");
        let mut p = bench_pod(&name, json!({"app": "lat"}));
        if let Some(s) = p.spec.as_mut() {
            s.node_name = Some("bench-node".into());
        }
        api.create(&PostParams::default(), &p).await?;
        set_ready(api, &name, i, false).await?;
        names.push(name);
    }
    Ok(names)
}

fn endpoint_figures(changes: usize, mut samples: Vec<Duration>) -> EndpointFigures {
    samples.sort();
    let q = |f: f64| {
        samples.get(((samples.len() as f64 * f).ceil() as usize).saturating_sub(1)).copied().unwrap_or_default()
    };
    EndpointFigures { changes, p50: q(0.50), p99: q(0.99), max: samples.last().copied().unwrap_or_default() }
}

fn pod_ip(i: usize) -> String {
    format!("10.250.{}.{}", i / 250, i % 250 + 1)
}

async fn set_ready(api: &Api<Pod>, name: &str, i: usize, ready: bool) -> Result<(), kube::Error> {
    let flag = if ready { "True" } else { "False" };
    let t = crate::time::now_time();
    let patch = json!({"status": {
        "phase": "Running", "podIP": pod_ip(i), "podIPs": [{"ip": pod_ip(i)}],
        "conditions": [
            {"type": "Ready", "status": flag, "lastProbeTime": null, "lastTransitionTime": t},
            {"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": t},
        ],
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
}
