//! Pods and pod templates: ValidatePodSpec and what it calls (volumes,
//! containers, ports, env, mounts, resources, probes, scheduling fields),
//! and the rules of a pod update.

use serde_json::Value;

use super::field::{self, Path};
use super::meta::{self, NameRule};
use super::names::{self, PORT_RANGE_MSG};
use super::quantity::{self, Quantity};
use super::{arr, govalue, int_of, net, str_of, FieldError, NULL};

/// What differs between a Pod and a PodSpec embedded in a template.
#[derive(Clone, Copy)]
pub(crate) struct Opts {
    /// opts.ResourceIsPod.
    pub(crate) is_pod: bool,
}

const NEGATIVE: &str = "must be greater than or equal to 0";
const MAX_INT32: i64 = 2147483647;

/// ValidatePodCreate (or the pod part of ValidatePodUpdate when `creating`
/// is false).
pub(crate) fn validate_pod(obj: &Value, creating: bool, out: &mut Vec<FieldError>) {
    meta::object_meta(obj, NameRule::Subdomain, true, out);
    let spec = obj.get("spec").unwrap_or(&NULL);
    let meta_path = Path::root("metadata");
    pod_annotations(obj.pointer("/metadata/annotations"), spec, &meta_path.child("annotations"), out);
    let sp = Path::root("spec");
    pod_spec(spec, &sp, Opts { is_pod: true }, out);
    for list in ["containers", "initContainers"] {
        let lp = sp.child(list);
        for (i, c) in arr(spec, list).iter().enumerate() {
            let image = str_of(c, "image");
            if image.len() != image.trim().len() {
                out.push(field::invalid(
                    &lp.index(i).child("image"),
                    image,
                    "must not have leading or trailing whitespace",
                ));
            }
        }
    }
    if creating {
        if !arr(spec, "ephemeralContainers").is_empty() {
            out.push(field::forbidden(&sp.child("ephemeralContainers"), "cannot be set on create"));
        }
        if !str_of(spec, "nodeName").is_empty() && !arr(spec, "schedulingGates").is_empty() {
            out.push(field::forbidden(
                &sp.child("nodeName"),
                "cannot be set until all schedulingGates have been cleared",
            ));
        }
    }
}

/// ValidatePodTemplateSpec, at `p` (`spec.template`).
pub(crate) fn pod_template(t: &Value, p: &Path, out: &mut Vec<FieldError>) {
    let spec = t.get("spec").unwrap_or(&NULL);
    meta::labels(t.pointer("/metadata/labels"), &p.child("labels"), out);
    let ann_path = p.child("annotations");
    meta::annotations(t.pointer("/metadata/annotations"), &ann_path, out);
    pod_annotations(t.pointer("/metadata/annotations"), spec, &ann_path, out);
    let sp = p.child("spec");
    pod_spec(spec, &sp, Opts { is_pod: false }, out);
    if !arr(spec, "ephemeralContainers").is_empty() {
        out.push(field::forbidden(
            &sp.child("ephemeralContainers"),
            "ephemeral containers not allowed in pod template",
        ));
    }
}

/// ValidatePodSpecificAnnotations: the mirror-pod and deletion-cost keys.
fn pod_annotations(ann: Option<&Value>, spec: &Value, p: &Path, out: &mut Vec<FieldError>) {
    let Some(ann) = ann.and_then(Value::as_object) else { return };
    if let Some(v) = ann.get("kubernetes.io/config.mirror") {
        if str_of(spec, "nodeName").is_empty() {
            out.push(field::invalid(
                &p.key("kubernetes.io/config.mirror"),
                v.as_str().unwrap_or(""),
                "must set spec.nodeName if mirror pod annotation is set",
            ));
        }
    }
    if let Some(v) = ann.get("controller.kubernetes.io/pod-deletion-cost") {
        let v = v.as_str().unwrap_or("");
        if v.parse::<i32>().is_err() {
            out.push(field::invalid(
                &p.key("controller.kubernetes.io/pod-deletion-cost"),
                v,
                "must be a 32bit integer",
            ));
        }
    }
}

/// ValidatePodSpec.
pub(crate) fn pod_spec(spec: &Value, p: &Path, opts: Opts, out: &mut Vec<FieldError>) {
    let grace = int_of(spec, "terminationGracePeriodSeconds");
    if grace.is_none() {
        out.push(field::required(&p.child("terminationGracePeriodSeconds"), ""));
    }
    let restart = str_of(spec, "restartPolicy");
    let vols = volumes(arr(spec, "volumes"), &p.child("volumes"), opts, out);
    containers(spec, &vols, grace, &p.child("containers"), restart, out);
    init_containers(spec, &vols, grace, &p.child("initContainers"), restart, out);
    host_network_deps(spec, p, opts, out);
    one_of(&p.child("restartPolicy"), restart, &["Always", "OnFailure", "Never"], out);
    one_of(
        &p.child("dnsPolicy"),
        str_of(spec, "dnsPolicy"),
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        out,
    );
    meta::labels(spec.get("nodeSelector"), &p.child("nodeSelector"), out);
    pod_security_context(spec, &p.child("securityContext"), out);
    if let Some(a) = spec.get("affinity").filter(|a| !a.is_null()) {
        affinity(a, &p.child("affinity"), out);
    }
    dns_config(spec, &p.child("dnsConfig"), out);
    let rg = p.child("readinessGates");
    for (i, g) in arr(spec, "readinessGates").iter().enumerate() {
        let ct = str_of(g, "conditionType");
        for msg in names::qualified_name_errors(ct) {
            out.push(field::invalid(&rg.index(i).child("conditionType"), ct, &msg));
        }
    }
    scheduling_gates(arr(spec, "schedulingGates"), &p.child("schedulingGates"), out);
    topology_spread(arr(spec, "topologySpreadConstraints"), &p.child("topologySpreadConstraints"), out);
    for (k, rule) in [("serviceAccountName", NameRule::Subdomain), ("nodeName", NameRule::Subdomain)] {
        let v = str_of(spec, k);
        if !v.is_empty() {
            for msg in meta::name_errors(rule, v, false) {
                out.push(field::invalid(&p.child(k), v, &msg));
            }
        }
    }
    if let Some(v) = int_of(spec, "activeDeadlineSeconds") {
        if !(1..=MAX_INT32).contains(&v) {
            out.push(field::invalid(
                &p.child("activeDeadlineSeconds"),
                v,
                "must be between 1 and 2147483647, inclusive",
            ));
        }
    }
    for k in ["hostname", "subdomain"] {
        let v = str_of(spec, k);
        if !v.is_empty() {
            for msg in names::dns1123_label_errors(v) {
                out.push(field::invalid(&p.child(k), v, &msg));
            }
        }
    }
    tolerations(arr(spec, "tolerations"), &p.child("tolerations"), out);
    let ha = p.child("hostAliases");
    for (i, a) in arr(spec, "hostAliases").iter().enumerate() {
        let ap = ha.index(i);
        net::validate_ip(&ap.child("ip"), str_of(a, "ip"), out);
        let hp = ap.child("hostnames");
        for (j, h) in arr(a, "hostnames").iter().enumerate() {
            let h = h.as_str().unwrap_or("");
            for msg in names::dns1123_subdomain_errors(h) {
                out.push(field::invalid(&hp.index(j), h, &msg));
            }
        }
    }
    let pc = str_of(spec, "priorityClassName");
    if !pc.is_empty() {
        for msg in names::dns1123_subdomain_errors(pc) {
            out.push(field::invalid(&p.child("priorityClassName"), pc, &msg));
        }
    }
    if let Some(rc) = spec.get("runtimeClassName").and_then(Value::as_str) {
        for msg in names::dns1123_subdomain_errors(rc) {
            out.push(field::invalid(&p.child("runtimeClassName"), rc, &msg));
        }
    }
    if let Some(pp) = spec.get("preemptionPolicy").and_then(Value::as_str) {
        one_of(&p.child("preemptionPolicy"), pp, &["PreemptLowerPriority", "Never"], out);
    }
    if let Some(os) = spec.get("os").filter(|o| !o.is_null()) {
        let name = str_of(os, "name");
        let op = p.child("os");
        if name.is_empty() {
            out.push(field::required(&op.child("name"), "cannot be empty"));
        } else if !matches!(name, "linux" | "windows") {
            out.push(field::not_supported(&op, name, &["linux", "windows"]));
        }
    }
}

/// Required when empty, else one of `supported`.
fn one_of(p: &Path, v: &str, supported: &[&str], out: &mut Vec<FieldError>) {
    if v.is_empty() {
        out.push(field::required(p, ""));
    } else if !supported.contains(&v) {
        out.push(field::not_supported(p, v, supported));
    }
}

fn nonnegative(p: &Path, v: Option<i64>, out: &mut Vec<FieldError>) {
    if let Some(v) = v.filter(|v| *v < 0) {
        out.push(field::invalid(p, v, NEGATIVE));
    }
}

// ---- volumes ----

