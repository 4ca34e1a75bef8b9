//! `tessera agent certmgr`: the long-running certificate manager.
//!
//! 1. Before any thread exists: choose the key mode and generate the node key (kernel-rsa
//!    generates in a throwaway child process, which is only safe from a single-threaded
//!    process), and fork the helper that generates child RSA keys the same way.
//! 2. Serve the socket API on its own thread.
//! 3. The identity loop on the main thread: read user-data; with a CA, bootstrap (retrying
//!    with backoff while the CA cannot be reached; a refused token is final and certmgr waits
//!    for new user-data), then renew at about 2/3 of the lifetime; without a CA, make the
//!    node-local CA and a standalone identity. READY=1 once the node holds a certificate;
//!    every step is a JSON log event and the current one is in STATUS=.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use serde_json::Value;
use tessera_common::log::Level;
use tessera_common::notify;
use tessera_identity::keyring::Keyring;
use tessera_identity::keys::{KeyMode, NodeKey};
use tessera_userdata::events::Events;
use tessera_userdata::retry::Backoff;

use crate::api::{self, Context};
use crate::bootstrap;
use crate::ca_client::{CaClient, CaError};
use crate::defaults;
use crate::keygen::KeygenHelper;
use crate::node::{self, Mode, NodeIdentity, Shared, Signer};
use crate::peers::Peers;
use crate::renew::RenewRetry;
use crate::settings::{self, Settings};
use crate::standalone::LocalCa;
use crate::tokens::TokenStore;

/// Where the service reads and writes; tests point it elsewhere.
pub struct Options {
    pub userdata: PathBuf,
    pub socket: PathBuf,
    /// Where the bootstrap token is (root's user keyring on a node).
    pub token_keyring: Keyring,
    /// Where `tessera:node:cert` goes (root's user keyring on a node).
    pub cert_keyring: Keyring,
    /// The kernel's host name file.
    pub hostname_file: PathBuf,
    /// The process allowed to ask for any child token (PID 1).
    pub parent_pid: u32,
    pub allow_operator: bool,
    /// The key mode of child identities (`settings::child_key_mode`).
    pub child_key_mode: KeyMode,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub config_poll: Duration,
    /// Stop the identity loop once the node holds an identity (tests).
    pub stop_when_ready: bool,
    /// Shorter CA timeouts (tests).
    pub ca_timeouts: Option<(Duration, Duration)>,
}

impl Options {
    pub fn for_node() -> anyhow::Result<Options> {
        let user = settings::user_keyring().context("root's user keyring")?;
        Ok(Options {
            userdata: defaults::USERDATA_FILE.into(),
            socket: defaults::SOCKET_PATH.into(),
            token_keyring: user,
            cert_keyring: user,
            hostname_file: "/proc/sys/kernel/hostname".into(),
            parent_pid: 1,
            child_key_mode: KeyMode::EcdsaP256,
            allow_operator: true,
            retry_initial: defaults::RETRY_INITIAL,
            retry_max: defaults::RETRY_MAX,
            config_poll: defaults::CONFIG_POLL,
            stop_when_ready: false,
            ca_timeouts: None,
        })
    }
}

/// Milliseconds since boot (CLOCK_BOOTTIME, as PID 1's console lines): for the benchmark.
pub fn uptime_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

