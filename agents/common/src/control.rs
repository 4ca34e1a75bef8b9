//! The control protocol between the `tessera` CLI and PID 1: JSON lines over a unix stream
//! socket. The client sends one [`Request`] line; PID 1 answers with [`Reply`] lines and
//! closes the stream (a `logs --follow` stream stays open until the client goes away).

use crate::log::LogEvent;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    Status,
    Logs {
        #[serde(default)]
        follow: bool,
        #[serde(default)]
        service: Option<String>,
        /// How many past events to send first (all that are kept when absent).
        #[serde(default)]
        tail: Option<usize>,
    },
    Service {
        action: ServiceAction,
        name: String,
    },
    Shutdown {
        mode: ShutdownMode,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceAction {
    Start,
    Stop,
    Restart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShutdownMode {
    Poweroff,
    Reboot,
    Halt,
}

impl ShutdownMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ShutdownMode::Poweroff => "poweroff",
            ShutdownMode::Reboot => "reboot",
            ShutdownMode::Halt => "halt",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum Reply {
    Status(Status),
    Done { message: String },
    Error { error: String },
    Event(LogEvent),
}

/// Life-cycle state of a service as PID 1 sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceState {
    /// Waiting for what it requires to be ready.
    Waiting,
    /// Spawned, not ready yet.
    Starting,
    /// Long-run service that reported ready.
    Ready,
    /// Oneshot that exited successfully.
    Done,
    /// Exited; restart scheduled after a back-off delay.
    Backoff,
    /// Stop signal sent, waiting for it to exit.
    Stopping,
    /// Stopped on purpose, or exited normally and not restarted.
    Stopped,
    /// Given up on (restart intensity, failed dependency, spawn error).
    Failed,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Waiting => "waiting",
            ServiceState::Starting => "starting",
            ServiceState::Ready => "ready",
            ServiceState::Done => "done",
            ServiceState::Backoff => "backoff",
            ServiceState::Stopping => "stopping",
            ServiceState::Stopped => "stopped",
            ServiceState::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    /// "oneshot" or "long-run".
    pub kind: String,
    pub state: ServiceState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub restarts: u32,
    /// Last `STATUS=` the service sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Why the service is in its state (exit status, failure reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub hostname: String,
    /// Node life-cycle state: "initializing", "available", "destroying".
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// True when the supervisor is PID 1 (false for a host subreaper run).
    pub pid1: bool,
    pub uptime_ms: u64,
    /// Milliseconds from PID 1 start to TESSERA-READY, once reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_userspace_ms: Option<u64>,
    /// Resident memory of PID 1 in KiB.
    pub rss_kib: u64,
    pub kernel: String,
    /// Problems found while loading the configuration (bad service files, missing modules).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub node: NodeStatus,
    pub services: Vec<ServiceStatus>,
}

/// Errors of the control client, each saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach PID 1 at {path}: {source}. On a Tessera node this socket exists once PID 1 runs; elsewhere set TESSERA_CONTROL to the socket of a `tessera init --subreaper` run")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control connection to {path} failed: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("PID 1 sent a reply this CLI does not understand ({0}); are the CLI and the node the same version?")]
    Protocol(String),
    #[error("{0}")]
    Refused(String),
}

/// A connection to PID 1's control socket.
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
}

impl Client {
    /// Connects and sends the request.
    pub fn send(path: &Path, request: &Request) -> Result<Client, ClientError> {
        let mut stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.into(),
            source,
        })?;
        let mut line =
            serde_json::to_string(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push('\n');
        stream
            .write_all(line.as_bytes())
            .map_err(|source| ClientError::Io {
                path: path.into(),
                source,
            })?;
        Ok(Client {
            path: path.into(),
            reader: BufReader::new(stream),
        })
    }

    /// Next reply, or None at the end of the stream. An `Error` reply becomes `Refused`.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, ClientError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|source| ClientError::Io {
                path: self.path.clone(),
                source,
            })?;
        if n == 0 {
            return Ok(None);
        }
        match serde_json::from_str::<Reply>(&line) {
            Ok(Reply::Error { error }) => Err(ClientError::Refused(error)),
            Ok(reply) => Ok(Some(reply)),
            Err(e) => Err(ClientError::Protocol(format!("{e}: {}", line.trim_end()))),
        }
    }

    /// Sends a request that has exactly one reply.
    pub fn call(path: &Path, request: &Request) -> Result<Reply, ClientError> {
        Client::send(path, request)?
            .next_reply()?
            .ok_or_else(|| ClientError::Protocol("connection closed without a reply".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_stable_json() {
        let r = Request::Service {
            action: ServiceAction::Restart,
            name: "klog".into(),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"op":"service","action":"restart","name":"klog"}"#
        );
        let back: Request = serde_json::from_str(r#"{"op":"logs","follow":true}"#).unwrap();
        assert_eq!(
            back,
            Request::Logs {
                follow: true,
                service: None,
                tail: None
            }
        );
    }

    #[test]
    fn event_reply_carries_the_event_flat() {
        let e = LogEvent::new("init", crate::log::Level::Info, "hi");
        let line = serde_json::to_string(&Reply::Event(e.clone())).unwrap();
        assert!(line.starts_with(r#"{"reply":"event","time""#), "{line}");
        assert_eq!(
            serde_json::from_str::<Reply>(&line).unwrap(),
            Reply::Event(e)
        );
    }
}
