//! The verbs on resources: get, list, create, update, patch, delete,
//! deletecollection (watch lives in `watch`).

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use skiff_api::ResourceType;
use skiff_store::StoreError;

use crate::error::{ApiError, Cause};
use crate::objects::{self, meta_mut, meta_str, name_of};
use crate::query::{output, FieldValidation, Output, Query};
use crate::request::Target;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::services;
use crate::table::{self, IncludeObject};
use crate::Api;

pub const MAX_BODY: usize = 3 * 1024 * 1024;

pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A JSON response.
pub fn json_response(code: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - {}", serde_json::to_string(w).unwrap_or_default());
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append("warning", v);
        }
    }
    resp
}

/// Route a resource request to its verb.
pub async fn handle(
    api: &Api,
    method: &Method,
    t: &Target,
    query: &Query,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    // kubectl 1.32+ typed clients send protobuf bodies: turn them into JSON
    // once, here, so every verb sees one format
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if skiff_api::protobuf::is_protobuf(ct) && !body.is_empty() {
        return match skiff_api::protobuf::decode(&body) {
            Ok(v) => {
                let mut json_headers = headers.clone();
                json_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                let json = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
                route(api, method, t, query, &json_headers, json).await
            }
            Err(e) => ApiError::bad_request(e.to_string()).into_response(),
        };
    }
    route(api, method, t, query, headers, body).await
}

async fn route(api: &Api, method: &Method, t: &Target, query: &Query, headers: &HeaderMap, body: Bytes) -> Response {
    let result = match (method.clone(), t.name.is_some(), t.subresource.as_deref()) {
        (Method::GET, false, None) if query.flag("watch") => crate::watch::watch(api, t, query, headers).await,
        (Method::GET, false, None) => list(api, t, query, headers).await,
        (Method::GET, true, Some("scale")) => get_scale(api, t).await,
        (Method::GET, true, Some("log")) => crate::nodeproxy::pod_logs(api, t, query).await,
        (Method::GET, true, None | Some("status")) if query.flag("watch") => {
            crate::watch::watch(api, t, query, headers).await
        }
        (Method::GET, true, None | Some("status")) => get(api, t, headers, query).await,
        (Method::POST, false, None) => create(api, t, query, headers, body).await,
        (Method::POST, true, Some("binding")) => bind(api, t, query, headers, body).await,
        (Method::POST, true, Some("eviction")) => evict(api, t, query, body).await,
        (Method::POST, true, Some("token")) => crate::serviceaccount::create_token(api, t, headers, &body).await,
        (Method::PUT, true, Some("scale")) => update_scale(api, t, query, headers, body).await,
        (Method::PUT, true, None | Some("status") | Some("finalize")) => update(api, t, query, headers, body).await,
        (Method::PATCH, true, _) => patch(api, t, query, headers, body).await,
        (Method::DELETE, true, None) => delete(api, t, query, body).await,
        (Method::DELETE, false, None) => delete_collection(api, t, query, body).await,
        _ => Err(ApiError::method_not_allowed("the server does not allow this method on the requested resource")),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

fn require_name(t: &Target) -> &str {
    t.name.as_deref().unwrap_or("")
}

fn item_key(t: &Target) -> String {
    objects::key(t.rt, t.namespace.as_deref(), require_name(t))
}

pub async fn load(api: &Api, t: &Target) -> Result<(Value, u64), ApiError> {
    let name = require_name(t);
    let kv = api
        .store
        .get(&item_key(t))
        .await
        .map_err(|e| ApiError::from_store(e, &t.rt.qualified_plural(), name))?
        .ok_or_else(|| ApiError::not_found(&t.rt.qualified_plural(), name))?;
    let obj = objects::decode_kv(t.rt, &kv)
        .ok_or_else(|| ApiError::internal(format!("stored object {} is not JSON", kv.key)))?;
    Ok((obj, kv.mod_revision))
}

async fn get(api: &Api, t: &Target, headers: &HeaderMap, query: &Query) -> Result<Response, ApiError> {
    let (obj, rev) = load(api, t).await?;
    match output(headers)? {
        Output::Json => Ok(json_response(StatusCode::OK, &obj)),
        Output::Table => {
            let include = IncludeObject::parse(query.get("includeObject"));
            let row = table::row(t.rt, &obj, include, chrono::Utc::now());
            Ok(json_response(
                StatusCode::OK,
                &table::table(t.rt, vec![row], json!({"resourceVersion": rev.to_string()}), true),
            ))
        }
    }
}

/// Field selectors each kind supports beyond metadata.name/namespace.
pub fn field_selectors(rt: &ResourceType) -> &'static [&'static str] {
    if rt.group == "events.k8s.io" {
        // events.k8s.io/v1's field label conversion (pkg/apis/events/v1)
        return &[
            "reason",
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reportingController",
            "source",
            "type",
        ];
    }
    match rt.kind {
        "Pod" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "Event" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "Secret" => &["type"],
        "Node" => &["spec.unschedulable"],
        "Namespace" => &["status.phase"],
        "ReplicaSet" => &["status.replicas"],
        _ => &[],
    }
}

/// Field selector labels that are not the dotted path of the field they
/// select, with that path in the object as served.
fn field_selector_paths(rt: &ResourceType) -> &'static [(&'static str, &'static str)] {
    match (rt.group, rt.kind) {
        ("", "Event") => &[("source", "source.component")],
        ("events.k8s.io", "Event") => &[("source", "deprecatedSource.component")],
        _ => &[],
    }
}

pub struct Filters {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filters {
    pub fn parse(rt: &ResourceType, query: &Query) -> Result<Self, ApiError> {
        let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or("")).map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""), field_selectors(rt))
            .map_err(ApiError::bad_request)?
            .with_paths(field_selector_paths(rt));
        Ok(Filters { labels, fields })
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj.pointer("/metadata/labels")) && self.fields.matches(obj)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    start: String,
}

fn list_kind(rt: &ResourceType) -> String {
    format!("{}List", rt.kind)
}

