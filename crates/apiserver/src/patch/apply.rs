//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! Every write records which fields its manager set. An apply merges the
//! applied configuration into the live object, refuses (409) to change a
//! field another manager owns unless forced, and removes the fields the same
//! manager applied before but no longer does, when nobody else owns them.

use serde_json::{json, Map, Value};
use skiff_api::schema::field_definition;

use super::fieldset::{display, item_key, list_keys, remove_at, value_at, FieldSet, ListKind};

/// One `managedFields` entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub set: FieldSet,
}

impl Entry {
    fn to_json(&self) -> Value {
        let mut e = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": self.set.to_fields_v1(),
        });
        if let Some(s) = &self.subresource {
            e["subresource"] = json!(s);
        }
        e
    }

    fn same_slot(&self, manager: &str, operation: &str, sub: Option<&str>) -> bool {
        self.manager == manager && self.operation == operation && self.subresource.as_deref() == sub
    }
}

pub fn read_entries(obj: &Value) -> Vec<Entry> {
    let Some(list) = obj.pointer("/metadata/managedFields").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .map(|e| Entry {
            manager: e.get("manager").and_then(Value::as_str).unwrap_or("").to_string(),
            operation: e.get("operation").and_then(Value::as_str).unwrap_or("Update").to_string(),
            api_version: e.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string(),
            time: e.get("time").and_then(Value::as_str).unwrap_or("").to_string(),
            subresource: e.get("subresource").and_then(Value::as_str).map(str::to_string),
            set: FieldSet::from_fields_v1(e.get("fieldsV1").unwrap_or(&Value::Null)),
        })
        .collect()
}

