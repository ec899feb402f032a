//! Image records and unpacking: what an image is (its manifest and config
//! for this platform), the garbage-collection labels that keep its content,
//! and its layers unpacked into the snapshotter.

use std::collections::HashMap;

use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    AddResourceRequest, ApplyRequest, CreateImageRequest, GetImageRequest, Image, ListImagesRequest, Resource,
    UpdateImageRequest,
};
use tracing::debug;

use super::oci::{self, Descriptor, ImageConfig, Index, Manifest};
use super::reference::{self, Reference};
use super::{is_already_exists, is_not_found, status_message, unique_suffix, ContainerdRuntime, Lease, SNAPSHOTTER};
use crate::runtime::{ImageInfo, Result, RuntimeError};

/// An image record resolved to this platform's manifest and config.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedImage {
    pub name: String,
    /// What the record points at (an index or a manifest).
    pub target: Descriptor,
    pub manifest: Manifest,
    pub config: ImageConfig,
}

impl ResolvedImage {
    /// The snapshot name of the top layer (the parent of a container's rootfs).
    pub fn top_chain_id(&self) -> Option<String> {
        oci::chain_ids(&self.config.rootfs.diff_ids).pop()
    }

    pub fn info(&self) -> ImageInfo {
        let run = self.config.config.clone().unwrap_or_default();
        let repository = Reference::parse(&self.name)
            .map_or_else(|_| self.name.split(['@', ':']).next().unwrap_or_default().to_string(), |r| r.repository());
        let size = self.manifest.config.size + self.manifest.layers.iter().map(|l| l.size).sum::<i64>();
        ImageInfo {
            reference: self.name.clone(),
            id: self.manifest.config.digest.clone(),
            repo_digest: Some(format!("{repository}@{}", self.target.digest)),
            size: u64::try_from(size).unwrap_or(0),
            entrypoint: run.entrypoint.unwrap_or_default(),
            cmd: run.cmd.unwrap_or_default(),
            env: run.env.unwrap_or_default(),
            working_dir: run.working_dir.unwrap_or_default(),
            user: run.user.unwrap_or_default(),
        }
    }
}

pub(crate) fn to_containerd(desc: &Descriptor) -> containerd_client::types::Descriptor {
    containerd_client::types::Descriptor {
        media_type: desc.media_type.clone(),
        digest: desc.digest.clone(),
        size: desc.size,
        annotations: desc.annotations.clone().into_iter().collect(),
    }
}

fn from_containerd(desc: &containerd_client::types::Descriptor) -> Descriptor {
    Descriptor {
        media_type: desc.media_type.clone(),
        digest: desc.digest.clone(),
        size: desc.size,
        annotations: desc.annotations.clone().into_iter().collect(),
        platform: None,
    }
}

/// GC labels of a manifest: it keeps its config and layers.
pub(crate) fn manifest_gc_labels(manifest: &Manifest) -> HashMap<String, String> {
    let mut labels = HashMap::new();
    labels.insert("containerd.io/gc.ref.content.config".to_string(), manifest.config.digest.clone());
    for (i, layer) in manifest.layers.iter().enumerate() {
        labels.insert(format!("containerd.io/gc.ref.content.l.{i}"), layer.digest.clone());
    }
    labels
}

/// GC labels of an index: it keeps its manifests.
pub(crate) fn index_gc_labels(index: &Index) -> HashMap<String, String> {
    index
        .manifests
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("containerd.io/gc.ref.content.m.{i}"), m.digest.clone()))
        .collect()
}

impl ContainerdRuntime {
    async fn image_record(&self, name: &str) -> Result<Option<Image>> {
        debug!(name, "Images.Get");
        match ImagesClient::new(self.channel()).get(self.request(GetImageRequest { name: name.to_string() })).await {
            Ok(resp) => Ok(resp.into_inner().image),
            Err(s) if is_not_found(&s) => Ok(None),
            Err(s) => Err(RuntimeError::Other(format!("image {name:?}: {}", status_message(&s)))),
        }
    }

    async fn image_records(&self) -> Result<Vec<Image>> {
        debug!("Images.List");
        let resp = ImagesClient::new(self.channel())
            .list(self.request(ListImagesRequest { filters: Vec::new() }))
            .await
            .map_err(|s| RuntimeError::Other(format!("listing images: {}", status_message(&s))))?;
        Ok(resp.into_inner().images)
    }

