//! The control loops' benchmarks against an in-process API server on
//! loopback (a sled store in a temp dir), printed as a table:
//!
//! ```text
//! cargo run --release -p skiff-controllers --features simulator --example bench
//! ```
//!
//! Figures: scheduler throughput binding 3,000 pods onto 100 simulated
//! nodes; a 100-replica Deployment from creation to 100 ready pods; pod
//! readiness → EndpointSlice latency over 1,000 changes. Each runs on a
//! fresh server so that one does not load the next.
//!
//! Every figure is printed beside a baseline measured in the same run (its
//! own fresh server too), with the ratio skiff ÷ baseline: the client
//! binding the pods itself through `pods/{name}/binding`; the client
//! creating the pods already bound and waiting for them to be ready; a
//! plain watch on pods seeing the same status write.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use skiff_controllers::bench;

struct Server {
    client: kube::Client,
    running: skiff_apiserver::Running,
    _dir: tempfile::TempDir,
}

async fn server() -> anyhow::Result<Server> {
    let dir = tempfile::Builder::new().prefix("skiff-bench-controllers-").tempdir()?;
    let store = skiff_store::SledStore::open(skiff_store::SledOptions::new(dir.path().join("db")))?;
    let config = skiff_apiserver::Config {
        tls_dir: dir.path().join("tls"),
        bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
        extra_sans: Vec::new(),
        advertise: IpAddr::V4(Ipv4Addr::LOCALHOST),
        service_cidr: "10.96.0.0/12".parse()?,
        node_port_range: (30000, 32767),
        node_token: "bench".into(),
    };
    let running = skiff_apiserver::start(config, store).await?;
    let url = format!("https://127.0.0.1:{}", running.addr.port());
    let tls = &running.tls;
    let client =
        skiff_controllers::client_from_pem(&url, &tls.ca_cert_pem, &tls.admin_cert_pem, &tls.admin_key_pem).await?;
    Ok(Server { client, running, _dir: dir })
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// One row: the figure, skiff's value, the same-run baseline's value, and a
/// target checked against skiff's value when there is one.
struct Row {
    what: String,
    skiff: String,
    baseline: String,
    /// skiff ÷ baseline (throughput: higher is better; time: lower is).
    ratio: f64,
    target: String,
    met: Option<bool>,
}

impl Row {
    fn rate(what: String, skiff: f64, baseline: f64) -> Row {
        Row {
            what,
            skiff: format!("{skiff:.0} pods/s"),
            baseline: format!("{baseline:.0} pods/s"),
            ratio: skiff / baseline,
            target: String::new(),
            met: None,
        }
    }

    fn time(what: String, skiff: Duration, baseline: Duration) -> Row {
        Row {
            what,
            skiff: ms(skiff),
            baseline: ms(baseline),
            ratio: skiff.as_secs_f64() / baseline.as_secs_f64(),
            target: String::new(),
            met: None,
        }
    }

    fn target(mut self, target: &str, met: bool) -> Row {
        self.target = target.into();
        self.met = Some(met);
        self
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (pods, nodes, replicas, changes) = if quick { (300, 20, 20, 100) } else { (3000, 100, 100, 1000) };
    let mut rows: Vec<Row> = Vec::new();

    eprintln!("scheduler: {pods} pods onto {nodes} nodes (baseline: the client binds them)");
    let s = server().await?;
    let base = bench::bench_scheduler_baseline(s.client.clone(), pods, nodes).await?;
    s.running.shutdown().await;
    let s = server().await?;
    let f = bench::bench_scheduler(s.client.clone(), pods, nodes).await?;
    s.running.shutdown().await;
    rows.push(
        Row::rate(format!("scheduler: bind {pods} pods onto {nodes} nodes"), f.pods_per_second, base.pods_per_second)
            .target("≥ 500 pods/s", f.pods_per_second >= 500.0),
    );
    rows.push(Row::time("scheduler: time to bind all".into(), f.elapsed, base.elapsed));

    eprintln!("deployment: {replicas} replicas (baseline: the client creates the pods bound)");
    let s = server().await?;
    let base = bench::bench_deployment_baseline(s.client.clone(), replicas, nodes.min(20)).await?;
    s.running.shutdown().await;
    let s = server().await?;
    let f = bench::bench_deployment(s.client.clone(), replicas, nodes.min(20)).await?;
    s.running.shutdown().await;
    rows.push(Row::time(format!("deployment: {replicas} replicas created → all ready"), f.to_ready, base.to_ready));

    eprintln!("endpoints: {changes} readiness changes (baseline: a watch on the pods)");
    let s = server().await?;
    let base = bench::bench_endpoints_baseline(s.client.clone(), 10, changes).await?;
    s.running.shutdown().await;
    let s = server().await?;
    let f = bench::bench_endpoints(s.client.clone(), 10, changes).await?;
    s.running.shutdown().await;
    rows.push(Row::time(format!("pod ready → EndpointSlice, p50 of {changes}"), f.p50, base.p50));
    rows.push(
        Row::time(format!("pod ready → EndpointSlice, p99 of {changes}"), f.p99, base.p99)
            .target("≤ 50 ms", f.p99 <= Duration::from_millis(50)),
    );
    rows.push(Row::time("pod ready → EndpointSlice, max".into(), f.max, base.max));

    println!("| figure | skiff | baseline | ratio | target | met? |\n|---|---|---|---|---|---|");
    for r in rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        println!("| {} | {} | {} | {:.2}× | {} | {met} |", r.what, r.skiff, r.baseline, r.ratio, r.target);
    }
    println!(
        "\nBaselines, same run, each on its own fresh server: scheduler = the client posting the same \
         bindings itself ({} in flight, as the scheduler); deployment = the client creating the same pods \
         with spec.nodeName set, no controllers; endpoints = the same status write seen by a plain pod watch. \
         Ratio = skiff ÷ baseline.",
        bench::BIND_CONCURRENCY
    );
    Ok(())
}
