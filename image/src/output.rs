//! All-or-nothing output: a build writes into a staging directory next to `--out` and swaps it
//! into place only when every step succeeded. A failed build removes its staging directory and
//! leaves the previous output untouched.
//!
//! The builder owns only some names in the output directory ([`OWNED`]); anything else there
//! (the Makefile's `bin/`, say) is carried over into the new output.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::ImageError;

/// Top-level names in the output directory that a build replaces.
pub const OWNED: [&str; 4] = ["pxe", "disk.qcow2", "uki.efi", "manifest.txt"];

/// A staging directory; removed on drop unless committed.
#[derive(Debug)]
pub struct Staging {
    pub dir: PathBuf,
    out: PathBuf,
    committed: bool,
}

fn sibling(out: &Path, tag: &str) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    out.with_file_name(format!(".{name}.{tag}-{}-{nanos}", std::process::id()))
}

/// Swaps two paths atomically (Linux `renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    let ca = CString::new(a.as_os_str().as_bytes())?;
    let cb = CString::new(b.as_os_str().as_bytes())?;
    // The raw syscall: the musl the static binary links has no renameat2() wrapper.
    // SAFETY: both strings are valid NUL-terminated paths that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Staging {
    /// Creates the staging directory in `out`'s parent (same file system, so renames work).
    pub fn create(out: &Path) -> Result<Staging, ImageError> {
        let out = if out.is_absolute() {
            out.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| ImageError::io("find the current directory", ".", e))?
                .join(out)
        };
        if out.exists() && !out.is_dir() {
            return Err(ImageError::BadInput {
                path: out.clone(),
                problem: "the output path exists and is not a directory".into(),
                fix: "pass another --out or remove that file".into(),
            });
        }
        let parent = out.parent().unwrap_or(Path::new("/")).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|e| ImageError::io("create", &parent, e))?;
        let dir = sibling(&out, "tmp");
        std::fs::create_dir(&dir)
            .map_err(|e| ImageError::io("create the staging directory", &dir, e))?;
        Ok(Staging {
            dir,
            out,
            committed: false,
        })
    }

    /// The final output directory.
    pub fn out(&self) -> &Path {
        &self.out
    }

    /// Moves the staged output into place, keeping the old output's foreign entries.
    pub fn commit(mut self) -> Result<PathBuf, ImageError> {
        let mut carried = Vec::new();
        if self.out.is_dir() {
            let entries =
                std::fs::read_dir(&self.out).map_err(|e| ImageError::io("list", &self.out, e))?;
            for e in entries.flatten() {
                let name = e.file_name();
                // Staging leftovers of a killed build (`.name.tmp-*`) go with the old output.
                let leftover = name.to_string_lossy().starts_with('.')
                    && name.to_string_lossy().contains(".tmp-");
                if OWNED.iter().any(|o| name == *o) || leftover || self.dir.join(&name).exists() {
                    continue;
                }
                let to = self.dir.join(&name);
                std::fs::rename(e.path(), &to)
                    .map_err(|err| ImageError::io("carry over", e.path(), err))?;
                carried.push((e.path(), to));
            }
            if let Err(e) = self.swap() {
                for (from, to) in carried {
                    let _ = std::fs::rename(to, from);
                }
                return Err(ImageError::io(
                    "move the new output into place at",
                    &self.out,
                    e,
                ));
            }
            // The staging path now holds the previous output.
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            std::fs::rename(&self.dir, &self.out)
                .map_err(|e| ImageError::io("move the new output into place at", &self.out, e))?;
        }
        self.committed = true;
        Ok(self.out.clone())
    }

    fn swap(&self) -> std::io::Result<()> {
        match exchange(&self.dir, &self.out) {
            Ok(()) => Ok(()),
            // File systems without RENAME_EXCHANGE: two renames, a moment without output.
            Err(e)
                if e.raw_os_error() == Some(libc::EINVAL)
                    || e.raw_os_error() == Some(libc::ENOSYS) =>
            {
                let old = sibling(&self.out, "old");
                std::fs::rename(&self.out, &old)?;
                if let Err(e) = std::fs::rename(&self.dir, &self.out) {
                    let _ = std::fs::rename(&old, &self.out);
                    return Err(e);
                }
                std::fs::rename(&old, &self.dir)
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_replaces_owned_entries_and_keeps_foreign_ones() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        std::fs::create_dir_all(out.join("bin")).unwrap();
        std::fs::write(out.join("bin/tessera"), "host").unwrap();
        std::fs::write(out.join("manifest.txt"), "old").unwrap();
        std::fs::write(out.join("disk.qcow2"), "old").unwrap();
        std::fs::create_dir_all(out.join(".test-image.tmp-1-2")).unwrap();
        std::fs::create_dir_all(out.join("test-image/pxe")).unwrap();
        let s = Staging::create(&out).unwrap();
        std::fs::write(s.dir.join("manifest.txt"), "new").unwrap();
        s.commit().unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("manifest.txt")).unwrap(),
            "new"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("bin/tessera")).unwrap(),
            "host"
        );
        assert!(!out.join("disk.qcow2").exists());
        assert!(
            out.join("test-image/pxe").is_dir(),
            "an image built inside --out is kept"
        );
        assert!(
            !out.join(".test-image.tmp-1-2").exists(),
            "a dead build's staging is dropped"
        );
        // No staging leftovers next to the output.
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["out"]);
    }

    #[test]
    fn dropped_staging_leaves_previous_output_intact() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("manifest.txt"), "old").unwrap();
        {
            let s = Staging::create(&out).unwrap();
            std::fs::write(s.dir.join("manifest.txt"), "half").unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(out.join("manifest.txt")).unwrap(),
            "old"
        );
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn first_commit_creates_the_output() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("a/b/out");
        let s = Staging::create(&out).unwrap();
        std::fs::write(s.dir.join("x"), "1").unwrap();
        assert_eq!(s.commit().unwrap(), out);
        assert!(out.join("x").exists());
    }
}
