//! pods/portforward: SPDY (raw, or tunnelled in a WebSocket by kubectl
//! 1.31+). Each forwarded connection is a pair of client streams, `error`
//! and `data`, sharing a `requestid`; for each data stream the API server
//! opens one WebSocket to the agent's `/portForward`, which connects from
//! the pod's network namespace.

use std::collections::HashMap;

use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::spdy::{self, Event, Writer};
use super::{negotiate, switching, websocket_bytes, Upgrade};
use crate::error::ApiError;
use crate::request::Target;
use crate::SharedApi;

const AGENT_PROTOCOL: &str = "portforward.skiff.io";
const DATA: u8 = 0;
const ERROR: u8 = 3;
const CLOSE: u8 = 255;

pub(super) async fn serve(
    api: SharedApi,
    namespace: String,
    name: String,
    mut req: Request,
) -> Result<Response, ApiError> {
    let upgrade = negotiate(req.headers(), &["SPDY/3.1+portforward.k8s.io"], &["portforward.k8s.io"])?;
    let rt = skiff_api::catalogue::find("", "v1", "pods").ok_or_else(|| ApiError::internal("pods are not served"))?;
    let target = Target { rt, namespace: Some(namespace.clone()), name: Some(name.clone()), subresource: None };
    let (pod, _) = crate::handlers::load(&api, &target).await?;
    let node = pod.pointer("/spec/nodeName").and_then(serde_json::Value::as_str).unwrap_or("").to_string();
    if node.is_empty() {
        return Err(ApiError::bad_request(format!("pod {name} is not scheduled to a node yet")));
    }
    if pod.pointer("/status/phase").and_then(serde_json::Value::as_str) != Some("Running") {
        return Err(ApiError::bad_request(format!("pod {name} is not running")));
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let resp = switching(&upgrade);
    let session = Session { api, node, namespace, name };
    tokio::spawn(async move {
        let io = match on_upgrade.await {
            Ok(io) => TokioIo::new(io),
            Err(e) => {
                tracing::debug!(error = %e, "port-forward upgrade failed");
                return;
            }
        };
        match upgrade {
            Upgrade::WebSocket { .. } => {
                let ws =
                    WebSocketStream::from_raw_socket(io, tokio_tungstenite::tungstenite::protocol::Role::Server, None)
                        .await;
                session.run(websocket_bytes(ws)).await;
            }
            Upgrade::Spdy { .. } => session.run(io).await,
        }
    });
    Ok(resp)
}

/// What the client sends on a data stream.
enum Up {
    Data(Bytes),
    Eof,
}

struct Session {
    api: SharedApi,
    node: String,
    namespace: String,
    name: String,
}

impl Session {
    async fn run(self, io: impl AsyncRead + AsyncWrite + Send + 'static) {
        let (mut events, w) = spdy::serve(io);
        // requestid -> error stream id
        let mut error_streams: HashMap<String, u32> = HashMap::new();
        // data stream id -> its connection's input
        let mut conns: HashMap<u32, mpsc::Sender<Up>> = HashMap::new();
        while let Some(ev) = events.recv().await {
            match ev {
                Event::Stream { id, headers, .. } => {
                    let kind = Event::header(&headers, "streamtype").unwrap_or("");
                    let request = Event::header(&headers, "requestid").unwrap_or("").to_string();
                    let port = Event::header(&headers, "port").and_then(|p| p.parse::<u16>().ok()).filter(|p| *p != 0);
                    let Some(port) = port else {
                        w.reset(id).await;
                        continue;
                    };
                    w.reply(id).await;
                    match kind {
                        "error" => {
                            error_streams.insert(request, id);
                        }
                        "data" => {
                            let (tx, rx) = mpsc::channel(32);
                            conns.insert(id, tx);
                            let error = error_streams.get(&request).copied();
                            let path = format!("/portForward/{}/{}?port={port}", self.namespace, self.name);
                            let conn = Connection { w: w.clone(), data: id, error, port };
                            let (api, node, pod) = (self.api.clone(), self.node.clone(), self.name.clone());
                            tokio::spawn(async move { conn.run(&api, &node, &pod, &path, rx).await });
                        }
                        _ => {
                            w.reset(id).await;
                        }
                    }
                }
                Event::Data { id, data, fin } => {
                    if let Some(tx) = conns.get(&id) {
                        if !data.is_empty() && tx.send(Up::Data(data)).await.is_err() {
                            conns.remove(&id);
                            continue;
                        }
                        if fin {
                            let _ = tx.send(Up::Eof).await;
                        }
                    }
                }
                Event::Reset { id } => {
                    conns.remove(&id);
                }
                Event::GoAway => break,
            }
        }
        // dropping the senders ends every connection
        drop(conns);
        w.go_away().await;
    }
}

/// One forwarded connection.
struct Connection {
    w: Writer,
    data: u32,
    error: Option<u32>,
    port: u16,
}

impl Connection {
    async fn fail(&self, message: String) {
        if let Some(e) = self.error {
            self.w.data(e, Bytes::from(message), true).await;
        }
        self.w.data(self.data, Bytes::new(), true).await;
    }

    async fn run(self, api: &SharedApi, node: &str, pod: &str, path: &str, mut rx: mpsc::Receiver<Up>) {
        let agent = match crate::nodeproxy::agent_websocket(api, node, path, AGENT_PROTOCOL).await {
            Ok(a) => a,
            Err(e) => {
                let msg = e.status().get("message").and_then(|m| m.as_str()).unwrap_or("").to_string();
                self.fail(format!("error forwarding port {} to pod {pod}: {msg}", self.port)).await;
                return;
            }
        };
        let (mut asink, mut asrc) = agent.split();
        let mut data_open = true;
        let mut error_text: Vec<u8> = Vec::new();
        let mut up_open = true;
        loop {
            tokio::select! {
                up = rx.recv(), if up_open => match up {
                    Some(Up::Data(b)) => {
                        let mut v = Vec::with_capacity(b.len() + 1);
                        v.push(DATA);
                        v.extend_from_slice(&b);
                        if asink.send(Message::Binary(Bytes::from(v))).await.is_err() {
                            break;
                        }
                    }
                    Some(Up::Eof) => {
                        let _ = asink.send(Message::Binary(Bytes::from_static(&[CLOSE, DATA]))).await;
                    }
                    None => {
                        // the client reset the stream or went away
                        up_open = false;
                        break;
                    }
                },
                down = asrc.next() => match down {
                    Some(Ok(Message::Binary(b))) => match b.split_first() {
                        Some((&DATA, payload)) if data_open => {
                            let sent = self.w.data(self.data, Bytes::copy_from_slice(payload), false).await;
                            if !sent {
                                break;
                            }
                        }
                        Some((&CLOSE, _)) if data_open => {
                            data_open = false;
                            self.w.data(self.data, Bytes::new(), true).await;
                        }
                        Some((&ERROR, payload)) => error_text.extend_from_slice(payload),
                        _ => {}
                    },
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
            }
        }
        let _ = asink.send(Message::Close(None)).await;
        if up_open || !error_text.is_empty() {
            if data_open {
                self.w.data(self.data, Bytes::new(), true).await;
            }
            if let Some(e) = self.error {
                self.w.data(e, Bytes::from(error_text), true).await;
            }
        }
    }
}
