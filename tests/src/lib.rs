//! The API test tier's fixture: a real Skiff API server over loopback TLS,
//! driven by kube-rs and by the real kubectl binaries.
//!
//! [`Cluster::start`] runs `skiff_apiserver::start` on `127.0.0.1:0` over a
//! sled store in a temporary data dir, on a thread and runtime of its own (so
//! one server can serve many `#[tokio::test]`s, each with its own runtime),
//! and writes an admin kubeconfig for it. Dropping the cluster stops the
//! server, closes the store and deletes the data dir, also when a test panics.
//! [`Cluster::shared`] hands the tests of one file the same server while any
//! of them runs.
//!
//! [`Access`] is what a test uses to talk to a server, in-process or a
//! `skiff` child process: kube-rs clients (admin, anonymous, bearer token)
//! and `kubectl` of a given version with a fresh `--cache-dir` per
//! invocation, so discovery caches never leak between tests or versions.
#![allow(clippy::unwrap_used)]

pub mod nodes;

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use serde_json::Value;

/// kubectl 1.27: aggregated discovery v2beta1, validation via OpenAPI v2.
pub const V1_27: &str = "1.27";
/// kubectl 1.30: the first to ask for aggregated discovery v2.
pub const V1_30: &str = "1.30";
/// kubectl 1.33: discovery v2, OpenAPI v3, protobuf bodies from typed clients.
pub const V1_33: &str = "1.33";
/// The versions every kubectl test runs with.
pub const KUBECTL_VERSIONS: [&str; 2] = [V1_27, V1_33];
/// Where the versioned kubectl binaries live (`kubectl.1.27` …);
/// `SKIFF_KUBECTL_DIR` overrides it.
pub const DEFAULT_KUBECTL_DIR: &str = "/usr/lib/google-cloud-sdk/bin";
/// How long one kubectl invocation may take before it is killed.
pub const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);

/// A file of the repository, e.g. `examples/service-test.yaml`.
pub fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

/// The path of kubectl `version` (`"1.27"`). A missing binary is a test
/// failure naming the path, never a silent skip (under `CI=true` or not).
pub fn kubectl_path(version: &str) -> PathBuf {
    let dir = std::env::var_os("SKIFF_KUBECTL_DIR").map_or_else(|| PathBuf::from(DEFAULT_KUBECTL_DIR), PathBuf::from);
    let path = dir.join(format!("kubectl.{version}"));
    if !path.is_file() {
        let ci = if std::env::var("CI").as_deref() == Ok("true") { " (CI=true: kubectl tests never skip)" } else { "" };
        panic!(
            "kubectl {version} not found at {}{ci}: install the Google Cloud SDK kubectl components \
             (kubectl.1.27 … kubectl.1.33) or point SKIFF_KUBECTL_DIR at a folder that has them",
            path.display()
        );
    }
    path
}

fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A name no other test in this process uses: `prefix-<n>`.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", unique())
}

/// Who a client is.
#[derive(Debug, Clone)]
pub enum User {
    /// The admin client certificate (`system:admin`, `system:masters`).
    Admin,
    /// No certificate and no token.
    Anonymous,
    /// `Authorization: Bearer <token>` only.
    Token(String),
}

/// How to reach one API server: its URL, CA and admin credentials, and a
/// scratch folder for kubectl caches.
#[derive(Debug, Clone)]
pub struct Access {
    pub server: String,
    pub ca_pem: String,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
    /// The admin kubeconfig file kubectl uses.
    pub kubeconfig: PathBuf,
    scratch: PathBuf,
    /// Run kubectl inside this network namespace (a server in a test-made netns).
    netns: Option<PathBuf>,
}

