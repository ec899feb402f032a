//! The REST semantics a kube-rs client relies on: paging, selectors,
//! generateName, optimistic concurrency, dry runs, deletecollection,
//! Service allocations, limits, and who may call what.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::{Mutex, Weak};

use futures::future::join_all;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use skiff_tests::{api_error, create_namespace, raw, unique_name, Cluster, User};

static SERVER: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());

fn configmap(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})).unwrap()
}

async fn namespace(c: &Cluster, prefix: &str) -> (kube::Client, String) {
    let client = c.client().await;
    let ns = unique_name(prefix);
    create_namespace(&client, &ns).await;
    (client, ns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_with_limit_and_continue() {
    let c = Cluster::shared(&SERVER);
    let (client, ns) = namespace(&c, "paging").await;
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    let names: Vec<String> = (0..505).map(|i| format!("cm-{i:03}")).collect();
    for chunk in names.chunks(50) {
        let creates = chunk.iter().map(|n| {
            let api = api.clone();
            let cm = configmap(n, json!({}));
            async move { api.create(&PostParams::default(), &cm).await.unwrap() }
        });
        join_all(creates).await;
    }

    let mut seen = Vec::new();
    let mut pages = 0;
    let mut lp = ListParams::default().limit(100);
    loop {
        let page = api.list(&lp).await.unwrap();
        pages += 1;
        seen.extend(page.items.iter().map(|cm| cm.metadata.name.clone().unwrap()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => {
                assert_eq!(page.items.len(), 100, "a page that continues is full");
                let remaining = page.metadata.remaining_item_count.unwrap_or(-1);
                assert_eq!(remaining as usize, 505 - seen.len(), "remainingItemCount after page {pages}");
                lp = lp.continue_token(&token);
            }
            None => break,
        }
        assert!(pages <= 6, "more than 6 pages");
    }
    assert_eq!(pages, 6);
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicates");
    assert_eq!(seen, names, "every item, in name order");

    // a bad continue token is a 400, not a silent restart
    let status = api_error(api.list(&ListParams::default().limit(10).continue_token("garbage")).await);
    assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_and_field_selectors_filter_lists() {
    let c = Cluster::shared(&SERVER);
    let (client, ns) = namespace(&c, "selectors").await;
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    for (name, labels) in [
        ("web-prod", json!({"app": "web", "env": "prod"})),
        ("web-dev", json!({"app": "web", "env": "dev"})),
        ("db-prod", json!({"app": "db", "env": "prod", "tier": "backend"})),
        ("plain", json!({})),
    ] {
        api.create(&PostParams::default(), &configmap(name, labels)).await.unwrap();
    }
    let names = |lp: ListParams| {
        let api = api.clone();
        async move {
            let mut n: Vec<String> =
                api.list(&lp).await.unwrap().items.into_iter().map(|cm| cm.metadata.name.unwrap()).collect();
            n.sort();
            n
        }
    };
    let labels = |s: &str| ListParams::default().labels(s);
    assert_eq!(names(labels("app=web")).await, ["web-dev", "web-prod"]);
    assert_eq!(names(labels("app==web,env=prod")).await, ["web-prod"]);
    assert_eq!(names(labels("app!=web")).await, ["db-prod", "plain"]);
    assert_eq!(names(labels("env in (dev,staging)")).await, ["web-dev"]);
    assert_eq!(names(labels("env notin (dev)")).await, ["db-prod", "plain", "web-prod"]);
    assert_eq!(names(labels("tier")).await, ["db-prod"]);
    assert_eq!(names(labels("!tier")).await, ["plain", "web-dev", "web-prod"]);
    assert_eq!(names(labels("app=web,!tier,env notin (prod)")).await, ["web-dev"]);
    assert_eq!(names(ListParams::default().fields("metadata.name=db-prod")).await, ["db-prod"]);
    assert_eq!(names(ListParams::default().fields("metadata.name!=db-prod").labels("env=prod")).await, ["web-prod"]);
    // paging over a filtered list still returns every match once
    let page = api.list(&labels("env").limit(1)).await.unwrap();
    assert_eq!(page.items.len(), 1);
    let rest = api.list(&labels("env").limit(5).continue_token(page.metadata.continue_.as_deref().unwrap())).await;
    assert_eq!(rest.unwrap().items.len(), 2);

    let status = api_error(api.list(&labels("app in web")).await);
    assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest"), "{status:?}");
    let status = api_error(api.list(&ListParams::default().fields("data.k=v")).await);
    assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest"), "{status:?}");
    assert!(status.message.contains("data.k"), "names the unsupported field: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_name_gets_a_random_suffix() {
    let c = Cluster::shared(&SERVER);
    let (client, ns) = namespace(&c, "generate").await;
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"generateName": "job-"}})).unwrap();
    let a = api.create(&PostParams::default(), &cm).await.unwrap().metadata;
    let b = api.create(&PostParams::default(), &cm).await.unwrap().metadata;
    for m in [&a, &b] {
        let name = m.name.as_deref().unwrap();
        assert!(name.starts_with("job-") && name.len() == "job-".len() + 5, "{name}");
        assert_eq!(m.generate_name.as_deref(), Some("job-"));
    }
    assert_ne!(a.name, b.name);
    api.get(a.name.as_deref().unwrap()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_with_a_stale_resource_version_is_a_conflict() {
    let c = Cluster::shared(&SERVER);
    let (client, ns) = namespace(&c, "conflict").await;
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    let created = api.create(&PostParams::default(), &configmap("cm", json!({}))).await.unwrap();
    let mut first = created.clone();
    first.data = Some([("k".to_string(), "first".to_string())].into());
    let updated = api.replace("cm", &PostParams::default(), &first).await.unwrap();
    assert_ne!(updated.metadata.resource_version, created.metadata.resource_version);

    let mut stale = created;
    stale.data = Some([("k".to_string(), "stale".to_string())].into());
    let status = api_error(api.replace("cm", &PostParams::default(), &stale).await);
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"), "{status:?}");
    assert_eq!(
        status.message,
        "Operation cannot be fulfilled on configmaps \"cm\": the object has been modified; please apply your changes to the latest version and try again"
    );
    assert_eq!(api.get("cm").await.unwrap().data.unwrap()["k"], "first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_delete_keeps_the_object() {
    let c = Cluster::shared(&SERVER);
    let (client, ns) = namespace(&c, "dryrun").await;
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    let created = api.create(&PostParams::default(), &configmap("keep", json!({}))).await.unwrap();
    let dp = DeleteParams { dry_run: true, ..DeleteParams::default() };
    let answer = api.delete("keep", &dp).await.unwrap();
    let answered = answer.left().expect("the object that would be deleted");
    assert_eq!(answered.metadata.name.as_deref(), Some("keep"));
    let still = api.get("keep").await.unwrap();
    assert_eq!(still.metadata.resource_version, created.metadata.resource_version, "untouched");
    // and a dry-run create stores nothing
    let pp = PostParams { dry_run: true, ..PostParams::default() };
    api.create(&pp, &configmap("ghost", json!({}))).await.unwrap();
    let status = api_error(api.get("ghost").await);
    assert_eq!((status.code, status.message.as_str()), (404, "configmaps \"ghost\" not found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_collection_removes_only_what_the_selector_matches() {
    let c = Cluster::shared(&SERVER);
    let (client, ns) = namespace(&c, "deletecollection").await;
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    for (name, labels) in [("a", json!({"batch": "1"})), ("b", json!({"batch": "1"})), ("c", json!({"batch": "2"}))] {
        api.create(&PostParams::default(), &configmap(name, labels)).await.unwrap();
    }
    let gone = api.delete_collection(&DeleteParams::default(), &ListParams::default().labels("batch=1")).await.unwrap();
    let gone: Vec<String> =
        gone.left().expect("the deleted list").items.into_iter().map(|c| c.metadata.name.unwrap()).collect();
    assert_eq!(gone, ["a", "b"]);
    let left: Vec<String> =
        api.list(&ListParams::default()).await.unwrap().items.into_iter().map(|c| c.metadata.name.unwrap()).collect();
    assert_eq!(left, ["c"]);
}

fn service(name: &str, cluster_ip: &str, node_port: i32) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"type": "NodePort", "clusterIP": cluster_ip, "selector": {"app": name},
                 "ports": [{"port": 80, "nodePort": node_port}]},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_service_releases_its_cluster_ip_and_node_port() {
    let c = Cluster::shared(&SERVER);
    let (client, ns) = namespace(&c, "release").await;
    let api: Api<Service> = Api::namespaced(client, &ns);
    let (ip, port) = ("10.96.200.10", 30210);
    let first = api.create(&PostParams::default(), &service("first", ip, port)).await.unwrap();
    let spec = first.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some(ip));
    assert_eq!(spec.ports.unwrap()[0].node_port, Some(port));

    // while it exists, both values are taken
    let status = api_error(api.create(&PostParams::default(), &service("second", ip, 0)).await);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"), "{status:?}");
    assert!(status.message.contains("spec.clusterIPs: Invalid value: []string{\"10.96.200.10\"}: failed to allocate IP 10.96.200.10: provided IP is already allocated"), "{status:?}");
    let status = api_error(api.create(&PostParams::default(), &service("second", "", port)).await);
    assert!(
        status.message.contains("spec.ports[0].nodePort: Invalid value: 30210: provided port is already allocated"),
        "{status:?}"
    );

    api.delete("first", &DeleteParams::default()).await.unwrap();
    let second = api.create(&PostParams::default(), &service("second", ip, port)).await.unwrap();
    let spec = second.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some(ip));
    assert_eq!(spec.ports.unwrap()[0].node_port, Some(port));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_failed_duplicate_create_keeps_the_existing_services_allocations() {
    let c = Cluster::shared(&SERVER);
    let (client, ns) = namespace(&c, "duplicate").await;
    let api: Api<Service> = Api::namespaced(client, &ns);
    let (ip, port) = ("10.96.200.20", 30220);
    api.create(&PostParams::default(), &service("owner", ip, port)).await.unwrap();
    let status = api_error(api.create(&PostParams::default(), &service("owner", ip, port)).await);
    assert_eq!((status.code, status.reason.as_str()), (409, "AlreadyExists"), "{status:?}");
    // the first Service still holds both values
    let status = api_error(api.create(&PostParams::default(), &service("thief", "", port)).await);
    assert!(status.message.contains("provided port is already allocated"), "{status:?}");
    let status = api_error(api.create(&PostParams::default(), &service("thief", ip, 0)).await);
    assert!(status.message.contains("provided IP is already allocated"), "{status:?}");
}

fn big_configmap() -> String {
    let big = "x".repeat(3 * 1024 * 1024 + 512 * 1024);
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"big": big}}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_3_mib_is_413_for_kubectl() {
    let c = Cluster::shared(&SERVER);
    let (client, ns) = namespace(&c, "large").await;
    let body = big_configmap();
    for v in skiff_tests::KUBECTL_VERSIONS {
        c.kubectl_stdin(v, &["-n", &ns, "create", "-f", "-"], &body).exit_code(1).stderr_is(
            "Error from server (RequestEntityTooLarge): error when creating \"STDIN\": Request entity too large: limit is 3145728\n",
        );
    }
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    api_error(api.get("big").await);
    // half a MiB is fine
    let ok: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "small"}, "data": {"v": "x".repeat(512 * 1024)}})).unwrap();
    api.create(&PostParams::default(), &ok).await.unwrap();
}

