//! The OpenAPI documents kubectl reads: OpenAPI v3 per group-version
//! (`/openapi/v3` and `/openapi/v3/apis/apps/v1`, kubectl 1.29+) and
//! Swagger 2.0 as JSON and as gnostic protobuf (`/openapi/v2`, kubectl 1.27
//! and 1.28).
//!
//! What kubectl needs from them: a PATCH operation per kind that carries
//! `x-kubernetes-group-version-kind` and a `fieldValidation` query parameter
//! (then it leaves validation to the server), the patch content types the
//! operation accepts (strategic merge patch is computed from the schemas),
//! and the schemas themselves with their group-version-kind for
//! `kubectl explain`. Each document describes the paths Kubernetes serves
//! for the served resources: collection, item, and subresources.
//!
//! Documents are built on first request and kept as bytes; nothing is built
//! at start.

pub mod proto;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Map, Value};

use crate::catalogue::{self, ResourceType, Subresource};
use crate::schema::{self, Gvk, DELETE_OPTIONS_DEFINITION, PATCH_DEFINITION, REF_PREFIX, STATUS_DEFINITION};

const V3_REF_PREFIX: &str = "#/components/schemas/";

/// The content types a PATCH accepts, in Kubernetes' order.
pub const PATCH_CONTENT_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

