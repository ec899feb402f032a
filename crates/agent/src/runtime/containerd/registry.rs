//! Pulling from registries (the distribution v2 API) into containerd's
//! content store; then the image is unpacked like an imported one.
//! docs/adr/0003-image-pulls.md says why the agent pulls itself.
//!
//! Registries on loopback (`localhost`, `127.0.0.0/8`, `::1`) are spoken to
//! over plain HTTP, others over HTTPS with the system's roots. Auth: anonymous,
//! Basic, or Bearer tokens from the realm the registry names (with the pull
//! secret's credentials when there are some).

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tracing::debug;

use super::images::{index_gc_labels, manifest_gc_labels, ResolvedImage};
use super::oci::{self, Descriptor, ImageConfig, Index, Manifest};
use super::reference::Reference;
use super::{error_chain, ContainerdRuntime, Lease};
use crate::runtime::{ImageInfo, RegistryAuth, Result, RuntimeError};

const MAX_MANIFEST: usize = 16 << 20;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// An HTTP(S) client for registries.
#[derive(Clone)]
pub(crate) struct HttpClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpClient {
    pub(crate) fn new() -> std::result::Result<Self, String> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_native_roots(provider.clone())
        {
            Ok(builder) => builder,
            Err(e) => {
                // No system roots: HTTPS registries will fail with a clear error, plain HTTP still works.
                debug!("no system TLS roots ({e}); only plain-HTTP registries will work");
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| format!("TLS setup: {e}"))?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let connector = builder.https_or_http().enable_http1().build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(HttpClient { client })
    }

    pub(crate) async fn send(&self, req: Request<Full<Bytes>>) -> std::result::Result<Response<Incoming>, String> {
        let what = format!("{} {}", req.method(), req.uri());
        match tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(format!("{what}: {}", error_chain(&e))),
            Err(_) => Err(format!("{what}: no answer in {}s", REQUEST_TIMEOUT.as_secs())),
        }
    }
}

/// Reads a whole (small) body.
pub(crate) async fn read_body(resp: Response<Incoming>, limit: usize) -> std::result::Result<Bytes, String> {
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading a response: {e}"))?;
        if let Some(data) = frame.data_ref() {
            out.extend_from_slice(data);
            if out.len() > limit {
                return Err(format!("response larger than {limit} bytes"));
            }
        }
    }
    Ok(Bytes::from(out))
}

/// Percent-encodes a query value.
pub(crate) fn encode_query(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A `WWW-Authenticate` challenge: scheme and parameters.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub scheme: String,
    pub params: HashMap<String, String>,
}

pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('=') {
            break;
        }
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            let mut v = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => v.extend(chars.next()),
                    '"' => break,
                    c => v.push(c),
                }
            }
            v
        } else {
            std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect::<String>().trim().to_string()
        };
        params.insert(key.trim().to_ascii_lowercase(), value);
    }
    Some(Challenge { scheme: scheme.to_ascii_lowercase(), params })
}

