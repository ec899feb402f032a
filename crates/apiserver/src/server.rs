//! Routing, authentication, metrics, and starting/stopping the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use skiff_store::DynStore;
use tokio::sync::watch;

use crate::alloc::{Allocator, Ranges};
use crate::error::ApiError;
use crate::handlers::{self, json_response, MAX_BODY};
use crate::listener::PeerIdentity;
use crate::metrics::Metrics;
use crate::query::Query;
use crate::request::{self, Parsed};
use crate::serviceaccount::{Signer, UserInfo};
use crate::tls::{ClusterTls, ServingNames};
use crate::{Api, Config, SharedApi};

/// A running API server; dropping it does not stop it, `shutdown` does.
pub struct Running {
    pub addr: SocketAddr,
    pub tls: ClusterTls,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stop accepting, let open requests finish (up to 5 s), and return.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("creating the cluster's first objects: {0}")]
    Bootstrap(String),
}

/// Start the API server on `config.bind` over `store`.
pub async fn start(config: Config, store: DynStore) -> Result<Running, StartError> {
    let ranges = Ranges { service_cidr: config.service_cidr, node_ports: config.node_port_range };
    let service_ip = ranges.kubernetes_ip();
    let mut extra = config.extra_sans.clone();
    extra.push(config.advertise);
    if !config.bind.ip().is_unspecified() {
        extra.push(config.bind.ip());
    }
    let tls = ClusterTls::load_or_generate(&config.tls_dir, &ServingNames::standard(&extra, Some(service_ip)))?;
    let server_config = tls.server_config()?;
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|source| StartError::Bind { addr: config.bind, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.bind, source })?;
    let agent_tls = tls.agent_client_config()?;
    let signer = Signer::from_pem(&tls.service_account_key_pem)?;
    let api: SharedApi = Arc::new(Api {
        alloc: Allocator::new(store.clone(), ranges),
        store,
        metrics: Metrics::new(),
        config: Config { bind: addr, ..config },
        tls: tls.clone(),
        agent_tls,
        signer,
    });
    crate::bootstrap::run(&api).await.map_err(StartError::Bootstrap)?;
    let router = Router::new().fallback(dispatch).with_state(api);
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(crate::listener::serve(listener, server_config, router, stop_rx));
    tracing::info!(%addr, "api server listening");
    Ok(Running { addr, tls, stop, task })
}

/// Paths anyone may read, as Kubernetes' system:public-info-viewer allows.
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version" | "/version/" | "/cacerts")
        || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

/// What a request presents to authenticate: read out of it before any
/// await, since a Request is not Sync.
struct Presented {
    cert: Option<(String, Vec<String>)>,
    bearer: Option<String>,
}

fn presented(req: &Request) -> Presented {
    let cert = req.extensions().get::<PeerIdentity>().and_then(|p| p.cert.clone());
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    Presented { cert, bearer }
}

/// The user a request authenticates as: a client certificate of the
/// cluster CA, the node join token, or a service account token.
async fn authenticate(api: &Api, presented: Presented) -> Option<UserInfo> {
    let Presented { cert, bearer } = presented;
    let mut user = match (cert, bearer) {
        (Some((name, groups)), _) => UserInfo::new(name, groups),
        (None, Some(token)) => authenticate_token(api, &token).await?,
        (None, None) => return None,
    };
    if !user.groups.iter().any(|g| g == "system:authenticated") {
        user.groups.push("system:authenticated".into());
    }
    Some(user)
}

async fn authenticate_token(api: &Api, token: &str) -> Option<UserInfo> {
    if crate::serviceaccount::looks_like_jwt(token) {
        return match crate::serviceaccount::authenticate(api, token).await {
            Ok(user) => Some(user),
            Err(why) => {
                tracing::debug!(%why, "service account token refused");
                None
            }
        };
    }
    let (hash, secret) = crate::tls::parse_token(token);
    // a token that names a CA must name ours
    if hash.is_some_and(|h| !constant_time_eq(h.as_bytes(), api.tls.ca_hash().as_bytes())) {
        return None;
    }
    if !api.config.node_token.is_empty() && constant_time_eq(secret.as_bytes(), api.config.node_token.as_bytes()) {
        return Some(UserInfo::new("system:node".into(), vec!["system:nodes".into(), "system:authenticated".into()]));
    }
    None
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The verb Kubernetes would log for a request (for metrics).
fn verb(method: &Method, has_name: bool, query: &Query) -> &'static str {
    match *method {
        Method::GET if query.flag("watch") => "WATCH",
        Method::GET if has_name => "GET",
        Method::GET => "LIST",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE if has_name => "DELETE",
        Method::DELETE => "DELETECOLLECTION",
        _ => "OTHER",
    }
}

