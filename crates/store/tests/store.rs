//! What only the sled store does: reopen, group commit. The behaviour every
//! backend shares is in the conformance suite (`conformance/`).

mod common;

use std::time::Instant;

use bytes::Bytes;
use skiff_store::{KeyValue, Store, StoreError};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
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
async fn concurrent_writers_group_commit_and_survive_reopen() -> anyhow::Result<()> {
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
