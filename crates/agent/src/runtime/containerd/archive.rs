//! Image archives: importing OCI layout tarballs (`index.json` +
//! `blobs/sha256/...`) and docker-archive tarballs (`manifest.json` + layer
//! tars, converted to an OCI manifest here), plain or gzip-compressed; and
//! building small single-layer OCI layout tarballs in memory (the pause
//! image, test images).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tracing::debug;

use super::images::{index_gc_labels, manifest_gc_labels};
use super::oci::{self, Descriptor, ImageConfig, Index, Manifest, RunConfig};
use super::reference::Reference;
use super::{unique_suffix, ContainerdRuntime, Lease};
use crate::runtime::{ImageInfo, Result, RuntimeError};

const CHUNK: usize = 1 << 20;

/// One entry of a layer built by [`build_oci_archive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerEntry {
    Dir { path: String, mode: u32 },
    File { path: String, mode: u32, data: Vec<u8> },
    Symlink { path: String, target: String },
}

/// An OCI layout tarball built in memory.
#[derive(Debug, Clone)]
pub struct OciArchive {
    pub bytes: Vec<u8>,
    /// The digest of the image's manifest (what its image record points at).
    pub manifest_digest: String,
}

/// Builds an OCI layout tarball holding one image, `name` (a full
/// reference), of one uncompressed layer made of `entries`, for this
/// machine's platform. The output depends only on its inputs, so importing
/// it twice changes nothing.
pub fn build_oci_archive(name: &str, entries: &[LayerEntry], config: &RunConfig) -> std::io::Result<OciArchive> {
    let layer = build_tar(entries.iter().map(|e| match e {
        LayerEntry::Dir { path, mode } => TarItem::Dir(path, *mode),
        LayerEntry::File { path, mode, data } => TarItem::File(path, *mode, data),
        LayerEntry::Symlink { path, target } => TarItem::Symlink(path, target),
    }))?;
    let layer_desc = descriptor(oci::MT_OCI_LAYER, &layer);
    let platform = oci::host_platform();
    let image_config = ImageConfig {
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        config: Some(config.clone()),
        rootfs: oci::RootFs { kind: "layers".to_string(), diff_ids: vec![layer_desc.digest.clone()] },
    };
    let config_bytes = to_json(&image_config)?;
    let config_desc = descriptor(oci::MT_OCI_CONFIG, &config_bytes);
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MT_OCI_MANIFEST.to_string()),
        config: config_desc.clone(),
        layers: vec![layer_desc.clone()],
    };
    let manifest_bytes = to_json(&manifest)?;
    let mut manifest_desc = descriptor(oci::MT_OCI_MANIFEST, &manifest_bytes);
    let manifest_digest = manifest_desc.digest.clone();
    manifest_desc.annotations.insert(oci::ANNOTATION_REF_NAME.to_string(), name.to_string());
    manifest_desc.annotations.insert(oci::ANNOTATION_IMAGE_NAME.to_string(), name.to_string());
    manifest_desc.platform = Some(platform);
    let index =
        Index { schema_version: 2, media_type: Some(oci::MT_OCI_INDEX.to_string()), manifests: vec![manifest_desc] };
    let index_bytes = to_json(&index)?;
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec();
    let blobs = [
        (oci::blob_path(&layer_desc.digest), layer),
        (oci::blob_path(&config_desc.digest), config_bytes),
        (oci::blob_path(&manifest_digest), manifest_bytes),
    ];
    let mut items = vec![
        TarItem::File("oci-layout", 0o644, &layout),
        TarItem::File("index.json", 0o644, &index_bytes),
        TarItem::Dir("blobs", 0o755),
        TarItem::Dir("blobs/sha256", 0o755),
    ];
    items.extend(blobs.iter().map(|(path, data)| TarItem::File(path, 0o644, data)));
    let bytes = build_tar(items.into_iter())?;
    Ok(OciArchive { bytes, manifest_digest })
}

enum TarItem<'a> {
    Dir(&'a str, u32),
    File(&'a str, u32, &'a [u8]),
    Symlink(&'a str, &'a str),
}

