//! The `firewall` service (`tessera agent firewall`): loads the nftables modules, puts the
//! ruleset in force (the base rules, user-data's cluster networks and the saved exposures),
//! says READY=1, then serves the API and follows user-data. Every change rebuilds the whole
//! table in one nft transaction; if nft refuses it, the previous ruleset stays and the
//! request that caused it fails with nft's reason.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};

use super::model::{Bridge, Cidr, Exposure, Protocol, Publication};
use super::nft::{self, Nft, NftError};
use super::protocol::ApiError;
use super::ruleset::{self, Policy};
use super::{api, config, store};
use crate::net::service::log;

/// The API socket.
pub const SOCKET: &str = tessera_common::paths::FIREWALL_SOCKET;
/// Where exposures are kept across restarts of the service.
pub const STORE: &str = "/run/tessera/firewall/exposures.json";
/// How often user-data is read again for a change of `firewall.cluster_cidrs`.
pub const CONFIG_POLL: Duration = Duration::from_secs(2);
/// Modules the ruleset needs (the kernel would also load them on demand).
pub const MODULES: [&str; 2] = ["nf_tables", "nft_ct"];

/// Files the service uses (tests point them elsewhere).
#[derive(Debug, Clone)]
pub struct Paths {
    pub userdata: PathBuf,
    /// Exposures the image fixes (/etc/tessera/firewall.toml).
    pub fixed: PathBuf,
    pub store: PathBuf,
    pub socket: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            userdata: crate::net::config::USERDATA_FILE.into(),
            fixed: config::FIXED_FILE.into(),
            store: STORE.into(),
            socket: SOCKET.into(),
        }
    }
}

struct State {
    /// Everything in force: the fixed exposures and the API's.
    policy: Policy,
    /// The image's fixed exposures (not removable, not saved).
    fixed: Vec<Exposure>,
    /// The transaction in force.
    applied: Option<Value>,
}

/// The firewall: the policy in force and the nft that applies it.
pub struct Firewall {
    nft: Nft,
    paths: Paths,
    state: Mutex<State>,
}

fn rejected(e: NftError) -> ApiError {
    match e {
        NftError::Rejected { .. } => ApiError::new("rejected", e.to_string()),
        other => ApiError::new("internal", other.to_string()),
    }
}

