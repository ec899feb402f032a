//! The data path: HTTP and HTTPS listeners, and the request handler that
//! looks a request up in the routing snapshot in force and forwards it to a
//! ready endpoint over a pooled keep-alive connection.
//!
//! Every request loads the snapshot once (`RoutesHandle::load`), so swapping
//! the snapshot never touches requests in flight or open connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::model::{Endpoint, Route, Upstream};
use crate::{IngressConfig, IngressError, RoutesHandle};

type ReqBody = Either<Limited<Incoming>, Empty<Bytes>>;
type RespBody = Either<Incoming, Full<Bytes>>;

/// How many endpoints an idempotent request is tried on.
const MAX_ATTEMPTS: usize = 3;

/// The access log's tracing target.
pub const ACCESS_LOG: &str = "skiff_ingress::access";

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Passive health: endpoints that refused a connection, until when.
struct Health {
    ejected: Mutex<std::collections::HashMap<SocketAddr, Instant>>,
    /// Entries in `ejected`, so the common case takes no lock.
    count: AtomicUsize,
    eject_for: Duration,
}

impl Health {
    fn is_ejected(&self, addr: SocketAddr) -> bool {
        if self.count.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let mut map = self.ejected.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get(&addr) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                map.remove(&addr);
                self.count.store(map.len(), Ordering::Relaxed);
                false
            }
            None => false,
        }
    }

    fn eject(&self, addr: SocketAddr) {
        let now = Instant::now();
        let mut map = self.ejected.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, until| *until > now);
        map.insert(addr, now + self.eject_for);
        self.count.store(map.len(), Ordering::Relaxed);
        tracing::warn!(endpoint = %addr, seconds = self.eject_for.as_secs(), "endpoint refused a connection; ejected");
    }
}

/// What every connection's handler shares.
struct Shared {
    routes: RoutesHandle,
    /// Set on the worker's thread (the pool belongs to its runtime).
    client: Option<Client<HttpConnector, ReqBody>>,
    health: Arc<Health>,
    metrics: Metrics,
    max_body: usize,
    response_timeout: Duration,
    connect_timeout: Duration,
    /// The HTTPS port redirects point at.
    https_port: u16,
}

/// One client connection.
struct Conn {
    peer: SocketAddr,
    peer_ip: HeaderValue,
    local_port: HeaderValue,
    tls: bool,
}

/// The listeners, once bound.
#[derive(Debug)]
pub struct Serving {
    pub http: SocketAddr,
    pub https: SocketAddr,
    done: Vec<tokio::sync::oneshot::Receiver<()>>,
}

impl Serving {
    /// Wait until every worker has stopped (after the shutdown token and
    /// the grace period of open connections).
    pub async fn wait(self) {
        for d in self.done {
            let _ = d.await;
        }
    }
}

/// `workers` listening sockets on one address (SO_REUSEPORT, so the kernel
/// spreads connections over the workers); port 0 picks one port for all.
fn bind_all(addr: SocketAddr, workers: usize) -> Result<Vec<std::net::TcpListener>, IngressError> {
    let err = |e| IngressError::Bind(addr, e);
    let mut out = Vec::with_capacity(workers);
    let mut at = addr;
    for _ in 0..workers {
        let socket = if at.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
            .map_err(err)?;
        socket.set_reuseaddr(true).map_err(err)?;
        socket.set_reuseport(true).map_err(err)?;
        socket.bind(at).map_err(err)?;
        let listener = socket.listen(1024).map_err(err)?;
        at = listener.local_addr().map_err(err)?;
        out.push(listener.into_std().map_err(err)?);
    }
    Ok(out)
}

/// How long open connections may finish their requests after shutdown.
const GRACE: Duration = Duration::from_secs(10);

