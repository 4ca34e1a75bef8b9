//! Service files: `/etc/tessera/services/<name>.toml`, parsed strictly.
//!
//! Every value is checked while it is read, so that an error names the file, the line and
//! the column of the offending value. A bad file is skipped; the others still boot.

use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tessera_common::paths;

/// A service file that could not be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", file.display(), line.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
pub struct ManifestError {
    pub file: PathBuf,
    /// 1-based line and column, when the problem has a place in the file.
    pub line: Option<(usize, usize)>,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Kind {
    #[serde(rename = "oneshot")]
    Oneshot,
    #[serde(rename = "long-run")]
    LongRun,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Oneshot => "oneshot",
            Kind::LongRun => "long-run",
        }
    }
}

/// OTP restart types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Restart {
    /// Always restarted.
    Permanent,
    /// Restarted only when it ends abnormally (non-zero exit or a signal).
    Transient,
    /// Never restarted.
    Temporary,
}

/// What else restarts when this service restarts (OTP strategies, scoped to dependents).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Escalation {
    /// Only this service restarts.
    OneForOne,
    /// Services that require this one (transitively) restart with it.
    RestForOne,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Readiness {
    /// Ready as soon as the process runs.
    Started,
    /// Ready when it sends READY=1 to $NOTIFY_SOCKET.
    Notify,
}

pub use tessera_common::restart::{Backoff, Intensity};

/// cgroup v2 limits, written as the kernel expects them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// memory.max: bytes or "max".
    pub memory_max: Option<String>,
    /// cpu.max: "<quota> <period>" or "max <period>".
    pub cpu_max: Option<String>,
    /// pids.max: count or "max".
    pub pids_max: Option<String>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.memory_max.is_none() && self.cpu_max.is_none() && self.pids_max.is_none()
    }

    /// (file name, value) pairs to write into the service's cgroup.
    pub fn files(&self) -> Vec<(&'static str, &str)> {
        [
            ("memory.max", &self.memory_max),
            ("cpu.max", &self.cpu_max),
            ("pids.max", &self.pids_max),
        ]
        .into_iter()
        .filter_map(|(f, v)| v.as_deref().map(|v| (f, v)))
        .collect()
    }
}

/// The X.509 identity the supervisor obtains from certmgr for a service before it starts it
/// (a one-time token handed over on an inherited pipe, see agents/README.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySpec {
    /// The service's subsystem (the O= of its certificate), e.g. "hub".
    pub subsystem: String,
    /// Its agent id (UID=); the service name when absent.
    #[serde(default)]
    pub agent_id: Option<String>,
}

/// A validated service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    pub file: PathBuf,
    pub description: Option<String>,
    pub exec: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub kind: Kind,
    pub requires: Vec<String>,
    pub after: Vec<String>,
    pub restart: Restart,
    pub intensity: Intensity,
    pub escalation: Escalation,
    pub backoff: Backoff,
    pub ready: Readiness,
    pub watchdog: Option<Duration>,
    pub stop_signal: nix::sys::signal::Signal,
    pub stop_grace: Duration,
    /// Bounding set; None keeps the full set.
    pub capabilities: Option<Vec<caps::Capability>>,
    pub no_new_privileges: bool,
    pub limits: Limits,
    /// stdin/stdout/stderr on the console instead of the log.
    pub console: bool,
    /// Lowest level of this service's events mirrored to the console during boot.
    pub console_level: tessera_common::log::Level,
    /// Obtain an identity from certmgr before starting (subsystem, agent id).
    pub identity: Option<(String, String)>,
    /// The `[health]` check the node agent runs for this service.
    pub health: Option<tessera_node::health::spec::HealthSpec>,
}

