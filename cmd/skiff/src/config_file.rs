//! `--config FILE`: a YAML file whose keys are the flag names (k3s style),
//! e.g. `data-dir: /srv/skiff` or `tls-san: [10.0.0.1]`. Flags given on the
//! command line win over the file.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// Turn `--config FILE` (or `--config=FILE`) into the flags it holds,
/// placed before the command line's own flags so those override them.
pub fn expand(args: Vec<OsString>) -> Result<Vec<OsString>> {
    let mut out: Vec<OsString> = Vec::with_capacity(args.len());
    let mut file: Option<OsString> = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--config") => match it.next() {
                Some(f) => file = Some(f),
                None => bail!("--config: expected a file name"),
            },
            Some(s) if s.starts_with("--config=") => file = Some(OsString::from(&s["--config=".len()..])),
            _ => out.push(a),
        }
    }
    let Some(file) = file else { return Ok(out) };
    let flags = flags_from_file(Path::new(&file))?;
    // after the program name and the subcommand
    let at = out.len().min(2);
    let tail = out.split_off(at);
    out.extend(flags);
    out.extend(tail);
    Ok(out)
}

fn flags_from_file(path: &Path) -> Result<Vec<OsString>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("--config {}: cannot read it", path.display()))?;
    let doc: Value =
        serde_saphyr::from_str(&text).with_context(|| format!("--config {}: not valid YAML", path.display()))?;
    let Value::Object(map) = doc else {
        bail!(
            "--config {}: expected a mapping of flag names to values, like `data-dir: /var/lib/skiff`",
            path.display()
        );
    };
    let mut flags = Vec::new();
    for (key, value) in map {
        let flag = format!("--{key}");
        match value {
            Value::Bool(true) => flags.push(OsString::from(flag)),
            Value::Bool(false) | Value::Null => {}
            Value::String(s) => flags.push(OsString::from(format!("{flag}={s}"))),
            Value::Number(n) => flags.push(OsString::from(format!("{flag}={n}"))),
            Value::Array(items) => {
                let parts: Vec<String> = items
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                flags.push(OsString::from(format!("{flag}={}", parts.join(","))));
            }
            Value::Object(_) => bail!("--config {}: {key}: expected a value or a list, not a mapping", path.display()),
        }
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_flags_come_before_command_line_flags() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        std::fs::write(
            &f,
            "data-dir: /srv/x\nhttps-listen-port: 7443\ndisable-agent: true\ntls-san: [10.0.0.1, 10.0.0.2]\n",
        )
        .unwrap();
        let args: Vec<OsString> = ["skiff", "server", "--config", f.to_str().unwrap(), "--https-listen-port", "8443"]
            .iter()
            .map(OsString::from)
            .collect();
        let out: Vec<String> = expand(args).unwrap().into_iter().map(|a| a.into_string().unwrap()).collect();
        assert_eq!(
            out,
            [
                "skiff",
                "server",
                "--data-dir=/srv/x",
                "--https-listen-port=7443",
                "--disable-agent",
                "--tls-san=10.0.0.1,10.0.0.2",
                "--https-listen-port",
                "8443"
            ]
        );
    }
}
