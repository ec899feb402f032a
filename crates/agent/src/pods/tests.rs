//! The pod worker against an in-memory runtime and API: what it creates,
//! restarts, adopts and deletes, and the status it writes. The pods use
//! hostNetwork so that no network namespace (and no root) is needed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use tokio::io::AsyncReadExt;

use super::env::tests::{obj, MemObjects};
use super::sync::PodWorker;
use super::{Ctx, PodApi};
use crate::config::AgentConfig;
use crate::events::{Record, Recorder};
use crate::runtime::*;

#[derive(Default)]
struct FakeState {
    containers: BTreeMap<String, (ContainerSpec, ContainerInfo)>,
    images: HashMap<String, ImageInfo>,
    next_pid: u32,
    calls: Vec<String>,
}

/// A runtime in memory: containers run until told to exit (or killed).
/// Its exec knows three commands: `fail` (prints "fake failure", exits 1),
/// `hang` (never exits) and anything else (prints "ok", exits 0).
#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<FakeState>,
    finished: Arc<Mutex<Vec<String>>>,
}

struct FakeExec {
    command: Vec<String>,
    finished: Arc<Mutex<Vec<String>>>,
}

#[async_trait::async_trait]
impl ExecControl for FakeExec {
    async fn resize(&self, _w: u16, _h: u16) -> Result<()> {
        Ok(())
    }
    async fn close_stdin(&self) -> Result<()> {
        Ok(())
    }
    async fn wait(&self) -> Result<i32> {
        match self.command[0].as_str() {
            "fail" => Ok(1),
            "hang" => std::future::pending().await,
            _ => Ok(0),
        }
    }
    async fn finish(&self) {
        self.finished.lock().unwrap().push(self.command.join(" "));
    }
}

impl FakeRuntime {
    fn with_images(refs: &[&str]) -> FakeRuntime {
        let rt = FakeRuntime::default();
        for r in refs {
            rt.state.lock().unwrap().images.insert(
                r.to_string(),
                ImageInfo {
                    reference: r.to_string(),
                    id: format!("sha256:{}", r.len()),
                    entrypoint: vec![],
                    cmd: vec!["sh".into()],
                    env: vec!["PATH=/bin".into()],
                    ..Default::default()
                },
            );
        }
        rt
    }

    fn exit(&self, id: &str, code: i32) {
        let mut s = self.state.lock().unwrap();
        let (_, info) = s.containers.get_mut(id).unwrap();
        let started = match info.state {
            TaskState::Running { started_at, .. } => Some(started_at),
            _ => None,
        };
        info.state =
            TaskState::Exited { exit_code: code, started_at: started, finished_at: Utc::now(), oom_killed: false };
    }

    fn calls(&self) -> Vec<String> {
        std::mem::take(&mut self.state.lock().unwrap().calls)
    }

    fn spec(&self, id: &str) -> ContainerSpec {
        self.state.lock().unwrap().containers[id].0.clone()
    }

    fn ids(&self) -> Vec<String> {
        self.state.lock().unwrap().containers.keys().cloned().collect()
    }
}

