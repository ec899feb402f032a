//! The memory of the real `skiff agent` and `skiff server` processes (the
//! binaries a user runs, not the agent inside a test executable), idle and
//! with pods, on the two-node netns fixture. `make bench` runs it (release).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use skiff_tests::nodes::{Nodes, NodesOptions, IMAGE};

/// A `/proc/<pid>/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// VmRSS, RssAnon and RssFile of a process.
fn rss(pid: u32) -> [u64; 3] {
    ["VmRSS", "RssAnon", "RssFile"].map(|f| status_kib(pid, f))
}

const PODS: usize = 30;

#[test]
#[ignore = "a benchmark: make bench runs it"]
fn bench_agent_and_server_memory() {
    let nodes = Nodes::start(NodesOptions::default());
    // settle: registration, image import, first syncs, DNS and proxy start
    std::thread::sleep(Duration::from_secs(15));
    let (server, agent) = (nodes.pid(0).unwrap(), nodes.pid(1).unwrap());
    let containerd = nodes.containerd_pid().unwrap();
    let idle = (rss(server), rss(agent), rss(containerd));

    let yaml = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: bench
spec:
  replicas: {PODS}
  selector: {{matchLabels: {{app: bench}}}}
  template:
    metadata:
      labels: {{app: bench}}
    spec:
      nodeName: {node}
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: {IMAGE}
        command: ["sleep", "3600"]
"#,
        node = nodes.nodes[1].name
    );
    let at = Instant::now();
    nodes.apply(&yaml);
    nodes.wait_pods_ready("app=bench", PODS, Duration::from_secs(240));
    let ready = at.elapsed();
    std::thread::sleep(Duration::from_secs(10));
    let busy = (rss(server), rss(agent));
    let hwm = status_kib(agent, "VmHWM");

    let row = |what: &str, r: [u64; 3]| println!("| {what} | {} | {} / {} |", mib(r[0]), mib(r[1]), mib(r[2]));
    println!("\n| process (release binaries, netns fixture) | RSS | anonymous / file-backed |\n|---|---|---|");
    row("`skiff agent`, idle (target <= 15 MiB)", idle.1);
    row(&format!("`skiff agent` with {PODS} pods"), busy.1);
    row("`skiff server` (API, controllers, agent), idle", idle.0);
    row(&format!("`skiff server` while node 2 runs {PODS} pods"), busy.0);
    row("baseline: containerd (shared by both nodes), idle", idle.2);
    println!("| `skiff agent` peak RSS (VmHWM) | {} | |", mib(hwm));
    println!("| {PODS} pods on the agent's node: apply -> all Ready | {:.1} s | |", ready.as_secs_f64());
}