fn write_entries(obj: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries.iter().filter(|e| !e.set.is_empty()).map(Entry::to_json).collect();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// The part of an object whose fields managers own: for the main resource
/// everything but status and server-managed metadata; for `status` only status.
pub fn owned_view(obj: &Value, subresource: Option<&str>) -> Value {
    let Some(m) = obj.as_object() else {
        return json!({});
    };
    let mut out = Map::new();
    for (k, v) in m {
        match (k.as_str(), subresource) {
            ("apiVersion" | "kind", _) => {}
            ("status", Some("status")) => {
                out.insert(k.clone(), v.clone());
            }
            (_, Some("status")) | ("status", _) => {}
            ("metadata", _) => {
                let mut meta = Map::new();
                for f in ["labels", "annotations", "finalizers", "ownerReferences"] {
                    if let Some(x) = v.get(f) {
                        meta.insert(f.into(), x.clone());
                    }
                }
                if !meta.is_empty() {
                    out.insert("metadata".into(), Value::Object(meta));
                }
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Record a non-apply write (create, update, patch) by `manager`: it owns
/// what it changed, others lose what it changed, and nobody owns fields the
/// object no longer has.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    def: Option<&str>,
    manager: &str,
    api_version: &str,
    subresource: Option<&str>,
) {
    let mut entries = old.map(read_entries).unwrap_or_default();
    let new_view = owned_view(new, subresource);
    let new_set = FieldSet::of(&new_view, def);
    let old_view = old.map(|o| owned_view(o, subresource)).unwrap_or_else(|| json!({}));
    let changed: Vec<Vec<String>> = new_set
        .paths()
        .into_iter()
        .filter(|p| value_at(&old_view, p) != value_at(&new_view, p) || old.is_none())
        .collect();
    // fields that are gone are owned by nobody
    let main_set = FieldSet::of(&owned_view(new, None), def);
    let status_set = FieldSet::of(&owned_view(new, Some("status")), def);
    for e in entries.iter_mut() {
        let present = if e.subresource.as_deref() == Some("status") { &status_set } else { &main_set };
        for p in e.set.paths() {
            if !present.contains(&p) && value_at(new, &p).is_none() {
                e.set.remove(&p);
            }
        }
        if e.manager != manager {
            for p in &changed {
                e.set.remove(p);
            }
        }
    }
    if !changed.is_empty() {
        let pos = entries.iter().position(|e| e.same_slot(manager, "Update", subresource));
        let entry = match pos {
            Some(i) => &mut entries[i],
            None => {
                entries.push(Entry {
                    manager: manager.to_string(),
                    operation: "Update".into(),
                    api_version: api_version.to_string(),
                    time: now(),
                    subresource: subresource.map(str::to_string),
                    set: FieldSet::default(),
                });
                let last = entries.len() - 1;
                &mut entries[last]
            }
        };
        entry.time = now();
        entry.api_version = api_version.to_string();
        for p in &changed {
            entry.set.insert(p);
        }
    }
    write_entries(new, entries);
}

/// A server-side apply conflict: the fields and who owns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub field: String,
    /// The subresource the owner wrote through (`scale`), if any.
    pub subresource: Option<String>,
    /// `Apply` or `Update`.
    pub operation: String,
}

impl Conflict {
    /// The owner as Kubernetes prints it: `"team-b"` for an applier,
    /// `"kubectl-client-side-apply" using apps/v1` for an updater, with
    /// ` with subresource "scale"` where it wrote through one.
    pub fn owner(&self) -> String {
        let mut out = format!("\"{}\"", self.manager);
        if let Some(s) = &self.subresource {
            out.push_str(&format!(" with subresource \"{s}\""));
        }
        if self.operation == "Update" {
            out.push_str(&format!(" using {}", self.api_version));
        }
        out
    }
}

/// Kubernetes' message for apply conflicts.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    if conflicts.len() == 1 {
        let c = &conflicts[0];
        return format!("Apply failed with 1 conflict: conflict with {}: {}", c.owner(), c.field);
    }
    let mut by_owner: Vec<(String, Vec<String>)> = Vec::new();
    for c in conflicts {
        match by_owner.iter_mut().find(|(o, _)| *o == c.owner()) {
            Some((_, fs)) => fs.push(c.field.clone()),
            None => by_owner.push((c.owner(), vec![c.field.clone()])),
        }
    }
    let parts: Vec<String> = by_owner
        .iter()
        .map(|(o, fs)| {
            let list: Vec<String> = fs.iter().map(|f| format!("- {f}")).collect();
            format!("conflicts with {o}:\n{}", list.join("\n"))
        })
        .collect();
    format!("Apply failed with {} conflicts: {}", conflicts.len(), parts.join("\n"))
}

/// Server-side apply of `config` by `manager` onto `live` (None: create).
/// Returns the merged object (without server metadata changes) or the
/// conflicts.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    def: Option<&str>,
    manager: &str,
    api_version: &str,
    force: bool,
) -> Result<Value, Vec<Conflict>> {
    let base = live.cloned().unwrap_or_else(|| json!({}));
    let mut entries = read_entries(&base);
    let applied_view = owned_view(config, None);
    let applied = FieldSet::of(&applied_view, def);
    let live_view = owned_view(&base, None);

    // conflicts: fields others own whose value the apply would change
    // only leaf values conflict: maps and list items are compared field by field
    let leaves: Vec<Vec<String>> =
        applied.paths().into_iter().filter(|p| !value_at(&applied_view, p).is_some_and(Value::is_object)).collect();
    let mut conflicts = Vec::new();
    for e in entries.iter().filter(|e| e.manager != manager && e.subresource.as_deref() != Some("status")) {
        for p in &leaves {
            if e.set.contains(p) && value_at(&live_view, p) != value_at(&applied_view, p) {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    api_version: e.api_version.clone(),
                    field: display(p),
                    subresource: e.subresource.clone(),
                    operation: e.operation.clone(),
                });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    if force {
        for e in entries.iter_mut().filter(|e| e.manager != manager) {
            for p in &leaves {
                if value_at(&live_view, p) != value_at(&applied_view, p) {
                    e.set.remove(p);
                }
            }
        }
    }
    // fields this manager applied before and no longer does go away, unless
    // someone else owns them too
    let previous =
        entries.iter().find(|e| e.same_slot(manager, "Apply", None)).map(|e| e.set.clone()).unwrap_or_default();
    let mut merged = base.clone();
    let mut removed: Vec<Vec<String>> = previous
        .paths()
        .into_iter()
        .filter(|p| !applied.contains(p))
        .filter(|p| !entries.iter().any(|e| e.manager != manager && e.set.contains(p)))
        .collect();
    // deepest first, so list indexes stay valid
    removed.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in &removed {
        remove_at(&mut merged, p);
    }
    merge_into(&mut merged, config, def);
    // the entry's time moves only when what the manager owns changes
    let time = entries
        .iter()
        .find(|e| e.same_slot(manager, "Apply", None) && e.set == applied && e.api_version == api_version)
        .map_or_else(now, |e| e.time.clone());
    entries.retain(|e| !e.same_slot(manager, "Apply", None));
    entries.push(Entry {
        manager: manager.to_string(),
        operation: "Apply".into(),
        api_version: api_version.to_string(),
        time,
        subresource: None,
        set: applied,
    });
    write_entries(&mut merged, entries);
    Ok(merged)
}

/// Structural merge used by apply: maps merge, keyed lists merge by key,
/// sets union, everything else is replaced by the applied value.
fn merge_into(live: &mut Value, applied: &Value, def: Option<&str>) {
    let (Some(l), Value::Object(a)) = (live.as_object_mut(), applied) else {
        *live = applied.clone();
        return;
    };
    for (k, av) in a {
        if k == "status" {
            continue;
        }
        let child_def = def.and_then(|d| field_definition(d, k));
        match (l.get_mut(k), av) {
            (Some(lv @ Value::Object(_)), Value::Object(_)) => merge_into(lv, av, child_def),
            (Some(Value::Array(litems)), Value::Array(aitems)) => match list_keys(def, k) {
                ListKind::Keyed(keys) => {
                    for ai in aitems {
                        let key = item_key(ai, &keys);
                        match litems.iter_mut().find(|li| key.is_some() && item_key(li, &keys) == key) {
                            Some(li) => merge_into(li, ai, child_def),
                            None => litems.push(ai.clone()),
                        }
                    }
                }
                ListKind::Set => {
                    for ai in aitems {
                        if !litems.contains(ai) {
                            litems.push(ai.clone());
                        }
                    }
                }
                ListKind::Atomic => *litems = aitems.clone(),
            },
            _ => {
                l.insert(k.clone(), av.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEF: Option<&str> = Some("io.k8s.api.apps.v1.Deployment");

    fn cfg(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "nginx", "image": image}]}}}})
    }

    #[test]
    fn apply_conflicts_with_another_manager_until_forced() {
        let mut live = cfg(2, "nginx:1");
        record_update(None, &mut live, DEF, "kubectl-client-side-apply", "apps/v1", None);
        let err = apply(Some(&live), &cfg(3, "nginx:1"), DEF, "kubectl", "apps/v1", false).unwrap_err();
        assert_eq!(
            conflict_message(&err),
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
        );
        let forced = apply(Some(&live), &cfg(3, "nginx:1"), DEF, "kubectl", "apps/v1", true).unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
        let again = apply(Some(&forced), &cfg(4, "nginx:1"), DEF, "kubectl", "apps/v1", false).unwrap();
        assert_eq!(again["spec"]["replicas"], 4, "the field now belongs to the applier");
    }

    #[test]
    fn apply_removes_fields_it_no_longer_applies() {
        let first = apply(None, &cfg(2, "nginx:1"), DEF, "kubectl", "apps/v1", false).unwrap();
        let mut second_cfg = cfg(2, "nginx:1");
        second_cfg["metadata"]["labels"] = json!({});
        second_cfg["spec"].as_object_mut().unwrap().remove("replicas");
        let second = apply(Some(&first), &second_cfg, DEF, "kubectl", "apps/v1", false).unwrap();
        assert!(second["spec"].get("replicas").is_none());
        assert!(second["metadata"]["labels"].get("app").is_none());
        assert_eq!(second["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1");
    }
}
