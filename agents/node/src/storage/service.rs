//! The `storage` service (`tessera agent storage`): reads `[storage]` from user-data, probes
//! the data disk, formats it when blank (or wiped), adopts it when it is ours, refuses it
//! otherwise; mounts /var/lib/tessera; says READY=1 once that is settled (with or without a
//! disk: the node stays available and `tessera status` shows why); then serves the API.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::backend::{Backend, StorageError, Volume, DATA_ROOT};
use super::btrfs::{self, Btrfs};
use super::command::run;
use super::config::{self, BackendKind, StorageConfig};
use super::lvm::{self, Lvm};
use super::mount;
use super::plan::{self, Plan};
use super::probe::{self, PROBE_LEN};
use super::protocol::{self, Request};
use crate::ipc::{self, ApiError};
use crate::net::service::log;

/// The API socket.
pub const SOCKET: &str = "/run/tessera/storage.sock";
/// Creating or snapshotting is refused below this much free space: a volume made on a full
/// disk is of no use, and Btrfs and thin pools misbehave when metadata cannot grow.
pub const MIN_FREE: u64 = 16 << 20;
/// How long to wait for the data disk's device node.
pub const DEVICE_WAIT: Duration = Duration::from_secs(10);
/// Kernel modules of the two backends (their dependencies come along); lvm2 wants the
/// snapshot target loaded before it makes a thin snapshot.
pub const MODULES: [&str; 3] = ["btrfs", "dm_thin_pool", "dm_snapshot"];

/// What the service has decided about the data disk.
pub enum State {
    NoDisk,
    Refused(String),
    Failed(String),
    Ready(Box<dyn Backend>),
}

pub struct Storage {
    state: State,
    config: Option<StorageConfig>,
    /// One change at a time: name checks and the change must not interleave.
    changes: Mutex<()>,
}

fn api_error(e: StorageError) -> ApiError {
    ApiError::new(e.code(), e.to_string())
}

impl Storage {
    fn backend(&self) -> Result<&dyn Backend, ApiError> {
        match &self.state {
            State::Ready(b) => Ok(b.as_ref()),
            State::NoDisk => Err(ApiError::new(
                "no_storage",
                "this node has no data disk (user-data has no [storage]); add [storage] backend and device to user-data",
            )),
            State::Refused(r) | State::Failed(r) => Err(ApiError::new("no_storage", r.clone())),
        }
    }

    pub fn status(&self) -> Value {
        let (state, reason) = match &self.state {
            State::NoDisk => ("no_disk", Some("user-data has no [storage]".to_string())),
            State::Refused(r) => ("refused", Some(r.clone())),
            State::Failed(r) => ("failed", Some(r.clone())),
            State::Ready(_) => ("ready", None),
        };
        let usage = self.backend().ok().and_then(|b| b.usage().ok());
        json!({
            "state": state,
            "reason": reason,
            "backend": self.config.as_ref().map(|c| c.backend.as_str()),
            "device": self.config.as_ref().map(|c| c.device.display().to_string()),
            "root": DATA_ROOT,
            "usage": usage,
        })
    }

    fn room(b: &dyn Backend) -> Result<(), ApiError> {
        let u = b.usage().map_err(api_error)?;
        if u.free_bytes < MIN_FREE {
            return Err(api_error(StorageError::no_space(&format!(
                "{} MiB free of {} MiB, {} MiB needed for a new volume or snapshot",
                u.free_bytes >> 20,
                u.total_bytes >> 20,
                MIN_FREE >> 20
            ))));
        }
        Ok(())
    }

