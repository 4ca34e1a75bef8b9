//! Starting one service process with vfork + exec (`clone(CLONE_VM | CLONE_VFORK)`): the
//! child borrows PID 1's memory until it execs, so nothing is copied — under QEMU's TCG that
//! is ~30 ms per service faster than fork — and PID 1 never forks without exec. Before exec
//! the child makes itself a session leader, joins the service's cgroup, drops capabilities
//! from its bounding set, optionally sets no-new-privileges, and takes its stdio. Everything
//! it needs is prepared by the parent; the child only makes raw syscalls.

use super::manifest::ServiceSpec;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

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
    /// Read end of the pipe holding the service's identity token; becomes fd 3.
    pub identity_fd: Option<std::os::fd::RawFd>,
}

/// The fd number a service finds its identity token on (`TESSERA_IDENTITY_FD`).
pub const IDENTITY_FD: i32 = 3;
pub const IDENTITY_FD_ENV: &str = "TESSERA_IDENTITY_FD";

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot start {exec}: {source}{hint}")]
    Exec {
        exec: String,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("cannot start {exec}: {step} failed in the child: {source}")]
    Setup {
        exec: String,
        step: &'static str,
        source: std::io::Error,
    },
    #[error("cannot prepare the start of {exec}: {source}")]
    Prepare {
        exec: String,
        source: std::io::Error,
    },
}

/// Capability numbers to drop from the bounding set: all PID 1's holds minus `keep`.
fn caps_to_drop(keep: &[caps::Capability]) -> Vec<libc::c_ulong> {
    // PID 1's own bounding set never changes: read it once (one prctl per capability).
    static BOUNDING: std::sync::OnceLock<caps::CapsHashSet> = std::sync::OnceLock::new();
    BOUNDING
        .get_or_init(|| caps::read(None, caps::CapSet::Bounding).unwrap_or_else(|_| caps::all()))
        .iter()
        .copied()
        .filter(|c| !keep.contains(c))
        .map(|c| c.index() as libc::c_ulong)
        .collect()
}

fn cstring(bytes: &[u8]) -> std::io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "contains a NUL byte"))
}

