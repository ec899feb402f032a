//! The arithmetic of Kubernetes' deployment controller (pkg/controller/
//! deployment/util): revisions, pod-template-hash, surge and unavailability,
//! replica counts, conditions, and the annotations kept on ReplicaSets.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::time::{now, now_time};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const HASH_LABEL: &str = "pod-template-hash";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const MIN_AVAILABLE_REASON: &str = "MinimumReplicasAvailable";
pub const MIN_UNAVAILABLE_REASON: &str = "MinimumReplicasUnavailable";
pub const NEW_RS_REASON: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS_REASON: &str = "FoundNewReplicaSet";
pub const RS_UPDATED_REASON: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE_REASON: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT_REASON: &str = "ProgressDeadlineExceeded";
pub const PAUSED_REASON: &str = "DeploymentPaused";
pub const RESUMED_REASON: &str = "DeploymentResumed";
pub const FAILED_RS_CREATE_REASON: &str = "ReplicaSetCreateError";

/// The alphabet of apimachinery's rand.SafeEncodeString (no vowels, no
/// confusable characters).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

pub fn safe_encode(s: &str) -> String {
    s.bytes().map(|b| ALPHANUMS[(b as usize) % ALPHANUMS.len()] as char).collect()
}

pub fn fnv32a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= *b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// controller.ComputeHash: FNV-32a of the template (here its canonical
/// JSON: k8s-openapi's fixed field order and sorted maps), then the
/// collision count as 8 little-endian bytes, printed in decimal and encoded
/// with SafeEncodeString.
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut data = serde_json::to_vec(template).unwrap_or_default();
    if let Some(c) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&(c as u32).to_le_bytes());
        data.extend_from_slice(&bytes);
    }
    safe_encode(&fnv32a(&data).to_string())
}

/// Templates equal apart from the pod-template-hash label.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(m) = t.metadata.as_mut() {
            if let Some(l) = m.labels.as_mut() {
                l.remove(HASH_LABEL);
                if l.is_empty() {
                    m.labels = None;
                }
            }
            if m.annotations.as_ref().is_some_and(|a| a.is_empty()) {
                m.annotations = None;
            }
        }
        serde_json::to_value(&t).unwrap_or_default()
    };
    strip(a) == strip(b)
}

pub fn revision_of(annotations: Option<&BTreeMap<String, String>>) -> i64 {
    annotations.and_then(|a| a.get(REVISION)).and_then(|r| r.parse().ok()).unwrap_or(0)
}

pub fn revision(rs: &ReplicaSet) -> i64 {
    revision_of(rs.metadata.annotations.as_ref())
}

pub fn max_revision(rss: &[ReplicaSet]) -> i64 {
    rss.iter().map(revision).max().unwrap_or(0)
}

pub fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

pub fn is_rolling(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.type_.as_deref()).unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

/// intstr.GetScaledValueFromIntOrPercent.
pub fn scaled_value(v: Option<&IntOrString>, total: i32, round_up: bool, default: &str) -> i32 {
    let s = match v {
        Some(IntOrString::Int(i)) => return *i,
        Some(IntOrString::String(s)) => s.clone(),
        None => default.to_string(),
    };
    match s.strip_suffix('%').and_then(|p| p.trim().parse::<f64>().ok()) {
        Some(p) => {
            let x = p * total as f64 / 100.0;
            (if round_up { x.ceil() } else { x.floor() }) as i32
        }
        None => s.trim().parse().unwrap_or(0),
    }
}

/// (maxSurge, maxUnavailable) resolved against the replica count; both zero
/// becomes maxUnavailable 1, as in Kubernetes.
pub fn resolve_fenceposts(d: &Deployment) -> (i32, i32) {
    let ru = d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.rolling_update.as_ref());
    let desired = replicas(d);
    let surge = scaled_value(ru.and_then(|r| r.max_surge.as_ref()), desired, true, "25%");
    let unavailable = scaled_value(ru.and_then(|r| r.max_unavailable.as_ref()), desired, false, "25%");
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

pub fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling(d) {
        return 0;
    }
    resolve_fenceposts(d).0
}

pub fn max_unavailable(d: &Deployment) -> i32 {
    if !is_rolling(d) || replicas(d) == 0 {
        return 0;
    }
    resolve_fenceposts(d).1.min(replicas(d))
}

pub fn sum_spec_replicas(rss: &[&ReplicaSet]) -> i32 {
    rss.iter().map(|rs| rs_replicas(rs)).sum()
}