    /// Answers one request.
    pub fn handle(&self, request: Request) -> Result<Value, ApiError> {
        if request == Request::Status {
            return Ok(self.status());
        }
        let b = self.backend()?;
        let _one = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        // How long each change took, in its log line: the operator sees what storage costs.
        let began = std::time::Instant::now();
        let ms = || (began.elapsed().as_secs_f64() * 1000.0 * 100.0).round() / 100.0;
        let done = |what: &str, v: &Volume| {
            log(
                "info",
                what,
                json!({"volume": v.name.as_str(), "kind": v.kind, "readonly": v.readonly,
                       "origin": v.origin, "path": v.path, "ms": ms()}),
            );
        };
        match request {
            Request::Status => Ok(self.status()),
            Request::List => Ok(json!({
                "backend": b.kind().as_str(),
                "volumes": b.list().map_err(api_error)?,
                "usage": b.usage().ok(),
            })),
            Request::Create { name, size } => {
                Self::room(b)?;
                let v = b.create(&name, size).map_err(api_error)?;
                done("volume created", &v);
                Ok(json!(v))
            }
            Request::Snapshot {
                source,
                name,
                readonly,
            } => {
                Self::room(b)?;
                let v = b.snapshot(&source, &name, readonly).map_err(api_error)?;
                done("snapshot created", &v);
                Ok(json!(v))
            }
            Request::Delete { name } => {
                b.delete(&name).map_err(api_error)?;
                log(
                    "info",
                    "volume deleted",
                    json!({"volume": name.as_str(), "ms": ms()}),
                );
                Ok(json!({"ok": true}))
            }
        }
    }
}

fn status(text: &str) {
    let _ = tessera_common::notify::notify(&[format!("STATUS={text}")]);
}

fn load_modules() {
    for m in MODULES {
        if let Err(e) = std::process::Command::new("/sbin/modprobe")
            .args(["-q", m])
            .status()
        {
            log(
                "warn",
                "modprobe not run",
                json!({"module": m, "reason": e.to_string()}),
            );
        }
    }
}

/// The first [`PROBE_LEN`] bytes of `device`.
fn read_head(device: &Path) -> Result<Vec<u8>, String> {
    let mut f = std::fs::File::open(device)
        .map_err(|e| format!("cannot open {}: {e}", device.display()))?;
    let mut buf = Vec::with_capacity(PROBE_LEN);
    Read::by_ref(&mut f)
        .take(PROBE_LEN as u64)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read {}: {e}", device.display()))?;
    Ok(buf)
}

/// Clears the old signatures (the first MiB) before formatting a disk user-data said to wipe.
fn wipe_head(device: &Path) -> Result<(), StorageError> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(device)
        .and_then(|mut f| {
            f.write_all(&vec![0u8; PROBE_LEN])?;
            f.sync_all()
        })
        .map_err(|e| StorageError::Internal(format!("wiping {}: {e}", device.display())))
}

