//! Container logs: where they are kept, their rotation, and reading them with
//! `kubectl logs` semantics (follow, previous, tailLines, sinceSeconds,
//! sinceTime, timestamps, limitBytes).
//!
//! The runtime's logger writes CRI-format records
//! (`2026-11-26T22:21:10.123456789Z stdout F hello`) to
//! `<pods dir>/<namespace>_<pod>_<uid>/<container>/<attempt>.log`, appending.
//! Rotation is copy-and-truncate: past [`MAX_LOG_BYTES`] the file is copied to
//! `<attempt>.log.1` (replacing the one before) and emptied.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::Stream;

pub const MAX_LOG_BYTES: u64 = 10 * 1024 * 1024;
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// A pod's log directory name.
pub fn pod_log_dir(pods_dir: &Path, namespace: &str, name: &str, uid: &str) -> PathBuf {
    pods_dir.join(format!("{namespace}_{name}_{uid}"))
}

pub fn container_log_path(pod_dir: &Path, container: &str, attempt: u32) -> PathBuf {
    pod_dir.join(container).join(format!("{attempt}.log"))
}

/// Copy-and-truncate `path` when it has grown past `max` bytes.
pub fn rotate_if_needed(path: &Path, max: u64) -> std::io::Result<bool> {
    let size = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(_) => return Ok(false),
    };
    if size <= max {
        return Ok(false);
    }
    let mut rotated = path.as_os_str().to_owned();
    rotated.push(".1");
    fs::copy(path, PathBuf::from(&rotated))?;
    fs::OpenOptions::new().write(true).open(path)?.set_len(0)?;
    Ok(true)
}

/// What `kubectl logs` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogOptions {
    #[serde(default, deserialize_with = "de_bool")]
    pub follow: bool,
    #[serde(default, deserialize_with = "de_bool")]
    pub previous: bool,
    #[serde(default, deserialize_with = "de_i64")]
    pub tail_lines: Option<i64>,
    #[serde(default, deserialize_with = "de_i64")]
    pub since_seconds: Option<i64>,
    #[serde(default)]
    pub since_time: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "de_bool")]
    pub timestamps: bool,
    #[serde(default, deserialize_with = "de_i64")]
    pub limit_bytes: Option<i64>,
}

fn de_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let s = String::deserialize(d)?;
    Ok(matches!(s.as_str(), "true" | "1" | "True" | "TRUE" | ""))
}

fn de_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<i64>().map(Some).map_err(|_| serde::de::Error::custom(format!("{s:?} is not an integer")))
}

use serde::Deserialize;

/// One CRI log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub time: &'a str,
    pub stream: &'a str,
    pub partial: bool,
    pub content: &'a [u8],
}

/// Parse one line (without its newline) of a CRI log.
pub fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or(b"");
    Some(Record { time, stream, partial: tag.split(|b| *b == b':').next() == Some(b"P"), content })
}

