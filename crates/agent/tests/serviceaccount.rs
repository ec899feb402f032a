//! End to end: a pod's service account credentials. The API server's
//! admission adds the `kube-api-access-*` projected volume; the agent fills
//! it with a TokenRequest token bound to the pod, the cluster CA from
//! `kube-root-ca.crt` and the namespace; the container reads them at
//! /var/run/secrets/kubernetes.io/serviceaccount; and the token
//! authenticates to the API server as the pod's service account until the
//! pod is deleted. Runs in a network namespace the test makes, with a
//! containerd of its own (see `support`).

#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use kube::api::DeleteParams;
use serde_json::{json, Value};
use skiff_agent::testing::TEST_IMAGE;
use support::with_cluster;

#[test]
#[ignore = "the agent process the end-to-end tests start"]
fn agent_child() {
    support::agent_child();
}

const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// POST a SelfSubjectReview with `token`: the HTTP status and the username.
async fn whoami(server: &str, ca_pem: &str, token: &str) -> (u16, String) {
    let client = skiff_agent::client::client(server, token, ca_pem).unwrap();
    let req = http::Request::builder()
        .method("POST")
        .uri("/apis/authentication.k8s.io/v1/selfsubjectreviews")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(kube::client::Body::from(b"{}".to_vec()))
        .unwrap();
    let resp = client.send(req).await.unwrap();
    let code = resp.status().as_u16();
    let body = resp.into_body().collect_bytes().await.unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (code, v["status"]["userInfo"]["username"].as_str().unwrap_or("").to_string())
}

#[test]
fn pods_get_a_token_the_ca_and_their_namespace() {
    with_cluster(|c| async move {
        let script = format!(
            "echo ns=$(cat {MOUNT}/namespace); head -1 {MOUNT}/ca.crt; echo token-bytes=$(wc -c < {MOUNT}/token); \
             ls {MOUNT}; touch {MOUNT}/x 2>/dev/null || echo read-only; sleep 3600"
        );
        let created = c
            .create_pod(json!({"metadata": {"name": "sa-pod"}, "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "app", "image": TEST_IMAGE, "command": ["sh", "-c", script]}]}}))
            .await;
        let spec = created.spec.clone().unwrap();
        assert_eq!(spec.service_account_name.as_deref(), Some("default"));
        let volume = spec.volumes.unwrap()[0].name.clone();
        assert!(volume.starts_with("kube-api-access-"), "{volume}");
        c.wait_pod("sa-pod", 90, "Running", |p: &Pod| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .await;

        // what the container sees
        let log = c.wait_log("sa-pod", "app", "token-bytes=", 30).await;
        assert!(log.contains("ns=default"), "{log}");
        assert!(log.contains("-----BEGIN CERTIFICATE-----"), "{log}");
        assert!(log.contains("read-only"), "the volume is mounted read-only: {log}");
        for name in ["ca.crt", "namespace", "token"] {
            assert!(log.lines().any(|l| l == name), "{name} listed: {log}");
        }

        // the volume on the node: the token, the cluster CA, the namespace
        let uid = created.metadata.uid.clone().unwrap();
        let dir = c.agent_dir().join("pods").join(&uid).join("volumes").join(&volume);
        let token = std::fs::read_to_string(dir.join("token")).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("ca.crt")).unwrap(), c.ca_pem);
        assert_eq!(std::fs::read_to_string(dir.join("namespace")).unwrap(), "default");
        let mode = std::fs::metadata(dir.join("token")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "defaultMode 420");
        assert!(log.contains(&format!("token-bytes={}", token.len())), "{log}");
        let body = token.split('.').nth(1).unwrap();
        let claims: Value =
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap();
        assert_eq!(claims["sub"], "system:serviceaccount:default:default");
        assert_eq!(claims["kubernetes.io"]["pod"], json!({"name": "sa-pod", "uid": uid}));
        assert_eq!(claims["kubernetes.io"]["node"]["name"], support::NODE);
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3607);

        // the token is the pod's identity at the API server
        let (code, user) = whoami(&c.server, &c.ca_pem, &token).await;
        assert_eq!((code, user.as_str()), (201, "system:serviceaccount:default:default"));
        // a sync later the agent keeps the same token (it is not re-requested every sync)
        tokio::time::sleep(Duration::from_secs(12)).await;
        assert_eq!(std::fs::read_to_string(dir.join("token")).unwrap(), token);

        // once the pod is gone, so is the token's identity
        c.pods().delete("sa-pod", &DeleteParams::default()).await.unwrap();
        c.wait_gone("sa-pod", 60).await;
        let (code, _) = whoami(&c.server, &c.ca_pem, &token).await;
        assert_eq!(code, 401);
    });
}
