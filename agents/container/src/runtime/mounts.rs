//! The container's filesystem, set up by the container init in its new mount namespace:
//! propagation of "/", the rootfs bound onto itself, config.json's `mounts` in order (the
//! runc/crun meaning of each option), masked paths (before the switch: files are masked with
//! the node's /dev/null, as crun does), the switch into the rootfs (pivot_root, or on an
//! initramfs node root MS_MOVE + chroot), then read-only paths and a read-only root.
//!
//! Destinations are resolved inside the rootfs, following its symlinks as if the rootfs were
//! "/", so a symlink in an image cannot point a mount at the node's files.

use super::namespaces::Plan;
use super::protocol::{Origin, RootSwitch, StepError};
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};
use oci_spec::runtime::{LinuxNamespaceType, Mount};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

const NONE: Option<&str> = None;

fn fail(step: impl Into<String>, e: Errno) -> StepError {
    StepError::errno(Origin::ContainerInit, step, e)
}

fn fail_io(step: impl Into<String>, e: &std::io::Error) -> StepError {
    StepError::io(Origin::ContainerInit, step, e)
}

/// `path` (absolute, as the container sees it) resolved inside `root`: symlinks are followed
/// with `root` as "/", and ".." never climbs above it.
pub fn resolve_in_root(root: &Path, path: &Path) -> PathBuf {
    let parts = |p: &Path| -> Vec<OsString> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect()
    };
    let mut resolved: Vec<OsString> = Vec::new();
    let mut queue: VecDeque<OsString> = parts(path).into();
    let mut links = 0;
    while let Some(name) = queue.pop_front() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let candidate: PathBuf = std::iter::once(root.as_os_str())
            .chain(resolved.iter().map(|s| s.as_os_str()))
            .chain([name.as_os_str()])
            .collect();
        // 40 is the kernel's limit too; past it the name is taken literally.
        match std::fs::read_link(&candidate) {
            Ok(target) if links < 40 => {
                links += 1;
                if target.is_absolute() {
                    resolved.clear();
                }
                for part in parts(&target).into_iter().rev() {
                    queue.push_front(part);
                }
            }
            _ => resolved.push(name),
        }
    }
    std::iter::once(root.as_os_str())
        .chain(resolved.iter().map(|s| s.as_os_str()))
        .collect()
}

/// A mount entry's options, split into flags, propagation changes and filesystem data.
#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    pub flags: MsFlags,
    pub propagation: Vec<MsFlags>,
    pub data: Vec<String>,
    pub bind: bool,
}

pub fn parse_options(options: &[String]) -> Result<Options, String> {
    let mut o = Options {
        flags: MsFlags::empty(),
        propagation: Vec::new(),
        data: Vec::new(),
        bind: false,
    };
    for opt in options {
        let (set, clear) = match opt.as_str() {
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => {
                o.bind = true;
                (MsFlags::MS_BIND, MsFlags::empty())
            }
            "rbind" => {
                o.bind = true;
                (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty())
            }
            p if propagation(p).is_some() => {
                o.propagation.extend(propagation(p));
                continue;
            }
            "tmpcopyup" | "idmap" | "ridmap" => {
                return Err(format!("mount option {opt:?} is not supported"));
            }
            data => {
                o.data.push(data.to_string());
                continue;
            }
        };
        o.flags = (o.flags | set) & !clear;
    }
    Ok(o)
}

/// The propagation flags of `shared`, `rslave`, ….
fn propagation(name: &str) -> Option<MsFlags> {
    let rec = MsFlags::MS_REC;
    Some(match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | rec,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | rec,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | rec,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | rec,
        _ => return None,
    })
}

/// Flags a bind remount must keep (the kernel refuses to clear locked ones).
fn kept_flags(path: &Path) -> MsFlags {
    let Ok(st) = statvfs(path) else {
        return MsFlags::empty();
    };
    let map = [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        // ST_RELATIME (statvfs.h: 4096): nix names it for glibc only, not for musl.
        (FsFlags::from_bits_retain(4096), MsFlags::MS_RELATIME),
    ];
    map.iter()
        .filter(|(st_flag, _)| st.flags().contains(*st_flag))
        .fold(MsFlags::empty(), |acc, (_, ms)| acc | *ms)
}

