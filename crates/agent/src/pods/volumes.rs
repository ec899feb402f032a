//! Pod volumes on the node: emptyDir (a directory, or tmpfs for medium
//! Memory), hostPath (with its type checks), and the projected kinds
//! (configMap, secret, downwardAPI, projected with serviceAccountToken
//! sources from `token`) written the way the kubelet's
//! atomic writer does: files in a timestamped directory, a `..data` symlink
//! swapped in one rename, and user-visible names that are symlinks through
//! `..data`, so a reader never sees half an update.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, ServiceAccountTokenProjection, Volume, VolumeMount,
};

use super::env::{expand, field_value, find_container, Objects, PodFacts};
use super::resources::{resource_field_value, Amount};
use super::token::TokenKey;
use crate::runtime::Mount;

/// A file of a projected volume: contents and mode.
pub type Payload = BTreeMap<String, (Vec<u8>, u32)>;

/// A volume made ready on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub host_path: PathBuf,
    /// configMap, secret, downwardAPI and projected volumes are always mounted read-only.
    pub read_only: bool,
}

/// What preparing a pod's volumes gave: the volumes, and notes for events
/// (things skipped on purpose).
#[derive(Debug, Default)]
pub struct PreparedVolumes {
    pub volumes: HashMap<String, Prepared>,
    pub notes: Vec<String>,
}

pub fn volumes_dir(pod_dir: &Path) -> PathBuf {
    pod_dir.join("volumes")
}

/// Make every volume of the pod ready under `pod_dir`, or refresh the
/// projected ones. The error names the volume, as the kubelet's FailedMount
/// event does.
pub async fn prepare(
    pod: &Pod,
    pod_dir: &Path,
    objects: &dyn Objects,
    facts: &PodFacts,
) -> Result<PreparedVolumes, String> {
    let mut out = PreparedVolumes::default();
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let dir = volumes_dir(pod_dir).join(&v.name);
        let fail = |e: String| format!("MountVolume.SetUp failed for volume {:?} : {e}", v.name);
        let prepared = prepare_one(pod, &ns, v, &dir, objects, facts, &mut out.notes).await.map_err(fail)?;
        out.volumes.insert(v.name.clone(), prepared);
    }
    Ok(out)
}

async fn prepare_one(
    pod: &Pod,
    ns: &str,
    v: &Volume,
    dir: &Path,
    objects: &dyn Objects,
    facts: &PodFacts,
    notes: &mut Vec<String>,
) -> Result<Prepared, String> {
    let io = |e: io::Error| format!("{}: {e}", dir.display());
    if let Some(e) = &v.empty_dir {
        fs::create_dir_all(dir).map_err(io)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o777)).map_err(io)?;
        if e.medium.as_deref() == Some("Memory") {
            mount_tmpfs(dir, e.size_limit.as_ref().and_then(super::resources::amount))?;
        }
        return Ok(Prepared { host_path: dir.to_path_buf(), read_only: false });
    }
    if let Some(h) = &v.host_path {
        let path = PathBuf::from(&h.path);
        check_host_path(&path, h.type_.as_deref().unwrap_or(""))?;
        return Ok(Prepared { host_path: path, read_only: false });
    }
    let payload = if let Some(c) = &v.config_map {
        let cm = objects.config_map(ns, &c.name).await?;
        config_map_payload(&c.name, cm, c.items.as_deref(), c.default_mode, c.optional.unwrap_or(false))?
    } else if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let secret = objects.secret(ns, &name).await?;
        secret_payload(&name, secret, s.items.as_deref(), s.default_mode, s.optional.unwrap_or(false))?
    } else if let Some(d) = &v.downward_api {
        downward_payload(pod, d.items.as_deref().unwrap_or_default(), d.default_mode, facts)?
    } else if let Some(p) = &v.projected {
        let mut all = Payload::new();
        for src in p.sources.iter().flatten() {
            let part = if let Some(c) = &src.config_map {
                let cm = objects.config_map(ns, &c.name).await?;
                config_map_payload(&c.name, cm, c.items.as_deref(), p.default_mode, c.optional.unwrap_or(false))?
            } else if let Some(s) = &src.secret {
                let secret = objects.secret(ns, &s.name).await?;
                secret_payload(&s.name, secret, s.items.as_deref(), p.default_mode, s.optional.unwrap_or(false))?
            } else if let Some(d) = &src.downward_api {
                downward_payload(pod, d.items.as_deref().unwrap_or_default(), p.default_mode, facts)?
            } else if let Some(t) = &src.service_account_token {
                let token = objects.service_account_token(&token_key(pod, ns, t)).await?;
                let mode = p.default_mode.unwrap_or(DEFAULT_MODE) as u32;
                Payload::from([(t.path.clone(), (token.into_bytes(), mode))])
            } else {
                notes
                    .push(format!("volume {:?}: a projected source kind is not supported yet and is left out", v.name));
                continue;
            };
            all.extend(part);
        }
        all
    } else {
        return Err("this volume type is not supported yet (supported: emptyDir, hostPath, configMap, secret, downwardAPI, projected)".into());
    };
    write_atomic(dir, &payload).map_err(io)?;
    Ok(Prepared { host_path: dir.to_path_buf(), read_only: true })
}

