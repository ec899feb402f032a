//! One pod's worker: each `sync` reads the pod and the runtime and does the
//! next thing the pod needs — volumes, the sandbox (network namespace, pause
//! container, pod network), init containers one at a time, app containers,
//! restarts with back-off, probe-driven restarts, graceful termination — then
//! writes the status if it changed. Calling it again with nothing new
//! changes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::backoff::{go_duration, Backoff};
use super::cgroups;
use super::probes::{self, Outcome, ProbeKind, Target};
use super::status::{self, Instance, Observed};
use super::volumes::{self, Prepared};
use super::{dns, env, resources, Ctx};
use crate::logs;
use crate::runtime::{
    ContainerInfo, ContainerSpec, ImageInfo, Mount, Namespaces, RegistryAuth, Security, TaskState, LABEL_ATTEMPT,
    LABEL_CONTAINER, LABEL_NODE, LABEL_POD, LABEL_POD_UID, SANDBOX,
};

const RESYNC_SOON: Duration = Duration::from_secs(2);
/// The least time a container gets between SIGTERM and SIGKILL (the kubelet's minimum).
const MIN_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
struct Sandbox {
    id: String,
    pid: u32,
    netns: Option<PathBuf>,
    ips: Vec<IpAddr>,
}

type Reason = (String, String);

pub struct PodWorker {
    ctx: Arc<Ctx>,
    uid: String,
    sandbox: Option<Sandbox>,
    backoff: Backoff,
    pull_backoff: Backoff,
    waiting: HashMap<String, Reason>,
    next_attempt: HashMap<String, u32>,
    probes: HashMap<(String, ProbeKind), (String, JoinHandle<()>)>,
    results: Arc<probes::Results>,
    pub notify: Arc<Notify>,
    waiters: HashMap<String, JoinHandle<()>>,
    killing: HashSet<String>,
    last_status: Option<serde_json::Value>,
    last_status_obj: Option<k8s_openapi::api::core::v1::PodStatus>,
    volumes: Option<HashMap<String, Prepared>>,
    noted: HashSet<String>,
    first_seen: DateTime<Utc>,
}

/// `namespace/name` for messages, and the kubelet's `name_namespace(uid)`.
fn pod_format(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.uid.as_deref().unwrap_or("")
    )
}

/// The containerd id of a pod's container run.
pub fn container_id(uid: &str, name: &str, attempt: u32) -> String {
    let short: String = uid.chars().filter(|c| c.is_ascii_alphanumeric()).take(12).collect();
    let name: String = name.chars().take(50).collect();
    format!("{short}-{name}-{attempt}")
}

fn host_network(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false)
}

fn restart_policy(pod: &Pod) -> String {
    pod.spec.as_ref().and_then(|s| s.restart_policy.clone()).unwrap_or_else(|| "Always".into())
}

fn grace_period(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30);
    Duration::from_secs(secs.max(0) as u64)
}

fn started_at(i: &Instance) -> Option<DateTime<Utc>> {
    match i.state {
        TaskState::Running { started_at, .. } => Some(started_at),
        _ => None,
    }
}

fn image_pull_policy(c: &Container, reference: &str) -> String {
    if let Some(p) = c.image_pull_policy.clone().filter(|p| !p.is_empty()) {
        return p;
    }
    let image = c.image.clone().unwrap_or_default();
    let last = image.rsplit('/').next().unwrap_or("");
    let tagged = last.contains(':') || image.contains('@');
    if !tagged || reference.ends_with(":latest") {
        "Always".into()
    } else {
        "IfNotPresent".into()
    }
}

/// `docker.io/library/busybox:latest` for `busybox`.
pub fn normalize_image(image: &str) -> String {
    crate::runtime::containerd::reference::Reference::parse(image)
        .map(|r| r.to_string())
        .unwrap_or_else(|_| image.to_string())
}

