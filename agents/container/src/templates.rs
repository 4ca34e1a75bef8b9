//! Templates: each distinct archive becomes one read-only volume, keyed by the sha256 of its
//! bytes, made through the storage service (a Btrfs read-only snapshot, or an LVM thin
//! snapshot). Instances are writable COW snapshots of a template (`crate::instances`).
//!
//! An import goes into a writable staging volume first; only a complete, checked import is
//! snapshotted read-only under the template's name, so a crash or a refusal never leaves a
//! half template behind: the staging volume is deleted (or, after a crash, on the next import
//! of the same digest).

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::archive::{self, ImportError, Kind, Limits, Progress};
use crate::storage::{Storage, StorageError, Volume};

/// Volume names: `tpl-` and the first 48 hex digits of the digest (192 bits; volume names
/// are at most 64 characters).
const PREFIX: &str = "tpl-";
const DIGEST_CHARS: usize = 48;
/// Written into the template beside config.json and rootfs/.
pub const METADATA: &str = "tessera-template.json";
/// Virtual size of a template's thin volume: at least this, or 4x the archive.
const MIN_THIN_SIZE: u64 = 4 << 30;

/// A template as the agent lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    pub digest: String,
    pub name: String,
    pub path: PathBuf,
    /// `bundle` or `image`.
    pub kind: String,
    pub files: u64,
    pub bytes: u64,
    /// What the operator imported it from (a file name), for `list`.
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    // Transparent: with "{0}" and #[from] the cause is also the source, and a CLI printing
    // the chain (`{:#}`) said everything twice.
    #[error(transparent)]
    Import(#[from] ImportError),
    // Transparent: with "{0}" and #[from] the cause is also the source, and a CLI printing
    // the chain (`{:#}`) said everything twice.
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(
        "cannot read {path}: {source}; check the path (the agent reads it as root on the node)"
    )]
    Source {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("template {name}: {what}: {source}")]
    Metadata {
        name: String,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("cannot take the import lock {path}: {source}; /run/tessera must be a writable tmpfs (the node's /run)")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no template {0}; import it first (`tessera container import FILE`) or name it by its digest (`tessera container list`)")]
    NotFound(String),
}

impl TemplateError {
    /// A stable code for the APIs.
    pub fn code(&self) -> &str {
        match self {
            TemplateError::Import(e) => e.code(),
            TemplateError::Storage(e) => e.code(),
            TemplateError::Source { .. } => "bad_source",
            TemplateError::Metadata { .. } | TemplateError::Lock { .. } => "internal",
            TemplateError::NotFound(_) => "not_found",
        }
    }
}

/// The template volume's name for `digest` (`sha256:<hex>`).
pub fn volume_name(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    format!("{PREFIX}{}", &hex[..hex.len().min(DIGEST_CHARS)])
}

fn staging_name(digest: &str) -> String {
    // Shortened so that the suffix keeps it within the 64-character volume names.
    let name = volume_name(digest);
    format!("{}-new", &name[..name.len() - 4])
}

/// The outcome of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub template: Template,
    /// False when a template of this digest already existed: nothing was written.
    pub fresh: bool,
}

