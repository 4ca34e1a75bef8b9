//! `exec`: a new process in a running container (`tessera container exec`), set up like the
//! container's own process: it joins the container's cgroup and namespaces (IPC, UTS,
//! network, PID, cgroup, mount) and its root, then a forked child takes config.json's
//! process settings (rlimits, identity, capabilities, no_new_privs, seccomp, cwd) with the
//! command and extra environment given, exactly as the init did (`init::become_process`).
//! The caller waits for it and returns its exit status; its stdio is the caller's.
//!
//! The caller must be single-threaded (setns into a mount namespace refuses a process whose
//! threads share its filesystem attributes) and root: the console CLI is both.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::ForkResult;

use super::protocol::{Origin, StepError};
use super::{init, state, RuntimeError, Status};
use crate::spec;

/// The namespaces a process joins, in this order (mount last: it changes what paths mean).
const NAMESPACES: &[(&str, CloneFlags)] = &[
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// Exit status of the exec'd command as a shell reports it (128 + signal when killed).
pub fn exec(state_dir: &Path, args: &[String], env: &[String]) -> Result<i32, RuntimeError> {
    let st = state(state_dir)?;
    let Some(pid) = st.init_pid.filter(|_| st.status == Status::Running) else {
        return Err(RuntimeError::WrongState {
            id: st.id.clone(),
            state: st.status.to_string(),
            fix: "exec needs a running container: start it first",
        });
    };
    let threads = std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1);
    if threads != 1 {
        return Err(step_error(
            "join the container",
            format!(
                "the calling process has {threads} threads; setns into a mount namespace needs one"
            ),
        ));
    }
    let spec = spec::load(&st.bundle).map_err(|e| step_error("read config.json", e.to_string()))?;
    let mut process = spec.process().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(step_error(
            "read the command",
            "give the program to run: tessera container exec NAME -- CMD [ARGS]",
        ));
    }
    process.set_args(Some(args.to_vec()));
    let mut vars = process.env().clone().unwrap_or_default();
    spec::merge_env(&mut vars, env)
        .map_err(|kv| step_error("read the environment", format!("{kv:?} is not KEY=VALUE")))?;
    process.set_env(Some(vars));
    let linux = spec.linux().clone().unwrap_or_default();

    // Everything of the container is opened before the first setns: afterwards /proc and
    // /sys are the container's.
    let proc_dir = Path::new("/proc").join(pid.to_string());
    let root = File::open(proc_dir.join("root"))
        .map_err(|e| step_error("open the container's root", e.to_string()))?;
    let mut joins = Vec::new();
    for (name, flag) in NAMESPACES {
        let theirs = proc_dir.join("ns").join(name);
        let same = std::fs::read_link(&theirs).ok()
            == std::fs::read_link(Path::new("/proc/self/ns").join(name)).ok();
        if !same {
            let f = File::open(&theirs)
                .map_err(|e| step_error(format!("open {}", theirs.display()), e.to_string()))?;
            joins.push((*name, *flag, f));
        }
    }
    if let Some(cg) = &st.cgroup {
        std::fs::write(cg.join("cgroup.procs"), std::process::id().to_string())
            .map_err(|e| step_error(format!("join the cgroup {}", cg.display()), e.to_string()))?;
    }
    for (name, flag, f) in &joins {
        nix::sched::setns(f, *flag)
            .map_err(|e| step_error(format!("join the {name} namespace"), e.to_string()))?;
    }
    nix::unistd::fchdir(root.as_raw_fd())
        .and_then(|()| nix::unistd::chroot("."))
        .map_err(|e| step_error("enter the container's root", e.to_string()))?;

    // A child: the PID namespace applies to children only.
    // SAFETY: the process is single-threaded (checked above), so the child may run any code.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(step_error("fork", e.to_string())),
        Ok(ForkResult::Child) => {
            let Err(e) = init::become_process(&process, &linux, &mut || Ok(()));
            eprintln!("tessera container exec: {e}");
            // SAFETY: _exit ends the child without running the parent's destructors twice.
            unsafe { libc::_exit(127) }
        }
        Ok(ForkResult::Parent { child }) => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(step_error("wait for the command", e.to_string())),
            }
        },
    }
}

fn step_error(step: impl Into<String>, detail: impl Into<String>) -> RuntimeError {
    RuntimeError::Step(StepError::new(Origin::Exec, step).detail(detail))
}