/// The volume sources, in the order validateVolumeSource checks them, with
/// the path segment its "more than 1 volume type" error names.
const VOLUME_SOURCES: &[(&str, &str)] = &[
    ("emptyDir", "emptyDir"),
    ("hostPath", "hostPath"),
    ("gitRepo", "gitRepo"),
    ("gcePersistentDisk", "gcePersistentDisk"),
    ("awsElasticBlockStore", "awsElasticBlockStore"),
    ("secret", "secret"),
    ("nfs", "nfs"),
    ("iscsi", "iscsi"),
    ("glusterfs", "glusterfs"),
    ("flocker", "flocker"),
    ("persistentVolumeClaim", "persistentVolumeClaim"),
    ("rbd", "rbd"),
    ("cinder", "cinder"),
    ("cephfs", "cephFS"),
    ("quobyte", "quobyte"),
    ("downwardAPI", "downwarAPI"),
    ("fc", "fc"),
    ("flexVolume", "flexVolume"),
    ("configMap", "configMap"),
    ("azureFile", "azureFile"),
    ("vsphereVolume", "vsphereVolume"),
    ("photonPersistentDisk", "photonPersistentDisk"),
    ("portworxVolume", "portworxVolume"),
    ("azureDisk", "azureDisk"),
    ("storageos", "storageos"),
    ("projected", "projected"),
    ("scaleIO", "scaleIO"),
    ("csi", "csi"),
    ("ephemeral", "ephemeral"),
    ("image", "image"),
];

/// A volume that validated, by name, with its definition.
type Volumes<'a> = Vec<(&'a str, &'a Value)>;

/// ValidateVolumes: returns the volumes that passed, as mounts may only
/// name those.
fn volumes<'a>(list: &'a [Value], p: &Path, opts: Opts, out: &mut Vec<FieldError>) -> Volumes<'a> {
    let mut ok: Volumes<'a> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let ip = p.index(i);
        let before = out.len();
        let name = str_of(v, "name");
        volume_source(v, &ip, opts, out);
        let np = ip.child("name");
        if name.is_empty() {
            out.push(field::required(&np, ""));
        } else {
            for msg in names::dns1123_label_errors(name) {
                out.push(field::invalid(&np, name, &msg));
            }
        }
        if seen.contains(&name) {
            out.push(field::duplicate(&np, name));
        }
        if out.len() == before {
            seen.push(name);
            ok.push((name, v));
        }
    }
    ok
}

fn present<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    v.get(k).filter(|s| !s.is_null())
}

fn volume_source(v: &Value, p: &Path, opts: Opts, out: &mut Vec<FieldError>) {
    let mut n = 0;
    for (key, err_seg) in VOLUME_SOURCES {
        let Some(src) = present(v, key) else { continue };
        if n > 0 {
            out.push(field::forbidden(&p.child(err_seg), "may not specify more than 1 volume type"));
            continue;
        }
        n += 1;
        let sp = p.child(key);
        match *key {
            "emptyDir" => {
                if let Some(q) = src.get("sizeLimit").and_then(quantity::from_json) {
                    if q.is_negative() {
                        out.push(field::forbidden(
                            &sp.child("sizeLimit"),
                            "SizeLimit field must be a valid resource quantity",
                        ));
                    }
                }
            }
            "hostPath" => {
                let path = str_of(src, "path");
                if path.is_empty() {
                    out.push(field::required(&sp.child("path"), ""));
                } else {
                    no_backsteps(path, &sp.child("path"), out);
                    if let Some(t) = src.get("type").and_then(Value::as_str) {
                        const TYPES: &[&str] = &[
                            "",
                            "BlockDevice",
                            "CharDevice",
                            "Directory",
                            "DirectoryOrCreate",
                            "File",
                            "FileOrCreate",
                            "Socket",
                        ];
                        if !TYPES.contains(&t) {
                            out.push(field::not_supported(&sp.child("type"), t, TYPES));
                        }
                    }
                }
            }
            "gitRepo" => {
                if str_of(src, "repository").is_empty() {
                    out.push(field::required(&sp.child("repository"), ""));
                }
                local_descending_path(str_of(src, "directory"), &sp.child("directory"), out);
            }
            "secret" | "configMap" => {
                let name_key = if *key == "secret" { "secretName" } else { "name" };
                if str_of(src, name_key).is_empty() {
                    out.push(field::required(&sp.child(name_key), ""));
                }
                file_mode(src, "defaultMode", &sp, out);
                let items = sp.child("items");
                for (i, kp) in arr(src, "items").iter().enumerate() {
                    key_to_path(kp, &items.index(i), out);
                }
            }
            "persistentVolumeClaim" if str_of(src, "claimName").is_empty() => {
                out.push(field::required(&sp.child("claimName"), ""));
            }
            "nfs" => {
                if str_of(src, "server").is_empty() {
                    out.push(field::required(&sp.child("server"), ""));
                }
                let path = str_of(src, "path");
                if path.is_empty() {
                    out.push(field::required(&sp.child("path"), ""));
                }
                if !path.starts_with('/') {
                    out.push(field::invalid(&sp.child("path"), path, "must be an absolute path"));
                }
            }
            "downwardAPI" => {
                file_mode(src, "defaultMode", &sp, out);
                for f in arr(src, "items") {
                    downward_api_file(f, &sp, out);
                }
            }
            "projected" => {
                file_mode(src, "defaultMode", &sp, out);
                projected_sources(src, &sp, out);
            }
            "csi" => {
                let driver = str_of(src, "driver");
                let dp = sp.child("driver");
                if driver.is_empty() {
                    out.push(field::required(&dp, ""));
                }
                if driver.len() > 63 {
                    out.push(field::too_long(&dp, 63));
                }
                for msg in names::dns1123_subdomain_errors(&driver.to_ascii_lowercase()) {
                    out.push(field::invalid(&dp, driver, &msg));
                }
            }
            "ephemeral" if present(src, "volumeClaimTemplate").is_none() => {
                out.push(field::required(&sp.child("volumeClaimTemplate"), ""));
            }
            "image" => {
                if opts.is_pod && str_of(src, "reference").is_empty() {
                    out.push(field::required(&sp.child("reference"), ""));
                }
                // an absent pullPolicy is defaulted from the reference's tag
                if let Some(pp) = src.get("pullPolicy").and_then(Value::as_str) {
                    pull_policy(pp, &sp.child("pullPolicy"), out);
                }
            }
            _ => {}
        }
    }
    if n == 0 {
        out.push(field::required(p, "must specify a volume type"));
    }
}

const FILE_MODE_MSG: &str = "must be a number between 0 and 0777 (octal), both inclusive";

fn file_mode(src: &Value, key: &str, p: &Path, out: &mut Vec<FieldError>) {
    if let Some(m) = int_of(src, key) {
        if !(0..=0o777).contains(&m) {
            out.push(field::invalid(&p.child(key), m, FILE_MODE_MSG));
        }
    }
}

fn key_to_path(kp: &Value, p: &Path, out: &mut Vec<FieldError>) {
    if str_of(kp, "key").is_empty() {
        out.push(field::required(&p.child("key"), ""));
    }
    let path = str_of(kp, "path");
    if path.is_empty() {
        out.push(field::required(&p.child("path"), ""));
    }
    local_non_reserved_path(path, &p.child("path"), out);
    file_mode(kp, "mode", p, out);
}

fn downward_api_file(f: &Value, p: &Path, out: &mut Vec<FieldError>) {
    let path = str_of(f, "path");
    if path.is_empty() {
        out.push(field::required(&p.child("path"), ""));
    }
    local_non_reserved_path(path, &p.child("path"), out);
    if let Some(fr) = present(f, "fieldRef") {
        object_field_selector(fr, VOLUME_FIELDS, &p.child("fieldRef"), out);
        if present(f, "resourceFieldRef").is_some() {
            out.push(field::invalid(
                p,
                "resource",
                "fieldRef and resourceFieldRef can not be specified simultaneously",
            ));
        }
    } else if let Some(rf) = present(f, "resourceFieldRef") {
        resource_field_selector(rf, &p.child("resourceFieldRef"), true, out);
    } else {
        out.push(field::required(p, "one of fieldRef and resourceFieldRef is required"));
    }
    file_mode(f, "mode", p, out);
}