/// Kubernetes' default lifetime of a projected service account token.
const DEFAULT_TOKEN_EXPIRATION_SECONDS: i64 = 3600;

/// What a pod's serviceAccountToken source asks for: a token of the pod's
/// service account bound to the pod, for the source's audience (or the API
/// server's), living `expirationSeconds` (default one hour).
fn token_key(pod: &Pod, ns: &str, src: &ServiceAccountTokenProjection) -> TokenKey {
    let sa = pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).filter(|s| !s.is_empty());
    TokenKey {
        namespace: ns.to_string(),
        service_account: sa.unwrap_or_else(|| "default".into()),
        pod_name: pod.metadata.name.clone().unwrap_or_default(),
        pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
        audience: src.audience.clone().filter(|a| !a.is_empty()),
        expiration_seconds: src.expiration_seconds.unwrap_or(DEFAULT_TOKEN_EXPIRATION_SECONDS),
    }
}

fn mount_tmpfs(dir: &Path, size: Option<Amount>) -> Result<(), String> {
    use nix::sys::statfs::{statfs, TMPFS_MAGIC};
    if statfs(dir).map(|s| s.filesystem_type() == TMPFS_MAGIC).unwrap_or(false) {
        return Ok(());
    }
    let opts = match size.map(|s| s.value()).filter(|s| *s > 0) {
        Some(bytes) => format!("mode=0777,size={bytes}"),
        None => "mode=0777".to_string(),
    };
    tracing::debug!(dir = %dir.display(), %opts, "mount tmpfs");
    nix::mount::mount(Some("tmpfs"), dir, Some("tmpfs"), nix::mount::MsFlags::empty(), Some(opts.as_str()))
        .map_err(|e| format!("mounting tmpfs on {}: {e}", dir.display()))
}