// ---- raw form, as written in the file ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Option<toml::Spanned<String>>,
    description: Option<String>,
    exec: toml::Spanned<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    kind: Option<Kind>,
    #[serde(default)]
    requires: Vec<String>,
    #[serde(default)]
    after: Vec<String>,
    restart: Option<toml::Spanned<Restart>>,
    intensity: Option<RawIntensity>,
    escalation: Option<Escalation>,
    backoff: Option<RawBackoff>,
    ready: Option<toml::Spanned<Readiness>>,
    watchdog: Option<toml::Spanned<Dur>>,
    stop_signal: Option<SignalName>,
    stop_grace: Option<Dur>,
    capabilities: Option<Vec<CapName>>,
    #[serde(default)]
    no_new_privileges: bool,
    limits: Option<RawLimits>,
    #[serde(default)]
    console: bool,
    console_level: Option<LevelName>,
    identity: Option<toml::Spanned<IdentitySpec>>,
    health: Option<toml::Spanned<tessera_node::health::spec::RawHealth>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntensity {
    max: u32,
    period: Dur,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackoff {
    initial: Dur,
    max: Dur,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory_max: Option<ByteLimit>,
    cpu_max: Option<CpuLimit>,
    pids_max: Option<CountLimit>,
}

/// A duration written as text: "100ms", "5s", "2m".
struct Dur(Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map(Dur).map_err(|e| {
            de::Error::custom(format!(
                "bad duration {s:?} ({e}); write it like \"500ms\", \"5s\" or \"2m\""
            ))
        })
    }
}

struct SignalName(nix::sys::signal::Signal);

impl<'de> Deserialize<'de> for SignalName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let full = if s.starts_with("SIG") {
            s.clone()
        } else {
            format!("SIG{s}")
        };
        full.parse::<nix::sys::signal::Signal>()
            .map(SignalName)
            .map_err(|_| {
                de::Error::custom(format!(
                    "unknown signal {s:?}; use a name like \"SIGTERM\" or \"SIGINT\""
                ))
            })
    }
}

struct CapName(caps::Capability);

impl<'de> Deserialize<'de> for CapName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let full = if s.to_ascii_uppercase().starts_with("CAP_") {
            s.to_ascii_uppercase()
        } else {
            format!("CAP_{}", s.to_ascii_uppercase())
        };
        full.parse::<caps::Capability>().map(CapName).map_err(|_| {
            de::Error::custom(format!(
                "unknown capability {s:?}; use a name like \"CAP_NET_ADMIN\" (see capabilities(7))"
            ))
        })
    }
}

struct LevelName(tessera_common::log::Level);

impl<'de> Deserialize<'de> for LevelName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        tessera_common::log::Level::parse(&s)
            .map(LevelName)
            .ok_or_else(|| {
                de::Error::custom(format!(
                    "unknown level {s:?}; use debug, info, warn or error"
                ))
            })
    }
}

/// "64M", "1G", 1048576 or "max" → bytes as text.
struct ByteLimit(String);

impl<'de> Deserialize<'de> for ByteLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = NumOrText::deserialize(d)?;
        let text = match v {
            NumOrText::Num(n) if n > 0 => return Ok(ByteLimit(n.to_string())),
            NumOrText::Num(_) => String::new(),
            NumOrText::Text(t) => t,
        };
        parse_bytes(&text)
            .map(ByteLimit)
            .ok_or_else(|| de::Error::custom(format!("bad memory limit {text:?}; write bytes (1048576), a size (\"64M\", \"1G\") or \"max\"")))
    }
}

fn parse_bytes(text: &str) -> Option<String> {
    if text == "max" {
        return Some(text.into());
    }
    tessera_common::size::parse_size(text)
        .ok()
        .map(|b| b.to_string())
}

/// "50%" (of one CPU), "max", or the raw "<quota> <period>" form.
struct CpuLimit(String);

impl<'de> Deserialize<'de> for CpuLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_cpu(&s)
            .map(CpuLimit)
            .ok_or_else(|| de::Error::custom(format!("bad cpu limit {s:?}; write a share of one CPU (\"50%\", \"200%\"), \"max\", or \"<quota_us> <period_us>\"")))
    }
}

fn parse_cpu(s: &str) -> Option<String> {
    const PERIOD: u64 = 100_000;
    if s == "max" {
        return Some(format!("max {PERIOD}"));
    }
    if let Some(p) = s.strip_suffix('%') {
        let pct: u64 = p.trim().parse().ok()?;
        return (pct > 0).then(|| format!("{} {PERIOD}", pct * PERIOD / 100));
    }
    let mut parts = s.split_whitespace();
    let quota = parts.next()?;
    let period: u64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || period == 0 {
        return None;
    }
    (quota == "max" || quota.parse::<u64>().is_ok_and(|q| q > 0))
        .then(|| format!("{quota} {period}"))
}

/// A count or "max".
struct CountLimit(String);

