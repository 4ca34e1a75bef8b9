//! The container's state directory (e.g. `/run/tessera/containers/<id>`), the only thing a
//! restarted agent needs to find its containers again:
//! - `state.json` ([`StateFile`]): id, bundle, the shim's and the init's pid with their start
//!   time (so a reused pid is never taken for them), times and status; written by the shim,
//!   atomically, at each change;
//! - `exit.json` ([`ExitRecord`]): how the init ended, written by the shim once;
//! - `exec.fifo`: the start signal (see `agent::start`), `log.jsonl`: the output, `shim.log`:
//!   the shim's own stderr.

use super::protocol::{RootSwitch, StepError};
use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "state.json";
pub const EXIT_FILE: &str = "exit.json";
pub const FIFO_FILE: &str = "exec.fifo";
pub const SHIM_LOG: &str = "shim.log";

/// What the shim last recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recorded {
    Creating,
    Created,
    Running,
    Stopped,
}

/// A process identity that survives pid reuse: the pid and its start time (clock ticks after
/// boot, field 22 of /proc/<pid>/stat).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: u32,
    pub start: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    pub id: String,
    pub bundle: PathBuf,
    pub status: Recorded,
    pub shim: ProcessId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<ProcessId>,
    /// RFC 3339, UTC, milliseconds.
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_switch: Option<RootSwitch>,
    /// The container's cgroup directory, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<PathBuf>,
}

/// `exit.json`: `{"code":N}` or `{"signal":N,"oom_killed":bool}`, and the step that failed
/// when the init could not exec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_killed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
    pub time: String,
}

/// Writes `name` in `dir` through a temporary file and a rename, so a reader sees the old
/// content or the new, never half of it.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, dir.join(name))
}

fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    bytes.push(b'\n');
    write_atomic(dir, name, &bytes)
}

/// Reads a JSON file; `Ok(None)` when it does not exist.
fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl StateFile {
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        write_json(dir, STATE_FILE, self)
    }

    pub fn read(dir: &Path) -> io::Result<Option<StateFile>> {
        read_json(&dir.join(STATE_FILE))
    }
}

impl ExitRecord {
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        write_json(dir, EXIT_FILE, self)
    }

    pub fn read(dir: &Path) -> io::Result<Option<ExitRecord>> {
        read_json(&dir.join(EXIT_FILE))
    }
}

/// What /proc says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Running (or stopped, sleeping: anything but a zombie).
    Alive,
    /// Exited, not yet reaped by its parent.
    Zombie,
    /// No such process, or the pid now belongs to another one.
    Gone,
}

/// Start time and state letter of `pid` from /proc/<pid>/stat.
fn stat(pid: u32) -> Option<(u64, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Fields after the name start at field 3 (state); the start time is field 22.
    let start = fields.nth(22 - 4)?.parse().ok()?;
    Some((start, state))
}

impl ProcessId {
    /// The process `pid` as it is now; None when it does not exist.
    pub fn of(pid: u32) -> Option<ProcessId> {
        stat(pid).map(|(start, _)| ProcessId { pid, start })
    }

    pub fn liveness(&self) -> Liveness {
        match stat(self.pid) {
            Some((start, _)) if start != self.start => Liveness::Gone,
            Some((_, 'Z')) => Liveness::Zombie,
            Some(_) => Liveness::Alive,
            None => Liveness::Gone,
        }
    }

    /// Collects the process if it is our exited child (the shim is the agent's; after a shim
    /// crash a subreaper agent inherits the init). Anything else is left to its parent.
    pub fn reap_if_zombie(&self) {
        if self.liveness() == Liveness::Zombie {
            let pid = nix::unistd::Pid::from_raw(self.pid as i32);
            let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_a_wrong_start_time_is_gone() {
        let me = ProcessId::of(std::process::id()).unwrap();
        assert_eq!(me.liveness(), Liveness::Alive);
        let other = ProcessId {
            start: me.start + 1,
            ..me
        };
        assert_eq!(other.liveness(), Liveness::Gone);
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let rec = ExitRecord {
            code: Some(3),
            signal: None,
            oom_killed: None,
            error: None,
            time: "t".into(),
        };
        rec.write(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(EXIT_FILE)).unwrap();
        assert!(text.contains("\"code\": 3"), "{text}");
        assert_eq!(ExitRecord::read(dir.path()).unwrap(), Some(rec));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(EXIT_FILE)]);
    }
}