impl Access {
    /// Read an admin kubeconfig as `skiff` writes it; kubectl caches go
    /// under `scratch`.
    pub fn from_kubeconfig_file(path: &Path, scratch: &Path) -> Result<Access> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let doc: Value = serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let field = |pointer: &str| -> Result<String> {
            doc.pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| anyhow!("{}: no {pointer}", path.display()))
        };
        let decode = |pointer: &str| -> Result<String> {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(field(pointer)?.trim())
                .with_context(|| format!("{}: {pointer} is not base64", path.display()))?;
            String::from_utf8(bytes).with_context(|| format!("{}: {pointer} is not PEM", path.display()))
        };
        std::fs::create_dir_all(scratch)?;
        Ok(Access {
            server: field("/clusters/0/cluster/server")?,
            ca_pem: decode("/clusters/0/cluster/certificate-authority-data")?,
            admin_cert_pem: decode("/users/0/user/client-certificate-data")?,
            admin_key_pem: decode("/users/0/user/client-key-data")?,
            kubeconfig: path.to_path_buf(),
            scratch: scratch.to_path_buf(),
            netns: None,
        })
    }

    /// This access with kubectl run inside the network namespace at `netns`
    /// (through `nsenter --net`, so the process keeps the host's mounts).
    pub fn in_netns(mut self, netns: &Path) -> Access {
        self.netns = Some(netns.to_path_buf());
        self
    }

    /// An access that reaches nothing yet (filled in once a server is up).
    pub fn placeholder(scratch: &Path) -> Access {
        Access {
            server: String::new(),
            ca_pem: String::new(),
            admin_cert_pem: String::new(),
            admin_key_pem: String::new(),
            kubeconfig: PathBuf::new(),
            scratch: scratch.to_path_buf(),
            netns: None,
        }
    }

    /// A kubeconfig for `user`, in the shape `skiff` writes.
    pub fn kubeconfig_yaml(&self, user: &User) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let user_yaml = match user {
            User::Admin => format!(
                "    client-certificate-data: {}\n    client-key-data: {}\n",
                b64(&self.admin_cert_pem),
                b64(&self.admin_key_pem)
            ),
            User::Anonymous => String::new(),
            User::Token(t) => format!("    token: {t}\n"),
        };
        let user_yaml = if user_yaml.is_empty() { "  user: {}\n".to_string() } else { format!("  user:\n{user_yaml}") };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {}\n    certificate-authority-data: {}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: u\n    namespace: default\ncurrent-context: skiff\nusers:\n- name: u\n{user_yaml}",
            self.server,
            b64(&self.ca_pem),
        )
    }

    /// A kube-rs client acting as the admin. Make it inside the runtime
    /// that uses it (each `#[tokio::test]` has its own).
    pub async fn client(&self) -> kube::Client {
        self.client_as(&User::Admin).await
    }

    pub async fn client_as(&self, user: &User) -> kube::Client {
        let kc = kube::config::Kubeconfig::from_yaml(&self.kubeconfig_yaml(user)).unwrap();
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await.unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// Wait until the server counts `count` open watches on `resource`
    /// (`apiserver_registered_watchers` in `/metrics`), e.g. to know that a
    /// `kubectl get -w` started in the background is listening.
    pub async fn wait_for_watchers(&self, resource: &str, count: usize) {
        let client = self.client().await;
        let line = format!("apiserver_registered_watchers{{resource=\"{resource}\"}} {count}\n");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (code, metrics) = raw(&client, "GET", "/metrics", Vec::new()).await;
            assert_eq!(code, 200, "GET /metrics: {metrics}");
            if metrics.contains(&line) {
                return;
            }
            if Instant::now() > deadline {
                panic!("waited 20 s for {line:?} in /metrics:\n{metrics}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Run kubectl `version` with `args` against this server and wait for it
    /// (killing it after [`KUBECTL_TIMEOUT`]).
    pub fn kubectl(&self, version: &str, args: &[&str]) -> KubectlOutput {
        self.kubectl_timeout(version, args, KUBECTL_TIMEOUT)
    }

    /// Like [`Access::kubectl`] with standard input.
    pub fn kubectl_stdin(&self, version: &str, args: &[&str], stdin: &str) -> KubectlOutput {
        let mut p = self.spawn(version, args, Some(stdin));
        p.wait(KUBECTL_TIMEOUT)
    }

    pub fn kubectl_timeout(&self, version: &str, args: &[&str], timeout: Duration) -> KubectlOutput {
        let mut p = self.spawn(version, args, None);
        p.wait(timeout)
    }

    /// The same command with each version, concurrently; outputs in the
    /// order of `versions`.
    pub fn kubectl_each(&self, versions: &[&str], args: &[&str]) -> Vec<KubectlOutput> {
        std::thread::scope(|s| {
            let handles: Vec<_> = versions.iter().map(|v| s.spawn(move || self.kubectl(v, args))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    /// Start kubectl in the background (for `-w`); it is killed on drop.
    pub fn kubectl_spawn(&self, version: &str, args: &[&str]) -> KubectlProcess {
        self.spawn(version, args, None)
    }

    fn spawn(&self, version: &str, args: &[&str], stdin: Option<&str>) -> KubectlProcess {
        let path = kubectl_path(version);
        let cache = self.scratch.join(format!("kubectl-cache-{}", unique()));
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display())).arg("--").arg(&path);
                c
            }
            None => Command::new(&path),
        };
        cmd.arg(format!("--cache-dir={}", cache.display()))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.scratch)
            .env_remove("KUBECTL_EXTERNAL_DIFF")
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("running {}: {e}", path.display()));
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            let text = text.to_string();
            std::thread::spawn(move || {
                use std::io::Write;
                let _ = pipe.write_all(text.as_bytes());
            });
        }
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            pump(child.stdout.take().unwrap(), Arc::clone(&stdout)),
            pump(child.stderr.take().unwrap(), Arc::clone(&stderr)),
        ];
        KubectlProcess {
            version: version.to_string(),
            args: args.iter().map(|s| s.to_string()).collect(),
            child,
            stdout,
            stderr,
            readers,
        }
    }
}

