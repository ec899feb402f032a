//! pods/exec and pods/attach: kubectl's WebSocket (v5/v4 channel protocol, relayed message
//! for message: the agent speaks v5) or SPDY (streams turned into channel
//! messages) to the agent's `/exec` WebSocket.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::spdy::{self, Event};
use super::{negotiate, switching, Upgrade, Upgraded};
use crate::error::ApiError;
use crate::query::Query;
use crate::request::Target;
use crate::SharedApi;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;
const AGENT_PROTOCOL: &str = "v5.channel.k8s.io";

type AgentWs = WebSocketStream<Upgraded>;

/// What the client asked for.
#[derive(Debug, Clone, Copy, Default)]
struct Streams {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

/// pods/exec (`attach` false) or pods/attach (`attach` true).
pub(super) async fn serve(
    api: SharedApi,
    namespace: String,
    name: String,
    mut req: Request,
    attach: bool,
) -> Result<Response, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(req.uri().query().unwrap_or("")).unwrap_or_default();
    let flag = |k: &str| pairs.iter().any(|(key, v)| key == k && matches!(v.as_str(), "1" | "true" | "True"));
    let streams = Streams { stdin: flag("stdin"), stdout: flag("stdout"), stderr: flag("stderr"), tty: flag("tty") };
    let command: Vec<&str> = pairs.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.as_str()).collect();
    if command.is_empty() && !attach {
        return Err(ApiError::bad_request("you must specify at least one command for the container"));
    }
    if !(streams.stdin || streams.stdout || streams.stderr) {
        return Err(ApiError::bad_request("you must specify at least 1 of stdin, stdout, stderr"));
    }
    let upgrade = negotiate(
        req.headers(),
        &["v5.channel.k8s.io", "v4.channel.k8s.io"],
        &["v5.channel.k8s.io", "v4.channel.k8s.io"],
    )?;
    let rt = skiff_api::catalogue::find("", "v1", "pods").ok_or_else(|| ApiError::internal("pods are not served"))?;
    let target = Target { rt, namespace: Some(namespace.clone()), name: Some(name.clone()), subresource: None };
    let query = Query::parse(req.uri().query());
    let pc = crate::nodeproxy::pod_container(&api, &target, &query).await?;
    let phase = pc.pod.pointer("/status/phase").and_then(serde_json::Value::as_str).unwrap_or("");
    if matches!(phase, "Succeeded" | "Failed") {
        return Err(ApiError::bad_request(format!(
            "cannot {endpoint} into a container in a completed pod; current phase is {phase}",
            endpoint = if attach { "attach" } else { "exec" }
        )));
    }
    let mut params: Vec<(&str, &str)> = command.iter().map(|c| ("command", *c)).collect();
    for (k, on) in
        [("stdin", streams.stdin), ("stdout", streams.stdout), ("stderr", streams.stderr), ("tty", streams.tty)]
    {
        if on {
            params.push((k, "true"));
        }
    }
    let qs = serde_urlencoded::to_string(&params).map_err(|e| ApiError::internal(e.to_string()))?;
    let endpoint = if attach { "attach" } else { "exec" };
    let path = format!("/{endpoint}/{namespace}/{name}/{}?{qs}", pc.container);
    // reach the agent (and let it find the container) before answering 101,
    // so that errors reach kubectl as a Status
    let agent = crate::nodeproxy::agent_websocket(&api, &pc.node, &path, AGENT_PROTOCOL).await?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let resp = switching(&upgrade);
    tokio::spawn(async move {
        let io = match on_upgrade.await {
            Ok(io) => TokioIo::new(io),
            Err(e) => {
                tracing::debug!(error = %e, "exec upgrade failed");
                return;
            }
        };
        match upgrade {
            Upgrade::WebSocket { .. } => {
                let client =
                    WebSocketStream::from_raw_socket(io, tokio_tungstenite::tungstenite::protocol::Role::Server, None)
                        .await;
                relay(client, agent, streams.tty).await;
            }
            Upgrade::Spdy { .. } => exec_spdy(io, agent, streams).await,
        }
    });
    Ok(resp)
}

/// How long output waits for a terminal client's first message (see [`relay`]).
const CLIENT_READY_WAIT: Duration = Duration::from_secs(1);

/// Relay WebSocket messages both ways until the agent ends (then close the
/// client) or the client goes away (then close the agent, which kills the
/// process).
///
/// The agent is reached before the client gets its 101, so the process may
/// write before kubectl has set up its streams, and kubectl (client-go up to
/// 1.33 at least) discards data for a stream it does not know yet. With a
/// terminal kubectl always sends the terminal size once its streams exist,
/// so output waits for the client's first message (at most
/// [`CLIENT_READY_WAIT`]).
pub(super) async fn relay(client: WebSocketStream<Upgraded>, agent: AgentWs, tty: bool) {
    let (mut csink, mut csrc) = client.split();
    let (mut asink, mut asrc) = agent.split();
    let (ready_tx, mut ready_rx) = tokio::sync::watch::channel(!tty);
    let down = async {
        if !*ready_rx.borrow() {
            let _ = tokio::time::timeout(CLIENT_READY_WAIT, ready_rx.wait_for(|r| *r)).await;
        }
        while let Some(Ok(msg)) = asrc.next().await {
            match msg {
                Message::Binary(_) | Message::Text(_) => {
                    let sent = csink.send(msg).await;
                    if sent.is_err() {
                        return false;
                    }
                }
                Message::Close(frame) => {
                    let _ = csink.send(Message::Close(frame)).await;
                    return true;
                }
                _ => {}
            }
        }
        let _ = csink.send(Message::Close(None)).await;
        true
    };
    {
        let up = async {
            while let Some(Ok(msg)) = csrc.next().await {
                let _ = ready_tx.send(true);
                match msg {
                    Message::Binary(_) | Message::Text(_) => {
                        let sent = asink.send(msg).await;
                        if sent.is_err() {
                            break;
                        }
                    }
                    Message::Close(_) => break,
                    _ => {}
                }
            }
        };
        tokio::pin!(up);
        tokio::select! {
            ended = down => {
                if ended {
                    // let the client answer the close
                    let _ = tokio::time::timeout(Duration::from_secs(2), &mut up).await;
                }
            }
            _ = &mut up => {
                tracing::debug!("exec client went away");
            }
        }
    }
    let _ = asink.send(Message::Close(None)).await;
    let _ = asink.close().await;
}