fn render(r: &Record<'_>, timestamps: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(r.content.len() + 40);
    if timestamps {
        out.extend_from_slice(r.time.as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(r.content);
    if !r.partial {
        out.push(b'\n');
    }
    out
}

fn since(opts: &LogOptions, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match (opts.since_time, opts.since_seconds) {
        (Some(t), _) => Some(t),
        (None, Some(s)) => Some(now - chrono::Duration::seconds(s)),
        _ => None,
    }
}

fn after(r: &Record<'_>, since: Option<DateTime<Utc>>) -> bool {
    match since {
        None => true,
        Some(s) => DateTime::parse_from_rfc3339(r.time).map(|t| t.with_timezone(&Utc) >= s).unwrap_or(true),
    }
}

/// The output for the complete lines of `data` (what is already in the files).
pub fn render_existing(data: &[u8], opts: &LogOptions, now: DateTime<Utc>) -> Vec<u8> {
    let since = since(opts, now);
    let mut lines: Vec<Vec<u8>> = data
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(parse_record)
        .filter(|r| after(r, since))
        .map(|r| render(&r, opts.timestamps))
        .collect();
    if let Some(n) = opts.tail_lines.filter(|n| *n >= 0) {
        // a line is complete at its F record: count those from the end
        let mut full = 0;
        let mut start = lines.len();
        for (i, l) in lines.iter().enumerate().rev() {
            if l.ends_with(b"\n") {
                if full == n {
                    break;
                }
                full += 1;
            }
            start = i;
        }
        if n == 0 {
            start = lines.len();
        }
        lines.drain(..start);
    }
    lines.concat()
}

/// Is the container still writing (for `follow`)?
pub type StillRunning = Box<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>;

/// The log stream of one container: `files` oldest first (the rotated file,
/// then the current one).
pub fn serve_logs(files: Vec<PathBuf>, opts: LogOptions, running: StillRunning) -> impl Stream<Item = Bytes> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let mut budget = opts.limit_bytes.filter(|n| *n > 0).map(|n| n as usize);
        let send = |tx: &tokio::sync::mpsc::Sender<Bytes>, mut data: Vec<u8>, budget: &mut Option<usize>| {
            let tx = tx.clone();
            let mut done = false;
            if let Some(b) = budget.as_mut() {
                if data.len() >= *b {
                    data.truncate(*b);
                    done = true;
                }
                *b -= data.len();
            }
            async move {
                let ok = data.is_empty() || tx.send(Bytes::from(data)).await.is_ok();
                ok && !done
            }
        };
        let mut data = Vec::new();
        for f in &files {
            if let Ok(mut file) = fs::File::open(f) {
                let _ = file.read_to_end(&mut data);
            }
        }
        // only complete lines now; a partial last line is picked up by follow
        let complete = data.iter().rposition(|b| *b == b'\n').map(|i| i + 1).unwrap_or(0);
        let first = render_existing(&data[..complete], &opts, Utc::now());
        if !send(&tx, first, &mut budget).await || !opts.follow {
            return;
        }
        let Some(current) = files.last().cloned() else { return };
        let mut offset =
            fs::metadata(&current).map(|m| m.len()).unwrap_or(0).saturating_sub((data.len() - complete) as u64);
        let mut pending: Vec<u8> = Vec::new();
        let mut idle_checks = 0u32;
        loop {
            let len = fs::metadata(&current).map(|m| m.len()).unwrap_or(0);
            if len < offset {
                // rotated (copied and emptied): start from the top of the new file
                offset = 0;
                pending.clear();
            }
            let mut chunk = Vec::new();
            if len > offset {
                if let Ok(mut file) = fs::File::open(&current) {
                    if file.seek(SeekFrom::Start(offset)).is_ok() {
                        let _ = file.read_to_end(&mut chunk);
                    }
                }
            }
            if !chunk.is_empty() {
                offset += chunk.len() as u64;
                pending.extend_from_slice(&chunk);
                let end = pending.iter().rposition(|b| *b == b'\n').map(|i| i + 1).unwrap_or(0);
                let lines: Vec<u8> = pending.drain(..end).collect();
                let mut out = Vec::new();
                for l in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    if let Some(r) = parse_record(l) {
                        out.extend(render(&r, opts.timestamps));
                    }
                }
                if !send(&tx, out, &mut budget).await {
                    return;
                }
                idle_checks = 0;
                continue;
            }
            if tx.is_closed() {
                return;
            }
            idle_checks += 1;
            // ask the runtime now and then, not on every poll
            if idle_checks.is_multiple_of(5) && !running().await {
                // one last look for what was written before it stopped
                let len = fs::metadata(&current).map(|m| m.len()).unwrap_or(0);
                if len <= offset {
                    return;
                }
                continue;
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Log files of a container: `(attempt, [rotated, current])`, newest attempt first.
pub fn container_logs(pod_log_dir: &Path, container: &str) -> Vec<(u32, Vec<PathBuf>)> {
    let dir = pod_log_dir.join(container);
    let mut out: Vec<(u32, Vec<PathBuf>)> = Vec::new();
    for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name.strip_suffix(".log").and_then(|a| a.parse::<u32>().ok()) {
            let mut files = Vec::new();
            let rotated = dir.join(format!("{name}.1"));
            if rotated.exists() {
                files.push(rotated);
            }
            files.push(e.path());
            out.push((n, files));
        }
    }
    out.sort_by_key(|f| std::cmp::Reverse(f.0));
    out
}

/// The newest log directory of pod `namespace/name` under `pods_dir`.
pub fn find_pod_log_dir(pods_dir: &Path, namespace: &str, name: &str) -> Option<(PathBuf, String)> {
    let prefix = format!("{namespace}_{name}_");
    let mut best: Option<(std::time::SystemTime, PathBuf, String)> = None;
    for e in fs::read_dir(pods_dir).into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some(uid) = n.strip_prefix(&prefix) else { continue };
        if uid.contains('_') {
            continue;
        }
        let t = e.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
        if best.as_ref().is_none_or(|b| t > b.0) {
            best = Some((t, e.path(), uid.to_string()));
        }
    }
    best.map(|(_, p, u)| (p, u))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::io::Write;

    const LOG: &str = "2026-01-01T00:00:01.000000001Z stdout F one\n\
2026-01-01T00:00:02.000000002Z stderr F two\n\
2026-01-01T00:00:03.000000003Z stdout P thr\n\
2026-01-01T00:00:03.000000004Z stdout F ee\n\
2026-01-01T00:00:04.000000005Z stdout F four\n";

    fn opts() -> LogOptions {
        LogOptions::default()
    }

    fn now() -> DateTime<Utc> {
        "2026-01-01T00:00:05Z".parse().unwrap()
    }

    #[test]
    fn renders_like_kubectl_logs() {
        let out = |o: LogOptions| String::from_utf8(render_existing(LOG.as_bytes(), &o, now())).unwrap();
        assert_eq!(out(opts()), "one\ntwo\nthree\nfour\n");
        assert_eq!(out(LogOptions { tail_lines: Some(2), ..opts() }), "three\nfour\n");
        assert_eq!(out(LogOptions { tail_lines: Some(0), ..opts() }), "");
        assert_eq!(out(LogOptions { tail_lines: Some(10), ..opts() }), "one\ntwo\nthree\nfour\n");
        assert_eq!(out(LogOptions { since_seconds: Some(2), ..opts() }), "three\nfour\n");
        assert_eq!(
            out(LogOptions { timestamps: true, tail_lines: Some(1), ..opts() }),
            "2026-01-01T00:00:04.000000005Z four\n"
        );
    }

    #[test]
    fn options_parse_from_a_query() {
        let o: LogOptions =
            serde_json::from_value(serde_json::json!({"follow": "true", "tailLines": "5", "limitBytes": "10"}))
                .unwrap();
        assert!(o.follow && !o.previous);
        assert_eq!((o.tail_lines, o.limit_bytes), (Some(5), Some(10)));
    }

    #[test]
    fn rotation_copies_and_truncates() {
        let dir = tempfile::Builder::new().prefix("skiff-test-logs").tempdir().unwrap();
        let p = dir.path().join("0.log");
        fs::write(&p, LOG).unwrap();
        assert!(!rotate_if_needed(&p, 1 << 20).unwrap());
        assert!(rotate_if_needed(&p, 10).unwrap());
        assert_eq!(fs::metadata(&p).unwrap().len(), 0);
        assert_eq!(fs::read_to_string(dir.path().join("0.log.1")).unwrap(), LOG);
        let listed = container_logs(dir.path().parent().unwrap(), dir.path().file_name().unwrap().to_str().unwrap());
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].1.len(), 2, "rotated file first, then the current one");
    }

    #[tokio::test]
    async fn follow_streams_until_the_container_stops() {
        let dir = tempfile::Builder::new().prefix("skiff-test-logs").tempdir().unwrap();
        let p = dir.path().join("0.log");
        fs::write(&p, "2026-01-01T00:00:01Z stdout F first\n").unwrap();
        let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let r = running.clone();
        let still: StillRunning = Box::new(move || {
            let r = r.clone();
            Box::pin(async move { r.load(std::sync::atomic::Ordering::SeqCst) })
        });
        let mut s = Box::pin(serve_logs(vec![p.clone()], LogOptions { follow: true, ..opts() }, still));
        assert_eq!(s.next().await.unwrap(), Bytes::from("first\n"));
        let mut f = fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"2026-01-01T00:00:02Z stdout F second\n").unwrap();
        assert_eq!(s.next().await.unwrap(), Bytes::from("second\n"));
        running.store(false, std::sync::atomic::Ordering::SeqCst);
        let rest = tokio::time::timeout(Duration::from_secs(5), s.next()).await.unwrap();
        assert_eq!(rest, None, "the stream ends once the container stopped");
    }

    #[tokio::test]
    async fn limit_bytes_cuts_the_stream() {
        let dir = tempfile::Builder::new().prefix("skiff-test-logs").tempdir().unwrap();
        let p = dir.path().join("0.log");
        fs::write(&p, LOG).unwrap();
        let still: StillRunning = Box::new(|| Box::pin(async { false }));
        let s = serve_logs(vec![p], LogOptions { limit_bytes: Some(6), ..opts() }, still);
        let all: Vec<Bytes> = s.collect().await;
        assert_eq!(all.concat(), b"one\ntw");
    }
}