fn pump(mut from: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => into.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    })
}

/// A running kubectl. Dropping it kills that process (by its own PID only).
pub struct KubectlProcess {
    version: String,
    args: Vec<String>,
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl KubectlProcess {
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Wait until stdout satisfies `pred`; panics with both streams after `timeout`.
    pub fn wait_for_stdout(&mut self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.stdout();
            if pred(&out) {
                return out;
            }
            if Instant::now() > deadline {
                panic!(
                    "kubectl {} {}: waited {timeout:?} for {what}\n--- stdout:\n{out}\n--- stderr:\n{}",
                    self.version,
                    self.args.join(" "),
                    self.stderr.lock().unwrap()
                );
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // let the readers drain what the process wrote
                std::thread::sleep(Duration::from_millis(50));
                let out = self.stdout();
                if pred(&out) {
                    return out;
                }
                panic!(
                    "kubectl {} {} exited ({status}) before {what}\n--- stdout:\n{out}\n--- stderr:\n{}",
                    self.version,
                    self.args.join(" "),
                    self.stderr.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for the process to exit; kill it (and fail) after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> KubectlOutput {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "kubectl {} {} did not finish within {timeout:?} (killed)\n--- stdout:\n{}\n--- stderr:\n{}",
                        self.version,
                        self.args.join(" "),
                        self.stdout(),
                        self.stderr.lock().unwrap()
                    );
                }
                Err(e) => panic!("waiting for kubectl: {e}"),
            }
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        KubectlOutput {
            version: self.version.clone(),
            args: self.args.clone(),
            code: status.code(),
            stdout: self.stdout(),
            stderr: self.stderr.lock().unwrap().clone(),
        }
    }

    /// Kill the process and return what it printed.
    pub fn stop(mut self) -> KubectlOutput {
        let _ = self.child.kill();
        self.wait(Duration::from_secs(10))
    }
}

impl Drop for KubectlProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What one kubectl invocation did. The assertion helpers panic with the
/// command and both streams, so a failure explains itself.
#[derive(Debug, Clone)]
pub struct KubectlOutput {
    pub version: String,
    pub args: Vec<String>,
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl KubectlOutput {
    fn context(&self) -> String {
        format!(
            "kubectl {} {} exited with {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.version,
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }

    /// Assert exit code 0.
    pub fn success(&self) -> &Self {
        assert_eq!(self.code, Some(0), "expected success: {}", self.context());
        self
    }

    /// Assert exit code `code`.
    pub fn exit_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "expected exit code {code}: {}", self.context());
        self
    }

    pub fn stdout_has(&self, text: &str) -> &Self {
        assert!(self.stdout.contains(text), "expected stdout to contain {text:?}: {}", self.context());
        self
    }

    pub fn stdout_lacks(&self, text: &str) -> &Self {
        assert!(!self.stdout.contains(text), "expected stdout not to contain {text:?}: {}", self.context());
        self
    }

    pub fn stderr_has(&self, text: &str) -> &Self {
        assert!(self.stderr.contains(text), "expected stderr to contain {text:?}: {}", self.context());
        self
    }

    pub fn stderr_lacks(&self, text: &str) -> &Self {
        assert!(!self.stderr.contains(text), "expected stderr not to contain {text:?}: {}", self.context());
        self
    }

    pub fn stdout_is(&self, text: &str) -> &Self {
        assert_eq!(self.stdout, text, "unexpected stdout: {}", self.context());
        self
    }

    pub fn stderr_is(&self, text: &str) -> &Self {
        assert_eq!(self.stderr, text, "unexpected stderr: {}", self.context());
        self
    }

    /// The table kubectl printed: one `Vec` of cells per line, header
    /// first. Cells are split on runs of whitespace (fine for the columns
    /// these tests read, none of which contains a space).
    pub fn table(&self) -> Vec<Vec<String>> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect()
    }

