//! Strategic merge patch, as kubectl computes it and Kubernetes applies it:
//! maps merge, `null` deletes, lists merge by their merge key where the type
//! says so (containers by name, ports by containerPort...), and the
//! directives `$patch`, `$retainKeys`, `$setElementOrder/<list>` and
//! `$deleteFromPrimitiveList/<list>`.

use serde_json::{Map, Value};
use skiff_api::schema::{field_definition, patch_meta};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    #[error("unknown patch directive $patch: {0:?}")]
    UnknownDirective(String),
    #[error("{path}: invalid patch: {message}")]
    Invalid { path: String, message: String },
    #[error("patch is nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("invalid patch format of retainKeys")]
    RetainKeys,
}

const MAX_DEPTH: usize = 100;

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList/";

/// Apply `patch` to `original`, whose type is the OpenAPI `definition`
/// (`None` where the type is unknown or free-form: then plain JSON merge).
pub fn apply(original: &Value, patch: &Value, definition: Option<&str>) -> Result<Value, PatchError> {
    let Value::Object(p) = patch else {
        return Err(PatchError::Invalid { path: String::new(), message: "a patch must be a JSON object".into() });
    };
    let orig = match original {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    merge_map(orig, p, definition, "", 0).map(|m| Value::Object(m.unwrap_or_default()))
}

/// Merge a patch map into an original map. `None` means "delete the map".
fn merge_map(
    mut orig: Map<String, Value>,
    patch: &Map<String, Value>,
    def: Option<&str>,
    path: &str,
    depth: usize,
) -> Result<Option<Map<String, Value>>, PatchError> {
    if depth > MAX_DEPTH {
        return Err(PatchError::TooDeep(MAX_DEPTH));
    }
    match patch.get(PATCH) {
        None => {}
        Some(Value::String(d)) if d == "replace" => {
            let mut out = patch.clone();
            out.remove(PATCH);
            return strip_directives_map(out, def, path, depth).map(Some);
        }
        Some(Value::String(d)) if d == "delete" => return Ok(None),
        Some(Value::String(d)) if d == "merge" => {}
        Some(other) => return Err(PatchError::UnknownDirective(other.to_string())),
    }
    let retain: Option<Vec<String>> = match patch.get(RETAIN_KEYS) {
        None => None,
        Some(Value::Array(keys)) => Some(keys.iter().filter_map(|k| k.as_str().map(str::to_string)).collect()),
        Some(_) => return Err(PatchError::RetainKeys),
    };
    // every field the patch sets must be one of the keys it retains
    if let Some(keep) = &retain {
        if patch.keys().filter(|k| !k.starts_with('$')).any(|k| !keep.contains(k)) {
            return Err(PatchError::RetainKeys);
        }
    }
    for (k, v) in patch {
        if k == PATCH || k == RETAIN_KEYS {
            continue;
        }
        if let Some(field) = k.strip_prefix(DELETE_PRIMITIVE) {
            let remove: Vec<Value> = v.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(list)) = orig.get_mut(field) {
                list.retain(|x| !remove.contains(x));
            }
            continue;
        }
        if k.starts_with(SET_ORDER) {
            continue;
        }
        let child_path = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
        if v.is_null() {
            orig.remove(k);
            continue;
        }
        let child_def = def.and_then(|d| field_definition(d, k));
        let merged = match (orig.remove(k), v) {
            (Some(Value::Object(o)), Value::Object(pm)) => {
                merge_map(o, pm, child_def, &child_path, depth + 1)?.map(Value::Object)
            }
            (None, Value::Object(pm)) => {
                merge_map(Map::new(), pm, child_def, &child_path, depth + 1)?.map(Value::Object)
            }
            (Some(Value::Array(o)), Value::Array(pl)) => {
                Some(Value::Array(merge_list(o, pl, def, k, child_def, &child_path, depth + 1)?))
            }
            (None, Value::Array(pl)) => {
                Some(Value::Array(merge_list(Vec::new(), pl, def, k, child_def, &child_path, depth + 1)?))
            }
            (_, other) => Some(strip_directives(other.clone(), child_def, &child_path, depth + 1)?),
        };
        if let Some(m) = merged {
            orig.insert(k.clone(), m);
        }
    }
    // $setElementOrder/<list>: order the merged list as the patch says
    for (k, order) in patch {
        if let Some(field) = k.strip_prefix(SET_ORDER) {
            let key = def.and_then(|d| patch_meta(d, field)).and_then(|m| m.merge_key);
            if let (Some(Value::Array(list)), Some(order)) = (orig.get_mut(field), order.as_array()) {
                reorder(list, order, key);
            }
        }
    }
    if let Some(keep) = retain {
        orig.retain(|k, _| keep.iter().any(|x| x == k));
    }
    Ok(Some(orig))
}