/// Makes mount events stay in the container (slave by default: the node's new mounts still
/// reach it, its own never leave), then binds the rootfs onto itself so it is a mount point
/// that pivot_root or MS_MOVE can take.
pub fn prepare_root(rootfs: &Path, propagation_name: Option<&str>) -> Result<(), StepError> {
    let flags = match propagation_name.filter(|p| !p.is_empty()) {
        None => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        Some(p) => propagation(p).ok_or_else(|| {
            StepError::new(Origin::ContainerInit, format!("read linux.rootfsPropagation {p:?}"))
                .hint("use one of private, rprivate, slave, rslave, shared, rshared, unbindable, runbindable")
        })?,
    };
    mount(NONE, "/", NONE, flags, NONE).map_err(|e| fail("make / a slave mount", e))?;
    mount(
        Some(rootfs),
        rootfs,
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        NONE,
    )
    .map_err(|e| {
        fail(
            format!("bind the rootfs {} onto itself", rootfs.display()),
            e,
        )
    })?;
    // pivot_root and MS_MOVE refuse a shared parent; a shared rootfs would leak mounts out.
    if flags.contains(MsFlags::MS_SHARED) {
        return Ok(());
    }
    mount(NONE, rootfs, NONE, MsFlags::MS_PRIVATE, NONE)
        .map_err(|e| fail(format!("make the rootfs {} private", rootfs.display()), e))
}

/// Everything a mount needs besides its entry.
pub struct Context<'a> {
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    pub plan: &'a Plan,
}

/// Mounts config.json's `mounts`, in order.
pub fn mount_all(ctx: &Context, mounts: &[Mount]) -> Result<(), StepError> {
    mounts.iter().try_for_each(|m| mount_one(ctx, m))
}

fn mount_one(ctx: &Context, m: &Mount) -> Result<(), StepError> {
    let dest = m.destination();
    let typ = m.typ().as_deref().unwrap_or("none");
    let source = m.source().as_deref();
    let what = source
        .map(|s| s.display().to_string())
        .unwrap_or_else(|| typ.to_string());
    let step = format!("mount {what} on {}", dest.display());
    if !dest.is_absolute() {
        return Err(StepError::new(Origin::ContainerInit, step)
            .detail("the destination is not absolute")
            .hint("give mounts[].destination as an absolute path inside the container"));
    }
    let opts = parse_options(m.options().as_deref().unwrap_or_default()).map_err(|d| {
        StepError::new(Origin::ContainerInit, step.clone())
            .detail(d)
            .hint("remove that option from mounts[].options in config.json")
    })?;
    let target = resolve_in_root(ctx.rootfs, dest);
    if opts.bind || typ == "bind" {
        bind(ctx, &step, source, &target, &opts)?;
    } else if typ == "sysfs" && !ctx.plan.creates(LinuxNamespaceType::Network) {
        // A fresh sysfs shows the network namespace of its mounter: with the node's network,
        // the node's /sys is bound instead, as a slave, read-only by the entry's flags.
        let opts = Options {
            flags: opts.flags | MsFlags::MS_BIND | MsFlags::MS_REC,
            propagation: vec![MsFlags::MS_SLAVE | MsFlags::MS_REC],
            data: Vec::new(),
            bind: true,
        };
        bind(ctx, &step, Some(Path::new("/sys")), &target, &opts)?;
    } else {
        // Tessera nodes have only cgroup v2: a v1 "cgroup" entry means the unified hierarchy.
        let fstype = if typ == "cgroup" { "cgroup2" } else { typ };
        std::fs::create_dir_all(&target)
            .map_err(|e| fail_io(format!("create the mount point {}", dest.display()), &e))?;
        let data = opts.data.join(",");
        let source = source
            .map(Path::to_path_buf)
            .unwrap_or_else(|| fstype.into());
        mount(
            Some(&source),
            &target,
            Some(fstype),
            opts.flags,
            (!data.is_empty()).then_some(data.as_str()),
        )
        .map_err(|e| fail(&step, e))?;
    }
    for p in &opts.propagation {
        mount(NONE, &target, NONE, *p, NONE)
            .map_err(|e| fail(format!("{step} (propagation)"), e))?;
    }
    Ok(())
}

