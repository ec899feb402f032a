//! Several `skiff server` processes on one etcd (Debian's `etcd-server`,
//! started by each test on loopback with its own data dir and ports).
//!
//! The servers are the real binary (`<target>/debug/skiff`, built by
//! `cargo test --workspace`; `cargo build -p skiff` first when running this
//! file alone, or point `SKIFF_BIN` at one), each with `--disable-agent`, its
//! own data dir and a loopback port. Every process a test starts is killed
//! by its PID when the test ends.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use skiff_store::testing::EtcdServer;
use skiff_tests::Access;

/// The `skiff` binary under test.
fn skiff_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SKIFF_BIN") {
        return PathBuf::from(path);
    }
    // <target>/debug/deps/etcd-<hash> → <target>/debug/skiff
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(Path::parent).map(|d| d.join("skiff")).unwrap();
    assert!(path.is_file(), "{}: no skiff binary; run `cargo build -p skiff` first (or set SKIFF_BIN)", path.display());
    path
}

fn etcd() -> EtcdServer {
    EtcdServer::start().unwrap_or_else(|e| panic!("starting etcd for the test: {e}"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One `skiff server` process on the shared etcd.
struct Server {
    name: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

impl Server {
    fn spawn(name: &str, etcd: &EtcdServer, token: &str) -> Server {
        let dir = tempfile::Builder::new().prefix("skiff-test-etcd-server-").tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(skiff_binary())
            .args(["server", "--disable-agent", "--bind-address", "127.0.0.1"])
            .args(["--https-listen-port", &port.to_string(), "--node-name", name, "--token", token])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg(format!("--datastore-endpoint=etcd://{}", etcd.endpoint()))
            .env("SKIFF_LOG", "info")
            .env_remove("SKIFF_DATA_DIR")
            .env_remove("SKIFF_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Server { name: name.into(), child: Some(child), dir, port }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Wait until the server answers; its admin access.
    async fn ready(&mut self) -> Access {
        let kubeconfig = self.dir.path().join("data/kubeconfig.yaml");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("server {} exited ({status}) before it was ready:\n{}", self.name, self.log());
            }
            if kubeconfig.exists() {
                let access = Access::from_kubeconfig_file(&kubeconfig, &self.dir.path().join("scratch")).unwrap();
                assert!(access.server.ends_with(&format!(":{}", self.port)), "{}", access.server);
                let api: Api<ConfigMap> = Api::namespaced(access.client().await, "default");
                if api.list(&ListParams::default()).await.is_ok() {
                    return access;
                }
            }
            assert!(Instant::now() < deadline, "server {} not ready within 60 s:\n{}", self.name, self.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILL, by PID.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- log of server {} ---\n{}", self.name, self.log());
        }
    }
}

fn token() -> String {
    format!("skiff-test-{}", uuid::Uuid::new_v4().simple())
}

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": name}})).unwrap()
}

async fn two_servers(etcd: &EtcdServer) -> (Server, Server, Access, Access) {
    let token = token();
    let mut a = Server::spawn("server-a", etcd, &token);
    let access_a = a.ready().await;
    let mut b = Server::spawn("server-b", etcd, &token);
    let access_b = b.ready().await;
    assert_eq!(access_a.ca_pem, access_b.ca_pem, "both servers serve with the cluster CA kept in etcd");
    (a, b, access_a, access_b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_one_server_reach_watches_on_the_other() {
    let etcd = etcd();
    let (_a, _b, access_a, access_b) = two_servers(&etcd).await;
    let on_a: Api<ConfigMap> = Api::namespaced(access_a.client().await, "default");
    let on_b: Api<ConfigMap> = Api::namespaced(access_b.client().await, "default");

    let rv = on_b.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let mut watch = on_b.watch(&WatchParams::default().timeout(120), &rv).await.unwrap().boxed();
    let mut created = Vec::new();
    for i in 0..20 {
        let obj = on_a.create(&PostParams::default(), &cm(&format!("shared-{i}"))).await.unwrap();
        // a read through the other server sees the write at once
        let read = on_b.get(&format!("shared-{i}")).await.unwrap();
        assert_eq!(read.metadata.resource_version, obj.metadata.resource_version);
        created.push(obj.metadata.resource_version.unwrap());
    }
    let mut seen = Vec::new();
    while seen.len() < created.len() {
        match tokio::time::timeout(Duration::from_secs(20), watch.try_next()).await {
            Ok(Ok(Some(WatchEvent::Added(obj)))) => seen.push(obj.metadata.resource_version.unwrap()),
            Ok(Ok(Some(WatchEvent::Bookmark(_)))) => {}
            other => panic!("watch on server-b after {} events: {other:?}", seen.len()),
        }
    }
    assert_eq!(seen, created, "every write through server-a, in order, on server-b's watch");

    // Optimistic concurrency holds across servers.
    let mut stale = on_b.get("shared-0").await.unwrap();
    on_a.patch("shared-0", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "new"}}))).await.unwrap();
    stale.data = Some([("k".to_string(), "stale".to_string())].into());
    let err = on_b.replace("shared-0", &PostParams::default(), &stale).await.expect_err("stale write");
    assert!(matches!(err, kube::Error::Api(ref e) if e.code == 409), "{err:?}");

    // One service account signing key in etcd: a token issued by one server
    // authenticates on the other.
    let path = "/api/v1/namespaces/default/serviceaccounts/default/token";
    let (code, body) = skiff_tests::raw(&access_a.client().await, "POST", path, br#"{"spec":{}}"#.to_vec()).await;
    assert_eq!(code, 201, "{body}");
    let tr: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = tr["status"]["token"].as_str().unwrap().to_string();
    let as_sa = access_b.client_as(&skiff_tests::User::Token(token)).await;
    let (code, body) = skiff_tests::raw(&as_sa, "GET", "/api/v1/namespaces/default/configmaps", Vec::new()).await;
    assert_eq!(code, 200, "a token of server-a on server-b: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_created_through_both_servers_get_distinct_addresses_and_ports() {
    const SERVICES: usize = 200;
    let etcd = etcd();
    let (_a, _b, access_a, access_b) = two_servers(&etcd).await;
    let clients = [access_a.client().await, access_b.client().await];
    let started = Instant::now();
    let results = futures::stream::iter(0..SERVICES)
        .map(|i| {
            let api: Api<Service> = Api::namespaced(clients[i % 2].clone(), "default");
            async move {
                let svc: Service = serde_json::from_value(json!({
                    "metadata": {"name": format!("svc-{i}")},
                    "spec": {"type": "NodePort", "selector": {"app": "x"}, "ports": [{"port": 80}]},
                }))
                .unwrap();
                api.create(&PostParams::default(), &svc).await
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    println!("{SERVICES} NodePort Services through two servers in {:?}", started.elapsed());
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    for r in results {
        let svc = r.unwrap();
        let spec = svc.spec.unwrap();
        assert!(ips.insert(spec.cluster_ip.clone().unwrap()), "ClusterIP {:?} handed out twice", spec.cluster_ip);
        let port = spec.ports.unwrap()[0].node_port.unwrap();
        assert!(ports.insert(port), "NodePort {port} handed out twice");
    }
    assert_eq!((ips.len(), ports.len()), (SERVICES, SERVICES));
    let listed = Api::<Service>::namespaced(clients[1].clone(), "default").list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), SERVICES + 1, "the 200 and `kubernetes`");

    // Nodes registered through either server get distinct podCIDRs from the one leader.
    for i in 0..6 {
        let api: Api<Node> = Api::all(clients[i % 2].clone());
        let node: Node = serde_json::from_value(json!({"metadata": {"name": format!("skiff-test-node-{i}")}})).unwrap();
        api.create(&PostParams::default(), &node).await.unwrap();
    }
    let nodes: Api<Node> = Api::all(clients[0].clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let cidrs: Vec<Option<String>> =
            nodes.list(&ListParams::default()).await.unwrap().items.into_iter().map(|n| n.spec?.pod_cidr).collect();
        if cidrs.iter().all(Option::is_some) {
            let distinct: BTreeSet<_> = cidrs.iter().flatten().collect();
            assert_eq!(distinct.len(), 6, "{cidrs:?}");
            break;
        }
        assert!(Instant::now() < deadline, "podCIDRs not assigned within 60 s: {cidrs:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn lease_holder(leases: &Api<Lease>) -> Option<String> {
    leases.get_opt("skiff-controller-manager").await.ok().flatten()?.spec?.holder_identity
}

async fn pods_of(api: &Api<Pod>, app: &str) -> usize {
    api.list(&ListParams::default().labels(&format!("app={app}"))).await.map(|l| l.items.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_move_to_the_other_server_when_the_leader_is_killed() {
    let etcd = etcd();
    let (a, b, access_a, access_b) = two_servers(&etcd).await;
    let leases: Api<Lease> = Api::namespaced(access_a.client().await, "kube-system");
    let deadline = Instant::now() + Duration::from_secs(30);
    let holder = loop {
        if let Some(h) = lease_holder(&leases).await {
            break h;
        }
        assert!(Instant::now() < deadline, "no controller leader within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Exactly one leads: the other logs no leadership.
    let (mut leader, follower, follower_access) =
        if holder.starts_with("server-a_") { (a, b, access_b) } else { (b, a, access_a) };
    assert!(holder.starts_with(&format!("{}_", leader.name)), "holder {holder}");
    assert!(leader.log().contains("became leader"), "{}", leader.log());
    assert!(!follower.log().contains("became leader"), "both lead:\n{}", follower.log());

    let client = follower_access.client().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}},
        },
    }))
    .unwrap();
    deployments.create(&PostParams::default(), &deployment).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while pods_of(&pods, "web").await != 1 {
        assert!(Instant::now() < deadline, "the leader made no pod for the deployment within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let killed = Instant::now();
    leader.kill();
    deployments.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 3}}))).await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let took_over = loop {
        if let Some(h) = lease_holder(&leases).await {
            if h.starts_with(&format!("{}_", follower.name)) {
                break killed.elapsed();
            }
        }
        assert!(killed.elapsed() < Duration::from_secs(30), "no takeover within 30 s:\n{}", follower.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("{} took the controllers over {took_over:?} after SIGKILL of {}", follower.name, leader.name);
    assert!(took_over <= Duration::from_secs(15), "takeover took {took_over:?}");
    while pods_of(&pods, "web").await != 3 {
        assert!(killed.elapsed() < Duration::from_secs(45), "the deployment did not scale to 3 on the new leader");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("scaled deployment converged {:?} after the kill", killed.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_reconnect_and_watches_resume_without_a_gap_after_etcd_restarts() {
    let mut etcd = etcd();
    let (_a, b, access_a, access_b) = two_servers(&etcd).await;
    let on_a: Api<ConfigMap> = Api::namespaced(access_a.client().await, "default");
    let on_b: Api<ConfigMap> = Api::namespaced(access_b.client().await, "default");
    let first = on_a.create(&PostParams::default(), &cm("before")).await.unwrap();
    let mut last_rv = first.metadata.resource_version.unwrap();

    // A watch on server-b from after "before"; like any client, it re-watches
    // from the last resourceVersion it saw if the stream ends.
    let watcher = {
        let on_b = on_b.clone();
        let from = last_rv.clone();
        tokio::spawn(async move {
            let mut names = Vec::new();
            let mut rv = from;
            let deadline = Instant::now() + Duration::from_secs(90);
            while names.len() < 5 && Instant::now() < deadline {
                let Ok(stream) = on_b.watch(&WatchParams::default().timeout(60), &rv).await else {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                };
                let mut stream = stream.boxed();
                while let Ok(Some(event)) = stream.try_next().await {
                    match event {
                        WatchEvent::Added(obj) => {
                            rv = obj.metadata.resource_version.clone().unwrap();
                            names.push(obj.metadata.name.unwrap());
                        }
                        WatchEvent::Bookmark(b) => rv = b.metadata.resource_version,
                        WatchEvent::Error(e) => panic!("watch error (a gap): {e:?}"),
                        _ => {}
                    }
                    if names.len() == 5 {
                        break;
                    }
                }
            }
            names
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    etcd.restart().unwrap();

    for i in 0..5 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match on_a.create(&PostParams::default(), &cm(&format!("after-{i}"))).await {
                Ok(obj) => {
                    last_rv = obj.metadata.resource_version.unwrap();
                    break;
                }
                Err(kube::Error::Api(e)) if e.code == 409 => break, // an earlier try got through
                Err(e) => {
                    assert!(Instant::now() < deadline, "server-a did not reconnect to etcd within 60 s: {e}");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
    }
    let names = tokio::time::timeout(Duration::from_secs(120), watcher).await.unwrap().unwrap();
    assert_eq!(names, (0..5).map(|i| format!("after-{i}")).collect::<Vec<_>>(), "no write missed or repeated");
    let read = on_b.get("after-4").await.unwrap();
    assert_eq!(read.metadata.resource_version.unwrap(), last_rv, "server-b reads etcd again");
    // server-b kept the API watch open and re-opened its etcd watch itself
    assert!(b.log().contains("etcd watch resumed"), "{}", b.log());
}