    /// The cells under the header row `header` of the table, by column name.
    pub fn column(&self, name: &str) -> Vec<String> {
        let table = self.table();
        let header = table.first().unwrap_or_else(|| panic!("no table: {}", self.context()));
        let i = header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name}: {}", self.context()));
        table[1..].iter().map(|r| r.get(i).cloned().unwrap_or_default()).collect()
    }

    /// The row whose first cell is `first`.
    pub fn row(&self, first: &str) -> Vec<String> {
        self.table()
            .into_iter()
            .find(|r| r.first().map(String::as_str) == Some(first))
            .unwrap_or_else(|| panic!("no row {first:?}: {}", self.context()))
    }
}

/// The `Status` of a failed kube-rs call; panics if it succeeded or failed
/// without one.
pub fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error (a Status), got {other:?}"),
    }
}

/// A raw request with a kube-rs client: the HTTP status and the body.
pub async fn raw(client: &kube::Client, method: &str, path: &str, body: Vec<u8>) -> (u16, String) {
    try_raw(client, method, path, body).await.unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// [`raw`] that returns transport errors instead of panicking.
pub async fn try_raw(
    client: &kube::Client,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, String), kube::Error> {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(kube::client::Body::from(body))
        .map_err(kube::Error::HttpError)?;
    let resp = client.send(req).await?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect_bytes().await?;
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Create a namespace (kube-rs) for one test.
pub async fn create_namespace(client: &kube::Client, name: &str) {
    use k8s_openapi::api::core::v1::Namespace;
    let api: kube::Api<Namespace> = kube::Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    api.create(&kube::api::PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
}

/// Settings of an in-process server.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// `--service-cidr`: one range, or an IPv4 and an IPv6 range (dual-stack).
    pub service_cidr: skiff_api::families::DualCidr,
    pub node_port_range: (u16, u16),
    pub node_token: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            service_cidr: "10.96.0.0/12".parse().unwrap(),
            node_port_range: (30000, 32767),
            node_token: format!("skiff-test-token-{}", uuid::Uuid::new_v4().simple()),
        }
    }
}

/// A server running on a thread and runtime of its own.
struct ServerThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ServerThread {
    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Started {
    addr: SocketAddr,
    ca_pem: String,
    admin_cert_pem: String,
    admin_key_pem: String,
}

fn start_server(data_dir: &Path, settings: &ServerSettings) -> Result<(ServerThread, Started)> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<Started>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let data_dir = data_dir.to_path_buf();
    let settings = settings.clone();
    let thread = std::thread::Builder::new().name("skiff-test-server".into()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                let _ = ready_tx.send(Err(e.into()));
                return;
            }
        };
        runtime.block_on(async move {
            let store = match skiff_store::SledStore::open(skiff_store::SledOptions::new(data_dir.join("db"))) {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow!("opening the store: {e}")));
                    return;
                }
            };
            let config = skiff_apiserver::Config {
                tls_dir: data_dir.join("tls"),
                bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
                extra_sans: Vec::new(),
                advertise: IpAddr::V4(Ipv4Addr::LOCALHOST),
                service_cidr: settings.service_cidr,
                node_port_range: settings.node_port_range,
                node_token: settings.node_token.clone(),
            };
            let dyn_store: skiff_store::DynStore = store.clone();
            let running = match skiff_apiserver::start(config, dyn_store).await {
                Ok(r) => r,
                Err(e) => {
                    store.close();
                    let _ = ready_tx.send(Err(anyhow!("starting the API server: {e}")));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(Started {
                addr: running.addr,
                ca_pem: running.tls.ca_cert_pem.clone(),
                admin_cert_pem: running.tls.admin_cert_pem.clone(),
                admin_key_pem: running.tls.admin_key_pem.clone(),
            }));
            let _ = stop_rx.await;
            running.shutdown().await;
            store.close();
        });
        // open watch streams may still hold tasks; don't wait for them
        runtime.shutdown_timeout(Duration::from_secs(1));
    })?;
    let mut server = ServerThread { stop: Some(stop_tx), thread: Some(thread) };
    match ready_rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(started)) => Ok((server, started)),
        Ok(Err(e)) => {
            server.stop();
            Err(e)
        }
        Err(_) => {
            server.stop();
            bail!("the API server did not start within 60 s")
        }
    }
}

/// An in-process API server with its own data dir. Derefs to [`Access`].
pub struct Cluster {
    access: Access,
    settings: ServerSettings,
    server: ServerThread,
    // dropped last: the server must be stopped before its data dir goes
    dir: tempfile::TempDir,
}

