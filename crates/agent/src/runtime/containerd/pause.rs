//! The pause image, built into Skiff: a static `pause` program (pause/pause.c,
//! compiled by build.rs) in a one-layer OCI image imported as
//! [`PAUSE_IMAGE`] when the agent starts, so sandboxes never need a registry.

use bytes::Bytes;

use super::archive::{build_oci_archive, LayerEntry, OciArchive};
use super::oci::RunConfig;
use super::ContainerdRuntime;
use crate::runtime::{ImageInfo, Result, RuntimeError};

/// The sandbox image's reference.
pub const PAUSE_IMAGE: &str = "skiff.local/pause:1";

/// The static pause executable.
static PAUSE_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pause"));

/// The pause image as an OCI layout tarball.
pub fn pause_archive() -> std::io::Result<OciArchive> {
    let entries = [LayerEntry::File { path: "pause".to_string(), mode: 0o755, data: PAUSE_BINARY.to_vec() }];
    let config = RunConfig { entrypoint: Some(vec!["/pause".to_string()]), ..Default::default() };
    build_oci_archive(PAUSE_IMAGE, &entries, &config)
}

/// Imports the pause image unless this exact image is already there
/// (unpacked); safe to call on every start.
pub async fn ensure_pause_image(rt: &ContainerdRuntime) -> Result<ImageInfo> {
    let archive =
        pause_archive().map_err(|e| RuntimeError::Import { path: PAUSE_IMAGE.to_string(), message: e.to_string() })?;
    if let Some(existing) = rt.find_resolved(PAUSE_IMAGE).await? {
        if existing.target.digest == archive.manifest_digest && rt.ensure_unpacked(&existing).await.is_ok() {
            return Ok(existing.info());
        }
    }
    let images = rt.import_bytes(PAUSE_IMAGE, Bytes::from(archive.bytes)).await?;
    images.into_iter().next().ok_or_else(|| RuntimeError::Import {
        path: PAUSE_IMAGE.to_string(),
        message: "the pause archive held no image".to_string(),
    })
}
