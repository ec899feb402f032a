//! Patch throughput on a Deployment of ten containers: kubectl's strategic
//! merge patch (`kubectl set image`: `$setElementOrder/containers` and one
//! image) and server-side apply of the whole configuration with one image
//! changed, beside plain PUT of the object the client already holds, all
//! against the same server in the same run.
//!
//! Each client owns one Deployment, so the figures are the write paths and
//! not contention on one object. The Deployments are paused with zero
//! replicas: where a deployment controller runs, it only writes status.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::client::Conn;
use crate::load::{worker_loop, Sample};
use crate::sys::{CpuMeter, CpuUse};
use crate::Plan;

pub const CLIENTS: usize = 8;
pub const CONTAINERS: usize = 10;
const NS: &str = "bench-patch";
const SMP: &str = "application/strategic-merge-patch+json";
const APPLY: &str = "application/apply-patch+yaml";
const MANAGER: &str = "skiff-bench";
/// PUT attempts per operation when a 409 says the object moved on.
const PUT_ATTEMPTS: usize = 5;
/// Untimed operations per client before each timed phase.
const WARM_OPS: usize = 20;
/// Tags of the timed phase start here, so no operation repeats a warm-up image.
const TIMED_BASE: usize = 1_000_000;

pub struct PatchFigures {
    pub smp: Sample,
    pub ssa: Sample,
    pub put: Sample,
    /// Server CPU seconds per operation of each kind.
    pub cpu_per_op: [f64; 3],
    /// PUTs answered 409 and sent again after a GET.
    pub put_conflicts: usize,
    /// One Deployment as the API returns it, in bytes.
    pub object_bytes: usize,
}

fn image(container: usize, tag: usize) -> String {
    format!("registry.example/team/app-{container}:1.{tag}")
}

/// Deployment `name` with ten containers, every image at tag 0.
fn deployment(name: &str) -> Value {
    let containers: Vec<Value> = (0..CONTAINERS)
        .map(|i| {
            json!({
                "name": format!("c{i}"),
                "image": image(i, 0),
                "args": ["--listen", format!(":{}", 8080 + i)],
                "ports": [{"name": "http", "containerPort": 8080 + i, "protocol": "TCP"}],
                "env": [{"name": "MODE", "value": "fast"}, {"name": "ID", "value": format!("{i}")}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080 + i}, "periodSeconds": 5},
                "volumeMounts": [{"name": "data", "mountPath": format!("/data/{i}")}],
            })
        })
        .collect();
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "paused": true,
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": containers, "volumes": [{"name": "data", "emptyDir": {}}]},
            },
        },
    })
}

fn path(name: &str) -> String {
    format!("/apis/apps/v1/namespaces/{NS}/deployments/{name}")
}

fn name(mode: &str, worker: usize) -> String {
    format!("{mode}-{worker}")
}

/// kubectl set image's patch: the container order and one image.
fn set_image(container: usize, tag: usize) -> Bytes {
    let order: Vec<Value> = (0..CONTAINERS).map(|i| json!({"name": format!("c{i}")})).collect();
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": order,
        "containers": [{"name": format!("c{container}"), "image": image(container, tag)}],
    }}}});
    Bytes::from(patch.to_string())
}

fn set_image_in(obj: &mut Value, container: usize, tag: usize) {
    obj["spec"]["template"]["spec"]["containers"][container]["image"] = json!(image(container, tag));
}

/// Operation `n` of a phase changes container `n % 10` to tag `base + n + 1`.
fn step(base: usize, n: usize) -> (usize, usize) {
    (n % CONTAINERS, base + n + 1)
}

async fn expect(
    conn: &Conn,
    method: Method,
    path: &str,
    content_type: &str,
    body: Bytes,
    want: StatusCode,
) -> Result<Bytes> {
    let (status, bytes) = conn.exchange(method.clone(), path, "application/json", content_type, Some(body)).await?;
    if status != want {
        bail!("{method} {path}: {status}: {}", String::from_utf8_lossy(&bytes[..bytes.len().min(500)]));
    }
    Ok(bytes)
}

