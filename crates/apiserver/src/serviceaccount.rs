//! Service account tokens as Kubernetes makes them: JWTs signed ES256 with
//! the cluster's service account key, issued through
//! `serviceaccounts/<name>/token` (an `authentication.k8s.io/v1`
//! TokenRequest), and accepted as bearer tokens while the service account
//! and the object the token is bound to still exist with the same uid.
//!
//! The claims are Kubernetes' (`pkg/serviceaccount/claims.go`): `iss`,
//! `sub` = `system:serviceaccount:<ns>:<name>`, `aud`, `exp`, `iat`, `nbf`,
//! `jti`, and the private claim `kubernetes.io` with the namespace, the
//! service account, and the bound pod, secret or node.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair as _, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use skiff_api::catalogue;

use crate::error::{ApiError, Cause};
use crate::handlers::{self, json_response};
use crate::request::Target;
use crate::tls::TlsError;
use crate::Api;

/// The issuer of every token, and the API server's one audience (as in
/// Kubernetes without `--service-account-issuer`/`--api-audiences`, and k3s).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// `spec.expirationSeconds` when a TokenRequest gives none.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest lifetime a TokenRequest may ask for.
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// Clock skew tolerated on `exp` and `nbf`, as go-jose's default leeway.
const LEEWAY_SECONDS: i64 = 60;
/// A pod whose deletion began longer ago than this no longer authenticates
/// its tokens (Kubernetes' grace for a pod's shutdown).
const DELETED_POD_GRACE_SECONDS: i64 = 60;

/// An object a token is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Ref {
    pub name: String,
    pub uid: String,
}

/// The `kubernetes.io` private claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Private {
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Ref>,
    pub serviceaccount: Ref,
}

/// A token's claims, in the order Kubernetes writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(deserialize_with = "string_or_list")]
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    #[serde(default)]
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: Private,
    pub nbf: i64,
    pub sub: String,
}

/// RFC 7519 allows `aud` as one string or a list.
fn string_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

impl Claims {
    /// The claims of a new token for a service account, bound to what `bound` names.
    pub fn new(namespace: &str, sa: Ref, bound: Bound, audiences: Vec<String>, lifetime: i64, now: i64) -> Self {
        Claims {
            aud: audiences,
            exp: now + lifetime,
            iat: now,
            iss: ISSUER.into(),
            jti: uuid::Uuid::new_v4().to_string(),
            sub: format!("system:serviceaccount:{namespace}:{}", sa.name),
            kubernetes: Private {
                namespace: namespace.into(),
                serviceaccount: sa,
                pod: bound.pod,
                secret: bound.secret,
                node: bound.node,
            },
            nbf: now,
        }
    }

    /// Check the times and the audience: what needs no store.
    pub fn check(&self, now: i64, audiences: &[&str]) -> Result<(), &'static str> {
        if self.iss != ISSUER {
            return Err("token issued by another issuer");
        }
        if now > self.exp + LEEWAY_SECONDS {
            return Err("service account token has expired");
        }
        if now + LEEWAY_SECONDS < self.nbf {
            return Err("service account token is not valid yet");
        }
        if !self.aud.iter().any(|a| audiences.contains(&a.as_str())) {
            return Err("token audiences do not include the API server's");
        }
        let expected =
            format!("system:serviceaccount:{}:{}", self.kubernetes.namespace, self.kubernetes.serviceaccount.name);
        if self.sub != expected {
            return Err("token subject does not match its service account claim");
        }
        Ok(())
    }
}

/// What a token is bound to besides its service account.
#[derive(Debug, Clone, Default)]
pub struct Bound {
    pub pod: Option<Ref>,
    pub secret: Option<Ref>,
    pub node: Option<Ref>,
}

const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Signs and verifies tokens with the cluster's service account key.
pub struct Signer {
    key: EcdsaKeyPair,
    /// `kid`: base64url of the SHA-256 of the public key's DER, as Kubernetes computes it.
    kid: String,
    rng: SystemRandom,
}

