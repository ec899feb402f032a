//! The etcd backend: several API servers share one etcd (v3 API, 3.4 or
//! later).
//!
//! Every operation goes to etcd; nothing is cached but two counters. etcd's
//! revision is the store revision (so `resourceVersion` is etcd's, as in
//! Kubernetes). Writes are transactions: create is "put if the key's
//! create_revision is 0", update and delete are "if the key's mod_revision is
//! the expected one" (or "if it exists"); when the comparison fails the same
//! transaction reads the key back, so the error says `NotFound`, `Conflict` or
//! `AlreadyExists` without a second round trip. Reads are linearizable range
//! requests, so a read through any server sees every write acknowledged by any
//! server (docs/adr/0005-etcd-datastore.md says why there is no local index).
//!
//! Watches are native etcd watches from `after + 1`, with previous values.
//! A watch whose connection to etcd breaks re-opens itself from the revision
//! after the last event it delivered, so an etcd restart costs no event; a
//! start revision below etcd's compaction point is [`StoreError::Expired`].
//!
//! Compaction: every `compact_interval`, each server tries to advance the
//! version of [`COMPACT_KEY`] in a transaction; the one that wins compacts
//! etcd to the revision recorded at the previous interval, so history of at
//! least one interval stays watchable and several servers compact once per
//! interval between them (the scheme Kubernetes' API server uses).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KvClient, TxnOp, TxnOpResponse, WatchClient,
    WatchOptions,
};
use futures::StreamExt;
use tokio::sync::watch;

use crate::{Event, EventKind, KeyValue, ListResult, Result, Revision, Store, StoreError, WatchStream};

/// The key whose version coordinates compaction between servers and whose
/// value is the revision last compacted to. It does not start with `/`, so
/// it is outside every prefix the API server reads or watches.
pub const COMPACT_KEY: &str = "compact_rev_key";

/// Largest response accepted from etcd (a list of every pod in a big cluster).
const MAX_RESPONSE: usize = 512 * 1024 * 1024;
/// How long a broken watch keeps trying to re-open before it gives up.
const WATCH_RESUME_FOR: Duration = Duration::from_secs(120);

/// Client certificate and CA for etcd over TLS (k3s' `--datastore-cafile`,
/// `--datastore-certfile`, `--datastore-keyfile`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// How to connect an [`EtcdStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// `host:port` or `http(s)://host:port`, one per etcd member.
    pub endpoints: Vec<String>,
    pub tls: Option<EtcdTls>,
    /// Period of compaction; `Duration::ZERO` never compacts.
    pub compact_interval: Duration,
    /// Per-request timeout and connect timeout.
    pub timeout: Duration,
}

impl EtcdOptions {
    /// Kubernetes' default compaction period.
    pub const DEFAULT_COMPACT_INTERVAL: Duration = Duration::from_secs(300);

    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdOptions {
            endpoints,
            tls: None,
            compact_interval: Self::DEFAULT_COMPACT_INTERVAL,
            timeout: Duration::from_secs(10),
        }
    }

    /// Parse k3s' `--datastore-endpoint` value: `etcd://host:port[,host:port...]`
    /// (also `http://` and `https://` per member).
    pub fn parse_endpoint(value: &str) -> std::result::Result<Vec<String>, String> {
        let rest = value.strip_prefix("etcd://").ok_or_else(|| {
            format!("datastore-endpoint {value:?}: only etcd is supported; write etcd://host:2379[,host:2379]")
        })?;
        let mut endpoints = Vec::new();
        for member in rest.split(',').map(str::trim) {
            let address = member.strip_prefix("http://").or_else(|| member.strip_prefix("https://")).unwrap_or(member);
            let address = address.trim_end_matches('/');
            let valid = match address.rsplit_once(':') {
                Some((host, port)) => !host.is_empty() && !address.contains('/') && port.parse::<u16>().is_ok(),
                None => false,
            };
            if !valid {
                return Err(format!("datastore-endpoint {value:?}: member {member:?} is not host:port"));
            }
            endpoints.push(member.trim_end_matches('/').to_owned());
        }
        Ok(endpoints)
    }
}

