//! The one-node cluster the agent's end-to-end tests run against: a real
//! API server (in the test process), a containerd of the test's own, and the
//! agent as a child process, all inside a network namespace the test makes
//! (`skiff-test-*`). The test's threads join it, and the agent child is
//! started from one of them (so it starts there; it checks that it did).
//! Nothing touches the machine's own network namespace. The guards remove
//! what a test made, also when it fails, and print the agent's log then.

#![allow(clippy::unwrap_used, dead_code)]

use std::fs;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, PostParams};
use skiff_agent::runtime::containerd::ContainerdRuntime;
use skiff_agent::testing::{import_test_image, logger_binary, require_binary, TestContainerd, TestNetns};

pub const NODE: &str = "skiff-test-node";
pub const CONTAINERD_NS: &str = "skiff-test";

/// The agent process of the end-to-end tests: call it from an ignored test
/// named `agent_child` in each test binary that uses [`Cluster`].
pub fn agent_child() {
    let Ok(spec) = std::env::var("SKIFF_TEST_AGENT") else { return };
    let spec: serde_json::Value = serde_json::from_str(&spec).unwrap();
    let s = |k: &str| spec[k].as_str().unwrap().to_string();
    {
        // never run outside the test's network namespace
        use std::os::unix::fs::MetadataExt;
        let ours = fs::metadata("/proc/self/ns/net").unwrap().ino();
        let test = fs::metadata(s("netns")).unwrap().ino();
        assert_eq!(ours, test, "the agent child must run in the test's network namespace");
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info,skiff_agent=debug,skiff_net=debug"))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let mut opts = skiff_agent::AgentOptions::new(s("server"), s("token"), s("data_dir"));
        opts.node_name = Some(NODE.into());
        opts.node_ip = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        opts.container_runtime_endpoint = PathBuf::from(s("containerd"));
        opts.containerd_namespace = CONTAINERD_NS.into();
        let runtime = ContainerdRuntime::connect(&opts.container_runtime_endpoint, CONTAINERD_NS).await.unwrap();
        let runtime = match logger_binary() {
            Some(p) => runtime.with_logger(p),
            None => runtime,
        };
        let agent = skiff_agent::start_agent_with(opts, runtime).await.unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let on_term = stop.clone();
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
            term.recv().await;
            on_term.cancel();
        });
        agent.run(stop).await.unwrap();
    });
}

pub fn enter(netns: &Path) {
    let f = fs::File::open(netns).unwrap_or_else(|e| panic!("opening {}: {e}", netns.display()));
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns {}: {e}", netns.display()));
}

/// Run `f` on a runtime whose every thread is inside `netns`.
pub fn in_netns<Fut: Future<Output = ()>>(netns: &Path, f: impl FnOnce() -> Fut + Send + 'static) {
    let ns = netns.to_path_buf();
    let t = std::thread::spawn(move || {
        enter(&ns);
        let ns2 = ns.clone();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .on_thread_start(move || enter(&ns2))
            .build()
            .unwrap();
        rt.block_on(f());
        rt.shutdown_timeout(Duration::from_secs(1));
    });
    if let Err(p) = t.join() {
        std::panic::resume_unwind(p);
    }
}

