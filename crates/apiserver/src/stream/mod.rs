//! pods/exec, pods/attach and pods/portforward: the API server terminates
//! kubectl's protocol — a WebSocket (`v5.channel.k8s.io`/`v4.channel.k8s.io`
//! for exec, SPDY tunnelled in a WebSocket for port-forward) or SPDY/3.1 —
//! and speaks one WebSocket per exec or forwarded connection to the agent of
//! the pod's node over mutual TLS (docs/adr/0006-exec-attach.md).
//!
//! Only authenticated requests get here (`server::dispatch` checks first).

mod exec;
mod portforward;
pub mod spdy;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;

use crate::error::ApiError;
use crate::SharedApi;

/// The streaming subresources of pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Exec,
    Attach,
    PortForward,
}

/// `/api/v1/namespaces/{ns}/pods/{name}/{exec|attach|portforward}`.
pub fn route(path: &str) -> Option<(String, String, Kind)> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [ns, "pods", name, sub] = parts[..] else { return None };
    let kind = match sub {
        "exec" => Kind::Exec,
        "attach" => Kind::Attach,
        "portforward" => Kind::PortForward,
        _ => return None,
    };
    (!ns.is_empty() && !name.is_empty()).then(|| (ns.to_string(), name.to_string(), kind))
}

/// The upgrade a client asked for.
pub(crate) enum Upgrade {
    /// A WebSocket with the subprotocol we chose.
    WebSocket { protocol: &'static str, accept: String },
    /// SPDY/3.1 with the stream protocol we chose.
    Spdy { protocol: &'static str },
}

fn header_values(headers: &HeaderMap, name: header::HeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Pick the upgrade: the first of `ws` a WebSocket client offers, or the
/// first of `spdy` a SPDY client offers.
pub(crate) fn negotiate(headers: &HeaderMap, ws: &[&'static str], spdy: &[&'static str]) -> Result<Upgrade, ApiError> {
    let upgrade = headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    if upgrade == "websocket" {
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .ok_or_else(|| ApiError::bad_request("a WebSocket upgrade needs Sec-WebSocket-Key"))?;
        let offered = header_values(headers, header::SEC_WEBSOCKET_PROTOCOL);
        let protocol = ws.iter().find(|p| offered.iter().any(|o| o == *p)).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unable to upgrade streaming request: none of the WebSocket subprotocols {offered:?} is supported (supported: {ws:?})"
            ))
        })?;
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        return Ok(Upgrade::WebSocket { protocol, accept });
    }
    if upgrade.starts_with("spdy/3") {
        let offered = header_values(headers, header::HeaderName::from_static("x-stream-protocol-version"));
        let protocol = spdy.iter().find(|p| offered.iter().any(|o| o == *p)).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unable to upgrade streaming request: none of the stream protocols {offered:?} is supported (supported: {spdy:?})"
            ))
        })?;
        return Ok(Upgrade::Spdy { protocol });
    }
    Err(ApiError::bad_request("Upgrade request required"))
}

/// The 101 answer for `upgrade`.
pub(crate) fn switching(upgrade: &Upgrade) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    match upgrade {
        Upgrade::WebSocket { protocol, accept } => {
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
            if let Ok(v) = HeaderValue::from_str(accept) {
                h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
            }
        }
        Upgrade::Spdy { protocol } => {
            h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
            h.insert("x-stream-protocol-version", HeaderValue::from_static(protocol));
        }
    }
    resp
}

pub(crate) type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// Serve pods/{exec,attach,portforward} for an authenticated request.
pub async fn serve(api: SharedApi, namespace: String, name: String, kind: Kind, req: Request) -> Response {
    let result = match kind {
        Kind::Exec => exec::serve(api, namespace, name, req, false).await,
        Kind::Attach => exec::serve(api, namespace, name, req, true).await,
        Kind::PortForward => portforward::serve(api, namespace, name, req).await,
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// A WebSocket byte stream as an AsyncRead + AsyncWrite (each binary message
/// is a piece of the stream), for SPDY tunnelled in a WebSocket.
pub(crate) fn websocket_bytes(ws: tokio_tungstenite::WebSocketStream<Upgraded>) -> tokio::io::DuplexStream {
    use futures::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::Message;
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut rd, mut wr) = tokio::io::split(ours);
    let (mut sink, mut source) = ws.split();
    tokio::spawn(async move {
        let inbound = async {
            while let Some(Ok(msg)) = source.next().await {
                match msg {
                    Message::Binary(b) => {
                        let written = wr.write_all(&b).await;
                        if written.is_err() {
                            break;
                        }
                    }
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            let _ = wr.shutdown().await;
        };
        let outbound = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sink.send(Message::Binary(bytes::Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = sink.send(Message::Close(None)).await;
        };
        tokio::select! {
            _ = inbound => {}
            _ = outbound => {}
        }
    });
    theirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_only_the_streaming_subresources() {
        assert_eq!(
            route("/api/v1/namespaces/default/pods/web/exec"),
            Some(("default".into(), "web".into(), Kind::Exec))
        );
        assert_eq!(route("/api/v1/namespaces/a/pods/b/portforward").map(|r| r.2), Some(Kind::PortForward));
        assert_eq!(route("/api/v1/namespaces/a/pods/b/attach").map(|r| r.2), Some(Kind::Attach));
        assert_eq!(route("/api/v1/namespaces/a/pods/b/log"), None);
        assert_eq!(route("/api/v1/namespaces/a/pods/b"), None);
        assert_eq!(route("/api/v1/namespaces/a/services/b/exec"), None);
    }

    #[test]
    fn negotiates_websocket_then_spdy() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="));
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("v5.channel.k8s.io"));
        match negotiate(&h, &["v5.channel.k8s.io"], &[]).unwrap() {
            Upgrade::WebSocket { protocol, accept } => {
                assert_eq!(protocol, "v5.channel.k8s.io");
                assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
            }
            Upgrade::Spdy { .. } => panic!("expected a WebSocket"),
        }
        assert!(negotiate(&h, &["v4.channel.k8s.io"], &[]).is_err());
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        h.append("x-stream-protocol-version", HeaderValue::from_static("v4.channel.k8s.io"));
        h.append("x-stream-protocol-version", HeaderValue::from_static("v3.channel.k8s.io"));
        match negotiate(&h, &[], &["v5.channel.k8s.io", "v4.channel.k8s.io"]).unwrap() {
            Upgrade::Spdy { protocol } => assert_eq!(protocol, "v4.channel.k8s.io"),
            Upgrade::WebSocket { .. } => panic!("expected SPDY"),
        }
        assert!(negotiate(&HeaderMap::new(), &[], &[]).is_err());
    }
}