fn bind(
    ctx: &Context,
    step: &str,
    source: Option<&Path>,
    target: &Path,
    opts: &Options,
) -> Result<(), StepError> {
    let Some(source) = source else {
        return Err(StepError::new(Origin::ContainerInit, step)
            .detail("a bind mount has no source")
            .hint("set mounts[].source to the host path to bind"));
    };
    let source = if source.is_relative() {
        ctx.bundle.join(source)
    } else {
        source.to_path_buf()
    };
    let meta = std::fs::metadata(&source).map_err(|e| {
        fail_io(step, &e).hint("the bind source is missing on the node: create it, or fix mounts[].source in config.json")
    })?;
    let made = if meta.is_dir() {
        std::fs::create_dir_all(target)
    } else {
        target
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| match std::fs::symlink_metadata(target) {
                Ok(_) => Ok(()),
                Err(_) => std::fs::File::create(target).map(drop),
            })
    };
    made.map_err(|e| fail_io(format!("{step} (create the mount point)"), &e))?;
    let bind_flags = opts.flags & (MsFlags::MS_BIND | MsFlags::MS_REC);
    mount(
        Some(&source),
        target,
        NONE,
        bind_flags | MsFlags::MS_BIND,
        NONE,
    )
    .map_err(|e| fail(step, e))?;
    let extra = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
    if !extra.is_empty() {
        let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | extra | kept_flags(target);
        mount(NONE, target, NONE, flags, NONE)
            .map_err(|e| fail(format!("{step} (remount with its options)"), e))?;
    }
    Ok(())
}

