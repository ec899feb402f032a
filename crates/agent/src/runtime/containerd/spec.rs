//! The OCI runtime spec of a container, built as JSON on the lines of
//! containerd's default Linux spec (the mounts, capabilities, masked and
//! read-only paths that `ctr run` and the CRI plugin give; no rlimits, like
//! the CRI plugin: containers inherit containerd's),
//! then the container's own settings.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::runtime::{ContainerSpec, Security};

/// Annotation in the spec: where the container's log goes.
pub const ANNOTATION_LOG_PATH: &str = "io.skiff.log-path";
/// Annotation on containers whose stdin is kept open for `kubectl attach`
/// (`stdin: true`): a FIFO beside the log file (`<n>.stdin`) feeds it.
pub const ANNOTATION_STDIN: &str = "io.skiff.stdin";

/// `PATH` for images that set none (as containerd does).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// containerd's default capabilities.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability Linux defines (for privileged containers).
pub const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// The uid, gid and supplementary gids a container runs as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// What the spec needs besides the [`ContainerSpec`].
#[derive(Debug, Clone)]
pub struct SpecContext<'a> {
    pub user: User,
    /// The image's working directory, used when the spec names none.
    pub image_working_dir: &'a str,
    /// The containerd namespace (the default cgroup is `/<namespace>/<id>`).
    pub namespace: &'a str,
}

/// `CAP_NET_ADMIN` from `NET_ADMIN`, `net_admin` or `CAP_NET_ADMIN`.
pub fn capability_name(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

/// The capabilities a container gets: privileged gets all; otherwise the
/// defaults, minus drops (`ALL` drops every one), plus adds (`ALL` adds every one).
pub fn capabilities(security: &Security) -> Vec<String> {
    if security.privileged {
        return ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    }
    let drops: Vec<String> = security.drop_capabilities.iter().map(|c| capability_name(c)).collect();
    let adds: Vec<String> = security.add_capabilities.iter().map(|c| capability_name(c)).collect();
    let mut caps: Vec<String> = if drops.iter().any(|c| c == "CAP_ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).filter(|c| !drops.contains(c)).collect()
    };
    if adds.iter().any(|c| c == "CAP_ALL") {
        return ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    }
    for add in adds {
        if !caps.contains(&add) {
            caps.push(add);
        }
    }
    caps
}

/// The cgroup path runc puts the container in: `<cgroup_parent>/<id>`, or
/// containerd's default `/<namespace>/<id>`.
pub fn cgroups_path(spec: &ContainerSpec, namespace: &str) -> String {
    let parent = spec.cgroup_parent.trim_end_matches('/');
    if parent.is_empty() {
        format!("/{namespace}/{}", spec.id)
    } else if parent.starts_with('/') {
        format!("{parent}/{}", spec.id)
    } else {
        format!("/{parent}/{}", spec.id)
    }
}

fn default_mounts(privileged: bool) -> Vec<Value> {
    let ro = if privileged { "rw" } else { "ro" };
    vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", ro]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", ro]}),
    ]
}