/// The revisioned store on etcd. Connect with [`EtcdStore::connect`].
pub struct EtcdStore {
    kv: KvClient,
    watch: WatchClient,
    endpoints: String,
    /// The highest revision seen in any response.
    revision: Arc<AtomicU64>,
    /// The highest revision known to be compacted.
    compacted: Arc<AtomicU64>,
    closed: AtomicBool,
    /// Flips to `true` on close; watch streams and the compactor end.
    shutdown: watch::Sender<bool>,
}

fn backend(endpoints: &str, what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("etcd {endpoints}: {what}: {e}"))
}

fn rev(r: i64) -> Revision {
    Revision::try_from(r).unwrap_or(0)
}

fn convert(kv: &etcd_client::KeyValue) -> Option<KeyValue> {
    let key = std::str::from_utf8(kv.key()).ok()?.to_owned();
    Some(KeyValue {
        key,
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: rev(kv.create_revision()),
        mod_revision: rev(kv.mod_revision()),
    })
}

/// The first key after every key that starts with `prefix` (etcd's range end),
/// or `[0]` ("to the end of the keyspace") when there is none.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// etcd rejects an empty key; `"\0"` is the first key there is.
fn start_key(key: &[u8]) -> Vec<u8> {
    if key.is_empty() {
        vec![0]
    } else {
        key.to_vec()
    }
}

fn is_compacted(e: &etcd_client::Error) -> bool {
    e.to_string().contains("required revision has been compacted")
}

impl EtcdStore {
    /// Connect to etcd and check that it answers. Starts the compactor.
    pub async fn connect(options: EtcdOptions) -> Result<Arc<EtcdStore>> {
        let endpoints = options.endpoints.join(",");
        if options.endpoints.is_empty() {
            return Err(StoreError::Backend("etcd: no endpoints given".into()));
        }
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(options.timeout)
            .with_timeout(options.timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        let mut urls = options.endpoints.clone();
        if let Some(tls) = &options.tls {
            connect = connect.with_tls(tls_options(tls)?);
            for url in &mut urls {
                if !url.contains("://") {
                    *url = format!("https://{url}");
                }
            }
        }
        let client = Client::connect(&urls, Some(connect)).await.map_err(|e| backend(&endpoints, "connecting", e))?;
        let kv = client.kv_client().max_decoding_message_size(MAX_RESPONSE).max_encoding_message_size(MAX_RESPONSE);
        let watch = client.watch_client().max_decoding_message_size(MAX_RESPONSE);
        let (shutdown, _) = watch::channel(false);
        let store = Arc::new(EtcdStore {
            kv,
            watch,
            endpoints,
            revision: Arc::new(AtomicU64::new(0)),
            compacted: Arc::new(AtomicU64::new(0)),
            closed: AtomicBool::new(false),
            shutdown,
        });
        // A first read proves etcd answers and sets the revision.
        let mut kv = store.kv.clone();
        let resp = kv
            .get(COMPACT_KEY, None)
            .await
            .map_err(|e| backend(&store.endpoints, "first read (is etcd running and reachable?)", e))?;
        store.saw(resp.header().map(|h| h.revision()));
        if let Some(value) = resp.kvs().first().and_then(|kv| kv.value_str().ok()).and_then(|v| v.parse().ok()) {
            store.compacted.store(value, Ordering::Relaxed);
        }
        if !options.compact_interval.is_zero() {
            tokio::spawn(compactor(
                store.kv.clone(),
                store.endpoints.clone(),
                options.compact_interval,
                Arc::clone(&store.compacted),
                store.shutdown.subscribe(),
            ));
        }
        tracing::info!(endpoints = %store.endpoints, revision = store.current_revision(), "connected to etcd");
        Ok(store)
    }

    /// Stop the compactor and end every watch; later calls fail with `Closed`.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.shutdown.send_replace(true);
    }

    /// Compact etcd's history up to `revision` (watches from before it then
    /// get `Expired`). The periodic compactor calls etcd the same way.
    pub async fn compact(&self, revision: Revision) -> Result<()> {
        let mut kv = self.kv.clone();
        let at = i64::try_from(revision).map_err(|_| StoreError::Backend(format!("revision {revision} too large")))?;
        kv.compact(at, None).await.map_err(|e| backend(&self.endpoints, &format!("compacting to {revision}"), e))?;
        self.compacted.fetch_max(revision, Ordering::Relaxed);
        Ok(())
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Relaxed) {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }

    fn saw(&self, revision: Option<i64>) -> Revision {
        let r = revision.map(rev).unwrap_or(0);
        self.revision.fetch_max(r, Ordering::Relaxed);
        r
    }

    fn error(&self, key: &str, what: &str, e: etcd_client::Error) -> StoreError {
        backend(&self.endpoints, &format!("{what} {key:?}"), e)
    }

    /// Run a transaction: `ops` if `compare` holds, else read `key`. Returns
    /// the response revision and the op responses, or the key's current
    /// value when the comparison failed.
    async fn txn(&self, key: &str, compare: Compare, ops: Vec<TxnOp>, what: &str) -> Result<TxnOutcome> {
        self.check_open()?;
        let txn = etcd_client::Txn::new().when([compare]).and_then(ops).or_else([TxnOp::get(key, None)]);
        let mut kv = self.kv.clone();
        let resp = kv.txn(txn).await.map_err(|e| self.error(key, what, e))?;
        let revision = self.saw(resp.header().map(|h| h.revision()));
        let responses = resp.op_responses();
        if resp.succeeded() {
            return Ok(TxnOutcome::Done { revision, responses });
        }
        let current = responses.into_iter().find_map(|r| match r {
            TxnOpResponse::Get(get) => Some(get.kvs().first().and_then(convert)),
            _ => None,
        });
        Ok(TxnOutcome::Failed(current.flatten()))
    }
}

enum TxnOutcome {
    Done {
        revision: Revision,
        responses: Vec<TxnOpResponse>,
    },
    /// The comparison failed; the key's current value.
    Failed(Option<KeyValue>),
}

fn tls_options(tls: &EtcdTls) -> Result<etcd_client::TlsOptions> {
    let read = |path: &PathBuf, what: &str| {
        std::fs::read(path).map_err(|e| StoreError::Backend(format!("etcd {what} {}: {e}", path.display())))
    };
    let mut options = etcd_client::TlsOptions::new();
    if let Some(ca) = &tls.ca_file {
        options = options.ca_certificate(etcd_client::Certificate::from_pem(read(ca, "CA file")?));
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            options = options.identity(etcd_client::Identity::from_pem(read(cert, "certificate")?, read(key, "key")?));
        }
        (None, None) => {}
        _ => {
            return Err(StoreError::Backend(
                "etcd: --datastore-certfile and --datastore-keyfile go together; give both or neither".into(),
            ))
        }
    }
    Ok(options)
}

