//! Test fixtures for tests that need a real containerd: a private containerd
//! per test run ([`TestContainerd`]), a network namespace ([`TestNetns`]), a
//! busybox image built from the machine's static busybox ([`TEST_IMAGE`]) and
//! a local registry ([`TestRegistry`]). Every fixture removes what it made on
//! drop, also when the test fails. A missing prerequisite panics with what to
//! install: these tests never skip silently.
//!
//! Enabled by `cfg(test)` and by the `testing` feature (for other crates' tests).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::Full;

use crate::runtime::containerd::oci::{self, Descriptor, Manifest, RunConfig};
use crate::runtime::containerd::{build_oci_archive, ContainerdRuntime, LayerEntry, OciArchive};
use crate::runtime::{ImageInfo, Runtime};

/// The busybox test image's reference.
pub const TEST_IMAGE: &str = "skiff.local/busybox:test";
/// The static busybox the test image is built from (Debian's busybox-static).
pub const BUSYBOX: &str = "/bin/busybox";

/// Panics unless `binary` is on PATH, naming the Debian package to install.
pub fn require_binary(binary: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|p| p.join(binary)).find(|p| p.is_file()))
        .unwrap_or_default();
    match found {
        Some(path) => path,
        None => panic!(
            "{binary} not found on PATH: the containerd tests need it (apt-get install -y {package}){}",
            if std::env::var("CI").as_deref() == Ok("true") { " [CI=true: this is a failure, not a skip]" } else { "" }
        ),
    }
}

/// Panics unless the tests run as root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the containerd tests need root (containers, mounts, network namespaces)"
    );
}

fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap_or_else(|e| panic!("creating a temp dir in /tmp: {e}"))
}

/// A containerd of the test's own: root, state and socket under a
/// `/tmp/skiff-test-*` directory; the cri plugin is disabled. Dropping it
/// deletes its tasks and containers, stops it and removes the directory.
pub struct TestContainerd {
    /// The gRPC socket.
    pub address: PathBuf,
    /// The directory holding everything of this containerd.
    pub dir: PathBuf,
    child: Option<Child>,
    tmp: Option<tempfile::TempDir>,
}

impl TestContainerd {
    /// Stops containerd (its shims, containers and loggers keep running)
    /// and starts it again on the same state, as after a crash or upgrade.
    pub fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGTERM);
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.address);
        self.child = Some(spawn_containerd(&self.dir));
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.address.exists() || std::os::unix::net::UnixStream::connect(&self.address).is_err() {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("containerd exited ({status}) before it listened:\n{}", self.log());
                }
            }
            assert!(Instant::now() < deadline, "containerd did not listen within 20s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts containerd and waits until it answers (panics if it cannot).
    pub fn start() -> TestContainerd {
        require_root();
        require_binary("containerd", "containerd");
        require_binary("containerd-shim-runc-v2", "containerd");
        require_binary("runc", "runc");
        let tmp = temp_dir("skiff-test-");
        let dir = tmp.path().to_path_buf();
        let address = dir.join("containerd.sock");
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{address}"

[ttrpc]
  address = ""

[debug]
  address = ""

[metrics]
  address = ""
"#,
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            address = address.display(),
        );
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config).unwrap_or_else(|e| panic!("writing {}: {e}", config_path.display()));
        let child = spawn_containerd(&dir);
        let mut fixture = TestContainerd { address, dir, child: Some(child), tmp: Some(tmp) };
        fixture.wait_ready();
        fixture
    }

    /// containerd's own log, for failure messages.
    /// The containerd process's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// A runtime on this containerd in `namespace`, logging through the
    /// test logger binary (see [`logger_binary`]).
    pub async fn runtime(&self, namespace: &str) -> ContainerdRuntime {
        let rt = ContainerdRuntime::connect(&self.address, namespace)
            .await
            .unwrap_or_else(|e| panic!("connecting to the test containerd: {e}\n{}", self.log()));
        match logger_binary() {
            Some(program) => rt.with_logger(program),
            None => rt,
        }
    }

    fn cleanup(&mut self) {
        let address = self.address.clone();
        // Drop runs inside or outside a tokio runtime: use a thread of its own.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(30), delete_everything(&address)).await;
                });
            }
        })
        .join();
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        unmount_under(&self.dir);
        if let Some(tmp) = self.tmp.take() {
            if std::thread::panicking() {
                eprintln!("--- containerd log ({}) ---\n{}", self.dir.display(), self.log());
            }
            let _ = tmp.close();
        }
    }
}