/// The index of the v3 documents: `{"paths": {"api/v1": {"serverRelativeURL":
/// "/openapi/v3/api/v1?hash=<HASH>"}, …}}`, one entry per served
/// group-version. The hash is that of the document's bytes, so a client
/// may cache a document for as long as its URL does not change.
pub fn v3_index() -> Value {
    let paths: Map<String, Value> = v3_hashes()
        .iter()
        .map(|(path, hash)| (path.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")})))
        .collect();
    json!({ "paths": paths })
}

/// The OpenAPI 3.0 document of one group-version, `path` being `api/v1` or
/// `apis/<group>/<version>` as in [`v3_index`]; `None` for a group-version
/// Skiff does not serve. Built on first request, then kept.
pub fn v3_group_version(path: &str) -> Option<Arc<Vec<u8>>> {
    let (group, version) = catalogue::group_versions().into_iter().find(|(g, v)| gv_path(g, v) == path)?;
    static DOCS: Mutex<BTreeMap<String, Arc<Vec<u8>>>> = Mutex::new(BTreeMap::new());
    // A panic while building leaves nothing half-inserted: the map stays usable.
    let mut docs = DOCS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(doc) = docs.get(path) {
        return Some(doc.clone());
    }
    let doc = Arc::new(v3_bytes(&schema::definitions(), group, version));
    docs.insert(path.to_string(), doc.clone());
    Some(doc)
}

/// The Swagger 2.0 document of everything Skiff serves, built on each call.
pub fn v2_json() -> Value {
    v2_document(&schema::definitions())
}

/// The `Content-Type` of [`v2_protobuf`]'s answer. kubectl asks with
/// `Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf`,
/// whose `@` Go's `mime.ParseMediaType` refuses in a response: like
/// kube-openapi's handler, answer with the dotted form.
pub const V2_PROTOBUF_CONTENT_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// [`v2_json`] encoded as gnostic's `openapi.v2.Document`, what
/// `/openapi/v2` answers to kubectl 1.27 and 1.28, with
/// [`V2_PROTOBUF_CONTENT_TYPE`]. Built on first request, then kept.
pub fn v2_protobuf() -> Arc<Vec<u8>> {
    static DOC: OnceLock<Arc<Vec<u8>>> = OnceLock::new();
    DOC.get_or_init(|| {
        use prost::Message;
        Arc::new(proto::document(&v2_json()).encode_to_vec())
    })
    .clone()
}

/// A stable hash of a document, as upper-case hex (what the `hash` query
/// parameter and an `ETag` carry): two 64-bit FNV-1a hashes with different
/// offsets.
pub fn hash(bytes: &[u8]) -> String {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x84222325_cbf29ce4;
    for &byte in bytes {
        a = (a ^ u64::from(byte)).wrapping_mul(PRIME);
        b = (b ^ u64::from(byte.rotate_left(3))).wrapping_mul(PRIME);
    }
    format!("{a:016X}{b:016X}")
}

/// `api/v1` or `apis/apps/v1`.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The hash of every v3 document, computed once from documents that are
/// built for it and dropped.
fn v3_hashes() -> &'static [(String, String)] {
    static HASHES: OnceLock<Vec<(String, String)>> = OnceLock::new();
    HASHES.get_or_init(|| {
        let defs = schema::definitions();
        catalogue::group_versions().into_iter().map(|(g, v)| (gv_path(g, v), hash(&v3_bytes(&defs, g, v)))).collect()
    })
}

fn info() -> Value {
    json!({"title": "Kubernetes", "version": format!("v{}.{}.0", crate::KUBERNETES_MAJOR, crate::KUBERNETES_MINOR)})
}

fn v3_bytes(defs: &BTreeMap<String, Value>, group: &str, version: &str) -> Vec<u8> {
    let paths = group_version_paths(group, version);
    let mut schemas = Map::new();
    for name in schema::referenced(defs, paths.iter().flat_map(PathEntry::definitions)) {
        if let Some(s) = defs.get(&name) {
            let mut s = s.clone();
            to_v3(&mut s);
            schemas.insert(name, s);
        }
    }
    let paths: Map<String, Value> = paths.iter().map(|p| (p.path.clone(), p.v3())).collect();
    let doc = json!({
        "openapi": "3.0.0",
        "info": info(),
        "paths": paths,
        "components": {"schemas": schemas},
    });
    // Serializing a Value with string keys cannot fail.
    serde_json::to_vec(&doc).unwrap_or_default()
}

fn v2_document(defs: &BTreeMap<String, Value>) -> Value {
    let mut paths = Map::new();
    let mut roots = Vec::new();
    for (group, version) in catalogue::group_versions() {
        for entry in group_version_paths(group, version) {
            roots.extend(entry.definitions());
            paths.insert(entry.path.clone(), entry.v2());
        }
    }
    let mut definitions = Map::new();
    for name in schema::referenced(defs, roots) {
        if let Some(s) = defs.get(&name) {
            definitions.insert(name.clone(), to_v2(&name, s));
        }
    }
    json!({
        "swagger": "2.0",
        "info": info(),
        "paths": paths,
        "definitions": definitions,
    })
}

/// OpenAPI 3.0 wants `$ref` alone: a reference with a description beside
/// it becomes `allOf: [{$ref}]`, as Kubernetes writes it, and references
/// point into `components/schemas`.
fn to_v3(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.values_mut().for_each(to_v3);
            if let Some(Value::String(r)) = m.get("$ref") {
                let target = format!("{V3_REF_PREFIX}{}", r.strip_prefix(REF_PREFIX).unwrap_or(r));
                if m.len() == 1 {
                    m.insert("$ref".into(), Value::String(target));
                } else {
                    m.remove("$ref");
                    let mut wrapped = Map::new();
                    wrapped.insert("allOf".into(), json!([{"$ref": target}]));
                    wrapped.extend(std::mem::take(m));
                    *m = wrapped;
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(to_v3),
        _ => {}
    }
}

/// Swagger 2.0 knows no int-or-string: like Kubernetes, describe
/// IntOrString and Quantity as strings.
fn to_v2(name: &str, s: &Value) -> Value {
    let description = s.get("description").cloned().unwrap_or(Value::Null);
    match name {
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString" => {
            json!({"description": description, "type": "string", "format": "int-or-string"})
        }
        "io.k8s.apimachinery.pkg.api.resource.Quantity" => {
            json!({"description": description, "type": "string"})
        }
        _ => s.clone(),
    }
}

/// A query or path parameter.
#[derive(Debug)]
struct Param {
    name: &'static str,
    in_path: bool,
    ty: &'static str,
    description: &'static str,
}

const fn query(name: &'static str, ty: &'static str, description: &'static str) -> Param {
    Param { name, in_path: false, ty, description }
}

const NAME: Param = Param { name: "name", in_path: true, ty: "string", description: "name of the object" };
const NAMESPACE: Param = Param {
    name: "namespace",
    in_path: true,
    ty: "string",
    description: "object name and auth scope, such as for teams and projects",
};
const PRETTY: Param = query("pretty", "string", "If 'true', the output is indented.");
const DRY_RUN: Param = query(
    "dryRun",
    "string",
    "When present, modifications are not persisted. The only valid value is All: every stage of the request is processed, then nothing is stored.",
);
const FIELD_MANAGER: Param =
    query("fieldManager", "string", "A name for the actor making the change, recorded in managedFields.");
const FIELD_VALIDATION: Param = query(
    "fieldValidation",
    "string",
    "How the server treats unknown and duplicate fields in the body: Ignore drops them silently, Warn drops them and answers with a warning per field, Strict fails the request.",
);
const FORCE: Param =
    query("force", "boolean", "Take over the fields other managers own (server-side apply only: force conflicts).");
const ALLOW_WATCH_BOOKMARKS: Param = query("allowWatchBookmarks", "boolean", "Ask for BOOKMARK events in a watch.");
const CONTINUE: Param = query("continue", "string", "The token of the next page, from a previous list with a limit.");
const FIELD_SELECTOR: Param = query("fieldSelector", "string", "Only objects whose fields match this selector.");
const LABEL_SELECTOR: Param = query("labelSelector", "string", "Only objects whose labels match this selector.");
const LIMIT: Param = query("limit", "integer", "The most objects to return; the rest can be had with continue.");
const RESOURCE_VERSION: Param = query("resourceVersion", "string", "Which version of the data to list or watch from.");
const RESOURCE_VERSION_MATCH: Param =
    query("resourceVersionMatch", "string", "How resourceVersion applies to a list: Exact or NotOlderThan.");
const SEND_INITIAL_EVENTS: Param =
    query("sendInitialEvents", "boolean", "Start a watch with the current state, as ADDED events.");
const TIMEOUT_SECONDS: Param =
    query("timeoutSeconds", "integer", "End the list or watch call after this many seconds.");
const WATCH: Param = query("watch", "boolean", "Stream changes instead of listing.");
const GRACE_PERIOD_SECONDS: Param =
    query("gracePeriodSeconds", "integer", "Seconds the object has to terminate; 0 deletes immediately.");
const IGNORE_STORE_READ_ERROR: Param = query(
    "ignoreStoreReadErrorWithClusterBreakingPotential",
    "boolean",
    "Delete an object that cannot be read from storage (unsafe).",
);
const ORPHAN_DEPENDENTS: Param =
    query("orphanDependents", "boolean", "Deprecated: use propagationPolicy. Whether dependents are orphaned.");
const PROPAGATION_POLICY: Param =
    query("propagationPolicy", "string", "How dependents are deleted: Orphan, Background or Foreground.");
const CONTAINER: Param = query("container", "string", "The container whose log to read.");
const FOLLOW: Param = query("follow", "boolean", "Stream the log as it grows.");
const LIMIT_BYTES: Param = query("limitBytes", "integer", "Stop after this many bytes.");
const PREVIOUS: Param = query("previous", "boolean", "The log of the previous, terminated instance of the container.");
const SINCE_SECONDS: Param = query("sinceSeconds", "integer", "Only lines newer than this many seconds.");
const TAIL_LINES: Param = query("tailLines", "integer", "Only this many lines from the end.");
const TIMESTAMPS: Param = query("timestamps", "boolean", "Prefix each line with its RFC 3339 timestamp.");

const LIST_PARAMS: &[&Param] = &[
    &ALLOW_WATCH_BOOKMARKS,
    &CONTINUE,
    &FIELD_SELECTOR,
    &LABEL_SELECTOR,
    &LIMIT,
    &RESOURCE_VERSION,
    &RESOURCE_VERSION_MATCH,
    &SEND_INITIAL_EVENTS,
    &TIMEOUT_SECONDS,
    &WATCH,
];
const WRITE_PARAMS: &[&Param] = &[&DRY_RUN, &FIELD_MANAGER, &FIELD_VALIDATION];
const PATCH_PARAMS: &[&Param] = &[&DRY_RUN, &FIELD_MANAGER, &FIELD_VALIDATION, &FORCE];
const DELETE_PARAMS: &[&Param] =
    &[&DRY_RUN, &GRACE_PERIOD_SECONDS, &IGNORE_STORE_READ_ERROR, &ORPHAN_DEPENDENTS, &PROPAGATION_POLICY];
const DELETE_COLLECTION_PARAMS: &[&Param] = &[
    &CONTINUE,
    &DRY_RUN,
    &FIELD_SELECTOR,
    &GRACE_PERIOD_SECONDS,
    &IGNORE_STORE_READ_ERROR,
    &LABEL_SELECTOR,
    &LIMIT,
    &ORPHAN_DEPENDENTS,
    &PROPAGATION_POLICY,
    &RESOURCE_VERSION,
    &RESOURCE_VERSION_MATCH,
    &SEND_INITIAL_EVENTS,
    &TIMEOUT_SECONDS,
];
const LOG_PARAMS: &[&Param] = &[&CONTAINER, &FOLLOW, &LIMIT_BYTES, &PREVIOUS, &SINCE_SECONDS, &TAIL_LINES, &TIMESTAMPS];

impl Param {
    fn v3(&self) -> Value {
        let mut p = json!({
            "name": self.name,
            "in": if self.in_path { "path" } else { "query" },
            "description": self.description,
            "schema": {"type": self.ty, "uniqueItems": true},
        });
        if self.in_path {
            p["required"] = Value::Bool(true);
        }
        p
    }

    fn v2(&self) -> Value {
        let mut p = json!({
            "uniqueItems": true,
            "type": self.ty,
            "description": self.description,
            "name": self.name,
            "in": if self.in_path { "path" } else { "query" },
        });
        if self.in_path {
            p["required"] = Value::Bool(true);
        }
        p
    }
}

/// What an operation takes as its body.
#[derive(Debug)]
enum Body {
    None,
    /// An object of this definition.
    Object(String),
    /// A patch, in any of [`PATCH_CONTENT_TYPES`].
    Patch,
    /// DeleteOptions, optional.
    DeleteOptions,
}

/// What a response carries.
#[derive(Debug)]
enum Payload {
    Object(String),
    Text,
}

#[derive(Debug)]
struct Op {
    method: &'static str,
    id: String,
    description: String,
    action: &'static str,
    gvk: Gvk,
    params: &'static [&'static Param],
    body: Body,
    /// Status code, description, payload.
    responses: Vec<(&'static str, &'static str, Payload)>,
    tag: String,
}

