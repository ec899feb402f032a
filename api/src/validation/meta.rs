//! ObjectMeta (names, labels, annotations, owner references, finalizers)
//! and label selectors, as apimachinery validates them.

use serde_json::Value;

use super::field::{self, Path};
use super::names;
use super::{govalue, str_of, FieldError};
use crate::ResourceType;

/// How a kind's names are checked.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameRule {
    /// NameIsDNSSubdomain: most kinds.
    Subdomain,
    /// NameIsDNSLabel: namespaces.
    Label,
    /// NameIsDNS1035Label: services.
    Dns1035,
    /// ValidatePathSegmentName: what the generic registry requires of any
    /// name (events have no stricter rule).
    PathSegment,
}

pub(crate) fn name_rule(rt: &ResourceType) -> NameRule {
    match rt.kind {
        "Namespace" => NameRule::Label,
        "Service" => NameRule::Dns1035,
        "Event" => NameRule::PathSegment,
        _ => NameRule::Subdomain,
    }
}

/// A ValidateNameFunc: `prefix` is true for a generateName.
pub(crate) fn name_errors(rule: NameRule, name: &str, prefix: bool) -> Vec<String> {
    let name = if prefix { names::mask_trailing_dash(name) } else { name.into() };
    match rule {
        NameRule::Subdomain => names::dns1123_subdomain_errors(&name),
        NameRule::Label => names::dns1123_label_errors(&name),
        NameRule::Dns1035 => names::dns1035_label_errors(&name),
        NameRule::PathSegment => names::path_segment_errors(&name),
    }
}

/// ValidateObjectMeta for an object whose name generation has happened.
pub(crate) fn object_meta(obj: &Value, rule: NameRule, namespaced: bool, out: &mut Vec<FieldError>) {
    let meta = obj.get("metadata");
    let get = |k: &str| meta.and_then(|m| m.get(k));
    let p = Path::root("metadata");
    let generate = get("generateName").and_then(Value::as_str).unwrap_or("");
    if !generate.is_empty() {
        for msg in name_errors(rule, generate, true) {
            out.push(field::invalid(&p.child("generateName"), generate, &msg));
        }
    }
    let name = get("name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        out.push(field::required(&p.child("name"), "name or generateName is required"));
    } else {
        for msg in name_errors(rule, name, false) {
            out.push(field::invalid(&p.child("name"), name, &msg));
        }
    }
    let namespace = get("namespace").and_then(Value::as_str).unwrap_or("");
    if namespaced {
        if namespace.is_empty() {
            out.push(field::required(&p.child("namespace"), ""));
        } else {
            for msg in names::dns1123_label_errors(namespace) {
                out.push(field::invalid(&p.child("namespace"), namespace, &msg));
            }
        }
    } else if !namespace.is_empty() {
        out.push(field::forbidden(&p.child("namespace"), "not allowed on this type"));
    }
    labels(get("labels"), &p.child("labels"), out);
    annotations(get("annotations"), &p.child("annotations"), out);
    owner_references(get("ownerReferences"), &p.child("ownerReferences"), out);
    let finalizers_path = p.child("finalizers");
    finalizers(get("finalizers"), &finalizers_path, out);
    if rule != NameRule::PathSegment {
        for (i, f) in get("finalizers").and_then(Value::as_array).into_iter().flatten().enumerate() {
            kube_finalizer_name(f.as_str().unwrap_or(""), &finalizers_path.index(i), out);
        }
    }
}

/// ValidateLabelName: a qualified name.
pub(crate) fn label_name(key: &str, p: &Path, out: &mut Vec<FieldError>) {
    for msg in names::qualified_name_errors(key) {
        out.push(field::invalid(p, key, &msg));
    }
}

/// ValidateLabels: every key a qualified name, every value a label value.
pub(crate) fn labels(v: Option<&Value>, p: &Path, out: &mut Vec<FieldError>) {
    for (k, v) in v.and_then(Value::as_object).into_iter().flatten() {
        label_name(k, p, out);
        let v = v.as_str().unwrap_or("");
        for msg in names::label_value_errors(v) {
            out.push(field::invalid(p, v, &msg));
        }
    }
}