fn merge_list(
    orig: Vec<Value>,
    patch: &[Value],
    parent_def: Option<&str>,
    field: &str,
    item_def: Option<&str>,
    path: &str,
    depth: usize,
) -> Result<Vec<Value>, PatchError> {
    let meta = parent_def.and_then(|d| patch_meta(d, field));
    let merging = meta.is_some_and(|m| m.strategy.split(',').any(|s| s == "merge"));
    // a `{"$patch": "replace"}` element replaces the whole list
    let replace = patch.iter().any(|x| x.get(PATCH).and_then(Value::as_str) == Some("replace"));
    if !merging || replace {
        let items: Vec<Value> =
            patch.iter().filter(|x| x.get(PATCH).and_then(Value::as_str) != Some("replace")).cloned().collect();
        return items.into_iter().map(|x| strip_directives(x, item_def, path, depth)).collect();
    }
    match meta.and_then(|m| m.merge_key) {
        None => {
            // a set of primitives: union, original order first
            let mut out = orig;
            for x in patch {
                if !out.contains(x) {
                    out.push(x.clone());
                }
            }
            Ok(out)
        }
        Some(key) => {
            // index the items by merge key once, so long lists merge in linear time
            let mut out: Vec<Option<Value>> = orig.into_iter().map(Some).collect();
            let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
            for (i, o) in out.iter().enumerate() {
                if let Some(k) = o.as_ref().and_then(|o| o.get(key)) {
                    index.entry(k.to_string()).or_insert(i);
                }
            }
            for item in patch {
                let Value::Object(pm) = item else {
                    return Err(PatchError::Invalid {
                        path: path.into(),
                        message: format!("list items must be objects with the merge key {key:?}"),
                    });
                };
                let Some(kv) = pm.get(key) else {
                    return Err(PatchError::Invalid {
                        path: path.into(),
                        message: format!("map: {item} does not contain declared merge key: {key}"),
                    });
                };
                let k = kv.to_string();
                if pm.get(PATCH).and_then(Value::as_str) == Some("delete") {
                    if let Some(i) = index.remove(&k) {
                        out[i] = None;
                    }
                    continue;
                }
                match index.get(&k).copied() {
                    Some(i) => {
                        let o = match out[i].take() {
                            Some(Value::Object(m)) => m,
                            _ => Map::new(),
                        };
                        match merge_map(o, pm, item_def, path, depth + 1)? {
                            Some(m) => out[i] = Some(Value::Object(m)),
                            None => {
                                index.remove(&k);
                            }
                        }
                    }
                    None => {
                        if let Some(m) = merge_map(Map::new(), pm, item_def, path, depth + 1)? {
                            index.insert(k, out.len());
                            out.push(Some(Value::Object(m)));
                        }
                    }
                }
            }
            Ok(out.into_iter().flatten().collect())
        }
    }
}

