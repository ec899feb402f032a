//! The baselines: what the store alone can do with the same values and the
//! same concurrency, in this process, while no server runs. `SledStore` is
//! the store under the API server; plain sled insert+flush per write is what
//! the disk and sled do without group commit.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use skiff_store::{SledOptions, SledStore, Store};
use tokio::sync::mpsc;

use crate::api::{last_arrival, NS, WATCH_NS};
use crate::load::{closed_loop, median, open_loop, Sample};
use crate::Plan;

pub struct StoreFigures {
    pub create1: Sample,
    pub create32: Sample,
    /// Mean writes per group commit at 1 and 32 writers.
    pub batch1: f64,
    pub batch32: f64,
    pub sled1: Sample,
    pub sled32: Sample,
    pub open: Sample,
    pub gets: Sample,
    pub list: Duration,
    pub fanout: Vec<Duration>,
}

fn open_store(dir: &Path, durable: bool) -> Result<Arc<SledStore>> {
    let mut options = SledOptions::new(dir);
    options.flush = durable;
    SledStore::open(options).with_context(|| format!("opening a store at {}", dir.display()))
}

fn cm_key(name: &str) -> String {
    format!("/registry/core/configmaps/{NS}/{name}")
}

/// Create `<prefix>-<i>` keys from `workers` tasks.
async fn creates(
    store: &Arc<SledStore>,
    workers: usize,
    max: usize,
    time: Duration,
    prefix: &'static str,
    value: &Bytes,
) -> Result<Sample> {
    let (store, value) = (Arc::clone(store), value.clone());
    closed_loop(workers, max, time, move |i| {
        let (store, value) = (Arc::clone(&store), value.clone());
        async move {
            store.create(&cm_key(&format!("{prefix}-{i}")), value).await?;
            Ok(())
        }
    })
    .await
}

/// Durable creates at `workers` concurrency; returns the mean batch size too.
async fn durable_creates(dir: &Path, workers: usize, time: Duration, value: &Bytes) -> Result<(Sample, f64)> {
    let store = open_store(dir, true)?;
    creates(&store, 4, 200, Duration::from_secs(5), "warm", value).await?;
    let before = store.writer_stats();
    let sample = creates(&store, workers, 10_000_000, time, "c", value).await?;
    let after = store.writer_stats();
    store.close();
    let batch = (after.writes - before.writes) as f64 / (after.batches - before.batches).max(1) as f64;
    Ok((sample, batch))
}

/// Plain sled: each of `threads` threads inserts and flushes, one write at a time.
fn sled_insert_flush(dir: &Path, threads: usize, time: Duration, value: &[u8]) -> Result<Sample> {
    let db = sled::Config::new().path(dir).open().with_context(|| format!("opening sled at {}", dir.display()))?;
    let tree = db.open_tree("bench")?;
    let started = Instant::now();
    let deadline = started + time;
    let latencies = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let tree = &tree;
                s.spawn(move || -> Result<Vec<Duration>> {
                    let mut lat = Vec::new();
                    let mut i = 0usize;
                    while Instant::now() < deadline && i < 1_000_000 {
                        let t0 = Instant::now();
                        tree.insert(format!("/k/{t}/{i}").as_bytes(), value)?;
                        tree.flush()?;
                        lat.push(t0.elapsed());
                        i += 1;
                    }
                    Ok(lat)
                })
            })
            .collect();
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.join().map_err(|_| anyhow::anyhow!("sled worker panicked"))??);
        }
        Ok::<_, anyhow::Error>(all)
    })?;
    Ok(Sample::new(started.elapsed(), latencies))
}