impl Signer {
    pub fn from_pem(pem: &str) -> Result<Self, TlsError> {
        let what = || std::path::PathBuf::from(crate::tls::SERVICE_ACCOUNT_KEY);
        let parse = |message: String| TlsError::Parse { path: what(), message };
        let der = match rustls_pemfile::private_key(&mut pem.as_bytes()) {
            Ok(Some(rustls::pki_types::PrivateKeyDer::Pkcs8(der))) => der,
            Ok(_) => return Err(parse("not a PKCS#8 private key".into())),
            Err(e) => return Err(parse(e.to_string())),
        };
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.secret_pkcs8_der(), &rng)
            .map_err(|e| parse(format!("not an ECDSA P-256 key: {e}")))?;
        // SubjectPublicKeyInfo of a P-256 key: a fixed prefix and the uncompressed point
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(key.public_key().as_ref());
        let kid = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &spki));
        Ok(Signer { key, kid, rng })
    }

    /// A compact JWS of the claims.
    pub fn sign(&self, claims: &Claims) -> Result<String, ApiError> {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let body = serde_json::to_vec(claims).map_err(|e| ApiError::internal(format!("encoding token claims: {e}")))?;
        let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(body));
        let sig = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| ApiError::internal("failed to generate token: signing failed"))?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
    }

    /// The claims of a token whose signature is ours; `None` for anything else.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let (signing_input, sig) = token.rsplit_once('.')?;
        let (header, body) = signing_input.split_once('.')?;
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            return None;
        }
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref())
            .verify(signing_input.as_bytes(), &sig)
            .ok()?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
    }
}

/// Whether a bearer token looks like a JWT (three base64url parts, a JSON header).
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.split('.').count() == 3
}

/// An authenticated user, as Kubernetes' `user.Info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    pub fn new(name: String, groups: Vec<String>) -> Self {
        UserInfo { name, uid: None, groups, extra: BTreeMap::new() }
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn target(plural: &str, namespace: Option<&str>, name: &str) -> Option<Target> {
    let rt = catalogue::find("", "v1", plural)?;
    Some(Target { rt, namespace: namespace.map(str::to_string), name: Some(name.to_string()), subresource: None })
}

/// The object `plural/name` from the store, `None` when absent (or unreadable).
async fn lookup(api: &Api, plural: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
    let t = target(plural, namespace, name)?;
    handlers::load(api, &t).await.ok().map(|(obj, _)| obj)
}

fn uid_of(obj: &Value) -> &str {
    obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("")
}

/// The object a token is bound to, as long as it exists with the uid the
/// token claims; else why the token no longer authenticates.
async fn claimed(
    api: &Api,
    plural: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    uid: &str,
) -> Result<Value, String> {
    let obj = lookup(api, plural, namespace, name).await.ok_or_else(|| match namespace {
        Some(ns) => format!("{kind} {ns}/{name} has been deleted"),
        None => format!("{kind} {name} has been deleted"),
    })?;
    if uid_of(&obj) != uid {
        return Err(format!("{kind} UID ({}) does not match claim ({uid})", uid_of(&obj)));
    }
    Ok(obj)
}