/// kube-rs speaks HTTP/1.1 (kubectl uses HTTP/2, where this works).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_body_over_3_mib_is_413_for_kube_rs() {
    let c = Cluster::shared(&SERVER);
    let (client, ns) = namespace(&c, "large-kube").await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let cm: ConfigMap = serde_json::from_str(&big_configmap()).unwrap();
    let status = api_error(api.create(&PostParams::default(), &cm).await);
    assert_eq!((status.code, status.reason.as_str()), (413, "RequestEntityTooLarge"), "{status:?}");
    assert_eq!(status.message, "Request entity too large: limit is 3145728");
    let (code, body) =
        raw(&client, "POST", &format!("/api/v1/namespaces/{ns}/configmaps"), big_configmap().into_bytes()).await;
    assert_eq!(code, 413, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404() {
    let c = Cluster::shared(&SERVER);
    let client = c.client().await;
    for path in ["/api/v1/namespaces/default/widgets", "/apis/example.com/v1/things", "/nothing-here"] {
        let (code, body) = raw(&client, "GET", path, Vec::new()).await;
        assert_eq!(code, 404, "{path}: {body}");
        let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        assert_eq!(status["kind"], "Status", "{path}: {body}");
        assert_eq!(status["reason"], "NotFound", "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_credentials_are_401_except_health_and_version() {
    let c = Cluster::shared(&SERVER);
    let anonymous = c.client_as(&User::Anonymous).await;
    let (code, body) = raw(&anonymous, "GET", "/api/v1/namespaces", Vec::new()).await;
    assert_eq!(code, 401, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status["reason"].as_str(), status["message"].as_str()), (Some("Unauthorized"), Some("Unauthorized")));
    for path in ["/api/v1/namespaces/default/configmaps", "/apis/apps/v1/deployments", "/api", "/metrics"] {
        assert_eq!(raw(&anonymous, "GET", path, Vec::new()).await.0, 401, "{path}");
    }
    for path in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(raw(&anonymous, "GET", path, Vec::new()).await, (200, "ok".to_string()), "{path}");
    }
    let (code, body) = raw(&anonymous, "GET", "/version", Vec::new()).await;
    assert_eq!(code, 200, "{body}");
    let version: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(version["major"], "1");
    assert!(version["gitVersion"].as_str().is_some_and(|v| v.starts_with("v1.")), "{version}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_token_is_accepted_as_a_bearer_token() {
    let c = Cluster::shared(&SERVER);
    let node = c.client_as(&User::Token(c.node_token().to_string())).await;
    let (code, body) = raw(&node, "GET", "/api/v1/namespaces", Vec::new()).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"kube-system\""), "{body}");
    let wrong = c.client_as(&User::Token(format!("{}x", c.node_token()))).await;
    assert_eq!(raw(&wrong, "GET", "/api/v1/namespaces", Vec::new()).await.0, 401);
}