fn check_host_path(path: &Path, kind: &str) -> Result<(), String> {
    let fail = |what: &str| Err(format!("hostPath type check failed: {} is not {what}", path.display()));
    let meta = fs::metadata(path);
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => fail("a directory"),
            Err(_) => {
                fs::create_dir_all(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
                fs::set_permissions(path, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())
            }
        },
        "Directory" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            _ => fail("a directory"),
        },
        "FileOrCreate" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => fail("a file"),
            Err(_) => {
                if let Some(p) = path.parent() {
                    fs::create_dir_all(p).map_err(|e| format!("creating {}: {e}", p.display()))?;
                }
                fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(path)
                    .map_err(|e| format!("creating {}: {e}", path.display()))?;
                fs::set_permissions(path, fs::Permissions::from_mode(0o644)).map_err(|e| e.to_string())
            }
        },
        "File" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            _ => fail("a file"),
        },
        "Socket" => match meta {
            Ok(m) if m.file_type().is_socket() => Ok(()),
            _ => fail("a socket file"),
        },
        "CharDevice" => match meta {
            Ok(m) if m.file_type().is_char_device() => Ok(()),
            _ => fail("a character device"),
        },
        "BlockDevice" => match meta {
            Ok(m) if m.file_type().is_block_device() => Ok(()),
            _ => fail("a block device"),
        },
        other => Err(format!("hostPath type {other:?} is not one of DirectoryOrCreate, Directory, FileOrCreate, File, Socket, CharDevice, BlockDevice")),
    }
}

const DEFAULT_MODE: i32 = 0o644;

fn keyed_payload(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    missing: impl Fn(&str) -> String,
) -> Result<Payload, String> {
    let mode = default_mode.unwrap_or(DEFAULT_MODE) as u32;
    let mut out = Payload::new();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in data {
                out.insert(k, (v, mode));
            }
        }
        Some(items) => {
            for it in items {
                let Some(v) = data.get(&it.key) else { return Err(missing(&it.key)) };
                out.insert(it.path.clone(), (v.clone(), it.mode.map(|m| m as u32).unwrap_or(mode)));
            }
        }
    }
    Ok(out)
}

pub fn config_map_payload(
    name: &str,
    cm: Option<ConfigMap>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Payload, String> {
    let Some(cm) = cm else {
        return if optional { Ok(Payload::new()) } else { Err(format!("configmap {name:?} not found")) };
    };
    let mut data: BTreeMap<String, Vec<u8>> =
        cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
    data.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
    keyed_payload(data, items, default_mode, |k| format!("configmap references non-existent config key: {k}"))
}

pub fn secret_payload(
    name: &str,
    secret: Option<Secret>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Payload, String> {
    let Some(s) = secret else {
        return if optional { Ok(Payload::new()) } else { Err(format!("secret {name:?} not found")) };
    };
    let mut data: BTreeMap<String, Vec<u8>> = s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
    data.extend(s.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
    keyed_payload(data, items, default_mode, |k| format!("references non-existent secret key: {k}"))
}

fn downward_payload(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
    facts: &PodFacts,
) -> Result<Payload, String> {
    let mode = default_mode.unwrap_or(DEFAULT_MODE) as u32;
    let mut out = Payload::new();
    for it in items {
        let value = if let Some(f) = &it.field_ref {
            field_value(pod, &f.field_path, facts)?
        } else if let Some(r) = &it.resource_field_ref {
            let cname = r.container_name.clone().unwrap_or_default();
            let c = find_container(pod, &cname).ok_or_else(|| format!("container {cname:?} not found"))?;
            resource_field_value(&c, &r.resource, r.divisor.as_ref(), &facts.node_allocatable)?
        } else {
            String::new()
        };
        out.insert(it.path.clone(), (value.into_bytes(), it.mode.map(|m| m as u32).unwrap_or(mode)));
    }
    Ok(out)
}

fn checked_relative(p: &str) -> io::Result<PathBuf> {
    let path = Path::new(p);
    if p.is_empty() || path.components().any(|c| !matches!(c, Component::Normal(_))) || p.starts_with("..") {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid path {p:?}")));
    }
    Ok(path.to_path_buf())
}

fn read_current(dir: &Path) -> Option<Payload> {
    let data = dir.join("..data");
    let target = fs::read_link(&data).ok()?;
    let root = dir.join(target);
    let mut out = Payload::new();
    fn walk(root: &Path, rel: &Path, out: &mut Payload) -> io::Result<()> {
        for e in fs::read_dir(root.join(rel))? {
            let e = e?;
            let r = rel.join(e.file_name());
            let meta = e.metadata()?;
            if meta.is_dir() {
                walk(root, &r, out)?;
            } else {
                out.insert(
                    r.to_string_lossy().into_owned(),
                    (fs::read(root.join(&r))?, meta.permissions().mode() & 0o7777),
                );
            }
        }
        Ok(())
    }
    walk(&root, Path::new(""), &mut out).ok()?;
    Some(out)
}

/// Write `payload` into `dir` atomically; returns whether anything changed.
pub fn write_atomic(dir: &Path, payload: &Payload) -> io::Result<bool> {
    fs::create_dir_all(dir)?;
    if read_current(dir).as_ref() == Some(payload) {
        return Ok(false);
    }
    let old = fs::read_link(dir.join("..data")).ok();
    let stamp = chrono::Utc::now().format("..%Y_%m_%d_%H_%M_%S.%f").to_string();
    let ts_dir = dir.join(&stamp);
    fs::create_dir_all(&ts_dir)?;
    fs::set_permissions(&ts_dir, fs::Permissions::from_mode(0o755))?;
    for (rel, (bytes, mode)) in payload {
        let path = ts_dir.join(checked_relative(rel)?);
        if let Some(p) = path.parent() {
            fs::create_dir_all(p)?;
        }
        fs::write(&path, bytes)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(*mode))?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp)?;
    fs::rename(&tmp, dir.join("..data"))?;
    // user-visible names: symlinks through ..data
    let mut visible: Vec<String> = payload
        .keys()
        .filter_map(|k| Path::new(k).components().next().map(|c| c.as_os_str().to_string_lossy().into_owned()))
        .collect();
    visible.dedup();
    for name in &visible {
        let link = dir.join(name);
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link)?;
        }
    }
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !visible.contains(&name) {
            fs::remove_file(e.path())?;
        }
    }
    if let Some(old) = old.filter(|o| o.as_os_str() != stamp.as_str()) {
        let _ = fs::remove_dir_all(dir.join(old));
    }
    Ok(true)
}

