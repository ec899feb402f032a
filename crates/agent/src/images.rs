//! Air-gapped images: `skiff image import FILE...`, `skiff image ls`, and the
//! archives an agent imports by itself from `<data-dir>/agent/images/` at
//! start (each once: a marker records the archives already imported, by
//! name, size and modification time).

use std::path::{Path, PathBuf};

use crate::runtime::{ImageInfo, Result, Runtime, RuntimeError};

/// Import each archive; returns what each one held.
pub async fn import_files(rt: &dyn Runtime, files: &[PathBuf]) -> Result<Vec<ImageInfo>> {
    let mut out = Vec::new();
    for f in files {
        out.extend(rt.import(f).await?);
    }
    Ok(out)
}

/// `IMAGE  ID  SIZE` as a table, like `crictl images`.
pub fn render_table(images: &[ImageInfo]) -> String {
    let mut rows: Vec<[String; 3]> = vec![["IMAGE".into(), "ID".into(), "SIZE".into()]];
    let mut sorted: Vec<&ImageInfo> = images.iter().collect();
    sorted.sort_by(|a, b| a.reference.cmp(&b.reference));
    for i in sorted {
        let id = i.id.strip_prefix("sha256:").unwrap_or(&i.id);
        rows.push([i.reference.clone(), id.chars().take(13).collect(), human_size(i.size)]);
    }
    let widths: Vec<usize> = (0..3).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        out.push_str(&format!("{:<w0$}   {:<w1$}   {}\n", r[0], r[1], r[2], w0 = widths[0], w1 = widths[1]));
    }
    out
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

/// What identifies an archive file for "already imported".
fn stamp(path: &Path) -> Option<String> {
    let m = std::fs::metadata(path).ok()?;
    let mtime = m.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    Some(format!("{}\t{}\t{}", path.file_name()?.to_string_lossy(), m.len(), mtime))
}

/// Import the archives in `dir` not imported before (recorded in
/// `dir/.imported`). A broken archive is reported and skipped, so one bad
/// file never stops the agent. Returns how many archives were imported.
pub async fn import_dir(rt: &dyn Runtime, dir: &Path) -> Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(RuntimeError::Import { path: dir.display().to_string(), message: e.to_string() }),
    };
    let marker = dir.join(".imported");
    let mut done: Vec<String> =
        std::fs::read_to_string(&marker).unwrap_or_default().lines().map(str::to_string).collect();
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            p.is_file() && (name.ends_with(".tar") || name.ends_with(".tar.gz") || name.ends_with(".tgz"))
        })
        .collect();
    files.sort();
    let mut imported = 0;
    for f in files {
        let Some(s) = stamp(&f) else { continue };
        if done.contains(&s) {
            continue;
        }
        match rt.import(&f).await {
            Ok(images) => {
                let names: Vec<&str> = images.iter().map(|i| i.reference.as_str()).collect();
                tracing::info!(archive = %f.display(), images = ?names, "imported images");
                done.push(s);
                imported += 1;
            }
            Err(e) => tracing::warn!(archive = %f.display(), error = %e, "importing an image archive failed; skipped"),
        }
    }
    if imported > 0 {
        let text = done.join("\n") + "\n";
        std::fs::write(&marker, text)
            .map_err(|e| RuntimeError::Import { path: marker.display().to_string(), message: e.to_string() })?;
    }
    Ok(imported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_images_sorted_with_short_ids() {
        let img = |r: &str, size: u64| ImageInfo {
            reference: r.into(),
            id: "sha256:0123456789abcdef0123".into(),
            size,
            ..Default::default()
        };
        let t = render_table(&[img("skiff.local/pause:1", 300_000), img("docker.io/library/busybox:1.36", 900)]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("IMAGE"));
        assert!(lines[1].starts_with("docker.io/library/busybox:1.36   0123456789abc   900B"), "{t}");
        assert!(lines[2].ends_with("300.0kB"), "{t}");
    }
}
