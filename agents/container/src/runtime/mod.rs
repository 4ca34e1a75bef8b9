//! Running a bundle isolated. The module split follows the processes that really exist, so a
//! reader can see which process runs each line:
//!
//! | process | what it is | modules |
//! |---|---|---|
//! | the agent | multi-threaded (tokio), never forks: it execs the shim | `agent` (the API below), `state` (reads) |
//! | the shim | one per container, exec'd as `tessera container shim …`, single-threaded, its own session; the container's parent, outlives the agent | `shim`, `state` (writes), `logs`, `cgroup` |
//! | the container init | cloned by the shim into new namespaces (PID 1 there), until it execs `process.args` | `init`, `namespaces`, `mounts`, `devices`, `rlimits`, `capabilities`, `seccomp` |
//!
//! They talk through `protocol`: the shim sends the init its configuration through a pipe,
//! the init answers ready or the step that failed through another, and the shim answers the
//! agent once on its stdout. After that the state directory is the only link
//! (`/run/tessera/containers/<id>`: `state.json`, `exit.json`, `exec.fifo`, `log.jsonl`), so
//! the containers keep running when the agent is killed, and the restarted agent finds them.
//!
//! Lifecycle, as `crun create` / `crun start`: [`create`] returns once the init has set
//! everything up and blocks on `exec.fifo`; [`start`] releases it; [`kill`], [`stop`],
//! [`wait`], [`state`], [`delete`].
//!
//! The agent should call [`become_subreaper`] at its start: the init of a container whose
//! shim crashed is then reparented to it (and reaped by `state`/`delete_force`) rather than to
//! PID 1. The shim stays in the agent's service cgroup; the container's processes are in their
//! own cgroup when a cgroup parent is given.
//!
//! Not supported, refused with the fix named: user and time namespaces, `process.terminal`,
//! hooks. On a node whose root is the initramfs, pivot_root(2) is refused by the kernel and
//! the init uses MS_MOVE + chroot instead (see `mounts::switch_root`); a container granted
//! CAP_SYS_CHROOT could then leave its root, and its log says so.

mod agent;
pub mod capabilities;
pub mod cgroup;
mod devices;
pub mod exec;
mod handoff;
mod init;
pub mod logs;
mod mounts;
mod namespaces;
pub mod protocol;
pub mod rlimits;
pub mod seccomp;
pub mod shim;
mod state;

pub use agent::{
    become_subreaper, create, delete, delete_force, kill, log_path, start, state, stop, wait,
};
pub use logs::{LOG_FILE, LOG_LIMIT};
pub use namespaces::NetMode;
pub use nix::sys::signal::Signal;
pub use protocol::{RootSwitch, StepError};

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What [`create`] needs.
#[derive(Debug, Clone)]
pub struct CreateOptions<'a> {
    /// Names the container in logs and its cgroup: 1 to 64 of `[A-Za-z0-9_.-]`.
    pub id: &'a str,
    /// The bundle: config.json and the rootfs it names.
    pub bundle: &'a Path,
    /// The container's state directory, which must not exist yet (e.g.
    /// `/run/tessera/containers/<id>`).
    pub state_dir: &'a Path,
    /// The executable that runs the shim, and the arguments that select it (for the node:
    /// `/sbin/tessera` and `["container", "shim"]`).
    pub shim: &'a Path,
    pub shim_args: &'a [String],
    /// The cgroup v2 directory under which the container gets `<id>`; None: no cgroup.
    pub cgroup_parent: Option<&'a Path>,
    pub net: NetMode,
    /// A container identity (crate::identity): the pipe holding its token, which becomes fd
    /// 3 of the container's process, and certmgr's socket, bound into the container.
    pub identity: Option<Handoff<'a>>,
}

/// What the shim needs to hand a container its identity.
#[derive(Debug, Clone, Copy)]
pub struct Handoff<'a> {
    pub token: &'a std::os::fd::OwnedFd,
    pub certmgr_socket: &'a Path,
}

/// A created container's processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Created {
    pub init_pid: u32,
    pub shim_pid: u32,
}

impl Created {
    /// The container's network namespace, to wire between create and start
    /// ([`NetMode::New`]).
    pub fn netns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.init_pid))
    }
}

/// How a container's init ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal { signal: i32, oom_killed: bool },
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Exit::Code(c) => write!(f, "exited with code {c}"),
            Exit::Signal { signal, oom_killed } => {
                match Signal::try_from(signal) {
                    Ok(s) => write!(f, "killed by {s}")?,
                    Err(_) => write!(f, "killed by signal {signal}")?,
                }
                if oom_killed {
                    f.write_str(" (out of memory: raise linux.resources.memory.limit)")?;
                }
                Ok(())
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The shim is setting the container up.
    Creating,
    /// Set up, waiting for [`start`].
    Created,
    Running,
    Stopped(Exit),
    /// The shim is gone without recording an exit (killed, or crashed); the init may still
    /// run, unsupervised.
    Lost {
        init_alive: bool,
    },
}

impl Status {
    /// Being set up, set up, or running: its processes exist under its shim.
    pub fn is_live(&self) -> bool {
        matches!(self, Status::Creating | Status::Created | Status::Running)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Creating => f.write_str("creating"),
            Status::Created => f.write_str("created"),
            Status::Running => f.write_str("running"),
            Status::Stopped(e) => write!(f, "stopped ({e})"),
            Status::Lost { init_alive: true } => {
                f.write_str("lost (its shim is gone; its init still runs)")
            }
            Status::Lost { init_alive: false } => f.write_str("lost (its shim is gone)"),
        }
    }
}

/// A container as [`state`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub id: String,
    pub bundle: PathBuf,
    pub status: Status,
    pub shim_pid: u32,
    pub init_pid: Option<u32>,
    /// RFC 3339, UTC, milliseconds.
    pub created: String,
    pub started: Option<String>,
    pub root_switch: Option<RootSwitch>,
    pub cgroup: Option<PathBuf>,
    /// The step that failed when the init could not exec after start.
    pub failure: Option<StepError>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("container id {0:?} is invalid: use 1 to 64 letters, digits, '_', '-' or '.', starting with a letter or digit")]
    InvalidId(String),
    #[error("{0} exists: a container with this id was not deleted; delete it first (`tessera container delete ID`)")]
    Exists(PathBuf),
    #[error("no container state in {0}: check the container id (it may have been deleted)")]
    NotFound(PathBuf),
    #[error("cannot start the shim {shim}: {source}; check the path of the tessera binary")]
    SpawnShim {
        shim: PathBuf,
        source: std::io::Error,
    },
    #[error("the shim of container {id} exited ({status}) without answering: {log}; this is a runtime bug, report it with that output")]
    ShimDied {
        id: String,
        status: String,
        log: String,
    },
    /// The step that failed in the shim or the container init.
    #[error("{0}")]
    Step(StepError),
    #[error("container {id} is {state}: {fix}")]
    WrongState {
        id: String,
        state: String,
        fix: &'static str,
    },
    #[error(
        "the init of container {id} is gone before start: delete the container and create it again"
    )]
    InitGone { id: String },
    #[error("the shim of container {id} is gone (killed or crashed) and recorded no exit: delete the container with --force")]
    Lost { id: String },
    #[error("container {id} did not {what} within {timeout:?}: retry, or stop it (`tessera container stop`)")]
    Timeout {
        id: String,
        what: &'static str,
        timeout: Duration,
    },
    #[error("{what} {path}: {source}; the state directory must be a writable directory (a tmpfs under /run) nobody else changes")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}