fn projected_sources(src: &Value, p: &Path, out: &mut Vec<FieldError>) {
    let sources = p.child("sources");
    let mut paths: Vec<&str> = Vec::new();
    for (i, s) in arr(src, "sources").iter().enumerate() {
        let ip = sources.index(i);
        let mut n = 0;
        for kind in ["secret", "configMap"] {
            let Some(ks) = present(s, kind) else { continue };
            n += 1;
            let kp = ip.child(kind);
            let name = str_of(ks, "name");
            if name.is_empty() {
                out.push(field::required(&kp.child("name"), ""));
            }
            let items = kp.child("items");
            for (j, item) in arr(ks, "items").iter().enumerate() {
                key_to_path(item, &items.index(j), out);
                let path = str_of(item, "path");
                if !path.is_empty() {
                    if paths.contains(&path) {
                        out.push(field::invalid(p, name, "conflicting duplicate paths"));
                    } else {
                        paths.push(path);
                    }
                }
            }
        }
        if let Some(d) = present(s, "downwardAPI") {
            n += 1;
            let dp = ip.child("downwardAPI");
            for f in arr(d, "items") {
                downward_api_file(f, &dp, out);
                let path = str_of(f, "path");
                if !path.is_empty() {
                    if paths.contains(&path) {
                        out.push(field::invalid(p, path, "conflicting duplicate paths"));
                    } else {
                        paths.push(path);
                    }
                }
            }
        }
        if let Some(t) = present(s, "serviceAccountToken") {
            n += 1;
            let tp = ip.child("serviceAccountToken");
            let exp = int_of(t, "expirationSeconds").unwrap_or(3600);
            if exp < 600 {
                out.push(field::invalid(
                    &tp.child("expirationSeconds"),
                    exp,
                    "may not specify a duration less than 10 minutes",
                ));
            }
            if exp > 1 << 32 {
                out.push(field::invalid(
                    &tp.child("expirationSeconds"),
                    exp,
                    "may not specify a duration larger than 2^32 seconds",
                ));
            }
            let path = str_of(t, "path");
            if path.is_empty() {
                out.push(field::required(&p.child("path"), ""));
            } else {
                local_non_reserved_path(path, &p.child("path"), out);
            }
        }
        if present(s, "clusterTrustBundle").is_some() {
            n += 1;
        }
        if n > 1 {
            out.push(field::forbidden(&ip, "may not specify more than 1 volume type per source"));
        }
    }
}

/// validatePathNoBacksteps.
fn no_backsteps(path: &str, p: &Path, out: &mut Vec<FieldError>) {
    if path.split('/').any(|s| s == "..") {
        out.push(field::invalid(p, path, "must not contain '..'"));
    }
}

/// validateLocalDescendingPath: relative, without backsteps.
fn local_descending_path(path: &str, p: &Path, out: &mut Vec<FieldError>) {
    if path.starts_with('/') {
        out.push(field::invalid(p, path, "must be a relative path"));
    }
    no_backsteps(path, p, out);
}

/// ValidateLocalNonReservedPath.
fn local_non_reserved_path(path: &str, p: &Path, out: &mut Vec<FieldError>) {
    local_descending_path(path, p, out);
    if path.starts_with("..") && !path.starts_with("../") {
        out.push(field::invalid(p, path, "must not start with '..'"));
    }
}

// ---- containers ----

fn containers(spec: &Value, vols: &Volumes, grace: Option<i64>, p: &Path, restart: &str, out: &mut Vec<FieldError>) {
    let list = arr(spec, "containers");
    if list.is_empty() {
        out.push(field::required(p, ""));
        return;
    }
    let mut seen: Vec<&str> = Vec::with_capacity(list.len());
    for (i, c) in list.iter().enumerate() {
        let cp = p.index(i);
        container_common(c, vols, &cp, restart, out);
        let name = str_of(c, "name");
        if seen.contains(&name) {
            out.push(field::duplicate(&cp.child("name"), name));
        } else {
            seen.push(name);
        }
        if let Some(l) = present(c, "lifecycle") {
            lifecycle(l, grace, &cp.child("lifecycle"), out);
        }
        probes(c, grace, &cp, out);
        if present(c, "restartPolicy").is_some() {
            out.push(field::forbidden(&cp.child("restartPolicy"), "may not be set for non-init containers"));
        }
    }
    host_port_conflicts(list, p, out);
}

fn init_containers(
    spec: &Value,
    vols: &Volumes,
    grace: Option<i64>,
    p: &Path,
    restart: &str,
    out: &mut Vec<FieldError>,
) {
    let mut seen: Vec<&str> = arr(spec, "containers").iter().map(|c| str_of(c, "name")).collect();
    for (i, c) in arr(spec, "initContainers").iter().enumerate() {
        let cp = p.index(i);
        container_common(c, vols, &cp, restart, out);
        let mut always = false;
        if let Some(rp) = c.get("restartPolicy").and_then(Value::as_str) {
            if rp != "Always" {
                out.push(field::not_supported(&cp.child("restartPolicy"), rp, &["Always"]));
            }
            always = rp == "Always";
        }
        let name = str_of(c, "name");
        if seen.contains(&name) {
            out.push(field::duplicate(&cp.child("name"), name));
        } else if !name.is_empty() {
            seen.push(name);
        }
        // init containers run one at a time: conflicts are per container,
        // and reported at index 0 as Kubernetes does
        host_port_conflicts(std::slice::from_ref(c), p, out);
        if always {
            if let Some(l) = present(c, "lifecycle") {
                lifecycle(l, grace, &cp.child("lifecycle"), out);
            }
            probes(c, grace, &cp, out);
        } else {
            for k in ["lifecycle", "livenessProbe", "readinessProbe", "startupProbe"] {
                if present(c, k).is_some() {
                    out.push(field::forbidden(
                        &cp.child(k),
                        "may not be set for init containers without restartPolicy=Always",
                    ));
                }
            }
        }
    }
}

/// validateContainerCommon.
fn container_common(c: &Value, vols: &Volumes, p: &Path, restart: &str, out: &mut Vec<FieldError>) {
    let name = str_of(c, "name");
    let np = p.child("name");
    if name.is_empty() {
        out.push(field::required(&np, ""));
    } else {
        for msg in names::dns1123_label_errors(name) {
            out.push(field::invalid(&np, name, &msg));
        }
    }
    if str_of(c, "image").is_empty() {
        out.push(field::required(&p.child("image"), ""));
    }
    one_of(
        &p.child("terminationMessagePolicy"),
        str_of(c, "terminationMessagePolicy"),
        &["File", "FallbackToLogsOnError"],
        out,
    );
    container_ports(arr(c, "ports"), &p.child("ports"), out);
    env(arr(c, "env"), &p.child("env"), out);
    env_from(arr(c, "envFrom"), &p.child("envFrom"), out);
    volume_mounts(c, vols, &p.child("volumeMounts"), out);
    volume_devices(c, vols, &p.child("volumeDevices"), out);
    pull_policy(str_of(c, "imagePullPolicy"), &p.child("imagePullPolicy"), out);
    resources(c.get("resources").unwrap_or(&NULL), &p.child("resources"), out);
    resize_policy(arr(c, "resizePolicy"), &p.child("resizePolicy"), restart, out);
    if let Some(sc) = present(c, "securityContext") {
        security_context(sc, &p.child("securityContext"), out);
    }
}

fn pull_policy(v: &str, p: &Path, out: &mut Vec<FieldError>) {
    one_of(p, v, &["Always", "IfNotPresent", "Never"], out);
}

fn container_ports(ports: &[Value], p: &Path, out: &mut Vec<FieldError>) {
    let mut seen: Vec<&str> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let ip = p.index(i);
        let name = str_of(port, "name");
        if !name.is_empty() {
            let errs = names::port_name_errors(name);
            if !errs.is_empty() {
                for msg in errs {
                    out.push(field::invalid(&ip.child("name"), name, &msg));
                }
            } else if seen.contains(&name) {
                out.push(field::duplicate(&ip.child("name"), name));
            } else {
                seen.push(name);
            }
        }
        let cport = int_of(port, "containerPort").unwrap_or(0);
        if cport == 0 {
            out.push(field::required(&ip.child("containerPort"), ""));
        } else if !names::port_num_ok(cport) {
            out.push(field::invalid(&ip.child("containerPort"), cport, PORT_RANGE_MSG));
        }
        let hport = int_of(port, "hostPort").unwrap_or(0);
        if hport != 0 && !names::port_num_ok(hport) {
            out.push(field::invalid(&ip.child("hostPort"), hport, PORT_RANGE_MSG));
        }
        protocol(str_of(port, "protocol"), &ip.child("protocol"), out);
    }
}

/// A port protocol: required, TCP, UDP or SCTP.
pub(crate) fn protocol(v: &str, p: &Path, out: &mut Vec<FieldError>) {
    one_of(p, v, &["SCTP", "TCP", "UDP"], out);
}

/// AccumulateUniqueHostPorts over `list`.
fn host_port_conflicts(list: &[Value], p: &Path, out: &mut Vec<FieldError>) {
    let mut seen: Vec<String> = Vec::new();
    for (ci, c) in list.iter().enumerate() {
        let cp = p.index(ci);
        let pp = cp.child("ports");
        for (pi, port) in arr(c, "ports").iter().enumerate() {
            let hp = int_of(port, "hostPort").unwrap_or(0);
            if hp == 0 {
                continue;
            }
            let key = format!("{}/{}/{hp}", str_of(port, "protocol"), str_of(port, "hostIP"));
            if seen.contains(&key) {
                out.push(field::duplicate(&pp.index(pi).child("hostPort"), &key));
            } else {
                seen.push(key);
            }
        }
    }
}