/// Bind the HTTP and HTTPS listeners and serve with the snapshot in
/// `routes` (swap it at will) until `shutdown`. Connections open at shutdown
/// finish their requests (graceful shutdown, up to 10 s).
///
/// The data path runs on `config.workers` threads, each with a
/// single-threaded runtime, its own listeners (SO_REUSEPORT) and its own
/// upstream connection pool, so a request never crosses threads (as nginx
/// workers do). Routes, passive health and metrics are shared.
pub async fn serve(
    routes: RoutesHandle,
    config: &IngressConfig,
    shutdown: CancellationToken,
) -> Result<Serving, IngressError> {
    let workers = config.workers.max(1);
    let http = bind_all(config.http, workers)?;
    let https = bind_all(config.https, workers)?;
    let http_addr = http[0].local_addr().map_err(|e| IngressError::Bind(config.http, e))?;
    let https_addr = https[0].local_addr().map_err(|e| IngressError::Bind(config.https, e))?;
    let tls = tokio_rustls::TlsAcceptor::from(crate::tls::server_config(routes.clone())?);
    let health =
        Arc::new(Health { ejected: Mutex::default(), count: AtomicUsize::new(0), eject_for: config.eject_for });
    let mut done = Vec::with_capacity(workers);
    for (i, (http, https)) in http.into_iter().zip(https).enumerate() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        done.push(rx);
        let shared = Shared {
            routes: routes.clone(),
            client: None,
            health: health.clone(),
            metrics: config.metrics.clone(),
            max_body: usize::try_from(config.max_body_bytes).unwrap_or(usize::MAX),
            response_timeout: config.response_timeout,
            connect_timeout: config.connect_timeout,
            https_port: https_addr.port(),
        };
        let (tls, shutdown) = (tls.clone(), shutdown.clone());
        std::thread::Builder::new()
            .name(format!("skiff-ingress-{i}"))
            .spawn(move || {
                worker(shared, http, https, tls, shutdown);
                let _ = tx.send(());
            })
            .map_err(|e| IngressError::Bind(config.http, e))?;
    }
    tracing::info!(http = %http_addr, https = %https_addr, workers, "ingress proxy listening");
    Ok(Serving { http: http_addr, https: https_addr, done })
}

/// One data-path thread: both listeners on a runtime of its own.
fn worker(
    mut shared: Shared,
    http: std::net::TcpListener,
    https: std::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    shutdown: CancellationToken,
) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "ingress worker: building its runtime");
            return;
        }
    };
    rt.block_on(async move {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(shared.connect_timeout));
        shared.client = Some(
            Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(1024)
                .build(connector),
        );
        let shared = Arc::new(shared);
        let listener = |l: std::net::TcpListener| match TcpListener::from_std(l) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!(error = %e, "ingress worker: registering a listener");
                None
            }
        };
        let (Some(http), Some(https)) = (listener(http), listener(https)) else { return };
        tokio::join!(
            accept_loop(http, shared.clone(), None, shutdown.clone()),
            accept_loop(https, shared, Some(tls), shutdown),
        );
    });
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let local_port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let local_port = HeaderValue::from(local_port);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            // reap finished connections
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // out of file descriptors and the like: back off, keep serving
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let peer_ip = HeaderValue::from_str(&peer.ip().to_string()).unwrap_or(HeaderValue::from_static("unknown"));
        let conn = Arc::new(Conn { peer, peer_ip, local_port: local_port.clone(), tls: tls.is_some() });
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        conns.spawn(async move {
            match tls {
                None => serve_connection(stream, false, shared, conn, shutdown).await,
                Some(acceptor) => {
                    let Some(stream) = handshake(acceptor, stream, peer).await else { return };
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    serve_connection(stream, h2, shared, conn, shutdown).await;
                }
            }
        });
    }
    drop(listener);
    // open connections finish what they are doing (they saw the token too)
    let _ = tokio::time::timeout(GRACE, async { while conns.join_next().await.is_some() {} }).await;
}

async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

