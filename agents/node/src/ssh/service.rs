//! The `ssh` service (`tessera agent ssh`): the developer console.
//!
//! - No `ssh.authorized_keys` in user-data: the console is off. The service says so (event and
//!   STATUS), is ready at once, opens no port, and keeps reading user-data.
//! - Keys: writes root's authorized_keys, reuses or makes the host keys (their fingerprints
//!   are logged for the operator to compare with what the client shows), runs dropbear, is
//!   ready once dropbear listens, and opens port 22 through the firewall service.
//!
//! User-data is read again every [`CONFIG_POLL`] (IMDS user-data arrives after the network):
//! keys that appear turn the console on, changed keys are rewritten (dropbear reads the file
//! at each login), keys that go away turn it off and close the port. SIGTERM stops dropbear
//! and closes the port; sessions already open are their own process groups and go on. If
//! dropbear dies the service exits with an error and PID 1 restarts it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

use super::authorized;
use super::dropbear;
use super::host_keys::{self, HostKey, KeyDir};
use crate::firewall;
use crate::net::service::{block_on_one_thread, log};

/// How often user-data is read again.
pub const CONFIG_POLL: Duration = Duration::from_secs(2);
/// How long dropbear may take to listen.
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long dropbear may take to exit on SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a SIGTERM may trail dropbear's exit and still count as a stop.
const STOP_RACE: Duration = Duration::from_millis(500);
/// dropbear's pid file.
pub const PID_FILE: &str = "/run/tessera/dropbear.pid";
/// dropbear records logins here and complains at every login when it is missing.
pub const LASTLOG: &str = "/var/log/lastlog";
/// Who the firewall exposure belongs to (`tessera firewall show`).
pub const OWNER: &str = "ssh";
/// The environment dropbear starts with (it gives sessions their own: HOME, SHELL, and a PATH
/// with the sbin directories for root).
const DROPBEAR_PATH: &str = "/sbin:/bin:/usr/sbin:/usr/bin";
/// Why the console is off: the event, and the STATUS `tessera status` shows.
pub const OFF_REASON: &str = "ssh off: user-data has no ssh.authorized_keys";
const OFF_STATUS: &str = "off: user-data has no ssh.authorized_keys";

/// Files and programs the service uses (tests point them elsewhere).
#[derive(Debug, Clone)]
pub struct Paths {
    pub userdata: PathBuf,
    pub home: PathBuf,
    pub mounts: PathBuf,
    pub data_volume: PathBuf,
    pub persistent_dir: PathBuf,
    pub volatile_dir: PathBuf,
    pub pid_file: PathBuf,
    pub lastlog: PathBuf,
    pub dropbear: PathBuf,
    pub dropbearkey: PathBuf,
    pub firewall_socket: PathBuf,
    pub port: u16,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            userdata: crate::net::config::USERDATA_FILE.into(),
            home: authorized::ROOT_HOME.into(),
            mounts: "/proc/self/mounts".into(),
            data_volume: host_keys::DATA_VOLUME.into(),
            persistent_dir: host_keys::PERSISTENT_DIR.into(),
            volatile_dir: host_keys::VOLATILE_DIR.into(),
            pid_file: PID_FILE.into(),
            lastlog: LASTLOG.into(),
            dropbear: dropbear::DROPBEAR.into(),
            dropbearkey: host_keys::DROPBEARKEY.into(),
            firewall_socket: firewall::service::SOCKET.into(),
            port: dropbear::PORT,
        }
    }
}

/// Runs the service on a one-thread tokio runtime; returns on SIGTERM or a fatal error.
pub fn run() -> anyhow::Result<()> {
    block_on_one_thread(serve(Paths::default()))
}

/// dropbear running, and what it was started with.
struct Console {
    child: Child,
    keys: Vec<String>,
    host_keys: Vec<HostKey>,
    /// The firewall has port 22 open for it.
    port_open: bool,
    /// The last reason the firewall gave for not opening it (logged once).
    port_error: Option<String>,
}

