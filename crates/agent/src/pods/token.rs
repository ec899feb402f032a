//! Service account tokens for projected volumes, as the kubelet's token
//! manager (`pkg/kubelet/token`) keeps them: one TokenRequest per pod,
//! service account, audience and lifetime, bound to the pod, cached, and
//! requested again once 80% of its lifetime has passed or it is 24 hours
//! old, whichever comes first.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};

/// What a token is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    pub namespace: String,
    pub service_account: String,
    pub pod_name: String,
    pub pod_uid: String,
    /// `None`: the API server's own audience.
    pub audience: Option<String>,
    pub expiration_seconds: i64,
}

/// A token and when it was issued and expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub token: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The longest a token is used before it is requested again.
const MAX_TTL: Duration = Duration::hours(24);

impl Issued {
    /// Whether to request a new token: 80% of the lifetime or 24 h passed.
    pub fn requires_refresh(&self, now: DateTime<Utc>) -> bool {
        let lifetime = self.expires_at - self.issued_at;
        let refresh_at = self.issued_at + (lifetime * 4 / 5).min(MAX_TTL);
        now >= refresh_at
    }
}

/// Tokens by what they are for.
#[derive(Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<TokenKey, Issued>>,
}

impl TokenCache {
    /// A token for `key`: the cached one while fresh, else a new one from `request`.
    pub async fn get<F, Fut>(&self, key: &TokenKey, now: DateTime<Utc>, request: F) -> Result<String, String>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Issued, String>>,
    {
        if let Some(t) = self.lookup(key).filter(|t| !t.requires_refresh(now)) {
            return Ok(t.token);
        }
        match request().await {
            Ok(issued) => {
                let token = issued.token.clone();
                if let Ok(mut tokens) = self.tokens.lock() {
                    // tokens of gone pods expire and go here
                    tokens.retain(|_, t| t.expires_at > now);
                    tokens.insert(key.clone(), issued);
                }
                Ok(token)
            }
            // a token not yet expired still serves while the API is unreachable
            Err(e) => match self.lookup(key).filter(|t| t.expires_at > now) {
                Some(t) => {
                    tracing::warn!(error = %e, pod = %key.pod_name, "refreshing a service account token failed; keeping the current one");
                    Ok(t.token)
                }
                None => Err(e),
            },
        }
    }

    fn lookup(&self, key: &TokenKey) -> Option<Issued> {
        self.tokens.lock().ok().and_then(|t| t.get(key).cloned())
    }
}

/// Ask the API server for a token bound to the pod.
pub async fn request(client: &kube::Client, key: &TokenKey) -> Result<Issued, String> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &key.namespace);
    let tr = TokenRequest {
        spec: TokenRequestSpec {
            audiences: key.audience.iter().cloned().collect(),
            expiration_seconds: Some(key.expiration_seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(key.pod_name.clone()),
                uid: Some(key.pod_uid.clone()),
            }),
        },
        ..Default::default()
    };
    let what = format!("token for service account {}/{}", key.namespace, key.service_account);
    let out = api
        .create_token_request(&key.service_account, &PostParams::default(), &tr)
        .await
        .map_err(|e| format!("requesting a {what}: {e}"))?;
    let status = out.status.ok_or_else(|| format!("{what}: the TokenRequest came back without a status"))?;
    let expires_at = status.expiration_timestamp.0;
    let lifetime = out.spec.expiration_seconds.unwrap_or(key.expiration_seconds);
    let expires_at = DateTime::<Utc>::from_timestamp(expires_at.as_second(), 0)
        .ok_or_else(|| format!("{what}: expirationTimestamp out of range"))?;
    Ok(Issued { token: status.token, issued_at: expires_at - Duration::seconds(lifetime), expires_at })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(lifetime_s: i64) -> Issued {
        let at = DateTime::<Utc>::from_timestamp(1_000_000, 0).unwrap();
        Issued { token: "t".into(), issued_at: at, expires_at: at + Duration::seconds(lifetime_s) }
    }

    #[test]
    fn refresh_at_80_percent_or_24_hours() {
        let t = issued(3607);
        let at = |s: i64| t.issued_at + Duration::seconds(s);
        assert!(!t.requires_refresh(at(2885)));
        assert!(t.requires_refresh(at(2886)));
        let long = issued(7 * 24 * 3600);
        assert!(!long.requires_refresh(long.issued_at + Duration::hours(24) - Duration::seconds(1)));
        assert!(long.requires_refresh(long.issued_at + Duration::hours(24)));
    }

    #[tokio::test]
    async fn cache_serves_fresh_tokens_and_refreshes_old_ones() {
        let cache = TokenCache::default();
        let key = TokenKey {
            namespace: "default".into(),
            service_account: "default".into(),
            pod_name: "p".into(),
            pod_uid: "u".into(),
            audience: None,
            expiration_seconds: 3607,
        };
        let first = issued(3607);
        let t0 = first.issued_at;
        let got = cache.get(&key, t0, || async { Ok(first.clone()) }).await.unwrap();
        assert_eq!(got, "t");
        let got = cache.get(&key, t0 + Duration::seconds(60), || async { Err::<Issued, _>("not asked".into()) }).await;
        assert_eq!(got.unwrap(), "t");
        let mut second = issued(3607);
        second.token = "t2".into();
        let later = t0 + Duration::seconds(3000);
        assert_eq!(cache.get(&key, later, || async { Ok(second) }).await.unwrap(), "t2");
        // a failed refresh keeps a token that has not expired
        let much_later = t0 + Duration::seconds(3500);
        let kept = cache.get(&key, much_later, || async { Err::<Issued, _>("down".into()) }).await;
        assert_eq!(kept.unwrap(), "t2");
    }
}
