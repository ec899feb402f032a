//! events.k8s.io/v1 Events: a second view of the stored core/v1 Events,
//! with renamed fields, as Kubernetes serves them. Whatever is written
//! through one API reads (and watches) through the other, converted; kubectl
//! and kube-rs use the new API as they would against Kubernetes.
#![allow(clippy::unwrap_used)]

use std::sync::{Mutex, Weak};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::{json, Value};
use skiff_tests::{api_error, create_namespace, raw, raw_request, unique_name, Cluster, KUBECTL_VERSIONS};

static SERVER: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());

async fn namespace(c: &Cluster, prefix: &str) -> (kube::Client, String) {
    let client = c.client().await;
    let ns = unique_name(prefix);
    create_namespace(&client, &ns).await;
    (client, ns)
}

/// A core/v1 Event as a kubelet writes it.
fn core_event(ns: &str, name: &str) -> CoreEvent {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": "web", "namespace": ns, "fieldPath": "spec.containers{web}"},
        "reason": "Pulled", "message": "Container image \"busybox:1.36\" already present on machine",
        "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": "2026-11-26T10:00:00Z", "lastTimestamp": "2026-11-26T10:05:00Z",
        "count": 3, "type": "Normal",
    }))
    .unwrap()
}

/// An events.k8s.io/v1 Event as a controller writes it.
fn new_event(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "eventTime": "2026-11-26T10:00:00.250000Z",
        "reportingController": "skiff.io/test-controller", "reportingInstance": "test-controller-1",
        "action": "Scaling", "reason": "ScalingReplicaSet", "type": "Normal",
        "regarding": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": ns},
        "note": "Scaled up replica set web-5d4f8b7c9d from 0 to 3",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_written_through_either_api_reads_renamed_through_the_other() {
    let c = Cluster::shared(&SERVER);
    let (client, ns) = namespace(&c, "ev-views").await;
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), &ns);
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);

    // core/v1 → events.k8s.io/v1
    core.create(&PostParams::default(), &core_event(&ns, "web.pulled")).await.unwrap();
    let ev = events.get("web.pulled").await.unwrap();
    assert_eq!(ev.note.as_deref(), Some("Container image \"busybox:1.36\" already present on machine"));
    let regarding = ev.regarding.clone().unwrap();
    assert_eq!((regarding.kind.as_deref(), regarding.name.as_deref()), (Some("Pod"), Some("web")));
    assert_eq!(regarding.field_path.as_deref(), Some("spec.containers{web}"));
    assert_eq!(ev.deprecated_count, Some(3));
    let source = ev.deprecated_source.clone().unwrap();
    assert_eq!((source.component.as_deref(), source.host.as_deref()), (Some("kubelet"), Some("node-1")));
    assert_eq!(
        ev.deprecated_first_timestamp.as_ref().map(|t| t.0.to_string()).as_deref(),
        Some("2026-11-26T10:00:00Z")
    );
    assert!(ev.event_time.is_none());
    // the JSON is what Go's encoding of events.k8s.io/v1 Event writes
    let (code, body) =
        raw(&client, "GET", &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events/web.pulled"), vec![]).await;
    assert_eq!(code, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((&doc["apiVersion"], &doc["kind"]), (&json!("events.k8s.io/v1"), &json!("Event")));
    assert_eq!(doc["eventTime"], Value::Null);
    assert!(doc.get("involvedObject").is_none() && doc.get("message").is_none() && doc.get("count").is_none());

    // events.k8s.io/v1 → core/v1
    let created: Event = serde_json::from_value(new_event(&ns, "web.scaled")).unwrap();
    let back = events.create(&PostParams::default(), &created).await.unwrap();
    assert_eq!(back.note, created.note);
    let as_core = core.get("web.scaled").await.unwrap();
    assert_eq!(as_core.message.as_deref(), Some("Scaled up replica set web-5d4f8b7c9d from 0 to 3"));
    assert_eq!(as_core.involved_object.kind.as_deref(), Some("Deployment"));
    assert_eq!(as_core.reporting_component.as_deref(), Some("skiff.io/test-controller"));
    assert_eq!(as_core.reporting_instance.as_deref(), Some("test-controller-1"));
    assert_eq!(as_core.action.as_deref(), Some("Scaling"));
    assert_eq!(as_core.event_time.as_ref().map(|t| t.0.subsec_microsecond()), Some(250_000));
    assert_eq!(as_core.metadata.uid, back.metadata.uid);
    assert_eq!(as_core.metadata.resource_version, back.metadata.resource_version);

    // one list, two views, with events.k8s.io's field selectors
    let names = |l: Vec<Event>| l.into_iter().map(|e| e.metadata.name.unwrap()).collect::<Vec<_>>();
    assert_eq!(names(events.list(&ListParams::default()).await.unwrap().items), ["web.pulled", "web.scaled"]);
    let only = |s: &str| ListParams::default().fields(s);
    assert_eq!(names(events.list(&only("regarding.kind=Deployment")).await.unwrap().items), ["web.scaled"]);
    assert_eq!(names(events.list(&only("source=kubelet")).await.unwrap().items), ["web.pulled"]);
    assert_eq!(
        names(events.list(&only("reportingController=skiff.io/test-controller")).await.unwrap().items),
        ["web.scaled"]
    );
    let status = api_error(events.list(&only("involvedObject.kind=Pod")).await);
    assert_eq!((status.code, status.message.as_str()), (400, "field label not supported: involvedObject.kind"));
    let core_only = ListParams::default().fields("involvedObject.kind=Pod,source=kubelet");
    assert_eq!(core.list(&core_only).await.unwrap().items.len(), 1);

    // deleted through one, gone from both
    events.delete("web.pulled", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_error(core.get("web.pulled").await).code, 404);
    assert_eq!(api_error(events.get("web.pulled").await).message, "events.events.k8s.io \"web.pulled\" not found");
    core.create(&PostParams::default(), &core_event(&ns, "web.again")).await.unwrap();
    let gone = events.delete_collection(&DeleteParams::default(), &ListParams::default()).await.unwrap();
    let gone: Vec<String> = gone.left().unwrap().items.into_iter().map(|e| e.note.unwrap_or_default()).collect();
    assert_eq!(gone.len(), 2, "{gone:?}");
    assert!(core.list(&ListParams::default()).await.unwrap().items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_patch_type_goes_through_the_new_api_and_its_rules() {
    let c = Cluster::shared(&SERVER);
    let (client, ns) = namespace(&c, "ev-patch").await;
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), &ns);
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    events.create(&PostParams::default(), &serde_json::from_value(new_event(&ns, "e")).unwrap()).await.unwrap();
    let pp = PatchParams::default();

    let merged = events.patch("e", &pp, &Patch::Merge(json!({"metadata": {"labels": {"a": "1"}}}))).await.unwrap();
    assert_eq!(merged.metadata.labels.unwrap()["a"], "1");
    let strategic = events
        .patch(
            "e",
            &pp,
            &Patch::Strategic(json!({"series": {"count": 2, "lastObservedTime": "2026-11-26T10:01:00.000000Z"}})),
        )
        .await
        .unwrap();
    assert_eq!(strategic.series.unwrap().count, 2);
    let resp = raw_request(
        &client,
        "PATCH",
        &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events/e"),
        "application/json-patch+json",
        br#"[{"op": "add", "path": "/metadata/labels/b", "value": "2"}]"#.to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.body);
    let patched: Event = serde_json::from_str(&resp.body).unwrap();
    assert_eq!(patched.metadata.labels.unwrap().len(), 2);
    let as_core = core.get("e").await.unwrap();
    assert_eq!(as_core.series.unwrap().count, Some(2));
    assert_eq!(as_core.message.as_deref(), Some("Scaled up replica set web-5d4f8b7c9d from 0 to 3"));

    // events.k8s.io/v1 keeps what was reported; core/v1 does not mind
    let status = api_error(events.patch("e", &pp, &Patch::Merge(json!({"note": "rewritten"}))).await);
    assert_eq!(status.code, 422, "{status:?}");
    assert_eq!(
        status.message,
        "Event.events.k8s.io \"e\" is invalid: message: Invalid value: \"rewritten\": field is immutable"
    );
    core.patch("e", &pp, &Patch::Merge(json!({"message": "rewritten"}))).await.unwrap();
    assert_eq!(events.get("e").await.unwrap().note.as_deref(), Some("rewritten"));

    // PUT: a read, changed and written back through the new API
    let mut read = events.get("e").await.unwrap();
    read.metadata.annotations = Some([("replaced".to_string(), "yes".to_string())].into());
    let replaced = events.replace("e", &PostParams::default(), &read).await.unwrap();
    assert_eq!(core.get("e").await.unwrap().metadata.annotations.unwrap()["replaced"], "yes");
    let mut changed = replaced.clone();
    changed.action = Some("Other".into());
    let status = api_error(events.replace("e", &PostParams::default(), &changed).await);
    assert_eq!(
        (status.code, status.message.as_str()),
        (422, "Event.events.k8s.io \"e\" is invalid: action: Invalid value: \"Other\": field is immutable")
    );

    // server-side apply creates and updates through the new API
    let apply = PatchParams::apply("skiff-test").force();
    let mut applied = new_event(&ns, "applied");
    let created = events.patch("applied", &apply, &Patch::Apply(applied.clone())).await.unwrap();
    assert_eq!(created.reason.as_deref(), Some("ScalingReplicaSet"));
    applied["metadata"]["labels"] = json!({"via": "apply"});
    events.patch("applied", &apply, &Patch::Apply(applied)).await.unwrap();
    let as_core = core.get("applied").await.unwrap();
    assert_eq!(as_core.metadata.labels.unwrap()["via"], "apply");
    assert_eq!(as_core.involved_object.name.as_deref(), Some("web"));
    let managers: Vec<_> =
        as_core.metadata.managed_fields.unwrap().into_iter().map(|m| (m.manager, m.api_version)).collect();
    assert!(managers.contains(&(Some("skiff-test".into()), Some("events.k8s.io/v1".into()))), "{managers:?}");
    // ownership crosses the views: a core/v1 writer of `message` owns `note`
    core.patch("applied", &pp, &Patch::Merge(json!({"message": "changed through core"}))).await.unwrap();
    let status = api_error(
        events.patch("applied", &PatchParams::apply("skiff-test"), &Patch::Apply(new_event(&ns, "applied"))).await,
    );
    assert_eq!(status.code, 409, "{status:?}");
    assert!(status.message.contains(".note"), "{status:?}");
    let entries = core.get("applied").await.unwrap().metadata.managed_fields.unwrap();
    let core_entry = entries.iter().find(|m| m.api_version.as_deref() == Some("v1")).expect("the core writer's entry");
    assert!(core_entry.fields_v1.as_ref().unwrap().0.get("f:message").is_some(), "{entries:?}");

    // an update that names core/v1 fields is a strict decoding error
    let (code, body) = raw(
        &client,
        "PUT",
        &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events/applied?fieldValidation=Strict"),
        serde_json::to_vec(&json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "applied"}, "message": "x"}))
            .unwrap(),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("strict decoding error: unknown field \\\"message\\\""), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_through_the_new_api_follow_its_rules() {
    let c = Cluster::shared(&SERVER);
    let (client, ns) = namespace(&c, "ev-rules").await;
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let mut bad = new_event(&ns, "bad");
    let m = bad.as_object_mut().unwrap();
    m.remove("eventTime");
    m.insert("deprecatedCount".into(), json!(2));
    m.insert("type".into(), json!("Info"));
    let status = api_error(events.create(&PostParams::default(), &serde_json::from_value(bad).unwrap()).await);
    assert_eq!(status.code, 422);
    assert_eq!(
        status.message,
        "Event.events.k8s.io \"bad\" is invalid: [eventTime: Required value, type: Invalid value: \"\": has invalid value: Info, \
         count: Invalid value: \"\": needs to be unset]"
    );
    let details = status.details.unwrap();
    assert_eq!((details.kind.as_str(), details.group.as_str()), ("Event", "events.k8s.io"));
    // the same event is fine through core/v1, which has only the legacy rules
    let (code, body) = raw(
        &client,
        "POST",
        &format!("/api/v1/namespaces/{ns}/events"),
        serde_json::to_vec(
            &json!({"metadata": {"name": "old"}, "involvedObject": {"kind": "Pod", "name": "web", "namespace": ns},
            "reason": "Started", "count": 2, "type": "Info"}),
        )
        .unwrap(),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    // protobuf bodies of the new kind decode too (as kubectl 1.32+ sends them)
    let mut pb = b"k8s\0".to_vec();
    let typemeta = [field(1, b"events.k8s.io/v1"), field(2, b"Event")].concat();
    let meta = field(1, b"pb");
    let raw_event = [
        field(1, &meta),
        field(2, &varint_field(1, 1_795_730_131)), // eventTime: MicroTime{seconds}
        field(4, b"skiff.io/pb"),
        field(5, b"pb-1"),
        field(6, b"Encoding"),
        field(7, b"Encoded"),
        field(8, &[field(1, b"Pod"), field(2, ns.as_bytes())].concat()),
        field(11, b"Normal"),
    ]
    .concat();
    pb.extend([field(1, &typemeta), field(2, &raw_event)].concat());
    let resp = raw_request(
        &client,
        "POST",
        &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"),
        "application/vnd.kubernetes.protobuf",
        pb,
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.body);
    let core: Api<CoreEvent> = Api::namespaced(client, &ns);
    assert_eq!(core.get("pb").await.unwrap().reporting_component.as_deref(), Some("skiff.io/pb"));
}

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A length-delimited protobuf field.
fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![(number << 3) | 2];
    varint(&mut out, bytes.len() as u64);
    out.extend_from_slice(bytes);
    out
}

/// A varint protobuf field.
fn varint_field(number: u8, value: u64) -> Vec<u8> {
    let mut out = vec![number << 3];
    varint(&mut out, value);
    out
}

async fn next_event<K>(
    stream: &mut (impl futures::Stream<Item = Result<WatchEvent<K>, kube::Error>> + Unpin),
) -> WatchEvent<K> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a watch event within 10 s")
        .expect("the watch is open")
        .expect("a decodable watch event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_see_writes_through_the_other_api_converted() {
    let c = Cluster::shared(&SERVER);
    let (client, ns) = namespace(&c, "ev-watch").await;
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), &ns);
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let rv = events.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    // one watch without selectors (the stored bytes are not what it serves),
    // one with a field selector
    let mut plain = events.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
    let mut selected = events.watch(&WatchParams::default().fields("regarding.name=web"), &rv).await.unwrap().boxed();
    let mut core_watch = core.watch(&WatchParams::default(), &rv).await.unwrap().boxed();

    core.create(&PostParams::default(), &core_event(&ns, "from-core")).await.unwrap();
    for stream in [&mut plain, &mut selected] {
        match next_event(stream).await {
            WatchEvent::Added(ev) => {
                assert_eq!(ev.metadata.name.as_deref(), Some("from-core"));
                assert_eq!(ev.note.as_deref(), Some("Container image \"busybox:1.36\" already present on machine"));
                assert_eq!(ev.deprecated_count, Some(3));
            }
            other => panic!("expected ADDED, got {other:?}"),
        }
    }
    match next_event(&mut core_watch).await {
        WatchEvent::Added(ev) => assert_eq!(ev.metadata.name.as_deref(), Some("from-core")),
        other => panic!("expected ADDED, got {other:?}"),
    }

    events.create(&PostParams::default(), &serde_json::from_value(new_event(&ns, "from-new")).unwrap()).await.unwrap();
    match next_event(&mut core_watch).await {
        WatchEvent::Added(ev) => {
            assert_eq!(ev.metadata.name.as_deref(), Some("from-new"));
            assert_eq!(ev.message.as_deref(), Some("Scaled up replica set web-5d4f8b7c9d from 0 to 3"));
            assert_eq!(ev.involved_object.kind.as_deref(), Some("Deployment"));
        }
        other => panic!("expected ADDED, got {other:?}"),
    }
    match next_event(&mut plain).await {
        WatchEvent::Added(ev) => assert_eq!(ev.reporting_controller.as_deref(), Some("skiff.io/test-controller")),
        other => panic!("expected ADDED, got {other:?}"),
    }

    core.patch("from-core", &PatchParams::default(), &Patch::Merge(json!({"count": 4}))).await.unwrap();
    core.delete("from-new", &DeleteParams::default()).await.unwrap();
    match next_event(&mut plain).await {
        WatchEvent::Modified(ev) => assert_eq!(ev.deprecated_count, Some(4)),
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    match next_event(&mut plain).await {
        WatchEvent::Deleted(ev) => assert_eq!(ev.regarding.unwrap().kind.as_deref(), Some("Deployment")),
        other => panic!("expected DELETED, got {other:?}"),
    }
    // the selected watch saw only its Pod's event change (both events regard a `web`)
    match next_event(&mut selected).await {
        WatchEvent::Added(ev) => assert_eq!(ev.metadata.name.as_deref(), Some("from-new")),
        other => panic!("expected ADDED, got {other:?}"),
    }
    match next_event(&mut selected).await {
        WatchEvent::Modified(ev) => assert_eq!(ev.metadata.name.as_deref(), Some("from-core")),
        other => panic!("expected MODIFIED, got {other:?}"),
    }

    // and a kube-runtime watcher over the new API lists what is there
    let seen: Vec<Event> = kube::runtime::watcher(events.clone(), kube::runtime::watcher::Config::default())
        .take_while(|e| futures::future::ready(!matches!(e, Ok(kube::runtime::watcher::Event::InitDone))))
        .try_filter_map(|e| async move {
            Ok(match e {
                kube::runtime::watcher::Event::InitApply(ev) => Some(ev),
                _ => None,
            })
        })
        .try_collect()
        .await
        .unwrap();
    assert_eq!(seen.into_iter().map(|e| e.metadata.name.unwrap()).collect::<Vec<_>>(), ["from-core"]);
}