#[async_trait::async_trait]
impl Runtime for FakeRuntime {
    async fn version(&self) -> Result<String> {
        Ok("containerd 1.6.20~ds1".into())
    }
    async fn image(&self, reference: &str) -> Result<Option<ImageInfo>> {
        Ok(self.state.lock().unwrap().images.get(reference).cloned())
    }
    async fn pull(&self, reference: &str, _auth: Option<&RegistryAuth>) -> Result<ImageInfo> {
        self.state.lock().unwrap().calls.push(format!("pull {reference}"));
        Err(RuntimeError::Pull { image: reference.into(), message: "no such host".into() })
    }
    async fn import(&self, _archive: &std::path::Path) -> Result<Vec<ImageInfo>> {
        Ok(vec![])
    }
    async fn list_images(&self) -> Result<Vec<ImageInfo>> {
        Ok(self.state.lock().unwrap().images.values().cloned().collect())
    }
    async fn create(&self, spec: &ContainerSpec) -> Result<()> {
        let mut s = self.state.lock().unwrap();
        if s.containers.contains_key(&spec.id) {
            return Err(RuntimeError::Container { id: spec.id.clone(), message: "already exists".into() });
        }
        s.calls.push(format!("create {}", spec.id));
        let info = ContainerInfo {
            id: spec.id.clone(),
            image: spec.image.clone(),
            labels: spec.labels.clone(),
            created_at: Utc::now(),
            state: TaskState::Created,
        };
        s.containers.insert(spec.id.clone(), (spec.clone(), info));
        Ok(())
    }
    async fn start(&self, id: &str) -> Result<u32> {
        let mut s = self.state.lock().unwrap();
        s.next_pid += 1;
        let pid = 1000 + s.next_pid;
        s.calls.push(format!("start {id}"));
        let (_, info) = s.containers.get_mut(id).ok_or_else(|| RuntimeError::NotFound(id.into()))?;
        info.state = TaskState::Running { pid, started_at: Utc::now() };
        Ok(pid)
    }
    async fn kill(&self, id: &str, signal: u32) -> Result<()> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(format!("kill {id} {signal}"));
        let (_, info) = s.containers.get_mut(id).ok_or_else(|| RuntimeError::NotFound(id.into()))?;
        if let TaskState::Running { started_at, .. } = info.state {
            info.state = TaskState::Exited {
                exit_code: 128 + signal as i32,
                started_at: Some(started_at),
                finished_at: Utc::now(),
                oom_killed: false,
            };
        }
        Ok(())
    }
    async fn remove(&self, id: &str) -> Result<()> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(format!("remove {id}"));
        s.containers.remove(id);
        Ok(())
    }
    async fn inspect(&self, id: &str) -> Result<ContainerInfo> {
        self.state
            .lock()
            .unwrap()
            .containers
            .get(id)
            .map(|c| c.1.clone())
            .ok_or_else(|| RuntimeError::NotFound(id.into()))
    }
    async fn list(&self, labels: &BTreeMap<String, String>) -> Result<Vec<ContainerInfo>> {
        Ok(self
            .state
            .lock()
            .unwrap()
            .containers
            .values()
            .filter(|(_, c)| labels.iter().all(|(k, v)| c.labels.get(k) == Some(v)))
            .map(|(_, c)| c.clone())
            .collect())
    }
    async fn exec(&self, id: &str, spec: &ExecSpec) -> Result<Exec> {
        self.state.lock().unwrap().calls.push(format!("exec {id} {}", spec.command.join(" ")));
        let out: &'static [u8] = match spec.command[0].as_str() {
            "fail" => b"fake failure\n",
            "hang" => b"",
            _ => b"ok\n",
        };
        let control = Arc::new(FakeExec { command: spec.command.clone(), finished: self.finished.clone() });
        let stdout: std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>> =
            if spec.command[0] == "hang" { Box::pin(tokio::io::empty().chain(PendingRead)) } else { Box::pin(out) };
        Ok(Exec { stdin: None, stdout: Some(stdout), stderr: None, control })
    }
    async fn wait_exit(&self, id: &str, timeout: Duration) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.state.lock().unwrap().containers.get(id).map(|c| c.1.state.clone()) {
                None | Some(TaskState::Exited { .. }) => return Ok(true),
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A reader that never ends (a hung process's stdout).
struct PendingRead;

impl tokio::io::AsyncRead for PendingRead {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        _buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Pending
    }
}

#[derive(Default)]
struct FakeApi {
    statuses: Mutex<Vec<PodStatus>>,
    deleted: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl PodApi for FakeApi {
    async fn patch_status(&self, _pod: &Pod, status: &PodStatus) -> Result<(), String> {
        self.statuses.lock().unwrap().push(status.clone());
        Ok(())
    }
    async fn delete(&self, pod: &Pod) -> Result<(), String> {
        self.deleted.lock().unwrap().push(pod.metadata.uid.clone().unwrap_or_default());
        Ok(())
    }
}

const IMAGE: &str = "skiff.local/busybox:test";

struct Env {
    rt: Arc<FakeRuntime>,
    api: Arc<FakeApi>,
    ctx: Arc<Ctx>,
    events: Arc<Mutex<Vec<Record>>>,
    _dir: tempfile::TempDir,
}

fn env() -> Env {
    let dir = tempfile::Builder::new().prefix("skiff-test-sync").tempdir().unwrap();
    let rt = Arc::new(FakeRuntime::with_images(&[IMAGE, "skiff.local/pause:1"]));
    let api = Arc::new(FakeApi::default());
    let (recorder, events) = Recorder::capturing();
    let mut config = AgentConfig::new("n1", "192.0.2.10".parse().unwrap(), dir.path());
    config.resync = Duration::from_secs(10);
    let objects = Arc::new(MemObjects::default());
    objects
        .services
        .lock()
        .unwrap()
        .push(obj(serde_json::json!({"metadata": {"name": "kubernetes", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443}]}})));
    let ctx = Arc::new(Ctx::new(config, rt.clone(), Arc::new(skiff_net::LoopbackOnly), objects, api.clone(), recorder));
    Env { rt, api, ctx, events, _dir: dir }
}