async fn serve_connection<I>(io: I, h2: bool, shared: Arc<Shared>, conn: Arc<Conn>, shutdown: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| handle(shared.clone(), conn.clone(), req));
    let io = TokioIo::new(io);
    let result = if h2 {
        let c = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .serve_connection(io, svc);
        tokio::pin!(c);
        tokio::select! {
            r = c.as_mut() => r,
            _ = shutdown.cancelled() => {
                c.as_mut().graceful_shutdown();
                c.await
            }
        }
    } else {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
        let c = b.serve_connection(io, svc).with_upgrades();
        tokio::pin!(c);
        tokio::select! {
            r = c.as_mut() => r,
            _ = shutdown.cancelled() => {
                c.as_mut().graceful_shutdown();
                c.await
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}

fn local(status: StatusCode, text: &'static str) -> Response<RespBody> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(text.as_bytes()))));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// The host a request is for: the URI's authority (HTTP/2, absolute form),
/// else the Host header.
fn request_host<B>(req: &Request<B>) -> &str {
    if let Some(a) = req.uri().authority() {
        return a.as_str();
    }
    req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("")
}

async fn handle(
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let started = Instant::now();
    let route = {
        let routes = shared.routes.load();
        routes.route(request_host(&req), req.uri().path()).cloned()
    };
    let log = tracing::enabled!(target: ACCESS_LOG, tracing::Level::INFO)
        .then(|| (req.method().clone(), request_host(&req).to_string(), req.uri().clone(), req.version()));
    let (resp, upstream) = match &route {
        None => (local(StatusCode::NOT_FOUND, "404 not found: no ingress rule matches this host and path\n"), None),
        Some(route) => forward(&shared, &conn, route, req).await,
    };
    let status = resp.status().as_u16();
    static NONE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(""));
    match &route {
        Some(r) => shared.metrics.request(&r.ingress, &r.upstream.name, status),
        None => shared.metrics.request(&NONE, &NONE, status),
    }
    if let Some((method, host, uri, version)) = log {
        tracing::info!(
            target: ACCESS_LOG,
            client = %conn.peer,
            tls = conn.tls,
            %method,
            %host,
            %uri,
            ?version,
            status,
            ingress = route.as_ref().map_or("", |r| &r.ingress),
            service = route.as_ref().map_or("", |r| &r.upstream.name),
            upstream = %upstream.map_or_else(|| "-".to_string(), |a| a.to_string()),
            micros = started.elapsed().as_micros() as u64,
        );
    }
    Ok(resp)
}

fn is_idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"))))
}

/// Drop hop-by-hop headers (keeping `Connection: upgrade` and `Upgrade` for
/// an upgrade).
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    if let Some(c) = headers.get(header::CONNECTION) {
        // headers the client named as hop-by-hop
        let named: Vec<HeaderName> = c
            .to_str()
            .unwrap_or("")
            .split(',')
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .filter(|n| !(upgrade && n == header::UPGRADE))
            .collect();
        for n in named {
            headers.remove(n);
        }
        if !upgrade {
            headers.remove(header::CONNECTION);
        }
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::TE);
    headers.remove(header::TRAILER);
    headers.remove(header::TRANSFER_ENCODING);
    if !upgrade {
        headers.remove(header::UPGRADE);
    }
}

fn forwarded_headers(headers: &mut HeaderMap, uri: &Uri, conn: &Conn) {
    if !headers.contains_key(header::HOST) {
        // HTTP/2: the authority is the host
        if let Some(a) = uri.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                headers.insert(header::HOST, v);
            }
        }
    }
    let xff = match headers.get(&X_FORWARDED_FOR) {
        Some(prev) => {
            let mut v = prev.as_bytes().to_vec();
            v.extend_from_slice(b", ");
            v.extend_from_slice(conn.peer_ip.as_bytes());
            HeaderValue::from_bytes(&v).unwrap_or_else(|_| conn.peer_ip.clone())
        }
        None => conn.peer_ip.clone(),
    };
    headers.insert(X_FORWARDED_FOR.clone(), xff);
    headers.insert(X_REAL_IP.clone(), conn.peer_ip.clone());
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(if conn.tls { "https" } else { "http" }));
    if let Some(h) = headers.get(header::HOST).cloned() {
        headers.insert(X_FORWARDED_HOST.clone(), h);
    }
    headers.insert(X_FORWARDED_PORT.clone(), conn.local_port.clone());
}

fn redirect_to_https(shared: &Shared, host: &str, uri: &Uri) -> Response<RespBody> {
    let host = match host.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || p.parse::<u16>().is_ok() => h,
        _ => host,
    };
    let port = if shared.https_port == 443 { String::new() } else { format!(":{}", shared.https_port) };
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{host}{port}{pq}");
    let mut r = local(StatusCode::PERMANENT_REDIRECT, "redirecting to HTTPS\n");
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The next endpoint in round-robin order that is not ejected and not
/// already tried; an ejected one if nothing else is left.
fn pick<'a>(health: &Health, up: &'a Upstream, tried: &[SocketAddr]) -> Option<&'a Endpoint> {
    let n = up.endpoints.len();
    let start = up.cursor();
    let mut fallback = None;
    for i in 0..n {
        let ep = &up.endpoints[(start + i) % n];
        if tried.contains(&ep.addr) {
            continue;
        }
        if health.is_ejected(ep.addr) {
            fallback.get_or_insert(ep);
            continue;
        }
        return Some(ep);
    }
    fallback
}

