//! The control loops end to end: a real API server, `skiff_controllers::run`
//! and the node simulator, asserted through kube-rs and real kubectl.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Event, Namespace, Node, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::ResourceExt;
use serde_json::json;

const T: Duration = Duration::from_secs(20);

fn pods_of(client: &kube::Client) -> Api<Pod> {
    Api::namespaced(client.clone(), "default")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_scales_up_and_down() {
    let env = Env::start(fast_options(), Some(sim_config(3))).await;
    let deploys: Api<Deployment> = Api::namespaced(env.client.clone(), "default");
    deploys.create(&PostParams::default(), &deployment("web", 2, "nginx:1.25")).await.unwrap();
    let d = wait_rolled_out(&env.client, "default", "web", 2, T).await;
    assert_eq!(ready_pods(&env.client, "default", "web").await.len(), 2);
    // the ReplicaSet is <name>-<pod-template-hash>, owned by the deployment, revision 1
    let rss: Api<ReplicaSet> = Api::namespaced(env.client.clone(), "default");
    let rs_list = rss.list(&ListParams::default().labels("app=web")).await.unwrap().items;
    assert_eq!(rs_list.len(), 1);
    let rs = &rs_list[0];
    let hash = rs.labels().get("pod-template-hash").cloned().unwrap();
    assert_eq!(rs.name_any(), format!("web-{hash}"));
    assert_eq!(rs.annotations().get("deployment.kubernetes.io/revision").map(String::as_str), Some("1"));
    assert_eq!(d.annotations().get("deployment.kubernetes.io/revision").map(String::as_str), Some("1"));
    let owner = &rs.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller, owner.block_owner_deletion),
        ("Deployment", Some(true), Some(true))
    );
    // pods: <rs>-<5 chars>, controlled by the ReplicaSet, spread over nodes
    let pods = ready_pods(&env.client, "default", "web").await;
    for p in &pods {
        let suffix = p.name_any().strip_prefix(&format!("{}-", rs.name_any())).map(str::to_string).unwrap();
        assert_eq!(suffix.len(), 5, "{}", p.name_any());
        assert_eq!(p.owner_references()[0].uid, rs.uid().unwrap());
    }
    let nodes: std::collections::HashSet<_> = pods.iter().map(|p| p.spec.as_ref().unwrap().node_name.clone()).collect();
    assert_eq!(nodes.len(), 2, "two replicas land on two nodes");

    let scale = |n: i32| {
        let deploys = deploys.clone();
        async move {
            deploys
                .patch_scale("web", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": n}})))
                .await
                .unwrap();
        }
    };
    scale(5).await;
    wait_rolled_out(&env.client, "default", "web", 5, T).await;
    assert_eq!(ready_pods(&env.client, "default", "web").await.len(), 5);
    scale(2).await;
    wait_rolled_out(&env.client, "default", "web", 2, T).await;
    wait_for("scaled-down pods to be gone", T, || async {
        let all = pods_of(&env.client).list(&ListParams::default().labels("app=web")).await.unwrap().items;
        (all.len() == 2).then_some(())
    })
    .await;
    // the replica set is still the only one, and events tell the story
    assert_eq!(rss.list(&ListParams::default().labels("app=web")).await.unwrap().items.len(), 1);
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    let msgs = wait_for("ScalingReplicaSet events", T, || async {
        let evs = events.list(&ListParams::default()).await.unwrap().items;
        let msgs: Vec<String> = evs
            .iter()
            .filter(|e| e.reason.as_deref() == Some("ScalingReplicaSet"))
            .filter_map(|e| e.message.clone())
            .collect();
        (msgs.len() >= 3).then_some(msgs)
    })
    .await;
    let rs_name = rs.name_any();
    assert!(msgs.contains(&format!("Scaled up replica set {rs_name} from 0 to 2")), "{msgs:?}");
    assert!(msgs.contains(&format!("Scaled up replica set {rs_name} from 2 to 5")), "{msgs:?}");
    assert!(msgs.contains(&format!("Scaled down replica set {rs_name} from 5 to 2")), "{msgs:?}");
    env.stop().await;
}