async fn dispatch(State(api): State<SharedApi>, req: Request) -> Response {
    let started = Instant::now();
    let path = req.uri().path().to_string();
    if is_public(&path) {
        return public(&api, &path);
    }
    let Some(user) = authenticate(&api, presented(&req)).await else {
        return ApiError::unauthorized().into_response();
    };
    if let Some(version) = crate::serviceaccount::self_subject_review_version(&path) {
        if req.method() == Method::POST {
            api.metrics.observe_request("POST", "selfsubjectreviews", 201, started.elapsed());
            return crate::serviceaccount::self_subject_review(version, &user);
        }
    }
    if let Some((namespace, name, kind)) = crate::stream::route(&path) {
        let resp = crate::stream::serve(api.clone(), namespace, name, kind, req).await;
        api.metrics.observe_request("CONNECT", "pods", resp.status().as_u16(), started.elapsed());
        return resp;
    }
    let method = req.method().clone();
    let query = Query::parse(req.uri().query());
    let headers = req.headers().clone();
    let (resp, verb, resource) = match request::parse(&path) {
        Ok(Some(Parsed::Resource(target))) => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(e) => return e.into_response(),
            };
            let v = verb(&method, target.name.is_some(), &query);
            let resource = target.rt.plural;
            (handlers::handle(&api, &method, &target, &query, &headers, body).await, v, resource)
        }
        Ok(Some(Parsed::Other(route))) => {
            let addr = format!("{}:{}", api.config.advertise, api.config.bind.port());
            let r = crate::discovery::answer(&route, &headers, &addr).unwrap_or_else(IntoResponse::into_response);
            (r, "GET", "discovery")
        }
        Ok(None) if path == crate::nodeproxy::NODE_CERT_PATH => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(e) => return e.into_response(),
            };
            (crate::nodeproxy::issue_certificate(&api, &body), "POST", "nodecertificates")
        }
        Ok(None) => (non_resource(&api, &method, &path, &query), "GET", "nonresource"),
        Err(e) => (e.into_response(), "GET", "unknown"),
    };
    api.metrics.observe_request(verb, resource, resp.status().as_u16(), started.elapsed());
    resp
}

async fn read_body(req: Request) -> Result<bytes::Bytes, ApiError> {
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        drain(req.into_body()).await;
        return Err(ApiError::too_large());
    }
    let mut body = req.into_body();
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        let Ok(frame) = frame else { return Err(ApiError::bad_request("the request body could not be read")) };
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > MAX_BODY {
                drain(body).await;
                return Err(ApiError::too_large());
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

/// Read and drop what is left of an over-large body (up to a bound), so an
/// HTTP/1.1 client that is still sending gets to read the 413 instead of a
/// reset connection.
async fn drain(mut body: Body) {
    const DRAIN_LIMIT: usize = 64 * 1024 * 1024;
    let mut seen = 0usize;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while seen < DRAIN_LIMIT {
        match tokio::time::timeout_at(deadline, http_body_util::BodyExt::frame(&mut body)).await {
            Ok(Some(Ok(frame))) => seen += frame.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
}

fn public(api: &Api, path: &str) -> Response {
    match path {
        "/version" | "/version/" => json_response(StatusCode::OK, &version()),
        // the CA a joining node downloads and checks against its token's hash
        "/cacerts" => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], api.tls.ca_cert_pem.clone())
                .into_response()
        }
        _ => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "ok").into_response(),
    }
}

pub fn version() -> Value {
    json!({
        "major": skiff_api::KUBERNETES_MAJOR,
        "minor": skiff_api::KUBERNETES_MINOR,
        "gitVersion": skiff_api::KUBERNETES_GIT_VERSION,
        "gitCommit": "skiff",
        "gitTreeState": "clean",
        "buildDate": "2026-11-26T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("linux/{}", std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64")),
    })
}

fn non_resource(api: &Api, method: &Method, path: &str, query: &Query) -> Response {
    if *method != Method::GET {
        return ApiError::method_not_allowed("the server does not allow this method on the requested resource")
            .into_response();
    }
    match path {
        "/metrics" => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            api.metrics.render(),
        )
            .into_response(),
        "/openapi/v3" | "/openapi/v3/" => json_response(StatusCode::OK, &skiff_api::openapi::v3_index()),
        "/openapi/v2" | "/swagger-2.0.0.pb-v1" => openapi_v2(query),
        p if p.starts_with("/openapi/v3/") => {
            let gv = p.trim_start_matches("/openapi/v3/");
            match skiff_api::openapi::v3_group_version(gv) {
                Some(doc) => {
                    let mut resp =
                        (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], Body::from(doc.to_vec()))
                            .into_response();
                    if query.get("hash").is_some() {
                        let h = resp.headers_mut();
                        h.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("public, immutable"));
                        h.insert(header::EXPIRES, header::HeaderValue::from_static("Fri, 01 Jan 2100 00:00:00 GMT"));
                    }
                    resp
                }
                None => ApiError::no_route().into_response(),
            }
        }
        _ => ApiError::no_route().into_response(),
    }
}

fn openapi_v2(_query: &Query) -> Response {
    let doc = skiff_api::openapi::v2_protobuf();
    (StatusCode::OK, [(header::CONTENT_TYPE, skiff_api::openapi::V2_PROTOBUF_CONTENT_TYPE)], doc.to_vec())
        .into_response()
}

/// RFC 6902 JSON patch.
pub fn json_patch(doc: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let p: json_patch::Patch =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let mut out = doc.clone();
    json_patch::patch(&mut out, &p).map_err(|e| {
        ApiError::unprocessable(format!("the server rejected our request due to an error in our request: {e}"))
    })?;
    Ok(out)
}
