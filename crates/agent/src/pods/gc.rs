//! Restart adoption and garbage collection. Nothing here restarts a
//! container: running containers of known pods are left alone (their
//! workers adopt them); containers, network namespaces and directories of
//! pods that no longer exist are removed; of each container's exited runs
//! only the newest is kept (for `lastState` and `kubectl logs --previous`).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use super::Ctx;
use crate::runtime::{
    ContainerInfo, TaskState, LABEL_ATTEMPT, LABEL_CONTAINER, LABEL_NODE, LABEL_POD, LABEL_POD_UID, SANDBOX,
};

/// What to remove.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Container ids to remove.
    pub remove: Vec<String>,
    /// Pods (uid → `namespace/name`) that no longer exist but left things behind.
    pub orphans: BTreeMap<String, String>,
}

pub fn attempt(c: &ContainerInfo) -> u32 {
    c.labels.get(LABEL_ATTEMPT).and_then(|a| a.parse().ok()).unwrap_or(0)
}

fn exited(c: &ContainerInfo) -> bool {
    matches!(c.state, TaskState::Exited { .. })
}

/// Decide what to remove, given this node's containers and the pods that exist.
pub fn plan(containers: &[ContainerInfo], pods: &HashSet<String>) -> Plan {
    let mut out = Plan::default();
    let mut groups: BTreeMap<(String, String), Vec<&ContainerInfo>> = BTreeMap::new();
    for c in containers {
        let uid = c.labels.get(LABEL_POD_UID).cloned().unwrap_or_default();
        if !pods.contains(&uid) {
            out.remove.push(c.id.clone());
            out.orphans.insert(uid, c.labels.get(LABEL_POD).cloned().unwrap_or_default());
            continue;
        }
        let name = c.labels.get(LABEL_CONTAINER).cloned().unwrap_or_default();
        groups.entry((uid, name)).or_default().push(c);
    }
    for ((_, name), mut runs) in groups {
        runs.sort_by_key(|c| std::cmp::Reverse(attempt(c)));
        let mut kept_exited = runs.first().is_some_and(|c| exited(c)) || name == SANDBOX;
        for c in runs.iter().skip(1) {
            if !exited(c) {
                continue;
            }
            if kept_exited {
                out.remove.push(c.id.clone());
            } else {
                kept_exited = true;
            }
        }
    }
    out
}

/// Pod uids that own entries of a directory (`<uid>` or `<ns>_<name>_<uid>`).
fn dir_uid(name: &str) -> &str {
    name.rsplit('_').next().unwrap_or(name)
}

/// Collect garbage: run once the pod list is known, then every minute.
pub async fn collect(ctx: &Ctx, pods: &HashSet<String>) {
    let labels: BTreeMap<String, String> =
        [(LABEL_NODE.to_string(), ctx.config.node_name.clone())].into_iter().collect();
    let containers = match ctx.runtime.list(&labels).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "garbage collection: listing containers failed");
            return;
        }
    };
    let plan = plan(&containers, pods);
    for id in &plan.remove {
        tracing::debug!(id, "garbage collection: removing container");
        if let Err(e) = ctx.runtime.remove(id).await {
            tracing::warn!(id, error = %e, "garbage collection: removing a container failed");
        }
        if let Some(c) = containers.iter().find(|c| &c.id == id) {
            remove_log(ctx, c);
        }
    }
    for (uid, pod) in &plan.orphans {
        tracing::info!(uid, pod, "removing what a deleted pod left behind");
        if let Some((ns, name)) = pod.split_once('/') {
            let netns = ctx.config.netns_dir().join(uid);
            let r = skiff_net::PodRef { namespace: ns.into(), name: name.into(), uid: uid.clone() };
            if let Err(e) = ctx.network.teardown(&r, &netns).await {
                tracing::warn!(error = %e, "garbage collection: tearing down the pod network failed");
            }
        }
    }
    // pod cgroups, network namespaces and pod directories of pods that are gone
    if let Some(root) = ctx.config.pod_cgroup_root.clone() {
        let pods = pods.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for path in super::cgroups::orphans(&root, &pods) {
                tracing::info!(cgroup = %path, "removing the cgroup of a deleted pod");
                if let Err(e) = super::cgroups::remove(&path) {
                    tracing::warn!(error = %e, "garbage collection: removing a pod cgroup failed");
                }
            }
        })
        .await;
    }
    for entry in std::fs::read_dir(ctx.config.netns_dir()).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !pods.contains(&name) {
            let path = entry.path();
            tracing::info!(netns = %path.display(), "removing the network namespace of a deleted pod");
            let _ = tokio::task::spawn_blocking(move || skiff_net::netns::remove(&path)).await;
        }
    }
    for entry in std::fs::read_dir(ctx.config.pods_dir()).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !pods.contains(dir_uid(&name)) {
            let path = entry.path();
            tracing::info!(dir = %path.display(), "removing the files of a deleted pod");
            if let Err(e) = super::volumes::teardown(&path) {
                tracing::warn!(dir = %path.display(), error = %e, "garbage collection: removing a pod directory failed");
            }
        }
    }
}

