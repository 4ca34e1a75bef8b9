//! The `container` service (`tessera agent container`): templates and instances through the
//! storage service, containers through the runtime, the local socket API, restarts by policy,
//! and the containers' output as log events under their names.
//!
//! Threads: the socket's (one per request, `tessera_common::ipc`), one supervision loop (state
//! changes, restarts, log lines), and the main thread, which waits for SIGTERM and then stops
//! every container before the agent exits (node shutdown stops containers before the agents
//! they depend on). The agent never forks: the runtime execs a shim per container, and the
//! containers outlive a crash of the agent; the restarted agent finds them by their state
//! directories (`/run/tessera/containers/<name>`) and their records on the data disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tessera_common::api_error::ApiError;
use tessera_common::log::print_event as log;
use tessera_common::restart::{Backoff, Intensity};
use tessera_userdata::defaults::USERDATA_FILE;

use crate::archive::Limits;
use crate::instances::{self, InstanceError, New, Port, Record, RestartPolicy};
use crate::network::{self, Subnet};
use crate::protocol::{self, Request};
use crate::runtime::{self, CreateOptions, Exit, NetMode, RuntimeError, Signal, Status};
use crate::storage::Storage;
use crate::supervise::Watch;
use crate::templates::{self, TemplateError};

/// The API socket.
pub const SOCKET: &str = tessera_common::paths::CONTAINER_SOCKET;
/// The containers' state directories.
pub const STATE_ROOT: &str = "/run/tessera/containers";
/// Each container's cgroup is `<this>/<name>` (beside PID 1's `services/`).
pub const CGROUP_PARENT: &str = "/sys/fs/cgroup/containers";
/// How long a stop waits before SIGKILL, unless the request says.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);
/// How long a `wait` without `timeout_ms` waits, and the most any may.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);
/// Restarts of a container: like a service's default intensity and backoff.
pub(crate) const INTENSITY: Intensity = Intensity {
    max_restarts: 5,
    period: Duration::from_secs(10),
};
pub(crate) const BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(100),
    max: Duration::from_secs(5),
};
/// Log bytes in one `logs` reply (a follower asks again at once while there is more).
const LOGS_PER_REPLY: usize = 256 * 1024;
const TICK: Duration = Duration::from_millis(200);

pub struct Agent {
    pub(crate) storage: Storage,
    /// The tessera binary, which runs the shims (`tessera container shim`).
    pub(crate) shim: PathBuf,
    pub(crate) state_root: PathBuf,
    pub(crate) cgroup_parent: Option<PathBuf>,
    /// Why containers cannot run here (no data disk), if so.
    pub(crate) unavailable: Mutex<Option<String>>,
    pub(crate) watches: Mutex<BTreeMap<String, Watch>>,
    /// The containers' records as last read from the data disk: the supervision loop reads
    /// these every tick instead of asking the storage service to list its volumes each time.
    pub(crate) records: Mutex<BTreeMap<String, Record>>,
    /// Templates met so far, by digest: a create names one without a volume list.
    templates: Mutex<BTreeMap<String, templates::Template>>,
    /// One change at a time: name checks and changes must not interleave.
    pub(crate) changes: Mutex<()>,
    /// The containers' bridge network (`[container_network]`).
    pub(crate) subnet: Subnet,
    /// Made once per boot, when the first bridged container starts.
    bridge_ready: Mutex<bool>,
}

/// The firewall service's socket: the bridge's forwarding and the published ports go there.
fn firewall_socket() -> &'static Path {
    Path::new(tessera_common::paths::FIREWALL_SOCKET)
}

fn api(code: &'static str, reason: impl Into<String>) -> ApiError {
    ApiError::new(code, reason)
}

