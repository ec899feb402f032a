//! The cluster CA, the API server's serving certificate and the admin client
//! certificate: generated on first start under `<data-dir>/tls/`, reused after.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("tls: generating {what}: {source}")]
    Generate { what: &'static str, source: rcgen::Error },
    #[error("tls file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("tls: client verifier: {0}")]
    Verifier(String),
}

/// PEM material of the cluster, as loaded or generated.
#[derive(Clone)]
pub struct ClusterTls {
    pub ca_cert_pem: String,
    /// The CA's key: the server issues node serving certificates with it.
    pub ca_key_pem: String,
    /// The API server's client certificate towards node agents (CN
    /// `kube-apiserver-kubelet-client`, O `system:masters`).
    pub apiserver_client_cert_pem: String,
    pub apiserver_client_key_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
    /// The key that signs service account tokens (ECDSA P-256, PKCS#8), kept
    /// as `service-account.key` and shared by servers on one etcd like the CA.
    pub service_account_key_pem: String,
}

/// Names and addresses the serving certificate must cover.
pub struct ServingNames {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl ServingNames {
    /// The names every Skiff server answers to, plus the extra addresses given.
    pub fn standard(extra_ips: &[IpAddr], service_ip: Option<IpAddr>) -> Self {
        let mut dns: Vec<String> = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        dns.push("kubernetes.default.svc.cluster.local".into());
        let mut ips: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1]), IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])];
        for ip in extra_ips.iter().copied().chain(service_ip) {
            if !ip.is_unspecified() && !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        ServingNames { dns, ips }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io { path: path.to_path_buf(), source }
}

fn gen_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> TlsError {
    move |source| TlsError::Generate { what, source }
}

/// Write a file readable only by its owner.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let mut f =
        fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp).map_err(io_err(&tmp))?;
    f.write_all(contents).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

fn read(path: &Path) -> Result<Option<String>, TlsError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TlsError::Io { path: path.to_path_buf(), source: e }),
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "skiff-ca");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    params
}

fn leaf_params(common_name: &str, organization: Option<&str>, eku: ExtendedKeyUsagePurpose) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![eku];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    params
}

