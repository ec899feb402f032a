//! Conversion between a resource that is another view of a stored one and
//! the stored form (see [`ResourceType::view_of`]).
//!
//! The one such view is `events.k8s.io/v1` Event, which Kubernetes serves
//! from the core/v1 Events' storage: the same objects with some fields
//! renamed (`pkg/apis/events/v1/conversion.go`): `regarding` is
//! `involvedObject`, `note` is `message`, `reportingController` is
//! `reportingComponent`, `deprecatedSource`, `deprecatedFirstTimestamp`,
//! `deprecatedLastTimestamp` and `deprecatedCount` are `source`,
//! `firstTimestamp`, `lastTimestamp` and `count`; the rest keeps its name.
//! Both directions lose nothing.
//!
//! Each side is written the way Go's `encoding/json` writes its struct:
//! fields in struct order, a struct field always present (`{}` when empty),
//! a zero time as `null`, a string or number with `omitempty` left out when
//! empty, one without it always present. So an Event written through one
//! API reads through the other exactly as Kubernetes shows it.

use serde_json::{Map, Value};

use crate::catalogue::ResourceType;

/// How Go's `encoding/json` writes a field of an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Go {
    /// A struct held by value (`ObjectReference`, `EventSource`): `{}` when empty.
    Struct,
    /// A `metav1.Time` or `MicroTime` held by value: `null` when zero.
    Time,
    /// A string with `omitempty`.
    Str,
    /// A string without `omitempty`: `""` when empty.
    StrAlways,
    /// An `int32` with `omitempty`.
    Int,
    /// A pointer with `omitempty` (`series`, `related`).
    Ptr,
}

/// One field: its name and shape in core/v1, then in events.k8s.io/v1.
type FieldPair = (&'static str, Go, &'static str, Go);

/// core/v1 Event's fields in its Go struct order, each with its
/// events.k8s.io/v1 counterpart.
const CORE_ORDER: &[FieldPair] = &[
    ("involvedObject", Go::Struct, "regarding", Go::Struct),
    ("reason", Go::Str, "reason", Go::Str),
    ("message", Go::Str, "note", Go::Str),
    ("source", Go::Struct, "deprecatedSource", Go::Struct),
    ("firstTimestamp", Go::Time, "deprecatedFirstTimestamp", Go::Time),
    ("lastTimestamp", Go::Time, "deprecatedLastTimestamp", Go::Time),
    ("count", Go::Int, "deprecatedCount", Go::Int),
    ("type", Go::Str, "type", Go::Str),
    ("eventTime", Go::Time, "eventTime", Go::Time),
    ("series", Go::Ptr, "series", Go::Ptr),
    ("action", Go::Str, "action", Go::Str),
    ("related", Go::Ptr, "related", Go::Ptr),
    ("reportingComponent", Go::StrAlways, "reportingController", Go::Str),
    ("reportingInstance", Go::StrAlways, "reportingInstance", Go::Str),
];

/// events.k8s.io/v1 Event's fields in its Go struct order (indexes into
/// [`CORE_ORDER`]).
const VIEW_ORDER: &[usize] = &[8, 9, 12, 13, 10, 1, 0, 11, 2, 7, 3, 4, 5, 6];

/// The core/v1 field an events.k8s.io/v1 field is stored as (`note` is
/// `message`); `None` for a name that is not an Event field.
pub fn event_core_field(view_field: &str) -> Option<&'static str> {
    CORE_ORDER.iter().find(|(_, _, v, _)| *v == view_field).map(|(c, _, _, _)| *c)
}

/// The object as the store keeps it: `obj` itself unless `rt` is a view.
pub fn to_stored(rt: &ResourceType, obj: Value) -> Value {
    match (rt.view_of, rt.kind) {
        (Some(_), "Event") => event_to_core(obj),
        _ => obj,
    }
}

/// An events.k8s.io/v1 Event as the core/v1 Event it is.
pub fn event_to_core(obj: Value) -> Value {
    rename(obj, "v1", "Event", CORE_ORDER.iter().map(|&(c, cg, v, _)| (v, c, cg)))
}

/// A stored object as `rt` shows it: `obj` itself unless `rt` is a view.
pub fn from_stored(rt: &ResourceType, obj: Value) -> Value {
    match (rt.view_of, rt.kind) {
        (Some(_), "Event") => {
            let api_version = rt.api_version();
            rename(
                obj,
                &api_version,
                rt.kind,
                VIEW_ORDER.iter().map(|&i| CORE_ORDER[i]).map(|(c, _, v, vg)| (c, v, vg)),
            )
        }
        _ => obj,
    }
}

/// The field renames from the representation at `from` (an apiVersion) to
/// that at `to`, for two views of `kind`'s stored objects; `None` when the
/// two are not such a pair.
fn renames(kind: &str, from: &str, to: &str) -> Option<Vec<(&'static str, &'static str)>> {
    const CORE: &str = "v1";
    const EVENTS: &str = "events.k8s.io/v1";
    match (kind, from, to) {
        ("Event", CORE, EVENTS) => Some(CORE_ORDER.iter().map(|&(c, _, v, _)| (c, v)).collect()),
        ("Event", EVENTS, CORE) => Some(CORE_ORDER.iter().map(|&(c, _, v, _)| (v, c)).collect()),
        _ => None,
    }
}

