//! The shim: one small single-threaded process per container (no tokio), exec'd by the agent
//! as `tessera container shim --state DIR --id ID --bundle DIR --net MODE
//! [--cgroup-parent DIR]`. It is the container's parent and outlives the agent:
//!
//! 1. leaves the agent's session and process group (PID 1 kills a crashed service's group);
//! 2. reads config.json, creates the cgroup, makes exec.fifo and the pipes, and clones the
//!    container init into its new namespaces (the shim is single-threaded, so the clone is an
//!    ordinary fork); puts it in the cgroup, then sends it its [`InitConfig`];
//! 3. waits for the init's Ready (or the failed step), records `state.json`, and answers the
//!    agent once on stdout ([`ShimMessage`]);
//! 4. relays the container's stdout and stderr as log events into `log.jsonl`, records
//!    running when the init execs, and when the init exits writes `exit.json` and exits.
//!
//! Cleanup (cgroup, state directory) is the agent's `delete`.

use super::cgroup::Cgroup;
use super::handoff;
use super::init::{self, InitFds};
use super::logs::{Lines, LogFile, LOG_LIMIT};
use super::namespaces::{self, NetMode, Plan};
use super::protocol::{self, InitConfig, InitMessage, Origin, ShimMessage, StepError};
use super::state::{ExitRecord, ProcessId, Recorded, StateFile, FIFO_FILE};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tessera_common::log::{now_rfc3339, Level, LogEvent, Stream};

/// How long the init may take to set the container up before create fails.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the output pipes may stay open after the init exited (the kernel kills the rest of
/// its PID namespace; a process of the node's PID namespace could hold them longer).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
const CLONE_STACK: usize = 4 * 1024 * 1024;

struct Args {
    state: PathBuf,
    id: String,
    bundle: PathBuf,
    net: NetMode,
    cgroup_parent: Option<PathBuf>,
    /// certmgr's socket: stdin holds a container identity token (handoff.rs).
    identity: Option<PathBuf>,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut state = None;
    let mut id = None;
    let mut bundle = None;
    let mut net = NetMode::None;
    let mut cgroup_parent = None;
    let mut identity = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--state" => state = Some(PathBuf::from(value()?)),
            "--id" => id = Some(value()?),
            "--bundle" => bundle = Some(PathBuf::from(value()?)),
            "--cgroup-parent" => cgroup_parent = Some(PathBuf::from(value()?)),
            "--identity" => identity = Some(PathBuf::from(value()?)),
            "--net" => {
                let v = value()?;
                net = NetMode::parse(&v)
                    .ok_or_else(|| format!("--net {v:?}: use none, host or new"))?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        state: state.ok_or("--state DIR is required")?,
        id: id.ok_or("--id ID is required")?,
        bundle: bundle.ok_or("--bundle DIR is required")?,
        net,
        cgroup_parent,
        identity,
    })
}

/// Entry of `tessera container shim ARGS…` (`args` are the arguments after `shim`). It is
/// started by the runtime's `create`, not by hand.
pub fn main(args: &[String]) -> i32 {
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tessera container shim: {e}; the shim is started by the container agent, not by hand");
            return 2;
        }
    };
    // Out of the agent's process group and session: the container must survive the agent.
    if let Err(e) = nix::unistd::setsid() {
        eprintln!("tessera container shim: setsid: {e}");
    }
    // Whatever the agent left open without close-on-exec must not reach the container.
    // SAFETY: marks fds close-on-exec; no memory is involved.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if args.identity.is_some() {
        if let Err(e) = handoff::take_stdin() {
            tell_agent(&ShimMessage::Failed(StepError::new(Origin::Shim, e)));
            return 1;
        }
    }
    run(&args)
}

fn tell_agent(message: &ShimMessage) {
    // The agent may be gone already; the state directory says the same.
    let _ = protocol::send(std::io::stdout().lock(), message);
}

