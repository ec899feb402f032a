//! The `skiff` binary as an operator runs it: flags, the kubeconfig it
//! writes, restarts on the same data dir, a taken port, and SIGTERM.
//! Each test starts its own `skiff server` child on 127.0.0.1 and kills
//! only that child's PID when it ends.
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use skiff_tests::{raw, try_raw, Access, User, V1_27, V1_33};

const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");

fn skiff(args: &[&str]) -> Command {
    let mut cmd = Command::new(SKIFF);
    cmd.args(args).env_remove("SKIFF_DATA_DIR").env_remove("SKIFF_TOKEN").env("SKIFF_LOG", "info");
    cmd
}

/// Run a `skiff` command that should end by itself.
fn run(args: &[&str]) -> Output {
    let mut child = skiff(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "skiff {args:?} still running after 30 s (killed); stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `skiff server` child process; killed (by its PID) on drop.
struct Server {
    child: Child,
    data_dir: PathBuf,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn spawn(data_dir: &Path, port: u16) -> Server {
        std::fs::create_dir_all(data_dir).unwrap();
        let log = data_dir.with_extension(format!("{port}.log"));
        let port_s = port.to_string();
        // no agent: these tests run in the machine's own network namespace
        let child = skiff(&[
            "server",
            "--disable-agent",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--bind-address",
            "127.0.0.1",
            "--https-listen-port",
            &port_s,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
        Server { child, data_dir: data_dir.to_path_buf(), port, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig.yaml")
    }

    /// Wait until the kubeconfig is written and `/readyz` answers 200.
    async fn ready(&mut self) -> Access {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("skiff server exited ({status}) before it was ready; log:\n{}", self.log());
            }
            if self.kubeconfig().exists() {
                if let Ok(access) = Access::from_kubeconfig_file(&self.kubeconfig(), &self.data_dir.join("scratch")) {
                    let anonymous = access.client_as(&User::Anonymous).await;
                    if let Ok((200, body)) = try_raw(&anonymous, "GET", "/readyz", Vec::new()).await {
                        assert_eq!(body, "ok");
                        return access;
                    }
                }
            }
            if Instant::now() > deadline {
                panic!("skiff server not ready after 30 s; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then wait for the exit.
    fn terminate(&mut self, within: Duration) -> ExitStatus {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success(), "kill -TERM {pid}");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if started.elapsed() > within {
                panic!("skiff server still running {within:?} after SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn a_bad_node_port_range_exits_1_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for range in ["30000", "32767-30000", "30000-99999", "low-high"] {
        let out = run(&["server", "--disable-agent", "--data-dir", d, "--service-node-port-range", range]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{range}: {stderr}");
        assert!(stderr.contains(&format!("--service-node-port-range {range:?}")), "{range}: {stderr}");
    }
}

#[test]
fn a_bad_service_cidr_exits_1_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for cidr in
        ["10.96.0.0", "not-a-cidr", "10.96.0.0/30", "fd00::/100", "10.96.0.0/12,10.0.0.0/8", "10.96.0.0/12,fd00::/125"]
    {
        let out = run(&["server", "--disable-agent", "--data-dir", d, "--service-cidr", cidr]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cidr}: {stderr}");
        assert!(stderr.contains(&format!("--service-cidr {cidr:?}")), "{cidr}: {stderr}");
    }
    // nothing was started: no kubeconfig
    assert!(!dir.path().join("kubeconfig.yaml").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubeconfig_is_private_and_works_with_kubectl() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::spawn(&dir.path().join("data"), free_port());
    let access = server.ready().await;
    let mode = std::fs::metadata(server.kubeconfig()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "kubeconfig mode {mode:o}");
    assert_eq!(access.server, format!("https://127.0.0.1:{}", server.port));
    for out in access.kubectl_each(&[V1_27, V1_33], &["get", "ns", "kube-system"]) {
        out.success().stdout_has("kube-system   Active");
    }

    // `skiff kubeconfig` prints one that kubectl can use
    let url = format!("https://127.0.0.1:{}", server.port);
    let printed = run(&["kubeconfig", "--data-dir", server.data_dir.to_str().unwrap(), "--server", &url]);
    assert_eq!(printed.status.code(), Some(0), "{}", String::from_utf8_lossy(&printed.stderr));
    let path = dir.path().join("printed.kubeconfig");
    std::fs::write(&path, &printed.stdout).unwrap();
    let printed_access = Access::from_kubeconfig_file(&path, &dir.path().join("scratch2")).unwrap();
    assert_eq!(printed_access.server, url);
    assert_eq!(printed_access.ca_pem, access.ca_pem, "same CA as the written kubeconfig");
    printed_access
        .kubectl(V1_33, &["get", "svc", "kubernetes"])
        .success()
        .stdout_has("kubernetes   ClusterIP   10.96.0.1");
}

#[test]
fn skiff_kubeconfig_without_a_cluster_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = run(&["kubeconfig", "--data-dir", d]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no cluster here yet") && stderr.contains(&format!("skiff server --data-dir {d}")),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = Server::spawn(&dir.path().join("data"), port);
    let access = server.ready().await;
    // an open watch must not hold the shutdown up
    let mut watch = access.kubectl_spawn(V1_33, &["get", "ns", "-w"]);
    watch.wait_for_stdout("the namespace list", Duration::from_secs(20), |o| o.contains("kube-system"));
    let status = server.terminate(Duration::from_secs(8));
    assert_eq!(status.code(), Some(0), "exit status {status}; log:\n{}", server.log());
    assert!(server.log().contains("shutting down"), "log:\n{}", server.log());
    drop(watch);
    // the port is free again
    TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("port {port} still taken: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_ca_and_the_objects() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let mut first = Server::spawn(&data, port);
    let before = first.ready().await;
    let api: Api<ConfigMap> = Api::default_namespaced(before.client().await);
    let cm: ConfigMap = serde_json_cm("survivor");
    let created = api.create(&PostParams::default(), &cm).await.unwrap();
    // keep the first kubeconfig aside: it must still work afterwards
    let saved = dir.path().join("before.kubeconfig");
    std::fs::copy(first.kubeconfig(), &saved).unwrap();
    assert_eq!(first.terminate(Duration::from_secs(8)).code(), Some(0), "log:\n{}", first.log());

    let mut second = Server::spawn(&data, port);
    let after = second.ready().await;
    assert_eq!(after.ca_pem, before.ca_pem, "the CA survives a restart");
    let old = Access::from_kubeconfig_file(&saved, &dir.path().join("scratch-old")).unwrap();
    for out in old.kubectl_each(&[V1_27, V1_33], &["get", "cm", "survivor", "-o", "jsonpath={.metadata.uid}"]) {
        out.success().stdout_is(created.metadata.uid.as_deref().unwrap());
    }
    let api: Api<ConfigMap> = Api::default_namespaced(old.client().await);
    assert_eq!(api.get("survivor").await.unwrap().data.unwrap()["k"], "v");
    let (code, _) = raw(&old.client().await, "GET", "/api/v1/namespaces/kube-system", Vec::new()).await;
    assert_eq!(code, 200);
}

fn serde_json_cm(name: &str) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.to_string());
    cm.data = Some([("k".to_string(), "v".to_string())].into());
    cm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_a_taken_port_exits_naming_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut first = Server::spawn(&dir.path().join("one"), port);
    first.ready().await;
    let other = dir.path().join("two");
    let port_s = port.to_string();
    let out = run(&[
        "server",
        "--disable-agent",
        "--data-dir",
        other.to_str().unwrap(),
        "--bind-address",
        "127.0.0.1",
        "--https-listen-port",
        &port_s,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.contains("Address already in use"), "{stderr}");
    // the first server is unaffected
    let access = Access::from_kubeconfig_file(&first.kubeconfig(), &dir.path().join("scratch")).unwrap();
    access.kubectl(V1_33, &["get", "ns", "default"]).success();
}

#[test]
fn bad_datastore_flags_exit_1_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &["--datastore-endpoint", "mysql://db:3306"],
            "--datastore-endpoint \"mysql://db:3306\": only etcd is supported",
        ),
        (
            &["--datastore-endpoint", "etcd://host"],
            "--datastore-endpoint \"etcd://host\": member \"host\" is not host:port",
        ),
        (&["--datastore-cafile", "/nonexistent/ca.crt"], "need --datastore-endpoint"),
        (
            &["--datastore-endpoint", "etcd://127.0.0.1:2379", "--datastore-certfile", "/nonexistent/c.crt"],
            "--datastore-certfile and --datastore-keyfile go together",
        ),
    ];
    for (flags, message) in cases {
        let mut args = vec!["server", "--disable-agent", "--data-dir", d];
        args.extend_from_slice(flags);
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flags:?}: {stderr}");
        assert!(stderr.contains(message), "{flags:?}: {stderr}");
    }
    // The same keys work in a --config file.
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "datastore-endpoint: etcd://host\n").unwrap();
    let out = run(&["server", "--disable-agent", "--data-dir", d, "--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--datastore-endpoint \"etcd://host\""), "{stderr}");
    assert!(!dir.path().join("kubeconfig.yaml").exists());
}

#[test]
fn an_unreachable_etcd_exits_1_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let endpoint = format!("etcd://127.0.0.1:{port}");
    let out = run(&[
        "server",
        "--disable-agent",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--datastore-endpoint",
        &endpoint,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("--datastore-endpoint: cannot use etcd at 127.0.0.1:{port}")), "{stderr}");
}

#[test]
fn an_agent_server_list_must_be_https_urls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out =
        run(&["agent", "--data-dir", d, "--token", "x", "--server", "https://127.0.0.1:6443,http://127.0.0.1:6444"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--server \"http://127.0.0.1:6444\": expected an https:// URL"), "{stderr}");
}
