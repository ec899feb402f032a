//! The network test tier's fixture: a cluster whose nodes are network
//! namespaces on a shared "underlay" segment, running the real `skiff`
//! binary and a private containerd.
//!
//! Layout (everything named `skiff-test-<id>-*`):
//! - `…-ul`: the underlay namespace with bridge `ul0` (198.18.0.254/15, the
//!   benchmarking range), standing for the physical network;
//! - `…-n1` … `…-nN`: one namespace per node, `eth0` = 198.18.0.<i>/15 with a
//!   default route via the underlay; `skiff server` runs in the first,
//!   `skiff agent` in the others (through `nsenter --net`, which keeps the
//!   host's mount namespace so that containerd sees the pods' namespaces);
//! - `…-ext`: an "external client" at 198.18.0.100 on the underlay.
//!
//! With [`NodesOptions::dual_stack`] the underlay also carries IPv6 from
//! 2001:2::/48 (RFC 5180's benchmarking range): `ul0` 2001:2::fe/64, node
//! `i` 2001:2::<i>, the external client 2001:2::100; the server runs with a
//! dual-stack `--cluster-cidr` (10.244.0.0/16,fd00:10:244::/56) and
//! `--service-cidr` (10.96.0.0/12,fd00:10:96::/112) and is told its IPv6
//! address in `--node-ip v4,v6`, while the agents find theirs beside the
//! IPv4 one (both ways a node learns it are exercised).
//!
//! All nodes share one private containerd ([`TestContainerd`]); each agent
//! labels its containers with its node name. Dropping the fixture stops the
//! skiff processes (by PID), removes containers, unmounts what the agents
//! pinned under the data dir and deletes the namespaces, which takes the
//! bridges, veths, routes and nftables tables with them — also when a test
//! panics. Nothing touches the machine's own network namespace.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_agent::testing::{busybox_archive, require_binary, require_root, TestContainerd, TEST_IMAGE};

use crate::{Access, KubectlOutput};

/// The image the nodes have imported (busybox with sh, httpd, nc, wget).
pub const IMAGE: &str = TEST_IMAGE;

/// One node of the fixture.
pub struct Node {
    /// Node name (`node-1` …).
    pub name: String,
    /// Its network namespace (`/run/netns/skiff-test-<id>-n<i>`).
    pub netns: PathBuf,
    pub ns_name: String,
    pub ip: Ipv4Addr,
    /// Its IPv6 underlay address (dual-stack fixtures).
    pub ip6: Option<Ipv6Addr>,
    pub data_dir: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    args: Vec<String>,
}

impl Node {
    /// The node process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Options of [`Nodes::start`].
#[derive(Debug, Clone)]
pub struct NodesOptions {
    pub nodes: usize,
    /// Extra flags for every node (`skiff server` and `skiff agent`).
    pub node_flags: Vec<String>,
    /// Extra flags for the server only.
    pub server_flags: Vec<String>,
    /// IPv6 on the underlay too, and a dual-stack cluster (see the module docs).
    pub dual_stack: bool,
}

impl Default for NodesOptions {
    fn default() -> Self {
        NodesOptions { nodes: 2, node_flags: Vec::new(), server_flags: Vec::new(), dual_stack: false }
    }
}

/// The dual-stack fixture's pod range (`--cluster-cidr`).
pub const DUAL_CLUSTER_CIDR: &str = "10.244.0.0/16,fd00:10:244::/56";
/// The dual-stack fixture's Service range (`--service-cidr`).
pub const DUAL_SERVICE_CIDR: &str = "10.96.0.0/12,fd00:10:96::/112";

/// A multi-node cluster in network namespaces; see the module docs.
pub struct Nodes {
    pub id: String,
    pub nodes: Vec<Node>,
    /// The external client's namespace and address.
    pub external: PathBuf,
    pub external_ip: Ipv4Addr,
    /// The external client's IPv6 address (dual-stack fixtures).
    pub external_ip6: Option<Ipv6Addr>,
    /// kubectl/kube-rs access to the server (run them in node 1's namespace).
    pub access: Access,
    namespaces: Vec<String>,
    dir: PathBuf,
    containerd: Option<TestContainerd>,
    token: String,
    skiff: PathBuf,
}

/// The `skiff` binary of this build (target/<profile>/skiff beside the test executable's folder).
pub fn skiff_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SKIFF_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile.join("skiff");
    assert!(bin.is_file(), "{} not found: build it first (cargo build -p skiff)", bin.display());
    bin
}

fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn ip_in(ns: &str, args: &[&str]) {
    let mut all = vec!["ip", "-n", ns];
    all.extend_from_slice(args);
    sh(&all);
}