/// The OCI runtime spec (JSON) for `spec`.
pub fn runtime_spec(spec: &ContainerSpec, ctx: &SpecContext<'_>) -> Result<Value, String> {
    if spec.args.is_empty() {
        return Err("no command: the image has no entrypoint or cmd and the container sets no command".to_string());
    }
    let security = &spec.security;
    let privileged = security.privileged;

    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    let cwd = [spec.working_dir.as_str(), ctx.image_working_dir].into_iter().find(|d| !d.is_empty()).unwrap_or("/");
    if !cwd.starts_with('/') {
        return Err(format!("working directory {cwd:?} is not an absolute path"));
    }

    let caps = capabilities(security);
    let process = json!({
        "terminal": spec.tty,
        "user": {
            "uid": ctx.user.uid,
            "gid": ctx.user.gid,
            "additionalGids": ctx.user.additional_gids,
        },
        "args": spec.args,
        "env": env,
        "cwd": cwd,
        "capabilities": {
            "bounding": caps,
            "effective": caps,
            "permitted": caps,
        },
        "noNewPrivileges": security.no_new_privileges && !privileged,
    });

    // Mounts: the defaults, unless the container mounts something at the same place.
    let mut mounts: Vec<Value> = default_mounts(privileged)
        .into_iter()
        .filter(|m| !spec.mounts.iter().any(|own| m["destination"] == own.container_path.as_str()))
        .collect();
    for m in &spec.mounts {
        if !m.container_path.starts_with('/') {
            return Err(format!("mount destination {:?} is not an absolute path", m.container_path));
        }
        let mode = if m.read_only { "ro" } else { "rw" };
        mounts.push(json!({
            "destination": m.container_path,
            "type": "bind",
            "source": m.host_path,
            "options": ["rbind", "rprivate", mode],
        }));
    }

    let ns = &spec.namespaces;
    let mut namespaces = Vec::new();
    if !ns.host_pid {
        namespaces.push(json!({"type": "pid"}));
    }
    if let Some(path) = &ns.network {
        namespaces.push(json!({"type": "network", "path": path}));
    }
    match (&ns.ipc, ns.host_ipc) {
        (Some(path), _) => namespaces.push(json!({"type": "ipc", "path": path})),
        (None, true) => {}
        (None, false) => namespaces.push(json!({"type": "ipc"})),
    }
    match &ns.uts {
        Some(path) => namespaces.push(json!({"type": "uts", "path": path})),
        None => namespaces.push(json!({"type": "uts"})),
    }
    namespaces.push(json!({"type": "mount"}));

    let mut resources = json!({
        "devices": [{"allow": privileged, "access": "rwm"}],
    });
    let r = &spec.resources;
    let mut cpu = serde_json::Map::new();
    if let Some(shares) = r.cpu_shares {
        cpu.insert("shares".to_string(), json!(shares));
    }
    if let Some(quota) = r.cpu_quota {
        cpu.insert("quota".to_string(), json!(quota));
    }
    if let Some(period) = r.cpu_period {
        cpu.insert("period".to_string(), json!(period));
    }
    if !cpu.is_empty() {
        resources["cpu"] = Value::Object(cpu);
    }
    if let Some(limit) = r.memory_limit {
        resources["memory"] = json!({"limit": limit});
    }

    let mut linux = json!({
        "namespaces": namespaces,
        "resources": resources,
        "cgroupsPath": cgroups_path(spec, ctx.namespace),
    });
    if !privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
    }

    let mut annotations = serde_json::Map::new();
    if !spec.log_path.as_os_str().is_empty() {
        annotations.insert(ANNOTATION_LOG_PATH.to_string(), json!(spec.log_path));
    }
    if spec.stdin {
        annotations.insert(ANNOTATION_STDIN.to_string(), json!("true"));
    }
    let mut out = json!({
        "ociVersion": "1.0.2-dev",
        "process": process,
        "root": {"path": "rootfs", "readonly": security.read_only_root},
        "mounts": mounts,
        "linux": linux,
        "annotations": annotations,
    });
    // The hostname can only be set in a UTS namespace of the container's own.
    if ns.uts.is_none() && !spec.hostname.is_empty() {
        out["hostname"] = json!(spec.hostname);
    }
    Ok(out)
}

/// The directories of a snapshot's mounts that hold its files, top first
/// (overlay: upperdir then lowerdirs; bind: the source).
pub fn rootfs_dirs(mounts: &[containerd_client::types::Mount]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for m in mounts {
        if m.r#type == "bind" || m.r#type == "rbind" {
            dirs.push(PathBuf::from(&m.source));
        } else if m.r#type == "overlay" {
            if let Some(upper) = m.options.iter().find_map(|o| o.strip_prefix("upperdir=")) {
                dirs.push(PathBuf::from(upper));
            }
            if let Some(lower) = m.options.iter().find_map(|o| o.strip_prefix("lowerdir=")) {
                dirs.extend(lower.split(':').map(PathBuf::from));
            }
        }
    }
    dirs
}

