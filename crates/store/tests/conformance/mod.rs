//! The store trait's conformance suite: the same test functions run against
//! every backend. `conformance_sled.rs` and `conformance_etcd.rs` instantiate
//! them with [`cases!`], each with an `open(window)` that returns its
//! [`Backend`]. Revisions are checked relative to the store's revision at
//! open (sled starts at 0, a fresh etcd at 1).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use skiff_store::{Event, EventKind, KeyValue, Revision, Store, StoreError, WatchStream};

/// A store under test and what only the backend can do.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    fn store(&self) -> Arc<dyn Store>;
    /// Make every revision up to `revision` unwatchable: etcd compacts; sled
    /// relies on the window size it was opened with.
    async fn forget_until(&self, revision: Revision) -> anyhow::Result<()>;
}

/// One `#[tokio::test]` per conformance case, each with a fresh store from
/// `$open(window).await` (the window is the number of events sled retains).
macro_rules! cases {
    ($open:path) => {
        cases!(@each $open;
            create_then_get 100, create_existing_key_fails_and_consumes_no_revision 100,
            list_with_prefix_limit_and_continuation 100, update_is_compare_and_swap 100,
            delete_is_compare_and_swap 100, revisions_increase_and_match_reads 100,
            concurrent_writers_get_distinct_consecutive_revisions 100_000,
            watch_from_start_replays_everything_then_follows 100,
            watch_from_mid_revision_replays_only_later_events 100, watch_filters_by_prefix 100,
            watch_after_the_current_revision_waits_for_it 100, watch_before_the_retained_history_is_expired 100,
            lagging_watcher_catches_up 100_000, a_write_reaches_a_thousand_watchers 100);
    };
    (@each $open:path; $($case:ident $window:literal),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() -> anyhow::Result<()> {
                let backend = $open($window).await?;
                conformance::$case(&backend).await
            }
        )*
    };
}

const PATIENCE: Duration = Duration::from_secs(20);

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn keys(items: &[KeyValue]) -> Vec<&str> {
    items.iter().map(|kv| kv.key.as_str()).collect()
}

pub async fn create_then_get(t: &impl Backend) -> anyhow::Result<()> {
    let store = t.store();
    let base = store.current_revision();
    assert_eq!(store.get("/a").await?, None);

    let rev = store.create("/a", b("one")).await?;
    assert_eq!(rev, base + 1);
    assert_eq!(store.current_revision(), base + 1);
    let kv = store.get("/a").await?.expect("created key is readable");
    assert_eq!(kv, KeyValue { key: "/a".into(), value: b("one"), create_revision: rev, mod_revision: rev });
    Ok(())
}

pub async fn create_existing_key_fails_and_consumes_no_revision(t: &impl Backend) -> anyhow::Result<()> {
    let store = t.store();
    let rev = store.create("/a", b("one")).await?;
    let err = store.create("/a", b("two")).await.expect_err("second create must fail");
    assert!(matches!(&err, StoreError::AlreadyExists(k) if k == "/a"), "{err:?}");
    assert_eq!(store.current_revision(), rev);
    assert_eq!(store.get("/a").await?.map(|kv| kv.value), Some(b("one")));
    Ok(())
}

pub async fn list_with_prefix_limit_and_continuation(t: &impl Backend) -> anyhow::Result<()> {
    let store = t.store();
    for key in ["/b/1", "/a/3", "/ab/x", "/a/1", "/a/5", "/a/2", "/a/4", "/"] {
        store.create(key, b(key)).await?;
    }
    let last = store.current_revision();

    let all = store.list("/a/", None, 0).await?;
    assert_eq!(keys(&all.items), ["/a/1", "/a/2", "/a/3", "/a/4", "/a/5"]);
    assert_eq!(all.revision, last);
    assert_eq!(all.more_after, None);
    assert_eq!(all.items[0].value, b("/a/1"));

    let page1 = store.list("/a/", None, 2).await?;
    assert_eq!(keys(&page1.items), ["/a/1", "/a/2"]);
    assert_eq!(page1.more_after.as_deref(), Some("/a/2"));
    let page2 = store.list("/a/", page1.more_after.as_deref(), 2).await?;
    assert_eq!(keys(&page2.items), ["/a/3", "/a/4"]);
    assert_eq!(page2.more_after.as_deref(), Some("/a/4"));
    let page3 = store.list("/a/", page2.more_after.as_deref(), 2).await?;
    assert_eq!(keys(&page3.items), ["/a/5"]);
    assert_eq!(page3.more_after, None, "an exactly full last page has nothing after it");

    let exact = store.list("/a/", Some("/a/3"), 2).await?;
    assert_eq!(keys(&exact.items), ["/a/4", "/a/5"]);
    assert_eq!(exact.more_after, None);

    // A start key before the prefix does not leak other keys in.
    let before = store.list("/a/", Some("/"), 0).await?;
    assert_eq!(before.items.len(), 5);
    let everything = store.list("", None, 0).await?;
    assert_eq!(keys(&everything.items), ["/", "/a/1", "/a/2", "/a/3", "/a/4", "/a/5", "/ab/x", "/b/1"]);
    assert!(store.list("/c/", None, 0).await?.items.is_empty());

    assert_eq!(store.count("/a/").await?, 5);
    assert_eq!(store.count("/a").await?, 6);
    assert_eq!(store.count("").await?, 8);
    assert_eq!(store.count("/zzz").await?, 0);
    Ok(())
}

