//! etcd beside sled, in the same run: durable ConfigMap creates through the
//! API of a `skiff server` on each datastore (same client, loop and
//! concurrency), and raw etcd puts with the same value size from the same
//! concurrency as etcd's own baseline. The etcd is Debian's `etcd-server`
//! on loopback with its data dir in the benchmark's temp dir; without it
//! this part is skipped with a line saying so.

use std::fs::{self, File};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde_json::json;
use skiff_store::testing::{etcd_binary, EtcdServer};

use crate::api::configmap;
use crate::client::Endpoint;
use crate::load::{closed_loop, Sample};
use crate::report::ms;
use crate::Plan;

/// A `skiff server --disable-agent` child, killed by PID when dropped.
struct ServerChild {
    child: Child,
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_server(bin: &Path, data_dir: &Path, datastore: Option<&str>) -> Result<ServerChild> {
    fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let log = data_dir.join("server.log");
    let mut cmd = Command::new(bin);
    cmd.arg("server")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--bind-address", "127.0.0.1", "--https-listen-port", "0", "--disable-agent"])
        .env("SKIFF_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).with_context(|| format!("creating {}", log.display()))?);
    if let Some(endpoint) = datastore {
        cmd.arg(format!("--datastore-endpoint={endpoint}"));
    }
    let mut child = ServerChild { child: cmd.spawn().with_context(|| format!("starting {}", bin.display()))? };
    let started = Instant::now();
    while !data_dir.join("kubeconfig.yaml").exists() {
        if let Some(status) = child.child.try_wait()? {
            bail!("skiff server exited with {status}; its log:\n{}", fs::read_to_string(&log).unwrap_or_default());
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("skiff server not ready within 30 s; its log:\n{}", fs::read_to_string(&log).unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(child)
}

/// Creates through the API of the server in `data_dir`: 1 client, then 32.
async fn api_creates(data_dir: &Path, plan: &Plan, label: &str) -> Result<(Sample, Sample)> {
    let endpoint = Endpoint::from_data_dir(data_dir)?;
    let conns = endpoint.connect_many(plan.connections).await?;
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench-etcd"}});
    conns[0].create("/api/v1/namespaces", Bytes::from(ns.to_string())).await?;
    let run = |workers: usize, prefix: &'static str| {
        let conns = conns.clone();
        closed_loop(workers, 1_000_000, plan.create_time, move |i| {
            let conn = conns[i % conns.len()].clone();
            async move {
                conn.create("/api/v1/namespaces/bench-etcd/configmaps", configmap(&format!("{prefix}-{i}")))
                    .await
                    .map(drop)
            }
        })
    };
    run(4, "warm").await?;
    let one = run(1, "c1").await?;
    let many = run(32, "c32").await?;
    eprintln!("etcd part: {label}: {:.0}/s at 1 client, {:.0}/s at 32", one.rate(), many.rate());
    Ok((one, many))
}

/// Raw etcd puts of `value` from `workers` tasks on one client connection.
async fn raw_puts(endpoint: &str, value: Bytes, workers: usize, plan: &Plan) -> Result<Sample> {
    let client = etcd_client::Client::connect([endpoint], None).await.context("connecting to etcd")?;
    let value = Arc::new(value.to_vec());
    closed_loop(workers, 1_000_000, plan.create_time, move |i| {
        let mut kv = client.kv_client();
        let value = Arc::clone(&value);
        async move {
            kv.put(format!("/bench/raw/{workers}/{i}"), value.as_slice(), None).await.context("etcd put")?;
            Ok(())
        }
    })
    .await
}

fn row(what: &str, one: &Sample, many: &Sample) -> String {
    format!("| {what} | {:.0} | {} | {:.0} | {} |", one.rate(), ms(one.pct(99.0)), many.rate(), ms(many.pct(99.0)))
}

/// The etcd table, or a line saying why there is none.
pub async fn run(skiff: &Path, work: &Path, plan: &Plan) -> Result<String> {
    if etcd_binary().is_none() {
        let line = "etcd: skipped: etcd is not installed (apt-get install etcd-server)";
        eprintln!("{line}");
        return Ok(format!("\n{line}\n"));
    }
    // sled first, alone, so the two servers never share the CPU.
    let sled = {
        let dir = work.join("etcd-part-sled");
        let _server = start_server(skiff, &dir, None).await?;
        api_creates(&dir, plan, "API on sled").await?
    };
    let etcd = EtcdServer::start().map_err(anyhow::Error::msg)?;
    let endpoint = etcd.endpoint();
    let on_etcd = {
        let dir = work.join("etcd-part-etcd");
        let _server = start_server(skiff, &dir, Some(&format!("etcd://{endpoint}"))).await?;
        api_creates(&dir, plan, "API on etcd").await?
    };
    let value = configmap("c32-000000");
    let raw = (raw_puts(&endpoint, value.clone(), 1, plan).await?, raw_puts(&endpoint, value, 32, plan).await?);
    eprintln!("etcd part: raw puts: {:.0}/s at 1 client, {:.0}/s at 32", raw.0.rate(), raw.1.rate());
    Ok(format!(
        "\n### etcd datastore beside sled (same run, {:?} per phase)\n\n\
         | durable writes | 1 client /s | p99 | 32 clients /s | p99 |\n|---|---|---|---|---|\n{}\n{}\n{}\n\n\
         API rows: ConfigMap creates over HTTPS to one `skiff server --disable-agent`; sled is the embedded default, \
         etcd is `--datastore-endpoint=etcd://{endpoint}` (Debian etcd, one member, fsync on, data in the temp dir). \
         Raw etcd: `put` of a value of the same size from etcd-client, the ceiling for the API on etcd.\n",
        plan.create_time,
        row("API creates, sled", &sled.0, &sled.1),
        row("API creates, etcd", &on_etcd.0, &on_etcd.1),
        row("raw etcd puts (baseline)", &raw.0, &raw.1),
    ))
}
