//! Containers and their tasks: create (rootfs snapshot + OCI spec), start
//! (task with the binary logger), kill, wait, inspect, list, remove.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::Utc;
use containerd_client::services::v1::container::Runtime as ContainerRuntimeInfo;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest, DeleteTaskRequest,
    GetContainerRequest, GetRequest, KillRequest, ListContainersRequest, ListTasksRequest, StartRequest,
    UpdateContainerRequest, WaitRequest,
};
use containerd_client::types::v1::{Process, Status as ProcessStatus};
use tracing::debug;

use super::spec::{self, SpecContext, ANNOTATION_LOG_PATH, ANNOTATION_STDIN};
use super::{
    is_already_exists, is_not_found, status_message, timestamp_to_chrono, ContainerdRuntime, LABEL_STARTED_AT,
    RUNC_RUNTIME, SNAPSHOTTER,
};
use crate::runtime::{ContainerInfo, ContainerSpec, Result, RuntimeError, TaskState};

/// The type URL containerd expects on an OCI runtime spec.
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const SIGKILL: u32 = 9;

fn container_error(id: &str, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Container { id: id.to_string(), message: message.into() }
}

/// `labels."key"=="value"`, quoted for containerd's filter syntax.
fn label_filter(labels: &BTreeMap<String, String>) -> Option<String> {
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let parts: Vec<String> = labels.iter().map(|(k, v)| format!("labels.{}=={}", quote(k), quote(v))).collect();
    (!parts.is_empty()).then(|| parts.join(","))
}

