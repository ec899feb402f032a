//! Loopback fixtures: backend HTTP servers (with a websocket echo) that a
//! test can kill, and HTTP clients.
#![allow(clippy::unwrap_used, dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;

/// A backend server answering `<name> <path>` and the forwarding headers it
/// got, one per line; `/slow` answers after 500 ms; websocket upgrades echo.
pub struct Backend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    pub async fn start(ip: &str, name: &'static str) -> Backend {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (h, s) = (hits.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let (stream, _) = tokio::select! {
                    _ = s.cancelled() => break,
                    r = listener.accept() => r.unwrap(),
                };
                let h = h.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| answer(name, h.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
            // killed: the listener closes (connections are refused) and
            // every open connection is dropped mid-flight
            drop(listener);
            conns.abort_all();
            while conns.join_next().await.is_some() {}
        });
        Backend { addr, hits, stop, task }
    }

    /// Kill the server: close its listener and drop its connections.
    pub async fn kill(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }
}

async fn answer(
    name: &'static str,
    hits: Arc<AtomicUsize>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    hits.fetch_add(1, Ordering::Relaxed);
    if let Some(key) = req.headers().get("sec-websocket-key") {
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let io = upgrade.await.unwrap();
            let mut ws =
                tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, None).await;
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_text() || msg.is_binary() {
                    ws.send(msg).await.unwrap();
                }
            }
        });
        return Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", accept)
            .body(Full::new(Bytes::new()))
            .unwrap());
    }
    if req.uri().path() == "/slow" {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
    let body = format!(
        "{name} {}\nx-forwarded-for={}\nx-real-ip={}\nx-forwarded-host={}\nx-forwarded-proto={}\nhost={}\n",
        req.uri().path(),
        h("x-forwarded-for"),
        h("x-real-ip"),
        h("x-forwarded-host"),
        h("x-forwarded-proto"),
        h("host"),
    );
    Ok(Response::new(Full::new(Bytes::from(body))))
}

pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// GET `http://<proxy><path>` with `Host: host`: status, headers and body.
pub async fn get(
    client: &HttpClient,
    proxy: SocketAddr,
    host: &str,
    path: &str,
) -> Result<(StatusCode, http::HeaderMap, String), hyper_util::client::legacy::Error> {
    let req = Request::get(format!("http://{proxy}{path}")).header("host", host).body(Empty::new()).unwrap();
    let resp = client.request(req).await?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
}
