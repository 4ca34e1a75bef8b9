//! The one seam over the two storage backends (Btrfs subvolumes, LVM thin volumes): what a
//! volume is, what can go wrong, and the operations the service, API and CLI use.

use serde::Serialize;

use super::name::VolumeName;

/// Where the data disk (Btrfs) or the VG's `meta` volume (LVM) is mounted.
pub const DATA_ROOT: &str = "/var/lib/tessera";
/// Volumes are mounted (LVM) or live (Btrfs) under here.
pub const VOLUMES_DIR: &str = "/var/lib/tessera/volumes";
/// Btrfs snapshots live under here (LVM mounts snapshots under `volumes/` too).
pub const SNAPSHOTS_DIR: &str = "/var/lib/tessera/snapshots";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Volume,
    Snapshot,
}

/// A volume or snapshot as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Volume {
    pub name: VolumeName,
    pub kind: Kind,
    pub path: String,
    pub readonly: bool,
    /// The volume a snapshot was taken of, when the backend knows it.
    pub origin: Option<String>,
    /// Virtual size (LVM thin volumes); Btrfs subvolumes share the whole disk.
    pub size_bytes: Option<u64>,
}

/// Space on the data disk (Btrfs) or in the thin pool (LVM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub total_bytes: u64,
    pub free_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    #[error("no space left on the data disk: {0}")]
    NoSpace(String),
    #[error("{0}")]
    Internal(String),
}

impl StorageError {
    /// The protocol's error code.
    pub fn code(&self) -> &'static str {
        match self {
            StorageError::BadRequest(_) => "bad_request",
            StorageError::NotFound(_) => "not_found",
            StorageError::Exists(_) => "exists",
            StorageError::NoSpace(_) => "no_space",
            StorageError::Internal(_) => "internal",
        }
    }

    pub fn not_found(name: &VolumeName) -> StorageError {
        StorageError::NotFound(format!(
            "no volume or snapshot named {name}; `tessera volume list` shows them"
        ))
    }

    pub fn exists(name: &VolumeName) -> StorageError {
        StorageError::Exists(format!(
            "a volume or snapshot named {name} exists already; pick another name or delete it first"
        ))
    }

    pub fn no_space(what: &str) -> StorageError {
        StorageError::NoSpace(format!(
            "{what}; delete volumes or snapshots (`tessera volume delete NAME`) or give the node a larger disk"
        ))
    }
}

/// One backend: Btrfs subvolumes or LVM thin volumes.
pub trait Backend: Send + Sync {
    fn kind(&self) -> super::config::BackendKind;
    /// A new empty volume; `size` is the virtual size of a thin volume (Btrfs ignores it).
    fn create(&self, name: &VolumeName, size: Option<u64>) -> Result<Volume, StorageError>;
    /// A copy-on-write snapshot of `source` (a volume or a snapshot).
    fn snapshot(
        &self,
        source: &VolumeName,
        name: &VolumeName,
        readonly: bool,
    ) -> Result<Volume, StorageError>;
    fn delete(&self, name: &VolumeName) -> Result<(), StorageError>;
    fn list(&self) -> Result<Vec<Volume>, StorageError>;
    fn usage(&self) -> Result<Usage, StorageError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_space_says_what_to_do() {
        let e = StorageError::no_space("the thin pool is 97% full");
        assert_eq!(e.code(), "no_space");
        assert!(e
            .to_string()
            .starts_with("no space left on the data disk: the thin pool is 97% full; delete"));
    }
}
