//! The storage service as the container agent sees it: templates and instances are volumes and
//! snapshots made through its socket (/run/tessera/storage.sock), never by touching the data
//! disk directly.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tessera_common::ipc::{self, Refused};

/// The storage service's socket.
pub const SOCKET: &str = "/run/tessera/storage.sock";
/// Snapshots of a big template on LVM thin take lvm2's time; creating is quick.
const TIMEOUT: Duration = Duration::from_secs(120);

/// A volume or snapshot as the storage service lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Volume {
    pub name: String,
    pub path: PathBuf,
    pub readonly: bool,
    pub origin: Option<String>,
}

/// Why the storage service could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A refusal with the service's code and reason (`no_storage`, `no_space`, `exists`, …).
    #[error("the storage service refused: {0}")]
    Refused(Refused),
    /// The service could not be asked (not running, not answering).
    #[error("{0:#}")]
    Unreachable(anyhow::Error),
    #[error("the storage service answered {what} without {field}: {reply}")]
    Malformed {
        what: &'static str,
        field: &'static str,
        reply: String,
    },
}

impl StorageError {
    /// The refusal's code, or `storage_unavailable` when the service could not be asked.
    pub fn code(&self) -> &str {
        match self {
            StorageError::Refused(r) => &r.code,
            StorageError::Unreachable(_) | StorageError::Malformed { .. } => "storage_unavailable",
        }
    }
}

/// A client of the storage socket at `socket`.
#[derive(Debug, Clone)]
pub struct Storage {
    socket: PathBuf,
}

impl Default for Storage {
    fn default() -> Self {
        Storage::at(Path::new(SOCKET))
    }
}

impl Storage {
    pub fn at(socket: &Path) -> Storage {
        Storage {
            socket: socket.to_path_buf(),
        }
    }

    fn ask(&self, request: Value) -> Result<Value, StorageError> {
        match ipc::ask(&self.socket, "storage", &request, TIMEOUT) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(refused)) => Err(StorageError::Refused(refused)),
            Err(e) => Err(StorageError::Unreachable(e)),
        }
    }

    /// `None` when the node has a usable data disk, else the service's reason (no disk, a
    /// refused or failed disk): why containers are unavailable.
    pub fn unavailable(&self) -> Result<Option<String>, StorageError> {
        let v = self.ask(json!({"op": "status"}))?;
        let state =
            v.get("state")
                .and_then(Value::as_str)
                .ok_or_else(|| StorageError::Malformed {
                    what: "status",
                    field: "state",
                    reply: v.to_string(),
                })?;
        if state == "ready" {
            return Ok(None);
        }
        let reason = v.get("reason").and_then(Value::as_str).unwrap_or(state);
        Ok(Some(format!("the data disk is {state}: {reason}")))
    }

    /// The backend in use (`btrfs`, `lvm-thin`).
    pub fn backend(&self) -> Result<String, StorageError> {
        let v = self.ask(json!({"op": "status"}))?;
        Ok(v.get("backend")
            .and_then(Value::as_str)
            .unwrap_or("none")
            .to_string())
    }

    pub fn list(&self) -> Result<Vec<Volume>, StorageError> {
        let v = self.ask(json!({"op": "list"}))?;
        let volumes = v.get("volumes").cloned().ok_or(StorageError::Malformed {
            what: "list",
            field: "volumes",
            reply: String::new(),
        })?;
        serde_json::from_value(volumes).map_err(|_| StorageError::Malformed {
            what: "list",
            field: "volumes[].name/path/readonly",
            reply: v.to_string(),
        })
    }

    pub fn find(&self, name: &str) -> Result<Option<Volume>, StorageError> {
        Ok(self.list()?.into_iter().find(|v| v.name == name))
    }

    /// A new writable volume (`size` is the virtual size on LVM thin; Btrfs ignores it).
    pub fn create(&self, name: &str, size: u64) -> Result<Volume, StorageError> {
        let backend = self.backend()?;
        let request = if backend == "lvm-thin" {
            json!({"op": "create", "name": name, "size": size})
        } else {
            json!({"op": "create", "name": name})
        };
        volume("create", self.ask(request)?)
    }

    /// A COW snapshot of `source`.
    pub fn snapshot(
        &self,
        source: &str,
        name: &str,
        readonly: bool,
    ) -> Result<Volume, StorageError> {
        volume(
            "snapshot",
            self.ask(
                json!({"op": "snapshot", "source": source, "name": name, "readonly": readonly}),
            )?,
        )
    }

    pub fn delete(&self, name: &str) -> Result<(), StorageError> {
        self.ask(json!({"op": "delete", "name": name})).map(|_| ())
    }
}

fn volume(what: &'static str, v: Value) -> Result<Volume, StorageError> {
    serde_json::from_value(v.clone()).map_err(|_| StorageError::Malformed {
        what,
        field: "name/path/readonly",
        reply: v.to_string(),
    })
}
