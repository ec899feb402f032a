//! core/v1 Events about pods, written as the kubelet writes them (source
//! component `kubelet`, host = the node): from a background task, so a slow
//! API server never slows a pod's sync; a repeat of the same event raises
//! `count` and `lastTimestamp` of the one already written.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const BUFFER: usize = 1024;
const REMEMBERED: usize = 4096;
pub const COMPONENT: &str = "kubelet";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Record {
    pub involved: ObjectReferenceKey,
    pub type_: String,
    pub reason: String,
    pub message: String,
}

/// The parts of the involved object that make two events the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectReferenceKey {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub field_path: Option<String>,
}

/// Hands events to the sender task. Cheap to clone.
#[derive(Clone, Default)]
pub struct Recorder {
    tx: Option<mpsc::Sender<Record>>,
    /// Tests: events kept in memory instead.
    captured: Option<Arc<Mutex<Vec<Record>>>>,
}

impl Recorder {
    /// A recorder, and the future that writes its events until `stop`.
    pub fn new(
        client: kube::Client,
        node: String,
        stop: CancellationToken,
    ) -> (Recorder, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::channel(BUFFER);
        (Recorder { tx: Some(tx), captured: None }, send_loop(client, node, rx, stop))
    }

    /// A recorder that keeps events in memory (tests).
    pub fn capturing() -> (Recorder, Arc<Mutex<Vec<Record>>>) {
        let store = Arc::new(Mutex::new(Vec::new()));
        (Recorder { tx: None, captured: Some(store.clone()) }, store)
    }

    /// An event about `pod` (and, with `container`, about that container:
    /// `spec.containers{name}`).
    pub fn pod(&self, pod: &Pod, container: Option<&str>, type_: &str, reason: &str, message: String) {
        let involved = ObjectReferenceKey {
            namespace: pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            field_path: container.map(|c| container_field_path(pod, c)),
        };
        let r = Record { involved, type_: type_.into(), reason: reason.into(), message };
        tracing::debug!(pod = %r.involved.name, reason = %r.reason, message = %r.message, "event");
        if let Some(c) = &self.captured {
            if let Ok(mut v) = c.lock() {
                v.push(r);
            }
            return;
        }
        if let Some(tx) = &self.tx {
            if tx.try_send(r).is_err() {
                tracing::debug!(reason, "event dropped: the event buffer is full");
            }
        }
    }
}

fn container_field_path(pod: &Pod, name: &str) -> String {
    let init = pod.spec.iter().flat_map(|s| s.init_containers.iter().flatten()).any(|c| c.name == name);
    if init {
        format!("spec.initContainers{{{name}}}")
    } else {
        format!("spec.containers{{{name}}}")
    }
}

struct Written {
    name: String,
    count: i32,
}

async fn send_loop(client: kube::Client, node: String, mut rx: mpsc::Receiver<Record>, stop: CancellationToken) {
    let mut seen: HashMap<Record, Written> = HashMap::new();
    loop {
        let r = tokio::select! {
            _ = stop.cancelled() => return,
            r = rx.recv() => match r { Some(r) => r, None => return },
        };
        let api: Api<Event> = Api::namespaced(client.clone(), &r.involved.namespace);
        if let Some(w) = seen.get_mut(&r) {
            let patch = serde_json::json!({"count": w.count + 1, "lastTimestamp": crate::pods::status::time(chrono::Utc::now())});
            match api.patch(&w.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    w.count += 1;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "updating an event failed; writing a new one");
                    seen.remove(&r);
                }
            }
        }
        if seen.len() >= REMEMBERED {
            seen.clear();
        }
        let now = chrono::Utc::now();
        let name = format!("{}.{:x}", r.involved.name, now.timestamp_nanos_opt().unwrap_or_default());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(r.involved.namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(r.involved.name.clone()),
                namespace: Some(r.involved.namespace.clone()),
                uid: Some(r.involved.uid.clone()),
                field_path: r.involved.field_path.clone(),
                resource_version: None,
            },
            reason: Some(r.reason.clone()),
            message: Some(r.message.clone()),
            type_: Some(r.type_.clone()),
            source: Some(EventSource { component: Some(COMPONENT.into()), host: Some(node.clone()) }),
            first_timestamp: Some(crate::pods::status::time(now)),
            last_timestamp: Some(crate::pods::status::time(now)),
            count: Some(1),
            reporting_component: Some(COMPONENT.into()),
            reporting_instance: Some(node.clone()),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                seen.insert(r, Written { name, count: 1 });
            }
            Err(e) => tracing::debug!(error = %e, reason = %r.reason, "writing an event failed"),
        }
    }
}
