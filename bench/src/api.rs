//! The figures measured through the real HTTPS API of a `skiff server` child.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::client::{Conn, Endpoint, REQUEST_TIMEOUT};
use crate::load::{closed_loop, median, open_loop, Sample};
use crate::report::ms;
use crate::server::Server;
use crate::sys::{CpuMeter, CpuUse};
use crate::Plan;

/// kubectl's Accept header for `kubectl get`.
pub const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

pub const NS: &str = "bench";
pub const WATCH_NS: &str = "bench-w";
/// Streams per HTTP/2 connection for the watchers (the server allows 200).
const WATCHERS_PER_CONN: usize = 100;

pub fn configmap(name: &str) -> Bytes {
    let body = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "skiff-bench"}},
        "data": {"config": "x".repeat(64)},
    });
    Bytes::from(body.to_string())
}

pub fn pod(name: &str) -> Bytes {
    let body = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]},
    });
    Bytes::from(body.to_string())
}

/// Everything measured through the API.
pub struct ApiFigures {
    pub idle_rss: u64,
    pub create1: Sample,
    pub create32: Sample,
    pub open: Sample,
    pub gets: Sample,
    pub list_json: Duration,
    pub list_json_bytes: usize,
    pub list_table: Duration,
    pub list_table_bytes: usize,
    pub fanout: Vec<Duration>,
    pub fanout_write: Vec<Duration>,
    /// A stored ConfigMap and Pod as the server keeps them, for the
    /// baselines' value sizes.
    pub configmap_value: Bytes,
    pub pod_value: Bytes,
    pub patch: crate::patch::PatchFigures,
    pub cpu: Vec<CpuUse>,
}

/// Aborts its tasks when dropped.
#[derive(Default)]
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

pub async fn run(server: &mut Server, plan: &Plan) -> Result<ApiFigures> {
    eprintln!("idle: waiting {:?} before reading VmRSS", plan.idle);
    tokio::time::sleep(plan.idle).await;
    let idle_rss = server.rss_bytes()?;
    eprintln!("idle: RSS {:.1} MiB", idle_rss as f64 / (1 << 20) as f64);

    let endpoint = Endpoint::from_data_dir(server.data_dir())?;
    let conns = endpoint.connect_many(plan.connections).await?;
    let one = conns[0].clone();
    for ns in [NS, WATCH_NS] {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        one.create("/api/v1/namespaces", Bytes::from(body.to_string())).await?;
    }
    let pid = server.pid();
    let mut cpu = Vec::new();
    let cm_path = format!("/api/v1/namespaces/{NS}/configmaps");

    // Warm the connections, the allocator and the store up.
    creates(vec![one.clone()], 4, 200, Duration::from_secs(5), "warm").await?;

    eprintln!("creates: 1 client for {:?}", plan.create_time);
    let meter = CpuMeter::start("creates, 1 client", pid);
    let create1 = creates(vec![one.clone()], 1, 1_000_000, plan.create_time, "c1").await?;
    cpu.push(meter.stop());
    eprintln!("creates: 1 client: {:.0}/s", create1.rate());
    server.check_alive()?;

    eprintln!("creates: 32 clients on {} connections for {:?}", conns.len(), plan.create_time);
    let meter = CpuMeter::start("creates, 32 clients", pid);
    let create32 = creates(conns.clone(), 32, 1_000_000, plan.create_time, "c32").await?;
    cpu.push(meter.stop());
    eprintln!("creates: 32 clients: {:.0}/s", create32.rate());
    server.check_alive()?;

    eprintln!("open loop: {}/s for {:?}", plan.open_rate, plan.open_time);
    let meter = CpuMeter::start("open loop", pid);
    let open = {
        let conns = conns.clone();
        let path = cm_path.clone();
        open_loop(plan.open_rate, plan.open_time, move |i| {
            let conn = conns[i % conns.len()].clone();
            let path = path.clone();
            async move { conn.create(&path, configmap(&format!("ol-{i}"))).await.map(drop) }
        })
        .await?
    };
    cpu.push(meter.stop());
    eprintln!("open loop: p50 {}, p99 {}", ms(open.pct(50.0)), ms(open.pct(99.0)));
    server.check_alive()?;

    let configmap_value = stored(&one.get_json(&format!("{cm_path}/c32-0")).await?)?;

    let names = create32.ops.min(10_000);
    eprintln!("gets: 32 clients over {names} objects for {:?}", plan.get_time);
    let meter = CpuMeter::start("gets, 32 clients", pid);
    let gets = {
        let conns = conns.clone();
        let path = cm_path.clone();
        closed_loop(32, 10_000_000, plan.get_time, move |i| {
            let conn = conns[i % conns.len()].clone();
            let path = format!("{path}/c32-{}", i % names);
            async move { conn.get_json(&path).await.map(drop) }
        })
        .await?
    };
    cpu.push(meter.stop());
    eprintln!("gets: {:.0}/s", gets.rate());

    let (list_json, list_json_bytes, list_table, list_table_bytes, pod_value) =
        lists(&conns, plan, pid, &mut cpu).await?;
    server.check_alive()?;

    let (fanout, fanout_write) = watch_fanout(&endpoint, &one, plan).await?;
    server.check_alive()?;

    let patch = crate::patch::run(&conns, plan, pid, &mut cpu).await?;
    server.check_alive()?;

    Ok(ApiFigures {
        idle_rss,
        create1,
        create32,
        open,
        gets,
        list_json,
        list_json_bytes,
        list_table,
        list_table_bytes,
        fanout,
        fanout_write,
        configmap_value,
        pod_value,
        patch,
        cpu,
    })
}