    /// Follows `target` (an index or a manifest) to this platform's manifest.
    pub(crate) async fn resolve_manifest(&self, target: &Descriptor) -> Result<(Descriptor, Manifest)> {
        let mut desc = target.clone();
        for _ in 0..4 {
            if oci::is_index(&desc.media_type) {
                let index: Index = self.read_json(&desc.digest).await?;
                desc = oci::select_manifest(&index).cloned().ok_or_else(|| {
                    RuntimeError::Other(format!(
                        "index {} has no manifest for {}/{}",
                        desc.digest,
                        oci::host_platform().os,
                        oci::host_platform().architecture
                    ))
                })?;
            } else {
                let manifest: Manifest = self.read_json(&desc.digest).await?;
                return Ok((desc, manifest));
            }
        }
        Err(RuntimeError::Other(format!("index {} nests too deeply", target.digest)))
    }

    async fn resolve_record(&self, image: &Image) -> Result<ResolvedImage> {
        let target = image
            .target
            .as_ref()
            .map(from_containerd)
            .ok_or_else(|| RuntimeError::Other(format!("image {:?} has no target", image.name)))?;
        let (_, manifest) = self.resolve_manifest(&target).await?;
        let config: ImageConfig = self.read_json(&manifest.config.digest).await?;
        Ok(ResolvedImage { name: image.name.clone(), target, manifest, config })
    }

    /// The image known as `reference` (normalized), by image id
    /// (`sha256:<config digest>`) or by `repository@<digest>`.
    pub(crate) async fn find_resolved(&self, reference: &str) -> Result<Option<ResolvedImage>> {
        let is_id = reference.starts_with("sha256:") && !reference.contains('/');
        if !is_id {
            let name = reference::normalize(reference);
            if let Some(record) = self.image_record(&name).await? {
                return self.resolve_record(&record).await.map(Some);
            }
        }
        let wanted = Reference::parse(reference).ok();
        let by_digest = wanted.as_ref().and_then(|r| r.digest.clone().map(|d| (r.repository(), d)));
        if !is_id && by_digest.is_none() {
            return Ok(None);
        }
        for record in self.image_records().await? {
            let target_digest = record.target.as_ref().map(|t| t.digest.clone()).unwrap_or_default();
            if let Some((repository, digest)) = &by_digest {
                let same_repo = Reference::parse(&record.name).is_ok_and(|r| &r.repository() == repository);
                if same_repo && &target_digest == digest {
                    return self.resolve_record(&record).await.map(Some);
                }
            }
            if is_id {
                if target_digest == reference {
                    return self.resolve_record(&record).await.map(Some);
                }
                if let Ok(resolved) = self.resolve_record(&record).await {
                    if resolved.manifest.config.digest == reference {
                        return Ok(Some(resolved));
                    }
                }
            }
        }
        Ok(None)
    }

    pub(crate) async fn find_image(&self, reference: &str) -> Result<Option<ImageInfo>> {
        Ok(self.find_resolved(reference).await?.map(|r| r.info()))
    }

    pub(crate) async fn all_images(&self) -> Result<Vec<ImageInfo>> {
        let mut out = Vec::new();
        for record in self.image_records().await? {
            match self.resolve_record(&record).await {
                Ok(resolved) => out.push(resolved.info()),
                Err(e) => debug!(image = %record.name, "skipping image: {e}"),
            }
        }
        Ok(out)
    }

