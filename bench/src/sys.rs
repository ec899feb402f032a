//! What the machine is, and how much CPU each side used during a phase.

use std::fs;
use std::path::Path;
use std::time::Instant;

/// Linux reports process times in USER_HZ ticks, 100 per second on every
/// architecture Skiff runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds (user + system, all threads) a process has used so far.
pub fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / TICKS_PER_SECOND
}

/// Cores used by the server and by the benchmark client over one phase.
#[derive(Debug, Clone)]
pub struct CpuUse {
    pub phase: &'static str,
    pub wall: f64,
    pub server: f64,
    pub client: f64,
}

pub struct CpuMeter {
    phase: &'static str,
    server_pid: String,
    started: Instant,
    server: f64,
    client: f64,
}

impl CpuMeter {
    pub fn start(phase: &'static str, server_pid: u32) -> CpuMeter {
        let server_pid = server_pid.to_string();
        CpuMeter {
            phase,
            server: cpu_seconds(&server_pid),
            client: cpu_seconds("self"),
            server_pid,
            started: Instant::now(),
        }
    }

    pub fn stop(self) -> CpuUse {
        CpuUse {
            phase: self.phase,
            wall: self.started.elapsed().as_secs_f64(),
            server: cpu_seconds(&self.server_pid) - self.server,
            client: cpu_seconds("self") - self.client,
        }
    }
}

/// The machine a run happened on.
pub struct Machine {
    pub kernel: String,
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    /// Filesystem type and device of the temp dir the data dirs live in.
    pub tmp_fs: String,
    /// The 1-minute load average when the run started: the machine may be shared.
    pub load: String,
}

impl Machine {
    pub fn probe(tmp: &Path) -> Machine {
        let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|v| v.split_once(':')).map(|(_, v)| v.trim()))
            .unwrap_or("unknown")
            .to_string();
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let memory_gib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| kb / (1024.0 * 1024.0))
            .unwrap_or(0.0);
        Machine {
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            cpu,
            cores,
            memory_gib,
            tmp_fs: filesystem_of(tmp, &read("/proc/mounts")),
            load: read("/proc/loadavg").split_whitespace().next().unwrap_or("unknown").to_string(),
        }
    }
}

/// "ext4 on /dev/vda" for the mount that holds `path` (the longest matching mount point).
fn filesystem_of(path: &Path, mounts: &str) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && path.starts_with(f[1])).then(|| (f[1].len(), format!("{} on {}", f[2], f[0])))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs)| fs)
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_mount_point_wins() {
        let mounts = "/dev/vda / ext4 rw 0 0\ntmpfs /tmp tmpfs rw 0 0\n";
        assert_eq!(filesystem_of(Path::new("/tmp/x-does-not-exist"), mounts), "tmpfs on tmpfs");
        assert_eq!(filesystem_of(Path::new("/work-does-not-exist"), mounts), "ext4 on /dev/vda");
    }
}
