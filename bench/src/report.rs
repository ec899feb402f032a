//! The table: each figure beside its baseline from the same run, the ratio,
//! the target and whether it was met; and the "latest" section of
//! docs/BENCHMARKS.md.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::api::ApiFigures;
use crate::baseline::StoreFigures;
use crate::load::{median, Sample};
use crate::patch::PatchFigures;
use crate::sys::Machine;
use crate::Plan;

/// Targets from the "API server core" issue.
const TARGET_CREATES_32: f64 = 3_000.0;
const TARGET_OPEN_P99: Duration = Duration::from_millis(10);
const TARGET_LIST: Duration = Duration::from_millis(100);
const TARGET_RSS: u64 = 30 << 20;

const BEGIN: &str = "<!-- latest:begin (written by skiff-bench) -->";
const END: &str = "<!-- latest:end -->";

pub struct Row {
    figure: String,
    skiff: String,
    baseline: String,
    ratio: String,
    target: String,
    met: String,
}

/// `12,345`: a count with thousands separators.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn rate(x: f64) -> String {
    count(x.round() as u64) + "/s"
}

pub fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 0.1 {
        format!("{:.0} µs", ms * 1e3)
    } else if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

fn ratio(skiff: f64, baseline: f64) -> String {
    if baseline <= 0.0 {
        return "—".into();
    }
    let r = skiff / baseline;
    if r >= 10.0 {
        format!("{r:.0}×")
    } else {
        format!("{r:.2}×")
    }
}

fn met(ok: bool) -> String {
    if ok { "yes" } else { "**no**" }.into()
}

fn p50_p99(s: &Sample) -> String {
    format!("{} / {}", ms(s.pct(50.0)), ms(s.pct(99.0)))
}

pub fn rows(api: &ApiFigures, store: &StoreFigures, plan: &Plan) -> Vec<Row> {
    let none = || "—".to_string();
    let secs = |d: Duration| d.as_secs_f64();
    let create = |clients: usize, s: &Sample, base: &Sample, sled: &Sample, target: Option<f64>| {
        [
            Row {
                figure: format!("durable creates/s, {clients} client{}", if clients > 1 { "s" } else { "" }),
                skiff: rate(s.rate()),
                baseline: format!("store {} · sled {}", rate(base.rate()), rate(sled.rate())),
                ratio: format!("{} · {}", ratio(s.rate(), base.rate()), ratio(s.rate(), sled.rate())),
                target: target.map_or_else(none, |t| format!("≥ {}", rate(t))),
                met: target.map_or_else(none, |t| met(s.rate() >= t)),
            },
            Row {
                figure: format!("  create latency p50 / p99, {clients} client{}", if clients > 1 { "s" } else { "" }),
                skiff: p50_p99(s),
                baseline: format!("store {} · sled {}", p50_p99(base), p50_p99(sled)),
                ratio: format!(
                    "{} · {} (p99)",
                    ratio(secs(s.pct(99.0)), secs(base.pct(99.0))),
                    ratio(secs(s.pct(99.0)), secs(sled.pct(99.0)))
                ),
                target: none(),
                met: none(),
            },
        ]
    };
    let mut rows = Vec::new();
    rows.extend(create(1, &api.create1, &store.create1, &store.sled1, None));
    rows.extend(create(32, &api.create32, &store.create32, &store.sled32, Some(TARGET_CREATES_32)));
    rows.push(Row {
        figure: format!("create p99 at {} offered for {:?} (p50)", rate(plan.open_rate), plan.open_time),
        skiff: format!("{} ({})", ms(api.open.pct(99.0)), ms(api.open.pct(50.0))),
        baseline: format!("store {} ({})", ms(store.open.pct(99.0)), ms(store.open.pct(50.0))),
        ratio: ratio(secs(api.open.pct(99.0)), secs(store.open.pct(99.0))),
        target: format!("≤ {}", ms(TARGET_OPEN_P99)),
        met: met(api.open.pct(99.0) <= TARGET_OPEN_P99),
    });
    rows.push(Row {
        figure: "gets/s, 32 clients".into(),
        skiff: rate(api.gets.rate()),
        baseline: format!("store {}", rate(store.gets.rate())),
        ratio: ratio(api.gets.rate(), store.gets.rate()),
        target: none(),
        met: none(),
    });
    rows.push(Row {
        figure: format!(
            "list {} pods, JSON ({:.1} MB, median of {})",
            count(plan.pods as u64),
            api.list_json_bytes as f64 / 1e6,
            plan.list_rounds
        ),
        skiff: ms(api.list_json),
        baseline: format!("store list {}", ms(store.list)),
        ratio: ratio(secs(api.list_json), secs(store.list)),
        target: format!("≤ {}", ms(TARGET_LIST)),
        met: met(api.list_json <= TARGET_LIST),
    });
    rows.push(Row {
        figure: format!(
            "list {} pods, Table ({:.1} MB, median of {})",
            count(plan.pods as u64),
            api.list_table_bytes as f64 / 1e6,
            plan.list_rounds
        ),
        skiff: ms(api.list_table),
        baseline: format!("store list {}", ms(store.list)),
        ratio: ratio(secs(api.list_table), secs(store.list)),
        target: none(),
        met: none(),
    });
    let (fanout, base_fanout) = (median(api.fanout.clone()), median(store.fanout.clone()));
    rows.push(Row {
        figure: format!(
            "one write seen by {} watchers (median of {})",
            count(plan.watchers as u64),
            plan.fanout_rounds
        ),
        skiff: ms(fanout),
        baseline: format!("store watch {}", ms(base_fanout)),
        ratio: ratio(secs(fanout), secs(base_fanout)),
        target: none(),
        met: none(),
    });
    rows.extend(patch_rows(&api.patch));
    rows.push(Row {
        figure: format!("idle RSS, {:?} after start", plan.idle),
        skiff: format!("{:.1} MiB", api.idle_rss as f64 / (1 << 20) as f64),
        baseline: "no baseline".into(),
        ratio: none(),
        target: format!("≤ {} MiB", TARGET_RSS >> 20),
        met: met(api.idle_rss <= TARGET_RSS),
    });
    rows
}