fn pod(spec: serde_json::Value) -> Pod {
    let mut spec = spec;
    spec["hostNetwork"] = true.into();
    spec["nodeName"] = "n1".into();
    obj(
        serde_json::json!({"metadata": {"name": "p", "namespace": "default", "uid": "0a1b2c3d-0000-4000-8000-000000000001"}, "spec": spec}),
    )
}

impl Env {
    fn last_status(&self) -> PodStatus {
        self.api.statuses.lock().unwrap().last().cloned().expect("a status was written")
    }
    fn reasons(&self) -> Vec<String> {
        self.events.lock().unwrap().iter().map(|e| format!("{}: {}", e.reason, e.message)).collect()
    }
}

fn app_id(attempt: u32) -> String {
    super::sync::container_id("0a1b2c3d-0000-4000-8000-000000000001", "app", attempt)
}

#[tokio::test]
async fn a_pod_starts_in_its_sandbox_and_reports_running() {
    let e = env();
    let p = pod(
        serde_json::json!({"containers": [{"name": "app", "image": IMAGE, "command": ["sh"], "args": ["-c", "sleep 1d"],
        "env": [{"name": "X", "value": "1"}], "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
        "securityContext": {"runAsUser": 1000, "allowPrivilegeEscalation": false}}]}),
    );
    let mut w = PodWorker::new(e.ctx.clone(), "0a1b2c3d-0000-4000-8000-000000000001".into());
    w.sync(&p).await.unwrap();
    let calls = e.rt.calls();
    assert_eq!(
        calls,
        vec![
            "create 0a1b2c3d0000-POD-0",
            "start 0a1b2c3d0000-POD-0",
            "create 0a1b2c3d0000-app-0",
            "start 0a1b2c3d0000-app-0"
        ]
    );
    let sandbox = e.rt.spec("0a1b2c3d0000-POD-0");
    let app = e.rt.spec(&app_id(0));
    assert_eq!(app.args, ["sh", "-c", "sleep 1d"]);
    assert!(app.env.contains(&"PATH=/bin".to_string()) && app.env.contains(&"X=1".to_string()));
    assert!(app.env.contains(&"KUBERNETES_SERVICE_HOST=10.96.0.1".to_string()));
    assert_eq!(app.namespaces.network, None, "hostNetwork");
    let pid = match e.rt.state.lock().unwrap().containers["0a1b2c3d0000-POD-0"].1.state {
        TaskState::Running { pid, .. } => pid,
        _ => panic!("the sandbox runs"),
    };
    assert_eq!(app.namespaces.ipc, Some(format!("/proc/{pid}/ns/ipc").into()));
    assert_eq!(app.namespaces.uts, Some(format!("/proc/{pid}/ns/uts").into()));
    assert_eq!(app.resources.cpu_quota, Some(50_000));
    assert_eq!(app.security.run_as_user, Some(1000));
    assert!(app.security.no_new_privileges);
    assert!(app.mounts.iter().any(|m| m.container_path == "/etc/resolv.conf"));
    assert!(app.log_path.ends_with("pods/default_p_0a1b2c3d-0000-4000-8000-000000000001/app/0.log"));
    assert_eq!(app.labels[LABEL_POD], "default/p");
    assert_eq!(sandbox.labels[LABEL_CONTAINER], SANDBOX);
    let s = e.last_status();
    assert_eq!(s.phase.as_deref(), Some("Running"));
    assert_eq!(s.pod_ip.as_deref(), Some("192.0.2.10"), "hostNetwork pods have the node's address");
    assert_eq!(s.qos_class.as_deref(), Some("Guaranteed"));
    let cs = &s.container_statuses.unwrap()[0];
    assert!(cs.ready);
    assert_eq!(cs.container_id.as_deref(), Some(format!("containerd://{}", app_id(0)).as_str()));
    assert!(e.reasons().iter().any(|r| r == "Started: Started container app"), "{:?}", e.reasons());

    // nothing new: nothing done, nothing written
    let mut p2 = p.clone();
    p2.status = Some(e.last_status());
    let writes = e.api.statuses.lock().unwrap().len();
    w.sync(&p2).await.unwrap();
    assert!(e.rt.calls().is_empty());
    assert_eq!(e.api.statuses.lock().unwrap().len(), writes, "an unchanged status is not written again");
    w.stop();
}

