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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (pods, nodes, replicas, changes) = if quick { (300, 20, 20, 100) } else { (3000, 100, 100, 1000) };
    let mut rows: Vec<(String, String, String)> = Vec::new();

    let s = server().await?;
    eprintln!("scheduler: {pods} pods onto {nodes} nodes");
    let f = bench::bench_scheduler(s.client.clone(), pods, nodes).await?;
    rows.push((
        format!("scheduler: bind {pods} pods onto {nodes} nodes"),
        format!("{:.0} pods/s", f.pods_per_second),
        "≥ 500 pods/s".into(),
    ));
    rows.push(("scheduler: time to bind all".into(), ms(f.elapsed), String::new()));
    s.running.shutdown().await;

    let s = server().await?;
    eprintln!("deployment: {replicas} replicas");
    let f = bench::bench_deployment(s.client.clone(), replicas, nodes.min(20)).await?;
    rows.push((format!("deployment: {replicas} replicas created → all ready"), ms(f.to_ready), String::new()));
    s.running.shutdown().await;

    let s = server().await?;
    eprintln!("endpoints: {changes} readiness changes");
    let f = bench::bench_endpoints(s.client.clone(), 10, changes).await?;
    rows.push((format!("pod ready → EndpointSlice, p50 of {changes}"), ms(f.p50), String::new()));
    rows.push((format!("pod ready → EndpointSlice, p99 of {changes}"), ms(f.p99), "≤ 50 ms".into()));
    rows.push(("pod ready → EndpointSlice, max".into(), ms(f.max), String::new()));
    s.running.shutdown().await;

    println!("| controllers | figure | target |\n|---|---|---|");
    for (what, figure, target) in rows {
        println!("| {what} | {figure} | {target} |");
    }
    Ok(())
}
