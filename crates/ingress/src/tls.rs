//! TLS termination: certificates chosen by SNI from the current routing
//! snapshot, a self-signed default otherwise; ALPN offers h2 and http/1.1.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::{IngressError, RoutesHandle};

/// Picks the certificate for a handshake from the snapshot in force.
pub(crate) struct SniResolver {
    routes: RoutesHandle,
    default: Arc<CertifiedKey>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SniResolver")
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            let routes = self.routes.load();
            if let Some(key) = routes.certs.find(name) {
                return Some(key.clone());
            }
        }
        Some(self.default.clone())
    }
}

/// A self-signed certificate for names no Secret covers.
pub fn self_signed(names: &[&str]) -> Result<CertifiedKey, IngressError> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(names).map_err(|e| IngressError::Tls(e.to_string()))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| IngressError::Tls(e.to_string()))?;
    Ok(CertifiedKey::new(vec![CertificateDer::from(cert.der().to_vec())], signing))
}

/// The rustls server configuration of the HTTPS listener.
pub(crate) fn server_config(routes: RoutesHandle) -> Result<Arc<rustls::ServerConfig>, IngressError> {
    let default = Arc::new(self_signed(&["skiff-ingress-default"])?);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| IngressError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { routes, default }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| IngressError::Tls(e.to_string()))?;
    Ok(Arc::new(config))
}
