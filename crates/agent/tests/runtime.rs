//! The containerd runtime against a real containerd and runc (root needed).
//! Each test starts a containerd of its own (`skiff_agent::testing`), so
//! tests run in parallel and clean up after themselves, also on failure.
//! A missing containerd, runc or docker-registry fails the test with what
//! to install: these tests never skip.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use skiff_agent::runtime::containerd::{ensure_pause_image, ContainerdRuntime, PAUSE_IMAGE, SNAPSHOTTER};
use skiff_agent::runtime::{ContainerSpec, Namespaces, Runtime, RuntimeError, TaskState, LABEL_CONTAINER, LABEL_NODE};
use skiff_agent::testing::{self, TestContainerd, TestNetns, TestRegistry, TEST_IMAGE};

const NAMESPACE: &str = "skiff-test";
const LOGGER: &str = env!("CARGO_BIN_EXE_skiff-logger");

/// A containerd, a runtime on it, the test image imported, and a temp dir for logs.
struct Setup {
    rt: ContainerdRuntime,
    dir: tempfile::TempDir,
    // Dropped last: stops containerd after the runtime is gone.
    containerd: TestContainerd,
}

async fn setup() -> Setup {
    let containerd = TestContainerd::start();
    let rt = containerd.runtime(NAMESPACE).await.with_logger(LOGGER);
    let dir = tempfile::Builder::new().prefix("skiff-test-logs-").tempdir().expect("temp dir");
    testing::import_test_image(&rt, dir.path()).await;
    Setup { rt, dir, containerd }
}

fn spec(setup: &Setup, id: &str, node: &str, args: &[&str]) -> ContainerSpec {
    ContainerSpec {
        id: id.to_string(),
        image: TEST_IMAGE.to_string(),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/bin".to_string()],
        log_path: setup.dir.path().join(format!("{id}.log")),
        labels: [(LABEL_NODE.to_string(), node.to_string()), (LABEL_CONTAINER.to_string(), id.to_string())].into(),
        ..Default::default()
    }
}

async fn run_to_exit(setup: &Setup, spec: &ContainerSpec) -> i32 {
    setup.rt.create(spec).await.unwrap_or_else(|e| panic!("create {}: {e}\n{}", spec.id, setup.containerd.log()));
    setup.rt.start(&spec.id).await.unwrap_or_else(|e| panic!("start {}: {e}\n{}", spec.id, setup.containerd.log()));
    assert!(setup.rt.wait_exit(&spec.id, Duration::from_secs(20)).await.expect("wait"), "{} did not exit", spec.id);
    match setup.rt.inspect(&spec.id).await.expect("inspect").state {
        TaskState::Exited { exit_code, .. } => exit_code,
        other => panic!("{} is {other:?} after exiting", spec.id),
    }
}