/// The service's environment: a clean one, not PID 1's.
fn environment(launch: &Launch) -> Vec<(String, String)> {
    let spec = launch.spec;
    let mut env = vec![
        ("PATH".to_string(), launch.path.to_string()),
        ("TESSERA_SERVICE".to_string(), spec.name.clone()),
    ];
    if let Some(sock) = launch.notify_socket {
        env.push((
            tessera_common::notify::NOTIFY_SOCKET_ENV.into(),
            sock.display().to_string(),
        ));
    }
    if let Some(wd) = spec.watchdog {
        env.push((
            tessera_common::notify::WATCHDOG_USEC_ENV.into(),
            wd.as_micros().to_string(),
        ));
    }
    if launch.identity_fd.is_some() {
        // The number of the fd, never the token itself.
        env.push((IDENTITY_FD_ENV.into(), IDENTITY_FD.to_string()));
    }
    if spec.console {
        if let Ok(term) = std::env::var("TERM") {
            env.push(("TERM".into(), term));
        }
    }
    for (k, v) in &spec.env {
        env.retain(|(key, _)| key != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

/// Which setup step failed in the child (index into STEPS) and its errno.
const STEPS: [&str; 6] = [
    "setsid",
    "joining the cgroup",
    "dropping capabilities",
    "setting no-new-privileges",
    "redirecting stdio",
    "exec",
];

pub fn spawn(launch: &Launch) -> Result<Spawned, SpawnError> {
    let spec = launch.spec;
    let exec_name = spec.exec.display().to_string();
    let prepare = |source| SpawnError::Prepare {
        exec: exec_name.clone(),
        source,
    };

    // Everything the child touches is built here, before the clone.
    let path = cstring(spec.exec.as_os_str().as_bytes()).map_err(prepare)?;
    let argv_owned: Vec<CString> = std::iter::once(spec.exec.as_os_str().as_bytes())
        .chain(spec.args.iter().map(|a| a.as_bytes()))
        .map(cstring)
        .collect::<Result<_, _>>()
        .map_err(prepare)?;
    let envp_owned: Vec<CString> = environment(launch)
        .into_iter()
        .map(|(k, v)| cstring(format!("{k}={v}").as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(prepare)?;
    let argv: Vec<*const libc::c_char> = argv_owned
        .iter()
        .map(|c| c.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let envp: Vec<*const libc::c_char> = envp_owned
        .iter()
        .map(|c| c.as_ptr())
        .chain([std::ptr::null()])
        .collect();

    let (stdio, parent_ends): ([OwnedFd; 3], (Option<OwnedFd>, Option<OwnedFd>)) = if spec.console {
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/console")
                .map(OwnedFd::from)
        };
        (
            [
                open().map_err(prepare)?,
                open().map_err(prepare)?,
                open().map_err(prepare)?,
            ],
            (None, None),
        )
    } else {
        let null = OpenOptions::new()
            .read(true)
            .open("/dev/null")
            .map(OwnedFd::from)
            .map_err(prepare)?;
        let (out_r, out_w) = pipe().map_err(prepare)?;
        let (err_r, err_w) = pipe().map_err(prepare)?;
        ([null, out_w, err_w], (Some(out_r), Some(err_r)))
    };
    let stdio_fds = [
        stdio[0].as_raw_fd(),
        stdio[1].as_raw_fd(),
        stdio[2].as_raw_fd(),
    ];
    let drop_caps: Vec<libc::c_ulong> = spec
        .capabilities
        .as_deref()
        .map(caps_to_drop)
        .unwrap_or_default();
    let cgroup_fd = launch.cgroup_procs.map(|f| f.as_raw_fd());
    let no_new_privs = spec.no_new_privileges;
    let identity_fd = launch.identity_fd;

    // Written by the child (shared memory) when a step fails: (step, errno).
    let mut failure: (usize, i32) = (usize::MAX, 0);
    let failure_ptr: *mut (usize, i32) = &mut failure;
    let mut stack = vec![0u8; 64 * 1024];
    let child = Box::new(move || -> isize {
        let fail = |step: usize| -> isize {
            // SAFETY: the parent is suspended (CLONE_VFORK) and `failure` outlives the child's
            // use of it; errno is read from this thread's own errno.
            unsafe { *failure_ptr = (step, *libc::__errno_location()) };
            127
        };
        // SAFETY (whole block): raw syscalls on values prepared by the parent; no allocation,
        // no locks — the child shares the parent's memory until exec.
        unsafe {
            if libc::setsid() < 0 {
                return fail(0);
            }
            if let Some(fd) = cgroup_fd {
                // "0" moves the writing process into the cgroup.
                if libc::write(fd, b"0".as_ptr().cast(), 1) < 0 {
                    return fail(1);
                }
            }
            for &cap in &drop_caps {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 {
                    return fail(2);
                }
            }
            if no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                return fail(3);
            }
            for (target, &fd) in stdio_fds.iter().enumerate() {
                if libc::dup2(fd, target as i32) < 0 {
                    return fail(4);
                }
            }
            if let Some(fd) = identity_fd {
                // dup2 clears close-on-exec on the copy; an fd already at 3 needs it cleared.
                let ok = if fd == IDENTITY_FD {
                    libc::fcntl(fd, libc::F_SETFD, 0) >= 0
                } else {
                    libc::dup2(fd, IDENTITY_FD) >= 0
                };
                if !ok {
                    return fail(5);
                }
            }
            // Rust ignores SIGPIPE in its own processes; services get the default back.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
        }
        fail(6)
    });
    let flags = nix::sched::CloneFlags::CLONE_VM | nix::sched::CloneFlags::CLONE_VFORK;
    // SAFETY: the child runs on its own stack, shares memory only while the parent is
    // suspended by CLONE_VFORK, and ends in execve or exit without unwinding into our frames.
    let pid = unsafe { nix::sched::clone(child, &mut stack, flags, Some(libc::SIGCHLD)) }
        .map_err(|e| prepare(e.into()))?;
    drop(stdio); // the child has its copies
    if failure.0 != usize::MAX {
        // The child exited (status 127); the reaper collects it as an unknown pid.
        let source = std::io::Error::from_raw_os_error(failure.1);
        let (step, exec) = (STEPS[failure.0.min(STEPS.len() - 1)], exec_name);
        return Err(if step == "exec" {
            let hint = match source.kind() {
                std::io::ErrorKind::NotFound => " (no such file: check `exec` in the service file and that the image contains it)",
                std::io::ErrorKind::PermissionDenied => " (permission denied: is it executable?)",
                _ => "",
            };
            SpawnError::Exec { exec, source, hint }
        } else {
            SpawnError::Setup { exec, step, source }
        });
    }
    Ok(Spawned {
        pid: pid.as_raw() as u32,
        stdout: parent_ends.0,
        stderr: parent_ends.1,
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
