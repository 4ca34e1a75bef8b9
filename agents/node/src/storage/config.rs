//! The storage part of user-data: `[storage] backend, device, wipe` from the validated
//! /run/tessera/userdata.toml (agents/userdata/SCHEMA.md).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The same errors as the network's part of user-data.
pub use crate::net::config::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    Btrfs,
    LvmThin,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Btrfs => "btrfs",
            BackendKind::LvmThin => "lvm-thin",
        }
    }
}

/// `[storage]` as the service uses it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StorageConfig {
    #[serde(default = "btrfs")]
    pub backend: BackendKind,
    pub device: PathBuf,
    #[serde(default)]
    pub wipe: bool,
}

fn btrfs() -> BackendKind {
    BackendKind::Btrfs
}

#[derive(Deserialize)]
struct UserData {
    storage: Option<StorageConfig>,
}

/// `[storage]`, or None when user-data has none (or there is no user-data: a standalone node).
pub fn load(path: &Path) -> Result<Option<StorageConfig>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

pub fn parse(text: &str, path: &Path) -> Result<Option<StorageConfig>, ConfigError> {
    let data: UserData = toml::from_str(text).map_err(|e| ConfigError::Toml {
        path: path.to_path_buf(),
        message: format!(
            "{}; fix [storage] in user-data (agents/userdata/SCHEMA.md)",
            e.message()
        ),
    })?;
    Ok(data.storage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_section_is_read() {
        let p = Path::new("u.toml");
        assert_eq!(parse("version = 1\n", p).unwrap(), None);
        let c = parse(
            "version = 1\n[storage]\nbackend = \"lvm-thin\"\ndevice = \"/dev/vdb\"\nwipe = true\n",
            p,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.backend, BackendKind::LvmThin);
        assert_eq!(c.device, PathBuf::from("/dev/vdb"));
        assert!(c.wipe);
        let e = parse("[storage]\nbackend = \"zfs\"\ndevice = \"/dev/vdb\"\n", p).unwrap_err();
        assert!(e.to_string().contains("fix [storage] in user-data"), "{e}");
    }
}