/// POST ConfigMaps named `<prefix>-<i>` from `workers` clients spread over `conns`.
async fn creates(conns: Vec<Conn>, workers: usize, max: usize, time: Duration, prefix: &'static str) -> Result<Sample> {
    let path = format!("/api/v1/namespaces/{NS}/configmaps");
    closed_loop(workers, max, time, move |i| {
        let conn = conns[i % conns.len()].clone();
        let path = path.clone();
        async move { conn.create(&path, configmap(&format!("{prefix}-{i}"))).await.map(drop) }
    })
    .await
}

/// An object as the store holds it: the API's answer without resourceVersion.
fn stored(answer: &[u8]) -> Result<Bytes> {
    let mut obj: Value = serde_json::from_slice(answer).context("parsing an object the server returned")?;
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    Ok(Bytes::from(serde_json::to_vec(&obj)?))
}

type Lists = (Duration, usize, Duration, usize, Bytes);

/// Create the pods, then time the list as JSON and as a Table.
async fn lists(conns: &[Conn], plan: &Plan, pid: u32, cpu: &mut Vec<CpuUse>) -> Result<Lists> {
    let path = format!("/api/v1/namespaces/{NS}/pods");
    eprintln!("list: creating {} pods", plan.pods);
    let created = {
        let conns = conns.to_vec();
        let path = path.clone();
        closed_loop(32, plan.pods, Duration::from_secs(120), move |i| {
            let conn = conns[i % conns.len()].clone();
            let path = path.clone();
            async move { conn.create(&path, pod(&format!("pod-{i:05}"))).await.map(drop) }
        })
        .await?
    };
    if created.ops != plan.pods {
        bail!("created only {} of {} pods within 120 s", created.ops, plan.pods);
    }
    let one = &conns[0];
    let pod_value = stored(&one.get_json(&format!("{path}/pod-00000")).await?)?;

    let meter = CpuMeter::start("list pods (JSON and Table)", pid);
    let mut json_times = Vec::new();
    let mut json_bytes = 0;
    for round in 0..plan.list_rounds {
        let t = Instant::now();
        let body = one.get_json(&path).await?;
        json_times.push(t.elapsed());
        json_bytes = body.len();
        if round == 0 {
            let list: Value = serde_json::from_slice(&body).context("parsing the pod list")?;
            let n = list["items"].as_array().map_or(0, Vec::len);
            if n != plan.pods {
                bail!("GET {path}: {n} items, expected {}", plan.pods);
            }
        }
    }
    let mut table_times = Vec::new();
    let mut table_bytes = 0;
    for round in 0..plan.list_rounds {
        let t = Instant::now();
        let body = one.call(Method::GET, &path, TABLE_ACCEPT, None, StatusCode::OK).await?;
        table_times.push(t.elapsed());
        table_bytes = body.len();
        if round == 0 {
            let table: Value = serde_json::from_slice(&body).context("parsing the pod Table")?;
            let n = table["rows"].as_array().map_or(0, Vec::len);
            if table["kind"] != "Table" || n != plan.pods {
                bail!("GET {path} as Table: kind {} with {n} rows, expected a Table of {}", table["kind"], plan.pods);
            }
        }
    }
    cpu.push(meter.stop());
    let (json, table) = (median(json_times), median(table_times));
    eprintln!("list: JSON {} ({json_bytes} bytes), Table {} ({table_bytes} bytes)", ms(json), ms(table));
    Ok((json, json_bytes, table, table_bytes, pod_value))
}

