//! The CA's state directory: which file is what, and how private files are written.
//!
//! ```text
//! DIR/            0700
//!   ca.pem        the CA certificate (public; its SHA-256 is the fingerprint nodes pin)
//!   ca.key        the CA private key, PKCS#8 PEM, 0600
//!   server.pem    the CA's HTTPS certificate + the CA certificate
//!   server.key    its key, 0600
//!   admin.pem     the operator's client certificate (O=admin)
//!   admin.key     its key, 0600
//!   ca.db         SQLite: tokens (hashed), certificates, revocations, CRL, audit log; 0600
//! ```
//!
//! The CA is the one place in Tessera where private keys live in files: it runs on the
//! operator's machine, which the operator protects. Nodes never write keys to disk.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
pub const SERVER_CERT: &str = "server.pem";
pub const SERVER_KEY: &str = "server.key";
pub const ADMIN_CERT: &str = "admin.pem";
pub const ADMIN_KEY: &str = "admin.key";
pub const DATABASE: &str = "ca.db";

/// Paths inside one state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateDir { dir: dir.into() }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn database(&self) -> PathBuf {
        self.path(DATABASE)
    }

    /// Fails with a hint unless `init` has run here.
    pub fn require_initialized(&self) -> anyhow::Result<()> {
        for name in [CA_CERT, CA_KEY, DATABASE] {
            if !self.path(name).exists() {
                bail!(
                    "{} has no {name}: it is not an initialized CA state directory; run `tessera ca init --state {} --cluster NAME` first",
                    self.dir.display(),
                    self.dir.display()
                );
            }
        }
        Ok(())
    }

    pub fn read(&self, name: &str) -> anyhow::Result<String> {
        let path = self.path(name);
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }

    /// Warns (returns the message) if a private file is readable by others.
    pub fn check_private(&self, name: &str) -> Option<String> {
        let mode = fs::metadata(self.path(name)).ok()?.permissions().mode();
        (mode & 0o077 != 0).then(|| {
            format!(
                "{} is readable by group or others (mode {:o}); run `chmod 600 {}`",
                self.path(name).display(),
                mode & 0o777,
                self.path(name).display()
            )
        })
    }
}

/// Creates the directory with mode 0700 (and its parents).
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("setting mode 0700 on {}", dir.display()))
}

/// Writes a new file atomically (temp file + fsync + rename) with `mode`; the temporary file
/// has that mode from the start, so a key is never briefly world-readable.
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(contents)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    if let Some(parent) = path.parent() {
        if let Ok(d) = fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_get_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write_file(&p, b"secret", 0o600).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read(&p).unwrap(), b"secret");
        let state = StateDir::new(dir.path());
        assert!(state.check_private("k").is_none());
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(state.check_private("k").unwrap().contains("chmod 600"));
    }

    #[test]
    fn uninitialized_dir_is_reported_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let e = StateDir::new(dir.path()).require_initialized().unwrap_err();
        assert!(e.to_string().contains("tessera ca init"), "{e}");
    }
}