impl<'de> Deserialize<'de> for CountLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrText::deserialize(d)? {
            NumOrText::Num(n) if n > 0 => Ok(CountLimit(n.to_string())),
            NumOrText::Text(t) if t == "max" => Ok(CountLimit(t)),
            other => Err(de::Error::custom(format!(
                "bad pids limit {other:?}; write a positive number or \"max\""
            ))),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum NumOrText {
    Num(i64),
    Text(String),
}

/// Service names become file and cgroup names: keep them plain.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

/// Byte offset → 1-based (line, column).
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

/// Parses one service file's text. `file` is used for the name default and for errors.
pub fn parse(file: &Path, text: &str) -> Result<ServiceSpec, ManifestError> {
    let err_at = |span: Option<std::ops::Range<usize>>, message: String| ManifestError {
        file: file.to_path_buf(),
        line: span.map(|s| line_col(text, s.start)),
        message,
    };
    let raw: RawService =
        toml::from_str(text).map_err(|e| err_at(e.span(), e.message().to_string()))?;

    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    let (name, name_span) = match raw.name {
        Some(n) => (n.get_ref().clone(), Some(n.span())),
        None => (stem, None),
    };
    if !valid_name(&name) {
        return Err(err_at(name_span, format!("bad service name {name:?}: use 1-64 lower-case letters, digits, '-' or '_' (the file name is the default)")));
    }
    let exec = raw.exec.get_ref();
    if !exec.starts_with('/') {
        return Err(err_at(
            Some(raw.exec.span()),
            format!("exec must be an absolute path, got {exec:?}"),
        ));
    }
    let kind = raw.kind.unwrap_or(Kind::LongRun);
    let restart = match (&raw.restart, kind) {
        (Some(r), Kind::Oneshot) if *r.get_ref() == Restart::Permanent => {
            return Err(err_at(Some(r.span()), "a oneshot cannot be permanent (it would run forever); use \"transient\" to retry failures or \"temporary\"".into()));
        }
        (Some(r), _) => *r.get_ref(),
        (None, Kind::Oneshot) => Restart::Temporary,
        (None, Kind::LongRun) => Restart::Permanent,
    };
    let ready = match (&raw.ready, kind) {
        (Some(r), Kind::Oneshot) if *r.get_ref() == Readiness::Notify => {
            return Err(err_at(
                Some(r.span()),
                "a oneshot is ready when it exits successfully; remove `ready = \"notify\"`".into(),
            ));
        }
        (Some(r), _) => *r.get_ref(),
        (None, _) => Readiness::Started,
    };
    let watchdog = match &raw.watchdog {
        Some(w) if ready != Readiness::Notify => {
            return Err(err_at(Some(w.span()), "watchdog needs `ready = \"notify\"` (the service pings with WATCHDOG=1 on $NOTIFY_SOCKET)".into()));
        }
        Some(w) if w.get_ref().0.is_zero() => {
            return Err(err_at(
                Some(w.span()),
                "watchdog period must be above zero".into(),
            ))
        }
        Some(w) => Some(w.get_ref().0),
        None => None,
    };
    for dep in raw.requires.iter().chain(&raw.after) {
        if dep == &name {
            return Err(err_at(
                None,
                format!("service {name:?} cannot depend on itself"),
            ));
        }
    }
    let intensity = raw.intensity.map_or(
        Intensity {
            max_restarts: paths::DEFAULT_MAX_RESTARTS,
            period: paths::DEFAULT_RESTART_PERIOD,
        },
        |i| Intensity {
            max_restarts: i.max,
            period: i.period.0,
        },
    );
    if intensity.period.is_zero() {
        return Err(err_at(None, "intensity.period must be above zero".into()));
    }
    let backoff = raw.backoff.map_or(
        Backoff {
            initial: paths::DEFAULT_BACKOFF_INITIAL,
            max: paths::DEFAULT_BACKOFF_MAX,
        },
        |b| Backoff {
            initial: b.initial.0,
            max: b.max.0,
        },
    );
    if backoff.max < backoff.initial {
        return Err(err_at(
            None,
            "backoff.max must not be below backoff.initial".into(),
        ));
    }
    let limits = raw.limits.map_or_else(Limits::default, |l| Limits {
        memory_max: l.memory_max.map(|v| v.0),
        cpu_max: l.cpu_max.map(|v| v.0),
        pids_max: l.pids_max.map(|v| v.0),
    });
    let identity = match raw.identity {
        Some(id) => {
            let span = id.span();
            let id = id.into_inner();
            let agent_id = id.agent_id.unwrap_or_else(|| name.clone());
            if !valid_name(&id.subsystem) || !valid_name(&agent_id) {
                return Err(err_at(Some(span), format!("identity names must be 1-64 lower-case letters, digits, '-' or '_': got subsystem {:?}, agent_id {agent_id:?}", id.subsystem)));
            }
            Some((id.subsystem, agent_id))
        }
        None => None,
    };
    let health = match raw.health {
        Some(h) => Some(
            tessera_node::health::spec::HealthSpec::check(h.get_ref())
                .map_err(|e| err_at(Some(h.span()), e.to_string()))?,
        ),
        None => None,
    };
    Ok(ServiceSpec {
        name,
        file: file.to_path_buf(),
        description: raw.description,
        exec: PathBuf::from(exec),
        args: raw.args,
        env: raw.env,
        kind,
        requires: raw.requires,
        after: raw.after,
        restart,
        intensity,
        escalation: raw.escalation.unwrap_or(Escalation::OneForOne),
        backoff,
        ready,
        watchdog,
        stop_signal: raw
            .stop_signal
            .map_or(nix::sys::signal::Signal::SIGTERM, |s| s.0),
        stop_grace: raw.stop_grace.map_or(paths::DEFAULT_STOP_GRACE, |d| d.0),
        capabilities: raw
            .capabilities
            .map(|c| c.into_iter().map(|c| c.0).collect()),
        no_new_privileges: raw.no_new_privileges,
        limits,
        console: raw.console,
        console_level: raw
            .console_level
            .map_or(tessera_common::log::Level::Info, |l| l.0),
        identity,
        health,
    })
}

/// Reads every `*.toml` in `dir`, sorted by file name. Good files come back as specs; each
/// bad file (or duplicate name) as an error. A missing directory means no services.
pub fn load_dir(dir: &Path) -> (Vec<ServiceSpec>, Vec<ManifestError>) {
    let mut specs: Vec<ServiceSpec> = Vec::new();
    let mut errors = Vec::new();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            errors.push(ManifestError {
                file: dir.into(),
                line: None,
                message: format!("cannot read the services directory: {e}"),
            });
            Vec::new()
        }
    };
    files.sort();
    for file in files {
        let parsed = std::fs::read_to_string(&file)
            .map_err(|e| ManifestError {
                file: file.clone(),
                line: None,
                message: format!("cannot read: {e}"),
            })
            .and_then(|text| parse(&file, &text));
        match parsed {
            Ok(spec) if specs.iter().any(|s| s.name == spec.name) => errors.push(ManifestError {
                file: file.clone(),
                line: None,
                message: format!(
                    "another service file already defines {:?}; service names must be unique",
                    spec.name
                ),
            }),
            Ok(spec) => specs.push(spec),
            Err(e) => errors.push(e),
        }
    }
    (specs, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<ServiceSpec, ManifestError> {
        parse(Path::new("/etc/tessera/services/web.toml"), text)
    }

    #[test]
    fn minimal_file_gets_defaults_and_name_from_file() {
        let s = p(r#"exec = "/bin/web""#).unwrap();
        assert_eq!(s.name, "web");
        assert_eq!(s.kind, Kind::LongRun);
        assert_eq!(s.restart, Restart::Permanent);
        assert_eq!(s.ready, Readiness::Started);
        assert_eq!(s.escalation, Escalation::OneForOne);
        assert_eq!(s.stop_signal, nix::sys::signal::Signal::SIGTERM);
        assert_eq!(s.capabilities, None);
        assert!(s.limits.is_empty());
    }

    #[test]
    fn oneshot_defaults_to_temporary() {
        let s = p("exec = \"/bin/x\"\nkind = \"oneshot\"").unwrap();
        assert_eq!(s.restart, Restart::Temporary);
    }

    #[test]
    fn unknown_key_is_reported_with_its_line() {
        let e = p("exec = \"/bin/web\"\n\nrestrat = \"permanent\"\n").unwrap_err();
        assert_eq!(e.line.map(|l| l.0), Some(3), "{e}");
        assert!(e.message.contains("restrat"), "{e}");
        assert!(
            e.to_string()
                .starts_with("/etc/tessera/services/web.toml:3:"),
            "{e}"
        );
    }

    #[test]
    fn bad_duration_names_the_value_and_line() {
        let e = p("exec = \"/bin/web\"\nstop_grace = \"5 parsecs\"\n").unwrap_err();
        assert_eq!(e.line.map(|l| l.0), Some(2), "{e}");
        assert!(e.message.contains("5 parsecs"), "{e}");
    }

    #[test]
    fn wrong_type_is_an_error() {
        let e = p("exec = \"/bin/web\"\nargs = \"--port 80\"\n").unwrap_err();
        assert_eq!(e.line.map(|l| l.0), Some(2), "{e}");
    }

    #[test]
    fn relative_exec_is_refused() {
        let e = p("exec = \"web\"").unwrap_err();
        assert!(e.message.contains("absolute"), "{e}");
    }

    #[test]
    fn permanent_oneshot_is_refused() {
        let e = p("exec = \"/bin/x\"\nkind = \"oneshot\"\nrestart = \"permanent\"").unwrap_err();
        assert_eq!(e.line.map(|l| l.0), Some(3));
    }

    #[test]
    fn watchdog_needs_notify() {
        assert!(p("exec = \"/bin/x\"\nwatchdog = \"2s\"").is_err());
        let s = p("exec = \"/bin/x\"\nready = \"notify\"\nwatchdog = \"2s\"").unwrap();
        assert_eq!(s.watchdog, Some(Duration::from_secs(2)));
    }

    #[test]
    fn capabilities_and_signals_are_checked() {
        let s = p("exec = \"/bin/x\"\ncapabilities = [\"CAP_NET_ADMIN\", \"net_raw\"]\nstop_signal = \"INT\"").unwrap();
        assert_eq!(
            s.capabilities,
            Some(vec![
                caps::Capability::CAP_NET_ADMIN,
                caps::Capability::CAP_NET_RAW
            ])
        );
        assert_eq!(s.stop_signal, nix::sys::signal::Signal::SIGINT);
        assert!(p("exec = \"/bin/x\"\ncapabilities = [\"CAP_FLY\"]")
            .unwrap_err()
            .message
            .contains("CAP_FLY"));
        assert!(p("exec = \"/bin/x\"\nstop_signal = \"SIGNOPE\"").is_err());
    }

    #[test]
    fn limits_are_normalised_for_cgroup_files() {
        let s = p(
            "exec = \"/bin/x\"\n[limits]\nmemory_max = \"64M\"\ncpu_max = \"50%\"\npids_max = 32\n",
        )
        .unwrap();
        assert_eq!(
            s.limits.files(),
            vec![
                ("memory.max", "67108864"),
                ("cpu.max", "50000 100000"),
                ("pids.max", "32")
            ]
        );
        assert!(p("exec = \"/bin/x\"\n[limits]\nmemory_max = \"lots\"").is_err());
        assert!(p("exec = \"/bin/x\"\n[limits]\ncpu_max = \"0%\"").is_err());
        assert!(p("exec = \"/bin/x\"\n[limits]\npids_max = -1").is_err());
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(p("name = \"Web Server\"\nexec = \"/bin/x\"").is_err());
        assert!(p("name = \"../x\"\nexec = \"/bin/x\"").is_err());
        assert!(p("exec = \"/bin/x\"\nrequires = [\"web\"]").is_err());
    }

    #[test]
    fn health_table_is_checked_and_errors_name_the_field() {
        let s =
            p("exec = \"/bin/x\"\n[health]\nkind = \"tcp\"\ntarget = \"127.0.0.1:80\"\n").unwrap();
        assert!(s.health.is_some());
        let e = p("exec = \"/bin/x\"\n[health]\nkind = \"tcp\"\n").unwrap_err();
        assert!(e.message.starts_with("health.target:"), "{e}");
        assert_eq!(e.line.map(|l| l.0), Some(2), "{e}");
        let e = p("exec = \"/bin/x\"\n[health]\nkind = \"tcp\"\nevery = \"1s\"\n").unwrap_err();
        assert!(e.message.contains("every"), "{e}");
    }

    #[test]
    fn load_dir_skips_bad_files_and_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.toml"), "exec = \"/bin/a\"").unwrap();
        std::fs::write(dir.path().join("b.toml"), "exec = [").unwrap();
        std::fs::write(dir.path().join("c.toml"), "name = \"a\"\nexec = \"/bin/c\"").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let (specs, errors) = load_dir(dir.path());
        assert_eq!(
            specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            vec!["a"]
        );
        assert_eq!(errors.len(), 2);
        assert!(errors[0].file.ends_with("b.toml") && errors[0].line.is_some());
        assert!(errors[1].message.contains("unique"));
    }
}
