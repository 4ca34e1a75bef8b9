//! The `[health]` table of a service file, parsed strictly: PID 1 validates it with the rest
//! of the file (init/src/supervisor/manifest.rs uses [`RawHealth`] and [`HealthSpec::check`]),
//! and the node agent reads it back from the same files to run the checks.
//!
//! ```toml
//! [health]
//! kind = "http"                 # process | tcp | http | exec
//! target = "http://127.0.0.1:8080/healthz"   # tcp: "HOST:PORT"; exec: an absolute command line;
//!                               # process: none (the service's main process is alive)
//! interval = "10s"              # default 10s
//! timeout = "2s"                # default 2s, below the interval
//! ```

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Process,
    Tcp,
    Http,
    Exec,
}

/// The table as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub kind: CheckKind,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
}

/// What to check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Target {
    Process,
    Tcp {
        addr: SocketAddr,
    },
    Http {
        addr: SocketAddr,
        host: String,
        path: String,
    },
    Exec {
        argv: Vec<String>,
    },
}

/// A validated health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthSpec {
    pub target: Target,
    #[serde(with = "secs")]
    pub interval: Duration,
    #[serde(with = "secs")]
    pub timeout: Duration,
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// A bad `[health]` table: the field and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("health.{field}: {message}")]
pub struct HealthError {
    pub field: &'static str,
    pub message: String,
}

fn err(field: &'static str, message: String) -> HealthError {
    HealthError { field, message }
}

fn duration(
    field: &'static str,
    text: Option<&str>,
    default: Duration,
) -> Result<Duration, HealthError> {
    let Some(text) = text else { return Ok(default) };
    let d = humantime::parse_duration(text).map_err(|e| {
        err(
            field,
            format!("bad duration {text:?} ({e}); write it like \"500ms\", \"5s\" or \"2m\""),
        )
    })?;
    if d.is_zero() {
        return Err(err(field, "must be above zero".into()));
    }
    Ok(d)
}

impl HealthSpec {
    /// Validates the table.
    pub fn check(raw: &RawHealth) -> Result<HealthSpec, HealthError> {
        let interval = duration("interval", raw.interval.as_deref(), DEFAULT_INTERVAL)?;
        let timeout = duration(
            "timeout",
            raw.timeout.as_deref(),
            DEFAULT_TIMEOUT.min(interval),
        )?;
        if timeout > interval {
            return Err(err("timeout", format!("{} is longer than the interval ({}); a check must end before the next one starts", humantime::format_duration(timeout), humantime::format_duration(interval))));
        }
        let target = raw.target.as_deref().map(str::trim);
        let target = match (raw.kind, target) {
            (CheckKind::Process, None) => Target::Process,
            (CheckKind::Process, Some(_)) => return Err(err("target", "a process check has no target (it checks the service's main process); remove it".into())),
            (_, None | Some("")) => return Err(err("target", format!("a {:?} check needs a target: \"HOST:PORT\" for tcp, \"http://HOST:PORT/PATH\" for http, an absolute command line for exec", raw.kind).to_lowercase())),
            (CheckKind::Tcp, Some(t)) => Target::Tcp { addr: socket_addr(t)? },
            (CheckKind::Http, Some(t)) => http_target(t)?,
            (CheckKind::Exec, Some(t)) => {
                let argv: Vec<String> = t.split_whitespace().map(str::to_string).collect();
                if !argv[0].starts_with('/') {
                    return Err(err("target", format!("exec needs an absolute program path, got {:?}", argv[0])));
                }
                Target::Exec { argv }
            }
        };
        Ok(HealthSpec {
            target,
            interval,
            timeout,
        })
    }
}

fn socket_addr(t: &str) -> Result<SocketAddr, HealthError> {
    t.parse().map_err(|_| {
        err("target", format!("{t:?} is not an IP address and port; write \"127.0.0.1:8080\" or \"[::1]:8080\" (checks run on the node, without DNS)"))
    })
}

fn http_target(t: &str) -> Result<Target, HealthError> {
    let rest = t.strip_prefix("http://").ok_or_else(|| {
        err(
            "target",
            format!("{t:?} is not an http:// URL; write \"http://127.0.0.1:8080/healthz\""),
        )
    })?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Ok(Target::Http {
        addr: socket_addr(host)?,
        host: host.to_string(),
        path: path.to_string(),
    })
}

