//! Creating one tar entry safely under a root directory fd: the refusals (`..`, absolute
//! paths, links out of the root, devices, setuid, sizes, counts) and the writes, which never
//! follow a symlink already in the tree (every parent is opened with O_NOFOLLOW from its
//! parent's fd, see `fsat`), replace what is in the way, and keep modes, owners and mtimes.
//!
//! Two scopes: `Archive` is the outer archive, where only `rootfs/` is a container root (links
//! and fifos are allowed there only; config.json and an image layout's files are plain files);
//! `Layer` is an image layer, whose root is the container's root and whose whiteouts apply.
//! What an entry's header says is checked first, in `entry`.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fchmodat, futimens, mkdirat, mknodat, utimensat};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::unistd::{fchown, fchownat, linkat, symlinkat, Gid, Uid};
use tar::EntryType;

use super::entry::{climbs_out, components, join, link_name, Meta};
use super::fsat::{self, WalkError};
use super::reader::Classifier;
use super::{ImportError, Limits, Ticker};
use crate::image::whiteout::{self, Whiteout};

const SETID: u32 = 0o6000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Archive,
    Layer,
}

/// Content bytes and entries counted against the limits, across the streams that share it.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    bytes: u64,
    entries: u64,
}

pub(crate) struct Extractor<'x, 'p> {
    root: OwnedFd,
    root_path: PathBuf,
    scope: Scope,
    limits: &'x Limits,
    budget: &'x mut Budget,
    ticker: &'x mut Ticker<'p>,
    classifier: Classifier,
    /// Directories get their mode, owner and mtime at the end: adding children changes them.
    dirs: Vec<(Vec<Vec<u8>>, Meta)>,
    /// Layer scope: every path this layer wrote, for whiteouts.
    touched: HashSet<Vec<u8>>,
    files: u64,
    bytes: u64,
    buf: Vec<u8>,
}

impl<'x, 'p> Extractor<'x, 'p> {
    pub(crate) fn new(
        root: OwnedFd,
        root_path: &Path,
        scope: Scope,
        limits: &'x Limits,
        budget: &'x mut Budget,
        ticker: &'x mut Ticker<'p>,
        classifier: Classifier,
    ) -> Self {
        Extractor {
            root,
            root_path: root_path.to_path_buf(),
            scope,
            limits,
            budget,
            ticker,
            classifier,
            dirs: Vec::new(),
            touched: HashSet::new(),
            files: 0,
            bytes: 0,
            buf: vec![0; 64 << 10],
        }
    }

    /// How many leading components name the container's root: `None` outside of it.
    fn container_depth(&self, comps: &[&[u8]]) -> Option<usize> {
        match self.scope {
            Scope::Layer => Some(0),
            Scope::Archive if comps.first() == Some(&&b"rootfs"[..]) => Some(1),
            Scope::Archive => None,
        }
    }