fn channel(ch: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(ch);
    v.extend_from_slice(data);
    Message::Binary(Bytes::from(v))
}

/// Exec over SPDY: wait for the client's streams, then bridge them to the
/// agent's channels.
async fn exec_spdy(io: Upgraded, agent: AgentWs, want: Streams) {
    let (mut events, w) = spdy::serve(io);
    let expected = 1
        + usize::from(want.stdin)
        + usize::from(want.stdout)
        + usize::from(want.stderr && !want.tty)
        + usize::from(want.tty);
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut early: Vec<Event> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while ids.len() < expected {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Event::Stream { id, headers, .. })) => {
                w.reply(id).await;
                let kind = Event::header(&headers, "streamtype").unwrap_or("").to_string();
                ids.insert(kind, id);
            }
            Ok(Some(ev @ Event::Data { .. })) => early.push(ev),
            Ok(Some(_)) | Ok(None) => return,
            Err(_) => {
                tracing::debug!(have = ids.len(), expected, "exec: the client did not open its streams in 30s");
                w.go_away().await;
                return;
            }
        }
    }
    let id = |k: &str| ids.get(k).copied();
    let (error, stdin, stdout, stderr, resize) = (id("error"), id("stdin"), id("stdout"), id("stderr"), id("resize"));
    let (mut asink, mut asrc) = agent.split();
    let w2 = w.clone();
    let down = async move {
        let mut status: Option<Bytes> = None;
        while let Some(Ok(msg)) = asrc.next().await {
            let Message::Binary(b) = msg else {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
                continue;
            };
            let Some((&ch, payload)) = b.split_first() else { continue };
            let target = match ch {
                STDOUT => stdout,
                STDERR => stderr,
                ERROR => {
                    status = Some(Bytes::copy_from_slice(payload));
                    continue;
                }
                _ => None,
            };
            if let Some(sid) = target {
                if !w2.data(sid, Bytes::copy_from_slice(payload), false).await {
                    return;
                }
            }
        }
        for sid in [stdout, stderr].into_iter().flatten() {
            w2.data(sid, Bytes::new(), true).await;
        }
        if let Some(sid) = error {
            let status = status.unwrap_or_else(|| {
                Bytes::from_static(
                    br#"{"metadata":{},"status":"Failure","message":"the node agent ended the exec stream without a status","reason":"InternalError","code":500}"#,
                )
            });
            w2.data(sid, status, true).await;
        }
    };
    {
        let up = async {
            let mut resize_buf: Vec<u8> = Vec::new();
            let mut queue: std::collections::VecDeque<Event> = early.into();
            loop {
                let ev = match queue.pop_front() {
                    Some(ev) => ev,
                    None => match events.recv().await {
                        Some(ev) => ev,
                        None => return,
                    },
                };
                match ev {
                    Event::Data { id, data, fin } if Some(id) == stdin => {
                        if !data.is_empty() && asink.send(channel(STDIN, &data)).await.is_err() {
                            return;
                        }
                        if fin && asink.send(channel(CLOSE, &[STDIN])).await.is_err() {
                            return;
                        }
                    }
                    Event::Data { id, data, .. } if Some(id) == resize => {
                        resize_buf.extend_from_slice(&data);
                        // the client writes one JSON object per size
                        let mut it = serde_json::Deserializer::from_slice(&resize_buf).into_iter::<serde_json::Value>();
                        let mut sizes = Vec::new();
                        for v in it.by_ref() {
                            match v {
                                Ok(v) => sizes.push(v),
                                Err(_) => break,
                            }
                        }
                        let used = it.byte_offset();
                        resize_buf.drain(..used);
                        for s in sizes {
                            if asink.send(channel(RESIZE, s.to_string().as_bytes())).await.is_err() {
                                return;
                            }
                        }
                    }
                    Event::Reset { id } if Some(id) == error || Some(id) == stdout => return,
                    Event::GoAway => return,
                    _ => {}
                }
            }
        };
        tokio::pin!(up);
        tokio::select! {
            _ = down => {
                // kubectl resets its streams and goes away once it has the status
                let _ = tokio::time::timeout(Duration::from_secs(5), &mut up).await;
            }
            _ = &mut up => tracing::debug!("exec client went away"),
        }
    }
    w.go_away().await;
    let _ = asink.send(Message::Close(None)).await;
    let _ = asink.close().await;
}
