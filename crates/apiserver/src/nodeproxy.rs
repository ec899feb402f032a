//! What the API server does for and through node agents: issue their serving
//! certificates, and proxy pods/log (later exec, attach and port-forward) to
//! the agent of the pod's node over TLS with the API server's client
//! certificate.

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
async fn agent_address(api: &Api, node: &str) -> Result<(String, u16), ApiError> {
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

/// `GET pods/{name}/log`: find the container, then stream the agent's answer.
pub async fn pod_logs(api: &Api, t: &Target, query: &Query) -> Result<Response, ApiError> {
    let pod_target = Target { subresource: None, ..t.clone() };
    let (pod, _) = load(api, &pod_target).await?;
    let name = t.name.as_deref().unwrap_or("");
    let ns = t.namespace.as_deref().unwrap_or("default");
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
    let node = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("");
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: the pod is not scheduled yet"
        )));
    }
    let (ip, port) = agent_address(api, node).await?;
    let mut params: Vec<(String, String)> = Vec::new();
    for key in ["follow", "previous", "timestamps", "tailLines", "sinceSeconds", "sinceTime", "limitBytes"] {
        if let Some(v) = query.get(key) {
            params.push((key.to_string(), v.to_string()));
        }
    }
    let qs = serde_urlencoded::to_string(&params).unwrap_or_default();
    let path = format!("/containerLogs/{ns}/{name}/{container}{}{qs}", if qs.is_empty() { "" } else { "?" });
    proxy_get(api, node, &ip, port, &path).await
}

/// GET `path` on a node's agent over TLS (verifying it against the cluster
/// CA, presenting the API server's client certificate) and stream the body.
async fn proxy_get(api: &Api, node: &str, ip: &str, port: u16, path: &str) -> Result<Response, ApiError> {
    let unreachable =
        |e: String| ApiError::unavailable(format!("the agent of node {node:?} at {ip}:{port} is unreachable: {e}"));
    let tcp = tokio::time::timeout(std::time::Duration::from_secs(10), tokio::net::TcpStream::connect((ip, port)))
        .await
        .map_err(|_| unreachable("connect timed out".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    let server_name =
        rustls::pki_types::ServerName::try_from(ip.to_string()).map_err(|e| unreachable(e.to_string()))?;
    let tls = tokio_rustls::TlsConnector::from(api.agent_tls.clone())
        .connect(server_name, tcp)
        .await
        .map_err(|e| unreachable(format!("tls: {e}")))?;
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
