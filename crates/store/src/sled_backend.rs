//! The embedded backend: sled for durability, an in-memory index for reads,
//! one writer thread with group commit.
//!
//! On disk, one sled tree holds the current value of every key, under the key
//! tagged with [`DATA_TAG`], encoded as `[create_revision u64 BE][mod_revision
//! u64 BE][value]`, and the latest revision under [`META_REVISION`]; each
//! batch of writes is one atomic `apply_batch` carrying both. History is not
//! kept on disk: deleted keys are removed and the watch window in memory is the
//! only history, so after a restart watches can start only after the open
//! revision (clients re-list on 410).
//!
//! Reads are served from the index, which is updated only after a batch is
//! durable, so nobody reads an unacknowledged write.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::window::Window;
use crate::{Event, EventKind, KeyValue, ListResult, Result, Revision, Store, StoreError, WatchStream};

/// The sled tree holding the store.
const TREE: &str = "skiff-kv";
/// The latest revision; it sorts before every data key.
const META_REVISION: &[u8] = b"\x00revision";
/// Tag byte before every user key, keeping user keys apart from meta keys.
const DATA_TAG: u8 = 0x01;
/// Bytes of `[create_revision][mod_revision]` before a stored value.
const HEADER_LEN: usize = 16;
/// Most requests committed in one batch.
const MAX_BATCH: usize = 1024;

/// How to open a [`SledStore`].
#[derive(Debug, Clone)]
pub struct SledOptions {
    /// The sled database directory; created if missing.
    pub path: PathBuf,
    /// Number of recent events retained for watches.
    pub window: usize,
    /// Fsync each batch before acknowledging it. `false` is for benchmarks of
    /// non-durable mode only: sled then flushes in the background.
    pub flush: bool,
}

impl SledOptions {
    pub const DEFAULT_WINDOW: usize = 100_000;

    /// Options with the defaults: a window of 100 000 events, durable writes.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SledOptions { path: path.into(), window: Self::DEFAULT_WINDOW, flush: true }
    }
}

/// Counters of the writer, for benchmarks: `writes / batches` is the mean
/// group-commit size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Batches committed to sled.
    pub batches: u64,
    /// Writes committed (each consumed one revision).
    pub writes: u64,
}

/// The revisioned store on sled. Open it with [`SledStore::open`]; it closes
/// (finishing queued writes) on [`SledStore::close`] or when dropped.
pub struct SledStore {
    path: PathBuf,
    index: Arc<RwLock<Index>>,
    window: Arc<Window>,
    /// `None` once closed.
    tx: Mutex<Option<mpsc::Sender<Request>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Kept for [`SledStore::size_on_disk`]; dropped on close.
    db: Mutex<Option<sled::Db>>,
    stats: Arc<Stats>,
}

/// The current state, as acknowledged.
#[derive(Default)]
struct Index {
    revision: Revision,
    keys: BTreeMap<String, KeyValue>,
}

#[derive(Default)]
struct Stats {
    batches: AtomicU64,
    writes: AtomicU64,
}

enum Op {
    Create { key: String, value: Bytes },
    Update { key: String, value: Bytes, expected: Option<Revision> },
    Delete { key: String, expected: Option<Revision> },
}

/// What a write did: its revision and the value it replaced.
struct Applied {
    revision: Revision,
    prev: Option<KeyValue>,
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<Applied>>,
}

fn backend(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("sled {}: {e}", path.display()))
}

/// Lock helpers: a panic while holding these locks cannot leave the guarded
/// data half-updated (the index is replaced key by key by the writer alone,
/// the rest are `Option`s), so poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read(index: &RwLock<Index>) -> RwLockReadGuard<'_, Index> {
    index.read().unwrap_or_else(PoisonError::into_inner)
}

