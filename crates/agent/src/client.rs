//! Connecting a node agent to its API server: fetch the cluster CA from
//! `GET /cacerts` (unauthenticated, over TLS not yet verified), check it
//! against the hash a k3s-style token carries (`K10<sha256 of the CA
//! PEM>::<user>:<secret>`), then talk to the server with that CA and the
//! whole token as a bearer token.
//!
//! An agent given several servers (`--server https://a:6443,https://b:6443`)
//! talks to them through [`FailoverProxy`], a TCP forwarder on loopback (as
//! k3s' agent load balancer): each new connection goes to the server that
//! answered last, or to the next one that accepts. Every server's
//! certificate names 127.0.0.1, and TLS runs end to end through it.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("--server {0:?}: expected an https:// URL such as https://10.0.0.1:6443")]
    BadUrl(String),
    #[error("fetching the cluster CA from {url}: {message}")]
    FetchCa { url: String, message: String },
    #[error("the cluster CA from {url} does not match the hash in the token: the token belongs to another cluster, or something is in between")]
    CaMismatch { url: String },
    #[error("the cluster CA is not a PEM certificate: {0}")]
    BadCa(String),
    #[error("building the API client: {0}")]
    Client(String),
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS client configuration that accepts any server certificate: for
/// fetching the CA before it is known (it is checked afterwards) and for
/// HTTPS probes (the kubelet does not verify those either).
pub fn insecure_tls() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions();
    match builder {
        Ok(b) => Arc::new(
            b.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAny(provider))).with_no_client_auth(),
        ),
        // ring supports the default versions; this arm is never taken
        Err(_) => Arc::new(
            rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap_or_else(|_| unreachable!("ring supports TLS 1.3"))
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
                .with_no_client_auth(),
        ),
    }
}

/// The hash a k3s-style token pins: `K10<hex>::...` gives `<hex>`.
pub fn token_ca_hash(token: &str) -> Option<&str> {
    let rest = token.strip_prefix("K10")?;
    let (hash, _) = rest.split_once("::")?;
    (hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit())).then_some(hash)
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// Fetch the cluster CA (PEM) from `<server>/cacerts` without verifying
/// the server, and check it against the token's hash when it has one.
pub async fn fetch_ca(server: &str, token: &str) -> Result<String, ClientError> {
    let url = format!("{}/cacerts", server.trim_end_matches('/'));
    let uri: http::Uri = server.parse().map_err(|_| ClientError::BadUrl(server.into()))?;
    if uri.scheme_str() != Some("https") {
        return Err(ClientError::BadUrl(server.into()));
    }
    let host = uri.host().ok_or_else(|| ClientError::BadUrl(server.into()))?.trim_matches(['[', ']']).to_string();
    let port = uri.port_u16().unwrap_or(443);
    let fail = |m: String| ClientError::FetchCa { url: url.clone(), message: m };
    let fut = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
        let tls =
            tokio_rustls::TlsConnector::from(insecure_tls()).connect(name, tcp).await.map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        let task = tokio::spawn(conn);
        let req = http::Request::get("/cacerts")
            .header(http::header::HOST, format!("{host}:{port}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = res.status();
        use http_body_util::BodyExt;
        let body = res.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        task.abort();
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body).trim()));
        }
        String::from_utf8(body.to_vec()).map_err(|_| "the answer is not text".to_string())
    };
    let pem = tokio::time::timeout(std::time::Duration::from_secs(30), fut)
        .await
        .map_err(|_| fail("no answer within 30s".into()))?
        .map_err(fail)?;
    verify_ca(&url, token, &pem)?;
    Ok(pem)
}

pub fn verify_ca(url: &str, token: &str, pem: &str) -> Result<(), ClientError> {
    if let Some(want) = token_ca_hash(token) {
        if !sha256_hex(pem.as_bytes()).eq_ignore_ascii_case(want) {
            return Err(ClientError::CaMismatch { url: url.into() });
        }
    }
    Ok(())
}

/// A kube-rs client for `server` trusting `ca_pem`, authenticating with `token`.
pub fn client(server: &str, token: &str, ca_pem: &str) -> Result<kube::Client, ClientError> {
    use rustls::pki_types::pem::PemObject;
    let uri: http::Uri = server.parse().map_err(|_| ClientError::BadUrl(server.into()))?;
    let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(ca_pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| ClientError::BadCa(e.to_string()))?;
    if certs.is_empty() {
        return Err(ClientError::BadCa("no certificate in it".into()));
    }
    let mut config = kube::Config::new(uri);
    config.root_cert = Some(certs);
    config.auth_info.token = Some(token.to_string().into());
    config.read_timeout = None;
    kube::Client::try_from(config).map_err(|e| ClientError::Client(e.to_string()))
}

/// Fetch and check the CA, then build the client.
pub async fn connect(server: &str, token: &str) -> Result<kube::Client, ClientError> {
    let ca = fetch_ca(server, token).await?;
    client(server, token, &ca)
}

