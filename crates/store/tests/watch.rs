//! What only the sled store's watches do: expire an idle watcher that the
//! window left behind, end when the store closes. Replay, filters, expiry
//! and fan-out are in the conformance suite (`conformance/`).

mod common;

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use skiff_store::{Event, Store, StoreError, WatchStream};

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