#[derive(Debug)]
struct PathEntry {
    path: String,
    params: Vec<&'static Param>,
    ops: Vec<Op>,
}

impl PathEntry {
    /// The definitions the operations of this path refer to.
    fn definitions(&self) -> Vec<String> {
        let mut out = Vec::new();
        for op in &self.ops {
            match &op.body {
                Body::Object(d) => out.push(d.clone()),
                Body::Patch => out.push(PATCH_DEFINITION.to_string()),
                Body::DeleteOptions => out.push(DELETE_OPTIONS_DEFINITION.to_string()),
                Body::None => {}
            }
            for (_, _, payload) in &op.responses {
                if let Payload::Object(d) = payload {
                    out.push(d.clone());
                }
            }
        }
        out
    }

    fn v3(&self) -> Value {
        let mut item = Map::new();
        for op in &self.ops {
            item.insert(op.method.into(), op.v3());
        }
        item.insert("parameters".into(), self.params.iter().map(|p| p.v3()).collect());
        Value::Object(item)
    }

    fn v2(&self) -> Value {
        let mut item = Map::new();
        for op in &self.ops {
            item.insert(op.method.into(), op.v2());
        }
        item.insert("parameters".into(), self.params.iter().map(|p| p.v2()).collect());
        Value::Object(item)
    }
}

