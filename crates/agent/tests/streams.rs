//! `kubectl exec`, `cp` and `port-forward` end to end, with the real
//! kubectl 1.27 (SPDY), 1.32 and 1.33 (WebSocket, SPDY tunnelled in a
//! WebSocket for port-forward): kubectl → API server (token auth) → the
//! agent over mutual TLS → containerd's task exec / the pod's network
//! namespace. kubectl runs inside the test's network namespace (spawned
//! from one of its threads), like the agent.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use support::{with_cluster, Cluster};

const VERSIONS: &[&str] = &["1.27", "1.32", "1.33"];

/// The agent process of these tests (started by them, not a test itself).
#[test]
#[ignore = "the agent process the end-to-end tests start"]
fn agent_child() {
    support::agent_child();
}

fn kubectl_binary(version: &str) -> PathBuf {
    let p = PathBuf::from(format!("/usr/lib/google-cloud-sdk/bin/kubectl.{version}"));
    assert!(p.exists(), "{} is missing: install the Google Cloud SDK's kubectl components", p.display());
    p
}

/// A kubeconfig for the cluster (token auth) and a HOME for kubectl's cache.
struct Kubectl {
    home: tempfile::TempDir,
    config: PathBuf,
}

impl Kubectl {
    fn new(c: &Cluster) -> Kubectl {
        use base64::Engine;
        let home = tempfile::Builder::new().prefix("skiff-test-kubectl-").tempdir().unwrap();
        let ca = base64::engine::general_purpose::STANDARD.encode(c.ca_pem.as_bytes());
        let config = home.path().join("kubeconfig");
        std::fs::write(
            &config,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: t, cluster: {{server: \"{}\", certificate-authority-data: {ca}}}}}]\n\
                 users: [{{name: t, user: {{token: \"{}\"}}}}]\n\
                 contexts: [{{name: t, context: {{cluster: t, user: t, namespace: default}}}}]\ncurrent-context: t\n",
                c.server, c.token
            ),
        )
        .unwrap();
        Kubectl { home, config }
    }

    fn command(&self, version: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(kubectl_binary(version));
        cmd.args(args).env("KUBECONFIG", &self.config).env("HOME", self.home.path()).stdin(Stdio::null());
        cmd
    }

    /// Run kubectl (from a thread in the test's netns) with `stdin`, bounded by 60 s.
    async fn run(&self, version: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = self.command(version, args);
        let input = stdin.map(<[u8]>::to_vec);
        tokio::task::spawn_blocking(move || run_bounded(&mut cmd, input, Duration::from_secs(60))).await.unwrap()
    }
}

fn run_bounded(cmd: &mut Command, input: Option<Vec<u8>>, limit: Duration) -> Output {
    run_with_input(cmd, input, false, limit)
}

/// Run `cmd` with `input` on its stdin (kept open until it exits when
/// `hold` is set, as a terminal would), killing it after `limit`.
fn run_with_input(cmd: &mut Command, input: Option<Vec<u8>>, hold: bool, limit: Duration) -> Output {
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some(input) = input {
        let mut w = child.stdin.take().unwrap();
        let held = done.clone();
        std::thread::spawn(move || {
            let _ = w.write_all(&input);
            while hold && !held.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    }
    let pid = child.id();
    let flag = done.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL);
    });
    let out = child.wait_with_output().unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn describe(o: &Output) -> String {
    format!("status {:?}\nstdout: {}\nstderr: {}", o.status.code(), text(&o.stdout), text(&o.stderr))
}

fn sha256(b: &[u8]) -> String {
    skiff_agent::client::sha256_hex(b)
}

async fn exec_split_output_and_exit_code(k: &Kubectl, v: &str) {
    let o = k.run(v, &["exec", "web", "--", "sh", "-c", "echo out; echo err >&2; exit 3"], None).await;
    assert_eq!(o.status.code(), Some(3), "kubectl {v} exec: {}", describe(&o));
    assert_eq!(text(&o.stdout), "out\n", "kubectl {v} exec: {}", describe(&o));
    let err = text(&o.stderr);
    assert!(err.starts_with("err\n"), "kubectl {v} exec: {}", describe(&o));
    assert!(err.contains("command terminated with exit code 3"), "kubectl {v} exec: {}", describe(&o));
    let o = k.run(v, &["-v=6", "exec", "web", "--", "true"], None).await;
    assert!(o.status.success(), "kubectl {v} exec -- true: {}", describe(&o));
    // 1.30+ speak WebSocket and must not need the SPDY fallback
    if v != "1.27" {
        assert!(!text(&o.stderr).contains("fallback"), "kubectl {v} fell back to SPDY: {}", describe(&o));
    }
}

async fn exec_with_stdin(k: &Kubectl, v: &str) {
    let o = k.run(v, &["exec", "-i", "web", "--", "sh", "-c", "cat; echo done"], Some(b"hello\nworld\n")).await;
    assert!(o.status.success(), "kubectl {v} exec -i: {}", describe(&o));
    assert_eq!(text(&o.stdout), "hello\nworld\ndone\n", "kubectl {v} exec -i: {}", describe(&o));
}

/// `exec -it` inside a pseudo-terminal made by `script`, whose size
/// kubectl sends as the first resize.
async fn exec_with_a_terminal(k: &Kubectl, v: &str) {
    support_require("script", "bsdutils");
    let kubectl = kubectl_binary(v);
    let inner =
        format!("stty cols 91 rows 37; {} exec -it web -- sh -c 'tty; sleep 1; stty size; exit 5'", kubectl.display());
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &inner, "/dev/null"])
        .env("KUBECONFIG", &k.config)
        .env("HOME", k.home.path())
        .stdin(Stdio::null());
    let o = tokio::task::spawn_blocking(move || run_bounded(&mut cmd, None, Duration::from_secs(60))).await.unwrap();
    let out = text(&o.stdout);
    assert!(out.contains("/dev/pts/"), "kubectl {v} exec -it: no terminal: {}", describe(&o));
    assert!(out.contains("37 91"), "kubectl {v} exec -it: the terminal size did not arrive: {}", describe(&o));
    assert_eq!(o.status.code(), Some(5), "kubectl {v} exec -it: {}", describe(&o));
}

