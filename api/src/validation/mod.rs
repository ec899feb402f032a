//! Validation with Kubernetes' rules and message shapes. Each error is a
//! field path and a message (`metadata.name: Invalid value: "Foo": ...`),
//! built as apimachinery's `field.Error` prints itself, and they are all
//! collected, in the order Kubernetes reports them, so that one 422 names
//! every cause.
//!
//! [`validate`] is a create's validation and [`validate_update`] an update's
//! (the new object's validation plus the rules that compare it with the
//! stored one). Both run after defaulting (see [`crate::defaults`]); where
//! Kubernetes would have defaulted a field Skiff does not, the checks treat
//! the field as defaulted rather than report it.

mod apps;
mod cluster;
mod config;
mod events;
mod field;
mod govalue;
mod meta;
mod names;
mod net;
mod networking;
mod pod;
mod quantity;
mod service;

#[cfg(test)]
mod tests;

use serde_json::Value;

use crate::ResourceType;

pub use names::{is_dns1035_label, is_dns1123_label, is_dns1123_subdomain};
pub use service::normalize_service;

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
        let message =
            if detail.is_empty() { "Required value".to_string() } else { format!("Required value: {detail}") };
        FieldError { reason: "FieldValueRequired", field: field.into(), message }
    }

    pub fn invalid(field: impl Into<String>, value: &str, detail: &str) -> Self {
        FieldError {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {}: {detail}", govalue::quote(value)),
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

static NULL: Value = Value::Null;

/// A string field, `""` when absent (Go's zero value).
fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// An integer field, if set.
fn int_of(v: &Value, k: &str) -> Option<i64> {
    v.get(k).and_then(Value::as_i64)
}

/// A list field, empty when absent.
fn arr<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    v.get(k).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// apiequality.Semantic.DeepEqual on JSON: absent, null and empty values
/// are equal, as nil and empty are in Go.
fn semantic_eq(a: Option<&Value>, b: Option<&Value>) -> bool {
    fn empty(v: Option<&Value>) -> bool {
        match v {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(Value::Bool(b)) => !b,
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Object(o)) => o.is_empty(),
            Some(Value::Number(_)) => false,
        }
    }
    if empty(a) && empty(b) {
        return true;
    }
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            x.iter().all(|(k, v)| semantic_eq(Some(v), y.get(k)))
                && y.iter().all(|(k, v)| x.contains_key(k) || empty(Some(v)))
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| semantic_eq(Some(a), Some(b)))
        }
        (Some(Value::Number(x)), Some(Value::Number(y))) => x.as_f64() == y.as_f64(),
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// Validate an object's metadata for `rt`: its name (by the kind's rule),
/// namespace, labels, annotations, owner references and finalizers.
/// `name` is the final name (after generateName).
pub fn validate_metadata(rt: &ResourceType, obj: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    meta::object_meta(obj, meta::name_rule(rt), rt.namespaced, &mut out);
    out
}

/// Validate an object being created, after defaulting.
pub fn validate(rt: &ResourceType, obj: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    match rt.kind {
        "Pod" => pod::validate_pod(obj, true, &mut out),
        "Deployment" | "ReplicaSet" => apps::validate(rt.kind, obj, &mut out),
        "Service" => service::validate(obj, &mut out),
        "Endpoints" => service::validate_endpoints(obj, &mut out),
        "EndpointSlice" => service::validate_slice(obj, false, &mut out),
        "Ingress" => networking::validate_ingress(obj, true, &mut out),
        "IngressClass" => networking::validate_class(obj, &mut out),
        "Secret" => config::validate_secret(obj, &mut out),
        "ConfigMap" => config::validate_config_map(obj, &mut out),
        "Namespace" => cluster::validate_namespace(obj, &mut out),
        "Node" => cluster::validate_node(obj, &mut out),
        "Lease" => cluster::validate_lease(obj, &mut out),
        "Event" if rt.is_view() => events::validate_v1_create(&crate::convert::to_stored(rt, obj.clone()), &mut out),
        "Event" => events::validate_core(obj, &mut out),
        _ => meta::object_meta(obj, meta::name_rule(rt), rt.namespaced, &mut out),
    }
    out
}

/// Validate an update of `old` to `new` (after defaulting): the new
/// object's own validation and the rules on what may change, in the order
/// Kubernetes reports them.
pub fn validate_update(rt: &ResourceType, old: &Value, new: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    meta::meta_update(old, new, &mut out);
    match rt.kind {
        "Pod" => {
            pod::validate_pod(new, false, &mut out);
            pod::pod_update(old, new, &mut out);
        }
        "Deployment" | "ReplicaSet" => {
            apps::validate(rt.kind, new, &mut out);
            apps::selector_update(old, new, &mut out);
        }
        "Service" => {
            let mut normalized = new.clone();
            service::normalize_service(Some(old), &mut normalized);
            service::update(old, &normalized, &mut out);
            service::validate(&normalized, &mut out);
        }
        "EndpointSlice" => {
            service::validate_slice(new, true, &mut out);
            service::slice_update(old, new, &mut out);
        }
        "Ingress" => networking::validate_ingress(new, false, &mut out),
        "IngressClass" => {
            networking::class_update(old, new, &mut out);
            networking::validate_class(new, &mut out);
        }
        "Secret" => {
            config::update(rt.kind, old, new, &mut out);
            config::validate_secret(new, &mut out);
        }
        "ConfigMap" => {
            config::update(rt.kind, old, new, &mut out);
            config::validate_config_map(new, &mut out);
        }
        "Node" => {
            cluster::validate_node(new, &mut out);
            cluster::node_update(old, new, &mut out);
        }
        "Event" if rt.is_view() => {
            let (old, new) = (crate::convert::to_stored(rt, old.clone()), crate::convert::to_stored(rt, new.clone()));
            events::validate_v1_update(&old, &new, &mut out);
        }
        _ => out.extend(validate(rt, new)),
    }
    out
}

/// Validate a write to a subresource (`status`, `finalize`): Kubernetes
/// checks the metadata and the status, never the spec carried over from
/// the stored object.
pub fn validate_status_update(rt: &ResourceType, old: &Value, new: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    meta::meta_update(old, new, &mut out);
    meta::object_meta(new, meta::name_rule(rt), rt.namespaced, &mut out);
    out
}
