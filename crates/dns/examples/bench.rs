//! Cluster DNS benchmark: dnsperf (Debian `dnsperf`) against skiff-dns and
//! against unbound (Debian `unbound`) holding the same records as
//! local-data, both on loopback, in the same run.
//!
//!     cargo run --release -p skiff-dns --example bench -- [--services 1000] [--seconds 10]
//!
//! For each server: a throughput run (dnsperf with 200 queries in flight,
//! `--seconds` long) gives QPS; a latency run at a fixed rate well below
//! either server's capacity (dnsperf -v, per-query latencies) gives p50 and
//! p99. The query mix: A of a Service (70 %), SRV of its named port (10 %),
//! PTR of its ClusterIP (10 %), and a search-path miss answered NXDOMAIN
//! (10 %). unbound is started with a generated config (2 threads, like
//! skiff-dns's 2 UDP workers) and stopped by its PID.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Service;
use skiff_dns::{DnsConfig, Records, Server};
use tokio_util::sync::CancellationToken;

const ZONE: &str = "cluster.local";
const NS: &str = "bench";
const LATENCY_QPS: u32 = 10_000;

struct Args {
    services: usize,
    seconds: u64,
}

fn args() -> Result<Args> {
    let mut a = Args { services: 1000, seconds: 10 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--services" => a.services = value.parse().context("--services: a number")?,
            "--seconds" => a.seconds = value.parse().context("--seconds: a number")?,
            other => bail!("unknown flag {other} (known: --services N, --seconds S)"),
        }
    }
    if a.services == 0 || a.services > 60_000 {
        bail!("--services must be between 1 and 60000");
    }
    Ok(a)
}

fn service_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 96, 1 + (i / 250) as u8, 1 + (i % 250) as u8)
}

fn services(n: usize) -> Result<Vec<Service>> {
    (0..n)
        .map(|i| {
            let ip = service_ip(i).to_string();
            Ok(serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("svc-{i}"), "namespace": NS},
                "spec": {"clusterIP": ip, "clusterIPs": [ip],
                         "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
            }))?)
        })
        .collect()
}

/// The dnsperf query file: 70 % A, 10 % SRV, 10 % PTR, 10 % NXDOMAIN.
fn query_file(n: usize) -> String {
    let mut out = String::new();
    for i in 0..(n.max(100) * 10) {
        let s = i % n;
        let line = match i % 10 {
            0 => format!("_http._tcp.svc-{s}.{NS}.svc.{ZONE} SRV"),
            1 => {
                let o = service_ip(s).octets();
                format!("{}.{}.{}.{}.in-addr.arpa PTR", o[3], o[2], o[1], o[0])
            }
            2 => format!("svc-{s}.{NS}.svc.{ZONE}.{NS}.svc.{ZONE} A"),
            _ => format!("svc-{s}.{NS}.svc.{ZONE} A"),
        };
        let _ = writeln!(out, "{line}");
    }
    out
}

/// The same records as unbound local-data.
fn unbound_conf(n: usize, port: u16, dir: &Path) -> String {
    let mut c = String::new();
    let _ = write!(
        c,
        "server:\n  interface: 127.0.0.1\n  port: {port}\n  do-ip6: no\n  num-threads: 2\n  so-reuseport: yes\n  \
         do-daemonize: no\n  chroot: \"\"\n  username: \"\"\n  directory: \"{dir}\"\n  pidfile: \"{dir}/unbound.pid\"\n  \
         use-syslog: no\n  logfile: \"\"\n  verbosity: 0\n  access-control: 127.0.0.0/8 allow\n  \
         module-config: \"iterator\"\n  local-zone: \"{ZONE}.\" static\n  \
         local-data: \"{ZONE}. 5 IN SOA ns.dns.{ZONE}. hostmaster.{ZONE}. 1 7200 1800 86400 5\"\n  \
         local-data: \"dns-version.{ZONE}. 5 IN TXT 1.1.0\"\n",
        dir = dir.display()
    );
    let mut reverse_zones = std::collections::BTreeSet::new();
    for i in 0..n {
        let ip = service_ip(i);
        let o = ip.octets();
        let name = format!("svc-{i}.{NS}.svc.{ZONE}.");
        let _ = writeln!(c, "  local-data: \"{name} 5 IN A {ip}\"");
        let _ = writeln!(c, "  local-data: \"_http._tcp.svc-{i}.{NS}.svc.{ZONE}. 5 IN SRV 0 100 80 {name}\"");
        let _ = writeln!(c, "  local-data-ptr: \"{ip} 5 {name}\"");
        reverse_zones.insert(format!("{}.{}.{}.in-addr.arpa.", o[2], o[1], o[0]));
    }
    for z in reverse_zones {
        let _ = writeln!(c, "  local-zone: \"{z}\" static");
    }
    let _ = writeln!(c, "remote-control:\n  control-enable: no");
    c
}

#[derive(Debug, Default)]
struct Figures {
    qps: f64,
    lost: String,
    codes: String,
    p50_us: f64,
    p99_us: f64,
}

fn field<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines().find_map(|l| l.trim().strip_prefix(key)).map(str::trim)
}