async fn list(api: &Api, t: &Target, query: &Query, headers: &HeaderMap) -> Result<Response, ApiError> {
    let out = output(headers)?;
    let filters = Filters::parse(t.rt, query)?;
    let limit = query.int("limit")?.unwrap_or(0).max(0) as usize;
    let prefix = objects::prefix(t.rt, t.namespace.as_deref());
    let start_after = match query.get("continue").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => {
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .and_then(|b| serde_json::from_slice::<ContinueToken>(&b).ok())
                .filter(|tok| tok.start.starts_with(&prefix))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
                    )
                })?;
            Some(raw.start)
        }
    };
    // Without filters the store can page for us; with them, filter first.
    let page = if filters.is_empty() {
        api.store.list(&prefix, start_after.as_deref(), limit).await
    } else {
        api.store.list(&prefix, start_after.as_deref(), 0).await
    }
    .map_err(|e| ApiError::from_store(e, &t.rt.qualified_plural(), ""))?;
    let rev = page.revision;

    // Collect the items to return, as (stored bytes, revision), and parsed
    // values when filtering or printing needs them.
    let mut items: Vec<(&skiff_store::KeyValue, Option<Value>)> = Vec::new();
    let mut more_after = page.more_after.clone();
    if filters.is_empty() && out == Output::Json && objects::splices(t.rt) {
        items.extend(page.items.iter().map(|kv| (kv, None)));
    } else {
        for kv in &page.items {
            let Some(obj) = objects::decode_kv(t.rt, kv) else {
                continue;
            };
            if filters.is_empty() || filters.matches(&obj) {
                if limit > 0 && items.len() == limit {
                    more_after = items.last().map(|(k, _)| k.key.clone());
                    break;
                }
                items.push((kv, Some(obj)));
            }
        }
        if !filters.is_empty() && (limit == 0 || items.len() < limit) {
            more_after = None;
        }
    }
    let continue_token = more_after.map(|start| {
        let tok = serde_json::to_vec(&ContinueToken { rv: rev, start }).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tok)
    });
    let mut list_meta = Map::new();
    list_meta.insert("resourceVersion".into(), json!(rev.to_string()));
    if let Some(c) = &continue_token {
        list_meta.insert("continue".into(), json!(c));
        if filters.is_empty() {
            let total = api.store.count(&prefix).await.unwrap_or(0);
            let after_key = items.last().map(|(k, _)| k.key.clone()).unwrap_or_default();
            let before = page_position(api, &prefix, &after_key).await;
            list_meta.insert("remainingItemCount".into(), json!(total.saturating_sub(before)));
        }
    }
    match out {
        Output::Json => {
            let mut body = Vec::with_capacity(64 + items.iter().map(|(kv, _)| kv.value.len() + 32).sum::<usize>());
            body.extend_from_slice(b"{\"kind\":");
            body.extend_from_slice(serde_json::to_string(&list_kind(t.rt)).unwrap_or_default().as_bytes());
            body.extend_from_slice(b",\"apiVersion\":");
            body.extend_from_slice(serde_json::to_string(&t.rt.api_version()).unwrap_or_default().as_bytes());
            body.extend_from_slice(b",\"metadata\":");
            body.extend_from_slice(&serde_json::to_vec(&list_meta).unwrap_or_default());
            body.extend_from_slice(b",\"items\":[");
            for (i, (kv, parsed)) in items.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                match parsed {
                    Some(v) => body.extend_from_slice(&serde_json::to_vec(v).unwrap_or_default()),
                    None => objects::write_with_rv(&mut body, &kv.value, kv.mod_revision),
                }
            }
            body.extend_from_slice(b"]}");
            Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response())
        }
        Output::Table => {
            let include = IncludeObject::parse(query.get("includeObject"));
            let now = chrono::Utc::now();
            let rows =
                items.iter().filter_map(|(_, v)| v.as_ref()).map(|o| table::row(t.rt, o, include, now)).collect();
            Ok(json_response(StatusCode::OK, &table::table(t.rt, rows, Value::Object(list_meta), true)))
        }
    }
}

/// How many keys under `prefix` sort at or before `key`.
async fn page_position(api: &Api, prefix: &str, key: &str) -> usize {
    match api.store.list(prefix, None, 0).await {
        Ok(p) => p.items.iter().take_while(|kv| kv.key.as_str() <= key).count(),
        Err(_) => 0,
    }
}

/// Decode a request body (JSON or YAML) into a JSON object.
pub fn decode_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::too_large());
    }
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    let media = ct.split(';').next().unwrap_or("").trim();
    let value: Value = match media {
        "application/json" | "" | "*/*" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}")))?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("yaml body is not UTF-8"))?;
            serde_saphyr::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("couldn't get version/kind; yaml parse error: {e}")))?
        }
        other => return Err(ApiError::unsupported_media(other)),
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "couldn't get version/kind; json parse error: the body is not a JSON object",
        ));
    }
    Ok(value)
}

/// Check the body's apiVersion/kind against the URL, fill them when absent,
/// and run the schema checks: type errors are 400s; unknown fields follow
/// `fieldValidation`. Returns the normalized object and warnings.
pub fn check_body(rt: &ResourceType, mut obj: Value, fv: FieldValidation) -> Result<(Value, Vec<String>), ApiError> {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string();
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
    if !kind.is_empty() && kind != rt.kind {
        let version = if api_version.is_empty() { rt.api_version() } else { api_version.clone() };
        return Err(ApiError::bad_request(format!(
            "{kind} in version {:?} cannot be handled as a {}: no kind \"{kind}\" is registered for version \"{version}\" in scheme \"k8s.io/apimachinery@v1.33.0/pkg/runtime/scheme.go:100\"",
            version.rsplit('/').next().unwrap_or(""),
            rt.kind
        )));
    }
    if !api_version.is_empty() && api_version != rt.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            rt.api_version()
        )));
    }
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(rt.api_version()));
        m.insert("kind".into(), json!(rt.kind));
    }
    let prefix = format!("{} in version \"{}\" cannot be handled as a {}", rt.kind, rt.version, rt.kind);
    let outcome = skiff_api::schema::check(rt, &obj);
    if let Some(first) = outcome.decode_error() {
        return Err(ApiError::bad_request(format!("{prefix}: {first}")));
    }
    let mut warnings = Vec::new();
    if !outcome.unknown_fields.is_empty() {
        let listed: Vec<String> = outcome.unknown_fields.iter().map(|f| format!("unknown field \"{f}\"")).collect();
        match fv {
            FieldValidation::Strict => {
                let hint = old_field_hint(rt, &outcome.unknown_fields);
                return Err(ApiError::bad_request(format!(
                    "{prefix}: strict decoding error: {}{hint}",
                    listed.join(", ")
                )));
            }
            FieldValidation::Warn => warnings = listed,
            FieldValidation::Ignore => {}
        }
        strip_unknown(&mut obj, &outcome.unknown_fields);
    }
    Ok((objects::normalize(rt, obj), warnings))
}