impl Firewall {
    pub fn new(nft: Nft, paths: Paths) -> Firewall {
        Firewall {
            nft,
            paths,
            state: Mutex::new(State {
                policy: Policy::default(),
                fixed: Vec::new(),
                applied: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a consistent State (it is replaced whole).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts `policy` in force; on success it becomes the state.
    fn apply(&self, state: &mut State, policy: Policy) -> Result<(), NftError> {
        let transaction = ruleset::render(&policy);
        let started = std::time::Instant::now();
        self.nft.apply(&transaction)?;
        log(
            "info",
            "ruleset in force",
            json!({
                "table": "inet tessera",
                "nft_ms": started.elapsed().as_millis() as u64,
                "exposures": policy.exposures.len(),
                "cluster_cidrs": policy.cluster.iter().map(Cidr::to_string).collect::<Vec<_>>(),
            }),
        );
        state.policy = policy;
        state.applied = Some(transaction);
        Ok(())
    }

    /// The first ruleset: cluster networks, the image's fixed exposures and the saved ones
    /// (a saved exposure of a fixed port is dropped: the image's wins).
    pub fn start(
        &self,
        cluster: Vec<Cidr>,
        fixed: Vec<Exposure>,
        saved: store::Saved,
    ) -> Result<(), NftError> {
        let mut state = self.lock();
        let mut exposures = fixed.clone();
        exposures.extend(
            saved
                .exposures
                .into_iter()
                .filter(|e| !fixed.iter().any(|f| f.key() == e.key())),
        );
        exposures.sort();
        let publications = saved
            .publications
            .into_iter()
            .filter(|p| !fixed.iter().any(|f| f.key() == p.key()))
            .collect();
        state.fixed = fixed;
        let policy = Policy {
            cluster,
            exposures,
            bridge: saved.bridge,
            publications,
        };
        self.apply(&mut state, policy)
    }

    /// A port is exposed or published, never both: the DNAT would hide the exposure.
    fn refuse_taken(
        state: &State,
        key: (Protocol, u16),
        by: &str,
        owner: Option<&str>,
    ) -> Result<(), ApiError> {
        let taken = |what: &str, other: Option<&String>| {
            ApiError::new(
                "exists",
                format!(
                    "{}/{} is already {what}{}; {by} another port, or remove that one first",
                    key.0,
                    key.1,
                    other.map(|o| format!(" by {o}")).unwrap_or_default()
                ),
            )
        };
        if by == "publish" {
            if let Some(e) = state.policy.exposures.iter().find(|e| e.key() == key) {
                return Err(taken("exposed", e.owner.as_ref()));
            }
        }
        if let Some(p) = state.policy.publications.iter().find(|p| p.key() == key) {
            if by == "expose" || p.owner.as_deref() != owner {
                return Err(taken("published", p.owner.as_ref()));
            }
        }
        Ok(())
    }

    fn refuse_fixed(state: &State, key: (Protocol, u16)) -> Result<(), ApiError> {
        if state.fixed.iter().any(|f| f.key() == key) {
            return Err(ApiError::new(
                "bad_request",
                format!(
                    "{}/{} is fixed by the image ({}); change image/firewall.toml and rebuild the image",
                    key.0,
                    key.1,
                    config::FIXED_FILE
                ),
            ));
        }
        Ok(())
    }

    /// Saves what the API put in force (not the fixed exposures).
    fn save(&self, state: &State) {
        let saved = store::Saved {
            exposures: state
                .policy
                .exposures
                .iter()
                .filter(|e| !state.fixed.contains(e))
                .cloned()
                .collect(),
            publications: state.policy.publications.clone(),
            bridge: state.policy.bridge.clone(),
        };
        if let Err(e) = store::save(&self.paths.store, &saved) {
            log(
                "error",
                "exposures not saved; they are in force but a restart of the service forgets them",
                json!({"reason": e.to_string()}),
            );
        }
    }

    /// Adds or replaces the exposure of (protocol, port); returns all exposures.
    pub fn expose(&self, e: Exposure) -> Result<Vec<Exposure>, ApiError> {
        let mut state = self.lock();
        Self::refuse_fixed(&state, e.key())?;
        Self::refuse_taken(&state, e.key(), "expose", None)?;
        let mut policy = state.policy.clone();
        policy.exposures.retain(|x| x.key() != e.key());
        policy.exposures.push(e.clone());
        policy.exposures.sort();
        self.apply(&mut state, policy).map_err(rejected)?;
        log(
            "info",
            "exposed",
            json!({"protocol": e.protocol.as_str(), "port": e.port, "scope": e.scope.as_str(), "owner": e.owner}),
        );
        self.save(&state);
        Ok(state.policy.exposures.clone())
    }

    /// Removes the exposure of (protocol, port); false if there was none.
    pub fn unexpose(&self, protocol: Protocol, port: u16) -> Result<bool, ApiError> {
        let mut state = self.lock();
        Self::refuse_fixed(&state, (protocol, port))?;
        let mut policy = state.policy.clone();
        policy.exposures.retain(|x| x.key() != (protocol, port));
        if policy.exposures.len() == state.policy.exposures.len() {
            return Ok(false);
        }
        self.apply(&mut state, policy).map_err(rejected)?;
        log(
            "info",
            "unexposed",
            json!({"protocol": protocol.as_str(), "port": port}),
        );
        self.save(&state);
        Ok(true)
    }

    /// Adds or replaces the publication of (protocol, port): only its owner may replace it.
    pub fn publish(&self, p: Publication) -> Result<Vec<Publication>, ApiError> {
        let mut state = self.lock();
        Self::refuse_fixed(&state, p.key())?;
        Self::refuse_taken(&state, p.key(), "publish", p.owner.as_deref())?;
        let mut policy = state.policy.clone();
        policy.publications.retain(|x| x.key() != p.key());
        policy.publications.push(p.clone());
        policy.publications.sort();
        self.apply(&mut state, policy).map_err(rejected)?;
        log(
            "info",
            "published",
            json!({"protocol": p.protocol.as_str(), "port": p.port, "to": p.to.to_string(), "scope": p.scope.as_str(), "owner": p.owner}),
        );
        self.save(&state);
        Ok(state.policy.publications.clone())
    }

    /// Removes the publication of (protocol, port); false if there was none.
    pub fn unpublish(&self, protocol: Protocol, port: u16) -> Result<bool, ApiError> {
        let mut state = self.lock();
        let mut policy = state.policy.clone();
        policy.publications.retain(|x| x.key() != (protocol, port));
        if policy.publications.len() == state.policy.publications.len() {
            return Ok(false);
        }
        self.apply(&mut state, policy).map_err(rejected)?;
        log(
            "info",
            "unpublished",
            json!({"protocol": protocol.as_str(), "port": port}),
        );
        self.save(&state);
        Ok(true)
    }

    /// The containers' bridge: forwarding and masquerade for its subnet.
    pub fn set_bridge(&self, bridge: Bridge) -> Result<bool, ApiError> {
        let mut state = self.lock();
        if state.policy.bridge.as_ref() == Some(&bridge) {
            return Ok(false);
        }
        let mut policy = state.policy.clone();
        policy.bridge = Some(bridge.clone());
        self.apply(&mut state, policy).map_err(rejected)?;
        log(
            "info",
            "container bridge forwarded",
            json!({"interface": bridge.interface, "subnet": bridge.subnet.to_string()}),
        );
        self.save(&state);
        Ok(true)
    }

    /// New cluster networks from user-data.
    pub fn set_cluster(&self, cluster: Vec<Cidr>) -> Result<bool, NftError> {
        let mut state = self.lock();
        if state.policy.cluster == cluster {
            return Ok(false);
        }
        let mut policy = state.policy.clone();
        policy.cluster = cluster;
        self.apply(&mut state, policy)?;
        Ok(true)
    }

    /// What `tessera firewall show` prints: the policy and what the kernel holds.
    pub fn show(&self) -> Value {
        let state = self.lock();
        let table = match self.nft.list_table() {
            Ok(Some(listing)) => json!(nft::summarize(&listing)),
            Ok(None) => Value::Null,
            Err(e) => json!({"error": e.to_string()}),
        };
        json!({
            "cluster_cidrs": state.policy.cluster,
            "exposures": state.policy.exposures,
            "publications": state.policy.publications,
            "bridge": state.policy.bridge,
            "fixed": state.fixed,
            "table": table,
        })
    }

    /// The transaction in force.
    pub fn ruleset(&self) -> Value {
        self.lock().applied.clone().unwrap_or(Value::Null)
    }
}

fn status(text: &str) {
    let _ = tessera_common::notify::notify(&[format!("STATUS={text}")]);
}

/// Whether the kernel already runs module `m` (PID 1 loads the nftables modules at boot).
fn is_live(m: &str) -> bool {
    std::fs::read_to_string(format!("/sys/module/{m}/initstate")).is_ok_and(|s| s.trim() == "live")
}

fn load_modules() {
    for m in MODULES.into_iter().filter(|m| !is_live(m)) {
        match std::process::Command::new("/sbin/modprobe")
            .args(["-q", m])
            .status()
        {
            Ok(s) if s.success() => {}
            Ok(s) => log(
                "warn",
                "module not loaded; nft will ask the kernel to load it",
                json!({"module": m, "status": s.to_string()}),
            ),
            Err(e) => log(
                "warn",
                "modprobe not run; nft will ask the kernel to load modules",
                json!({"module": m, "reason": e.to_string()}),
            ),
        }
    }
}

fn read_cluster(paths: &Paths) -> Option<Vec<Cidr>> {
    match config::cluster_cidrs(&paths.userdata) {
        Ok(c) => Some(c),
        Err(e) => {
            log(
                "error",
                "firewall.cluster_cidrs unusable; the cluster scope admits no one",
                json!({"reason": e.to_string(), "fix": "correct [firewall] cluster_cidrs in user-data (agents/userdata/SCHEMA.md)"}),
            );
            None
        }
    }
}

/// Runs the service; returns only on a fatal error.
pub fn run() -> anyhow::Result<()> {
    serve(Nft::default(), Paths::default())
}

pub fn serve(nft: Nft, paths: Paths) -> anyhow::Result<()> {
    status("loading modules");
    let started = std::time::Instant::now();
    load_modules();
    log(
        "debug",
        "modules loaded",
        json!({"modules": MODULES, "ms": started.elapsed().as_millis() as u64}),
    );
    let cluster = read_cluster(&paths).unwrap_or_default();
    let saved = match store::load(&paths.store) {
        Ok(s) => {
            if s != store::Saved::default() {
                log(
                    "info",
                    "exposures restored",
                    json!({"exposures": s.exposures.len(), "publications": s.publications.len(), "bridge": s.bridge.is_some(), "path": paths.store.display().to_string()}),
                );
            }
            s
        }
        Err(e) => {
            log(
                "error",
                "saved exposures unusable, starting with none",
                json!({"reason": e.to_string()}),
            );
            store::Saved::default()
        }
    };
    let fixed = match config::fixed_exposures(&paths.fixed) {
        Ok(f) => f,
        Err(e) => {
            log(
                "error",
                "fixed exposures unusable, none opened",
                json!({"reason": e.to_string(), "fix": "correct image/firewall.toml and rebuild the image"}),
            );
            Vec::new()
        }
    };
    let fw = Arc::new(Firewall::new(nft, paths.clone()));
    status("applying the ruleset");
    fw.start(cluster, fixed, saved)
        .context("putting the first ruleset in force")?;
    api::serve(&paths.socket, fw.clone())
        .with_context(|| format!("serving {}", paths.socket.display()))?;
    let summary = |fw: &Firewall| {
        let st = fw.lock();
        format!(
            "ruleset in force: {} exposure(s), {} cluster network(s)",
            st.policy.exposures.len(),
            st.policy.cluster.len()
        )
    };
    let _ = tessera_common::notify::notify(&["READY=1".into(), format!("STATUS={}", summary(&fw))]);
    loop {
        std::thread::sleep(CONFIG_POLL);
        let Some(cluster) = read_cluster_quiet(&paths) else {
            continue;
        };
        match fw.set_cluster(cluster) {
            Ok(true) => status(&summary(&fw)),
            Ok(false) => {}
            Err(e) => log(
                "error",
                "new cluster networks refused, the previous ruleset stays",
                json!({"reason": e.to_string()}),
            ),
        }
    }
}

/// Like [`read_cluster`] but silent: the poll would repeat the same error every 2 s.
fn read_cluster_quiet(paths: &Paths) -> Option<Vec<Cidr>> {
    config::cluster_cidrs(&paths.userdata).ok()
}