/// Every watch event during a RollingUpdate with maxUnavailable 0 keeps at
/// least the desired number of ready pods; then `kubectl rollout undo`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_keeps_capacity_and_undo_restores() {
    let env = Env::start(fast_options(), Some(sim_config(3))).await;
    let deploys: Api<Deployment> = Api::namespaced(env.client.clone(), "default");
    let mut d = deployment("roll", 3, "nginx:1.25");
    d.spec.as_mut().unwrap().strategy = Some(
        serde_json::from_value(json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}))
            .unwrap(),
    );
    deploys.create(&PostParams::default(), &d).await.unwrap();
    wait_rolled_out(&env.client, "default", "roll", 3, T).await;

    // watch every pod event from here on
    let pods = pods_of(&env.client);
    let rv = pods.list(&ListParams::default().labels("app=roll")).await.unwrap().metadata.resource_version.unwrap();
    let mut stream = pods.watch(&WatchParams::default().labels("app=roll"), &rv).await.unwrap().boxed();
    // (pod → ready and not terminating, lowest ready count seen, events seen)
    type Seen = (HashMap<String, bool>, i32, usize);
    let state: Arc<Mutex<Seen>> = Arc::new(Mutex::new((HashMap::new(), i32::MAX, 0)));
    for p in pods.list(&ListParams::default().labels("app=roll")).await.unwrap().items {
        state.lock().unwrap().0.insert(p.name_any(), is_ready(&p) && p.metadata.deletion_timestamp.is_none());
    }
    let watcher = {
        let state = state.clone();
        tokio::spawn(async move {
            while let Some(Ok(ev)) = stream.next().await {
                let mut st = state.lock().unwrap();
                match ev {
                    WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                        st.0.insert(p.name_any(), is_ready(&p) && p.metadata.deletion_timestamp.is_none());
                    }
                    WatchEvent::Deleted(p) => {
                        st.0.remove(&p.name_any());
                    }
                    _ => continue,
                }
                let ready = st.0.values().filter(|r| **r).count() as i32;
                st.1 = st.1.min(ready);
                st.2 += 1;
            }
        })
    };
    deploys
        .patch(
            "roll",
            &PatchParams::default(),
            &Patch::Strategic(
                &json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}}}),
            ),
        )
        .await
        .unwrap();
    let d = wait_rolled_out(&env.client, "default", "roll", 3, T).await;
    let images = wait_for("only new pods left", T, || async {
        let all = pods.list(&ListParams::default().labels("app=roll")).await.unwrap().items;
        let images: Vec<String> =
            all.iter().map(|p| p.spec.as_ref().unwrap().containers[0].image.clone().unwrap()).collect();
        (images.len() == 3 && images.iter().all(|i| i == "nginx:1.27")).then_some(images)
    })
    .await;
    assert_eq!(images.len(), 3);
    watcher.abort();
    let (_, min_ready, events) = *state.lock().unwrap();
    assert!(events >= 6, "saw only {events} pod events during the rollout");
    assert!(min_ready >= 3, "ready pods dropped to {min_ready} during a maxUnavailable=0 rollout");
    assert_eq!(d.annotations().get("deployment.kubernetes.io/revision").map(String::as_str), Some("2"));

    // kubectl sees two revisions, and undo goes back to the first template
    let history = env.kubectl(&["rollout", "history", "deployment/roll"], T);
    assert!(history.ok(), "{history:?}");
    assert!(
        history.stdout.contains("REVISION") && history.stdout.contains("\n1 ") && history.stdout.contains("\n2 "),
        "{history:?}"
    );
    let undo = env.kubectl(&["rollout", "undo", "deployment/roll"], T);
    assert!(undo.ok(), "{undo:?}");
    assert!(undo.stdout.contains("rolled back"), "{undo:?}");
    let status = env.kubectl(&["rollout", "status", "deployment/roll", "--timeout=30s"], Duration::from_secs(40));
    assert!(status.ok(), "{status:?}");
    assert!(status.stdout.contains("successfully rolled out"), "{status:?}");
    let d = wait_rolled_out(&env.client, "default", "roll", 3, T).await;
    let image = d.spec.unwrap().template.spec.unwrap().containers[0].image.clone().unwrap();
    assert_eq!(image, "nginx:1.25");
    assert_eq!(d.metadata.annotations.unwrap().get("deployment.kubernetes.io/revision").map(String::as_str), Some("3"));
    // the first ReplicaSet came back as revision 3; still two ReplicaSets
    let rss: Api<ReplicaSet> = Api::namespaced(env.client.clone(), "default");
    let revs: BTreeMap<String, String> = rss
        .list(&ListParams::default().labels("app=roll"))
        .await
        .unwrap()
        .items
        .iter()
        .map(|r| (r.annotations().get("deployment.kubernetes.io/revision").cloned().unwrap_or_default(), r.name_any()))
        .collect();
    assert_eq!(revs.keys().cloned().collect::<Vec<_>>(), ["2", "3"], "{revs:?}");

    // paused: a template change waits for resume
    let pause = env.kubectl(&["rollout", "pause", "deployment/roll"], T);
    assert!(pause.ok(), "{pause:?}");
    let set = env.kubectl(&["set", "image", "deployment/roll", "app=nginx:1.28"], T);
    assert!(set.ok(), "{set:?}");
    let paused = wait_for("the Progressing condition to say paused", T, || async {
        let d = deploys.get("roll").await.unwrap();
        let c = d.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Progressing")?.clone();
        let observed = d.status.as_ref()?.observed_generation >= d.metadata.generation;
        (c.reason.as_deref() == Some("DeploymentPaused") && c.status == "Unknown" && observed).then_some(d)
    })
    .await;
    assert_eq!(paused.status.unwrap().updated_replicas, Some(0), "nothing rolled out while paused");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rss.list(&ListParams::default().labels("app=roll")).await.unwrap().items.len(),
        2,
        "no rollout while paused"
    );
    let resume = env.kubectl(&["rollout", "resume", "deployment/roll"], T);
    assert!(resume.ok(), "{resume:?}");
    let d = wait_rolled_out(&env.client, "default", "roll", 3, T).await;
    assert_eq!(d.spec.unwrap().template.spec.unwrap().containers[0].image.as_deref(), Some("nginx:1.28"));
    // restart: same image, a new ReplicaSet
    let restart = env.kubectl(&["rollout", "restart", "deployment/roll"], T);
    assert!(restart.ok(), "{restart:?}");
    let status = env.kubectl(&["rollout", "status", "deployment/roll", "--timeout=30s"], Duration::from_secs(40));
    assert!(status.ok(), "{status:?}");
    let d = wait_rolled_out(&env.client, "default", "roll", 3, T).await;
    assert_eq!(d.annotations().get("deployment.kubernetes.io/revision").map(String::as_str), Some("5"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rollout_status_succeeds_and_fails_after_the_deadline() {
    let env = Env::start(fast_options(), Some(sim_config(2))).await;
    let deploys: Api<Deployment> = Api::namespaced(env.client.clone(), "default");
    deploys.create(&PostParams::default(), &deployment("ok", 2, "nginx:1.25")).await.unwrap();
    let out = env.kubectl(&["rollout", "status", "deployment/ok", "--timeout=30s"], Duration::from_secs(40));
    assert!(out.ok(), "{out:?}");
    assert!(out.stdout.contains("deployment \"ok\" successfully rolled out"), "{out:?}");
    let describe = env.kubectl(&["describe", "deployment", "ok"], T);
    assert!(describe.ok(), "{describe:?}");
    assert!(
        describe.stdout.contains("NewReplicaSet:") && describe.stdout.contains("ScalingReplicaSet"),
        "{describe:?}"
    );
    assert!(describe.stdout.contains("NewReplicaSetAvailable"), "{describe:?}");

    // pods that never become ready, and a 2 s progress deadline
    env.sim().set_never_ready(true);
    let mut d = deployment("stuck", 2, "nginx:1.25");
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(2);
    deploys.create(&PostParams::default(), &d).await.unwrap();
    let out = env.kubectl(&["rollout", "status", "deployment/stuck", "--timeout=40s"], Duration::from_secs(50));
    assert!(!out.ok(), "{out:?}");
    assert!(out.stderr.contains("exceeded its progress deadline"), "{out:?}");
    let d = deploys.get("stuck").await.unwrap();
    let cond = d.status.unwrap().conditions.unwrap().into_iter().find(|c| c.type_ == "Progressing").unwrap();
    assert_eq!((cond.status.as_str(), cond.reason.as_deref()), ("False", Some("ProgressDeadlineExceeded")));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_and_slices_follow_pod_readiness() {
    let env = Env::start(fast_options(), Some(sim_config(2))).await;
    let deploys: Api<Deployment> = Api::namespaced(env.client.clone(), "default");
    deploys.create(&PostParams::default(), &deployment("api", 2, "nginx:1.25")).await.unwrap();
    let services: Api<Service> = Api::namespaced(env.client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "api", "labels": {"team": "a"}},
        "spec": {"selector": {"app": "api"}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]},
    }))
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    // a service without a selector keeps the Endpoints its user wrote
    let manual: Service = serde_json::from_value(json!({
        "metadata": {"name": "manual"}, "spec": {"ports": [{"port": 5432}]},
    }))
    .unwrap();
    services.create(&PostParams::default(), &manual).await.unwrap();
    let eps: Api<Endpoints> = Api::namespaced(env.client.clone(), "default");
    let manual_ep: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "manual"},
        "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 5432}]}],
    }))
    .unwrap();
    eps.create(&PostParams::default(), &manual_ep).await.unwrap();

    wait_rolled_out(&env.client, "default", "api", 2, T).await;
    let ready_ips = |ep: &Endpoints| -> Vec<String> {
        ep.subsets.iter().flatten().flat_map(|s| s.addresses.iter().flatten()).map(|a| a.ip.clone()).collect()
    };
    let not_ready_ips = |ep: &Endpoints| -> Vec<String> {
        ep.subsets.iter().flatten().flat_map(|s| s.not_ready_addresses.iter().flatten()).map(|a| a.ip.clone()).collect()
    };
    let ep = wait_for("endpoints with two ready addresses", T, || async {
        let ep = eps.get_opt("api").await.unwrap()?;
        (ready_ips(&ep).len() == 2).then_some(ep)
    })
    .await;
    let subset = &ep.subsets.as_ref().unwrap()[0];
    let port = &subset.ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("web"), 8080), "named targetPort resolved per pod");
    let addr = &subset.addresses.as_ref().unwrap()[0];
    assert!(addr.node_name.is_some() && addr.target_ref.as_ref().unwrap().kind.as_deref() == Some("Pod"));
    assert_eq!(ep.labels().get("team").map(String::as_str), Some("a"));

    let slices: Api<EndpointSlice> = Api::namespaced(env.client.clone(), "default");
    let lp = ListParams::default().labels("kubernetes.io/service-name=api");
    let slice = wait_for("a slice with two ready endpoints", T, || async {
        let list = slices.list(&lp).await.unwrap().items;
        let s = list.into_iter().next()?;
        (s.endpoints.iter().filter(|e| e.conditions.as_ref().unwrap().ready == Some(true)).count() == 2).then_some(s)
    })
    .await;
    assert_eq!(
        slice.labels().get("endpointslice.kubernetes.io/managed-by").map(String::as_str),
        Some("endpointslice-controller.k8s.io")
    );
    assert_eq!(slice.owner_references()[0].kind, "Service");
    assert_eq!(slice.ports.as_ref().unwrap()[0].port, Some(8080));

    // one pod turns not ready: both views follow within a second
    let pods = pods_of(&env.client);
    let victim = ready_pods(&env.client, "default", "api").await.remove(0);
    let ip = victim.status.as_ref().unwrap().pod_ip.clone().unwrap();
    let started = std::time::Instant::now();
    pods.patch_status(
        &victim.name_any(),
        &PatchParams::default(),
        &Patch::Strategic(&json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}})),
    )
    .await
    .unwrap();
    wait_for("the endpoints to move the pod to notReadyAddresses", Duration::from_secs(1), || async {
        let ep = eps.get("api").await.unwrap();
        (not_ready_ips(&ep) == vec![ip.clone()] && ready_ips(&ep).len() == 1).then_some(())
    })
    .await;
    wait_for("the slice to mark the endpoint not ready", Duration::from_secs(1), || async {
        let s = slices.list(&lp).await.unwrap().items.into_iter().next()?;
        let e = s.endpoints.iter().find(|e| e.addresses[0] == ip)?;
        let c = e.conditions.as_ref()?;
        (c.ready == Some(false) && c.serving == Some(false) && c.terminating == Some(false)).then_some(())
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(2));
    // back to ready
    pods.patch_status(
        &victim.name_any(),
        &PatchParams::default(),
        &Patch::Strategic(&json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})),
    )
    .await
    .unwrap();
    wait_for("the pod back among ready addresses", Duration::from_secs(1), || async {
        let ep = eps.get("api").await.unwrap();
        (ready_ips(&ep).len() == 2).then_some(())
    })
    .await;
    // publishNotReadyAddresses puts not-ready pods among addresses
    services
        .patch("api", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"publishNotReadyAddresses": true}})))
        .await
        .unwrap();
    pods.patch_status(
        &victim.name_any(),
        &PatchParams::default(),
        &Patch::Strategic(&json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}})),
    )
    .await
    .unwrap();
    wait_for("not-ready pods published", T, || async {
        let ep = eps.get("api").await.unwrap();
        (ready_ips(&ep).len() == 2 && not_ready_ips(&ep).is_empty()).then_some(())
    })
    .await;
    // the manual endpoints were never touched; kubectl describe shows the slice
    let manual_now = eps.get("manual").await.unwrap();
    assert_eq!(ready_ips(&manual_now), ["192.0.2.10"]);
    assert!(slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=manual"))
        .await
        .unwrap()
        .items
        .is_empty());
    let describe = env.kubectl(&["describe", "service", "api"], T);
    assert!(describe.ok() && describe.stdout.contains(&format!("{ip}:8080")), "{describe:?}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_tainted_and_its_pods_replaced() {
    let opts = skiff_controllers::ControllerOptions {
        node_monitor_grace_period: Duration::from_secs(3),
        pod_eviction_timeout: Duration::from_secs(2),
        ..fast_options()
    };
    let env = Env::start(opts, Some(sim_config(3))).await;
    let deploys: Api<Deployment> = Api::namespaced(env.client.clone(), "default");
    deploys.create(&PostParams::default(), &deployment("svc", 3, "nginx:1.25")).await.unwrap();
    wait_rolled_out(&env.client, "default", "svc", 3, T).await;
    let services: Api<Service> = Api::namespaced(env.client.clone(), "default");
    let svc: Service = serde_json::from_value(
        json!({"metadata": {"name": "svc"}, "spec": {"selector": {"app": "svc"}, "ports": [{"port": 80}]}}),
    )
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    let pods = ready_pods(&env.client, "default", "svc").await;
    let dead = pods[0].spec.as_ref().unwrap().node_name.clone().unwrap();
    let dead_pods: Vec<String> = pods
        .iter()
        .filter(|p| p.spec.as_ref().unwrap().node_name.as_deref() == Some(&dead))
        .map(|p| p.name_any())
        .collect();
    env.sim().stop_node(&dead);

    let nodes: Api<Node> = Api::all(env.client.clone());
    let node = wait_for("the node to become Ready=Unknown with the unreachable taints", T, || async {
        let n = nodes.get(&dead).await.unwrap();
        let ready = n.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?.clone();
        let taints = n.spec.as_ref()?.taints.clone().unwrap_or_default();
        let tainted = ["NoSchedule", "NoExecute"]
            .iter()
            .all(|e| taints.iter().any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == *e));
        (ready.status == "Unknown" && tainted).then_some(n)
    })
    .await;
    let ready = node.status.unwrap().conditions.unwrap().into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
    // its pods are not ready any more, so endpoints drop them
    let eps: Api<Endpoints> = Api::namespaced(env.client.clone(), "default");
    wait_for("endpoints without the dead node's pods", T, || async {
        let ep = eps.get_opt("svc").await.unwrap()?;
        let ready: Vec<_> = ep
            .subsets
            .iter()
            .flatten()
            .flat_map(|s| s.addresses.iter().flatten())
            .filter(|a| a.node_name.as_deref() == Some(&dead))
            .collect();
        ready.is_empty().then_some(())
    })
    .await;
    // evicted after the toleration and replaced on live nodes
    wait_for("replacements on other nodes", T, || async {
        let ready = ready_pods(&env.client, "default", "svc").await;
        let elsewhere = ready.iter().filter(|p| p.spec.as_ref().unwrap().node_name.as_deref() != Some(&dead)).count();
        (elsewhere == 3).then_some(())
    })
    .await;
    let all = pods_of(&env.client).list(&ListParams::default().labels("app=svc")).await.unwrap().items;
    for name in &dead_pods {
        let p = all.iter().find(|p| &p.name_any() == name);
        assert!(p.is_none_or(|p| p.metadata.deletion_timestamp.is_some()), "{name} was not evicted");
    }
    // deleting the dead node removes its stranded pods (pod GC)
    nodes.delete(&dead, &DeleteParams::default()).await.unwrap();
    wait_for("stranded pods gone", T, || async {
        let all = pods_of(&env.client).list(&ListParams::default().labels("app=svc")).await.unwrap().items;
        all.iter().all(|p| p.spec.as_ref().unwrap().node_name.as_deref() != Some(&dead)).then_some(())
    })
    .await;
    env.stop().await;
}