pub async fn update_is_compare_and_swap(t: &impl Backend) -> anyhow::Result<()> {
    let store = t.store();
    let created = store.create("/a", b("one")).await?;

    let err = store.update("/a", b("stale"), Some(created + 7)).await.expect_err("wrong revision");
    assert!(
        matches!(&err, StoreError::Conflict { key, expected, actual } if key == "/a" && *expected == created + 7 && *actual == created),
        "{err:?}"
    );
    assert_eq!(store.current_revision(), created, "a failed update consumes no revision");

    let updated = store.update("/a", b("two"), Some(created)).await?;
    assert_eq!(updated, created + 1);
    let kv = store.get("/a").await?.expect("updated key");
    assert_eq!((kv.value, kv.create_revision, kv.mod_revision), (b("two"), created, updated));

    let err = store.update("/a", b("three"), Some(created)).await.expect_err("old revision");
    assert!(matches!(err, StoreError::Conflict { actual, .. } if actual == updated), "{err:?}");

    let unconditional = store.update("/a", b("four"), None).await?;
    assert_eq!(unconditional, updated + 1);

    let err = store.update("/missing", b("x"), None).await.expect_err("missing key");
    assert!(matches!(&err, StoreError::NotFound(k) if k == "/missing"), "{err:?}");
    let err = store.update("/missing", b("x"), Some(created)).await.expect_err("missing key with a revision");
    assert!(matches!(&err, StoreError::NotFound(k) if k == "/missing"), "{err:?}");
    assert_eq!(store.current_revision(), unconditional);
    Ok(())
}

pub async fn delete_is_compare_and_swap(t: &impl Backend) -> anyhow::Result<()> {
    let store = t.store();
    let created = store.create("/a", b("one")).await?;

    let err = store.delete("/a", Some(created + 1)).await.expect_err("wrong revision");
    assert!(
        matches!(err, StoreError::Conflict { expected, actual, .. } if expected == created + 1 && actual == created),
        "{err:?}"
    );
    assert!(store.get("/a").await?.is_some(), "a failed delete keeps the key");

    let (rev, prev) = store.delete("/a", Some(created)).await?;
    assert_eq!(rev, created + 1);
    assert_eq!(prev, KeyValue { key: "/a".into(), value: b("one"), create_revision: created, mod_revision: created });
    assert_eq!(store.get("/a").await?, None);
    assert_eq!(store.count("/").await?, 0);

    let err = store.delete("/a", None).await.expect_err("already deleted");
    assert!(matches!(&err, StoreError::NotFound(k) if k == "/a"), "{err:?}");

    let recreated = store.create("/a", b("again")).await?;
    let kv = store.get("/a").await?.expect("recreated");
    assert_eq!((kv.create_revision, kv.mod_revision), (recreated, recreated));
    Ok(())
}

pub async fn revisions_increase_and_match_reads(t: &impl Backend) -> anyhow::Result<()> {
    let store = t.store();
    let mut last = store.current_revision();
    for i in 0..20 {
        let key = format!("/k/{}", i % 5);
        let rev = match store.get(&key).await? {
            None => store.create(&key, b("v")).await?,
            Some(kv) if i % 3 == 0 => store.delete(&key, Some(kv.mod_revision)).await?.0,
            Some(kv) => store.update(&key, b("w"), Some(kv.mod_revision)).await?,
        };
        assert_eq!(rev, last + 1, "write {i}");
        assert_eq!(store.current_revision(), rev);
        if let Some(kv) = store.get(&key).await? {
            assert_eq!(kv.mod_revision, rev);
        }
        last = rev;
    }
    Ok(())
}