/// Starts containerd on `<dir>/config.toml`, logging (appending) to `<dir>/containerd.log`.
fn spawn_containerd(dir: &Path) -> Child {
    let containerd = require_binary("containerd", "containerd");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("containerd.log"))
        .unwrap_or_else(|e| panic!("containerd.log: {e}"));
    let log2 = log.try_clone().unwrap_or_else(|e| panic!("containerd.log: {e}"));
    Command::new(containerd)
        .arg("--config")
        .arg(dir.join("config.toml"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .unwrap_or_else(|e| panic!("starting containerd: {e}"))
}

impl Drop for TestContainerd {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Kills and deletes every task and container in every namespace.
async fn delete_everything(address: &Path) {
    use containerd_client::services::v1::namespaces_client::NamespacesClient;
    use containerd_client::services::v1::ListNamespacesRequest;
    let Ok(channel) = containerd_client::connect(address).await else {
        return;
    };
    let Ok(namespaces) = NamespacesClient::new(channel).list(ListNamespacesRequest { filter: String::new() }).await
    else {
        return;
    };
    for ns in namespaces.into_inner().namespaces {
        let Ok(rt) = ContainerdRuntime::connect(address, &ns.name).await else {
            continue;
        };
        if let Ok(containers) = rt.list(&BTreeMap::new()).await {
            for c in containers {
                let _ = rt.remove(&c.id).await;
            }
        }
        remove_empty_cgroups(&ns.name);
    }
}

/// Removes the empty cgroups runc leaves above containers' own
/// (`/<namespace>/...` in every hierarchy); busy ones stay.
pub fn remove_empty_cgroups(top: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut roots: Vec<PathBuf> = hierarchies.flatten().map(|h| h.path().join(top)).collect();
    roots.push(Path::new("/sys/fs/cgroup").join(top));
    for root in roots {
        let mut dirs = Vec::new();
        collect_dirs(&root, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    out.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// Unmounts whatever is still mounted below `dir` (deepest first).
fn unmount_under(dir: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().to_string();
    let mut targets: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|t| t.starts_with(&prefix))
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for t in targets {
        let _ = nix::mount::umount2(t.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The logger program for tests: `$SKIFF_TEST_LOGGER`, else the
/// `skiff-logger` binary of this package next to the test executable.
pub fn logger_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SKIFF_TEST_LOGGER") {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join("skiff-logger"), dir.join("../skiff-logger")].into_iter().find(|p| p.is_file())
}

/// A network namespace of the test's own (`/run/netns/skiff-test-*`) with
/// its loopback up; deleted on drop.
pub struct TestNetns {
    pub name: String,
    pub path: PathBuf,
}

impl TestNetns {
    pub fn new() -> TestNetns {
        require_root();
        require_binary("ip", "iproute2");
        let name = format!("skiff-test-{:08x}", rand::random::<u32>());
        run(Command::new("ip").args(["netns", "add", &name]));
        let netns = TestNetns { path: PathBuf::from(format!("/run/netns/{name}")), name };
        run(Command::new("ip").args(["netns", "exec", &netns.name, "ip", "link", "set", "lo", "up"]));
        netns
    }
}

impl Default for TestNetns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The files of the busybox test image: /bin/busybox with a symlink per
/// applet, /etc/passwd and /etc/group (users root, nobody and `skiff`
/// (1000, also in group `extra` 2000)), /tmp.
pub fn busybox_entries() -> Vec<LayerEntry> {
    let data =
        std::fs::read(BUSYBOX).unwrap_or_else(|e| panic!("reading {BUSYBOX}: {e} (apt-get install -y busybox-static)"));
    let list = Command::new(BUSYBOX).arg("--list").output().unwrap_or_else(|e| panic!("{BUSYBOX} --list: {e}"));
    let mut entries = vec![
        LayerEntry::Dir { path: "bin".into(), mode: 0o755 },
        LayerEntry::Dir { path: "etc".into(), mode: 0o755 },
        LayerEntry::Dir { path: "tmp".into(), mode: 0o1777 },
        LayerEntry::Dir { path: "root".into(), mode: 0o700 },
        LayerEntry::Dir { path: "www".into(), mode: 0o755 },
        LayerEntry::File { path: "bin/busybox".into(), mode: 0o755, data },
        LayerEntry::File {
            path: "etc/passwd".into(),
            mode: 0o644,
            data: b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nskiff:x:1000:1000:skiff:/tmp:/bin/sh\n".to_vec(),
        },
        LayerEntry::File {
            path: "etc/group".into(),
            mode: 0o644,
            data: b"root:x:0:\nnogroup:x:65534:\nskiff:x:1000:\nextra:x:2000:skiff\n".to_vec(),
        },
        LayerEntry::File { path: "www/index.html".into(), mode: 0o644, data: b"hello from httpd\n".to_vec() },
    ];
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        if applet != "busybox" && !applet.contains('/') {
            entries.push(LayerEntry::Symlink { path: format!("bin/{applet}"), target: "busybox".into() });
        }
    }
    entries
}

/// The busybox test image as an OCI layout tarball.
pub fn busybox_archive(name: &str) -> OciArchive {
    let config = RunConfig {
        cmd: Some(vec!["sh".into()]),
        env: Some(vec!["PATH=/bin".into()]),
        working_dir: Some("/".into()),
        ..Default::default()
    };
    build_oci_archive(name, &busybox_entries(), &config).unwrap_or_else(|e| panic!("building the test image: {e}"))
}

/// Writes the test image archive to `dir` and imports it as [`TEST_IMAGE`].
pub async fn import_test_image(rt: &ContainerdRuntime, dir: &Path) -> ImageInfo {
    let path = dir.join("busybox-test.tar");
    std::fs::write(&path, busybox_archive(TEST_IMAGE).bytes)
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    let mut images = rt.import(&path).await.unwrap_or_else(|e| panic!("importing the test image: {e}"));
    assert_eq!(images.len(), 1, "the test archive holds one image");
    images.remove(0)
}

/// Debian's `docker-registry` on a free loopback port, storing under a temp dir.
pub struct TestRegistry {
    /// `127.0.0.1:<port>`.
    pub address: String,
    child: Child,
    _tmp: tempfile::TempDir,
}

impl TestRegistry {
    pub async fn start() -> TestRegistry {
        require_root();
        let binary = require_binary("docker-registry", "docker-registry");
        let tmp = temp_dir("skiff-test-registry-");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap_or_else(|e| panic!("finding a free port: {e}"))
            .port();
        let address = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}\n",
            tmp.path().join("data").display()
        );
        let config_path = tmp.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap_or_else(|e| panic!("writing the registry config: {e}"));
        let log = std::fs::File::create(tmp.path().join("registry.log")).unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap_or_else(|e| panic!("{e}")))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting docker-registry: {e}"));
        let registry = TestRegistry { address, child, _tmp: tmp };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(&registry.address).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "docker-registry did not listen on {} within 20s", registry.address);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        registry
    }

    /// Pushes a one-layer image (gzip layer, OCI manifest) as `repo:tag`;
    /// returns the manifest digest.
    pub async fn push(&self, repo: &str, tag: &str, entries: &[LayerEntry], config: &RunConfig) -> String {
        let archive = build_oci_archive("x/y:z", entries, config).unwrap_or_else(|e| panic!("{e}"));
        // Take the layer and config back out of the archive, then gzip the layer.
        let mut tar = tar::Archive::new(std::io::Cursor::new(archive.bytes));
        let mut blobs = BTreeMap::new();
        for entry in tar.entries().unwrap_or_else(|e| panic!("{e}")) {
            let mut entry = entry.unwrap_or_else(|e| panic!("{e}"));
            let name = entry.path().unwrap_or_else(|e| panic!("{e}")).to_string_lossy().to_string();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap_or_else(|e| panic!("{e}"));
            blobs.insert(name, data);
        }
        let manifest: Manifest =
            serde_json::from_slice(&blobs[&oci::blob_path(&archive.manifest_digest)]).unwrap_or_else(|e| panic!("{e}"));
        let config_bytes = blobs[&oci::blob_path(&manifest.config.digest)].clone();
        let layer = &blobs[&oci::blob_path(&manifest.layers[0].digest)];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, layer).unwrap_or_else(|e| panic!("{e}"));
        let layer_gz = gz.finish().unwrap_or_else(|e| panic!("{e}"));
        let layer_desc = Descriptor {
            media_type: oci::MT_OCI_LAYER_GZIP.into(),
            digest: oci::sha256_digest(&layer_gz),
            size: layer_gz.len() as i64,
            annotations: BTreeMap::new(),
            platform: None,
        };
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(oci::MT_OCI_MANIFEST.into()),
            config: manifest.config,
            layers: vec![layer_desc],
        };
        self.upload(repo, &config_bytes).await;
        self.upload(repo, &layer_gz).await;
        let body = serde_json::to_vec(&manifest).unwrap_or_else(|e| panic!("{e}"));
        let digest = oci::sha256_digest(&body);
        let url = format!("http://{}/v2/{repo}/manifests/{tag}", self.address);
        let req = Request::builder()
            .method(Method::PUT)
            .uri(&url)
            .header(header::CONTENT_TYPE, oci::MT_OCI_MANIFEST)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|e| panic!("{e}"));
        let resp = http_client().send(req).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), StatusCode::CREATED, "PUT {url}");
        digest
    }

    async fn upload(&self, repo: &str, data: &[u8]) {
        let client = http_client();
        let url = format!("http://{}/v2/{repo}/blobs/uploads/", self.address);
        let req = Request::builder()
            .method(Method::POST)
            .uri(&url)
            .body(Full::new(Bytes::new()))
            .unwrap_or_else(|e| panic!("{e}"));
        let resp = client.send(req).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "POST {url}");
        let location = resp.headers()[header::LOCATION].to_str().unwrap_or_else(|e| panic!("{e}")).to_string();
        let location =
            if location.starts_with("http") { location } else { format!("http://{}{location}", self.address) };
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = format!("{location}{sep}digest={}", oci::sha256_digest(data));
        let req = Request::builder()
            .method(Method::PUT)
            .uri(&put)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(Bytes::copy_from_slice(data)))
            .unwrap_or_else(|e| panic!("{e}"));
        let resp = client.send(req).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), StatusCode::CREATED, "PUT {put}");
    }
}

fn http_client() -> crate::runtime::containerd::registry::HttpClient {
    crate::runtime::containerd::registry::HttpClient::new().unwrap_or_else(|e| panic!("{e}"))
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
