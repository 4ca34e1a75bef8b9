//! The runtime as the agent calls it. The agent is multi-threaded (tokio), so it never forks:
//! `create` execs the shim, and everything else works from the state directory alone
//! (`state.json`, `exit.json`, `exec.fifo`, pids checked with their start times), so a
//! restarted agent drives the containers its previous run created. These calls block (for at
//! most their timeout); an async caller runs them with `spawn_blocking`.

use super::cgroup::Cgroup;
use super::logs::LOG_FILE;
use super::protocol::{self, ShimMessage, StepError};
use super::state::{ExitRecord, Liveness, Recorded, StateFile, FIFO_FILE, SHIM_LOG};
use super::{CreateOptions, Created, Exit, RuntimeError, State, Status};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use std::io::{BufRead, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long start waits for the shim to see the init exec.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a SIGKILLed container may take to be reported stopped.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

fn io_err(what: &'static str, path: &Path, source: std::io::Error) -> RuntimeError {
    RuntimeError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Container ids become directory and cgroup names.
fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

/// Makes the calling process the subreaper of its descendants, so that the init of a
/// container whose shim crashed is reparented to the agent, not lost to PID 1. Call once at
/// the agent's start.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The container's output as JSON-lines log events (rotated to `log.jsonl.1`).
pub fn log_path(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join(LOG_FILE)
}

/// Creates the container: its state directory, its shim (exec'd), and its init, set up in its
/// namespaces and blocked until [`start`]. On failure nothing is left: no process, no state
/// directory, no cgroup.
pub fn create(o: &CreateOptions) -> Result<Created, RuntimeError> {
    if !valid_id(o.id) {
        return Err(RuntimeError::InvalidId(o.id.to_string()));
    }
    let dir = o.state_dir;
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| io_err("create the state directory", parent, e))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(RuntimeError::Exists(dir.to_path_buf()))
        }
        Err(e) => return Err(io_err("create the state directory", dir, e)),
    }
    let result = spawn_shim(o);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

fn spawn_shim(o: &CreateOptions) -> Result<Created, RuntimeError> {
    let dir = o.state_dir;
    let shim_log_path = dir.join(SHIM_LOG);
    let shim_log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&shim_log_path)
        .map_err(|e| io_err("create", &shim_log_path, e))?;
    let mut cmd = Command::new(o.shim);
    cmd.args(o.shim_args)
        .arg("--state")
        .arg(dir)
        .arg("--id")
        .arg(o.id)
        .arg("--bundle")
        .arg(o.bundle)
        .arg("--net")
        .arg(o.net.as_str());
    if let Some(p) = o.cgroup_parent {
        cmd.arg("--cgroup-parent").arg(p);
    }
    // A container identity: the token pipe is the shim's stdin (it moves it to fd 3).
    let stdin = match o.identity {
        Some(h) => {
            cmd.arg("--identity").arg(h.certmgr_socket);
            Stdio::from(
                h.token
                    .try_clone()
                    .map_err(|e| io_err("duplicate the identity pipe", dir, e))?,
            )
        }
        None => Stdio::null(),
    };
    let mut child = cmd
        .env_clear()
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(shim_log)
        .spawn()
        .map_err(|source| RuntimeError::SpawnShim {
            shim: o.shim.to_path_buf(),
            source,
        })?;
    let shim_pid = child.id();
    let mut line = Vec::new();
    if let Some(out) = child.stdout.take() {
        // The shim answers once, or exits; it enforces the setup timeout itself.
        let _ = std::io::BufReader::new(out).read_until(b'\n', &mut line);
    }
    match protocol::parse::<ShimMessage>(line.trim_ascii_end()) {
        // The shim lives on; state() and wait() reap it once it has exited.
        Ok(ShimMessage::Created { init_pid }) => Ok(Created { init_pid, shim_pid }),
        Ok(ShimMessage::Failed(e)) => {
            let _ = child.wait();
            Err(RuntimeError::Step(e))
        }
        Err(_) => {
            let status = child
                .wait()
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string());
            let log = std::fs::read_to_string(&shim_log_path).unwrap_or_default();
            Err(RuntimeError::ShimDied {
                id: o.id.to_string(),
                status,
                log: log.trim().chars().take(2000).collect(),
            })
        }
    }
}

/// The state file and the status the processes show now.
fn load(dir: &Path) -> Result<(StateFile, Status, Option<StepError>), RuntimeError> {
    let file = match StateFile::read(dir) {
        Ok(Some(f)) => f,
        Ok(None) => return Err(RuntimeError::NotFound(dir.to_path_buf())),
        Err(e) => return Err(io_err("read", &dir.join(super::state::STATE_FILE), e)),
    };
    let exit =
        || ExitRecord::read(dir).map_err(|e| io_err("read", &dir.join(super::state::EXIT_FILE), e));
    if let Some(rec) = exit()? {
        file.shim.reap_if_zombie();
        let error = rec.error.clone();
        return Ok((file, Status::Stopped(Exit::from(&rec)), error));
    }
    let shim = file.shim.liveness();
    if shim == Liveness::Zombie {
        file.shim.reap_if_zombie();
    }
    if shim != Liveness::Alive {
        // It may have written exit.json just before exiting.
        if let Some(rec) = exit()? {
            let error = rec.error.clone();
            return Ok((file, Status::Stopped(Exit::from(&rec)), error));
        }
        let init_alive = file.init.is_some_and(|i| {
            i.reap_if_zombie();
            i.liveness() == Liveness::Alive
        });
        return Ok((file, Status::Lost { init_alive }, None));
    }
    let status = match file.status {
        Recorded::Creating => Status::Creating,
        Recorded::Created => Status::Created,
        Recorded::Running | Recorded::Stopped => Status::Running,
    };
    Ok((file, status, None))
}

