//! The machinery every loop shares: informers (one kube-runtime watcher and
//! reflector store per resource type, with change handlers called after the
//! store is updated), a work queue with client-go's semantics (a key is
//! queued once, never processed by two workers at once, and re-queued if it
//! changed while processing), and the workers that drive `reconcile`.
//!
//! Why not `kube::runtime::Controller`: its shared streams do not carry
//! deletions, and a reconcile of an object that is gone (an Endpoints whose
//! Service was deleted, a ReplicaSet's expectations) is part of what these
//! loops do. The informer guarantees a handler runs after the store has the
//! change, so a reconcile triggered by an event always sees it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::Resource;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What a reconcile asks for next, as `kube::runtime::controller::Action`:
/// nothing until something changes, or another look after a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    pub const fn requeue(after: Duration) -> Self {
        Action { requeue_after: Some(after) }
    }

    pub const fn await_change() -> Self {
        Action { requeue_after: None }
    }

    /// The sooner of two requests.
    pub fn min(self, other: Action) -> Action {
        match (self.requeue_after, other.requeue_after) {
            (Some(a), Some(b)) => Action::requeue(a.min(b)),
            (Some(a), None) | (None, Some(a)) => Action::requeue(a),
            (None, None) => Action::await_change(),
        }
    }

    pub fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}

/// A change an informer saw, after its store was updated.
pub enum Change<K> {
    Apply { old: Option<Arc<K>>, new: Arc<K> },
    Delete(Arc<K>),
}

impl<K> Change<K> {
    /// The object as it is now, or as it was when deleted.
    pub fn object(&self) -> &Arc<K> {
        match self {
            Change::Apply { new, .. } => new,
            Change::Delete(o) => o,
        }
    }

    pub fn old(&self) -> Option<&Arc<K>> {
        match self {
            Change::Apply { old, .. } => old.as_ref(),
            Change::Delete(o) => Some(o),
        }
    }
}

type Handler<K> = Box<dyn Fn(&Change<K>) + Send + Sync>;

/// One watched resource type: a reflector store and the handlers to tell.
pub struct Informer<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Clone + Eq + Hash,
{
    api: Api<K>,
    dyntype: K::DynamicType,
    store: Store<K>,
    writer: Mutex<Option<reflector::store::Writer<K>>>,
    handlers: RwLock<Vec<Handler<K>>>,
    label_selector: Option<String>,
    /// True once the first list is in the store. (The store's own
    /// `wait_until_ready` wakes only one of several waiters.)
    synced: tokio::sync::watch::Sender<bool>,
}

impl<K> Informer<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + Hash + Send + Sync + Default,
{
    pub fn new(api: Api<K>) -> Arc<Self> {
        Self::new_with(api, K::DynamicType::default(), None)
    }
}

impl<K> Informer<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + Hash + Send + Sync,
{
    pub fn new_with(api: Api<K>, dyntype: K::DynamicType, label_selector: Option<String>) -> Arc<Self> {
        let writer = reflector::store::Writer::new(dyntype.clone());
        Arc::new(Informer {
            api,
            store: writer.as_reader(),
            dyntype,
            writer: Mutex::new(Some(writer)),
            handlers: RwLock::new(Vec::new()),
            label_selector,
            synced: tokio::sync::watch::Sender::new(false),
        })
    }

    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    pub fn dyntype(&self) -> &K::DynamicType {
        &self.dyntype
    }

    /// Call `f` for every change from now on (register before `run`, so the
    /// first list reaches it too).
    pub fn on_change(&self, f: impl Fn(&Change<K>) + Send + Sync + 'static) {
        if let Ok(mut h) = self.handlers.write() {
            h.push(Box::new(f));
        }
    }

    fn notify(&self, change: &Change<K>) {
        if let Ok(handlers) = self.handlers.read() {
            for h in handlers.iter() {
                h(change);
            }
        }
    }

