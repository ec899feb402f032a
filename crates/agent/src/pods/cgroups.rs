//! Pod-level cgroups, as the kubelet's cgroupfs driver lays them out: every
//! container of a pod (and its sandbox) runs under one cgroup per pod,
//! `<root>/kubepods[/burstable|/besteffort]/pod<uid>`, which carries the
//! pod's own limits (pkg/kubelet/cm ResourceConfigForPod): cpu shares from
//! the pod's requests; CFS quota and memory limit from the sum of its
//! limits, set only when every container declares that limit (always for
//! Guaranteed pods); BestEffort pods get the minimum shares. `root` is
//! per node (`/skiff/<node>`), so that several agents on one machine keep
//! apart. Works on cgroup v1 (one hierarchy per controller) and v2.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};

use super::resources::{self, Amount, CPU_PERIOD};
use crate::runtime::Resources;

const CGROUP_FS: &str = "/sys/fs/cgroup";

/// The pod's cgroup path (absolute within the hierarchy).
pub fn pod_path(root: &str, pod: &Pod) -> String {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let qos = match resources::qos_class(pod) {
        "Guaranteed" => "",
        "Burstable" => "/burstable",
        _ => "/besteffort",
    };
    format!("{}/kubepods{qos}/pod{uid}", root.trim_end_matches('/'))
}

/// The sum of an amount over the app containers, or the largest init
/// container's when that is more (the pod's effective request or limit);
/// None when some container does not set it (`every`) or none does.
fn pod_amount(pod: &Pod, get: impl Fn(&Container) -> Option<Amount>, milli: bool, every: bool) -> Option<i64> {
    let spec = pod.spec.as_ref()?;
    let of = |c: &Container| get(c).map(|a| if milli { a.milli() } else { a.value() }).filter(|v| *v > 0);
    let apps: Vec<Option<i64>> = spec.containers.iter().map(of).collect();
    let inits: Vec<Option<i64>> = spec.init_containers.iter().flatten().map(of).collect();
    if every && apps.iter().chain(&inits).any(Option::is_none) {
        return None;
    }
    let sum: i64 = apps.iter().flatten().sum();
    let max_init = inits.iter().flatten().copied().max().unwrap_or(0);
    Some(sum.max(max_init)).filter(|v| *v > 0)
}

/// The pod cgroup's settings.
pub fn pod_resources(pod: &Pod) -> Resources {
    let qos = resources::qos_class(pod);
    if qos == "BestEffort" {
        return Resources { cpu_shares: Some(resources::shares(0)), ..Default::default() };
    }
    let shares = resources::shares(pod_amount(pod, |c| resources::request(c, "cpu"), true, false).unwrap_or(0));
    let quota = pod_amount(pod, |c| resources::limit(c, "cpu"), true, true).map(resources::quota);
    Resources {
        cpu_shares: Some(shares),
        cpu_quota: quota,
        cpu_period: quota.map(|_| CPU_PERIOD),
        memory_limit: pod_amount(pod, |c| resources::limit(c, "memory"), false, true),
    }
}

/// Which cgroup layout the machine has.
fn unified() -> bool {
    Path::new(CGROUP_FS).join("cgroup.controllers").exists()
}

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    std::fs::write(dir.join(file), value)
        .map_err(|e| io::Error::new(e.kind(), format!("writing {value:?} to {}: {e}", dir.join(file).display())))
}

fn under(base: &Path, path: &str) -> PathBuf {
    base.join(path.trim_start_matches('/'))
}

/// cgroup v2's cpu.weight for v1 shares (the conversion runc and the kubelet use).
fn weight(shares: u64) -> u64 {
    1 + (shares.clamp(2, 262_144) - 2) * 9_999 / 262_142
}

/// Create the pod's cgroup with its settings (again: settings are rewritten).
pub fn ensure(path: &str, r: &Resources) -> io::Result<()> {
    let base = Path::new(CGROUP_FS);
    if unified() {
        // each level must hand the controllers down to the next
        let mut dir = base.to_path_buf();
        for part in path.trim_matches('/').split('/') {
            let _ = write(&dir, "cgroup.subtree_control", "+cpu +memory +pids");
            dir.push(part);
            std::fs::create_dir_all(&dir)?;
        }
        let shares = r.cpu_shares.unwrap_or(1024);
        write(&dir, "cpu.weight", &weight(shares).to_string())?;
        let max = match r.cpu_quota {
            Some(q) => format!("{q} {}", r.cpu_period.unwrap_or(CPU_PERIOD)),
            None => format!("max {CPU_PERIOD}"),
        };
        write(&dir, "cpu.max", &max)?;
        write(&dir, "memory.max", &r.memory_limit.map_or("max".to_string(), |m| m.to_string()))?;
        return Ok(());
    }
    let cpu = under(&base.join("cpu"), path);
    std::fs::create_dir_all(&cpu)?;
    write(&cpu, "cpu.shares", &r.cpu_shares.unwrap_or(1024).to_string())?;
    write(&cpu, "cpu.cfs_period_us", &r.cpu_period.unwrap_or(CPU_PERIOD).to_string())?;
    write(&cpu, "cpu.cfs_quota_us", &r.cpu_quota.unwrap_or(-1).to_string())?;
    let memory = under(&base.join("memory"), path);
    std::fs::create_dir_all(&memory)?;
    write(&memory, "memory.limit_in_bytes", &r.memory_limit.map_or("-1".to_string(), |m| m.to_string()))?;
    Ok(())
}