/// Fields of an older API version that people still write, with where
/// the field lives now.
fn old_field_hint(rt: &ResourceType, unknown: &[String]) -> String {
    let renamed: &[(&str, &str, &str)] = &[
        ("Ingress", "backend.serviceName", "backend.service.name"),
        ("Ingress", "backend.servicePort", "backend.service.port.number (or .name)"),
        ("Ingress", "spec.backend", "spec.defaultBackend"),
    ];
    let mut hints = Vec::new();
    for f in unknown {
        for (kind, old, new) in renamed {
            if *kind == rt.kind && f.ends_with(old) {
                let at = f.len() - old.len();
                hints.push(format!(
                    "{f} belongs to networking.k8s.io/v1beta1 and extensions/v1beta1; in {} use {}{new}",
                    rt.api_version(),
                    &f[..at]
                ));
            }
        }
    }
    if hints.is_empty() {
        String::new()
    } else {
        format!(" ({})", hints.join("; "))
    }
}

/// Remove unknown fields (paths like `spec.a[0].b`) so they are never stored.
fn strip_unknown(obj: &mut Value, paths: &[String]) {
    fn segments(path: &str) -> Vec<String> {
        let mut segs = Vec::new();
        for part in path.split('.') {
            match part.find('[') {
                Some(i) => {
                    segs.push(part[..i].to_string());
                    let mut rest = &part[i..];
                    while let Some(end) = rest.find(']') {
                        segs.push(format!("#{}", &rest[1..end]));
                        rest = &rest[end + 1..];
                    }
                }
                None => segs.push(part.to_string()),
            }
        }
        segs
    }
    fn remove(v: &mut Value, segs: &[String]) {
        match segs {
            [] => {}
            [last] => {
                if let Some(m) = v.as_object_mut() {
                    m.remove(last.as_str());
                }
            }
            [first, rest @ ..] => {
                let next = match first.strip_prefix('#') {
                    Some(i) => i.parse::<usize>().ok().and_then(|i| v.get_mut(i)),
                    None => v.get_mut(first.as_str()),
                };
                if let Some(n) = next {
                    remove(n, rest);
                }
            }
        }
    }
    for path in paths {
        remove(obj, &segments(path));
    }
}

pub(crate) fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

fn invalid_from(rt: &ResourceType, name: &str, errs: Vec<skiff_api::validation::FieldError>) -> ApiError {
    let causes =
        errs.into_iter().map(|e| Cause { reason: e.reason.to_string(), message: e.message, field: e.field }).collect();
    ApiError::invalid(rt.kind, rt.group, name, causes)
}

/// Refuse writes into a namespace that is missing or terminating.
async fn check_namespace(api: &Api, ns: &str, creating: Option<(&ResourceType, &str)>) -> Result<(), ApiError> {
    let rt = skiff_api::catalogue::find("", "v1", "namespaces").ok_or_else(|| ApiError::internal("no namespaces"))?;
    let kv = api
        .store
        .get(&objects::key(rt, None, ns))
        .await
        .map_err(|e| ApiError::from_store(e, "namespaces", ns))?
        .ok_or_else(|| ApiError::not_found("namespaces", ns))?;
    if let Some((rt, name)) = creating {
        let obj = objects::decode_kv(rt, &kv).unwrap_or(Value::Null);
        if obj.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null())
            || obj.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating")
        {
            return Err(ApiError::forbidden(format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                rt.qualified_plural()
            )));
        }
    }
    Ok(())
}

/// Kind-specific preparation of a new object.
fn prepare_new(rt: &ResourceType, obj: &mut Value) {
    match rt.kind {
        "Namespace" => {
            let name = name_of(obj).to_string();
            if let Some(m) = meta_mut(obj) {
                let labels = m.entry("labels").or_insert_with(|| json!({}));
                if let Some(l) = labels.as_object_mut() {
                    l.insert("kubernetes.io/metadata.name".into(), json!(name));
                }
            }
            if let Some(o) = obj.as_object_mut() {
                let spec = o.entry("spec").or_insert_with(|| json!({}));
                if spec.get("finalizers").is_none() {
                    spec["finalizers"] = json!(["kubernetes"]);
                }
                o.insert("status".into(), json!({"phase": "Active"}));
            }
        }
        "Secret" => fold_string_data(obj),
        "Pod" => {
            if let Some(o) = obj.as_object_mut() {
                let status = o.entry("status").or_insert_with(|| json!({}));
                if status.get("phase").is_none() {
                    status["phase"] = json!("Pending");
                }
                if status.get("qosClass").is_none() {
                    status["qosClass"] = json!("BestEffort");
                }
            }
        }
        _ => {}
    }
}

/// Secrets: `stringData` is write-only and merged into `data`.
fn fold_string_data(obj: &mut Value) {
    let Some(o) = obj.as_object_mut() else { return };
    if let Some(Value::Object(sd)) = o.remove("stringData") {
        let data = o.entry("data").or_insert_with(|| json!({}));
        if let Some(d) = data.as_object_mut() {
            for (k, v) in sd {
                let s = v.as_str().unwrap_or("");
                d.insert(k, json!(base64::engine::general_purpose::STANDARD.encode(s)));
            }
        }
    }
    o.entry("type").or_insert(json!("Opaque"));
}

/// Who owns the fields a write sets.
#[derive(Debug, Clone, Copy)]
pub enum Ownership<'a> {
    /// A create, update or patch by this manager.
    Update(&'a str),
    /// A write through the scale subresource by this manager.
    Scale(&'a str),
    /// Server-side apply already computed managedFields.
    Precomputed,
}

fn record_ownership(rt: &ResourceType, old: Option<&Value>, obj: &mut Value, own: Ownership<'_>, sub: Option<&str>) {
    if !skiff_api::convert::has_other_views(rt) {
        return record_ownership_in_own_names(rt, old, obj, own, sub);
    }
    // entries written through another view of the same objects (core/v1 and
    // events.k8s.io/v1 Events) name its fields: work in this view's names
    let mut old = old.cloned();
    if let Some(o) = old.as_mut() {
        skiff_api::convert::managed_fields_into(rt, o);
    }
    skiff_api::convert::managed_fields_into(rt, obj);
    record_ownership_in_own_names(rt, old.as_ref(), obj, own, sub);
    skiff_api::convert::managed_fields_to_own_versions(rt, obj);
}

fn record_ownership_in_own_names(
    rt: &ResourceType,
    old: Option<&Value>,
    obj: &mut Value,
    own: Ownership<'_>,
    sub: Option<&str>,
) {
    match own {
        Ownership::Update(manager) => {
            crate::patch::apply::record_update(old, obj, Some(rt.definition), manager, &rt.api_version(), sub)
        }
        Ownership::Scale(manager) => {
            crate::patch::apply::record_update(old, obj, Some(rt.definition), manager, &rt.api_version(), Some("scale"))
        }
        Ownership::Precomputed => {}
    }
}

fn field_manager(query: &Query, headers: &HeaderMap) -> String {
    if let Some(m) = query.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.to_string();
    }
    let ua = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("unknown");
    ua.split('/').next().unwrap_or("unknown").to_string()
}