/// Authenticate a service account token: signature, times, audience, and the
/// service account and bound objects still existing with the claimed uids.
pub async fn authenticate(api: &Api, token: &str) -> Result<UserInfo, String> {
    let claims = api.signer.verify(token).ok_or("invalid bearer token")?;
    claims.check(now(), &[ISSUER])?;
    let k = &claims.kubernetes;
    let ns = k.namespace.as_str();
    let sa = &k.serviceaccount;
    claimed(api, "serviceaccounts", "service account", Some(ns), &sa.name, &sa.uid).await?;
    let mut extra = BTreeMap::new();
    if let Some(pod_ref) = &k.pod {
        let pod = claimed(api, "pods", "pod", Some(ns), &pod_ref.name, &pod_ref.uid).await?;
        let deleted_at = pod.pointer("/metadata/deletionTimestamp").and_then(Value::as_str);
        if let Some(at) = deleted_at.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) {
            if at.timestamp() + DELETED_POD_GRACE_SECONDS < now() {
                return Err(format!("pod {ns}/{} is being deleted", pod_ref.name));
            }
        }
        extra.insert("authentication.kubernetes.io/pod-name".into(), vec![pod_ref.name.clone()]);
        extra.insert("authentication.kubernetes.io/pod-uid".into(), vec![pod_ref.uid.clone()]);
    }
    if let Some(secret_ref) = &k.secret {
        claimed(api, "secrets", "secret", Some(ns), &secret_ref.name, &secret_ref.uid).await?;
    }
    if let Some(node_ref) = &k.node {
        // a pod-bound token names its pod's node for information; a
        // node-bound one lives as long as the node
        if k.pod.is_none() {
            claimed(api, "nodes", "node", None, &node_ref.name, &node_ref.uid).await?;
        }
        extra.insert("authentication.kubernetes.io/node-name".into(), vec![node_ref.name.clone()]);
        if !node_ref.uid.is_empty() {
            extra.insert("authentication.kubernetes.io/node-uid".into(), vec![node_ref.uid.clone()]);
        }
    }
    if !claims.jti.is_empty() {
        extra.insert("authentication.kubernetes.io/credential-id".into(), vec![format!("JTI={}", claims.jti)]);
    }
    Ok(UserInfo {
        name: claims.sub.clone(),
        uid: Some(k.serviceaccount.uid.clone()),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".into(),
        ],
        extra,
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenRequestSpec {
    /// kubectl 1.27 sends `null` for none.
    audiences: Option<Vec<String>>,
    expiration_seconds: Option<i64>,
    bound_object_ref: Option<BoundObjectRef>,
}

#[derive(Debug, Default, Deserialize, Serialize, Clone)]
#[serde(rename_all = "camelCase")]
struct BoundObjectRef {
    #[serde(default)]
    kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    api_version: String,
    #[serde(default)]
    name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    uid: String,
}

/// `spec.expirationSeconds` errors, as Kubernetes' ValidateTokenRequest words them.
fn validate_expiration(seconds: i64) -> Vec<Cause> {
    let mut causes = Vec::new();
    let invalid = |why: &str| Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {seconds}: {why}"),
        field: "spec.expirationSeconds".into(),
    };
    if seconds < MIN_EXPIRATION_SECONDS {
        causes.push(invalid("may not specify a duration less than 10 minutes"));
    }
    if seconds > 1 << 32 {
        causes.push(invalid("may not specify a duration larger than 2^32 seconds"));
    }
    causes
}

/// POST `serviceaccounts/<name>/token`: issue a token for the service account.
pub async fn create_token(api: &Api, t: &Target, headers: &HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    let request = handlers::decode_body(headers, body)?;
    let spec: TokenRequestSpec = match request.get("spec") {
        Some(s) if !s.is_null() => serde_json::from_value(s.clone())
            .map_err(|e| ApiError::bad_request(format!("error decoding TokenRequest spec: {e}")))?,
        _ => TokenRequestSpec::default(),
    };
    let lifetime = spec.expiration_seconds.unwrap_or(DEFAULT_EXPIRATION_SECONDS);
    let causes = validate_expiration(lifetime);
    if !causes.is_empty() {
        let name = request.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
        return Err(ApiError::invalid("TokenRequest", "authentication.k8s.io", name, causes));
    }
    let name = t.name.clone().unwrap_or_default();
    let ns = t.namespace.clone().unwrap_or_else(|| "default".into());
    let (sa, _) = handlers::load(api, t).await?;
    let sa_ref = Ref { name: name.clone(), uid: uid_of(&sa).to_string() };
    let mut bound = Bound::default();
    if let Some(r) = &spec.bound_object_ref {
        let group = r.api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let (plural, namespaced) = match (group, r.kind.as_str()) {
            ("", "Pod") => ("pods", true),
            ("", "Secret") => ("secrets", true),
            ("", "Node") => ("nodes", false),
            _ => {
                let version = r.api_version.rsplit('/').next().unwrap_or("");
                return Err(ApiError::bad_request(format!(
                    "cannot bind token to object of type {group}/{version}, Kind={}",
                    r.kind
                )));
            }
        };
        let bt = target(plural, namespaced.then_some(ns.as_str()), &r.name)
            .ok_or_else(|| ApiError::internal(format!("{plural} not served")))?;
        let (obj, _) = handlers::load(api, &bt).await?;
        if r.kind == "Pod" {
            let pod_sa = obj.pointer("/spec/serviceAccountName").and_then(Value::as_str).unwrap_or("");
            if pod_sa != name {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount {name:?} to pod running with serviceaccount {pod_sa:?}"
                )));
            }
        }
        let uid = uid_of(&obj).to_string();
        if !r.uid.is_empty() && r.uid != uid {
            return Err(ApiError::conflict(
                &r.kind,
                &r.name,
                &format!(
                    "the UID in the bound object reference ({}) does not match the UID in record ({uid}). \
                     The object might have been deleted and then recreated",
                    r.uid
                ),
            ));
        }
        let this = Ref { name: r.name.clone(), uid };
        match r.kind.as_str() {
            "Pod" => {
                // the pod's node, for information (ServiceAccountTokenPodNodeInfo)
                if let Some(node) = obj.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
                    let uid = lookup(api, "nodes", None, node).await.map(|n| uid_of(&n).to_string());
                    bound.node = Some(Ref { name: node.to_string(), uid: uid.unwrap_or_default() });
                }
                bound.pod = Some(this);
            }
            "Secret" => bound.secret = Some(this),
            _ => bound.node = Some(this),
        }
    }
    let audiences = spec.audiences.clone().filter(|a| !a.is_empty()).unwrap_or_else(|| vec![ISSUER.to_string()]);
    let claims = Claims::new(&ns, sa_ref, bound, audiences.clone(), lifetime, now());
    let token = api.signer.sign(&claims)?;
    let expires = chrono::DateTime::from_timestamp(claims.exp, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    let bound_ref = spec.bound_object_ref.as_ref().map_or(Value::Null, |r| json!(r));
    Ok(json_response(
        StatusCode::CREATED,
        &json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
            "spec": {"audiences": audiences, "expirationSeconds": lifetime, "boundObjectRef": bound_ref},
            "status": {"token": token, "expirationTimestamp": expires},
        }),
    ))
}