/// A regular file of the image (`etc/passwd`), read from the topmost layer
/// directory that has it. Symlinks are not followed (they would resolve on the host).
pub fn read_image_file(dirs: &[PathBuf], relative: &str) -> Option<String> {
    for dir in dirs {
        let path = dir.join(relative);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => return std::fs::read_to_string(&path).ok(),
            // Anything else (a whiteout, a symlink, a directory) hides lower layers.
            Ok(_) => return None,
            Err(_) => {}
        }
    }
    None
}

/// Resolves the user a container runs as: `runAsUser`/`runAsGroup` first,
/// then the image's `User` (`uid`, `uid:gid`, `name`, `name:group`), names
/// looked up in the image's /etc/passwd and /etc/group (`read` reads an
/// image file); supplementary groups are the image's groups that list the
/// user plus the pod's supplemental groups.
pub fn resolve_user(
    security: &Security,
    image_user: &str,
    read: &dyn Fn(&str) -> Option<String>,
) -> Result<User, String> {
    let (user_part, group_part) = match image_user.split_once(':') {
        Some((u, g)) => (u.trim(), Some(g.trim())),
        None => (image_user.trim(), None),
    };
    let passwd = read("etc/passwd");
    let passwd_entries: Vec<(String, u32, u32)> = passwd
        .as_deref()
        .unwrap_or("")
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some((f.first()?.to_string(), f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
        })
        .collect();

    let uid = match security.run_as_user {
        Some(uid) => uid,
        None if user_part.is_empty() => 0,
        None => match user_part.parse::<u32>() {
            Ok(uid) => uid,
            Err(_) => {
                let Some((_, uid, _)) = passwd_entries.iter().find(|(name, _, _)| name == user_part) else {
                    return Err(if passwd.is_none() {
                        format!("image user {user_part:?} cannot be resolved: the image has no /etc/passwd")
                    } else {
                        format!("image user {user_part:?} not found in the image's /etc/passwd")
                    });
                };
                *uid
            }
        },
    };
    let entry = passwd_entries.iter().find(|(_, id, _)| *id == uid);

    let group = read("etc/group");
    let group_entries: Vec<(String, u32, Vec<String>)> = group
        .as_deref()
        .unwrap_or("")
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let members = f
                .get(3)
                .map_or_else(Vec::new, |m| m.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect());
            Some((f.first()?.to_string(), f.get(2)?.parse().ok()?, members))
        })
        .collect();

    let gid = match (security.run_as_group, group_part) {
        (Some(gid), _) => gid,
        (None, Some(g)) if !g.is_empty() => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let Some((_, gid, _)) = group_entries.iter().find(|(name, _, _)| name == g) else {
                    return Err(format!("image group {g:?} not found in the image's /etc/group"));
                };
                *gid
            }
        },
        _ => entry.map_or(0, |(_, _, gid)| *gid),
    };

    let mut additional_gids = Vec::new();
    if let Some((name, _, _)) = entry {
        for (_, gid, members) in &group_entries {
            if members.iter().any(|m| m == name) {
                additional_gids.push(*gid);
            }
        }
    }
    additional_gids.extend(security.supplemental_groups.iter().copied());
    additional_gids.retain(|g| *g != gid);
    additional_gids.sort_unstable();
    additional_gids.dedup();
    Ok(User { uid, gid, additional_gids })
}

/// Reads a file of the image rooted at one of `dirs`.
pub fn image_file_reader(dirs: Vec<PathBuf>) -> impl Fn(&str) -> Option<String> {
    move |relative: &str| read_image_file(&dirs, relative)
}