/// The container as its processes show it now: created, running, stopped with its exit, or
/// lost (the shim vanished without recording an exit).
pub fn state(state_dir: &Path) -> Result<State, RuntimeError> {
    let (file, status, failure) = load(state_dir)?;
    Ok(State {
        id: file.id,
        bundle: file.bundle,
        status,
        shim_pid: file.shim.pid,
        init_pid: file.init.map(|i| i.pid),
        created: file.created,
        started: file.started,
        root_switch: file.root_switch,
        cgroup: file.cgroup,
        failure,
    })
}

fn wrong_state(id: &str, status: &Status, fix: &'static str) -> RuntimeError {
    RuntimeError::WrongState {
        id: id.to_string(),
        state: status.to_string(),
        fix,
    }
}

/// Releases a created container's init: it execs `process.args`. Works from any process
/// (exec.fifo in the state directory). If the exec fails, the container is deleted and the
/// failed step returned.
pub fn start(state_dir: &Path) -> Result<(), RuntimeError> {
    let (file, status, _) = load(state_dir)?;
    if status != Status::Created {
        return Err(wrong_state(
            &file.id,
            &status,
            "only a created container can be started",
        ));
    }
    let fifo = state_dir.join(FIFO_FILE);
    // Non-blocking: with no reader (the init is gone) the open fails instead of hanging.
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo);
    let mut f = match opened {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            return Err(RuntimeError::InitGone { id: file.id })
        }
        Err(e) => return Err(io_err("open", &fifo, e)),
    };
    // Watched before the write: the shim renames state.json (Running) or exit.json into place.
    let changes = StateChanges::watch(state_dir);
    f.write_all(b"s").map_err(|e| io_err("write", &fifo, e))?;
    drop(f);
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let (file, status, failure) = load(state_dir)?;
        match status {
            Status::Running => return Ok(()),
            Status::Stopped(_) => {
                return match failure {
                    Some(e) => {
                        let _ = delete(state_dir);
                        Err(RuntimeError::Step(e))
                    }
                    None => Ok(()), // it ran, and ended already
                };
            }
            Status::Lost { .. } => return Err(RuntimeError::Lost { id: file.id }),
            Status::Creating | Status::Created => {}
        }
        if Instant::now() >= deadline {
            return Err(RuntimeError::Timeout {
                id: file.id,
                what: "start",
                timeout: START_TIMEOUT,
            });
        }
        changes.wait(deadline.saturating_duration_since(Instant::now()));
    }
}

/// Renames into a state directory, waited for instead of polled: a poll loop on a 1-vCPU
/// node takes the CPU from the very container whose start it waits for.
struct StateChanges(Option<nix::sys::inotify::Inotify>);

impl StateChanges {
    fn watch(dir: &Path) -> StateChanges {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let watch = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .ok()
            .filter(|i| i.add_watch(dir, AddWatchFlags::IN_MOVED_TO).is_ok());
        StateChanges(watch)
    }