fn wait_for(device: &Path) -> bool {
    let deadline = std::time::Instant::now() + DEVICE_WAIT;
    while !device.exists() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

fn format(cfg: &StorageConfig, root: &Path) -> Result<Box<dyn Backend>, StorageError> {
    match cfg.backend {
        BackendKind::Btrfs => {
            run(&btrfs::mkfs_command(&cfg.device))?;
            mount::mount_at(&cfg.device, root, "btrfs", false)?;
            Ok(Box::new(Btrfs::new(root)?))
        }
        BackendKind::LvmThin => Ok(Box::new(Lvm::format(&cfg.device, root)?)),
    }
}

fn adopt(cfg: &StorageConfig, root: &Path) -> Result<Box<dyn Backend>, StorageError> {
    match cfg.backend {
        BackendKind::Btrfs => {
            if !mount::is_mounted(root) {
                mount::mount_at(&cfg.device, root, "btrfs", false)?;
            }
            Ok(Box::new(Btrfs::new(root)?))
        }
        BackendKind::LvmThin => Ok(Box::new(Lvm::adopt(root)?)),
    }
}

/// Settles the data disk: the state the service then serves.
pub fn prepare(cfg: &StorageConfig, root: &Path) -> State {
    let device = &cfg.device;
    if !wait_for(device) {
        return State::Refused(format!(
            "{} does not exist; attach the data disk or correct storage.device in user-data",
            device.display()
        ));
    }
    let head = match read_head(device) {
        Ok(h) => h,
        Err(e) => return State::Failed(e),
    };
    let content = probe::probe(&head);
    let decision = plan::decide(&content, cfg.backend, cfg.wipe, device);
    log(
        "info",
        "data disk probed",
        json!({"device": device.display().to_string(), "content": format!("{content:?}"), "backend": cfg.backend.as_str(), "wipe": cfg.wipe, "plan": format!("{decision:?}")}),
    );
    if cfg.backend == BackendKind::LvmThin {
        if let Err(e) = lvm::write_config() {
            return State::Failed(e.to_string());
        }
    }
    let result = match decision {
        Plan::Refuse(reason) => return State::Refused(reason),
        Plan::Adopt => adopt(cfg, root),
        Plan::Format { wipe } => {
            if wipe {
                log(
                    "warn",
                    "wiping the data disk (storage.wipe = true)",
                    json!({"device": device.display().to_string(), "found": format!("{content:?}")}),
                );
                if let Err(e) = wipe_head(device) {
                    return State::Failed(e.to_string());
                }
            }
            log(
                "info",
                "formatting the data disk",
                json!({"device": device.display().to_string(), "backend": cfg.backend.as_str()}),
            );
            format(cfg, root)
        }
    };
    match result {
        Ok(b) => State::Ready(b),
        Err(e) => State::Failed(format!(
            "{}: {e}; see `tessera logs storage`",
            device.display()
        )),
    }
}

/// Runs the service; returns only on a fatal error.
pub fn run_service() -> anyhow::Result<()> {
    serve(
        Path::new(crate::net::config::USERDATA_FILE),
        Path::new(DATA_ROOT),
        Path::new(SOCKET),
    )
}

pub fn serve(userdata: &Path, root: &Path, socket: &Path) -> anyhow::Result<()> {
    let (config, state) = match config::load(userdata) {
        Ok(None) => {
            log(
                "info",
                "no data disk: user-data has no [storage]; volumes are unavailable",
                json!({}),
            );
            (None, State::NoDisk)
        }
        Err(e) => (None, State::Refused(e.to_string())),
        Ok(Some(cfg)) => {
            status(&format!(
                "preparing {} ({})",
                cfg.device.display(),
                cfg.backend.as_str()
            ));
            load_modules();
            let state = prepare(&cfg, root);
            (Some(cfg), state)
        }
    };
    let text = match &state {
        State::NoDisk => "no data disk".to_string(),
        State::Refused(r) => format!("refused: {r}"),
        State::Failed(r) => format!("failed: {r}"),
        State::Ready(b) => format!(
            "{} on {} mounted at {}",
            b.kind().as_str(),
            config
                .as_ref()
                .map(|c| c.device.display().to_string())
                .unwrap_or_default(),
            root.display()
        ),
    };
    match &state {
        State::Ready(_) => log(
            "info",
            "data disk ready",
            json!({"root": root.display().to_string(), "status": text}),
        ),
        State::NoDisk => {}
        State::Refused(r) => log(
            "error",
            "data disk refused",
            json!({"reason": r, "fix": "set storage.wipe = true in user-data to format it, or attach a blank disk"}),
        ),
        State::Failed(r) => log("error", "data disk unusable", json!({"reason": r})),
    }
    let storage = Arc::new(Storage {
        state,
        config,
        changes: Mutex::new(()),
    });
    let s = storage.clone();
    ipc::serve(
        socket,
        "storage",
        Arc::new(move |line: &[u8]| protocol::parse(line).and_then(|r| s.handle(r))),
    )?;
    let _ = tessera_common::notify::notify(&["READY=1".into(), format!("STATUS={text}")]);
    loop {
        std::thread::park();
    }
}