/// The (stream, tag, content) records of a CRI log, waiting until `ready` holds.
async fn log_records(
    path: &Path,
    ready: impl Fn(&[(String, String, String)]) -> bool,
) -> Vec<(String, String, String)> {
    let mut records = Vec::new();
    for _ in 0..100 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        records = text
            .lines()
            .map(|line| {
                let mut parts = line.splitn(4, ' ');
                let ts = parts.next().unwrap_or_default();
                assert!(
                    chrono::DateTime::parse_from_rfc3339(ts).is_ok() && ts.ends_with('Z'),
                    "bad timestamp in CRI log line {line:?}"
                );
                let stream = parts.next().unwrap_or_default().to_string();
                let tag = parts.next().unwrap_or_default().to_string();
                (stream, tag, parts.next().unwrap_or_default().to_string())
            })
            .collect();
        if ready(&records) {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    records
}

fn has(records: &[(String, String, String)], stream: &str, content: &str) -> bool {
    records.iter().any(|(s, t, c)| s == stream && t == "F" && c == content)
}

#[tokio::test]
async fn import_is_idempotent_and_images_are_inspectable() {
    let s = setup().await;
    // The second import (setup did the first) changes nothing.
    let again = testing::import_test_image(&s.rt, s.dir.path()).await;
    let info = s.rt.image(TEST_IMAGE).await.expect("image").expect("the test image is there");
    assert_eq!(info, again);
    assert_eq!(info.reference, TEST_IMAGE);
    assert!(info.id.starts_with("sha256:"));
    assert!(info.repo_digest.as_deref().is_some_and(|d| d.starts_with("skiff.local/busybox@sha256:")));
    assert_eq!(info.cmd, ["sh"]);
    assert_eq!(info.env, ["PATH=/bin"]);
    assert!(info.size > 500_000, "size {}", info.size);
    // By image id, too.
    assert_eq!(s.rt.image(&info.id).await.expect("by id").map(|i| i.reference), Some(TEST_IMAGE.to_string()));
    let all = s.rt.list_images().await.expect("list");
    assert_eq!(all.iter().filter(|i| i.reference == TEST_IMAGE).count(), 1);
    assert_eq!(s.rt.image("busybox:nope").await.expect("lookup"), None);
}

#[tokio::test]
async fn docker_archives_import_under_their_repo_tags() {
    let s = setup().await;
    let path = s.dir.path().join("docker.tar.gz");
    std::fs::write(&path, docker_archive(&["busybox:docker", "example.com/team/tool:2"])).expect("write");
    let images = s.rt.import(&path).await.expect("import docker archive");
    let names: Vec<&str> = images.iter().map(|i| i.reference.as_str()).collect();
    assert_eq!(names, ["docker.io/library/busybox:docker", "example.com/team/tool:2"]);
    // Short names resolve to the normalized reference.
    let info = s.rt.image("busybox:docker").await.expect("image").expect("imported");
    assert_eq!(info.cmd, ["sh"]);
    let spec =
        ContainerSpec { image: "busybox:docker".into(), ..spec(&s, "from-docker", "n1", &["sh", "-c", "exit 7"]) };
    assert_eq!(run_to_exit(&s, &spec).await, 7);
    // Not an archive at all.
    let junk = s.dir.path().join("junk.tar");
    std::fs::write(&junk, b"not a tarball").expect("write");
    assert!(matches!(s.rt.import(&junk).await, Err(RuntimeError::Import { .. })));
}

/// A gzip-compressed docker-archive (manifest.json + layer tar) of the test image.
fn docker_archive(tags: &[&str]) -> Vec<u8> {
    let archive = testing::busybox_archive("x/y:z");
    let mut blobs = BTreeMap::new();
    let mut tar = tar::Archive::new(std::io::Cursor::new(archive.bytes));
    for entry in tar.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").to_string_lossy().to_string();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).expect("read");
        blobs.insert(name, data);
    }
    let hex = archive.manifest_digest.trim_start_matches("sha256:");
    let manifest: serde_json::Value = serde_json::from_slice(&blobs[&format!("blobs/sha256/{hex}")]).expect("manifest");
    let blob = |d: &serde_json::Value| {
        blobs[&format!("blobs/sha256/{}", d.as_str().expect("digest").trim_start_matches("sha256:"))].clone()
    };
    let config = blob(&manifest["config"]["digest"]);
    let layer = blob(&manifest["layers"][0]["digest"]);
    let docker_manifest = serde_json::json!([{"Config": "config.json", "RepoTags": tags, "Layers": ["abc/layer.tar"]}]);
    let mut out = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("manifest.json", serde_json::to_vec(&docker_manifest).expect("json")),
        ("config.json", config),
        ("abc/layer.tar", layer),
    ] {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        out.append_data(&mut header, name, data.as_slice()).expect("append");
    }
    let tarball = out.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tarball).expect("gzip");
    gz.finish().expect("gzip")
}