fn support_require(binary: &str, package: &str) {
    skiff_agent::testing::require_binary(binary, package);
}

async fn cp_both_ways(k: &Kubectl, v: &str) {
    let dir = tempfile::Builder::new().prefix("skiff-test-cp-").tempdir().unwrap();
    let local = dir.path().join("data.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&local, &data).unwrap();
    let remote = format!("web:/tmp/data-{}.bin", v.replace('.', ""));
    let o = k.run(v, &["cp", local.to_str().unwrap(), &remote], None).await;
    assert!(o.status.success(), "kubectl {v} cp to the pod: {}", describe(&o));
    let back = dir.path().join("back.bin");
    let o = k.run(v, &["cp", &remote, back.to_str().unwrap()], None).await;
    assert!(o.status.success(), "kubectl {v} cp from the pod: {}", describe(&o));
    let got = std::fs::read(&back).unwrap();
    assert_eq!(got.len(), data.len(), "kubectl {v} cp: size");
    assert_eq!(sha256(&got), sha256(&data), "kubectl {v} cp: checksum");
    let path = &remote["web:".len()..];
    let o = k.run(v, &["exec", "web", "--", "sha256sum", path], None).await;
    assert!(text(&o.stdout).starts_with(&sha256(&data)), "kubectl {v}: checksum in the pod: {}", describe(&o));
}

/// Start `kubectl port-forward TARGET :PORT` and return it and its local port.
fn start_port_forward(k: &Kubectl, v: &str, target: &str, port: u16) -> (std::process::Child, u16) {
    let mut cmd = k.command(v, &["-v=6", "port-forward", target, &format!(":{port}")]);
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        let mut buf = [0u8; 1024];
        let mut sent = false;
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if !sent {
                // "Forwarding from 127.0.0.1:41234 -> 8080"
                if let Some(p) = seen
                    .split("Forwarding from 127.0.0.1:")
                    .nth(1)
                    .and_then(|r| r.split(' ').next())
                    .and_then(|p| p.parse::<u16>().ok())
                {
                    let _ = tx.send(p);
                    sent = true;
                }
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(p) => (child, p),
        Err(_) => {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("kubectl {v} port-forward {target} did not start: {}", describe(&o));
        }
    }
}

fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn stop(mut child: std::process::Child) -> String {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let _ = child.wait();
    err
}

async fn port_forward_parallel(k: &Kubectl, v: &str, target: &str, port: u16) {
    let (child, local) = start_port_forward(k, v, target, port);
    let results = tokio::task::spawn_blocking(move || {
        let threads: Vec<_> =
            (0..20).map(|i| std::thread::spawn(move || http_get(local, &format!("/index.html?{i}")))).collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let err = tokio::task::spawn_blocking(move || stop(child)).await.unwrap();
    // 1.31+ tunnel SPDY in a WebSocket and must not need the plain SPDY fallback
    if v != "1.27" {
        assert!(!err.contains("fallback"), "kubectl {v} port-forward fell back to plain SPDY: {err}");
    }
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(body) => assert!(
                body.starts_with("HTTP/1.") && body.contains("hello through the tunnel"),
                "kubectl {v} port-forward {target}: request {i}: {body}\nkubectl stderr: {err}"
            ),
            Err(e) => panic!("kubectl {v} port-forward {target}: request {i}: {e}\nkubectl stderr: {err}"),
        }
    }
}

/// kubectl killed while its exec runs: the process must not outlive it.
async fn killed_client_leaves_no_process(k: &Kubectl, v: &str) {
    let marker = format!("{}", 4000 + v.replace('.', "").parse::<u32>().unwrap());
    let mut cmd = k.command(v, &["exec", "web", "--", "sleep", &marker]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let running = |o: &Output| text(&o.stdout).lines().any(|l| l.contains(&format!("sleep {marker}")));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = k.run(v, &["exec", "web", "--", "ps", "-o", "pid,args"], None).await;
        if running(&o) {
            break;
        }
        assert!(Instant::now() < deadline, "kubectl {v}: the exec'd sleep never ran: {}", describe(&o));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    child.kill().unwrap();
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = k.run(v, &["exec", "web", "--", "ps", "-o", "pid,args"], None).await;
        if !running(&o) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl {v}: `sleep {marker}` still runs 20s after its client was killed: {}",
            describe(&o)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `kubectl run -it --rm` in a terminal: the shell in the new pod runs what
/// is typed, and the pod is deleted afterwards.
async fn run_interactively(k: &Kubectl, c: &Cluster, v: &str) {
    let name = format!("run-{}", v.replace('.', ""));
    let overrides = format!(r#"{{"spec":{{"nodeName":"{}"}}}}"#, support::NODE);
    let inner = format!(
        "stty cols 80 rows 24; {} run -it --rm --restart=Never --image={} --overrides='{overrides}' {name} -- sh",
        kubectl_binary(v).display(),
        skiff_agent::testing::TEST_IMAGE
    );
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &inner, "/dev/null"]).env("KUBECONFIG", &k.config).env("HOME", k.home.path());
    let input = b"echo hi-from-$((40+2))\nexit 7\n".to_vec();
    let o = tokio::task::spawn_blocking(move || run_with_input(&mut cmd, Some(input), true, Duration::from_secs(90)))
        .await
        .unwrap();
    let out = text(&o.stdout);
    assert!(out.contains("hi-from-42"), "kubectl {v} run -it: the shell did not run the input: {}", describe(&o));
    assert!(out.contains(&format!("pod \"{name}\" deleted")), "kubectl {v} run -it --rm: {}", describe(&o));
    c.wait_gone(&name, 30).await;
}

async fn start_web(c: &Cluster) {
    c.create_pod(serde_json::json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"containers": [{
            "name": "web", "image": skiff_agent::testing::TEST_IMAGE,
            "command": ["sh", "-c", "mkdir -p /www && echo hello through the tunnel > /www/index.html && exec httpd -f -p 8080 -h /www"],
            "ports": [{"containerPort": 8080}],
        }]},
    }))
    .await;
    c.wait_pod("web", 60, "Running", |p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")).await;
    // a Service and a Deployment selecting it, for port-forward svc/… and deploy/…
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }))
    .unwrap();
    Api::<Service>::namespaced(c.client.clone(), "default").create(&PostParams::default(), &svc).await.unwrap();
    let deploy: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": skiff_agent::testing::TEST_IMAGE}]}}},
    }))
    .unwrap();
    Api::<Deployment>::namespaced(c.client.clone(), "default").create(&PostParams::default(), &deploy).await.unwrap();
}