impl SledStore {
    /// Open (or create) the store at `options.path` and start its writer.
    pub fn open(options: SledOptions) -> Result<Arc<SledStore>> {
        let path = options.path.clone();
        let db = sled::Config::new().path(&path).open().map_err(|e| backend(&path, e))?;
        let tree = db.open_tree(TREE).map_err(|e| backend(&path, e))?;
        let index = load(&tree, &path)?;
        tracing::debug!(path = %path.display(), revision = index.revision, keys = index.keys.len(), "opened store");

        let window = Arc::new(Window::new(options.window, index.revision));
        let index = Arc::new(RwLock::new(index));
        let stats = Arc::new(Stats::default());
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            path: path.clone(),
            tree,
            flush: options.flush,
            index: Arc::clone(&index),
            window: Arc::clone(&window),
            stats: Arc::clone(&stats),
            failed: None,
        };
        let handle = std::thread::Builder::new()
            .name("skiff-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| backend(&path, format!("spawning the writer thread: {e}")))?;
        Ok(Arc::new(SledStore {
            path,
            index,
            window,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            db: Mutex::new(Some(db)),
            stats,
        }))
    }

    /// Stop accepting writes, finish the queued ones, stop the writer and
    /// release the database. Watch streams end. Idempotent. Blocks for at most
    /// the writer's last batch.
    pub fn close(&self) {
        drop(lock(&self.tx).take());
        if let Some(handle) = lock(&self.writer).take() {
            if handle.join().is_err() {
                tracing::error!(path = %self.path.display(), "store writer thread panicked");
            }
        }
        drop(lock(&self.db).take());
    }

    /// Bytes the database takes on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        let db = lock(&self.db);
        let db = db.as_ref().ok_or(StoreError::Closed)?;
        db.size_on_disk().map_err(|e| backend(&self.path, e))
    }

    /// Batches and writes committed since open.
    pub fn writer_stats(&self) -> WriterStats {
        WriterStats {
            batches: self.stats.batches.load(Ordering::Relaxed),
            writes: self.stats.writes.load(Ordering::Relaxed),
        }
    }

    async fn submit(&self, op: Op) -> Result<Applied> {
        let (reply, answer) = oneshot::channel();
        {
            let tx = lock(&self.tx);
            let tx = tx.as_ref().ok_or(StoreError::Closed)?;
            tx.send(Request { op, reply }).map_err(|_| StoreError::Closed)?;
        }
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        self.close();
    }
}

#[async_trait::async_trait]
impl Store for SledStore {
    fn current_revision(&self) -> Revision {
        read(&self.index).revision
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(read(&self.index).keys.get(key).cloned())
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<ListResult> {
        let index = read(&self.index);
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut range = index
            .keys
            .range::<str, _>((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, kv)| kv);
        let mut items = Vec::new();
        let mut more_after = None;
        for kv in range.by_ref() {
            if limit > 0 && items.len() == limit {
                more_after = items.last().map(|last: &KeyValue| last.key.clone());
                break;
            }
            items.push(kv.clone());
        }
        Ok(ListResult { items, revision: index.revision, more_after })
    }

    async fn count(&self, prefix: &str) -> Result<usize> {
        let index = read(&self.index);
        let n = index
            .keys
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .count();
        Ok(n)
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        let op = Op::Create { key: key.to_owned(), value };
        Ok(self.submit(op).await?.revision)
    }

    async fn update(&self, key: &str, value: Bytes, expected: Option<Revision>) -> Result<Revision> {
        let op = Op::Update { key: key.to_owned(), value, expected };
        Ok(self.submit(op).await?.revision)
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        let op = Op::Delete { key: key.to_owned(), expected };
        let applied = self.submit(op).await?;
        // The writer always reports the deleted value for a delete.
        let prev =
            applied.prev.ok_or_else(|| StoreError::Backend(format!("delete of {key:?} reported no previous value")))?;
        Ok((applied.revision, prev))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        self.window.watch(prefix, after)
    }

    fn oldest_watchable(&self) -> Revision {
        self.window.oldest_watchable()
    }
}

/// Read the whole store into memory.
fn load(tree: &sled::Tree, path: &Path) -> Result<Index> {
    let revision = match tree.get(META_REVISION).map_err(|e| backend(path, e))? {
        Some(raw) => decode_u64(&raw).ok_or_else(|| backend(path, "corrupt revision record"))?,
        None => 0,
    };
    let mut keys = BTreeMap::new();
    for item in tree.scan_prefix([DATA_TAG]) {
        let (raw_key, raw_value) = item.map_err(|e| backend(path, e))?;
        let key = String::from_utf8(raw_key[1..].to_vec())
            .map_err(|_| backend(path, format!("key {:?} is not utf-8", &raw_key[1..])))?;
        let kv = decode(key, &raw_value).map_err(|key| backend(path, format!("corrupt record for key {key:?}")))?;
        if kv.mod_revision > revision {
            return Err(backend(
                path,
                format!("key {:?} has revision {} beyond the store revision {revision}", kv.key, kv.mod_revision),
            ));
        }
        keys.insert(kv.key.clone(), kv);
    }
    Ok(Index { revision, keys })
}

fn data_key(key: &str) -> Vec<u8> {
    let mut raw = Vec::with_capacity(1 + key.len());
    raw.push(DATA_TAG);
    raw.extend_from_slice(key.as_bytes());
    raw
}

fn encode(kv: &KeyValue) -> Vec<u8> {
    let mut raw = Vec::with_capacity(HEADER_LEN + kv.value.len());
    raw.extend_from_slice(&kv.create_revision.to_be_bytes());
    raw.extend_from_slice(&kv.mod_revision.to_be_bytes());
    raw.extend_from_slice(&kv.value);
    raw
}

fn decode_u64(raw: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(raw.get(..8)?.try_into().ok()?))
}