fn host_network_deps(spec: &Value, p: &Path, opts: Opts, out: &mut Vec<FieldError>) {
    if spec.get("hostNetwork").and_then(Value::as_bool) != Some(true) {
        return;
    }
    let cs = p.child("containers");
    for (i, c) in arr(spec, "containers").iter().enumerate() {
        let cp = cs.index(i);
        let pp = cp.child("ports");
        for (j, port) in arr(c, "ports").iter().enumerate() {
            let hp = int_of(port, "hostPort").unwrap_or(0);
            let cport = int_of(port, "containerPort").unwrap_or(0);
            if (opts.is_pod || hp != 0) && hp != cport {
                out.push(field::invalid(
                    &pp.index(j).child("hostPort"),
                    hp,
                    "must match `containerPort` when `hostNetwork` is true",
                ));
            }
        }
    }
}

// ---- env ----

const ENV_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];
const VOLUME_FIELDS: &[&str] =
    &["metadata.annotations", "metadata.labels", "metadata.name", "metadata.namespace", "metadata.uid"];
const DOWNWARD_LABELS: &[&str] = &[
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.serviceAccountName",
    "spec.schedulerName",
    "status.phase",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];
const RESOURCE_FIELDS: &[&str] = &[
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];

fn env(vars: &[Value], p: &Path, out: &mut Vec<FieldError>) {
    for (i, ev) in vars.iter().enumerate() {
        let ip = p.index(i);
        let name = str_of(ev, "name");
        if name.is_empty() {
            out.push(field::required(&ip.child("name"), ""));
        } else {
            for msg in names::env_var_name_errors(name) {
                out.push(field::invalid(&ip.child("name"), name, &msg));
            }
        }
        if let Some(vf) = present(ev, "valueFrom") {
            value_from(vf, !str_of(ev, "value").is_empty(), &ip.child("valueFrom"), out);
        }
    }
}

fn value_from(vf: &Value, has_value: bool, p: &Path, out: &mut Vec<FieldError>) {
    let mut n = 0;
    if let Some(fr) = present(vf, "fieldRef") {
        n += 1;
        object_field_selector(fr, ENV_FIELDS, &p.child("fieldRef"), out);
    }
    if let Some(rf) = present(vf, "resourceFieldRef") {
        n += 1;
        resource_field_selector(rf, &p.child("resourceFieldRef"), false, out);
    }
    for k in ["configMapKeyRef", "secretKeyRef"] {
        if let Some(ks) = present(vf, k) {
            n += 1;
            key_selector(ks, &p.child(k), out);
        }
    }
    if n == 0 {
        out.push(field::invalid(
            p,
            "",
            "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
        ));
    } else if has_value {
        out.push(field::invalid(p, "", "may not be specified when `value` is not empty"));
    } else if n > 1 {
        out.push(field::invalid(p, "", "may not have more than one field specified at a time"));
    }
}

/// validateObjectFieldSelector; apiVersion defaults to v1.
fn object_field_selector(fs: &Value, allowed: &[&str], p: &Path, out: &mut Vec<FieldError>) {
    // an empty apiVersion is defaulted to v1
    let version = fs.get("apiVersion").and_then(Value::as_str).filter(|v| !v.is_empty()).unwrap_or("v1");
    let path = str_of(fs, "fieldPath");
    if path.is_empty() {
        out.push(field::required(&p.child("fieldPath"), ""));
        return;
    }
    let subscripted = path.strip_suffix("']").and_then(|s| s.split_once("['")).filter(|(base, _)| !base.is_empty());
    let conversion_error = if version != "v1" {
        Some(format!("unsupported pod version: {version}"))
    } else {
        match subscripted {
            Some((base, _)) if !matches!(base, "metadata.annotations" | "metadata.labels") => {
                Some(format!("field label does not support subscript: {path}"))
            }
            Some(_) => None,
            None if DOWNWARD_LABELS.contains(&path) => None,
            None => Some(format!("field label not supported: {path}")),
        }
    };
    if let Some(e) = conversion_error {
        out.push(field::invalid(&p.child("fieldPath"), path, &format!("error converting fieldPath: {e}")));
        return;
    }
    match subscripted {
        Some(("metadata.annotations", sub)) => {
            for msg in names::qualified_name_errors(&sub.to_ascii_lowercase()) {
                out.push(field::invalid(p, sub.to_ascii_lowercase().as_str(), &msg));
            }
        }
        Some((_, sub)) => {
            for msg in names::qualified_name_errors(sub) {
                out.push(field::invalid(p, sub, &msg));
            }
        }
        None if !allowed.contains(&path) => out.push(field::not_supported(&p.child("fieldPath"), path, allowed)),
        None => {}
    }
}

fn resource_field_selector(rf: &Value, p: &Path, volume: bool, out: &mut Vec<FieldError>) {
    let resource = str_of(rf, "resource");
    if volume && str_of(rf, "containerName").is_empty() {
        out.push(field::required(&p.child("containerName"), ""));
    } else if resource.is_empty() {
        out.push(field::required(&p.child("resource"), ""));
    } else if !RESOURCE_FIELDS.contains(&resource)
        && !resource.starts_with("requests.hugepages-")
        && !resource.starts_with("limits.hugepages-")
    {
        out.push(field::not_supported(&p.child("resource"), resource, RESOURCE_FIELDS));
    }
}

fn key_selector(ks: &Value, p: &Path, out: &mut Vec<FieldError>) {
    let name = str_of(ks, "name");
    for msg in names::dns1123_subdomain_errors(name) {
        out.push(field::invalid(&p.child("name"), name, &msg));
    }
    let key = str_of(ks, "key");
    if key.is_empty() {
        out.push(field::required(&p.child("key"), ""));
    } else {
        for msg in names::config_map_key_errors(key) {
            out.push(field::invalid(&p.child("key"), key, &msg));
        }
    }
}

fn env_from(list: &[Value], p: &Path, out: &mut Vec<FieldError>) {
    for (i, ev) in list.iter().enumerate() {
        let ip = p.index(i);
        let prefix = str_of(ev, "prefix");
        if !prefix.is_empty() {
            for msg in names::env_var_name_errors(prefix) {
                out.push(field::invalid(&ip.child("prefix"), prefix, &msg));
            }
        }
        let mut n = 0;
        for k in ["configMapRef", "secretRef"] {
            let Some(r) = present(ev, k) else { continue };
            n += 1;
            let np = ip.child(k);
            let np = np.child("name");
            let name = str_of(r, "name");
            if name.is_empty() {
                out.push(field::required(&np, ""));
            } else {
                for msg in meta::name_errors(NameRule::Subdomain, name, true) {
                    out.push(field::invalid(&np, name, &msg));
                }
            }
        }
        if n == 0 {
            out.push(field::invalid(p, "", "must specify one of: `configMapRef` or `secretRef`"));
        } else if n > 1 {
            out.push(field::invalid(p, "", "may not have more than one field specified at a time"));
        }
    }
}

// ---- mounts ----

fn find<'a>(vols: &Volumes<'a>, name: &str) -> Option<&'a Value> {
    vols.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

fn volume_mounts(c: &Value, vols: &Volumes, p: &Path, out: &mut Vec<FieldError>) {
    let devices = arr(c, "volumeDevices");
    let privileged = c.pointer("/securityContext/privileged").and_then(Value::as_bool) == Some(true);
    let mut mount_paths: Vec<&str> = Vec::new();
    for (i, m) in arr(c, "volumeMounts").iter().enumerate() {
        let ip = p.index(i);
        let name = str_of(m, "name");
        let mount_path = str_of(m, "mountPath");
        if name.is_empty() {
            out.push(field::required(&ip.child("name"), ""));
        }
        let vol = find(vols, name);
        if vol.is_none() {
            out.push(field::not_found(&ip.child("name"), name));
        }
        if mount_path.is_empty() {
            out.push(field::required(&ip.child("mountPath"), ""));
        }
        if mount_paths.contains(&mount_path) {
            out.push(field::invalid(&ip.child("mountPath"), mount_path, "must be unique"));
        }
        mount_paths.push(mount_path);
        if devices.iter().any(|d| str_of(d, "name") == name) {
            out.push(field::invalid(&ip.child("name"), name, "must not already exist in volumeDevices"));
        }
        if devices.iter().any(|d| str_of(d, "devicePath") == mount_path) {
            out.push(field::invalid(
                &ip.child("mountPath"),
                mount_path,
                "must not already exist as a path in volumeDevices",
            ));
        }
        let sub_path = str_of(m, "subPath");
        let sub_expr = str_of(m, "subPathExpr");
        if vol.is_some_and(|v| present(v, "image").is_some()) {
            if !sub_path.is_empty() {
                out.push(field::invalid(&ip.child("subPath"), sub_path, "not allowed in image volume sources"));
            }
            if !sub_expr.is_empty() {
                out.push(field::invalid(&ip.child("subPathExpr"), sub_expr, "not allowed in image volume sources"));
            }
        }
        // Kubernetes names these two at the list, not the item
        if !sub_path.is_empty() {
            local_descending_path(sub_path, &p.child("subPath"), out);
        }
        if !sub_expr.is_empty() {
            if !sub_path.is_empty() {
                out.push(field::invalid(
                    &ip.child("subPathExpr"),
                    sub_expr,
                    "subPathExpr and subPath are mutually exclusive",
                ));
            }
            local_descending_path(sub_expr, &p.child("subPathExpr"), out);
        }
        let propagation = m.get("mountPropagation").and_then(Value::as_str);
        if let Some(mp) = propagation {
            let pp = p.child("mountPropagation");
            if !matches!(mp, "Bidirectional" | "HostToContainer" | "None") {
                out.push(field::not_supported(&pp, mp, &["Bidirectional", "HostToContainer", "None"]));
            }
            if mp == "Bidirectional" && !privileged {
                out.push(field::forbidden(
                    &pp,
                    "Bidirectional mount propagation is available only to privileged containers",
                ));
            }
        }
        if let Some(rro) = m.get("recursiveReadOnly").and_then(Value::as_str) {
            let rp = p.child("recursiveReadOnly");
            match rro {
                "Disabled" => {}
                "Enabled" | "IfPossible" => {
                    if m.get("readOnly").and_then(Value::as_bool) != Some(true) {
                        out.push(field::forbidden(&rp, "may only be specified when readOnly is true"));
                    }
                    if propagation.is_some_and(|mp| mp != "None") {
                        out.push(field::forbidden(
                            &rp,
                            "may only be specified when mountPropagation is None or not specified",
                        ));
                    }
                }
                other => out.push(field::not_supported(&rp, other, &["Disabled", "Enabled", "IfPossible"])),
            }
        }
    }
}