fn run(args: &Args) -> i32 {
    let Some(me) = ProcessId::of(std::process::id()) else {
        tell_agent(&ShimMessage::Failed(
            StepError::new(Origin::Shim, "read /proc/self/stat").hint("mount /proc"),
        ));
        return 1;
    };
    let mut state = StateFile {
        id: args.id.clone(),
        bundle: args.bundle.clone(),
        status: Recorded::Creating,
        shim: me,
        init: None,
        created: now_rfc3339(),
        started: None,
        root_switch: None,
        cgroup: None,
    };
    let setup = state
        .write(&args.state)
        .map_err(|e| {
            StepError::io(
                Origin::Shim,
                format!("write {}/state.json", args.state.display()),
                &e,
            )
        })
        .and_then(|_| {
            LogFile::open(&args.state, LOG_LIMIT)
                .map_err(|e| StepError::io(Origin::Shim, "open log.jsonl", &e))
        })
        .and_then(|log| create(args, &mut state).map(|c| (log, c)));
    let (mut log, container) = match setup {
        Ok(x) => x,
        Err(e) => {
            eprintln!("tessera container shim: {e}");
            tell_agent(&ShimMessage::Failed(e));
            return 1;
        }
    };
    tell_agent(&ShimMessage::Created {
        init_pid: container.pid.as_raw() as u32,
    });
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
    for w in &container.warnings {
        let _ =
            log.write(&LogEvent::new(&args.id, Level::Warn, w.clone()).field("source", "runtime"));
    }
    supervise(args, &mut state, &mut log, container)
}

/// A created container, as the shim holds it.
struct Container {
    pid: Pid,
    pidfd: OwnedFd,
    report: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    cgroup: Option<PathBuf>,
    warnings: Vec<String>,
}

fn shim_err(step: impl Into<String>, e: &std::io::Error) -> StepError {
    StepError::io(Origin::Shim, step, e)
}

fn load_spec(bundle: &Path) -> Result<Spec, StepError> {
    let path = bundle.join("config.json");
    let step = format!("read {}", path.display());
    let bytes = std::fs::read(&path).map_err(|e| {
        shim_err(&step, &e)
            .hint("a bundle is a directory with config.json and the rootfs: check the bundle path")
    })?;
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        StepError::new(Origin::Shim, step)
            .detail(format!("at {}: {}", e.path(), e.inner()))
            .hint("fix that field of config.json")
    })
}

fn refuse(what: &str, hint: &str) -> StepError {
    StepError::new(Origin::Shim, format!("read config.json: {what}")).hint(hint)
}

/// What this runtime does not do, refused before anything is made.
fn check(spec: &Spec) -> Result<(), StepError> {
    let Some(process) = spec.process() else {
        return Err(refuse(
            "no process",
            "add a \"process\" object with args, env, cwd and user",
        ));
    };
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(refuse(
            "process.args is empty",
            "give the program to run in process.args",
        ));
    }
    if process.terminal().unwrap_or(false) {
        return Err(refuse(
            "process.terminal is true",
            "containers run without a terminal here (their output goes to the log): set process.terminal to false",
        ));
    }
    if spec.hooks().is_some() {
        return Err(refuse(
            "hooks are set",
            "hooks are not supported: remove \"hooks\" from config.json",
        ));
    }
    if spec.root().is_none() {
        return Err(refuse("no root", "add \"root\": {\"path\": \"rootfs\"}"));
    }
    Ok(())
}

fn pipe() -> Result<(OwnedFd, OwnedFd), StepError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| StepError::errno(Origin::Shim, "create a pipe", e))
}