/// The k8s-style compaction loop (see the module docs).
async fn compactor(
    mut kv: KvClient,
    endpoints: String,
    interval: Duration,
    compacted: Arc<AtomicU64>,
    mut shutdown: watch::Receiver<bool>,
) {
    // The version of COMPACT_KEY this server last saw, and the revision
    // recorded at the previous interval (the next compaction point).
    let mut version: i64 = 0;
    let mut previous: i64 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        let txn = etcd_client::Txn::new()
            .when([Compare::version(COMPACT_KEY, CompareOp::Equal, version)])
            .and_then([TxnOp::put(COMPACT_KEY, previous.to_string(), None)])
            .or_else([TxnOp::get(COMPACT_KEY, None)]);
        let resp = match kv.txn(txn).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::warn!(endpoints = %endpoints, error = %e, "etcd compaction: could not reach etcd");
                continue;
            }
        };
        let current = resp.header().map(|h| h.revision()).unwrap_or(0);
        if !resp.succeeded() {
            // Another server compacted this interval; follow its version.
            for r in resp.op_responses() {
                if let TxnOpResponse::Get(get) = r {
                    if let Some(kv) = get.kvs().first() {
                        version = kv.version();
                        if let Some(v) = kv.value_str().ok().and_then(|v| v.parse::<u64>().ok()) {
                            compacted.fetch_max(v, Ordering::Relaxed);
                        }
                    }
                }
            }
            previous = current;
            continue;
        }
        version += 1;
        if previous > 0 {
            match kv.compact(previous, None).await {
                Ok(_) => {
                    compacted.fetch_max(rev(previous), Ordering::Relaxed);
                    tracing::debug!(endpoints = %endpoints, revision = previous, "compacted etcd");
                }
                Err(e) if is_compacted(&e) => {}
                Err(e) => {
                    tracing::warn!(endpoints = %endpoints, revision = previous, error = %e, "etcd compaction failed")
                }
            }
        }
        previous = current;
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    fn current_revision(&self) -> Revision {
        self.revision.load(Ordering::Relaxed)
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.check_open()?;
        let mut kv = self.kv.clone();
        let resp = kv.get(key, None).await.map_err(|e| self.error(key, "reading", e))?;
        self.saw(resp.header().map(|h| h.revision()));
        Ok(resp.kvs().first().and_then(convert))
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<ListResult> {
        self.check_open()?;
        let start = match start_after {
            Some(after) if after >= prefix => {
                let mut k = after.as_bytes().to_vec();
                k.push(0);
                k
            }
            _ => start_key(prefix.as_bytes()),
        };
        let mut options = GetOptions::new().with_range(prefix_end(prefix.as_bytes()));
        if limit > 0 {
            options = options.with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        let mut kv = self.kv.clone();
        let resp = kv.get(start, Some(options)).await.map_err(|e| self.error(prefix, "listing", e))?;
        let revision = self.saw(resp.header().map(|h| h.revision()));
        let items: Vec<KeyValue> = resp.kvs().iter().filter_map(convert).collect();
        let more_after = if resp.more() { items.last().map(|kv| kv.key.clone()) } else { None };
        Ok(ListResult { items, revision, more_after })
    }

    async fn count(&self, prefix: &str) -> Result<usize> {
        self.check_open()?;
        let options = GetOptions::new().with_range(prefix_end(prefix.as_bytes())).with_count_only();
        let mut kv = self.kv.clone();
        let resp =
            kv.get(start_key(prefix.as_bytes()), Some(options)).await.map_err(|e| self.error(prefix, "counting", e))?;
        self.saw(resp.header().map(|h| h.revision()));
        Ok(usize::try_from(resp.count()).unwrap_or(0))
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        let compare = Compare::create_revision(key, CompareOp::Equal, 0);
        match self.txn(key, compare, vec![TxnOp::put(key, value.to_vec(), None)], "creating").await? {
            TxnOutcome::Done { revision, .. } => Ok(revision),
            TxnOutcome::Failed(_) => Err(StoreError::AlreadyExists(key.to_owned())),
        }
    }

    async fn update(&self, key: &str, value: Bytes, expected: Option<Revision>) -> Result<Revision> {
        let compare = match expected {
            Some(e) => Compare::mod_revision(key, CompareOp::Equal, i64::try_from(e).unwrap_or(i64::MAX)),
            None => Compare::create_revision(key, CompareOp::Greater, 0),
        };
        match self.txn(key, compare, vec![TxnOp::put(key, value.to_vec(), None)], "updating").await? {
            TxnOutcome::Done { revision, .. } => Ok(revision),
            TxnOutcome::Failed(current) => Err(mismatch(key, current, expected)),
        }
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        let compare = match expected {
            Some(e) => Compare::mod_revision(key, CompareOp::Equal, i64::try_from(e).unwrap_or(i64::MAX)),
            None => Compare::create_revision(key, CompareOp::Greater, 0),
        };
        let op = TxnOp::delete(key, Some(etcd_client::DeleteOptions::new().with_prev_key()));
        match self.txn(key, compare, vec![op], "deleting").await? {
            TxnOutcome::Done { revision, responses } => {
                let prev = responses.iter().find_map(|r| match r {
                    TxnOpResponse::Delete(d) => d.prev_kvs().first().and_then(convert),
                    _ => None,
                });
                let prev = prev.ok_or_else(|| {
                    StoreError::Backend(format!(
                        "etcd {}: delete of {key:?} returned no previous value",
                        self.endpoints
                    ))
                })?;
                Ok((revision, prev))
            }
            TxnOutcome::Failed(current) => Err(mismatch(key, current, expected)),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        self.check_open()?;
        let mut resumable = Resumable {
            client: self.watch.clone(),
            endpoints: self.endpoints.clone(),
            prefix: prefix.to_owned(),
            last: after,
            compacted: Arc::clone(&self.compacted),
            revision: Arc::clone(&self.revision),
            stream: None,
            buffered: std::collections::VecDeque::new(),
            shutdown: self.shutdown.subscribe(),
            done: false,
            broken_since: None,
        };
        // Open now, so that a start before the compaction point is an error of
        // this call rather than of the stream.
        self.check_not_compacted(prefix, after).await?;
        resumable.open().await?;
        Ok(futures::stream::unfold(resumable, |mut r| async move { r.next().await.map(|item| (item, r)) }).boxed())
    }

    fn oldest_watchable(&self) -> Revision {
        self.compacted.load(Ordering::Relaxed)
    }
}

impl EtcdStore {
    /// `Expired` when the history after `after` has been compacted away.
    ///
    /// A range read at revision `after` fails exactly when etcd compacted past
    /// it. (etcd would still accept a watch from `after + 1` when it compacted
    /// at exactly that revision, but a delete at the compaction revision is no
    /// longer in its history, so `after` itself must be kept.)
    async fn check_not_compacted(&self, prefix: &str, after: Revision) -> Result<()> {
        let at = i64::try_from(after.max(1)).unwrap_or(i64::MAX);
        let options = GetOptions::new().with_range(prefix_end(prefix.as_bytes())).with_count_only().with_revision(at);
        let mut kv = self.kv.clone();
        match kv.get(start_key(prefix.as_bytes()), Some(options)).await {
            Ok(_) => Ok(()),
            Err(e) if is_compacted(&e) => {
                let oldest = self.compaction_point(prefix, at).await;
                Err(StoreError::Expired { requested: after, oldest })
            }
            // "future revision": nothing after it yet, which is fine
            Err(e) if e.to_string().contains("future revision") => Ok(()),
            Err(e) => Err(self.error(prefix, "watching", e)),
        }
    }

    /// The revision etcd is compacted to, asked of etcd itself: a watch from a
    /// compacted revision is cancelled with it. Falls back to what this
    /// process knows.
    async fn compaction_point(&self, prefix: &str, at: i64) -> Revision {
        let known = self.compacted.load(Ordering::Relaxed);
        let mut client = self.watch.clone();
        let options = WatchOptions::new().with_range(prefix_end(prefix.as_bytes())).with_start_revision(at);
        let asked = async {
            let mut stream = client.watch(start_key(prefix.as_bytes()), Some(options)).await.ok()?;
            while let Ok(Some(resp)) = stream.message().await {
                if resp.compact_revision() > 0 {
                    return Some(rev(resp.compact_revision()));
                }
                if resp.canceled() {
                    return None;
                }
            }
            None
        };
        let found = tokio::time::timeout(Duration::from_secs(5), asked).await.ok().flatten().unwrap_or(known);
        self.compacted.fetch_max(found, Ordering::Relaxed);
        found.max(known)
    }
}

/// The error for a failed compare: the key is missing or has another revision.
fn mismatch(key: &str, current: Option<KeyValue>, expected: Option<Revision>) -> StoreError {
    match (current, expected) {
        (None, _) => StoreError::NotFound(key.to_owned()),
        (Some(kv), Some(expected)) => StoreError::Conflict { key: key.to_owned(), expected, actual: kv.mod_revision },
        // "exists" failed yet the key is there: it was recreated in between
        (Some(kv), None) => StoreError::Conflict { key: key.to_owned(), expected: 0, actual: kv.mod_revision },
    }
}

/// A watch that re-opens itself after the revision of its last event when its
/// connection to etcd breaks.
struct Resumable {
    client: WatchClient,
    endpoints: String,
    prefix: String,
    /// The revision of the last event delivered (or the start).
    last: Revision,
    compacted: Arc<AtomicU64>,
    revision: Arc<AtomicU64>,
    stream: Option<etcd_client::WatchStream>,
    buffered: std::collections::VecDeque<Event>,
    shutdown: watch::Receiver<bool>,
    done: bool,
    /// When the connection broke, if it has not delivered anything since.
    broken_since: Option<tokio::time::Instant>,
}

impl Resumable {
    async fn open(&mut self) -> Result<()> {
        let start = i64::try_from(self.last.saturating_add(1)).unwrap_or(i64::MAX);
        let options = WatchOptions::new()
            .with_range(prefix_end(self.prefix.as_bytes()))
            .with_start_revision(start)
            .with_prev_key();
        let stream = self
            .client
            .watch(start_key(self.prefix.as_bytes()), Some(options))
            .await
            .map_err(|e| backend(&self.endpoints, &format!("watching {:?}", self.prefix), e))?;
        self.stream = Some(stream);
        Ok(())
    }

    /// Re-open after a broken connection, with back-off, for a while.
    async fn reopen(&mut self) -> Result<()> {
        self.stream = None;
        let since = *self.broken_since.get_or_insert_with(tokio::time::Instant::now);
        let deadline = since + WATCH_RESUME_FOR;
        let mut delay = Duration::from_millis(100);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.shutdown.changed() => return Err(StoreError::Closed),
            }
            match self.open().await {
                Ok(()) => {
                    tracing::info!(endpoints = %self.endpoints, prefix = %self.prefix, after = self.last, "etcd watch resumed");
                    return Ok(());
                }
                Err(e) if tokio::time::Instant::now() + delay > deadline => return Err(e),
                Err(e) => tracing::debug!(error = %e, "etcd watch: re-opening"),
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    async fn next(&mut self) -> Option<Result<Event>> {
        loop {
            if self.done || *self.shutdown.borrow() {
                return None;
            }
            if let Some(event) = self.buffered.pop_front() {
                self.last = event.revision;
                return Some(Ok(event));
            }
            let Some(stream) = self.stream.as_mut() else {
                if let Err(e) = self.reopen().await {
                    self.done = true;
                    return match e {
                        StoreError::Closed => None,
                        e => Some(Err(e)),
                    };
                }
                continue;
            };
            let message = tokio::select! {
                m = stream.message() => m,
                _ = self.shutdown.changed() => return None,
            };
            match message {
                Ok(Some(resp)) => {
                    if resp.compact_revision() > 0 {
                        let oldest = rev(resp.compact_revision());
                        self.compacted.fetch_max(oldest, Ordering::Relaxed);
                        self.done = true;
                        return Some(Err(StoreError::Expired { requested: self.last, oldest }));
                    }
                    if resp.canceled() {
                        self.done = true;
                        let reason = format!("watch of {:?} cancelled: {}", self.prefix, resp.cancel_reason());
                        return Some(Err(StoreError::Backend(format!("etcd {}: {reason}", self.endpoints))));
                    }
                    self.broken_since = None;
                    if let Some(h) = resp.header() {
                        self.revision.fetch_max(rev(h.revision()), Ordering::Relaxed);
                    }
                    self.buffered.extend(resp.events().iter().filter_map(event));
                }
                Ok(None) | Err(_) => {
                    tracing::debug!(endpoints = %self.endpoints, prefix = %self.prefix, after = self.last, "etcd watch broke; re-opening");
                    self.stream = None;
                }
            }
        }
    }
}

fn event(e: &etcd_client::Event) -> Option<Event> {
    let kv = e.kv()?;
    let key = std::str::from_utf8(kv.key()).ok()?.to_owned();
    let (kind, value) = match e.event_type() {
        EventType::Put => (EventKind::Put, Some(Bytes::copy_from_slice(kv.value()))),
        EventType::Delete => (EventKind::Delete, None),
    };
    Some(Event {
        kind,
        revision: rev(kv.mod_revision()),
        key,
        value,
        prev_value: e.prev_kv().map(|p| Bytes::copy_from_slice(p.value())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b""), vec![0]);
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            EtcdOptions::parse_endpoint("etcd://127.0.0.1:2379,10.0.0.2:2379"),
            Ok(vec!["127.0.0.1:2379".to_string(), "10.0.0.2:2379".to_string()])
        );
        assert_eq!(EtcdOptions::parse_endpoint("etcd://https://e1:2379/"), Ok(vec!["https://e1:2379".to_string()]));
        let err = EtcdOptions::parse_endpoint("mysql://x:3306").expect_err("not etcd");
        assert!(err.contains("only etcd"), "{err}");
        let err = EtcdOptions::parse_endpoint("etcd://host").expect_err("no port");
        assert!(err.contains("\"host\" is not host:port"), "{err}");
        assert!(EtcdOptions::parse_endpoint("etcd://").is_err());
    }
}