    fn what(&self) -> &'static str {
        match self.scope {
            Scope::Archive => "archive",
            Scope::Layer => "image layers",
        }
    }

    fn fs_err(&self, comps: &[&[u8]], errno: nix::errno::Errno) -> ImportError {
        ImportError::fs_errno(self.root_path.join(join(comps)), errno)
    }

    /// Extracts one entry.
    pub(crate) fn entry<R: Read>(&mut self, e: &mut tar::Entry<'_, R>) -> Result<(), ImportError> {
        let path = e.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&path).into_owned();
        let mut kind = e.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            return self.drain(e, &shown);
        }
        self.budget.entries += 1;
        if self.budget.entries > self.limits.max_entries {
            let (what, limit) = (self.what().to_string(), self.limits.max_entries);
            return Err(ImportError::TooManyEntries { what, limit });
        }
        // Old (v7) tars mark directories only by a trailing slash.
        if kind == EntryType::Regular && path.ends_with(b"/") {
            kind = EntryType::Directory;
        }
        let comps = components(&path, &shown)?;
        let inside = self.container_depth(&comps);
        let meta = Meta::of(e.header(), &shown)?;
        let is_root = comps.is_empty() || (inside == Some(1) && comps.len() == 1);
        if is_root && kind != EntryType::Directory {
            let what = "the root of the archive or of rootfs/ as something else than a directory";
            return Err(ImportError::UnsupportedEntry {
                entry: shown,
                what: what.into(),
            });
        }
        if comps.is_empty() {
            return self.drain(e, &shown);
        }
        if self.scope == Scope::Layer {
            if let Some(w) = whiteout::classify(comps[comps.len() - 1]) {
                self.whiteout(w, &comps, &shown)?;
                return self.drain(e, &shown);
            }
            self.touch(&comps);
        }
        let unsupported = |what: &str| ImportError::UnsupportedEntry {
            entry: shown.clone(),
            what: what.to_string(),
        };
        match kind {
            EntryType::Regular | EntryType::Continuous => self.file(e, &comps, &shown, meta)?,
            EntryType::Directory => {
                self.dir(&comps, &shown, meta)?;
                self.drain(e, &shown)?;
            }
            EntryType::Char | EntryType::Block => {
                return Err(ImportError::DeviceNode { entry: shown })
            }
            EntryType::Symlink | EntryType::Link | EntryType::Fifo if inside.is_none() => {
                return Err(unsupported(
                    "a link or fifo outside rootfs/ (only plain files there)",
                ))
            }
            EntryType::Symlink => {
                let depth = comps.len() - 1 - inside.unwrap_or(0);
                self.symlink(e, &comps, &shown, meta, depth)?;
            }
            EntryType::Link => self.hard_link(e, &comps, &shown, inside == Some(1))?,
            EntryType::Fifo => {
                self.fifo(&comps, &shown, meta)?;
                self.drain(e, &shown)?;
            }
            EntryType::GNUSparse => return Err(unsupported("a GNU sparse file")),
            other => {
                return Err(unsupported(&format!(
                    "tar entry type {:?}",
                    other.as_byte() as char
                )))
            }
        }
        if inside.is_some_and(|d| comps.len() > d) {
            self.files += 1;
        }
        self.ticker.entry();
        Ok(())
    }

    fn touch(&mut self, comps: &[&[u8]]) {
        let mut key = Vec::new();
        for comp in comps {
            key = whiteout::join(&key, comp);
            if !self.touched.contains(&key) {
                self.touched.insert(key.clone());
            }
        }
    }

    fn count(&mut self, shown: &str, size: u64) -> Result<(), ImportError> {
        if size > self.limits.max_file_bytes {
            let limit = self.limits.max_file_bytes;
            return Err(ImportError::FileTooLarge {
                entry: shown.to_string(),
                size,
                limit,
            });
        }
        self.budget.bytes = self.budget.bytes.saturating_add(size);
        if self.budget.bytes > self.limits.max_bytes {
            let (what, limit) = (self.what().to_string(), self.limits.max_bytes);
            return Err(ImportError::ArchiveTooLarge { what, limit });
        }
        Ok(())
    }

    /// Copies exactly `size` bytes of the entry into `out` (a sink for entries without files).
    fn copy<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        out: &mut dyn Write,
        size: u64,
        comps: &[&[u8]],
    ) -> Result<(), ImportError> {
        let mut left = size;
        while left > 0 {
            let want = self
                .buf
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match e.read(&mut self.buf[..want]) {
                Ok(0) => {
                    let detail = format!("entry {:?} ends early", join(comps));
                    return Err(self.classifier.truncated(&detail));
                }
                Ok(n) => n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(self.classifier.error(err)),
            };
            out.write_all(&self.buf[..n])
                .map_err(|err| ImportError::fs(self.root_path.join(join(comps)), err))?;
            left -= n as u64;
            self.ticker.tick();
        }
        Ok(())
    }

    /// Reads (and counts) the data of an entry that has no file to go to.
    fn drain<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        shown: &str,
    ) -> Result<(), ImportError> {
        let size = e.size();
        if size > 0 {
            self.count(shown, size)?;
            self.copy(e, &mut std::io::sink(), size, &[shown.as_bytes()])?;
        }
        Ok(())
    }

    /// Opens the entry's parent directory, making missing ones, never through a symlink.
    fn parent(&mut self, comps: &[&[u8]], shown: &str) -> Result<OwnedFd, ImportError> {
        let parents = &comps[..comps.len() - 1];
        let result = fsat::walk(self.root.as_raw_fd(), parents, true, &mut |_| {});
        result.map_err(|w| self.walk_error(w, parents, shown))
    }

    fn walk_error(&self, w: WalkError, comps: &[&[u8]], shown: &str) -> ImportError {
        let upto = |i: usize| join(&comps[..=i]);
        match w {
            WalkError::Symlink(i) => ImportError::ThroughSymlink {
                entry: shown.to_string(),
                parent: upto(i),
            },
            WalkError::NotDir(i) => ImportError::ParentNotDirectory {
                entry: shown.to_string(),
                parent: upto(i),
            },
            WalkError::Missing(i) => self.fs_err(&comps[..=i], nix::errno::Errno::ENOENT),
            WalkError::Sys(i, errno) => self.fs_err(&comps[..=i], errno),
        }
    }

    /// Removes what is at `name` unless it is a directory and `keep_dir`; true if a directory
    /// was kept.
    fn make_room(
        &self,
        parent: RawFd,
        comps: &[&[u8]],
        keep_dir: bool,
    ) -> Result<bool, ImportError> {
        let name = comps[comps.len() - 1];
        match fsat::kind(parent, name) {
            Ok(None) => Ok(false),
            Ok(Some(SFlag::S_IFDIR)) if keep_dir => Ok(true),
            Ok(Some(_)) => {
                fsat::remove_all_at(parent, name).map_err(|e| self.fs_err(comps, e))?;
                Ok(false)
            }
            Err(e) => Err(self.fs_err(comps, e)),
        }
    }

    fn check_setuid(&self, shown: &str, mode: u32) -> Result<(), ImportError> {
        if mode & SETID != 0 && !self.limits.allow_setuid {
            return Err(ImportError::Setuid {
                entry: shown.to_string(),
                mode,
            });
        }
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        comps: &[&[u8]],
        shown: &str,
        meta: Meta,
    ) -> Result<(), ImportError> {
        let size = e.size();
        self.count(shown, size)?;
        self.check_setuid(shown, meta.mode)?;
        let parent = self.parent(comps, shown)?;
        self.make_room(parent.as_raw_fd(), comps, false)?;
        let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW;
        let fd = openat(
            Some(parent.as_raw_fd()),
            comps[comps.len() - 1],
            flags | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| self.fs_err(comps, e))?;
        let mut file = File::from(fsat::owned(fd));
        self.copy(e, &mut file, size, comps)?;
        // chown before chmod: chown clears setuid/setgid bits.
        let fd = file.as_raw_fd();
        fchown(
            fd,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )
        .and_then(|()| fchmod(fd, Mode::from_bits_truncate(meta.mode)))
        .and_then(|()| futimens(fd, &meta.mtime, &meta.mtime))
        .map_err(|e| self.fs_err(comps, e))?;
        if self.container_depth(comps).is_some() {
            self.bytes += size;
        }
        Ok(())
    }

    fn dir(&mut self, comps: &[&[u8]], shown: &str, mut meta: Meta) -> Result<(), ImportError> {
        let parent = self.parent(comps, shown)?;
        if !self.make_room(parent.as_raw_fd(), comps, true)? {
            mkdirat(
                Some(parent.as_raw_fd()),
                comps[comps.len() - 1],
                Mode::from_bits_truncate(0o700),
            )
            .map_err(|e| self.fs_err(comps, e))?;
        }
        // setuid means nothing on a directory; setgid (group inheritance) and sticky stay.
        meta.mode &= !0o4000;
        self.dirs
            .push((comps.iter().map(|c| c.to_vec()).collect(), meta));
        Ok(())
    }

    fn symlink<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        comps: &[&[u8]],
        shown: &str,
        meta: Meta,
        depth: usize,
    ) -> Result<(), ImportError> {
        let target = link_name(e, shown)?;
        if climbs_out(depth, &target) {
            return Err(ImportError::LinkEscapes {
                entry: shown.to_string(),
                target: String::from_utf8_lossy(&target).into_owned(),
                reason: "climbs above the root",
            });
        }
        let parent = self.parent(comps, shown)?;
        let (dir, name) = (parent.as_raw_fd(), comps[comps.len() - 1]);
        self.make_room(dir, comps, false)?;
        symlinkat(target.as_slice(), Some(dir), name)
            .and_then(|()| {
                let (uid, gid) = (Uid::from_raw(meta.uid), Gid::from_raw(meta.gid));
                fchownat(
                    Some(dir),
                    name,
                    Some(uid),
                    Some(gid),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
            })
            .and_then(|()| {
                let nofollow = UtimensatFlags::NoFollowSymlink;
                utimensat(Some(dir), name, &meta.mtime, &meta.mtime, nofollow)
            })
            .map_err(|e| self.fs_err(comps, e))?;
        self.drain(e, shown)
    }

    /// A hard link: its target must be a regular file already extracted inside the root.
    fn hard_link<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        comps: &[&[u8]],
        shown: &str,
        in_bundle_rootfs: bool,
    ) -> Result<(), ImportError> {
        let target = link_name(e, shown)?;
        let target_shown = String::from_utf8_lossy(&target).into_owned();
        let refuse = |reason| ImportError::LinkEscapes {
            entry: shown.to_string(),
            target: target_shown.clone(),
            reason,
        };
        let tcomps = match components(&target, &target_shown) {
            Ok(c) => c,
            Err(ImportError::AbsolutePath { .. }) => return Err(refuse("is an absolute path")),
            Err(ImportError::PathEscapes { .. }) => return Err(refuse("climbs above the root")),
            Err(other) => return Err(other),
        };
        if tcomps.is_empty() || (in_bundle_rootfs && (tcomps.len() < 2 || tcomps[0] != b"rootfs")) {
            return Err(refuse("is outside the root"));
        }
        if tcomps == comps {
            return Err(refuse("is the link itself"));
        }
        let tname = tcomps[tcomps.len() - 1];
        let not_found = "is not a regular file extracted before it";
        let tparent = fsat::walk(
            self.root.as_raw_fd(),
            &tcomps[..tcomps.len() - 1],
            false,
            &mut |_| {},
        )
        .map_err(|_| refuse(not_found))?;
        if !matches!(
            fsat::kind(tparent.as_raw_fd(), tname),
            Ok(Some(SFlag::S_IFREG))
        ) {
            return Err(refuse(not_found));
        }
        let parent = self.parent(comps, shown)?;
        self.make_room(parent.as_raw_fd(), comps, false)?;
        let (tdir, dir) = (Some(tparent.as_raw_fd()), Some(parent.as_raw_fd()));
        linkat(tdir, tname, dir, comps[comps.len() - 1], AtFlags::empty())
            .map_err(|e| self.fs_err(comps, e))?;
        self.drain(e, shown)
    }

    fn fifo(&mut self, comps: &[&[u8]], shown: &str, meta: Meta) -> Result<(), ImportError> {
        let parent = self.parent(comps, shown)?;
        let (dir, name) = (parent.as_raw_fd(), comps[comps.len() - 1]);
        self.make_room(dir, comps, false)?;
        let (uid, gid) = (Uid::from_raw(meta.uid), Gid::from_raw(meta.gid));
        let mode = Mode::from_bits_truncate(meta.mode & 0o1777);
        mknodat(
            Some(dir),
            name,
            SFlag::S_IFIFO,
            Mode::from_bits_truncate(0o600),
            0,
        )
        .and_then(|()| {
            fchownat(
                Some(dir),
                name,
                Some(uid),
                Some(gid),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
        })
        // The fifo was just made here and is no symlink: following is the only chmod there is.
        .and_then(|()| fchmodat(Some(dir), name, mode, FchmodatFlags::FollowSymlink))
        .and_then(|()| {
            let nofollow = UtimensatFlags::NoFollowSymlink;
            utimensat(Some(dir), name, &meta.mtime, &meta.mtime, nofollow)
        })
        .map_err(|e| self.fs_err(comps, e))
    }

    fn whiteout(
        &mut self,
        w: Whiteout<'_>,
        comps: &[&[u8]],
        shown: &str,
    ) -> Result<(), ImportError> {
        let parents = &comps[..comps.len() - 1];
        let parent = match fsat::walk(self.root.as_raw_fd(), parents, false, &mut |_| {}) {
            Ok(fd) => fd,
            // Nothing below there to hide.
            Err(WalkError::Missing(_) | WalkError::NotDir(_)) => return Ok(()),
            Err(w) => return Err(self.walk_error(w, parents, shown)),
        };
        let key = parents.join(&b'/');
        let result = match w {
            Whiteout::Opaque => {
                self.touch(parents);
                whiteout::make_opaque(parent.as_raw_fd(), &key, &self.touched)
            }
            Whiteout::Remove(name) => {
                whiteout::remove_lower(parent.as_raw_fd(), &key, name, &self.touched)
            }
            Whiteout::Meta => Ok(()),
        };
        result.map_err(|e| self.fs_err(parents, e))
    }

    /// Gives directories their mode, owner and mtime; returns (entries, bytes) written inside
    /// the container's root.
    pub(crate) fn finish(self) -> Result<(u64, u64), ImportError> {
        for (comps, meta) in self.dirs.iter().rev() {
            let comps: Vec<&[u8]> = comps.iter().map(Vec::as_slice).collect();
            let dir = match fsat::walk(self.root.as_raw_fd(), &comps, false, &mut |_| {}) {
                Ok(fd) => fd,
                // Replaced by a later entry.
                Err(WalkError::Missing(_) | WalkError::NotDir(_) | WalkError::Symlink(_)) => {
                    continue
                }
                Err(WalkError::Sys(i, e)) => return Err(self.fs_err(&comps[..=i], e)),
            };
            let fd = dir.as_raw_fd();
            fchown(
                fd,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )
            .and_then(|()| fchmod(fd, Mode::from_bits_truncate(meta.mode)))
            .and_then(|()| futimens(fd, &meta.mtime, &meta.mtime))
            .map_err(|e| self.fs_err(&comps, e))?;
        }
        Ok((self.files, self.bytes))
    }
}
