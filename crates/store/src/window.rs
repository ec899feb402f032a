//! The watch window: the last N events, kept in memory, plus live delivery.
//!
//! The window is the store's only history. A watch replays the retained
//! events after its start revision and then follows live events from a
//! broadcast channel. The replay snapshot and the subscription are taken under
//! one lock, and the writer appends and broadcasts under the same lock, so a
//! watcher sees every event once, in revision order. A watcher that falls
//! behind the broadcast channel catches up from the window; if the window no
//! longer holds its position, its stream yields one `Expired` and ends.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::StreamExt;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::{Event, Result, Revision, StoreError, WatchStream};

/// Bounds of the broadcast ring. It holds `Arc`s, so a slot is small; a
/// watcher that falls further behind than this catches up from the window.
const MIN_BROADCAST: usize = 16;
const MAX_BROADCAST: usize = 4096;

pub(crate) struct Window {
    inner: Mutex<Inner>,
}

struct Inner {
    events: VecDeque<Arc<Event>>,
    capacity: usize,
    /// The oldest revision a watch can start after.
    oldest: Revision,
    /// The revision of the newest published event (or the open revision).
    latest: Revision,
    /// `None` once the store has closed: receivers then drain and end.
    tx: Option<broadcast::Sender<Arc<Event>>>,
}

/// The retained events after some revision that match a prefix.
struct Replay {
    events: Vec<Arc<Event>>,
    /// The newest revision the window held when the replay was taken.
    upto: Revision,
}