    /// Whether the first list has arrived.
    pub async fn synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Watch until `stop` fires. Runs once per informer.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let Some(mut writer) = self.writer.lock().ok().and_then(|mut w| w.take()) else {
            return;
        };
        let mut config = watcher::Config::default();
        if let Some(l) = &self.label_selector {
            config = config.labels(l);
        }
        let stream = watcher(self.api.clone(), config).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut before_relist: Option<HashMap<ObjectRef<K>, Arc<K>>> = None;
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                n = stream.next() => n,
            };
            let event = match next {
                None => return,
                Some(Err(e)) => {
                    tracing::warn!(api = %self.api.resource_url(), error = %e, "watch error; retrying");
                    continue;
                }
                Some(Ok(e)) => e,
            };
            match &event {
                watcher::Event::Apply(obj) => {
                    tracing::trace!(api = %self.api.resource_url(), name = ?obj.meta().name, "applied");
                    let key = ObjectRef::from_obj_with(obj, self.dyntype.clone());
                    let old = self.store.get(&key);
                    writer.apply_watcher_event(&event);
                    if let Some(new) = self.store.get(&key) {
                        self.notify(&Change::Apply { old, new });
                    }
                }
                watcher::Event::Delete(obj) => {
                    writer.apply_watcher_event(&event);
                    self.notify(&Change::Delete(Arc::new(obj.clone())));
                }
                watcher::Event::Init => {
                    before_relist = Some(
                        self.store
                            .state()
                            .into_iter()
                            .map(|o| (ObjectRef::from_obj_with(&*o, self.dyntype.clone()), o))
                            .collect(),
                    );
                    writer.apply_watcher_event(&event);
                }
                watcher::Event::InitApply(_) => writer.apply_watcher_event(&event),
                watcher::Event::InitDone => {
                    writer.apply_watcher_event(&event);
                    tracing::debug!(api = %self.api.resource_url(), objects = self.store.len(), "listed");
                    self.synced.send_replace(true);
                    let mut before = before_relist.take().unwrap_or_default();
                    for new in self.store.state() {
                        let key = ObjectRef::from_obj_with(&*new, self.dyntype.clone());
                        let old = before.remove(&key);
                        let same = old.as_ref().is_some_and(|o| {
                            o.meta().resource_version.is_some()
                                && o.meta().resource_version == new.meta().resource_version
                        });
                        if !same {
                            self.notify(&Change::Apply { old, new });
                        }
                    }
                    for (_, gone) in before {
                        self.notify(&Change::Delete(gone));
                    }
                }
            }
        }
    }
}

struct QueueState<T> {
    queue: VecDeque<T>,
    dirty: HashSet<T>,
    processing: HashSet<T>,
    failures: HashMap<T, u32>,
    shut_down: bool,
}

/// A deduplicating work queue: an item waits at most once, is handed to one
/// worker at a time, and comes back if it was added while being processed.
pub struct WorkQueue<T> {
    state: Mutex<QueueState<T>>,
    notify: Notify,
}