fn upstream_uri(ep: &Endpoint, uri: &Uri) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = Some(ep.authority.clone());
    parts.path_and_query =
        Some(uri.path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")));
    // scheme, authority and path are all set: this cannot fail
    Uri::from_parts(parts).unwrap_or_default()
}

/// Send `req` to one of `route`'s endpoints; the response and the endpoint
/// that answered.
async fn forward(
    shared: &Shared,
    conn: &Conn,
    route: &Route,
    mut req: Request<Incoming>,
) -> (Response<RespBody>, Option<SocketAddr>) {
    if !conn.tls && route.ssl_redirect {
        return (redirect_to_https(shared, request_host(&req), req.uri()), None);
    }
    let up = &route.upstream;
    if up.endpoints.is_empty() {
        tracing::debug!(service = %up.name, problem = ?up.problem, "no endpoint to send to");
        return (local(StatusCode::SERVICE_UNAVAILABLE, "503 service unavailable: no ready endpoints\n"), None);
    }
    if req.body().size_hint().lower() > shared.max_body as u64 {
        return (local(StatusCode::PAYLOAD_TOO_LARGE, "413 request body too large\n"), None);
    }
    let upgrade = is_upgrade(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let retryable = !upgrade && is_idempotent(&parts.method) && body.is_end_stream();
    strip_hop_by_hop(&mut parts.headers, upgrade);
    forwarded_headers(&mut parts.headers, &parts.uri, conn);
    let mut body = Some(body);
    let attempts = if retryable { up.endpoints.len().min(MAX_ATTEMPTS) } else { 1 };
    let mut tried = [SocketAddr::from(([0, 0, 0, 0], 0)); MAX_ATTEMPTS];
    let mut failure = (StatusCode::BAD_GATEWAY, "502 bad gateway: the upstream failed\n");
    for attempt in 0..attempts {
        let Some(ep) = pick(&shared.health, up, &tried[..attempt]) else { break };
        tried[attempt] = ep.addr;
        let last = attempt + 1 == attempts;
        let b = match (retryable, body.take()) {
            (false, Some(b)) => Either::Left(Limited::new(b, shared.max_body)),
            _ => Either::Right(Empty::new()),
        };
        let mut out = Request::new(b);
        *out.method_mut() = parts.method.clone();
        *out.uri_mut() = upstream_uri(ep, &parts.uri);
        *out.version_mut() = Version::HTTP_11;
        *out.headers_mut() = if last { std::mem::take(&mut parts.headers) } else { parts.headers.clone() };
        let sent = Instant::now();
        let Some(client) = &shared.client else { break };
        match tokio::time::timeout(shared.response_timeout, client.request(out)).await {
            Ok(Ok(mut resp)) => {
                shared.metrics.upstream_latency(&route.ingress, &up.name, sent.elapsed().as_secs_f64());
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    if let Some(client_side) = client_upgrade {
                        let upstream_side = hyper::upgrade::on(&mut resp);
                        tokio::spawn(tunnel(client_side, upstream_side));
                    }
                } else {
                    strip_hop_by_hop(resp.headers_mut(), false);
                }
                return (resp.map(Either::Left), Some(ep.addr));
            }
            Ok(Err(e)) => {
                if e.is_connect() {
                    shared.health.eject(ep.addr);
                }
                tracing::debug!(endpoint = %ep.addr, error = %e, retryable, "upstream request failed");
            }
            Err(_) => {
                tracing::debug!(endpoint = %ep.addr, "upstream response timed out");
                failure = (StatusCode::GATEWAY_TIMEOUT, "504 gateway timeout\n");
                break;
            }
        }
    }
    (local(failure.0, failure.1), None)
}

/// Copy bytes both ways between an upgraded client connection and the
/// upgraded upstream connection until either side closes.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    match tokio::try_join!(client, upstream) {
        Ok((c, u)) => {
            let mut c = TokioIo::new(c);
            let mut u = TokioIo::new(u);
            if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                tracing::debug!(error = %e, "upgraded connection ended");
            }
        }
        Err(e) => tracing::debug!(error = %e, "upgrade failed"),
    }
}