pub fn sum_status<F: Fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> i32>(rss: &[&ReplicaSet], f: F) -> i32 {
    rss.iter().filter_map(|rs| rs.status.as_ref()).map(&f).sum()
}

pub fn actual_replicas(rss: &[&ReplicaSet]) -> i32 {
    sum_status(rss, |s| s.replicas)
}

pub fn ready_replicas(rss: &[&ReplicaSet]) -> i32 {
    sum_status(rss, |s| s.ready_replicas.unwrap_or(0))
}

pub fn available_replicas(rss: &[&ReplicaSet]) -> i32 {
    sum_status(rss, |s| s.available_replicas.unwrap_or(0))
}

/// NewRSNewReplicas: how big the new ReplicaSet may be now.
pub fn new_rs_new_replicas(d: &Deployment, all: &[&ReplicaSet], new_rs: &ReplicaSet) -> i32 {
    if !is_rolling(d) {
        return replicas(d);
    }
    let desired = replicas(d);
    let current = sum_spec_replicas(all);
    let max_total = desired + max_surge(d);
    if current >= max_total {
        return rs_replicas(new_rs);
    }
    let up = (max_total - current).min(desired - rs_replicas(new_rs));
    rs_replicas(new_rs) + up
}

pub fn condition<'a>(status: &'a DeploymentStatus, kind: &str) -> Option<&'a DeploymentCondition> {
    status.conditions.as_ref()?.iter().find(|c| c.type_ == kind)
}

pub fn new_condition(kind: &str, status: &str, reason: &str, message: String) -> DeploymentCondition {
    DeploymentCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now_time()),
        last_transition_time: Some(now_time()),
    }
}

/// SetDeploymentCondition: same status and reason is no change; the same
/// status keeps its lastTransitionTime.
pub fn set_condition(status: &mut DeploymentStatus, mut c: DeploymentCondition) {
    let conds = status.conditions.get_or_insert_with(Vec::new);
    if let Some(i) = conds.iter().position(|x| x.type_ == c.type_) {
        if conds[i].status == c.status && conds[i].reason == c.reason {
            return;
        }
        if conds[i].status == c.status {
            c.last_transition_time = conds[i].last_transition_time.clone();
        }
        conds.remove(i);
    }
    conds.push(c);
}

pub fn remove_condition(status: &mut DeploymentStatus, kind: &str) {
    if let Some(c) = status.conditions.as_mut() {
        c.retain(|x| x.type_ != kind);
    }
}

pub fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec.as_ref().and_then(|s| s.progress_deadline_seconds).filter(|s| *s != i32::MAX)
}

pub fn deployment_complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let want = replicas(d);
    s.updated_replicas.unwrap_or(0) == want
        && s.replicas.unwrap_or(0) == want
        && s.available_replicas.unwrap_or(0) == want
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

pub fn deployment_progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0);
    let new_old = new.replicas.unwrap_or(0) - new.updated_replicas.unwrap_or(0);
    new.updated_replicas.unwrap_or(0) > old.updated_replicas.unwrap_or(0)
        || new_old < old_old
        || new.ready_replicas.unwrap_or(0) > old.ready_replicas.unwrap_or(0)
        || new.available_replicas.unwrap_or(0) > old.available_replicas.unwrap_or(0)
}

/// When the Progressing condition's deadline passes (None: no deadline to watch).
pub fn progress_deadline_at(d: &Deployment, s: &DeploymentStatus) -> Option<jiff::Timestamp> {
    let secs = progress_deadline(d)?;
    let c = condition(s, PROGRESSING)?;
    if c.reason.as_deref() == Some(NEW_RS_AVAILABLE_REASON) || c.reason.as_deref() == Some(TIMED_OUT_REASON) {
        return None;
    }
    let from = c.last_update_time.as_ref()?;
    Some(crate::time::add(&from.0, std::time::Duration::from_secs(secs.max(0) as u64)))
}

pub fn deployment_timed_out(d: &Deployment, s: &DeploymentStatus) -> bool {
    if progress_deadline(d).is_none() {
        return false;
    }
    let Some(c) = condition(s, PROGRESSING) else { return false };
    match c.reason.as_deref() {
        Some(NEW_RS_AVAILABLE_REASON) => false,
        Some(TIMED_OUT_REASON) => true,
        _ => progress_deadline_at(d, s).is_some_and(|at| at < now()),
    }
}