/// Strategic merge and server-side apply, each beside PUT of the known object.
fn patch_rows(p: &PatchFigures) -> Vec<Row> {
    let none = || "—".to_string();
    let clients = crate::patch::CLIENTS;
    let mut rows = Vec::new();
    for (kind, s) in [("strategic merge patches", &p.smp), ("server-side applies", &p.ssa)] {
        rows.push(Row {
            figure: format!("{kind}/s, {clients} clients, 1 of {} images", crate::patch::CONTAINERS),
            skiff: rate(s.rate()),
            baseline: format!("PUT {}", rate(p.put.rate())),
            ratio: ratio(s.rate(), p.put.rate()),
            target: none(),
            met: none(),
        });
        rows.push(Row {
            figure: format!("  latency p50 / p99, {kind}"),
            skiff: p50_p99(s),
            baseline: format!("PUT {}", p50_p99(&p.put)),
            ratio: format!("{} (p99)", ratio(s.pct(99.0).as_secs_f64(), p.put.pct(99.0).as_secs_f64())),
            target: none(),
            met: none(),
        });
    }
    rows
}

/// A markdown table, padded so it also reads well in a terminal.
pub fn table(rows: &[Row]) -> String {
    let header = ["figure", "skiff", "baseline", "ratio", "target", "met?"];
    let cells: Vec<[&str; 6]> =
        rows.iter().map(|r| [&*r.figure, &*r.skiff, &*r.baseline, &*r.ratio, &*r.target, &*r.met]).collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: [&str; 6]| {
        let mut s = String::from("|");
        for (c, w) in cols.iter().zip(widths) {
            let _ = write!(s, " {c}{} |", " ".repeat(w - c.chars().count()));
        }
        s + "\n"
    };
    let mut out = line(header);
    out.push('|');
    for w in widths {
        out.push_str(&"-".repeat(w + 2));
        out.push('|');
    }
    out.push('\n');
    for row in cells {
        out.push_str(&line(row));
    }
    out
}

