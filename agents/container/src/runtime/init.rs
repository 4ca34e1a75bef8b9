//! The container's init: the process the shim clones into the new namespaces (it is PID 1 of
//! the container), until it execs `process.args`. It reads its [`InitConfig`] from the config
//! pipe, then, in this order:
//!
//! 1. joins the namespaces that name a path, makes its cgroup namespace, brings `lo` up in a
//!    new network namespace;
//! 2. builds the filesystem (`mounts`, `devices`): propagation, rootfs bind, `mounts`, /dev;
//!    sets the hostname; masks paths; switches root (pivot_root, or MS_MOVE + chroot on an
//!    initramfs); sysctls; read-only paths; a read-only root;
//! 3. compiles the seccomp filter, applies rlimits and oom_score_adj while it still may,
//!    then takes the user's identity (supplementary groups, gid, uid, keeping the capability
//!    sets across the change), applies the capability sets, the umask, no_new_privs and cwd,
//!    and finds the program on `PATH` (so a missing program fails create, not start);
//! 4. reports Ready and blocks on `exec.fifo` until start; then installs the seccomp filter
//!    and execs with exactly `process.env`.
//!
//! Any failure is sent to the shim as a [`StepError`] naming the step, then the init exits.

use super::namespaces;
use super::protocol::{self, InitConfig, InitMessage, Origin, RootSwitch, StepError};
use super::{capabilities, devices, mounts, rlimits, seccomp};
use nix::errno::Errno;
use oci_spec::runtime::{Capability, Linux, LinuxNamespaceType, Process, User};
use std::convert::Infallible;
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The init's file descriptors, made by the shim before the clone.
pub struct InitFds {
    /// Read end of the config pipe.
    pub config: OwnedFd,
    /// Write end of the report pipe (close-on-exec).
    pub report: OwnedFd,
    /// `exec.fifo`, opened read-write: start() writes a byte into it.
    pub fifo: OwnedFd,
    /// /dev/null, and the write ends of the stdout and stderr pipes.
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn err(step: impl Into<String>, e: Errno) -> StepError {
    StepError::errno(Origin::ContainerInit, step, e)
}

fn err_io(step: impl Into<String>, e: &std::io::Error) -> StepError {
    StepError::io(Origin::ContainerInit, step, e)
}

/// Runs in the cloned child and never returns: exec, or exit after reporting the failure.
pub fn main(fds: InitFds) -> ! {
    let mut report = File::from(fds.report);
    let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(
            fds.config,
            fds.fifo,
            [fds.stdin, fds.stdout, fds.stderr],
            &mut report,
        )
    })) {
        Ok(Ok(never)) => match never {},
        Ok(Err(e)) => {
            let _ = protocol::send(&mut report, &InitMessage::Failed(e));
            1
        }
        Err(_) => 2, // the panic message went to stderr, which the shim reads
    };
    // SAFETY: _exit ends this process without running the shim's atexit handlers or
    // destructors of memory copied from it.
    unsafe { libc::_exit(code) }
}

fn run(
    config: OwnedFd,
    fifo: OwnedFd,
    stdio: [OwnedFd; 3],
    report: &mut File,
) -> Result<Infallible, StepError> {
    for (target, fd) in stdio.iter().enumerate() {
        nix::unistd::dup2(fd.as_raw_fd(), target as i32).map_err(|e| err("redirect stdio", e))?;
    }
    drop(stdio);
    let mut bytes = Vec::new();
    File::from(config)
        .read_to_end(&mut bytes)
        .map_err(|e| err_io("read the configuration pipe", &e))?;
    let cfg: InitConfig = protocol::parse(&bytes).map_err(|e| {
        StepError::new(Origin::ContainerInit, "read the configuration pipe")
            .detail(e.to_string())
            .hint("the shim and the init are different builds: reinstall the tessera binary")
    })?;
    let spec = &cfg.spec;
    let linux = spec.linux().clone().unwrap_or_default();
    let process = spec.process().clone().ok_or_else(|| {
        StepError::new(Origin::ContainerInit, "read process")
            .hint("config.json needs a \"process\" object")
    })?;
    // Device nodes and mount points get exactly the modes asked for.
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());

    namespaces::enter_in_init(&cfg.namespaces)?;
    if cfg.namespaces.creates(LinuxNamespaceType::Network) {
        loopback_up()?;
    }

    mounts::prepare_root(&cfg.rootfs, linux.rootfs_propagation().as_deref())?;
    let spec_mounts = spec.mounts().clone().unwrap_or_default();
    let ctx = mounts::Context {
        rootfs: &cfg.rootfs,
        bundle: &cfg.bundle,
        plan: &cfg.namespaces,
    };
    mounts::mount_all(&ctx, &spec_mounts)?;
    if spec_mounts
        .iter()
        .any(|m| m.destination() == Path::new("/dev"))
    {
        devices::create_defaults(&cfg.rootfs)?;
    }
    devices::create_listed(&cfg.rootfs, linux.devices().as_deref().unwrap_or_default())?;
    set_names(
        spec.hostname().as_deref(),
        spec.domainname().as_deref(),
        &cfg,
    )?;

    // Before the switch: files are masked with the node's /dev/null, as crun does, which the
    // switch puts out of reach.
    mounts::mask(
        &cfg.rootfs,
        linux.masked_paths().as_deref().unwrap_or_default(),
    )?;
    let root_switch = mounts::switch_root(&cfg.rootfs)?;
    for (key, value) in linux.sysctl().iter().flatten() {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|e| {
            err_io(format!("set the sysctl {key}={value}"), &e)
                .hint("the kernel has no such sysctl, or it is not namespaced: fix linux.sysctl in config.json")
        })?;
    }
    mounts::make_readonly(linux.readonly_paths().as_deref().unwrap_or_default())?;
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        mounts::readonly_root()?;
    }

    let mut warnings = Vec::new();
    if root_switch == RootSwitch::MoveChroot && grants_chroot(&process) {
        warnings.push(
            "the rootfs was entered with MS_MOVE + chroot (the node root is an initramfs) and process.capabilities grants CAP_SYS_CHROOT: a process holding it can leave the chroot; drop CAP_SYS_CHROOT unless the container needs it"
                .to_string(),
        );
    }
    become_process(&process, &linux, &mut || {
        send(
            report,
            &InitMessage::Ready {
                root_switch,
                warnings: std::mem::take(&mut warnings),
            },
        )?;
        wait_for_start(&fifo)?;
        send(report, &InitMessage::Starting)
    })
}