/// Where pods find their service account's token, CA and namespace.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The prefix of the projected volume admission adds (`kube-api-access-xxxxx`).
const TOKEN_VOLUME_PREFIX: &str = "kube-api-access-";
/// The lifetime admission asks for: Kubernetes' 3607 s, one hour plus a
/// few seconds that mark the token as one a kubelet refreshes.
pub const ADMISSION_EXPIRATION_SECONDS: i64 = 3607;

/// The ServiceAccount admission plugin on pod creation, as Kubernetes'
/// (`plugin/pkg/admission/serviceaccount`): `spec.serviceAccountName`
/// defaults to `default`; the service account must exist (the `default`
/// one may still be on its way from the controllers: then the pod is
/// admitted as if it allowed automounting); unless the pod or the service
/// account sets `automountServiceAccountToken: false`, every container and
/// init container without a mount at [`TOKEN_MOUNT_PATH`] gets one of the
/// projected volume `kube-api-access-<5 random>` (token, `ca.crt`,
/// `namespace`); and the service account's imagePullSecrets are copied
/// when the pod names none.
pub async fn admit_pod(api: &Api, pod: &mut Value) -> Result<(), ApiError> {
    if pod.pointer("/metadata/annotations/kubernetes.io~1config.mirror").is_some() {
        return Ok(());
    }
    let ns = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default").to_string();
    let pod_name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return Ok(()) };
    let given = |k: &str| spec.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    let sa_name = given("serviceAccountName").or_else(|| given("serviceAccount")).unwrap_or_else(|| "default".into());
    spec.insert("serviceAccountName".into(), json!(sa_name));
    // the deprecated alias Kubernetes' v1 conversion keeps equal
    spec.insert("serviceAccount".into(), json!(sa_name));
    let sa = lookup(api, "serviceaccounts", Some(&ns), &sa_name).await;
    if sa.is_none() && sa_name != "default" {
        return Err(ApiError::forbidden(format!(
            "pods \"{pod_name}\" is forbidden: error looking up service account {ns}/{sa_name}: serviceaccount \"{sa_name}\" not found"
        )));
    }
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| sa.as_ref().and_then(|s| s.get("automountServiceAccountToken")).and_then(Value::as_bool))
        .unwrap_or(true);
    if automount {
        mount_token(spec);
    }
    let pull_secrets = sa.as_ref().and_then(|s| s.get("imagePullSecrets")).and_then(Value::as_array);
    let has_own = spec.get("imagePullSecrets").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    if let Some(secrets) = pull_secrets.filter(|s| !s.is_empty() && !has_own) {
        let refs: Vec<Value> = secrets.iter().filter_map(|s| s.get("name")).map(|n| json!({"name": n})).collect();
        spec.insert("imagePullSecrets".into(), json!(refs));
    }
    Ok(())
}

