//! [`Runtime`] over containerd's gRPC API (containerd-client), for
//! containerd 1.6 and later.
//!
//! - Images live in containerd's content store and image records; they are
//!   unpacked into the `overlayfs` snapshotter by the runtime itself
//!   (Snapshots.Prepare → Diff.Apply → Snapshots.Commit per layer), so that
//!   imports and pulls share one path. Pulls talk to the registry from here
//!   (docs/adr/0003-image-pulls.md): containerd 1.6 has no Transfer service.
//! - Containers are containerd containers with an OCI runtime spec built
//!   here ([`spec`]) and run by `io.containerd.runc.v2`; their stdout and
//!   stderr go to a binary logger the shim starts ([`logger`]), so logging
//!   outlives the agent.
//! - Every request carries the containerd namespace given to [`ContainerdRuntime::connect`];
//!   work that creates content or snapshots runs under a containerd lease
//!   that expires by itself if the agent dies half-way.

mod archive;
mod containers;
mod content;
mod exec;
mod images;
pub mod logger;
pub mod oci;
mod pause;
pub mod reference;
pub(crate) mod registry;
pub mod spec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::services::v1::{CreateRequest, DeleteRequest};
use containerd_client::tonic::metadata::{Ascii, MetadataValue};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status};
use tracing::debug;

pub use archive::{build_oci_archive, LayerEntry, OciArchive};
pub use pause::{ensure_pause_image, pause_archive, PAUSE_IMAGE};

use super::{ContainerInfo, ContainerSpec, Exec, ExecSpec, ImageInfo, RegistryAuth, Result, Runtime, RuntimeError};

/// The snapshotter images are unpacked into and containers run from.
pub const SNAPSHOTTER: &str = "overlayfs";
/// The containerd runtime (shim) containers run with.
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
/// Label the runtime puts on a container when its task starts (RFC 3339);
/// not reported in [`ContainerInfo::labels`].
pub const LABEL_STARTED_AT: &str = "io.skiff.started-at";

/// How the shim starts the binary logger: `<program> logger <log path>`
/// (see [`logger::run`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggerCommand {
    pub program: PathBuf,
}

/// The containerd implementation of [`Runtime`].
#[derive(Clone)]
pub struct ContainerdRuntime {
    channel: Channel,
    address: PathBuf,
    namespace: String,
    namespace_md: MetadataValue<Ascii>,
    logger: Option<LoggerCommand>,
    http: registry::HttpClient,
}

impl std::fmt::Debug for ContainerdRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerdRuntime")
            .field("address", &self.address)
            .field("namespace", &self.namespace)
            .field("logger", &self.logger)
            .finish_non_exhaustive()
    }
}

impl ContainerdRuntime {
    /// Connects to containerd's socket at `address` and works in the
    /// containerd namespace `namespace` (`k8s.io`, `skiff`...).
    ///
    /// Container logs are written by `<this executable> logger <path>`
    /// (the `skiff logger` subcommand); see [`Self::with_logger`].
    pub async fn connect(address: &Path, namespace: &str) -> Result<Self> {
        let unavailable =
            |message: String| RuntimeError::Unavailable { address: address.display().to_string(), message };
        if namespace.is_empty() || !namespace.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(unavailable(format!("invalid containerd namespace {namespace:?}")));
        }
        let namespace_md = namespace
            .parse::<MetadataValue<Ascii>>()
            .map_err(|e| unavailable(format!("invalid containerd namespace {namespace:?}: {e}")))?;
        debug!(address = %address.display(), namespace, "connecting to containerd");
        let channel = containerd_client::connect(address).await.map_err(|e| unavailable(error_chain(&e)))?;
        let logger = std::env::current_exe().ok().map(|program| LoggerCommand { program });
        let http = registry::HttpClient::new().map_err(RuntimeError::Other)?;
        let rt = ContainerdRuntime {
            channel,
            address: address.to_path_buf(),
            namespace: namespace.to_string(),
            namespace_md,
            logger,
            http,
        };
        // Fail now, with the address in the message, if nothing answers.
        rt.version().await?;
        Ok(rt)
    }

    /// Uses `program` as the binary logger: the shim runs `program logger <log path>`
    /// with the container's stdout on fd 3, stderr on fd 4 and a ready pipe on fd 5.
    pub fn with_logger(mut self, program: impl Into<PathBuf>) -> Self {
        self.logger = Some(LoggerCommand { program: program.into() });
        self
    }

    /// The containerd namespace this runtime works in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The socket address.
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// The gRPC channel (for callers that need a containerd service this type does not wrap).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// A request in this runtime's namespace.
    fn request<T>(&self, message: T) -> Request<T> {
        let mut req = Request::new(message);
        req.metadata_mut().insert("containerd-namespace", self.namespace_md.clone());
        req
    }

    /// A request in this runtime's namespace whose new resources join `lease`.
    fn leased<T>(&self, message: T, lease: &Lease) -> Request<T> {
        let mut req = self.request(message);
        req.metadata_mut().insert("containerd-lease", lease.metadata.clone());
        req
    }

    /// A lease that keeps what is written under it from the garbage
    /// collector until [`Self::delete_lease`], or an hour if the agent dies.
    async fn create_lease(&self, purpose: &str) -> Result<Lease> {
        let id = format!("skiff-{purpose}-{}", unique_suffix());
        let expire =
            (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let labels = [("containerd.io/gc.expire".to_string(), expire)].into_iter().collect();
        debug!(lease = %id, "creating lease");
        LeasesClient::new(self.channel())
            .create(self.request(CreateRequest { id: id.clone(), labels }))
            .await
            .map_err(|s| grpc_error("creating a lease", s))?;
        let metadata = id.parse().map_err(|_| RuntimeError::Other(format!("lease id {id:?} is not ascii")))?;
        Ok(Lease { id, metadata })
    }

    async fn delete_lease(&self, lease: Lease) {
        debug!(lease = %lease.id, "deleting lease");
        if let Err(status) = LeasesClient::new(self.channel())
            .delete(self.request(DeleteRequest { id: lease.id.clone(), sync: false }))
            .await
        {
            tracing::warn!(lease = %lease.id, "deleting lease: {}", status.message());
        }
    }
}

