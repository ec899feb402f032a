//! How objects are keyed and stored: JSON without `resourceVersion`, which is
//! the store's mod revision and is put back on every read.

use bytes::Bytes;
use serde_json::{Map, Value};
use skiff_api::ResourceType;
use skiff_store::{KeyValue, Revision};

/// `/registry/<group>/<plural>/[<namespace>/]<name>`.
pub fn key(rt: &ResourceType, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if rt.namespaced => format!("/registry/{}/{}/{}/{}", rt.storage_group(), rt.plural, ns, name),
        _ => format!("/registry/{}/{}/{}", rt.storage_group(), rt.plural, name),
    }
}

/// The key prefix of a collection: every namespace when `namespace` is `None`.
pub fn prefix(rt: &ResourceType, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if rt.namespaced => {
            format!("/registry/{}/{}/{}/", rt.storage_group(), rt.plural, ns)
        }
        _ => format!("/registry/{}/{}/", rt.storage_group(), rt.plural),
    }
}

/// Serialize an object of `rt` for storage, in its stored form (see
/// `skiff_api::convert`), leaving out `metadata.resourceVersion`.
pub fn encode(rt: &ResourceType, obj: &Value) -> Bytes {
    let mut obj = skiff_api::convert::to_stored(rt, obj.clone());
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    Bytes::from(serde_json::to_vec(&obj).unwrap_or_default())
}

/// Parse a stored object as `rt` shows it, and set its resourceVersion.
pub fn decode(rt: &ResourceType, bytes: &[u8], rev: Revision) -> Option<Value> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let mut v = skiff_api::convert::from_stored(rt, v);
    set_rv(&mut v, rev);
    Some(v)
}

pub fn decode_kv(rt: &ResourceType, kv: &KeyValue) -> Option<Value> {
    decode(rt, &kv.value, kv.mod_revision)
}

/// Whether the stored bytes are what `rt`'s clients read, so that they can
/// be sent without parsing (`write_with_rv`); not so for a view.
pub fn splices(rt: &ResourceType) -> bool {
    !rt.is_view()
}

pub fn set_rv(obj: &mut Value, rev: Revision) {
    if let Some(m) = meta_mut(obj) {
        m.insert("resourceVersion".into(), Value::String(rev.to_string()));
    }
}

/// Append the stored JSON with its resourceVersion spliced in, without
/// parsing it. Stored objects always begin `{"apiVersion":…,"kind":…,"metadata":{`
/// (see `encode` and `normalize`), so the first `"metadata":{` is the real one:
/// the same bytes inside a string value would be escaped.
pub fn write_with_rv(out: &mut Vec<u8>, stored: &[u8], rev: Revision) {
    const NEEDLE: &[u8] = b"\"metadata\":{";
    match stored.windows(NEEDLE.len()).position(|w| w == NEEDLE) {
        Some(pos) => {
            let at = pos + NEEDLE.len();
            out.extend_from_slice(&stored[..at]);
            out.extend_from_slice(b"\"resourceVersion\":\"");
            out.extend_from_slice(rev.to_string().as_bytes());
            out.push(b'"');
            if stored.get(at) != Some(&b'}') {
                out.push(b',');
            }
            out.extend_from_slice(&stored[at..]);
        }
        None => out.extend_from_slice(stored),
    }
}

pub fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

pub fn meta_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    obj.get_mut("metadata").and_then(Value::as_object_mut)
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj).and_then(|m| m.get(field)).and_then(Value::as_str)
}

pub fn name_of(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or("")
}

/// Put `apiVersion`, `kind` and `metadata` first, in that order, so stored
/// bytes have the shape `write_with_rv` relies on.
pub fn normalize(rt: &ResourceType, obj: Value) -> Value {
    let Value::Object(mut m) = obj else {
        return obj;
    };
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::String(rt.api_version()));
    out.insert("kind".into(), Value::String(rt.kind.to_string()));
    m.remove("apiVersion");
    m.remove("kind");
    let meta = m.remove("metadata").filter(Value::is_object).unwrap_or_else(|| Value::Object(Map::new()));
    out.insert("metadata".into(), meta);
    for (k, v) in m {
        out.insert(k, v);
    }
    Value::Object(out)
}

/// The parts of an object that make up its "spec" for generation tracking:
/// everything but metadata and status.
pub fn spec_part(obj: &Value) -> Value {
    match obj {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn splice_matches_decode() {
        let rt = skiff_api::catalogue::find("", "v1", "pods").unwrap();
        for obj in [
            json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "a", "annotations": {"x": "\"metadata\":{"}}}),
            json!({"metadata": {}}),
        ] {
            let stored = encode(rt, &normalize(rt, obj));
            let mut out = Vec::new();
            write_with_rv(&mut out, &stored, 42);
            let spliced: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(spliced, decode(rt, &stored, 42).unwrap());
            assert_eq!(spliced["metadata"]["resourceVersion"], "42");
        }
    }

    #[test]
    fn keys_keep_namespaces_apart() {
        let rt = skiff_api::catalogue::find("", "v1", "pods").unwrap();
        assert_eq!(key(rt, Some("default"), "web"), "/registry/core/pods/default/web");
        assert!(!key(rt, Some("default2"), "web").starts_with(&prefix(rt, Some("default"))));
        let ns = skiff_api::catalogue::find("", "v1", "namespaces").unwrap();
        assert_eq!(key(ns, Some("x"), "x"), "/registry/core/namespaces/x");
    }

    #[test]
    fn events_k8s_io_reads_and_writes_core_events() {
        let core = skiff_api::catalogue::find("", "v1", "events").unwrap();
        let view = skiff_api::catalogue::find("events.k8s.io", "v1", "events").unwrap();
        assert_eq!(key(view, Some("default"), "e"), key(core, Some("default"), "e"));
        assert_eq!(prefix(view, None), prefix(core, None));
        assert!(splices(core) && !splices(view));
        let written = normalize(view, json!({"metadata": {"name": "e", "resourceVersion": "3"}, "note": "hi"}));
        let stored = encode(view, &written);
        let as_core: Value = serde_json::from_slice(&stored).unwrap();
        assert_eq!((&as_core["apiVersion"], &as_core["message"]), (&json!("v1"), &json!("hi")));
        assert!(as_core["metadata"].get("resourceVersion").is_none());
        // the stored shape `write_with_rv` relies on
        assert!(stored.starts_with(b"{\"apiVersion\":\"v1\",\"kind\":\"Event\",\"metadata\":{"));
        let read = decode(view, &stored, 9).unwrap();
        assert_eq!((&read["note"], &read["metadata"]["resourceVersion"]), (&json!("hi"), &json!("9")));
        assert_eq!(decode(core, &stored, 9).unwrap()["message"], "hi");
    }
}