async fn create(api: &Api, t: &Target, query: &Query, headers: &HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let dry_run = query.dry_run()?;
    let raw = decode_body(headers, &body)?;
    let (obj, warnings) = check_body(t.rt, raw, query.field_validation()?)?;
    let manager = field_manager(query, headers);
    let obj = create_object(api, t, obj, Ownership::Update(&manager), dry_run).await?;
    Ok(with_warnings(json_response(StatusCode::CREATED, &obj), &warnings))
}

/// Create a checked object: server metadata, defaults, validation,
/// namespace checks, allocations, and the durable write.
pub async fn create_object(
    api: &Api,
    t: &Target,
    mut obj: Value,
    own: Ownership<'_>,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let rt = t.rt;
    // namespace: from the URL, which the body must agree with
    if rt.namespaced {
        let url_ns = t.namespace.clone().unwrap_or_else(|| "default".into());
        match meta_str(&obj, "namespace") {
            Some(ns) if !ns.is_empty() && ns != url_ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            _ => {}
        }
        if let Some(m) = meta_mut(&mut obj) {
            m.insert("namespace".into(), json!(url_ns));
        }
    } else if let Some(m) = meta_mut(&mut obj) {
        m.remove("namespace");
    }
    if meta_str(&obj, "resourceVersion").is_some_and(|rv| !rv.is_empty()) {
        return Err(ApiError::bad_request("resourceVersion should not be set on objects to be created"));
    }
    // name: given, or generated
    if meta_str(&obj, "name").unwrap_or("").is_empty() {
        if let Some(g) = meta_str(&obj, "generateName").filter(|g| !g.is_empty()).map(str::to_string) {
            let name = format!("{g}{}", random_suffix());
            if let Some(m) = meta_mut(&mut obj) {
                m.insert("name".into(), json!(name));
            }
        }
    }
    let name = name_of(&obj).to_string();
    if let Some(m) = meta_mut(&mut obj) {
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(now_rfc3339()));
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        m.remove("selfLink");
        if rt.has_generation() {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
    }
    prepare_new(rt, &mut obj);
    skiff_api::defaults::apply(rt, &mut obj);
    if rt.kind == "Pod" {
        crate::serviceaccount::admit_pod(api, &mut obj).await?;
    }
    if rt.kind == "Service" {
        skiff_api::validation::normalize_service(None, &mut obj);
    }
    let errs = skiff_api::validation::validate(rt, &obj);
    if !errs.is_empty() {
        return Err(invalid_from(rt, &name, errs));
    }
    if rt.namespaced {
        let ns = meta_str(&obj, "namespace").unwrap_or("default").to_string();
        check_namespace(api, &ns, Some((rt, &name))).await?;
    }
    record_ownership(rt, None, &mut obj, own, None);
    let key = objects::key(rt, meta_str(&obj, "namespace"), &name);
    // a Service that exists already is AlreadyExists, before any allocation
    // could report its own addresses as taken
    if rt.kind == "Service" && api.store.get(&key).await.ok().flatten().is_some() {
        return Err(ApiError::already_exists(&rt.qualified_plural(), &name));
    }
    let taken = if rt.kind == "Service" {
        services::allocate(&api.alloc, &services::owner(&key, &obj), &mut obj, None).await?
    } else {
        Vec::new()
    };
    let mut obj = objects::normalize(rt, obj);
    if dry_run {
        services::release_all(&api.alloc, &services::owner(&key, &obj), &taken).await;
        return Ok(obj);
    }
    let started = std::time::Instant::now();
    let result = api.store.create(&key, objects::encode(rt, &obj)).await;
    api.metrics.observe_store_write(started.elapsed());
    match result {
        Ok(rev) => {
            objects::set_rv(&mut obj, rev);
            Ok(obj)
        }
        Err(e) => {
            services::release_all(&api.alloc, &services::owner(&key, &obj), &taken).await;
            Err(ApiError::from_store(e, &rt.qualified_plural(), &name))
        }
    }
}

/// Carry over what a client may not change, and merge subresource writes.
fn merge_for_update(rt: &ResourceType, sub: Option<&str>, old: &Value, mut new: Value) -> Value {
    match sub {
        Some("status") => {
            // only status changes; metadata follows Kubernetes' ResetObjectMetaForStatus
            let mut merged = old.clone();
            if let Some(s) = new.get("status").cloned() {
                merged["status"] = s;
            }
            if let (Some(m), Some(nm)) = (merged.get_mut("metadata"), new.get("metadata")) {
                if let Some(mf) = nm.get("managedFields") {
                    m["managedFields"] = mf.clone();
                }
            }
            return merged;
        }
        // pods/binding builds the whole new pod from the stored one
        Some("binding") => return new,
        Some("finalize") => {
            let mut merged = old.clone();
            if let Some(f) = new.pointer("/spec/finalizers").cloned() {
                merged["spec"]["finalizers"] = f;
            }
            return merged;
        }
        _ => {}
    }
    if rt.has_status() && rt.kind != "Namespace" {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
    if rt.kind == "Namespace" {
        if let Some(s) = old.get("status") {
            new["status"] = s.clone();
        }
    }
    if let (Some(nm), Some(om)) = (new.get_mut("metadata").and_then(Value::as_object_mut), old.get("metadata")) {
        // (a differing uid was refused before: see `check_uid`)
        for f in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
            match om.get(f) {
                Some(v) => {
                    nm.insert(f.into(), v.clone());
                }
                None => {
                    nm.remove(f);
                }
            }
        }
        nm.remove("selfLink");
    }
    if rt.has_generation() && objects::spec_part(old) != objects::spec_part(&new) {
        let g = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0) + 1;
        new["metadata"]["generation"] = json!(g);
    }
    new
}

/// `metadata.uid` cannot change; an update that leaves it out keeps it.
fn check_uid(rt: &ResourceType, name: &str, old: &Value, new: &Value) -> Result<(), ApiError> {
    let (Some(new_uid), Some(old_uid)) = (meta_str(new, "uid"), meta_str(old, "uid")) else { return Ok(()) };
    if new_uid.is_empty() || new_uid == old_uid {
        return Ok(());
    }
    let cause = Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: \"{new_uid}\": field is immutable"),
        field: "metadata.uid".into(),
    };
    Err(ApiError::invalid(rt.kind, rt.group, name, vec![cause]))
}

