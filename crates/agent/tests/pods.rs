//! End-to-end tests of the node agent: a real API server, a containerd of
//! the test's own, and the agent as a child process. Everything runs inside
//! a network namespace the test makes (`skiff-test-*`, by `ip netns add`):
//! the test's threads join it, and the agent child process is started from
//! one of them (so it starts there; it checks that it did). Nothing touches the machine's own network
//! namespace. The guards remove what a test made, also when it fails, and
//! print the agent's log then.

#![allow(clippy::unwrap_used)]

mod support;

use std::fs;
use std::io::{Read, Write};

use std::path::Path;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use skiff_agent::runtime::{Runtime, LABEL_POD_UID};
use skiff_agent::testing::TEST_IMAGE;
use support::{tail, with_cluster, CONTAINERD_NS, NODE};

/// The agent process of these tests (started by them, not a test itself).
#[test]
#[ignore = "the agent process the end-to-end tests start"]
fn agent_child() {
    support::agent_child();
}

fn container_status(p: &Pod, name: &str) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    p.status.as_ref()?.container_statuses.as_ref()?.iter().find(|c| c.name == name).cloned()
}

fn condition(p: &Pod, ty: &str) -> Option<String> {
    p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == ty).map(|c| c.status.clone())
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// GET `path` on port 8080 of the pod, from inside its network namespace.
fn http_in_pod(netns: &Path, path: &str) -> std::io::Result<String> {
    let mut s = skiff_net::netns::connect_tcp(netns, "127.0.0.1:8080".parse().unwrap(), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn roommates_share_localhost_and_see_env_and_volumes() {
    with_cluster(|c| async move {
        let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-content"}, "data": {"index.html": "hello from a configmap"}}))
        .unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
        let pod = c.create_pod(serde_json::json!({
            "metadata": {"name": "roommates", "labels": {"app": "web"}},
            "spec": {
                "volumes": [{"name": "www", "configMap": {"name": "web-content"}}, {"name": "scratch", "emptyDir": {}}],
                "containers": [
                    {"name": "web", "image": TEST_IMAGE, "command": ["httpd", "-f", "-p", "8080", "-h", "/www"],
                     "volumeMounts": [{"name": "www", "mountPath": "/www"}],
                     "readinessProbe": {"httpGet": {"path": "/index.html", "port": 8080}, "periodSeconds": 1}},
                    {"name": "client", "image": TEST_IMAGE,
                     "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                             {"name": "GREETING", "value": "hello $(POD_NAME)"}],
                     "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                     "command": ["sh", "-c", "echo greeting=$GREETING; echo svc=$KUBERNETES_SERVICE_HOST; echo host=$(hostname); cat /etc/resolv.conf; echo shared > /scratch/x; while true; do echo got=$(wget -qO- http://127.0.0.1:8080/index.html); sleep 1; done"]}
                ]}})).await;
        let p = c
            .wait_pod("roommates", 90, "Running and Ready", |p| {
                phase(p) == "Running" && condition(p, "Ready").as_deref() == Some("True")
            })
            .await;
        let web = container_status(&p, "web").unwrap();
        assert!(web.ready && web.started == Some(true) && web.restart_count == 0);
        assert!(web.container_id.as_deref().unwrap_or("").starts_with("containerd://"), "{web:?}");
        assert_eq!(web.image, "skiff.local/busybox:test");
        let st = p.status.as_ref().unwrap();
        assert_eq!(st.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(st.pod_ip, None, "a loopback-only pod network gives no address");
        assert_eq!(st.qos_class.as_deref(), Some("BestEffort"));
        assert!(st.start_time.is_some());
        for ty in ["PodReadyToStartContainers", "Initialized", "ContainersReady", "PodScheduled"] {
            assert_eq!(condition(&p, ty).as_deref(), Some("True"), "{ty}");
        }

        // the roommate reaches the web server on localhost, through the configMap file
        let log = c.wait_log("roommates", "client", "got=hello from a configmap", 30).await;
        assert!(log.contains("greeting=hello roommates"), "{log}");
        assert!(log.contains("svc=10.96.0.1"), "the kubernetes service's variables: {log}");
        assert!(log.contains("host=roommates"), "{log}");
        assert!(log.contains("nameserver 10.96.0.10"), "{log}");
        assert!(log.contains("search default.svc.cluster.local svc.cluster.local cluster.local"), "{log}");
        assert!(log.contains("options ndots:5"), "{log}");

        // the test reaches it too, from inside the pod's network namespace
        let netns = c.netns_of(&p);
        let body = tokio::task::spawn_blocking(move || http_in_pod(&netns, "/index.html")).await.unwrap().unwrap();
        assert!(body.starts_with("HTTP/1.") && body.ends_with("hello from a configmap"), "{body}");
        // and not from the test's own namespace: the pod has its own stack
        assert!(std::net::TcpStream::connect_timeout(&"127.0.0.1:8080".parse().unwrap(), Duration::from_millis(500))
            .is_err());

        // a changed ConfigMap reaches the running pod
        let patch = serde_json::json!({"data": {"index.html": "updated content"}});
        cms.patch("web-content", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        c.wait_log("roommates", "client", "got=updated content", 45).await;

        // events as the kubelet writes them
        c.wait_event("roommates", "Started", "Started container web", 10).await;
        let e = c.wait_event("roommates", "Pulled", "already present on machine", 10).await;
        assert_eq!(e.source.as_ref().and_then(|s| s.component.as_deref()), Some("kubelet"));
        assert_eq!(e.source.as_ref().and_then(|s| s.host.as_deref()), Some(NODE));
        assert_eq!(e.involved_object.field_path.as_deref(), Some("spec.containers{web}"));

        // tailLines as kubectl logs --tail asks
        let pods_dir = c.agent_dir().join("pods");
        let (dir, uid) = skiff_agent::logs::find_pod_log_dir(&pods_dir, "default", "roommates").unwrap();
        assert_eq!(Some(uid.as_str()), pod.metadata.uid.as_deref());
        let files = skiff_agent::logs::container_logs(&dir, "client")[0].1.clone();
        let still: skiff_agent::logs::StillRunning = Box::new(|| Box::pin(async { false }));
        let opts = skiff_agent::logs::LogOptions { tail_lines: Some(1), timestamps: true, ..Default::default() };
        use futures::StreamExt;
        let last: Vec<bytes::Bytes> = skiff_agent::logs::serve_logs(files, opts, still).collect().await;
        let last = String::from_utf8_lossy(&last.concat()).into_owned();
        assert_eq!(last.lines().count(), 1, "{last}");
        assert!(last.contains("Z got="), "a timestamp, then the line: {last}");

        // and the same log through the API server, which proxies pods/log to
        // the agent's HTTPS endpoint with mutual TLS (kubectl logs --tail=1)
        let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
        let lp = kube::api::LogParams { container: Some("client".into()), tail_lines: Some(1), ..Default::default() };
        let via_api = pods.logs("roommates", &lp).await.unwrap();
        assert!(via_api.starts_with("got="), "{via_api}");
        // a container the pod doesn't have is Kubernetes' BadRequest
        let bad = kube::api::LogParams { container: Some("nosuch".into()), ..Default::default() };
        match pods.logs("roommates", &bad).await {
            Err(kube::Error::Api(s)) => assert!(s.message.contains("container nosuch is not valid"), "{s:?}"),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn crashing_containers_restart_with_backoff_and_jobs_finish() {
    with_cluster(|c| async move {
        c.create_pod(serde_json::json!({"metadata": {"name": "crasher"}, "spec": {
            "containers": [{"name": "crash", "image": TEST_IMAGE, "command": ["sh", "-c", "echo boom; exit 3"]}]}}))
            .await;
        c.create_pod(serde_json::json!({"metadata": {"name": "job-ok"}, "spec": {"restartPolicy": "OnFailure",
            "containers": [{"name": "work", "image": TEST_IMAGE, "command": ["sh", "-c", "echo done"]}]}}))
            .await;
        c.create_pod(serde_json::json!({"metadata": {"name": "job-fail"}, "spec": {"restartPolicy": "Never",
            "containers": [{"name": "work", "image": TEST_IMAGE, "command": ["sh", "-c", "exit 7"]}]}}))
            .await;
        let p = c
            .wait_pod("crasher", 60, "a crash loop", |p| {
                container_status(p, "crash").is_some_and(|s| {
                    s.restart_count >= 1
                        && s.state.as_ref().and_then(|st| st.waiting.as_ref()).and_then(|w| w.reason.as_deref())
                            == Some("CrashLoopBackOff")
                })
            })
            .await;
        let s = container_status(&p, "crash").unwrap();
        let w = s.state.unwrap().waiting.unwrap();
        let uid = p.metadata.uid.clone().unwrap();
        assert_eq!(
            w.message.as_deref(),
            Some(format!("back-off 10s restarting failed container=crash pod=crasher_default({uid})").as_str())
        );
        let last = s.last_state.unwrap().terminated.unwrap();
        assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
        assert_eq!(phase(&p), "Running");
        assert_eq!(condition(&p, "Ready").as_deref(), Some("False"));
        // the back-off holds it for 10 s, then it runs again
        let t0 = Instant::now();
        let p = c
            .wait_pod("crasher", 40, "restartCount 2", |p| {
                container_status(p, "crash").is_some_and(|s| s.restart_count >= 2)
            })
            .await;
        assert!(
            t0.elapsed() >= Duration::from_secs(5),
            "restarted after {:?}, before the back-off ended",
            t0.elapsed()
        );
        let _ = p;
        c.wait_event("crasher", "BackOff", "Back-off restarting failed container crash in pod crasher_default", 10)
            .await;
        let logs = c.logs("crasher", "crash", true).await;
        assert_eq!(logs, "boom\n", "kubectl logs --previous");

        let p = c.wait_pod("job-ok", 60, "Succeeded", |p| phase(p) == "Succeeded").await;
        let t = container_status(&p, "work").unwrap().state.unwrap().terminated.unwrap();
        assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
        assert_eq!(container_status(&p, "work").unwrap().restart_count, 0);
        // a finished pod gives up its sandbox and network namespace, and keeps its logs
        let netns = c.netns_of(&p);
        let deadline = Instant::now() + Duration::from_secs(30);
        while netns.exists() {
            assert!(Instant::now() < deadline, "the finished pod's netns remains\n{}", tail(&c.agent_log(), 30));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(c.logs("job-ok", "work", false).await, "done\n");
        let p = c.wait_pod("job-fail", 60, "Failed", |p| phase(p) == "Failed").await;
        let t = container_status(&p, "work").unwrap().state.unwrap().terminated.unwrap();
        assert_eq!((t.exit_code, t.reason.as_deref()), (7, Some("Error")));
    });
}

#[test]
fn probes_flip_readiness_and_restart_on_liveness_failure() {
    with_cluster(|c| async move {
        c.create_pod(serde_json::json!({"metadata": {"name": "ready-then-not"}, "spec": {"containers": [{
            "name": "web", "image": TEST_IMAGE,
            "command": ["sh", "-c", "mkdir -p /www && echo ok > /www/ready && httpd -p 8080 -h /www && sleep 6 && rm /www/ready && sleep 3600"],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1, "failureThreshold": 1}}]}}))
            .await;
        c.create_pod(serde_json::json!({"metadata": {"name": "live"}, "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
            "name": "web", "image": TEST_IMAGE,
            "command": ["sh", "-c", "mkdir -p /www && echo ok > /www/healthz && httpd -p 8080 -h /www && sleep 4 && rm /www/healthz && sleep 3600"],
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1, "failureThreshold": 2}}]}}))
            .await;
        c.wait_pod("ready-then-not", 60, "Ready", |p| condition(p, "Ready").as_deref() == Some("True")).await;
        let p =
            c.wait_pod("ready-then-not", 30, "unready", |p| condition(p, "Ready").as_deref() == Some("False")).await;
        assert_eq!(phase(&p), "Running");
        assert!(!container_status(&p, "web").unwrap().ready);
        let cond = p.status.unwrap().conditions.unwrap().into_iter().find(|c| c.type_ == "ContainersReady").unwrap();
        assert_eq!(cond.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(cond.message.as_deref(), Some("containers with unready status: [web]"));
        c.wait_event(
            "ready-then-not",
            "Unhealthy",
            "Readiness probe failed: HTTP probe failed with statuscode: 404",
            10,
        )
        .await;

        let first = c.wait_pod("live", 60, "Running", |p| phase(p) == "Running").await;
        let first_id = container_status(&first, "web").unwrap().container_id;
        let p = c
            .wait_pod("live", 60, "a liveness restart", |p| {
                container_status(p, "web").is_some_and(|s| s.restart_count >= 1)
            })
            .await;
        assert_ne!(container_status(&p, "web").unwrap().container_id, first_id);
        c.wait_event("live", "Killing", "Container web failed liveness probe, will be restarted", 10).await;
        c.wait_event("live", "Unhealthy", "Liveness probe failed", 10).await;
    });
}

/// A gRPC health server (tonic's, a real gRPC implementation) listening on
/// `port` inside a pod's network namespace; the reporter sets what it answers.
fn grpc_health_in_pod(netns: &Path, port: u16) -> tonic_health::server::HealthReporter {
    let ns = netns.to_path_buf();
    let std_listener = std::thread::spawn(move || {
        support::enter(&ns);
        let l = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
        l.set_nonblocking(true).unwrap();
        l
    })
    .join()
    .unwrap();
    let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
    let (reporter, health) = tonic_health::server::health_reporter();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(tonic::transport::Server::builder().add_service(health).serve_with_incoming(incoming));
    reporter
}

#[test]
fn grpc_probes_follow_the_health_service_in_the_pod() {
    with_cluster(|c| async move {
        c.create_pod(serde_json::json!({"metadata": {"name": "grpc-ready"}, "spec": {"containers": [{
            "name": "app", "image": TEST_IMAGE, "command": ["sleep", "3600"],
            "readinessProbe": {"grpc": {"port": 9090}, "periodSeconds": 1, "failureThreshold": 1}}]}}))
            .await;
        let p = c.wait_pod("grpc-ready", 60, "Running", |p| phase(p) == "Running").await;
        // the probe dials the pod's address (loopback in its namespace when this fixture gives none)
        let ip = p.status.as_ref().unwrap().pod_ip.clone().unwrap_or_else(|| "127.0.0.1".into());
        // nothing listens yet: refused, in the kubelet's words
        c.wait_event(
            "grpc-ready",
            "Unhealthy",
            &format!("Readiness probe failed: error: failed to connect service at \"{ip}:9090\": dial tcp {ip}:9090: connect: connection refused"),
            15,
        )
        .await;
        let reporter = grpc_health_in_pod(&c.netns_of(&p), 9090);
        reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
        c.wait_event(
            "grpc-ready",
            "Unhealthy",
            "Readiness probe failed: service unhealthy (responded with \"NOT_SERVING\")",
            15,
        )
        .await;
        assert_eq!(condition(&c.pods().get("grpc-ready").await.unwrap(), "Ready").as_deref(), Some("False"));
        reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
        c.wait_pod("grpc-ready", 15, "Ready", |p| condition(p, "Ready").as_deref() == Some("True")).await;
        reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
        c.wait_pod("grpc-ready", 15, "unready again", |p| condition(p, "Ready").as_deref() == Some("False")).await;
    });
}

#[test]
fn exec_probes_and_lifecycle_hooks_run_in_the_container() {
    with_cluster(|c| async move {
        let out = c.dir.join("hooks");
        fs::create_dir_all(&out).unwrap();
        let host_out = serde_json::json!([{"name": "out", "hostPath": {"path": out, "type": "Directory"}}]);
        // readiness follows a file the container removes after a while
        c.create_pod(serde_json::json!({"metadata": {"name": "exec-ready"}, "spec": {"containers": [{
            "name": "app", "image": TEST_IMAGE,
            "command": ["sh", "-c", "touch /tmp/ready && sleep 6 && rm /tmp/ready && sleep 3600"],
            "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1, "failureThreshold": 1}}]}}))
            .await;
        // liveness fails once the file is gone: the container is replaced
        c.create_pod(serde_json::json!({"metadata": {"name": "exec-live"}, "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
            "name": "app", "image": TEST_IMAGE,
            "command": ["sh", "-c", "touch /tmp/alive && sleep 3 && rm /tmp/alive && sleep 3600"],
            "livenessProbe": {"exec": {"command": ["sh", "-c", "test -e /tmp/alive || { echo not alive; exit 1; }"]},
                "periodSeconds": 1, "failureThreshold": 2}}]}}))
            .await;
        // a probe slower than its timeout fails
        c.create_pod(serde_json::json!({"metadata": {"name": "exec-slow"}, "spec": {"containers": [{
            "name": "app", "image": TEST_IMAGE, "command": ["sleep", "3600"],
            "readinessProbe": {"exec": {"command": ["sleep", "5"]}, "timeoutSeconds": 1, "periodSeconds": 2}}]}}))
            .await;
        // postStart writes a file the main process waits for; preStop runs before SIGTERM
        c.create_pod(serde_json::json!({"metadata": {"name": "hooks"}, "spec": {"terminationGracePeriodSeconds": 20,
            "volumes": host_out, "containers": [{
            "name": "app", "image": TEST_IMAGE, "volumeMounts": [{"name": "out", "mountPath": "/out"}],
            "command": ["sh", "-c", "trap 'echo term >> /out/order; exit 0' TERM; while [ ! -e /tmp/started ]; do sleep 0.1; done; echo \"saw $(cat /tmp/started)\"; while true; do sleep 1; done"],
            "lifecycle": {
                "postStart": {"exec": {"command": ["sh", "-c", "echo poststart > /tmp/started"]}},
                "preStop": {"exec": {"command": ["sh", "-c", "echo prestop >> /out/order; sleep 1"]}}}}]}}))
            .await;
        // a failing postStart hook kills the container
        c.create_pod(serde_json::json!({"metadata": {"name": "hook-fails"}, "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
            "name": "app", "image": TEST_IMAGE, "command": ["sleep", "3600"],
            "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "echo broken hook; exit 3"]}}}}]}}))
            .await;

        c.wait_pod("exec-ready", 60, "Ready", |p| condition(p, "Ready").as_deref() == Some("True")).await;
        let p = c.wait_pod("exec-ready", 30, "unready", |p| condition(p, "Ready").as_deref() == Some("False")).await;
        assert_eq!(phase(&p), "Running");
        c.wait_event("exec-ready", "Unhealthy", "Readiness probe failed: cat: can't open '/tmp/ready'", 10).await;

        let first = c.wait_pod("exec-live", 60, "Running", |p| phase(p) == "Running").await;
        let first_id = container_status(&first, "app").unwrap().container_id;
        let p = c
            .wait_pod("exec-live", 60, "a liveness restart", |p| {
                container_status(p, "app").is_some_and(|s| s.restart_count >= 1)
            })
            .await;
        // (the first read may already see the restarted container: compare with attempt 0)
        let _ = first_id;
        let id = container_status(&p, "app").unwrap().container_id.unwrap_or_default();
        assert!(!id.ends_with("-app-0"), "the liveness failure did not replace the container: {id}");
        c.wait_event("exec-live", "Unhealthy", "Liveness probe failed: not alive", 10).await;
        c.wait_event("exec-live", "Killing", "Container app failed liveness probe, will be restarted", 10).await;

        c.wait_event("exec-slow", "Unhealthy", "Readiness probe failed: command \"sleep 5\" timed out", 30).await;
        let p = c.pods().get("exec-slow").await.unwrap();
        assert_eq!(condition(&p, "Ready").as_deref(), Some("False"));

        c.wait_pod("hooks", 60, "Ready", |p| condition(p, "Ready").as_deref() == Some("True")).await;
        c.wait_log("hooks", "app", "saw poststart", 20).await;
        c.pods().delete("hooks", &DeleteParams::default()).await.unwrap();
        let took = c.wait_gone("hooks", 40).await;
        assert!(took >= Duration::from_millis(900), "the preStop hook's sleep is part of the termination: {took:?}");
        assert_eq!(fs::read_to_string(out.join("order")).unwrap(), "prestop\nterm\n");

        c.wait_event("hook-fails", "FailedPostStartHook", "command 'sh -c echo broken hook; exit 3' exited with 3", 60)
            .await;
        let e = c.wait_event("hook-fails", "FailedPostStartHook", "broken hook", 5).await;
        assert!(e.message.unwrap().starts_with("Exec lifecycle hook ([\"sh\", \"-c\", \"echo broken hook; exit 3\"]) for Container \"app\" in Pod \"hook-fails_default("));
        c.wait_pod("hook-fails", 60, "a restart", |p| container_status(p, "app").is_some_and(|s| s.restart_count >= 1))
            .await;
    });
}

/// A pod cgroup's directory in the hierarchy holding `controller` (v1), or
/// the unified one (v2).
fn cgroup_dir(controller: &str, path: &str) -> std::path::PathBuf {
    let base = Path::new("/sys/fs/cgroup");
    let rel = path.trim_start_matches('/');
    if base.join("cgroup.controllers").exists() {
        base.join(rel)
    } else {
        base.join(controller).join(rel)
    }
}

fn read_trim(p: std::path::PathBuf) -> String {
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).trim().to_string()
}

#[test]
fn pods_run_in_their_own_cgroup_with_the_pods_limits() {
    with_cluster(|c| async move {
        let sleeper = |name: &str, limits: serde_json::Value| serde_json::json!({"name": name, "image": TEST_IMAGE, "command": ["sleep", "3600"], "resources": {"limits": limits}});
        c.create_pod(serde_json::json!({"metadata": {"name": "cg-guaranteed"}, "spec": {"containers": [
            sleeper("a", serde_json::json!({"cpu": "200m", "memory": "32Mi"})),
            sleeper("b", serde_json::json!({"cpu": "300m", "memory": "32Mi"}))]}}))
            .await;
        c.create_pod(serde_json::json!({"metadata": {"name": "cg-besteffort"}, "spec": {
            "terminationGracePeriodSeconds": 1, "containers": [sleeper("a", serde_json::json!({}))]}}))
            .await;
        let g = c.wait_pod("cg-guaranteed", 60, "Running", |p| phase(p) == "Running").await;
        let b = c.wait_pod("cg-besteffort", 60, "Running", |p| phase(p) == "Running").await;
        let g_path = format!("/skiff/{NODE}/kubepods/pod{}", g.metadata.uid.as_deref().unwrap());
        let b_path = format!("/skiff/{NODE}/kubepods/besteffort/pod{}", b.metadata.uid.as_deref().unwrap());
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        // the pod's limits are the sums of its containers'
        if v2 {
            assert_eq!(read_trim(cgroup_dir("memory", &g_path).join("memory.max")), (64u64 << 20).to_string());
            assert_eq!(read_trim(cgroup_dir("cpu", &g_path).join("cpu.max")), "50000 100000");
            assert_eq!(read_trim(cgroup_dir("cpu", &b_path).join("cpu.weight")), "1");
        } else {
            assert_eq!(
                read_trim(cgroup_dir("memory", &g_path).join("memory.limit_in_bytes")),
                (64u64 << 20).to_string()
            );
            assert_eq!(read_trim(cgroup_dir("cpu", &g_path).join("cpu.cfs_quota_us")), "50000");
            assert_eq!(read_trim(cgroup_dir("cpu", &g_path).join("cpu.shares")), "512");
            assert_eq!(read_trim(cgroup_dir("cpu", &b_path).join("cpu.shares")), "2");
        }
        // the sandbox and both containers run below it, each in its own cgroup
        let children: Vec<std::path::PathBuf> = fs::read_dir(cgroup_dir("memory", &g_path))
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().unwrap().is_dir())
            .map(|e| e.path())
            .collect();
        assert_eq!(children.len(), 3, "{children:?}");
        for child in &children {
            assert!(!read_trim(child.join("cgroup.procs")).is_empty(), "{} holds no process", child.display());
        }
        // a deleted pod's cgroup goes with it
        c.pods().delete("cg-besteffort", &DeleteParams::default()).await.unwrap();
        c.wait_gone("cg-besteffort", 30).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while cgroup_dir("memory", &b_path).exists() {
            assert!(Instant::now() < deadline, "{b_path} still exists after the pod was deleted");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(cgroup_dir("memory", &g_path).exists());
    });
}

#[test]
fn deletion_honours_the_grace_period() {
    with_cluster(|c| async move {
        let graceful = c
            .create_pod(serde_json::json!({"metadata": {"name": "graceful"}, "spec": {"terminationGracePeriodSeconds": 30, "containers": [{
                "name": "app", "image": TEST_IMAGE,
                "command": ["sh", "-c", "trap 'echo got TERM; sleep 2; exit 0' TERM; while true; do sleep 1; done"]}]}}))
            .await;
        c.create_pod(serde_json::json!({"metadata": {"name": "stubborn"}, "spec": {"terminationGracePeriodSeconds": 3, "containers": [{
            "name": "app", "image": TEST_IMAGE, "command": ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]}]}}))
            .await;
        c.wait_pod("graceful", 60, "Running", |p| phase(p) == "Running").await;
        c.wait_pod("stubborn", 60, "Running", |p| phase(p) == "Running").await;
        let netns = c.netns_of(&graceful);
        assert!(skiff_net::netns::exists(&netns));

        c.pods().delete("graceful", &DeleteParams::default()).await.unwrap();
        c.pods().delete("stubborn", &DeleteParams::default()).await.unwrap();
        let (g, s) = tokio::join!(c.wait_gone("graceful", 40), c.wait_gone("stubborn", 40));
        // the trap ran (about 2 s), far less than the 30 s allowed
        assert!(g >= Duration::from_millis(1500) && g < Duration::from_secs(20), "graceful took {g:?}");
        // SIGTERM ignored: SIGKILL once the 3 s are over
        assert!(s >= Duration::from_millis(2500) && s < Duration::from_secs(20), "stubborn took {s:?}");
        c.wait_event("graceful", "Killing", "Stopping container app", 5).await;
        assert!(!netns.exists(), "the pod's network namespace is removed");
        let uid = graceful.metadata.uid.unwrap();
        assert!(!c.agent_dir().join("pods").join(&uid).exists(), "the pod's files are removed");
        let rt = c.containerd.runtime(CONTAINERD_NS).await;
        let left = rt.list(&[(LABEL_POD_UID.to_string(), uid)].into_iter().collect()).await.unwrap();
        assert!(left.is_empty(), "containers left: {left:?}");
    });
}

#[test]
fn a_restarted_agent_adopts_running_pods() {
    with_cluster(|mut c| async move {
        c.create_pod(serde_json::json!({"metadata": {"name": "steady"}, "spec": {"containers": [{
            "name": "app", "image": TEST_IMAGE, "command": ["sleep", "3600"],
            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}, {
            "name": "web", "image": TEST_IMAGE, "command": ["httpd", "-f", "-p", "8080"]}]}}))
            .await;
        let doomed = c
            .create_pod(serde_json::json!({"metadata": {"name": "doomed"}, "spec": {"containers": [{
                "name": "app", "image": TEST_IMAGE, "command": ["sleep", "3600"]}]}}))
            .await;
        let before = c.wait_pod("steady", 60, "Ready", |p| condition(p, "Ready").as_deref() == Some("True")).await;
        c.wait_pod("doomed", 60, "Running", |p| phase(p) == "Running").await;

        c.stop_agent();
        // deleted for good while the agent is away
        c.pods().delete("doomed", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
        c.wait_gone("doomed", 10).await;
        c.start_agent();

        let rt = c.containerd.runtime(CONTAINERD_NS).await;
        let uid = doomed.metadata.uid.clone().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = rt.list(&[(LABEL_POD_UID.to_string(), uid.clone())].into_iter().collect()).await.unwrap();
            if left.is_empty() && !c.netns_of(&doomed).exists() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the deleted pod's containers or netns remain: {left:?}\n{}",
                tail(&c.agent_log(), 40)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // give the new agent time to sync the surviving pod, then compare
        tokio::time::sleep(Duration::from_secs(4)).await;
        let after = c.pods().get("steady").await.unwrap();
        for name in ["app", "web"] {
            let (b, a) = (container_status(&before, name).unwrap(), container_status(&after, name).unwrap());
            assert_eq!(a.container_id, b.container_id, "{name}: same container");
            assert_eq!(a.restart_count, 0, "{name}: not restarted");
            assert_eq!(
                a.state.as_ref().and_then(|s| s.running.as_ref()).and_then(|r| r.started_at.clone()),
                b.state.as_ref().and_then(|s| s.running.as_ref()).and_then(|r| r.started_at.clone()),
                "{name}: still the same run"
            );
        }
        assert_eq!(condition(&after, "Ready").as_deref(), Some("True"));
        assert!(c.agent_log().contains("adopted the running pod sandbox"), "{}", tail(&c.agent_log(), 40));
    });
}

#[test]
fn a_missing_image_is_err_image_pull_with_a_clear_event() {
    with_cluster(|c| async move {
        c.create_pod(serde_json::json!({"metadata": {"name": "ghost"}, "spec": {"containers": [{
            "name": "app", "image": "skiff.local/nosuch:1"}]}}))
            .await;
        c.create_pod(serde_json::json!({"metadata": {"name": "never"}, "spec": {"containers": [{
            "name": "app", "image": "skiff.local/nosuch:2", "imagePullPolicy": "Never"}]}}))
            .await;
        let waiting = |p: &Pod| {
            container_status(p, "app")
                .and_then(|s| s.state)
                .and_then(|s| s.waiting)
                .and_then(|w| w.reason)
                .unwrap_or_default()
        };
        let p = c
            .wait_pod("ghost", 60, "ErrImagePull", |p| {
                matches!(waiting(p).as_str(), "ErrImagePull" | "ImagePullBackOff")
            })
            .await;
        assert_eq!(phase(&p), "Pending");
        let e = c.wait_event("ghost", "Failed", "Failed to pull image \"skiff.local/nosuch:1\"", 10).await;
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        c.wait_event("ghost", "Pulling", "Pulling image \"skiff.local/nosuch:1\"", 5).await;
        c.wait_pod("ghost", 30, "ImagePullBackOff", |p| waiting(p) == "ImagePullBackOff").await;
        let p = c.wait_pod("never", 60, "ErrImageNeverPull", |p| waiting(p) == "ErrImageNeverPull").await;
        let msg = container_status(&p, "app").unwrap().state.unwrap().waiting.unwrap().message.unwrap();
        assert_eq!(msg, "Container image \"skiff.local/nosuch:2\" is not present with pull policy of Never");
    });
}

/// A figure of /proc/<pid>/status in KiB (VmRSS, RssAnon, ...).
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Pod startup latency (create → Ready, as the agent reports it through the
/// API) for 100 pods created at once, and the agent process's memory idle
/// and with those pods running.
/// When each pod was first seen Running and Ready, from a watch on pods
/// (so the figures carry no polling delay).
#[derive(Clone, Default)]
struct ReadyClock(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Instant>>>);

impl ReadyClock {
    fn start(pods: Api<Pod>) -> ReadyClock {
        use futures::StreamExt;
        use kube::api::{WatchEvent, WatchParams};
        let clock = ReadyClock::default();
        let seen = clock.0.clone();
        tokio::spawn(async move {
            let mut rv = "0".to_string();
            loop {
                let Ok(stream) = pods.watch(&WatchParams::default().timeout(290), &rv).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let mut stream = stream.boxed();
                while let Some(Ok(ev)) = stream.next().await {
                    let p = match ev {
                        WatchEvent::Added(p) | WatchEvent::Modified(p) => p,
                        WatchEvent::Bookmark(b) => {
                            rv = b.metadata.resource_version;
                            continue;
                        }
                        _ => continue,
                    };
                    rv = p.metadata.resource_version.clone().unwrap_or(rv);
                    if phase(&p) == "Running" && condition(&p, "Ready").as_deref() == Some("True") {
                        let name = p.metadata.name.clone().unwrap_or_default();
                        seen.lock().unwrap().entry(name).or_insert_with(Instant::now);
                    }
                }
            }
        });
        clock
    }

    fn get(&self, name: &str) -> Option<Instant> {
        self.0.lock().unwrap().get(name).copied()
    }

    async fn wait(&self, name: &str, secs: u64) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(t) = self.get(name) {
                return t;
            }
            assert!(Instant::now() < deadline, "pod {name} not Ready within {secs}s");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// The floor under pod startup: what the runtime alone takes for a pod's two
/// containers (pause in a new network namespace, then a `sleep` joining it),
/// created and started straight through containerd, no agent or API.
async fn raw_pod_start(rt: &skiff_agent::runtime::containerd::ContainerdRuntime, dir: &Path, id: &str) -> Duration {
    use skiff_agent::runtime::{ContainerSpec, Namespaces};
    let at = Instant::now();
    let netns = dir.join(format!("{id}.netns"));
    let ns = netns.clone();
    tokio::task::spawn_blocking(move || skiff_net::netns::create(&ns)).await.unwrap().unwrap();
    let base = |name: &str, image: &str, args: &[&str]| ContainerSpec {
        id: format!("{id}-{name}"),
        image: image.to_string(),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: vec!["PATH=/bin".into()],
        log_path: dir.join(format!("{id}-{name}.log")),
        namespaces: Namespaces { network: Some(netns.clone()), ..Default::default() },
        labels: [(skiff_agent::runtime::LABEL_NODE.to_string(), "skiff-test-raw".to_string())].into(),
        ..Default::default()
    };
    let pause = base("pause", skiff_agent::runtime::containerd::PAUSE_IMAGE, &["/pause"]);
    rt.create(&pause).await.unwrap();
    rt.start(&pause.id).await.unwrap();
    let app = base("app", TEST_IMAGE, &["sleep", "3600"]);
    rt.create(&app).await.unwrap();
    rt.start(&app.id).await.unwrap();
    at.elapsed()
}

#[test]
#[ignore = "a benchmark, run by hand"]
fn bench_pod_startup_and_agent_memory() {
    const PODS: usize = 100;
    const SEQUENTIAL: usize = 20;
    with_cluster(|c| async move {
        let pid = c.agent.as_ref().unwrap().id();
        // settle: registration, image import, first syncs
        tokio::time::sleep(Duration::from_secs(5)).await;
        let idle = ["VmRSS", "RssAnon", "RssFile"].map(|f| proc_status_kib(pid, f));

        let clock = ReadyClock::start(c.pods());
        // one pod alone: the latency without contention
        let at = Instant::now();
        c.create_pod(serde_json::json!({"metadata": {"name": "solo"}, "spec": {"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": TEST_IMAGE, "command": ["sleep", "3600"]}]}}))
            .await;
        let solo = clock.wait("solo", 60).await - at;
        c.pods().delete("solo", &DeleteParams::default()).await.unwrap();
        c.wait_gone("solo", 60).await;

        // one pod at a time: the latency a pod sees on a node that is not busy
        let mut sequential = Vec::new();
        for i in 0..SEQUENTIAL {
            let at = Instant::now();
            c.create_pod(serde_json::json!({"metadata": {"name": format!("seq-{i}")}, "spec": {"terminationGracePeriodSeconds": 1,
                "containers": [{"name": "app", "image": TEST_IMAGE, "command": ["sleep", "3600"]}]}}))
                .await;
            sequential.push(clock.wait(&format!("seq-{i}"), 60).await - at);
        }
        sequential.sort();
        for i in 0..SEQUENTIAL {
            c.pods().delete(&format!("seq-{i}"), &DeleteParams::default()).await.unwrap();
        }
        for i in 0..SEQUENTIAL {
            c.wait_gone(&format!("seq-{i}"), 60).await;
        }

        // the baseline: the same two containers per pod straight through containerd
        let raw_rt = c.containerd.runtime("skiff-test-raw").await;
        let raw_dir = c.dir.join("raw");
        fs::create_dir_all(&raw_dir).unwrap();
        skiff_agent::runtime::containerd::ensure_pause_image(&raw_rt).await.unwrap();
        skiff_agent::testing::import_test_image(&raw_rt, &raw_dir).await;
        let mut raw_seq = Vec::new();
        for i in 0..SEQUENTIAL {
            raw_seq.push(raw_pod_start(&raw_rt, &raw_dir, &format!("seq{i}")).await);
        }
        raw_seq.sort();
        let raw_started = Instant::now();
        let mut raw_burst: Vec<Duration> = futures::future::join_all((0..PODS).map(|i| {
            let (rt, dir) = (&raw_rt, &raw_dir);
            async move { raw_pod_start(rt, dir, &format!("burst{i}")).await }
        }))
        .await;
        let raw_all = raw_started.elapsed();
        raw_burst.sort();
        for cinfo in raw_rt.list(&Default::default()).await.unwrap() {
            let _ = raw_rt.remove(&cinfo.id).await;
        }
        for e in fs::read_dir(&raw_dir).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "netns") {
                let _ = skiff_net::netns::remove(&e.path());
            }
        }

        let started = Instant::now();
        let creates = (0..PODS).map(|i| {
            let c = &c;
            async move {
                let at = Instant::now();
                c.create_pod(serde_json::json!({"metadata": {"name": format!("bench-{i}")}, "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "app", "image": TEST_IMAGE, "command": ["sleep", "3600"]}]}}))
                    .await;
                at
            }
        });
        let created: Vec<Instant> = futures::future::join_all(creates).await;
        let create_all = started.elapsed();
        let mut lat = Vec::with_capacity(PODS);
        let mut last = started;
        for (i, at) in created.iter().enumerate() {
            let t = clock.wait(&format!("bench-{i}"), 300).await;
            last = last.max(t);
            lat.push(t - *at);
        }
        let all_ready = last - started;
        lat.sort();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let busy = ["VmRSS", "RssAnon", "RssFile", "VmHWM"].map(|f| proc_status_kib(pid, f));

        let started = Instant::now();
        let deletes = (0..PODS).map(|i| {
            let c = &c;
            async move {
                let _ = c.pods().delete(&format!("bench-{i}"), &DeleteParams::default()).await;
            }
        });
        futures::future::join_all(deletes).await;
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let left = c.pods().list(&ListParams::default()).await.unwrap().items.len();
            if left == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{left} pods still there 180s after deletion");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let all_gone = started.elapsed();

        let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
        let ratio = |a: Duration, b: Duration| format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64().max(1e-9));
        println!("\n| agent figure (one node, test containerd) | skiff | baseline: containerd alone | ratio |\n|---|---|---|---|");
        let row = |what: &str, ours: Duration, base: Duration| {
            println!("| {what} | {} | {} | {} |", ms(ours), ms(base), ratio(ours, base))
        };
        row("one pod alone: create -> Ready via the API", solo, raw_seq[0]);
        row(
            &format!("pod startup p50, {SEQUENTIAL} pods one at a time (target p99 <= 500 ms)"),
            percentile(&sequential, 0.5),
            percentile(&raw_seq, 0.5),
        );
        row("pod startup p99, one at a time", percentile(&sequential, 0.99), percentile(&raw_seq, 0.99));
        row(&format!("pod startup p50, {PODS} created at once"), percentile(&lat, 0.5), percentile(&raw_burst, 0.5));
        row(&format!("pod startup p99, {PODS} created at once"), percentile(&lat, 0.99), percentile(&raw_burst, 0.99));
        row(&format!("first create -> all {PODS} Ready"), all_ready, raw_all);
        println!("\n| agent figure | value |\n|---|---|");
        println!("| idle agent RSS (VmRSS, agent in the test executable) | {} |", mib(idle[0]));
        println!("| idle agent RSS: anonymous / file-backed | {} / {} |", mib(idle[1]), mib(idle[2]));
        println!("| pod startup max ({PODS} at once) | {} |", ms(*lat.last().unwrap()));
        println!("| creating all {PODS} pods (API) | {} |", ms(create_all));
        println!("| agent RSS with {PODS} pods running | {} |", mib(busy[0]));
        println!("| ... anonymous / file-backed | {} / {} |", mib(busy[1]), mib(busy[2]));
        println!("| agent peak RSS (VmHWM) | {} |", mib(busy[3]));
        println!("| deleting all {PODS} pods -> gone from the API | {} |", ms(all_gone));
    });
}
