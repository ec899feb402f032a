//! Running `nft`: transactions in nft's own syntax (`nft -f -`), which nft
//! parses several times faster than JSON and, unlike JSON input, without
//! first reading every element of the table into its cache; listing what the
//! table holds. Inside a pinned network namespace when one is given (the
//! `nft` child inherits the calling thread's namespace).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::render::TABLE;
use super::sync::Existing;
use super::Family;
use crate::{netns, Error, Result};

fn err(message: impl std::fmt::Display) -> Error {
    Error::Nftables { message: message.to_string() }
}

fn in_netns<T: Send>(path: Option<&Path>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    match path {
        Some(p) => netns::run_in(p, f)?,
        None => f(),
    }
}

fn describe(e: nftables::helper::NftablesError) -> String {
    match e {
        nftables::helper::NftablesError::NftFailed { hint, stdout, stderr, .. } => {
            let out = format!("{} {}", stderr.trim(), stdout.trim());
            format!("nft failed while {hint}: {}", out.trim())
        }
        other => other.to_string(),
    }
}

/// nft quotes the offending line of its input, and an element list is one
/// line of megabytes: keep a message readable.
fn shorten(text: &str) -> String {
    const MAX: usize = 2000;
    let text = text.trim();
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} … ({} bytes more)", &text[..end], text.len() - end)
}

/// Apply one JSON transaction (`nft -j -f -`): the pod network's chain.
pub(crate) fn apply_json(netns: Option<&Path>, payload: &str) -> Result<()> {
    tracing::debug!(bytes = payload.len(), "nft -j -f -");
    in_netns(netns, || {
        nftables::helper::apply_ruleset_raw(payload, nftables::helper::DEFAULT_NFT, nftables::helper::DEFAULT_ARGS)
            .map(|_| ())
            .map_err(|e| err(format!("table ip {TABLE}: {}", describe(e))))
    })
}

/// Apply one transaction written in nft's syntax (`nft -f -`): nft sends
/// all of it to the kernel as one batch, committed whole or not at all.
pub(crate) fn apply(netns: Option<&Path>, payload: &str) -> Result<()> {
    tracing::debug!(bytes = payload.len(), "nft -f -");
    in_netns(netns, || {
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("running nft: {e} (is the nftables package installed?)")))?;
        // nft reads all of its input before it answers, so writing first
        // cannot deadlock on a full stderr pipe
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(payload.as_bytes()).map_err(|e| err(format!("writing to nft: {e}")))?;
        }
        let out = child.wait_with_output().map_err(|e| err(format!("waiting for nft: {e}")))?;
        if !out.status.success() {
            return Err(err(format!("table {TABLE}: nft -f -: {}", shorten(&String::from_utf8_lossy(&out.stderr)))));
        }
        Ok(())
    })
}

/// The chains and sets table `skiff` of `family` has now (empty when there is no table).
pub(crate) fn existing(netns: Option<&Path>, family: Family) -> Result<Existing> {
    in_netns(netns, || {
        let mut found = Existing::default();
        // terse (-t): without elements, which would take seconds at scale
        for (what, kind) in [("chains", "chain"), ("sets", "set")] {
            let out = nftables::helper::get_current_ruleset_raw(
                nftables::helper::DEFAULT_NFT,
                ["-t", "list", what, family.nft()],
            )
            .map_err(|e| err(format!("listing {what}: {}", describe(e))))?;
            let doc: Value = serde_json::from_str(&out).map_err(|e| err(format!("listing {what}: {e}")))?;
            for item in doc["nftables"].as_array().into_iter().flatten() {
                let o = &item[kind];
                if o["table"] == TABLE {
                    if let Some(name) = o["name"].as_str() {
                        if kind == "chain" {
                            found.chains.insert(name.to_string());
                        } else {
                            found.sets.insert(name.to_string());
                        }
                    }
                }
            }
        }
        Ok(found)
    })
}

/// `nft list table ip skiff` in nft's syntax (for tests and debugging).
pub fn list_table(netns: Option<&Path>) -> Result<String> {
    list_family_table(netns, Family::V4)
}

/// `nft list table <ip|ip6> skiff` in nft's syntax.
pub fn list_family_table(netns: Option<&Path>, family: Family) -> Result<String> {
    in_netns(netns, || {
        let out = Command::new("nft")
            .args(["list", "table", family.nft(), TABLE])
            .output()
            .map_err(|e| err(format!("running nft: {e}")))?;
        if !out.status.success() {
            return Err(err(format!(
                "listing table {} {TABLE}: {}",
                family.nft(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    })
}

/// Remove the table (the proxy's and the pod network's rules) entirely.
pub fn delete_table(netns: Option<&Path>) -> Result<()> {
    delete_family_table(netns, Family::V4)
}

/// Remove table `skiff` of `family` (nothing when there is none).
pub fn delete_family_table(netns: Option<&Path>, family: Family) -> Result<()> {
    in_netns(netns, || {
        let out = Command::new("nft")
            .args(["delete", "table", family.nft(), TABLE])
            .output()
            .map_err(|e| err(format!("running nft: {e}")))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && !stderr.contains("No such file or directory") {
            return Err(err(format!("deleting table {} {TABLE}: {}", family.nft(), stderr.trim())));
        }
        Ok(())
    })
}
