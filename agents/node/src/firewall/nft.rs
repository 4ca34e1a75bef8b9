//! Debian's `nft` driven through its JSON interface: `nft -j -f -` applies a transaction (one
//! netlink batch: all or nothing), `nft -j list table inet tessera` reads back what the kernel
//! holds. The summary of that listing is what `tessera firewall show` prints.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;
use serde_json::Value;

use super::ruleset::{FAMILY, TABLE};

/// Where the image has nft (image/programs.toml).
pub const NFT: &str = "/usr/sbin/nft";

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run {path}: {source}; the image ships it from Debian's nftables (image/programs.toml), rebuild the image")]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("nft refused the ruleset, the previous one stays in force: {stderr}")]
    Rejected { stderr: String },
    #[error("`nft {args}` failed: {stderr}")]
    Failed { args: String, stderr: String },
    #[error("`nft {args}` printed JSON this release cannot read: {reason}")]
    Output { args: String, reason: String },
}

/// The nft program to run.
#[derive(Debug, Clone)]
pub struct Nft {
    pub path: PathBuf,
}

impl Default for Nft {
    fn default() -> Self {
        Nft { path: NFT.into() }
    }
}

fn spawn_err(path: &Path, source: std::io::Error) -> NftError {
    NftError::Spawn {
        path: path.to_path_buf(),
        source,
    }
}

fn first_lines(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(6)
        .collect();
    if lines.is_empty() {
        "(no message)".into()
    } else {
        lines.join(" | ")
    }
}

impl Nft {
    /// Applies a transaction (`nft -j -f -`). On error the kernel kept the old ruleset.
    pub fn apply(&self, transaction: &Value) -> Result<(), NftError> {
        let mut child = Command::new(&self.path)
            .args(["-j", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_err(&self.path, e))?;
        let text = transaction.to_string();
        if let Some(mut stdin) = child.stdin.take() {
            // A write error shows up as nft's own failure below.
            let _ = stdin.write_all(text.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| spawn_err(&self.path, e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(NftError::Rejected {
                stderr: first_lines(&out.stderr),
            })
        }
    }

    /// `nft -j list table inet tessera`; `None` when the table does not exist.
    pub fn list_table(&self) -> Result<Option<Value>, NftError> {
        let args = ["-j", "list", "table", FAMILY, TABLE];
        let out = Command::new(&self.path)
            .args(args)
            .output()
            .map_err(|e| spawn_err(&self.path, e))?;
        if !out.status.success() {
            let stderr = first_lines(&out.stderr);
            if stderr.contains("No such file or directory") {
                return Ok(None);
            }
            return Err(NftError::Failed {
                args: args.join(" "),
                stderr,
            });
        }
        serde_json::from_slice(&out.stdout)
            .map(Some)
            .map_err(|e| NftError::Output {
                args: args.join(" "),
                reason: e.to_string(),
            })
    }
}

/// What the kernel holds for the table, summarised.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TableSummary {
    pub chains: Vec<ChainSummary>,
    pub sets: Vec<SetSummary>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChainSummary {
    pub name: String,
    pub hook: Option<String>,
    pub policy: Option<String>,
    /// Rule comments, in order (rules without one show as `-`).
    pub rules: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SetSummary {
    pub name: String,
    pub elements: Vec<String>,
}

fn element_text(v: &Value) -> String {
    if let Some(p) = v.get("prefix") {
        return format!(
            "{}/{}",
            p["addr"].as_str().unwrap_or("?"),
            p["len"].as_u64().unwrap_or(0)
        );
    }
    if let Some(r) = v.get("range").and_then(Value::as_array) {
        let s = |i: usize| r.get(i).and_then(Value::as_str).unwrap_or("?").to_string();
        return format!("{}-{}", s(0), s(1));
    }
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Summarises the output of `nft -j list table`.
pub fn summarize(listing: &Value) -> TableSummary {
    let mut summary = TableSummary::default();
    let items = listing["nftables"].as_array().cloned().unwrap_or_default();
    for item in &items {
        if let Some(c) = item.get("chain") {
            summary.chains.push(ChainSummary {
                name: c["name"].as_str().unwrap_or("?").to_string(),
                hook: c["hook"].as_str().map(str::to_string),
                policy: c["policy"].as_str().map(str::to_string),
                rules: Vec::new(),
            });
        }
        if let Some(s) = item.get("set") {
            summary.sets.push(SetSummary {
                name: s["name"].as_str().unwrap_or("?").to_string(),
                elements: s["elem"]
                    .as_array()
                    .map(|e| e.iter().map(element_text).collect())
                    .unwrap_or_default(),
            });
        }
    }
    for item in &items {
        if let Some(r) = item.get("rule") {
            let chain = r["chain"].as_str().unwrap_or("");
            if let Some(c) = summary.chains.iter_mut().find(|c| c.name == chain) {
                c.rules
                    .push(r["comment"].as_str().unwrap_or("-").to_string());
            }
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn listing_is_summarised_by_chain_and_set() {
        let listing = json!({"nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "inet", "name": "tessera", "handle": 3}},
            {"set": {"family": "inet", "name": "cluster_v4", "table": "tessera", "type": "ipv4_addr",
                     "flags": ["interval"], "elem": [{"prefix": {"addr": "192.168.77.0", "len": 24}},
                     {"range": ["10.0.0.1", "10.0.0.9"]}]}},
            {"chain": {"family": "inet", "table": "tessera", "name": "input", "type": "filter",
                       "hook": "input", "prio": 0, "policy": "drop"}},
            {"rule": {"family": "inet", "table": "tessera", "chain": "input", "comment": "loopback", "expr": []}},
            {"rule": {"family": "inet", "table": "tessera", "chain": "input", "expr": []}},
        ]});
        let s = summarize(&listing);
        assert_eq!(s.chains.len(), 1);
        assert_eq!(s.chains[0].policy.as_deref(), Some("drop"));
        assert_eq!(s.chains[0].rules, ["loopback", "-"]);
        assert_eq!(s.sets[0].elements, ["192.168.77.0/24", "10.0.0.1-10.0.0.9"]);
    }

    #[test]
    fn a_missing_nft_names_the_program_and_the_fix() {
        let nft = Nft {
            path: "/nonexistent/nft".into(),
        };
        let e = nft.apply(&json!({"nftables": []})).unwrap_err().to_string();
        assert!(
            e.contains("/nonexistent/nft") && e.contains("image/programs.toml"),
            "{e}"
        );
    }
}
