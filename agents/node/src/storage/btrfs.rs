//! The Btrfs backend: the data disk is one Btrfs filesystem mounted at /var/lib/tessera;
//! volumes are subvolumes under `volumes/`, snapshots under `snapshots/`, all made, listed and
//! deleted through the Btrfs ioctls ([`super::btrfs_ioctl`]), never by running `btrfs`.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::backend::{Backend, Kind, StorageError, Usage, Volume};
use super::btrfs_ioctl as ioctl;
use super::config::BackendKind;
use super::name::VolumeName;

pub struct Btrfs {
    root: PathBuf,
}

fn errno_error(what: &str, name: &VolumeName, e: Errno) -> StorageError {
    match e {
        Errno::EEXIST => StorageError::exists(name),
        Errno::ENOENT => StorageError::not_found(name),
        Errno::ENOSPC | Errno::EDQUOT => StorageError::no_space(&format!("{what} {name}: {e}")),
        Errno::ENOTEMPTY => StorageError::BadRequest(format!(
            "{what} {name}: it holds other subvolumes ({e}); delete those first"
        )),
        e => StorageError::Internal(format!("{what} {name}: {e}")),
    }
}

fn open_dir(path: &Path) -> Result<File, StorageError> {
    File::open(path).map_err(|e| StorageError::Internal(format!("opening {}: {e}", path.display())))
}

impl Btrfs {
    /// The backend over a mounted Btrfs at `root`; makes `volumes/` and `snapshots/`.
    pub fn new(root: &Path) -> Result<Btrfs, StorageError> {
        let b = Btrfs {
            root: root.to_path_buf(),
        };
        for kind in [Kind::Volume, Kind::Snapshot] {
            let dir = b.dir(kind);
            std::fs::create_dir_all(&dir)
                .map_err(|e| StorageError::Internal(format!("creating {}: {e}", dir.display())))?;
        }
        Ok(b)
    }

    fn dir(&self, kind: Kind) -> PathBuf {
        self.root.join(match kind {
            Kind::Volume => "volumes",
            Kind::Snapshot => "snapshots",
        })
    }

    /// Where `name` is, if it is a subvolume.
    fn find(&self, name: &VolumeName) -> Option<(Kind, PathBuf)> {
        [Kind::Volume, Kind::Snapshot].into_iter().find_map(|k| {
            let p = self.dir(k).join(name.as_str());
            is_subvolume(&p).then_some((k, p))
        })
    }

    fn volume(&self, kind: Kind, name: VolumeName, path: &Path) -> Result<Volume, StorageError> {
        let readonly = ioctl::is_readonly(open_dir(path)?.as_fd())
            .map_err(|e| errno_error("reading the flags of", &name, e))?;
        Ok(Volume {
            name,
            kind,
            path: path.display().to_string(),
            readonly,
            origin: None,
            size_bytes: None,
        })
    }
}

fn is_subvolume(path: &Path) -> bool {
    std::fs::symlink_metadata(path)
        .map(|m| m.is_dir() && m.ino() == ioctl::SUBVOL_ROOT_INO)
        .unwrap_or(false)
}

impl Backend for Btrfs {
    fn kind(&self) -> BackendKind {
        BackendKind::Btrfs
    }

    fn create(&self, name: &VolumeName, _size: Option<u64>) -> Result<Volume, StorageError> {
        if self.find(name).is_some() {
            return Err(StorageError::exists(name));
        }
        let dir = open_dir(&self.dir(Kind::Volume))?;
        ioctl::create_subvolume(dir.as_fd(), name.as_str())
            .map_err(|e| errno_error("creating volume", name, e))?;
        let path = self.dir(Kind::Volume).join(name.as_str());
        self.volume(Kind::Volume, name.clone(), &path)
    }

    fn snapshot(
        &self,
        source: &VolumeName,
        name: &VolumeName,
        readonly: bool,
    ) -> Result<Volume, StorageError> {
        let (_, src) = self
            .find(source)
            .ok_or_else(|| StorageError::not_found(source))?;
        if self.find(name).is_some() {
            return Err(StorageError::exists(name));
        }
        let src = open_dir(&src)?;
        let dir = open_dir(&self.dir(Kind::Snapshot))?;
        ioctl::snapshot(src.as_fd(), dir.as_fd(), name.as_str(), readonly)
            .map_err(|e| errno_error("snapshotting into", name, e))?;
        let path = self.dir(Kind::Snapshot).join(name.as_str());
        let mut v = self.volume(Kind::Snapshot, name.clone(), &path)?;
        v.origin = Some(source.to_string());
        Ok(v)
    }

    fn delete(&self, name: &VolumeName) -> Result<(), StorageError> {
        let (kind, _) = self
            .find(name)
            .ok_or_else(|| StorageError::not_found(name))?;
        let dir = open_dir(&self.dir(kind))?;
        ioctl::destroy(dir.as_fd(), name.as_str()).map_err(|e| errno_error("deleting", name, e))
    }

    fn list(&self) -> Result<Vec<Volume>, StorageError> {
        let mut out = Vec::new();
        for kind in [Kind::Volume, Kind::Snapshot] {
            let dir = self.dir(kind);
            let entries = std::fs::read_dir(&dir)
                .map_err(|e| StorageError::Internal(format!("listing {}: {e}", dir.display())))?;
            for entry in entries.flatten() {
                let path = entry.path();
                let Some(name) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| VolumeName::parse(n).ok())
                else {
                    continue;
                };
                if is_subvolume(&path) {
                    out.push(self.volume(kind, name, &path)?);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn usage(&self) -> Result<Usage, StorageError> {
        statvfs_usage(&self.root)
    }
}

/// Space on the filesystem at `path`, as unprivileged writers see it.
pub fn statvfs_usage(path: &Path) -> Result<Usage, StorageError> {
    let s = nix::sys::statvfs::statvfs(path)
        .map_err(|e| StorageError::Internal(format!("statvfs {}: {e}", path.display())))?;
    let frag = s.fragment_size() as u64;
    Ok(Usage {
        total_bytes: s.blocks() as u64 * frag,
        free_bytes: s.blocks_available() as u64 * frag,
    })
}

/// `mkfs.btrfs` for a blank (or wiped) data disk.
pub fn mkfs_command(device: &Path) -> Vec<String> {
    vec![
        "/sbin/mkfs.btrfs".into(),
        "-q".into(),
        "-f".into(),
        "-L".into(),
        super::probe::BTRFS_LABEL.into(),
        device.display().to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mkfs_labels_the_disk_as_ours() {
        assert_eq!(
            mkfs_command(Path::new("/dev/vdb")).join(" "),
            "/sbin/mkfs.btrfs -q -f -L tessera-data /dev/vdb"
        );
    }

    #[test]
    fn errnos_map_to_api_errors() {
        let n = VolumeName::parse("a").unwrap();
        assert_eq!(errno_error("creating", &n, Errno::EEXIST).code(), "exists");
        assert_eq!(
            errno_error("creating", &n, Errno::ENOSPC).code(),
            "no_space"
        );
        assert_eq!(
            errno_error("deleting", &n, Errno::ENOENT).code(),
            "not_found"
        );
        assert_eq!(errno_error("deleting", &n, Errno::EIO).code(), "internal");
    }
}