fn v3_ref(definition: &str) -> Value {
    json!({"$ref": format!("{V3_REF_PREFIX}{definition}")})
}

fn v2_ref(definition: &str) -> Value {
    json!({"$ref": format!("{REF_PREFIX}{definition}")})
}

impl Op {
    fn v3(&self) -> Value {
        let mut op = json!({
            "tags": [self.tag],
            "description": self.description,
            "operationId": self.id,
            "parameters": self.params.iter().map(|p| p.v3()).collect::<Vec<_>>(),
        });
        let body = match &self.body {
            Body::None => None,
            Body::Object(d) => Some(json!({"content": {"*/*": {"schema": v3_ref(d)}}, "required": true})),
            Body::DeleteOptions => Some(json!({"content": {"*/*": {"schema": v3_ref(DELETE_OPTIONS_DEFINITION)}}})),
            Body::Patch => {
                let content: Map<String, Value> = PATCH_CONTENT_TYPES
                    .iter()
                    .map(|t| (t.to_string(), json!({"schema": v3_ref(PATCH_DEFINITION)})))
                    .collect();
                Some(json!({"content": content, "required": true}))
            }
        };
        if let Some(body) = body {
            op["requestBody"] = body;
        }
        let mut responses = Map::new();
        for (code, description, payload) in &self.responses {
            let content = match payload {
                Payload::Object(d) => json!({"application/json": {"schema": v3_ref(d)}}),
                Payload::Text => json!({"text/plain": {"schema": {"type": "string"}}}),
            };
            responses.insert(code.to_string(), json!({"description": description, "content": content}));
        }
        responses.insert("401".into(), json!({"description": "Unauthorized"}));
        op["responses"] = Value::Object(responses);
        op["x-kubernetes-action"] = json!(self.action);
        op["x-kubernetes-group-version-kind"] = self.gvk.to_json();
        op
    }

