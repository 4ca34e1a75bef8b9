//! The one error type of the image builder. Every variant says what went wrong and how to
//! fix it, because the user of `tessera image build` is usually looking at a terminal.

use std::path::PathBuf;

/// The fix printed with every lock-file related failure.
pub const LOCK_FIX: &str =
    "run `tessera image lock --update` (`make lock`), then commit image/packages.lock";

/// Everything that can make an image build (or a lock update) fail.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file or directory the build reads was not there.
    #[error("{what} not found: {path}; {fix}")]
    MissingInput {
        what: String,
        path: PathBuf,
        fix: String,
    },

    /// An input file exists but its content is wrong.
    #[error("{path}: {problem}; {fix}")]
    BadInput {
        path: PathBuf,
        problem: String,
        fix: String,
    },

    /// Reading or writing a file failed.
    #[error("could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The pinned version of a package is no longer offered by the apt sources.
    #[error(
        "package {name} version {version} (pinned in {lock}) cannot be downloaded: {detail}\n\
         Debian probably replaced it with a newer version; {LOCK_FIX}. \
         If apt itself is stale, run `apt-get update` first"
    )]
    PackageUnavailable {
        name: String,
        version: String,
        lock: PathBuf,
        detail: String,
    },

    /// A downloaded .deb does not have the pinned hash.
    #[error(
        "sha256 of the downloaded {path} is {actual}, but {lock} pins {package} to {expected}; \
         the mirror served different bytes for the same version. Retry; if it persists, check \
         the apt sources and {LOCK_FIX}"
    )]
    Sha256Mismatch {
        /// `name version`
        package: String,
        path: PathBuf,
        lock: PathBuf,
        expected: String,
        actual: String,
    },

    /// The lock file differs from what apt offers today (`tessera image lock` without --update).
    #[error("{lock} is out of date with the apt candidates:\n{changes}\n{LOCK_FIX}")]
    LockStale { lock: PathBuf, changes: String },

    /// An external tool (apt-get, apt-cache, dpkg-deb, busybox) failed.
    #[error("`{command}` failed: {detail}; {fix}")]
    Tool {
        command: String,
        detail: String,
        fix: String,
    },

    /// A module listed in image/modules.toml (or needed by one) is not in the kernel package.
    #[error(
        "kernel module `{module}` ({needed_by}) is not in {package}; remove it from \
         image/modules.toml or pin a kernel that ships it"
    )]
    ModuleNotFound {
        module: String,
        needed_by: String,
        package: String,
    },

    /// The pinned kernel does not provide what kernel-config/tessera.fragment requires.
    #[error(
        "kernel {release} does not satisfy kernel-config/tessera.fragment:\n{problems}\n\
         fix: add the named modules to `ship` in image/modules.toml (and map the option in \
         kernel-config/modules.toml), or use a kernel built from the fragment (see kernel-config/README.md)"
    )]
    KernelConfig { release: String, problems: String },

    /// Building the unified kernel image from the EFI stub failed.
    #[error("cannot build the UKI from {stub}: {problem}")]
    Uki { stub: String, problem: String },

    /// Building the disk image failed.
    #[error("cannot build the disk image: {problem}")]
    Disk { problem: String },
}

impl ImageError {
    /// Shorthand for an I/O error on a path.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ImageError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
