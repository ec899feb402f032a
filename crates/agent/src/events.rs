//! core/v1 Events about pods, written as the kubelet writes them (source
//! component `kubelet`, host = the node): from a background task, so a slow
//! API server never slows a pod's sync; a repeat of the same event raises
//! `count` and `lastTimestamp` of the one already written.

use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const BUFFER: usize = 1024;
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
    tx: Option<mpsc::Sender<skiff_events::Pending>>,
    node: String,
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
        let (tx, rx) = mpsc::channel::<skiff_events::Pending>(BUFFER);
        (Recorder { tx: Some(tx), node, captured: None }, skiff_events::send_loop(client, rx, stop))
    }

    /// A recorder that keeps events in memory (tests).
    pub fn capturing() -> (Recorder, Arc<Mutex<Vec<Record>>>) {
        let store = Arc::new(Mutex::new(Vec::new()));
        (Recorder { tx: None, node: String::new(), captured: Some(store.clone()) }, store)
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
            if tx.try_send(pending(&r, &self.node)).is_err() {
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

/// The event the kubelet writes for a record.
fn pending(r: &Record, node: &str) -> skiff_events::Pending {
    let event = Event {
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
        source: Some(EventSource { component: Some(COMPONENT.into()), host: Some(node.to_string()) }),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(node.to_string()),
        ..Default::default()
    };
    let i = &r.involved;
    let key = format!("{}/{}/{}/{:?}/{}/{}/{}", i.namespace, i.name, i.uid, i.field_path, r.type_, r.reason, r.message);
    skiff_events::Pending { key, event }
}