/// Step 3 and the exec of step 4, for the init and for `exec` in a running container: the
/// seccomp filter, rlimits, oom_score_adj, identity, capabilities, umask, no_new_privs, cwd,
/// the program found; then `gate` (the init reports Ready and waits for start), the filter
/// installed where crun installs it, and execve with exactly `process.env`.
pub(super) fn become_process(
    process: &Process,
    linux: &Linux,
    gate: &mut dyn FnMut() -> Result<(), StepError>,
) -> Result<Infallible, StepError> {
    // The filter is compiled while the init is still root; config.json's linux.seccomp, or
    // Docker's default profile for the capabilities the process will hold.
    let filter = match linux.seccomp() {
        Some(profile) => seccomp::compile(Some(profile)),
        None => {
            let bounding = process
                .capabilities()
                .as_ref()
                .and_then(|c| c.bounding().clone())
                .unwrap_or_default();
            seccomp::compile(Some(&seccomp::default_profile(&bounding)))
        }
    }
    .map_err(|e| {
        err_io("compile the seccomp filter", &e).hint("fix linux.seccomp in config.json")
    })?;
    rlimits::apply(process.rlimits().as_deref().unwrap_or_default()).map_err(|e| {
        err_io("set process.rlimits", &e).hint("fix process.rlimits in config.json")
    })?;
    let no_new_privs = process.no_new_privileges().unwrap_or(false);
    // As crun: without no_new_privs the filter must go in while CAP_SYS_ADMIN is still held
    // (before the uid and capability changes); with it, right before execve.
    if !no_new_privs {
        seccomp::install(&filter).map_err(|e| err_io("install the seccomp filter", &e))?;
    }
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| err_io(format!("set oom_score_adj {adj}"), &e))?;
    }
    set_identity(process.user())?;
    capabilities::apply(process.capabilities().as_ref()).map_err(|e| {
        err_io("set process.capabilities", &e).hint("fix process.capabilities in config.json")
    })?;
    let umask = process.user().umask().unwrap_or(0o022);
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    if no_new_privs {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(err("set no_new_privs", Errno::last()));
        }
    }
    let cwd = process.cwd();
    nix::unistd::chdir(cwd).map_err(|e| {
        err(format!("chdir to process.cwd {}", cwd.display()), e).hint(
            "create that directory in the rootfs, readable by process.user, or fix process.cwd",
        )
    })?;
    let exec = Exec::new(process)?;
    gate()?;
    if no_new_privs {
        seccomp::install(&filter).map_err(|e| err_io("install the seccomp filter", &e))?;
    }
    reset_signals();
    let e = nix::unistd::execve(&exec.path, &exec.argv, &exec.envp).unwrap_err();
    Err(err(format!("exec {}", exec.path.to_string_lossy()), e))
}

fn send(report: &mut File, message: &InitMessage) -> Result<(), StepError> {
    protocol::send(&mut *report, message)
        .map_err(|e| err_io("report to the shim", &e).hint("the shim is gone"))
}

/// Blocks until start() writes its byte into exec.fifo.
fn wait_for_start(fifo: &OwnedFd) -> Result<(), StepError> {
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(fifo.as_raw_fd(), &mut byte) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(err("wait for start on exec.fifo", e)),
        }
    }
}

