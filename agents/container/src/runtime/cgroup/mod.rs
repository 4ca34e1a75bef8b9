//! One cgroup v2 directory per container, run by the shim: created under a parent with the
//! limits of `linux.resources` written as crun 1.8.1 writes them on cgroup v2, filled with the
//! container's processes, read for stats, killed and removed; re-adopted by path after an
//! agent restart.
//!
//! [`settings`] turns `linux.resources` into the files and values ([`Setting`]), so what is
//! written can be read (and tested) without a cgroup: memory.max, memory.swap.max (swap minus
//! limit, as runc and crun), memory.low, pids.max, cpu.weight (crun's linear conversion from
//! shares), cpu.max, cpu.idle, cpu.max.burst, cpuset.cpus/mems, hugetlb.<size>.max,
//! io.bfq.weight (else io.weight), io.max, and `unified` verbatim. cgroup v1 only limits
//! (kernel memory, swappiness, realtime CPU, network, blkio leaf weight) are refused, as crun
//! refuses them on cgroup v2; so is rdma. `devices` is not enforced here: cgroup v2 device
//! control is an eBPF program (crun loads one), which Tessera does not load.
//!
//! Its parts: `settings` (resources → files and values), `hierarchy` (the directories down
//! from the cgroup2 mount and the controllers they delegate), `stats` (the counters).

mod hierarchy;
mod settings;
mod stats;

pub use settings::{settings, Missing, Setting};
pub use stats::{CpuStats, IoStats, MemoryStats, PidsStats, Stats};

use oci_spec::runtime::LinuxResources;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long [`Cgroup::kill`] and [`Cgroup::remove`] wait for processes to leave.
const DRAIN: Duration = Duration::from_secs(3);

/// Why a cgroup cannot be made, read or removed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "cgroup name {0:?} is refused: it must be one path component (no '/', not '.' or '..')"
    )]
    BadId(String),
    #[error("cgroup parent {0} is refused: it must be an absolute path without '..'; give the full path under the cgroup2 mount")]
    BadParent(PathBuf),
    #[error("cgroup parent {0} is not under a cgroup2 mount: refused; mount cgroup2 (mount -t cgroup2 none /sys/fs/cgroup) and give a parent under it")]
    NotCgroup2(PathBuf),
    #[error("linux.resources.{field} is {why}: refused; remove it from config.json")]
    Unsupported { field: String, why: &'static str },
    #[error("linux.resources.{field}: {why}: refused; {fix}")]
    Invalid {
        field: String,
        why: String,
        fix: &'static str,
    },
    #[error("the {controller} controller is not available under {dir} (its cgroup.controllers: {available:?}): refused; linux.resources needs it: free it for cgroup v2 (on a hybrid host it is bound to a v1 hierarchy) or remove those limits")]
    ControllerUnavailable {
        controller: String,
        dir: PathBuf,
        available: String,
    },
    #[error("cgroup {0} already exists: refused; remove the stale cgroup (or the container with this id) first")]
    Exists(PathBuf),
    #[error("{action} {path}: {source}; {hint}")]
    Io {
        action: String,
        path: PathBuf,
        source: io::Error,
        hint: String,
    },
}