/// The result of a write.
pub struct Written {
    pub obj: Value,
    pub created: bool,
}

/// Update an existing object to `new` (already decoded and checked),
/// honouring `new`'s resourceVersion as a precondition if set, else `expected`.
pub async fn write_update(
    api: &Api,
    t: &Target,
    old: &Value,
    old_rev: u64,
    new: Value,
    own: Ownership<'_>,
    dry_run: bool,
) -> Result<Written, ApiError> {
    let rt = t.rt;
    let name = require_name(t).to_string();
    if name_of(&new) != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            name_of(&new)
        )));
    }
    if let Some(ns) = t.namespace.as_deref() {
        if meta_str(&new, "namespace").is_some_and(|n| !n.is_empty() && n != ns) {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    let precondition = match meta_str(&new, "resourceVersion").filter(|rv| !rv.is_empty()) {
        Some(rv) => {
            let rv: u64 = rv.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid resourceVersion {rv:?}: not an unsigned integer"))
            })?;
            if rv != old_rev {
                return Err(ApiError::modified(&rt.qualified_plural(), &name));
            }
            rv
        }
        None => old_rev,
    };
    check_uid(rt, &name, old, &new)?;
    let mut new = merge_for_update(rt, t.subresource.as_deref(), old, new);
    if let Some(m) = meta_mut(&mut new) {
        m.insert("namespace".into(), json!(t.namespace.clone()));
        if !rt.namespaced {
            m.remove("namespace");
        }
    }
    if rt.kind == "Secret" {
        fold_string_data(&mut new);
    }
    let errs = if t.subresource.is_none() {
        skiff_api::defaults::apply(rt, &mut new);
        if rt.kind == "Service" {
            skiff_api::validation::normalize_service(Some(old), &mut new);
        }
        skiff_api::validation::validate_update(rt, old, &new)
    } else {
        skiff_api::validation::validate_status_update(rt, old, &new)
    };
    if !errs.is_empty() {
        return Err(invalid_from(rt, &name, errs));
    }
    let key = item_key(t);
    // a terminating object whose last finalizer is gone is deleted now
    let terminating = new.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null());
    let non_empty = |p: &str| new.pointer(p).and_then(Value::as_array).is_some_and(|f| !f.is_empty());
    // a namespace also waits for its spec.finalizers (the namespace controller)
    let finalizers_left =
        non_empty("/metadata/finalizers") || (rt.kind == "Namespace" && non_empty("/spec/finalizers"));
    // a pod still inside its grace period waits for its agent, finalizers or not
    let grace_left = new.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0) > 0;
    if terminating && !finalizers_left && !grace_left && !dry_run {
        let (_, gone) = api
            .store
            .delete(&key, Some(precondition))
            .await
            .map_err(|e| ApiError::from_store(e, &rt.qualified_plural(), &name))?;
        if rt.kind == "Service" {
            services::release_all(&api.alloc, &services::owner(&key, old), &services::held(old)).await;
        }
        let mut obj = new;
        objects::set_rv(&mut obj, gone.mod_revision);
        return Ok(Written { obj, created: false });
    }
    let taken = if rt.kind == "Service" && t.subresource.is_none() {
        services::allocate(&api.alloc, &services::owner(&key, old), &mut new, Some(old)).await?
    } else {
        Vec::new()
    };
    // a write that changes nothing is not a write
    let mut unchanged_old = old.clone();
    objects::set_rv(&mut unchanged_old, old_rev);
    let mut candidate = objects::normalize(rt, new);
    objects::set_rv(&mut candidate, old_rev);
    let mut without_mf = candidate.clone();
    if let Some(m) = meta_mut(&mut without_mf) {
        m.remove("managedFields");
    }
    let mut old_without_mf = unchanged_old.clone();
    if let Some(m) = meta_mut(&mut old_without_mf) {
        m.remove("managedFields");
    }
    // (for server-side apply a change of ownership alone is a write)
    let unchanged = match own {
        Ownership::Precomputed => candidate == unchanged_old,
        _ => without_mf == old_without_mf,
    };
    if unchanged {
        return Ok(Written { obj: unchanged_old, created: false });
    }
    record_ownership(rt, Some(old), &mut candidate, own, t.subresource.as_deref());
    if dry_run {
        services::release_all(&api.alloc, &services::owner(&key, old), &taken).await;
        return Ok(Written { obj: candidate, created: false });
    }
    let started = std::time::Instant::now();
    let result = api.store.update(&key, objects::encode(rt, &candidate), Some(precondition)).await;
    api.metrics.observe_store_write(started.elapsed());
    match result {
        Ok(rev) => {
            if rt.kind == "Service" {
                services::release_dropped(&api.alloc, &services::owner(&key, old), old, &candidate).await;
            }
            objects::set_rv(&mut candidate, rev);
            Ok(Written { obj: candidate, created: false })
        }
        Err(e) => {
            services::release_all(&api.alloc, &services::owner(&key, old), &taken).await;
            Err(match e {
                StoreError::NotFound(_) => ApiError::not_found(&rt.qualified_plural(), &name),
                e => ApiError::from_store(e, &rt.qualified_plural(), &name),
            })
        }
    }
}

async fn update(api: &Api, t: &Target, query: &Query, headers: &HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let dry_run = query.dry_run()?;
    let raw = decode_body(headers, &body)?;
    let (new, warnings) = check_body(t.rt, raw, query.field_validation()?)?;
    let (old, old_rev) = load(api, t).await?;
    let manager = field_manager(query, headers);
    let w = write_update(api, t, &old, old_rev, new, Ownership::Update(&manager), dry_run).await?;
    Ok(with_warnings(json_response(if w.created { StatusCode::CREATED } else { StatusCode::OK }, &w.obj), &warnings))
}

