//! Events, as `pkg/apis/core/validation/events.go` checks them. Both APIs
//! store one object, so the rules read the core/v1 form (an events.k8s.io/v1
//! Event is converted first) and name core fields in their paths, as
//! Kubernetes does: `involvedObject.namespace`, `firstTimestamp`, but
//! `reportingController` (the internal field's name).
//!
//! A core/v1 write gets only the legacy rules; an events.k8s.io/v1 write
//! gets the strict ones on top (eventTime required, the deprecated fields
//! unset, and on update most fields immutable).

use std::fmt::Write;

use serde_json::Value;

use super::field::{self, Path};
use super::meta::{self, NameRule};
use super::names;
use super::{govalue, semantic_eq, str_of, FieldError};

const REPORTING_INSTANCE_LENGTH_LIMIT: usize = 128;
const ACTION_LENGTH_LIMIT: usize = 128;
const REASON_LENGTH_LIMIT: usize = 128;
const NOTE_LENGTH_LIMIT: usize = 1024;

/// Whether a `metav1.Time`/`MicroTime` field holds Go's zero time.
fn zero_time(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty() || s.starts_with("0001-01-01T00:00:00"),
        Some(_) => false,
    }
}

/// A core/v1 Event write (ValidateEventCreate/Update for `v1`): the legacy
/// rules; Kubernetes checks the generic metadata rules only once these pass.
pub(crate) fn validate_core(obj: &Value, out: &mut Vec<FieldError>) {
    let before = out.len();
    legacy(obj, out);
    if out.len() == before {
        meta::object_meta(obj, NameRule::PathSegment, true, out);
    }
}

/// An events.k8s.io/v1 create, `obj` in its core/v1 form.
pub(crate) fn validate_v1_create(obj: &Value, out: &mut Vec<FieldError>) {
    let before = out.len();
    legacy(obj, out);
    meta::object_meta(obj, NameRule::Subdomain, true, out);
    series(obj, out);
    if zero_time(obj.get("eventTime")) {
        out.push(field::required(&Path::root("eventTime"), ""));
    }
    let kind = str_of(obj, "type");
    if kind != "Normal" && kind != "Warning" {
        out.push(field::invalid(&Path::root("type"), "", &format!("has invalid value: {kind}")));
    }
    const UNSET: &str = "needs to be unset";
    for f in ["firstTimestamp", "lastTimestamp"] {
        if !zero_time(obj.get(f)) {
            out.push(field::invalid(&Path::root(f), "", UNSET));
        }
    }
    if obj.get("count").and_then(Value::as_i64).unwrap_or(0) != 0 {
        out.push(field::invalid(&Path::root("count"), "", UNSET));
    }
    let source = obj.get("source");
    let source_field = |k: &str| source.and_then(|s| s.get(k)).and_then(Value::as_str).unwrap_or("");
    if !source_field("component").is_empty() || !source_field("host").is_empty() {
        out.push(field::invalid(&Path::root("source"), "", UNSET));
    }
    if out.len() == before {
        meta::object_meta(obj, NameRule::PathSegment, true, out);
    }
}

/// An events.k8s.io/v1 update of `old` to `new`, both in core/v1 form (the
/// metadata update rules are checked by the caller for every kind).
pub(crate) fn validate_v1_update(old: &Value, new: &Value, out: &mut Vec<FieldError>) {
    legacy(new, out);
    if !semantic_eq(new.get("series"), old.get("series")) {
        series(new, out);
    }
    // Kubernetes' list, reason twice included
    let fields: [(&str, Render); 14] = [
        ("involvedObject", Render::ObjectReference),
        ("reason", Render::Str),
        ("message", Render::Str),
        ("source", Render::EventSource),
        ("firstTimestamp", Render::Time),
        ("lastTimestamp", Render::Time),
        ("count", Render::Int),
        ("reason", Render::Str),
        ("type", Render::Str),
        ("eventTime", Render::Time),
        ("action", Render::Str),
        ("related", Render::ObjectReferencePtr),
        ("reportingComponent", Render::Str),
        ("reportingInstance", Render::Str),
    ];
    for (json, render) in fields {
        if !same(render, old.get(json), new.get(json)) {
            // the path names the internal field
            let path = if json == "reportingComponent" { "reportingController" } else { json };
            out.push(field::immutable(&Path::root(path), render.go(new.get(json))));
        }
    }
}

/// legacyValidateEvent.
fn legacy(obj: &Value, out: &mut Vec<FieldError>) {
    let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
    let involved_ns = obj.pointer("/involvedObject/namespace").and_then(Value::as_str).unwrap_or("");
    let ip = Path::root("involvedObject");
    let inp = ip.child("namespace");
    const MISMATCH: &str = "does not match event.namespace";
    if zero_time(obj.get("eventTime")) {
        let mismatch = if involved_ns.is_empty() { !ns.is_empty() && ns != "default" } else { ns != involved_ns };
        if mismatch {
            out.push(field::invalid(&inp, involved_ns, MISMATCH));
        }
    } else {
        if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
            out.push(field::invalid(&inp, involved_ns, MISMATCH));
        }
        let controller = str_of(obj, "reportingComponent");
        let cp = Path::root("reportingController");
        if controller.is_empty() {
            out.push(field::required(&cp, ""));
        }
        for msg in names::qualified_name_errors(controller) {
            out.push(field::invalid(&cp, controller, &msg));
        }
        for (name, limit) in [
            ("reportingInstance", REPORTING_INSTANCE_LENGTH_LIMIT),
            ("action", ACTION_LENGTH_LIMIT),
            ("reason", REASON_LENGTH_LIMIT),
        ] {
            let v = str_of(obj, name);
            let p = Path::root(name);
            if v.is_empty() {
                out.push(field::required(&p, ""));
            }
            if v.len() > limit {
                out.push(field::invalid(&p, "", &format!("can have at most {limit} characters")));
            }
        }
        if str_of(obj, "message").len() > NOTE_LENGTH_LIMIT {
            out.push(field::invalid(
                &Path::root("message"),
                "",
                &format!("can have at most {NOTE_LENGTH_LIMIT} characters"),
            ));
        }
    }
    for msg in names::dns1123_subdomain_errors(ns) {
        out.push(field::invalid(&Path::root("namespace"), ns, &msg));
    }
}