/// Everything up to the init's Ready; on failure nothing is left but the state directory.
fn create(args: &Args, state: &mut StateFile) -> Result<Container, StepError> {
    let bundle = std::fs::canonicalize(&args.bundle)
        .map_err(|e| shim_err(format!("open the bundle {}", args.bundle.display()), &e))?;
    let mut spec = load_spec(&bundle)?;
    check(&spec)?;
    if let Some(socket) = &args.identity {
        handoff::prepare(&mut spec, socket)?;
    }
    let root = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_default();
    let rootfs = std::fs::canonicalize(bundle.join(&root)).map_err(|e| {
        shim_err(
            format!("open the rootfs {}", bundle.join(&root).display()),
            &e,
        )
        .hint("root.path in config.json must name the rootfs directory, relative to the bundle")
    })?;
    let linux = spec.linux().clone().unwrap_or_default();
    let plan = Plan::new(linux.namespaces().as_deref().unwrap_or_default(), args.net)?;

    let cgroup = match &args.cgroup_parent {
        Some(parent) => Some(
            Cgroup::create(parent, &args.id, linux.resources().as_ref())
                .map_err(|e| {
                    shim_err(
                        format!("create the cgroup {}/{}", parent.display(), args.id),
                        &e,
                    )
                    .hint("the cgroup parent must be a cgroup v2 directory the agent may write")
                })?
                .dir,
        ),
        None => None,
    };
    state.cgroup = cgroup.clone();
    let fifo_path = args.state.join(FIFO_FILE);
    let made = spawn(
        args,
        &bundle,
        &rootfs,
        spec,
        plan,
        &fifo_path,
        cgroup.as_deref(),
    );
    let result = made.and_then(|mut c| match await_ready(&mut c) {
        Ok(r) => {
            c.warnings = r.1;
            state.root_switch = Some(r.0);
            Ok(c)
        }
        Err(e) => {
            end_init(c.pid);
            Err(e)
        }
    });
    let mut container = match result {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&fifo_path);
            if let Some(dir) = &cgroup {
                let _ = Cgroup::open(dir.clone()).remove();
            }
            return Err(e);
        }
    };
    state.status = Recorded::Created;
    state.init = ProcessId::of(container.pid.as_raw() as u32);
    if let Err(e) = state.write(&args.state) {
        end_init(container.pid);
        return Err(shim_err("write state.json", &e));
    }
    container.cgroup = cgroup;
    Ok(container)
}

/// SIGKILL and reap a child init that did not make it (pid 0: reaped already).
fn end_init(pid: Pid) {
    if pid.as_raw() <= 0 {
        return;
    }
    let _ = kill(pid, Signal::SIGKILL);
    let _ = waitpid(pid, None);
}

