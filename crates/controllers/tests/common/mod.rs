//! The fixture of the control-loop tests: a real API server on loopback over
//! a sled store in a temp dir, the control loops (`skiff_controllers::run`)
//! and the node simulator, all in the test's own runtime; and real kubectl.
//! Everything goes away when the test ends: the runtime drops the tasks, the
//! temp dir removes itself, kubectl children are killed by their own PID.
#![allow(clippy::unwrap_used, dead_code)]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use skiff_controllers::sim::{SimConfig, Simulator};
use skiff_controllers::ControllerOptions;
use tokio::sync::watch;

pub const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

pub struct Env {
    pub client: kube::Client,
    pub kubeconfig: PathBuf,
    pub sim: Option<Simulator>,
    pub server: String,
    pub running: Option<skiff_apiserver::Running>,
    stop: watch::Sender<bool>,
    controllers: Option<tokio::task::JoinHandle<()>>,
    pub dir: tempfile::TempDir,
}

/// Options with test-sized timings.
pub fn fast_options() -> ControllerOptions {
    ControllerOptions {
        identity: Some("test-controllers".into()),
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(250),
        ..Default::default()
    }
}

pub fn sim_config(nodes: usize) -> SimConfig {
    SimConfig { nodes, lease_renew: Duration::from_millis(500), ..Default::default() }
}

impl Env {
    pub async fn start(opts: ControllerOptions, sim: Option<SimConfig>) -> Env {
        // SKIFF_TEST_LOG=skiff_controllers=debug shows the loops at work
        if let Ok(filter) = std::env::var("SKIFF_TEST_LOG") {
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
        let dir = tempfile::Builder::new().prefix("skiff-test-controllers-").tempdir().unwrap();
        let store = skiff_store::SledStore::open(skiff_store::SledOptions::new(dir.path().join("db"))).unwrap();
        let config = skiff_apiserver::Config {
            tls_dir: dir.path().join("tls"),
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            extra_sans: Vec::new(),
            advertise: IpAddr::V4(Ipv4Addr::LOCALHOST),
            // dual-stack ranges: Services stay IPv4-only unless they ask for both families
            service_cidr: "10.96.0.0/12,fd00:10:96::/112".parse().unwrap(),
            node_port_range: (30000, 32767),
            node_token: "test-token".into(),
        };
        let running = skiff_apiserver::start(config, store).await.unwrap();
        let server = format!("https://127.0.0.1:{}", running.addr.port());
        let tls = &running.tls;
        let client =
            skiff_controllers::client_from_pem(&server, &tls.ca_cert_pem, &tls.admin_cert_pem, &tls.admin_key_pem)
                .await
                .unwrap();
        let kubeconfig = dir.path().join("kubeconfig.yaml");
        std::fs::write(&kubeconfig, kubeconfig_yaml(&server, tls)).unwrap();
        let mut opts = opts;
        if opts.root_ca_pem.is_none() {
            opts.root_ca_pem = Some(tls.ca_cert_pem.clone());
        }
        let (stop, rx) = watch::channel(false);
        let c = client.clone();
        let controllers = Some(tokio::spawn(async move {
            skiff_controllers::run(c, opts, rx).await.unwrap();
        }));
        let sim = match sim {
            Some(cfg) => Some(Simulator::start(client.clone(), cfg).await.unwrap()),
            None => None,
        };
        Env { client, kubeconfig, sim, server, running: Some(running), stop, controllers, dir }
    }

    /// The loops die as a killed process would: no lease release.
    pub fn abort_controllers(&mut self) {
        if let Some(c) = self.controllers.take() {
            c.abort();
        }
    }

    pub fn sim(&self) -> &Simulator {
        self.sim.as_ref().unwrap()
    }

    /// Stop the loops, the simulator and the server, in that order.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(c) = self.controllers.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), c).await;
        }
        if let Some(s) = self.sim.take() {
            s.shutdown().await;
        }
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// Run kubectl 1.33 against this server (killed after `timeout`).
    pub fn kubectl(&self, args: &[&str], timeout: Duration) -> KubectlOutput {
        kubectl(&self.kubeconfig, self.dir.path(), args, timeout)
    }
}

fn kubeconfig_yaml(server: &str, tls: &skiff_apiserver::tls::ClusterTls) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: admin\n    namespace: default\ncurrent-context: skiff\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(&tls.ca_cert_pem),
        b64(&tls.admin_cert_pem),
        b64(&tls.admin_key_pem),
    )
}

#[derive(Debug)]
pub struct KubectlOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl KubectlOutput {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// kubectl 1.33 with its own cache dir; a missing binary fails the test.
pub fn kubectl(
    kubeconfig: &std::path::Path,
    scratch: &std::path::Path,
    args: &[&str],
    timeout: Duration,
) -> KubectlOutput {
    assert!(
        std::path::Path::new(KUBECTL).is_file(),
        "kubectl 1.33 not found at {KUBECTL}: install the Google Cloud SDK kubectl components"
    );
    let cache = scratch.join(format!("kubectl-cache-{}", uuid::Uuid::new_v4().simple()));
    let mut child = Command::new(KUBECTL)
        .arg(format!("--cache-dir={}", cache.display()))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", scratch)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out =
        KubectlOutput { code: status.and_then(|s| s.code()), stdout: o.join().unwrap(), stderr: e.join().unwrap() };
    assert!(status.is_some(), "kubectl {} did not finish within {timeout:?}: {out:?}", args.join(" "));
    out
}

/// Poll `f` until it returns Some, or panic after `timeout` saying `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn deployment(name: &str, replicas: i32, image: &str) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image, "ports": [{"name": "http", "containerPort": 8080}]}]},
            },
        },
    }))
    .unwrap()
}

pub fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Pods of `app` that are Ready and not being deleted.
pub async fn ready_pods(client: &kube::Client, ns: &str, app: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
        .collect()
}

/// Wait until the deployment is fully rolled out with `replicas` ready pods.
pub async fn wait_rolled_out(
    client: &kube::Client,
    ns: &str,
    name: &str,
    replicas: i32,
    timeout: Duration,
) -> Deployment {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    wait_for(&format!("deployment {ns}/{name} rolled out with {replicas} replicas"), timeout, || {
        let api = api.clone();
        async move {
            let d = api.get(name).await.ok()?;
            let s = d.status.clone()?;
            let done = s.observed_generation >= d.metadata.generation
                && s.updated_replicas == Some(replicas)
                && s.replicas == Some(replicas)
                && s.ready_replicas == Some(replicas)
                && s.available_replicas == Some(replicas);
            done.then_some(d)
        }
    })
    .await
}