/// Imports the archive at `path` (checked against `expected` when given) into a template,
/// or returns the existing template of the same digest.
pub fn import_file(
    storage: &Storage,
    path: &Path,
    expected: Option<&str>,
    limits: &Limits,
    progress: &mut dyn FnMut(Progress),
) -> Result<Imported, TemplateError> {
    let open = || {
        File::open(path).map_err(|source| TemplateError::Source {
            path: path.to_path_buf(),
            source,
        })
    };
    let digest = archive::digest_of(open()?).map_err(|source| TemplateError::Source {
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(want) = expected {
        if !want.eq_ignore_ascii_case(&digest) {
            return Err(ImportError::DigestMismatch {
                what: path.display().to_string(),
                expected: want.to_string(),
                actual: digest,
            }
            .into());
        }
    }
    // One import of a digest at a time, across processes (the agent's declared containers
    // and an operator's `tessera container import` of the same archive): the second waits,
    // then finds the template. Without it, the second took the first's staging volume for a
    // crashed import's and deleted it under the first, whose template could then hold
    // half-written files. A crashed import's lock goes with its process.
    let _lock = import_lock(&digest)?;
    if let Some(existing) = find(storage, &digest)? {
        return Ok(Imported {
            template: existing,
            fresh: false,
        });
    }
    let staging = staging_name(&digest);
    if storage.find(&staging)?.is_some() {
        storage.delete(&staging)?; // left by an import that crashed
    }
    let size = open()?
        .metadata()
        .map(|m| m.len().saturating_mul(4))
        .unwrap_or(0)
        .max(MIN_THIN_SIZE);
    let volume = storage.create(&staging, size)?;
    let result = fill(&volume, open()?, &digest, path, limits, progress);
    let template = match result {
        Ok(t) => t,
        Err(e) => {
            let _ = storage.delete(&staging);
            return Err(e);
        }
    };
    let name = volume_name(&digest);
    let snapshot = storage.snapshot(&staging, &name, true);
    let _ = storage.delete(&staging);
    let snapshot = snapshot?;
    Ok(Imported {
        template: Template {
            name,
            path: snapshot.path,
            ..template
        },
        fresh: true,
    })
}

/// Where the per-digest import locks are (tmpfs: they need not outlive a boot).
pub const IMPORT_LOCK_DIR: &str = "/run/tessera/container-imports";

/// An exclusive flock(2) on `IMPORT_LOCK_DIR/<hex>.lock`, held until dropped.
fn import_lock(digest: &str) -> Result<nix::fcntl::Flock<File>, TemplateError> {
    let dir = Path::new(IMPORT_LOCK_DIR);
    let path = dir.join(format!(
        "{}.lock",
        digest.strip_prefix("sha256:").unwrap_or(digest)
    ));
    let fail = |source: std::io::Error| TemplateError::Lock {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(fail)?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| fail(std::io::Error::from(e)))
}

/// Imports into the staging volume and writes the metadata file.
fn fill(
    volume: &Volume,
    reader: File,
    digest: &str,
    source: &Path,
    limits: &Limits,
    progress: &mut dyn FnMut(Progress),
) -> Result<Template, TemplateError> {
    // A fresh ext4 thin volume holds lost+found; the import wants an empty directory.
    let _ = std::fs::remove_dir(volume.path.join("lost+found"));
    let imported = archive::import(reader, &volume.path, limits, Some(digest), progress)?;
    let template = Template {
        digest: imported.digest,
        name: volume.name.clone(),
        path: volume.path.clone(),
        kind: match imported.kind {
            Kind::Bundle => "bundle",
            Kind::ImageLayout => "image",
        }
        .to_string(),
        files: imported.files,
        bytes: imported.bytes,
        source: source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let meta = serde_json::to_vec_pretty(&template).map_err(|e| TemplateError::Metadata {
        name: template.name.clone(),
        what: "encode",
        source: std::io::Error::other(e),
    })?;
    std::fs::write(volume.path.join(METADATA), meta).map_err(|source| TemplateError::Metadata {
        name: template.name.clone(),
        what: "write tessera-template.json",
        source,
    })?;
    Ok(template)
}

/// Every template on the data disk.
pub fn list(storage: &Storage) -> Result<Vec<Template>, TemplateError> {
    let mut out = Vec::new();
    for v in storage.list()? {
        if v.name.starts_with(PREFIX) && v.readonly {
            if let Some(t) = read_metadata(&v) {
                out.push(t);
            }
        }
    }
    Ok(out)
}

/// The template of `digest`, if imported.
pub fn find(storage: &Storage, digest: &str) -> Result<Option<Template>, TemplateError> {
    match storage.find(&volume_name(digest))? {
        Some(v) if v.readonly => Ok(read_metadata(&v)),
        _ => Ok(None),
    }
}

/// `sha256:<64 hex>` when `reference` is a whole digest (with or without `sha256:`).
pub fn full_digest(reference: &str) -> Option<String> {
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    .then(|| format!("sha256:{hex}"))
}

/// Whether a template read earlier still has its metadata in its volume.
pub fn still_there(t: &Template) -> bool {
    t.path.join(METADATA).exists()
}

/// A template named by its digest, a digest prefix (`sha256:` optional, ≥ 12 hex digits) or
/// its volume name.
pub fn resolve(storage: &Storage, reference: &str) -> Result<Template, TemplateError> {
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    let hex = hex.strip_prefix(PREFIX).unwrap_or(hex);
    let all = list(storage)?;
    let hits: Vec<&Template> = all
        .iter()
        .filter(|t| hex.len() >= 12 && t.digest.trim_start_matches("sha256:").starts_with(hex))
        .collect();
    match hits.as_slice() {
        [one] => Ok((*one).clone()),
        _ => Err(TemplateError::NotFound(reference.to_string())),
    }
}

fn read_metadata(v: &Volume) -> Option<Template> {
    let bytes = std::fs::read(v.path.join(METADATA)).ok()?;
    let mut t: Template = serde_json::from_slice(&bytes).ok()?;
    t.name = v.name.clone();
    t.path = v.path.clone();
    Some(t)
}

/// Deletes a template (its instances are snapshots of their own and stay usable on Btrfs;
/// the agent refuses while instances use it).
pub fn delete(storage: &Storage, template: &Template) -> Result<(), TemplateError> {
    storage.delete(&template.name).map_err(TemplateError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_volume_names_and_the_staging_name_differs() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let name = volume_name(&digest);
        assert_eq!(name, format!("tpl-{}", "ab".repeat(24)));
        assert!(name.len() <= 64);
        let staging = staging_name(&digest);
        assert!(staging.len() <= 64 && staging.ends_with("-new") && staging != name);
    }

    #[test]
    fn only_whole_lower_case_digests_are_full() {
        let hex = "0a".repeat(32);
        let full = format!("sha256:{hex}");
        assert_eq!(full_digest(&hex).as_deref(), Some(full.as_str()));
        assert_eq!(full_digest(&full).as_deref(), Some(full.as_str()));
        assert_eq!(full_digest(&hex[..12]), None);
        assert_eq!(full_digest(&hex.to_uppercase()), None);
        assert_eq!(full_digest(&format!("tpl-{}", &hex[..48])), None);
    }

    #[test]
    fn one_import_of_a_digest_at_a_time() {
        let digest = format!("sha256:{:064x}", std::process::id());
        let path = Path::new(IMPORT_LOCK_DIR).join(format!("{:064x}.lock", std::process::id()));
        let try_other = || {
            let f = File::options().write(true).open(&path).unwrap();
            nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok()
        };
        let held = import_lock(&digest).unwrap();
        assert!(!try_other(), "a second import of the digest must wait");
        drop(held);
        assert!(try_other(), "the lock goes with the import");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_refusal_reads_once_in_the_clis_error_chain() {
        let e = anyhow::Error::from(TemplateError::from(ImportError::MissingConfig));
        let shown = format!("{e:#}");
        assert_eq!(shown.matches("config.json missing").count(), 1, "{shown}");
    }
}