#[tokio::test]
async fn a_container_logs_in_cri_format_and_reports_its_exit_code() {
    let s = setup().await;
    let spec = spec(&s, "hello", "n1", &["sh", "-c", "echo hello; echo err >&2; exit 3"]);
    s.rt.create(&spec).await.expect("create");
    let created = s.rt.inspect("hello").await.expect("inspect");
    assert_eq!(created.state, TaskState::Unknown);
    assert_eq!(created.image, TEST_IMAGE);
    assert_eq!(created.labels[LABEL_NODE], "n1");
    let pid = s.rt.start("hello").await.expect("start");
    assert!(pid > 0);
    assert!(s.rt.wait_exit("hello", Duration::from_secs(20)).await.expect("wait"));
    let info = s.rt.inspect("hello").await.expect("inspect");
    match info.state {
        TaskState::Exited { exit_code, started_at, finished_at, oom_killed } => {
            assert_eq!(exit_code, 3);
            assert!(!oom_killed);
            let started = started_at.expect("a start time");
            assert!(finished_at >= started && started >= info.created_at);
        }
        other => panic!("expected Exited, got {other:?}"),
    }
    assert!(!info.labels.contains_key(skiff_agent::runtime::containerd::LABEL_STARTED_AT));
    let records = log_records(&spec.log_path, |r| r.len() >= 2).await;
    assert!(has(&records, "stdout", "hello"), "{records:?}");
    assert!(has(&records, "stderr", "err"), "{records:?}");
    assert_eq!(records.len(), 2, "{records:?}");
}

#[tokio::test]
async fn sigterm_stops_a_container_that_handles_it_and_sigkill_any() {
    let s = setup().await;
    let handles = spec(&s, "traps", "n1", &["sh", "-c", "trap 'exit 0' TERM; echo ready; sleep 1000 & wait"]);
    let ignores = spec(&s, "sleeper", "n1", &["sleep", "1000"]);
    for c in [&handles, &ignores] {
        s.rt.create(c).await.expect("create");
        s.rt.start(&c.id).await.expect("start");
        assert!(matches!(s.rt.inspect(&c.id).await.expect("inspect").state, TaskState::Running { .. }));
    }
    let listed = s.rt.list(&BTreeMap::from([(LABEL_NODE.to_string(), "n1".to_string())])).await.expect("list");
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|c| matches!(c.state, TaskState::Running { pid, .. } if pid > 0)), "{listed:?}");
    log_records(&handles.log_path, |r| has(r, "stdout", "ready")).await;
    assert!(!s.rt.wait_exit("traps", Duration::from_millis(200)).await.expect("wait"), "exited early");
    s.rt.kill("traps", 15).await.expect("SIGTERM");
    assert!(s.rt.wait_exit("traps", Duration::from_secs(10)).await.expect("wait"));
    assert!(matches!(s.rt.inspect("traps").await.expect("inspect").state, TaskState::Exited { exit_code: 0, .. }));

    // `sleep` as PID 1 has no SIGTERM handler, so the kernel ignores SIGTERM: SIGKILL it is.
    s.rt.kill("sleeper", 15).await.expect("SIGTERM");
    assert!(!s.rt.wait_exit("sleeper", Duration::from_millis(500)).await.expect("wait"));
    s.rt.kill("sleeper", 9).await.expect("SIGKILL");
    assert!(s.rt.wait_exit("sleeper", Duration::from_secs(10)).await.expect("wait"));
    assert!(matches!(s.rt.inspect("sleeper").await.expect("inspect").state, TaskState::Exited { exit_code: 137, .. }));
    // Signalling an exited container is not an error; an unknown one is.
    s.rt.kill("sleeper", 15).await.expect("kill after exit");
    assert!(matches!(s.rt.kill("nobody", 15).await, Err(RuntimeError::NotFound(_))));
}

