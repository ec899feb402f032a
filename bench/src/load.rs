//! Load shapes: closed loop (N workers, each sends its next request when the
//! last one answered) and open loop (requests scheduled at a fixed rate,
//! latency measured from the scheduled time, so a slow server cannot slow
//! the offered load down and hide its own queueing). Both are bounded in
//! count and in time.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

/// What a run measured: operations done, wall time, and every latency.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub ops: usize,
    pub elapsed: Duration,
    /// Sorted ascending.
    pub latencies: Vec<Duration>,
}

impl Sample {
    pub fn new(elapsed: Duration, mut latencies: Vec<Duration>) -> Sample {
        latencies.sort_unstable();
        Sample { ops: latencies.len(), elapsed, latencies }
    }

    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The nearest-rank percentile `p` (0..=100) of the latencies.
    pub fn pct(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }
}

/// The median of a few timings.
pub fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort_unstable();
    xs.get(xs.len() / 2).copied().unwrap_or_default()
}

/// Run `op(i)` for i = 0, 1, 2, … from `workers` concurrent tasks until
/// `max_ops` were started or `max_time` has passed.
pub async fn closed_loop<F, Fut>(workers: usize, max_ops: usize, max_time: Duration, op: F) -> Result<Sample>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + max_time;
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (op, next) = (Arc::clone(&op), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= max_ops {
                    break;
                }
                let t = Instant::now();
                op(i).await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.context("load worker panicked")??);
    }
    Ok(Sample::new(started.elapsed(), all))
}

/// Start `op(i)` at `rate` per second for `duration`, each at its scheduled
/// time regardless of how many are still open, and measure each from its
/// scheduled time to its completion. A dedicated blocking thread keeps the
/// schedule (tokio's timer has millisecond granularity, too coarse here).
pub async fn open_loop<F, Fut>(rate: f64, duration: Duration, op: F) -> Result<Sample>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let count = (rate * duration.as_secs_f64()).round() as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let runtime = tokio::runtime::Handle::current();
    let started = Instant::now() + Duration::from_millis(5);
    let handles = tokio::task::spawn_blocking(move || {
        let mut handles = Vec::with_capacity(count);
        for i in 0..count {
            let at = started + interval * i as u32;
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            let op = Arc::clone(&op);
            handles.push(runtime.spawn(async move {
                op(i).await?;
                Ok::<_, anyhow::Error>(at.elapsed())
            }));
        }
        handles
    })
    .await
    .context("open-loop scheduler panicked")?;
    let mut latencies = Vec::with_capacity(handles.len());
    for h in handles {
        latencies.push(h.await.map_err(|e| anyhow!("open-loop request panicked: {e}"))??);
    }
    // Throughput is not the point of an open loop; elapsed is the schedule.
    Ok(Sample::new(duration, latencies))
}

/// Run `workers` tasks until `max_time` has passed: worker `w` calls
/// `op(w, n)` for n = 0, 1, 2, … up to `max_per_worker`, one at a time, so
/// each worker may keep state of its own (an object it owns).
pub async fn worker_loop<F, Fut>(workers: usize, max_per_worker: usize, max_time: Duration, op: F) -> Result<Sample>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let deadline = started + max_time;
    let mut tasks = Vec::with_capacity(workers);
    for w in 0..workers {
        let op = Arc::clone(&op);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for n in 0..max_per_worker {
                if Instant::now() >= deadline {
                    break;
                }
                let t = Instant::now();
                op(w, n).await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.context("load worker panicked")??);
    }
    Ok(Sample::new(started.elapsed(), all))
}
