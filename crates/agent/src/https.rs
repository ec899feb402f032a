//! The agent's HTTPS endpoint (the kubelet port, 10250): the API server
//! proxies pods/log (and later exec and port-forward) here. The serving
//! certificate is issued by the API server for this node's name and address;
//! clients must present a certificate signed by the cluster CA (the API
//! server's), so nobody else can read logs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Where the API server issues node serving certificates.
const NODE_CERT_PATH: &str = "/skiff/v1/node-certificate";

#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    #[error("asking the API server for this node's serving certificate: {0}")]
    Issue(String),
    #[error("node serving certificate: {0}")]
    Tls(String),
    #[error(
        "cannot listen on {addr} for the agent's HTTPS endpoint (is another agent or kubelet on this port?): {source}"
    )]
    Bind { addr: SocketAddr, source: std::io::Error },
}

fn pem_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, HttpsError> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| HttpsError::Tls(e.to_string()))
}

fn pem_key(pem: &str) -> Result<PrivateKeyDer<'static>, HttpsError> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| HttpsError::Tls(e.to_string()))?
        .ok_or_else(|| HttpsError::Tls("no private key in the issued certificate".into()))
}

/// Ask the API server (as this node) for a serving certificate.
async fn issue(
    client: &kube::Client,
    node: &str,
    addr: std::net::IpAddr,
) -> Result<(String, String, String), HttpsError> {
    let body = serde_json::to_vec(&json!({"nodeName": node, "addresses": [addr.to_string()]}))
        .map_err(|e| HttpsError::Issue(e.to_string()))?;
    let req = http::Request::post(NODE_CERT_PATH)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(|e| HttpsError::Issue(e.to_string()))?;
    let text = client.request_text(req).await.map_err(|e| HttpsError::Issue(e.to_string()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| HttpsError::Issue(format!("{e}: {text}")))?;
    let get = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| HttpsError::Issue(format!("no {k} in {text}")))
    };
    Ok((get("certificate")?, get("key")?, get("ca")?))
}

/// The TLS configuration: our issued certificate; client certificates
/// required and verified against the cluster CA.
fn server_config(cert: &str, key: &str, ca: &str) -> Result<Arc<rustls::ServerConfig>, HttpsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in pem_certs(ca)? {
        roots.add(c).map_err(|e| HttpsError::Tls(e.to_string()))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| HttpsError::Tls(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpsError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(pem_certs(cert)?, pem_key(key)?)
        .map_err(|e| HttpsError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Get a certificate, bind `addr`, and serve `router` until `shutdown`.
/// Binding happens before this returns, so a taken port is reported at once.
pub async fn start(
    client: &kube::Client,
    node: &str,
    addr: SocketAddr,
    router: axum::Router,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, HttpsError> {
    let (cert, key, ca) = issue(client, node, addr.ip()).await?;
    let tls = TlsAcceptor::from(server_config(&cert, &key, &ca)?);
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| HttpsError::Bind { addr, source })?;
    tracing::info!(%addr, "agent HTTPS endpoint listening");
    Ok(tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "agent HTTPS accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let tls = tls.clone();
            let router = router.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let stream = match tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    _ => {
                        tracing::debug!(%peer, "agent HTTPS handshake failed");
                        return;
                    }
                };
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    router.clone().oneshot(req.map(axum::body::Body::new))
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(%peer, error = %e, "agent HTTPS connection ended with an error");
                        }
                    }
                    _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
                }
            });
        }
    }))
}
