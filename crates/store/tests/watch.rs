//! Watches on the sled store: replay, live delivery, filters, expiry, fan-out.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use skiff_store::{Event, EventKind, Revision, Store, StoreError, WatchStream};

const PATIENCE: Duration = Duration::from_secs(10);

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
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
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(100), stream.next()).await {
        panic!("unexpected item: {item:?}");
    }
}

fn pairs(items: &[(Revision, &str)]) -> Vec<(Revision, String)> {
    items.iter().map(|(r, k)| (*r, k.to_string())).collect()
}

/// Revisions 1..=4: create /a, update /a, create /b, delete /a.
async fn four_writes(store: &dyn Store) -> anyhow::Result<()> {
    store.create("/a", b("a1")).await?;
    store.update("/a", b("a2"), Some(1)).await?;
    store.create("/b", b("b1")).await?;
    store.delete("/a", Some(2)).await?;
    Ok(())
}

#[tokio::test]
async fn watch_from_zero_replays_everything_then_follows() -> anyhow::Result<()> {
    let t = common::open(100, true);
    four_writes(t.store.as_ref()).await?;
    let mut stream = t.store.watch("/", 0).await?;

    let put = |revision, key: &str, value: &str, prev: Option<&str>| Event {
        kind: EventKind::Put,
        revision,
        key: key.into(),
        value: Some(b(value)),
        prev_value: prev.map(b),
    };
    assert_eq!(next(&mut stream).await, put(1, "/a", "a1", None));
    assert_eq!(next(&mut stream).await, put(2, "/a", "a2", Some("a1")));
    assert_eq!(next(&mut stream).await, put(3, "/b", "b1", None));
    let delete =
        Event { kind: EventKind::Delete, revision: 4, key: "/a".into(), value: None, prev_value: Some(b("a2")) };
    assert_eq!(next(&mut stream).await, delete);
    assert_quiet(&mut stream).await;

    t.store.create("/c", b("c1")).await?;
    assert_eq!(next(&mut stream).await, put(5, "/c", "c1", None));
    assert_quiet(&mut stream).await;
    Ok(())
}

#[tokio::test]
async fn watch_from_mid_revision_replays_only_later_events() -> anyhow::Result<()> {
    let t = common::open(100, true);
    four_writes(t.store.as_ref()).await?;
    let mut stream = t.store.watch("/", 2).await?;
    assert_eq!(next_n(&mut stream, 2).await, pairs(&[(3, "/b"), (4, "/a")]));
    t.store.create("/d", b("d")).await?;
    t.store.update("/b", b("b2"), None).await?;
    assert_eq!(next_n(&mut stream, 2).await, pairs(&[(5, "/d"), (6, "/b")]));
    assert_quiet(&mut stream).await;

    let mut at_head = t.store.watch("/", 6).await?;
    assert_quiet(&mut at_head).await;
    t.store.create("/e", b("e")).await?;
    assert_eq!(next(&mut at_head).await.revision, 7);
    Ok(())
}

#[tokio::test]
async fn watch_filters_by_prefix() -> anyhow::Result<()> {
    let t = common::open(100, true);
    t.store.create("/pods/x", b("x")).await?;
    t.store.create("/services/y", b("y")).await?;
    t.store.create("/podsecurity/z", b("z")).await?;
    t.store.create("/pods/z", b("z")).await?;
    let mut stream = t.store.watch("/pods/", 0).await?;
    assert_eq!(next_n(&mut stream, 2).await, pairs(&[(1, "/pods/x"), (4, "/pods/z")]));

    t.store.create("/services/w", b("w")).await?;
    t.store.delete("/pods/x", None).await?;
    let event = next(&mut stream).await;
    assert_eq!((event.revision, event.kind, event.key.as_str()), (6, EventKind::Delete, "/pods/x"));
    assert_quiet(&mut stream).await;
    Ok(())
}

#[tokio::test]
async fn watch_after_the_current_revision_waits_for_it() -> anyhow::Result<()> {
    let t = common::open(100, true);
    t.store.create("/a", b("1")).await?;
    let mut stream = t.store.watch("/", 3).await?;
    t.store.create("/b", b("2")).await?;
    t.store.create("/c", b("3")).await?;
    t.store.create("/d", b("4")).await?;
    assert_eq!(next(&mut stream).await.revision, 4);
    Ok(())
}

#[tokio::test]
async fn watch_before_the_window_is_expired() -> anyhow::Result<()> {
    let t = common::open(5, false);
    assert_eq!(t.store.oldest_watchable(), 0);
    for i in 0..10 {
        t.store.create(&format!("/k/{i}"), b("v")).await?;
    }
    assert_eq!(t.store.oldest_watchable(), 5);
    let err = t.store.watch("/", 4).await.err();
    assert!(matches!(err, Some(StoreError::Expired { requested: 4, oldest: 5 })), "{err:?}");

    let mut stream = t.store.watch("/", 5).await?;
    let revisions: Vec<Revision> = next_n(&mut stream, 5).await.into_iter().map(|(r, _)| r).collect();
    assert_eq!(revisions, [6, 7, 8, 9, 10]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_watcher_catches_up_from_the_window() -> anyhow::Result<()> {
    const WRITES: usize = 6000;
    let t = common::open(100_000, false);
    let mut stream = t.store.watch("/", 0).await?;
    let mut tasks = Vec::new();
    for task in 0..8 {
        let store = t.store.clone();
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
    // The watcher was idle for more events than the live channel holds.
    let revisions: Vec<Revision> = next_n(&mut stream, WRITES).await.into_iter().map(|(r, _)| r).collect();
    assert_eq!(revisions, (1..=WRITES as u64).collect::<Vec<_>>());
    assert_quiet(&mut stream).await;
    Ok(())
}

#[tokio::test]
async fn idle_watcher_past_the_window_ends_with_expired() -> anyhow::Result<()> {
    let t = common::open(50, false);
    let mut stream = t.store.watch("/", 0).await?;
    for i in 0..5000 {
        t.store.create(&format!("/k/{i}"), b("v")).await?;
    }
    let item = tokio::time::timeout(PATIENCE, stream.next()).await?;
    assert!(matches!(item, Some(Err(StoreError::Expired { requested: 0, oldest: 4950 }))), "{item:?}");
    let end = tokio::time::timeout(PATIENCE, stream.next()).await?;
    assert!(end.is_none(), "the stream ends after expiring: {end:?}");
    Ok(())
}

#[tokio::test]
async fn watch_ends_when_the_store_closes() -> anyhow::Result<()> {
    let t = common::open(100, true);
    let mut stream = t.store.watch("/", 0).await?;
    t.store.create("/a", b("1")).await?;
    t.store.close();
    assert_eq!(next(&mut stream).await.revision, 1, "events before close are still delivered");
    let end = tokio::time::timeout(PATIENCE, stream.next()).await?;
    assert!(end.is_none(), "{end:?}");
    let err = t.store.watch("/", 0).await.err();
    assert!(matches!(err, Some(StoreError::Closed)), "{err:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_reaches_a_thousand_watchers() -> anyhow::Result<()> {
    const WATCHERS: usize = 1000;
    let t = common::open(100, true);
    t.store.create("/other", b("x")).await?;
    let mut receivers = Vec::with_capacity(WATCHERS);
    for _ in 0..WATCHERS {
        let mut stream = t.store.watch("/pods/", 1).await?;
        receivers.push(tokio::spawn(async move {
            let event = next(&mut stream).await;
            (Instant::now(), event.revision, event.key)
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;

    let written = Instant::now();
    let revision = t.store.create("/pods/web", b("big")).await?;
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