#[tokio::test]
async fn app_containers_share_the_sandbox_namespaces() {
    let s = setup().await;
    let netns = TestNetns::new();
    ensure_pause_image(&s.rt).await.expect("pause image");
    ensure_pause_image(&s.rt).await.expect("pause image again");
    let sandbox = ContainerSpec {
        image: PAUSE_IMAGE.to_string(),
        hostname: "pod-a".to_string(),
        namespaces: Namespaces { network: Some(netns.path.clone()), ..Default::default() },
        cgroup_parent: "/skiff-test/n1/pod-a".to_string(),
        ..spec(&s, "pod-a-sandbox", "n1", &["/pause"])
    };
    s.rt.create(&sandbox).await.expect("create sandbox");
    let pid = s.rt.start(&sandbox.id).await.expect("start sandbox");
    let join = |id: &str, args: &[&str]| ContainerSpec {
        hostname: "ignored".to_string(),
        namespaces: Namespaces {
            network: Some(netns.path.clone()),
            ipc: Some(PathBuf::from(format!("/proc/{pid}/ns/ipc"))),
            uts: Some(PathBuf::from(format!("/proc/{pid}/ns/uts"))),
            ..Default::default()
        },
        cgroup_parent: "/skiff-test/n1/pod-a".to_string(),
        ..spec(&s, id, "n1", args)
    };

    let hostname = join("pod-a-hostname", &["hostname"]);
    assert_eq!(run_to_exit(&s, &hostname).await, 0);
    let records = log_records(&hostname.log_path, |r| !r.is_empty()).await;
    assert!(has(&records, "stdout", "pod-a"), "{records:?}");

    let server = join("pod-a-httpd", &["httpd", "-f", "-p", "8080", "-h", "/www"]);
    s.rt.create(&server).await.expect("create httpd");
    s.rt.start(&server.id).await.expect("start httpd");
    let client = join(
        "pod-a-wget",
        &["sh", "-c", "for i in $(seq 1 100); do wget -qO- http://127.0.0.1:8080/ && exit 0; sleep 0.1; done; exit 1"],
    );
    assert_eq!(run_to_exit(&s, &client).await, 0);
    let records = log_records(&client.log_path, |r| !r.is_empty()).await;
    assert!(has(&records, "stdout", "hello from httpd"), "{records:?}");

    // The pause container exits 0 on SIGTERM.
    s.rt.kill(&sandbox.id, 15).await.expect("SIGTERM");
    assert!(s.rt.wait_exit(&sandbox.id, Duration::from_secs(10)).await.expect("wait"));
    assert!(matches!(s.rt.inspect(&sandbox.id).await.expect("inspect").state, TaskState::Exited { exit_code: 0, .. }));
    for id in [&server.id, &client.id, &hostname.id, &sandbox.id] {
        s.rt.remove(id).await.expect("remove");
    }
}

#[tokio::test]
async fn remove_cleans_up_container_task_and_snapshot() {
    use skiff_agent::runtime::containerd::reference::normalize;
    let s = setup().await;
    let spec = spec(&s, "doomed", "n1", &["sleep", "1000"]);
    s.rt.create(&spec).await.expect("create");
    s.rt.start("doomed").await.expect("start");
    assert!(snapshot_keys(&s.rt).await.contains(&"doomed".to_string()));
    s.rt.remove("doomed").await.expect("remove a running container");
    assert!(matches!(s.rt.inspect("doomed").await, Err(RuntimeError::NotFound(_))));
    assert!(!snapshot_keys(&s.rt).await.contains(&"doomed".to_string()));
    // Removing again is fine; the id can be used again.
    s.rt.remove("doomed").await.expect("remove twice");
    s.rt.create(&spec).await.expect("create again");
    assert!(matches!(s.rt.create(&spec).await, Err(RuntimeError::Container { .. })), "duplicate id");
    s.rt.remove("doomed").await.expect("remove a created container");
    assert_eq!(normalize(TEST_IMAGE), TEST_IMAGE);
}

async fn snapshot_keys(rt: &ContainerdRuntime) -> Vec<String> {
    use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
    use containerd_client::services::v1::snapshots::ListSnapshotsRequest;
    let mut req = containerd_client::tonic::Request::new(ListSnapshotsRequest {
        snapshotter: SNAPSHOTTER.to_string(),
        filters: Vec::new(),
    });
    req.metadata_mut().insert("containerd-namespace", NAMESPACE.parse().expect("ascii"));
    let mut stream = SnapshotsClient::new(rt.channel()).list(req).await.expect("list snapshots").into_inner();
    let mut keys = Vec::new();
    while let Some(batch) = stream.message().await.expect("list snapshots") {
        keys.extend(batch.info.into_iter().map(|i| i.name));
    }
    keys
}