fn volume_devices(c: &Value, vols: &Volumes, p: &Path, out: &mut Vec<FieldError>) {
    let mounts = arr(c, "volumeMounts");
    let mut dev_paths: Vec<&str> = Vec::new();
    let mut dev_names: Vec<&str> = Vec::new();
    for (i, d) in arr(c, "volumeDevices").iter().enumerate() {
        let ip = p.index(i);
        let name = str_of(d, "name");
        let path = str_of(d, "devicePath");
        let vol = find(vols, name);
        let is_pvc =
            vol.is_some_and(|v| present(v, "persistentVolumeClaim").is_some() || present(v, "ephemeral").is_some());
        if name.is_empty() {
            out.push(field::required(&ip.child("name"), ""));
        }
        if dev_names.contains(&name) {
            out.push(field::invalid(&ip.child("name"), name, "must be unique"));
        }
        if vol.is_some() && !is_pvc {
            out.push(field::invalid(
                &ip.child("name"),
                name,
                "can only use volume source type of PersistentVolumeClaim or Ephemeral for block mode",
            ));
        }
        if vol.is_none() {
            out.push(field::not_found(&ip.child("name"), name));
        }
        if path.is_empty() {
            out.push(field::required(&ip.child("devicePath"), ""));
        }
        if dev_paths.contains(&path) {
            out.push(field::invalid(&ip.child("devicePath"), path, "must be unique"));
        }
        if !path.is_empty() && path.split('/').any(|s| s == "..") {
            out.push(field::invalid(&ip.child("devicePath"), path, "can not contain backsteps ('..')"));
        } else {
            dev_paths.push(path);
        }
        if mounts.iter().any(|m| str_of(m, "name") == name) {
            out.push(field::invalid(&ip.child("name"), name, "must not already exist in volumeMounts"));
        }
        if mounts.iter().any(|m| str_of(m, "mountPath") == path) {
            out.push(field::invalid(&ip.child("devicePath"), path, "must not already exist as a path in volumeMounts"));
        }
        if !name.is_empty() {
            dev_names.push(name);
        }
    }
}

// ---- resources ----

