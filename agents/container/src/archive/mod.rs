//! Importing an archive into a template: an OCI runtime bundle (config.json + rootfs/) or an OCI
//! image layout (oci-layout, index.json, blobs/), as a tar stream, plain, gzip or zstd.
//!
//! The import is content addressed: the digest is the sha256 of the archive bytes exactly as
//! given, computed while streaming; the agent keys templates by it ([`digest_of`] answers
//! "already imported?" before anything is written). Hostile archives are refused with the
//! reason (see [`ImportError::code`]), and on any error the destination is emptied again.
//!
//! How it goes: every entry is extracted into a staging directory `dest/.import` (same file
//! system, so the final moves are renames), through [`extract`]'s fd-relative, never-follow
//! writes; when the stream has ended cleanly and its digest matches, the staging directory is
//! recognised as a bundle (its `rootfs/` and `config.json` are moved up) or an image layout
//! (`crate::image` applies its layers into `dest/rootfs` and writes `dest/config.json`).
//!
//! Symlinks: a relative target that climbs above the container's root is refused; an absolute
//! target is allowed, because the container resolves it inside its own root after pivot_root.
//! Code that reads a template from the host must therefore never follow its symlinks (see
//! `fsat::read_in_root`).

mod entry;
mod error;
pub(crate) mod extract;
pub(crate) mod fsat;
pub(crate) mod reader;

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;

use oci_spec::runtime::Spec;

pub use error::ImportError;
pub use reader::digest_of;

use extract::{Budget, Extractor, Scope};

/// The staging directory inside the destination.
const STAGING: &str = ".import";

/// How often progress is reported.
const PROGRESS_EVERY: u64 = 4 << 20;

/// What an archive may contain. Sizes count file contents (tar headers are not counted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// All files together (for an image: the layout's blobs, and separately its rootfs).
    pub max_bytes: u64,
    /// One file.
    pub max_file_bytes: u64,
    /// Entries of the archive (for an image: of the layout, and separately of all layers).
    pub max_entries: u64,
    /// Keep setuid/setgid regular files instead of refusing them.
    pub allow_setuid: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 4 << 30,
            max_file_bytes: 2 << 30,
            max_entries: 1_000_000,
            allow_setuid: false,
        }
    }
}

/// What the archive was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An OCI runtime bundle: config.json and rootfs/.
    Bundle,
    /// An OCI image layout: oci-layout, index.json, blobs/sha256/….
    ImageLayout,
}

/// Where an import is: bytes read so far (the archive, then an image's layer blobs as they
/// are applied) and entries extracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub bytes_read: u64,
    pub entries: u64,
}

/// A finished import.
#[derive(Debug, Clone)]
pub struct Imported {
    /// "sha256:<hex>" of the archive bytes exactly as given (compressed).
    pub digest: String,
    pub kind: Kind,
    /// Entries written into rootfs/ (files, directories, links, fifos).
    pub files: u64,
    /// Bytes of regular files written into rootfs/.
    pub bytes: u64,
    /// The config.json now in the destination.
    pub spec: Spec,
}

/// Reports progress every few MiB read and at the end.
pub(crate) struct Ticker<'p> {
    total: Rc<Cell<u64>>,
    entries: u64,
    last: u64,
    callback: &'p mut dyn FnMut(Progress),
}

impl<'p> Ticker<'p> {
    fn new(callback: &'p mut dyn FnMut(Progress)) -> Self {
        Ticker {
            total: Rc::new(Cell::new(0)),
            entries: 0,
            last: 0,
            callback,
        }
    }

    /// The counter the hashing readers add to.
    pub(crate) fn counter(&self) -> Rc<Cell<u64>> {
        self.total.clone()
    }

    pub(crate) fn tick(&mut self) {
        if self.total.get() >= self.last + PROGRESS_EVERY {
            self.report();
        }
    }

    pub(crate) fn entry(&mut self) {
        self.entries += 1;
        self.tick();
    }

    fn report(&mut self) {
        self.last = self.total.get();
        (self.callback)(Progress {
            bytes_read: self.last,
            entries: self.entries,
        });
    }
}

/// Imports the archive read from `reader` into `dest`, an existing empty directory. On success
/// `dest` holds config.json and rootfs/; on any error it is empty again.
pub fn import(
    reader: impl std::io::Read,
    dest: &Path,
    limits: &Limits,
    expected_digest: Option<&str>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Imported, ImportError> {
    let expected = expected_digest
        .map(|d| check_digest("expected digest", d).map(|()| d.to_ascii_lowercase()))
        .transpose()?;
    ensure_empty(dest)?;
    let mut ticker = Ticker::new(progress);
    match run(reader, dest, limits, expected.as_deref(), &mut ticker) {
        Ok(imported) => {
            ticker.report();
            Ok(imported)
        }
        Err(cause) => match fsat::clear_dir(dest) {
            Ok(()) => Err(cause),
            Err(source) => Err(ImportError::Cleanup {
                cause: Box::new(cause),
                dest: dest.to_path_buf(),
                source,
            }),
        },
    }
}

/// Checks that `value` is "sha256:" and 64 hex digits.
pub(crate) fn check_digest(what: &str, value: &str) -> Result<(), ImportError> {
    let ok = value.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b.to_ascii_lowercase()))
    });
    if ok {
        Ok(())
    } else {
        Err(ImportError::BadDigest {
            what: what.to_string(),
            value: value.to_string(),
        })
    }
}