/// Unmount what `prepare` mounted and remove the pod's volume directories.
pub fn teardown(pod_dir: &Path) -> io::Result<()> {
    let dir = volumes_dir(pod_dir);
    if let Ok(entries) = fs::read_dir(&dir) {
        for e in entries.flatten() {
            let p = e.path();
            if nix::sys::statfs::statfs(&p)
                .map(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
                .unwrap_or(false)
            {
                tracing::debug!(dir = %p.display(), "umount tmpfs");
                let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
    match fs::remove_dir_all(pod_dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The bind mounts of a container's volumeMounts (with subPath and
/// subPathExpr, expanded from the container's environment).
pub fn container_mounts(
    mounts: &[VolumeMount],
    volumes: &HashMap<String, Prepared>,
    env: &[(String, String)],
) -> Result<Vec<Mount>, String> {
    let vars: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut out = Vec::new();
    for m in mounts {
        let v = volumes.get(&m.name).ok_or_else(|| format!("volumeMount {:?}: no volume of that name", m.name))?;
        let sub = match (&m.sub_path, &m.sub_path_expr) {
            (Some(s), _) if !s.is_empty() => Some(s.clone()),
            (_, Some(e)) if !e.is_empty() => Some(expand(e, &|n| vars.get(n).map(|v| v.to_string()))),
            _ => None,
        };
        let host_path = match sub {
            None => v.host_path.clone(),
            Some(sub) => {
                let rel = checked_relative(&sub).map_err(|_| {
                    format!("volumeMount {:?}: subPath {sub:?} must be a relative path without '..'", m.name)
                })?;
                let p = v.host_path.join(rel);
                if !v.read_only && fs::symlink_metadata(&p).is_err() {
                    fs::create_dir_all(&p).map_err(|e| format!("creating subPath {}: {e}", p.display()))?;
                }
                let real = fs::canonicalize(&p).map_err(|e| format!("subPath {}: {e}", p.display()))?;
                let base =
                    fs::canonicalize(&v.host_path).map_err(|e| format!("volume {}: {e}", v.host_path.display()))?;
                if !real.starts_with(&base) {
                    return Err(format!("volumeMount {:?}: subPath {sub:?} points outside the volume", m.name));
                }
                real
            }
        };
        out.push(Mount {
            host_path,
            container_path: m.mount_path.clone(),
            read_only: m.read_only.unwrap_or(false) || v.read_only,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::env::tests::{obj, MemObjects};
    use super::*;

    #[test]
    fn atomic_writer_swaps_data_and_prunes() {
        let dir = tempfile::Builder::new().prefix("skiff-test-vol").tempdir().unwrap();
        let d = dir.path().join("cfg");
        let mut p = Payload::new();
        p.insert("a".into(), (b"1".to_vec(), 0o644));
        p.insert("sub/b".into(), (b"2".to_vec(), 0o600));
        assert!(write_atomic(&d, &p).unwrap());
        assert_eq!(fs::read_to_string(d.join("a")).unwrap(), "1");
        assert_eq!(fs::read_to_string(d.join("sub/b")).unwrap(), "2");
        assert!(fs::symlink_metadata(d.join("a")).unwrap().file_type().is_symlink());
        assert_eq!(fs::metadata(d.join("sub/b")).unwrap().permissions().mode() & 0o777, 0o600);
        // the same payload again changes nothing
        assert!(!write_atomic(&d, &p).unwrap());
        // an update replaces a value and drops a key, leaving one data dir
        p.remove("sub/b");
        p.insert("a".into(), (b"3".to_vec(), 0o644));
        assert!(write_atomic(&d, &p).unwrap());
        assert_eq!(fs::read_to_string(d.join("a")).unwrap(), "3");
        assert!(fs::symlink_metadata(d.join("sub")).is_err());
        let stamps = fs::read_dir(&d).unwrap().filter(|e| {
            let n = e.as_ref().unwrap().file_name().to_string_lossy().into_owned();
            n.starts_with("..") && n != "..data"
        });
        assert_eq!(stamps.count(), 1);
    }

    #[tokio::test]
    async fn volumes_of_every_kind() {
        let dir = tempfile::Builder::new().prefix("skiff-test-vol").tempdir().unwrap();
        let objects = MemObjects::default();
        objects.config_maps.lock().unwrap().push(obj(serde_json::json!({"metadata": {"name": "cfg", "namespace": "ns"}, "data": {"index.html": "hello", "other": "x"}})));
        objects
            .secrets
            .lock()
            .unwrap()
            .push(obj(serde_json::json!({"metadata": {"name": "s", "namespace": "ns"}, "data": {"token": "dG9r"}})));
        let host_dir = dir.path().join("host-made");
        let pod: Pod = obj(
            serde_json::json!({"metadata": {"name": "p", "namespace": "ns", "labels": {"b": "2", "a": "1"}}, "spec": {"containers": [{"name": "c"}],
            "volumes": [
                {"name": "scratch", "emptyDir": {}},
                {"name": "host", "hostPath": {"path": host_dir.to_str().unwrap(), "type": "DirectoryOrCreate"}},
                {"name": "cfg", "configMap": {"name": "cfg", "items": [{"key": "index.html", "path": "www/index.html"}]}},
                {"name": "sec", "secret": {"secretName": "s", "defaultMode": 0o400}},
                {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}, {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                {"name": "all", "projected": {"sources": [{"configMap": {"name": "cfg"}}, {"serviceAccountToken": {"path": "token"}}, {"secret": {"name": "missing", "optional": true}}], "defaultMode": 0o600}},
                {"name": "vault", "projected": {"sources": [{"serviceAccountToken": {"path": "t", "audience": "vault", "expirationSeconds": 700}}]}}
            ]}}),
        );
        let pod_dir = dir.path().join("pod");
        let got = prepare(&pod, &pod_dir, &objects, &PodFacts::default()).await.unwrap();
        assert!(host_dir.is_dir());
        let path = |v: &str, f: &str| got.volumes[v].host_path.join(f);
        assert_eq!(fs::read_to_string(path("cfg", "www/index.html")).unwrap(), "hello");
        assert!(!path("cfg", "other").exists());
        assert_eq!(fs::read_to_string(path("sec", "token")).unwrap(), "tok");
        assert_eq!(fs::metadata(path("sec", "token")).unwrap().permissions().mode() & 0o777, 0o400);
        assert_eq!(fs::read_to_string(path("info", "labels")).unwrap(), "a=\"1\"\nb=\"2\"");
        assert_eq!(fs::read_to_string(path("all", "other")).unwrap(), "x");
        assert!(got.volumes["cfg"].read_only && !got.volumes["scratch"].read_only);
        assert!(got.notes.is_empty(), "{:?}", got.notes);
        // service account tokens: the pod's account (default), the source's audience and lifetime, the volume's mode
        assert_eq!(fs::read_to_string(path("all", "token")).unwrap(), "token:ns/default:p:api:3600");
        assert_eq!(fs::metadata(path("all", "token")).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_to_string(path("vault", "t")).unwrap(), "token:ns/default:p:vault:700");

        // the ConfigMap changes: the file follows
        objects.config_maps.lock().unwrap()[0].data.as_mut().unwrap().insert("index.html".into(), "bye".into());
        prepare(&pod, &pod_dir, &objects, &PodFacts::default()).await.unwrap();
        assert_eq!(fs::read_to_string(path("cfg", "www/index.html")).unwrap(), "bye");

        // mounts: subPath into a projected volume resolves to the real file, read-only
        let env = vec![("SUB".to_string(), "logs".to_string())];
        let mounts: Vec<VolumeMount> = obj(serde_json::json!([
            {"name": "cfg", "mountPath": "/usr/share/www", "subPath": "www"},
            {"name": "scratch", "mountPath": "/var/log/app", "subPathExpr": "$(SUB)"},
            {"name": "host", "mountPath": "/host", "readOnly": true}
        ]));
        let m = container_mounts(&mounts, &got.volumes, &env).unwrap();
        assert!(m[0].read_only && m[0].host_path.join("index.html").is_file());
        assert!(m[1].host_path.ends_with("scratch/logs") && m[1].host_path.is_dir() && !m[1].read_only);
        assert!(m[2].read_only);
        let bad: Vec<VolumeMount> =
            obj(serde_json::json!([{"name": "scratch", "mountPath": "/x", "subPath": "../../etc"}]));
        assert!(container_mounts(&bad, &got.volumes, &env).unwrap_err().contains("without '..'"));

        teardown(&pod_dir).unwrap();
        assert!(!pod_dir.exists());
    }

    #[tokio::test]
    async fn missing_objects_and_bad_host_paths_fail_the_mount() {
        let objects = MemObjects::default();
        let dir = tempfile::Builder::new().prefix("skiff-test-vol").tempdir().unwrap();
        let pod: Pod = obj(serde_json::json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": [],
            "volumes": [{"name": "cfg", "configMap": {"name": "nope"}}]}}));
        let e = prepare(&pod, dir.path(), &objects, &PodFacts::default()).await.unwrap_err();
        assert_eq!(e, "MountVolume.SetUp failed for volume \"cfg\" : configmap \"nope\" not found");
        let pod: Pod = obj(serde_json::json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": [],
            "volumes": [{"name": "h", "hostPath": {"path": "/nonexistent/skiff-test", "type": "Directory"}}]}}));
        let e = prepare(&pod, dir.path(), &objects, &PodFacts::default()).await.unwrap_err();
        assert!(e.ends_with("hostPath type check failed: /nonexistent/skiff-test is not a directory"), "{e}");
    }
}