/// The servers of a comma-separated `--server` list, each checked to be an
/// https:// URL.
pub fn server_list(servers: &str) -> Result<Vec<String>, ClientError> {
    let list: Vec<String> = servers.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
    if list.is_empty() {
        return Err(ClientError::BadUrl(servers.into()));
    }
    for server in &list {
        server_address(server)?;
    }
    Ok(list)
}

/// `host:port` of an https:// server URL.
fn server_address(server: &str) -> Result<(String, u16), ClientError> {
    let uri: http::Uri = server.parse().map_err(|_| ClientError::BadUrl(server.into()))?;
    if uri.scheme_str() != Some("https") {
        return Err(ClientError::BadUrl(server.into()));
    }
    let host = uri.host().ok_or_else(|| ClientError::BadUrl(server.into()))?.trim_matches(['[', ']']).to_string();
    Ok((host, uri.port_u16().unwrap_or(443)))
}

/// A loopback TCP forwarder in front of several API servers; see the module
/// docs. It runs until dropped.
pub struct FailoverProxy {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl FailoverProxy {
    /// Listen on 127.0.0.1 (a free port) in front of `servers`.
    pub async fn start(servers: Vec<String>) -> Result<FailoverProxy, ClientError> {
        let mut addresses = Vec::with_capacity(servers.len());
        for server in &servers {
            addresses.push(server_address(server)?);
        }
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| ClientError::Client(format!("listening on loopback for the server list: {e}")))?;
        let port = listener.local_addr().map_err(|e| ClientError::Client(e.to_string()))?.port();
        let preferred = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let addresses = Arc::new(addresses);
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else { continue };
                tokio::spawn(forward(inbound, addresses.clone(), preferred.clone()));
            }
        });
        Ok(FailoverProxy { url: format!("https://127.0.0.1:{port}"), task })
    }

    /// The URL to give the API client.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for FailoverProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connect to the preferred server, else the next ones in turn, and pipe.
async fn forward(
    mut inbound: tokio::net::TcpStream,
    servers: Arc<Vec<(String, u16)>>,
    preferred: Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::Ordering;
    let first = preferred.load(Ordering::Relaxed);
    for i in 0..servers.len() {
        let at = (first + i) % servers.len();
        let (host, port) = &servers[at];
        let connect = tokio::net::TcpStream::connect((host.as_str(), *port));
        match tokio::time::timeout(std::time::Duration::from_secs(3), connect).await {
            Ok(Ok(mut outbound)) => {
                if at != first {
                    tracing::info!(server = %format!("{host}:{port}"), "API server unreachable; failed over to the next one");
                    preferred.store(at, Ordering::Relaxed);
                }
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                return;
            }
            Ok(Err(e)) => tracing::debug!(server = %format!("{host}:{port}"), error = %e, "API server refused"),
            Err(_) => tracing::debug!(server = %format!("{host}:{port}"), "API server did not answer within 3s"),
        }
    }
    tracing::warn!("no API server in the --server list accepts connections");
}

/// The local address that routes to `server` (this node's IP as the server
/// sees it), found without sending anything.
pub fn local_ip_towards(server: &str) -> Option<std::net::IpAddr> {
    let (host, port) = server_address(server).ok()?;
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port)).ok()?.next()?;
    let bind = if addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
    let socket = std::net::UdpSocket::bind(bind).ok()?;
    socket.connect(addr).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lists_parse() {
        assert_eq!(
            server_list("https://a:6443, https://b:6443").unwrap(),
            ["https://a:6443".to_string(), "https://b:6443".to_string()]
        );
        assert!(
            matches!(server_list("https://a:6443,http://b:6443"), Err(ClientError::BadUrl(u)) if u == "http://b:6443")
        );
        assert!(server_list(" , ").is_err());
    }

    #[tokio::test]
    async fn the_proxy_fails_over_to_the_next_server() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A port nothing listens on, then a server that says who it is.
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead_port = dead.local_addr().unwrap().port();
        drop(dead);
        let alive = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let alive_port = alive.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = alive.accept().await {
                let _ = s.write_all(b"alive").await;
            }
        });
        let proxy = FailoverProxy::start(vec![
            format!("https://127.0.0.1:{dead_port}"),
            format!("https://127.0.0.1:{alive_port}"),
        ])
        .await
        .unwrap();
        let port: u16 = proxy.url().rsplit(':').next().unwrap().parse().unwrap();
        for _ in 0..2 {
            let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let mut got = String::new();
            c.read_to_string(&mut got).await.unwrap();
            assert_eq!(got, "alive");
        }
    }

    #[test]
    fn token_hash_is_checked() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let h = sha256_hex(pem.as_bytes());
        let good = format!("K10{h}::server:secret");
        assert_eq!(token_ca_hash(&good), Some(h.as_str()));
        assert!(verify_ca("u", &good, pem).is_ok());
        let bad = format!("K10{}::server:secret", "0".repeat(64));
        assert!(matches!(verify_ca("u", &bad, pem), Err(ClientError::CaMismatch { .. })));
        // a plain token pins nothing
        assert_eq!(token_ca_hash("abcdef"), None);
        assert!(verify_ca("u", "abcdef", pem).is_ok());
    }
}