#[tokio::test]
async fn labels_keep_two_nodes_apart() {
    let s = setup().await;
    for (id, node) in [("a1", "node-a"), ("b1", "node-b"), ("b2", "node-b")] {
        s.rt.create(&spec(&s, id, node, &["true"])).await.expect("create");
    }
    let only = |node: &str| BTreeMap::from([(LABEL_NODE.to_string(), node.to_string())]);
    let ids = |list: Vec<skiff_agent::runtime::ContainerInfo>| {
        let mut ids: Vec<String> = list.into_iter().map(|c| c.id).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(s.rt.list(&only("node-a")).await.expect("list")), ["a1"]);
    assert_eq!(ids(s.rt.list(&only("node-b")).await.expect("list")), ["b1", "b2"]);
    let both = BTreeMap::from([
        (LABEL_NODE.to_string(), "node-b".to_string()),
        (LABEL_CONTAINER.to_string(), "b2".to_string()),
    ]);
    assert_eq!(ids(s.rt.list(&both).await.expect("list")), ["b2"]);
    assert!(s.rt.list(&only("node-c")).await.expect("list").is_empty());
    assert_eq!(ids(s.rt.list(&BTreeMap::new()).await.expect("list")), ["a1", "b1", "b2"]);
}

#[tokio::test]
async fn unknown_images_and_users_are_clear_errors() {
    let s = setup().await;
    let missing = ContainerSpec { image: "skiff.local/nope:1".into(), ..spec(&s, "x", "n1", &["true"]) };
    match s.rt.create(&missing).await {
        Err(RuntimeError::ImageNotFound(image)) => assert_eq!(image, "skiff.local/nope:1"),
        other => panic!("expected ImageNotFound, got {other:?}"),
    }
    // runAsUser / group and supplementary groups reach the process.
    let mut as_user = spec(&s, "as-user", "n1", &["sh", "-c", "id -u; id -g; id -G"]);
    as_user.security.run_as_user = Some(1000);
    as_user.security.supplemental_groups = vec![3000];
    assert_eq!(run_to_exit(&s, &as_user).await, 0);
    let records = log_records(&as_user.log_path, |r| r.len() >= 3).await;
    let out: Vec<&str> = records.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(out, ["1000", "1000", "1000 2000 3000"], "uid, gid from /etc/passwd, groups from /etc/group");
}

#[tokio::test]
async fn pulls_from_a_plain_http_registry_on_loopback() {
    let s = setup().await;
    let registry = TestRegistry::start().await;
    let config = skiff_agent::runtime::containerd::oci::RunConfig {
        cmd: Some(vec!["sh".into()]),
        env: Some(vec!["PATH=/bin".into(), "FROM=registry".into()]),
        ..Default::default()
    };
    let digest = registry.push("test/busybox", "1", &testing::busybox_entries(), &config).await;
    let reference = format!("{}/test/busybox:1", registry.address);
    let info = s.rt.pull(&reference, None).await.unwrap_or_else(|e| panic!("pull: {e}"));
    assert_eq!(info.reference, reference);
    assert_eq!(info.repo_digest, Some(format!("{}/test/busybox@{digest}", registry.address)));
    assert_eq!(info.env, ["PATH=/bin", "FROM=registry"]);
    let again = s.rt.pull(&reference, None).await.expect("pull again");
    assert_eq!(again, info);
    // By digest.
    let by_digest =
        s.rt.pull(&format!("{}/test/busybox@{digest}", registry.address), None).await.expect("pull by digest");
    assert_eq!(by_digest.id, info.id);
    // The pulled (gzip) layer runs.
    let spec = ContainerSpec { image: reference.clone(), ..spec(&s, "pulled", "n1", &["sh", "-c", "echo $FROM"]) };
    let spec = ContainerSpec { env: info.env.clone(), ..spec };
    assert_eq!(run_to_exit(&s, &spec).await, 0);
    assert!(has(&log_records(&spec.log_path, |r| !r.is_empty()).await, "stdout", "registry"));
    match s.rt.pull(&format!("{}/test/busybox:missing", registry.address), None).await {
        Err(RuntimeError::Pull { message, .. }) => assert!(message.contains("not found"), "{message}"),
        other => panic!("expected a pull error, got {other:?}"),
    }
}