/// validateV1EventSeries.
fn series(obj: &Value, out: &mut Vec<FieldError>) {
    let Some(series) = obj.get("series").filter(|s| !s.is_null()) else { return };
    if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
        out.push(field::invalid(&Path::root("series.count"), "", "should be at least 2"));
    }
    if zero_time(series.get("lastObservedTime")) {
        out.push(field::required(&Path::root("series.lastObservedTime"), ""));
    }
}

/// How a field's value prints in an immutability error: as
/// apimachinery's ErrorBody prints the internal Go value.
#[derive(Debug, Clone, Copy)]
enum Render {
    Str,
    Int,
    /// `metav1.Time`/`MicroTime`: a `fmt.Stringer`, so `time.Time.String()`.
    Time,
    ObjectReference,
    /// `*core.ObjectReference`: dereferenced, or `null`.
    ObjectReferencePtr,
    EventSource,
}

const OBJECT_REFERENCE_FIELDS: [(&str, &str); 7] = [
    ("Kind", "kind"),
    ("Namespace", "namespace"),
    ("Name", "name"),
    ("UID", "uid"),
    ("APIVersion", "apiVersion"),
    ("ResourceVersion", "resourceVersion"),
    ("FieldPath", "fieldPath"),
];

impl Render {
    fn go(self, v: Option<&Value>) -> String {
        let s =
            |v: Option<&Value>, k: &str| govalue::quote(v.and_then(|v| v.get(k)).and_then(Value::as_str).unwrap_or(""));
        match self {
            Render::Str => govalue::quote(v.and_then(Value::as_str).unwrap_or("")),
            Render::Int => v.and_then(Value::as_i64).unwrap_or(0).to_string(),
            Render::Time => go_time_string(v.and_then(Value::as_str).unwrap_or("")),
            Render::ObjectReferencePtr if v.is_none_or(Value::is_null) => "null".to_string(),
            Render::ObjectReference | Render::ObjectReferencePtr => {
                let mut out = String::from("core.ObjectReference{");
                for (i, (go, json)) in OBJECT_REFERENCE_FIELDS.iter().enumerate() {
                    let sep = if i > 0 { ", " } else { "" };
                    let _ = write!(out, "{sep}{go}:{}", s(v, json));
                }
                out.push('}');
                out
            }
            Render::EventSource => {
                format!("core.EventSource{{Component:{}, Host:{}}}", s(v, "component"), s(v, "host"))
            }
        }
    }
}

/// Whether two values of a field are the same to Go.
fn same(render: Render, a: Option<&Value>, b: Option<&Value>) -> bool {
    match render {
        Render::Time => {
            zero_time(a) && zero_time(b) || parse_time(a).is_some_and(|x| Some(x) == parse_time(b)) || semantic_eq(a, b)
        }
        // apiequality: a nil pointer and a pointer to an empty struct differ
        Render::ObjectReferencePtr => a.is_none_or(Value::is_null) == b.is_none_or(Value::is_null) && semantic_eq(a, b),
        _ => semantic_eq(a, b),
    }
}

fn parse_time(v: Option<&Value>) -> Option<chrono::DateTime<chrono::Utc>> {
    v.and_then(Value::as_str)
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// Go's `time.Time.String()` of a UTC time: `2026-11-26 10:00:00.5 +0000 UTC`,
/// the zero time for an absent or unreadable one.
fn go_time_string(rfc3339: &str) -> String {
    let Some(t) = parse_time(Some(&Value::String(rfc3339.to_string()))) else {
        return "0001-01-01 00:00:00 +0000 UTC".to_string();
    };
    let mut out = t.format("%Y-%m-%d %H:%M:%S").to_string();
    let nanos = t.timestamp_subsec_nanos();
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        let _ = write!(out, ".{}", frac.trim_end_matches('0'));
    }
    out.push_str(" +0000 UTC");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_times_print_like_time_string() {
        assert_eq!(go_time_string("2026-11-26T10:00:00Z"), "2026-11-26 10:00:00 +0000 UTC");
        assert_eq!(go_time_string("2026-11-26T10:00:00.500000Z"), "2026-11-26 10:00:00.5 +0000 UTC");
        assert_eq!(go_time_string(""), "0001-01-01 00:00:00 +0000 UTC");
    }

    #[test]
    fn references_print_as_go_structs() {
        let r = json!({"kind": "Pod", "name": "web"});
        assert_eq!(
            Render::ObjectReference.go(Some(&r)),
            "core.ObjectReference{Kind:\"Pod\", Namespace:\"\", Name:\"web\", UID:\"\", APIVersion:\"\", \
             ResourceVersion:\"\", FieldPath:\"\"}"
        );
        assert_eq!(Render::ObjectReferencePtr.go(None), "null");
        assert_eq!(Render::EventSource.go(None), "core.EventSource{Component:\"\", Host:\"\"}");
    }
}