/// Decode a stored value; on corruption, give the key back for the message.
fn decode(key: String, raw: &[u8]) -> std::result::Result<KeyValue, String> {
    let (Some(create_revision), Some(mod_revision), Some(value)) =
        (decode_u64(raw), raw.get(8..).and_then(decode_u64), raw.get(HEADER_LEN..))
    else {
        return Err(key);
    };
    Ok(KeyValue { key, value: Bytes::copy_from_slice(value), create_revision, mod_revision })
}

/// A checked write, with its revision assigned.
struct Change {
    key: String,
    revision: Revision,
    /// The new value; `None` for a delete.
    new: Option<KeyValue>,
    prev: Option<KeyValue>,
}

impl Change {
    fn event(&self) -> Event {
        Event {
            kind: if self.new.is_some() { EventKind::Put } else { EventKind::Delete },
            revision: self.revision,
            key: self.key.clone(),
            value: self.new.as_ref().map(|kv| kv.value.clone()),
            prev_value: self.prev.as_ref().map(|kv| kv.value.clone()),
        }
    }
}

/// The outcome of checking one request in a batch.
type Checked = (oneshot::Sender<Result<Applied>>, Result<Change>);

/// The single writer. It owns the sled tree and is the only one to change
/// the index and the window.
struct Writer {
    path: PathBuf,
    tree: sled::Tree,
    flush: bool,
    index: Arc<RwLock<Index>>,
    window: Arc<Window>,
    stats: Arc<Stats>,
    /// Set after a sled error: sled and the index may disagree from then on,
    /// so every later write fails rather than risk acknowledging lost data.
    failed: Option<String>,
}

/// Ends every watch when the writer stops, even by a panic.
struct CloseWindow(Arc<Window>);