fn go_secs(d: Duration) -> String {
    if d.as_secs() >= 1 {
        format!("{:.3}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

impl PodWorker {
    pub fn new(ctx: Arc<Ctx>, uid: String) -> PodWorker {
        PodWorker {
            ctx,
            uid,
            sandbox: None,
            backoff: Backoff::default(),
            pull_backoff: Backoff::default(),
            waiting: HashMap::new(),
            next_attempt: HashMap::new(),
            probes: HashMap::new(),
            results: Arc::new(probes::Results::default()),
            notify: Arc::new(Notify::new()),
            waiters: HashMap::new(),
            killing: HashSet::new(),
            last_status: None,
            last_status_obj: None,
            volumes: None,
            noted: HashSet::new(),
            first_seen: Utc::now(),
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.ctx.config.pods_dir().join(&self.uid)
    }

    fn log_dir(&self, pod: &Pod) -> PathBuf {
        let (ns, name) = super::ns_name(pod);
        logs::pod_log_dir(&self.ctx.config.pods_dir(), &ns, &name, &self.uid)
    }

    fn netns_path(&self) -> PathBuf {
        self.ctx.config.netns_dir().join(&self.uid)
    }

    fn pod_ref(&self, pod: &Pod) -> skiff_net::PodRef {
        let (namespace, name) = super::ns_name(pod);
        skiff_net::PodRef { namespace, name, uid: self.uid.clone() }
    }

    fn event(&self, pod: &Pod, container: Option<&str>, type_: &str, reason: &str, message: String) {
        self.ctx.recorder.pod(pod, container, type_, reason, message);
    }

    fn labels(&self, pod: &Pod, container: &str, attempt: u32) -> BTreeMap<String, String> {
        let (ns, name) = super::ns_name(pod);
        [
            (LABEL_NODE, self.ctx.config.node_name.clone()),
            (LABEL_POD_UID, self.uid.clone()),
            (LABEL_POD, format!("{ns}/{name}")),
            (LABEL_CONTAINER, container.to_string()),
            (LABEL_ATTEMPT, attempt.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn facts(&self, pod: &Pod) -> env::PodFacts {
        let host = self.ctx.config.node_ips();
        env::PodFacts {
            pod_ips: if host_network(pod) {
                host.clone()
            } else {
                self.sandbox.as_ref().map(|s| s.ips.clone()).unwrap_or_default()
            },
            host_ips: host,
            node_allocatable: self.ctx.node_allocatable.clone(),
        }
    }

    /// The pod's containers in the runtime: sandboxes, and app/init runs by name (newest first).
    async fn observe(&self) -> Result<(Vec<ContainerInfo>, HashMap<String, Vec<Instance>>), String> {
        let labels: BTreeMap<String, String> = [
            (LABEL_NODE.to_string(), self.ctx.config.node_name.clone()),
            (LABEL_POD_UID.to_string(), self.uid.clone()),
        ]
        .into_iter()
        .collect();
        let all = self.ctx.runtime.list(&labels).await.map_err(|e| e.to_string())?;
        let mut sandboxes = Vec::new();
        let mut by_name: HashMap<String, Vec<Instance>> = HashMap::new();
        for c in all {
            let name = c.labels.get(LABEL_CONTAINER).cloned().unwrap_or_default();
            if name == SANDBOX {
                sandboxes.push(c);
                continue;
            }
            let image_id = self.image_id(&c.image).await;
            by_name.entry(name).or_default().push(Instance {
                id: c.id.clone(),
                attempt: super::gc::attempt(&c),
                state: c.state.clone(),
                image: c.image.clone(),
                image_id,
            });
        }
        for runs in by_name.values_mut() {
            runs.sort_by_key(|i| std::cmp::Reverse(i.attempt));
        }
        sandboxes.sort_by_key(|c| std::cmp::Reverse(super::gc::attempt(c)));
        Ok((sandboxes, by_name))
    }

    async fn image_id(&self, reference: &str) -> String {
        let cached = self.ctx.images.lock().ok().and_then(|m| m.get(reference).cloned());
        let info = match cached {
            Some(i) => Some(i),
            None => match self.ctx.runtime.image(reference).await {
                Ok(Some(i)) => {
                    if let Ok(mut m) = self.ctx.images.lock() {
                        m.insert(reference.to_string(), i.clone());
                    }
                    Some(i)
                }
                _ => None,
            },
        };
        info.map(|i| i.repo_digest.unwrap_or(i.id)).unwrap_or_default()
    }

    /// Converge the pod once. `None`: the pod is gone for good (deleted), the worker may end.
    pub async fn sync(&mut self, pod: &Pod) -> Option<Duration> {
        if pod.metadata.deletion_timestamp.is_some() {
            return if self.terminate(pod).await { None } else { Some(RESYNC_SOON) };
        }
        let now = Utc::now();
        self.waiting.clear();
        let (sandboxes, mut instances) = match self.observe().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "listing the pod's containers failed");
                return Some(RESYNC_SOON);
            }
        };
        for (name, runs) in &instances {
            if let Some(i) = runs.first() {
                let n = self.next_attempt.entry(name.clone()).or_insert(0);
                *n = (*n).max(i.attempt + 1);
            }
        }
        let terminal = self
            .last_status_obj
            .as_ref()
            .or(pod.status.as_ref())
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed");
        let mut next = self.ctx.config.resync;
        if !terminal {
            next = next.min(self.converge(pod, &sandboxes, &instances, now).await);
            match self.observe().await {
                Ok((_, i)) => instances = i,
                Err(e) => tracing::warn!(error = %e, "listing the pod's containers failed"),
            }
        } else {
            self.stop_sandbox(pod, &sandboxes).await;
        }
        self.ensure_probes(pod, &instances);
        self.ensure_waiters(&instances);
        self.check_probe_kills(pod, &instances);
        self.rotate_logs(pod, &instances);
        self.write_status(pod, &instances, now).await;
        Some(next)
    }

    async fn converge(
        &mut self,
        pod: &Pod,
        sandboxes: &[ContainerInfo],
        instances: &HashMap<String, Vec<Instance>>,
        now: DateTime<Utc>,
    ) -> Duration {
        let resync = self.ctx.config.resync;
        let facts = self.facts(pod);
        match volumes::prepare(pod, &self.state_dir(), &*self.ctx.objects, &facts).await {
            Ok(p) => {
                for note in p.notes {
                    if self.noted.insert(note.clone()) {
                        self.event(pod, None, "Warning", "VolumeSourceNotSupported", note);
                    }
                }
                self.volumes = Some(p.volumes);
            }
            Err(e) => {
                self.event(pod, None, "Warning", "FailedMount", e);
                if self.volumes.is_none() {
                    return resync;
                }
            }
        }
        let recreated = match self.ensure_sandbox(pod, sandboxes).await {
            Ok(r) => r,
            Err(e) => {
                self.event(
                    pod,
                    None,
                    "Warning",
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: {e}"),
                );
                return Duration::from_secs(5);
            }
        };
        let fresh;
        let instances = if recreated {
            fresh = self.observe().await.map(|(_, i)| i).unwrap_or_default();
            &fresh
        } else {
            instances
        };
        if let Err(e) = self.write_etc_files(pod) {
            self.event(pod, None, "Warning", "FailedMount", format!("writing the pod's /etc files: {e}"));
            return resync;
        }
        let (initialized, wait) = self.sync_init(pod, instances, now).await;
        if !initialized {
            return wait;
        }
        self.sync_app(pod, instances, now).await
    }

    /// A finished pod keeps its containers (for status and logs) but not
    /// its sandbox and network, as the kubelet does.
    async fn stop_sandbox(&mut self, pod: &Pod, sandboxes: &[ContainerInfo]) {
        let running: Vec<String> =
            sandboxes.iter().filter(|s| matches!(s.state, TaskState::Running { .. })).map(|s| s.id.clone()).collect();
        if running.is_empty() {
            return;
        }
        self.stop_probes();
        for id in &running {
            tracing::debug!(id, "the pod has finished: stopping its sandbox");
            let _ = self.ctx.runtime.kill(id, 9).await;
            let _ = self.ctx.runtime.wait_exit(id, Duration::from_secs(10)).await;
        }
        if !host_network(pod) {
            let netns = self.netns_path();
            if let Err(e) = self.ctx.network.teardown(&self.pod_ref(pod), &netns).await {
                tracing::warn!(error = %e, "tearing down the pod network failed");
            }
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || skiff_net::netns::remove(&netns)).await {
                tracing::warn!(error = %e, "removing the pod's network namespace failed");
            }
        }
        self.sandbox = None;
    }

    async fn adopt_sandbox(&mut self, pod: &Pod, sandboxes: &[ContainerInfo]) -> Option<()> {
        let sb = sandboxes.iter().find(|s| matches!(s.state, TaskState::Running { .. }))?;
        let TaskState::Running { pid, .. } = sb.state else { return None };
        if self.sandbox.as_ref().is_some_and(|s| s.id == sb.id) {
            return Some(());
        }
        let host = host_network(pod);
        let netns = (!host).then(|| self.netns_path());
        let mut ips: Vec<IpAddr> = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ips.clone())
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.ip.parse().ok())
            .collect();
        if host {
            ips = self.ctx.config.node_ips();
        } else if ips.is_empty() {
            if let Some(ns) = &netns {
                // setup is idempotent: it returns what the pod already has
                ips = self.ctx.network.setup(&self.pod_ref(pod), ns).await.map(|a| a.ips).unwrap_or_default();
            }
        }
        tracing::info!(sandbox = %sb.id, "adopted the running pod sandbox");
        self.sandbox = Some(Sandbox { id: sb.id.clone(), pid, netns, ips });
        Some(())
    }

    /// The pod's cgroup path, when the agent manages pod cgroups.
    fn cgroup_path(&self, pod: &Pod) -> String {
        self.ctx.config.pod_cgroup_root.as_deref().map(|root| cgroups::pod_path(root, pod)).unwrap_or_default()
    }

    /// Create the pod's cgroup with the pod's limits; its path.
    async fn ensure_cgroup(&self, pod: &Pod) -> Result<String, String> {
        let path = self.cgroup_path(pod);
        if path.is_empty() {
            return Ok(path);
        }
        let (p, r) = (path.clone(), cgroups::pod_resources(pod));
        tokio::task::spawn_blocking(move || cgroups::ensure(&p, &r))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("creating the pod's cgroup {path}: {e}"))?;
        Ok(path)
    }

    /// The sandbox: adopt the running one, or make the network namespace,
    /// start a pause container in it and set up the pod network. Returns
    /// whether an old sandbox was replaced (its containers are gone then).
    async fn ensure_sandbox(&mut self, pod: &Pod, sandboxes: &[ContainerInfo]) -> Result<bool, String> {
        if self.adopt_sandbox(pod, sandboxes).await.is_some() {
            return Ok(false);
        }
        let replaced = !sandboxes.is_empty();
        if replaced {
            self.event(
                pod,
                None,
                "Normal",
                "SandboxChanged",
                "Pod sandbox changed, it will be killed and re-created.".into(),
            );
            self.stop_probes();
            if let Ok((old, runs)) = self.observe().await {
                for c in old.iter().map(|c| c.id.clone()).chain(runs.values().flatten().map(|i| i.id.clone())) {
                    let _ = self.ctx.runtime.remove(&c).await;
                }
            }
            self.sandbox = None;
        }
        let host = host_network(pod);
        let spec = pod.spec.clone().unwrap_or_default();
        let netns = if host {
            None
        } else {
            let path = self.netns_path();
            let p = path.clone();
            tracing::debug!(netns = %path.display(), "creating the pod network namespace");
            tokio::task::spawn_blocking(move || skiff_net::netns::create(&p))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            Some(path)
        };
        let cgroup_parent = self.ensure_cgroup(pod).await?;
        let pause = &self.ctx.config.pause_image;
        let image = match self.ctx.runtime.image(pause).await {
            Ok(Some(i)) => i,
            Ok(None) => {
                return Err(format!("the pause image {pause:?} is not present (the agent imports it when it starts)"))
            }
            Err(e) => return Err(e.to_string()),
        };
        let attempt = sandboxes.iter().map(super::gc::attempt).max().map(|a| a + 1).unwrap_or(0);
        let log_dir = self.log_dir(pod);
        let id = container_id(&self.uid, SANDBOX, attempt);
        let mut args = image.entrypoint.clone();
        args.extend(image.cmd.clone());
        let cs = ContainerSpec {
            id: id.clone(),
            image: image.reference.clone(),
            args,
            env: image.env.clone(),
            working_dir: String::new(),
            hostname: if host { crate::node::hostname() } else { dns::hostname(pod) },
            mounts: Vec::new(),
            namespaces: Namespaces {
                network: netns.clone(),
                ipc: None,
                uts: None,
                host_pid: spec.host_pid.unwrap_or(false),
                host_ipc: spec.host_ipc.unwrap_or(false),
            },
            resources: Default::default(),
            security: Security::default(),
            log_path: logs::container_log_path(&log_dir, SANDBOX, attempt),
            tty: false,
            stdin: false,
            labels: self.labels(pod, SANDBOX, attempt),
            cgroup_parent,
        };
        tracing::debug!(id, "creating the sandbox");
        self.ctx.runtime.create(&cs).await.map_err(|e| e.to_string())?;
        let pid = match self.ctx.runtime.start(&id).await {
            Ok(pid) => pid,
            Err(e) => {
                let _ = self.ctx.runtime.remove(&id).await;
                return Err(e.to_string());
            }
        };
        let ips = match &netns {
            None => self.ctx.config.node_ips(),
            Some(ns) => match self.ctx.network.setup(&self.pod_ref(pod), ns).await {
                Ok(a) => a.ips,
                Err(e) => {
                    let _ = self.ctx.runtime.remove(&id).await;
                    return Err(format!("setting up the pod network: {e}"));
                }
            },
        };
        tracing::info!(sandbox = %id, ips = ?ips, "started the pod sandbox");
        self.sandbox = Some(Sandbox { id, pid, netns, ips });
        Ok(replaced)
    }

    fn write_etc_files(&self, pod: &Pod) -> std::io::Result<()> {
        let dir = self.state_dir();
        std::fs::create_dir_all(&dir)?;
        let domain = &self.ctx.config.cluster_domain;
        let ips = self.sandbox.as_ref().map(|s| s.ips.clone()).unwrap_or_default();
        let hosts = if host_network(pod) {
            dns::host_network_hosts_file(&self.ctx.node_hosts, pod)
        } else {
            dns::hosts_file(pod, &ips, domain)
        };
        let resolv =
            dns::render_resolv_conf(&dns::pod_dns(pod, &self.ctx.config.cluster_dns, domain, &self.ctx.host_dns));
        let hostname =
            if host_network(pod) { format!("{}\n", crate::node::hostname()) } else { dns::hostname_file(pod, domain) };
        for (name, content) in [("etc-hosts", hosts), ("etc-resolv.conf", resolv), ("etc-hostname", hostname)] {
            let path = dir.join(name);
            if std::fs::read_to_string(&path).ok().as_deref() != Some(content.as_str()) {
                let tmp = dir.join(format!(".{name}.tmp"));
                std::fs::write(&tmp, content)?;
                std::fs::rename(&tmp, &path)?;
            }
        }
        Ok(())
    }

    fn etc_mounts(&self, c: &Container, mounts: &mut Vec<Mount>) {
        let dir = self.state_dir();
        for (file, target) in
            [("etc-hosts", "/etc/hosts"), ("etc-resolv.conf", "/etc/resolv.conf"), ("etc-hostname", "/etc/hostname")]
        {
            if c.volume_mounts.iter().flatten().any(|m| m.mount_path == target) {
                continue;
            }
            mounts.push(Mount { host_path: dir.join(file), container_path: target.into(), read_only: false });
        }
    }

    /// Whether a container that exited at `finished_at` must wait before it
    /// runs again; records the restart when it may go now.
    fn restart_gate(
        &mut self,
        pod: &Pod,
        name: &str,
        finished_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<Duration> {
        if self.backoff.in_backoff_since(name, finished_at, now) {
            let msg = format!(
                "back-off {} restarting failed container={name} pod={}",
                go_duration(self.backoff.get(name)),
                pod_format(pod)
            );
            self.waiting.insert(name.to_string(), ("CrashLoopBackOff".into(), msg));
            self.event(
                pod,
                Some(name),
                "Warning",
                "BackOff",
                format!("Back-off restarting failed container {name} in pod {}", pod_format(pod)),
            );
            return Some(
                self.backoff
                    .remaining_since(name, finished_at, now)
                    .unwrap_or(RESYNC_SOON)
                    .max(Duration::from_millis(200)),
            );
        }
        self.backoff.next(name, finished_at);
        None
    }

    async fn sync_init(
        &mut self,
        pod: &Pod,
        instances: &HashMap<String, Vec<Instance>>,
        now: DateTime<Utc>,
    ) -> (bool, Duration) {
        let resync = self.ctx.config.resync;
        let inits = pod.spec.as_ref().and_then(|s| s.init_containers.clone()).unwrap_or_default();
        for c in &inits {
            let latest = instances.get(&c.name).and_then(|l| l.first()).cloned();
            match latest.as_ref().map(|i| i.state.clone()) {
                Some(TaskState::Exited { exit_code: 0, .. }) => continue,
                Some(TaskState::Running { .. }) => return (false, resync),
                Some(TaskState::Exited { finished_at, .. }) => {
                    if restart_policy(pod) == "Never" {
                        return (false, resync);
                    }
                    if let Some(wait) = self.restart_gate(pod, &c.name, finished_at, now) {
                        return (false, wait);
                    }
                    self.start(pod, c).await;
                    return (false, resync);
                }
                Some(TaskState::Created | TaskState::Unknown) => {
                    if let Some(i) = &latest {
                        let _ = self.ctx.runtime.remove(&i.id).await;
                    }
                    self.start(pod, c).await;
                    return (false, resync);
                }
                None => {
                    self.start(pod, c).await;
                    return (false, resync);
                }
            }
        }
        (true, resync)
    }

    async fn sync_app(
        &mut self,
        pod: &Pod,
        instances: &HashMap<String, Vec<Instance>>,
        now: DateTime<Utc>,
    ) -> Duration {
        let mut next = self.ctx.config.resync;
        let policy = restart_policy(pod);
        let containers = pod.spec.as_ref().map(|s| s.containers.clone()).unwrap_or_default();
        for c in &containers {
            let latest = instances.get(&c.name).and_then(|l| l.first()).cloned();
            match latest.as_ref().map(|i| i.state.clone()) {
                None => {
                    if !self.start(pod, c).await {
                        next = next.min(Duration::from_secs(5));
                    }
                }
                Some(TaskState::Running { .. }) => {}
                Some(TaskState::Exited { exit_code, finished_at, .. }) => {
                    let restart = match policy.as_str() {
                        "Never" => false,
                        "OnFailure" => exit_code != 0,
                        _ => true,
                    };
                    if restart {
                        match self.restart_gate(pod, &c.name, finished_at, now) {
                            Some(wait) => next = next.min(wait),
                            None => {
                                self.start(pod, c).await;
                            }
                        }
                    }
                }
                Some(TaskState::Created | TaskState::Unknown) => {
                    if let Some(i) = &latest {
                        let _ = self.ctx.runtime.remove(&i.id).await;
                    }
                    self.start(pod, c).await;
                }
            }
        }
        next
    }

    /// Start the next run of `c`; on failure the reason it waits is recorded.
    async fn start(&mut self, pod: &Pod, c: &Container) -> bool {
        let attempt = self.next_attempt.get(&c.name).copied().unwrap_or(0);
        match self.create_and_start(pod, c, attempt).await {
            Ok(()) => {
                self.next_attempt.insert(c.name.clone(), attempt + 1);
                self.waiting.remove(&c.name);
                true
            }
            Err(reason) => {
                self.waiting.insert(c.name.clone(), reason);
                false
            }
        }
    }

    fn fail(&self, pod: &Pod, c: &Container, reason: &str, message: String) -> Reason {
        self.event(pod, Some(&c.name), "Warning", "Failed", format!("Error: {message}"));
        (reason.to_string(), message)
    }

    async fn create_and_start(&mut self, pod: &Pod, c: &Container, attempt: u32) -> Result<(), Reason> {
        let Some(sandbox) = self.sandbox.clone() else {
            return Err(("ContainerCreating".into(), String::new()));
        };
        let image = self.ensure_image(pod, c).await?;
        let facts = self.facts(pod);
        let env = env::container_env(pod, c, &facts, &*self.ctx.objects)
            .await
            .map_err(|e| self.fail(pod, c, "CreateContainerConfigError", e))?;
        let security = security(pod, c, &image).map_err(|e| self.fail(pod, c, "CreateContainerConfigError", e))?;
        let args = env::argv(c, &image, &env).map_err(|e| self.fail(pod, c, "CreateContainerError", e))?;
        let volumes = self.volumes.clone().unwrap_or_default();
        let mut mounts = volumes::container_mounts(c.volume_mounts.as_deref().unwrap_or_default(), &volumes, &env)
            .map_err(|e| self.fail(pod, c, "CreateContainerConfigError", e))?;
        self.etc_mounts(c, &mut mounts);
        let log_path = logs::container_log_path(&self.log_dir(pod), &c.name, attempt);
        if let Some(d) = log_path.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        let spec = pod.spec.clone().unwrap_or_default();
        let id = container_id(&self.uid, &c.name, attempt);
        let proc_ns = |kind: &str| PathBuf::from(format!("/proc/{}/ns/{kind}", sandbox.pid));
        let cs = ContainerSpec {
            id: id.clone(),
            image: image.reference.clone(),
            args,
            env: env::runtime_env(&image, &env),
            working_dir: c.working_dir.clone().filter(|w| !w.is_empty()).unwrap_or_else(|| image.working_dir.clone()),
            hostname: if host_network(pod) { crate::node::hostname() } else { dns::hostname(pod) },
            mounts,
            namespaces: Namespaces {
                network: sandbox.netns.clone(),
                ipc: (!spec.host_ipc.unwrap_or(false)).then(|| proc_ns("ipc")),
                uts: Some(proc_ns("uts")),
                host_pid: spec.host_pid.unwrap_or(false),
                host_ipc: spec.host_ipc.unwrap_or(false),
            },
            resources: resources::runtime_resources(c),
            security,
            log_path,
            tty: c.tty.unwrap_or(false),
            stdin: c.stdin.unwrap_or(false),
            labels: self.labels(pod, &c.name, attempt),
            cgroup_parent: self.cgroup_path(pod),
        };
        tracing::debug!(id, image = %cs.image, "creating a container");
        if let Err(e) = self.ctx.runtime.create(&cs).await {
            let _ = self.ctx.runtime.remove(&id).await;
            return Err(self.fail(pod, c, "CreateContainerError", e.to_string()));
        }
        self.event(pod, Some(&c.name), "Normal", "Created", format!("Created container: {}", c.name));
        if let Err(e) = self.ctx.runtime.start(&id).await {
            let _ = self.ctx.runtime.remove(&id).await;
            self.backoff.next(&c.name, Utc::now());
            return Err(self.fail(pod, c, "RunContainerError", format!("failed to start container {:?}: {e}", c.name)));
        }
        self.event(pod, Some(&c.name), "Normal", "Started", format!("Started container {}", c.name));
        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.clone()) {
            let target = self.target(pod);
            if let Err(e) = run_hook(self.ctx.runtime.as_ref(), &id, &h, pod, c, &target).await {
                self.event(pod, Some(&c.name), "Warning", "FailedPostStartHook", e);
                let ctx = self.ctx.clone();
                let msg = format!("FailedPostStartHook: container {} will be restarted", c.name);
                kill_container(ctx, pod.clone(), Some(c.clone()), id, grace_period(pod), msg, self.target(pod)).await;
            }
        }
        Ok(())
    }

    fn target(&self, pod: &Pod) -> Target {
        if host_network(pod) {
            return Target { netns: None, pod_ip: Some(self.ctx.config.node_ip) };
        }
        Target {
            netns: self.sandbox.as_ref().and_then(|s| s.netns.clone()),
            pod_ip: self.sandbox.as_ref().and_then(|s| s.ips.first().copied()),
        }
    }

    async fn ensure_image(&mut self, pod: &Pod, c: &Container) -> Result<ImageInfo, Reason> {
        let image = c.image.clone().unwrap_or_default();
        if image.is_empty() {
            return Err(self.fail(pod, c, "InvalidImageName", "the container has no image".into()));
        }
        let reference = normalize_image(&image);
        let policy = image_pull_policy(c, &reference);
        let present = self.ctx.runtime.image(&reference).await.ok().flatten();
        match (policy.as_str(), present) {
            ("Never", Some(i)) | ("IfNotPresent", Some(i)) => {
                self.event(
                    pod,
                    Some(&c.name),
                    "Normal",
                    "Pulled",
                    format!("Container image {image:?} already present on machine"),
                );
                return Ok(i);
            }
            ("Never", None) => {
                let msg = format!("Container image {image:?} is not present with pull policy of Never");
                self.event(pod, Some(&c.name), "Warning", "ErrImageNeverPull", msg.clone());
                return Err(("ErrImageNeverPull".into(), msg));
            }
            _ => {}
        }
        let key = reference.clone();
        if self.pull_backoff.in_backoff_since_update(&key, Utc::now()) {
            let msg = format!("Back-off pulling image {image:?}");
            self.event(pod, Some(&c.name), "Normal", "BackOff", msg.clone());
            self.event(pod, Some(&c.name), "Warning", "Failed", "Error: ImagePullBackOff".into());
            return Err(("ImagePullBackOff".into(), msg));
        }
        self.event(pod, Some(&c.name), "Normal", "Pulling", format!("Pulling image {image:?}"));
        let auth = self.pull_auth(pod, &reference).await;
        let started = std::time::Instant::now();
        tracing::debug!(reference, "pulling an image");
        match self.ctx.runtime.pull(&reference, auth.as_ref()).await {
            Ok(info) => {
                let took = go_secs(started.elapsed());
                self.event(
                    pod,
                    Some(&c.name),
                    "Normal",
                    "Pulled",
                    format!("Successfully pulled image {image:?} in {took} ({took} including waiting). Image size: {} bytes.", info.size),
                );
                if let Ok(mut m) = self.ctx.images.lock() {
                    m.insert(reference.clone(), info.clone());
                }
                Ok(info)
            }
            Err(e) => {
                self.pull_backoff.next(&key, Utc::now());
                let msg = e.to_string();
                self.event(pod, Some(&c.name), "Warning", "Failed", format!("Failed to pull image {image:?}: {msg}"));
                self.event(pod, Some(&c.name), "Warning", "Failed", "Error: ErrImagePull".into());
                Err(("ErrImagePull".into(), msg))
            }
        }
    }

    async fn pull_auth(&self, pod: &Pod, reference: &str) -> Option<RegistryAuth> {
        let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let host = reference.split('/').next().unwrap_or("docker.io").to_string();
        for r in pod.spec.as_ref()?.image_pull_secrets.iter().flatten() {
            let Ok(Some(secret)) = self.ctx.objects.secret(&ns, &r.name).await else { continue };
            if let Some(a) = registry_auth(&secret, &host) {
                return Some(a);
            }
        }
        None
    }

    fn ensure_probes(&mut self, pod: &Pod, instances: &HashMap<String, Vec<Instance>>) {
        let containers = pod.spec.as_ref().map(|s| s.containers.clone()).unwrap_or_default();
        let mut wanted = HashSet::new();
        let shared = Arc::new(pod.clone());
        for c in &containers {
            let Some(i) = instances.get(&c.name).and_then(|l| l.first()).filter(|i| i.running()) else { continue };
            let Some(started) = started_at(i) else { continue };
            for kind in [ProbeKind::Startup, ProbeKind::Readiness, ProbeKind::Liveness] {
                let Some(probe) = kind.probe(c).cloned() else { continue };
                let key = (c.name.clone(), kind);
                wanted.insert(key.clone());
                if let Some((id, h)) = self.probes.get(&key) {
                    if *id == i.id {
                        continue;
                    }
                    h.abort();
                    self.results.forget(id);
                }
                let initial = adopted_result(pod, c, &i.id, kind);
                let recorder = self.ctx.recorder.clone();
                let p = shared.clone();
                let name = c.name.clone();
                let report: probes::Report =
                    Arc::new(move |t, reason, msg| recorder.pod(&p, Some(&name), t, reason, msg));
                let worker = probes::Worker {
                    kind,
                    probe,
                    container: c.clone(),
                    container_id: i.id.clone(),
                    started_at: started,
                    target: self.target(pod),
                    results: self.results.clone(),
                    notify: self.notify.clone(),
                    report,
                    initial,
                    runtime: self.ctx.runtime.clone(),
                };
                self.probes.insert(key, (i.id.clone(), tokio::spawn(worker.run())));
            }
        }
        let stale: Vec<_> = self.probes.keys().filter(|k| !wanted.contains(*k)).cloned().collect();
        for k in stale {
            if let Some((id, h)) = self.probes.remove(&k) {
                h.abort();
                self.results.forget(&id);
            }
        }
    }

    fn stop_probes(&mut self) {
        for (_, (id, h)) in self.probes.drain() {
            h.abort();
            self.results.forget(&id);
        }
    }

    fn ensure_waiters(&mut self, instances: &HashMap<String, Vec<Instance>>) {
        let mut running: HashSet<String> =
            instances.values().filter_map(|l| l.first()).filter(|i| i.running()).map(|i| i.id.clone()).collect();
        if let Some(sb) = &self.sandbox {
            running.insert(sb.id.clone());
        }
        self.waiters.retain(|id, h| {
            let keep = running.contains(id) && !h.is_finished();
            if !keep {
                h.abort();
            }
            keep
        });
        for id in running {
            if self.waiters.contains_key(&id) {
                continue;
            }
            let runtime = self.ctx.runtime.clone();
            let notify = self.notify.clone();
            let wid = id.clone();
            let h = tokio::spawn(async move {
                loop {
                    match runtime.wait_exit(&wid, Duration::from_secs(300)).await {
                        Ok(true) => break,
                        Ok(false) => continue,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            break;
                        }
                    }
                }
                notify.notify_one();
            });
            self.waiters.insert(id, h);
        }
    }

    fn check_probe_kills(&mut self, pod: &Pod, instances: &HashMap<String, Vec<Instance>>) {
        let containers = pod.spec.as_ref().map(|s| s.containers.clone()).unwrap_or_default();
        for c in &containers {
            let Some(i) = instances.get(&c.name).and_then(|l| l.first()).filter(|i| i.running()) else { continue };
            for kind in [ProbeKind::Liveness, ProbeKind::Startup] {
                let Some(probe) = kind.probe(c) else { continue };
                if self.results.get(&i.id, kind) != Some(Outcome::Failure) || !self.killing.insert(i.id.clone()) {
                    continue;
                }
                let grace = probe
                    .termination_grace_period_seconds
                    .map(|s| Duration::from_secs(s.max(0) as u64))
                    .unwrap_or_else(|| grace_period(pod));
                let msg =
                    format!("Container {} failed {} probe, will be restarted", c.name, kind.title().to_lowercase());
                let notify = self.notify.clone();
                let fut = kill_container(
                    self.ctx.clone(),
                    pod.clone(),
                    Some(c.clone()),
                    i.id.clone(),
                    grace,
                    msg,
                    self.target(pod),
                );
                tokio::spawn(async move {
                    fut.await;
                    notify.notify_one();
                });
            }
        }
    }

    fn rotate_logs(&self, pod: &Pod, instances: &HashMap<String, Vec<Instance>>) {
        let dir = self.log_dir(pod);
        for (name, runs) in instances {
            if let Some(i) = runs.first().filter(|i| i.running()) {
                let path = logs::container_log_path(&dir, name, i.attempt);
                if let Ok(true) = logs::rotate_if_needed(&path, logs::MAX_LOG_BYTES) {
                    tracing::debug!(log = %path.display(), "rotated a container log");
                }
            }
        }
    }

    fn observed(&self, pod: &Pod, instances: &HashMap<String, Vec<Instance>>) -> Observed {
        let mut obs = Observed {
            sandbox_ready: self.sandbox.is_some(),
            pod_ips: self.sandbox.as_ref().map(|s| s.ips.clone()).unwrap_or_default(),
            host_ips: self.ctx.config.node_ips(),
            waiting: self.waiting.clone(),
            start_time: Some(self.first_seen),
            ..Default::default()
        };
        let containers = pod.spec.as_ref().map(|s| s.containers.clone()).unwrap_or_default();
        for (name, runs) in instances {
            // the current run, and the newest exited run before it
            let mut kept: Vec<Instance> = runs.iter().take(1).cloned().collect();
            if let Some(prev) = runs.iter().skip(1).find(|i| i.exited().is_some()) {
                kept.push(prev.clone());
            }
            if let (Some(i), Some(c)) =
                (kept.first().filter(|i| i.running()), containers.iter().find(|c| &c.name == name))
            {
                let ready = match c.readiness_probe {
                    Some(_) => self.results.get(&i.id, ProbeKind::Readiness) == Some(Outcome::Success),
                    None => true,
                };
                let started = match c.startup_probe {
                    Some(_) => self.results.get(&i.id, ProbeKind::Startup) == Some(Outcome::Success),
                    None => true,
                };
                obs.ready.insert(i.id.clone(), ready);
                obs.started.insert(i.id.clone(), started);
            }
            obs.instances.insert(name.clone(), kept);
        }
        obs
    }

    async fn write_status(&mut self, pod: &Pod, instances: &HashMap<String, Vec<Instance>>, now: DateTime<Utc>) {
        let obs = self.observed(pod, instances);
        let mut basis = pod.clone();
        if let Some(s) = &self.last_status_obj {
            basis.status = Some(s.clone());
        }
        let status = status::pod_status(&basis, &obs, now);
        let json = serde_json::to_value(&status).unwrap_or_default();
        let known = self.last_status.clone().or_else(|| pod.status.as_ref().and_then(|s| serde_json::to_value(s).ok()));
        if known.as_ref() == Some(&json) {
            return;
        }
        match self.ctx.api.patch_status(pod, &status).await {
            Ok(()) => {
                self.last_status = Some(json);
                self.last_status_obj = Some(status);
            }
            Err(e) => tracing::warn!(error = %e, "writing the pod status failed"),
        }
    }

    /// Graceful deletion: stop every container within the grace period,
    /// remove the pod's containers, network and files, then delete the pod.
    /// Returns whether the pod is gone.
    async fn terminate(&mut self, pod: &Pod) -> bool {
        let grace = grace_period(pod);
        self.stop_probes();
        let (sandboxes, instances) = match self.observe().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "listing the pod's containers failed");
                return false;
            }
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let target = self.target(pod);
        let kills: Vec<_> = instances
            .iter()
            .filter_map(|(name, runs)| runs.first().filter(|i| i.running()).map(|i| (name.clone(), i.id.clone())))
            .map(|(name, id)| {
                let c = spec
                    .containers
                    .iter()
                    .chain(spec.init_containers.iter().flatten())
                    .find(|c| c.name == name)
                    .cloned();
                kill_container(
                    self.ctx.clone(),
                    pod.clone(),
                    c,
                    id,
                    grace,
                    format!("Stopping container {name}"),
                    target.clone(),
                )
            })
            .collect();
        if !kills.is_empty() {
            tracing::info!(grace = ?grace, "stopping the pod's containers");
        }
        futures::future::join_all(kills).await;
        if let Ok((_, after)) = self.observe().await {
            self.write_status(pod, &after, Utc::now()).await;
        }
        self.remove_everything(pod, &sandboxes, &instances).await;
        match self.ctx.api.delete(pod).await {
            Ok(()) => {
                tracing::info!("pod deleted");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "deleting the pod failed; retrying");
                false
            }
        }
    }

    async fn remove_everything(
        &mut self,
        pod: &Pod,
        sandboxes: &[ContainerInfo],
        instances: &HashMap<String, Vec<Instance>>,
    ) {
        for id in instances.values().flatten().map(|i| i.id.clone()).chain(sandboxes.iter().map(|s| s.id.clone())) {
            if let Err(e) = self.ctx.runtime.remove(&id).await {
                tracing::warn!(id, error = %e, "removing a container failed");
            }
        }
        for (_, h) in self.waiters.drain() {
            h.abort();
        }
        if !host_network(pod) {
            let netns = self.netns_path();
            if let Err(e) = self.ctx.network.teardown(&self.pod_ref(pod), &netns).await {
                tracing::warn!(error = %e, "tearing down the pod network failed");
            }
            match tokio::task::spawn_blocking(move || skiff_net::netns::remove(&netns)).await {
                Ok(Err(e)) => tracing::warn!(error = %e, "removing the pod's network namespace failed"),
                Err(e) => tracing::warn!(error = %e, "removing the pod's network namespace failed"),
                Ok(Ok(())) => {}
            }
        }
        self.sandbox = None;
        let cgroup = self.cgroup_path(pod);
        if !cgroup.is_empty() {
            match tokio::task::spawn_blocking(move || cgroups::remove(&cgroup)).await {
                Ok(Err(e)) => tracing::warn!(error = %e, "removing the pod's cgroup failed"),
                Err(e) => tracing::warn!(error = %e, "removing the pod's cgroup failed"),
                Ok(Ok(())) => {}
            }
        }
        if let Err(e) = volumes::teardown(&self.state_dir()) {
            tracing::warn!(error = %e, "removing the pod's volumes failed");
        }
        let _ = std::fs::remove_dir_all(self.log_dir(pod));
    }

    /// The pod is gone from the API (deleted with no grace, or while we were
    /// away): stop and remove all it left here.
    pub async fn cleanup(&mut self, last: Option<&Pod>) {
        self.stop_probes();
        let Ok((sandboxes, instances)) = self.observe().await else { return };
        match last {
            Some(pod) => {
                let grace = MIN_GRACE;
                let kills: Vec<_> = instances
                    .iter()
                    .filter_map(|(n, runs)| runs.first().filter(|i| i.running()).map(|i| (n.clone(), i.id.clone())))
                    .map(|(n, id)| {
                        kill_container(
                            self.ctx.clone(),
                            pod.clone(),
                            None,
                            id,
                            grace,
                            format!("Stopping container {n}"),
                            Target { netns: None, pod_ip: None },
                        )
                    })
                    .collect();
                futures::future::join_all(kills).await;
                self.remove_everything(pod, &sandboxes, &instances).await;
            }
            None => {
                for id in
                    instances.values().flatten().map(|i| i.id.clone()).chain(sandboxes.iter().map(|s| s.id.clone()))
                {
                    let _ = self.ctx.runtime.remove(&id).await;
                }
            }
        }
    }

    /// The agent is stopping: leave the containers running.
    pub fn stop(&mut self) {
        for (_, (_, h)) in self.probes.drain() {
            h.abort();
        }
        for (_, h) in self.waiters.drain() {
            h.abort();
        }
    }
}

