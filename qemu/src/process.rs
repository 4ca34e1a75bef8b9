//! The QEMU child process: spawned from a dedicated thread that then waits for it, so that
//! exit is noticed without polling, the pid is never signalled after it was reaped, and
//! QEMU dies with the runner.
//!
//! QEMU is started with `PR_SET_PDEATHSIG = SIGKILL`. The kernel sends that signal when the
//! *thread* that forked exits; the waiter thread lives exactly as long as QEMU, so a runner
//! killed by a test harness (or by Ctrl-C) never leaves an orphan VM behind.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct State {
    /// QEMU has exited and is about to be (or has been) reaped: its pid must not be signalled.
    exited: bool,
    status: Option<ExitStatus>,
    killed: bool,
}

/// A running (or finished) QEMU.
#[derive(Debug)]
pub struct QemuProcess {
    pid: libc::pid_t,
    shared: Arc<(Mutex<State>, Condvar)>,
}

/// The process and its standard streams.
pub struct Spawned {
    pub process: QemuProcess,
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
}

type Started = (
    u32,
    Option<ChildStdin>,
    Option<ChildStdout>,
    Option<ChildStderr>,
);

/// Spawns `cmd` (with whatever stdio it was given) from a waiter thread.
pub fn spawn(mut cmd: Command) -> io::Result<Spawned> {
    let shared: Arc<(Mutex<State>, Condvar)> = Arc::default();
    let waiter = shared.clone();
    let (tx, rx) = mpsc::channel::<io::Result<Started>>();
    std::thread::Builder::new()
        .name("vm-qemu-wait".into())
        .spawn(move || {
            // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let pid = child.id();
            let _ = tx.send(Ok((
                pid,
                child.stdin.take(),
                child.stdout.take(),
                child.stderr.take(),
            )));
            wait_without_reaping(pid as libc::pid_t);
            let (lock, cond) = &*waiter;
            let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
            st.exited = true;
            // Reaping under the lock: `kill` holds the same lock, so it can never signal a
            // pid that was reaped and reused.
            st.status = child.wait().ok();
            drop(st);
            cond.notify_all();
        })?;
    let (pid, stdin, stdout, stderr) = rx
        .recv()
        .map_err(|_| io::Error::other("the QEMU waiter thread died"))??;
    Ok(Spawned {
        process: QemuProcess {
            pid: pid as libc::pid_t,
            shared,
        },
        stdin,
        stdout,
        stderr,
    })
}

/// Blocks until `pid` has exited, leaving it a zombie (WNOWAIT) so the pid stays reserved.
fn wait_without_reaping(pid: libc::pid_t) {
    loop {
        // SAFETY: siginfo_t is plain data; waitid only writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

impl QemuProcess {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Sends `signal` unless QEMU has already exited.
    pub fn signal(&self, signal: libc::c_int) {
        let mut st = self.lock();
        if !st.exited {
            // SAFETY: plain syscall on a pid that is still ours (not yet reaped, see above).
            unsafe { libc::kill(self.pid, signal) };
            if signal == libc::SIGKILL {
                st.killed = true;
            }
        }
    }

    /// Kills QEMU (SIGKILL) unless it has exited.
    pub fn kill(&self) {
        self.signal(libc::SIGKILL);
    }

    /// True once `kill` actually sent SIGKILL to a running QEMU.
    pub fn was_killed(&self) -> bool {
        self.lock().killed
    }

    /// Waits up to `timeout` for QEMU to exit and returns its status.
    pub fn wait(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = crate::console::deadline_after(timeout);
        let (_, cond) = &*self.shared;
        let mut st = self.lock();
        loop {
            if let Some(status) = st.status {
                return Some(status);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            st = cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub fn status(&self) -> Option<ExitStatus> {
        self.lock().status
    }

    /// A handle other threads can use to see whether QEMU has exited.
    pub fn exit_watch(&self) -> ExitWatch {
        ExitWatch(self.shared.clone())
    }
}

impl Drop for QemuProcess {
    /// A handle that goes away (e.g. on an error path right after spawning) takes QEMU along.
    fn drop(&mut self) {
        self.kill();
    }
}

/// Cheap, clonable view of whether QEMU has exited.
#[derive(Debug, Clone)]
pub struct ExitWatch(Arc<(Mutex<State>, Condvar)>);

impl ExitWatch {
    pub fn exited(&self) -> bool {
        self.0 .0.lock().unwrap_or_else(|e| e.into_inner()).exited
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn exit_status_is_reported_when_the_process_ends() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 3"]);
        let s = spawn(cmd).unwrap();
        let status = s.process.wait(Duration::from_secs(10)).unwrap();
        assert_eq!(status.code(), Some(3));
        assert!(!s.process.was_killed());
    }

    #[test]
    fn kill_ends_a_running_process_and_is_remembered() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let s = spawn(cmd).unwrap();
        assert_eq!(s.process.wait(Duration::from_millis(50)), None);
        s.process.kill();
        let status = s.process.wait(Duration::from_secs(10)).unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(s.process.was_killed());
        // Killing again after exit is a no-op.
        s.process.kill();
    }

    #[test]
    fn a_missing_binary_is_a_spawn_error() {
        let err = spawn(Command::new("/nonexistent/qemu")).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