fn wait_http_in_pod(netns: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if skiff_net::netns::connect_tcp(netns, "127.0.0.1:8080".parse().unwrap(), Duration::from_secs(1)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("httpd in the pod never listened on 8080");
}

#[test]
fn kubectl_exec_cp_and_port_forward_for_each_version() {
    skiff_agent::testing::require_root();
    with_cluster(|c| async move {
        start_web(&c).await;
        let pod = c.pods().get("web").await.unwrap();
        let netns = c.netns_of(&pod);
        tokio::task::spawn_blocking(move || wait_http_in_pod(&netns)).await.unwrap();
        let k = Kubectl::new(&c);
        for v in VERSIONS {
            let started = Instant::now();
            exec_split_output_and_exit_code(&k, v).await;
            exec_with_stdin(&k, v).await;
            exec_with_a_terminal(&k, v).await;
            cp_both_ways(&k, v).await;
            port_forward_parallel(&k, v, "pod/web", 8080).await;
            port_forward_parallel(&k, v, "svc/web", 80).await;
            port_forward_parallel(&k, v, "deploy/web", 8080).await;
            killed_client_leaves_no_process(&k, v).await;
            run_interactively(&k, &c, v).await;
            eprintln!("kubectl {v}: all streaming checks passed in {:?}", started.elapsed());
        }
    });
}

#[test]
fn exec_errors_reach_kubectl() {
    skiff_agent::testing::require_root();
    with_cluster(|c| async move {
        start_web(&c).await;
        let k = Kubectl::new(&c);
        for v in VERSIONS {
            let o = k.run(v, &["exec", "web", "-c", "nope", "--", "true"], None).await;
            assert!(!o.status.success(), "kubectl {v}: {}", describe(&o));
            assert!(
                text(&o.stderr).contains("container nope is not valid for pod web"),
                "kubectl {v}: {}",
                describe(&o)
            );
            let o = k.run(v, &["exec", "web", "--", "/no/such/binary"], None).await;
            assert!(!o.status.success(), "kubectl {v}: a missing binary must fail: {}", describe(&o));
        }
        // a port nothing listens on: the error reaches kubectl's error stream
        for v in VERSIONS {
            let (child, local) = start_port_forward(&k, v, "pod/web", 9999);
            let got = tokio::task::spawn_blocking(move || {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", local)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let _ = write!(s, "GET / HTTP/1.0\r\n\r\n");
                let mut out = Vec::new();
                let _ = s.read_to_end(&mut out);
                std::thread::sleep(Duration::from_millis(300));
                out
            })
            .await
            .unwrap();
            let err = tokio::task::spawn_blocking(move || stop(child)).await.unwrap();
            assert!(got.is_empty(), "kubectl {v}: bytes from a closed port: {}", text(&got));
            assert!(
                err.contains("error forwarding port 9999 to pod default/web") && err.contains("refused"),
                "kubectl {v} port-forward to a closed port: {err}"
            );
        }
        // without credentials nothing opens
        let mut cmd = Command::new(kubectl_binary("1.33"));
        cmd.args(["--server", &c.server, "--insecure-skip-tls-verify", "exec", "web", "--", "true"])
            .env("HOME", k.home.path())
            .env("KUBECONFIG", "/dev/null");
        let o =
            tokio::task::spawn_blocking(move || run_bounded(&mut cmd, None, Duration::from_secs(30))).await.unwrap();
        assert!(!o.status.success(), "an anonymous exec must be refused: {}", describe(&o));
    });
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Read one HTTP response for `path` from `stream` to its end; its size.
fn download(mut s: std::net::TcpStream, path: &str) -> usize {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return total,
            Ok(n) => total += n,
        }
    }
}