pub async fn concurrent_writers_get_distinct_consecutive_revisions(t: &impl Backend) -> anyhow::Result<()> {
    const TASKS: usize = 16;
    const PER_TASK: usize = 50;
    let store = t.store();
    let base = store.current_revision();
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut revs = Vec::with_capacity(PER_TASK);
            for i in 0..PER_TASK {
                let key = format!("/c/{task:02}/{i:04}");
                revs.push((key.clone(), store.create(&key, Bytes::from(key.clone())).await?));
            }
            Ok::<_, StoreError>(revs)
        }));
    }
    let mut all = Vec::new();
    for handle in handles {
        all.extend(handle.await??);
    }
    let elapsed = started.elapsed();
    println!("{} durable creates from {TASKS} tasks in {elapsed:?}", all.len());

    let mut revs: Vec<u64> = all.iter().map(|(_, r)| *r).collect();
    revs.sort_unstable();
    let expected: Vec<u64> = (base + 1..=base + (TASKS * PER_TASK) as u64).collect();
    assert_eq!(revs, expected);
    assert_eq!(store.current_revision(), base + (TASKS * PER_TASK) as u64);
    let listed = store.list("/c/", None, 0).await?;
    assert_eq!(listed.items.len(), TASKS * PER_TASK);
    for (key, rev) in all.iter().step_by(7) {
        assert_eq!(store.get(key).await?.map(|kv| kv.mod_revision), Some(*rev));
    }
    Ok(())
}

async fn next(stream: &mut WatchStream) -> Event {
    match tokio::time::timeout(PATIENCE, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended early"),
        Err(_) => panic!("no event within {PATIENCE:?}"),
    }
}

async fn next_n(stream: &mut WatchStream, n: usize) -> Vec<(Revision, String)> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        let e = next(stream).await;
        got.push((e.revision, e.key));
    }
    got
}

/// Nothing more arrives for a short while.
async fn assert_quiet(stream: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
        panic!("unexpected item: {item:?}");
    }
}

fn pairs(base: Revision, items: &[(Revision, &str)]) -> Vec<(Revision, String)> {
    items.iter().map(|(r, k)| (base + *r, k.to_string())).collect()
}

/// Revisions base+1..=base+4: create /a, update /a, create /b, delete /a.
async fn four_writes(store: &dyn Store) -> anyhow::Result<Revision> {
    let base = store.current_revision();
    store.create("/a", b("a1")).await?;
    store.update("/a", b("a2"), Some(base + 1)).await?;
    store.create("/b", b("b1")).await?;
    store.delete("/a", Some(base + 2)).await?;
    Ok(base)
}

pub async fn watch_from_start_replays_everything_then_follows(t: &impl Backend) -> anyhow::Result<()> {
    let store = t.store();
    let base = four_writes(store.as_ref()).await?;
    let mut stream = store.watch("/", base).await?;

    let put = |revision, key: &str, value: &str, prev: Option<&str>| Event {
        kind: EventKind::Put,
        revision: base + revision,
        key: key.into(),
        value: Some(b(value)),
        prev_value: prev.map(b),
    };
    assert_eq!(next(&mut stream).await, put(1, "/a", "a1", None));
    assert_eq!(next(&mut stream).await, put(2, "/a", "a2", Some("a1")));
    assert_eq!(next(&mut stream).await, put(3, "/b", "b1", None));
    let delete =
        Event { kind: EventKind::Delete, revision: base + 4, key: "/a".into(), value: None, prev_value: Some(b("a2")) };
    assert_eq!(next(&mut stream).await, delete);
    assert_quiet(&mut stream).await;

    store.create("/c", b("c1")).await?;
    assert_eq!(next(&mut stream).await, put(5, "/c", "c1", None));
    assert_quiet(&mut stream).await;
    Ok(())
}

pub async fn watch_from_mid_revision_replays_only_later_events(t: &impl Backend) -> anyhow::Result<()> {
    let store = t.store();
    let base = four_writes(store.as_ref()).await?;
    let mut stream = store.watch("/", base + 2).await?;
    assert_eq!(next_n(&mut stream, 2).await, pairs(base, &[(3, "/b"), (4, "/a")]));
    store.create("/d", b("d")).await?;
    store.update("/b", b("b2"), None).await?;
    assert_eq!(next_n(&mut stream, 2).await, pairs(base, &[(5, "/d"), (6, "/b")]));
    assert_quiet(&mut stream).await;

    let mut at_head = store.watch("/", base + 6).await?;
    assert_quiet(&mut at_head).await;
    store.create("/e", b("e")).await?;
    assert_eq!(next(&mut at_head).await.revision, base + 7);
    Ok(())
}