fn build_tar<'a>(items: impl Iterator<Item = TarItem<'a>>) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for item in items {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        match item {
            TarItem::Dir(path, mode) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(mode);
                header.set_size(0);
                builder.append_data(&mut header, format!("{}/", path.trim_matches('/')), std::io::empty())?;
            }
            TarItem::File(path, mode, data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(mode);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path.trim_start_matches('/'), data)?;
            }
            TarItem::Symlink(path, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, path.trim_start_matches('/'), target)?;
            }
        }
    }
    builder.into_inner()
}

fn descriptor(media_type: &str, data: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: oci::sha256_digest(data),
        size: data.len() as i64,
        annotations: BTreeMap::new(),
        platform: None,
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(std::io::Error::other)
}

/// Where an archive's bytes are.
#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    Memory(Bytes),
}

/// The regular files of a tarball: name → (offset of the data, size).
#[derive(Debug, Default)]
struct TarIndex {
    files: HashMap<String, (u64, u64)>,
    links: HashMap<String, String>,
}

fn clean_name(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

impl TarIndex {
    fn scan<R: Read + Seek>(reader: R) -> std::io::Result<TarIndex> {
        let mut out = TarIndex::default();
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries_with_seek()? {
            let entry = entry?;
            let name = clean_name(&entry.path()?.to_string_lossy());
            let kind = entry.header().entry_type();
            if kind.is_file() {
                out.files.insert(name, (entry.raw_file_position(), entry.size()));
            } else if kind.is_symlink() || kind.is_hard_link() {
                if let Some(target) = entry.link_name()? {
                    let target = target.to_string_lossy();
                    let target = if kind.is_symlink() && !target.starts_with('/') {
                        let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                        clean_name(&format!("{dir}/{target}"))
                    } else {
                        clean_name(&target)
                    };
                    out.links.insert(name, target);
                }
            }
        }
        Ok(out)
    }

    fn find(&self, name: &str) -> Option<(u64, u64)> {
        let mut name = clean_name(name);
        for _ in 0..8 {
            if let Some(found) = self.files.get(&name) {
                return Some(*found);
            }
            name = self.links.get(&name)?.clone();
        }
        None
    }
}

impl Source {
    async fn read(&self, offset: u64, size: u64) -> std::io::Result<Vec<u8>> {
        match self {
            Source::Memory(bytes) => {
                let start = usize::try_from(offset).map_err(std::io::Error::other)?;
                let end = start + usize::try_from(size).map_err(std::io::Error::other)?;
                bytes
                    .get(start..end)
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "archive is truncated"))
            }
            Source::File(path) => {
                let mut file = tokio::fs::File::open(path).await?;
                file.seek(SeekFrom::Start(offset)).await?;
                let mut out = vec![0; usize::try_from(size).map_err(std::io::Error::other)?];
                file.read_exact(&mut out).await?;
                Ok(out)
            }
        }
    }

    /// Consecutive chunks of a region of the archive.
    fn chunks(&self, offset: u64, size: u64) -> Chunks {
        Chunks { source: self.clone(), file: None, offset, left: size }
    }

    async fn scan(&self) -> std::io::Result<TarIndex> {
        let source = self.clone();
        tokio::task::spawn_blocking(move || match source {
            Source::Memory(bytes) => TarIndex::scan(std::io::Cursor::new(bytes)),
            Source::File(path) => TarIndex::scan(std::fs::File::open(path)?),
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// A reader of a region of an archive, a chunk at a time.
struct Chunks {
    source: Source,
    file: Option<tokio::fs::File>,
    offset: u64,
    left: u64,
}

impl Chunks {
    async fn next(&mut self) -> Result<Option<Bytes>> {
        let io = |e: std::io::Error| RuntimeError::Other(format!("reading the archive: {e}"));
        if self.left == 0 {
            return Ok(None);
        }
        let want = self.left.min(CHUNK as u64);
        let chunk = match &self.source {
            Source::Memory(bytes) => {
                let start = usize::try_from(self.offset).map_err(|e| io(std::io::Error::other(e)))?;
                let end = start + usize::try_from(want).map_err(|e| io(std::io::Error::other(e)))?;
                if end > bytes.len() {
                    return Err(io(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "archive is truncated")));
                }
                bytes.slice(start..end)
            }
            Source::File(path) => {
                if self.file.is_none() {
                    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
                    file.seek(SeekFrom::Start(self.offset)).await.map_err(io)?;
                    self.file = Some(file);
                }
                let Some(file) = self.file.as_mut() else {
                    return Ok(None);
                };
                let mut buf = vec![0; usize::try_from(want).unwrap_or(CHUNK)];
                file.read_exact(&mut buf).await.map_err(io)?;
                Bytes::from(buf)
            }
        };
        self.offset += want;
        self.left -= want;
        Ok(Some(chunk))
    }
}

/// One image of a docker-archive `manifest.json`.
#[derive(Debug, Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

/// A gzip-compressed archive, decompressed into a temporary file that is
/// removed on drop.
struct Decompressed(PathBuf);

impl Drop for Decompressed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn decompress(path: &Path) -> std::io::Result<Decompressed> {
    let target = std::env::temp_dir().join(format!("skiff-import-{}.tar", unique_suffix()));
    let out = Decompressed(target);
    let mut input = flate2::read::GzDecoder::new(std::io::BufReader::new(std::fs::File::open(path)?));
    let mut file = std::fs::File::create(&out.0)?;
    std::io::copy(&mut input, &mut file)?;
    Ok(out)
}

fn is_gzip(path: &Path) -> std::io::Result<bool> {
    let mut magic = [0u8; 2];
    let mut file = std::fs::File::open(path)?;
    let n = file.read(&mut magic)?;
    Ok(n == 2 && magic == [0x1f, 0x8b])
}

impl ContainerdRuntime {
    pub(crate) async fn import_archive(&self, path: &Path) -> Result<Vec<ImageInfo>> {
        let err = |message: String| RuntimeError::Import { path: path.display().to_string(), message };
        let owned = path.to_path_buf();
        let decompressed = tokio::task::spawn_blocking(move || -> std::io::Result<Option<Decompressed>> {
            if is_gzip(&owned)? {
                decompress(&owned).map(Some)
            } else {
                Ok(None)
            }
        })
        .await
        .map_err(|e| err(e.to_string()))?
        .map_err(|e| err(e.to_string()))?;
        let source = Source::File(decompressed.as_ref().map_or_else(|| path.to_path_buf(), |d| d.0.clone()));
        let result = self.import_source(&source).await;
        drop(decompressed);
        result.map_err(|e| match e {
            RuntimeError::Import { message, .. } | RuntimeError::Other(message) => err(message),
            other => other,
        })
    }

    /// Imports an archive held in memory (`what` names it in errors).
    pub(crate) async fn import_bytes(&self, what: &str, bytes: Bytes) -> Result<Vec<ImageInfo>> {
        self.import_source(&Source::Memory(bytes)).await.map_err(|e| match e {
            RuntimeError::Other(message) => RuntimeError::Import { path: what.to_string(), message },
            other => other,
        })
    }

    async fn import_source(&self, source: &Source) -> Result<Vec<ImageInfo>> {
        let index = source.scan().await.map_err(|e| RuntimeError::Other(format!("not a readable tar archive: {e}")))?;
        let lease = self.create_lease("import").await?;
        let result = async {
            if index.find("index.json").is_some() {
                let images = self.import_oci(&lease, source, &index).await?;
                if !images.is_empty() || index.find("manifest.json").is_none() {
                    return Ok(images);
                }
            }
            if index.find("manifest.json").is_some() {
                return self.import_docker(&lease, source, &index).await;
            }
            Err(RuntimeError::Other(
                "neither an OCI layout (index.json) nor a docker archive (manifest.json)".to_string(),
            ))
        }
        .await;
        self.delete_lease(lease).await;
        result
    }

    async fn archive_json<T: serde::de::DeserializeOwned>(source: &Source, index: &TarIndex, name: &str) -> Result<T> {
        let data = Self::archive_file(source, index, name).await?;
        serde_json::from_slice(&data).map_err(|e| RuntimeError::Other(format!("{name}: invalid JSON: {e}")))
    }

    async fn archive_file(source: &Source, index: &TarIndex, name: &str) -> Result<Vec<u8>> {
        let (offset, size) =
            index.find(name).ok_or_else(|| RuntimeError::Other(format!("{name} is missing from the archive")))?;
        if size > (64 << 20) {
            return Err(RuntimeError::Other(format!("{name} is too large ({size} bytes)")));
        }
        source.read(offset, size).await.map_err(|e| RuntimeError::Other(format!("reading {name}: {e}")))
    }

    /// Writes a blob of the archive into the content store (streamed).
    async fn import_blob(
        &self,
        lease: &Lease,
        source: &Source,
        (offset, size): (u64, u64),
        desc: &Descriptor,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        self.ensure_blob(lease, desc, labels, |mut w| async move {
            let mut chunks = source.chunks(offset, size);
            while let Some(chunk) = chunks.next().await? {
                w.write(chunk).await?;
            }
            Ok(w)
        })
        .await?;
        Ok(())
    }

    async fn import_oci(&self, lease: &Lease, source: &Source, index: &TarIndex) -> Result<Vec<ImageInfo>> {
        let top: Index = Self::archive_json(source, index, "index.json").await?;
        let mut out = Vec::new();
        for desc in &top.manifests {
            let name = desc
                .annotations
                .get(oci::ANNOTATION_IMAGE_NAME)
                .or_else(|| desc.annotations.get(oci::ANNOTATION_REF_NAME));
            let Some(name) = name else {
                debug!(digest = %desc.digest, "skipping an unnamed image of the archive");
                continue;
            };
            let name = Reference::parse(name)
                .map_err(|e| RuntimeError::Other(format!("image name {name:?} in index.json: {e}")))?
                .to_string();
            self.import_oci_tree(lease, source, index, desc, 0).await?;
            out.push(self.finish_import(lease, &name, desc).await?);
        }
        Ok(out)
    }

    /// Writes `desc` and everything it references that the archive holds.
    async fn import_oci_tree(
        &self,
        lease: &Lease,
        source: &Source,
        index: &TarIndex,
        desc: &Descriptor,
        depth: usize,
    ) -> Result<()> {
        let path = oci::blob_path(&desc.digest);
        let location = index
            .find(&path)
            .ok_or_else(|| RuntimeError::Other(format!("blob {} is missing from the archive", desc.digest)))?;
        if oci::is_index(&desc.media_type) {
            if depth > 3 {
                return Err(RuntimeError::Other(format!("index {} nests too deeply", desc.digest)));
            }
            let child: Index = Self::archive_json(source, index, &path).await?;
            for m in &child.manifests {
                if index.find(&oci::blob_path(&m.digest)).is_some() {
                    Box::pin(self.import_oci_tree(lease, source, index, m, depth + 1)).await?;
                }
            }
            self.import_blob(lease, source, location, desc, index_gc_labels(&child)).await
        } else if oci::is_manifest(&desc.media_type) {
            let manifest: Manifest = Self::archive_json(source, index, &path).await?;
            for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
                let at = index
                    .find(&oci::blob_path(&blob.digest))
                    .ok_or_else(|| RuntimeError::Other(format!("blob {} is missing from the archive", blob.digest)))?;
                self.import_blob(lease, source, at, blob, HashMap::new()).await?;
            }
            self.import_blob(lease, source, location, desc, manifest_gc_labels(&manifest)).await
        } else {
            Err(RuntimeError::Other(format!("unsupported media type {:?} for {}", desc.media_type, desc.digest)))
        }
    }

    /// Unpacks the image (this platform's manifest) and names it.
    async fn finish_import(&self, lease: &Lease, name: &str, target: &Descriptor) -> Result<ImageInfo> {
        let mut target = target.clone();
        target.platform = None;
        let (_, manifest) = self.resolve_manifest(&target).await?;
        let config: ImageConfig = self.read_json(&manifest.config.digest).await?;
        self.unpack(lease, &manifest, &config).await?;
        self.put_image_record(name, &target).await?;
        debug!(name, digest = %target.digest, "imported image");
        let resolved = super::images::ResolvedImage { name: name.to_string(), target, manifest, config };
        Ok(resolved.info())
    }

    async fn import_docker(&self, lease: &Lease, source: &Source, index: &TarIndex) -> Result<Vec<ImageInfo>> {
        let entries: Vec<DockerEntry> = Self::archive_json(source, index, "manifest.json").await?;
        let mut out = Vec::new();
        for entry in &entries {
            let tags = entry.repo_tags.clone().unwrap_or_default();
            if tags.is_empty() {
                debug!(config = %entry.config, "skipping an untagged image of the archive");
                continue;
            }
            let config_bytes = Self::archive_file(source, index, &entry.config).await?;
            let config_desc = descriptor(oci::MT_OCI_CONFIG, &config_bytes);
            let mut layers = Vec::new();
            for layer in &entry.layers {
                let at = index
                    .find(layer)
                    .ok_or_else(|| RuntimeError::Other(format!("layer {layer} is missing from the archive")))?;
                let (digest, gzip) = hash_region(source, at).await?;
                let media_type = if gzip { oci::MT_OCI_LAYER_GZIP } else { oci::MT_OCI_LAYER };
                let desc = Descriptor {
                    media_type: media_type.to_string(),
                    digest,
                    size: i64::try_from(at.1).unwrap_or(i64::MAX),
                    annotations: BTreeMap::new(),
                    platform: None,
                };
                self.import_blob(lease, source, at, &desc, HashMap::new()).await?;
                layers.push(desc);
            }
            self.ensure_blob_bytes(lease, &config_desc, Bytes::from(config_bytes), HashMap::new()).await?;
            let manifest = Manifest {
                schema_version: 2,
                media_type: Some(oci::MT_OCI_MANIFEST.to_string()),
                config: config_desc,
                layers,
            };
            let manifest_bytes =
                serde_json::to_vec(&manifest).map_err(|e| RuntimeError::Other(format!("encoding a manifest: {e}")))?;
            let manifest_desc = descriptor(oci::MT_OCI_MANIFEST, &manifest_bytes);
            self.ensure_blob_bytes(lease, &manifest_desc, Bytes::from(manifest_bytes), manifest_gc_labels(&manifest))
                .await?;
            for tag in &tags {
                let name = Reference::parse(tag)
                    .map_err(|e| RuntimeError::Other(format!("RepoTag {tag:?} in manifest.json: {e}")))?
                    .to_string();
                out.push(self.finish_import(lease, &name, &manifest_desc).await?);
            }
        }
        if out.is_empty() {
            return Err(RuntimeError::Other("manifest.json names no image (no RepoTags)".to_string()));
        }
        Ok(out)
    }
}

/// The sha256 digest of a region of the archive, and whether it is gzip data.
async fn hash_region(source: &Source, (offset, size): (u64, u64)) -> Result<(String, bool)> {
    let mut hasher = oci::Hasher::default();
    let mut gzip = None;
    let mut chunks = source.chunks(offset, size);
    while let Some(chunk) = chunks.next().await? {
        gzip.get_or_insert_with(|| chunk.starts_with(&[0x1f, 0x8b]));
        hasher.update(&chunk);
    }
    Ok((hasher.finish(), gzip.unwrap_or(false)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_archives_are_deterministic_oci_layouts() {
        let entries = vec![
            LayerEntry::Dir { path: "bin".to_string(), mode: 0o755 },
            LayerEntry::File { path: "bin/hello".to_string(), mode: 0o755, data: b"#!/bin/sh\n".to_vec() },
            LayerEntry::Symlink { path: "bin/hi".to_string(), target: "hello".to_string() },
        ];
        let config = RunConfig { entrypoint: Some(vec!["/bin/hello".to_string()]), ..Default::default() };
        let a = build_oci_archive("skiff.local/x:1", &entries, &config).unwrap();
        let b = build_oci_archive("skiff.local/x:1", &entries, &config).unwrap();
        assert_eq!(a.bytes, b.bytes);
        let index = TarIndex::scan(std::io::Cursor::new(&a.bytes)).unwrap();
        assert!(index.find("oci-layout").is_some());
        let (off, size) = index.find("index.json").unwrap();
        let top: Index = serde_json::from_slice(&a.bytes[off as usize..(off + size) as usize]).unwrap();
        assert_eq!(top.manifests[0].digest, a.manifest_digest);
        assert_eq!(top.manifests[0].annotations[oci::ANNOTATION_REF_NAME], "skiff.local/x:1");
        assert!(index.find(&oci::blob_path(&a.manifest_digest)).is_some());
    }

    #[test]
    fn tar_names_are_cleaned_and_links_followed() {
        assert_eq!(clean_name("./blobs/sha256/ab"), "blobs/sha256/ab");
        assert_eq!(clean_name("a/../b//c"), "b/c");
        let mut index = TarIndex::default();
        index.files.insert("x/layer.tar".to_string(), (512, 10));
        index.links.insert("y/layer.tar".to_string(), "x/layer.tar".to_string());
        assert_eq!(index.find("./y/layer.tar"), Some((512, 10)));
        assert_eq!(index.find("z"), None);
    }
}