    /// Until something is renamed into the directory, or at most `left` (and 50 ms: a state
    /// the shim can no longer write, such as its death, is seen by the caller's next look).
    fn wait(&self, left: Duration) {
        let slice = left.min(Duration::from_millis(50));
        let Some(inotify) = &self.0 else {
            std::thread::sleep(slice.min(Duration::from_millis(2)));
            return;
        };
        let mut pfd = [nix::poll::PollFd::new(
            inotify.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let t = nix::poll::PollTimeout::try_from(slice).unwrap_or(nix::poll::PollTimeout::MAX);
        if matches!(nix::poll::poll(&mut pfd, t), Ok(n) if n > 0) {
            let _ = inotify.read_events();
        }
    }
}

/// Sends `signal` to the container's init. A container's PID 1 gets from outside only
/// SIGKILL, SIGSTOP and the signals it has a handler for.
pub fn kill(state_dir: &Path, signal: Signal) -> Result<(), RuntimeError> {
    let (file, status, _) = load(state_dir)?;
    let target = match status {
        Status::Creating
        | Status::Created
        | Status::Running
        | Status::Lost { init_alive: true } => file.init,
        _ => None,
    };
    let Some(init) = target.filter(|i| i.liveness() == Liveness::Alive) else {
        return Err(wrong_state(
            &file.id,
            &status,
            "it has no process to signal",
        ));
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(init.pid as i32), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(io_err("signal the init of", state_dir, e.into())),
    }
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd we then own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until the container stopped and returns how; `Timeout` if it still runs after
/// `timeout`.
pub fn wait(state_dir: &Path, timeout: Duration) -> Result<Exit, RuntimeError> {
    let deadline = Instant::now() + timeout;
    loop {
        let (file, status, _) = load(state_dir)?;
        match status {
            Status::Stopped(exit) => return Ok(exit),
            Status::Lost { .. } => return Err(RuntimeError::Lost { id: file.id }),
            _ => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RuntimeError::Timeout {
                id: file.id,
                what: "exit",
                timeout,
            });
        }
        // The shim exits right after writing exit.json: wait for that (the start time is
        // checked after the open, so the fd is the shim's and not a reused pid's).
        let slice = left.min(Duration::from_millis(500));
        match pidfd_open(file.shim.pid).filter(|_| file.shim.liveness() == Liveness::Alive) {
            Some(fd) => {
                let mut pfd = [nix::poll::PollFd::new(
                    fd.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                let t =
                    nix::poll::PollTimeout::try_from(slice).unwrap_or(nix::poll::PollTimeout::MAX);
                let _ = nix::poll::poll(&mut pfd, t);
            }
            None => std::thread::sleep(slice.min(Duration::from_millis(10))),
        }
    }
}

/// SIGKILL to every process of the container's cgroup, when it has one.
fn kill_cgroup(cgroup: Option<&Path>) {
    if let Some(dir) = cgroup {
        let _ = Cgroup::open(dir.to_path_buf()).kill();
    }
}

/// SIGTERM, up to `grace` for the container to end, then SIGKILL (its whole cgroup when it
/// has one). Returns how it ended.
pub fn stop(state_dir: &Path, grace: Duration) -> Result<Exit, RuntimeError> {
    let (file, status, _) = load(state_dir)?;
    match status {
        Status::Stopped(exit) => return Ok(exit),
        Status::Lost { .. } => return Err(RuntimeError::Lost { id: file.id }),
        _ => {}
    }
    let _ = kill(state_dir, Signal::SIGTERM);
    match wait(state_dir, grace) {
        Err(RuntimeError::Timeout { .. }) => {
            let _ = kill(state_dir, Signal::SIGKILL);
            kill_cgroup(file.cgroup.as_deref());
            wait(state_dir, KILL_TIMEOUT)
        }
        other => other,
    }
}

/// Removes a stopped container: its cgroup and its state directory.
pub fn delete(state_dir: &Path) -> Result<(), RuntimeError> {
    let (file, status, _) = load(state_dir)?;
    match status {
        Status::Stopped(_) | Status::Lost { init_alive: false } => remove(state_dir, &file),
        Status::Lost { init_alive: true } => Err(wrong_state(
            &file.id,
            &status,
            "its init still runs: delete it with --force",
        )),
        _ => Err(wrong_state(
            &file.id,
            &status,
            "stop it first, or delete it with --force",
        )),
    }
}

/// Removes a container whatever its state: SIGKILL to its init and cgroup first.
pub fn delete_force(state_dir: &Path) -> Result<(), RuntimeError> {
    let (file, status, _) = match load(state_dir) {
        Ok(x) => x,
        Err(RuntimeError::NotFound(_)) if state_dir.is_dir() => {
            // A shim that died before its first state.json: nothing runs.
            return std::fs::remove_dir_all(state_dir).map_err(|e| io_err("remove", state_dir, e));
        }
        Err(e) => return Err(e),
    };
    if !matches!(status, Status::Stopped(_)) {
        let _ = kill(state_dir, Signal::SIGKILL);
        kill_cgroup(file.cgroup.as_deref());
        match status {
            Status::Lost { .. } => {
                let deadline = Instant::now() + KILL_TIMEOUT;
                while let Some(init) = file.init {
                    init.reap_if_zombie();
                    if init.liveness() != Liveness::Alive || Instant::now() >= deadline {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            _ => {
                wait(state_dir, KILL_TIMEOUT)?;
            }
        }
    }
    remove(state_dir, &file)
}

fn remove(state_dir: &Path, file: &StateFile) -> Result<(), RuntimeError> {
    // The shim writes exit.json and then finishes up (its last log lines): removing the
    // directory while it still writes there would race it (ENOTEMPTY). It exits at once.
    let deadline = Instant::now() + KILL_TIMEOUT;
    file.shim.reap_if_zombie();
    while file.shim.liveness() == Liveness::Alive && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
        file.shim.reap_if_zombie();
    }
    if let Some(dir) = &file.cgroup {
        Cgroup::open(dir.clone())
            .remove()
            .map_err(|e| io_err("remove the cgroup", dir, e))?;
    }
    std::fs::remove_dir_all(state_dir).map_err(|e| io_err("remove", state_dir, e))
}

impl From<&ExitRecord> for Exit {
    fn from(r: &ExitRecord) -> Exit {
        match (r.code, r.signal) {
            (_, Some(signal)) => Exit::Signal {
                signal,
                oom_killed: r.oom_killed.unwrap_or(false),
            },
            (Some(code), None) => Exit::Code(code),
            (None, None) => Exit::Code(255),
        }
    }
}
