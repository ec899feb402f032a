//! The container runtime seam. The agent's pod logic talks only to
//! [`Runtime`]; `containerd` implements it over containerd's gRPC API, and
//! unit tests use an in-memory fake.
//!
//! Every object the agent creates in containerd carries the label
//! [`LABEL_NODE`] with its node name, so several agents can share one
//! containerd (tests do) without touching each other's containers.

pub mod containerd;

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};

/// Label on every container: the node (agent) that owns it.
pub const LABEL_NODE: &str = "io.skiff.node";
/// Label on every container: the pod's uid.
pub const LABEL_POD_UID: &str = "io.skiff.pod.uid";
/// Label: `namespace/name` of the pod.
pub const LABEL_POD: &str = "io.skiff.pod";
/// Label: the container's name in the pod spec, or `POD` for the sandbox.
pub const LABEL_CONTAINER: &str = "io.skiff.container";
/// Label: how many times this container name has been started in this pod (0 first).
pub const LABEL_ATTEMPT: &str = "io.skiff.attempt";
/// The container name used for a pod's sandbox (pause) container.
pub const SANDBOX: &str = "POD";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("image {0:?} not found")]
    ImageNotFound(String),
    #[error("pulling image {image:?}: {message}")]
    Pull { image: String, message: String },
    #[error("importing images from {path}: {message}")]
    Import { path: String, message: String },
    #[error("container {0:?} not found")]
    NotFound(String),
    #[error("container {id:?}: {message}")]
    Container { id: String, message: String },
    #[error("containerd at {address}: {message}")]
    Unavailable { address: String, message: String },
    #[error("containerd: {0}")]
    Other(String),
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// What an image says about how to run it (its OCI config).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageInfo {
    /// The fully qualified reference it is known under (`docker.io/library/busybox:1.36`).
    pub reference: String,
    /// `sha256:...` of the image config (Kubernetes' imageID shows the repo digest when known).
    pub id: String,
    /// `repo@sha256:...` when the manifest digest is known.
    pub repo_digest: Option<String>,
    pub size: u64,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

/// Credentials for a registry (from an imagePullSecret).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
    pub auth: String,
    pub server: String,
}

/// A bind mount into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host_path: PathBuf,
    pub container_path: String,
    pub read_only: bool,
}

/// Linux namespaces a container joins instead of getting its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespaces {
    /// Network namespace path (a pinned netns file); `None` = the host's (hostNetwork).
    pub network: Option<PathBuf>,
    /// `/proc/<sandbox pid>/ns/ipc` for app containers; `None` = a new one (sandbox).
    pub ipc: Option<PathBuf>,
    /// `/proc/<sandbox pid>/ns/uts` for app containers; `None` = a new one (sandbox).
    pub uts: Option<PathBuf>,
    /// Share the host's PID namespace (hostPID).
    pub host_pid: bool,
    /// Share the host's IPC namespace (hostIPC).
    pub host_ipc: bool,
}

/// Resource limits, already converted from Kubernetes quantities.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU shares (cgroup v1 cpu.shares / converted to weight on v2), from requests.cpu.
    pub cpu_shares: Option<u64>,
    /// CFS quota in microseconds per `cpu_period`, from limits.cpu.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    /// Memory limit in bytes, from limits.memory.
    pub memory_limit: Option<i64>,
}

/// The security settings of a container (from its securityContext).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    pub supplemental_groups: Vec<u32>,
    pub privileged: bool,
    pub add_capabilities: Vec<String>,
    pub drop_capabilities: Vec<String>,
    pub read_only_root: bool,
    /// `allowPrivilegeEscalation: false` sets no_new_privileges.
    pub no_new_privileges: bool,
}

/// Everything needed to create one container (app or sandbox).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Unique id in containerd (the agent chooses it: `<pod uid prefix>-<name>-<attempt>`).
    pub id: String,
    /// Image reference, already resolved and present.
    pub image: String,
    /// The final argv (entrypoint/cmd already merged with command/args).
    pub args: Vec<String>,
    /// `KEY=value`, image env first then the pod's.
    pub env: Vec<String>,
    pub working_dir: String,
    pub hostname: String,
    pub mounts: Vec<Mount>,
    pub namespaces: Namespaces,
    pub resources: Resources,
    pub security: Security,
    /// Where the container's stdout/stderr go, in CRI log format.
    pub log_path: PathBuf,
    pub tty: bool,
    pub stdin: bool,
    /// Labels (the `LABEL_*` keys above, and any more).
    pub labels: BTreeMap<String, String>,
    /// cgroup parent path (`/skiff/<node>/<pod uid>`), empty for the runtime default.
    pub cgroup_parent: String,
}