/// Entry point of `tessera agent certmgr`.
pub fn run_service() -> anyhow::Result<()> {
    let events = Arc::new(Events::stdout());
    let started = Instant::now();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let env = std::env::var(defaults::KEY_MODE_ENV).ok();
    let (mode, why) = settings::key_mode(&cmdline, env.as_deref());
    let keyring = Keyring::process().context("this process's keyring")?;
    // Single-threaded here: the kernel-rsa key is generated in a throwaway child.
    let key = match NodeKey::generate(mode, &keyring) {
        Ok(k) => k,
        Err(e) if mode == KeyMode::KernelRsa => {
            events.warn(
                "kernel-rsa key failed, using ecdsa-p256",
                &[("reason", e.to_string().into())],
            );
            NodeKey::generate(KeyMode::EcdsaP256, &keyring)
                .context("generating the node key (ecdsa-p256)")?
        }
        Err(e) => return Err(e).context("generating the node key"),
    };
    let child_env = std::env::var(defaults::CHILD_KEY_MODE_ENV).ok();
    let (child_mode, child_why) =
        settings::child_key_mode(&cmdline, child_env.as_deref(), key.mode());
    events.info(
        "node key generated",
        &[
            ("key_mode", key.mode().name().into()),
            ("why", why.into()),
            ("child_key_mode", child_mode.name().into()),
            ("child_why", child_why.into()),
            ("kernel_key", key.kernel_key().serial().into()),
            ("ms", (started.elapsed().as_millis() as u64).into()),
            ("uptime_ms", uptime_ms().into()),
        ],
    );
    let helper = if child_mode == KeyMode::KernelRsa {
        match KeygenHelper::spawn() {
            Ok(h) => Some(Arc::new(h)),
            Err(e) => {
                events.warn(
                    "no key helper: child RSA keys are generated in certmgr",
                    &[("reason", e.to_string().into())],
                );
                None
            }
        }
    } else {
        None
    };
    let mut opts = Options::for_node()?;
    opts.child_key_mode = child_mode;
    let mut send = |assignments: &[String]| match notify::notify(assignments) {
        Ok(()) | Err(notify::NotifyError::NoSocket) => {}
        Err(e) => eprintln!("certmgr: {e}"),
    };
    run(opts, key, helper, events, &mut send)
}

/// The service after key generation: the socket API and the identity loop.
pub fn run(
    opts: Options,
    key: NodeKey,
    helper: Option<Arc<KeygenHelper>>,
    events: Arc<Events>,
    notify: &mut dyn FnMut(&[String]),
) -> anyhow::Result<()> {
    let shared = Shared::new(key.mode(), opts.child_key_mode);
    let ctx = Arc::new(Context {
        shared: shared.clone(),
        tokens: Arc::new(TokenStore::new(
            defaults::CHILD_TOKEN_TTL,
            defaults::MAX_PENDING_TOKENS,
        )),
        peers: Arc::new(Peers::default()),
        helper,
        events: events.clone(),
        parent_pid: opts.parent_pid,
        allow_operator: opts.allow_operator,
        redeem_wait: defaults::REDEEM_WAIT,
    });
    api::serve(&opts.socket, ctx)
        .with_context(|| format!("cannot serve {}", opts.socket.display()))?;
    Lifecycle {
        opts,
        key,
        shared,
        events,
        notify,
        ready_sent: false,
        last_status: String::new(),
        last_event: String::new(),
    }
    .run();
    Ok(())
}

/// What ended a phase of the identity loop.
enum Next {
    /// Read user-data again and start over.
    Reload,
    /// The node holds an identity and tests asked to stop there.
    Stop,
}

struct Lifecycle<'a> {
    opts: Options,
    key: NodeKey,
    shared: Arc<Shared>,
    events: Arc<Events>,
    notify: &'a mut dyn FnMut(&[String]),
    ready_sent: bool,
    last_status: String,
    /// The last waiting message, so a repeat goes to debug instead of the console.
    last_event: String,
}

