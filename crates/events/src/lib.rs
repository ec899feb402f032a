//! skiff-events: how Skiff's components (the control loops, the node agent)
//! write core/v1 Events, like client-go's recorder: from a background task,
//! so a slow API server never slows a loop down, and a repeat of an event
//! already written raises its `count` and `lastTimestamp` instead of
//! writing a new one. Each component builds the Event it means (involved
//! object, reason, message, type, source); this crate names, stamps,
//! aggregates and sends it.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How many written events a sender remembers for aggregation.
const REMEMBERED: usize = 4096;

/// One event to write. `key` says which events are "the same" (a repeat
/// aggregates into the one already written); `event` is the event as first
/// written, without name, timestamps or count (the sender sets them).
#[derive(Debug, Clone)]
pub struct Pending {
    pub key: String,
    pub event: Event,
}

struct Written {
    namespace: String,
    name: String,
    count: i32,
}

/// Now as a `metav1.Time` in whole seconds, as Kubernetes writes them.
fn now_time() -> Time {
    let t = jiff::Timestamp::now();
    Time(jiff::Timestamp::from_second(t.as_second()).unwrap_or(t))
}

/// Write the events arriving on `rx` until `stop` (or until every sender is gone).
pub async fn send_loop(client: kube::Client, mut rx: mpsc::Receiver<Pending>, stop: CancellationToken) {
    let mut seen: HashMap<String, Written> = HashMap::new();
    loop {
        let pending = tokio::select! {
            _ = stop.cancelled() => return,
            r = rx.recv() => match r { Some(r) => r, None => return },
        };
        if let Some(w) = seen.get_mut(&pending.key) {
            let api: Api<Event> = Api::namespaced(client.clone(), &w.namespace);
            let patch = serde_json::json!({"count": w.count + 1, "lastTimestamp": now_time()});
            match api.patch(&w.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    w.count += 1;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "updating an event failed; writing a new one");
                    seen.remove(&pending.key);
                }
            }
        }
        if seen.len() >= REMEMBERED {
            seen.clear();
        }
        if let Some(w) = create(&client, pending.event).await {
            seen.insert(pending.key, w);
        }
    }
}

async fn create(client: &kube::Client, mut event: Event) -> Option<Written> {
    let namespace = event
        .involved_object
        .namespace
        .clone()
        .or_else(|| event.metadata.namespace.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into());
    let involved = event.involved_object.name.clone().unwrap_or_else(|| "unknown".into());
    let name = format!("{involved}.{:x}", jiff::Timestamp::now().as_nanosecond());
    event.metadata.name = Some(name);
    event.metadata.namespace = Some(namespace.clone());
    event.first_timestamp = Some(now_time());
    event.last_timestamp = Some(now_time());
    event.count = Some(1);
    let reason = event.reason.clone().unwrap_or_default();
    let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
    match api.create(&PostParams::default(), &event).await {
        Ok(e) => Some(Written { namespace, name: e.name_any(), count: 1 }),
        Err(e) => {
            tracing::debug!(error = %e, %reason, "writing an event failed");
            None
        }
    }
}