struct Service {
    paths: Paths,
    console: Option<Console>,
    /// READY=1 was sent (once: when the first state, on or off, is reached).
    ready: bool,
    /// The console is off and that was said.
    off_said: bool,
    /// The last user-data error (logged once, not every poll).
    config_error: Option<String>,
}

fn notify(assignments: &[String]) {
    let _ = tessera_common::notify::notify(assignments);
}

pub async fn serve(paths: Paths) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut service = Service {
        paths,
        console: None,
        ready: false,
        off_said: false,
        config_error: None,
    };
    loop {
        if let Some(keys) = service.read_keys() {
            service.apply(keys).await?;
        }
        service.open_port().await;
        tokio::select! {
            () = tokio::time::sleep(CONFIG_POLL) => {}
            _ = term.recv() => {
                service.turn_off("stopping (SIGTERM)").await;
                return Ok(());
            }
            status = exited(&mut service.console) => {
                // PID 1 signals the agent and its process group together on a stop: a
                // dropbear that went first is a stop, not a crash.
                if tokio::time::timeout(STOP_RACE, term.recv()).await.is_ok() {
                    service.turn_off("stopping (SIGTERM)").await;
                    return Ok(());
                }
                service.close_port().await;
                bail!(
                    "dropbear exited ({}); its last lines are in `tessera logs ssh`",
                    status.map_or_else(|e| e.to_string(), |s| s.to_string())
                );
            }
        }
    }
}

/// Resolves when dropbear exits (never while the console is off).
async fn exited(console: &mut Option<Console>) -> std::io::Result<std::process::ExitStatus> {
    match console {
        Some(c) => c.child.wait().await,
        None => std::future::pending().await,
    }
}

impl Service {
    /// The keys user-data allows; `None` when it cannot be read (the console stays as it
    /// is, except at start, where it stays off).
    fn read_keys(&mut self) -> Option<Vec<String>> {
        match authorized::from_userdata(&self.paths.userdata) {
            Ok(keys) => {
                self.config_error = None;
                Some(keys)
            }
            Err(e) => {
                let reason = e.to_string();
                if self.config_error.as_ref() != Some(&reason) {
                    log(
                        "error",
                        "user-data unusable; the console stays as it is",
                        json!({"reason": reason, "fix": "correct user-data (agents/userdata/SCHEMA.md); `tessera logs userdata` says what was refused"}),
                    );
                    self.config_error = Some(reason);
                }
                (!self.ready).then(Vec::new)
            }
        }
    }

    /// Brings the console to what `keys` asks for.
    async fn apply(&mut self, keys: Vec<String>) -> anyhow::Result<()> {
        match (&mut self.console, keys.is_empty()) {
            (None, true) => {
                if !self.off_said {
                    log(
                        "info",
                        OFF_REASON,
                        json!({"fix": "add [ssh] authorized_keys = [\"ssh-ed25519 AAAA… you@host\"] to user-data"}),
                    );
                    self.off_said = true;
                    self.set_status(OFF_STATUS);
                }
            }
            (Some(_), true) => {
                self.turn_off("user-data no longer has ssh.authorized_keys")
                    .await;
                log("info", OFF_REASON, json!({}));
                self.off_said = true;
                self.set_status(OFF_STATUS);
            }
            (Some(c), false) if c.keys != keys => {
                let file = authorized::install(&self.paths.home, &keys)
                    .context("writing root's authorized_keys")?;
                log(
                    "info",
                    "authorized keys updated",
                    json!({"keys": keys.len(), "path": file.display().to_string()}),
                );
                c.keys = keys;
                self.set_status(&self.on_status());
            }
            (Some(_), false) => {}
            (None, false) => {
                self.turn_on(keys).await?;
                self.off_said = false;
                self.set_status(&self.on_status());
            }
        }
        Ok(())
    }

    /// Sends STATUS (and READY=1 the first time).
    fn set_status(&mut self, text: &str) {
        let mut assignments = vec![format!("STATUS={text}")];
        if !self.ready {
            assignments.insert(0, "READY=1".into());
            self.ready = true;
        }
        notify(&assignments);
    }

