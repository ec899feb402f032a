//! Acknowledged writes survive SIGKILL of the process that made them.
//!
//! The test re-executes its own binary as a child (selected by
//! `SKIFF_STORE_CHILD_DIR`) that writes keys from several tasks and prints
//! `acked N` for each acknowledged one. The parent kills it with SIGKILL in
//! the middle of the writes, reopens the store and looks for every key.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use skiff_store::{SledOptions, SledStore, Store};

const CHILD_DIR: &str = "SKIFF_STORE_CHILD_DIR";
const TEST_NAME: &str = "acknowledged_writes_survive_sigkill";
/// Acknowledged writes to wait for before killing the child.
const KILL_AFTER: usize = 400;
const CHILD_TASKS: u64 = 4;
/// The child stops by itself after this long, should the parent be gone.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);

fn key(n: u64) -> String {
    format!("/durable/{n:08}")
}

#[test]
fn acknowledged_writes_survive_sigkill() -> anyhow::Result<()> {
    match std::env::var_os(CHILD_DIR) {
        Some(dir) => run_child(dir.into()),
        None => run_parent(),
    }
}

/// Write keys until killed, printing each acknowledged one.
fn run_child(dir: std::path::PathBuf) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let store = SledStore::open(SledOptions::new(dir))?;
        let deadline = Instant::now() + CHILD_LIFETIME;
        let mut tasks = Vec::new();
        for task in 0..CHILD_TASKS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = task;
                while Instant::now() < deadline {
                    store.create(&key(n), Bytes::from(key(n))).await?;
                    // One write per line, so a line is never half printed.
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "acked {n}")?;
                    out.flush()?;
                    n += CHILD_TASKS;
                }
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        anyhow::Ok(())
    })
}

/// Kills the child if the parent fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_parent() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("db");
    let child = Command::new(std::env::current_exe()?)
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD_DIR, &db)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().ok_or_else(|| anyhow::anyhow!("child has no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();

    let mut acked = BTreeSet::new();
    while acked.len() < KILL_AFTER {
        let Some(line) = lines.next() else {
            anyhow::bail!("child exited after {} acknowledged writes", acked.len());
        };
        if let Some(n) = line?.strip_prefix("acked ") {
            acked.insert(n.parse::<u64>()?);
        }
    }
    // Child::kill sends SIGKILL on Unix: no destructor, no flush, no exit hook.
    child.0.kill()?;
    let status = child.0.wait()?;
    anyhow::ensure!(!status.success(), "child was killed, yet exited with {status}");
    // Lines printed before the kill are acknowledged writes too.
    for line in lines {
        if let Some(n) = line?.strip_prefix("acked ") {
            acked.insert(n.parse::<u64>()?);
        }
    }

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let store = SledStore::open(SledOptions::new(&db))?;
        let present = store.count("/durable/").await?;
        println!("{} writes acknowledged before SIGKILL, {present} present after reopen", acked.len());
        let missing: Vec<u64> = {
            let mut missing = Vec::new();
            for n in &acked {
                if store.get(&key(*n)).await?.is_none() {
                    missing.push(*n);
                }
            }
            missing
        };
        anyhow::ensure!(missing.is_empty(), "{} acknowledged keys lost: {missing:?}", missing.len());
        anyhow::ensure!(
            store.current_revision() as usize == present,
            "revision {} after reopen, but {present} keys (one create each)",
            store.current_revision()
        );
        anyhow::Ok(())
    })
}