/// Readiness or startup result of an adopted container, from the status it had.
fn adopted_result(pod: &Pod, c: &Container, id: &str, kind: ProbeKind) -> Option<Outcome> {
    let s = pod.status.as_ref()?.container_statuses.as_ref()?.iter().find(|s| s.name == c.name)?;
    if s.container_id.as_deref() != Some(format!("containerd://{id}").as_str()) {
        return None;
    }
    match kind {
        ProbeKind::Readiness if s.ready => Some(Outcome::Success),
        ProbeKind::Startup if s.started == Some(true) => Some(Outcome::Success),
        _ => None,
    }
}

/// Stop one container: preStop hook, SIGTERM, SIGKILL once `grace` is over.
async fn kill_container(
    ctx: Arc<Ctx>,
    pod: Pod,
    c: Option<Container>,
    id: String,
    grace: Duration,
    message: String,
    target: Target,
) {
    let name = c.as_ref().map(|c| c.name.clone());
    ctx.recorder.pod(&pod, name.as_deref(), "Normal", "Killing", message);
    let deadline = tokio::time::Instant::now() + grace;
    if let Some((c, hook)) = c.as_ref().and_then(|c| c.lifecycle.as_ref()?.pre_stop.clone().map(|h| (c, h))) {
        match tokio::time::timeout(grace, run_hook(ctx.runtime.as_ref(), &id, &hook, &pod, c, &target)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => ctx.recorder.pod(&pod, Some(&c.name), "Warning", "FailedPreStopHook", e),
            Err(_) => ctx.recorder.pod(
                &pod,
                Some(&c.name),
                "Warning",
                "FailedPreStopHook",
                format!("PreStopHook failed: it did not finish within the grace period of {}s", grace.as_secs()),
            ),
        }
    }
    tracing::debug!(id, "SIGTERM");
    let _ = ctx.runtime.kill(&id, 15).await;
    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now()).max(MIN_GRACE);
    if !ctx.runtime.wait_exit(&id, remaining).await.unwrap_or(false) {
        tracing::debug!(id, "SIGKILL after the grace period");
        let _ = ctx.runtime.kill(&id, 9).await;
        let _ = ctx.runtime.wait_exit(&id, Duration::from_secs(10)).await;
    }
}

