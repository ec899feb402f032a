//! Reads, writes, compare-and-swap, revisions and reopen of the sled store.

mod common;

use std::time::Instant;

use bytes::Bytes;
use skiff_store::{KeyValue, Store, StoreError};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn keys(items: &[KeyValue]) -> Vec<&str> {
    items.iter().map(|kv| kv.key.as_str()).collect()
}

#[tokio::test]
async fn create_then_get() -> anyhow::Result<()> {
    let t = common::open(100, true);
    assert_eq!(t.store.current_revision(), 0);
    assert_eq!(t.store.get("/a").await?, None);

    let rev = t.store.create("/a", b("one")).await?;
    assert_eq!(rev, 1);
    assert_eq!(t.store.current_revision(), 1);
    let kv = t.store.get("/a").await?.expect("created key is readable");
    assert_eq!(kv, KeyValue { key: "/a".into(), value: b("one"), create_revision: 1, mod_revision: 1 });
    Ok(())
}

#[tokio::test]
async fn create_existing_key_fails_and_consumes_no_revision() -> anyhow::Result<()> {
    let t = common::open(100, true);
    t.store.create("/a", b("one")).await?;
    let err = t.store.create("/a", b("two")).await.expect_err("second create must fail");
    assert!(matches!(&err, StoreError::AlreadyExists(k) if k == "/a"), "{err:?}");
    assert_eq!(t.store.current_revision(), 1);
    assert_eq!(t.store.get("/a").await?.map(|kv| kv.value), Some(b("one")));
    Ok(())
}

#[tokio::test]
async fn list_with_prefix_limit_and_continuation() -> anyhow::Result<()> {
    let t = common::open(100, true);
    for key in ["/b/1", "/a/3", "/ab/x", "/a/1", "/a/5", "/a/2", "/a/4", "/"] {
        t.store.create(key, b(key)).await?;
    }

    let all = t.store.list("/a/", None, 0).await?;
    assert_eq!(keys(&all.items), ["/a/1", "/a/2", "/a/3", "/a/4", "/a/5"]);
    assert_eq!(all.revision, 8);
    assert_eq!(all.more_after, None);
    assert_eq!(all.items[0].value, b("/a/1"));

    let page1 = t.store.list("/a/", None, 2).await?;
    assert_eq!(keys(&page1.items), ["/a/1", "/a/2"]);
    assert_eq!(page1.more_after.as_deref(), Some("/a/2"));
    let page2 = t.store.list("/a/", page1.more_after.as_deref(), 2).await?;
    assert_eq!(keys(&page2.items), ["/a/3", "/a/4"]);
    assert_eq!(page2.more_after.as_deref(), Some("/a/4"));
    let page3 = t.store.list("/a/", page2.more_after.as_deref(), 2).await?;
    assert_eq!(keys(&page3.items), ["/a/5"]);
    assert_eq!(page3.more_after, None, "an exactly full last page has nothing after it");

    let exact = t.store.list("/a/", Some("/a/3"), 2).await?;
    assert_eq!(keys(&exact.items), ["/a/4", "/a/5"]);
    assert_eq!(exact.more_after, None);

    // A start key before the prefix does not leak other keys in.
    let before = t.store.list("/a/", Some("/"), 0).await?;
    assert_eq!(before.items.len(), 5);
    let everything = t.store.list("", None, 0).await?;
    assert_eq!(keys(&everything.items), ["/", "/a/1", "/a/2", "/a/3", "/a/4", "/a/5", "/ab/x", "/b/1"]);
    assert!(t.store.list("/c/", None, 0).await?.items.is_empty());

    assert_eq!(t.store.count("/a/").await?, 5);
    assert_eq!(t.store.count("/a").await?, 6);
    assert_eq!(t.store.count("").await?, 8);
    assert_eq!(t.store.count("/zzz").await?, 0);
    Ok(())
}

#[tokio::test]
async fn update_is_compare_and_swap() -> anyhow::Result<()> {
    let t = common::open(100, true);
    let created = t.store.create("/a", b("one")).await?;

    let err = t.store.update("/a", b("stale"), Some(created + 7)).await.expect_err("wrong revision");
    assert!(
        matches!(&err, StoreError::Conflict { key, expected, actual } if key == "/a" && *expected == created + 7 && *actual == created),
        "{err:?}"
    );
    assert_eq!(t.store.current_revision(), created, "a failed update consumes no revision");

    let updated = t.store.update("/a", b("two"), Some(created)).await?;
    assert_eq!(updated, created + 1);
    let kv = t.store.get("/a").await?.expect("updated key");
    assert_eq!((kv.value, kv.create_revision, kv.mod_revision), (b("two"), created, updated));

    let err = t.store.update("/a", b("three"), Some(created)).await.expect_err("old revision");
    assert!(matches!(err, StoreError::Conflict { actual, .. } if actual == updated), "{err:?}");

    let unconditional = t.store.update("/a", b("four"), None).await?;
    assert_eq!(unconditional, updated + 1);

    let err = t.store.update("/missing", b("x"), None).await.expect_err("missing key");
    assert!(matches!(&err, StoreError::NotFound(k) if k == "/missing"), "{err:?}");
    assert_eq!(t.store.current_revision(), unconditional);
    Ok(())
}

