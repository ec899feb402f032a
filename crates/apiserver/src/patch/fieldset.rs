//! Field sets: which fields of an object a manager owns, in the FieldsV1
//! form Kubernetes stores in `metadata.managedFields` (`f:<field>`,
//! `k:{"name":"x"}` for items of keyed lists, `v:<value>` for sets).

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use skiff_api::schema::{field_definition, field_extensions, patch_meta};

/// A set of field paths, as a tree. `member` marks the node itself as owned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    pub member: bool,
    pub children: BTreeMap<String, FieldSet>,
}

/// The keys that identify items of a list field, if it is a keyed list.
pub fn list_keys(parent_def: Option<&str>, field: &str) -> ListKind {
    let Some(def) = parent_def else {
        return ListKind::Atomic;
    };
    if let Some(ext) = field_extensions(def, field) {
        match ext.list_type {
            Some("map") => {
                let keys: Vec<String> = ext.list_map_keys.iter().map(|k| k.to_string()).collect();
                if !keys.is_empty() {
                    return ListKind::Keyed(keys);
                }
            }
            Some("set") => return ListKind::Set,
            Some("atomic") => return ListKind::Atomic,
            _ => {}
        }
    }
    match patch_meta(def, field) {
        Some(m) if m.strategy.split(',').any(|s| s == "merge") => match m.merge_key {
            Some(k) => ListKind::Keyed(vec![k.to_string()]),
            None => ListKind::Set,
        },
        _ => ListKind::Atomic,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListKind {
    Atomic,
    Set,
    Keyed(Vec<String>),
}

/// The path element of a keyed list item: `k:{"name":"nginx"}`.
pub fn item_key(item: &Value, keys: &[String]) -> Option<String> {
    let mut m = Map::new();
    for k in keys {
        // `protocol` in port keys has a schema default (TCP) that identifies
        // the item before defaulting runs; other absent keys are skipped
        match item.get(k) {
            Some(v) => {
                m.insert(k.clone(), v.clone());
            }
            None if k == "protocol" => {
                m.insert(k.clone(), Value::String("TCP".into()));
            }
            None => {}
        }
    }
    if m.is_empty() {
        None
    } else {
        Some(format!("k:{}", Value::Object(m)))
    }
}

impl FieldSet {
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    /// The fields an object sets. `def` is its OpenAPI definition.
    pub fn of(obj: &Value, def: Option<&str>) -> FieldSet {
        let mut set = FieldSet::default();
        if let Value::Object(m) = obj {
            for (k, v) in m {
                if k == "apiVersion" || k == "kind" {
                    continue;
                }
                set.children.insert(format!("f:{k}"), field_set(v, def, k));
            }
        }
        set
    }

    /// Parse a stored FieldsV1 object.
    pub fn from_fields_v1(v: &Value) -> FieldSet {
        let mut set = FieldSet::default();
        if let Value::Object(m) = v {
            for (k, child) in m {
                if k == "." {
                    set.member = true;
                } else {
                    let mut c = FieldSet::from_fields_v1(child);
                    if c.children.is_empty() {
                        c.member = true;
                    }
                    set.children.insert(k.clone(), c);
                }
            }
        }
        set
    }

    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), Value::Object(Map::new()));
        }
        for (k, c) in &self.children {
            m.insert(k.clone(), c.to_fields_v1());
        }
        Value::Object(m)
    }

    /// Every owned path (members), each as its list of path elements.
    pub fn paths(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        self.walk(&mut Vec::new(), &mut out);
        out
    }

    fn walk(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if self.member && !prefix.is_empty() {
            out.push(prefix.clone());
        }
        for (k, c) in &self.children {
            prefix.push(k.clone());
            c.walk(prefix, out);
            prefix.pop();
        }
    }

    pub fn contains(&self, path: &[String]) -> bool {
        match path.split_first() {
            None => self.member,
            Some((first, rest)) => self.children.get(first).is_some_and(|c| c.contains(rest)),
        }
    }

    pub fn insert(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.member = true,
            Some((first, rest)) => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    pub fn remove(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.member = false,
            Some((first, rest)) => {
                if let Some(c) = self.children.get_mut(first) {
                    c.remove(rest);
                    if c.is_empty() {
                        self.children.remove(first);
                    }
                }
            }
        }
    }
}