/// Leaks a dynamic code into the small fixed set ApiError carries.
fn code_of(code: &str) -> &'static str {
    const CODES: &[&str] = &[
        "bad_request",
        "not_found",
        "exists",
        "wrong_state",
        "unavailable",
        "no_space",
        "no_storage",
        "storage_unavailable",
        "digest_mismatch",
        "path_escapes",
        "absolute_path",
        "through_symlink",
        "parent_not_directory",
        "link_escapes",
        "device_node",
        "setuid",
        "unsupported_entry",
        "too_large",
        "too_many_entries",
        "size_mismatch",
        "bad_digest",
        "missing_config",
        "bad_config",
        "not_an_archive",
        "truncated",
        "corrupt",
        "io",
        "missing_blob",
        "bad_image",
        "no_matching_manifest",
        "unsupported_media_type",
        "bad_image_config",
        "cleanup_failed",
        "dest_not_empty",
        "bad_source",
        "timeout",
    ];
    CODES
        .iter()
        .find(|c| **c == code)
        .copied()
        .unwrap_or("internal")
}

impl From<TemplateError> for ApiError {
    fn from(e: TemplateError) -> ApiError {
        ApiError::new(code_of(e.code()), e.to_string())
    }
}

impl From<InstanceError> for ApiError {
    fn from(e: InstanceError) -> ApiError {
        ApiError::new(code_of(e.code()), e.to_string())
    }
}

fn runtime_error(e: RuntimeError) -> ApiError {
    let code = match &e {
        RuntimeError::NotFound(_) => "not_found",
        RuntimeError::Exists(_) => "exists",
        RuntimeError::WrongState { .. } => "wrong_state",
        RuntimeError::InvalidId(_) => "bad_request",
        RuntimeError::Timeout { .. } => "timeout",
        _ => "internal",
    };
    ApiError::new(code, e.to_string())
}

impl Agent {
    pub fn new(
        storage: Storage,
        shim: PathBuf,
        state_root: PathBuf,
        cgroup_parent: Option<PathBuf>,
        subnet: Subnet,
    ) -> Agent {
        Agent {
            storage,
            shim,
            state_root,
            cgroup_parent,
            unavailable: Mutex::new(None),
            watches: Mutex::new(BTreeMap::new()),
            records: Mutex::new(BTreeMap::new()),
            templates: Mutex::new(BTreeMap::new()),
            changes: Mutex::new(()),
            subnet,
            bridge_ready: Mutex::new(false),
        }
    }

    /// A free address of the subnet for a bridged container (callers hold `changes`).
    pub(crate) fn address_for(&self, net: &str) -> Result<Option<std::net::Ipv4Addr>, ApiError> {
        if net != "bridge" {
            return Ok(None);
        }
        let used = lock(&self.records)
            .values()
            .filter_map(|r| r.address)
            .collect();
        self.subnet.allocate(&used).map(Some).ok_or_else(|| {
            api(
                "no_space",
                format!(
                    "every address of the container network {} is taken; delete a container or give [container_network] a larger subnet",
                    self.subnet
                ),
            )
        })
    }

    /// Whether a bridged container's address is in today's container network (it is not
    /// once `[container_network]` names another subnet); true for the other network modes.
    pub(crate) fn address_fits(&self, record: &Record) -> bool {
        self.subnet.fits(&record.net, record.address)
    }

    /// A host port goes to one container (callers hold `changes`).
    fn check_ports(&self, name: &str, ports: &[Port]) -> Result<(), ApiError> {
        for (i, p) in ports.iter().enumerate() {
            if p.host == 0 || p.container == 0 {
                return Err(api(
                    "bad_request",
                    format!("ports[{i}]: port 0; use 1-65535"),
                ));
            }
            let records = lock(&self.records);
            let other = records.values().filter(|r| r.name != name).find(|r| {
                r.ports
                    .iter()
                    .any(|q| q.host == p.host && q.protocol == p.protocol)
            });
            if let Some(r) = other {
                return Err(api(
                    "exists",
                    format!(
                        "{}/{} is already published by container {}; choose another host port",
                        p.protocol.as_str(),
                        p.host,
                        r.name
                    ),
                ));
            }
        }
        Ok(())
    }

    fn ensure_bridge(&self) -> Result<(), ApiError> {
        let mut ready = lock(&self.bridge_ready);
        if !*ready {
            network::ensure_bridge(self.subnet, firewall_socket())
                .map_err(|e| api("internal", e.to_string()))?;
            log(
                "info",
                "container bridge up",
                json!({"bridge": network::BRIDGE, "subnet": self.subnet.to_string(), "gateway": self.subnet.gateway().to_string()}),
            );
            *ready = true;
        }
        Ok(())
    }

