//! The JSON schemas of every served kind, generated from k8s-openapi's
//! `JsonSchema` impls and completed with the extensions Kubernetes puts on
//! its types (group-version-kind, strategic-merge-patch and list-type
//! markers), and the checks a written object goes through before it is
//! stored (see [`check`]).
//!
//! Two forms exist. [`definitions`] builds the full schemas, descriptions
//! included, for the OpenAPI documents; it is called only when a document is
//! built. The checks and the patch-metadata look-ups use a compact registry
//! without descriptions, built once on first use.

mod check;
mod golang;
mod tables;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use k8s_openapi::schemars::generate::SchemaSettings;
use k8s_openapi::schemars::SchemaGenerator;
use serde_json::{json, Value};

use crate::catalogue::{self, ResourceType};

pub use check::{check, check_definition, unknown_field_message, CheckOutcome, DecodeError};
pub use tables::FieldExtensions;

/// Where the `$ref`s of the schemas returned by [`definitions`] point.
pub const REF_PREFIX: &str = "#/definitions/";

/// The definition of the body of every PATCH request.
pub const PATCH_DEFINITION: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
/// The body of DELETE requests.
pub const DELETE_OPTIONS_DEFINITION: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
/// What a delete or an error returns.
pub const STATUS_DEFINITION: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";

const LIST_META_DEFINITION: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

/// One served kind and the Rust type k8s-openapi gives it. The list feeds
/// both the schema generator and the typed decoding in [`check`].
macro_rules! served_types {
    ($($definition:literal => $ty:ty,)*) => {
        /// Adds the schema of `definition` (and everything it references)
        /// to the generator; false when the definition is not known here.
        fn add_type_schema(gen: &mut SchemaGenerator, definition: &str) -> bool {
            match definition {
                $($definition => {
                    gen.subschema_for::<$ty>();
                    true
                })*
                _ => false,
            }
        }

        /// Decodes `obj` into the typed struct of `definition`; `None` when
        /// the definition has no typed struct here.
        fn decode_typed(definition: &str, obj: &Value) -> Option<Result<(), String>> {
            match definition {
                $($definition => Some(decode_as::<$ty>(obj)),)*
                _ => None,
            }
        }
    };
}

served_types! {
    "io.k8s.api.core.v1.Namespace" => k8s_openapi::api::core::v1::Namespace,
    "io.k8s.api.core.v1.Pod" => k8s_openapi::api::core::v1::Pod,
    "io.k8s.api.core.v1.Service" => k8s_openapi::api::core::v1::Service,
    "io.k8s.api.core.v1.Endpoints" => k8s_openapi::api::core::v1::Endpoints,
    "io.k8s.api.core.v1.Secret" => k8s_openapi::api::core::v1::Secret,
    "io.k8s.api.core.v1.ConfigMap" => k8s_openapi::api::core::v1::ConfigMap,
    "io.k8s.api.core.v1.ServiceAccount" => k8s_openapi::api::core::v1::ServiceAccount,
    "io.k8s.api.core.v1.Node" => k8s_openapi::api::core::v1::Node,
    "io.k8s.api.core.v1.Event" => k8s_openapi::api::core::v1::Event,
    "io.k8s.api.core.v1.Binding" => k8s_openapi::api::core::v1::Binding,
    "io.k8s.api.apps.v1.Deployment" => k8s_openapi::api::apps::v1::Deployment,
    "io.k8s.api.apps.v1.ReplicaSet" => k8s_openapi::api::apps::v1::ReplicaSet,
    "io.k8s.api.networking.v1.Ingress" => k8s_openapi::api::networking::v1::Ingress,
    "io.k8s.api.networking.v1.IngressClass" => k8s_openapi::api::networking::v1::IngressClass,
    "io.k8s.api.discovery.v1.EndpointSlice" => k8s_openapi::api::discovery::v1::EndpointSlice,
    "io.k8s.api.coordination.v1.Lease" => k8s_openapi::api::coordination::v1::Lease,
    "io.k8s.api.events.v1.Event" => k8s_openapi::api::events::v1::Event,
    "io.k8s.api.autoscaling.v1.Scale" => k8s_openapi::api::autoscaling::v1::Scale,
    "io.k8s.api.policy.v1.Eviction" => k8s_openapi::api::policy::v1::Eviction,
    "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions" => k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions,
    "io.k8s.apimachinery.pkg.apis.meta.v1.Status" => k8s_openapi::apimachinery::pkg::apis::meta::v1::Status,
}