/// A cluster of one node: API server (in this process, in the test's
/// netns), containerd, and the agent child process.
pub struct Cluster {
    pub netns: TestNetns,
    pub dir: PathBuf,
    pub server: String,
    pub token: String,
    pub client: kube::Client,
    pub agent: Option<Child>,
    _server_stop: tokio::sync::oneshot::Sender<()>,
    pub containerd: TestContainerd,
    /// The cluster CA (PEM), for kubeconfigs.
    pub ca_pem: String,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    pub async fn start(netns: TestNetns, containerd: TestContainerd) -> Cluster {
        require_binary("ip", "iproute2");
        let tmp = tempfile::Builder::new().prefix("skiff-test-agent-").tempdir_in("/tmp").unwrap();
        let dir = tmp.path().to_path_buf();
        let store = skiff_store::SledStore::open(skiff_store::SledOptions::new(dir.join("db"))).unwrap();
        let secret = format!("skiff-test-{:016x}", rand::random::<u64>());
        let config = skiff_apiserver::Config {
            tls_dir: dir.join("tls"),
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            extra_sans: Vec::new(),
            advertise: IpAddr::V4(Ipv4Addr::LOCALHOST),
            service_cidr: "10.96.0.0/12".parse().unwrap(),
            node_port_range: (30000, 32767),
            node_token: secret.clone(),
        };
        let dyn_store: skiff_store::DynStore = store.clone();
        let running = skiff_apiserver::start(config, dyn_store).await.unwrap();
        let server = format!("https://127.0.0.1:{}", running.addr.port());
        let token =
            format!("K10{}::server:{secret}", skiff_agent::client::sha256_hex(running.tls.ca_cert_pem.as_bytes()));
        let client = skiff_agent::client::client(&server, &token, &running.tls.ca_cert_pem).unwrap();
        let ca_pem = running.tls.ca_cert_pem.clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = stop_rx.await;
            running.shutdown().await;
            store.close();
        });
        // the test image, in the namespace the agent uses
        let rt = containerd.runtime(CONTAINERD_NS).await;
        import_test_image(&rt, &dir).await;
        let mut c = Cluster {
            netns,
            dir,
            server,
            token,
            client,
            agent: None,
            _server_stop: stop_tx,
            containerd,
            ca_pem,
            _tmp: tmp,
        };
        c.start_agent();
        c.wait_node_ready().await;
        c
    }

    pub fn agent_dir(&self) -> PathBuf {
        self.dir.join("agent")
    }

    pub fn agent_log(&self) -> String {
        fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    pub fn start_agent(&mut self) {
        let spec = serde_json::json!({
            "server": self.server, "token": self.token,
            "data_dir": self.agent_dir(), "containerd": self.containerd.address, "netns": self.netns.path,
        });
        let log = fs::OpenOptions::new().create(true).append(true).open(self.dir.join("agent.log")).unwrap();
        let exe = std::env::current_exe().unwrap();
        // spawned from a thread inside the test's netns, the child starts
        // there too (and stays in this mount namespace, where containerd
        // sees the netns and tmpfs mounts it makes; `ip netns exec` would
        // give it a private one)
        let child = Command::new(exe)
            .args(["agent_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env("SKIFF_TEST_AGENT", spec.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.agent = Some(child);
    }

    /// SIGTERM the agent and wait for it to exit.
    pub fn stop_agent(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn wait_node_ready(&self) {
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.client.clone());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(n)) = nodes.get_opt(NODE).await {
                let ready = n
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                if ready {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the node did not become Ready in 60s\n--- agent log ---\n{}",
                self.agent_log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    pub async fn create_pod(&self, v: serde_json::Value) -> Pod {
        let mut v = v;
        v["apiVersion"] = "v1".into();
        v["kind"] = "Pod".into();
        v["metadata"]["namespace"] = "default".into();
        v["spec"]["nodeName"] = NODE.into();
        let pod: Pod = serde_json::from_value(v).unwrap();
        self.pods().create(&PostParams::default(), &pod).await.unwrap_or_else(|e| panic!("creating a pod: {e}"))
    }

    /// Wait until `pred` holds for pod `name` (panics with its status and the agent's log).
    pub async fn wait_pod(&self, name: &str, secs: u64, what: &str, pred: impl Fn(&Pod) -> bool) -> Pod {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut last = None;
        loop {
            if let Ok(Some(p)) = self.pods().get_opt(name).await {
                if pred(&p) {
                    return p;
                }
                last = Some(p);
            }
            if Instant::now() > deadline {
                panic!(
                    "pod {name}: {what} did not happen within {secs}s; last status:\n{}\n--- agent log (tail) ---\n{}",
                    serde_json::to_string_pretty(&last.and_then(|p| p.status)).unwrap_or_default(),
                    tail(&self.agent_log(), 60)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn wait_gone(&self, name: &str, secs: u64) -> Duration {
        let start = Instant::now();
        loop {
            if self.pods().get_opt(name).await.unwrap().is_none() {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "pod {name} was not deleted within {secs}s\n--- agent log (tail) ---\n{}",
                tail(&self.agent_log(), 60)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn events(&self, pod: &str) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), "default");
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(pod))
            .collect()
    }

    pub async fn wait_event(&self, pod: &str, reason: &str, contains: &str, secs: u64) -> Event {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let events = self.events(pod).await;
            if let Some(e) = events
                .iter()
                .find(|e| e.reason.as_deref() == Some(reason) && e.message.as_deref().unwrap_or("").contains(contains))
            {
                return e.clone();
            }
            if Instant::now() > deadline {
                let seen: Vec<String> = events.iter().map(|e| format!("{:?}: {:?}", e.reason, e.message)).collect();
                panic!("pod {pod}: no {reason} event containing {contains:?} within {secs}s; events: {seen:#?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The whole log of a container (current run), as `kubectl logs` prints it.
    pub async fn logs(&self, pod: &str, container: &str, previous: bool) -> String {
        use futures::StreamExt;
        let pods_dir = self.agent_dir().join("pods");
        let Some((dir, _)) = skiff_agent::logs::find_pod_log_dir(&pods_dir, "default", pod) else {
            return String::new();
        };
        let all = skiff_agent::logs::container_logs(&dir, container);
        let Some((_, files)) = all.get(usize::from(previous)).cloned() else { return String::new() };
        let still: skiff_agent::logs::StillRunning = Box::new(|| Box::pin(async { false }));
        let chunks: Vec<bytes::Bytes> = skiff_agent::logs::serve_logs(files, Default::default(), still).collect().await;
        String::from_utf8_lossy(&chunks.concat()).into_owned()
    }

    pub async fn wait_log(&self, pod: &str, container: &str, contains: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let l = self.logs(pod, container, false).await;
            if l.contains(contains) {
                return l;
            }
            if Instant::now() > deadline {
                panic!(
                    "{pod}/{container}: log has no {contains:?} after {secs}s:\n{l}\n--- agent log (tail) ---\n{}",
                    tail(&self.agent_log(), 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub fn netns_of(&self, pod: &Pod) -> PathBuf {
        self.agent_dir().join("netns").join(pod.metadata.uid.as_deref().unwrap())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent log ({}) ---\n{}", self.dir.display(), self.agent_log());
        }
        self.stop_agent();
        // pod cgroups the agent left (busy or shared ones stay)
        skiff_agent::testing::remove_empty_cgroups(&format!("skiff/{NODE}"));
        // pod network namespaces and tmpfs volumes the agent left mounted
        if let Ok(info) = fs::read_to_string("/proc/self/mountinfo") {
            let prefix = self.dir.to_string_lossy().to_string();
            let mut targets: Vec<&str> =
                info.lines().filter_map(|l| l.split(' ').nth(4)).filter(|t| t.starts_with(&prefix)).collect();
            targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
            for t in targets {
                let _ = nix::mount::umount2(t, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Run a test body against a fresh one-node cluster.
pub fn with_cluster<Fut: Future<Output = ()>>(body: impl FnOnce(Cluster) -> Fut + Send + 'static) {
    let containerd = TestContainerd::start();
    let netns = TestNetns::new();
    let path = netns.path.clone();
    in_netns(&path, move || async move {
        let cluster = Cluster::start(netns, containerd).await;
        body(cluster).await;
    });
}
