//! Mounting the data disk and volumes.

use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::backend::StorageError;

/// Mounts `device` (filesystem `fstype`) at `target`, creating the directory.
pub fn mount_at(
    device: &Path,
    target: &Path,
    fstype: &str,
    readonly: bool,
) -> Result<(), StorageError> {
    std::fs::create_dir_all(target)
        .map_err(|e| StorageError::Internal(format!("creating {}: {e}", target.display())))?;
    let flags = if readonly {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    } | MsFlags::MS_NOATIME;
    mount(Some(device), target, Some(fstype), flags, None::<&str>).map_err(|e| {
        StorageError::Internal(format!(
            "mounting {} ({fstype}) at {}: {e}",
            device.display(),
            target.display()
        ))
    })
}

/// Whether something is mounted exactly at `target` (/proc/self/mounts).
pub fn is_mounted(target: &Path) -> bool {
    let t = target.display().to_string();
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| m.lines().any(|l| l.split(' ').nth(1) == Some(t.as_str())))
        .unwrap_or(false)
}

pub fn unmount(target: &Path) -> Result<(), StorageError> {
    if !is_mounted(target) {
        return Ok(());
    }
    umount2(target, MntFlags::empty()).map_err(|e| {
        StorageError::BadRequest(format!(
            "unmounting {}: {e}; stop what uses it (a shell's working directory, a container) and try again",
            target.display()
        ))
    })
}