fn spawn(
    args: &Args,
    bundle: &Path,
    rootfs: &Path,
    spec: Spec,
    plan: Plan,
    fifo_path: &Path,
    cgroup: Option<&Path>,
) -> Result<Container, StepError> {
    let _ = std::fs::remove_file(fifo_path);
    nix::unistd::mkfifo(fifo_path, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(
        |e| StepError::errno(Origin::Shim, format!("create {}", fifo_path.display()), e),
    )?;
    // Read-write: the init holds a reader (so start() can open it) and never sees EOF.
    let fifo: OwnedFd = File::options()
        .read(true)
        .write(true)
        .open(fifo_path)
        .map_err(|e| shim_err(format!("open {}", fifo_path.display()), &e))?
        .into();
    let (config_r, config_w) = pipe()?;
    let (report_r, report_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let null: OwnedFd = File::open("/dev/null")
        .map_err(|e| shim_err("open /dev/null", &e))?
        .into();
    if let Some(path) = plan.pid_to_join() {
        namespaces::join(Origin::Shim, LinuxNamespaceType::Pid, path)?;
    }
    let payload = serde_json::to_vec(&InitConfig {
        id: args.id.clone(),
        spec,
        bundle: bundle.to_path_buf(),
        rootfs: rootfs.to_path_buf(),
        namespaces: plan.clone(),
        net: args.net,
    })
    .map_err(|e| {
        StepError::new(Origin::Shim, "encode the init's configuration").detail(e.to_string())
    })?;

    let parent_ends = [
        config_w.as_raw_fd(),
        report_r.as_raw_fd(),
        out_r.as_raw_fd(),
        err_r.as_raw_fd(),
    ];
    let mut child_fds = Some(InitFds {
        config: config_r,
        report: report_w,
        fifo,
        stdin: null,
        stdout: out_w,
        stderr: err_w,
    });
    let mut stack = vec![0u8; CLONE_STACK];
    let child = Box::new(move || -> isize {
        for fd in parent_ends {
            // SAFETY: closes this process's copies of the shim's pipe ends, which nothing in
            // the child owns.
            unsafe { libc::close(fd) };
        }
        match child_fds.take() {
            Some(fds) => init::main(fds),
            None => 1,
        }
    });
    // SAFETY: the shim is single-threaded, so the child (a copy of it, no CLONE_VM) holds no
    // lock another thread could own; it runs init::main on its own stack and never returns
    // into our frames (init::main ends in execve or _exit).
    let pid = unsafe { nix::sched::clone(child, &mut stack, plan.clone_flags(), Some(libc::SIGCHLD)) }
        .map_err(|e| {
            StepError::errno(Origin::Shim, "clone the container init", e)
                .hint("the kernel refused new namespaces: it needs CONFIG_NAMESPACES and the runtime needs CAP_SYS_ADMIN")
        })?;
    // The closure, with the init's ends of the pipes, was dropped by clone in this process.
    if args.identity.is_some() {
        handoff::release();
    }
    let fail = |e: StepError| {
        end_init(pid);
        e
    };
    if let Some(dir) = cgroup {
        // Before the init has its configuration, so before any of process.args runs.
        Cgroup::open(dir.to_path_buf())
            .add(pid.as_raw())
            .map_err(|e| {
                fail(shim_err(
                    format!("move the init into {}", dir.display()),
                    &e,
                ))
            })?;
    }
    let pidfd = pidfd_open(pid)
        .map_err(|e| fail(StepError::errno(Origin::Shim, "pidfd_open the init", e)))?;
    // The init reads to EOF: the write end is closed right after the payload.
    let mut config_w = File::from(config_w);
    config_w
        .write_all(&payload)
        .map_err(|e| fail(shim_err("send the configuration to the init", &e)))?;
    drop(config_w);
    Ok(Container {
        pid,
        pidfd,
        report: Some(report_r),
        stdout: Some(out_r),
        stderr: Some(err_r),
        cgroup: None,
        warnings: Vec::new(),
    })
}

fn pidfd_open(pid: Pid) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd we then own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Reads what is there; Ok(0) means end of stream.
fn read_some(fd: &OwnedFd, buf: &mut [u8]) -> usize {
    loop {
        match nix::unistd::read(fd.as_raw_fd(), buf) {
            Ok(n) => return n,
            Err(Errno::EINTR) => continue,
            Err(_) => return 0,
        }
    }
}

/// Polls `fds` (None entries skipped); returns which are readable (or closed).
fn poll(fds: &[Option<&OwnedFd>], timeout: Option<Duration>) -> Vec<bool> {
    let present: Vec<(usize, &OwnedFd)> = fds
        .iter()
        .enumerate()
        .filter_map(|(i, f)| f.map(|f| (i, f)))
        .collect();
    let mut pfds: Vec<PollFd> = present
        .iter()
        .map(|(_, f)| PollFd::new(f.as_fd(), PollFlags::POLLIN))
        .collect();
    let timeout = match timeout {
        None => PollTimeout::NONE,
        Some(t) => PollTimeout::try_from(t).unwrap_or(PollTimeout::MAX),
    };
    let mut ready = vec![false; fds.len()];
    match nix::poll::poll(&mut pfds, timeout) {
        Ok(n) if n > 0 => {
            for (p, (i, _)) in pfds.iter().zip(&present) {
                ready[*i] = p.revents().is_some_and(|r| !r.is_empty());
            }
        }
        _ => {}
    }
    ready
}

/// Waits for Ready; returns how the root was switched and the init's warnings.
fn await_ready(c: &mut Container) -> Result<(protocol::RootSwitch, Vec<String>), StepError> {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    let mut lines = Lines::default();
    let mut buf = [0u8; 4096];
    let Some(report) = c.report.as_ref() else {
        return Err(StepError::new(Origin::Shim, "wait for the container init"));
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(StepError::new(Origin::Shim, "wait for the container init to set up")
                .detail(format!("no answer in {}s", SETUP_TIMEOUT.as_secs()))
                .hint("a mount or a namespace join hangs: check mounts[] and linux.namespaces[].path in config.json"));
        }
        if !poll(&[Some(report)], Some(left))[0] {
            continue;
        }
        let n = read_some(report, &mut buf);
        if n == 0 {
            return Err(died_during_setup(c));
        }
        for line in lines.push(&buf[..n]) {
            match protocol::parse::<InitMessage>(&line) {
                Ok(InitMessage::Ready {
                    root_switch,
                    warnings,
                }) => return Ok((root_switch, warnings)),
                Ok(InitMessage::Failed(e)) => return Err(e),
                Ok(InitMessage::Starting) | Err(_) => {}
            }
        }
    }
}

/// The init ended without a word: its status and whatever it wrote on stderr (a panic).
fn died_during_setup(c: &mut Container) -> StepError {
    let status = match waitpid(c.pid, None) {
        Ok(s) => describe(&s),
        Err(e) => format!("unknown ({e})"),
    };
    let mut text = Vec::new();
    if let Some(err) = c.stderr.as_ref() {
        let mut buf = [0u8; 4096];
        while poll(&[Some(err)], Some(Duration::ZERO))[0] {
            let n = read_some(err, &mut buf);
            if n == 0 || text.len() > 4096 {
                break;
            }
            text.extend_from_slice(&buf[..n]);
        }
    }
    let mut e = StepError::new(Origin::Shim, "wait for the container init to set up")
        .detail(format!("it exited ({status}) without reporting"))
        .hint("this is a bug of the runtime: report it with shim.log and the container's stderr");
    if !text.is_empty() {
        e.detail = Some(format!(
            "{}; stderr: {}",
            e.detail.unwrap_or_default(),
            String::from_utf8_lossy(&text).trim()
        ));
    }
    // Reaped already: make sure the caller does not wait again.
    c.pid = Pid::from_raw(0);
    e
}

fn describe(s: &WaitStatus) -> String {
    match s {
        WaitStatus::Exited(_, code) => format!("exit code {code}"),
        WaitStatus::Signaled(_, sig, _) => format!("killed by {sig}"),
        other => format!("{other:?}"),
    }
}

/// Whether the kernel's OOM killer acted in the container's cgroup (memory.events).
fn oom_killed(cgroup: &Path) -> bool {
    Cgroup::open(cgroup.to_path_buf())
        .stats()
        .ok()
        .and_then(|s| s.memory)
        .is_some_and(|m| m.oom_kill > 0)
}

/// From Ready to the init's exit.
fn supervise(args: &Args, state: &mut StateFile, log: &mut LogFile, mut c: Container) -> i32 {
    let id = args.id.as_str();
    let init_pid = c.pid.as_raw() as u32;
    let mut report_lines = Lines::default();
    let mut out_lines = Lines::default();
    let mut err_lines = Lines::default();
    let mut exec_error: Option<StepError> = None;
    // When the init said Starting (start() was received), until its exec is seen.
    let mut starting: Option<String> = None;
    let mut buf = vec![0u8; 64 * 1024];
    let write_event = |log: &mut LogFile, stream: Stream, line: &[u8]| {
        if let Err(e) = log.write(&LogEvent::from_service_line(id, init_pid, stream, line)) {
            eprintln!("tessera container shim: {id}: writing log.jsonl: {e}");
        }
    };
    let mut exited = false;
    let mut drain_until: Option<Instant> = None;
    loop {
        if exited && c.stdout.is_none() && c.stderr.is_none() {
            break;
        }
        let timeout = drain_until.map(|d| d.saturating_duration_since(Instant::now()));
        if timeout.is_some_and(|t| t.is_zero()) {
            break;
        }
        let pidfd = (!exited).then_some(&c.pidfd);
        let ready = poll(
            &[
                c.report.as_ref(),
                c.stdout.as_ref(),
                c.stderr.as_ref(),
                pidfd,
            ],
            timeout,
        );
        if ready[0] {
            if let Some(fd) = c.report.as_ref() {
                let n = read_some(fd, &mut buf);
                if n == 0 {
                    c.report = None;
                    // The pipe is close-on-exec: its end after Starting, with no failure,
                    // is the exec.
                    if starting.is_some() && exec_error.is_none() {
                        state.status = Recorded::Running;
                        state.started = starting.take();
                        if let Err(e) = state.write(&args.state) {
                            eprintln!("tessera container shim: {id}: writing state.json: {e}");
                        }
                        let _ = std::fs::remove_file(args.state.join(FIFO_FILE));
                    }
                }
                for line in report_lines.push(&buf[..n]) {
                    match protocol::parse::<InitMessage>(&line) {
                        Ok(InitMessage::Starting) => starting = Some(now_rfc3339()),
                        Ok(InitMessage::Failed(e)) => {
                            let _ = log.write(
                                &LogEvent::new(id, Level::Error, e.to_string())
                                    .field("source", "runtime"),
                            );
                            exec_error = Some(e);
                        }
                        Ok(InitMessage::Ready { .. }) | Err(_) => {}
                    }
                }
            }
        }
        for (i, stream) in [(1, Stream::Stdout), (2, Stream::Stderr)] {
            if !ready[i] {
                continue;
            }
            let (slot, lines) = if i == 1 {
                (&mut c.stdout, &mut out_lines)
            } else {
                (&mut c.stderr, &mut err_lines)
            };
            let Some(fd) = slot.as_ref() else { continue };
            let n = read_some(fd, &mut buf);
            if n == 0 {
                *slot = None;
                if let Some(rest) = lines.finish() {
                    write_event(log, stream, &rest);
                }
            }
            for line in lines.push(&buf[..n]) {
                write_event(log, stream, &line);
            }
        }
        if ready[3] && !exited {
            exited = true;
            drain_until = Some(Instant::now() + DRAIN_TIMEOUT);
        }
    }
    for (stream, lines) in [
        (Stream::Stdout, &mut out_lines),
        (Stream::Stderr, &mut err_lines),
    ] {
        if let Some(rest) = lines.finish() {
            write_event(log, stream, &rest);
        }
    }
    let status = loop {
        match waitpid(c.pid, None) {
            Err(Errno::EINTR) => continue,
            other => break other,
        }
    };
    let mut record = ExitRecord {
        code: None,
        signal: None,
        oom_killed: None,
        error: exec_error,
        time: now_rfc3339(),
    };
    match status {
        Ok(WaitStatus::Exited(_, code)) => record.code = Some(code),
        Ok(WaitStatus::Signaled(_, sig, _)) => {
            record.signal = Some(sig as i32);
            record.oom_killed = Some(c.cgroup.as_deref().is_some_and(oom_killed));
        }
        other => {
            eprintln!("tessera container shim: {id}: waitpid: {other:?}");
            record.code = Some(255);
        }
    }
    if let Err(e) = record.write(&args.state) {
        eprintln!("tessera container shim: {id}: writing exit.json: {e}");
        return 1;
    }
    state.status = Recorded::Stopped;
    let _ = state.write(&args.state);
    let _ = std::fs::remove_file(args.state.join(FIFO_FILE));
    0
}
