//! A small core/v1 Event recorder, like client-go's: events go out from a
//! background task (a full buffer drops events rather than slowing a loop
//! down), and a repeat of the same reason and message about the same object
//! from the same component raises `count` and `lastTimestamp` of the event
//! already written instead of writing a new one.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Resource;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const BUFFER: usize = 2048;
const SENDERS: usize = 4;
/// How many distinct events each sender remembers for aggregation.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

#[derive(Debug, Clone)]
struct Record {
    involved: ObjectReference,
    kind: EventType,
    reason: String,
    message: String,
    component: &'static str,
}

impl Record {
    fn key(&self) -> (Option<String>, Option<String>, String, String, EventType, &'static str) {
        (
            self.involved.namespace.clone(),
            self.involved.uid.clone(),
            self.reason.clone(),
            self.message.clone(),
            self.kind,
            self.component,
        )
    }
}

/// Hands events to the background senders. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    senders: Vec<mpsc::Sender<skiff_events::Pending>>,
    component: &'static str,
    /// This process, for reportingInstance.
    host: String,
}

/// A reference to `obj` for `involvedObject`.
pub fn reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: obj.meta().name.clone(),
        namespace: obj.meta().namespace.clone(),
        uid: obj.meta().uid.clone(),
        resource_version: obj.meta().resource_version.clone(),
        field_path: None,
    }
}

impl Recorder {
    /// A recorder, and the future that sends its events until `stop` fires.
    pub fn new(
        client: kube::Client,
        host: String,
        stop: CancellationToken,
    ) -> (Recorder, impl std::future::Future<Output = ()>) {
        let mut senders = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..SENDERS {
            let (tx, rx) = mpsc::channel(BUFFER / SENDERS);
            senders.push(tx);
            tasks.push(skiff_events::send_loop(client.clone(), rx, stop.clone()));
        }
        let fut = async move {
            futures::future::join_all(tasks).await;
        };
        (Recorder { senders, component: "", host }, fut)
    }

    /// The same recorder, writing as `component` (`source.component`,
    /// `reportingComponent`).
    pub fn for_component(&self, component: &'static str) -> Recorder {
        Recorder { senders: self.senders.clone(), component, host: self.host.clone() }
    }

    pub fn normal<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, message: String) {
        self.publish(reference(obj), EventType::Normal, reason, message);
    }

    pub fn warning<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, message: String) {
        self.publish(reference(obj), EventType::Warning, reason, message);
    }

    pub fn publish(&self, involved: ObjectReference, kind: EventType, reason: &str, message: String) {
        if self.senders.is_empty() {
            return;
        }
        let record = Record { involved, kind, reason: reason.to_string(), message, component: self.component };
        let pending = pending(&record, &self.host);
        // the same object's events go through the same sender, in order
        let mut h = DefaultHasher::new();
        record.involved.uid.hash(&mut h);
        let i = (h.finish() as usize) % self.senders.len();
        if self.senders[i].try_send(pending).is_err() {
            tracing::debug!(reason, "event dropped: the event buffer is full");
        }
    }
}

/// The event a control loop writes for a record.
fn pending(r: &Record, host: &str) -> skiff_events::Pending {
    let event = Event {
        involved_object: r.involved.clone(),
        reason: Some(r.reason.clone()),
        message: Some(r.message.clone()),
        type_: Some(r.kind.as_str().to_string()),
        source: Some(EventSource { component: Some(r.component.to_string()), host: None }),
        event_time: None::<MicroTime>,
        reporting_component: Some(r.component.to_string()),
        reporting_instance: Some(format!("{}-{host}", r.component)),
        ..Default::default()
    };
    skiff_events::Pending { key: format!("{:?}", r.key()), event }
}