fn is_native(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

fn is_hugepages(name: &str) -> bool {
    name.starts_with("hugepages-")
}

fn overcommit_allowed(name: &str) -> bool {
    is_native(name) && !is_hugepages(name)
}

const STANDARD_RESOURCES: &[&str] = &[
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
    "storage",
    "requests.storage",
    "services.nodeports",
    "services.loadbalancers",
];

/// validateContainerResourceName.
fn container_resource_name(name: &str, p: &Path, out: &mut Vec<FieldError>) {
    let errs = names::qualified_name_errors(name);
    if !errs.is_empty() {
        for msg in errs {
            out.push(field::invalid(p, name, &msg));
        }
    } else if !name.contains('/')
        && !STANDARD_RESOURCES.contains(&name)
        && !is_hugepages(name)
        && !name.starts_with("requests.hugepages-")
    {
        out.push(field::invalid(p, name, "must be a standard resource type or fully qualified"));
    }
    if !name.contains('/') {
        if !matches!(name, "cpu" | "memory" | "ephemeral-storage") && !is_hugepages(name) {
            out.push(field::invalid(p, name, "must be a standard resource for containers"));
        }
    } else if !is_native(name) {
        let extended =
            !name.starts_with("requests.") && names::qualified_name_errors(&format!("requests.{name}")).is_empty();
        if !extended {
            out.push(field::invalid(p, name, "doesn't follow extended resource name standard"));
        }
    }
}

fn quantity_nonnegative(q: &Quantity, p: &Path, out: &mut Vec<FieldError>) {
    if q.is_negative() {
        out.push(field::invalid(p, q.canonical().as_str(), NEGATIVE));
    }
}

/// ValidateContainerResourceRequirements: names, quantities, and
/// requests no more than limits.
fn resources(r: &Value, p: &Path, out: &mut Vec<FieldError>) {
    let limits = r.get("limits").and_then(Value::as_object);
    let requests = r.get("requests").and_then(Value::as_object);
    let lim_path = p.child("limits");
    let req_path = p.child("requests");
    let (mut lim_cpu_mem, mut req_cpu_mem, mut huge) = (false, false, false);
    for (name, q) in limits.into_iter().flatten() {
        let fp = lim_path.key(name);
        container_resource_name(name, &fp, out);
        if let Some(q) = quantity::from_json(q) {
            quantity_nonnegative(&q, &fp, out);
        }
        huge |= is_hugepages(name);
        lim_cpu_mem |= matches!(name.as_str(), "cpu" | "memory");
    }
    for (name, q) in requests.into_iter().flatten() {
        let fp = req_path.key(name);
        container_resource_name(name, &fp, out);
        let q = quantity::from_json(q);
        if let Some(q) = &q {
            quantity_nonnegative(q, &fp, out);
        }
        let limit = limits.and_then(|l| l.get(name.as_str()));
        match (q, limit.and_then(quantity::from_json)) {
            (Some(q), Some(l)) => {
                if !overcommit_allowed(name) && q.cmp(&l).is_ne() {
                    let msg = format!("must be equal to {name} limit of {}", l.canonical());
                    out.push(field::invalid(&req_path, q.canonical().as_str(), &msg));
                } else if q.cmp(&l).is_gt() {
                    let msg = format!("must be less than or equal to {name} limit of {}", l.canonical());
                    out.push(field::invalid(&req_path, q.canonical().as_str(), &msg));
                }
            }
            _ if limit.is_none() && !overcommit_allowed(name) => {
                out.push(field::required(&lim_path, "Limit must be set for non overcommitable resources"));
            }
            _ => {}
        }
        huge |= is_hugepages(name);
        req_cpu_mem |= matches!(name.as_str(), "cpu" | "memory");
    }
    if !lim_cpu_mem && !req_cpu_mem && huge {
        out.push(field::forbidden(p, "HugePages require cpu or memory"));
    }
}

fn resize_policy(list: &[Value], p: &Path, restart: &str, out: &mut Vec<FieldError>) {
    let mut seen: Vec<&str> = Vec::new();
    for (i, rp) in list.iter().enumerate() {
        let name = str_of(rp, "resourceName");
        let policy = str_of(rp, "restartPolicy");
        if seen.contains(&name) {
            out.push(field::duplicate(&p.index(i), name));
        }
        seen.push(name);
        one_of(p, name, &["cpu", "memory"], out);
        one_of(p, policy, &["NotRequired", "RestartContainer"], out);
        if restart == "Never" && policy != "NotRequired" {
            out.push(field::invalid(p, policy, "must be 'NotRequired' when `restartPolicy` is 'Never'"));
        }
    }
}

// ---- security ----

const ID_RANGE_MSG: &str = "must be between 0 and 2147483647, inclusive";

fn id_in_range(v: &Value, k: &str, p: &Path, out: &mut Vec<FieldError>) {
    if let Some(id) = int_of(v, k) {
        if !(0..=MAX_INT32).contains(&id) {
            out.push(field::invalid(&p.child(k), id, ID_RANGE_MSG));
        }
    }
}

fn seccomp_profile(sp: &Value, p: &Path, out: &mut Vec<FieldError>) {
    let t = str_of(sp, "type");
    let tp = p.child("type");
    match t {
        "Localhost" | "RuntimeDefault" | "Unconfined" => {}
        "" => out.push(field::required(&tp, "type is required when seccompProfile is set")),
        other => out.push(field::not_supported(&tp, other, &["Localhost", "RuntimeDefault", "Unconfined"])),
    }
    let lp = p.child("localhostProfile");
    match (t, sp.get("localhostProfile").and_then(Value::as_str)) {
        ("Localhost", None) => out.push(field::required(&lp, "must be set when seccomp type is Localhost")),
        ("Localhost", Some(path)) => local_descending_path(path, &lp, out),
        (_, Some(_)) => {
            let shown =
                format!("&core.SeccompProfile{{Type:{}, LocalhostProfile:(*string)(0xc000000000)}}", govalue::quote(t));
            out.push(field::invalid(&lp, shown, "can only be set when seccomp type is Localhost"));
        }
        _ => {}
    }
}

fn app_armor_profile(ap: &Value, p: &Path, out: &mut Vec<FieldError>) {
    let lp = p.child("localhostProfile");
    match str_of(ap, "type") {
        "Localhost" => match ap.get("localhostProfile").and_then(Value::as_str) {
            None => out.push(field::required(&lp, "must be set when AppArmor type is Localhost")),
            Some(l) if l.trim() != l => out.push(field::invalid(&lp, l, "must not be padded with whitespace")),
            Some("") => out.push(field::required(&lp, "must be set when AppArmor type is Localhost")),
            Some(l) if l.len() > 4095 => out.push(field::too_long(&lp, 4095)),
            Some(_) => {}
        },
        "RuntimeDefault" | "Unconfined" => {
            if let Some(l) = ap.get("localhostProfile").and_then(Value::as_str) {
                out.push(field::invalid(&lp, l, "can only be set when AppArmor type is Localhost"));
            }
        }
        "" => out.push(field::required(&p.child("type"), "type is required when appArmorProfile is set")),
        other => {
            out.push(field::not_supported(&p.child("type"), other, &["Localhost", "RuntimeDefault", "Unconfined"]))
        }
    }
}

fn security_context(sc: &Value, p: &Path, out: &mut Vec<FieldError>) {
    id_in_range(sc, "runAsUser", p, out);
    id_in_range(sc, "runAsGroup", p, out);
    if let Some(pm) = sc.get("procMount").and_then(Value::as_str) {
        if !matches!(pm, "Default" | "Unmasked") {
            out.push(field::not_supported(&p.child("procMount"), pm, &["Default", "Unmasked"]));
        }
    }
    if let Some(sp) = present(sc, "seccompProfile") {
        seccomp_profile(sp, &p.child("seccompProfile"), out);
    }
    if let Some(ap) = present(sc, "appArmorProfile") {
        app_armor_profile(ap, &p.child("appArmorProfile"), out);
    }
}

const SYSCTL_REGEX: &str = "^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$";

fn sysctl_name_ok(name: &str) -> bool {
    fn segment(s: &str) -> bool {
        let b = s.as_bytes();
        !b.is_empty()
            && b.iter().all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
    }
    name.len() <= 253 && name.split(['.', '/']).all(segment)
}

fn pod_security_context(spec: &Value, p: &Path, out: &mut Vec<FieldError>) {
    let Some(sc) = present(spec, "securityContext") else { return };
    id_in_range(sc, "fsGroup", p, out);
    id_in_range(sc, "runAsUser", p, out);
    id_in_range(sc, "runAsGroup", p, out);
    let gp = p.child("supplementalGroups");
    for (i, g) in arr(sc, "supplementalGroups").iter().enumerate() {
        let g = g.as_i64().unwrap_or(0);
        if !(0..=MAX_INT32).contains(&g) {
            out.push(field::invalid(&gp.index(i), g, ID_RANGE_MSG));
        }
    }
    if spec.get("shareProcessNamespace").and_then(Value::as_bool) == Some(true)
        && spec.get("hostPID").and_then(Value::as_bool) == Some(true)
    {
        out.push(field::invalid(
            &p.child("shareProcessNamespace"),
            "true".to_string(),
            "ShareProcessNamespace and HostPID cannot both be enabled",
        ));
    }
    let sp = p.child("sysctls");
    let mut seen: Vec<&str> = Vec::new();
    for (i, s) in arr(sc, "sysctls").iter().enumerate() {
        let name = str_of(s, "name");
        let np = sp.index(i);
        let np = np.child("name");
        if name.is_empty() {
            out.push(field::required(&np, ""));
        } else if !sysctl_name_ok(name) {
            out.push(field::invalid(
                &np,
                name,
                &format!("must have at most 253 characters and match regex {SYSCTL_REGEX}"),
            ));
        } else if seen.contains(&name) {
            out.push(field::duplicate(&np, name));
        }
        seen.push(name);
    }
    if let Some(f) = sc.get("fsGroupChangePolicy").and_then(Value::as_str) {
        if !matches!(f, "Always" | "OnRootMismatch") {
            out.push(field::not_supported(&p.child("fsGroupChangePolicy"), f, &["Always", "OnRootMismatch"]));
        }
    }
    if let Some(s) = present(sc, "seccompProfile") {
        seccomp_profile(s, &p.child("seccompProfile"), out);
    }
    if let Some(a) = present(sc, "appArmorProfile") {
        app_armor_profile(a, &p.child("appArmorProfile"), out);
    }
    if let Some(g) = sc.get("supplementalGroupsPolicy").and_then(Value::as_str) {
        if !matches!(g, "Merge" | "Strict") {
            out.push(field::not_supported(&p.child("supplementalGroupsPolicy"), g, &["Merge", "Strict"]));
        }
    }
}

// ---- probes and handlers ----

fn probes(c: &Value, grace: Option<i64>, p: &Path, out: &mut Vec<FieldError>) {
    for k in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let Some(pr) = present(c, k) else { continue };
        let pp = p.child(k);
        probe(pr, grace, &pp, out);
        let success = int_of(pr, "successThreshold").unwrap_or(0);
        if k == "readinessProbe" {
            if let Some(t) = int_of(pr, "terminationGracePeriodSeconds") {
                out.push(field::invalid(
                    &pp.child("terminationGracePeriodSeconds"),
                    t,
                    "must not be set for readinessProbes",
                ));
            }
        } else if success != 1 {
            out.push(field::invalid(&pp.child("successThreshold"), success, "must be 1"));
        }
    }
}

fn probe(pr: &Value, grace: Option<i64>, p: &Path, out: &mut Vec<FieldError>) {
    handler(pr, &["exec", "httpGet", "tcpSocket", "grpc"], grace, p, out);
    for k in ["initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"] {
        nonnegative(&p.child(k), Some(int_of(pr, k).unwrap_or(0)), out);
    }
    if let Some(t) = int_of(pr, "terminationGracePeriodSeconds").filter(|t| *t <= 0) {
        out.push(field::invalid(&p.child("terminationGracePeriodSeconds"), t, "must be greater than 0"));
    }
}

fn lifecycle(l: &Value, grace: Option<i64>, p: &Path, out: &mut Vec<FieldError>) {
    for k in ["postStart", "preStop"] {
        if let Some(h) = present(l, k) {
            handler(h, &["exec", "httpGet", "tcpSocket", "sleep"], grace, &p.child(k), out);
        }
    }
}

/// validateHandler: exactly one of the handler kinds `kinds`.
fn handler(h: &Value, kinds: &[&str], grace: Option<i64>, p: &Path, out: &mut Vec<FieldError>) {
    let mut n = 0;
    for k in ["exec", "httpGet", "tcpSocket", "grpc", "sleep"] {
        let Some(a) = present(h, k).filter(|_| kinds.contains(&k)) else { continue };
        let ap = p.child(k);
        if n > 0 {
            out.push(field::forbidden(&ap, "may not specify more than 1 handler type"));
            continue;
        }
        n += 1;
        match k {
            "exec" => {
                if arr(a, "command").is_empty() {
                    out.push(field::required(&ap.child("command"), ""));
                }
            }
            "httpGet" => {
                // an empty path and scheme are defaulted to "/" and HTTP
                port_num_or_name(a.get("port"), &ap.child("port"), out);
                let scheme = a.get("scheme").and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or("HTTP");
                if !matches!(scheme, "HTTP" | "HTTPS") {
                    out.push(field::not_supported(&ap.child("scheme"), scheme, &["HTTP", "HTTPS"]));
                }
                for hdr in arr(a, "httpHeaders") {
                    let name = str_of(hdr, "name");
                    if name.is_empty() || !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') {
                        out.push(field::invalid(
                            &ap.child("httpHeaders"),
                            name,
                            "a valid HTTP header must consist of alphanumeric characters or '-' (e.g. 'X-Header-Name', regex used for validation is '[-A-Za-z0-9]+')",
                        ));
                    }
                }
            }
            "tcpSocket" => port_num_or_name(a.get("port"), &ap.child("port"), out),
            "grpc" => {
                let port = int_of(a, "port").unwrap_or(0);
                if !names::port_num_ok(port) {
                    out.push(field::invalid(&ap.child("port"), port, PORT_RANGE_MSG));
                }
            }
            _ => {
                let secs = int_of(a, "seconds").unwrap_or(0);
                if let Some(g) = grace {
                    if secs < 0 || secs > g {
                        out.push(field::invalid(
                            &ap,
                            secs,
                            &format!("must be non-negative and less than terminationGracePeriodSeconds ({g})"),
                        ));
                    }
                }
            }
        }
    }
    if n == 0 {
        out.push(field::required(p, "must specify a handler type"));
    }
}