    /// Withdraws a container's published ports (it stopped or is going away).
    pub(crate) fn unpublish(&self, record: &Record) {
        if record.ports.is_empty() {
            return;
        }
        if let Err(e) = network::unpublish(firewall_socket(), &record.ports) {
            log(
                "error",
                "published ports not withdrawn",
                json!({"container": record.name, "error": e.to_string()}),
            );
        }
    }

    pub(crate) fn state_dir(&self, name: &str) -> PathBuf {
        self.state_root.join(name)
    }

    /// Asks the storage service whether containers can run here; remembers the reason.
    pub fn refresh_availability(&self) -> Option<String> {
        let reason = match self.storage.unavailable() {
            Ok(r) => r,
            Err(e) => Some(format!("the storage service cannot be asked: {e}")),
        };
        *lock(&self.unavailable) = reason.clone();
        reason
    }

    fn require_storage(&self) -> Result<(), ApiError> {
        match lock(&self.unavailable).clone() {
            None => Ok(()),
            Some(why) => Err(api(
                "unavailable",
                format!("containers are unavailable on this node: {why}; give the node a data disk ([storage] in user-data)"),
            )),
        }
    }

    /// Answers one request.
    pub fn handle(&self, line: &[u8]) -> Result<Value, ApiError> {
        let request = protocol::parse(line)?;
        if !matches!(request, Request::Status {}) {
            self.require_storage()?;
        }
        match request {
            Request::Status {} => {
                let reason = lock(&self.unavailable).clone();
                let backend = reason
                    .is_none()
                    .then(|| self.storage.backend().ok())
                    .flatten();
                Ok(json!({"available": reason.is_none(), "reason": reason, "backend": backend}))
            }
            Request::Import { path, sha256 } => {
                let _g = lock(&self.changes);
                let imported = templates::import_file(
                    &self.storage,
                    Path::new(&path),
                    sha256.as_deref(),
                    &Limits::default(),
                    &mut |_| {},
                )?;
                log(
                    "info",
                    "template imported",
                    json!({"digest": imported.template.digest, "source": path, "fresh": imported.fresh}),
                );
                let mut v = serde_json::to_value(&imported.template).unwrap_or(Value::Null);
                v["fresh"] = json!(imported.fresh);
                Ok(v)
            }
            Request::Templates {} => Ok(json!({"templates": templates::list(&self.storage)?})),
            Request::List {} => {
                let all = self.reload_records()?;
                let rows: Vec<Value> = all.iter().map(|r| self.describe(r, false)).collect();
                Ok(json!({"containers": rows}))
            }
            ref create @ Request::Create { .. } => self.create(create),
            Request::Start { name } => {
                let record = self.record(&name)?;
                self.launch(&record)?;
                self.release(&name);
                Ok(self.describe(&record, false))
            }
            Request::Stop { name, grace_ms } => {
                let record = self.record(&name)?;
                self.hold(&name);
                let grace = grace_ms.map(Duration::from_millis).unwrap_or(DEFAULT_GRACE);
                let dir = self.state_dir(&name);
                if dir.exists() {
                    runtime::stop(&dir, grace).map_err(runtime_error)?;
                }
                self.unpublish(&record);
                Ok(self.describe(&record, false))
            }
            Request::Kill { name, signal } => {
                self.record(&name)?;
                let signal = match signal.as_deref() {
                    None => Signal::SIGKILL,
                    Some(s) => parse_signal(s)?,
                };
                runtime::kill(&self.state_dir(&name), signal).map_err(runtime_error)?;
                Ok(json!({"ok": true}))
            }
            Request::Delete { name, force } => {
                let _g = lock(&self.changes);
                let record = self.record(&name)?;
                self.hold(&name);
                let running =
                    runtime::state(&self.state_dir(&name)).is_ok_and(|s| s.status.is_live());
                if running && !force {
                    return Err(api("wrong_state", format!("container {name} is running: stop it first (`tessera container stop {name}`) or delete with --force")));
                }
                self.discard(&record)?;
                log("info", "container deleted", json!({"container": name}));
                Ok(json!({"ok": true}))
            }
            Request::Inspect { name } => {
                let record = self.record(&name)?;
                Ok(self.describe(&record, true))
            }
            Request::Wait { name, timeout_ms } => {
                let record = self.record(&name)?;
                let timeout = timeout_ms
                    .map(Duration::from_millis)
                    .unwrap_or(DEFAULT_WAIT);
                self.wait(&record, timeout.min(MAX_WAIT))?;
                Ok(self.describe(&record, false))
            }
            Request::Logs { name, offset, tail } => {
                // A follower asks every few hundred ms: the cache answers.
                self.record(&name)?;
                self.logs(&name, offset, tail)
            }
        }
    }

