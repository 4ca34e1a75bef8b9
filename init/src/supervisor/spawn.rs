//! Starting one service process: fork + exec only (never fork without exec, even though PID 1
//! runs a tokio runtime), with a new session, the service's cgroup, its capability bounding
//! set, optional no-new-privileges, a clean environment and stdio on log pipes or the console.

use super::manifest::ServiceSpec;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// A started process and the read ends of its stdout/stderr (None on the console).
pub struct Spawned {
    pub pid: u32,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// What the supervisor decided for this start, besides the service file.
pub struct Launch<'a> {
    pub spec: &'a ServiceSpec,
    pub notify_socket: Option<&'a Path>,
    /// `cgroup.procs` of the service's cgroup, opened for writing by the parent.
    pub cgroup_procs: Option<&'a File>,
    /// Default PATH for services.
    pub path: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot start {exec}: {source}{hint}")]
    Exec {
        exec: String,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("cannot open the console for {service}: {source}")]
    Console {
        service: String,
        source: std::io::Error,
    },
}

/// Capability numbers to drop from the bounding set: all the kernel knows minus `keep`.
fn caps_to_drop(keep: &[caps::Capability]) -> Vec<libc::c_ulong> {
    caps::read(None, caps::CapSet::Bounding)
        .unwrap_or_else(|_| caps::all())
        .into_iter()
        .filter(|c| !keep.contains(c))
        .map(|c| c.index() as libc::c_ulong)
        .collect()
}

pub fn spawn(launch: &Launch) -> Result<Spawned, SpawnError> {
    let spec = launch.spec;
    let mut cmd = Command::new(&spec.exec);
    cmd.args(&spec.args)
        .env_clear()
        .env("PATH", launch.path)
        .env("TESSERA_SERVICE", &spec.name);
    if let Some(sock) = launch.notify_socket {
        cmd.env(tessera_common::notify::NOTIFY_SOCKET_ENV, sock);
    }
    if let Some(wd) = spec.watchdog {
        cmd.env(
            tessera_common::notify::WATCHDOG_USEC_ENV,
            wd.as_micros().to_string(),
        );
    }
    if spec.console {
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/console")
        };
        let console_err = |source| SpawnError::Console {
            service: spec.name.clone(),
            source,
        };
        cmd.stdin(open().map_err(console_err)?)
            .stdout(open().map_err(console_err)?)
            .stderr(open().map_err(console_err)?);
        if let Ok(term) = std::env::var("TERM") {
            cmd.env("TERM", term);
        }
    } else {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    }
    cmd.envs(&spec.env);

    let drop_caps: Vec<libc::c_ulong> = spec
        .capabilities
        .as_deref()
        .map(caps_to_drop)
        .unwrap_or_default();
    let cgroup_fd = launch.cgroup_procs.map(|f| f.as_raw_fd());
    let no_new_privs = spec.no_new_privileges;
    // SAFETY: runs in the forked child before exec. It only makes raw syscalls (setsid,
    // write, prctl) on values prepared by the parent, and neither allocates nor takes locks,
    // so it is async-signal-safe even though the parent is multi-threaded.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(fd) = cgroup_fd {
                // "0" moves the writing process into the cgroup.
                if libc::write(fd, b"0".as_ptr().cast(), 1) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for &cap in &drop_caps {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| {
        let hint = match source.kind() {
            std::io::ErrorKind::NotFound => " (no such file: check `exec` in the service file and that the image contains it)",
            std::io::ErrorKind::PermissionDenied => " (permission denied: is it executable, and may this supervisor drop capabilities / join cgroups?)",
            _ => "",
        };
        SpawnError::Exec { exec: spec.exec.display().to_string(), source, hint }
    })?;
    // The Child handle is dropped without waiting: the supervisor's reaper is the single
    // owner of exit statuses.
    Ok(Spawned {
        pid: child.id(),
        stdout: child.stdout.take().map(OwnedFd::from),
        stderr: child.stderr.take().map(OwnedFd::from),
    })
}

/// Writes a value into a cgroup control file, with the file named in the error.
pub fn write_control(path: &Path, value: &str) -> std::io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes()).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("writing {value:?} to {}: {e}", path.display()),
        )
    })
}
