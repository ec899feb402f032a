//! A pod's status from what the node sees: the phase, conditions and
//! container statuses exactly as the kubelet computes them. Pure: the sync
//! loop gathers an [`Observed`] and this module turns it into a `PodStatus`.

use std::collections::HashMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::runtime::TaskState;

/// One run of a container (the runtime's view), newest attempt first in lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub attempt: u32,
    pub state: TaskState,
    pub image: String,
    pub image_id: String,
}

impl Instance {
    pub fn running(&self) -> bool {
        matches!(self.state, TaskState::Running { .. })
    }
    pub fn exited(&self) -> Option<i32> {
        match self.state {
            TaskState::Exited { exit_code, .. } => Some(exit_code),
            _ => None,
        }
    }
}

/// Everything the status depends on.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The sandbox runs and its network is set up.
    pub sandbox_ready: bool,
    pub pod_ips: Vec<IpAddr>,
    pub host_ips: Vec<IpAddr>,
    /// Per container name: its instances, newest first (at most the current one and the last exited one).
    pub instances: HashMap<String, Vec<Instance>>,
    /// Per container name: why it is waiting (ErrImagePull, CrashLoopBackOff, ...), set by the sync loop.
    pub waiting: HashMap<String, (String, String)>,
    /// Per container id: readiness (true without a readiness probe).
    pub ready: HashMap<String, bool>,
    /// Per container id: started (startup probe passed, or none).
    pub started: HashMap<String, bool>,
    pub start_time: Option<DateTime<Utc>>,
}

/// A Kubernetes `Time` for a chrono time (k8s-openapi counts in jiff timestamps).
pub fn time(t: DateTime<Utc>) -> Time {
    let nanos = t.timestamp_nanos_opt().unwrap_or_default() as i128;
    Time(jiff::Timestamp::from_nanosecond(nanos).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
}

fn terminated(i: &Instance) -> Option<ContainerStateTerminated> {
    match &i.state {
        TaskState::Exited { exit_code, started_at, finished_at, oom_killed } => Some(ContainerStateTerminated {
            exit_code: *exit_code,
            reason: Some(
                if *oom_killed {
                    "OOMKilled"
                } else if *exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                }
                .to_string(),
            ),
            started_at: started_at.map(time),
            finished_at: Some(time(*finished_at)),
            container_id: Some(format!("containerd://{}", i.id)),
            ..Default::default()
        }),
        _ => None,
    }
}

fn waiting(reason: &str, message: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message: Some(message.to_string()).filter(|m| !m.is_empty()),
        }),
        ..Default::default()
    }
}

fn container_status(c: &Container, obs: &Observed, default_reason: &str, init: bool) -> ContainerStatus {
    let list = obs.instances.get(&c.name).cloned().unwrap_or_default();
    let latest = list.first();
    let previous = list.get(1).and_then(terminated);
    let held = obs.waiting.get(&c.name);
    let (state, last) = match latest {
        None => {
            let (r, m) = held.cloned().unwrap_or((default_reason.to_string(), String::new()));
            (waiting(&r, &m), None)
        }
        Some(i) => match &i.state {
            TaskState::Running { started_at, .. } => (
                ContainerState {
                    running: Some(ContainerStateRunning { started_at: Some(time(*started_at)) }),
                    ..Default::default()
                },
                previous,
            ),
            TaskState::Exited { .. } => match held {
                Some((r, m)) => (waiting(r, m), terminated(i)),
                None => (ContainerState { terminated: terminated(i), ..Default::default() }, previous),
            },
            TaskState::Created | TaskState::Unknown => {
                let (r, m) = held.cloned().unwrap_or(("ContainerCreating".into(), String::new()));
                (waiting(&r, &m), previous)
            }
        },
    };
    let running = latest.is_some_and(|i| i.running());
    let id = latest.map(|i| i.id.clone()).unwrap_or_default();
    let started = running && obs.started.get(&id).copied().unwrap_or(true);
    let ready = if init {
        latest.and_then(|i| i.exited()) == Some(0) && held.is_none()
    } else {
        started && obs.ready.get(&id).copied().unwrap_or(false)
    };
    ContainerStatus {
        name: c.name.clone(),
        image: latest
            .map(|i| i.image.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| c.image.clone().unwrap_or_default()),
        image_id: latest.map(|i| i.image_id.clone()).unwrap_or_default(),
        container_id: latest.map(|i| format!("containerd://{}", i.id)),
        ready,
        started: Some(started),
        restart_count: latest.map(|i| i.attempt as i32).unwrap_or(0),
        state: Some(state),
        last_state: Some(ContainerState { terminated: last, ..Default::default() }),
        ..Default::default()
    }
}