    fn create(&self, request: &Request) -> Result<Value, ApiError> {
        let Request::Create {
            name,
            template,
            restart,
            net,
            ports,
            start,
            ..
        } = request
        else {
            return Err(api("internal", "not a create request"));
        };
        let restart = match restart.as_deref() {
            None => RestartPolicy::No,
            Some(r) => RestartPolicy::parse(r).ok_or_else(|| {
                api(
                    "bad_request",
                    format!("restart {r:?}: use \"no\", \"on-failure\" or \"always\""),
                )
            })?,
        };
        let overrides = request.overrides();
        if let Some(identity) = &overrides.identity {
            identity.check()?;
        }
        let record = {
            let _g = lock(&self.changes);
            let template = self.template(template)?;
            let net = net.as_deref().unwrap_or("bridge");
            self.check_ports(name, ports)?;
            instances::create(
                &self.storage,
                New {
                    name,
                    template: &template,
                    overrides,
                    restart,
                    net,
                    address: self.address_for(net)?,
                    ports: ports.clone(),
                    declared: false,
                },
            )?
        };
        lock(&self.records).insert(record.name.clone(), record.clone());
        log(
            "info",
            "container created",
            json!({"container": name, "template": record.template}),
        );
        if *start {
            self.launch(&record)?;
        }
        Ok(self.describe(&record, false))
    }

    /// A container's record: the cached one while its file is still in its instance (a stat),
    /// else the storage service's (a volume list, which on LVM thin runs `lvs`: ~0.3 s under
    /// TCG, too slow for every request).
    pub(crate) fn record(&self, name: &str) -> Result<Record, InstanceError> {
        let cached = lock(&self.records).get(name).cloned();
        if let Some(r) = cached.filter(instances::still_there) {
            return Ok(r);
        }
        let r = instances::find(&self.storage, name)?;
        lock(&self.records).insert(name.to_string(), r.clone());
        Ok(r)
    }

    /// The template a create names: a full digest met before is taken from the cache while its
    /// metadata is still there; anything else (a prefix, a new digest) from a volume list.
    fn template(&self, reference: &str) -> Result<templates::Template, TemplateError> {
        let digest = templates::full_digest(reference);
        let cached = digest.and_then(|d| lock(&self.templates).get(&d).cloned());
        if let Some(t) = cached.filter(templates::still_there) {
            return Ok(t);
        }
        let t = templates::resolve(&self.storage, reference)?;
        lock(&self.templates).insert(t.digest.clone(), t.clone());
        Ok(t)
    }

