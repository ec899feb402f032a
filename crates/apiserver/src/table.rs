//! `meta.k8s.io/v1` Tables: the rows `kubectl get` prints.

use serde_json::{json, Map, Value};
use skiff_api::ResourceType;

/// What each row carries besides its cells (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(v: Option<&str>) -> Self {
        match v {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

pub fn row(rt: &ResourceType, obj: &Value, include: IncludeObject, now: chrono::DateTime<chrono::Utc>) -> Value {
    let cells = skiff_api::table::cells(rt, obj, now);
    let mut row = Map::new();
    row.insert("cells".into(), Value::Array(cells));
    match include {
        IncludeObject::None => {}
        IncludeObject::Object => {
            row.insert("object".into(), obj.clone());
        }
        IncludeObject::Metadata => {
            let metadata = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
            row.insert(
                "object".into(),
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata}),
            );
        }
    }
    Value::Object(row)
}

/// A Table. `with_columns` is false for watch events after the first.
pub fn table(rt: &ResourceType, rows: Vec<Value>, meta: Value, with_columns: bool) -> Value {
    let columns = if with_columns { skiff_api::table::column_definitions_json(rt) } else { Value::Null };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": columns,
        "rows": rows,
    })
}