    fn on_status(&self) -> String {
        let Some(c) = &self.console else {
            return "off".into();
        };
        let firewall = if c.port_open {
            String::new()
        } else {
            " (not open in the firewall yet)".into()
        };
        let host = c
            .host_keys
            .first()
            .map(|k| format!("; host key {} {}", k.kind.name(), k.fingerprint))
            .unwrap_or_default();
        format!(
            "on: port {}{firewall}, {} authorized key(s){host}",
            self.paths.port,
            c.keys.len()
        )
    }

    async fn turn_on(&mut self, keys: Vec<String>) -> anyhow::Result<()> {
        let file = authorized::install(&self.paths.home, &keys)
            .context("writing root's authorized_keys")?;
        let mounts = std::fs::read_to_string(&self.paths.mounts).unwrap_or_default();
        let dir = host_keys::choose_dir(
            &mounts,
            &self.paths.data_volume,
            &self.paths.persistent_dir,
            &self.paths.volatile_dir,
        );
        let (dir, host_keys) = match host_keys::ensure(&dir, &self.paths.dropbearkey) {
            Ok(keys) => (dir, keys),
            // A data volume that is full or read-only must not lock the developer out.
            Err(e) if dir.persistent => {
                log(
                    "error",
                    "host keys unusable on the data volume; using tmpfs for this boot",
                    json!({"reason": e.to_string(), "fix": "check the data volume (`tessera logs storage`, `df`)"}),
                );
                let volatile = KeyDir {
                    path: self.paths.volatile_dir.clone(),
                    persistent: false,
                };
                let keys = host_keys::ensure(&volatile, &self.paths.dropbearkey)?;
                (volatile, keys)
            }
            Err(e) => return Err(e.into()),
        };
        log_host_keys(&dir, &host_keys);
        prepare_lastlog(&self.paths.lastlog);
        let child = self.spawn_dropbear(&host_keys)?;
        let mut console = Console {
            child,
            keys,
            host_keys,
            port_open: false,
            port_error: None,
        };
        wait_listening(&mut console.child, self.paths.port).await?;
        log(
            "info",
            "ssh on",
            json!({"port": self.paths.port, "authorized_keys": console.keys.len(),
                   "path": file.display().to_string(), "dropbear_pid": console.child.id()}),
        );
        self.console = Some(console);
        self.open_port().await;
        Ok(())
    }

    fn spawn_dropbear(&self, host_keys: &[HostKey]) -> anyhow::Result<Child> {
        let key_paths: Vec<PathBuf> = host_keys.iter().map(|k| k.path.clone()).collect();
        let args = dropbear::args(self.paths.port, &key_paths, &self.paths.pid_file);
        // A clean environment: NOTIFY_SOCKET is the agent's, not dropbear's or a session's.
        let mut child = Command::new(&self.paths.dropbear)
            .args(&args)
            .env_clear()
            .env("PATH", DROPBEAR_PATH)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot run {}; the image must ship dropbear-bin (image/programs.toml)",
                    self.paths.dropbear.display()
                )
            })?;
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let (level, msg, fields) = dropbear::event(&line);
                    log(level, msg, fields);
                }
            });
        }
        Ok(child)
    }

    /// Stops dropbear and closes the port (when the console is on).
    async fn turn_off(&mut self, why: &str) {
        if let Some(c) = &self.console {
            log(
                "info",
                "stopping dropbear",
                json!({"reason": why, "dropbear_pid": c.child.id()}),
            );
        }
        self.close_port().await;
        let Some(mut c) = self.console.take() else {
            return;
        };
        if let Some(pid) = c.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(STOP_TIMEOUT, c.child.wait())
            .await
            .is_err()
        {
            let _ = c.child.kill().await;
        }
        if let Err(e) = authorized::remove(&self.paths.home) {
            log(
                "warn",
                "authorized_keys not removed",
                json!({"reason": e.to_string()}),
            );
        }
    }

    /// Asks the firewall to open the port while the console is on and it is not open yet.
    async fn open_port(&mut self) {
        let Some(c) = &mut self.console else {
            return;
        };
        if c.port_open {
            return;
        }
        let request = json!({"op": "expose", "protocol": "tcp", "port": self.paths.port,
                             "scope": "public", "owner": OWNER});
        match firewall_call(&self.paths, request).await {
            Ok(()) => {
                log(
                    "info",
                    "port open in the firewall",
                    json!({"port": self.paths.port, "protocol": "tcp", "scope": "public"}),
                );
                c.port_open = true;
                c.port_error = None;
                let status = self.on_status();
                self.set_status(&status);
            }
            Err(reason) => {
                if c.port_error.as_ref() != Some(&reason) {
                    log(
                        "warn",
                        "port not open in the firewall yet; retrying",
                        json!({"port": self.paths.port, "reason": reason,
                               "fix": "check the firewall service (`tessera status`, `tessera logs firewall`)"}),
                    );
                    c.port_error = Some(reason);
                }
                if !self.ready {
                    let status = self.on_status();
                    self.set_status(&status);
                }
            }
        }
    }

    async fn close_port(&mut self) {
        if !self.console.as_ref().is_some_and(|c| c.port_open) {
            return;
        }
        let request = json!({"op": "unexpose", "protocol": "tcp", "port": self.paths.port});
        match firewall_call(&self.paths, request).await {
            Ok(()) => log(
                "info",
                "port closed in the firewall",
                json!({"port": self.paths.port, "protocol": "tcp"}),
            ),
            Err(reason) => log(
                "warn",
                "port not closed in the firewall",
                json!({"port": self.paths.port, "reason": reason,
                       "fix": format!("`tessera firewall unexpose {}`", self.paths.port)}),
            ),
        }
        if let Some(c) = &mut self.console {
            c.port_open = false;
        }
    }
}