/// Figures for BENCHMARKS.md (run by hand: `cargo test -p skiff-agent --test
/// streams -- --ignored --nocapture bench_`): `kubectl exec -- true`
/// round trips, and port-forward throughput beside a straight connection
/// into the pod's network namespace, in the same run.
#[test]
#[ignore = "a benchmark, run by hand"]
fn bench_exec_round_trip_and_port_forward_throughput() {
    skiff_agent::testing::require_root();
    with_cluster(|c| async move {
        start_web(&c).await;
        let pod = c.pods().get("web").await.unwrap();
        let netns = c.netns_of(&pod);
        let ns2 = netns.clone();
        tokio::task::spawn_blocking(move || wait_http_in_pod(&ns2)).await.unwrap();
        let k = Kubectl::new(&c);
        const MIB: usize = 64;
        let o = k
            .run(
                "1.33",
                &["exec", "web", "--", "dd", "if=/dev/zero", "of=/www/big", "bs=1048576", &format!("count={MIB}")],
                None,
            )
            .await;
        assert!(o.status.success(), "{}", describe(&o));
        println!("| figure | value | baseline (same run) |\n|---|---|---|");
        for v in ["1.27", "1.33"] {
            let mut times = Vec::new();
            for _ in 0..50 {
                let t = Instant::now();
                let o = k.run(v, &["exec", "web", "--", "true"], None).await;
                assert!(o.status.success(), "{}", describe(&o));
                times.push(t.elapsed());
            }
            let mut version = k.command(v, &["version", "--client"]);
            let mut base = Vec::new();
            for _ in 0..20 {
                let t = Instant::now();
                let _ = version.output();
                base.push(t.elapsed());
            }
            times.sort();
            base.sort();
            println!(
                "| kubectl {v} exec -- true, p50 / p99 (50 runs) | {:.1} ms / {:.1} ms | kubectl version --client p50 {:.1} ms |",
                percentile(&times, 0.5).as_secs_f64() * 1e3,
                percentile(&times, 0.99).as_secs_f64() * 1e3,
                percentile(&base, 0.5).as_secs_f64() * 1e3,
            );
        }
        let bytes = MIB << 20;
        let ns3 = netns.clone();
        let direct = tokio::task::spawn_blocking(move || {
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t = Instant::now();
                let s = skiff_net::netns::connect_tcp(&ns3, "127.0.0.1:8080".parse().unwrap(), Duration::from_secs(2))
                    .unwrap();
                let n = download(s, "/big");
                assert!(n > bytes, "direct download got {n} bytes");
                best = best.min(t.elapsed().as_secs_f64());
            }
            best
        })
        .await
        .unwrap();
        for v in ["1.27", "1.33"] {
            let (child, local) = start_port_forward(&k, v, "pod/web", 8080);
            let tunnel = tokio::task::spawn_blocking(move || {
                let mut best = f64::MAX;
                for _ in 0..3 {
                    let t = Instant::now();
                    let s = std::net::TcpStream::connect(("127.0.0.1", local)).unwrap();
                    let n = download(s, "/big");
                    assert!(n > bytes, "tunnelled download got {n} bytes");
                    best = best.min(t.elapsed().as_secs_f64());
                }
                best
            })
            .await
            .unwrap();
            tokio::task::spawn_blocking(move || stop(child)).await.unwrap();
            println!(
                "| kubectl {v} port-forward, {MIB} MiB download (best of 3) | {:.0} MB/s | straight into the pod's netns {:.0} MB/s |",
                bytes as f64 / tunnel / 1e6,
                bytes as f64 / direct / 1e6,
            );
        }
    });
}
