//! Fetching pinned .debs with `apt-get download` into the cache, verifying their sha256 and
//! unpacking them with `dpkg-deb -x`. Nothing is ever installed on the host.
//!
//! Cache layout (`--cache`, default `.cache/tessera`):
//! `debs/<name>_<version>.deb` and `unpacked/<name>_<version>/` with a `.tessera-sha256`
//! stamp naming the .deb it came from. Both are created under a temporary name and renamed, so
//! parallel builds (tests) and interrupted downloads never leave a half-written entry.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::error::ImageError;
use crate::lock::LockedPackage;

const STAMP: &str = ".tessera-sha256";

/// A pinned package, downloaded, verified and unpacked.
#[derive(Debug, Clone)]
pub struct FetchedPackage {
    pub locked: LockedPackage,
    /// The verified .deb in the cache.
    pub deb: PathBuf,
    pub deb_size: u64,
    /// Root of the unpacked package (`dpkg-deb -x`).
    pub root: PathBuf,
    /// True when the .deb was already in the cache (no network used).
    pub cached: bool,
}

/// sha256 of a file as lower-case hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// A unique temporary name next to `final_path` (pid + counter: threads and processes differ).
fn temp_sibling(final_path: &Path, tag: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = final_path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    final_path.with_file_name(format!(".{name}.{tag}-{}-{n}", std::process::id()))
}

fn cache_key(p: &LockedPackage) -> String {
    // Epochs contain ':', which apt also escapes in file names.
    format!("{}_{}", p.name, p.version.replace(':', "%3a"))
}

/// Makes sure the pinned .deb is in the cache with the right hash and unpacked.
/// `lock_path` only names the lock file in errors.
pub fn fetch(
    cache: &Path,
    pkg: &LockedPackage,
    lock_path: &Path,
) -> Result<FetchedPackage, ImageError> {
    let debs = cache.join("debs");
    std::fs::create_dir_all(&debs)
        .map_err(|e| ImageError::io("create the cache directory", &debs, e))?;
    let deb = debs.join(format!("{}.deb", cache_key(pkg)));

    let mut cached = false;
    if deb.is_file() {
        let actual = sha256_file(&deb).map_err(|e| ImageError::io("read", &deb, e))?;
        if actual == pkg.sha256 {
            cached = true;
        } else {
            // A stale or corrupted cache entry is not an error: fetch it again.
            std::fs::remove_file(&deb).map_err(|e| ImageError::io("remove", &deb, e))?;
        }
    }
    if !cached {
        download(&deb, pkg, lock_path)?;
    }
    let deb_size = std::fs::metadata(&deb)
        .map_err(|e| ImageError::io("stat", &deb, e))?
        .len();
    let root = unpack(cache, &deb, pkg)?;
    Ok(FetchedPackage {
        locked: pkg.clone(),
        deb,
        deb_size,
        root,
        cached,
    })
}

fn download(deb: &Path, pkg: &LockedPackage, lock_path: &Path) -> Result<(), ImageError> {
    let work = temp_sibling(deb, "download");
    std::fs::create_dir_all(&work).map_err(|e| ImageError::io("create", &work, e))?;
    let result = download_into(&work, deb, pkg, lock_path);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn download_into(
    work: &Path,
    deb: &Path,
    pkg: &LockedPackage,
    lock_path: &Path,
) -> Result<(), ImageError> {
    let spec = format!("{}={}", pkg.name, pkg.version);
    let mut cmd = Command::new("apt-get");
    cmd.current_dir(work).args(["-q", "download", &spec]);
    // As root apt would try to drop to `_apt`, which cannot write our directory: it then warns
    // and downloads anyway. Say so up front to keep the output clean.
    if unsafe { libc::geteuid() } == 0 {
        cmd.args(["-o", "APT::Sandbox::User=root"]);
    }
    let out = cmd.output().map_err(|e| ImageError::Tool {
        command: format!("apt-get download {spec}"),
        detail: e.to_string(),
        fix: "run on a Debian host with apt".into(),
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let detail = stderr
            .lines()
            .filter(|l| l.starts_with("E:"))
            .collect::<Vec<_>>()
            .join("; ");
        let detail = if detail.is_empty() {
            stderr.trim().to_string()
        } else {
            detail
        };
        return Err(ImageError::PackageUnavailable {
            name: pkg.name.clone(),
            version: pkg.version.clone(),
            lock: lock_path.to_path_buf(),
            detail,
        });
    }
    let downloaded = std::fs::read_dir(work)
        .map_err(|e| ImageError::io("list", work, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| ImageError::Tool {
            command: format!("apt-get download {spec}"),
            detail: "it succeeded but left no .deb".into(),
            fix: "check the apt configuration".into(),
        })?;
    let actual = sha256_file(&downloaded).map_err(|e| ImageError::io("read", &downloaded, e))?;
    if actual != pkg.sha256 {
        return Err(ImageError::Sha256Mismatch {
            package: format!("{} {}", pkg.name, pkg.version),
            // The download is thrown away; name the file as the mirror knows it.
            path: PathBuf::from(&pkg.filename),
            lock: lock_path.to_path_buf(),
            expected: pkg.sha256.clone(),
            actual,
        });
    }
    std::fs::rename(&downloaded, deb).map_err(|e| ImageError::io("move into the cache", deb, e))
}

fn unpack(cache: &Path, deb: &Path, pkg: &LockedPackage) -> Result<PathBuf, ImageError> {
    let unpacked = cache.join("unpacked");
    std::fs::create_dir_all(&unpacked).map_err(|e| ImageError::io("create", &unpacked, e))?;
    let root = unpacked.join(cache_key(pkg));
    if std::fs::read_to_string(root.join(STAMP)).is_ok_and(|s| s.trim() == pkg.sha256) {
        return Ok(root);
    }
    let work = temp_sibling(&root, "unpack");
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(&work)
        .output();
    let failed = match out {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(String::from_utf8_lossy(&o.stderr).trim().to_string()),
        Err(e) => Some(e.to_string()),
    };
    if let Some(detail) = failed {
        let _ = std::fs::remove_dir_all(&work);
        return Err(ImageError::Tool {
            command: format!("dpkg-deb -x {}", deb.display()),
            detail,
            fix: "install dpkg, or delete the cached .deb and retry".into(),
        });
    }
    std::fs::write(work.join(STAMP), &pkg.sha256).map_err(|e| ImageError::io("write", &work, e))?;
    // Replace a stale unpack; if another build raced us to a valid one, keep theirs.
    if root.exists() {
        let old = temp_sibling(&root, "old");
        if std::fs::rename(&root, &old).is_ok() {
            let _ = std::fs::remove_dir_all(&old);
        }
    }
    if let Err(e) = std::fs::rename(&work, &root) {
        let _ = std::fs::remove_dir_all(&work);
        if !std::fs::read_to_string(root.join(STAMP)).is_ok_and(|s| s.trim() == pkg.sha256) {
            return Err(ImageError::io("move into the cache", &root, e));
        }
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn cache_key_escapes_epoch() {
        let p = LockedPackage {
            role: crate::lock::Role::Busybox,
            name: "busybox-static".into(),
            version: "1:1.35.0-4".into(),
            sha256: String::new(),
            filename: String::new(),
        };
        assert_eq!(cache_key(&p), "busybox-static_1%3a1.35.0-4");
    }
}