fn ensure_empty(dest: &Path) -> Result<(), ImportError> {
    let mut entries =
        std::fs::read_dir(dest).map_err(|e| ImportError::fs(dest.to_path_buf(), e))?;
    if entries.next().is_some() {
        return Err(ImportError::DestNotEmpty {
            dest: dest.to_path_buf(),
        });
    }
    Ok(())
}

fn run(
    reader: impl std::io::Read,
    dest: &Path,
    limits: &Limits,
    expected: Option<&str>,
    ticker: &mut Ticker<'_>,
) -> Result<Imported, ImportError> {
    let staging = dest.join(STAGING);
    mkdir(&staging, 0o700)?;
    let staging_fd = fsat::open_dir(&staging).map_err(|e| ImportError::fs(staging.clone(), e))?;

    let mut raw = reader::Hashing::new(reader, ticker.counter());
    let mut budget = Budget::default();
    let (files, bytes) = {
        let mut stream = reader::Stream::open(&mut raw, "archive")?;
        let scope = Scope::Archive;
        let mut ex = Extractor::new(
            staging_fd,
            &staging,
            scope,
            limits,
            &mut budget,
            ticker,
            stream.classifier(),
        );
        stream.for_each(|entry| ex.entry(entry))?;
        let counts = ex.finish()?;
        stream.finish()?;
        counts
    };
    let (digest, _) = raw.finish()?;
    if let Some(expected) = expected {
        if digest != expected {
            return Err(ImportError::DigestMismatch {
                what: "archive".to_string(),
                expected: expected.to_string(),
                actual: digest,
            });
        }
    }

    let (kind, spec, files, bytes) = match detect(&staging)? {
        Kind::Bundle => (Kind::Bundle, finish_bundle(dest, &staging)?, files, bytes),
        Kind::ImageLayout => {
            let (spec, files, bytes) = crate::image::build(dest, &staging, limits, ticker)?;
            (Kind::ImageLayout, spec, files, bytes)
        }
    };
    std::fs::remove_dir_all(&staging).map_err(|e| ImportError::fs(staging.clone(), e))?;
    Ok(Imported {
        digest,
        kind,
        files,
        bytes,
        spec,
    })
}

pub(crate) fn mkdir(path: &Path, mode: u32) -> Result<(), ImportError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(|e| ImportError::fs(path.to_path_buf(), e))
}

/// Recognises the staging directory's top level.
fn detect(staging: &Path) -> Result<Kind, ImportError> {
    let is = |name: &str, dir: bool| {
        std::fs::symlink_metadata(staging.join(name)).is_ok_and(|m| {
            if dir {
                m.is_dir()
            } else {
                m.is_file()
            }
        })
    };
    let (config, rootfs) = (is("config.json", false), is("rootfs", true));
    let layout = is("oci-layout", false) && is("index.json", false) && is("blobs", true);
    match (config, rootfs, layout) {
        (true, true, false) => Ok(Kind::Bundle),
        (false, true, false) => Err(ImportError::MissingConfig),
        (_, false, true) => Ok(Kind::ImageLayout),
        (_, true, true) => Err(ImportError::NotAnArchive {
            found: "both a bundle's rootfs/ and an image layout".to_string(),
        }),
        _ => {
            let mut names: Vec<String> = std::fs::read_dir(staging)
                .map_err(|e| ImportError::fs(staging.to_path_buf(), e))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            let found = match names.len() {
                0 => "an empty archive".to_string(),
                n if n > 8 => format!("{} … ({n} names)", names[..8].join(", ")),
                _ => names.join(", "),
            };
            Err(ImportError::NotAnArchive { found })
        }
    }
}

/// Moves the bundle up from staging and loads its config.json.
fn finish_bundle(dest: &Path, staging: &Path) -> Result<Spec, ImportError> {
    for name in ["rootfs", "config.json"] {
        let (from, to) = (staging.join(name), dest.join(name));
        std::fs::rename(&from, &to).map_err(|e| ImportError::fs(from, e))?;
    }
    let spec = crate::spec::load(dest).map_err(|e| match e {
        crate::spec::SpecError::Missing { .. } => ImportError::MissingConfig,
        e => ImportError::BadConfig(e),
    })?;
    // The runtime would take any other root.path as given: "/" would be the host's root.
    let root = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_default();
    let mut parts = root
        .components()
        .filter(|c| *c != std::path::Component::CurDir);
    if parts.next() != Some(std::path::Component::Normal("rootfs".as_ref()))
        || parts.next().is_some()
    {
        return Err(ImportError::BadConfig(crate::spec::SpecError::Invalid {
            file: "config.json".to_string(),
            field: "root.path".to_string(),
            problem: format!("{root:?} is not the bundle's rootfs directory"),
            fix: "set root.path to \"rootfs\"".to_string(),
        }));
    }
    Ok(spec)
}
