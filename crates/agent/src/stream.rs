//! The agent's streaming endpoints, for the API server to proxy `kubectl
//! exec` and `kubectl port-forward` to (docs/adr/0006-exec-attach.md). Both
//! are WebSockets over the agent's mutual-TLS endpoint; every binary message
//! starts with a channel byte.
//!
//! - `GET /exec/{namespace}/{pod}/{container}?command=…&stdin=&stdout=&stderr=&tty=`
//!   speaks Kubernetes' `v5.channel.k8s.io`: 0 stdin, 1 stdout, 2 stderr,
//!   3 the final `Status`, 4 terminal size (`{"Width":…,"Height":…}`),
//!   255 + channel = that channel is closed (only stdin, from the client).
//! - `GET /attach/{namespace}/{pod}/{container}?stdin=&stdout=&stderr=&tty=`
//!   speaks the same channels to a running container's stdio.
//! - `GET /portForward/{namespace}/{pod}?port=N` is one TCP connection made
//!   from the pod's network namespace: 0 data, 255 end of data (a half
//!   close, each way), 3 an error message from the agent.
//!
//! The process or connection ends when the WebSocket does, whichever side
//! goes away first: an exec whose client is gone is killed and deleted.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State as AxState};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::http::State;
use crate::runtime::{ExecSpec, TaskState, LABEL_CONTAINER, LABEL_NODE, LABEL_POD, SANDBOX};

/// The WebSocket subprotocol of the exec endpoint.
pub const EXEC_PROTOCOL: &str = "v5.channel.k8s.io";
/// The WebSocket subprotocol of the port-forward endpoint.
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.skiff.io";

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;
/// The data channel of a port-forward connection.
pub const DATA: u8 = 0;

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

fn text(code: StatusCode, msg: String) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg).into_response()
}

/// Answer a WebSocket upgrade offering `protocol` with 101, and run `session`
/// on the upgraded connection.
fn upgrade<F, Fut>(mut req: Request, protocol: &'static str, session: F) -> Response
where
    F: FnOnce(Ws) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let headers = req.headers();
    let is_ws =
        headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).filter(|_| is_ws) else {
        return text(StatusCode::BAD_REQUEST, "this endpoint needs a WebSocket upgrade".into());
    };
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == protocol);
    if !offered {
        return text(StatusCode::BAD_REQUEST, format!("the WebSocket subprotocol must be {protocol}"));
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
                session(ws).await;
            }
            Err(e) => tracing::debug!(error = %e, "stream upgrade failed"),
        }
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

/// The id and pid of the running container `container` of pod `namespace/pod`.
async fn running_container(s: &State, namespace: &str, pod: &str, container: &str) -> Result<(String, u32), Response> {
    let labels: BTreeMap<String, String> = [
        (LABEL_NODE.to_string(), s.node_name.clone()),
        (LABEL_POD.to_string(), format!("{namespace}/{pod}")),
        (LABEL_CONTAINER.to_string(), container.to_string()),
    ]
    .into_iter()
    .collect();
    let found = s.runtime.list(&labels).await.map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    found
        .iter()
        .find_map(|c| match c.state {
            TaskState::Running { pid, .. } => Some((c.id.clone(), pid)),
            _ => None,
        })
        .ok_or_else(|| {
            let what =
                if container == SANDBOX { "pod sandbox".to_string() } else { format!("container {container:?}") };
            text(
                StatusCode::BAD_REQUEST,
                format!("{what} of pod {namespace}/{pod} is not running on node {:?}", s.node_name),
            )
        })
}