/// PATCH in all four formats: JSON merge, JSON patch, strategic merge and
/// server-side apply.
async fn patch(api: &Api, t: &Target, query: &Query, headers: &HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::too_large());
    }
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = ct.split(';').next().unwrap_or("").trim().to_string();
    if media == "application/apply-patch+yaml" {
        return server_side_apply(api, t, query, &body).await;
    }
    let dry_run = query.dry_run()?;
    let manager = field_manager(query, headers);
    let decode = |body: &[u8]| -> Result<Value, ApiError> {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
    };
    let scale = t.subresource.as_deref() == Some("scale");
    for _attempt in 0..5 {
        let (old, old_rev) = load(api, t).await?;
        let base = if scale { scale_of(&old) } else { old.clone() };
        let patched = match media.as_str() {
            "application/merge-patch+json" => {
                let mut doc = base.clone();
                merge_patch(&mut doc, &decode(&body)?);
                doc
            }
            "application/json-patch+json" => crate::server::json_patch(&base, &body)?,
            "application/strategic-merge-patch+json" => {
                let def = if scale { None } else { Some(t.rt.definition) };
                crate::patch::strategic::apply(&base, &decode(&body)?, def)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?
            }
            other => {
                return Err(ApiError::unsupported_media_patch(other));
            }
        };
        if scale {
            let replicas = scale_replicas(&patched)?;
            let mut new = old.clone();
            new["spec"]["replicas"] = json!(replicas);
            let main = Target { subresource: None, ..t.clone() };
            match write_update(api, &main, &old, old_rev, clear_rv(new), Ownership::Scale(&manager), dry_run).await {
                Ok(w) => return Ok(json_response(StatusCode::OK, &scale_of(&w.obj))),
                Err(e) if e.reason == "Conflict" => continue,
                Err(e) => return Err(e),
            }
        }
        let (checked, warnings) = check_body(t.rt, patched, query.field_validation()?)?;
        // a patch that carries no resourceVersion retries on conflict
        let pinned = meta_str(&checked, "resourceVersion").is_some_and(|rv| rv != old_rev.to_string());
        let new = if pinned { checked } else { clear_rv(checked) };
        match write_update(api, t, &old, old_rev, new, Ownership::Update(&manager), dry_run).await {
            Ok(w) => return Ok(with_warnings(json_response(StatusCode::OK, &w.obj), &warnings)),
            Err(e) if e.reason == "Conflict" && !pinned => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(&t.rt.qualified_plural(), require_name(t), "the object keeps changing; try again"))
}

/// Server-side apply (`application/apply-patch+yaml`): create or merge,
/// with field ownership and conflicts.
async fn server_side_apply(api: &Api, t: &Target, query: &Query, body: &[u8]) -> Result<Response, ApiError> {
    let manager = query
        .get("fieldManager")
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::bad_request("PATCH, fieldManager: Required value: is required for apply patch"))?
        .to_string();
    let force = query.flag("force");
    let dry_run = query.dry_run()?;
    let mut yaml_headers = HeaderMap::new();
    yaml_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/yaml"));
    let raw = decode_body(&yaml_headers, body)?;
    if raw.get("apiVersion").is_none() || raw.get("kind").is_none() {
        return Err(ApiError::bad_request(
            "invalid object type: /, Kind=: apiVersion and kind must be set in an applied configuration",
        ));
    }
    if raw.pointer("/metadata/managedFields").is_some_and(|m| !m.is_null()) {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    let (config, warnings) = check_body(t.rt, raw, query.field_validation()?)?;
    let name = require_name(t).to_string();
    if name_of(&config) != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            name_of(&config)
        )));
    }
    let def = Some(t.rt.definition);
    let api_version = t.rt.api_version();
    for _attempt in 0..5 {
        let live = match load(api, t).await {
            Ok(x) => Some(x),
            Err(e) if e.code == 404 => None,
            Err(e) => return Err(e),
        };
        // (managedFields written through another view: see `record_ownership`)
        let views = skiff_api::convert::has_other_views(t.rt);
        let live_in_own_names = live.as_ref().filter(|_| views).map(|(o, _)| {
            let mut o = o.clone();
            skiff_api::convert::managed_fields_into(t.rt, &mut o);
            o
        });
        let live_obj = if views { live_in_own_names.as_ref() } else { live.as_ref().map(|(o, _)| o) };
        let mut merged = crate::patch::apply::apply(live_obj, &config, def, &manager, &api_version, force)
            .map_err(|conflicts| apply_conflict(t, &name, &conflicts))?;
        if views {
            skiff_api::convert::managed_fields_to_own_versions(t.rt, &mut merged);
        }
        let result = match &live {
            None => {
                let main = Target { subresource: None, name: None, ..t.clone() };
                let mut fresh = clear_rv(merged);
                if let Some(m) = meta_mut(&mut fresh) {
                    m.insert("name".into(), json!(name));
                }
                create_object(api, &main, fresh, Ownership::Precomputed, dry_run).await.map(|o| (o, true))
            }
            Some((old, old_rev)) => {
                write_update(api, t, old, *old_rev, clear_rv(merged), Ownership::Precomputed, dry_run)
                    .await
                    .map(|w| (w.obj, false))
            }
        };
        match result {
            Ok((obj, created)) => {
                let code = if created { StatusCode::CREATED } else { StatusCode::OK };
                return Ok(with_warnings(json_response(code, &obj), &warnings));
            }
            Err(e) if e.code == 409 && e.reason != "Conflict" && live.is_none() => continue,
            Err(e) if e.reason == "Conflict" && e.causes().is_empty() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(&t.rt.qualified_plural(), &name, "the object keeps changing; try again"))
}

fn apply_conflict(t: &Target, name: &str, conflicts: &[crate::patch::apply::Conflict]) -> ApiError {
    let message = crate::patch::apply::conflict_message(conflicts);
    let causes = conflicts
        .iter()
        .map(|c| Cause {
            reason: "FieldManagerConflict".into(),
            message: format!("conflict with {}", c.owner()),
            field: c.field.clone(),
        })
        .collect();
    ApiError::apply_conflict(&t.rt.qualified_plural(), name, message, causes)
}

