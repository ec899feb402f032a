//! skiff-store: a revisioned key-value store with watch.
//!
//! Every write gets the next cluster-wide revision; the API server uses it as
//! `resourceVersion`. Updates and deletes are compare-and-swap on the key's
//! last modification revision. A write is acknowledged only once it is
//! durable. Watches replay from any revision still inside a bounded window of
//! recent events and answer [`StoreError::Expired`] (HTTP 410) beyond it.
//!
//! The trait is the seam for backends: [`SledStore`] (embedded, the default)
//! and [`EtcdStore`] (several API servers on one etcd).

mod etcd_backend;
mod sled_backend;
#[cfg(feature = "testing")]
pub mod testing;
mod window;

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;

pub use etcd_backend::{EtcdOptions, EtcdStore, EtcdTls, COMPACT_KEY};
pub use sled_backend::{SledOptions, SledStore};

/// A cluster-wide revision. Revision 0 means "nothing written yet".
pub type Revision = u64;

/// The current value of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision of the write that created this key (since its last delete).
    pub create_revision: Revision,
    /// Revision of the last write to this key.
    pub mod_revision: Revision,
}

/// One change, as seen by watchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// Revision of this change.
    pub revision: Revision,
    pub key: String,
    /// The value after the change (`None` for deletes).
    pub value: Option<Bytes>,
    /// The value before the change (`None` for creates).
    pub prev_value: Option<Bytes>,
}

/// A page of a list.
#[derive(Debug, Clone, Default)]
pub struct ListResult {
    pub items: Vec<KeyValue>,
    /// The store revision the list was read at.
    pub revision: Revision,
    /// Set when `limit` cut the list short: the key to continue after.
    pub more_after: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {0:?} already exists")]
    AlreadyExists(String),
    #[error("key {0:?} not found")]
    NotFound(String),
    /// Compare-and-swap failed: the key's mod revision is not the expected one.
    #[error("key {key:?} was modified: expected revision {expected}, found {actual}")]
    Conflict { key: String, expected: Revision, actual: Revision },
    /// A watch or read asked for a revision older than the retained window.
    #[error("too old resource version: {requested} ({oldest})")]
    Expired { requested: Revision, oldest: Revision },
    #[error("store is closed")]
    Closed,
    #[error("store backend: {0}")]
    Backend(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A stream of events for one watch. It ends when the store closes, or with
/// one `Err(Expired)` if the watcher fell behind the retained window.
pub type WatchStream = BoxStream<'static, Result<Event>>;

/// A revisioned key-value store with watch. Keys are UTF-8 paths such as
/// `/registry/core/pods/default/web-1`; prefixes select subtrees.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The revision of the latest acknowledged write.
    fn current_revision(&self) -> Revision;

    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Keys under `prefix` in key order, strictly after `start_after` when
    /// given, at most `limit` items when `limit > 0`.
    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<ListResult>;

    /// Count the keys under `prefix`.
    async fn count(&self, prefix: &str) -> Result<usize>;

    /// Create `key`; fails with `AlreadyExists` if present. Returns the new revision.
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision>;

    /// Replace `key` if its mod revision is `expected` (any when `None`).
    /// Fails with `NotFound` or `Conflict`. Returns the new revision.
    async fn update(&self, key: &str, value: Bytes, expected: Option<Revision>) -> Result<Revision>;

    /// Delete `key` if its mod revision is `expected` (any when `None`).
    /// Returns the revision of the delete and the value that was deleted.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)>;

    /// Watch keys under `prefix`, starting with the events after revision
    /// `after` (all changes with revision > `after`). Fails with `Expired`
    /// when `after` is older than the retained window.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// The oldest revision a watch can still start after.
    fn oldest_watchable(&self) -> Revision;
}

pub type DynStore = Arc<dyn Store>;
