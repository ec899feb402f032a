//! The proxy on loopback, with routing snapshots made by the tests and real
//! backend servers on 127.0.0.x ports: routing, forwarding headers,
//! redirects, TLS by SNI with HTTP/2, websockets, a backend killed under
//! load, and snapshot swaps under load.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{client, get, Backend};
use futures::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use skiff_ingress::model::{certified_key_from_pem, PathMatch};
use skiff_ingress::{serve, IngressConfig, Route, Routes, RoutesHandle, Serving, Upstream};
use tokio_util::sync::{CancellationToken, DropGuard};

struct Proxy {
    serving: Serving,
    routes: RoutesHandle,
    config: IngressConfig,
    _stop: DropGuard,
}

async fn proxy(routes: Routes) -> Proxy {
    let handle = RoutesHandle::new(routes);
    let config = IngressConfig::new("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap());
    let stop = CancellationToken::new();
    let serving = serve(handle.clone(), &config, stop.clone()).await.unwrap();
    Proxy { serving, routes: handle, config, _stop: stop.drop_guard() }
}

fn route(ingress: &str, upstream: &Arc<Upstream>) -> Arc<Route> {
    Arc::new(Route { ingress: ingress.into(), upstream: upstream.clone(), ssl_redirect: false })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_path_with_forwarding_headers() {
    let a = Backend::start("127.0.0.2", "a").await;
    let b = Backend::start("127.0.0.3", "b").await;
    let ua = Upstream::fixed("default/a:80", vec![a.addr]);
    let ub = Upstream::fixed("default/b:80", vec![b.addr]);
    let none = Upstream::fixed("default/empty:80", vec![]);
    let mut routes = Routes::default();
    routes.host_mut("site.test").insert("/", PathMatch::Prefix, route("default/site", &ua));
    routes.host_mut("site.test").insert("/b", PathMatch::Prefix, route("default/site", &ub));
    routes.host_mut("site.test").insert("/exact", PathMatch::Exact, route("default/site", &ub));
    routes.host_mut("*.wild.test").insert("/", PathMatch::Prefix, route("default/wild", &ub));
    routes.host_mut("empty.test").insert("/", PathMatch::Prefix, route("default/empty", &none));
    routes.host_mut("secure.test").insert(
        "/",
        PathMatch::Prefix,
        Arc::new(Route { ingress: "default/secure".into(), upstream: ua.clone(), ssl_redirect: true }),
    );
    let p = proxy(routes).await;
    let c = client();
    let http = p.serving.http;

    let (status, _, body) = get(&c, http, "site.test", "/x/y?q=1").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.starts_with("a /x/y\n"), "{body}");
    assert!(body.contains("x-forwarded-for=127.0.0.1\n"), "{body}");
    assert!(body.contains("x-real-ip=127.0.0.1\n"), "{body}");
    assert!(body.contains("x-forwarded-host=site.test\n"), "{body}");
    assert!(body.contains("x-forwarded-proto=http\n"), "{body}");
    assert!(body.contains("host=site.test\n"), "{body}");
    assert!(get(&c, http, "site.test", "/b/c").await.unwrap().2.starts_with("b /b/c"));
    assert!(get(&c, http, "site.test", "/bc").await.unwrap().2.starts_with("a /bc"));
    assert!(get(&c, http, "SITE.test:80", "/exact").await.unwrap().2.starts_with("b /exact"));
    assert!(get(&c, http, "site.test", "/exact/more").await.unwrap().2.starts_with("a /exact/more"));
    assert!(get(&c, http, "x.wild.test", "/").await.unwrap().2.starts_with("b /"));
    assert_eq!(get(&c, http, "x.y.wild.test", "/").await.unwrap().0, StatusCode::NOT_FOUND);
    assert_eq!(get(&c, http, "other.test", "/").await.unwrap().0, StatusCode::NOT_FOUND);
    assert_eq!(get(&c, http, "empty.test", "/").await.unwrap().0, StatusCode::SERVICE_UNAVAILABLE);
    let (status, headers, _) = get(&c, http, "secure.test", "/p?q=1").await.unwrap();
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(headers["location"], format!("https://secure.test:{}/p?q=1", p.serving.https.port()));

    let metrics = p.config.metrics.encode();
    assert!(
        metrics.contains(r#"skiff_ingress_requests_total{ingress="default/site",service="default/a:80",code="200"} 3"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"skiff_ingress_requests_total{ingress="",service="",code="404"} 2"#), "{metrics}");
    assert!(
        metrics.contains(
            "skiff_ingress_upstream_latency_seconds_count{ingress=\"default/site\",service=\"default/b:80\"} 2"
        ),
        "{metrics}"
    );
}

fn test_cert(name: &str) -> (Vec<u8>, Arc<rustls::sign::CertifiedKey>) {
    let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let key = certified_key_from_pem(c.cert.pem().as_bytes(), c.signing_key.serialize_pem().as_bytes()).unwrap();
    (c.cert.der().to_vec(), Arc::new(key))
}

/// TLS to the proxy with `sni`, trusting `trusted`; the connection and the
/// certificate served.
async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    trusted: &[u8],
    alpn: &[&[u8]],
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, std::io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(trusted.to_vec())).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    connector.connect(name, tcp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_certificate_by_sni_and_http2_by_alpn() {
    let a = Backend::start("127.0.0.4", "a").await;
    let ua = Upstream::fixed("default/a:80", vec![a.addr]);
    let (a_der, a_key) = test_cert("a.test");
    let (b_der, b_key) = test_cert("b.test");
    let (w_der, w_key) = test_cert("x.wild.test");
    let mut routes = Routes::default();
    routes.host_mut("a.test").insert("/", PathMatch::Prefix, route("default/a", &ua));
    routes.certs.insert("a.test", a_key);
    routes.certs.insert("b.test", b_key);
    routes.certs.insert("*.wild.test", w_key);
    let p = proxy(routes).await;
    let https = p.serving.https;

    // a.test: its own certificate, HTTP/2 negotiated, and routed
    let tls = tls_connect(https, "a.test", &a_der, &[b"h2", b"http/1.1"]).await.unwrap();
    let (_, conn) = tls.get_ref();
    assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(conn.peer_certificates().unwrap()[0].as_ref(), &a_der[..]);
    let (mut send, h2) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(h2);
    let resp = send.send_request(Request::get("https://a.test/h2").body(Empty::<Bytes>::new()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.starts_with("a /h2\n"), "{body}");
    assert!(body.contains("x-forwarded-proto=https\n"), "{body}");
    assert!(body.contains("host=a.test\n"), "{body}");

    // b.test gets b's certificate (so a client trusting only a's fails)
    assert!(tls_connect(https, "b.test", &a_der, &[]).await.is_err());
    let tls = tls_connect(https, "b.test", &b_der, &[b"http/1.1"]).await.unwrap();
    assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0].as_ref(), &b_der[..]);
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    // a wildcard certificate covers one label
    let tls = tls_connect(https, "x.wild.test", &w_der, &[]).await.unwrap();
    assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0].as_ref(), &w_der[..]);
    // anything else: the self-signed default
    assert!(tls_connect(https, "c.test", &a_der, &[]).await.is_err());

    // a new snapshot (a renewed Secret) serves the new certificate
    let (a2_der, a2_key) = test_cert("a.test");
    let mut routes = Routes::default();
    routes.certs.insert("a.test", a2_key);
    p.routes.store(routes);
    let tls = tls_connect(https, "a.test", &a2_der, &[]).await.unwrap();
    assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0].as_ref(), &a2_der[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_proxy() {
    let a = Backend::start("127.0.0.5", "ws").await;
    let ua = Upstream::fixed("default/ws:80", vec![a.addr]);
    let mut routes = Routes::default();
    routes.host_mut("ws.test").insert("/echo", PathMatch::Exact, route("default/ws", &ua));
    let p = proxy(routes).await;
    let tcp = tokio::net::TcpStream::connect(p.serving.http).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async("ws://ws.test/echo", tcp).await.unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..20 {
        let text = format!("hello {i}");
        ws.send(tokio_tungstenite::tungstenite::Message::text(text.clone())).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(got.into_text().unwrap().as_str(), text);
    }
    ws.close(None).await.unwrap();
}

/// `tasks` clients GET through the proxy (keep-alive) until `count` requests
/// are done or `limit` passes; the statuses that were not 200 (or errors).
async fn load(
    proxy: SocketAddr,
    host: &'static str,
    path: &'static str,
    tasks: usize,
    count: usize,
    limit: Duration,
) -> (usize, Vec<String>) {
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let deadline = Instant::now() + limit;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let done = done.clone();
        set.spawn(async move {
            let c = client();
            let mut bad = Vec::new();
            while Instant::now() < deadline && done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count {
                match get(&c, proxy, host, path).await {
                    Ok((StatusCode::OK, _, _)) => {}
                    Ok((s, _, body)) => bad.push(format!("{s}: {body}")),
                    Err(e) => bad.push(format!("error: {e}")),
                }
            }
            bad
        });
    }
    let mut bad = Vec::new();
    while let Some(r) = set.join_next().await {
        bad.extend(r.unwrap());
    }
    (done.load(std::sync::atomic::Ordering::Relaxed).min(count), bad)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_under_load_loses_no_idempotent_request() {
    let b1 = Backend::start("127.0.0.6", "b1").await;
    let b2 = Backend::start("127.0.0.7", "b2").await;
    let b3 = Backend::start("127.0.0.8", "b3").await;
    let up = Upstream::fixed("default/web:80", vec![b1.addr, b2.addr, b3.addr]);
    let mut routes = Routes::default();
    routes.host_mut("web.test").insert("/", PathMatch::Prefix, route("default/web", &up));
    let p = proxy(routes).await;
    let http = p.serving.http;
    let loader = tokio::spawn(load(http, "web.test", "/", 8, 6000, Duration::from_secs(20)));
    // let traffic reach all three, then kill one mid-load
    let t = Instant::now();
    while b2.hits() < 200 && t.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed_at = b2.hits();
    b2.kill().await;
    let (done, bad) = loader.await.unwrap();
    assert!(bad.is_empty(), "{} of {done} requests failed, e.g. {:?}", bad.len(), &bad[..bad.len().min(5)]);
    assert!(killed_at >= 200, "backend 2 got only {killed_at} requests before the kill");
    assert!(b1.hits() > 500 && b3.hits() > 500, "b1 {} b3 {}", b1.hits(), b3.hits());
    assert!(done >= 3000, "only {done} requests in the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_the_snapshot_under_load_drops_nothing() {
    let b1 = Backend::start("127.0.0.9", "b1").await;
    let b2 = Backend::start("127.0.0.10", "b2").await;
    let u1 = Upstream::fixed("default/one:80", vec![b1.addr]);
    let u2 = Upstream::fixed("default/two:80", vec![b2.addr]);
    let snapshot = |u: &Arc<Upstream>| {
        let mut routes = Routes::default();
        routes.host_mut("swap.test").insert("/", PathMatch::Prefix, route("default/swap", u));
        routes
    };
    let p = proxy(snapshot(&u1)).await;
    let http = p.serving.http;
    // a slow request in flight while its route disappears
    let slow = tokio::spawn(async move { get(&client(), http, "swap.test", "/slow").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    p.routes.store(Routes::default());
    let (status, _, body) = slow.await.unwrap().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("b1 /slow"), "{body}");
    p.routes.store(snapshot(&u1));

    let loader = tokio::spawn(load(http, "swap.test", "/", 8, 6000, Duration::from_secs(20)));
    let mut swaps = 0;
    while !loader.is_finished() && swaps < 2000 {
        p.routes.store(snapshot(if swaps % 2 == 0 { &u2 } else { &u1 }));
        swaps += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (done, bad) = loader.await.unwrap();
    assert!(bad.is_empty(), "{} of {done} requests failed, e.g. {:?}", bad.len(), &bad[..bad.len().min(5)]);
    assert!(swaps >= 100, "only {swaps} swaps during the load");
    assert!(b1.hits() > 100 && b2.hits() > 100, "b1 {} b2 {}", b1.hits(), b2.hits());
}
