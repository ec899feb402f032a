//! `bench_` figures for the service proxy's data path (run as root with
//! `cargo test -p skiff-tests --test net_bench -- --ignored --nocapture`):
//! TCP connection rate and first-packet latency (connect = SYN → SYN/ACK)
//! through a ClusterIP programmed by skiff-net's Proxy, with 10 and with
//! 10,000 Services in the table, against straight to the pod address.
//! Everything runs in two test-made namespaces ("node" with the table, "pod"
//! with the listener) joined by a veth pair, removed afterwards.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use skiff_net::proxy::{bench::synthetic_state, Endpoint, Proxy};

struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(format!("/run/netns/{name}")).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// Connect `count` times (bounded by `limit`) to `target` from namespace
/// `ns`: (connections per second, p50, p99 of connect(), how many took over
/// 100 ms, i.e. needed a SYN retransmit).
fn connects(ns: &str, target: SocketAddr, count: usize, limit: Duration) -> (f64, Duration, Duration, usize) {
    in_netns(ns, move || {
        let mut times = Vec::with_capacity(count);
        let started = Instant::now();
        while times.len() < count && started.elapsed() < limit {
            let t = Instant::now();
            let s = TcpStream::connect_timeout(&target, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connection {} to {target}: {e}", times.len() + 1));
            times.push(t.elapsed());
            drop(s);
        }
        let rate = times.len() as f64 / started.elapsed().as_secs_f64();
        times.sort();
        let pct = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
        let slow = times.iter().filter(|t| **t > Duration::from_millis(100)).count();
        (rate, pct(0.5), pct(0.99), slow)
    })
}

#[test]
#[ignore = "benchmark: run with --ignored as root"]
fn bench_cluster_ip_connection_rate_and_latency() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let id = std::process::id();
    let (node, pod) = (format!("skiff-test-bn-{id}"), format!("skiff-test-bp-{id}"));
    let _guard = Namespaces(vec![node.clone(), pod.clone()]);
    ip(&["netns", "add", &node]);
    ip(&["netns", "add", &pod]);
    ip(&["-n", &node, "link", "add", "veth-pod", "type", "veth", "peer", "name", "eth0", "netns", &pod]);
    ip(&["-n", &node, "addr", "add", "10.244.0.1/24", "dev", "veth-pod"]);
    ip(&["-n", &node, "link", "set", "veth-pod", "up"]);
    ip(&["-n", &node, "link", "set", "lo", "up"]);
    // as a node's default route would: the Service range leaves through an interface
    ip(&["-n", &node, "route", "add", "10.96.0.0/12", "dev", "veth-pod"]);
    ip(&["-n", &pod, "addr", "add", "10.244.0.2/24", "dev", "eth0"]);
    ip(&["-n", &pod, "link", "set", "eth0", "up"]);
    ip(&["-n", &pod, "link", "set", "lo", "up"]);
    ip(&["-n", &pod, "route", "add", "default", "via", "10.244.0.1"]);

    let listener = in_netns(&pod, || TcpListener::bind("10.244.0.2:8080").unwrap());
    listener.set_nonblocking(false).unwrap();
    std::thread::spawn(move || {
        // bounded by the process: the test ends, the thread goes with it
        // the client closes first (it keeps the TIME_WAIT, as real clients do)
        for mut c in listener.incoming().take(1_000_000).flatten() {
            let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = std::io::Read::read(&mut c, &mut [0u8; 16]);
        }
    });

    let pod_addr: SocketAddr = "10.244.0.2:8080".parse().unwrap();
    let vip: SocketAddr = "10.96.0.1:80".parse().unwrap();
    let count = 2000;
    let limit = Duration::from_secs(20);
    let mut proxy = Proxy::in_netns(PathBuf::from(format!("/run/netns/{node}")));
    let direct = connects(&node, pod_addr, count, limit);
    println!(
        "connect straight to the pod:           {:>6.0} conn/s, p50 {:?}, p99 {:?}, {} of {count} retransmitted",
        direct.0, direct.1, direct.2, direct.3
    );
    let mut figures = Vec::new();
    let mut last = None;
    for services in [10usize, 10_000] {
        let mut state = synthetic_state(services, 10);
        // the first Service's one endpoint is the listening pod
        state.services[0].ports[0].endpoints =
            vec![Endpoint { ip: Ipv4Addr::new(10, 244, 0, 2), port: 8080, local: true }];
        proxy.invalidate();
        proxy.sync(&state).unwrap();
        let got = connects(&node, vip, count, limit);
        println!(
            "connect via ClusterIP, {services:>5} services: {:>6.0} conn/s, p50 {:?}, p99 {:?}, {} of {count} retransmitted",
            got.0, got.1, got.2, got.3
        );
        figures.push(got);
        last = Some(state);
    }
    let ratio = figures[1].1.as_secs_f64() / figures[0].1.as_secs_f64();
    println!("first-packet latency p50, 10k / 10 services: {ratio:.3} (target ≤ 1.10)");

    // throughput (iperf3, 3 s each, 10,000 Services in the table): through the ClusterIP vs to the pod
    if Command::new("iperf3").arg("--version").output().is_err() {
        println!("throughput: skipped, iperf3 not installed (apt-get install iperf3)");
        return;
    }
    // now the first Service leads to the pod's iperf3 server
    let mut state = last.unwrap();
    state.services[0].ports[0].endpoints = vec![Endpoint { ip: Ipv4Addr::new(10, 244, 0, 2), port: 5201, local: true }];
    proxy.sync(&state).unwrap();
    let mut server = Command::new("ip")
        .args(["netns", "exec", &pod, "iperf3", "-s", "-p", "5201"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let gbps = |target: &str, port: &str| -> f64 {
        let out = Command::new("timeout")
            .args(["20", "ip", "netns", "exec", &node, "iperf3", "-c", target, "-p", port, "-t", "3", "-J"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v.pointer("/end/sum_received/bits_per_second")
            .and_then(serde_json::Value::as_f64)
            .unwrap_or_else(|| panic!("iperf3 to {target}:{port}: {}", String::from_utf8_lossy(&out.stdout)))
            / 1e9
    };
    let direct = std::panic::catch_unwind(|| gbps("10.244.0.2", "5201")).unwrap_or(0.0);
    let via_vip = std::panic::catch_unwind(|| gbps("10.96.0.1", "80"));
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.id() as i32), nix::sys::signal::SIGTERM);
    let _ = server.wait();
    let via_vip = via_vip.unwrap();
    println!(
        "throughput: straight to the pod {direct:.2} Gbit/s, via ClusterIP {via_vip:.2} Gbit/s, ratio {:.3} (target ≥ 0.95)",
        via_vip / direct
    );
}
