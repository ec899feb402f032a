//! Watches: kubectl `get -w`, kube-rs watch events and the runtime
//! watcher, and 410 Expired for a resourceVersion older than the history.
#![allow(clippy::unwrap_used)]

use std::sync::{Mutex, Weak};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use serde_json::json;
use skiff_tests::{api_error, create_namespace, unique_name, Cluster, KUBECTL_VERSIONS};

static SERVER: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());

const WAIT: Duration = Duration::from_secs(20);

fn service(name: &str, port: i32) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": port}]},
    }))
    .unwrap()
}

fn configmap(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"v": value}})).unwrap()
}

async fn set_port(api: &Api<Service>, name: &str, port: i32) {
    let patch = Patch::Merge(json!({"spec": {"ports": [{"port": port}]}}));
    api.patch(name, &PatchParams::default(), &patch).await.unwrap();
}

/// The data lines of a `get -w` output whose name is `name` and whose
/// PORT(S) is `ports`.
fn has_row(out: &str, name: &str, ports: &str) -> bool {
    out.lines().any(|l| {
        let cells: Vec<&str> = l.split_whitespace().collect();
        cells.first() == Some(&name) && cells.get(4) == Some(&ports)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_w_prints_rows_for_changes_made_while_it_runs() {
    let c = Cluster::shared(&SERVER);
    let client = c.client().await;
    for v in KUBECTL_VERSIONS {
        let ns = unique_name(&format!("watch-list-{}", v.replace('.', "-")));
        create_namespace(&client, &ns).await;
        let api: Api<Service> = Api::namespaced(client.clone(), &ns);
        api.create(&PostParams::default(), &service("before", 80)).await.unwrap();

        let mut w = c.kubectl_spawn(v, &["-n", &ns, "get", "svc", "-w"]);
        w.wait_for_stdout("the listed row", WAIT, |o| has_row(o, "before", "80/TCP"));
        api.create(&PostParams::default(), &service("during", 81)).await.unwrap();
        w.wait_for_stdout("a row for the new service", WAIT, |o| has_row(o, "during", "81/TCP"));
        set_port(&api, "before", 8080).await;
        w.wait_for_stdout("a row for the changed service", WAIT, |o| has_row(o, "before", "8080/TCP"));
        let out = w.stop();
        assert!(out.stdout.starts_with("NAME "), "one header first: {out:?}");
        assert_eq!(out.stdout.matches("NAME ").count(), 1, "one header only: {out:?}");
    }
}

/// `get NAME -w` watches from resourceVersion 0 and drops the first event
/// (the synthetic ADDED of the object it already printed), so without that
/// synthetic event the first real change would be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_name_w_prints_the_first_change() {
    // a server of its own, so that its only service watch is kubectl's
    let c = Cluster::start();
    let client = c.client().await;
    for v in KUBECTL_VERSIONS {
        let ns = unique_name(&format!("watch-one-{}", v.replace('.', "-")));
        create_namespace(&client, &ns).await;
        let api: Api<Service> = Api::namespaced(client.clone(), &ns);
        api.create(&PostParams::default(), &service("one", 80)).await.unwrap();
        api.create(&PostParams::default(), &service("other", 90)).await.unwrap();

        let mut w = c.kubectl_spawn(v, &["-n", &ns, "get", "svc", "one", "-w"]);
        w.wait_for_stdout("the object's row", WAIT, |o| has_row(o, "one", "80/TCP"));
        c.wait_for_watchers("services", 1).await;
        set_port(&api, "one", 81).await;
        w.wait_for_stdout("the first change", WAIT, |o| has_row(o, "one", "81/TCP"));
        set_port(&api, "other", 91).await;
        set_port(&api, "one", 82).await;
        w.wait_for_stdout("the second change", WAIT, |o| has_row(o, "one", "82/TCP"));
        let out = w.stop();
        c.wait_for_watchers("services", 0).await;
        out.stdout_lacks("other");
        let rows = out.stdout.lines().filter(|l| l.starts_with("one ")).count();
        assert_eq!(rows, 3, "the object, then one row per change: {out:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_watch_sees_added_modified_deleted() {
    let c = Cluster::shared(&SERVER);
    let client = c.client().await;
    let ns = unique_name("watch-events");
    create_namespace(&client, &ns).await;
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    let rv = api.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let stream = api.watch(&WatchParams::default().timeout(30), &rv).await.unwrap();

    api.create(&PostParams::default(), &configmap("cm", "1")).await.unwrap();
    let mut cm = api.get("cm").await.unwrap();
    cm.data = Some([("v".to_string(), "2".to_string())].into());
    api.replace("cm", &PostParams::default(), &cm).await.unwrap();
    api.delete("cm", &DeleteParams::default()).await.unwrap();

    let events: Vec<String> = tokio::time::timeout(WAIT, stream.take(3).try_collect::<Vec<_>>())
        .await
        .expect("three events within 20 s")
        .unwrap()
        .into_iter()
        .map(|e| match e {
            WatchEvent::Added(cm) => format!("ADDED {}", cm.data.unwrap()["v"]),
            WatchEvent::Modified(cm) => format!("MODIFIED {}", cm.data.unwrap()["v"]),
            WatchEvent::Deleted(cm) => format!("DELETED {}", cm.data.unwrap()["v"]),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(events, ["ADDED 1", "MODIFIED 2", "DELETED 2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_runtime_watcher_follows_a_configmap() {
    let c = Cluster::shared(&SERVER);
    let client = c.client().await;
    let ns = unique_name("watcher");
    create_namespace(&client, &ns).await;
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    api.create(&PostParams::default(), &configmap("existing", "0")).await.unwrap();

    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    let mut next = async || -> String {
        match tokio::time::timeout(WAIT, events.next()).await.expect("an event within 20 s") {
            Some(Ok(watcher::Event::Init)) => "Init".into(),
            Some(Ok(watcher::Event::InitApply(cm))) => format!("InitApply {}", cm.metadata.name.unwrap()),
            Some(Ok(watcher::Event::InitDone)) => "InitDone".into(),
            Some(Ok(watcher::Event::Apply(cm))) => {
                format!("Apply {}={}", cm.metadata.name.unwrap(), cm.data.unwrap()["v"])
            }
            Some(Ok(watcher::Event::Delete(cm))) => format!("Delete {}", cm.metadata.name.unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(next().await, "Init");
    assert_eq!(next().await, "InitApply existing");
    assert_eq!(next().await, "InitDone");
    api.create(&PostParams::default(), &configmap("new", "1")).await.unwrap();
    assert_eq!(next().await, "Apply new=1");
    let patch = Patch::Merge(json!({"data": {"v": "2"}}));
    api.patch("new", &PatchParams::default(), &patch).await.unwrap();
    assert_eq!(next().await, "Apply new=2");
    api.delete("new", &DeleteParams::default()).await.unwrap();
    assert_eq!(next().await, "Delete new");
}

/// The store keeps history only since it was opened: after a restart a
/// watch from an older resourceVersion must get 410 Expired (clients then
/// re-list), never a silent gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_before_a_restart_is_410_expired() {
    let mut c = Cluster::start();
    {
        let api: Api<ConfigMap> = Api::default_namespaced(c.client().await);
        for i in 0..5 {
            api.create(&PostParams::default(), &configmap(&format!("old-{i}"), "x")).await.unwrap();
        }
    }
    c.restart();
    let api: Api<ConfigMap> = Api::default_namespaced(c.client().await);
    let old = api.list(&ListParams::default()).await.unwrap().items;
    // (kube-root-ca.crt is there too, as in every namespace)
    let old = old.iter().filter(|cm| cm.metadata.name.as_deref().is_some_and(|n| n.starts_with("old-"))).count();
    assert_eq!(old, 5, "objects survive the restart");
    // Kubernetes answers either 410 outright or 200 with an ERROR event
    // carrying a 410 Status; clients treat both the same
    let status = match api.watch(&WatchParams::default().timeout(5), "1").await {
        Err(e) => api_error::<()>(Err(e)),
        Ok(stream) => {
            let first = tokio::time::timeout(WAIT, stream.boxed().next()).await.expect("an event within 20 s");
            match first {
                Some(Ok(WatchEvent::Error(status))) => *status,
                other => panic!("expected a 410 ERROR event, got {other:?}"),
            }
        }
    };
    assert_eq!(status.code, 410, "{status:?}");
    assert_eq!(status.reason, "Expired", "{status:?}");
    assert!(status.message.starts_with("too old resource version: 1 ("), "{status:?}");

    // a watch from the revision a fresh list returns works
    let rv = api.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let stream = api.watch(&WatchParams::default().timeout(10), &rv).await.unwrap();
    api.create(&PostParams::default(), &configmap("after", "y")).await.unwrap();
    let first = tokio::time::timeout(WAIT, stream.boxed().next()).await.expect("an event within 20 s");
    assert!(
        matches!(first, Some(Ok(WatchEvent::Added(ref cm))) if cm.metadata.name.as_deref() == Some("after")),
        "{first:?}"
    );
}