fn clear_rv(mut v: Value) -> Value {
    if let Some(m) = meta_mut(&mut v) {
        m.remove("resourceVersion");
    }
    v
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(doc: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !doc.is_object() {
                *doc = Value::Object(Map::new());
            }
            if let Some(d) = doc.as_object_mut() {
                for (k, v) in p {
                    if v.is_null() {
                        d.remove(k);
                    } else {
                        merge_patch(d.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *doc = other.clone(),
    }
}

/// The autoscaling/v1 Scale of a Deployment or ReplicaSet.
fn scale_of(obj: &Value) -> Value {
    let m = obj.get("metadata").cloned().unwrap_or(json!({}));
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|l| {
            let mut parts: Vec<String> = l.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect();
            parts.sort();
            parts.join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m.get("name"),
            "namespace": m.get("namespace"),
            "uid": m.get("uid"),
            "resourceVersion": m.get("resourceVersion"),
            "creationTimestamp": m.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

async fn get_scale(api: &Api, t: &Target) -> Result<Response, ApiError> {
    let (obj, _) = load(api, t).await?;
    Ok(json_response(StatusCode::OK, &scale_of(&obj)))
}

/// `spec.replicas` of a Scale body, checked as Kubernetes decodes it.
fn scale_replicas(scale: &Value) -> Result<i64, ApiError> {
    let outcome = skiff_api::schema::check_definition("io.k8s.api.autoscaling.v1.Scale", scale);
    if let Some(e) = outcome.decode_error() {
        return Err(ApiError::bad_request(format!("Scale in version \"v1\" cannot be handled as a Scale: {e}")));
    }
    let replicas = scale.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
    if replicas < 0 {
        let name = scale.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
        let cause = Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {replicas}: must be greater than or equal to 0"),
            field: "spec.replicas".into(),
        };
        return Err(ApiError::invalid("Scale", "autoscaling", name, vec![cause]));
    }
    Ok(replicas)
}

async fn update_scale(
    api: &Api,
    t: &Target,
    query: &Query,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let scale = decode_body(headers, &body)?;
    let replicas = scale_replicas(&scale)?;
    let (old, old_rev) = load(api, t).await?;
    if let Some(rv) = scale.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
        if !rv.is_empty() && rv != old_rev.to_string() {
            return Err(ApiError::modified(&t.rt.qualified_plural(), require_name(t)));
        }
    }
    let mut new = clear_rv(old.clone());
    new["spec"]["replicas"] = json!(replicas);
    let main = Target { subresource: None, ..t.clone() };
    let w = write_update(
        api,
        &main,
        &old,
        old_rev,
        new,
        Ownership::Scale(&field_manager(query, headers)),
        query.dry_run()?,
    )
    .await?;
    Ok(json_response(StatusCode::OK, &scale_of(&w.obj)))
}

/// pods/binding: the scheduler assigns a pod to a node, once.
async fn bind(api: &Api, t: &Target, query: &Query, headers: &HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let binding = decode_body(headers, &body)?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            let name = require_name(t);
            ApiError::invalid(
                "Binding",
                "",
                name,
                vec![Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value".into(),
                    field: "target.name".into(),
                }],
            )
        })?
        .to_string();
    let name = require_name(t).to_string();
    let main = Target { subresource: None, ..t.clone() };
    let manager = field_manager(query, headers);
    for _attempt in 0..5 {
        let (old, old_rev) = load(api, &main).await?;
        if old.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
            return Err(ApiError::conflict("pods", &name, "pod is being deleted, cannot be assigned to a host"));
        }
        if let Some(cur) = old.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            return Err(ApiError::conflict(
                "pods",
                &name,
                &format!("pod {name} is already assigned to node \"{cur}\""),
            ));
        }
        let mut new = clear_rv(old.clone());
        new["spec"]["nodeName"] = json!(node);
        set_condition(&mut new, "PodScheduled", "True", None, None);
        // a binding may set spec.nodeName, which a pod update may not
        let binding = Target { subresource: Some("binding".into()), ..t.clone() };
        match write_update(api, &binding, &old, old_rev, new, Ownership::Update(&manager), query.dry_run()?).await {
            Ok(_) => {
                return Ok(json_response(
                    StatusCode::CREATED,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                ))
            }
            Err(e) if e.reason == "Conflict" => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict("pods", &name, "the object keeps changing; try again"))
}

/// Set a status condition (replacing one of the same type).
pub fn set_condition(obj: &mut Value, kind: &str, status: &str, reason: Option<&str>, message: Option<&str>) {
    let now = now_rfc3339();
    let Some(o) = obj.as_object_mut() else { return };
    let st = o.entry("status").or_insert_with(|| json!({}));
    let conds = st.as_object_mut().map(|m| m.entry("conditions").or_insert_with(|| json!([])));
    let Some(Value::Array(conds)) = conds else {
        return;
    };
    let mut c = json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    if let Some(m) = message {
        c["message"] = json!(m);
    }
    match conds.iter_mut().find(|x| x.get("type").and_then(Value::as_str) == Some(kind)) {
        Some(existing) => {
            if existing.get("status").and_then(Value::as_str) == Some(status) {
                c["lastTransitionTime"] = existing.get("lastTransitionTime").cloned().unwrap_or(json!(now));
            }
            *existing = c;
        }
        None => conds.push(c),
    }
}

/// pods/eviction: delete the pod as the eviction's DeleteOptions say
/// (PodDisruptionBudgets are not served, so nothing blocks an eviction).
async fn evict(api: &Api, t: &Target, query: &Query, body: Bytes) -> Result<Response, ApiError> {
    let eviction: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("error decoding Eviction: {e}")))?
    };
    let opts_json = eviction.get("deleteOptions").cloned().unwrap_or(json!({}));
    let opts_bytes = serde_json::to_vec(&opts_json).unwrap_or_default();
    let opts = delete_options(query, &opts_bytes)?;
    let main = Target { subresource: None, ..t.clone() };
    delete_one(api, &main, &opts).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteOptions {
    grace_period_seconds: Option<i64>,
    propagation_policy: Option<String>,
    orphan_dependents: Option<bool>,
    preconditions: Option<Preconditions>,
    dry_run: Option<Vec<String>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Preconditions {
    uid: Option<String>,
    resource_version: Option<String>,
}

fn delete_options(query: &Query, body: &[u8]) -> Result<DeleteOptions, ApiError> {
    let mut opts: DeleteOptions = if body.iter().all(u8::is_ascii_whitespace) {
        DeleteOptions::default()
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
    };
    if let Some(g) = query.int("gracePeriodSeconds")? {
        opts.grace_period_seconds = Some(g);
    }
    if let Some(p) = query.get("propagationPolicy") {
        opts.propagation_policy = Some(p.to_string());
    }
    if query.dry_run()? {
        opts.dry_run = Some(vec!["All".into()]);
    }
    if let Some(p) = &opts.propagation_policy {
        if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
            return Err(ApiError::bad_request(format!(
                "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: {p:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
            )));
        }
    }
    Ok(opts)
}

async fn delete(api: &Api, t: &Target, query: &Query, body: Bytes) -> Result<Response, ApiError> {
    let opts = delete_options(query, &body)?;
    let obj = delete_one(api, t, &opts).await?;
    Ok(json_response(StatusCode::OK, &obj))
}