/// Whether every init container has completed successfully.
pub fn initialized(pod: &Pod, obs: &Observed) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .all(|c| obs.instances.get(&c.name).and_then(|l| l.first()).and_then(|i| i.exited()) == Some(0))
}

/// The pod's phase, as the kubelet's getPhase decides it.
pub fn phase(pod: &Pod, init: &[ContainerStatus], app: &[ContainerStatus]) -> &'static str {
    let policy = pod.spec.as_ref().and_then(|s| s.restart_policy.clone()).unwrap_or_else(|| "Always".into());
    let (mut pending_init, mut failed_init) = (0, 0);
    for s in init {
        let st = s.state.clone().unwrap_or_default();
        let last_failed = s.last_state.as_ref().and_then(|l| l.terminated.as_ref()).is_some_and(|t| t.exit_code != 0);
        if st.running.is_some() {
            pending_init += 1;
        } else if let Some(t) = &st.terminated {
            if t.exit_code != 0 {
                pending_init += 1;
                failed_init += 1;
            }
        } else if st.waiting.is_some() {
            pending_init += 1;
            if last_failed {
                failed_init += 1;
            }
        } else {
            pending_init += 1;
        }
    }
    let (mut unknown, mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0, 0);
    for s in app {
        let st = s.state.clone().unwrap_or_default();
        if st.running.is_some() {
            running += 1;
        } else if let Some(t) = &st.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if st.waiting.is_some() {
            if s.last_state.as_ref().and_then(|l| l.terminated.as_ref()).is_some() {
                stopped += 1;
            } else {
                waiting += 1;
            }
        } else {
            unknown += 1;
        }
    }
    if failed_init > 0 && policy == "Never" {
        return "Failed";
    }
    if pending_init > 0 || waiting > 0 {
        return "Pending";
    }
    if running > 0 && unknown == 0 {
        return "Running";
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        if policy == "Always" {
            return "Running";
        }
        if stopped == succeeded {
            return "Succeeded";
        }
        if policy == "Never" {
            return "Failed";
        }
        return "Running";
    }
    "Pending"
}

fn condition(
    old: &Option<PodStatus>,
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: DateTime<Utc>,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let prev = old.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == type_));
    let since = match prev {
        Some(p) if p.status == status => p.last_transition_time.clone().unwrap_or(time(now)),
        _ => time(now),
    };
    PodCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.map(str::to_string),
        message,
        last_transition_time: Some(since),
        last_probe_time: None,
        observed_generation: None,
    }
}