impl Window {
    /// A window of `capacity` events for a store whose latest revision is
    /// `revision`: watches can start after `revision` or later.
    pub(crate) fn new(capacity: usize, revision: Revision) -> Self {
        let (tx, _) = broadcast::channel(capacity.clamp(MIN_BROADCAST, MAX_BROADCAST));
        Window {
            inner: Mutex::new(Inner {
                events: VecDeque::with_capacity(capacity.min(MAX_BROADCAST)),
                capacity,
                oldest: revision,
                latest: revision,
                tx: Some(tx),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves the window consistent (every
        // mutation is a push, a pop or a field store), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn oldest_watchable(&self) -> Revision {
        self.lock().oldest
    }

    /// Append events (in revision order) and deliver them to live watchers.
    pub(crate) fn publish(&self, events: impl IntoIterator<Item = Arc<Event>>) {
        let mut inner = self.lock();
        for event in events {
            inner.push(event);
        }
    }

    /// Stop live delivery: every watch stream ends after what it has received.
    pub(crate) fn close(&self) {
        self.lock().tx = None;
    }

    /// Start a watch of `prefix` after revision `after`.
    pub(crate) fn watch(self: &Arc<Self>, prefix: &str, after: Revision) -> Result<WatchStream> {
        let (replay, rx) = {
            let inner = self.lock();
            let replay = inner.replay(prefix, after)?;
            let rx = inner.tx.as_ref().ok_or(StoreError::Closed)?.subscribe();
            (replay, rx)
        };
        let watcher = Watcher {
            window: Arc::clone(self),
            rx,
            prefix: prefix.to_owned(),
            pos: after.max(replay.upto),
            pending: replay.events.into(),
            done: false,
        };
        Ok(futures::stream::unfold(watcher, Watcher::next).boxed())
    }

    fn catch_up(&self, prefix: &str, after: Revision) -> Result<Replay> {
        self.lock().replay(prefix, after)
    }
}

impl Inner {
    fn push(&mut self, event: Arc<Event>) {
        self.latest = event.revision;
        if self.capacity == 0 {
            self.oldest = event.revision;
        } else {
            if self.events.len() >= self.capacity {
                if let Some(evicted) = self.events.pop_front() {
                    self.oldest = evicted.revision;
                }
            }
            self.events.push_back(Arc::clone(&event));
        }
        if let Some(tx) = &self.tx {
            // An error only means nobody is watching right now.
            let _ = tx.send(event);
        }
    }

    fn replay(&self, prefix: &str, after: Revision) -> Result<Replay> {
        if after < self.oldest {
            return Err(StoreError::Expired { requested: after, oldest: self.oldest });
        }
        let start = self.events.partition_point(|e| e.revision <= after);
        let events = self.events.range(start..).filter(|e| e.key.starts_with(prefix)).cloned().collect();
        Ok(Replay { events, upto: self.latest })
    }
}

/// The state of one watch stream.
struct Watcher {
    window: Arc<Window>,
    rx: broadcast::Receiver<Arc<Event>>,
    prefix: String,
    /// Every event up to this revision has been delivered, queued in
    /// `pending`, or skipped as not matching.
    pos: Revision,
    pending: VecDeque<Arc<Event>>,
    done: bool,
}

impl Watcher {
    async fn next(mut self) -> Option<(Result<Event>, Self)> {
        loop {
            if self.done {
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(Event::clone(&event)), self));
            }
            match self.rx.recv().await {
                Ok(event) => {
                    if event.revision <= self.pos {
                        continue;
                    }
                    self.pos = event.revision;
                    if event.key.starts_with(&self.prefix) {
                        return Some((Ok(Event::clone(&event)), self));
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(prefix = %self.prefix, pos = self.pos, missed, "watcher lagged, catching up from the window");
                    match self.window.catch_up(&self.prefix, self.pos) {
                        Ok(replay) => {
                            self.pos = self.pos.max(replay.upto);
                            self.pending = replay.events.into();
                        }
                        Err(e) => {
                            self.done = true;
                            return Some((Err(e), self));
                        }
                    }
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventKind;
    use futures::StreamExt;

    fn put(revision: Revision, key: &str) -> Arc<Event> {
        Arc::new(Event {
            kind: EventKind::Put,
            revision,
            key: key.to_owned(),
            value: Some(bytes::Bytes::from_static(b"v")),
            prev_value: None,
        })
    }

    fn revisions(events: &[Result<Event>]) -> Vec<Revision> {
        events.iter().map(|e| e.as_ref().map(|e| e.revision).unwrap_or(0)).collect()
    }

    #[tokio::test]
    async fn eviction_moves_oldest_watchable() {
        let window = Arc::new(Window::new(3, 10));
        assert_eq!(window.oldest_watchable(), 10);
        window.publish((11..=15).map(|r| put(r, "/a")));
        assert_eq!(window.oldest_watchable(), 12);
        let err = window.watch("/", 11).err();
        assert!(matches!(err, Some(StoreError::Expired { requested: 11, oldest: 12 })), "{err:?}");
        window.close();
        let err = window.watch("/", 12).err();
        assert!(matches!(err, Some(StoreError::Closed)), "{err:?}");
    }

    #[tokio::test]
    async fn zero_capacity_only_follows_live_events() {
        let window = Arc::new(Window::new(0, 0));
        let stream = window.watch("/", 0).expect("watch at the open revision");
        window.publish([put(1, "/a"), put(2, "/b")]);
        assert_eq!(window.oldest_watchable(), 2);
        window.close();
        let got: Vec<_> = stream.collect().await;
        assert_eq!(revisions(&got), vec![1, 2]);
    }

    #[tokio::test]
    async fn lagging_watcher_catches_up_without_gaps() {
        let window = Arc::new(Window::new(20_000, 0));
        let stream = window.watch("/a", 0).expect("watch");
        // Far more than the broadcast ring holds, while the watcher is idle.
        let keys = ["/a", "/b"];
        window.publish((1..=3 * MAX_BROADCAST as u64).map(|r| put(r, keys[r as usize % 2])));
        window.close();
        let got: Vec<_> = stream.collect().await;
        let expected: Vec<Revision> = (1..=3 * MAX_BROADCAST as u64).filter(|r| r % 2 == 0).collect();
        assert_eq!(revisions(&got), expected);
    }

    #[tokio::test]
    async fn watcher_behind_the_window_gets_one_expired() {
        let window = Arc::new(Window::new(100, 0));
        let stream = window.watch("/", 0).expect("watch");
        window.publish((1..=2 * MAX_BROADCAST as u64).map(|r| put(r, "/a")));
        window.close();
        let got: Vec<_> = stream.collect().await;
        assert_eq!(got.len(), 1, "{got:?}");
        let oldest = 2 * MAX_BROADCAST as u64 - 100;
        assert!(matches!(got[0], Err(StoreError::Expired { requested: 0, oldest: o }) if o == oldest), "{got:?}");
    }
}