/// The projected volume of a pod's service account credentials.
pub fn token_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": ADMISSION_EXPIRATION_SECONDS, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [
                    {"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}
                ]}},
            ],
            "defaultMode": 420,
        },
    })
}

fn mount_token(spec: &mut serde_json::Map<String, Value>) {
    let volumes = spec.get("volumes").and_then(Value::as_array);
    let existing = volumes.and_then(|vs| {
        vs.iter()
            .filter_map(|v| v.get("name").and_then(Value::as_str))
            .find(|n| n.starts_with(TOKEN_VOLUME_PREFIX))
            .map(str::to_string)
    });
    let volume_name = existing.clone().unwrap_or_else(|| format!("{TOKEN_VOLUME_PREFIX}{}", handlers::random_suffix()));
    let mount = json!({"name": volume_name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else { continue };
        for c in containers {
            let Some(c) = c.as_object_mut() else { continue };
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            let Some(mounts) = mounts.as_array_mut() else { continue };
            if mounts.iter().any(|m| m.get("mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT_PATH)) {
                continue;
            }
            mounts.push(mount.clone());
            needed = true;
        }
    }
    if needed && existing.is_none() {
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if let Some(vs) = volumes.as_array_mut() {
            vs.push(token_volume(&volume_name));
        }
    }
}

/// The version of `authentication.k8s.io` a SelfSubjectReview path names
/// (`kubectl auth whoami`: v1 from kubectl 1.28, v1beta1 before).
pub fn self_subject_review_version(path: &str) -> Option<&str> {
    let version = path.strip_prefix("/apis/authentication.k8s.io/")?.strip_suffix("/selfsubjectreviews")?;
    matches!(version, "v1" | "v1beta1" | "v1alpha1").then_some(version)
}

/// POST selfsubjectreviews: who the caller is.
pub fn self_subject_review(version: &str, user: &UserInfo) -> Response {
    let mut info = json!({"username": user.name, "groups": user.groups});
    if let Some(uid) = &user.uid {
        info["uid"] = json!(uid);
    }
    if !user.extra.is_empty() {
        info["extra"] = json!(user.extra);
    }
    json_response(
        StatusCode::CREATED,
        &json!({
            "kind": "SelfSubjectReview",
            "apiVersion": format!("authentication.k8s.io/{version}"),
            "metadata": {"creationTimestamp": null},
            "status": {"userInfo": info},
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        let key = rcgen::KeyPair::generate().unwrap();
        Signer::from_pem(&key.serialize_pem()).unwrap()
    }

    fn claims(now: i64) -> Claims {
        let pod = Ref { name: "web".into(), uid: "pod-uid".into() };
        let node = Ref { name: "n1".into(), uid: "node-uid".into() };
        Claims::new(
            "default",
            Ref { name: "default".into(), uid: "sa-uid".into() },
            Bound { pod: Some(pod), node: Some(node), secret: None },
            vec![ISSUER.into()],
            3600,
            now,
        )
    }

    #[test]
    fn claims_have_kubernetes_shape() {
        let c = claims(1_000_000);
        let v = serde_json::to_value(&c).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["aud", "exp", "iat", "iss", "jti", "kubernetes.io", "nbf", "sub"]);
        assert_eq!(v["sub"], "system:serviceaccount:default:default");
        assert_eq!(v["iss"], "https://kubernetes.default.svc.cluster.local");
        assert_eq!(v["aud"], json!(["https://kubernetes.default.svc.cluster.local"]));
        assert_eq!(v["exp"].as_i64().unwrap() - v["iat"].as_i64().unwrap(), 3600);
        assert_eq!(
            v["kubernetes.io"],
            json!({"namespace": "default", "node": {"name": "n1", "uid": "node-uid"},
                   "pod": {"name": "web", "uid": "pod-uid"}, "serviceaccount": {"name": "default", "uid": "sa-uid"}})
        );
    }

    #[test]
    fn signed_tokens_verify_and_tampered_ones_do_not() {
        let s = signer();
        let c = claims(1_000_000);
        let token = s.sign(&c).unwrap();
        assert!(looks_like_jwt(&token));
        assert_eq!(s.verify(&token), Some(c.clone()));
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"].as_str().unwrap().len(), 43);
        // another key's signature
        assert_eq!(signer().verify(&token), None);
        // a changed body under the old signature
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged = c.clone();
        forged.kubernetes.serviceaccount.name = "admin".into();
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(s.verify(&format!("{}.{body}.{}", parts[0], parts[2])), None);
        // alg none
        let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        assert_eq!(s.verify(&format!("{none}.{}.", parts[1])), None);
        assert_eq!(s.verify("not a token"), None);
    }

    #[test]
    fn times_audience_and_subject_are_checked() {
        let now = 1_000_000;
        let c = claims(now);
        assert_eq!(c.check(now, &[ISSUER]), Ok(()));
        assert_eq!(c.check(now + 3600 + LEEWAY_SECONDS, &[ISSUER]), Ok(()));
        assert_eq!(c.check(now + 3600 + LEEWAY_SECONDS + 1, &[ISSUER]), Err("service account token has expired"));
        assert_eq!(c.check(now - LEEWAY_SECONDS - 1, &[ISSUER]), Err("service account token is not valid yet"));
        assert_eq!(c.check(now, &["vault"]), Err("token audiences do not include the API server's"));
        let mut other = c.clone();
        other.iss = "https://example.com".into();
        assert!(other.check(now, &[ISSUER]).is_err());
        let mut wrong_sub = c;
        wrong_sub.sub = "system:serviceaccount:kube-system:admin".into();
        assert!(wrong_sub.check(now, &[ISSUER]).is_err());
    }

    #[test]
    fn audience_may_be_a_string() {
        let mut v = serde_json::to_value(claims(5)).unwrap();
        v["aud"] = json!("vault");
        let c: Claims = serde_json::from_value(v).unwrap();
        assert_eq!(c.aud, ["vault"]);
    }

    #[test]
    fn admission_mounts_the_token_where_no_mount_is() {
        let mut pod = json!({
            "initContainers": [{"name": "init"}],
            "containers": [
                {"name": "a", "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                {"name": "b", "volumeMounts": [{"name": "own", "mountPath": TOKEN_MOUNT_PATH}]},
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
        });
        let spec = pod.as_object_mut().unwrap();
        mount_token(spec);
        let volumes = spec["volumes"].as_array().unwrap();
        assert_eq!(volumes.len(), 2);
        let name = volumes[1]["name"].as_str().unwrap().to_string();
        assert!(name.starts_with("kube-api-access-") && name.len() == "kube-api-access-".len() + 5, "{name}");
        assert_eq!(volumes[1], token_volume(&name));
        let mount = json!({"name": name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
        assert_eq!(spec["initContainers"][0]["volumeMounts"], json!([mount]));
        assert_eq!(spec["containers"][0]["volumeMounts"][1], mount);
        assert_eq!(spec["containers"][1]["volumeMounts"].as_array().unwrap().len(), 1);
        // a second pass (an existing kube-api-access volume) adds nothing
        let before = pod.clone();
        mount_token(pod.as_object_mut().unwrap());
        assert_eq!(pod, before);
    }

    #[test]
    fn expiration_limits_match_kubernetes() {
        assert!(validate_expiration(600).is_empty());
        assert!(validate_expiration(3600).is_empty());
        let short = validate_expiration(599);
        assert_eq!(short[0].field, "spec.expirationSeconds");
        assert_eq!(short[0].message, "Invalid value: 599: may not specify a duration less than 10 minutes");
        assert_eq!(
            validate_expiration((1 << 32) + 1)[0].message,
            "Invalid value: 4294967297: may not specify a duration larger than 2^32 seconds"
        );
    }
}