/// Percent-encodes a path for a URI (keeping `/`).
fn encode_path(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The shim's `binary://` URI for the logger: it runs `<program> logger <log path>`
/// (the shim turns each query pair into two arguments).
pub(crate) fn logger_uri(program: &std::path::Path, log_path: &std::path::Path) -> String {
    format!(
        "binary://{}?logger={}",
        encode_path(&program.to_string_lossy()),
        super::registry::encode_query(&log_path.to_string_lossy())
    )
}

/// The FIFO that feeds the stdin of a container logging to `log_path`.
pub(crate) fn stdin_fifo(log_path: &std::path::Path) -> std::path::PathBuf {
    log_path.with_extension("stdin")
}

/// The OCI runtime spec stored with container `id`.
fn oci_spec(id: &str, container: &Container) -> Result<serde_json::Value> {
    container
        .spec
        .as_ref()
        .and_then(|any| serde_json::from_slice(&any.value).ok())
        .ok_or_else(|| container_error(id, "has no readable OCI spec"))
}

impl ContainerdRuntime {
    /// Where to attach to container `id`: its stdin FIFO (if it keeps stdin
    /// open), its log file, and whether it has a terminal.
    pub(crate) async fn find_attach_target(&self, id: &str) -> Result<crate::runtime::AttachTarget> {
        let container = self.get_container(id).await?;
        let oci = oci_spec(id, &container)?;
        let log_path = oci["annotations"][ANNOTATION_LOG_PATH].as_str().map(std::path::PathBuf::from);
        let keep_stdin = oci["annotations"][ANNOTATION_STDIN].as_str() == Some("true");
        Ok(crate::runtime::AttachTarget {
            stdin: log_path.as_deref().filter(|_| keep_stdin).map(stdin_fifo),
            log_path: log_path.ok_or_else(|| container_error(id, "has no log file to attach to"))?,
            tty: oci["process"]["terminal"].as_bool().unwrap_or(false),
        })
    }

    pub(crate) async fn resize_task(&self, id: &str, width: u16, height: u16) -> Result<()> {
        debug!(id, width, height, "Tasks.ResizePty");
        TasksClient::new(self.channel())
            .resize_pty(self.request(containerd_client::services::v1::ResizePtyRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                width: u32::from(width),
                height: u32::from(height),
            }))
            .await
            .map(|_| ())
            .map_err(|s| container_error(id, format!("resizing its terminal: {}", status_message(&s))))
    }

    pub(crate) async fn get_container(&self, id: &str) -> Result<Container> {
        debug!(id, "Containers.Get");
        match ContainersClient::new(self.channel()).get(self.request(GetContainerRequest { id: id.to_string() })).await
        {
            Ok(resp) => resp.into_inner().container.ok_or_else(|| RuntimeError::NotFound(id.to_string())),
            Err(s) if is_not_found(&s) => Err(RuntimeError::NotFound(id.to_string())),
            Err(s) => Err(container_error(id, status_message(&s))),
        }
    }

    async fn get_task(&self, id: &str) -> Result<Option<Process>> {
        match TasksClient::new(self.channel())
            .get(self.request(GetRequest { container_id: id.to_string(), exec_id: String::new() }))
            .await
        {
            Ok(resp) => Ok(resp.into_inner().process),
            Err(s) if is_not_found(&s) => Ok(None),
            Err(s) => Err(container_error(id, format!("Tasks.Get: {}", status_message(&s)))),
        }
    }

    pub(crate) async fn create_container(&self, spec: &ContainerSpec) -> Result<()> {
        let id = spec.id.as_str();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
            return Err(container_error(id, "invalid container id (letters, digits, . _ - only)"));
        }
        let image =
            self.find_resolved(&spec.image).await?.ok_or_else(|| RuntimeError::ImageNotFound(spec.image.clone()))?;
        let parent = self.ensure_unpacked(&image).await?;
        let lease = self.create_lease("create").await?;
        let result = self.create_with_lease(spec, &image, &parent, &lease).await;
        self.delete_lease(lease).await;
        result
    }

    async fn create_with_lease(
        &self,
        spec: &ContainerSpec,
        image: &super::images::ResolvedImage,
        parent: &str,
        lease: &super::Lease,
    ) -> Result<()> {
        let id = spec.id.as_str();
        let mut snapshots = SnapshotsClient::new(self.channel());
        debug!(id, parent, "Snapshots.Prepare");
        let mounts = match snapshots
            .prepare(self.leased(
                PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.to_string(),
                    key: id.to_string(),
                    parent: parent.to_string(),
                    labels: HashMap::new(),
                },
                lease,
            ))
            .await
        {
            Ok(resp) => resp.into_inner().mounts,
            Err(s) if is_already_exists(&s) => return Err(container_error(id, "already exists")),
            Err(s) => return Err(container_error(id, format!("preparing its rootfs: {}", status_message(&s)))),
        };
        let result = async {
            let info = image.info();
            let reader = spec::image_file_reader(spec::rootfs_dirs(&mounts));
            let user = spec::resolve_user(&spec.security, &info.user, &reader).map_err(|m| container_error(id, m))?;
            let ctx = SpecContext { user, image_working_dir: &info.working_dir, namespace: self.namespace() };
            let oci = spec::runtime_spec(spec, &ctx).map_err(|m| container_error(id, m))?;
            let value = serde_json::to_vec(&oci).map_err(|e| container_error(id, e.to_string()))?;
            let container = Container {
                id: id.to_string(),
                labels: spec.labels.clone().into_iter().collect(),
                image: image.name.clone(),
                runtime: Some(ContainerRuntimeInfo { name: RUNC_RUNTIME.to_string(), options: None }),
                spec: Some(prost_types::Any { type_url: SPEC_TYPE_URL.to_string(), value }),
                snapshotter: SNAPSHOTTER.to_string(),
                snapshot_key: id.to_string(),
                created_at: None,
                updated_at: None,
                extensions: HashMap::new(),
                sandbox: String::new(),
            };
            debug!(id, image = %image.name, "Containers.Create");
            ContainersClient::new(self.channel())
                .create(self.leased(CreateContainerRequest { container: Some(container) }, lease))
                .await
                .map_err(|s| {
                    if is_already_exists(&s) {
                        container_error(id, "already exists")
                    } else {
                        container_error(id, status_message(&s))
                    }
                })?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = snapshots
                .remove(
                    self.request(RemoveSnapshotRequest { snapshotter: SNAPSHOTTER.to_string(), key: id.to_string() }),
                )
                .await;
        }
        result
    }

    pub(crate) async fn start_task(&self, id: &str) -> Result<u32> {
        let container = self.get_container(id).await?;
        let oci = oci_spec(id, &container)?;
        let terminal = oci["process"]["terminal"].as_bool().unwrap_or(false);
        let log_path = oci["annotations"][ANNOTATION_LOG_PATH].as_str().map(std::path::PathBuf::from);
        let keep_stdin = oci["annotations"][ANNOTATION_STDIN].as_str() == Some("true");

        let mut tasks = TasksClient::new(self.channel());
        match self.get_task(id).await? {
            Some(p) if p.status == ProcessStatus::Stopped as i32 => {
                // A finished run: clear it so the container can run again.
                self.delete_task(id).await?;
            }
            Some(p) if p.status == ProcessStatus::Running as i32 => return Ok(p.pid),
            Some(_) => {}
            None => {
                let snapshotter = if container.snapshotter.is_empty() { SNAPSHOTTER } else { &container.snapshotter };
                let rootfs = SnapshotsClient::new(self.channel())
                    .mounts(self.request(MountsRequest {
                        snapshotter: snapshotter.to_string(),
                        key: container.snapshot_key.clone(),
                    }))
                    .await
                    .map_err(|s| container_error(id, format!("rootfs mounts: {}", status_message(&s))))?
                    .into_inner()
                    .mounts;
                let stdio = match (&log_path, &self.logger) {
                    (Some(path), Some(logger)) => {
                        if let Some(dir) = path.parent() {
                            std::fs::create_dir_all(dir).map_err(|e| {
                                container_error(id, format!("creating log directory {}: {e}", dir.display()))
                            })?;
                        }
                        logger_uri(&logger.program, path)
                    }
                    _ => String::new(),
                };
                let stdin = match (&log_path, keep_stdin) {
                    (Some(path), true) => {
                        let fifo = stdin_fifo(path);
                        if !fifo.exists() {
                            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(
                                |e| container_error(id, format!("creating stdin FIFO {}: {e}", fifo.display())),
                            )?;
                        }
                        fifo.to_string_lossy().into_owned()
                    }
                    _ => String::new(),
                };
                debug!(id, stdout = %stdio, stdin, "Tasks.Create");
                tasks
                    .create(self.request(CreateTaskRequest {
                        container_id: id.to_string(),
                        rootfs,
                        stdin,
                        stdout: stdio.clone(),
                        stderr: stdio,
                        terminal,
                        checkpoint: None,
                        options: None,
                        runtime_path: String::new(),
                    }))
                    .await
                    .map_err(|s| container_error(id, format!("creating its task: {}", status_message(&s))))?;
            }
        }
        // Taken before Tasks.Start, so that a quick process never finishes "before" it started.
        let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        debug!(id, "Tasks.Start");
        let started =
            tasks.start(self.request(StartRequest { container_id: id.to_string(), exec_id: String::new() })).await;
        let pid = match started {
            Ok(resp) => resp.into_inner().pid,
            Err(s) => {
                let _ = self.delete_task(id).await;
                return Err(container_error(id, format!("starting: {}", status_message(&s))));
            }
        };
        let update = Container {
            id: id.to_string(),
            labels: [(LABEL_STARTED_AT.to_string(), now)].into_iter().collect(),
            ..Default::default()
        };
        ContainersClient::new(self.channel())
            .update(self.request(UpdateContainerRequest {
                container: Some(update),
                update_mask: Some(prost_types::FieldMask { paths: vec![format!("labels.{LABEL_STARTED_AT}")] }),
            }))
            .await
            .map_err(|s| container_error(id, format!("recording its start: {}", status_message(&s))))?;
        Ok(pid)
    }

    async fn delete_task(&self, id: &str) -> Result<()> {
        debug!(id, "Tasks.Delete");
        match TasksClient::new(self.channel())
            .delete(self.request(DeleteTaskRequest { container_id: id.to_string() }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if is_not_found(&s) => Ok(()),
            Err(s) => Err(container_error(id, format!("deleting its task: {}", status_message(&s)))),
        }
    }

    pub(crate) async fn kill_task(&self, id: &str, signal: u32) -> Result<()> {
        debug!(id, signal, "Tasks.Kill");
        let killed = TasksClient::new(self.channel())
            .kill(self.request(KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal,
                all: false,
            }))
            .await;
        match killed {
            Ok(_) => Ok(()),
            // No task, or it has exited: nothing to signal, unless there is no container at all.
            Err(s) if is_not_found(&s) => self.get_container(id).await.map(|_| ()),
            Err(s) => Err(container_error(id, format!("signal {signal}: {}", status_message(&s)))),
        }
    }

    pub(crate) async fn wait_task(&self, id: &str, timeout: Duration) -> Result<bool> {
        let mut tasks = TasksClient::new(self.channel());
        let wait = tasks.wait(self.request(WaitRequest { container_id: id.to_string(), exec_id: String::new() }));
        match tokio::time::timeout(timeout, wait).await {
            Err(_) => Ok(false),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(s)) if is_not_found(&s) => self.get_container(id).await.map(|_| true),
            Ok(Err(s)) => Err(container_error(id, format!("waiting: {}", status_message(&s)))),
        }
    }

    pub(crate) async fn inspect_container(&self, id: &str) -> Result<ContainerInfo> {
        let container = self.get_container(id).await?;
        let task = self.get_task(id).await?;
        Ok(container_info(container, task))
    }

    pub(crate) async fn list_containers(&self, labels: &BTreeMap<String, String>) -> Result<Vec<ContainerInfo>> {
        let filters = label_filter(labels).into_iter().collect();
        debug!(?filters, "Containers.List");
        let containers = ContainersClient::new(self.channel())
            .list(self.request(ListContainersRequest { filters }))
            .await
            .map_err(|s| RuntimeError::Other(format!("listing containers: {}", status_message(&s))))?
            .into_inner()
            .containers;
        if containers.is_empty() {
            return Ok(Vec::new());
        }
        let mut tasks: HashMap<String, Process> = TasksClient::new(self.channel())
            .list(self.request(ListTasksRequest { filter: String::new() }))
            .await
            .map_err(|s| RuntimeError::Other(format!("listing tasks: {}", status_message(&s))))?
            .into_inner()
            .tasks
            .into_iter()
            .map(|p| (p.id.clone(), p))
            .collect();
        Ok(containers
            .into_iter()
            .map(|c| {
                let task = tasks.remove(&c.id);
                container_info(c, task)
            })
            .collect())
    }

    pub(crate) async fn remove_container(&self, id: &str) -> Result<()> {
        if let Some(task) = self.get_task(id).await? {
            let running = [ProcessStatus::Running, ProcessStatus::Paused, ProcessStatus::Pausing];
            if running.iter().any(|s| *s as i32 == task.status) {
                debug!(id, "killing before removal");
                let _ = TasksClient::new(self.channel())
                    .kill(self.request(KillRequest {
                        container_id: id.to_string(),
                        exec_id: String::new(),
                        signal: SIGKILL,
                        all: true,
                    }))
                    .await;
                if !self.wait_task(id, Duration::from_secs(10)).await.unwrap_or(false) {
                    return Err(container_error(id, "did not stop within 10s of SIGKILL"));
                }
            }
            self.delete_task(id).await?;
        }
        let (snapshotter, key) = match self.get_container(id).await {
            Ok(c) => {
                let snapshotter = if c.snapshotter.is_empty() { SNAPSHOTTER.to_string() } else { c.snapshotter };
                (snapshotter, if c.snapshot_key.is_empty() { id.to_string() } else { c.snapshot_key })
            }
            Err(RuntimeError::NotFound(_)) => (SNAPSHOTTER.to_string(), id.to_string()),
            Err(e) => return Err(e),
        };
        debug!(id, "Containers.Delete");
        match ContainersClient::new(self.channel())
            .delete(self.request(DeleteContainerRequest { id: id.to_string() }))
            .await
        {
            Ok(_) => {}
            Err(s) if is_not_found(&s) => {}
            Err(s) => return Err(container_error(id, format!("deleting: {}", status_message(&s)))),
        }
        debug!(id, key, "Snapshots.Remove");
        match SnapshotsClient::new(self.channel())
            .remove(self.request(RemoveSnapshotRequest { snapshotter, key }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if is_not_found(&s) => Ok(()),
            Err(s) => Err(container_error(id, format!("removing its rootfs: {}", status_message(&s)))),
        }
    }
}