/// A containerd lease held by an operation.
pub(crate) struct Lease {
    id: String,
    metadata: MetadataValue<Ascii>,
}

/// `<nanoseconds>-<random>`: a suffix for ids nobody else uses.
fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{:08x}", rand::random::<u32>())
}

/// The message of an error and its sources, joined by `: `.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn grpc_error(what: &str, status: Status) -> RuntimeError {
    RuntimeError::Other(format!("{what}: {}", status_message(&status)))
}

fn status_message(status: &Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        status.message().to_string()
    }
}

fn is_not_found(status: &Status) -> bool {
    status.code() == Code::NotFound
}

fn is_already_exists(status: &Status) -> bool {
    status.code() == Code::AlreadyExists
}

fn timestamp_to_chrono(ts: Option<&prost_types::Timestamp>) -> Option<chrono::DateTime<chrono::Utc>> {
    let ts = ts?;
    chrono::DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).unwrap_or(0))
}

#[async_trait::async_trait]
impl Runtime for ContainerdRuntime {
    async fn version(&self) -> Result<String> {
        let resp = VersionClient::new(self.channel()).version(Request::new(())).await.map_err(|s| {
            RuntimeError::Unavailable { address: self.address.display().to_string(), message: status_message(&s) }
        })?;
        let version = resp.into_inner().version;
        Ok(format!("containerd {}", version.trim_start_matches('v')))
    }

    async fn image(&self, reference: &str) -> Result<Option<ImageInfo>> {
        self.find_image(reference).await
    }

    async fn pull(&self, reference: &str, auth: Option<&RegistryAuth>) -> Result<ImageInfo> {
        self.pull_image(reference, auth).await
    }

    async fn import(&self, archive: &Path) -> Result<Vec<ImageInfo>> {
        self.import_archive(archive).await
    }

    async fn list_images(&self) -> Result<Vec<ImageInfo>> {
        self.all_images().await
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<()> {
        self.create_container(spec).await
    }

    async fn start(&self, id: &str) -> Result<u32> {
        self.start_task(id).await
    }

    async fn kill(&self, id: &str, signal: u32) -> Result<()> {
        self.kill_task(id, signal).await
    }

    async fn remove(&self, id: &str) -> Result<()> {
        self.remove_container(id).await
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo> {
        self.inspect_container(id).await
    }

    async fn list(&self, labels: &BTreeMap<String, String>) -> Result<Vec<ContainerInfo>> {
        self.list_containers(labels).await
    }

    async fn wait_exit(&self, id: &str, timeout: std::time::Duration) -> Result<bool> {
        self.wait_task(id, timeout).await
    }

    async fn exec(&self, id: &str, spec: &ExecSpec) -> Result<Exec> {
        self.exec_process(id, spec).await
    }

    async fn attach_target(&self, id: &str) -> Result<super::AttachTarget> {
        self.find_attach_target(id).await
    }

    async fn resize(&self, id: &str, width: u16, height: u16) -> Result<()> {
        self.resize_task(id, width, height).await
    }
}
