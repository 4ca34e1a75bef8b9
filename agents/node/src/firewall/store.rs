//! The exposures, publications and containers' bridge, kept across restarts of the service in
//! /run/tessera/firewall/exposures.json (written to a temporary file and renamed: a crash
//! never leaves half a file). /run is a tmpfs: a reboot starts with none, and the agents that
//! own them put them back. Files from before publications existed still load.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::model::{Bridge, Exposure, Publication};

pub const STORE_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an exposure list ({reason}); remove it to start with no exposures")]
    Corrupt { path: PathBuf, reason: String },
}

/// What the API put in force (the image's fixed exposures are not saved).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Saved {
    pub exposures: Vec<Exposure>,
    pub publications: Vec<Publication>,
    pub bridge: Option<Bridge>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    exposures: Vec<Exposure>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    publications: Vec<Publication>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bridge: Option<Bridge>,
}

/// Loads what was saved; a missing file is nothing.
pub fn load(path: &Path) -> Result<Saved, StoreError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Saved::default()),
        Err(source) => {
            return Err(StoreError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let file: File = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    if file.version != STORE_VERSION {
        return Err(corrupt(format!(
            "version {} (this release reads {STORE_VERSION})",
            file.version
        )));
    }
    Ok(Saved {
        exposures: file.exposures,
        publications: file.publications,
        bridge: file.bridge,
    })
}

/// Saves atomically (mode 0600).
pub fn save(path: &Path, saved: &Saved) -> Result<(), StoreError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |action, source| StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
    }
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(&File {
        version: STORE_VERSION,
        exposures: saved.exposures.clone(),
        publications: saved.publications.clone(),
        bridge: saved.bridge.clone(),
    })
    .map_err(|e| io("serialise", std::io::Error::other(e)))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io("write", e))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| io("write", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("replace", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::model::{Cidr, Protocol, Scope};

    #[test]
    fn saved_state_round_trips_and_missing_is_empty() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("fw/exposures.json");
        assert_eq!(load(&p).unwrap(), Saved::default());
        let saved = Saved {
            exposures: vec![Exposure {
                protocol: Protocol::Tcp,
                port: 80,
                scope: Scope::Public,
                owner: Some("web".into()),
            }],
            publications: vec![Publication {
                protocol: Protocol::Tcp,
                port: 8080,
                to: "10.88.0.2:80".parse().unwrap(),
                scope: Scope::Cluster,
                owner: Some("container/web".into()),
            }],
            bridge: Some(Bridge {
                interface: "tessera0".into(),
                subnet: Cidr::parse("s", "10.88.0.0/24").unwrap(),
            }),
        };
        save(&p, &saved).unwrap();
        assert_eq!(load(&p).unwrap(), saved);
        // A file written before publications existed.
        std::fs::write(&p, "{\"version\":1,\"exposures\":[]}").unwrap();
        assert_eq!(load(&p).unwrap(), Saved::default());
        std::fs::write(&p, "{\"version\":1,\"exposures\":[{\"port\":0}]}").unwrap();
        let err = load(&p).unwrap_err().to_string();
        assert!(err.contains("remove it"), "{err}");
    }
}