/// Every directory that holds this cgroup: one per v1 hierarchy, or one.
fn dirs(path: &str) -> Vec<PathBuf> {
    let base = Path::new(CGROUP_FS);
    if unified() {
        return vec![under(base, path)];
    }
    let Ok(entries) = std::fs::read_dir(base) else { return vec![] };
    entries
        .flatten()
        // skip the comounted aliases (cpu,cpuacct → cpu and cpuacct symlinks are followed once)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| under(&e.path(), path))
        .filter(|d| d.is_dir())
        .collect()
}

/// Remove the pod's cgroup (its containers are gone by now). A cgroup that
/// still holds processes stays, and the error says so.
pub fn remove(path: &str) -> io::Result<()> {
    let mut first_err = None;
    for dir in dirs(path) {
        // containers' own cgroups that the runtime left
        if let Ok(children) = std::fs::read_dir(&dir) {
            for c in children.flatten().filter(|c| c.file_type().is_ok_and(|t| t.is_dir())) {
                let _ = std::fs::remove_dir(c.path());
            }
        }
        if let Err(e) = std::fs::remove_dir(&dir) {
            if e.kind() != io::ErrorKind::NotFound {
                first_err.get_or_insert(io::Error::new(e.kind(), format!("removing {}: {e}", dir.display())));
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Pod cgroups under `root` whose pod uid is not in `pods`: what a pod
/// deleted while the agent was away left behind.
pub fn orphans(root: &str, pods: &HashSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    let probe = if unified() { PathBuf::from(CGROUP_FS) } else { Path::new(CGROUP_FS).join("memory") };
    for qos in ["", "/burstable", "/besteffort"] {
        let parent = format!("{}/kubepods{qos}", root.trim_end_matches('/'));
        let Ok(entries) = std::fs::read_dir(under(&probe, &parent)) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(uid) = name.strip_prefix("pod") {
                if !pods.contains(uid) {
                    out.push(format!("{parent}/{name}"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(init: Vec<serde_json::Value>, apps: Vec<serde_json::Value>) -> Pod {
        let c = |(i, r): (usize, serde_json::Value)| serde_json::json!({"name": format!("c{i}"), "resources": r});
        serde_json::from_value(serde_json::json!({
            "metadata": {"uid": "u1"},
            "spec": {
                "initContainers": init.into_iter().enumerate().map(c).collect::<Vec<_>>(),
                "containers": apps.into_iter().enumerate().map(c).collect::<Vec<_>>(),
            }
        }))
        .unwrap()
    }

    #[test]
    fn paths_follow_the_qos_class() {
        let g = pod(vec![], vec![serde_json::json!({"limits": {"cpu": "1", "memory": "64Mi"}})]);
        assert_eq!(pod_path("/skiff/n1", &g), "/skiff/n1/kubepods/podu1");
        let b = pod(vec![], vec![serde_json::json!({"requests": {"cpu": "100m"}})]);
        assert_eq!(pod_path("/skiff/n1/", &b), "/skiff/n1/kubepods/burstable/podu1");
        let e = pod(vec![], vec![serde_json::json!({})]);
        assert_eq!(pod_path("/skiff/n1", &e), "/skiff/n1/kubepods/besteffort/podu1");
    }

    #[test]
    fn pod_settings_follow_the_kubelet() {
        // Guaranteed: sums of both containers
        let r = pod_resources(&pod(
            vec![],
            vec![
                serde_json::json!({"limits": {"cpu": "200m", "memory": "32Mi"}}),
                serde_json::json!({"limits": {"cpu": "300m", "memory": "32Mi"}}),
            ],
        ));
        assert_eq!(
            r,
            Resources {
                cpu_shares: Some(512),
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                memory_limit: Some(64 << 20)
            }
        );
        // Burstable with one container unlimited: shares only
        let r = pod_resources(&pod(
            vec![],
            vec![
                serde_json::json!({"requests": {"cpu": "250m"}, "limits": {"cpu": "1", "memory": "32Mi"}}),
                serde_json::json!({"requests": {"memory": "16Mi"}}),
            ],
        ));
        assert_eq!(r, Resources { cpu_shares: Some(256), ..Default::default() });
        // a larger init container sets the pod's figures
        let r = pod_resources(&pod(
            vec![serde_json::json!({"limits": {"cpu": "2", "memory": "1Gi"}})],
            vec![serde_json::json!({"limits": {"cpu": "500m", "memory": "64Mi"}})],
        ));
        assert_eq!((r.cpu_shares, r.cpu_quota, r.memory_limit), (Some(2048), Some(200_000), Some(1 << 30)));
        // BestEffort: the minimum shares
        assert_eq!(
            pod_resources(&pod(vec![], vec![serde_json::json!({})])),
            Resources { cpu_shares: Some(2), ..Default::default() }
        );
    }

    #[test]
    fn shares_become_v2_weights() {
        assert_eq!(weight(2), 1);
        assert_eq!(weight(1024), 39);
        assert_eq!(weight(262_144), 10_000);
    }
}
