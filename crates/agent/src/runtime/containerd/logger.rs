//! The binary logger: containerd's runc shim starts it for each container
//! (a `binary://` stdio URI) as `<skiff> logger <log path>`, with
//!
//! - fd 3: the read end of the container's stdout pipe,
//! - fd 4: the read end of its stderr pipe,
//! - fd 5: a pipe the shim waits on until the logger is ready (a byte or EOF),
//!
//! and environment `CONTAINER_ID`, `CONTAINER_NAMESPACE`. It writes every
//! line to the log file in the CRI format kubelet and `kubectl logs` read:
//! `2026-11-26T22:21:10.123456789Z stdout F hello` (`F` a full line, `P`
//! part of a line longer than 16 KiB). Because the shim owns it, logging
//! goes on while the agent restarts.
//!
//! When the task is deleted the shim closes the pipes and sends SIGTERM;
//! the logger blocks SIGTERM, drains what is left and exits at EOF (or
//! two seconds after SIGTERM at the latest).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};

/// Lines longer than this are split into `P` (partial) records, as containerd does.
pub const MAX_LINE: usize = 16 * 1024;

/// Runs the logger until the container's stdout and stderr are closed.
/// Blocking, and needs no async runtime: `skiff logger <PATH>` calls it.
pub fn run(path: &Path) -> std::io::Result<()> {
    let mut term = SigSet::empty();
    term.add(Signal::SIGTERM);
    term.add(Signal::SIGINT);
    // Blocked here, so in every thread started below: the signal waits for `wait`.
    term.thread_block().map_err(std::io::Error::from)?;
    std::thread::spawn(move || {
        if term.wait().is_ok() {
            std::thread::sleep(Duration::from_secs(2));
            std::process::exit(0);
        }
    });

    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let out = Arc::new(Mutex::new(file));
    // The fds are inherited; opening them again through /proc needs no unsafe code.
    let stdout = File::open("/proc/self/fd/3")?;
    let stderr = File::open("/proc/self/fd/4")?;
    if let Ok(mut ready) = OpenOptions::new().write(true).open("/proc/self/fd/5") {
        let _ = ready.write_all(b"r");
    }
    let threads: Vec<_> = [("stdout", stdout), ("stderr", stderr)]
        .into_iter()
        .map(|(stream, input)| {
            let out = out.clone();
            std::thread::spawn(move || copy(stream, input, &out))
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Copies `input` into `out` as CRI log records of `stream`.
pub fn copy(stream: &str, mut input: impl Read, out: &Mutex<impl Write>) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            let mut line = &line[..line.len() - 1];
            while line.len() > MAX_LINE {
                record(out, stream, 'P', &line[..MAX_LINE]);
                line = &line[MAX_LINE..];
            }
            record(out, stream, 'F', line);
        }
        while pending.len() >= MAX_LINE {
            let part: Vec<u8> = pending.drain(..MAX_LINE).collect();
            record(out, stream, 'P', &part);
        }
    }
    if !pending.is_empty() {
        record(out, stream, 'F', &pending);
    }
}

/// Writes one record. A failed write drops the line: the logger must keep
/// reading, or the container would block on a full pipe.
fn record(out: &Mutex<impl Write>, stream: &str, tag: char, content: &[u8]) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let mut line = Vec::with_capacity(content.len() + 48);
    line.extend_from_slice(format!("{now} {stream} {tag} ").as_bytes());
    line.extend_from_slice(content);
    line.push(b'\n');
    if let Ok(mut out) = out.lock() {
        let _ = out.write_all(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_cri_records() {
        let out = Mutex::new(Vec::new());
        let long = "x".repeat(MAX_LINE + 10);
        let input = format!("hello\n\nworld\n{long}\ntail");
        copy("stdout", input.as_bytes(), &out);
        let text = String::from_utf8(out.into_inner().unwrap()).unwrap();
        let records: Vec<(&str, &str, &str, &str)> = text
            .lines()
            .map(|l| {
                let mut parts = l.splitn(4, ' ');
                (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap_or(""))
            })
            .collect();
        assert_eq!(records.len(), 6);
        assert!(chrono::DateTime::parse_from_rfc3339(records[0].0).is_ok());
        assert!(records[0].0.ends_with('Z'));
        let tail: Vec<(&str, &str, &str)> = records.iter().map(|r| (r.1, r.2, r.3)).collect();
        assert_eq!(tail[0], ("stdout", "F", "hello"));
        assert_eq!(tail[1], ("stdout", "F", ""));
        assert_eq!(tail[2], ("stdout", "F", "world"));
        assert_eq!(tail[3], ("stdout", "P", &long[..MAX_LINE]));
        assert_eq!(tail[4], ("stdout", "F", "xxxxxxxxxx"));
        assert_eq!(tail[5], ("stdout", "F", "tail"));
    }
}