async fn names<K>(api: &Api<K>, labels: &str) -> Vec<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&ListParams::default().labels(labels)).await.unwrap().items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cascading_deletion_background_foreground_and_orphan() {
    let env = Env::start(fast_options(), Some(sim_config(2))).await;
    let deploys: Api<Deployment> = Api::namespaced(env.client.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(env.client.clone(), "default");
    let pods = pods_of(&env.client);
    for name in ["bg", "fg", "orph"] {
        deploys.create(&PostParams::default(), &deployment(name, 2, "nginx:1.25")).await.unwrap();
    }
    for name in ["bg", "fg", "orph"] {
        wait_rolled_out(&env.client, "default", name, 2, T).await;
    }

    // background: the deployment goes at once, the rest after it
    deploys.delete("bg", &DeleteParams::background()).await.unwrap();
    wait_for("background cascade", T, || async {
        (names(&rss, "app=bg").await.is_empty() && names(&pods, "app=bg").await.is_empty()).then_some(())
    })
    .await;

    // foreground: the deployment stays until its dependents are gone
    deploys.delete("fg", &DeleteParams::foreground()).await.unwrap();
    let d = deploys.get("fg").await.unwrap();
    assert!(d.metadata.deletion_timestamp.is_some());
    assert!(d.finalizers().iter().any(|f| f == "foregroundDeletion"));
    wait_for("foreground cascade", T, || async {
        let gone = deploys.get_opt("fg").await.unwrap().is_none();
        if gone {
            assert!(names(&rss, "app=fg").await.is_empty(), "the owner went before its dependents");
            assert!(names(&pods, "app=fg").await.is_empty(), "the owner went before its dependents");
        }
        gone.then_some(())
    })
    .await;

    // orphan: dependents stay, without their ownerReference
    let rs_before = names(&rss, "app=orph").await;
    deploys.delete("orph", &DeleteParams::orphan()).await.unwrap();
    wait_for("the orphaned deployment gone", T, || async {
        deploys.get_opt("orph").await.unwrap().is_none().then_some(())
    })
    .await;
    let rs_after = wait_for("the ReplicaSet released", T, || async {
        let l = names(&rss, "app=orph").await;
        l.iter().all(|r| r.owner_references().is_empty()).then_some(l)
    })
    .await;
    assert_eq!(rs_after.len(), 1);
    assert_eq!(rs_after[0].uid(), rs_before[0].uid());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let orphan_pods = names(&pods, "app=orph").await;
    assert_eq!(orphan_pods.len(), 2, "orphaned ReplicaSet keeps its pods");
    assert!(orphan_pods.iter().all(|p| p.metadata.deletion_timestamp.is_none()));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_empties_and_removes_it() {
    let env = Env::start(fast_options(), Some(sim_config(2))).await;
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "doomed"}})).unwrap();
    namespaces.create(&PostParams::default(), &ns).await.unwrap();
    let deploys: Api<Deployment> = Api::namespaced(env.client.clone(), "doomed");
    deploys.create(&PostParams::default(), &deployment("web", 2, "nginx:1.25")).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "doomed");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"a": "b"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let services: Api<Service> = Api::namespaced(env.client.clone(), "doomed");
    let svc: Service = serde_json::from_value(
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
    )
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    wait_rolled_out(&env.client, "doomed", "web", 2, T).await;

    namespaces.delete("doomed", &DeleteParams::default()).await.unwrap();
    let terminating = namespaces.get("doomed").await.unwrap();
    assert_eq!(terminating.status.unwrap().phase.as_deref(), Some("Terminating"));
    wait_for("the namespace gone", T, || async { namespaces.get_opt("doomed").await.unwrap().is_none().then_some(()) })
        .await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "doomed");
    let left = pods.list(&ListParams::default()).await.unwrap().items;
    assert!(left.is_empty(), "{left:#?}");
    assert!(cms.list(&ListParams::default()).await.unwrap().items.is_empty());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unschedulable_pods_get_kubernetes_reasons_and_wait() {
    let env = Env::start(fast_options(), Some(sim_config(3))).await;
    let pods = pods_of(&env.client);
    let big: Pod = serde_json::from_value(json!({
        "metadata": {"name": "big"},
        "spec": {"containers": [{"name": "app", "image": "nginx", "resources": {"requests": {"cpu": "6"}}}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &big).await.unwrap();
    let msg = "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.";
    wait_for("PodScheduled=False Unschedulable", T, || async {
        let p = pods.get("big").await.unwrap();
        let c = p.status?.conditions?.into_iter().find(|c| c.type_ == "PodScheduled")?;
        (c.status == "False" && c.reason.as_deref() == Some("Unschedulable") && c.message.as_deref() == Some(msg))
            .then_some(())
    })
    .await;
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    wait_for("a FailedScheduling event", T, || async {
        let evs = events.list(&ListParams::default().fields("involvedObject.name=big")).await.unwrap().items;
        evs.iter()
            .any(|e| {
                e.reason.as_deref() == Some("FailedScheduling")
                    && e.message.as_deref() == Some(msg)
                    && e.source.as_ref().and_then(|s| s.component.as_deref()) == Some("default-scheduler")
            })
            .then_some(())
    })
    .await;
    // a node selector nobody matches, and a node that appears later
    let picky: Pod = serde_json::from_value(json!({
        "metadata": {"name": "picky"},
        "spec": {"nodeSelector": {"disk": "ssd"}, "containers": [{"name": "app", "image": "nginx"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &picky).await.unwrap();
    wait_for("affinity reason", T, || async {
        let p = pods.get("picky").await.unwrap();
        let c = p.status?.conditions?.into_iter().find(|c| c.type_ == "PodScheduled")?;
        c.message?
            .starts_with("0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.")
            .then_some(())
    })
    .await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    let target = env.sim().node_names()[1].clone();
    nodes
        .patch(&target, &PatchParams::default(), &Patch::Merge(&json!({"metadata": {"labels": {"disk": "ssd"}}})))
        .await
        .unwrap();
    let p = wait_for("picky scheduled once a node matches", T, || async {
        let p = pods.get("picky").await.unwrap();
        p.spec.as_ref()?.node_name.clone().map(|_| p)
    })
    .await;
    assert_eq!(p.spec.unwrap().node_name.unwrap(), target);
    let describe = env.kubectl(&["describe", "pod", "big"], T);
    assert!(
        describe.stdout.contains("FailedScheduling") && describe.stdout.contains("Insufficient cpu"),
        "{describe:?}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_when_the_leader_dies() {
    let mut env =
        Env::start(skiff_controllers::ControllerOptions { identity: Some("first".into()), ..fast_options() }, None)
            .await;
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), "kube-system");
    let holder = |want: &'static str| {
        let leases = leases.clone();
        async move {
            let l = leases.get_opt("skiff-controller-manager").await.unwrap()?;
            let spec = l.spec?;
            (spec.holder_identity.as_deref() == Some(want)).then_some(spec)
        }
    };
    let spec = wait_for("first to lead", T, || holder("first")).await;
    assert_eq!(spec.lease_duration_seconds, Some(3));
    // a second process waits while the first renews
    let (tx, rx) = tokio::sync::watch::channel(false);
    let second = {
        let client = env.client.clone();
        tokio::spawn(async move {
            let opts = skiff_controllers::ControllerOptions { identity: Some("second".into()), ..fast_options() };
            skiff_controllers::run(client, opts, rx).await.unwrap();
        })
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(holder("first").await.is_some(), "the lease moved while its holder was alive");
    // the first dies without releasing (its task is aborted): the second takes over
    env.abort_controllers();
    let started = std::time::Instant::now();
    wait_for("second to lead", Duration::from_secs(10), || holder("second")).await;
    assert!(started.elapsed() < Duration::from_secs(8));
    let _ = tx.send(true);
    let _ = second.await;
    // a clean stop released the lease
    let l = leases.get("skiff-controller-manager").await.unwrap();
    assert_eq!(l.spec.unwrap().holder_identity, None);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_gets_its_own_pod_cidr_from_the_cluster_cidr() {
    let env = Env::start(fast_options(), Some(sim_config(3))).await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    let cidrs = wait_for("three nodes with podCIDRs", T, || {
        let nodes = nodes.clone();
        async move {
            let list = nodes.list(&ListParams::default()).await.ok()?.items;
            let cidrs: Vec<String> =
                list.iter().filter_map(|n| n.spec.as_ref().and_then(|s| s.pod_cidr.clone())).collect();
            (cidrs.len() == 3).then_some(cidrs)
        }
    })
    .await;
    let distinct: std::collections::BTreeSet<&String> = cidrs.iter().collect();
    assert_eq!(distinct.len(), 3, "{cidrs:?}");
    for c in &cidrs {
        let net: ipnet::Ipv4Net = c.parse().unwrap();
        assert_eq!(net.prefix_len(), 24, "{c}");
        assert!("10.244.0.0/16".parse::<ipnet::Ipv4Net>().unwrap().contains(&net), "{c}");
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_namespace_keeps_a_default_service_account_and_the_root_ca() {
    let env = Env::start(fast_options(), None).await;
    let ca = env.running.as_ref().unwrap().tls.ca_cert_pem.clone();
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team-a"}})).unwrap();
    namespaces.create(&PostParams::default(), &ns).await.unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(env.client.clone(), "team-a");
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "team-a");
    let uid = wait_for("the default ServiceAccount", T, || async {
        sas.get_opt("default").await.unwrap().map(|sa| sa.uid().unwrap())
    })
    .await;
    let root_ca = || async {
        cms.get_opt("kube-root-ca.crt").await.unwrap().filter(|cm| {
            cm.data.as_ref().and_then(|d| d.get("ca.crt")) == Some(&ca)
                && cm.annotations().get("kubernetes.io/description").is_some_and(|d| d.contains("kube-apiserver"))
        })
    };
    wait_for("kube-root-ca.crt", T, root_ca).await;

    // deleted: recreated (a new object)
    sas.delete("default", &DeleteParams::default()).await.unwrap();
    wait_for("the default ServiceAccount again", T, || async {
        sas.get_opt("default").await.unwrap().filter(|sa| sa.uid().unwrap() != uid).map(|_| ())
    })
    .await;
    cms.delete("kube-root-ca.crt", &DeleteParams::default()).await.unwrap();
    wait_for("kube-root-ca.crt again", T, root_ca).await;
    // changed: put back
    let patch = json!({"data": {"ca.crt": "not a CA"}});
    cms.patch("kube-root-ca.crt", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_for("kube-root-ca.crt restored", T, root_ca).await;

    // the system namespaces have both from the start
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let sa: Api<ServiceAccount> = Api::namespaced(env.client.clone(), ns);
        assert!(sa.get_opt("default").await.unwrap().is_some(), "{ns}");
        let cm: Api<ConfigMap> = Api::namespaced(env.client.clone(), ns);
        assert!(cm.get_opt("kube-root-ca.crt").await.unwrap().is_some(), "{ns}");
    }
    let out = env.kubectl(&["get", "serviceaccounts", "-n", "team-a"], T);
    assert!(out.ok(), "{out:?}");
    assert!(out.stdout.starts_with("NAME      SECRETS   AGE\ndefault   0 "), "{}", out.stdout);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_stack_cluster_gives_every_node_a_pod_cidr_per_family() {
    let opts = skiff_controllers::ControllerOptions {
        cluster_cidr: "10.244.0.0/16,fd00:10:244::/56".parse().unwrap(),
        ..fast_options()
    };
    // nodes as an agent registers them: without podCIDRs
    let env = Env::start(opts, None).await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    for i in 0..3 {
        let node: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": format!("ds-{i}")}})).unwrap();
        nodes.create(&kube::api::PostParams::default(), &node).await.unwrap();
    }
    let all = wait_for("three nodes with two podCIDRs each", T, || {
        let nodes = nodes.clone();
        async move {
            let list = nodes.list(&ListParams::default()).await.ok()?.items;
            let cidrs: Vec<(String, Vec<String>)> = list
                .iter()
                .filter_map(|n| {
                    let s = n.spec.as_ref()?;
                    Some((s.pod_cidr.clone()?, s.pod_cidrs.clone()?))
                })
                .filter(|(_, all)| all.len() == 2)
                .collect();
            (cidrs.len() == 3).then_some(cidrs)
        }
    })
    .await;
    let mut v6 = std::collections::BTreeSet::new();
    for (primary, both) in &all {
        // the primary family first, also in spec.podCIDR
        assert_eq!(primary, &both[0]);
        let net4: ipnet::Ipv4Net = both[0].parse().unwrap();
        assert_eq!(net4.prefix_len(), 24, "{both:?}");
        let net6: ipnet::Ipv6Net = both[1].parse().unwrap();
        assert_eq!(net6.prefix_len(), 64, "{both:?}");
        assert!("fd00:10:244::/56".parse::<ipnet::Ipv6Net>().unwrap().contains(&net6), "{both:?}");
        v6.insert(net6);
    }
    assert_eq!(v6.len(), 3, "{all:?}");
    env.stop().await;
}

/// A dual-stack Service gets an IPv4 and an IPv6 EndpointSlice, each with
/// the pods' addresses of its family (status.podIPs), as Kubernetes makes
/// them; an IPv4-only Service gets no IPv6 slice; dropping the Service's
/// IPv6 family deletes its IPv6 slice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_stack_service_gets_ipv4_and_ipv6_slices() {
    let env = Env::start(fast_options(), None).await;
    let services: Api<Service> = Api::namespaced(env.client.clone(), "default");
    for (name, policy) in [("dual", "RequireDualStack"), ("single", "SingleStack")] {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"selector": {"app": "ds"}, "ipFamilyPolicy": policy, "ports": [{"port": 80, "targetPort": 8080}]},
        }))
        .unwrap();
        services.create(&PostParams::default(), &svc).await.unwrap();
    }
    let dual = services.get("dual").await.unwrap();
    assert_eq!(dual.spec.as_ref().unwrap().ip_families, Some(vec!["IPv4".to_string(), "IPv6".to_string()]));
    let pods = pods_of(&env.client);
    for (i, (v4, v6)) in [("10.244.1.5", "fd00:10:244:1::5"), ("10.244.2.7", "fd00:10:244:2::7")].iter().enumerate() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("ds-{i}"), "labels": {"app": "ds"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        let status = json!({"status": {
            "phase": "Running",
            "podIP": v4,
            "podIPs": [{"ip": v4}, {"ip": v6}],
            "conditions": [{"type": "Ready", "status": "True"}],
        }});
        pods.patch_status(&format!("ds-{i}"), &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    }
    let slices: Api<EndpointSlice> = Api::namespaced(env.client.clone(), "default");
    let addresses = |name: &'static str| {
        let slices = slices.clone();
        async move {
            let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={name}"));
            let mut out: Vec<(String, Vec<String>)> = slices
                .list(&lp)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|s| {
                    let mut a: Vec<String> = s.endpoints.iter().flat_map(|e| e.addresses.clone()).collect();
                    a.sort();
                    (s.address_type, a)
                })
                .collect();
            out.sort();
            out
        }
    };
    let want = vec![
        ("IPv4".to_string(), vec!["10.244.1.5".to_string(), "10.244.2.7".to_string()]),
        ("IPv6".to_string(), vec!["fd00:10:244:1::5".to_string(), "fd00:10:244:2::7".to_string()]),
    ];
    wait_for("an IPv4 and an IPv6 slice for the dual-stack service", T, || async {
        (addresses("dual").await == want).then_some(())
    })
    .await;
    wait_for("only an IPv4 slice for the single-stack service", T, || async {
        (addresses("single").await == want[..1]).then_some(())
    })
    .await;
    let ports = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=dual"))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| s.ports.unwrap_or_default().first().and_then(|p| p.port))
        .collect::<Vec<_>>();
    assert_eq!(ports, vec![Some(8080), Some(8080)]);
    // the service drops IPv6: its IPv6 slice goes
    services
        .patch("dual", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"ipFamilyPolicy": "SingleStack"}})))
        .await
        .unwrap();
    wait_for("the IPv6 slice to go with the service's IPv6 family", T, || async {
        (addresses("dual").await == want[..1]).then_some(())
    })
    .await;
    env.stop().await;
}