/// One phase: warm up, then time `plan.patch_time`; checks afterwards that
/// every operation landed (each bumps `metadata.generation` by one).
async fn phase<F, Fut>(
    conns: &[Conn],
    plan: &Plan,
    mode: &'static str,
    pid: u32,
    cpu: &mut Vec<CpuUse>,
    op: F,
) -> Result<(Sample, f64)>
where
    F: Fn(Conn, usize, usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let done: Arc<Vec<AtomicUsize>> = Arc::new((0..CLIENTS).map(|_| AtomicUsize::new(0)).collect());
    let run = |base: usize, max: usize, time| {
        let (conns, op, done) = (conns.to_vec(), Arc::clone(&op), Arc::clone(&done));
        worker_loop(CLIENTS, max, time, move |w, n| {
            let (conn, op, done) = (conns[w % conns.len()].clone(), Arc::clone(&op), Arc::clone(&done));
            async move {
                op(conn, w, base, n).await?;
                done[w].fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        })
    };
    run(0, WARM_OPS, std::time::Duration::from_secs(30)).await.with_context(|| format!("{mode}: warming up"))?;
    let meter = CpuMeter::start(phase_name(mode), pid);
    let sample = run(TIMED_BASE, usize::MAX, plan.patch_time).await.with_context(|| mode.to_string())?;
    let used = meter.stop();
    let per_op = used.server / sample.ops.max(1) as f64;
    cpu.push(used);
    for (w, done) in done.iter().enumerate() {
        let obj: Value = serde_json::from_slice(&conns[0].get_json(&path(&name(mode, w))).await?)?;
        let generation = obj["metadata"]["generation"].as_u64().unwrap_or(0) as usize;
        let done = done.load(Ordering::Relaxed);
        if generation != done + 1 {
            bail!("{mode}-{w}: {done} changes answered 200 but generation is {generation}");
        }
    }
    eprintln!("{}: {:.0}/s, p50 {:?}, p99 {:?}", phase_name(mode), sample.rate(), sample.pct(50.0), sample.pct(99.0));
    Ok((sample, per_op))
}

fn phase_name(mode: &str) -> &'static str {
    match mode {
        "smp" => "patches: strategic merge",
        "ssa" => "patches: server-side apply",
        _ => "patches: PUT",
    }
}

pub async fn run(conns: &[Conn], plan: &Plan, pid: u32, cpu: &mut Vec<CpuUse>) -> Result<PatchFigures> {
    let one = &conns[0];
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
    one.create("/api/v1/namespaces", Bytes::from(ns.to_string())).await?;
    let collection = format!("/apis/apps/v1/namespaces/{NS}/deployments?fieldManager={MANAGER}");
    let mut known = Vec::new();
    let mut configs = Vec::new();
    for w in 0..CLIENTS {
        one.create(&collection, Bytes::from(deployment(&name("smp", w)).to_string())).await?;
        let put = one.create(&collection, Bytes::from(deployment(&name("put", w)).to_string())).await?;
        known.push(Mutex::new(serde_json::from_slice::<Value>(&put)?));
        let config = deployment(&name("ssa", w));
        let apply = format!("{}?fieldManager={MANAGER}", path(&name("ssa", w)));
        expect(one, Method::PATCH, &apply, APPLY, Bytes::from(config.to_string()), StatusCode::CREATED).await?;
        configs.push(Mutex::new(config));
    }
    let object_bytes = one.get_json(&path(&name("smp", 0))).await?.len();
    eprintln!("patch: {CLIENTS} clients, each on a Deployment of {CONTAINERS} containers ({object_bytes} bytes), for {:?} per kind", plan.patch_time);

    let (smp, smp_cpu) = phase(conns, plan, "smp", pid, cpu, |conn, w, base, n| async move {
        let (c, tag) = step(base, n);
        expect(&conn, Method::PATCH, &path(&name("smp", w)), SMP, set_image(c, tag), StatusCode::OK).await.map(drop)
    })
    .await?;

    let configs = Arc::new(configs);
    let (ssa, ssa_cpu) = phase(conns, plan, "ssa", pid, cpu, move |conn, w, base, n| {
        let configs = Arc::clone(&configs);
        async move {
            let (c, tag) = step(base, n);
            let body = {
                let mut config = configs[w].lock().await;
                set_image_in(&mut config, c, tag);
                Bytes::from(config.to_string())
            };
            let apply = format!("{}?fieldManager={MANAGER}", path(&name("ssa", w)));
            expect(&conn, Method::PATCH, &apply, APPLY, body, StatusCode::OK).await.map(drop)
        }
    })
    .await?;

    let known = Arc::new(known);
    let conflicts = Arc::new(AtomicUsize::new(0));
    let (put, put_cpu) = {
        let conflicts = Arc::clone(&conflicts);
        phase(conns, plan, "put", pid, cpu, move |conn, w, base, n| {
            let (known, conflicts) = (Arc::clone(&known), Arc::clone(&conflicts));
            async move {
                let (c, tag) = step(base, n);
                let path = path(&name("put", w));
                let mut obj = known[w].lock().await;
                for _ in 0..PUT_ATTEMPTS {
                    set_image_in(&mut obj, c, tag);
                    let body = Bytes::from(obj.to_string());
                    let (status, bytes) =
                        conn.exchange(Method::PUT, &path, "application/json", "application/json", Some(body)).await?;
                    match status {
                        StatusCode::OK => {
                            *obj = serde_json::from_slice(&bytes)?;
                            return Ok(());
                        }
                        StatusCode::CONFLICT => {
                            conflicts.fetch_add(1, Ordering::Relaxed);
                            *obj = serde_json::from_slice(&conn.get_json(&path).await?)?;
                        }
                        _ => bail!("PUT {path}: {status}: {}", String::from_utf8_lossy(&bytes[..bytes.len().min(500)])),
                    }
                }
                bail!("PUT {path}: still 409 after {PUT_ATTEMPTS} attempts")
            }
        })
        .await?
    };
    let put_conflicts = conflicts.load(Ordering::Relaxed);
    Ok(PatchFigures { smp, ssa, put, cpu_per_op: [smp_cpu, ssa_cpu, put_cpu], put_conflicts, object_bytes })
}
