//! `skiff-bench`: the figures of the "API server core" issue, each beside a
//! baseline measured in the same run, and the patch figures of the "API
//! semantics" issue beside plain PUT. It starts a real `skiff server
//! --disable-agent` on 127.0.0.1 with a temp data dir, drives its HTTPS API,
//! stops it, measures the store alone with the same values and concurrency,
//! prints a markdown table to stdout (progress goes to stderr) and writes it
//! into the "latest" section of docs/BENCHMARKS.md.
//!
//! Every load loop is bounded in count and time; the child process and the
//! temp dirs are guards, released on every exit path.

mod api;
mod baseline;
mod client;
mod etcd;
mod load;
mod patch;
mod report;
mod server;
mod sys;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "skiff-bench", about = "Benchmark the skiff API server against its store")]
struct Args {
    /// The skiff binary to benchmark (a release build)
    #[arg(long, default_value = "./target/release/skiff")]
    skiff: PathBuf,
    /// Markdown file whose "latest" section gets the table
    #[arg(long, default_value = "docs/BENCHMARKS.md")]
    out: PathBuf,
    /// Print the table only; leave --out alone
    #[arg(long)]
    no_write: bool,
    /// Where the temp data dirs go (default: $TMPDIR or /tmp); fsync costs depend on it
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
    /// HTTP/2 connections the 32 clients share
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Writes timed in the watch fan-out phase (more give a profiler time to look)
    #[arg(long, default_value_t = 5)]
    fanout_rounds: usize,
    /// Shorter phases and fewer objects, to check the harness itself
    #[arg(long)]
    quick: bool,
}

/// How long and how big each phase is.
pub struct Plan {
    pub idle: Duration,
    pub connections: usize,
    pub create_time: Duration,
    pub open_rate: f64,
    pub open_time: Duration,
    pub get_time: Duration,
    pub pods: usize,
    pub list_rounds: usize,
    pub watchers: usize,
    pub fanout_rounds: usize,
    /// Each patch kind (strategic merge, server-side apply, PUT) runs this long.
    pub patch_time: Duration,
}

impl Plan {
    fn new(args: &Args) -> Plan {
        let full = !args.quick;
        let pick = |full_secs: u64, quick_ms: u64| {
            if full {
                Duration::from_secs(full_secs)
            } else {
                Duration::from_millis(quick_ms)
            }
        };
        Plan {
            idle: pick(5, 1000),
            connections: args.connections.max(1),
            create_time: pick(4, 500),
            open_rate: 1_000.0,
            open_time: pick(5, 500),
            get_time: pick(3, 500),
            pods: if full { 10_000 } else { 500 },
            list_rounds: 5,
            watchers: if full { 1_000 } else { 100 },
            fanout_rounds: args.fanout_rounds.clamp(1, 1_000),
            patch_time: pick(3, 500),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skiff-bench: starting tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    // On Ctrl-C the benchmark future is dropped, which kills the child and
    // removes the temp dirs through their guards.
    let result = runtime.block_on(async {
        tokio::select! {
            r = run(&args) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiff-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<()> {
    if !args.skiff.is_file() {
        bail!("--skiff {}: no such binary; run `cargo build --release -p skiff` first", args.skiff.display());
    }
    let plan = Plan::new(args);
    let mut tmp = tempfile::Builder::new();
    tmp.prefix("skiff-bench-");
    let work = match &args.tmp_dir {
        Some(dir) => tmp.tempdir_in(dir),
        None => tmp.tempdir(),
    }
    .context("creating a temp dir")?;
    let machine = sys::Machine::probe(work.path());
    eprintln!(
        "skiff-bench: {} × {}; data dirs in {} ({})",
        machine.cores,
        machine.cpu,
        work.path().display(),
        machine.tmp_fs
    );

    let figures = {
        let mut server =
            server::Server::start(&args.skiff, work.path().join("server"), work.path().join("server.log")).await?;
        eprintln!("server: pid {} ready", server.pid());
        api::run(&mut server, &plan).await?
        // the server is killed here, before the baselines run
    };
    let store = baseline::run(work.path(), &plan, &figures.configmap_value, &figures.pod_value).await?;

    let rows = report::rows(&figures, &store, &plan);
    let table = report::table(&rows);
    let notes = report::notes(&figures, &store, &machine, &plan);
    let header = report::header(&machine);
    let etcd = etcd::run(&args.skiff, work.path(), &plan).await?;
    let notes = format!("{notes}{etcd}");
    println!("{header}\n{table}\n{notes}");
    if args.no_write || args.quick {
        eprintln!("skiff-bench: not writing {}", args.out.display());
    } else {
        report::write_latest(&args.out, &format!("{header}\n{table}\n{notes}"))?;
        eprintln!("skiff-bench: wrote {}", args.out.display());
    }
    Ok(())
}