pub async fn watch_filters_by_prefix(t: &impl Backend) -> anyhow::Result<()> {
    let store = t.store();
    let base = store.current_revision();
    store.create("/pods/x", b("x")).await?;
    store.create("/services/y", b("y")).await?;
    store.create("/podsecurity/z", b("z")).await?;
    store.create("/pods/z", b("z")).await?;
    let mut stream = store.watch("/pods/", base).await?;
    assert_eq!(next_n(&mut stream, 2).await, pairs(base, &[(1, "/pods/x"), (4, "/pods/z")]));

    store.create("/services/w", b("w")).await?;
    store.delete("/pods/x", None).await?;
    let event = next(&mut stream).await;
    assert_eq!((event.revision, event.kind, event.key.as_str()), (base + 6, EventKind::Delete, "/pods/x"));
    assert_quiet(&mut stream).await;
    Ok(())
}

pub async fn watch_after_the_current_revision_waits_for_it(t: &impl Backend) -> anyhow::Result<()> {
    let store = t.store();
    let base = store.current_revision();
    store.create("/a", b("1")).await?;
    let mut stream = store.watch("/", base + 3).await?;
    store.create("/b", b("2")).await?;
    store.create("/c", b("3")).await?;
    store.create("/d", b("4")).await?;
    assert_eq!(next(&mut stream).await.revision, base + 4);
    Ok(())
}

/// Opened with a window of 100: 200 writes, then history up to base+150 is
/// forgotten (sled: its window already dropped up to base+100).
pub async fn watch_before_the_retained_history_is_expired(t: &impl Backend) -> anyhow::Result<()> {
    let store = t.store();
    let base = store.current_revision();
    for i in 0..200 {
        store.create(&format!("/k/{i}"), b("v")).await?;
    }
    t.forget_until(base + 150).await?;
    let oldest = store.oldest_watchable();
    assert!(oldest >= base + 100 && oldest <= base + 150, "oldest watchable {oldest}, base {base}");
    let err = store.watch("/", base + 50).await.err();
    assert!(
        matches!(err, Some(StoreError::Expired { requested, oldest: o }) if requested == base + 50 && o == oldest),
        "{err:?}"
    );

    let mut stream = store.watch("/", base + 150).await?;
    let revisions: Vec<Revision> = next_n(&mut stream, 50).await.into_iter().map(|(r, _)| r).collect();
    assert_eq!(revisions, (base + 151..=base + 200).collect::<Vec<_>>());
    assert_quiet(&mut stream).await;
    Ok(())
}

pub async fn lagging_watcher_catches_up(t: &impl Backend) -> anyhow::Result<()> {
    const WRITES: usize = 2000;
    let store = t.store();
    let base = store.current_revision();
    let mut stream = store.watch("/", base).await?;
    let mut tasks = Vec::new();
    for task in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..WRITES / 8 {
                store.create(&format!("/k/{task}/{i}"), b("v")).await?;
            }
            Ok::<_, StoreError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    // The watcher was idle while all of them were written.
    let revisions: Vec<Revision> = next_n(&mut stream, WRITES).await.into_iter().map(|(r, _)| r).collect();
    assert_eq!(revisions, (base + 1..=base + WRITES as u64).collect::<Vec<_>>());
    assert_quiet(&mut stream).await;
    Ok(())
}

pub async fn a_write_reaches_a_thousand_watchers(t: &impl Backend) -> anyhow::Result<()> {
    const WATCHERS: usize = 1000;
    let store = t.store();
    let other = store.create("/other", b("x")).await?;
    let mut receivers = Vec::with_capacity(WATCHERS);
    for _ in 0..WATCHERS {
        let mut stream = store.watch("/pods/", other).await?;
        receivers.push(tokio::spawn(async move {
            let event = next(&mut stream).await;
            (Instant::now(), event.revision, event.key)
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let written = Instant::now();
    let revision = store.create("/pods/web", b("big")).await?;
    let acked = written.elapsed();
    let mut slowest = Duration::ZERO;
    for receiver in receivers {
        let (at, got, key) = receiver.await?;
        assert_eq!((got, key.as_str()), (revision, "/pods/web"));
        slowest = slowest.max(at.saturating_duration_since(written));
    }
    println!("one durable write ({acked:?} to acknowledge) reached {WATCHERS} watchers; the last got it {slowest:?} after the write began");
    Ok(())
}
