//! A small core/v1 Event recorder, like client-go's: events go out from a
//! background task (a full buffer drops events rather than slowing a loop
//! down), and a repeat of the same reason and message about the same object
//! from the same component raises `count` and `lastTimestamp` of the event
//! already written instead of writing a new one.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::time::{now, now_time};

const BUFFER: usize = 2048;
const SENDERS: usize = 4;
/// How many distinct events each sender remembers for aggregation.
const REMEMBERED: usize = 4096;

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
    senders: Vec<mpsc::Sender<Record>>,
    component: &'static str,
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
            tasks.push(send_loop(client.clone(), host.clone(), rx, stop.clone()));
        }
        let fut = async move {
            futures::future::join_all(tasks).await;
        };
        (Recorder { senders, component: "" }, fut)
    }

    /// The same recorder, writing as `component` (`source.component`,
    /// `reportingComponent`).
    pub fn for_component(&self, component: &'static str) -> Recorder {
        Recorder { senders: self.senders.clone(), component }
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
        // the same object's events go through the same sender, in order
        let mut h = DefaultHasher::new();
        record.involved.uid.hash(&mut h);
        let i = (h.finish() as usize) % self.senders.len();
        if self.senders[i].try_send(record).is_err() {
            tracing::debug!(reason, "event dropped: the event buffer is full");
        }
    }
}

struct Written {
    namespace: String,
    name: String,
    count: i32,
}

async fn send_loop(client: kube::Client, host: String, mut rx: mpsc::Receiver<Record>, stop: CancellationToken) {
    let mut seen: HashMap<_, Written> = HashMap::new();
    loop {
        let record = tokio::select! {
            _ = stop.cancelled() => return,
            r = rx.recv() => match r { Some(r) => r, None => return },
        };
        let key = record.key();
        if let Some(w) = seen.get_mut(&key) {
            let api: Api<Event> = Api::namespaced(client.clone(), &w.namespace);
            let patch = serde_json::json!({"count": w.count + 1, "lastTimestamp": now_time()});
            match api.patch(&w.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    w.count += 1;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "updating an event failed; writing a new one");
                    seen.remove(&key);
                }
            }
        }
        if seen.len() >= REMEMBERED {
            seen.clear();
        }
        if let Some(w) = create(&client, &host, &record).await {
            seen.insert(key, w);
        }
    }
}

async fn create(client: &kube::Client, host: &str, r: &Record) -> Option<Written> {
    let namespace = r.involved.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into());
    let t = now();
    let name = format!("{}.{:x}", r.involved.name.as_deref().unwrap_or("unknown"), t.as_nanosecond());
    let event = Event {
        metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(namespace.clone()), ..Default::default() },
        involved_object: r.involved.clone(),
        reason: Some(r.reason.clone()),
        message: Some(r.message.clone()),
        type_: Some(r.kind.as_str().to_string()),
        source: Some(EventSource { component: Some(r.component.to_string()), host: None }),
        first_timestamp: Some(now_time()),
        last_timestamp: Some(now_time()),
        count: Some(1),
        event_time: None::<MicroTime>,
        reporting_component: Some(r.component.to_string()),
        reporting_instance: Some(format!("{}-{host}", r.component)),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
    match api.create(&PostParams::default(), &event).await {
        Ok(e) => Some(Written { namespace, name: e.name_any(), count: 1 }),
        Err(e) => {
            tracing::debug!(error = %e, reason = %r.reason, "writing an event failed");
            None
        }
    }
}