impl std::ops::Deref for Cluster {
    type Target = Access;
    fn deref(&self) -> &Access {
        &self.access
    }
}

impl Cluster {
    /// Start a server with the default settings.
    pub fn start() -> Cluster {
        Self::start_with(ServerSettings::default())
    }

    pub fn start_with(settings: ServerSettings) -> Cluster {
        let dir = tempfile::Builder::new().prefix("skiff-test-").tempdir().unwrap();
        let (server, started) = start_server(&dir.path().join("data"), &settings).unwrap();
        let access = write_access(dir.path(), &started).unwrap();
        Cluster { access, settings, server, dir }
    }

    /// The server of this test file, shared by its tests while any of them
    /// holds it; stopped and deleted when the last one lets go.
    pub fn shared(slot: &'static Mutex<Weak<Cluster>>) -> Arc<Cluster> {
        let mut guard = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = guard.upgrade() {
            return c;
        }
        let c = Arc::new(Cluster::start());
        *guard = Arc::downgrade(&c);
        c
    }

    /// The join token nodes present as a bearer token.
    pub fn node_token(&self) -> &str {
        &self.settings.node_token
    }

    /// The server's data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Stop the server and start it again on the same data dir (on a new
    /// port; the kubeconfig is rewritten, so make new clients).
    pub fn restart(&mut self) {
        self.server.stop();
        let (server, started) = start_server(&self.data_dir(), &self.settings).unwrap();
        self.server = server;
        self.access = write_access(self.dir.path(), &started).unwrap();
    }
}

fn write_access(dir: &Path, s: &Started) -> Result<Access> {
    let access = Access {
        server: format!("https://{}", s.addr),
        ca_pem: s.ca_pem.clone(),
        admin_cert_pem: s.admin_cert_pem.clone(),
        admin_key_pem: s.admin_key_pem.clone(),
        kubeconfig: dir.join("kubeconfig.yaml"),
        scratch: dir.join("scratch"),
        netns: None,
    };
    std::fs::create_dir_all(&access.scratch)?;
    std::fs::write(&access.kubeconfig, access.kubeconfig_yaml(&User::Admin))?;
    Ok(access)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.server.stop();
    }
}

/// kubectl 1.32: protobuf request bodies from typed clients, discovery v2.
pub const V1_32: &str = "1.32";

impl Access {
    /// Like [`Access::kubectl`] with extra environment variables, e.g.
    /// `EDITOR` for `kubectl edit` or `TMPDIR` for where kubectl keeps the
    /// copies of failed edits.
    pub fn kubectl_env(&self, version: &str, args: &[&str], env: &[(&str, &str)]) -> KubectlOutput {
        let path = kubectl_path(version);
        let cache = self.scratch.join(format!("kubectl-cache-{}", unique()));
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display())).arg("--").arg(&path);
                c
            }
            None => Command::new(&path),
        };
        cmd.arg(format!("--cache-dir={}", cache.display()))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.scratch)
            .env_remove("KUBECTL_EXTERNAL_DIFF")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("running {}: {e}", path.display()));
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            pump(child.stdout.take().unwrap(), Arc::clone(&stdout)),
            pump(child.stderr.take().unwrap(), Arc::clone(&stderr)),
        ];
        let mut p = KubectlProcess {
            version: version.to_string(),
            args: args.iter().map(|s| s.to_string()).collect(),
            child,
            stdout,
            stderr,
            readers,
        };
        p.wait(KUBECTL_TIMEOUT)
    }
}

/// What a raw request got back: the status, the `Warning` headers' texts
/// (`299 - "text"` → `text`) and the body.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub warnings: Vec<String>,
    pub body: String,
}

/// A raw request with a kube-rs client and a `Content-Type` of the
/// caller's choosing (the patch types, `application/apply-patch+yaml`).
/// Transport errors (a dropped connection) come back as `Err`.
pub async fn raw_request(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<RawResponse, kube::Error> {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(kube::client::Body::from(body))
        .map_err(kube::Error::HttpError)?;
    let resp = client.send(req).await?;
    let status = resp.status().as_u16();
    let warnings = resp
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| {
            let text = v.splitn(3, ' ').nth(2).unwrap_or(v).trim();
            text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text).replace("\\\"", "\"")
        })
        .collect();
    let bytes = resp.into_body().collect_bytes().await?;
    Ok(RawResponse { status, warnings, body: String::from_utf8_lossy(&bytes).into_owned() })
}
