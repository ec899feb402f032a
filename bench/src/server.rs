//! The `skiff server` child process under test, as a guard: dropping it
//! kills the child and waits for it, on every exit path (errors, panics,
//! Ctrl-C), before the caller's temp dir goes away.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long a fresh server may take to write its kubeconfig.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Server {
    child: Child,
    data_dir: PathBuf,
    log: PathBuf,
}

impl Server {
    /// Start `skiff server --disable-agent` on 127.0.0.1 with a free port and
    /// `data_dir` (created), and wait until it has written its kubeconfig.
    pub async fn start(bin: &Path, data_dir: PathBuf, log: PathBuf) -> Result<Server> {
        fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        let log_file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(bin)
            .arg("server")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--bind-address", "127.0.0.1", "--https-listen-port", "0", "--disable-agent"])
            .env("SKIFF_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {} (build it with `cargo build --release -p skiff`)", bin.display()))?;
        let mut server = Server { child, data_dir, log };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let started = Instant::now();
        let kubeconfig = self.kubeconfig();
        while !kubeconfig.exists() {
            if let Some(status) = self.child.try_wait()? {
                bail!("skiff server exited with {status} before it was ready; its log:\n{}", self.log_tail());
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "skiff server wrote no {} within {READY_TIMEOUT:?}; its log:\n{}",
                    kubeconfig.display(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig.yaml")
    }

    /// Fail with the server's log if it has died.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("skiff server exited with {status}; its log:\n{}", self.log_tail());
        }
        Ok(())
    }

    /// The resident set size of the server, from `/proc/<pid>/status`.
    pub fn rss_bytes(&self) -> Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
        let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .with_context(|| format!("{path}: no VmRSS line"))?;
        Ok(kb * 1024)
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGKILL: the data dir is thrown away, so there is nothing to flush.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
