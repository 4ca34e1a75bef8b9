//! Mounting a volume read-only for as long as it takes to read two files.

use std::ffi::CString;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// mount(2) read-only, without devices, set-id or exec. The kernel loads the file system's
/// module itself (through /sbin/modprobe) when it does not know the type yet.
pub fn mount_readonly(device: &Path, target: &Path, fstype: &str) -> io::Result<()> {
    let src = cstr(device)?;
    let dst = cstr(target)?;
    let ty = CString::new(fstype).map_err(|_| io::ErrorKind::InvalidInput)?;
    let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            ty.as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// umount2(2); a lazy detach if the plain unmount fails (something still holds it).
pub fn unmount(target: &Path) -> io::Result<()> {
    let dst = cstr(target)?;
    // SAFETY: valid NUL-terminated path.
    if unsafe { libc::umount2(dst.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let first = io::Error::last_os_error();
    // SAFETY: as above.
    if unsafe { libc::umount2(dst.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    Err(first)
}

/// Why a volume could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot create the mount point {dir}: {source}")]
    MountPoint { dir: String, source: io::Error },
    #[error("cannot mount {device} ({fstype}) read-only: {source}{hint}")]
    Mount {
        device: String,
        fstype: String,
        source: io::Error,
        hint: String,
    },
}

/// Mounts `device` at `dir` (created with mode 0700 if needed), runs `read`, unmounts and
/// removes `dir` again, whatever `read` returned.
pub fn with_mounted<T>(
    device: &Path,
    fstype: &str,
    dir: &Path,
    read: impl FnOnce(&Path) -> T,
) -> Result<T, MountError> {
    if dir.exists() {
        // Left over from a run that died with the volume mounted.
        let _ = unmount(dir);
    } else {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| MountError::MountPoint {
                dir: dir.display().to_string(),
                source,
            })?;
    }
    if let Err(source) = mount_readonly(device, dir, fstype) {
        let _ = std::fs::remove_dir(dir);
        let hint = match source.raw_os_error() {
            Some(libc::ENODEV) => {
                format!(" — the kernel has no {fstype} file system (is its module in the image?)")
            }
            Some(libc::EPERM) | Some(libc::EACCES) => " — mounting needs CAP_SYS_ADMIN".to_string(),
            _ => String::new(),
        };
        return Err(MountError::Mount {
            device: device.display().to_string(),
            fstype: fstype.to_string(),
            source,
            hint,
        });
    }
    let result = read(dir);
    let _ = unmount(dir);
    let _ = std::fs::remove_dir(dir);
    Ok(result)
}

/// Reads a regular file of at most `limit` bytes, without following a symbolic link (an
/// ISO 9660 volume with Rock Ridge may hold one pointing anywhere). `Ok(None)` if absent.
/// The name is matched without regard to case when the exact name is not there.
pub fn read_small_file(dir: &Path, name: &str, limit: usize) -> io::Result<Option<Vec<u8>>> {
    let mut path = dir.join(name);
    if path.symlink_metadata().is_err() {
        let found = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().eq_ignore_ascii_case(name));
        match found {
            Some(e) => path = e.path(),
            None => return Ok(None),
        }
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{name} is not a regular file"),
        ));
    }
    let mut data = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut data)?;
    if data.len() > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{name} is larger than {limit} bytes"),
        ));
    }
    Ok(Some(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_files_are_read_with_limits_and_without_links() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("USER-DATA"), b"version = 1\n").unwrap();
        std::fs::write(dir.path().join("big"), vec![b'x'; 100]).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("meta-data")).unwrap();
        assert_eq!(
            read_small_file(dir.path(), "user-data", 50)
                .unwrap()
                .unwrap(),
            b"version = 1\n"
        );
        assert!(read_small_file(dir.path(), "big", 50).is_err());
        assert!(read_small_file(dir.path(), "meta-data", 50).is_err());
        assert_eq!(read_small_file(dir.path(), "absent", 50).unwrap(), None);
    }
}