impl Drop for CloseWindow {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Request>) {
        let _close = CloseWindow(Arc::clone(&self.window));
        while let Ok(first) = rx.recv() {
            let mut requests = vec![first];
            while requests.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(request) => requests.push(request),
                    Err(_) => break,
                }
            }
            self.commit(requests);
        }
        tracing::debug!(path = %self.path.display(), "store writer stopped");
    }

    /// Check, persist, publish and answer one batch of requests.
    fn commit(&mut self, requests: Vec<Request>) {
        if let Some(reason) = &self.failed {
            for request in requests {
                let _ = request.reply.send(Err(StoreError::Backend(reason.clone())));
            }
            return;
        }
        let started = Instant::now();
        let size = requests.len();
        let checked = self.check(requests);
        let changes: Vec<&Change> = checked.iter().filter_map(|(_, c)| c.as_ref().ok()).collect();
        if let Some(last) = changes.last() {
            let revision = last.revision;
            if let Err(e) = self.persist(&changes, revision) {
                let reason = format!("sled {}: {e}", self.path.display());
                tracing::error!(error = %reason, "store write failed; refusing further writes");
                self.failed = Some(reason.clone());
                for (reply, _) in checked {
                    let _ = reply.send(Err(StoreError::Backend(reason.clone())));
                }
                return;
            }
            self.apply(&changes, revision);
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            self.stats.writes.fetch_add(changes.len() as u64, Ordering::Relaxed);
        }
        tracing::debug!(
            requests = size,
            writes = changes.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "committed batch"
        );
        for (reply, change) in checked {
            // A caller that gave up waiting is no reason to stop.
            let _ = reply.send(change.map(|c| Applied { revision: c.revision, prev: c.prev }));
        }
    }

    /// Check each request against the index and the earlier writes of the
    /// batch; assign consecutive revisions to those that pass.
    fn check(&self, requests: Vec<Request>) -> Vec<Checked> {
        let index = read(&self.index);
        let mut next = index.revision + 1;
        let mut overlay: HashMap<String, Option<KeyValue>> = HashMap::new();
        let mut checked = Vec::with_capacity(requests.len());
        for Request { op, reply } in requests {
            let key = match &op {
                Op::Create { key, .. } | Op::Update { key, .. } | Op::Delete { key, .. } => key,
            };
            let current = match overlay.get(key) {
                Some(pending) => pending.as_ref(),
                None => index.keys.get(key),
            };
            let change = check_op(op, current.cloned(), next);
            if let Ok(change) = &change {
                next += 1;
                overlay.insert(change.key.clone(), change.new.clone());
            }
            checked.push((reply, change));
        }
        checked
    }

    /// Write the batch and the new revision atomically, then fsync.
    fn persist(&self, changes: &[&Change], revision: Revision) -> sled::Result<()> {
        let mut batch = sled::Batch::default();
        for change in changes {
            match &change.new {
                Some(kv) => batch.insert(data_key(&change.key), encode(kv)),
                None => batch.remove(data_key(&change.key)),
            }
        }
        batch.insert(META_REVISION, &revision.to_be_bytes());
        self.tree.apply_batch(batch)?;
        if self.flush {
            self.tree.flush()?;
        }
        Ok(())
    }

    /// Make a durable batch visible: index first, then watchers.
    fn apply(&self, changes: &[&Change], revision: Revision) {
        {
            let mut index = self.index.write().unwrap_or_else(PoisonError::into_inner);
            for change in changes {
                match &change.new {
                    Some(kv) => index.keys.insert(change.key.clone(), kv.clone()),
                    None => index.keys.remove(&change.key),
                };
            }
            index.revision = revision;
        }
        self.window.publish(changes.iter().map(|c| Arc::new(c.event())));
    }
}

/// Check one write against the key's current value.
fn check_op(op: Op, current: Option<KeyValue>, revision: Revision) -> Result<Change> {
    match op {
        Op::Create { key, value } => {
            if current.is_some() {
                return Err(StoreError::AlreadyExists(key));
            }
            let new = KeyValue { key: key.clone(), value, create_revision: revision, mod_revision: revision };
            Ok(Change { key, revision, new: Some(new), prev: None })
        }
        Op::Update { key, value, expected } => {
            let prev = expect(&key, current, expected)?;
            let new =
                KeyValue { key: key.clone(), value, create_revision: prev.create_revision, mod_revision: revision };
            Ok(Change { key, revision, new: Some(new), prev: Some(prev) })
        }
        Op::Delete { key, expected } => {
            let prev = expect(&key, current, expected)?;
            Ok(Change { key, revision, new: None, prev: Some(prev) })
        }
    }
}

/// The current value, if it exists and has the expected mod revision.
fn expect(key: &str, current: Option<KeyValue>, expected: Option<Revision>) -> Result<KeyValue> {
    let current = current.ok_or_else(|| StoreError::NotFound(key.to_owned()))?;
    match expected {
        Some(expected) if expected != current.mod_revision => {
            Err(StoreError::Conflict { key: key.to_owned(), expected, actual: current.mod_revision })
        }
        _ => Ok(current),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips() {
        let kv =
            KeyValue { key: "/a".into(), value: Bytes::from_static(b"hello"), create_revision: 3, mod_revision: 9 };
        assert_eq!(decode("/a".into(), &encode(&kv)), Ok(kv));
    }

    #[test]
    fn short_record_is_corrupt() {
        assert_eq!(decode("/a".into(), &[0; 15]), Err("/a".to_string()));
        let empty = decode("/a".into(), &[0; 16]).map(|kv| kv.value);
        assert_eq!(empty, Ok(Bytes::new()));
    }

    #[test]
    fn data_keys_sort_after_meta_keys() {
        assert!(META_REVISION < data_key("").as_slice());
        assert!(data_key("/a").as_slice() < data_key("/b").as_slice());
    }
}