/// Whether another served resource shows the same stored objects as `rt`
/// (core/v1 and events.k8s.io/v1 Events).
pub fn has_other_views(rt: &ResourceType) -> bool {
    crate::catalogue::all()
        .iter()
        .any(|r| r != rt && r.kind == rt.kind && r.plural == rt.plural && r.storage_group() == rt.storage_group())
}

/// Rename the top-level fields of `managedFields` entries written through
/// another view of the same stored objects into `rt`'s names, so that
/// ownership can be worked out in one set of names. An entry keeps its
/// `apiVersion`; [`managed_fields_to_own_versions`] undoes this.
pub fn managed_fields_into(rt: &ResourceType, obj: &mut Value) {
    let own = rt.api_version();
    for_each_entry(obj, |entry_version, fields| {
        if let Some(map) = renames(rt.kind, entry_version, &own) {
            rename_field_set(fields, &map);
        }
    });
}

/// Give every `managedFields` entry of another version of `rt`'s stored
/// objects the names of its own `apiVersion` again (after
/// [`managed_fields_into`] and the ownership bookkeeping).
pub fn managed_fields_to_own_versions(rt: &ResourceType, obj: &mut Value) {
    let own = rt.api_version();
    for_each_entry(obj, |entry_version, fields| {
        if let Some(map) = renames(rt.kind, &own, entry_version) {
            rename_field_set(fields, &map);
        }
    });
}

fn for_each_entry(obj: &mut Value, mut f: impl FnMut(&str, &mut Map<String, Value>)) {
    let Some(entries) = obj.pointer_mut("/metadata/managedFields").and_then(Value::as_array_mut) else { return };
    for entry in entries {
        let version = entry.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string();
        if let Some(fields) = entry.get_mut("fieldsV1").and_then(Value::as_object_mut) {
            f(&version, fields);
        }
    }
}

/// Rename the `f:<name>` keys of a fieldsV1 set's top level.
fn rename_field_set(fields: &mut Map<String, Value>, map: &[(&str, &str)]) {
    let renamed: Map<String, Value> = std::mem::take(fields)
        .into_iter()
        .map(|(k, v)| {
            let to = k.strip_prefix("f:").and_then(|name| map.iter().find(|(from, _)| *from == name));
            match to {
                Some((_, to)) => (format!("f:{to}"), v),
                None => (k, v),
            }
        })
        .collect();
    *fields = renamed;
}

/// Build the object of `api_version`/`kind`: metadata first, then each
/// `(from, to, shape)` field read from `from` and written as `to`, then
/// anything else `obj` carries (unknown fields are stripped before a write,
/// so normally nothing).
fn rename<'a>(
    obj: Value,
    api_version: &str,
    kind: &str,
    fields: impl Iterator<Item = (&'a str, &'a str, Go)>,
) -> Value {
    let Value::Object(mut m) = obj else { return obj };
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::String(api_version.to_string()));
    out.insert("kind".into(), Value::String(kind.to_string()));
    m.remove("apiVersion");
    m.remove("kind");
    out.insert("metadata".into(), m.remove("metadata").unwrap_or_else(|| Value::Object(Map::new())));
    for (from, to, shape) in fields {
        if let Some(v) = go_field(m.remove(from), shape) {
            out.insert(to.to_string(), v);
        }
    }
    for (k, v) in m {
        out.entry(k).or_insert(v);
    }
    Value::Object(out)
}