    /// Creates and starts the container's processes (after deleting a stopped run's state).
    pub fn launch(&self, record: &Record) -> Result<(), ApiError> {
        let dir = self.state_dir(&record.name);
        if dir.exists() {
            match runtime::state(&dir) {
                Ok(s) if s.status.is_live() => {
                    return Err(api(
                        "wrong_state",
                        format!("container {} is already {}", record.name, s.status),
                    ));
                }
                _ => runtime::delete_force(&dir).map_err(runtime_error)?,
            }
        }
        std::fs::create_dir_all(&self.state_root).map_err(|e| {
            api(
                "internal",
                format!("create {}: {e}", self.state_root.display()),
            )
        })?;
        let bridged = record.net == "bridge";
        let address = match (bridged, record.address) {
            (false, _) => None,
            (true, Some(a)) if self.address_fits(record) => Some(a),
            (true, _) => {
                return Err(api(
                    "bad_request",
                    format!(
                        "container {} has no address in the container network {} (it changed?); delete and create it again",
                        record.name, self.subnet
                    ),
                ))
            }
        };
        let net = match address {
            Some(_) => NetMode::New,
            None => NetMode::parse(&record.net).unwrap_or(NetMode::None),
        };
        if address.is_some() {
            self.ensure_bridge()?;
            network::write_resolv_conf(
                &record.bundle.join("rootfs"),
                Path::new("/etc/resolv.conf"),
            )
            .map_err(|e| api("internal", e.to_string()))?;
        }
        if record.overrides.hub {
            // The bind source, before the hub (which may start later) binds its socket in it.
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(instances::HUB_SOCKET_DIR)
                .map_err(|e| {
                    api(
                        "internal",
                        format!("create {}: {e}", instances::HUB_SOCKET_DIR),
                    )
                })?;
        }
        let shim_args = ["container".to_string(), "shim".to_string()];
        // A fresh one-time token at every start; it waits in the pipe for the container.
        let certmgr = tessera_certmgr::client::default_socket();
        let token = match &record.overrides.identity {
            Some(spec) => Some(crate::identity::token_pipe(&certmgr, &record.name, spec)?),
            None => None,
        };
        let created = runtime::create(&CreateOptions {
            id: &record.name,
            bundle: &record.bundle,
            state_dir: &dir,
            shim: &self.shim,
            shim_args: &shim_args,
            cgroup_parent: self.cgroup_parent.as_deref(),
            net,
            identity: token.as_ref().map(|token| runtime::Handoff {
                token,
                certmgr_socket: &certmgr,
            }),
        })
        .map_err(runtime_error)?;
        if let Some(address) = address {
            let wired = network::attach(&record.name, created.init_pid, address, self.subnet)
                .and_then(|()| {
                    network::publish(firewall_socket(), &record.name, address, &record.ports)
                });
            if let Err(e) = wired {
                let _ = runtime::delete_force(&dir);
                self.unpublish(record);
                return Err(api("internal", e.to_string()));
            }
        }
        if let Err(e) = runtime::start(&dir) {
            let _ = runtime::delete_force(&dir);
            self.unpublish(record);
            return Err(runtime_error(e));
        }
        let mut watches = lock(&self.watches);
        let w = watches
            .entry(record.name.clone())
            .or_insert_with(Watch::new);
        w.log_offset = 0;
        w.restart_at = None;
        log(
            "info",
            "container started",
            json!({"container": record.name, "pid": created.init_pid, "shim_pid": created.shim_pid}),
        );
        Ok(())
    }

    /// Blocks (this connection's thread only) until the container's current run has ended.
    fn wait(&self, record: &Record, timeout: Duration) -> Result<(), ApiError> {
        let dir = self.state_dir(&record.name);
        let never = || {
            api(
                "wrong_state",
                format!(
                    "container {} has not been started: start it first (`tessera container start {}`)",
                    record.name, record.name
                ),
            )
        };
        match runtime::state(&dir) {
            Err(RuntimeError::NotFound(_)) => return Err(never()),
            Err(e) => return Err(runtime_error(e)),
            Ok(s) if matches!(s.status, Status::Created | Status::Creating) => return Err(never()),
            Ok(_) => {}
        }
        runtime::wait(&dir, timeout)
            .map(drop)
            .map_err(runtime_error)
    }

    /// Removes a container whatever its state (its processes, state directory, instance
    /// volume) and forgets it. Callers decide first whether it may go, and how gently.
    pub(crate) fn discard(&self, record: &Record) -> Result<(), ApiError> {
        self.hold(&record.name);
        let dir = self.state_dir(&record.name);
        if dir.exists() {
            runtime::delete_force(&dir).map_err(runtime_error)?;
        }
        self.unpublish(record);
        if record.address.is_some() {
            let _ = network::detach(&record.name);
        }
        instances::delete(&self.storage, record)?;
        lock(&self.watches).remove(&record.name);
        lock(&self.records).remove(&record.name);
        Ok(())
    }

