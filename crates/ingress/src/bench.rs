//! Benchmark: wrk through skiff-ingress and through nginx (an equivalent
//! reverse proxy: keep-alive upstream, the same forwarding headers, 2
//! workers) to the same backend, plain HTTP and TLS, client keep-alive on
//! and off; direct-to-backend is the limit. Everything on loopback.
//!
//! `cargo run --release -p skiff-ingress --features bench --bin
//! skiff-ingress-bench [-- SECONDS]`, or [`run`] from another harness;
//! needs `wrk` and `nginx` (Debian packages) on PATH or in /usr/sbin.
//! nginx runs from a temporary prefix with its own pid file and is stopped
//! by PID.
// A benchmark harness (feature `bench`, never in the product): a failed
// setup step panics with its cause, which is the report wanted.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::{certified_key_from_pem, PathMatch};
use crate::{IngressConfig, Route, Routes, RoutesHandle, Upstream};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};

const BODY: &[u8] = b"Hello from the benchmark backend: a small fixed body of about one hundred bytes........\n";
const CONNECTIONS: u32 = 64;
const WRK_THREADS: u32 = 2;
const WORKERS: usize = 2;

/// The backend: HTTP/1.1 keep-alive, a fixed body, on its own runtime.
fn start_backend() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(WORKERS).enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(BODY))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    });
    rx.recv().unwrap()
}

/// skiff-ingress on its own runtime; its HTTP and HTTPS addresses.
fn start_skiff(backend: SocketAddr, crt: &str, key: &str) -> (SocketAddr, SocketAddr) {
    let mut routes = Routes::default();
    let upstream = Upstream::fixed("bench/backend:80", vec![backend]);
    let route = Arc::new(Route { ingress: "bench/bench".into(), upstream, ssl_redirect: false });
    routes.host_mut("").insert("/", PathMatch::Prefix, route);
    let cert = Arc::new(certified_key_from_pem(crt.as_bytes(), key.as_bytes()).unwrap());
    routes.certs.insert("127.0.0.1", cert.clone());
    routes.certs.insert("bench.test", cert);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let mut config = IngressConfig::new("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap());
            config.workers = WORKERS;
            let stop = tokio_util::sync::CancellationToken::new();
            let serving = crate::serve(RoutesHandle::new(routes), &config, stop).await.unwrap();
            tx.send((serving.http, serving.https)).unwrap();
            serving.wait().await;
        });
    });
    rx.recv().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// nginx, started from `dir` with a generated config, stopped by PID on drop.
struct Nginx {
    child: Child,
    http: SocketAddr,
    https: SocketAddr,
}

impl Nginx {
    fn start(dir: &Path, backend: SocketAddr) -> Nginx {
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let https: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let d = dir.display();
        let conf = format!(
            r#"
worker_processes {WORKERS};
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
user root;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    ssl_session_cache shared:SSL:10m;
    upstream backend {{
        server {backend};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen {http};
        listen {https} ssl http2;
        ssl_certificate {d}/tls.crt;
        ssl_certificate_key {d}/tls.key;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Forwarded-Port $server_port;
        }}
    }}
}}
"#
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let nginx = ["/usr/sbin/nginx", "nginx"].into_iter().find(|p| Path::new(p).exists()).unwrap_or("nginx");
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting nginx (apt-get install nginx-light): {e}"));
        let n = Nginx { child, http, https };
        wait_listening(http);
        wait_listening(https);
        n
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM to the master (by PID): it stops its workers
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listening on {addr} after 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[derive(Debug, Default, Clone)]
struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: String,
}

fn parse_duration_ms(s: &str) -> f64 {
    let s = s.trim();
    let (num, mult) = if let Some(v) = s.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1000.0)
    } else {
        (s, 1.0)
    };
    num.parse::<f64>().unwrap_or(f64::NAN) * mult
}