/// Open the watchers, then per round make one write and time until the
/// last watcher has read its event line. Returns the fan-out times and the
/// write's own latencies.
async fn watch_fanout(endpoint: &Endpoint, writer: &Conn, plan: &Plan) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let path = format!("/api/v1/namespaces/{WATCH_NS}/configmaps");
    let list: Value = serde_json::from_slice(&writer.get_json(&path).await?)?;
    let rv = list["metadata"]["resourceVersion"].as_str().context("list without resourceVersion")?.to_string();
    let conns = endpoint.connect_many(plan.watchers.div_ceil(WATCHERS_PER_CONN)).await?;
    eprintln!("watch: opening {} watches on {} HTTP/2 connections", plan.watchers, conns.len());

    let (lines_tx, mut lines) = mpsc::unbounded_channel::<Instant>();
    let (ready_tx, mut ready) = mpsc::unbounded_channel::<Result<()>>();
    let mut tasks = Tasks::default();
    for w in 0..plan.watchers {
        let conn = conns[w % conns.len()].clone();
        let path = format!("{path}?watch=true&resourceVersion={rv}");
        let (lines_tx, ready_tx) = (lines_tx.clone(), ready_tx.clone());
        tasks.0.push(tokio::spawn(async move {
            let opened =
                tokio::time::timeout(REQUEST_TIMEOUT, conn.start(Method::GET, &path, "application/json", None)).await;
            let resp = match opened {
                Ok(Ok(r)) if r.status() == StatusCode::OK => r,
                Ok(Ok(r)) => return drop(ready_tx.send(Err(anyhow::anyhow!("GET {path}: {}", r.status())))),
                Ok(Err(e)) => return drop(ready_tx.send(Err(e.context(format!("GET {path}"))))),
                Err(_) => return drop(ready_tx.send(Err(anyhow::anyhow!("GET {path}: no answer")))),
            };
            let _ = ready_tx.send(Ok(()));
            let mut body = resp.into_body();
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    for _ in data.iter().filter(|b| **b == b'\n') {
                        let _ = lines_tx.send(Instant::now());
                    }
                }
            }
        }));
    }
    drop(ready_tx);
    let deadline = Instant::now() + Duration::from_secs(30);
    for _ in 0..plan.watchers {
        match tokio::time::timeout_at(deadline.into(), ready.recv()).await {
            Ok(Some(r)) => r?,
            _ => bail!("watch: not every watch opened within 30 s"),
        }
    }
    let mut fanout = Vec::new();
    let mut writes = Vec::new();
    for round in 0..plan.fanout_rounds {
        while lines.try_recv().is_ok() {}
        let t0 = Instant::now();
        writer.create(&path, configmap(&format!("w-{round}"))).await?;
        writes.push(t0.elapsed());
        let last = last_arrival(&mut lines, plan.watchers, t0).await?;
        fanout.push(last - t0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("watch: one write to {} watchers: {} (median)", plan.watchers, ms(median(fanout.clone())));
    drop(tasks);
    Ok((fanout, writes))
}

/// Wait for `n` event lines and return when the last one arrived.
pub async fn last_arrival(lines: &mut mpsc::UnboundedReceiver<Instant>, n: usize, t0: Instant) -> Result<Instant> {
    let deadline = t0 + Duration::from_secs(10);
    let mut last = t0;
    for got in 0..n {
        match tokio::time::timeout_at(deadline.into(), lines.recv()).await {
            Ok(Some(at)) => last = last.max(at),
            _ => bail!("watch: only {got} of {n} watchers saw the write within 10 s"),
        }
    }
    Ok(last)
}