    fn v2(&self) -> Value {
        let consumes: Vec<&str> = match self.body {
            Body::Patch => PATCH_CONTENT_TYPES.to_vec(),
            _ => vec!["*/*"],
        };
        let produces: Vec<&str> = match self.responses.first() {
            Some((_, _, Payload::Text)) => vec!["text/plain"],
            _ => vec!["application/json"],
        };
        let mut params: Vec<Value> = Vec::new();
        let body = match &self.body {
            Body::None => None,
            Body::Object(d) => Some((d.as_str(), true)),
            Body::Patch => Some((PATCH_DEFINITION, true)),
            Body::DeleteOptions => Some((DELETE_OPTIONS_DEFINITION, false)),
        };
        if let Some((definition, required)) = body {
            let mut p = json!({"name": "body", "in": "body", "schema": v2_ref(definition)});
            if required {
                p["required"] = Value::Bool(true);
            }
            params.push(p);
        }
        params.extend(self.params.iter().map(|p| p.v2()));
        let mut responses = Map::new();
        for (code, description, payload) in &self.responses {
            let schema = match payload {
                Payload::Object(d) => v2_ref(d),
                Payload::Text => json!({"type": "string"}),
            };
            responses.insert(code.to_string(), json!({"description": description, "schema": schema}));
        }
        responses.insert("401".into(), json!({"description": "Unauthorized"}));
        json!({
            "description": self.description,
            "consumes": consumes,
            "produces": produces,
            "schemes": ["https"],
            "tags": [self.tag],
            "operationId": self.id,
            "parameters": params,
            "responses": responses,
            "x-kubernetes-action": self.action,
            "x-kubernetes-group-version-kind": self.gvk.to_json(),
        })
    }
}