const EVENT_YAML: &str = "apiVersion: events.k8s.io/v1
kind: Event
metadata:
  name: NAME
eventTime: 2026-11-26T10:00:00.000000Z
reportingController: skiff.io/kubectl-test
reportingInstance: kubectl-test-1
action: Testing
reason: KubectlCreated
type: Warning
regarding:
  apiVersion: v1
  kind: Pod
  name: web
  namespace: NS
note: created with kubectl
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_gets_creates_and_refuses_events_k8s_io_events() {
    let c = Cluster::shared(&SERVER);
    let (client, ns) = namespace(&c, "ev-kubectl").await;
    let core: Api<CoreEvent> = Api::namespaced(client, &ns);
    core.create(&PostParams::default(), &core_event(&ns, "web.pulled")).await.unwrap();
    for v in KUBECTL_VERSIONS {
        let name = format!("kubectl-{}", v.replace('.', "-"));
        let yaml = EVENT_YAML.replace("NAME", &name).replace("NS", &ns);
        c.kubectl_stdin(v, &["-n", &ns, "create", "-f", "-"], &yaml)
            .success()
            .stdout_is(&format!("event.events.k8s.io/{name} created\n"));
        // the table is core's: the same columns, the same cells
        for resource in ["events.events.k8s.io", "events.v1.events.k8s.io"] {
            let out = c.kubectl(v, &["-n", &ns, "get", resource]);
            out.success();
            let lines: Vec<Vec<&str>> = out.stdout.lines().map(|l| l.split_whitespace().collect()).collect();
            assert_eq!(lines[0], ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], "{out:?}");
            let row = |reason: &str| {
                lines.iter().find(|l| l.get(2) == Some(&reason)).map(|l| l[1..].join(" ")).unwrap_or_default()
            };
            assert_eq!(
                row("Pulled"),
                "Normal Pulled pod/web Container image \"busybox:1.36\" already present on machine",
                "{out:?}"
            );
            assert_eq!(row("KubectlCreated"), "Warning KubectlCreated pod/web created with kubectl", "{out:?}");
        }
        let wide = c.kubectl(v, &["-n", &ns, "get", "events.events.k8s.io", "-o", "wide"]);
        wide.success().stdout_has("kubelet, node-1").stdout_has("skiff.io/kubectl-test, kubectl-test-1");
        c.kubectl(v, &["-n", &ns, "get", "events.events.k8s.io", &name, "-o", "jsonpath={.note}/{.regarding.name}"])
            .success()
            .stdout_is("created with kubectl/web");
        c.kubectl(v, &["-n", &ns, "get", "ev", &name, "-o", "jsonpath={.apiVersion} {.message}"])
            .success()
            .stdout_is("v1 created with kubectl");
        // a bad one: Kubernetes' 422, as kubectl prints it
        let bad =
            yaml.replace(&format!("name: {name}"), "name: bad").replace("eventTime: 2026-11-26T10:00:00.000000Z\n", "");
        c.kubectl_stdin(v, &["-n", &ns, "create", "-f", "-"], &bad)
            .exit_code(1)
            .stderr_is("The Event \"bad\" is invalid: eventTime: Required value\n");
        c.kubectl(v, &["-n", &ns, "delete", "events.events.k8s.io", &name]).success();

        // -w: Table watch events of the new API, for writes through the old one
        let mut watch = c.kubectl_spawn(v, &["-n", &ns, "get", "events.events.k8s.io", "-w"]);
        watch.wait_for_stdout("the listed event", Duration::from_secs(20), |o| o.contains("pod/web"));
        let later = format!("later-{}", v.replace('.', "-"));
        let mut ev = core_event(&ns, &later);
        ev.reason = Some(format!("Watched{}", v.replace('.', "")));
        core.create(&PostParams::default(), &ev).await.unwrap();
        let reason = ev.reason.unwrap();
        let out = watch.wait_for_stdout("the new event", Duration::from_secs(20), |o| o.contains(&reason));
        let line = out.lines().find(|l| l.contains(&reason)).unwrap();
        assert_eq!(line.split_whitespace().collect::<Vec<_>>()[1..4], ["Normal", reason.as_str(), "pod/web"], "{out}");
        watch.stop();
    }
}

