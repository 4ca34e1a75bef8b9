//! Why an import was refused: one variant per refusal, a Display that says the cause and the
//! fix, and a stable snake_case `code()` for the agent's API.

use std::path::PathBuf;

use crate::spec::SpecError;

/// An import that did not happen. Whatever the variant, the destination was emptied again.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{}: not an empty directory; import into a new, empty directory (a fresh subvolume or volume)", .dest.display())]
    DestNotEmpty { dest: PathBuf },
    #[error("entry {entry:?}: has a \"..\" component: refused, it would write outside the root; rebuild the archive with paths relative to its root (tar -C DIR .)")]
    PathEscapes { entry: String },
    #[error("entry {entry:?}: absolute path: refused; rebuild the archive with relative paths (tar -C DIR .)")]
    AbsolutePath { entry: String },
    #[error("entry {entry:?}: goes through {parent:?}, a symlink: refused, the write could land outside the root; rebuild the archive without entries below symlinks")]
    ThroughSymlink { entry: String, parent: String },
    #[error("entry {entry:?}: {parent:?} is not a directory: refused; rebuild the archive so {parent:?} is a directory before anything is put in it")]
    ParentNotDirectory { entry: String, parent: String },
    #[error("entry {entry:?}: link to {target:?} {reason}: refused; rebuild the archive with links that stay inside the root")]
    LinkEscapes {
        entry: String,
        target: String,
        reason: &'static str,
    },
    #[error("entry {entry:?}: device node: refused, a container gets its devices from the runtime; rebuild the archive without device nodes")]
    DeviceNode { entry: String },
    #[error("entry {entry:?}: mode {mode:04o} is setuid/setgid: refused; rebuild the archive without setuid/setgid files, or import with allow_setuid")]
    Setuid { entry: String, mode: u32 },
    #[error("entry {entry:?}: {what}: not supported; rebuild the archive without it")]
    UnsupportedEntry { entry: String, what: String },
    #[error("entry {entry:?}: {size} bytes, more than the limit of {limit} per file: refused; raise max_file_bytes or leave the file out")]
    FileTooLarge {
        entry: String,
        size: u64,
        limit: u64,
    },
    #[error("{what}: more than the limit of {limit} bytes: refused; raise max_bytes or make the archive smaller")]
    ArchiveTooLarge { what: String, limit: u64 },
    #[error("{what}: more than the limit of {limit} entries: refused; raise max_entries or make the archive smaller")]
    TooManyEntries { what: String, limit: u64 },
    #[error("{what}: sha256 is {actual}, expected {expected}: refused, the content is not what was asked for; fetch it again from a source you trust")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what}: {actual} bytes where its descriptor says {expected}: refused; rebuild the image layout (skopeo copy … oci-archive:)")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{what}: {value:?} is not a sha256 digest; use \"sha256:\" followed by 64 lowercase hex digits")]
    BadDigest { what: String, value: String },
    #[error("bundle: config.json missing next to rootfs/; add one (`runc spec` writes a starting point) and pack the bundle again")]
    MissingConfig,
    #[error("bundle: {0}")]
    BadConfig(SpecError),
    #[error("not an OCI bundle nor an OCI image layout: found {found}; expected config.json and rootfs/ (a bundle) or oci-layout, index.json and blobs/ (an image layout) at the top of the archive")]
    NotAnArchive { found: String },
    #[error("{detail}: the archive is truncated: refused; copy it again in full")]
    Truncated { detail: String },
    #[error("{detail}: the archive is corrupt: refused; rebuild or copy it again")]
    Corrupt { detail: String },
    #[error("{}: no space left on the device: import stopped, nothing kept; free space or give the template a bigger volume", .path.display())]
    NoSpace { path: PathBuf },
    #[error("{}: {source}; check the destination's file system", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("image layout: blob {digest} is missing from blobs/: refused; export the image again with all its blobs (skopeo copy … oci-archive:)")]
    MissingBlob { digest: String },
    #[error("image layout: {file}: {detail}; rebuild the image layout (skopeo copy … oci-archive:, umoci)")]
    BadImage { file: String, detail: String },
    #[error("image layout: no image for {wanted}: found {found}; export the image for {wanted}")]
    NoMatchingManifest { wanted: String, found: String },
    #[error("image layout: {what} has media type {media_type:?}, which cannot be applied; export the image with OCI or Docker v2 layers (tar, tar+gzip, tar+zstd)")]
    UnsupportedMediaType { what: String, media_type: String },
    #[error("{0}")]
    ImageConfig(SpecError),
    #[error("{cause}; and emptying {} again failed: {source}; remove its contents by hand", .dest.display())]
    Cleanup {
        cause: Box<ImportError>,
        dest: PathBuf,
        source: std::io::Error,
    },
}

impl ImportError {
    /// A stable name for the API and the logs.
    pub fn code(&self) -> &'static str {
        use ImportError::*;
        match self {
            DestNotEmpty { .. } => "dest_not_empty",
            PathEscapes { .. } => "path_escapes",
            AbsolutePath { .. } => "absolute_path",
            ThroughSymlink { .. } => "through_symlink",
            ParentNotDirectory { .. } => "parent_not_directory",
            LinkEscapes { .. } => "link_escapes",
            DeviceNode { .. } => "device_node",
            Setuid { .. } => "setuid",
            UnsupportedEntry { .. } => "unsupported_entry",
            FileTooLarge { .. } | ArchiveTooLarge { .. } => "too_large",
            TooManyEntries { .. } => "too_many_entries",
            DigestMismatch { .. } => "digest_mismatch",
            SizeMismatch { .. } => "size_mismatch",
            BadDigest { .. } => "bad_digest",
            MissingConfig => "missing_config",
            BadConfig(_) => "bad_config",
            NotAnArchive { .. } => "not_an_archive",
            Truncated { .. } => "truncated",
            Corrupt { .. } => "corrupt",
            NoSpace { .. } => "no_space",
            Io { .. } => "io",
            MissingBlob { .. } => "missing_blob",
            BadImage { .. } => "bad_image",
            NoMatchingManifest { .. } => "no_matching_manifest",
            UnsupportedMediaType { .. } => "unsupported_media_type",
            ImageConfig(_) => "bad_image_config",
            Cleanup { .. } => "cleanup_failed",
        }
    }

    /// A write or file-system error at `path`: ENOSPC and EDQUOT become `NoSpace`.
    pub(crate) fn fs(path: PathBuf, source: std::io::Error) -> Self {
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => ImportError::NoSpace { path },
            _ => ImportError::Io { path, source },
        }
    }

    pub(crate) fn fs_errno(path: PathBuf, errno: nix::errno::Errno) -> Self {
        Self::fs(path, std::io::Error::from(errno))
    }
}
