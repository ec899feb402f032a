//! Validation with Kubernetes' rules and message shapes. Each error is a
//! field path and a message (`metadata.name: Invalid value: "Foo": ...`).

use serde_json::Value;

use crate::ResourceType;

/// One validation failure: Kubernetes' field.Error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// `FieldValueInvalid`, `FieldValueRequired`, ...
    pub reason: &'static str,
    pub field: String,
    /// The message after the field path: `Invalid value: "x": ...`.
    pub message: String,
}

impl FieldError {
    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        let message = if detail.is_empty() { "Required value".to_string() } else { format!("Required value: {detail}") };
        FieldError { reason: "FieldValueRequired", field: field.into(), message }
    }

    pub fn invalid(field: impl Into<String>, value: &str, detail: &str) -> Self {
        FieldError {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: \"{value}\": {detail}"),
        }
    }

    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        FieldError {
            reason: "FieldValueTooLong",
            field: field.into(),
            message: format!("Too long: may not be more than {max} bytes"),
        }
    }
}

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

/// How a kind's names are checked.
fn name_rule(rt: &ResourceType) -> fn(&str) -> Vec<String> {
    fn label(s: &str) -> Vec<String> {
        let mut v = Vec::new();
        if s.len() > 63 {
            v.push("must be no more than 63 characters".to_string());
        }
        if !is_dns1123_label(s) {
            v.push(DNS1123_LABEL_MSG.to_string());
        }
        v
    }
    fn dns1035(s: &str) -> Vec<String> {
        let mut v = Vec::new();
        if s.len() > 63 {
            v.push("must be no more than 63 characters".to_string());
        }
        if !is_dns1035_label(s) {
            v.push(DNS1035_LABEL_MSG.to_string());
        }
        v
    }
    fn subdomain(s: &str) -> Vec<String> {
        let mut v = Vec::new();
        if s.len() > 253 {
            v.push("must be no more than 253 characters".to_string());
        }
        if !is_dns1123_subdomain(s) {
            v.push(DNS1123_SUBDOMAIN_MSG.to_string());
        }
        v
    }
    fn path_segment(s: &str) -> Vec<String> {
        if s == "." || s == ".." {
            vec![format!("may not be '{s}'")]
        } else if s.contains('/') || s.contains('%') {
            vec!["may not contain '/'".to_string()]
        } else {
            Vec::new()
        }
    }
    match rt.kind {
        "Namespace" => label,
        "Service" => dns1035,
        "Event" => path_segment,
        _ => subdomain,
    }
}

fn validate_label_key(field: &str, key: &str, out: &mut Vec<FieldError>) {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !name_ok {
        out.push(FieldError::invalid(field, key, "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"));
    }
    if let Some(p) = prefix {
        if !is_dns1123_subdomain(p) {
            out.push(FieldError::invalid(field, key, &format!("prefix part {DNS1123_SUBDOMAIN_MSG}")));
        }
    }
}