#[tokio::test]
async fn a_crashing_container_restarts_at_once_then_backs_off() {
    let e = env();
    let p = pod(serde_json::json!({"containers": [{"name": "app", "image": IMAGE}]}));
    let mut w = PodWorker::new(e.ctx.clone(), "0a1b2c3d-0000-4000-8000-000000000001".into());
    w.sync(&p).await.unwrap();
    e.rt.calls();
    e.rt.exit(&app_id(0), 2);
    w.sync(&p).await.unwrap();
    assert_eq!(
        e.rt.calls(),
        vec![format!("create {}", app_id(1)), format!("start {}", app_id(1))],
        "the first restart is immediate"
    );
    e.rt.exit(&app_id(1), 2);
    let next = w.sync(&p).await.unwrap();
    assert!(e.rt.calls().is_empty(), "the second restart waits");
    assert!(next <= Duration::from_secs(10) && next > Duration::from_secs(5), "wakes when the back-off ends: {next:?}");
    let s = e.last_status();
    let cs = &s.container_statuses.unwrap()[0];
    assert_eq!(cs.restart_count, 1);
    let waiting = cs.state.as_ref().unwrap().waiting.as_ref().unwrap();
    assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
    assert_eq!(
        waiting.message.as_deref(),
        Some("back-off 10s restarting failed container=app pod=p_default(0a1b2c3d-0000-4000-8000-000000000001)")
    );
    assert_eq!(cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap().exit_code, 2);
    w.stop();
}

#[tokio::test]
async fn a_new_worker_adopts_what_runs() {
    let e = env();
    let p = pod(serde_json::json!({"containers": [{"name": "app", "image": IMAGE}]}));
    let mut first = PodWorker::new(e.ctx.clone(), "0a1b2c3d-0000-4000-8000-000000000001".into());
    first.sync(&p).await.unwrap();
    first.stop();
    let mut p2 = p.clone();
    p2.status = Some(e.last_status());
    e.rt.calls();
    let writes = e.api.statuses.lock().unwrap().len();
    // the agent restarted: a fresh worker, the same containers
    let mut second = PodWorker::new(e.ctx.clone(), "0a1b2c3d-0000-4000-8000-000000000001".into());
    second.sync(&p2).await.unwrap();
    assert!(e.rt.calls().is_empty(), "nothing is created, started or removed");
    assert_eq!(e.api.statuses.lock().unwrap().len(), writes, "the status is the same");
    // and when the adopted container exits, the next run counts on from its attempt
    e.rt.exit(&app_id(0), 1);
    second.sync(&p2).await.unwrap();
    assert_eq!(e.rt.calls(), vec![format!("create {}", app_id(1)), format!("start {}", app_id(1))]);
    assert_eq!(e.last_status().container_statuses.unwrap()[0].restart_count, 1);
    second.stop();
}