fn remove_log(ctx: &Ctx, c: &ContainerInfo) {
    let (Some(pod), Some(uid), Some(name)) =
        (c.labels.get(LABEL_POD), c.labels.get(LABEL_POD_UID), c.labels.get(LABEL_CONTAINER))
    else {
        return;
    };
    let Some((ns, pod)) = pod.split_once('/') else { return };
    let dir = crate::logs::pod_log_dir(&ctx.config.pods_dir(), ns, pod, uid);
    let path = crate::logs::container_log_path(&dir, name, attempt(c));
    let _ = std::fs::remove_file(&path);
    let mut rotated = path.into_os_string();
    rotated.push(".1");
    let _ = std::fs::remove_file(Path::new(&rotated));
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn c(id: &str, uid: &str, name: &str, attempt: u32, running: bool) -> ContainerInfo {
        let labels = [(LABEL_NODE, "n1"), (LABEL_POD_UID, uid), (LABEL_POD, "default/p"), (LABEL_CONTAINER, name)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain([(LABEL_ATTEMPT.to_string(), attempt.to_string())])
            .collect();
        ContainerInfo {
            id: id.into(),
            image: "busybox".into(),
            labels,
            created_at: Utc::now(),
            state: if running {
                TaskState::Running { pid: 1, started_at: Utc::now() }
            } else {
                TaskState::Exited { exit_code: 1, started_at: None, finished_at: Utc::now(), oom_killed: false }
            },
        }
    }

    #[test]
    fn running_containers_of_live_pods_are_never_touched() {
        let all = vec![c("sb", "u1", SANDBOX, 0, true), c("a0", "u1", "app", 0, true)];
        let pods: HashSet<String> = ["u1".to_string()].into();
        assert_eq!(plan(&all, &pods), Plan::default());
    }

    #[test]
    fn keeps_the_newest_exited_run_per_container() {
        let all = vec![
            c("a3", "u1", "app", 3, true),
            c("a2", "u1", "app", 2, false),
            c("a1", "u1", "app", 1, false),
            c("a0", "u1", "app", 0, false),
            c("j1", "u1", "job", 1, false),
            c("j0", "u1", "job", 0, false),
            c("sb1", "u1", SANDBOX, 1, true),
            c("sb0", "u1", SANDBOX, 0, false),
        ];
        let pods: HashSet<String> = ["u1".to_string()].into();
        let mut p = plan(&all, &pods);
        p.remove.sort();
        // app: a3 runs, a2 is lastState; job: j1 is the current (exited) run; old sandboxes go
        assert_eq!(p.remove, vec!["a0", "a1", "j0", "sb0"]);
        assert!(p.orphans.is_empty());
    }

    #[test]
    fn pods_that_are_gone_lose_everything() {
        let all =
            vec![c("sb", "gone", SANDBOX, 0, true), c("a0", "gone", "app", 0, true), c("b0", "u1", "app", 0, true)];
        let pods: HashSet<String> = ["u1".to_string()].into();
        let p = plan(&all, &pods);
        assert_eq!(p.remove, vec!["sb", "a0"]);
        assert_eq!(p.orphans.get("gone").map(String::as_str), Some("default/p"));
        assert_eq!(dir_uid("default_web_1234-5678"), "1234-5678");
        assert_eq!(dir_uid("1234-5678"), "1234-5678");
    }
}