/// The credentials of a pull secret as (user, password).
fn credentials(auth: Option<&RegistryAuth>) -> Option<(String, String)> {
    let auth = auth?;
    if !auth.username.is_empty() || !auth.password.is_empty() {
        return Some((auth.username.clone(), auth.password.clone()));
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(auth.auth.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

fn basic(user: &str, pass: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

/// One pull's conversation with a registry.
struct Session<'a> {
    http: &'a HttpClient,
    base: String,
    reference: &'a Reference,
    credentials: Option<(String, String)>,
    authorization: Option<String>,
}

impl<'a> Session<'a> {
    fn new(http: &'a HttpClient, reference: &'a Reference, auth: Option<&RegistryAuth>) -> Self {
        let scheme = if reference.is_loopback() { "http" } else { "https" };
        Session {
            http,
            base: format!("{scheme}://{}", reference.registry_host()),
            reference,
            credentials: credentials(auth),
            authorization: None,
        }
    }

    /// GET `path` (under `/v2/<repository>/`), authenticating and
    /// following redirects as needed.
    async fn get(&mut self, path: &str, accept: &str) -> std::result::Result<Response<Incoming>, String> {
        let mut url = format!("{}/v2/{}/{path}", self.base, self.reference.path);
        let mut authenticated = false;
        let mut same_host = true;
        for _ in 0..8 {
            let mut req = Request::builder().method(Method::GET).uri(&url).header(header::ACCEPT, accept);
            if same_host {
                if let Some(authorization) = &self.authorization {
                    req = req.header(header::AUTHORIZATION, authorization);
                }
            }
            let req = req.body(Full::new(Bytes::new())).map_err(|e| format!("GET {url}: {e}"))?;
            debug!(%url, "registry GET");
            let resp = self.http.send(req).await?;
            match resp.status() {
                StatusCode::UNAUTHORIZED if same_host && !authenticated => {
                    let challenge = resp
                        .headers()
                        .get(header::WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_challenge)
                        .ok_or_else(|| format!("GET {url}: 401 Unauthorized without a usable WWW-Authenticate"))?;
                    self.authenticate(&challenge).await?;
                    authenticated = true;
                }
                s if s.is_redirection() => {
                    let location = resp
                        .headers()
                        .get(header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .ok_or_else(|| format!("GET {url}: redirect without a Location"))?;
                    let next = if location.starts_with("http://") || location.starts_with("https://") {
                        location.to_string()
                    } else {
                        format!("{}{location}", self.base)
                    };
                    same_host = next.starts_with(&format!("{}/", self.base));
                    url = next;
                }
                _ => return Ok(resp),
            }
        }
        Err(format!("GET {url}: too many redirects or authentication rounds"))
    }

    async fn authenticate(&mut self, challenge: &Challenge) -> std::result::Result<(), String> {
        match challenge.scheme.as_str() {
            "basic" => {
                let (user, pass) = self
                    .credentials
                    .clone()
                    .ok_or_else(|| "the registry wants credentials (Basic) and none were given".to_string())?;
                self.authorization = Some(basic(&user, &pass));
                Ok(())
            }
            "bearer" => {
                let realm = challenge
                    .params
                    .get("realm")
                    .ok_or_else(|| "the registry's Bearer challenge names no realm".to_string())?;
                let scope = challenge
                    .params
                    .get("scope")
                    .cloned()
                    .unwrap_or_else(|| format!("repository:{}:pull", self.reference.path));
                let mut url = format!("{realm}?scope={}", encode_query(&scope));
                if let Some(service) = challenge.params.get("service") {
                    url.push_str(&format!("&service={}", encode_query(service)));
                }
                let mut req = Request::builder().method(Method::GET).uri(&url);
                if let Some((user, pass)) = &self.credentials {
                    req = req.header(header::AUTHORIZATION, basic(user, pass));
                }
                let req = req.body(Full::new(Bytes::new())).map_err(|e| format!("GET {url}: {e}"))?;
                debug!(%url, "registry token");
                let resp = self.http.send(req).await?;
                let status = resp.status();
                let body = read_body(resp, 1 << 20).await?;
                if !status.is_success() {
                    return Err(format!(
                        "getting a registry token from {realm}: {status}{}",
                        if self.credentials.is_none() { " (no credentials were given)" } else { "" }
                    ));
                }
                #[derive(serde::Deserialize)]
                struct Token {
                    #[serde(default)]
                    token: String,
                    #[serde(default)]
                    access_token: String,
                }
                let token: Token =
                    serde_json::from_slice(&body).map_err(|e| format!("token from {realm}: invalid JSON: {e}"))?;
                let token = if token.token.is_empty() { token.access_token } else { token.token };
                if token.is_empty() {
                    return Err(format!("token from {realm}: empty"));
                }
                self.authorization = Some(format!("Bearer {token}"));
                Ok(())
            }
            other => Err(format!("unsupported registry authentication scheme {other:?}")),
        }
    }

    /// Fetches a manifest or index by tag or digest: (media type, bytes, digest).
    async fn manifest(&mut self, object: &str) -> std::result::Result<(String, Bytes, String), String> {
        let resp = self.get(&format!("manifests/{object}"), MANIFEST_TYPES).await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Err(format!("manifest {object:?} not found in registry {}", self.reference.domain));
        }
        if !status.is_success() {
            let body = read_body(resp, 4096).await.unwrap_or_default();
            return Err(format!("manifest {object:?}: {status}: {}", String::from_utf8_lossy(&body).trim()));
        }
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
            .unwrap_or_default();
        let body = read_body(resp, MAX_MANIFEST).await?;
        let digest = oci::sha256_digest(&body);
        if object.starts_with("sha256:") && object != digest {
            return Err(format!("manifest {object}: the registry sent content with digest {digest}"));
        }
        let media_type = if oci::is_index(&content_type) || oci::is_manifest(&content_type) {
            content_type
        } else {
            sniff_media_type(&body)?
        };
        Ok((media_type, body, digest))
    }

    async fn blob(&mut self, digest: &str) -> std::result::Result<Response<Incoming>, String> {
        let resp = self.get(&format!("blobs/{digest}"), "*/*").await?;
        if !resp.status().is_success() {
            return Err(format!("blob {digest}: {}", resp.status()));
        }
        Ok(resp)
    }
}

/// The media type of a manifest served without a useful Content-Type.
fn sniff_media_type(body: &[u8]) -> std::result::Result<String, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        config: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(body).map_err(|e| format!("manifest: invalid JSON: {e}"))?;
    match (probe.media_type, probe.manifests, probe.config) {
        (Some(mt), _, _) if oci::is_index(&mt) || oci::is_manifest(&mt) => Ok(mt),
        (_, Some(_), _) => Ok(oci::MT_OCI_INDEX.to_string()),
        (_, _, Some(_)) => Ok(oci::MT_OCI_MANIFEST.to_string()),
        _ => Err("the registry sent something that is neither a manifest nor an index".to_string()),
    }
}

impl ContainerdRuntime {
    pub(crate) async fn pull_image(&self, reference: &str, auth: Option<&RegistryAuth>) -> Result<ImageInfo> {
        let pull_err = |message: String| RuntimeError::Pull { image: reference.to_string(), message };
        let parsed = Reference::parse(reference).map_err(pull_err)?;
        let name = parsed.to_string();
        debug!(image = %name, "pulling");
        let lease = self.create_lease("pull").await?;
        let result = self.pull_with_lease(&lease, &parsed, auth).await;
        self.delete_lease(lease).await;
        let resolved = result.map_err(|e| match e {
            RuntimeError::Other(message) => pull_err(message),
            other => other,
        })?;
        Ok(resolved.info())
    }

    async fn pull_with_lease(
        &self,
        lease: &Lease,
        reference: &Reference,
        auth: Option<&RegistryAuth>,
    ) -> Result<ResolvedImage> {
        let mut session = Session::new(&self.http, reference, auth);
        let (media_type, body, digest) = session.manifest(reference.object()).await.map_err(RuntimeError::Other)?;
        let target = Descriptor {
            media_type: media_type.clone(),
            digest,
            size: body.len() as i64,
            annotations: Default::default(),
            platform: None,
        };
        let (manifest_desc, manifest_body, index) = if oci::is_index(&media_type) {
            let index: Index = serde_json::from_slice(&body)
                .map_err(|e| RuntimeError::Other(format!("index {}: invalid JSON: {e}", target.digest)))?;
            let chosen = oci::select_manifest(&index).cloned().ok_or_else(|| {
                let p = oci::host_platform();
                RuntimeError::Other(format!("{reference} has no image for {}/{}", p.os, p.architecture))
            })?;
            let (mt, manifest_body, _) = session.manifest(&chosen.digest).await.map_err(RuntimeError::Other)?;
            let mut desc = chosen;
            desc.media_type = mt;
            desc.size = manifest_body.len() as i64;
            (desc, manifest_body, Some((index, body.clone())))
        } else {
            (target.clone(), body.clone(), None)
        };
        if !oci::is_manifest(&manifest_desc.media_type) {
            return Err(RuntimeError::Other(format!("nested indexes are not supported ({})", manifest_desc.digest)));
        }
        let manifest: Manifest = serde_json::from_slice(&manifest_body)
            .map_err(|e| RuntimeError::Other(format!("manifest {}: invalid JSON: {e}", manifest_desc.digest)))?;

        // The config, small: read it whole (the unpacker needs its diff ids).
        let config_bytes = if self.blob_info(&manifest.config.digest).await?.is_some() {
            Bytes::from(self.read_blob(&manifest.config.digest).await?)
        } else {
            let resp = session.blob(&manifest.config.digest).await.map_err(RuntimeError::Other)?;
            read_body(resp, MAX_MANIFEST).await.map_err(RuntimeError::Other)?
        };
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| RuntimeError::Other(format!("image config {}: invalid JSON: {e}", manifest.config.digest)))?;
        self.ensure_blob_bytes(lease, &manifest.config, config_bytes, HashMap::new()).await?;

        for layer in &manifest.layers {
            self.pull_blob(lease, &mut session, layer).await?;
        }
        self.ensure_blob_bytes(lease, &manifest_desc, manifest_body, manifest_gc_labels(&manifest)).await?;
        if let Some((index, index_body)) = &index {
            self.ensure_blob_bytes(lease, &target, index_body.clone(), index_gc_labels(index)).await?;
        }
        self.unpack(lease, &manifest, &config).await?;
        let name = reference.to_string();
        self.put_image_record(&name, &target).await?;
        debug!(image = %name, digest = %target.digest, "pulled");
        Ok(ResolvedImage { name, target, manifest, config })
    }

    /// Streams one blob from the registry into the content store, unless it is there.
    async fn pull_blob(&self, lease: &Lease, session: &mut Session<'_>, desc: &Descriptor) -> Result<()> {
        if self.blob_info(&desc.digest).await?.is_some() {
            return self.ensure_blob_bytes(lease, desc, Bytes::new(), HashMap::new()).await.map(|_| ());
        }
        let resp = session.blob(&desc.digest).await.map_err(RuntimeError::Other)?;
        self.ensure_blob(lease, desc, HashMap::new(), |mut w| async move {
            let mut body = resp.into_body();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| RuntimeError::Other(format!("downloading blob {}: {e}", desc.digest)))?;
                if let Ok(data) = frame.into_data() {
                    w.write(data).await?;
                }
            }
            Ok(w)
        })
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["service"], "registry.docker.io");
        assert_eq!(c.params["scope"], "repository:library/busybox:pull,push");
        let c = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "Registry Realm");
    }

    #[test]
    fn credentials_come_from_user_and_password_or_auth() {
        let a = RegistryAuth { username: "u".into(), password: "p".into(), ..Default::default() };
        assert_eq!(credentials(Some(&a)), Some(("u".into(), "p".into())));
        let b = RegistryAuth { auth: base64::engine::general_purpose::STANDARD.encode("x:y:z"), ..Default::default() };
        assert_eq!(credentials(Some(&b)), Some(("x".into(), "y:z".into())));
        assert_eq!(credentials(None), None);
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(encode_query("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
    }
}