impl Lifecycle<'_> {
    fn run(&mut self) {
        loop {
            let next = match self.load() {
                Some(settings) => match settings.ca.is_some() {
                    true => self.with_ca(settings),
                    false => self.standalone(settings),
                },
                None => {
                    std::thread::sleep(self.opts.config_poll);
                    Next::Reload
                }
            };
            if let Next::Stop = next {
                return;
            }
        }
    }

    /// User-data, or `None` after saying why it is unusable.
    fn load(&mut self) -> Option<Settings> {
        match settings::load(&self.opts.userdata, self.opts.token_keyring) {
            Ok(s) => Some(s),
            Err(e) => {
                let status = format!("no usable configuration: {e}");
                self.waiting(Level::Error, "cannot use user-data", &status, &[]);
                None
            }
        }
    }

    fn kernel_hostname(&self) -> Option<String> {
        std::fs::read_to_string(&self.opts.hostname_file).ok()
    }

    fn status(&mut self, status: &str) {
        if status != self.last_status {
            (self.notify)(&[format!("STATUS={}", status.replace('\n', " "))]);
            self.last_status = status.to_string();
        }
    }

    /// Not ready (or no longer): the reason in STATUS= and, unless it is a repeat, as an event.
    fn waiting(&mut self, level: Level, msg: &str, status: &str, fields: &[(&str, Value)]) {
        let mut all: Vec<(&str, Value)> = vec![("status", status.into())];
        all.extend_from_slice(fields);
        let key = format!(
            "{msg}|{}",
            fields
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<String>()
        );
        let level = if key == self.last_event {
            Level::Debug
        } else {
            level
        };
        self.events.emit(level, msg, &all);
        self.last_event = key;
        self.shared.update(|s| {
            s.ready = false;
            s.reason = status.to_string();
        });
        self.status(status);
    }

    /// The node holds `id`: publish it, say so, READY=1 the first time.
    fn hold(&mut self, mode: Mode, id: NodeIdentity, how: &str) {
        let chain = id.issued.chain_pem();
        let stored = node::publish_chain(self.opts.cert_keyring, &chain);
        let status = node::ready_status(mode, &id);
        let mut fields: Vec<(&str, Value)> = vec![
            ("subject", id.issued.subject_text().into()),
            ("serial", id.issued.peer.serial.clone().into()),
            ("not_after", node::rfc3339(id.issued.peer.not_after).into()),
            ("renew_at", node::rfc3339(id.renew_at).into()),
            ("key_mode", self.key.mode().name().into()),
            ("uptime_ms", uptime_ms().into()),
        ];
        match &stored {
            Ok(k) => fields.push(("cert_key", k.serial().into())),
            Err(e) => fields.push(("keyring_error", e.to_string().into())),
        }
        self.events.info(how, &fields);
        self.last_event.clear();
        self.shared.update(|s| {
            s.mode = mode;
            s.ready = true;
            s.reason = status.clone();
            s.identity = Some(id);
        });
        let mut msg = Vec::new();
        if !self.ready_sent {
            msg.push("READY=1".to_string());
            self.ready_sent = true;
        }
        msg.push(format!("STATUS={status}"));
        (self.notify)(&msg);
        self.last_status = status;
        self.refresh_crl();
    }

    /// After READY (it is not on the boot path): the cluster CA's CRL, which agents check
    /// peers against. A failure keeps the previous one and says so.
    fn refresh_crl(&mut self) {
        let Some(NodeIdentity {
            signer: Signer::Ca { client, trust },
            ..
        }) = self.shared.identity()
        else {
            return;
        };
        match client.fetch_crl(&trust) {
            Ok(pem) => self.shared.update(|s| s.crl_pem = Some(pem)),
            Err(e) => self.events.warn(
                "CRL not refreshed",
                &[("error", e.to_string().into()), ("ca", client.url().into())],
            ),
        }
    }

    /// Standalone: the node-local CA signs; renewed locally; switch to the cluster CA as soon
    /// as user-data names one.
    fn standalone(&mut self, settings: Settings) -> Next {
        let name = bootstrap::node_name(
            settings.hostname.as_deref(),
            self.kernel_hostname().as_deref(),
        );
        let local = match LocalCa::new(&settings.cluster, &name) {
            Ok(ca) => Arc::new(ca),
            Err(e) => {
                let status = format!("standalone identity failed: {e}");
                self.waiting(Level::Error, "standalone identity failed", &status, &[]);
                std::thread::sleep(self.opts.config_poll);
                return Next::Reload;
            }
        };
        self.shared.update(|s| s.mode = Mode::Standalone);
        let mut how = "standalone identity (node-local CA)";
        loop {
            match bootstrap::standalone(&local, &self.key, &settings.cluster, &name) {
                Ok(id) => self.hold(Mode::Standalone, id, how),
                Err(e) => {
                    let status = format!("standalone identity failed: {e}");
                    self.waiting(Level::Error, "standalone identity failed", &status, &[]);
                }
            }
            if self.opts.stop_when_ready {
                return Next::Stop;
            }
            how = "standalone identity renewed";
            let renew_at = self
                .shared
                .identity()
                .map(|id| id.renew_at)
                .unwrap_or_else(|| SystemTime::now() + self.opts.config_poll);
            // Until renewal: watch for user-data that names a CA.
            let mut last_error = String::new();
            while SystemTime::now() < renew_at {
                std::thread::sleep(self.opts.config_poll);
                match settings::load(&self.opts.userdata, self.opts.token_keyring) {
                    Ok(s) => {
                        if let Some(ca) = &s.ca {
                            self.events.info(
                                "user-data now names a CA: leaving standalone",
                                &[("ca", ca.url.clone().into())],
                            );
                            return Next::Reload;
                        }
                    }
                    // The standalone identity stays; say once why new user-data is not used.
                    Err(e) if e.to_string() != last_error => {
                        last_error = e.to_string();
                        self.events.warn(
                            "user-data unusable, staying standalone",
                            &[("error", last_error.clone().into())],
                        );
                    }
                    Err(_) => {}
                }
            }
        }
    }

    /// With a CA: bootstrap, then renew until the identity is lost.
    fn with_ca(&mut self, mut settings: Settings) -> Next {
        self.shared.update(|s| s.mode = Mode::Ca);
        let Some(ca) = settings.ca.take() else {
            return Next::Reload;
        };
        let client = match CaClient::new(&ca.url, &ca.fingerprint) {
            Ok(c) => match self.opts.ca_timeouts {
                Some((connect, io)) => c.with_timeouts(connect, io),
                None => c,
            },
            Err(e) => {
                let status = format!("bad CA settings: {e}");
                self.waiting(Level::Error, "bad CA settings", &status, &[]);
                return self.wait_for_new_token(ca.token.digest());
            }
        };
        let node_name = settings.hostname.clone();
        let mut backoff = Backoff::new(self.opts.retry_initial, self.opts.retry_max);
        let since = Instant::now();
        let mut ca = ca;
        let identity = loop {
            let started = Instant::now();
            match bootstrap::attempt(&client, &ca, &self.key, node_name.as_deref()) {
                Ok(id) => {
                    if let Err(e) = ca.token.discard() {
                        self.events.warn(
                            "cannot remove the redeemed token from the keyring",
                            &[("reason", e.to_string().into())],
                        );
                    }
                    self.events.info(
                        "bootstrap token redeemed",
                        &[
                            ("ca", client.url().into()),
                            ("token_from", ca.token.origin().into()),
                            ("ms", (started.elapsed().as_millis() as u64).into()),
                        ],
                    );
                    break id;
                }
                Err(e) if e.is_refusal() => {
                    let token_refused = e.is_token_refusal();
                    let (msg, status) = if token_refused {
                        (
                            "the CA refused the bootstrap token",
                            format!("bootstrap token refused by the CA at {}: {}; waiting for new user-data with a new token (`tessera ca token --subsystem certmgr …`)", client.url(), e.cause()),
                        )
                    } else {
                        (
                            "the CA refused the node's request",
                            format!("the CA at {} refused the node's request: {}; waiting for new user-data", client.url(), e.cause()),
                        )
                    };
                    self.waiting(
                        Level::Error,
                        msg,
                        &status,
                        &[
                            ("ca", client.url().into()),
                            ("error", refusal_code(&e).into()),
                        ],
                    );
                    // Spent or unusable: it must not be tried again, by this run or the next.
                    let _ = ca.token.discard();
                    return self.wait_for_new_token(ca.token.digest());
                }
                Err(e) => {
                    let delay = if e.no_route() && since.elapsed() < Duration::from_secs(30) {
                        defaults::NO_ROUTE_RETRY
                    } else {
                        backoff.next_delay()
                    };
                    let (level, msg, status) = match &e {
                        CaError::Unreachable { .. } => (
                            Level::Warn,
                            "waiting for the CA",
                            format!(
                                "waiting for the CA at {} ({}), retry in {}",
                                client.url(),
                                e.cause(),
                                human(delay)
                            ),
                        ),
                        _ => (
                            Level::Error,
                            "refusing to talk to the CA",
                            format!("{e}; retry in {}", human(delay)),
                        ),
                    };
                    let cause = match &e {
                        CaError::Unreachable { reason, .. } => reason.clone(),
                        other => other.to_string(),
                    };
                    self.waiting(
                        level,
                        msg,
                        &status,
                        &[("ca", client.url().into()), ("reason", cause.into())],
                    );
                    std::thread::sleep(delay);
                    // New user-data may have arrived meanwhile (a corrected fingerprint).
                    match settings::load(&self.opts.userdata, self.opts.token_keyring) {
                        Ok(Settings { ca: Some(new), .. })
                            if new.url != ca.url || new.fingerprint != ca.fingerprint =>
                        {
                            return Next::Reload;
                        }
                        Ok(Settings { ca: Some(new), .. }) => ca = new,
                        Ok(_) => return Next::Reload,
                        Err(_) => {}
                    }
                }
            }
        };
        self.hold(Mode::Ca, identity, "node certificate stored in the keyring");
        if self.opts.stop_when_ready {
            return Next::Stop;
        }
        self.renew_until_lost()
    }

    /// Renews at the scheduled time; on failure retries with backoff until the certificate
    /// expires; then the node has no identity and waits for new user-data.
    fn renew_until_lost(&mut self) -> Next {
        loop {
            let Some(current) = self.shared.identity() else {
                return Next::Reload;
            };
            sleep_until(current.renew_at);
            let mut retry = RenewRetry::new(current.issued.peer.not_after);
            loop {
                self.events.info(
                    "renewing the node certificate",
                    &[("serial", current.issued.peer.serial.clone().into())],
                );
                match bootstrap::renew_with_ca(&self.key, &current) {
                    Ok(id) => {
                        self.hold(Mode::Ca, id, "node certificate renewed");
                        break;
                    }
                    Err(e) => match retry.next_delay(SystemTime::now()) {
                        Some(delay) => {
                            self.events.emit(
                                if e.is_refusal() {
                                    Level::Error
                                } else {
                                    Level::Warn
                                },
                                "renewal failed",
                                &[
                                    ("reason", e.to_string().into()),
                                    ("retry_in_s", delay.as_secs().into()),
                                    (
                                        "not_after",
                                        node::rfc3339(current.issued.peer.not_after).into(),
                                    ),
                                ],
                            );
                            let status = format!(
                                "{}; renewal failed ({}), retry in {}",
                                node::ready_status(Mode::Ca, &current),
                                e.cause(),
                                human(delay)
                            );
                            self.status(&status);
                            std::thread::sleep(delay);
                        }
                        None => {
                            self.shared.update(|s| s.identity = None);
                            let status = format!(
                                "the node certificate expired at {} without renewal ({}); waiting for new user-data with a new token",
                                node::rfc3339(current.issued.peer.not_after),
                                e.cause()
                            );
                            self.waiting(Level::Error, "node certificate expired", &status, &[]);
                            return Next::Reload;
                        }
                    },
                }
            }
        }
    }

    /// After a refusal: poll user-data until it holds another token (or another CA).
    fn wait_for_new_token(&mut self, spent: [u8; 32]) -> Next {
        loop {
            std::thread::sleep(self.opts.config_poll);
            match settings::load(&self.opts.userdata, self.opts.token_keyring) {
                Ok(Settings { ca: Some(ca), .. }) if ca.token.digest() == spent => {}
                Ok(_) => {
                    self.events.info("new user-data: trying again", &[]);
                    return Next::Reload;
                }
                // The spent token's key is gone: that is the expected state while waiting.
                Err(_) => {}
            }
        }
    }
}

fn refusal_code(e: &CaError) -> String {
    match e {
        CaError::Refused { code, .. } => code.clone(),
        _ => String::new(),
    }
}

fn sleep_until(t: SystemTime) {
    while let Ok(left) = t.duration_since(SystemTime::now()) {
        if left.is_zero() {
            break;
        }
        // Wake at least every minute: a suspended VM's clock jumps.
        std::thread::sleep(left.min(Duration::from_secs(60)));
    }
}

/// "4 s", "250 ms".
fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{} s", d.as_secs_f64().round() as u64)
    }
}

impl NodeIdentity {
    /// Who signs: the CA URL or the node-local CA.
    pub fn issuer(&self) -> String {
        match &self.signer {
            Signer::Ca { client, .. } => client.url().to_string(),
            Signer::Local(_) => "node-local CA".into(),
        }
    }
}