/// Mount points of this mount namespace, from /proc/self/mountinfo.
fn mount_points() -> std::io::Result<Vec<PathBuf>> {
    let text = std::fs::read("/proc/self/mountinfo")?;
    Ok(text
        .split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(|p| PathBuf::from(std::ffi::OsStr::from_bytes(&unescape(p))))
        .collect())
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\'
            && i + 3 < s.len()
            && s[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((s[i + 1] - b'0') * 64 + (s[i + 2] - b'0') * 8 + (s[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// Detaches every mount that is neither "/", nor the rootfs or below it, nor above it: after
/// MS_MOVE they would stay in the namespace under the container's root, and a full procfs or
/// sysfs there would let the container mount new ones unmasked.
fn detach_outside(rootfs: &Path) -> Result<(), StepError> {
    let mut points: Vec<PathBuf> = mount_points()
        .map_err(|e| fail_io("read /proc/self/mountinfo", &e))?
        .into_iter()
        .filter(|p| p != Path::new("/") && !p.starts_with(rootfs) && !rootfs.starts_with(p))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    for p in points {
        match umount2(&p, MntFlags::MNT_DETACH) {
            // Gone with a parent detached before it.
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(fail(format!("detach the node mount {}", p.display()), e)),
        }
    }
    Ok(())
}

/// Makes the rootfs the process's "/". pivot_root(2) when the kernel allows it; on an
/// initramfs node root it refuses (EINVAL: the root mount has no parent), and the rootfs is
/// moved onto "/" and chroot'ed into instead, as `runc --no-pivot` does. A chroot can be left
/// by a process holding CAP_SYS_CHROOT, so in that mode the other node mounts are detached
/// first, and the caller warns when the spec grants that capability.
pub fn switch_root(rootfs: &Path) -> Result<RootSwitch, StepError> {
    nix::unistd::chdir(rootfs)
        .map_err(|e| fail(format!("chdir to the rootfs {}", rootfs.display()), e))?;
    match nix::unistd::pivot_root(".", ".") {
        Ok(()) => {
            // The old root is now under "."; detach it without telling the node.
            mount(NONE, ".", NONE, MsFlags::MS_SLAVE | MsFlags::MS_REC, NONE)
                .map_err(|e| fail("make the old root a slave", e))?;
            umount2(".", MntFlags::MNT_DETACH).map_err(|e| fail("detach the old root", e))?;
            nix::unistd::chdir("/").map_err(|e| fail("chdir to /", e))?;
            Ok(RootSwitch::PivotRoot)
        }
        Err(Errno::EINVAL) => {
            detach_outside(rootfs)?;
            mount(Some("."), "/", NONE, MsFlags::MS_MOVE, NONE)
                .map_err(|e| fail(format!("move the rootfs {} onto /", rootfs.display()), e))?;
            nix::unistd::chroot(".").map_err(|e| fail("chroot into the rootfs", e))?;
            nix::unistd::chdir("/").map_err(|e| fail("chdir to /", e))?;
            Ok(RootSwitch::MoveChroot)
        }
        Err(e) => Err(fail(format!("pivot_root into {}", rootfs.display()), e)),
    }
}

/// Hides each existing path (resolved inside `rootfs`, before the root switch) as crun does:
/// the node's /dev/null bound read-only over a file, an empty read-only tmpfs (`size=0k`) over
/// a directory.
pub fn mask(rootfs: &Path, paths: &[String]) -> Result<(), StepError> {
    for p in paths {
        let target = resolve_in_root(rootfs, Path::new(p));
        let meta = match std::fs::symlink_metadata(&target) {
            Ok(m) => m,
            Err(_) => continue,
        };
        let step = format!("mask {p}");
        if meta.is_dir() {
            mount(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                Some("size=0k"),
            )
            .map_err(|e| fail(step, e))?;
        } else {
            mount(Some("/dev/null"), &target, NONE, MsFlags::MS_BIND, NONE)
                .map_err(|e| fail(&step, e))?;
            remount_readonly(&target, &step)?;
        }
    }
    Ok(())
}

/// Remounts a bind of `path` read-only with no other flag, as crun does (a nosuid the source
/// mount had is cleared); where the kernel refuses to clear a locked flag (EPERM), with the
/// flags the mount has.
fn remount_readonly(path: &Path, step: &str) -> Result<(), StepError> {
    let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    mount(NONE, path, NONE, flags, NONE)
        .or_else(|e| match e {
            Errno::EPERM => mount(NONE, path, NONE, flags | kept_flags(path), NONE),
            e => Err(e),
        })
        .map_err(|e| fail(step, e))
}

/// Makes each existing path read-only (a bind onto itself, remounted read-only).
pub fn make_readonly(paths: &[String]) -> Result<(), StepError> {
    for p in paths {
        if std::fs::symlink_metadata(p).is_err() {
            continue;
        }
        let step = format!("make {p} read-only");
        mount(
            Some(p.as_str()),
            p.as_str(),
            NONE,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            NONE,
        )
        .map_err(|e| fail(&step, e))?;
        remount_readonly(Path::new(p), &step)?;
    }
    Ok(())
}

/// `root.readonly`: the container's "/" becomes read-only (its other mounts keep their own
/// flags).
pub fn readonly_root() -> Result<(), StepError> {
    let flags =
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | kept_flags(Path::new("/"));
    mount(NONE, "/", NONE, flags, NONE).map_err(|e| fail("make the root read-only", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn options_become_flags_propagation_and_data() {
        let o = parse_options(&s(&[
            "nosuid",
            "noexec",
            "mode=755",
            "size=65536k",
            "ro",
            "rslave",
        ]))
        .unwrap();
        assert_eq!(
            o.flags,
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY
        );
        assert_eq!(o.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
        assert_eq!(o.data, s(&["mode=755", "size=65536k"]));
        assert!(!o.bind);
        let o = parse_options(&s(&["rbind", "ro", "rw"])).unwrap();
        assert!(o.bind);
        assert_eq!(o.flags, MsFlags::MS_BIND | MsFlags::MS_REC);
        let e = parse_options(&s(&["tmpcopyup"])).unwrap_err();
        assert!(e.contains("tmpcopyup"), "{e}");
    }

    #[test]
    fn propagation_names() {
        assert_eq!(propagation("private"), Some(MsFlags::MS_PRIVATE));
        assert_eq!(
            propagation("rshared"),
            Some(MsFlags::MS_SHARED | MsFlags::MS_REC)
        );
        assert_eq!(propagation("rw"), None);
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        std::os::unix::fs::symlink("/real", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", root.join("real/escape")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert_eq!(
            resolve_in_root(root, Path::new("/abs/sub/x")),
            root.join("real/sub/x")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/real/escape/passwd")),
            root.join("etc/passwd")
        );
        assert_eq!(resolve_in_root(root, Path::new("/../../x")), root.join("x"));
        assert!(resolve_in_root(root, Path::new("/loop")).starts_with(root));
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape(br"/a\040b\134c"), b"/a b\\c".to_vec());
        assert_eq!(unescape(br"/x\04"), br"/x\04".to_vec());
    }
}
