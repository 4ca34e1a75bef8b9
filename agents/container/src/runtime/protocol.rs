//! The typed messages between the runtime's processes, one JSON object per line:
//! - shim → container init, through the config pipe: [`InitConfig`] (the thesis's
//!   "configuration passed through a pipe fd"), then the pipe is closed;
//! - container init → shim, through the report pipe: [`InitMessage`] (ready, starting, or the
//!   step that failed); the pipe is close-on-exec, so its end also tells that exec happened;
//! - shim → agent, on the shim's stdout: [`ShimMessage`], once, when the container is created
//!   or could not be.
//!
//! A failure anywhere travels as a [`StepError`]: which process, which step with its operands,
//! the errno, and a hint saying what to fix.

use super::namespaces::{NetMode, Plan};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;

/// Which process a [`StepError`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Shim,
    ContainerInit,
    /// `exec` in a running container (the caller's own process).
    Exec,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Shim => "shim",
            Origin::ContainerInit => "container init",
            Origin::Exec => "exec",
        })
    }
}

/// One failed step, e.g. "container init: mount proc on /proc: EPERM: Operation not
/// permitted; …".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct StepError {
    pub origin: Origin,
    /// What was being done, with its operands: "mount proc on /proc".
    pub step: String,
    /// The errno of the failed syscall, when one failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    /// Detail when there is no errno (a parse error, a refused setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// What to change; a default by errno is used when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hint: String,
}

impl StepError {
    pub fn new(origin: Origin, step: impl Into<String>) -> StepError {
        StepError {
            origin,
            step: step.into(),
            errno: None,
            detail: None,
            hint: String::new(),
        }
    }

    /// A failed syscall; the errno is taken from `e` (EIO when it has none).
    pub fn io(origin: Origin, step: impl Into<String>, e: &io::Error) -> StepError {
        let mut s = StepError::new(origin, step);
        match e.raw_os_error() {
            Some(n) => s.errno = Some(n),
            None => s.detail = Some(e.to_string()),
        }
        s
    }

    pub fn errno(origin: Origin, step: impl Into<String>, e: nix::errno::Errno) -> StepError {
        let mut s = StepError::new(origin, step);
        s.errno = Some(e as i32);
        s
    }

    pub fn detail(mut self, detail: impl Into<String>) -> StepError {
        self.detail = Some(detail.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> StepError {
        self.hint = hint.into();
        self
    }

    fn default_hint(&self) -> &'static str {
        match self.errno.map(nix::errno::Errno::from_raw) {
            Some(nix::errno::Errno::ENOENT) => "a path named above is missing: fix config.json or add it to the rootfs",
            Some(nix::errno::Errno::EPERM) | Some(nix::errno::Errno::EACCES) => {
                "refused by the kernel: the runtime must run as root with all capabilities, and the bundle must be readable"
            }
            Some(nix::errno::Errno::EINVAL) => "the kernel refused the arguments: check the type and options of this entry in config.json",
            Some(nix::errno::Errno::ENOSPC) | Some(nix::errno::Errno::ENOMEM) => "out of resources: free memory or raise the limit",
            _ => "fix the setting of config.json or of the node named above",
        }
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.step)?;
        if let Some(n) = self.errno {
            write!(f, ": {}", nix::errno::Errno::from_raw(n))?;
        }
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        let hint = if self.hint.is_empty() {
            self.default_hint()
        } else {
            &self.hint
        };
        write!(f, "; {hint}")
    }
}

/// Everything the container init needs, sent by the shim before the init does anything.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitConfig {
    pub id: String,
    /// config.json as read by the shim.
    pub spec: Spec,
    /// The bundle directory (relative bind sources are relative to it).
    pub bundle: PathBuf,
    /// The rootfs on the host, absolute and without symlinks.
    pub rootfs: PathBuf,
    /// The namespaces the init creates or joins itself (the clone flags made the others).
    pub namespaces: Plan,
    pub net: NetMode,
}

/// How the init switched to the container's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RootSwitch {
    /// pivot_root(2), the old root detached.
    PivotRoot,
    /// The node root is an initramfs, where pivot_root(2) is refused: the rootfs was moved
    /// onto "/" (MS_MOVE) and chroot'ed into; every other mount was detached first.
    MoveChroot,
}

/// Container init → shim.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitMessage {
    /// Set up, blocked until start.
    Ready {
        root_switch: RootSwitch,
        /// Things the operator should know (they go to the container's log).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<String>,
    },
    /// Start was received; exec comes next.
    Starting,
    Failed(StepError),
}

/// Shim → agent, once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShimMessage {
    Created { init_pid: u32 },
    Failed(StepError),
}

/// Writes one message as one line.
pub fn send<T: Serialize>(mut out: impl Write, message: &T) -> io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)?;
    out.flush()
}

/// Parses one line written by [`send`].
pub fn parse<T: for<'de> Deserialize<'de>>(line: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_error_names_process_step_errno_and_fix() {
        let e = StepError::errno(
            Origin::ContainerInit,
            "mount proc on /proc",
            nix::errno::Errno::EPERM,
        );
        let s = e.to_string();
        assert!(
            s.starts_with("container init: mount proc on /proc: EPERM"),
            "{s}"
        );
        assert!(s.contains("; refused by the kernel"), "{s}");
        let e = e.hint("grant it");
        assert!(e.to_string().ends_with("; grant it"));
    }

    #[test]
    fn messages_round_trip_as_lines() {
        let mut buf = Vec::new();
        let failed =
            StepError::new(Origin::Shim, "read config.json").detail("expected value at line 1");
        send(&mut buf, &ShimMessage::Failed(failed.clone())).unwrap();
        assert_eq!(buf.iter().filter(|&&b| b == b'\n').count(), 1);
        match parse::<ShimMessage>(buf.trim_ascii_end()).unwrap() {
            ShimMessage::Failed(e) => assert_eq!(e, failed),
            other => panic!("{other:?}"),
        }
    }
}