impl Nodes {
    /// Make the namespaces, start containerd, the server and the agents, and
    /// wait until every node is Ready.
    pub fn start(opts: NodesOptions) -> Nodes {
        require_root();
        require_binary("ip", "iproute2");
        require_binary("nsenter", "util-linux");
        require_binary("nft", "nftables");
        require_binary("curl", "curl");
        assert!(opts.nodes >= 1 && opts.nodes < 90);
        let id = format!("{:06x}", rand_u32() & 0xff_ffff);
        let dir = PathBuf::from(format!("/tmp/skiff-test-nodes-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut fixture = Nodes {
            id: id.clone(),
            nodes: Vec::new(),
            external: PathBuf::new(),
            external_ip: Ipv4Addr::new(198, 18, 0, 100),
            external_ip6: opts.dual_stack.then(|| Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100)),
            access: Access::placeholder(&dir),
            namespaces: Vec::new(),
            dir: dir.clone(),
            containerd: None,
            token: String::new(),
            skiff: skiff_binary(),
        };
        // the underlay
        let ul = fixture.netns("ul");
        ip_in(&ul, &["link", "add", "ul0", "type", "bridge"]);
        ip_in(&ul, &["addr", "add", "198.18.0.254/15", "dev", "ul0"]);
        if opts.dual_stack {
            ip_in(&ul, &["addr", "add", "2001:2::fe/64", "dev", "ul0", "nodad"]);
        }
        ip_in(&ul, &["link", "set", "ul0", "up"]);
        let attach = |fixture: &mut Nodes, label: &str, ip: Ipv4Addr, ip6: Option<Ipv6Addr>| -> (String, PathBuf) {
            let ns = fixture.netns(label);
            // made inside the underlay with its peer straight in the node: never in the machine's namespace
            let outer = format!("v-{label}");
            ip_in(&ul, &["link", "add", &outer, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
            ip_in(&ns, &["addr", "add", &format!("{ip}/15"), "dev", "eth0"]);
            ip_in(&ns, &["link", "set", "eth0", "up"]);
            ip_in(&ns, &["route", "add", "default", "via", "198.18.0.254"]);
            if let Some(ip6) = ip6 {
                // no duplicate address detection: the address works at once
                ip_in(&ns, &["addr", "add", &format!("{ip6}/64"), "dev", "eth0", "nodad"]);
                ip_in(&ns, &["-6", "route", "add", "default", "via", "2001:2::fe"]);
            }
            ip_in(&ul, &["link", "set", &outer, "master", "ul0"]);
            ip_in(&ul, &["link", "set", &outer, "up"]);
            (ns.clone(), PathBuf::from(format!("/run/netns/{ns}")))
        };
        let (external_ip, external_ip6) = (fixture.external_ip, fixture.external_ip6);
        let (_, ext) = attach(&mut fixture, "ext", external_ip, external_ip6);
        fixture.external = ext;
        fixture.containerd = Some(TestContainerd::start());
        for i in 1..=opts.nodes {
            let ip = Ipv4Addr::new(198, 18, 0, i as u8);
            let ip6 = opts.dual_stack.then(|| Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, i as u16));
            let (ns_name, netns) = attach(&mut fixture, &format!("n{i}"), ip, ip6);
            let data_dir = dir.join(format!("node-{i}"));
            let images = data_dir.join("agent").join("images");
            std::fs::create_dir_all(&images).unwrap();
            std::fs::write(images.join("busybox.tar"), busybox_archive(TEST_IMAGE).bytes).unwrap();
            fixture.nodes.push(Node {
                name: format!("node-{i}"),
                netns,
                ns_name,
                ip,
                ip6,
                log: dir.join(format!("node-{i}.log")),
                data_dir,
                child: None,
                args: Vec::new(),
            });
        }
        fixture.start_server(&opts);
        for i in 1..fixture.nodes.len() {
            fixture.start_agent(i, &opts);
        }
        fixture.wait_ready(Duration::from_secs(90));
        fixture
    }

    fn netns(&mut self, label: &str) -> String {
        let name = format!("skiff-test-{}-{label}", self.id);
        sh(&["ip", "netns", "add", &name]);
        self.namespaces.push(name.clone());
        ip_in(&name, &["link", "set", "lo", "up"]);
        name
    }

    fn containerd_socket(&self) -> String {
        self.containerd.as_ref().unwrap().address.display().to_string()
    }

    fn start_server(&mut self, opts: &NodesOptions) {
        let n = &self.nodes[0];
        let node_ip = match n.ip6 {
            Some(ip6) => format!("--node-ip={},{ip6}", n.ip),
            None => format!("--node-ip={}", n.ip),
        };
        let mut args: Vec<String> = vec![
            "server".into(),
            format!("--data-dir={}", n.data_dir.display()),
            node_ip,
            format!("--node-name={}", n.name),
            format!("--container-runtime-endpoint={}", self.containerd_socket()),
            "--node-monitor-grace-period=20s".into(),
        ];
        if opts.dual_stack {
            args.push(format!("--cluster-cidr={DUAL_CLUSTER_CIDR}"));
            args.push(format!("--service-cidr={DUAL_SERVICE_CIDR}"));
        }
        args.extend(opts.node_flags.iter().cloned());
        args.extend(opts.server_flags.iter().cloned());
        self.nodes[0].args = args;
        self.spawn(0);
        let kubeconfig = self.nodes[0].data_dir.join("kubeconfig.yaml");
        let token_file = self.nodes[0].data_dir.join("token");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(kubeconfig.exists() && token_file.exists()) {
            self.check_alive(0);
            assert!(Instant::now() < deadline, "the server wrote no kubeconfig in 60 s:\n{}", self.nodes[0].log());
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(100));
        self.token = std::fs::read_to_string(&token_file).unwrap().trim().to_string();
        self.access = Access::from_kubeconfig_file(&kubeconfig, &self.dir.join("scratch"))
            .unwrap()
            .in_netns(&self.nodes[0].netns);
    }

    fn start_agent(&mut self, i: usize, opts: &NodesOptions) {
        let n = &self.nodes[i];
        let mut args: Vec<String> = vec![
            "agent".into(),
            format!("--server=https://{}:6443", self.nodes[0].ip),
            format!("--token={}", self.token),
            format!("--data-dir={}", n.data_dir.display()),
            format!("--node-ip={}", n.ip),
            format!("--node-name={}", n.name),
            format!("--container-runtime-endpoint={}", self.containerd_socket()),
        ];
        if opts.dual_stack {
            // the IPv6 node address is left for the agent to find
            args.push(format!("--cluster-cidr={DUAL_CLUSTER_CIDR}"));
        }
        args.extend(opts.node_flags.iter().cloned());
        self.nodes[i].args = args;
        self.spawn(i);
    }

    fn spawn(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&n.log).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net={}", n.netns.display()))
            .arg("--")
            .arg(&self.skiff)
            .args(&n.args)
            .env("SKIFF_LOG", std::env::var("SKIFF_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.skiff.display()));
        n.child = Some(child);
    }

    fn check_alive(&mut self, i: usize) {
        if let Some(c) = self.nodes[i].child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                panic!("{} exited ({status}):\n{}", self.nodes[i].name, tail(&self.nodes[i].log(), 60));
            }
        }
    }