    pub(crate) fn hold(&self, name: &str) {
        let mut watches = lock(&self.watches);
        let w = watches.entry(name.to_string()).or_insert_with(Watch::new);
        w.held = true;
        w.restart_at = None;
    }

    pub(crate) fn release(&self, name: &str) {
        let mut watches = lock(&self.watches);
        let w = watches.entry(name.to_string()).or_insert_with(Watch::new);
        w.held = false;
        w.given_up = None;
        w.tracker.reset();
    }

    /// The container's log from `offset`: each line a log event object.
    fn logs(
        &self,
        name: &str,
        offset: Option<u64>,
        tail: Option<usize>,
    ) -> Result<Value, ApiError> {
        let dir = self.state_dir(name);
        let chunk = runtime::logs::read(&dir, offset, tail, LOGS_PER_REPLY)
            .map_err(|e| api("internal", format!("reading the log of {name}: {e}")))?;
        let lines: Vec<Value> = chunk
            .lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| json!({"message": l})))
            .collect();
        let running = runtime::state(&dir)
            .map(|s| s.status.is_live())
            .unwrap_or(false);
        Ok(
            json!({"lines": lines, "offset": chunk.offset, "running": running, "started": dir.exists()}),
        )
    }

    /// A container as `list` and `inspect` show it.
    fn describe(&self, record: &Record, full: bool) -> Value {
        let dir = self.state_dir(&record.name);
        let state = runtime::state(&dir).ok();
        let (status, exit, pid) = match &state {
            None => ("stopped".to_string(), None, None),
            Some(s) => (
                status_word(&s.status).to_string(),
                match &s.status {
                    Status::Stopped(e) => Some(exit_json(e)),
                    _ => None,
                },
                s.init_pid,
            ),
        };
        let (restarts, given_up) = lock(&self.watches)
            .get(&record.name)
            .map(|w| (w.restarts, w.given_up.clone()))
            .unwrap_or((0, None));
        // A container whose restarts were given up is failed, not merely exited.
        let status = match (&given_up, status.as_str()) {
            (Some(_), "exited") => "failed".to_string(),
            _ => status,
        };
        let mut v = json!({
            "name": record.name, "template": record.template, "state": status, "exit": exit,
            "pid": pid, "restart": record.restart, "restarts": restarts, "net": record.net,
            "address": record.address, "ports": record.ports,
            "declared": record.declared, "given_up": given_up,
        });
        if full {
            v["record"] = serde_json::to_value(record).unwrap_or(Value::Null);
            if let Some(s) = &state {
                v["created"] = json!(s.created);
                v["started"] = json!(s.started);
                v["failure"] = json!(s.failure.as_ref().map(|f| f.to_string()));
                if let Some(cg) = &s.cgroup {
                    v["cgroup"] = json!(cg);
                    if let Ok(stats) = runtime::cgroup::Cgroup::open(cg.clone()).stats() {
                        v["stats"] = serde_json::to_value(stats).unwrap_or(Value::Null);
                    }
                }
            }
            v["log"] = json!(runtime::log_path(&dir));
        }
        v
    }

    /// Reads every container's record from the data disk into the cache, and returns them.
    pub fn reload_records(&self) -> Result<Vec<Record>, InstanceError> {
        let all = instances::list(&self.storage)?;
        *lock(&self.records) = all.iter().map(|r| (r.name.clone(), r.clone())).collect();
        Ok(all)
    }
}

pub(crate) fn status_word(s: &Status) -> &'static str {
    match s {
        Status::Creating => "creating",
        Status::Created => "created",
        Status::Running => "running",
        Status::Stopped(_) => "exited",
        Status::Lost { .. } => "lost",
    }
}

fn exit_json(e: &Exit) -> Value {
    match e {
        Exit::Code(c) => json!({"code": c}),
        Exit::Signal { signal, oom_killed } => json!({"signal": signal, "oom_killed": oom_killed}),
    }
}