fn dnsperf(addr: SocketAddr, file: &Path, seconds: u64, rate: Option<u32>) -> Result<String> {
    let mut cmd = Command::new("dnsperf");
    cmd.args(["-s", &addr.ip().to_string(), "-p", &addr.port().to_string(), "-d"]).arg(file).args([
        "-l",
        &seconds.to_string(),
        "-c",
        "8",
        "-q",
        "200",
        "-t",
        "2",
    ]);
    if let Some(r) = rate {
        cmd.args(["-Q", &r.to_string(), "-v"]);
    }
    let out = cmd.stdin(Stdio::null()).output().context("running dnsperf (Debian package dnsperf)")?;
    if !out.status.success() {
        bail!("dnsperf failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn measure(name: &str, addr: SocketAddr, file: &Path, seconds: u64) -> Result<Figures> {
    eprintln!("{name}: throughput run ({seconds} s)");
    let out = dnsperf(addr, file, seconds, None)?;
    let qps = field(&out, "Queries per second:").and_then(|v| v.parse::<f64>().ok());
    let Some(qps) = qps else { bail!("{name}: no 'Queries per second' in dnsperf output:\n{out}") };
    let lost = field(&out, "Queries lost:").unwrap_or("?").to_string();
    let codes = field(&out, "Response codes:").unwrap_or("?").to_string();
    eprintln!("{name}: latency run ({LATENCY_QPS} QPS, 5 s)");
    let out = dnsperf(addr, file, 5, Some(LATENCY_QPS))?;
    // `-v` lines: "> NOERROR name type 0.000123"
    let mut lat: Vec<f64> = out
        .lines()
        .filter(|l| l.starts_with("> "))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .collect();
    if lat.is_empty() {
        bail!("{name}: dnsperf -v printed no per-query latencies:\n{}", &out[..out.len().min(2000)]);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] * 1e6;
    Ok(Figures { qps, lost, codes, p50_us: pct(0.50), p99_us: pct(0.99) })
}

/// A UDP query for `svc-0` until it answers (the server is up).
fn wait_answering(addr: SocketAddr, within: Duration) -> Result<()> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in format!("svc-0.{NS}.svc.{ZONE}").split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let started = Instant::now();
    let mut buf = [0u8; 512];
    while started.elapsed() < within {
        sock.send_to(&q, addr)?;
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            if n > 12 && buf[..2] == [0x12, 0x34] && u16::from_be_bytes([buf[6], buf[7]]) == 1 {
                return Ok(());
            }
        }
    }
    bail!("{addr} did not answer svc-0 within {within:?}")
}

fn free_port() -> Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Unbound(Child);

impl Drop for Unbound {
    fn drop(&mut self) {
        // by PID, the child we started
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() -> Result<()> {
    let args = args()?;
    let dir = tempfile::Builder::new().prefix("skiff-bench-dns-").tempdir()?;
    let queries: PathBuf = dir.path().join("queries.txt");
    std::fs::write(&queries, query_file(args.services))?;

    // skiff-dns, in this process
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let records = Records::build(ZONE, 5, &services(args.services)?, &[], &[]);
    let config = DnsConfig { listen: vec!["127.0.0.1:0".parse()?], ..Default::default() };
    let started = Instant::now();
    let zone = skiff_dns::zone_handle(records);
    let compile = started.elapsed();
    let names = zone.load().len();
    let server = rt.block_on(async { Server::bind(&config) })?;
    let skiff_addr = server.local_addrs()[0];
    let stop = CancellationToken::new();
    let fwd = std::sync::Arc::new(skiff_dns::Forwarder::new(Vec::new()));
    let serving = rt.spawn(server.run(zone, fwd, stop.clone()));
    wait_answering(skiff_addr, Duration::from_secs(5))?;
    let skiff = measure("skiff-dns", skiff_addr, &queries, args.seconds)?;
    stop.cancel();
    rt.block_on(serving)??;

    // unbound, the baseline
    let port = free_port()?;
    let conf = dir.path().join("unbound.conf");
    std::fs::write(&conf, unbound_conf(args.services, port, dir.path()))?;
    let checkconf = Command::new("unbound-checkconf").arg(&conf).output();
    if let Ok(o) = checkconf {
        if !o.status.success() {
            bail!("generated unbound config rejected: {}", String::from_utf8_lossy(&o.stdout));
        }
    }
    let child = Command::new("unbound")
        .args(["-d", "-c"])
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting unbound (Debian package unbound)")?;
    let unbound_proc = Unbound(child);
    let unbound_addr: SocketAddr = (Ipv4Addr::LOCALHOST, port).into();
    wait_answering(unbound_addr, Duration::from_secs(20))?;
    let unbound = measure("unbound", unbound_addr, &queries, args.seconds)?;
    drop(unbound_proc);

    println!();
    println!(
        "cluster DNS, {} services ({names} names compiled in {:.1} ms), dnsperf -c 8 -q 200, {} s; latency at {} QPS",
        args.services,
        compile.as_secs_f64() * 1e3,
        args.seconds,
        LATENCY_QPS
    );
    println!("| server    |        QPS | lost            | p50 (µs) | p99 (µs) |");
    println!("|-----------|-----------:|-----------------|---------:|---------:|");
    for (name, f) in [("skiff-dns", &skiff), ("unbound", &unbound)] {
        println!("| {name:<9} | {:>10.0} | {:<15} | {:>8.0} | {:>8.0} |", f.qps, f.lost, f.p50_us, f.p99_us);
    }
    for (name, f) in [("skiff-dns", &skiff), ("unbound", &unbound)] {
        println!("{name} response codes: {}", f.codes);
    }
    println!("skiff-dns / unbound QPS ratio: {:.2} (target ≥ 1.0; and ≥ 50,000 QPS)", skiff.qps / unbound.qps);
    Ok(())
}