/// The `[health]` table of one service file, for the node agent: other keys are PID 1's to
/// check, so they are ignored here. Returns (service name, check), None without a table.
pub fn from_service_file(file: &Path, text: &str) -> Result<Option<(String, HealthSpec)>, String> {
    #[derive(Deserialize)]
    struct Only {
        name: Option<String>,
        health: Option<RawHealth>,
    }
    let only: Only =
        toml::from_str(text).map_err(|e| format!("{}: {}", file.display(), e.message()))?;
    let Some(raw) = only.health else {
        return Ok(None);
    };
    let name = match only.name {
        Some(n) => n,
        None => file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string(),
    };
    HealthSpec::check(&raw)
        .map(|s| Some((name, s)))
        .map_err(|e| format!("{}: {e}", file.display()))
}

/// Every service's check in `dir` (the service files); files that do not parse are reported.
pub fn load_dir(dir: &Path) -> (Vec<(String, HealthSpec)>, Vec<String>) {
    let mut checks = Vec::new();
    let mut errors = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (checks, errors);
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    for f in files {
        match std::fs::read_to_string(&f)
            .map_err(|e| format!("{}: {e}", f.display()))
            .and_then(|t| from_service_file(&f, &t))
        {
            Ok(Some(c)) => checks.push(c),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    (checks, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HealthSpec, HealthError> {
        let raw: RawHealth = toml::from_str(text).map_err(|e| err("?", e.to_string()))?;
        HealthSpec::check(&raw)
    }

    #[test]
    fn each_kind_parses_with_defaults() {
        let p = parse("kind = \"process\"").unwrap();
        assert_eq!(p.target, Target::Process);
        assert_eq!((p.interval, p.timeout), (DEFAULT_INTERVAL, DEFAULT_TIMEOUT));
        let t =
            parse("kind = \"tcp\"\ntarget = \"127.0.0.1:22\"\ninterval = \"5s\"\ntimeout = \"1s\"")
                .unwrap();
        assert_eq!(
            t.target,
            Target::Tcp {
                addr: "127.0.0.1:22".parse().unwrap()
            }
        );
        assert_eq!(t.interval, Duration::from_secs(5));
        let h = parse("kind = \"http\"\ntarget = \"http://127.0.0.1:8080/healthz\"").unwrap();
        assert_eq!(
            h.target,
            Target::Http {
                addr: "127.0.0.1:8080".parse().unwrap(),
                host: "127.0.0.1:8080".into(),
                path: "/healthz".into()
            }
        );
        let e = parse("kind = \"exec\"\ntarget = \"/bin/check --quick\"").unwrap();
        assert_eq!(
            e.target,
            Target::Exec {
                argv: vec!["/bin/check".into(), "--quick".into()]
            }
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("kind = \"tcp\"", "target"),
            ("kind = \"tcp\"\ntarget = \"localhost:80\"", "target"),
            ("kind = \"http\"\ntarget = \"https://127.0.0.1/\"", "target"),
            ("kind = \"exec\"\ntarget = \"check\"", "target"),
            ("kind = \"process\"\ntarget = \"x\"", "target"),
            ("kind = \"process\"\ninterval = \"soon\"", "interval"),
            ("kind = \"process\"\ninterval = \"0s\"", "interval"),
            (
                "kind = \"process\"\ninterval = \"1s\"\ntimeout = \"5s\"",
                "timeout",
            ),
        ];
        for (text, field) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.field, field, "{text}: {e}");
            assert!(
                e.to_string().starts_with(&format!("health.{field}: ")),
                "{e}"
            );
        }
    }

    #[test]
    fn unknown_keys_and_kinds_are_refused() {
        assert!(toml::from_str::<RawHealth>(
            "kind = \"tcp\"\ntarget = \"127.0.0.1:1\"\nretries = 3"
        )
        .unwrap_err()
        .to_string()
        .contains("retries"));
        assert!(toml::from_str::<RawHealth>("kind = \"ping\"").is_err());
    }

    #[test]
    fn the_agent_reads_the_table_from_a_service_file() {
        let text = "exec = \"/bin/web\"\nrestart = \"transient\"\n[health]\nkind = \"tcp\"\ntarget = \"127.0.0.1:80\"\n";
        let (name, spec) = from_service_file(Path::new("/etc/tessera/services/web.toml"), text)
            .unwrap()
            .unwrap();
        assert_eq!(name, "web");
        assert!(matches!(spec.target, Target::Tcp { .. }));
        assert_eq!(
            from_service_file(Path::new("x.toml"), "exec = \"/bin/x\"").unwrap(),
            None
        );
    }
}