/// `CoreV1`, `AppsV1`, `NetworkingV1`: how operation ids name a group-version.
fn gv_camel(group: &str, version: &str) -> String {
    let group = if group.is_empty() { "core" } else { group.strip_suffix(".k8s.io").unwrap_or(group) };
    let mut out: String = group.split('.').map(capitalize).collect();
    out.push_str(&capitalize(version));
    out
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `core_v1`, `apps_v1`, `networking_v1`.
fn tag(group: &str, version: &str) -> String {
    let group = if group.is_empty() { "core" } else { group.split('.').next().unwrap_or(group) };
    format!("{group}_{version}")
}

/// The paths Kubernetes serves for the resources of one group-version.
fn group_version_paths(group: &str, version: &str) -> Vec<PathEntry> {
    let mut out = Vec::new();
    for rt in catalogue::all().iter().filter(|r| r.group == group && r.version == version) {
        resource_paths(rt, &mut out);
    }
    out
}

fn resource_paths(rt: &ResourceType, out: &mut Vec<PathEntry>) {
    let prefix = format!("/{}", gv_path(rt.group, rt.version));
    let gv = gv_camel(rt.group, rt.version);
    let tag = tag(rt.group, rt.version);
    let gvk = Gvk { group: rt.group, version: rt.version, kind: rt.kind };
    let scoped = if rt.namespaced { format!("Namespaced{}", rt.kind) } else { rt.kind.to_string() };
    let (collection, scope_params): (String, Vec<&'static Param>) = if rt.namespaced {
        (format!("{prefix}/namespaces/{{namespace}}/{}", rt.plural), vec![&NAMESPACE, &PRETTY])
    } else {
        (format!("{prefix}/{}", rt.plural), vec![&PRETTY])
    };
    let item = format!("{collection}/{{name}}");
    let item_params: Vec<&'static Param> = std::iter::once(&NAME).chain(scope_params.iter().copied()).collect();
    let op = |method, id: String, description: String, action, params, body, responses| Op {
        method,
        id,
        description,
        action,
        gvk,
        params,
        body,
        responses,
        tag: tag.clone(),
    };
    let object = || Payload::Object(rt.definition.to_string());
    let status = || Payload::Object(STATUS_DEFINITION.to_string());

    if rt.namespaced {
        out.push(PathEntry {
            path: format!("{prefix}/{}", rt.plural),
            params: LIST_PARAMS.iter().copied().chain([&PRETTY]).collect(),
            ops: vec![op(
                "get",
                format!("list{gv}{}ForAllNamespaces", rt.kind),
                format!("list or watch objects of kind {}", rt.kind),
                "list",
                &[],
                Body::None,
                vec![("200", "OK", Payload::Object(schema::list_definition(rt)))],
            )],
        });
    }
    out.push(PathEntry {
        path: collection,
        params: scope_params,
        ops: vec![
            op(
                "get",
                format!("list{gv}{scoped}"),
                format!("list or watch objects of kind {}", rt.kind),
                "list",
                LIST_PARAMS,
                Body::None,
                vec![("200", "OK", Payload::Object(schema::list_definition(rt)))],
            ),
            op(
                "post",
                format!("create{gv}{scoped}"),
                format!("create a {}", rt.kind),
                "post",
                WRITE_PARAMS,
                Body::Object(rt.definition.to_string()),
                vec![("200", "OK", object()), ("201", "Created", object()), ("202", "Accepted", object())],
            ),
            op(
                "delete",
                format!("delete{gv}Collection{scoped}"),
                format!("delete collection of {}", rt.kind),
                "deletecollection",
                DELETE_COLLECTION_PARAMS,
                Body::DeleteOptions,
                vec![("200", "OK", status())],
            ),
        ],
    });
    out.push(PathEntry {
        path: item.clone(),
        params: item_params.clone(),
        ops: vec![
            op(
                "get",
                format!("read{gv}{scoped}"),
                format!("read the specified {}", rt.kind),
                "get",
                &[],
                Body::None,
                vec![("200", "OK", object())],
            ),
            op(
                "put",
                format!("replace{gv}{scoped}"),
                format!("replace the specified {}", rt.kind),
                "put",
                WRITE_PARAMS,
                Body::Object(rt.definition.to_string()),
                vec![("200", "OK", object()), ("201", "Created", object())],
            ),
            op(
                "patch",
                format!("patch{gv}{scoped}"),
                format!("partially update the specified {}", rt.kind),
                "patch",
                PATCH_PARAMS,
                Body::Patch,
                vec![("200", "OK", object()), ("201", "Created", object())],
            ),
            op(
                "delete",
                format!("delete{gv}{scoped}"),
                format!("delete a {}", rt.kind),
                "delete",
                DELETE_PARAMS,
                Body::DeleteOptions,
                vec![("200", "OK", status()), ("202", "Accepted", status())],
            ),
        ],
    });
    for sub in rt.subresources {
        if let Some(entry) = subresource_path(rt, sub, &item, &item_params, &gv, &scoped, &tag) {
            out.push(entry);
        }
    }
}

/// How a verb of a subresource becomes an operation.
struct VerbOp {
    method: &'static str,
    action: &'static str,
    id_verb: &'static str,
    params: &'static [&'static Param],
    body: VerbBody,
    codes: &'static [(&'static str, &'static str)],
}