fn container_info(container: Container, task: Option<Process>) -> ContainerInfo {
    let created_at = timestamp_to_chrono(container.created_at.as_ref()).unwrap_or_else(Utc::now);
    let mut labels: BTreeMap<String, String> = container.labels.into_iter().collect();
    let started_at = labels
        .remove(LABEL_STARTED_AT)
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(&s).ok())
        .map(|t| t.with_timezone(&Utc));
    let state = match task {
        None => TaskState::Unknown,
        Some(p) => match ProcessStatus::try_from(p.status).unwrap_or(ProcessStatus::Unknown) {
            ProcessStatus::Created => TaskState::Created,
            ProcessStatus::Running | ProcessStatus::Paused | ProcessStatus::Pausing => {
                TaskState::Running { pid: p.pid, started_at: started_at.unwrap_or(created_at) }
            }
            ProcessStatus::Stopped => {
                let cgroups_path = container
                    .spec
                    .as_ref()
                    .and_then(|any| serde_json::from_slice::<serde_json::Value>(&any.value).ok())
                    .and_then(|v| v["linux"]["cgroupsPath"].as_str().map(str::to_string));
                TaskState::Exited {
                    exit_code: i32::try_from(p.exit_status).unwrap_or(i32::MAX),
                    started_at,
                    finished_at: timestamp_to_chrono(p.exited_at.as_ref()).unwrap_or_else(Utc::now),
                    oom_killed: cgroups_path.is_some_and(|path| spec::oom_killed(&path)),
                }
            }
            ProcessStatus::Unknown => TaskState::Unknown,
        },
    };
    ContainerInfo { id: container.id, image: container.image, labels, created_at, state }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_filters_are_quoted_and_joined() {
        let labels: BTreeMap<String, String> =
            [("io.skiff.node".to_string(), "n1".to_string()), ("a".to_string(), "x\"y".to_string())].into();
        assert_eq!(label_filter(&labels).unwrap(), r#"labels."a"=="x\"y",labels."io.skiff.node"=="n1""#);
        assert_eq!(label_filter(&BTreeMap::new()), None);
    }

    #[test]
    fn logger_uri_gives_the_shim_two_arguments() {
        let uri = logger_uri(std::path::Path::new("/usr/bin/skiff"), std::path::Path::new("/var/log/pods/a b/c/0.log"));
        assert_eq!(uri, "binary:///usr/bin/skiff?logger=%2Fvar%2Flog%2Fpods%2Fa%20b%2Fc%2F0.log");
    }
}