/// The cgroup v1 memory controller directory or cgroup v2 directory of a
/// cgroup path, and whether it reports an OOM kill.
pub fn oom_killed(cgroups_path: &str) -> bool {
    let relative = cgroups_path.trim_start_matches('/');
    let v1 = Path::new("/sys/fs/cgroup/memory").join(relative).join("memory.oom_control");
    let v2 = Path::new("/sys/fs/cgroup").join(relative).join("memory.events");
    [v1, v2].iter().any(|file| {
        std::fs::read_to_string(file).is_ok_and(|text| {
            text.lines().any(|line| {
                line.strip_prefix("oom_kill ").and_then(|n| n.trim().parse::<u64>().ok()).is_some_and(|n| n > 0)
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Mount, Namespaces, Resources};

    fn ctx() -> SpecContext<'static> {
        SpecContext {
            user: User { uid: 0, gid: 0, additional_gids: vec![] },
            image_working_dir: "/",
            namespace: "skiff",
        }
    }

    fn base() -> ContainerSpec {
        ContainerSpec {
            id: "c1".to_string(),
            args: vec!["sh".to_string()],
            hostname: "web-0".to_string(),
            log_path: PathBuf::from("/var/log/pods/x/c/0.log"),
            ..Default::default()
        }
    }

    #[test]
    fn sandbox_gets_new_namespaces_and_hostname() {
        let spec = ContainerSpec {
            namespaces: Namespaces { network: Some(PathBuf::from("/run/netns/p")), ..Default::default() },
            ..base()
        };
        let s = runtime_spec(&spec, &ctx()).unwrap();
        let types: Vec<&str> =
            s["linux"]["namespaces"].as_array().unwrap().iter().map(|n| n["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["pid", "network", "ipc", "uts", "mount"]);
        assert_eq!(s["linux"]["namespaces"][1]["path"], "/run/netns/p");
        assert_eq!(s["hostname"], "web-0");
        assert_eq!(s["linux"]["cgroupsPath"], "/skiff/c1");
        assert_eq!(s["annotations"][ANNOTATION_LOG_PATH], "/var/log/pods/x/c/0.log");
        assert_eq!(s["process"]["env"][0], DEFAULT_PATH);
        assert!(s["linux"]["maskedPaths"].as_array().unwrap().iter().any(|p| p == "/proc/kcore"));
    }

    #[test]
    fn app_container_joins_the_sandbox() {
        let spec = ContainerSpec {
            namespaces: Namespaces {
                network: Some(PathBuf::from("/proc/10/ns/net")),
                ipc: Some(PathBuf::from("/proc/10/ns/ipc")),
                uts: Some(PathBuf::from("/proc/10/ns/uts")),
                host_pid: true,
                host_ipc: false,
            },
            cgroup_parent: "/skiff/node1/uid1".to_string(),
            ..base()
        };
        let s = runtime_spec(&spec, &ctx()).unwrap();
        let ns = s["linux"]["namespaces"].as_array().unwrap();
        assert!(!ns.iter().any(|n| n["type"] == "pid"));
        assert!(ns.iter().any(|n| n["type"] == "uts" && n["path"] == "/proc/10/ns/uts"));
        assert!(s.get("hostname").is_none());
        assert_eq!(s["linux"]["cgroupsPath"], "/skiff/node1/uid1/c1");
    }

    #[test]
    fn host_network_has_no_network_namespace() {
        let s = runtime_spec(&base(), &ctx()).unwrap();
        assert!(!s["linux"]["namespaces"].as_array().unwrap().iter().any(|n| n["type"] == "network"));
    }

    #[test]
    fn mounts_resources_and_security() {
        let spec = ContainerSpec {
            mounts: vec![
                Mount { host_path: PathBuf::from("/h/hosts"), container_path: "/etc/hosts".into(), read_only: true },
                Mount { host_path: PathBuf::from("/h/shm"), container_path: "/dev/shm".into(), read_only: false },
            ],
            resources: Resources {
                cpu_shares: Some(512),
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                memory_limit: Some(64 << 20),
            },
            security: Security {
                add_capabilities: vec!["NET_ADMIN".into()],
                drop_capabilities: vec!["chown".into()],
                read_only_root: true,
                no_new_privileges: true,
                ..Default::default()
            },
            ..base()
        };
        let s = runtime_spec(&spec, &ctx()).unwrap();
        let mounts = s["mounts"].as_array().unwrap();
        assert_eq!(mounts.iter().filter(|m| m["destination"] == "/dev/shm").count(), 1);
        let hosts = mounts.iter().find(|m| m["destination"] == "/etc/hosts").unwrap();
        assert_eq!(hosts["options"], json!(["rbind", "rprivate", "ro"]));
        assert_eq!(s["linux"]["resources"]["cpu"], json!({"shares": 512, "quota": 50000, "period": 100000}));
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 64 << 20);
        let caps = s["process"]["capabilities"]["bounding"].as_array().unwrap();
        assert!(caps.contains(&json!("CAP_NET_ADMIN")));
        assert!(!caps.contains(&json!("CAP_CHOWN")));
        assert_eq!(s["root"]["readonly"], true);
        assert_eq!(s["process"]["noNewPrivileges"], true);
    }

    #[test]
    fn privileged_gets_everything() {
        let spec = ContainerSpec {
            security: Security { privileged: true, no_new_privileges: true, ..Default::default() },
            ..base()
        };
        let s = runtime_spec(&spec, &ctx()).unwrap();
        assert_eq!(s["process"]["capabilities"]["bounding"].as_array().unwrap().len(), ALL_CAPABILITIES.len());
        assert!(s["linux"].get("maskedPaths").is_none());
        assert_eq!(s["linux"]["resources"]["devices"][0]["allow"], true);
        assert_eq!(s["process"]["noNewPrivileges"], false);
        let sys = s["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == "/sys").unwrap().clone();
        assert!(sys["options"].as_array().unwrap().contains(&json!("rw")));
    }

    #[test]
    fn drop_all_then_add() {
        let security = Security {
            drop_capabilities: vec!["ALL".into()],
            add_capabilities: vec!["NET_BIND_SERVICE".into()],
            ..Default::default()
        };
        assert_eq!(capabilities(&security), vec!["CAP_NET_BIND_SERVICE".to_string()]);
    }

    #[test]
    fn no_command_is_an_error() {
        let spec = ContainerSpec { args: vec![], ..base() };
        assert!(runtime_spec(&spec, &ctx()).unwrap_err().contains("no command"));
    }

    #[test]
    fn users_resolve_from_the_image() {
        let files = |name: &str| match name {
            "etc/passwd" => Some("root:x:0:0:root:/root:/bin/sh\nwww:x:33:34::/var/www:/bin/false\n".to_string()),
            "etc/group" => Some("root:x:0:\nwww:x:34:\nlogs:x:50:www,other\n".to_string()),
            _ => None,
        };
        let none = Security::default();
        assert_eq!(resolve_user(&none, "", &files).unwrap(), User { uid: 0, gid: 0, additional_gids: vec![] });
        assert_eq!(resolve_user(&none, "www", &files).unwrap(), User { uid: 33, gid: 34, additional_gids: vec![50] });
        assert_eq!(resolve_user(&none, "33", &files).unwrap(), User { uid: 33, gid: 34, additional_gids: vec![50] });
        assert_eq!(
            resolve_user(&none, "1000:logs", &files).unwrap(),
            User { uid: 1000, gid: 50, additional_gids: vec![] }
        );
        let explicit = Security {
            run_as_user: Some(7),
            run_as_group: Some(8),
            supplemental_groups: vec![9],
            ..Default::default()
        };
        assert_eq!(resolve_user(&explicit, "www", &files).unwrap(), User { uid: 7, gid: 8, additional_gids: vec![9] });
        assert!(resolve_user(&none, "nobody", &files).unwrap_err().contains("not found"));
        assert!(resolve_user(&none, "nobody", &|_: &str| None).unwrap_err().contains("no /etc/passwd"));
    }

    #[test]
    fn rootfs_dirs_from_overlay_and_bind_mounts() {
        let overlay = containerd_client::types::Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec!["index=off".into(), "workdir=/w".into(), "upperdir=/u".into(), "lowerdir=/l1:/l2".into()],
        };
        assert_eq!(rootfs_dirs(&[overlay]), vec![PathBuf::from("/u"), PathBuf::from("/l1"), PathBuf::from("/l2")]);
    }
}