/// What the reader needs to interpret the table.
pub fn notes(api: &ApiFigures, store: &StoreFigures, machine: &Machine, plan: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "- ratio = skiff ÷ baseline: below 1× for a rate means slower than the store alone; above 1× for a time means slower.");
    let _ = writeln!(
        s,
        "- skiff: a `skiff server --disable-agent` child on 127.0.0.1 over HTTPS (HTTP/2, admin client certificate), ConfigMaps of {} bytes stored, Pods of {} bytes stored; 32 clients share {} HTTP/2 connections.",
        api.configmap_value.len(),
        api.pod_value.len(),
        plan.connections
    );
    let _ = writeln!(
        s,
        "- store: `SledStore` from skiff-store in the benchmark process, same values, keys and concurrency (group commit: {:.1} writes per fsync at 1 writer, {:.1} at 32); sled: plain sled `insert` + `flush` per write, from 1 and 32 threads.",
        store.batch1, store.batch32
    );
    let _ = writeln!(s, "- The client runs on the same {} cores as the server. CPU used per phase (cores = CPU seconds ÷ wall seconds):", machine.cores);
    for c in &api.cpu {
        let _ = writeln!(
            s,
            "  - {}: server {:.2} cores, client {:.2} cores over {:.1} s",
            c.phase,
            c.server / c.wall,
            c.client / c.wall,
            c.wall
        );
    }
    let _ = writeln!(
        s,
        "- Patches: {} clients, each on its own paused Deployment of {} containers with zero replicas ({} bytes as the API returns it), {:?} per kind. Strategic merge is `kubectl set image`'s patch (`$setElementOrder/containers` and one image); server-side apply sends the whole configuration with one image changed (one field manager, no conflicts); the baseline PUT sends the client's last copy of the object with one image changed ({} PUTs met a 409 and were sent again after a GET, inside the operation's time). Every answer is checked, and afterwards every Deployment's generation counts every change. Server CPU per operation: strategic merge {}, server-side apply {}, PUT {}.",
        crate::patch::CLIENTS,
        crate::patch::CONTAINERS,
        api.patch.object_bytes,
        plan.patch_time,
        api.patch.put_conflicts,
        ms(Duration::from_secs_f64(api.patch.cpu_per_op[0])),
        ms(Duration::from_secs_f64(api.patch.cpu_per_op[1])),
        ms(Duration::from_secs_f64(api.patch.cpu_per_op[2]))
    );
    let writes = median(api.fanout_write.clone());
    let _ = writeln!(s, "- Watch fan-out is timed from sending the write to the last watcher reading its event line; it includes the write's own latency (median {}).", ms(writes));
    let _ = writeln!(s, "- Data dirs on {}.", machine.tmp_fs);
    s
}

pub fn header(machine: &Machine) -> String {
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    format!(
        "{date}, commit {commit}, Linux {}, {} × {}, {:.1} GiB RAM, load average {} at start, release build.\n",
        machine.kernel, machine.cores, machine.cpu, machine.memory_gib, machine.load
    )
}

/// Replace the "latest" section of `path`, creating the file if needed.
pub fn write_latest(path: &Path, section: &str) -> Result<()> {
    let section = format!("{BEGIN}\n## Latest run\n\n{section}{END}\n");
    let old = match fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# Benchmarks\n\nRun `make bench`.\n\n".into(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{section}{}", &old[..b], old[e + END.len()..].trim_start_matches('\n'))
        }
        _ => format!("{}\n{section}", old.trim_end()),
    };
    fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_group_thousands() {
        assert_eq!(rate(3_000.4), "3,000/s");
        assert_eq!(rate(999.0), "999/s");
        assert_eq!(rate(1_234_567.0), "1,234,567/s");
    }

    #[test]
    fn the_latest_section_is_replaced_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("B.md");
        fs::write(&path, "# B\n\nintro\n").unwrap();
        write_latest(&path, "one\n").unwrap();
        write_latest(&path, "two\n").unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# B\n\nintro\n"));
        assert!(text.contains("two") && !text.contains("one"));
        assert_eq!(text.matches(BEGIN).count(), 1);
    }
}