#[test]
fn discovery_and_openapi_describe_the_new_api() {
    let c = Cluster::shared(&SERVER);
    for v in KUBECTL_VERSIONS {
        // the short name is shared, as in Kubernetes; `ev` still means core/v1 (listed first)
        let out = c.kubectl(v, &["api-resources", "--api-group=events.k8s.io"]);
        out.success();
        assert_eq!(out.row("events"), ["events", "ev", "events.k8s.io/v1", "true", "Event"], "{out:?}");
        let legacy = c.kubectl(v, &["get", "--raw", "/apis/events.k8s.io/v1"]);
        let doc: Value = serde_json::from_str(&legacy.success().stdout).unwrap();
        assert_eq!(doc["resources"][0]["name"], "events");
        assert_eq!(doc["resources"][0]["shortNames"], json!(["ev"]));
        // OpenAPI v2 for kubectl 1.27, v3 for 1.33
        c.kubectl(v, &["explain", "events", "--api-version=events.k8s.io/v1"])
            .success()
            .stdout_has("deprecatedCount")
            .stdout_has("reportingController")
            .stdout_lacks("involvedObject");
        c.kubectl(v, &["explain", "events.regarding", "--api-version=events.k8s.io/v1"])
            .success()
            .stdout_has("fieldPath");
        c.kubectl(v, &["explain", "events"]).success().stdout_has("involvedObject").stdout_lacks("deprecatedCount");
    }
}