/// Run a postStart or preStop handler of container `id`; the error is the
/// event message, worded as the kubelet's.
async fn run_hook(
    rt: &dyn crate::runtime::Runtime,
    id: &str,
    h: &LifecycleHandler,
    pod: &Pod,
    c: &Container,
    target: &Target,
) -> Result<(), String> {
    if let Some(e) = &h.exec {
        let command = e.command.clone().unwrap_or_default();
        let failed = |error: String, output: &str| {
            format!(
                "Exec lifecycle hook ({command:?}) for Container {:?} in Pod {:?} failed - error: {error}, message: {output:?}",
                c.name,
                pod_format(pod)
            )
        };
        // no timeout of its own: a preStop hook is bounded by the grace period
        return match probes::exec_in(rt, id, &command, None).await {
            Ok((0, _)) => Ok(()),
            Ok((code, out)) => Err(failed(format!("command '{}' exited with {code}", command.join(" ")), &out)),
            Err(probes::ExecError::TimedOut) => Err(failed("timed out".into(), "")),
            Err(probes::ExecError::Failed(e)) => Err(failed(e, "")),
        };
    }
    if let Some(s) = &h.sleep {
        tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64)).await;
        return Ok(());
    }
    if let Some(g) = &h.http_get {
        return match probes::http_get(g, c, target, Duration::from_secs(30)).await {
            Ok(code) if (200..400).contains(&code) => Ok(()),
            Ok(code) => Err(format!(
                "HTTP lifecycle hook ({}) for Container {:?} in Pod {:?} failed - error: received status code {code}",
                g.path.clone().unwrap_or_default(),
                c.name,
                pod_format(pod)
            )),
            Err(e) => Err(format!(
                "HTTP lifecycle hook ({}) for Container {:?} in Pod {:?} failed - error: {e}",
                g.path.clone().unwrap_or_default(),
                c.name,
                pod_format(pod)
            )),
        };
    }
    Ok(())
}