    /// Stop node `i`'s skiff process (SIGTERM, then SIGKILL after 10 s).
    /// Its containers keep running, as on a real node.
    /// The pid of node `i`'s skiff process (while it runs).
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// The pid of the private containerd all nodes share.
    pub fn containerd_pid(&self) -> Option<u32> {
        self.containerd.as_ref().and_then(TestContainerd::pid)
    }

    pub fn stop_node(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            stop_child(&mut c);
        }
    }

    /// Start node `i`'s skiff process again with the same flags.
    pub fn restart_node(&mut self, i: usize) {
        self.stop_node(i);
        self.spawn(i);
    }

    /// Restart node `i`'s skiff process ([`Nodes::restart_node`]) and wait
    /// (at most 30 s) until its log says the node agent runs again.
    pub fn restart_agent_and_wait(&mut self, i: usize) {
        let before = self.nodes[i].log().matches("node agent running").count();
        self.restart_node(i);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.nodes[i].log().matches("node agent running").count() <= before {
            assert!(Instant::now() < deadline, "node {}'s agent did not come back", i + 1);
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Wait until every node is Ready.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            for i in 0..self.nodes.len() {
                self.check_alive(i);
            }
            let out = self.kubectl(&["get", "nodes", "-o", "json"]);
            if out.code == Some(0) {
                let v: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
                let ready = v["items"]
                    .as_array()
                    .map(|items| {
                        items
                            .iter()
                            .filter(|n| {
                                n["spec"]["podCIDR"].is_string()
                                    && n["status"]["conditions"].as_array().is_some_and(|c| {
                                        c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True")
                                    })
                            })
                            .count()
                    })
                    .unwrap_or(0);
                if ready == self.nodes.len() {
                    return;
                }
            }
            if Instant::now() > deadline {
                let logs: Vec<String> =
                    self.nodes.iter().map(|n| format!("--- {}:\n{}", n.name, tail(&n.log(), 40))).collect();
                panic!("nodes not Ready within {timeout:?}: {}\n{}", out.stdout, logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// `kubectl` (the machine's default version) against the cluster, from node 1's namespace.
    pub fn kubectl(&self, args: &[&str]) -> KubectlOutput {
        self.access.kubectl(crate::V1_33, args)
    }

    /// `kubectl apply -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) {
        self.access.kubectl_stdin(crate::V1_33, &["apply", "-f", "-"], yaml).success();
    }

    /// A pod as JSON (`kubectl get pod -o json`).
    pub fn pod(&self, name: &str) -> Value {
        let out = self.kubectl(&["get", "pod", name, "-o", "json"]);
        out.success();
        serde_json::from_str(&out.stdout).unwrap()
    }

    /// Wait until the pods with `selector` number `count` and are all Ready; returns them.
    pub fn wait_pods_ready(&self, selector: &str, count: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.kubectl(&["get", "pods", "-l", selector, "-o", "json"]);
            if out.code == Some(0) {
                let v: Value = serde_json::from_str(&out.stdout).unwrap();
                let items: Vec<Value> = v["items"].as_array().cloned().unwrap_or_default();
                let ready = items.iter().filter(|p| pod_ready(p) && p["metadata"]["deletionTimestamp"].is_null());
                if ready.count() == count && items.len() == count {
                    return items;
                }
            }
            if Instant::now() > deadline {
                let all = self.kubectl(&["get", "pods", "-o", "wide"]);
                let ev = self.kubectl(&["get", "events"]);
                panic!(
                    "pods {selector} not {count}×Ready in {timeout:?}:\n{}\n{}\n{}",
                    all.stdout,
                    ev.stdout,
                    self.nodes.iter().map(|n| tail(&n.log(), 30)).collect::<Vec<_>>().join("\n---\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The network namespace of a running pod (pinned by its node's agent).
    pub fn pod_netns(&self, pod: &Value) -> PathBuf {
        let node = pod["spec"]["nodeName"].as_str().unwrap();
        let uid = pod["metadata"]["uid"].as_str().unwrap();
        let n = self.nodes.iter().find(|n| n.name == node).unwrap();
        n.data_dir.join("agent").join("netns").join(uid)
    }

    /// Run the host's program `args[0]` inside the network namespace `netns`
    /// (a pod's, a node's or the external client's), with a time limit.
    pub fn run_in(&self, netns: &Path, args: &[&str], timeout: Duration) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.arg(format!("{}", timeout.as_secs_f64()))
            .arg("nsenter")
            .arg(format!("--net={}", netns.display()))
            .arg("--")
            .args(args);
        cmd.output().unwrap_or_else(|e| panic!("running {args:?} in {}: {e}", netns.display()))
    }

    /// Run `f` on a thread that has entered the network namespace `netns`:
    /// sockets it opens stay in that namespace when handed back.
    pub fn in_netns<T: Send + 'static>(&self, netns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = std::fs::File::open(netns).unwrap_or_else(|e| panic!("{}: {e}", netns.display()));
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("thread in a network namespace")
    }

    /// `curl url` from inside `netns`: the body, or the error text.
    pub fn http_get(&self, netns: &Path, url: &str) -> Result<String, String> {
        let out = self.run_in(netns, &["curl", "-sS", "--fail", "--max-time", "3", url], Duration::from_secs(5));
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{} {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// The nftables ruleset of node `i` (for failure messages).
    pub fn ruleset(&self, i: usize) -> String {
        let out = Command::new("ip").args(["netns", "exec", &self.nodes[i].ns_name, "nft", "list", "ruleset"]).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
    }
}

fn pod_ready(p: &Value) -> bool {
    p["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn stop_child(c: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(c.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    u32::from_ne_bytes(b) ^ std::process::id()
}

/// Unmount everything mounted under `dir` (the agents' pinned pod namespaces), deepest first.
fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let prefix = dir.display().to_string();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").args(["-l", &p]).status();
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        // SKIFF_TEST_PAUSE=<seconds>: leave a failed cluster up that long for a look (bounded)
        if std::thread::panicking() {
            if let Some(secs) = std::env::var("SKIFF_TEST_PAUSE").ok().and_then(|s| s.parse::<u64>().ok()) {
                eprintln!("SKIFF_TEST_PAUSE: cluster {} left up for {secs} s", self.id);
                std::thread::sleep(Duration::from_secs(secs.min(1800)));
            }
        }
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                stop_child(&mut c);
            }
        }
        // containers first (their tasks hold the pods' namespaces), then mounts, then namespaces
        drop(self.containerd.take());
        for n in &self.nodes {
            skiff_agent::testing::remove_empty_cgroups(&format!("skiff/{}", n.name));
        }
        unmount_under(&self.dir);
        for ns in self.namespaces.drain(..) {
            let _ = Command::new("ip").args(["netns", "delete", &ns]).status();
        }
        if std::env::var_os("SKIFF_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