#[tokio::test]
async fn delete_is_compare_and_swap() -> anyhow::Result<()> {
    let t = common::open(100, true);
    let created = t.store.create("/a", b("one")).await?;

    let err = t.store.delete("/a", Some(created + 1)).await.expect_err("wrong revision");
    assert!(
        matches!(err, StoreError::Conflict { expected, actual, .. } if expected == created + 1 && actual == created),
        "{err:?}"
    );
    assert!(t.store.get("/a").await?.is_some(), "a failed delete keeps the key");

    let (rev, prev) = t.store.delete("/a", Some(created)).await?;
    assert_eq!(rev, created + 1);
    assert_eq!(prev, KeyValue { key: "/a".into(), value: b("one"), create_revision: created, mod_revision: created });
    assert_eq!(t.store.get("/a").await?, None);
    assert_eq!(t.store.count("/").await?, 0);

    let err = t.store.delete("/a", None).await.expect_err("already deleted");
    assert!(matches!(&err, StoreError::NotFound(k) if k == "/a"), "{err:?}");

    let recreated = t.store.create("/a", b("again")).await?;
    let kv = t.store.get("/a").await?.expect("recreated");
    assert_eq!((kv.create_revision, kv.mod_revision), (recreated, recreated));
    Ok(())
}

#[tokio::test]
async fn revisions_increase_and_match_reads() -> anyhow::Result<()> {
    let t = common::open(100, true);
    let mut last = t.store.current_revision();
    for i in 0..20 {
        let key = format!("/k/{}", i % 5);
        let rev = match t.store.get(&key).await? {
            None => t.store.create(&key, b("v")).await?,
            Some(kv) if i % 3 == 0 => t.store.delete(&key, Some(kv.mod_revision)).await?.0,
            Some(kv) => t.store.update(&key, b("w"), Some(kv.mod_revision)).await?,
        };
        assert_eq!(rev, last + 1, "write {i}");
        assert_eq!(t.store.current_revision(), rev);
        if let Some(kv) = t.store.get(&key).await? {
            assert_eq!(kv.mod_revision, rev);
        }
        last = rev;
    }
    Ok(())
}

#[tokio::test]
async fn reopen_restores_data_and_revision() -> anyhow::Result<()> {
    let t = common::open(100, true);
    t.store.create("/a", b("one")).await?;
    t.store.create("/b", b("two")).await?;
    let rev_b = t.store.update("/b", b("two'"), None).await?;
    t.store.create("/c", b("three")).await?;
    let (last, _) = t.store.delete("/c", None).await?;
    t.store.close();
    let err = t.store.create("/d", b("x")).await.expect_err("closed store refuses writes");
    assert!(matches!(err, StoreError::Closed), "{err:?}");
    drop(t.store);

    let store = common::reopen(&t.dir, 100, true);
    assert_eq!(store.current_revision(), last);
    assert_eq!(store.oldest_watchable(), last, "history is not kept across restarts");
    let listed = store.list("/", None, 0).await?;
    assert_eq!(listed.revision, last);
    assert_eq!(
        listed.items,
        [
            KeyValue { key: "/a".into(), value: b("one"), create_revision: 1, mod_revision: 1 },
            KeyValue { key: "/b".into(), value: b("two'"), create_revision: 2, mod_revision: rev_b },
        ]
    );
    let next = store.create("/c", b("again")).await?;
    assert_eq!(next, last + 1, "revisions continue after reopen");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_get_distinct_consecutive_revisions() -> anyhow::Result<()> {
    const TASKS: usize = 32;
    const PER_TASK: usize = 200;
    let t = common::open(100_000, true);
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let store = t.store.clone();
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
    let stats = t.store.writer_stats();
    println!(
        "{} durable creates from {TASKS} tasks in {elapsed:?}: {:.0} writes/s, {} batches ({:.1} writes/batch)",
        all.len(),
        all.len() as f64 / elapsed.as_secs_f64(),
        stats.batches,
        stats.writes as f64 / stats.batches.max(1) as f64,
    );

    let mut revs: Vec<u64> = all.iter().map(|(_, r)| *r).collect();
    revs.sort_unstable();
    let expected: Vec<u64> = (1..=(TASKS * PER_TASK) as u64).collect();
    assert_eq!(revs, expected);
    assert_eq!(t.store.current_revision(), (TASKS * PER_TASK) as u64);
    for (key, rev) in all.iter().step_by(97) {
        assert_eq!(t.store.get(key).await?.map(|kv| kv.mod_revision), Some(*rev));
    }
    t.store.close();
    drop(t.store);

    let store = common::reopen(&t.dir, 100, true);
    assert_eq!(store.current_revision(), (TASKS * PER_TASK) as u64);
    let listed = store.list("/c/", None, 0).await?;
    assert_eq!(listed.items.len(), TASKS * PER_TASK);
    for (key, rev) in &all {
        let kv = store.get(key).await?.expect("every acknowledged create survives reopen");
        assert_eq!((kv.mod_revision, kv.value), (*rev, Bytes::from(key.clone())));
    }
    Ok(())
}