/// A container's Security from the pod's and its own securityContext.
pub fn security(pod: &Pod, c: &Container, image: &ImageInfo) -> Result<Security, String> {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.clone()).unwrap_or_default();
    let csc = c.security_context.clone().unwrap_or_default();
    let run_as_user = csc.run_as_user.or(psc.run_as_user);
    let run_as_group = csc.run_as_group.or(psc.run_as_group);
    if csc.run_as_non_root.or(psc.run_as_non_root) == Some(true) {
        let uid = match run_as_user {
            Some(u) => Some(u),
            None => {
                let user = image.user.split(':').next().unwrap_or("");
                if user.is_empty() {
                    Some(0)
                } else {
                    match user.parse::<i64>() {
                        Ok(u) => Some(u),
                        Err(_) => {
                            return Err(format!(
                                "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root (pod: {:?}, container: {})",
                                pod_format(pod),
                                c.name
                            ))
                        }
                    }
                }
            }
        };
        if uid == Some(0) {
            return Err(format!(
                "container has runAsNonRoot and image will run as root (pod: {:?}, container: {})",
                pod_format(pod),
                c.name
            ));
        }
    }
    let mut groups: Vec<u32> =
        psc.supplemental_groups.clone().unwrap_or_default().into_iter().map(|g| g as u32).collect();
    if let Some(fs) = psc.fs_group {
        groups.push(fs as u32);
    }
    let caps = csc.capabilities.clone().unwrap_or_default();
    Ok(Security {
        run_as_user: run_as_user.map(|u| u as u32),
        run_as_group: run_as_group.map(|g| g as u32),
        supplemental_groups: groups,
        privileged: csc.privileged.unwrap_or(false),
        add_capabilities: caps.add.unwrap_or_default(),
        drop_capabilities: caps.drop.unwrap_or_default(),
        read_only_root: csc.read_only_root_filesystem.unwrap_or(false),
        no_new_privileges: csc.allow_privilege_escalation == Some(false),
    })
}

