//! The container's /dev: the OCI default devices (null, zero, full, random, urandom, tty),
//! config.json's `linux.devices`, and the usual symlinks (fd, stdin, stdout, stderr, ptmx,
//! core). A node is made with mknod; where the kernel refuses mknod the node's own device is
//! bound over an empty file instead.

use super::mounts::resolve_in_root;
use super::protocol::{Origin, StepError};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};
use std::path::Path;

/// (name, major, minor) of the devices every container has, mode 0666, owned by root.
pub const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// (link in /dev, target).
pub const DEV_SYMLINKS: [(&str, &str); 6] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
    ("core", "/proc/kcore"),
];

struct Node<'a> {
    /// Where it goes, as the container sees it.
    path: &'a Path,
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
}

fn create(rootfs: &Path, node: &Node) -> Result<(), StepError> {
    let target = resolve_in_root(rootfs, node.path);
    let step = format!("create the device {}", node.path.display());
    let io_err = |e: std::io::Error| StepError::io(Origin::ContainerInit, step.clone(), &e);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(io_err)?;
    }
    match std::fs::remove_file(&target) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(e)),
        _ => {}
    }
    let perm = Mode::from_bits_truncate(node.mode & 0o7777);
    match mknod(&target, node.kind, perm, makedev(node.major, node.minor)) {
        Ok(()) => {}
        Err(nix::errno::Errno::EPERM) if node.kind != SFlag::S_IFIFO => {
            // No mknod here (a restricted node): bind the node's own device.
            std::fs::File::create(&target).map_err(io_err)?;
            mount(
                Some(node.path),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| {
                StepError::errno(
                    Origin::ContainerInit,
                    format!("{step} (bind from the node)"),
                    e,
                )
            })?;
        }
        Err(e) => return Err(StepError::errno(Origin::ContainerInit, step, e)),
    }
    // mknod honours the umask; the mode asked for is the mode wanted.
    std::fs::set_permissions(
        &target,
        std::os::unix::fs::PermissionsExt::from_mode(node.mode & 0o7777),
    )
    .map_err(io_err)?;
    if node.uid.is_some() || node.gid.is_some() {
        std::os::unix::fs::chown(&target, node.uid, node.gid).map_err(io_err)?;
    }
    Ok(())
}

/// The default devices and the /dev symlinks, in a /dev the spec mounted (a tmpfs).
pub fn create_defaults(rootfs: &Path) -> Result<(), StepError> {
    for (name, major, minor) in DEFAULT_DEVICES {
        let path = Path::new("/dev").join(name);
        create(
            rootfs,
            &Node {
                path: &path,
                kind: SFlag::S_IFCHR,
                major,
                minor,
                mode: 0o666,
                uid: None,
                gid: None,
            },
        )?;
    }
    let dev = resolve_in_root(rootfs, Path::new("/dev"));
    for (name, target) in DEV_SYMLINKS {
        let link = dev.join(name);
        if std::fs::symlink_metadata(&link).is_ok() {
            continue; // e.g. a device of linux.devices at that name
        }
        std::os::unix::fs::symlink(target, &link).map_err(|e| {
            StepError::io(
                Origin::ContainerInit,
                format!("create the symlink /dev/{name}"),
                &e,
            )
        })?;
    }
    Ok(())
}

/// config.json's `linux.devices`.
pub fn create_listed(rootfs: &Path, devices: &[LinuxDevice]) -> Result<(), StepError> {
    for d in devices {
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(StepError::new(
                    Origin::ContainerInit,
                    format!("create the device {}", d.path().display()),
                )
                .detail("type \"a\" is not a device type")
                .hint("give linux.devices[].type as c, b, u or p"))
            }
        };
        let (major, minor) = (d.major(), d.minor());
        if major < 0 || minor < 0 {
            return Err(StepError::new(
                Origin::ContainerInit,
                format!("create the device {}", d.path().display()),
            )
            .detail("negative major or minor number")
            .hint("fix linux.devices[].major/minor in config.json"));
        }
        create(
            rootfs,
            &Node {
                path: d.path(),
                kind,
                major: major as u64,
                minor: minor as u64,
                mode: d.file_mode().unwrap_or(0o666),
                uid: d.uid(),
                gid: d.gid(),
            },
        )?;
    }
    Ok(())
}
