//! A lean HTTPS client for the benchmark: hyper's HTTP/2 connections over
//! rustls, authenticated with the admin client certificate the server wrote
//! into its data dir. No pooling, retries or redirects: each request is one
//! HTTP/2 stream on a connection the caller picked.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Longest any one request may take before the benchmark gives up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the server is and how to talk to it.
pub struct Endpoint {
    addr: SocketAddr,
    tls: TlsConnector,
}

impl Endpoint {
    /// Read the server address from `<data-dir>/kubeconfig.yaml` and the
    /// CA and admin credentials from `<data-dir>/tls/`.
    pub fn from_data_dir(data_dir: &Path) -> Result<Endpoint> {
        let kubeconfig = data_dir.join("kubeconfig.yaml");
        let text = fs::read_to_string(&kubeconfig).with_context(|| format!("reading {}", kubeconfig.display()))?;
        let url = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("server:"))
            .map(str::trim)
            .with_context(|| format!("{}: no server URL", kubeconfig.display()))?;
        let addr: SocketAddr = url
            .strip_prefix("https://")
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("{}: server {url:?} is not https://<ip>:<port>", kubeconfig.display()))?;
        if !addr.ip().is_loopback() {
            bail!("{}: server {addr} is not on loopback; the benchmark only talks to 127.0.0.1", kubeconfig.display());
        }

        let tls_dir = data_dir.join("tls");
        let pem = |name: &str| -> Result<Vec<u8>> {
            let path = tls_dir.join(name);
            fs::read(&path).with_context(|| format!("reading {}", path.display()))
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut pem("ca.crt")?.as_slice()) {
            roots.add(cert.context("parsing ca.crt")?)?;
        }
        let certs = rustls_pemfile::certs(&mut pem("admin.crt")?.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .context("parsing admin.crt")?;
        let key = rustls_pemfile::private_key(&mut pem("admin.key")?.as_slice())
            .context("parsing admin.key")?
            .ok_or_else(|| anyhow!("admin.key: no private key"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Endpoint { addr, tls: TlsConnector::from(Arc::new(config)) })
    }

    /// Open one HTTP/2 connection. Its driver runs as a task until every
    /// handle to it is dropped.
    pub async fn connect(&self) -> Result<Conn> {
        let tcp = TcpStream::connect(self.addr).await.with_context(|| format!("connecting to {}", self.addr))?;
        tcp.set_nodelay(true)?;
        let name = ServerName::IpAddress(self.addr.ip().into());
        let tls = self.tls.connect(name, tcp).await.context("tls handshake")?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            bail!("server at {} did not negotiate HTTP/2", self.addr);
        }
        // Go's client (kubectl, client-go) uses a 4 MiB stream window; a
        // small one would make large lists wait on WINDOW_UPDATE round trips.
        let (send, conn) = http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(64 << 20)
            .max_concurrent_reset_streams(2048)
            .handshake(TokioIo::new(tls))
            .await
            .context("http/2 handshake")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { send, base: format!("https://{}", self.addr) })
    }

    /// Open `n` connections.
    pub async fn connect_many(&self, n: usize) -> Result<Vec<Conn>> {
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            conns.push(self.connect().await?);
        }
        Ok(conns)
    }
}

/// One HTTP/2 connection; clones share it.
#[derive(Clone)]
pub struct Conn {
    send: http2::SendRequest<Full<Bytes>>,
    base: String,
}

impl Conn {
    /// Send a request and return the response head with its body unread.
    pub async fn start(
        &self,
        method: Method,
        path: &str,
        accept: &str,
        body: Option<Bytes>,
    ) -> Result<http::Response<Incoming>> {
        self.start_typed(method, path, accept, "application/json", body).await
    }

    /// [`Conn::start`] with a body of `content_type` (the patch types).
    pub async fn start_typed(
        &self,
        method: Method,
        path: &str,
        accept: &str,
        content_type: &str,
        body: Option<Bytes>,
    ) -> Result<http::Response<Incoming>> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::ACCEPT, accept)
            .header(header::USER_AGENT, "skiff-bench");
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, content_type);
        }
        let req = req.body(Full::new(body.unwrap_or_default()))?;
        let mut send = self.send.clone();
        Ok(send.send_request(req).await?)
    }

    /// Send a request and read the whole response; fail unless the status is `want`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        accept: &str,
        body: Option<Bytes>,
        want: StatusCode,
    ) -> Result<Bytes> {
        let (status, bytes) = self.exchange(method.clone(), path, accept, "application/json", body).await?;
        if status != want {
            bail!("{method} {path}: {status}: {}", String::from_utf8_lossy(&bytes[..bytes.len().min(500)]));
        }
        Ok(bytes)
    }

    /// Send a body of `content_type` and read the whole answer, whatever its
    /// status.
    pub async fn exchange(
        &self,
        method: Method,
        path: &str,
        accept: &str,
        content_type: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes)> {
        let what = format!("{method} {path}");
        let exchange = async {
            let resp = self.start_typed(method, path, accept, content_type, body).await?;
            let status = resp.status();
            let bytes = resp.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((status, bytes))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("{what}: no answer within {REQUEST_TIMEOUT:?}"))?
            .with_context(|| what.clone())
    }

    pub async fn get_json(&self, path: &str) -> Result<Bytes> {
        self.call(Method::GET, path, "application/json", None, StatusCode::OK).await
    }

    pub async fn create(&self, path: &str, body: Bytes) -> Result<Bytes> {
        self.call(Method::POST, path, "application/json", Some(body), StatusCode::CREATED).await
    }
}