pub async fn run(work: &Path, plan: &Plan, configmap: &Bytes, pod: &Bytes) -> Result<StoreFigures> {
    eprintln!("baseline: store creates, 1 and 32 writers ({} byte values)", configmap.len());
    let (create1, batch1) = durable_creates(&work.join("store-c1"), 1, plan.create_time, configmap).await?;
    let (create32, batch32) = durable_creates(&work.join("store-c32"), 32, plan.create_time, configmap).await?;

    eprintln!("baseline: plain sled insert+flush, 1 and 32 threads");
    let sled_time = plan.create_time.min(Duration::from_secs(2));
    let (dir, value) = (work.join("sled"), configmap.clone());
    let (sled1, sled32) = tokio::task::spawn_blocking(move || -> Result<(Sample, Sample)> {
        let one = sled_insert_flush(&dir.join("1"), 1, sled_time, &value)?;
        let many = sled_insert_flush(&dir.join("32"), 32, sled_time, &value)?;
        Ok((one, many))
    })
    .await??;

    eprintln!("baseline: store open loop {}/s", plan.open_rate);
    let open = {
        let store = open_store(&work.join("store-open"), true)?;
        let (s, value) = (Arc::clone(&store), configmap.clone());
        let sample = open_loop(plan.open_rate, plan.open_time, move |i| {
            let (store, value) = (Arc::clone(&s), value.clone());
            async move {
                store.create(&cm_key(&format!("ol-{i}")), value).await?;
                Ok(())
            }
        })
        .await?;
        store.close();
        sample
    };

    eprintln!("baseline: store gets and list");
    let store = open_store(&work.join("store-read"), false)?;
    let names = creates(&store, 32, 10_000, Duration::from_secs(30), "g", configmap).await?.ops;
    let gets = {
        let s = Arc::clone(&store);
        closed_loop(32, 100_000_000, plan.get_time, move |i| {
            let s = Arc::clone(&s);
            async move {
                s.get(&cm_key(&format!("g-{}", i % names))).await?.context("baseline get: key missing")?;
                Ok(())
            }
        })
        .await?
    };
    let prefix = format!("/registry/core/pods/{NS}/");
    {
        let (s, value) = (Arc::clone(&store), pod.clone());
        let p = prefix.clone();
        closed_loop(32, plan.pods, Duration::from_secs(60), move |i| {
            let (s, value, key) = (Arc::clone(&s), value.clone(), format!("{p}pod-{i:05}"));
            async move {
                s.create(&key, value).await?;
                Ok(())
            }
        })
        .await?;
    }
    let mut times = Vec::new();
    for _ in 0..plan.list_rounds {
        let t = Instant::now();
        let page = store.list(&prefix, None, 0).await?;
        times.push(t.elapsed());
        anyhow::ensure!(page.items.len() == plan.pods, "baseline list: {} items", page.items.len());
    }
    store.close();
    let list = median(times);

    eprintln!("baseline: store watch fan-out to {} watchers", plan.watchers);
    let fanout = store_fanout(&work.join("store-watch"), plan, configmap).await?;
    Ok(StoreFigures { create1, create32, batch1, batch32, sled1, sled32, open, gets, list, fanout })
}

async fn store_fanout(dir: &Path, plan: &Plan, value: &Bytes) -> Result<Vec<Duration>> {
    let store = open_store(dir, true)?;
    let prefix = format!("/registry/core/configmaps/{WATCH_NS}/");
    let (tx, mut lines) = mpsc::unbounded_channel::<Instant>();
    let mut tasks = Vec::new();
    let rev = store.current_revision();
    for _ in 0..plan.watchers {
        let mut stream = store.watch(&prefix, rev).await?;
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(_)) = stream.next().await {
                let _ = tx.send(Instant::now());
            }
        }));
    }
    let mut fanout = Vec::new();
    let result = async {
        for round in 0..plan.fanout_rounds {
            let t0 = Instant::now();
            store.create(&format!("{prefix}w-{round}"), value.clone()).await?;
            let last = last_arrival(&mut lines, plan.watchers, t0).await?;
            fanout.push(last - t0);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    for t in &tasks {
        t.abort();
    }
    store.close();
    result.map(|()| fanout)
}