impl<T: Eq + Hash + Clone + Send + Sync + 'static> WorkQueue<T> {
    pub fn new() -> Arc<Self> {
        Arc::new(WorkQueue {
            state: Mutex::new(QueueState {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                failures: HashMap::new(),
                shut_down: false,
            }),
            notify: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState<T>> {
        // a panic while holding this lock leaves consistent data behind
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, item: T) {
        let mut st = self.lock();
        if st.shut_down || st.dirty.contains(&item) {
            return;
        }
        st.dirty.insert(item.clone());
        if st.processing.contains(&item) {
            return;
        }
        st.queue.push_back(item);
        drop(st);
        self.notify.notify_one();
    }

    pub fn add_after(self: &Arc<Self>, item: T, after: Duration) {
        if after.is_zero() {
            self.add(item);
            return;
        }
        let q = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if let Some(q) = q.upgrade() {
                q.add(item);
            }
        });
    }

    /// Add again after an exponential backoff (5 ms doubling to 30 s).
    pub fn add_rate_limited(self: &Arc<Self>, item: T) {
        let n = {
            let mut st = self.lock();
            let n = st.failures.entry(item.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let delay = Duration::from_millis(5u64.saturating_mul(1u64 << n.min(16))).min(Duration::from_secs(30));
        self.add_after(item, delay);
    }

    pub fn forget(&self, item: &T) {
        self.lock().failures.remove(item);
    }

    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next item, or None once shut down.
    pub async fn get(&self) -> Option<T> {
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                if st.shut_down {
                    return None;
                }
                if let Some(item) = st.queue.pop_front() {
                    st.dirty.remove(&item);
                    st.processing.insert(item.clone());
                    let more = !st.queue.is_empty();
                    drop(st);
                    if more {
                        self.notify.notify_one();
                    }
                    return Some(item);
                }
            }
            notified.await;
        }
    }

    pub fn done(&self, item: &T) {
        let mut st = self.lock();
        st.processing.remove(item);
        if st.dirty.contains(item) {
            st.queue.push_back(item.clone());
            drop(st);
            self.notify.notify_one();
        }
    }

    pub fn shut_down(&self) {
        self.lock().shut_down = true;
        self.notify.notify_waiters();
    }
}

/// Run `workers` tasks that take keys from `queue` and reconcile them until
/// `stop` fires: success forgets the key's failures and honours the requested
/// requeue; an error retries with backoff.
pub async fn run_workers<T, F, Fut, E>(
    name: &'static str,
    queue: Arc<WorkQueue<T>>,
    workers: usize,
    stop: CancellationToken,
    f: F,
) where
    T: Eq + Hash + Clone + Debug + Send + Sync + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, E>> + Send,
    E: std::fmt::Display,
{
    let f = Arc::new(f);
    tracing::debug!(controller = name, workers, "workers starting");
    let mut tasks = Vec::new();
    for _ in 0..workers.max(1) {
        let queue = queue.clone();
        let f = f.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let item = tokio::select! {
                    _ = stop.cancelled() => break,
                    i = queue.get() => match i { Some(i) => i, None => break },
                };
                let started = Instant::now();
                let span = tracing::debug_span!("reconcile", controller = name, object = ?item);
                let result = tracing::Instrument::instrument(f(item.clone()), span).await;
                let took = started.elapsed();
                match result {
                    Ok(action) => {
                        queue.forget(&item);
                        if let Some(after) = action.requeue_after() {
                            queue.add_after(item.clone(), after);
                        }
                        tracing::trace!(controller = name, key = ?item, ?took, "reconciled");
                    }
                    Err(e) => {
                        tracing::debug!(controller = name, key = ?item, error = %e, "reconcile failed; will retry");
                        queue.add_rate_limited(item.clone());
                    }
                }
                queue.done(&item);
            }
        }));
    }
    stop.cancelled().await;
    queue.shut_down();
    for t in tasks {
        let _ = t.await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn queue_deduplicates_and_requeues_dirty_items() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let a = q.get().await.unwrap();
        assert_eq!(a, "a");
        // added while processing: not handed out until done
        q.add("a");
        assert_eq!(q.get().await.unwrap(), "b");
        assert!(q.is_empty());
        q.done(&"a");
        assert_eq!(q.get().await.unwrap(), "a");
        q.done(&"a");
        q.done(&"b");
        assert!(q.is_empty());
    }

    #[test]
    fn action_min_prefers_the_sooner() {
        let a = Action::requeue(Duration::from_secs(5)).min(Action::await_change());
        assert_eq!(a.requeue_after(), Some(Duration::from_secs(5)));
        let b = Action::requeue(Duration::from_secs(5)).min(Action::requeue(Duration::from_secs(1)));
        assert_eq!(b.requeue_after(), Some(Duration::from_secs(1)));
    }
}