impl ClusterTls {
    /// Load the cluster's TLS material from `dir`, generating what is
    /// missing. The serving certificate is re-issued when it does not cover
    /// `names` (a new node IP, say); the CA and admin certificate never change.
    pub fn load_or_generate(dir: &Path, names: &ServingNames) -> Result<Self, TlsError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let ca_cert_path = dir.join("ca.crt");
        let ca_key_path = dir.join("ca.key");
        let (ca_cert_pem, ca_key) = match (read(&ca_cert_path)?, read(&ca_key_path)?) {
            (Some(cert), Some(key)) => {
                let key = KeyPair::from_pem(&key)
                    .map_err(|e| TlsError::Parse { path: ca_key_path.clone(), message: e.to_string() })?;
                (cert, key)
            }
            _ => {
                let key = KeyPair::generate().map_err(gen_err("ca key"))?;
                let cert = ca_params().self_signed(&key).map_err(gen_err("ca certificate"))?;
                write_private(&ca_key_path, key.serialize_pem().as_bytes())?;
                write_private(&ca_cert_path, cert.pem().as_bytes())?;
                (cert.pem(), key)
            }
        };
        let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, &ca_key)
            .map_err(|e| TlsError::Parse { path: ca_cert_path.clone(), message: e.to_string() })?;

        let server_cert_path = dir.join("serving.crt");
        let server_key_path = dir.join("serving.key");
        let names_path = dir.join("serving.names");
        let wanted_names = names_fingerprint(names);
        let (server_cert_pem, server_key_pem) =
            match (read(&server_cert_path)?, read(&server_key_path)?, read(&names_path)?) {
                (Some(c), Some(k), Some(n)) if n == wanted_names => (c, k),
                _ => {
                    let key = KeyPair::generate().map_err(gen_err("serving key"))?;
                    let mut params = leaf_params("kube-apiserver", None, ExtendedKeyUsagePurpose::ServerAuth);
                    let mut sans: Vec<SanType> = Vec::new();
                    for d in &names.dns {
                        sans.push(SanType::DnsName(d.clone().try_into().map_err(gen_err("serving name"))?));
                    }
                    sans.extend(names.ips.iter().map(|ip| SanType::IpAddress(*ip)));
                    params.subject_alt_names = sans;
                    let cert = params.signed_by(&key, &issuer).map_err(gen_err("serving certificate"))?;
                    write_private(&server_key_path, key.serialize_pem().as_bytes())?;
                    write_private(&server_cert_path, cert.pem().as_bytes())?;
                    write_private(&names_path, wanted_names.as_bytes())?;
                    (cert.pem(), key.serialize_pem())
                }
            };

        let admin_cert_path = dir.join("admin.crt");
        let admin_key_path = dir.join("admin.key");
        let (admin_cert_pem, admin_key_pem) = match (read(&admin_cert_path)?, read(&admin_key_path)?) {
            (Some(c), Some(k)) => (c, k),
            _ => {
                let key = KeyPair::generate().map_err(gen_err("admin key"))?;
                let params = leaf_params("system:admin", Some("system:masters"), ExtendedKeyUsagePurpose::ClientAuth);
                let cert = params.signed_by(&key, &issuer).map_err(gen_err("admin certificate"))?;
                write_private(&admin_key_path, key.serialize_pem().as_bytes())?;
                write_private(&admin_cert_path, cert.pem().as_bytes())?;
                (cert.pem(), key.serialize_pem())
            }
        };
        let (apiserver_client_cert_pem, apiserver_client_key_pem) = leaf_pair(
            dir,
            "apiserver-kubelet-client",
            &issuer,
            "kube-apiserver-kubelet-client",
            Some("system:masters"),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let ca_key_pem = ca_key.serialize_pem();
        let service_account_key_pem = service_account_key(dir)?;
        Ok(ClusterTls {
            ca_cert_pem,
            ca_key_pem,
            apiserver_client_cert_pem,
            apiserver_client_key_pem,
            server_cert_pem,
            server_key_pem,
            admin_cert_pem,
            admin_key_pem,
            service_account_key_pem,
        })
    }

    /// Issue a serving certificate for a node agent's HTTPS endpoint,
    /// signed by the cluster CA, for the node's name and addresses.
    pub fn issue_node_serving(&self, node: &str, ips: &[IpAddr]) -> Result<(String, String), TlsError> {
        let ca_key = KeyPair::from_pem(&self.ca_key_pem)
            .map_err(|e| TlsError::Parse { path: PathBuf::from("ca.key"), message: e.to_string() })?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca_cert_pem, &ca_key)
            .map_err(|e| TlsError::Parse { path: PathBuf::from("ca.crt"), message: e.to_string() })?;
        let key = KeyPair::generate().map_err(gen_err("node serving key"))?;
        let mut params =
            leaf_params(&format!("system:node:{node}"), Some("system:nodes"), ExtendedKeyUsagePurpose::ServerAuth);
        let mut sans = vec![SanType::DnsName(node.to_string().try_into().map_err(gen_err("node name"))?)];
        sans.push(SanType::DnsName("localhost".to_string().try_into().map_err(gen_err("node name"))?));
        sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.subject_alt_names = sans;
        let cert = params.signed_by(&key, &issuer).map_err(gen_err("node serving certificate"))?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// sha256 of the CA certificate (PEM), hex: the hash in k3s-style join
    /// tokens (`K10<hash>::server:<secret>`), which lets a joining node check
    /// the CA it downloads.
    pub fn ca_hash(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.ca_cert_pem.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A rustls client configuration for talking to node agents: trust the
    /// cluster CA, present the API server's client certificate.
    pub fn agent_client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in parse_certs(&self.ca_cert_pem, "ca.crt")? {
            roots.add(c)?;
        }
        let certs = parse_certs(&self.apiserver_client_cert_pem, "apiserver-kubelet-client.crt")?;
        let key = parse_key(&self.apiserver_client_key_pem, "apiserver-kubelet-client.key")?;
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)?;
        Ok(Arc::new(config))
    }

    /// Read existing material without generating anything.
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let get = |name: &str| -> Result<String, TlsError> {
            let path = dir.join(name);
            read(&path)?.ok_or_else(|| TlsError::Parse { path, message: "missing".into() })
        };
        Ok(ClusterTls {
            ca_cert_pem: get("ca.crt")?,
            ca_key_pem: get("ca.key")?,
            apiserver_client_cert_pem: get("apiserver-kubelet-client.crt")?,
            apiserver_client_key_pem: get("apiserver-kubelet-client.key")?,
            server_cert_pem: get("serving.crt")?,
            server_key_pem: get("serving.key")?,
            admin_cert_pem: get("admin.crt")?,
            admin_key_pem: get("admin.key")?,
            service_account_key_pem: get(SERVICE_ACCOUNT_KEY)?,
        })
    }

    /// A rustls server configuration: our serving certificate, HTTP/2 and
    /// HTTP/1.1 by ALPN, client certificates optional but verified against
    /// the cluster CA when presented.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = parse_certs(&self.server_cert_pem, "serving.crt")?;
        let key = parse_key(&self.server_key_pem, "serving.key")?;
        let mut roots = rustls::RootCertStore::empty();
        for c in parse_certs(&self.ca_cert_pem, "ca.crt")? {
            roots.add(c)?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn names_fingerprint(names: &ServingNames) -> String {
    let mut parts: Vec<String> = names.dns.clone();
    parts.extend(names.ips.iter().map(|ip| ip.to_string()));
    parts.sort();
    parts.join("\n")
}

fn parse_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Parse { path: PathBuf::from(what), message: e.to_string() })
}