impl From<CgroupError> for io::Error {
    fn from(e: CgroupError) -> io::Error {
        let kind = match &e {
            CgroupError::Io { source, .. } => source.kind(),
            CgroupError::Exists(_) => io::ErrorKind::AlreadyExists,
            CgroupError::NotCgroup2(_) | CgroupError::ControllerUnavailable { .. } => {
                io::ErrorKind::Unsupported
            }
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

fn io_error(
    action: impl Into<String>,
    path: &Path,
    source: io::Error,
    hint: impl Into<String>,
) -> CgroupError {
    CgroupError::Io {
        action: action.into(),
        path: path.to_path_buf(),
        source,
        hint: hint.into(),
    }
}

/// A container's cgroup directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    pub dir: PathBuf,
}

impl Cgroup {
    /// Creates `<parent>/<id>` with the limits of `resources`. Missing directories from the
    /// cgroup2 mount down to `parent` are made, and each of them (the mount root included)
    /// delegates to its children the controllers the limits need (+memory, +cpu, +pids, +io,
    /// … in cgroup.subtree_control), plus the usual ones for stats where the hierarchy offers
    /// them. On error the directories this call made are removed (delegations stay, as they
    /// would for the next container).
    pub fn create(
        parent: &Path,
        id: &str,
        resources: Option<&LinuxResources>,
    ) -> io::Result<Cgroup> {
        if id.is_empty() || id == "." || id == ".." || id.contains('/') || id.contains('\0') {
            return Err(CgroupError::BadId(id.to_string()).into());
        }
        let settings = match resources {
            Some(r) => settings::plan(r)?,
            None => Vec::new(),
        };
        let chain = hierarchy::chain_to(parent)?;
        let mut made = Vec::new();
        let result = hierarchy::build(&chain, id, &settings, &mut made);
        if result.is_err() {
            for dir in made.iter().rev() {
                let _ = std::fs::remove_dir(dir);
            }
        }
        Ok(result?)
    }

    /// The cgroup at `dir`, as recorded before (after an agent restart).
    pub fn open(dir: PathBuf) -> Cgroup {
        Cgroup { dir }
    }

    /// Moves process `pid` into the cgroup.
    pub fn add(&self, pid: i32) -> io::Result<()> {
        let path = self.dir.join("cgroup.procs");
        let mut f = self.procs_file()?;
        f.write_all(pid.to_string().as_bytes()).map_err(|e| {
            let hint = match e.raw_os_error() {
                Some(libc::ESRCH) => "the process has exited",
                Some(libc::EBUSY) | Some(libc::EOPNOTSUPP) => "the cgroup has child cgroups with controllers, or is threaded: processes go into leaf cgroups",
                _ => "the shim must run as root with the cgroup writable",
            };
            io_error(format!("move process {pid} into"), &path, e, hint)
        })?;
        Ok(())
    }

    /// cgroup.procs opened for writing: the shim writes the child's pid there before
    /// letting it run.
    pub fn procs_file(&self) -> io::Result<File> {
        let path = self.dir.join("cgroup.procs");
        Ok(OpenOptions::new().write(true).open(&path).map_err(|e| {
            io_error(
                "open",
                &path,
                e,
                "the cgroup must exist (Cgroup::create) and be writable",
            )
        })?)
    }

    /// Kills every process in the cgroup and its children: cgroup.kill (Linux ≥ 5.14), else
    /// SIGKILL to each pid in cgroup.procs until none is left.
    pub fn kill(&self) -> io::Result<()> {
        let path = self.dir.join("cgroup.kill");
        let err = match OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"1"))
        {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if err.kind() != io::ErrorKind::NotFound || !self.dir.is_dir() {
            return Err(io_error(
                "write \"1\" to",
                &path,
                err,
                "the cgroup must exist and be writable",
            )
            .into());
        }
        let deadline = Instant::now() + DRAIN;
        loop {
            let pids = self.all_pids(&self.dir)?;
            if pids.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let procs = self.dir.join("cgroup.procs");
                let source = io::Error::from_raw_os_error(libc::EBUSY);
                return Err(io_error(
                    "kill every process of",
                    &procs,
                    source,
                    format!(
                        "{} processes are still there (forking faster than they are killed)",
                        pids.len()
                    ),
                )
                .into());
            }
            for pid in pids {
                // Already gone (ESRCH) is what we want.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Removes the cgroup and any child cgroups, retrying while killed processes drain
    /// (EBUSY). An already removed cgroup is not an error.
    pub fn remove(&self) -> io::Result<()> {
        Ok(remove_tree(&self.dir, Instant::now() + DRAIN)?)
    }

    fn all_pids(&self, dir: &Path) -> Result<Vec<i32>, CgroupError> {
        let procs = dir.join("cgroup.procs");
        let text = match std::fs::read_to_string(&procs) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("read", &procs, e, "the cgroup must be readable")),
        };
        let mut pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        for child in child_dirs(dir)? {
            pids.extend(self.all_pids(&child)?);
        }
        Ok(pids)
    }
}

fn child_dirs(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("list", dir, e, "the cgroup must be readable")),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list", dir, e, "the cgroup must be readable"))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(entry.path());
        }
    }
    Ok(out)
}

fn remove_tree(dir: &Path, deadline: Instant) -> Result<(), CgroupError> {
    for child in child_dirs(dir)? {
        remove_tree(&child, deadline)?;
    }
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                let hint = if e.raw_os_error() == Some(libc::EBUSY) {
                    "processes are still in it: kill them first (Cgroup::kill)"
                } else {
                    "the cgroup's parent must be writable"
                };
                return Err(io_error("remove", dir, e, hint));
            }
        }
    }
}
