//! OCI layer whiteouts: `.wh.NAME` deletes NAME from the layers below, `.wh..wh..opq` hides
//! everything the layers below put in its directory. Neither touches what the current layer
//! itself adds (image-spec layer.md), so the extractor keeps the set of paths the current
//! layer has written (`touched`, '/'-joined, parents included).
//!
//! Both work from the parent's fd reached without following symlinks, so a whiteout below a
//! symlinked directory can never delete anything outside the rootfs.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, RawFd};

use nix::sys::stat::SFlag;

use crate::archive::fsat;

const PREFIX: &[u8] = b".wh.";
const META_PREFIX: &[u8] = b".wh..wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// What a whiteout entry asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Whiteout<'n> {
    /// Empty the parent directory of the lower layers' contents.
    Opaque,
    /// Delete this name (from the lower layers) in the parent directory.
    Remove(&'n [u8]),
    /// Another `.wh..wh.` name (aufs bookkeeping): nothing to do, nothing to create.
    Meta,
}

/// The whiteout an entry's last path component stands for, if it is one.
pub(crate) fn classify(name: &[u8]) -> Option<Whiteout<'_>> {
    if name == OPAQUE {
        Some(Whiteout::Opaque)
    } else if name.starts_with(META_PREFIX) {
        Some(Whiteout::Meta)
    } else {
        match name.strip_prefix(PREFIX)? {
            b"" | b"." | b".." => Some(Whiteout::Meta),
            rest => Some(Whiteout::Remove(rest)),
        }
    }
}

/// `parent/name` as a key of the touched set.
pub(crate) fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        return name.to_vec();
    }
    let mut key = Vec::with_capacity(parent.len() + 1 + name.len());
    key.extend_from_slice(parent);
    key.push(b'/');
    key.extend_from_slice(name);
    key
}

/// Deletes `name` (and what is below it) from `parent` unless this layer wrote it.
pub(crate) fn remove_lower(
    parent: RawFd,
    parent_key: &[u8],
    name: &[u8],
    touched: &HashSet<Vec<u8>>,
) -> nix::Result<()> {
    if touched.contains(&join(parent_key, name)) {
        return Ok(());
    }
    fsat::remove_all_at(parent, name)
}

/// Deletes everything below `dir` that this layer did not write.
pub(crate) fn make_opaque(dir: RawFd, key: &[u8], touched: &HashSet<Vec<u8>>) -> nix::Result<()> {
    for name in fsat::list(dir)? {
        let child = join(key, &name);
        if !touched.contains(&child) {
            fsat::remove_all_at(dir, &name)?;
        } else if fsat::kind(dir, &name)? == Some(SFlag::S_IFDIR) {
            let sub = fsat::open_subdir(dir, &name)?;
            make_opaque(sub.as_raw_fd(), &child, touched)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_tells_the_whiteouts_apart() {
        assert_eq!(classify(b".wh..wh..opq"), Some(Whiteout::Opaque));
        assert_eq!(classify(b".wh.passwd"), Some(Whiteout::Remove(b"passwd")));
        assert_eq!(classify(b".wh..wh.plnk"), Some(Whiteout::Meta));
        assert_eq!(classify(b".wh.."), Some(Whiteout::Meta));
        assert_eq!(classify(b"passwd"), None);
        assert_eq!(classify(b"a.wh.b"), None);
    }
}