fn set_names(
    hostname: Option<&str>,
    domainname: Option<&str>,
    cfg: &InitConfig,
) -> Result<(), StepError> {
    let own_uts = cfg.namespaces.creates(LinuxNamespaceType::Uts);
    for (what, name) in [("hostname", hostname), ("domainname", domainname)] {
        let Some(name) = name else { continue };
        if !own_uts {
            return Err(
                StepError::new(Origin::ContainerInit, format!("set the {what} {name:?}"))
                    .detail("the container shares the node's UTS namespace")
                    .hint(format!(
                        "add {{\"type\": \"uts\"}} to linux.namespaces, or remove \"{what}\""
                    )),
            );
        }
        let r = if what == "hostname" {
            nix::unistd::sethostname(name)
        } else {
            // SAFETY: the pointer and length describe `name`, which outlives the call.
            Errno::result(unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) })
                .map(drop)
        };
        r.map_err(|e| err(format!("set the {what} {name:?}"), e))?;
    }
    Ok(())
}

/// Brings `lo` up: a new network namespace has it down.
fn loopback_up() -> Result<(), StepError> {
    let step = "bring up lo";
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| err(step, e))?;
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write `req`, a live ifreq, on our socket.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) < 0 {
            return Err(err(step, Errno::last()));
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &mut req) < 0 {
            return Err(err(step, Errno::last()));
        }
    }
    Ok(())
}

/// Supplementary groups, gid, uid; the capability sets survive the uid change (keepcaps) so
/// capabilities::apply decides what stays.
fn set_identity(user: &User) -> Result<(), StepError> {
    use nix::unistd::{Gid, Uid};
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
        return Err(err("set keepcaps", Errno::last()));
    }
    let groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups).map_err(|e| err("set process.user.additionalGids", e))?;
    let (uid, gid) = (Uid::from_raw(user.uid()), Gid::from_raw(user.gid()));
    nix::unistd::setresgid(gid, gid, gid)
        .map_err(|e| err(format!("set process.user.gid {gid}"), e))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| err(format!("set process.user.uid {uid}"), e))
}

fn grants_chroot(process: &Process) -> bool {
    process
        .capabilities()
        .as_ref()
        .and_then(|c| c.bounding().as_ref())
        .is_some_and(|b| b.contains(&Capability::SysChroot))
}

/// The program, its argv and envp, ready for execve.
struct Exec {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

fn cstring(what: &str, s: &[u8]) -> Result<CString, StepError> {
    CString::new(s).map_err(|_| {
        StepError::new(Origin::ContainerInit, format!("read {what}"))
            .detail("contains a NUL byte")
            .hint(format!("remove the NUL byte from {what} in config.json"))
    })
}

impl Exec {
    fn new(process: &Process) -> Result<Exec, StepError> {
        let args = process.args().clone().unwrap_or_default();
        let Some(name) = args.first() else {
            return Err(StepError::new(Origin::ContainerInit, "read process.args")
                .detail("it is empty")
                .hint("give the program to run in process.args"));
        };
        let mut env = process.env().clone().unwrap_or_default();
        // As crun: without HOME in process.env, the user's home from the container's
        // /etc/passwd, else "/".
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
            env.push(format!("HOME={}", home_of(&passwd, process.user().uid())));
        }
        let path_var = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        let path = find_program(name, path_var)?;
        Ok(Exec {
            path: cstring("process.args", path.as_os_str().as_bytes())?,
            argv: args
                .iter()
                .map(|a| cstring("process.args", a.as_bytes()))
                .collect::<Result<_, _>>()?,
            envp: env
                .iter()
                .map(|e| cstring("process.env", e.as_bytes()))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// The home directory of `uid` in passwd(5) text; "/" when it has none.
fn home_of(passwd: &str, uid: u32) -> &str {
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && f[2].parse() == Ok(uid))
        .map_or("/", |f| f[5])
}

fn executable(path: &Path) -> Result<(), Errno> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::ENOENT)))?;
    if !meta.is_file() {
        return Err(Errno::EACCES);
    }
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK)
}

/// `name` as execvp would find it, with the container's PATH.
fn find_program(name: &str, path_var: &str) -> Result<PathBuf, StepError> {
    let step = format!("find process.args[0] {name:?}");
    if name.contains('/') {
        return executable(Path::new(name)).map(|_| PathBuf::from(name)).map_err(|e| {
            err(step, e).hint("process.args[0] names a program the rootfs does not have (or not executable by process.user): fix process.args or add it to the image")
        });
    }
    let mut last = Errno::ENOENT;
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(name);
        match executable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => {}
            Err(e) => last = e,
        }
    }
    Err(err(step, last).hint(format!(
        "no executable of that name in the container's PATH ({path_var}): fix process.args or add the program to the image"
    )))
}

/// Signal dispositions and mask as a fresh process has them: the shim (a Rust program)
/// ignores SIGPIPE, and ignored signals survive exec.
fn reset_signals() {
    for sig in 1..libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: restoring the default disposition; no handler code is involved.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    let _ = std::io::stderr().flush();
}

#[cfg(test)]
mod tests {
    #[test]
    fn home_comes_from_passwd_or_is_the_root() {
        let passwd =
            "root:x:0:0:root:/root:/bin/sh\nbad line\nprobe:x:1000:1000::/home/probe:/bin/sh\n";
        assert_eq!(super::home_of(passwd, 0), "/root");
        assert_eq!(super::home_of(passwd, 1000), "/home/probe");
        assert_eq!(super::home_of(passwd, 7), "/");
        assert_eq!(super::home_of("", 0), "/");
    }
}