#[derive(Clone, Copy)]
enum VerbBody {
    None,
    Object,
    Patch,
}

fn verb_op(verb: &str) -> Option<VerbOp> {
    let (method, action, id_verb, params, body, codes): (_, _, _, &'static [&'static Param], _, &'static [_]) =
        match verb {
            "get" => ("get", "get", "read", &[], VerbBody::None, &[("200", "OK")]),
            "update" => ("put", "put", "replace", WRITE_PARAMS, VerbBody::Object, &[("200", "OK"), ("201", "Created")]),
            "patch" => ("patch", "patch", "patch", PATCH_PARAMS, VerbBody::Patch, &[("200", "OK"), ("201", "Created")]),
            "create" => (
                "post",
                "post",
                "create",
                WRITE_PARAMS,
                VerbBody::Object,
                &[("200", "OK"), ("201", "Created"), ("202", "Accepted")],
            ),
            _ => return None,
        };
    Some(VerbOp { method, action, id_verb, params, body, codes })
}

/// The path of a subresource: status and scale (get, put, patch), binding
/// and eviction (post), finalize (put), log (get, text).
fn subresource_path(
    rt: &ResourceType,
    sub: &Subresource,
    item: &str,
    item_params: &[&'static Param],
    gv: &str,
    scoped: &str,
    tag: &str,
) -> Option<PathEntry> {
    let log = sub.name == "log";
    let definition = if log { None } else { Some(schema::definition_of_kind(sub.group, sub.version, sub.kind)?) };
    let payload = || match definition {
        Some(d) => Payload::Object(d.to_string()),
        None => Payload::Text,
    };
    let mut ops = Vec::new();
    for verb in sub.verbs {
        let Some(v) = verb_op(verb) else { continue };
        let body = match v.body {
            VerbBody::None => Body::None,
            VerbBody::Patch => Body::Patch,
            VerbBody::Object => Body::Object(definition?.to_string()),
        };
        let description = match *verb {
            "get" => format!("read {} of the specified {}", sub.name, rt.kind),
            "update" => format!("replace {} of the specified {}", sub.name, rt.kind),
            "patch" => format!("partially update {} of the specified {}", sub.name, rt.kind),
            _ => format!("create {} of a {}", sub.name, rt.kind),
        };
        ops.push(Op {
            method: v.method,
            id: format!("{}{gv}{scoped}{}", v.id_verb, capitalize(sub.name)),
            description,
            action: v.action,
            gvk: Gvk { group: sub.group, version: sub.version, kind: sub.kind },
            params: if log { LOG_PARAMS } else { v.params },
            body,
            responses: v.codes.iter().map(|(code, text)| (*code, *text, payload())).collect(),
            tag: tag.to_string(),
        });
    }
    Some(PathEntry { path: format!("{item}/{}", sub.name), params: item_params.to_vec(), ops })
}

#[cfg(test)]
mod tests;
