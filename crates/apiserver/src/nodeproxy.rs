//! What the API server does for and through node agents: issue their serving
//! certificates, and proxy pods/log (and, through `stream`, exec and
//! port-forward) to the agent of the pod's node over TLS with the API
//! server's client certificate.

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::handlers::{json_response, load};
use crate::query::Query;
use crate::request::Target;
use crate::Api;

/// `POST` here with `{"nodeName": "...", "addresses": ["10.0.0.2"]}` (as a
/// node, with the join token) returns a serving certificate for the agent.
pub const NODE_CERT_PATH: &str = "/skiff/v1/node-certificate";

/// The agent's HTTPS port when the Node does not say.
pub const DEFAULT_AGENT_PORT: u16 = 10250;

pub fn issue_certificate(api: &Api, body: &[u8]) -> Response {
    let req: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return ApiError::bad_request(format!("node certificate request: {e}")).into_response(),
    };
    let Some(node) =
        req.get("nodeName").and_then(Value::as_str).filter(|n| skiff_api::validation::is_dns1123_subdomain(n))
    else {
        return ApiError::bad_request("node certificate request: nodeName must be a DNS-1123 subdomain")
            .into_response();
    };
    let mut ips = Vec::new();
    for a in req.get("addresses").and_then(Value::as_array).into_iter().flatten() {
        match a.as_str().and_then(|s| s.parse().ok()) {
            Some(ip) => ips.push(ip),
            None => {
                return ApiError::bad_request(format!("node certificate request: {a} is not an IP address"))
                    .into_response()
            }
        }
    }
    match api.tls.issue_node_serving(node, &ips) {
        Ok((cert, key)) => {
            json_response(StatusCode::OK, &json!({"certificate": cert, "key": key, "ca": api.tls.ca_cert_pem}))
        }
        Err(e) => ApiError::internal(e.to_string()).into_response(),
    }
}

/// Where a node's agent listens: its InternalIP and kubelet endpoint port.
pub(crate) async fn agent_address(api: &Api, node: &str) -> Result<(String, u16), ApiError> {
    let rt = skiff_api::catalogue::find("", "v1", "nodes").ok_or_else(|| ApiError::internal("nodes are not served"))?;
    let target = Target { rt, namespace: None, name: Some(node.to_string()), subresource: None };
    let (obj, _) = load(api, &target).await?;
    let ip = obj
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|x| x.get("type").and_then(Value::as_str) == Some("InternalIP")))
        .and_then(|x| x.get("address"))
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request(format!("node {node:?} reports no InternalIP address")))?
        .to_string();
    let port = obj
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_AGENT_PORT);
    Ok((ip, port))
}

/// A pod, the container a request names (or its only container), and the
/// node it is bound to.
pub(crate) struct PodContainer {
    pub pod: Value,
    pub container: String,
    pub node: String,
}

/// Find pod `t` and the container `query` names; `verb` says what for in
/// errors (`logs`, `exec`).
pub(crate) async fn pod_container(api: &Api, t: &Target, query: &Query) -> Result<PodContainer, ApiError> {
    let pod_target = Target { subresource: None, ..t.clone() };
    let (pod, _) = load(api, &pod_target).await?;
    let name = t.name.as_deref().unwrap_or("");
    let containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(pod.pointer("/spec/initContainers").and_then(Value::as_array).into_iter().flatten())
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    let container = match query.get("container").filter(|c| !c.is_empty()) {
        Some(c) if containers.iter().any(|x| x == c) => c.to_string(),
        Some(c) => {
            return Err(ApiError::bad_request(format!("container {c} is not valid for pod {name}")));
        }
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )))
        }
    };
    let node = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("").to_string();
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: the pod is not scheduled yet"
        )));
    }
    Ok(PodContainer { pod, container, node })
}