/// The value Go writes for a field of `shape` holding `v` (`None`: left out).
fn go_field(v: Option<Value>, shape: Go) -> Option<Value> {
    let v = v.filter(|v| !v.is_null());
    match shape {
        Go::Struct => Some(v.unwrap_or_else(|| Value::Object(Map::new()))),
        Go::Time => Some(v.unwrap_or(Value::Null)),
        Go::Str => v.filter(|v| v.as_str() != Some("")),
        Go::StrAlways => Some(v.unwrap_or_else(|| Value::String(String::new()))),
        Go::Int => v.filter(|v| v.as_i64() != Some(0)),
        Go::Ptr => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn events_v1() -> &'static ResourceType {
        crate::catalogue::find("events.k8s.io", "v1", "events").unwrap()
    }

    #[test]
    fn the_orders_name_every_field_once() {
        let mut seen: Vec<usize> = VIEW_ORDER.to_vec();
        seen.sort_unstable();
        assert_eq!(seen, (0..CORE_ORDER.len()).collect::<Vec<_>>());
    }

    #[test]
    fn a_core_event_reads_renamed_as_go_writes_it() {
        let core = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "default", "resourceVersion": "7"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
            "reason": "Pulled", "message": "pulled busybox",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": "2026-11-26T10:00:00Z", "lastTimestamp": "2026-11-26T10:05:00Z",
            "count": 3, "type": "Normal",
        });
        let view = from_stored(events_v1(), core.clone());
        assert_eq!(
            serde_json::to_string(&view).unwrap(),
            serde_json::to_string(&json!({
                "apiVersion": "events.k8s.io/v1", "kind": "Event",
                "metadata": {"name": "web.1", "namespace": "default", "resourceVersion": "7"},
                "eventTime": null,
                "reason": "Pulled",
                "regarding": {"kind": "Pod", "name": "web", "namespace": "default"},
                "note": "pulled busybox",
                "type": "Normal",
                "deprecatedSource": {"component": "kubelet", "host": "node-1"},
                "deprecatedFirstTimestamp": "2026-11-26T10:00:00Z",
                "deprecatedLastTimestamp": "2026-11-26T10:05:00Z",
                "deprecatedCount": 3,
            }))
            .unwrap()
        );
        // and back: what Go's core/v1 struct writes
        let back = to_stored(events_v1(), view);
        assert_eq!(back["message"], "pulled busybox");
        assert_eq!(back["count"], 3);
        assert_eq!(back["eventTime"], Value::Null);
        assert_eq!(back["reportingComponent"], "");
        assert_eq!(back["reportingInstance"], "");
        let mut expected = core;
        expected["eventTime"] = Value::Null;
        expected["reportingComponent"] = json!("");
        expected["reportingInstance"] = json!("");
        assert_eq!(back, expected);
    }

    #[test]
    fn an_events_v1_event_is_stored_as_core() {
        let view = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default"},
            "eventTime": "2026-11-26T10:00:00.123456Z",
            "series": {"count": 2, "lastObservedTime": "2026-11-26T10:01:00.000000Z"},
            "reportingController": "skiff.io/test", "reportingInstance": "test-1",
            "action": "Testing", "reason": "Tested",
            "regarding": {"kind": "Pod", "name": "web"}, "related": {"kind": "Node", "name": "n1"},
            "note": "it works", "type": "Warning",
        });
        let core = to_stored(events_v1(), view.clone());
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"], json!({"kind": "Pod", "name": "web"}));
        assert_eq!(core["message"], "it works");
        assert_eq!(core["reportingComponent"], "skiff.io/test");
        assert_eq!(core["source"], json!({}));
        assert_eq!(core["firstTimestamp"], Value::Null);
        assert!(core.get("count").is_none());
        let keys: Vec<&str> = core.as_object().unwrap().keys().map(String::as_str).take(4).collect();
        assert_eq!(keys, ["apiVersion", "kind", "metadata", "involvedObject"]);
        let again = from_stored(events_v1(), core);
        let mut expected = view;
        expected["deprecatedSource"] = json!({});
        expected["deprecatedFirstTimestamp"] = Value::Null;
        expected["deprecatedLastTimestamp"] = Value::Null;
        assert_eq!(again, expected);
    }

    #[test]
    fn managed_fields_of_the_other_view_are_renamed_and_back() {
        let core = crate::catalogue::find("", "v1", "events").unwrap();
        let mut obj = json!({"metadata": {"managedFields": [
            {"manager": "kubelet", "operation": "Update", "apiVersion": "v1",
             "fieldsV1": {"f:message": {}, "f:involvedObject": {"f:name": {}}, "f:metadata": {"f:labels": {}}}},
            {"manager": "ctl", "operation": "Apply", "apiVersion": "events.k8s.io/v1", "fieldsV1": {"f:note": {}}},
        ]}});
        let before = obj.clone();
        managed_fields_into(events_v1(), &mut obj);
        let fields = |o: &Value, i: usize| {
            o["metadata"]["managedFields"][i]["fieldsV1"].as_object().unwrap().keys().cloned().collect::<Vec<_>>()
        };
        assert_eq!(fields(&obj, 0), ["f:note", "f:regarding", "f:metadata"]);
        assert_eq!(fields(&obj, 1), ["f:note"]);
        assert_eq!(obj["metadata"]["managedFields"][0]["fieldsV1"]["f:regarding"], json!({"f:name": {}}));
        managed_fields_to_own_versions(events_v1(), &mut obj);
        assert_eq!(obj, before);
        managed_fields_into(core, &mut obj);
        assert_eq!(fields(&obj, 1), ["f:message"]);
        managed_fields_to_own_versions(core, &mut obj);
        assert_eq!(obj, before);
    }

    #[test]
    fn other_kinds_are_untouched() {
        let pods = crate::catalogue::find("", "v1", "pods").unwrap();
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "message": "x"});
        assert_eq!(to_stored(pods, pod.clone()), pod);
        assert_eq!(from_stored(pods, pod.clone()), pod);
        assert_eq!(event_core_field("regarding"), Some("involvedObject"));
        assert_eq!(event_core_field("note"), Some("message"));
        assert_eq!(event_core_field("spec"), None);
        assert!(!has_other_views(pods));
        assert!(has_other_views(events_v1()));
        assert!(has_other_views(crate::catalogue::find("", "v1", "events").unwrap()));
    }
}