fn registry_host(key: &str) -> String {
    let k = key.trim_start_matches("https://").trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k).to_string();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io".into(),
        _ => host,
    }
}

/// Credentials for `host` in a docker-registry secret.
pub fn registry_auth(secret: &k8s_openapi::api::core::v1::Secret, host: &str) -> Option<RegistryAuth> {
    let data = secret.data.as_ref()?;
    let auths: serde_json::Value = match secret.type_.as_deref() {
        Some("kubernetes.io/dockercfg") => serde_json::from_slice(&data.get(".dockercfg")?.0).ok()?,
        _ => serde_json::from_slice::<serde_json::Value>(&data.get(".dockerconfigjson")?.0).ok()?.get("auths")?.clone(),
    };
    for (key, v) in auths.as_object()? {
        if registry_host(key) != host {
            continue;
        }
        let s = |f: &str| v.get(f).and_then(|x| x.as_str()).unwrap_or("").to_string();
        let mut a =
            RegistryAuth { username: s("username"), password: s("password"), auth: s("auth"), server: key.clone() };
        if a.username.is_empty() && !a.auth.is_empty() {
            use base64::Engine;
            if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(&a.auth) {
                let raw = String::from_utf8_lossy(&raw).into_owned();
                if let Some((u, p)) = raw.split_once(':') {
                    a.username = u.into();
                    a.password = p.into();
                }
            }
        }
        return Some(a);
    }
    None
}