/// ValidatePortNumOrName for an IntOrString port.
pub(crate) fn port_num_or_name(v: Option<&Value>, p: &Path, out: &mut Vec<FieldError>) {
    match v {
        Some(Value::String(s)) => {
            for msg in names::port_name_errors(s) {
                out.push(field::invalid(p, s.as_str(), &msg));
            }
        }
        v => {
            let n = v.and_then(Value::as_i64).unwrap_or(0);
            if !names::port_num_ok(n) {
                out.push(field::invalid(p, n, PORT_RANGE_MSG));
            }
        }
    }
}

// ---- scheduling ----

const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// ValidateTolerations.
pub(crate) fn tolerations(list: &[Value], p: &Path, out: &mut Vec<FieldError>) {
    for (i, t) in list.iter().enumerate() {
        let ip = p.index(i);
        let key = str_of(t, "key");
        let op = str_of(t, "operator");
        let value = str_of(t, "value");
        let effect = str_of(t, "effect");
        if !key.is_empty() {
            meta::label_name(key, &ip.child("key"), out);
        }
        if key.is_empty() && op != "Exists" {
            out.push(field::invalid(
                &ip.child("operator"),
                op,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if present(t, "tolerationSeconds").is_some() && effect != "NoExecute" {
            out.push(field::invalid(
                &ip.child("effect"),
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match op {
            "Equal" | "" => {
                let errs = names::label_value_errors(value);
                if !errs.is_empty() {
                    out.push(field::invalid(&ip.child("operator"), value, &errs.join(";")));
                }
            }
            "Exists" => {
                if !value.is_empty() {
                    out.push(field::invalid(
                        &ip.child("operator"),
                        value,
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => out.push(field::not_supported(&ip.child("operator"), other, &["Equal", "Exists"])),
        }
        if !effect.is_empty() && !TAINT_EFFECTS.contains(&effect) {
            out.push(field::not_supported(&ip.child("effect"), effect, TAINT_EFFECTS));
        }
    }
}

fn scheduling_gates(list: &[Value], p: &Path, out: &mut Vec<FieldError>) {
    let mut seen: Vec<&str> = Vec::new();
    for (i, g) in list.iter().enumerate() {
        let name = str_of(g, "name");
        for msg in names::qualified_name_errors(name) {
            out.push(field::invalid(&p.index(i), name, &msg));
        }
        if seen.contains(&name) {
            out.push(field::duplicate(&p.index(i), name));
        }
        seen.push(name);
    }
}

fn topology_spread(list: &[Value], p: &Path, out: &mut Vec<FieldError>) {
    for (i, c) in list.iter().enumerate() {
        let cp = p.index(i);
        let skew = int_of(c, "maxSkew").unwrap_or(0);
        if skew <= 0 {
            out.push(field::invalid(&cp.child("maxSkew"), skew, "must be greater than zero"));
        }
        let key = str_of(c, "topologyKey");
        if key.is_empty() {
            out.push(field::required(&cp.child("topologyKey"), "can not be empty"));
        }
        let when = str_of(c, "whenUnsatisfiable");
        if !matches!(when, "DoNotSchedule" | "ScheduleAnyway") {
            out.push(field::not_supported(&cp.child("whenUnsatisfiable"), when, &["DoNotSchedule", "ScheduleAnyway"]));
        }
        if list[i + 1..].iter().any(|o| str_of(o, "topologyKey") == key && str_of(o, "whenUnsatisfiable") == when) {
            out.push(field::duplicate(
                &cp.child("{topologyKey, whenUnsatisfiable}"),
                format!("{{{key}, {when}}}").as_str(),
            ));
        }
        if let Some(md) = int_of(c, "minDomains") {
            let mp = cp.child("minDomains");
            if md <= 0 {
                out.push(field::invalid(&mp, md, "must be greater than zero"));
            }
            if when != "DoNotSchedule" {
                out.push(field::invalid(
                    &mp,
                    md,
                    &format!("can only use minDomains if whenUnsatisfiable=DoNotSchedule, not {when}"),
                ));
            }
        }
        for k in ["nodeAffinityPolicy", "nodeTaintsPolicy"] {
            if let Some(v) = c.get(k).and_then(Value::as_str) {
                if !matches!(v, "Honor" | "Ignore") {
                    out.push(field::not_supported(&cp.child(k), v, &["Honor", "Ignore"]));
                }
            }
        }
        if let Some(sel) = present(c, "labelSelector") {
            meta::label_selector(sel, &cp.child("labelSelector"), out);
        }
    }
}

fn affinity(a: &Value, p: &Path, out: &mut Vec<FieldError>) {
    if let Some(na) = present(a, "nodeAffinity") {
        let np = p.child("nodeAffinity");
        if let Some(req) = present(na, "requiredDuringSchedulingIgnoredDuringExecution") {
            let rp = np.child("requiredDuringSchedulingIgnoredDuringExecution");
            let tp = rp.child("nodeSelectorTerms");
            let terms = arr(req, "nodeSelectorTerms");
            if terms.is_empty() {
                out.push(field::required(&tp, "must have at least one node selector term"));
            }
            for (i, t) in terms.iter().enumerate() {
                node_selector_term(t, false, &tp.index(i), out);
            }
        }
        let pp = np.child("preferredDuringSchedulingIgnoredDuringExecution");
        for (i, t) in arr(na, "preferredDuringSchedulingIgnoredDuringExecution").iter().enumerate() {
            let ip = pp.index(i);
            let w = int_of(t, "weight").unwrap_or(0);
            if !(1..=100).contains(&w) {
                out.push(field::invalid(&ip.child("weight"), w, "must be in the range 1-100"));
            }
            node_selector_term(t.get("preference").unwrap_or(&NULL), true, &ip.child("preference"), out);
        }
    }
    for k in ["podAffinity", "podAntiAffinity"] {
        let Some(pa) = present(a, k) else { continue };
        let kp = p.child(k);
        let rp = kp.child("requiredDuringSchedulingIgnoredDuringExecution");
        for (i, t) in arr(pa, "requiredDuringSchedulingIgnoredDuringExecution").iter().enumerate() {
            pod_affinity_term(t, &rp.index(i), out);
        }
        let wp = kp.child("preferredDuringSchedulingIgnoredDuringExecution");
        for (i, t) in arr(pa, "preferredDuringSchedulingIgnoredDuringExecution").iter().enumerate() {
            let ip = wp.index(i);
            let w = int_of(t, "weight").unwrap_or(0);
            if !(1..=100).contains(&w) {
                out.push(field::invalid(&ip.child("weight"), w, "must be in the range 1-100"));
            }
            pod_affinity_term(t.get("podAffinityTerm").unwrap_or(&NULL), &ip.child("podAffinityTerm"), out);
        }
    }
}

fn node_selector_term(t: &Value, allow_invalid_values: bool, p: &Path, out: &mut Vec<FieldError>) {
    let ep = p.child("matchExpressions");
    for (j, r) in arr(t, "matchExpressions").iter().enumerate() {
        let rp = ep.index(j);
        let values = arr(r, "values");
        match str_of(r, "operator") {
            "In" | "NotIn" => {
                if values.is_empty() {
                    out.push(field::required(
                        &rp.child("values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    out.push(field::forbidden(
                        &rp.child("values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            "Gt" | "Lt" => {
                if values.len() != 1 {
                    out.push(field::required(
                        &rp.child("values"),
                        "must be specified single value when `operator` is 'Lt' or 'Gt'",
                    ));
                }
            }
            op => out.push(field::invalid(&rp.child("operator"), op, "not a valid selector operator")),
        }
        meta::label_name(str_of(r, "key"), &rp.child("key"), out);
        if !allow_invalid_values {
            let vp = rp.child("values");
            for (k, v) in values.iter().enumerate() {
                let v = v.as_str().unwrap_or("");
                for msg in names::label_value_errors(v) {
                    out.push(field::invalid(&vp.index(k), v, &msg));
                }
            }
        }
    }
    let fp = p.child("matchFields");
    for (j, r) in arr(t, "matchFields").iter().enumerate() {
        let rp = fp.index(j);
        let values = arr(r, "values");
        match str_of(r, "operator") {
            "In" | "NotIn" => {
                if values.len() != 1 {
                    out.push(field::required(
                        &rp.child("values"),
                        "must be only one value when `operator` is 'In' or 'NotIn' for node field selector",
                    ));
                }
            }
            op => out.push(field::invalid(&rp.child("operator"), op, "not a valid selector operator")),
        }
        let key = str_of(r, "key");
        if key != "metadata.name" {
            out.push(field::invalid(&rp.child("key"), key, "not a valid field selector key"));
        } else {
            let vp = rp.child("values");
            for (k, v) in values.iter().enumerate() {
                let v = v.as_str().unwrap_or("");
                for msg in names::dns1123_subdomain_errors(v) {
                    out.push(field::invalid(&vp.index(k), v, &msg));
                }
            }
        }
    }
}

fn pod_affinity_term(t: &Value, p: &Path, out: &mut Vec<FieldError>) {
    if let Some(sel) = present(t, "labelSelector") {
        meta::label_selector(sel, &p.child("labelSelector"), out);
    }
    if let Some(sel) = present(t, "namespaceSelector") {
        meta::label_selector(sel, &p.child("namespaceSelector"), out);
    }
    for ns in arr(t, "namespaces") {
        let ns = ns.as_str().unwrap_or("");
        for msg in names::dns1123_label_errors(ns) {
            out.push(field::invalid(&p.child("namespace"), ns, &msg));
        }
    }
    for k in ["matchLabelKeys", "mismatchLabelKeys"] {
        let keys = arr(t, k);
        if keys.is_empty() {
            continue;
        }
        let kp = p.child(k);
        if present(t, "labelSelector").is_none() {
            out.push(field::forbidden(&kp, "must not be specified when labelSelector is not set"));
            continue;
        }
        for (i, key) in keys.iter().enumerate() {
            meta::label_name(key.as_str().unwrap_or(""), &kp.index(i), out);
        }
    }
    let key = str_of(t, "topologyKey");
    let tp = p.child("topologyKey");
    if key.is_empty() {
        out.push(field::required(&tp, "can not be empty"));
    }
    meta::label_name(key, &tp, out);
}

fn dns_config(spec: &Value, p: &Path, out: &mut Vec<FieldError>) {
    let cfg = present(spec, "dnsConfig");
    if str_of(spec, "dnsPolicy") == "None" {
        let Some(cfg) = cfg else {
            out.push(field::required(p, "must provide `dnsConfig` when `dnsPolicy` is None"));
            return;
        };
        if arr(cfg, "nameservers").is_empty() {
            out.push(field::required(
                &p.child("nameservers"),
                "must provide at least one DNS nameserver when `dnsPolicy` is None",
            ));
            return;
        }
    }
    let Some(cfg) = cfg else { return };
    let ns = arr(cfg, "nameservers");
    let np = p.child("nameservers");
    if ns.len() > 3 {
        out.push(field::invalid(
            &np,
            govalue::string_slice(cfg.get("nameservers")),
            "must not have more than 3 nameservers",
        ));
    }
    for (i, n) in ns.iter().enumerate() {
        net::validate_ip(&np.index(i), n.as_str().unwrap_or(""), out);
    }
    let searches = arr(cfg, "searches");
    let sp = p.child("searches");
    if searches.len() > 32 {
        out.push(field::invalid(
            &sp,
            govalue::string_slice(cfg.get("searches")),
            "must not have more than 32 search paths",
        ));
    }
    let chars: usize =
        searches.iter().map(|s| s.as_str().map_or(0, str::len)).sum::<usize>() + searches.len().saturating_sub(1);
    if chars > 2048 {
        out.push(field::invalid(
            &sp,
            govalue::string_slice(cfg.get("searches")),
            "must not have more than 2048 characters (including spaces) in the search list",
        ));
    }
    for (i, s) in searches.iter().enumerate() {
        let s = s.as_str().unwrap_or("");
        if s != "." {
            let s = s.strip_suffix('.').unwrap_or(s);
            for msg in names::dns1123_subdomain_underscore_errors(s) {
                out.push(field::invalid(&sp.index(i), s, &msg));
            }
        }
    }
    let op = p.child("options");
    for (i, o) in arr(cfg, "options").iter().enumerate() {
        if str_of(o, "name").is_empty() {
            out.push(field::required(&op.index(i), "must not be empty"));
        }
    }
}

// ---- update ----

const UPDATABLE: &str = "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// The pod-specific part of ValidatePodUpdate, after the new pod itself
/// has been validated.
pub(crate) fn pod_update(old: &Value, new: &Value, out: &mut Vec<FieldError>) {
    let sp = Path::root("spec");
    let os = old.get("spec").unwrap_or(&NULL);
    let ns = new.get("spec").unwrap_or(&NULL);
    for list in ["containers", "initContainers"] {
        let lp = sp.child(list);
        let (oc, nc) = (arr(os, list), arr(ns, list));
        if oc.len() != nc.len() {
            out.push(field::forbidden(&lp, "pod updates may not add or remove containers"));
            return;
        }
        for (i, c) in nc.iter().enumerate() {
            let image = str_of(c, "image");
            if image.is_empty() {
                out.push(field::required(&lp.index(i).child("image"), ""));
            }
            if image.trim().len() != image.len() {
                out.push(field::invalid(
                    &lp.index(i).child("image"),
                    image,
                    "must not have leading or trailing whitespace",
                ));
            }
        }
    }
    let adp = sp.child("activeDeadlineSeconds");
    match (int_of(os, "activeDeadlineSeconds"), int_of(ns, "activeDeadlineSeconds")) {
        (_, Some(n)) if !(0..=MAX_INT32).contains(&n) => {
            out.push(field::invalid(&adp, n, "must be between 0 and 2147483647, inclusive"));
            return;
        }
        (Some(o), Some(n)) if o < n => {
            out.push(field::invalid(&adp, n, "must be less than or equal to previous value"));
            return;
        }
        (Some(_), None) => {
            out.push(field::invalid(&adp, "null", "must not update from a positive integer to nil value"))
        }
        _ => {}
    }
    let (ot, nt) = (arr(os, "tolerations"), arr(ns, "tolerations"));
    let tp = sp.child("tolerations");
    let same_but_seconds =
        |a: &Value, b: &Value| ["key", "operator", "value", "effect"].iter().all(|k| str_of(a, k) == str_of(b, k));
    // (Kubernetes validates the new tolerations again here; they were
    // validated with the spec, and the message would list them twice)
    if ot.iter().any(|o| !nt.iter().any(|n| same_but_seconds(o, n))) {
        out.push(field::forbidden(&tp, "existing toleration can not be modified except its tolerationSeconds"));
    }
    let gp = sp.child("schedulingGates");
    let old_gates: Vec<&str> = arr(os, "schedulingGates").iter().map(|g| str_of(g, "name")).collect();
    for (i, g) in arr(ns, "schedulingGates").iter().enumerate() {
        let name = str_of(g, "name");
        if !old_gates.contains(&name) {
            let ip = gp.index(i);
            out.push(field::forbidden(
                &ip.child("name"),
                &format!("only deletion is allowed, but found new scheduling gate '{name}'"),
            ));
        }
    }
    if super::semantic_eq(Some(os), Some(ns)) {
        return;
    }
    // what may change is put back to the old values before comparing
    let mut munged = ns.clone();
    if let Some(m) = munged.as_object_mut() {
        for list in ["containers", "initContainers"] {
            if let Some(cs) = m.get_mut(list).and_then(Value::as_array_mut) {
                for (c, o) in cs.iter_mut().zip(arr(os, list)) {
                    if let (Some(c), Some(img)) = (c.as_object_mut(), o.get("image")) {
                        c.insert("image".into(), img.clone());
                    }
                }
            }
        }
        for k in ["activeDeadlineSeconds", "schedulingGates", "tolerations"] {
            match os.get(k) {
                Some(v) => {
                    m.insert(k.into(), v.clone());
                }
                None => {
                    m.remove(k);
                }
            }
        }
        let old_grace = int_of(os, "terminationGracePeriodSeconds");
        if old_grace.is_some_and(|g| g < 0) && int_of(ns, "terminationGracePeriodSeconds") == Some(1) {
            if let Some(g) = os.get("terminationGracePeriodSeconds") {
                m.insert("terminationGracePeriodSeconds".into(), g.clone());
            }
        }
    }
    if !super::semantic_eq(Some(os), Some(&munged)) {
        out.push(field::forbidden(
            &sp,
            &format!("pod updates may not change fields other than {UPDATABLE}\n{}", spec_diff(os, &munged)),
        ));
    }
}

/// A short cmp.Diff-like account of the top-level spec fields that differ.
fn spec_diff(old: &Value, new: &Value) -> String {
    let mut keys: Vec<&String> = Vec::new();
    for o in [old, new] {
        for k in o.as_object().into_iter().flat_map(|m| m.keys()) {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    let mut out = String::from("  core.PodSpec{\n");
    for k in keys {
        let (a, b) = (old.get(k.as_str()), new.get(k.as_str()));
        if super::semantic_eq(a, b) {
            continue;
        }
        let mut go_name = k.clone();
        if let Some(f) = go_name.get_mut(0..1) {
            f.make_ascii_uppercase();
        }
        let show = |v: Option<&Value>| v.map_or_else(|| "nil".to_string(), Value::to_string);
        out.push_str(&format!("- \t{go_name}: {},\n+ \t{go_name}: {},\n", show(a), show(b)));
    }
    out.push_str("  }\n");
    out
}
