//! File operations relative to a directory fd that never follow a symlink: walking down to an
//! entry's parent, removing a tree, emptying the destination, and reading a file of a rootfs
//! with its symlinks resolved inside that rootfs.
//!
//! Why fds: a path string is resolved by the kernel through whatever symlinks it meets, so an
//! entry `a -> /etc` followed by `a/passwd` would write the host's /etc/passwd. Every
//! component here is opened with `O_NOFOLLOW | O_DIRECTORY` from its parent's fd, so a symlink
//! on the way is an error, never a detour.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

const DIR_FLAGS: OFlag = OFlag::O_DIRECTORY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_RDONLY);

/// Symlinks followed while resolving one path inside a root (the kernel's own limit).
const MAX_HOPS: usize = 40;

pub(crate) fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open(2) family call and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Opens a directory the caller named (the destination itself is trusted as given).
pub(crate) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let fd = nix::fcntl::open(path, DIR_FLAGS.difference(OFlag::O_NOFOLLOW), Mode::empty())?;
    Ok(owned(fd))
}

/// Opens `name` in `dir` as a directory; a symlink gives ELOOP (or ENOTDIR).
pub(crate) fn open_subdir(dir: RawFd, name: &[u8]) -> nix::Result<OwnedFd> {
    openat(Some(dir), name, DIR_FLAGS, Mode::empty()).map(owned)
}

/// The file type of `name` in `dir`, without following it; `None` when it does not exist.
pub(crate) fn kind(dir: RawFd, name: &[u8]) -> nix::Result<Option<SFlag>> {
    match fstatat(Some(dir), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(SFlag::from_bits_truncate(
            st.st_mode & SFlag::S_IFMT.bits(),
        ))),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Why a walk stopped, with the index of the component it stopped at.
#[derive(Debug)]
pub(crate) enum WalkError {
    Symlink(usize),
    NotDir(usize),
    Missing(usize),
    Sys(usize, Errno),
}

/// Opens `root/comps…` one component at a time without following symlinks; with `create`,
/// missing directories are made (mode 0755) and reported to `created`.
pub(crate) fn walk(
    root: RawFd,
    comps: &[&[u8]],
    create: bool,
    created: &mut dyn FnMut(usize),
) -> Result<OwnedFd, WalkError> {
    let mut cur = openat(Some(root), ".", DIR_FLAGS, Mode::empty())
        .map(owned)
        .map_err(|e| WalkError::Sys(0, e))?;
    for (i, comp) in comps.iter().enumerate() {
        let next = match open_subdir(cur.as_raw_fd(), comp) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if create => {
                match mkdirat(
                    Some(cur.as_raw_fd()),
                    *comp,
                    Mode::from_bits_truncate(0o755),
                ) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(WalkError::Sys(i, e)),
                }
                created(i);
                open_subdir(cur.as_raw_fd(), comp).map_err(|e| WalkError::Sys(i, e))?
            }
            Err(Errno::ENOENT) => return Err(WalkError::Missing(i)),
            Err(e @ (Errno::ELOOP | Errno::ENOTDIR)) => {
                return Err(match kind(cur.as_raw_fd(), comp) {
                    Ok(Some(SFlag::S_IFLNK)) => WalkError::Symlink(i),
                    Ok(Some(_)) => WalkError::NotDir(i),
                    _ => WalkError::Sys(i, e),
                })
            }
            Err(e) => return Err(WalkError::Sys(i, e)),
        };
        cur = next;
    }
    Ok(cur)
}

/// The names in a directory, without "." and "..".
pub(crate) fn list(dir: RawFd) -> nix::Result<Vec<Vec<u8>>> {
    let mut d = Dir::openat(Some(dir), ".", DIR_FLAGS, Mode::empty())?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    Ok(names)
}

/// Removes `name` from `dir`, and everything below it when it is a directory; a symlink is
/// removed itself, never followed.
pub(crate) fn remove_all_at(dir: RawFd, name: &[u8]) -> nix::Result<()> {
    match kind(dir, name)? {
        None => Ok(()),
        Some(SFlag::S_IFDIR) => {
            let sub = open_subdir(dir, name)?;
            for child in list(sub.as_raw_fd())? {
                remove_all_at(sub.as_raw_fd(), &child)?;
            }
            drop(sub);
            unlinkat(Some(dir), name, UnlinkatFlags::RemoveDir)
        }
        Some(_) => unlinkat(Some(dir), name, UnlinkatFlags::NoRemoveDir),
    }
}

/// Removes everything inside `path`, keeping `path` itself (the caller's subvolume or volume).
pub(crate) fn clear_dir(path: &Path) -> io::Result<()> {
    let dir = open_dir(path)?;
    for name in list(dir.as_raw_fd())? {
        remove_all_at(dir.as_raw_fd(), &name)?;
    }
    Ok(())
}

/// Reads `rel` inside `root` (at most `cap` bytes), resolving symlinks as the container would
/// see them: an absolute target starts again at `root`, ".." never climbs above it. `None`
/// when the file does not exist.
pub(crate) fn read_in_root(root: &Path, rel: &str, cap: u64) -> io::Result<Option<Vec<u8>>> {
    let root_fd = open_dir(root)?;
    let mut stack: Vec<OwnedFd> = Vec::new();
    let mut pending: VecDeque<Vec<u8>> = split(rel.as_bytes()).collect();
    let mut hops = 0;
    while let Some(comp) = pending.pop_front() {
        if comp == b".." {
            stack.pop();
            continue;
        }
        let cur = stack
            .last()
            .map_or(root_fd.as_raw_fd(), |fd| fd.as_raw_fd());
        match kind(cur, &comp)? {
            None => return Ok(None),
            Some(SFlag::S_IFLNK) => {
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(Errno::ELOOP.into());
                }
                let target = readlinkat(Some(cur), comp.as_slice())?;
                let target = std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()).to_vec();
                if target.starts_with(b"/") {
                    stack.clear();
                }
                for c in split(&target).collect::<Vec<_>>().into_iter().rev() {
                    pending.push_front(c);
                }
            }
            Some(SFlag::S_IFDIR) if !pending.is_empty() => stack.push(open_subdir(cur, &comp)?),
            Some(SFlag::S_IFREG) if pending.is_empty() => {
                let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                let file = std::fs::File::from(owned(openat(
                    Some(cur),
                    comp.as_slice(),
                    flags,
                    Mode::empty(),
                )?));
                let mut bytes = Vec::new();
                file.take(cap).read_to_end(&mut bytes)?;
                return Ok(Some(bytes));
            }
            Some(_) if pending.is_empty() => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "not a regular file",
                ))
            }
            Some(_) => return Ok(None),
        }
    }
    Ok(None)
}

fn split(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
}