/// The state of a container's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    /// Created, not started.
    Created,
    Running {
        pid: u32,
        started_at: DateTime<Utc>,
    },
    Exited {
        exit_code: i32,
        started_at: Option<DateTime<Utc>>,
        finished_at: DateTime<Utc>,
        oom_killed: bool,
    },
    /// The container exists but has no task (never started, or the task was deleted).
    Unknown,
}

/// A container as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub state: TaskState,
}

/// The container runtime, as the agent needs it.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// `containerd 1.6.20` or similar, for Node.status.nodeInfo.containerRuntimeVersion.
    async fn version(&self) -> Result<String>;

    /// The image if it is present locally (by any of its references).
    async fn image(&self, reference: &str) -> Result<Option<ImageInfo>>;
    /// Pull from a registry and unpack. Returns what was pulled.
    async fn pull(&self, reference: &str, auth: Option<&RegistryAuth>) -> Result<ImageInfo>;
    /// Import an OCI layout or docker-archive tarball; returns the images it held.
    async fn import(&self, archive: &std::path::Path) -> Result<Vec<ImageInfo>>;
    async fn list_images(&self) -> Result<Vec<ImageInfo>>;

    /// Create a container (its rootfs snapshot from the image and its OCI spec).
    async fn create(&self, spec: &ContainerSpec) -> Result<()>;
    /// Start the container's process; returns its pid.
    async fn start(&self, id: &str) -> Result<u32>;
    /// Send a signal to the container's process (SIGTERM = 15, SIGKILL = 9).
    async fn kill(&self, id: &str, signal: u32) -> Result<()>;
    /// Remove the container, its task and its rootfs snapshot (killing it if needed).
    async fn remove(&self, id: &str) -> Result<()>;
    async fn inspect(&self, id: &str) -> Result<ContainerInfo>;
    /// Containers carrying all of `labels`.
    async fn list(&self, labels: &BTreeMap<String, String>) -> Result<Vec<ContainerInfo>>;
    /// Wait until the container's process exits (or `timeout` passes): Ok(true) if it exited.
    async fn wait_exit(&self, id: &str, timeout: std::time::Duration) -> Result<bool>;

    /// Run another process in the running container `id` (its namespaces,
    /// cgroup, user and environment), with the stdio `spec` asks for.
    async fn exec(&self, id: &str, spec: &ExecSpec) -> Result<Exec> {
        let _ = spec;
        Err(RuntimeError::Container { id: id.to_string(), message: "this runtime cannot exec processes".into() })
    }

    /// Where a client attaches to container `id`'s stdio.
    async fn attach_target(&self, id: &str) -> Result<AttachTarget> {
        Err(RuntimeError::Container { id: id.to_string(), message: "this runtime cannot attach".into() })
    }

    /// Resize the terminal of container `id` (tty containers).
    async fn resize(&self, id: &str, width: u16, height: u16) -> Result<()> {
        let _ = (width, height);
        Err(RuntimeError::Container { id: id.to_string(), message: "this runtime cannot resize terminals".into() })
    }
}

/// A container's stdio as `kubectl attach` reaches it: input through a FIFO
/// the shim reads (containers with `stdin: true`), output by following its
/// log file (docs/adr/0006-exec-attach.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachTarget {
    pub stdin: Option<PathBuf>,
    pub log_path: PathBuf,
    pub tty: bool,
}

/// A process to start in a running container (`kubectl exec`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecSpec {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// A pseudo-terminal: stdout carries both output streams, stderr is unused.
    pub tty: bool,
}

/// A started exec process: its stdio and its controls. Dropping it does not
/// stop the process; call [`ExecControl::finish`].
pub struct Exec {
    pub stdin: Option<std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>>,
    pub stdout: Option<std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>>,
    pub stderr: Option<std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>>,
    pub control: std::sync::Arc<dyn ExecControl>,
}

/// What can be done to a running exec process.
#[async_trait::async_trait]
pub trait ExecControl: Send + Sync {
    /// The terminal's new size (tty only).
    async fn resize(&self, width: u16, height: u16) -> Result<()>;
    /// End of input: the process reads EOF once what was written is consumed.
    async fn close_stdin(&self) -> Result<()>;
    /// Wait for the process to exit; its exit code (128 + n when killed by signal n).
    async fn wait(&self) -> Result<i32>;
    /// Kill the process if it still runs and remove it and its pipes; idempotent.
    async fn finish(&self);
}