#[tokio::test]
async fn init_containers_run_one_after_another() {
    let e = env();
    let p =
        pod(serde_json::json!({"initContainers": [{"name": "one", "image": IMAGE}, {"name": "two", "image": IMAGE}],
        "containers": [{"name": "app", "image": IMAGE}]}));
    let uid = "0a1b2c3d-0000-4000-8000-000000000001";
    let id = |n: &str| super::sync::container_id(uid, n, 0);
    let mut w = PodWorker::new(e.ctx.clone(), uid.into());
    w.sync(&p).await.unwrap();
    assert!(e.rt.ids().contains(&id("one")) && !e.rt.ids().contains(&id("two")));
    assert_eq!(e.last_status().phase.as_deref(), Some("Pending"));
    w.sync(&p).await.unwrap();
    assert!(!e.rt.ids().contains(&id("two")), "two waits for one");
    e.rt.exit(&id("one"), 0);
    w.sync(&p).await.unwrap();
    assert!(e.rt.ids().contains(&id("two")) && !e.rt.ids().contains(&id("app")));
    e.rt.exit(&id("two"), 0);
    w.sync(&p).await.unwrap();
    assert!(e.rt.ids().contains(&id("app")));
    let s = e.last_status();
    assert_eq!(s.phase.as_deref(), Some("Running"));
    assert!(s.init_container_statuses.unwrap().iter().all(|c| c.ready));
    w.stop();
}

#[tokio::test]
async fn deletion_stops_removes_and_deletes() {
    let e = env();
    let mut p =
        pod(serde_json::json!({"terminationGracePeriodSeconds": 5, "containers": [{"name": "app", "image": IMAGE}]}));
    let mut w = PodWorker::new(e.ctx.clone(), "0a1b2c3d-0000-4000-8000-000000000001".into());
    w.sync(&p).await.unwrap();
    e.rt.calls();
    p.metadata.deletion_timestamp = Some(super::status::time(Utc::now()));
    p.metadata.deletion_grace_period_seconds = Some(5);
    assert_eq!(w.sync(&p).await, None, "the worker is done once the pod is deleted");
    let calls = e.rt.calls();
    assert!(calls.contains(&format!("kill {} 15", app_id(0))), "SIGTERM first: {calls:?}");
    assert!(!calls.iter().any(|c| c.ends_with(" 9")), "no SIGKILL for a container that stopped: {calls:?}");
    assert!(e.rt.ids().is_empty(), "every container is removed");
    assert_eq!(e.api.deleted.lock().unwrap().as_slice(), ["0a1b2c3d-0000-4000-8000-000000000001"]);
    assert!(e.reasons().iter().any(|r| r == "Killing: Stopping container app"), "{:?}", e.reasons());
}

#[tokio::test]
async fn image_pull_policies() {
    let e = env();
    let p = pod(serde_json::json!({"containers": [
        {"name": "never", "image": "skiff.local/absent:1", "imagePullPolicy": "Never"},
        {"name": "pull", "image": "skiff.local/absent:2"}]}));
    let mut w = PodWorker::new(e.ctx.clone(), "0a1b2c3d-0000-4000-8000-000000000001".into());
    w.sync(&p).await.unwrap();
    let reason = |s: &PodStatus, i: usize| {
        s.container_statuses.as_ref().unwrap()[i]
            .state
            .as_ref()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .reason
            .clone()
            .unwrap()
    };
    let s = e.last_status();
    assert_eq!(reason(&s, 0), "ErrImageNeverPull");
    assert_eq!(reason(&s, 1), "ErrImagePull");
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    assert!(e.rt.calls().contains(&"pull skiff.local/absent:2".to_string()));
    assert!(
        e.reasons().iter().any(|r| r.starts_with("Failed: Failed to pull image \"skiff.local/absent:2\": ")),
        "{:?}",
        e.reasons()
    );
    // within the back-off: no new pull, ImagePullBackOff
    w.sync(&p).await.unwrap();
    assert!(!e.rt.calls().iter().any(|c| c.starts_with("pull")));
    assert_eq!(reason(&e.last_status(), 1), "ImagePullBackOff");
    w.stop();
}

#[tokio::test]
async fn a_finished_pod_gives_up_its_sandbox() {
    let e = env();
    let p = pod(serde_json::json!({"restartPolicy": "Never", "containers": [{"name": "app", "image": IMAGE}]}));
    let mut w = PodWorker::new(e.ctx.clone(), "0a1b2c3d-0000-4000-8000-000000000001".into());
    w.sync(&p).await.unwrap();
    e.rt.exit(&app_id(0), 0);
    w.sync(&p).await.unwrap();
    assert_eq!(e.last_status().phase.as_deref(), Some("Succeeded"));
    e.rt.calls();
    w.sync(&p).await.unwrap();
    assert_eq!(
        e.rt.calls(),
        vec!["kill 0a1b2c3d0000-POD-0 9"],
        "only the sandbox is stopped; the container stays for its status"
    );
    let s = e.last_status();
    assert_eq!(s.phase.as_deref(), Some("Succeeded"));
    let ready_to_start = s.conditions.unwrap().into_iter().find(|c| c.type_ == "PodReadyToStartContainers").unwrap();
    assert_eq!(ready_to_start.status, "False");
    assert!(e.rt.ids().contains(&app_id(0)));
    w.sync(&p).await.unwrap();
    assert!(e.rt.calls().is_empty(), "nothing more to do");
}