const TOTAL_ANNOTATION_SIZE: usize = 256 * 1024;

/// ValidateAnnotations: keys are qualified names in any case; at most
/// 256 KiB in all.
pub(crate) fn annotations(v: Option<&Value>, p: &Path, out: &mut Vec<FieldError>) {
    let Some(map) = v.and_then(Value::as_object) else { return };
    let mut total = 0;
    for (k, v) in map {
        if k.bytes().any(|b| b.is_ascii_uppercase()) {
            for msg in names::qualified_name_errors(&k.to_ascii_lowercase()) {
                out.push(field::invalid(p, k, &msg));
            }
        } else {
            for msg in names::qualified_name_errors(k) {
                out.push(field::invalid(p, k, &msg));
            }
        }
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE {
        out.push(field::too_long(p, TOTAL_ANNOTATION_SIZE));
    }
}

fn owner_reference_go(r: &Value) -> String {
    let ptr = |k: &str| if r.get(k).is_some_and(|v| !v.is_null()) { "(*bool)(0xc000000000)" } else { "(*bool)(nil)" };
    format!(
        "v1.OwnerReference{{APIVersion:{}, Kind:{}, Name:{}, UID:{}, Controller:{}, BlockOwnerDeletion:{}}}",
        govalue::quote(str_of(r, "apiVersion")),
        govalue::quote(str_of(r, "kind")),
        govalue::quote(str_of(r, "name")),
        govalue::quote(str_of(r, "uid")),
        ptr("controller"),
        ptr("blockOwnerDeletion")
    )
}

/// ValidateOwnerReferences. The paths are not indexed, as in Kubernetes.
fn owner_references(v: Option<&Value>, p: &Path, out: &mut Vec<FieldError>) {
    let Some(refs) = v.and_then(Value::as_array) else { return };
    let mut first_controller: Option<String> = None;
    for r in refs {
        let api_version = str_of(r, "apiVersion");
        let version = match api_version.matches('/').count() {
            0 => api_version,
            1 => api_version.split_once('/').map_or("", |(_, v)| v),
            _ => "",
        };
        let group =
            if api_version.matches('/').count() == 1 { api_version.split_once('/').map_or("", |(g, _)| g) } else { "" };
        let kind = str_of(r, "kind");
        if version.is_empty() {
            out.push(field::invalid(&p.child("apiVersion"), api_version, "version must not be empty"));
        }
        if kind.is_empty() {
            out.push(field::invalid(&p.child("kind"), kind, "kind must not be empty"));
        }
        if str_of(r, "name").is_empty() {
            out.push(field::invalid(&p.child("name"), "", "name must not be empty"));
        }
        if str_of(r, "uid").is_empty() {
            out.push(field::invalid(&p.child("uid"), "", "uid must not be empty"));
        }
        if group.is_empty() && version == "v1" && kind == "Event" {
            out.push(field::invalid(p, owner_reference_go(r), "/v1, Kind=Event is disallowed from being an owner"));
        }
        if r.get("controller").and_then(Value::as_bool) == Some(true) {
            let current = format!("{kind}/{}", str_of(r, "name"));
            match &first_controller {
                Some(first) => {
                    let all: Vec<String> = refs.iter().map(owner_reference_go).collect();
                    out.push(field::invalid(
                        p,
                        format!("[]v1.OwnerReference{{{}}}", all.join(", ")),
                        &format!("Only one reference can have Controller set to true. Found \"true\" in references for {first} and {current}"),
                    ));
                }
                None => first_controller = Some(current),
            }
        }
    }
}

/// ValidateFinalizers: qualified names, and not both orphan and
/// foregroundDeletion.
fn finalizers(v: Option<&Value>, p: &Path, out: &mut Vec<FieldError>) {
    let Some(list) = v.and_then(Value::as_array) else { return };
    let (mut orphan, mut foreground) = (false, false);
    for f in list {
        let f = f.as_str().unwrap_or("");
        for msg in names::qualified_name_errors(f) {
            out.push(field::invalid(p, f, &msg));
        }
        orphan |= f == "orphan";
        foreground |= f == "foregroundDeletion";
    }
    if orphan && foreground {
        out.push(field::invalid(
            p,
            govalue::string_slice(v),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
}

/// validateKubeFinalizerName: a name without a domain must be one of the
/// standard finalizers.
pub(crate) fn kube_finalizer_name(f: &str, p: &Path, out: &mut Vec<FieldError>) {
    if !f.contains('/') && !matches!(f, "kubernetes" | "orphan" | "foregroundDeletion") {
        out.push(field::invalid(p, f, "name is neither a standard finalizer name nor is it fully qualified"));
    }
}

/// ValidateObjectMetaUpdate, for what the API server does not already
/// carry over from the stored object: no new finalizers while deleting.
pub(crate) fn meta_update(old: &Value, new: &Value, out: &mut Vec<FieldError>) {
    let deleting = old.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null());
    if !deleting {
        return;
    }
    let list = |o: &Value| -> Vec<String> {
        o.pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default()
    };
    let old_f = list(old);
    let mut extra: Vec<String> = list(new).into_iter().filter(|f| !old_f.contains(f)).collect();
    if !extra.is_empty() {
        extra.sort();
        extra.dedup();
        let shown = Value::from(extra);
        out.push(field::forbidden(
            &Path::root("metadata").child("finalizers"),
            &format!(
                "no new finalizers can be added if the object is being deleted, found new finalizers {}",
                govalue::string_slice(Some(&shown))
            ),
        ));
    }
}

/// ValidateLabelSelector with invalid label values refused.
pub(crate) fn label_selector(sel: &Value, p: &Path, out: &mut Vec<FieldError>) {
    labels(sel.get("matchLabels"), &p.child("matchLabels"), out);
    let exprs_path = p.child("matchExpressions");
    for (i, e) in sel.get("matchExpressions").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let ep = exprs_path.index(i);
        let values = e.get("values").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        match str_of(e, "operator") {
            "In" | "NotIn" => {
                if values.is_empty() {
                    out.push(field::required(
                        &ep.child("values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    out.push(field::forbidden(
                        &ep.child("values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            op => out.push(field::invalid(&ep.child("operator"), op, "not a valid selector operator")),
        }
        label_name(str_of(e, "key"), &ep.child("key"), out);
        let vp = ep.child("values");
        for (j, v) in values.iter().enumerate() {
            let v = v.as_str().unwrap_or("");
            for msg in names::label_value_errors(v) {
                out.push(field::invalid(&vp.index(j), v, &msg));
            }
        }
    }
}

/// Whether a selector selects nothing in particular (LabelSelectorAsSelector
/// gives labels.Everything()).
pub(crate) fn selector_is_empty(sel: &Value) -> bool {
    sel.get("matchLabels").and_then(Value::as_object).is_none_or(|m| m.is_empty())
        && sel.get("matchExpressions").and_then(Value::as_array).is_none_or(|a| a.is_empty())
}

/// Whether a (valid) selector matches a set of labels.
pub(crate) fn selector_matches(sel: &Value, labels: Option<&Value>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    let ml = sel.get("matchLabels").and_then(Value::as_object).into_iter().flatten();
    if !ml.into_iter().all(|(k, v)| get(k) == v.as_str()) {
        return false;
    }
    sel.get("matchExpressions").and_then(Value::as_array).into_iter().flatten().all(|e| {
        let have = get(str_of(e, "key"));
        let values = e.get("values").and_then(Value::as_array);
        let listed = |h: &str| values.is_some_and(|vs| vs.iter().any(|v| v.as_str() == Some(h)));
        match str_of(e, "operator") {
            "In" => have.is_some_and(listed),
            "NotIn" => !have.is_some_and(listed),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(f: impl FnOnce(&mut Vec<FieldError>)) -> Vec<String> {
        let mut out = Vec::new();
        f(&mut out);
        out.into_iter().map(|e| format!("{}: {}", e.field, e.message)).collect()
    }

    #[test]
    fn names_namespaces_and_generate_name() {
        let e = run(|o| {
            object_meta(&json!({"metadata": {"generateName": "Web-", "name": "Web-x"}}), NameRule::Subdomain, false, o)
        });
        assert_eq!(e.len(), 2);
        assert!(e[0].starts_with("metadata.generateName: Invalid value: \"Web-\": a lowercase RFC 1123 subdomain"));
        assert!(e[1].starts_with("metadata.name: Invalid value: \"Web-x\""));
        let e = run(|o| object_meta(&json!({"metadata": {"name": "a"}}), NameRule::Subdomain, true, o));
        assert_eq!(e, vec!["metadata.namespace: Required value"]);
        let e =
            run(|o| object_meta(&json!({"metadata": {"name": "a", "namespace": "x"}}), NameRule::Subdomain, false, o));
        assert_eq!(e, vec!["metadata.namespace: Forbidden: not allowed on this type"]);
        let e = run(|o| object_meta(&json!({"metadata": {"name": "a.b"}}), NameRule::Label, false, o));
        assert_eq!(e, vec!["metadata.name: Invalid value: \"a.b\": must not contain dots"]);
    }

    #[test]
    fn labels_and_annotations() {
        let e = run(|o| labels(Some(&json!({"app": "-x"})), &Path::root("metadata").child("labels"), o));
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("metadata.labels: Invalid value: \"-x\": a valid label must be an empty string"));
        let e = run(|o| labels(Some(&json!({"a/b/c": "x"})), &Path::root("l"), o));
        assert!(e[0].starts_with("l: Invalid value: \"a/b/c\": a qualified name must consist of"));
        // annotation keys are checked in lower case but reported as given
        assert!(run(|o| annotations(Some(&json!({"Example.com/Key": "v"})), &Path::root("a"), o)).is_empty());
        let big = "x".repeat(TOTAL_ANNOTATION_SIZE);
        let e = run(|o| annotations(Some(&json!({"k": big})), &Path::root("metadata").child("annotations"), o));
        assert_eq!(e, vec!["metadata.annotations: Too long: may not be more than 262144 bytes"]);
    }

    #[test]
    fn owner_references_and_finalizers() {
        let meta = json!({"metadata": {"name": "a", "ownerReferences": [{"apiVersion": "", "kind": "ReplicaSet", "name": "rs", "uid": ""}], "finalizers": ["foo", "example.com/x"]}});
        let e = run(|o| object_meta(&meta, NameRule::Subdomain, false, o));
        assert_eq!(
            e,
            vec![
                "metadata.ownerReferences.apiVersion: Invalid value: \"\": version must not be empty",
                "metadata.ownerReferences.uid: Invalid value: \"\": uid must not be empty",
                "metadata.finalizers[0]: Invalid value: \"foo\": name is neither a standard finalizer name nor is it fully qualified",
            ]
        );
    }

    #[test]
    fn no_new_finalizers_while_deleting() {
        let old = json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z", "finalizers": ["a/b"]}});
        let new = json!({"metadata": {"finalizers": ["a/b", "c/d"]}});
        let e = run(|o| meta_update(&old, &new, o));
        assert_eq!(
            e,
            vec!["metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"c/d\"}"]
        );
    }

    #[test]
    fn selectors_validate_and_match() {
        let sel = json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": []}, {"key": "x", "operator": "Bogus"}]});
        let e = run(|o| label_selector(&sel, &Path::root("spec").child("selector"), o));
        assert_eq!(
            e,
            vec![
                "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
                "spec.selector.matchExpressions[1].operator: Invalid value: \"Bogus\": not a valid selector operator",
            ]
        );
        let sel = json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]});
        assert!(selector_matches(&sel, Some(&json!({"app": "web"}))));
        assert!(!selector_matches(&sel, Some(&json!({"app": "web", "tier": "db"}))));
        assert!(selector_is_empty(&json!({"matchLabels": {}})));
    }
}
