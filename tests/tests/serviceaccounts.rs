//! Service account tokens against a real server: TokenRequest through
//! kube-rs and real kubectl (`create token`, `auth whoami`), bearer
//! authentication with them, the tokens the server must refuse (expired,
//! forged, another audience, deleted service account, deleted bound pod),
//! and the ServiceAccount admission of pods.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{json, Value};
use skiff_apiserver::serviceaccount::{Bound, Claims, Ref, Signer, ISSUER};
use skiff_tests::*;

fn claims_of(token: &str) -> Value {
    let body = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap()
}

/// The status code of listing pods with `token` as the bearer token.
async fn status_with(cluster: &Cluster, token: &str) -> u16 {
    let client = cluster.client_as(&User::Token(token.to_string())).await;
    let (code, _) = raw(&client, "GET", "/api/v1/namespaces/default/pods", Vec::new()).await;
    code
}

async fn create_sa(client: &kube::Client, ns: &str, name: &str) -> ServiceAccount {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    api.create(&PostParams::default(), &sa).await.unwrap()
}

async fn token_request(client: &kube::Client, ns: &str, sa: &str, spec: Value) -> (u16, Value) {
    let path = format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token");
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
    let (code, text) = raw(client, "POST", &path, serde_json::to_vec(&body).unwrap()).await;
    (code, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn pod(name: &str, extra: Value) -> Pod {
    let mut v = json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_token_and_whoami() {
    let cluster = Cluster::start();
    for version in [V1_27, "1.32", V1_33] {
        let out = cluster.kubectl(version, &["create", "token", "default"]);
        out.success();
        let token = out.stdout.trim().to_string();
        let claims = claims_of(&token);
        assert_eq!(claims["sub"], "system:serviceaccount:default:default", "kubectl {version}");
        assert_eq!(claims["iss"], ISSUER);
        assert_eq!(claims["aud"], json!([ISSUER]));
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3600);
        assert_eq!(claims["kubernetes.io"]["namespace"], "default");
        assert_eq!(claims["kubernetes.io"]["serviceaccount"]["name"], "default");
        assert_eq!(status_with(&cluster, &token).await, 200, "kubectl {version}");

        // whoami as the token's user
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("token.yaml");
        std::fs::write(&kubeconfig, cluster.kubeconfig_yaml(&User::Token(token.clone()))).unwrap();
        let mut as_sa = (*cluster).clone();
        as_sa.kubeconfig = kubeconfig;
        let out = as_sa.kubectl(version, &["auth", "whoami", "-o", "json"]);
        out.success();
        let review: Value = serde_json::from_str(&out.stdout).unwrap();
        let info = &review["status"]["userInfo"];
        assert_eq!(info["username"], "system:serviceaccount:default:default", "kubectl {version}");
        assert_eq!(
            info["groups"],
            json!(["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"])
        );
        let table = as_sa.kubectl(version, &["auth", "whoami"]);
        table.success().stdout_has("system:serviceaccount:default:default");

        let out = cluster.kubectl(version, &["create", "token", "default", "--duration", "5m", "--audience", "vault"]);
        out.exit_code(1).stderr_has(
            "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 300: \
             may not specify a duration less than 10 minutes",
        );
        let out = cluster.kubectl(version, &["create", "token", "nobody"]);
        out.exit_code(1).stderr_has("serviceaccounts \"nobody\" not found");
        let out = cluster.kubectl(version, &["create", "token", "default", "--audience", "vault", "--duration", "2h"]);
        out.success();
        let vault = claims_of(out.stdout.trim());
        assert_eq!(vault["aud"], json!(["vault"]));
        assert_eq!(vault["exp"].as_i64().unwrap() - vault["iat"].as_i64().unwrap(), 7200);
        // a token for another audience does not open the API
        assert_eq!(status_with(&cluster, out.stdout.trim()).await, 401);
    }
    // the admin still sees itself
    let out = cluster.kubectl(V1_33, &["auth", "whoami"]);
    out.success().stdout_has("system:admin").stdout_has("system:masters");
    // the subresource is in discovery, as Kubernetes lists it
    let client = cluster.client().await;
    let (_, list) = raw(&client, "GET", "/api/v1", Vec::new()).await;
    let list: Value = serde_json::from_str(&list).unwrap();
    let token = list["resources"].as_array().unwrap().iter().find(|r| r["name"] == "serviceaccounts/token").unwrap();
    assert_eq!(token["kind"], "TokenRequest");
    assert_eq!(token["group"], "authentication.k8s.io");
    assert_eq!(token["verbs"], json!(["create"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_get_401() {
    let cluster = Cluster::start();
    let admin = cluster.client().await;
    let ns = unique_name("sa");
    create_namespace(&admin, &ns).await;
    create_sa(&admin, &ns, "default").await;
    let robot = create_sa(&admin, &ns, "robot").await;
    let (code, tr) = token_request(&admin, &ns, "robot", json!({})).await;
    assert_eq!(code, 201, "{tr}");
    assert_eq!(tr["kind"], "TokenRequest");
    assert_eq!(tr["spec"]["audiences"], json!([ISSUER]));
    assert_eq!(tr["spec"]["expirationSeconds"], 3600);
    let token = tr["status"]["token"].as_str().unwrap().to_string();
    assert!(tr["status"]["expirationTimestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(status_with(&cluster, &token).await, 200);

    // tokens signed with the cluster's key, but expired, or not yet valid
    let key = std::fs::read_to_string(cluster.data_dir().join("tls/service-account.key")).unwrap();
    let signer = Signer::from_pem(&key).unwrap();
    let sa_ref = Ref { name: "robot".into(), uid: robot.metadata.uid.clone().unwrap() };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = |at: i64| Claims::new(&ns, sa_ref.clone(), Bound::default(), vec![ISSUER.into()], 600, at);
    assert_eq!(status_with(&cluster, &signer.sign(&claims(now)).unwrap()).await, 200);
    assert_eq!(status_with(&cluster, &signer.sign(&claims(now - 7200)).unwrap()).await, 401);
    assert_eq!(status_with(&cluster, &signer.sign(&claims(now + 3600)).unwrap()).await, 401);
    // forged: another key; a changed body under the real signature
    let other = Signer::from_pem(&rcgen_key()).unwrap();
    assert_eq!(status_with(&cluster, &other.sign(&claims(now)).unwrap()).await, 401);
    let parts: Vec<&str> = token.split('.').collect();
    let mut body = claims_of(&token);
    body["kubernetes.io"]["serviceaccount"]["name"] = json!("default");
    body["sub"] = json!(format!("system:serviceaccount:{ns}:default"));
    let forged_body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body.to_string());
    assert_eq!(status_with(&cluster, &format!("{}.{forged_body}.{}", parts[0], parts[2])).await, 401);

    // the service account deleted, then recreated (another uid): the old token is dead
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), &ns);
    sas.delete("robot", &DeleteParams::default()).await.unwrap();
    assert_eq!(status_with(&cluster, &token).await, 401);
    create_sa(&admin, &ns, "robot").await;
    assert_eq!(status_with(&cluster, &token).await, 401);
    let (_, fresh) = token_request(&admin, &ns, "robot", json!({})).await;
    assert_eq!(status_with(&cluster, fresh["status"]["token"].as_str().unwrap()).await, 200);

    // bound to a pod: valid while the pod lives
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    let p = pods.create(&PostParams::default(), &pod("web", json!({"serviceAccountName": "robot"}))).await.unwrap();
    let uid = p.metadata.uid.clone().unwrap();
    let bound = json!({"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": uid}, "expirationSeconds": 3607});
    let (code, tr) = token_request(&admin, &ns, "robot", bound).await;
    assert_eq!(code, 201, "{tr}");
    let pod_token = tr["status"]["token"].as_str().unwrap().to_string();
    let c = claims_of(&pod_token);
    assert_eq!(c["kubernetes.io"]["pod"], json!({"name": "web", "uid": uid}));
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 3607);
    assert_eq!(status_with(&cluster, &pod_token).await, 200);
    let client = cluster.client_as(&User::Token(pod_token.clone())).await;
    let (code, review) =
        raw(&client, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", b"{}".to_vec()).await;
    assert_eq!(code, 201, "{review}");
    let review: Value = serde_json::from_str(&review).unwrap();
    assert_eq!(review["status"]["userInfo"]["extra"]["authentication.kubernetes.io/pod-name"], json!(["web"]));
    pods.delete("web", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    for _ in 0..50 {
        if pods.get_opt("web").await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status_with(&cluster, &pod_token).await, 401);

    // requests Kubernetes refuses, with its words
    let (code, e) = token_request(&admin, &ns, "robot", json!({"expirationSeconds": 599})).await;
    assert_eq!(code, 422);
    assert_eq!(
        e["message"],
        "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"
    );
    let (code, e) = token_request(&admin, &ns, "ghost", json!({})).await;
    assert_eq!((code, e["message"].as_str().unwrap()), (404, "serviceaccounts \"ghost\" not found"));
    pods.create(&PostParams::default(), &pod("api", json!({"serviceAccountName": "robot"}))).await.unwrap();
    let wrong_uid = json!({"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "api", "uid": "0000"}});
    let (code, e) = token_request(&admin, &ns, "robot", wrong_uid).await;
    assert_eq!(code, 409, "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("the UID in the bound object reference (0000) does not match"),
        "{e}"
    );
    let other_sa = json!({"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "api"}});
    let (code, e) = token_request(&admin, &ns, "default", other_sa).await;
    assert_eq!(code, 400, "{e}");
    assert_eq!(
        e["message"],
        "cannot bind token for serviceaccount \"default\" to pod running with serviceaccount \"robot\""
    );
    let cm = json!({"boundObjectRef": {"apiVersion": "v1", "kind": "ConfigMap", "name": "x"}});
    let (code, e) = token_request(&admin, &ns, "robot", cm).await;
    assert_eq!(
        (code, e["message"].as_str().unwrap()),
        (400, "cannot bind token to object of type /v1, Kind=ConfigMap")
    );
    let (code, e) = token_request(
        &admin,
        &ns,
        "robot",
        json!({"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "gone"}}),
    )
    .await;
    assert_eq!((code, e["message"].as_str().unwrap()), (404, "pods \"gone\" not found"));
}

fn rcgen_key() -> String {
    // a P-256 key of no cluster: the test server's TLS dir has one we do not use
    let dir = tempfile::tempdir().unwrap();
    let tls = skiff_apiserver::tls::ClusterTls::load_or_generate(
        dir.path(),
        &skiff_apiserver::tls::ServingNames::standard(&[], None),
    )
    .unwrap();
    tls.service_account_key_pem
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_the_service_account_volume_unless_they_opt_out() {
    let cluster = Cluster::start();
    let admin = cluster.client().await;
    let ns = unique_name("admit");
    create_namespace(&admin, &ns).await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    let with_init = json!({"initContainers": [{"name": "init", "image": "busybox"}]});
    let p = pods.create(&PostParams::default(), &pod("plain", with_init)).await.unwrap();
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(v["spec"]["serviceAccountName"], "default");
    assert_eq!(v["spec"]["serviceAccount"], "default");
    let volumes = v["spec"]["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 1);
    let name = volumes[0]["name"].as_str().unwrap();
    assert!(name.starts_with("kube-api-access-") && name.len() == 21, "{name}");
    assert_eq!(
        volumes[0]["projected"],
        json!({"sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
        ], "defaultMode": 420})
    );
    let mount = json!([{"name": name, "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]);
    assert_eq!(v["spec"]["containers"][0]["volumeMounts"], mount);
    assert_eq!(v["spec"]["initContainers"][0]["volumeMounts"], mount);

    // the pod opts out
    let p =
        pods.create(&PostParams::default(), &pod("no", json!({"automountServiceAccountToken": false}))).await.unwrap();
    assert!(p.spec.unwrap().volumes.is_none());
    // the service account opts out, the pod may opt back in
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), &ns);
    let quiet: ServiceAccount = serde_json::from_value(
        json!({"metadata": {"name": "quiet"}, "automountServiceAccountToken": false, "imagePullSecrets": [{"name": "regcred"}]}),
    )
    .unwrap();
    sas.create(&PostParams::default(), &quiet).await.unwrap();
    let p = pods.create(&PostParams::default(), &pod("q", json!({"serviceAccountName": "quiet"}))).await.unwrap();
    let spec = p.spec.unwrap();
    assert!(spec.volumes.is_none());
    assert_eq!(spec.image_pull_secrets.unwrap()[0].name, "regcred");
    let p = pods
        .create(
            &PostParams::default(),
            &pod("q2", json!({"serviceAccountName": "quiet", "automountServiceAccountToken": true})),
        )
        .await
        .unwrap();
    assert_eq!(p.spec.unwrap().volumes.unwrap().len(), 1);
    // a service account that does not exist
    let e = api_error(pods.create(&PostParams::default(), &pod("x", json!({"serviceAccountName": "nobody"}))).await);
    assert_eq!(e.code, 403);
    assert_eq!(
        e.message,
        format!("pods \"x\" is forbidden: error looking up service account {ns}/nobody: serviceaccount \"nobody\" not found")
    );
    // kubectl lists service accounts with Kubernetes' columns
    let out = cluster.kubectl(V1_33, &["get", "sa", "-n", &ns]);
    out.success();
    assert_eq!(out.column("NAME"), ["quiet"]);
    assert_eq!(out.column("SECRETS"), ["0"]);
    let listed = sas.list(&ListParams::default()).await.unwrap().items.len();
    assert_eq!(listed, 1);
}