/// `GET pods/{name}/log`: find the container, then stream the agent's answer.
pub async fn pod_logs(api: &Api, t: &Target, query: &Query) -> Result<Response, ApiError> {
    let PodContainer { container, node, .. } = pod_container(api, t, query).await?;
    let name = t.name.as_deref().unwrap_or("");
    let ns = t.namespace.as_deref().unwrap_or("default");
    let (ip, port) = agent_address(api, &node).await?;
    let mut params: Vec<(String, String)> = Vec::new();
    for key in ["follow", "previous", "timestamps", "tailLines", "sinceSeconds", "sinceTime", "limitBytes"] {
        if let Some(v) = query.get(key) {
            params.push((key.to_string(), v.to_string()));
        }
    }
    let qs = serde_urlencoded::to_string(&params).unwrap_or_default();
    let path = format!("/containerLogs/{ns}/{name}/{container}{}{qs}", if qs.is_empty() { "" } else { "?" });
    proxy_get(api, &node, &ip, port, &path).await
}

type AgentTls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to a node's agent (verified against the cluster CA,
/// presenting the API server's client certificate).
async fn dial_agent(api: &Api, node: &str, ip: &str, port: u16) -> Result<AgentTls, ApiError> {
    let unreachable =
        |e: String| ApiError::unavailable(format!("the agent of node {node:?} at {ip}:{port} is unreachable: {e}"));
    let tcp = tokio::time::timeout(std::time::Duration::from_secs(10), tokio::net::TcpStream::connect((ip, port)))
        .await
        .map_err(|_| unreachable("connect timed out".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let server_name =
        rustls::pki_types::ServerName::try_from(ip.to_string()).map_err(|e| unreachable(e.to_string()))?;
    tokio_rustls::TlsConnector::from(api.agent_tls.clone())
        .connect(server_name, tcp)
        .await
        .map_err(|e| unreachable(format!("tls: {e}")))
}

/// A WebSocket to `path` on the agent of `node`, speaking `protocol`.
pub(crate) async fn agent_websocket(
    api: &Api,
    node: &str,
    path: &str,
    protocol: &str,
) -> Result<tokio_tungstenite::WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>, ApiError> {
    let (ip, port) = agent_address(api, node).await?;
    let unreachable =
        |e: String| ApiError::unavailable(format!("the agent of node {node:?} at {ip}:{port} is unreachable: {e}"));
    let tls = dial_agent(api, node, &ip, port).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "agent stream connection ended");
        }
    });
    let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
    let req = hyper::Request::get(path)
        .header(header::HOST, format!("{ip}:{port}"))
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .header(header::SEC_WEBSOCKET_KEY, key)
        .header(header::SEC_WEBSOCKET_PROTOCOL, protocol)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let resp = sender.send_request(req).await.map_err(|e| unreachable(e.to_string()))?;
    let status = resp.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        let body = axum::body::to_bytes(Body::new(resp.into_body()), 64 * 1024).await.unwrap_or_default();
        let msg = String::from_utf8_lossy(&body).trim().to_string();
        return Err(match status {
            StatusCode::BAD_REQUEST => ApiError::bad_request(msg),
            StatusCode::NOT_FOUND => ApiError::bad_request(msg),
            _ => ApiError::internal(format!("the agent of node {node:?} answered {status}: {msg}")),
        });
    }
    let upgraded = hyper::upgrade::on(resp).await.map_err(|e| unreachable(e.to_string()))?;
    Ok(tokio_tungstenite::WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await)
}

/// GET `path` on a node's agent over TLS (verifying it against the cluster
/// CA, presenting the API server's client certificate) and stream the body.
async fn proxy_get(api: &Api, node: &str, ip: &str, port: u16, path: &str) -> Result<Response, ApiError> {
    let unreachable =
        |e: String| ApiError::unavailable(format!("the agent of node {node:?} at {ip}:{port} is unreachable: {e}"));
    let tls = dial_agent(api, node, ip, port).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "agent connection ended");
        }
    });
    let req = hyper::Request::get(path)
        .header(header::HOST, format!("{ip}:{port}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let resp = sender.send_request(req).await.map_err(|e| unreachable(e.to_string()))?;
    let status = resp.status();
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let body = Body::new(resp.into_body());
    if !status.is_success() {
        // the agent answers errors as Status objects; pass them through
        let bytes = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
        return Ok((status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response());
    }
    let mut out = (status, body).into_response();
    if let Some(ct) = content_type {
        out.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    Ok(out)
}