fn decode_as<T: serde::de::DeserializeOwned>(obj: &Value) -> Result<(), String> {
    match serde_path_to_error::deserialize::<_, T>(obj) {
        Ok(_) => Ok(()),
        Err(e) => {
            let path = e.path().to_string();
            if path == "." {
                Err(e.into_inner().to_string())
            } else {
                Err(format!("{path}: {}", e.into_inner()))
            }
        }
    }
}

/// A kind as OpenAPI's `x-kubernetes-group-version-kind` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Gvk {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
}

impl Gvk {
    /// `{"group": …, "kind": …, "version": …}`, keys in Kubernetes' order.
    pub fn to_json(self) -> Value {
        json!({"group": self.group, "kind": self.kind, "version": self.version})
    }
}

const fn gvk(group: &'static str, version: &'static str, kind: &'static str) -> Gvk {
    Gvk { group, version, kind }
}

/// Definitions that are not served kinds but that paths refer to, with
/// the kind each one is (subresource bodies, options, statuses).
const EXTRA_KINDS: &[(&str, Gvk)] = &[
    ("io.k8s.api.autoscaling.v1.Scale", gvk("autoscaling", "v1", "Scale")),
    ("io.k8s.api.core.v1.Binding", gvk("", "v1", "Binding")),
    ("io.k8s.api.policy.v1.Eviction", gvk("policy", "v1", "Eviction")),
    (STATUS_DEFINITION, gvk("", "v1", "Status")),
];

/// The definition of the kind a path speaks (`autoscaling/v1` `Scale` is
/// `io.k8s.api.autoscaling.v1.Scale`); `None` when no schema exists here.
pub fn definition_of_kind(group: &str, version: &str, kind: &str) -> Option<&'static str> {
    catalogue::all()
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
        .map(|r| r.definition)
        .or_else(|| {
            EXTRA_KINDS
                .iter()
                .find(|(_, g)| g.group == group && g.version == version && g.kind == kind)
                .map(|(d, _)| *d)
        })
}

/// The kind a definition is, for the served kinds and [`EXTRA_KINDS`].
pub fn kind_of_definition(definition: &str) -> Option<Gvk> {
    catalogue::all()
        .iter()
        .find(|r| r.definition == definition)
        .map(|r| gvk(r.group, r.version, r.kind))
        .or_else(|| EXTRA_KINDS.iter().find(|(d, _)| *d == definition).map(|(_, g)| *g))
}

/// The definition of a served kind's list (`io.k8s.api.core.v1.PodList`).
pub fn list_definition(rt: &ResourceType) -> String {
    format!("{}List", rt.definition)
}

/// The full schemas of every served kind, their lists, the bodies their
/// paths use, and every definition these reference, keyed by definition
/// name, with `$ref`s of the form `#/definitions/<name>` ([`REF_PREFIX`]).
/// Built on each call (a few milliseconds): callers keep what they derive.
pub fn definitions() -> BTreeMap<String, Value> {
    let mut gen = SchemaSettings::draft07()
        .with(|s| {
            s.transforms.clear();
            s.meta_schema = None;
            s.definitions_path = "/definitions".into();
        })
        .into_generator();
    for rt in catalogue::all() {
        // A kind without a typed struct is caught by a unit test.
        add_type_schema(&mut gen, rt.definition);
    }
    for (definition, _) in EXTRA_KINDS {
        add_type_schema(&mut gen, definition);
    }
    add_type_schema(&mut gen, DELETE_OPTIONS_DEFINITION);
    gen.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Patch>();
    gen.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta>();

    let mut defs: BTreeMap<String, Value> = gen.take_definitions(false).into_iter().collect();
    for rt in catalogue::all() {
        defs.insert(list_definition(rt), list_schema(rt));
    }
    add_gvk_extensions(&mut defs);
    add_field_extensions(&mut defs);
    defs
}

fn list_schema(rt: &ResourceType) -> Value {
    json!({
        "description": format!("{}List is a list of {}.", rt.kind, rt.kind),
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object.",
                "type": "string",
            },
            "items": {
                "description": format!("List of {}.", rt.plural),
                "type": "array",
                "items": {"$ref": format!("{REF_PREFIX}{}", rt.definition)},
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents.",
                "type": "string",
            },
            "metadata": {
                "$ref": format!("{REF_PREFIX}{LIST_META_DEFINITION}"),
                "description": "Standard list metadata.",
            },
        },
        "required": ["items"],
    })
}