fn field_set(v: &Value, parent_def: Option<&str>, field: &str) -> FieldSet {
    let def = parent_def.and_then(|d| field_definition(d, field));
    match v {
        Value::Object(m) if !m.is_empty() => {
            // a struct (typed) or a free-form map (labels: the map is a member too)
            let mut set = FieldSet { member: def.is_none(), children: BTreeMap::new() };
            for (k, c) in m {
                set.children.insert(format!("f:{k}"), field_set(c, def, k));
            }
            set
        }
        Value::Array(items) if !items.is_empty() => match list_keys(parent_def, field) {
            ListKind::Atomic => FieldSet { member: true, children: BTreeMap::new() },
            ListKind::Set => {
                let mut set = FieldSet::default();
                for it in items {
                    set.children.insert(format!("v:{it}"), FieldSet { member: true, children: BTreeMap::new() });
                }
                set
            }
            ListKind::Keyed(keys) => {
                let mut set = FieldSet::default();
                for it in items {
                    let Some(k) = item_key(it, &keys) else {
                        continue;
                    };
                    let mut item = FieldSet { member: true, children: BTreeMap::new() };
                    if let Value::Object(m) = it {
                        for (f, c) in m {
                            item.children.insert(format!("f:{f}"), field_set(c, def, f));
                        }
                    }
                    set.children.insert(k, item);
                }
                set
            }
        },
        _ => FieldSet { member: true, children: BTreeMap::new() },
    }
}

/// The value at a field path in an object, if present.
pub fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for el in path {
        cur = step(cur, el)?;
    }
    Some(cur)
}

fn step<'a>(cur: &'a Value, el: &str) -> Option<&'a Value> {
    if let Some(f) = el.strip_prefix("f:") {
        return cur.get(f);
    }
    let items = cur.as_array()?;
    if let Some(k) = el.strip_prefix("k:") {
        let want: Map<String, Value> = serde_json::from_str(k).ok()?;
        let keys: Vec<String> = want.keys().cloned().collect();
        return items.iter().find(|it| item_key(it, &keys).as_deref() == Some(el));
    }
    if let Some(v) = el.strip_prefix("v:") {
        let want: Value = serde_json::from_str(v).ok()?;
        return items.iter().find(|it| **it == want);
    }
    if let Some(i) = el.strip_prefix("i:") {
        return items.get(i.parse::<usize>().ok()?);
    }
    None
}

/// Remove the field at `path` from `obj` (a no-op if absent).
pub fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for el in parents {
        let next = match el.strip_prefix("f:") {
            Some(f) => cur.get_mut(f),
            None => step_index(cur, el).and_then(move |i| cur.get_mut(i)),
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(i) = step_index(cur, last) {
        if let Some(a) = cur.as_array_mut() {
            a.remove(i);
        }
    }
}

fn step_index(cur: &Value, el: &str) -> Option<usize> {
    let items = cur.as_array()?;
    let found = step(cur, el)?;
    items.iter().position(|x| std::ptr::eq(x, found))
}

/// A path as Kubernetes prints it in conflicts: `.spec.replicas`,
/// `.spec.template.spec.containers[name="nginx"].image`.
pub fn display(path: &[String]) -> String {
    let mut out = String::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let m: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        } else if let Some(i) = el.strip_prefix("i:") {
            out.push_str(&format!("[{i}]"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_sets_use_keys_for_containers_and_round_trip() {
        let d = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}}});
        let set = FieldSet::of(&d, Some("io.k8s.api.apps.v1.Deployment"));
        let v1 = set.to_fields_v1();
        assert_eq!(v1["f:metadata"]["f:labels"]["."], json!({}));
        let c = &v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"nginx\"}"];
        assert_eq!(c["f:image"], json!({}));
        assert_eq!(FieldSet::from_fields_v1(&v1), set);
        let path: Vec<String> = ["f:spec", "f:template", "f:spec", "f:containers", "k:{\"name\":\"nginx\"}", "f:image"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(value_at(&d, &path), Some(&json!("nginx")));
        assert_eq!(display(&path), ".spec.template.spec.containers[name=\"nginx\"].image");
        let mut d2 = d.clone();
        remove_at(&mut d2, &path);
        assert!(d2["spec"]["template"]["spec"]["containers"][0].get("image").is_none());
    }
}