#[tokio::test]
async fn exec_probes_succeed_fail_and_time_out() {
    use super::probes::{exec_probe, Outcome};
    let rt = FakeRuntime::default();
    let cmd = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let t = Duration::from_secs(1);
    assert_eq!(exec_probe(&rt, "c1", &cmd(&["cat", "/ready"]), t).await, (Outcome::Success, "ok".into()));
    assert_eq!(exec_probe(&rt, "c1", &cmd(&["fail"]), t).await, (Outcome::Failure, "fake failure".into()));
    let start = std::time::Instant::now();
    let (o, msg) = exec_probe(&rt, "c1", &cmd(&["hang", "forever"]), Duration::from_millis(200)).await;
    assert_eq!((o, msg.as_str()), (Outcome::Failure, "command \"hang forever\" timed out"));
    assert!(start.elapsed() < Duration::from_secs(2));
    // every exec process is finished (killed if it still runs, removed)
    assert_eq!(*rt.finished.lock().unwrap(), ["cat /ready", "fail", "hang forever"]);
    assert_eq!(exec_probe(&rt, "c1", &[], t).await.0, Outcome::Unknown, "no command: errored, not failed");
}

#[tokio::test]
async fn a_failed_post_start_hook_kills_the_container() {
    let e = env();
    let p = pod(serde_json::json!({"containers": [{"name": "app", "image": IMAGE, "command": ["sleep", "1d"],
        "lifecycle": {"postStart": {"exec": {"command": ["fail", "now"]}}}}]}));
    let mut w = PodWorker::new(e.ctx.clone(), "0a1b2c3d-0000-4000-8000-000000000001".into());
    w.sync(&p).await.unwrap();
    let calls = e.rt.calls();
    let exec = calls.iter().position(|c| c == &format!("exec {} fail now", app_id(0))).expect("the hook ran");
    let kill = calls.iter().position(|c| c == &format!("kill {} 15", app_id(0))).expect("the container was killed");
    assert!(calls.iter().position(|c| c == &format!("start {}", app_id(0))).unwrap() < exec && exec < kill);
    let reasons = e.reasons();
    assert!(
        reasons.iter().any(|r| r
            .starts_with("FailedPostStartHook: Exec lifecycle hook ([\"fail\", \"now\"]) for Container \"app\"")
            && r.contains("command 'fail now' exited with 1")
            && r.contains("fake failure")),
        "{reasons:?}"
    );
    w.stop();
}

#[tokio::test]
async fn a_pre_stop_hook_runs_before_sigterm() {
    let e = env();
    let p = pod(serde_json::json!({"terminationGracePeriodSeconds": 5, "containers": [{"name": "app", "image": IMAGE,
        "command": ["sleep", "1d"], "lifecycle": {"preStop": {"exec": {"command": ["fail"]}}}}]}));
    let mut w = PodWorker::new(e.ctx.clone(), "0a1b2c3d-0000-4000-8000-000000000001".into());
    w.sync(&p).await.unwrap();
    e.rt.calls();
    let mut gone = p.clone();
    gone.metadata.deletion_timestamp = Some(super::status::time(Utc::now()));
    gone.metadata.deletion_grace_period_seconds = Some(5);
    assert_eq!(w.sync(&gone).await, None);
    let calls = e.rt.calls();
    let exec = calls.iter().position(|c| c == &format!("exec {} fail", app_id(0))).expect("the hook ran");
    let term = calls.iter().position(|c| c == &format!("kill {} 15", app_id(0))).unwrap();
    assert!(exec < term, "{calls:?}");
    assert!(e.reasons().iter().any(|r| r.starts_with("FailedPreStopHook: Exec lifecycle hook")), "{:?}", e.reasons());
    w.stop();
}