fn add_gvk_extensions(defs: &mut BTreeMap<String, Value>) {
    let mut gvks: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for rt in catalogue::all() {
        let kind = gvk(rt.group, rt.version, rt.kind).to_json();
        gvks.entry(rt.definition.to_string()).or_default().push(kind);
        let list = json!({"group": rt.group, "kind": format!("{}List", rt.kind), "version": rt.version});
        gvks.entry(list_definition(rt)).or_default().push(list);
    }
    for (definition, kind) in EXTRA_KINDS {
        gvks.entry(definition.to_string()).or_default().push(kind.to_json());
    }
    let delete_options = gvks.entry(DELETE_OPTIONS_DEFINITION.to_string()).or_default();
    for (group, version) in catalogue::group_versions() {
        delete_options.push(gvk(group, version, "DeleteOptions").to_json());
    }
    for (definition, list) in gvks {
        if let Some(Value::Object(schema)) = defs.get_mut(&definition) {
            schema.insert("x-kubernetes-group-version-kind".into(), Value::Array(list));
        }
    }
}

fn add_field_extensions(defs: &mut BTreeMap<String, Value>) {
    for ext in tables::FIELD_EXTENSIONS {
        let Some(property) = defs
            .get_mut(ext.definition)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(ext.field))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        if let Some(key) = ext.list_map_keys.first().map(|_| ext.list_map_keys) {
            property.insert("x-kubernetes-list-map-keys".into(), json!(key));
        }
        if let Some(v) = ext.list_type {
            property.insert("x-kubernetes-list-type".into(), json!(v));
        }
        if let Some(v) = ext.map_type {
            property.insert("x-kubernetes-map-type".into(), json!(v));
        }
        if let Some(v) = ext.patch_merge_key {
            property.insert("x-kubernetes-patch-merge-key".into(), json!(v));
        }
        if let Some(v) = ext.patch_strategy {
            property.insert("x-kubernetes-patch-strategy".into(), json!(v));
        }
    }
    for (definition, map_type) in tables::DEFINITION_MAP_TYPES {
        if let Some(Value::Object(schema)) = defs.get_mut(*definition) {
            schema.insert("x-kubernetes-map-type".into(), json!(map_type));
        }
    }
}

/// The names of the definitions `roots` reference, directly or not,
/// `roots` included.
pub fn referenced(defs: &BTreeMap<String, Value>, roots: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = roots.into_iter().collect();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(schema) = defs.get(&name) {
            collect_refs(schema, &mut todo);
        }
    }
    seen
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        if let Some(name) = r.strip_prefix(REF_PREFIX) {
                            out.push(name.to_string());
                        }
                    }
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// How a strategic merge patch treats a field: Kubernetes'
/// `x-kubernetes-patch-strategy` (`merge`, `retainKeys`, `merge,retainKeys`,
/// `replace`) and `x-kubernetes-patch-merge-key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchMeta {
    pub strategy: &'static str,
    pub merge_key: Option<&'static str>,
}

/// The patch strategy of `field` of `definition` (`patch_meta(
/// "io.k8s.api.core.v1.PodSpec", "containers")` merges by `name`); `None`
/// for fields that are replaced as a whole (maps are always merged).
pub fn patch_meta(definition: &str, field: &str) -> Option<PatchMeta> {
    let ext = tables::field_extensions(definition, field)?;
    Some(PatchMeta { strategy: ext.patch_strategy?, merge_key: ext.patch_merge_key })
}

/// Every Kubernetes extension on `field` of `definition` (patch strategy,
/// merge key, list type and map keys, map type).
pub fn field_extensions(definition: &str, field: &str) -> Option<&'static FieldExtensions> {
    tables::field_extensions(definition, field)
}

/// The definition that describes the value of `field` of `definition`:
/// the field's own type, or its items' for a list, or its values' for a map
/// (`field_definition("io.k8s.api.core.v1.PodSpec", "containers")` is
/// `io.k8s.api.core.v1.Container`); `None` for scalars and free-form values.
pub fn field_definition(definition: &str, field: &str) -> Option<&'static str> {
    let reg = registry();
    let def = reg.get(definition)?;
    let node = def.field(field)?;
    reg.struct_name_of(node)
}

/// The compact registry the checks walk.
pub(crate) fn registry() -> &'static check::Registry {
    static REGISTRY: OnceLock<check::Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| check::Registry::compile(definitions()))
}

#[cfg(test)]
mod tests;
