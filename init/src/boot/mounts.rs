//! The API filesystems PID 1 mounts, and the console on fds 0-2.

use crate::supervisor::logs::LogHub;
use nix::mount::{mount, MsFlags};
use std::os::fd::AsRawFd;
use tessera_common::log::{Level, LogEvent};

struct Mount {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

const NOSUID_NODEV: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);
const SAFE: MsFlags = NOSUID_NODEV.union(MsFlags::MS_NOEXEC);

/// In mount order.
const MOUNTS: &[Mount] = &[
    Mount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: SAFE,
        data: None,
    },
    Mount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: SAFE,
        data: None,
    },
    Mount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: Some("mode=0755"),
    },
    Mount {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: Some("mode=0620,ptmxmode=0666"),
    },
    Mount {
        source: "tmpfs",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: NOSUID_NODEV,
        data: Some("mode=1777"),
    },
    Mount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: NOSUID_NODEV,
        data: Some("mode=0755"),
    },
    Mount {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: NOSUID_NODEV,
        data: Some("mode=1777"),
    },
    Mount {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: SAFE,
        data: Some("nsdelegate"),
    },
];

const DEV_LINKS: &[(&str, &str)] = &[
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
    ("pts/ptmx", "/dev/ptmx"),
];

pub fn mount_all(hub: &LogHub) -> Result<(), String> {
    let mut failed = Vec::new();
    for m in MOUNTS {
        let _ = std::fs::create_dir_all(m.target);
        match mount(Some(m.source), m.target, Some(m.fstype), m.flags, m.data) {
            Ok(()) => {}
            Err(nix::errno::Errno::EBUSY) => {} // already mounted (e.g. by the kernel)
            Err(e) => {
                hub.push(
                    LogEvent::new("init", Level::Error, "mount failed")
                        .field("target", m.target)
                        .field("fstype", m.fstype)
                        .field("error", e.desc()),
                );
                failed.push(m.target);
            }
        }
    }
    for (target, link) in DEV_LINKS {
        if std::fs::symlink_metadata(link).is_err() {
            let _ = std::os::unix::fs::symlink(target, link);
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("could not mount {}", failed.join(", ")))
    }
}

/// The kernel opens /dev/console as fds 0-2 for init when the initramfs has the node; if it
/// did not, open it now that devtmpfs is mounted.
pub fn attach_console() -> Result<(), String> {
    if nix::fcntl::fcntl(1, nix::fcntl::FcntlArg::F_GETFD).is_ok() {
        return Ok(());
    }
    let console = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
        .map_err(|e| format!("cannot open /dev/console: {e}"))?;
    for fd in 0..3 {
        // SAFETY: dup2 on a valid open descriptor onto 0-2, which are closed here.
        if unsafe { libc::dup2(console.as_raw_fd(), fd) } < 0 {
            return Err(format!(
                "dup2 console to fd {fd}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}