fn parse_signal(s: &str) -> Result<Signal, ApiError> {
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse::<Signal>().map_err(|_| {
        api(
            "bad_request",
            format!("signal {s:?} is not a signal name (e.g. SIGTERM, KILL)"),
        )
    })
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether the node has cgroup v2 at /sys/fs/cgroup (it does; a host test may not).
fn cgroup_parent() -> Option<PathBuf> {
    Path::new("/sys/fs/cgroup/cgroup.controllers")
        .exists()
        .then(|| PathBuf::from(CGROUP_PARENT))
}

/// Brings the user-data's `[[containers]]` about in the background (a fetch may wait for the
/// network), retrying what is not met yet with backoff.
fn spawn_declared(agent: &Arc<Agent>, unavailable: Option<&str>) -> std::io::Result<()> {
    let declared = match crate::declared::load(Path::new(USERDATA_FILE)) {
        Ok(d) => d,
        Err(e) => {
            log("error", "declared containers not read", json!({"error": e}));
            return Ok(());
        }
    };
    if declared.is_empty() {
        return Ok(());
    }
    if let Some(why) = unavailable {
        log(
            "error",
            "containers declared in user-data cannot run",
            json!({"containers": declared.len(), "reason": format!("{why}; give the node a data disk ([storage] in user-data)")}),
        );
        return Ok(());
    }
    let agent = agent.clone();
    std::thread::Builder::new()
        .name("container-declared".into())
        .spawn(move || {
            let mut delay = crate::declared::RETRY.initial;
            loop {
                let pending = agent.reconcile_declared(&declared);
                if pending.is_empty() {
                    log(
                        "info",
                        "declared containers in place",
                        json!({"containers": declared.len()}),
                    );
                    return;
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(crate::declared::RETRY.max);
            }
        })?;
    Ok(())
}

/// `tessera agent container`.
pub fn run() -> anyhow::Result<()> {
    use nix::sys::signal::{SigSet, Signal as Sig};
    // SIGTERM is taken by the main thread alone (every thread inherits the mask).
    let mut mask = SigSet::empty();
    mask.add(Sig::SIGTERM);
    mask.add(Sig::SIGINT);
    mask.thread_block()?;
    runtime::become_subreaper()?;
    let shim = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/sbin/tessera"));
    // A document that does not load is reported by spawn_declared; the default subnet serves.
    let subnet = match tessera_userdata::load(Path::new(USERDATA_FILE)) {
        Ok(Some(c)) => Subnet::from_config(c.container_network.as_ref()),
        _ => Subnet::from_config(None),
    };
    let agent = Arc::new(Agent::new(
        Storage::default(),
        shim,
        PathBuf::from(STATE_ROOT),
        cgroup_parent(),
        subnet,
    ));
    // The storage service settles before us (after = storage); ask until it answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut reason = agent.refresh_availability();
    while reason
        .as_deref()
        .is_some_and(|r| r.contains("cannot be asked"))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
        reason = agent.refresh_availability();
    }
    let handler_agent = agent.clone();
    tessera_common::ipc::serve(
        Path::new(SOCKET),
        "container",
        Arc::new(move |line: &[u8]| handler_agent.handle(line)),
    )?;
    let status = match &reason {
        None => {
            let n = agent.reload_records().map(|l| l.len()).unwrap_or(0);
            log(
                "info",
                "containers available",
                json!({"containers": n, "socket": SOCKET}),
            );
            format!("available; {n} containers")
        }
        Some(why) => {
            log("warn", "containers unavailable", json!({"reason": why}));
            format!("containers unavailable: {why}")
        }
    };
    let _ = tessera_common::notify::notify(&["READY=1".into(), format!("STATUS={status}")]);
    let loop_agent = agent.clone();
    std::thread::Builder::new()
        .name("container-supervise".into())
        .spawn(move || loop {
            if lock(&loop_agent.unavailable).is_none() {
                loop_agent.supervise_once();
            }
            std::thread::sleep(TICK);
        })?;
    spawn_declared(&agent, reason.as_deref())?;
    let signal = mask.wait()?;
    log(
        "info",
        "stopping containers",
        json!({"signal": signal.as_str()}),
    );
    agent.stop_all();
    Ok(())
}