/// One firewall request, off the runtime's thread (the client blocks).
async fn firewall_call(paths: &Paths, request: serde_json::Value) -> Result<(), String> {
    let socket = paths.firewall_socket.clone();
    tokio::task::spawn_blocking(move || firewall::client::call(&socket, &request))
        .await
        .map_err(|e| e.to_string())?
        .map(|_| ())
        .map_err(|e| format!("{e:#}"))
}

fn log_host_keys(dir: &KeyDir, keys: &[HostKey]) {
    for k in keys {
        if let Some(aside) = &k.replaced {
            log(
                "warn",
                "unreadable host key moved aside; a new one was made",
                json!({"path": k.path.display().to_string(), "moved_to": aside.display().to_string()}),
            );
        }
        let kind = k.public_key.split(' ').next().unwrap_or(k.kind.name());
        log(
            "info",
            "ssh host key",
            json!({"type": kind, "fingerprint": k.fingerprint, "generated": k.generated,
                   "persistent": dir.persistent, "path": k.path.display().to_string(),
                   "public_key": k.public_key}),
        );
    }
    if !dir.persistent {
        log(
            "info",
            "host keys are in tmpfs: new ones every boot",
            json!({"dir": dir.path.display().to_string(),
                   "fix": "give the node a data volume (user-data [storage]) to keep them"}),
        );
    }
}

/// Creates an empty lastlog (dropbear fills in root's entry) unless there is one.
fn prepare_lastlog(path: &std::path::Path) {
    let made = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map(drop)
        });
    if let Err(e) = made {
        log(
            "warn",
            "no lastlog; dropbear will complain at each login",
            json!({"path": path.display().to_string(), "reason": e.to_string()}),
        );
    }
}

/// Waits until dropbear listens on `port`; an error if it exits first or takes too long.
async fn wait_listening(child: &mut Child, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + LISTEN_TIMEOUT;
    loop {
        if dropbear::listening(&dropbear::tcp_tables(), port) {
            return Ok(());
        }
        if let Some(status) = child.try_wait().context("waiting for dropbear")? {
            bail!("dropbear exited before listening on port {port} ({status}); its lines are in `tessera logs ssh`");
        }
        if Instant::now() > deadline {
            bail!(
                "dropbear does not listen on port {port} after {} s; see `tessera logs ssh`",
                LISTEN_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