/// The full status of `pod`.
pub fn pod_status(pod: &Pod, obs: &Observed, now: DateTime<Utc>) -> PodStatus {
    let spec = pod.spec.clone().unwrap_or_default();
    let old = pod.status.clone();
    let init_done = initialized(pod, obs);
    let app_default = if init_done { "ContainerCreating" } else { "PodInitializing" };
    let init: Vec<ContainerStatus> =
        spec.init_containers.iter().flatten().map(|c| container_status(c, obs, "PodInitializing", true)).collect();
    let app: Vec<ContainerStatus> =
        spec.containers.iter().map(|c| container_status(c, obs, app_default, false)).collect();
    let mut phase = phase(pod, &init, &app).to_string();
    // a finished pod stays finished
    if let Some(p) = old.as_ref().and_then(|s| s.phase.clone()).filter(|p| p == "Succeeded" || p == "Failed") {
        phase = p;
    }

    let incomplete: Vec<String> = init.iter().filter(|s| !s.ready).map(|s| s.name.clone()).collect();
    let unready: Vec<String> = app.iter().filter(|s| !s.ready).map(|s| s.name.clone()).collect();
    let list = |v: &[String]| format!("[{}]", v.join(" "));
    let initialized = if init_done {
        condition(&old, "Initialized", true, None, None, now)
    } else {
        let msg = format!("containers with incomplete status: {}", list(&incomplete));
        condition(&old, "Initialized", false, Some("ContainersNotInitialized"), Some(msg), now)
    };
    let (ready_reason, ready_msg) = if phase == "Succeeded" {
        (Some("PodCompleted"), None)
    } else if !init_done {
        (Some("ContainersNotInitialized"), Some(format!("containers with incomplete status: {}", list(&incomplete))))
    } else {
        (Some("ContainersNotReady"), Some(format!("containers with unready status: {}", list(&unready))))
    };
    let all_ready = init_done && unready.is_empty() && phase != "Succeeded";
    let (r, m) = if all_ready { (None, None) } else { (ready_reason, ready_msg) };
    let scheduled = old
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled").cloned())
        .unwrap_or_else(|| condition(&old, "PodScheduled", true, None, None, now));
    let conditions = vec![
        condition(&old, "PodReadyToStartContainers", obs.sandbox_ready, None, None, now),
        initialized,
        condition(&old, "Ready", all_ready, r, m.clone(), now),
        condition(&old, "ContainersReady", all_ready, r, m, now),
        scheduled,
    ];

    let host_network = spec.host_network.unwrap_or(false);
    let pod_ips: Vec<IpAddr> = if host_network { obs.host_ips.clone() } else { obs.pod_ips.clone() };
    let start_time = old.as_ref().and_then(|s| s.start_time.clone()).or_else(|| obs.start_time.map(time));
    PodStatus {
        phase: Some(phase),
        conditions: Some(conditions),
        host_ip: obs.host_ips.first().map(|i| i.to_string()),
        host_ips: Some(obs.host_ips.iter().map(|i| HostIP { ip: i.to_string() }).collect())
            .filter(|v: &Vec<_>| !v.is_empty()),
        pod_ip: pod_ips.first().map(|i| i.to_string()),
        pod_ips: Some(pod_ips.iter().map(|i| PodIP { ip: i.to_string() }).collect()).filter(|v: &Vec<_>| !v.is_empty()),
        start_time,
        qos_class: Some(super::resources::qos_class(pod).to_string()),
        init_container_statuses: Some(init).filter(|v| !v.is_empty()),
        container_statuses: Some(app),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    fn pod(policy: &str, init: &[&str], app: &[&str]) -> Pod {
        let cs = |names: &[&str]| {
            names.iter().map(|n| serde_json::json!({"name": n, "image": "busybox"})).collect::<Vec<_>>()
        };
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p", "namespace": "default"},
            "spec": {"restartPolicy": policy, "initContainers": cs(init), "containers": cs(app)},
            "status": {"conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "2023-11-14T22:13:20Z"}]}}))
        .unwrap()
    }

    fn inst(id: &str, attempt: u32, state: TaskState) -> Instance {
        Instance {
            id: id.into(),
            attempt,
            state,
            image: "docker.io/library/busybox:latest".into(),
            image_id: "sha256:abc".into(),
        }
    }

    fn running(at: i64) -> TaskState {
        TaskState::Running { pid: 1, started_at: t(at) }
    }

    fn exited(code: i32, at: i64) -> TaskState {
        TaskState::Exited { exit_code: code, started_at: Some(t(at - 1)), finished_at: t(at), oom_killed: false }
    }

    fn obs() -> Observed {
        Observed {
            sandbox_ready: true,
            host_ips: vec!["192.0.2.10".parse().unwrap()],
            start_time: Some(t(0)),
            ..Default::default()
        }
    }

    fn cond(s: &PodStatus, ty: &str) -> PodCondition {
        s.conditions.as_ref().unwrap().iter().find(|c| c.type_ == ty).unwrap().clone()
    }

    #[test]
    fn running_and_ready() {
        let p = pod("Always", &[], &["web"]);
        let mut o = obs();
        o.instances.insert("web".into(), vec![inst("c1", 0, running(1))]);
        o.ready.insert("c1".into(), true);
        let s = pod_status(&p, &o, t(5));
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "ContainersReady").status, "True");
        assert_eq!(cond(&s, "PodScheduled").last_transition_time, Some(time(t(0))));
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert!(cs.ready && cs.started == Some(true));
        assert_eq!(cs.container_id.as_deref(), Some("containerd://c1"));
        assert_eq!(cs.state.as_ref().unwrap().running.as_ref().unwrap().started_at, Some(time(t(1))));
        assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));
        assert_eq!(s.host_ip.as_deref(), Some("192.0.2.10"));
        assert_eq!(s.pod_ip, None);
    }

    #[test]
    fn unready_container_names_the_reason() {
        let p = pod("Always", &[], &["a", "b"]);
        let mut o = obs();
        o.instances.insert("a".into(), vec![inst("c1", 0, running(1))]);
        o.instances.insert("b".into(), vec![inst("c2", 0, running(1))]);
        o.ready.insert("c1".into(), true);
        o.ready.insert("c2".into(), false);
        let s = pod_status(&p, &o, t(5));
        let r = cond(&s, "Ready");
        assert_eq!((r.status.as_str(), r.reason.as_deref()), ("False", Some("ContainersNotReady")));
        assert_eq!(r.message.as_deref(), Some("containers with unready status: [b]"));
        assert_eq!(s.phase.as_deref(), Some("Running"));
    }

    #[test]
    fn crash_loop_shows_waiting_with_last_state() {
        let p = pod("Always", &[], &["app"]);
        let mut o = obs();
        o.instances.insert("app".into(), vec![inst("c3", 2, exited(1, 10)), inst("c2", 1, exited(1, 5))]);
        let msg = "back-off 20s restarting failed container=app pod=p_default(u)";
        o.waiting.insert("app".into(), ("CrashLoopBackOff".into(), msg.into()));
        let s = pod_status(&p, &o, t(12));
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(cs.restart_count, 2);
        let w = cs.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!((w.reason.as_deref(), w.message.as_deref()), (Some("CrashLoopBackOff"), Some(msg)));
        let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
        assert_eq!(last.container_id.as_deref(), Some("containerd://c3"));
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert!(!cs.ready);
    }

    #[test]
    fn phases_follow_the_restart_policy() {
        let done = |policy: &str, code: i32| {
            let p = pod(policy, &[], &["job"]);
            let mut o = obs();
            o.instances.insert("job".into(), vec![inst("c1", 0, exited(code, 3))]);
            pod_status(&p, &o, t(5))
        };
        let s = done("Never", 0);
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        assert_eq!(cond(&s, "Ready").reason.as_deref(), Some("PodCompleted"));
        let term = s.container_statuses.unwrap()[0].state.clone().unwrap().terminated.unwrap();
        assert_eq!(term.reason.as_deref(), Some("Completed"));
        assert_eq!(done("Never", 2).phase.as_deref(), Some("Failed"));
        assert_eq!(done("OnFailure", 0).phase.as_deref(), Some("Succeeded"));
        assert_eq!(done("OnFailure", 1).phase.as_deref(), Some("Running"));
        // nothing started yet: Pending, ContainerCreating
        let p = pod("Always", &[], &["a"]);
        let s = pod_status(&p, &obs(), t(1));
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let w = s.container_statuses.unwrap()[0].state.clone().unwrap().waiting.unwrap();
        assert_eq!(w.reason.as_deref(), Some("ContainerCreating"));
    }

    #[test]
    fn init_containers_gate_the_pod() {
        let p = pod("Always", &["setup", "migrate"], &["app"]);
        let mut o = obs();
        o.instances.insert("setup".into(), vec![inst("i1", 0, exited(0, 2))]);
        o.instances.insert("migrate".into(), vec![inst("i2", 0, running(3))]);
        let s = pod_status(&p, &o, t(4));
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let i = cond(&s, "Initialized");
        assert_eq!(i.reason.as_deref(), Some("ContainersNotInitialized"));
        assert_eq!(i.message.as_deref(), Some("containers with incomplete status: [migrate]"));
        let app = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(app.state.as_ref().unwrap().waiting.as_ref().unwrap().reason.as_deref(), Some("PodInitializing"));
        let inits = s.init_container_statuses.unwrap();
        assert!(inits[0].ready && !inits[1].ready);
        // a failed init container with restartPolicy Never fails the pod
        let p = pod("Never", &["setup"], &["app"]);
        let mut o = obs();
        o.instances.insert("setup".into(), vec![inst("i1", 0, exited(3, 2))]);
        assert_eq!(pod_status(&p, &o, t(4)).phase.as_deref(), Some("Failed"));
    }

    #[test]
    fn oom_and_terminal_stickiness() {
        let mut p = pod("Never", &[], &["app"]);
        let mut o = obs();
        o.instances.insert(
            "app".into(),
            vec![inst(
                "c1",
                0,
                TaskState::Exited { exit_code: 137, started_at: None, finished_at: t(2), oom_killed: true },
            )],
        );
        let s = pod_status(&p, &o, t(3));
        assert_eq!(
            s.container_statuses.as_ref().unwrap()[0]
                .state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("OOMKilled")
        );
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        // once Failed, a later view (say the containers were removed) keeps it Failed
        p.status = Some(s);
        assert_eq!(pod_status(&p, &obs(), t(9)).phase.as_deref(), Some("Failed"));
    }

    #[test]
    fn transition_times_stay_while_status_holds() {
        let mut p = pod("Always", &[], &["a"]);
        let mut o = obs();
        o.instances.insert("a".into(), vec![inst("c1", 0, running(1))]);
        o.ready.insert("c1".into(), true);
        let s1 = pod_status(&p, &o, t(5));
        p.status = Some(s1.clone());
        let s2 = pod_status(&p, &o, t(50));
        assert_eq!(s1, s2);
        o.ready.insert("c1".into(), false);
        let s3 = pod_status(&p, &o, t(60));
        assert_eq!(cond(&s3, "Ready").last_transition_time, Some(time(t(60))));
    }
}