fn skip_copy(key: &str) -> bool {
    matches!(key, LAST_APPLIED | REVISION | REVISION_HISTORY | DESIRED_REPLICAS | MAX_REPLICAS | ROLLBACK_TO)
}

/// SetNewReplicaSetAnnotations: copy the deployment's annotations, raise
/// the revision (keeping the old one in revision-history when an old
/// ReplicaSet becomes new again), record desired/max replicas.
pub fn set_new_rs_annotations(d: &Deployment, rs: &mut ReplicaSet, new_revision: i64, exists: bool) -> bool {
    let mut changed = false;
    let ann = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if skip_copy(k) || ann.get(k) == Some(v) {
            continue;
        }
        ann.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = ann.get(REVISION).cloned();
    let old_num: i64 = old.as_deref().and_then(|r| r.parse().ok()).unwrap_or(0);
    if old_num < new_revision {
        ann.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let history = match ann.get(REVISION_HISTORY) {
                Some(h) if !h.is_empty() => format!("{h},{old}"),
                _ => old,
            };
            ann.insert(REVISION_HISTORY.into(), history);
        }
    }
    if !exists && set_replicas_annotations(rs, replicas(d), replicas(d) + max_surge(d)) {
        changed = true;
    }
    changed
}

pub fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    let ann = rs.metadata.annotations.as_ref();
    ann.and_then(|a| a.get(DESIRED_REPLICAS)) != Some(&desired.to_string())
        || ann.and_then(|a| a.get(MAX_REPLICAS)) != Some(&max.to_string())
}

pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    if !replicas_annotations_need_update(rs, desired, max) {
        return false;
    }
    let ann = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    ann.insert(DESIRED_REPLICAS.into(), desired.to_string());
    ann.insert(MAX_REPLICAS.into(), max.to_string());
    true
}

fn annotation_i32(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

pub fn desired_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation_i32(rs, DESIRED_REPLICAS)
}

/// IsSaturated: the new ReplicaSet is at full size and fully available.
pub fn is_saturated(d: &Deployment, rs: Option<&ReplicaSet>) -> bool {
    let Some(rs) = rs else { return false };
    rs_replicas(rs) == replicas(d)
        && desired_replicas_annotation(rs) == Some(replicas(d))
        && rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0) == replicas(d)
}

/// GetReplicaSetProportion: this ReplicaSet's share of `to_add`.
pub fn proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = if replicas(d) == 0 {
        -rs_replicas(rs)
    } else {
        let deployment_replicas = replicas(d) + max_surge(d);
        let annotated = annotation_i32(rs, MAX_REPLICAS)
            .unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0))
            .max(1);
        let size = (rs_replicas(rs) as f64 * deployment_replicas as f64) / annotated as f64;
        size.round() as i32 - rs_replicas(rs)
    };
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};

    fn deploy(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn fenceposts_round_like_kubernetes() {
        let d = deploy(10, IntOrString::String("25%".into()), IntOrString::String("25%".into()));
        assert_eq!((max_surge(&d), max_unavailable(&d)), (3, 2));
        let d = deploy(3, IntOrString::Int(0), IntOrString::Int(0));
        assert_eq!((max_surge(&d), max_unavailable(&d)), (0, 1));
        let d = deploy(2, IntOrString::Int(1), IntOrString::Int(0));
        assert_eq!((max_surge(&d), max_unavailable(&d)), (1, 0));
    }

    #[test]
    fn safe_encoding_and_fnv() {
        assert_eq!(fnv32a(b""), 0x811c_9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c_292c);
        let h = compute_hash(&PodTemplateSpec::default(), None);
        assert!(h.chars().all(|c| ALPHANUMS.contains(&(c as u8))), "{h}");
        assert_ne!(h, compute_hash(&PodTemplateSpec::default(), Some(1)));
        assert_eq!(safe_encode("0123"), "4567");
    }

    #[test]
    fn revision_history_is_kept_when_an_old_replicaset_returns() {
        let d = deploy(2, IntOrString::Int(1), IntOrString::Int(0));
        let mut rs = ReplicaSet::default();
        rs.metadata.annotations = Some([(REVISION.to_string(), "1".to_string())].into());
        assert!(set_new_rs_annotations(&d, &mut rs, 3, true));
        let a = rs.metadata.annotations.unwrap_or_default();
        assert_eq!(a.get(REVISION).map(String::as_str), Some("3"));
        assert_eq!(a.get(REVISION_HISTORY).map(String::as_str), Some("1"));
    }
}