fn wrk(url: &str, close: bool, seconds: u64) -> Figures {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t", &WRK_THREADS.to_string(), "-c", &CONNECTIONS.to_string(), "-d", &format!("{seconds}s")])
        .arg("--latency");
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(url);
    let out = cmd.output().unwrap_or_else(|e| panic!("running wrk (apt-get install wrk): {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut f = Figures::default();
    let mut errors = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            f.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("50%") {
            f.p50_ms = parse_duration_ms(v);
        } else if let Some(v) = t.strip_prefix("99%") {
            f.p99_ms = parse_duration_ms(v);
        } else if t.starts_with("Socket errors") || t.starts_with("Non-2xx") {
            errors.push(t.to_string());
        }
    }
    f.errors = errors.join("; ");
    if f.rps == 0.0 {
        f.errors = format!("wrk failed: {} {}", text, String::from_utf8_lossy(&out.stderr));
    }
    f
}

/// Run every scenario for `seconds` each; the table of figures (markdown).
pub fn run(seconds: u64) -> String {
    let dir = tempfile_dir();
    let c = rcgen::generate_simple_self_signed(vec!["bench.test".to_string(), "127.0.0.1".to_string()]).unwrap();
    let (crt, key) = (c.cert.pem(), c.signing_key.serialize_pem());
    std::fs::write(dir.join("tls.crt"), &crt).unwrap();
    std::fs::write(dir.join("tls.key"), &key).unwrap();

    let backend = start_backend();
    let (skiff_http, skiff_https) = start_skiff(backend, &crt, &key);
    let nginx = Nginx::start(&dir, backend);
    wait_listening(skiff_http);

    // warm up every path once
    for url in [format!("http://{backend}/"), format!("http://{skiff_http}/"), format!("http://{}/", nginx.http)] {
        wrk(&url, false, 1);
    }

    let mut table = String::new();
    writeln!(
        table,
        "| scenario | target | requests/s | p50 ms | p99 ms | × nginx req/s | p99 ≤ nginx | errors |\n|---|---|---:|---:|---:|---:|---|---|"
    )
    .unwrap();
    let scenarios: [(&str, bool, bool); 4] = [
        ("HTTP keep-alive", false, false),
        ("HTTP close", false, true),
        ("TLS keep-alive", true, false),
        ("TLS close", true, true),
    ];
    for (name, tls, close) in scenarios {
        let scheme = if tls { "https" } else { "http" };
        let (s_addr, n_addr) = if tls { (skiff_https, nginx.https) } else { (skiff_http, nginx.http) };
        if !tls {
            let d = wrk(&format!("http://{backend}/"), close, seconds);
            writeln!(
                table,
                "| {name} | direct (limit) | {:.0} | {:.2} | {:.2} | | | {} |",
                d.rps, d.p50_ms, d.p99_ms, d.errors
            )
            .unwrap();
        }
        let n = wrk(&format!("{scheme}://{n_addr}/"), close, seconds);
        let s = wrk(&format!("{scheme}://{s_addr}/"), close, seconds);
        writeln!(
            table,
            "| {name} | nginx | {:.0} | {:.2} | {:.2} | 1.00 | | {} |",
            n.rps, n.p50_ms, n.p99_ms, n.errors
        )
        .unwrap();
        writeln!(
            table,
            "| {name} | skiff-ingress | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} |",
            s.rps,
            s.p50_ms,
            s.p99_ms,
            s.rps / n.rps,
            if s.p99_ms <= n.p99_ms { "yes" } else { "no" },
            s.errors
        )
        .unwrap();
        eprintln!("{name}: done");
    }
    drop(nginx);
    let _ = std::fs::remove_dir_all(&dir);
    format!(
        "wrk -t{WRK_THREADS} -c{CONNECTIONS} -d{seconds}s; nginx {WORKERS} workers; skiff-ingress {WORKERS} runtime workers; \
         backend {WORKERS} workers; {} CPUs\n\n{table}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("skiff-bench-nginx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