/// Order `list` as `order` says: listed items first in that order, the
/// rest after in their own order.
fn reorder(list: &mut Vec<Value>, order: &[Value], key: Option<&str>) {
    let ident = |v: &Value| -> Value {
        match key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let wanted: Vec<Value> = order.iter().map(ident).collect();
    let mut ordered = Vec::with_capacity(list.len());
    for w in &wanted {
        if let Some(i) = list.iter().position(|x| ident(x) == *w) {
            ordered.push(list.remove(i));
        }
    }
    ordered.append(list);
    *list = ordered;
}

/// A value inserted where the original had nothing still must not carry
/// directives into the stored object.
fn strip_directives(v: Value, def: Option<&str>, path: &str, depth: usize) -> Result<Value, PatchError> {
    if depth > MAX_DEPTH {
        return Err(PatchError::TooDeep(MAX_DEPTH));
    }
    match v {
        Value::Object(m) => strip_directives_map(m, def, path, depth).map(Value::Object),
        Value::Array(a) => {
            a.into_iter().map(|x| strip_directives(x, def, path, depth + 1)).collect::<Result<_, _>>().map(Value::Array)
        }
        other => Ok(other),
    }
}

fn strip_directives_map(
    m: Map<String, Value>,
    def: Option<&str>,
    path: &str,
    depth: usize,
) -> Result<Map<String, Value>, PatchError> {
    let mut out = Map::new();
    for (k, v) in m {
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            continue;
        }
        let child = def.and_then(|d| field_definition(d, &k));
        out.insert(k, strip_directives(v, child, path, depth + 1)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DEPLOY: Option<&str> = Some("io.k8s.api.apps.v1.Deployment");

    fn deploy() -> Value {
        json!({
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "nginx", "image": "nginx:1.25", "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "1"}]},
                {"name": "side", "image": "busybox"}
            ]}}}
        })
    }

    #[test]
    fn kubectl_reapply_patch_merges_containers_by_name() {
        let patch = json!({"spec": {"replicas": 3, "template": {"spec": {
            "$setElementOrder/containers": [{"name": "nginx"}, {"name": "side"}],
            "containers": [{"image": "nginx:1.27", "name": "nginx"}]}}}});
        let out = apply(&deploy(), &patch, DEPLOY).unwrap();
        assert_eq!(out["spec"]["replicas"], 3);
        let cs = out["spec"]["template"]["spec"]["containers"].as_array().unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0]["image"], "nginx:1.27");
        assert_eq!(cs[0]["ports"][0]["containerPort"], 80, "fields not in the patch survive");
        assert_eq!(cs[1]["name"], "side");
    }

    #[test]
    fn directives_delete_replace_and_null() {
        let patch = json!({"metadata": {"labels": {"app": null}}, "spec": {"template": {"spec": {"containers": [
            {"name": "side", "$patch": "delete"},
            {"name": "nginx", "env": [{"name": "B", "value": "2"}]}]}}}});
        let out = apply(&deploy(), &patch, DEPLOY).unwrap();
        assert!(out["metadata"]["labels"].get("app").is_none());
        let cs = out["spec"]["template"]["spec"]["containers"].as_array().unwrap();
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0]["env"].as_array().unwrap().len(), 2, "env merges by name");
        let replace = json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "x"}]}}}});
        let out = apply(&deploy(), &replace, DEPLOY).unwrap();
        assert_eq!(out["spec"]["template"]["spec"]["containers"], json!([{"name": "only", "image": "x"}]));
    }

    #[test]
    fn retain_keys_and_primitive_lists() {
        let orig = json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}, "spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let out = apply(&orig, &patch, DEPLOY).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn malformed_patches_are_errors_not_panics() {
        assert!(apply(&deploy(), &json!([1, 2]), DEPLOY).is_err());
        assert!(apply(&deploy(), &json!({"$patch": "explode"}), DEPLOY).is_err());
        let no_key = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
        assert!(apply(&deploy(), &no_key, DEPLOY).is_err());
        let mut deep = json!(1);
        for _ in 0..200 {
            deep = json!({"a": deep});
        }
        assert_eq!(apply(&json!({}), &deep, None).unwrap_err(), PatchError::TooDeep(MAX_DEPTH));
    }
}