fn validate_labels(labels: &Value, field: &str, out: &mut Vec<FieldError>) {
    let Some(map) = labels.as_object() else { return };
    for (k, v) in map {
        validate_label_key(field, k, out);
        let v = v.as_str().unwrap_or("");
        let ok = v.is_empty()
            || (v.len() <= 63
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                && v.starts_with(|c: char| c.is_ascii_alphanumeric())
                && v.ends_with(|c: char| c.is_ascii_alphanumeric()));
        if !ok {
            out.push(FieldError::invalid(field, v, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"));
        }
    }
}

const TOTAL_ANNOTATION_SIZE: usize = 256 * 1024;

fn validate_annotations(annotations: &Value, out: &mut Vec<FieldError>) {
    let Some(map) = annotations.as_object() else { return };
    let mut total = 0;
    for (k, v) in map {
        validate_label_key("metadata.annotations", &k.to_lowercase(), out);
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE {
        out.push(FieldError::too_long("metadata.annotations", TOTAL_ANNOTATION_SIZE));
    }
}

/// Validate an object's metadata for `rt`. `name` is the final name (after
/// generateName).
pub fn validate_metadata(rt: &ResourceType, obj: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    let meta = obj.get("metadata");
    let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        out.push(FieldError::required("metadata.name", "name or generateName is required"));
    } else {
        for msg in name_rule(rt)(name) {
            out.push(FieldError::invalid("metadata.name", name, &msg));
        }
    }
    if let Some(labels) = meta.and_then(|m| m.get("labels")) {
        validate_labels(labels, "metadata.labels", &mut out);
    }
    if let Some(a) = meta.and_then(|m| m.get("annotations")) {
        validate_annotations(a, &mut out);
    }
    out
}

/// Kind-specific checks the API server core needs (the rest come with
/// full validation).
pub fn validate(rt: &ResourceType, obj: &Value) -> Vec<FieldError> {
    let mut out = validate_metadata(rt, obj);
    match rt.kind {
        "Deployment" | "ReplicaSet" => validate_selector_matches_template(obj, &mut out),
        "Service" => validate_service_ports(obj, &mut out),
        _ => {}
    }
    out
}

fn validate_selector_matches_template(obj: &Value, out: &mut Vec<FieldError>) {
    let Some(selector) = obj.pointer("/spec/selector") else {
        out.push(FieldError::required("spec.selector", ""));
        return;
    };
    let labels = obj.pointer("/spec/template/metadata/labels");
    if let Some(ml) = selector.get("matchLabels").and_then(Value::as_object) {
        let ok = ml.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
        if !ok {
            let got = labels.map(|l| go_map(l)).unwrap_or_else(|| "map[string]string(nil)".into());
            out.push(FieldError {
                reason: "FieldValueInvalid",
                field: "spec.template.metadata.labels".into(),
                message: format!("Invalid value: {got}: `selector` does not match template `labels`"),
            });
        }
    }
}

/// Go's `%#v` of a map[string]string, as Kubernetes messages print it.
fn go_map(v: &Value) -> String {
    let mut pairs: Vec<String> = v
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{:?}:{:?}", k, v.as_str().unwrap_or(""))).collect())
        .unwrap_or_default();
    pairs.sort();
    format!("map[string]string{{{}}}", pairs.join(", "))
}

fn validate_service_ports(obj: &Value, out: &mut Vec<FieldError>) {
    let ty = obj.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP");
    let ports = obj.pointer("/spec/ports").and_then(Value::as_array);
    let headless = obj.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
    if ports.is_none_or(|p| p.is_empty()) && ty != "ExternalName" && !headless {
        out.push(FieldError::required("spec.ports", ""));
    }
    for (i, p) in ports.into_iter().flatten().enumerate() {
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&port) {
            out.push(FieldError {
                reason: "FieldValueInvalid",
                field: format!("spec.ports[{i}].port"),
                message: format!("Invalid value: {port}: must be between 1 and 65535, inclusive"),
            });
        }
        if ports.is_some_and(|ps| ps.len() > 1) && p.get("name").and_then(Value::as_str).unwrap_or("").is_empty() {
            out.push(FieldError::required(format!("spec.ports[{i}].name"), ""));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rt(plural: &str) -> &'static ResourceType {
        crate::catalogue::all().iter().find(|r| r.plural == plural).unwrap()
    }

    #[test]
    fn names_follow_each_kinds_rule() {
        let e = validate_metadata(rt("pods"), &json!({"metadata": {"name": "Web"}}));
        assert_eq!(e.len(), 1);
        assert!(e[0].message.starts_with("Invalid value: \"Web\": a lowercase RFC 1123 subdomain"));
        assert!(validate_metadata(rt("pods"), &json!({"metadata": {"name": "a.b"}})).is_empty());
        assert!(!validate_metadata(rt("services"), &json!({"metadata": {"name": "1abc"}})).is_empty());
        let e = validate_metadata(rt("pods"), &json!({"metadata": {}}));
        assert_eq!(e[0].message, "Required value: name or generateName is required");
    }

    #[test]
    fn selector_must_match_template() {
        let d = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "b"}}}}});
        let e = validate(rt("deployments"), &d);
        assert_eq!(e[0].field, "spec.template.metadata.labels");
        assert_eq!(e[0].message, "Invalid value: map[string]string{\"app\":\"b\"}: `selector` does not match template `labels`");
    }
}