/// `GET /exec/{namespace}/{pod}/{container}`.
pub async fn exec(
    AxState(s): AxState<State>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(req.uri().query().unwrap_or("")).unwrap_or_default();
    let flag = |k: &str| pairs.iter().any(|(key, v)| key == k && matches!(v.as_str(), "1" | "true" | "True"));
    let spec = ExecSpec {
        command: pairs.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).collect(),
        stdin: flag("stdin"),
        stdout: flag("stdout"),
        stderr: flag("stderr"),
        tty: flag("tty"),
    };
    if spec.command.is_empty() {
        return text(StatusCode::BAD_REQUEST, "you must specify at least one command for the container".into());
    }
    let (id, _) = match running_container(&s, &namespace, &pod, &container).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let runtime = s.runtime.clone();
    upgrade(req, EXEC_PROTOCOL, move |ws| async move {
        exec_session(ws, runtime, id, spec).await;
    })
}

fn framed(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(Bytes::from(v))
}

/// The `Status` kubectl prints for an exec's end.
pub fn exit_status(code: i32, command: &[String]) -> serde_json::Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

fn failure(message: String) -> serde_json::Value {
    json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500})
}

/// Copies `reader` into `tx` as `channel` messages until EOF.
async fn pump(mut reader: std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>, channel: u8, tx: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send(framed(channel, &buf[..n])).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// One message from the client, decoded.
enum Input {
    Stdin(Bytes),
    Resize(u16, u16),
    CloseStdin,
    /// Nothing to act on (another channel, a ping, a malformed size).
    Ignore,
    /// The client closed or the connection broke.
    End,
}

fn decode(msg: Result<Message, tokio_tungstenite::tungstenite::Error>) -> Input {
    let data = match msg {
        Ok(Message::Binary(b)) => b,
        Ok(Message::Close(_)) | Err(_) => return Input::End,
        Ok(_) => return Input::Ignore,
    };
    let Some((&channel, payload)) = data.split_first() else { return Input::Ignore };
    match channel {
        STDIN => Input::Stdin(data.slice(1..)),
        RESIZE => {
            let Ok(size) = serde_json::from_slice::<serde_json::Value>(payload) else { return Input::Ignore };
            let dim = |k: &str| size.get(k).and_then(|v| v.as_u64()).and_then(|v| u16::try_from(v).ok());
            match (dim("Width"), dim("Height")) {
                (Some(w), Some(h)) => Input::Resize(w, h),
                _ => Input::Ignore,
            }
        }
        CLOSE if payload.first() == Some(&STDIN) => Input::CloseStdin,
        _ => Input::Ignore,
    }
}

/// Write client input to the process; a stdin that fails is dropped.
async fn write_stdin<W: tokio::io::AsyncWrite + Unpin>(stdin: &mut Option<W>, data: &[u8]) {
    if let Some(w) = stdin.as_mut() {
        if w.write_all(data).await.is_err() {
            *stdin = None;
        }
    }
}

async fn close(tx: &mpsc::Sender<Message>) {
    let _ = tx.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))).await;
}