    /// Creates or updates the image record `name` → `target`.
    pub(crate) async fn put_image_record(&self, name: &str, target: &Descriptor) -> Result<()> {
        let image = Image {
            name: name.to_string(),
            labels: HashMap::new(),
            target: Some(to_containerd(target)),
            created_at: None,
            updated_at: None,
        };
        let mut client = ImagesClient::new(self.channel());
        debug!(name, digest = %target.digest, "Images.Create");
        match client
            .create(self.request(CreateImageRequest { image: Some(image.clone()), source_date_epoch: None }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if is_already_exists(&s) => {
                debug!(name, "Images.Update");
                let mask = prost_types::FieldMask { paths: vec!["target".to_string()] };
                client
                    .update(self.request(UpdateImageRequest {
                        image: Some(image),
                        update_mask: Some(mask),
                        source_date_epoch: None,
                    }))
                    .await
                    .map_err(|s| RuntimeError::Other(format!("updating image {name:?}: {}", status_message(&s))))?;
                Ok(())
            }
            Err(s) => Err(RuntimeError::Other(format!("creating image {name:?}: {}", status_message(&s)))),
        }
    }

    /// Unpacks the image's layers into the snapshotter (skipping layers
    /// already there) and labels its config so the GC keeps the snapshots.
    /// Returns the top snapshot's name.
    pub(crate) async fn unpack(&self, lease: &Lease, manifest: &Manifest, config: &ImageConfig) -> Result<String> {
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != manifest.layers.len() {
            return Err(RuntimeError::Other(format!(
                "image config {} lists {} layers but its manifest has {}",
                manifest.config.digest,
                diff_ids.len(),
                manifest.layers.len()
            )));
        }
        let chains = oci::chain_ids(diff_ids);
        let Some(top) = chains.last().cloned() else {
            return Err(RuntimeError::Other(format!("image config {} has no layers", manifest.config.digest)));
        };
        for (i, layer) in manifest.layers.iter().enumerate() {
            let parent = if i == 0 { String::new() } else { chains[i - 1].clone() };
            self.unpack_layer(lease, layer, &diff_ids[i], &chains[i], &parent).await?;
        }
        let labels = [(format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"), top.clone())].into_iter().collect();
        self.label_blob(&manifest.config.digest, &labels).await?;
        Ok(top)
    }

    async fn unpack_layer(
        &self,
        lease: &Lease,
        layer: &Descriptor,
        diff_id: &str,
        chain: &str,
        parent: &str,
    ) -> Result<()> {
        let mut snapshots = SnapshotsClient::new(self.channel());
        let err = |what: &str, m: String| RuntimeError::Other(format!("unpacking layer {}: {what}: {m}", layer.digest));
        let stat = snapshots
            .stat(self.request(StatSnapshotRequest { snapshotter: SNAPSHOTTER.to_string(), key: chain.to_string() }))
            .await;
        // an unpacked layer only needs to join this lease
        let lease_existing = || async {
            let resource = Resource { id: chain.to_string(), r#type: format!("snapshots/{SNAPSHOTTER}") };
            LeasesClient::new(self.channel())
                .add_resource(self.request(AddResourceRequest { id: lease.id.clone(), resource: Some(resource) }))
                .await
                .map(|_| ())
                .map_err(|s| err("leasing its snapshot", status_message(&s)))
        };
        match stat {
            Ok(_) => return lease_existing().await,
            Err(s) if is_not_found(&s) => {}
            Err(s) => return Err(err("Snapshots.Stat", status_message(&s))),
        }
        let key = format!("extract-{}-{chain}", unique_suffix());
        debug!(layer = %layer.digest, chain, parent, "unpacking layer");
        let labels = [("containerd.io/snapshot.ref".to_string(), chain.to_string())].into_iter().collect();
        let prepared = snapshots
            .prepare(self.leased(
                PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.to_string(),
                    key: key.clone(),
                    parent: parent.to_string(),
                    labels,
                },
                lease,
            ))
            .await;
        let mounts = match prepared {
            Ok(r) => r.into_inner().mounts,
            // another importer (an agent sharing this containerd) committed it meanwhile
            Err(s) if is_already_exists(&s) => return lease_existing().await,
            Err(s) => return Err(err("Snapshots.Prepare", status_message(&s))),
        };
        let result = async {
            let applied = DiffClient::new(self.channel())
                .apply(self.leased(
                    ApplyRequest { diff: Some(to_containerd(layer)), mounts, payloads: HashMap::new(), sync_fs: false },
                    lease,
                ))
                .await
                .map_err(|s| err("Diff.Apply", status_message(&s)))?
                .into_inner()
                .applied
                .map(|d| d.digest)
                .unwrap_or_default();
            if applied != diff_id {
                return Err(err(
                    "content",
                    format!("uncompressed digest {applied} does not match the config's {diff_id}"),
                ));
            }
            let commit = snapshots
                .commit(self.leased(
                    CommitSnapshotRequest {
                        snapshotter: SNAPSHOTTER.to_string(),
                        name: chain.to_string(),
                        key: key.clone(),
                        labels: HashMap::new(),
                    },
                    lease,
                ))
                .await;
            match commit {
                Ok(_) => Ok(true),
                Err(s) if is_already_exists(&s) => Ok(false),
                Err(s) => Err(err("Snapshots.Commit", status_message(&s))),
            }
        }
        .await;
        if !matches!(result, Ok(true)) {
            let _ = snapshots
                .remove(self.request(RemoveSnapshotRequest { snapshotter: SNAPSHOTTER.to_string(), key }))
                .await;
        }
        result.map(|_| ())
    }

    /// The top snapshot of the image, unpacking it first if its snapshots
    /// are gone (the content is still there).
    pub(crate) async fn ensure_unpacked(&self, image: &ResolvedImage) -> Result<String> {
        let top =
            image.top_chain_id().ok_or_else(|| RuntimeError::Other(format!("image {:?} has no layers", image.name)))?;
        let stat = SnapshotsClient::new(self.channel())
            .stat(self.request(StatSnapshotRequest { snapshotter: SNAPSHOTTER.to_string(), key: top.clone() }))
            .await;
        match stat {
            Ok(_) => Ok(top),
            Err(s) if is_not_found(&s) => {
                let lease = self.create_lease("unpack").await?;
                let result = self.unpack(&lease, &image.manifest, &image.config).await;
                self.delete_lease(lease).await;
                result
            }
            Err(s) => Err(RuntimeError::Other(format!("snapshot {top}: {}", status_message(&s)))),
        }
    }
}