#[tokio::test]
async fn containers_and_their_logs_survive_a_containerd_restart() {
    let mut s = setup().await;
    let spec = spec(&s, "ticker", "n1", &["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done"]);
    s.rt.create(&spec).await.expect("create");
    let pid = s.rt.start("ticker").await.expect("start");
    log_records(&spec.log_path, |r| r.len() >= 3).await;
    s.containerd.restart();
    // A new agent process would connect afresh and adopt the container.
    let rt = s.containerd.runtime(NAMESPACE).await.with_logger(LOGGER);
    match rt.inspect("ticker").await.expect("inspect after restart").state {
        TaskState::Running { pid: now, .. } => assert_eq!(now, pid),
        other => panic!("expected the container to run on, got {other:?}"),
    }
    let before = std::fs::read_to_string(&spec.log_path).expect("log").lines().count();
    let records = log_records(&spec.log_path, |r| r.len() >= before + 5).await;
    assert!(records.len() >= before + 5, "the log stopped growing after the restart: {records:?}");
    for (i, (stream, tag, content)) in records.iter().enumerate() {
        assert_eq!((stream.as_str(), tag.as_str(), content.as_str()), ("stdout", "F", format!("tick {i}").as_str()));
    }
    rt.remove("ticker").await.expect("remove");
    s.rt = rt;
}

#[tokio::test]
async fn an_oom_kill_is_reported() {
    let s = setup().await;
    let mut spec = spec(&s, "hog", "n1", &["sh", "-c", "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo survived"]);
    spec.resources.memory_limit = Some(32 << 20);
    spec.cgroup_parent = "/skiff-test/oom".to_string();
    s.rt.create(&spec).await.expect("create");
    s.rt.start("hog").await.expect("start");
    assert!(s.rt.wait_exit("hog", Duration::from_secs(30)).await.expect("wait"));
    match s.rt.inspect("hog").await.expect("inspect").state {
        TaskState::Exited { exit_code, oom_killed, .. } => {
            assert_eq!(exit_code, 137);
            assert!(oom_killed, "the OOM kill was not detected");
        }
        other => panic!("expected Exited, got {other:?}"),
    }
}

/// Air gap: archives in the agent's images dir are imported once each, and
/// a broken one is skipped without stopping the others; `skiff image`
/// imports and lists them from the command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_dir_imports_each_archive_once_and_the_cli_imports_and_lists() {
    let ctrd = TestContainerd::start();
    let rt = ctrd.runtime("skiff-images").await;
    let dir = tempfile::Builder::new().prefix("skiff-test-images-").tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::write(images.join("a.tar"), testing::busybox_archive("skiff.local/airgap-a:1").bytes).unwrap();
    std::fs::write(images.join("b.tar"), testing::busybox_archive("skiff.local/airgap-b:1").bytes).unwrap();
    std::fs::write(images.join("broken.tar"), b"not a tarball").unwrap();
    assert_eq!(skiff_agent::images::import_dir(&rt, &images).await.unwrap(), 2);
    assert!(rt.image("skiff.local/airgap-a:1").await.unwrap().is_some());
    assert!(rt.image("skiff.local/airgap-b:1").await.unwrap().is_some());
    // again: nothing new to import
    assert_eq!(skiff_agent::images::import_dir(&rt, &images).await.unwrap(), 0);

    // the CLI (the skiff binary, built by cargo for the workspace's tests)
    let skiff = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/skiff");
    if !skiff.exists() {
        panic!("{} is missing: `cargo build -p skiff` first (make test does)", skiff.display());
    }
    let archive = dir.path().join("c.tar");
    std::fs::write(&archive, testing::busybox_archive("skiff.local/airgap-c:1").bytes).unwrap();
    let endpoint = ctrd.address.to_str().unwrap().to_string();
    let common = ["--container-runtime-endpoint", endpoint.as_str(), "--containerd-namespace", "skiff-images"];
    let out = std::process::Command::new(&skiff)
        .args(["image", "import", archive.to_str().unwrap()])
        .args(common)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported skiff.local/airgap-c:1"));
    let out = std::process::Command::new(&skiff).args(["image", "ls"]).args(common).output().unwrap();
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && listed.starts_with("IMAGE"), "{listed}");
    for name in ["skiff.local/airgap-a:1", "skiff.local/airgap-b:1", "skiff.local/airgap-c:1"] {
        assert!(listed.contains(name), "{name} missing from:\n{listed}");
    }
}