async fn exec_session(ws: Ws, runtime: std::sync::Arc<dyn crate::runtime::Runtime>, id: String, spec: ExecSpec) {
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(16);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let is_close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || is_close {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let exec = match runtime.exec(&id, &spec).await {
        Ok(e) => e,
        Err(e) => {
            let _ = tx.send(framed(ERROR, failure(e.to_string()).to_string().as_bytes())).await;
            close(&tx).await;
            drop(tx);
            let _ = writer.await;
            return;
        }
    };
    let control = exec.control.clone();
    let mut pumps = Vec::new();
    if let Some(out) = exec.stdout {
        pumps.push(tokio::spawn(pump(out, STDOUT, tx.clone())));
    }
    if let Some(err) = exec.stderr {
        pumps.push(tokio::spawn(pump(err, STDERR, tx.clone())));
    }
    let mut stdin = exec.stdin;
    let input = async {
        while let Some(msg) = source.next().await {
            match decode(msg) {
                Input::End => break,
                Input::Ignore => {}
                Input::Stdin(data) => write_stdin(&mut stdin, &data).await,
                Input::Resize(w, h) => {
                    let _ = control.resize(w, h).await;
                }
                Input::CloseStdin => {
                    if let Some(mut w) = stdin.take() {
                        let _ = w.shutdown().await;
                        drop(w);
                        let _ = control.close_stdin().await;
                    }
                }
            }
        }
    };
    let finished = async {
        let code = control.wait().await;
        // the shim closes the FIFOs once it has copied everything
        for p in pumps {
            let _ = tokio::time::timeout(Duration::from_secs(5), p).await;
        }
        code
    };
    tokio::select! {
        code = finished => {
            let status = match code {
                Ok(code) => exit_status(code, &spec.command),
                Err(e) => failure(e.to_string()),
            };
            let _ = tx.send(framed(ERROR, status.to_string().as_bytes())).await;
            close(&tx).await;
        }
        _ = input => {
            tracing::debug!(id, "exec client went away; killing the process");
        }
    }
    control.finish().await;
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

/// `GET /attach/{namespace}/{pod}/{container}?stdin=&stdout=&stderr=&tty=`:
/// the container's output from now on (followed in its log file), and its
/// stdin FIFO when it keeps stdin open; same channels as exec. The stream
/// ends with the container's exit status when the container exits.
pub async fn attach(
    AxState(s): AxState<State>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(req.uri().query().unwrap_or("")).unwrap_or_default();
    let flag = |k: &str| pairs.iter().any(|(key, v)| key == k && matches!(v.as_str(), "1" | "true" | "True"));
    let want = ExecSpec {
        command: Vec::new(),
        stdin: flag("stdin"),
        stdout: flag("stdout"),
        stderr: flag("stderr"),
        tty: flag("tty"),
    };
    let (id, _) = match running_container(&s, &namespace, &pod, &container).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let target = match s.runtime.attach_target(&id).await {
        Ok(t) => t,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let runtime = s.runtime.clone();
    upgrade(req, EXEC_PROTOCOL, move |ws| async move {
        attach_session(ws, runtime, id, target, want).await;
    })
}

/// Sends what is appended to the CRI log at `path` from now on, as channel
/// messages (stdout and stderr records; everything on stdout for a tty).
async fn follow_log(path: PathBuf, tty: bool, want: (bool, bool), tx: mpsc::Sender<Message>) {
    let Ok(mut file) = tokio::fs::File::open(&path).await else { return };
    if tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::End(0)).await.is_err() {
        return;
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match file.read(&mut buf).await {
            Ok(n) => n,
            Err(_) => return,
        };
        if n == 0 {
            tokio::time::sleep(Duration::from_millis(30)).await;
            continue;
        }
        pending.extend_from_slice(&buf[..n]);
        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            let line = &line[..line.len() - 1];
            // <timestamp> <stream> <F|P> <content>
            let mut parts = line.splitn(4, |b| *b == b' ');
            let (_, stream, tag) = (parts.next(), parts.next(), parts.next());
            let content = parts.next().unwrap_or(&[]);
            let channel = match stream {
                Some(b"stderr") if !tty => STDERR,
                _ => STDOUT,
            };
            if (channel == STDOUT && !want.0) || (channel == STDERR && !want.1) {
                continue;
            }
            let mut data = content.to_vec();
            if tag != Some(b"P") {
                data.push(b'\n');
            }
            if tx.send(framed(channel, &data)).await.is_err() {
                return;
            }
        }
    }
}

async fn attach_session(
    ws: Ws,
    runtime: std::sync::Arc<dyn crate::runtime::Runtime>,
    id: String,
    target: crate::runtime::AttachTarget,
    want: ExecSpec,
) {
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(16);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let is_close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || is_close {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let output = tokio::spawn(follow_log(
        target.log_path.clone(),
        target.tty,
        (want.stdout, want.stderr && !want.tty),
        tx.clone(),
    ));
    let mut stdin = match (&target.stdin, want.stdin) {
        (Some(fifo), true) => tokio::net::unix::pipe::OpenOptions::new().open_sender(fifo).ok(),
        _ => None,
    };
    let rt = runtime.clone();
    let cid = id.clone();
    let input = async {
        while let Some(msg) = source.next().await {
            match decode(msg) {
                Input::End => break,
                Input::Ignore => {}
                Input::Stdin(data) => write_stdin(&mut stdin, &data).await,
                Input::Resize(w, h) => {
                    let _ = rt.resize(&cid, w, h).await;
                }
                Input::CloseStdin => stdin = None,
            }
        }
    };
    let exited = async {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            match runtime.inspect(&id).await {
                Ok(info) => match info.state {
                    TaskState::Running { .. } | TaskState::Created => {}
                    TaskState::Exited { exit_code, .. } => return exit_code,
                    TaskState::Unknown => return 0,
                },
                Err(_) => return 0,
            }
        }
    };
    tokio::select! {
        code = exited => {
            // what the container wrote last reaches the log within a moment
            tokio::time::sleep(Duration::from_millis(300)).await;
            output.abort();
            let _ = tx.send(framed(ERROR, exit_status(code, &[]).to_string().as_bytes())).await;
            close(&tx).await;
        }
        _ = input => tracing::debug!(id, "attach client went away"),
    }
    output.abort();
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

/// `GET /portForward/{namespace}/{pod}?port=N`.
pub async fn port_forward(
    AxState(s): AxState<State>,
    Path((namespace, pod)): Path<(String, String)>,
    req: Request,
) -> Response {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(req.uri().query().unwrap_or("")).unwrap_or_default();
    let Some(port) =
        pairs.iter().find(|(k, _)| k == "port").and_then(|(_, v)| v.parse::<u16>().ok()).filter(|p| *p != 0)
    else {
        return text(StatusCode::BAD_REQUEST, "port-forward needs a port between 1 and 65535".into());
    };
    let (_, pid) = match running_container(&s, &namespace, &pod, SANDBOX).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let what = format!("error forwarding port {port} to pod {namespace}/{pod}");
    upgrade(req, PORT_FORWARD_PROTOCOL, move |ws| async move {
        forward_session(ws, netns, port, what).await;
    })
}

async fn forward_session(ws: Ws, netns: PathBuf, port: u16, what: String) {
    let (mut sink, mut source) = ws.split();
    let addr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
    let connected =
        tokio::task::spawn_blocking(move || skiff_net::netns::connect_tcp(&netns, addr, Duration::from_secs(10)))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
            .and_then(|s| {
                s.set_nonblocking(true)?;
                tokio::net::TcpStream::from_std(s)
            });
    let tcp = match connected {
        Ok(t) => t,
        Err(e) => {
            let _ = sink.send(framed(ERROR, format!("{what}: {e}").as_bytes())).await;
            let _ = sink.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))).await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut rd, mut wr) = tcp.into_split();
    let to_client = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) => {
                    let _ = sink.send(framed(CLOSE, &[DATA])).await;
                    break;
                }
                Ok(n) => {
                    if sink.send(framed(DATA, &buf[..n])).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = sink.send(framed(ERROR, format!("{what}: {e}").as_bytes())).await;
                    break;
                }
            }
        }
        let _ = sink.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))).await;
    };
    let from_client = async {
        while let Some(msg) = source.next().await {
            let data = match msg {
                Ok(Message::Binary(b)) => b,
                Ok(Message::Close(_)) | Err(_) => return,
                Ok(_) => continue,
            };
            match data.split_first() {
                Some((&DATA, payload)) => {
                    let written = wr.write_all(payload).await;
                    if written.is_err() {
                        return;
                    }
                }
                Some((&CLOSE, _)) => {
                    let _ = wr.shutdown().await;
                }
                _ => {}
            }
        }
    };
    // the connection is over when the pod's side has ended (and said so), or
    // when the client is gone
    tokio::pin!(from_client);
    tokio::select! {
        _ = to_client => {}
        _ = &mut from_client => {}
    }
}