fn parse_key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| TlsError::Parse { path: PathBuf::from(what), message: e.to_string() })?
        .ok_or_else(|| TlsError::Parse { path: PathBuf::from(what), message: "no private key found".into() })
}

/// The user a verified client certificate names: CN is the user, O the groups.
pub fn identity_from_cert(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let user = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let groups = subject.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_string)).collect();
    Some((user, groups))
}

/// The file, in the TLS directory, of the service account token signing key.
pub const SERVICE_ACCOUNT_KEY: &str = "service-account.key";

/// Load the service account signing key from `dir`, or generate it.
pub fn service_account_key(dir: &Path) -> Result<String, TlsError> {
    let path = dir.join(SERVICE_ACCOUNT_KEY);
    if let Some(pem) = read(&path)? {
        KeyPair::from_pem(&pem).map_err(|e| TlsError::Parse { path: path.clone(), message: e.to_string() })?;
        return Ok(pem);
    }
    // rcgen's default key is ECDSA P-256: tokens are signed ES256
    let key = KeyPair::generate().map_err(gen_err("service account signing key"))?;
    let pem = key.serialize_pem();
    write_private(&path, pem.as_bytes())?;
    Ok(pem)
}

/// Load a leaf certificate and key from `dir/<file>.{crt,key}`, or issue them.
fn leaf_pair(
    dir: &Path,
    file: &str,
    issuer: &Issuer<'_, &KeyPair>,
    common_name: &str,
    organization: Option<&str>,
    eku: ExtendedKeyUsagePurpose,
) -> Result<(String, String), TlsError> {
    let cert_path = dir.join(format!("{file}.crt"));
    let key_path = dir.join(format!("{file}.key"));
    if let (Some(c), Some(k)) = (read(&cert_path)?, read(&key_path)?) {
        return Ok((c, k));
    }
    let key = KeyPair::generate().map_err(gen_err("client key"))?;
    let params = leaf_params(common_name, organization, eku);
    let cert = params.signed_by(&key, issuer).map_err(gen_err("client certificate"))?;
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    write_private(&cert_path, cert.pem().as_bytes())?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A join token in k3s' form: `K10<ca sha256>::server:<secret>`.
pub fn full_token(ca_hash: &str, secret: &str) -> String {
    format!("K10{ca_hash}::server:{secret}")
}

/// The secret part of a token (`K10<hash>::<user>:<secret>` or a bare secret),
/// and the CA hash it names, if any.
pub fn parse_token(token: &str) -> (Option<&str>, &str) {
    match token.strip_prefix("K10").and_then(|rest| rest.split_once("::")) {
        Some((hash, user_secret)) => {
            let secret = user_secret.split_once(':').map_or(user_secret, |(_, s)| s);
            (Some(hash), secret)
        }
        None => (None, token),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_material_is_reused_and_admin_identity_parses() {
        let dir = tempfile::tempdir().unwrap();
        let names = ServingNames::standard(&[], None);
        let a = ClusterTls::load_or_generate(dir.path(), &names).unwrap();
        let b = ClusterTls::load_or_generate(dir.path(), &names).unwrap();
        assert_eq!(a.ca_cert_pem, b.ca_cert_pem);
        assert_eq!(a.server_cert_pem, b.server_cert_pem);
        a.server_config().unwrap();
        let der = parse_certs(&a.admin_cert_pem, "admin").unwrap();
        let (user, groups) = identity_from_cert(&der[0]).unwrap();
        assert_eq!(user, "system:admin");
        assert_eq!(groups, vec!["system:masters".to_string()]);
        // a new address re-issues the serving certificate under the same CA
        let more = ServingNames::standard(&["192.0.2.7".parse().unwrap()], None);
        let c = ClusterTls::load_or_generate(dir.path(), &more).unwrap();
        assert_eq!(a.ca_cert_pem, c.ca_cert_pem);
        assert_ne!(a.server_cert_pem, c.server_cert_pem);
        let (cert, _) = a.issue_node_serving("node-1", &["192.0.2.9".parse().unwrap()]).unwrap();
        let der = parse_certs(&cert, "node").unwrap();
        assert_eq!(identity_from_cert(&der[0]).unwrap().0, "system:node:node-1");
        a.agent_client_config().unwrap();
    }

    #[test]
    fn tokens_carry_the_ca_hash() {
        let t = full_token("abc", "s3cret");
        assert_eq!(parse_token(&t), (Some("abc"), "s3cret"));
        assert_eq!(parse_token("plain"), (None, "plain"));
    }
}