/// Delete one object with Kubernetes' semantics: finalizers and graceful pod
/// deletion keep it (with deletionTimestamp) until they are done.
async fn delete_one(api: &Api, t: &Target, opts: &DeleteOptions) -> Result<Value, ApiError> {
    let rt = t.rt;
    let name = require_name(t).to_string();
    let dry_run = opts.dry_run.as_ref().is_some_and(|d| !d.is_empty());
    for _attempt in 0..5 {
        let (old, old_rev) = load(api, t).await?;
        if let Some(p) = &opts.preconditions {
            if p.uid.as_deref().is_some_and(|u| Some(u) != meta_str(&old, "uid")) {
                return Err(ApiError::conflict(
                    &rt.qualified_plural(),
                    &name,
                    &format!(
                        "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                        p.uid.as_deref().unwrap_or(""),
                        meta_str(&old, "uid").unwrap_or("")
                    ),
                ));
            }
            if p.resource_version.as_deref().is_some_and(|rv| rv != old_rev.to_string()) {
                return Err(ApiError::conflict(&rt.qualified_plural(), &name, &format!(
                    "Precondition failed: ResourceVersion in precondition: {}, ResourceVersion in object meta: {old_rev}",
                    p.resource_version.as_deref().unwrap_or("")
                )));
            }
        }
        let mut new = old.clone();
        let already_terminating = old.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null());
        let mut finalizers: Vec<Value> =
            old.pointer("/metadata/finalizers").and_then(Value::as_array).cloned().unwrap_or_default();
        let policy = opts.propagation_policy.clone().or_else(|| match opts.orphan_dependents {
            Some(true) => Some("Orphan".into()),
            Some(false) => Some("Background".into()),
            None => None,
        });
        let add_finalizer = |fs: &mut Vec<Value>, f: &str| {
            if !fs.iter().any(|x| x == f) {
                fs.push(json!(f));
            }
        };
        match policy.as_deref() {
            Some("Foreground") => add_finalizer(&mut finalizers, "foregroundDeletion"),
            Some("Orphan") => add_finalizer(&mut finalizers, "orphan"),
            _ => {}
        }
        // graceful deletion: pods bound to a node wait for their agent
        let grace = graceful_period(rt, &old, opts.grace_period_seconds);
        if rt.kind == "Namespace" {
            let spec_fin = old.pointer("/spec/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
            if spec_fin || !finalizers.is_empty() {
                new["status"]["phase"] = json!("Terminating");
            }
            if spec_fin && finalizers.is_empty() {
                // the namespace controller empties it and then removes spec.finalizers
                finalizers.clear();
                if let Some(m) = meta_mut(&mut new) {
                    m.insert("deletionTimestamp".into(), json!(now_rfc3339()));
                    m.insert("deletionGracePeriodSeconds".into(), json!(0));
                }
                return finish_mark(api, t, old_rev, new, dry_run).await;
            }
        }
        if finalizers.is_empty() && grace.is_none() {
            if dry_run {
                return Ok(old);
            }
            let key = item_key(t);
            match api.store.delete(&key, Some(old_rev)).await {
                Ok((rev, _)) => {
                    if rt.kind == "Service" {
                        services::release_all(&api.alloc, &services::owner(&key, &old), &services::held(&old)).await;
                    }
                    let mut gone = old;
                    objects::set_rv(&mut gone, rev);
                    return Ok(gone);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_store(e, &rt.qualified_plural(), &name)),
            }
        }
        if already_terminating
            && finalizers == old.pointer("/metadata/finalizers").and_then(Value::as_array).cloned().unwrap_or_default()
        {
            // shortening the grace period of a terminating pod is allowed
            match (grace, old.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64)) {
                (Some(g), Some(cur)) if g < cur => {}
                _ => return Ok(old),
            }
        }
        if let Some(m) = meta_mut(&mut new) {
            let when = chrono::Utc::now() + chrono::Duration::seconds(grace.unwrap_or(0));
            m.insert("deletionTimestamp".into(), json!(when.format("%Y-%m-%dT%H:%M:%SZ").to_string()));
            m.insert("deletionGracePeriodSeconds".into(), json!(grace.unwrap_or(0)));
            if !finalizers.is_empty() {
                m.insert("finalizers".into(), Value::Array(finalizers));
            }
        }
        match finish_mark(api, t, old_rev, new, dry_run).await {
            Err(e) if e.reason == "Conflict" => continue,
            other => return other,
        }
    }
    Err(ApiError::conflict(&rt.qualified_plural(), &name, "the object keeps changing; try again"))
}

/// The grace period a deletion waits for, or None for immediate deletion.
fn graceful_period(rt: &ResourceType, obj: &Value, requested: Option<i64>) -> Option<i64> {
    if rt.kind != "Pod" {
        return None;
    }
    // a pod never scheduled, or already finished, has nothing to stop
    let node = obj.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("");
    let phase = obj.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
    if node.is_empty() || matches!(phase, "Succeeded" | "Failed") {
        return None;
    }
    let grace =
        requested.or_else(|| obj.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64)).unwrap_or(30);
    if grace <= 0 {
        None
    } else {
        Some(grace)
    }
}

async fn finish_mark(api: &Api, t: &Target, old_rev: u64, new: Value, dry_run: bool) -> Result<Value, ApiError> {
    if dry_run {
        return Ok(new);
    }
    let mut new = objects::normalize(t.rt, new);
    let rev = api
        .store
        .update(&item_key(t), objects::encode(t.rt, &new), Some(old_rev))
        .await
        .map_err(|e| ApiError::from_store(e, &t.rt.qualified_plural(), require_name(t)))?;
    objects::set_rv(&mut new, rev);
    Ok(new)
}

async fn delete_collection(api: &Api, t: &Target, query: &Query, body: Bytes) -> Result<Response, ApiError> {
    let opts = delete_options(query, &body)?;
    let filters = Filters::parse(t.rt, query)?;
    let prefix = objects::prefix(t.rt, t.namespace.as_deref());
    let page =
        api.store.list(&prefix, None, 0).await.map_err(|e| ApiError::from_store(e, &t.rt.qualified_plural(), ""))?;
    let mut deleted = Vec::new();
    for kv in &page.items {
        let Some(obj) = objects::decode_kv(t.rt, kv) else {
            continue;
        };
        if !filters.matches(&obj) {
            continue;
        }
        let target = Target {
            rt: t.rt,
            namespace: meta_str(&obj, "namespace").map(str::to_string),
            name: Some(name_of(&obj).to_string()),
            subresource: None,
        };
        match delete_one(api, &target, &opts).await {
            Ok(v) => deleted.push(v),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": list_kind(t.rt), "apiVersion": t.rt.api_version(), "metadata": {"resourceVersion": api.store.current_revision().to_string()}, "items": deleted}),
    ))
}
