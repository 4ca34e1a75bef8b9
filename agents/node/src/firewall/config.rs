//! The firewall part of user-data: `firewall.cluster_cidrs` from the validated
//! /run/tessera/userdata.toml (agents/userdata/SCHEMA.md), checked again here because the
//! ruleset depends on it.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::model::{self, cidr_list, Cidr, Exposure, Protocol, Scope};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid TOML: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Field {
        path: PathBuf,
        source: super::model::FieldError,
    },
}

#[derive(Deserialize, Default)]
struct UserData {
    #[serde(default)]
    firewall: Firewall,
}

#[derive(Deserialize, Default)]
struct Firewall {
    #[serde(default)]
    cluster_cidrs: Vec<String>,
}

/// The cluster networks; a missing file (standalone node) means none.
pub fn cluster_cidrs(path: &Path) -> Result<Vec<Cidr>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    parse(&text, path)
}

pub fn parse(text: &str, path: &Path) -> Result<Vec<Cidr>, ConfigError> {
    let data: UserData = toml::from_str(text).map_err(|e| ConfigError::Toml {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    })?;
    cidr_list("firewall.cluster_cidrs", &data.firewall.cluster_cidrs).map_err(|source| {
        ConfigError::Field {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Where the image declares the ports of its own services (from image/firewall.toml).
pub const FIXED_FILE: &str = "/etc/tessera/firewall.toml";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FixedFile {
    #[serde(default)]
    expose: Vec<RawExposure>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExposure {
    port: i64,
    #[serde(default)]
    protocol: Option<String>,
    scope: String,
    #[serde(default)]
    owner: Option<String>,
}

/// The exposures the image fixes (open from boot, not removable through the API); a missing
/// file means none.
pub fn fixed_exposures(path: &Path) -> Result<Vec<Exposure>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    parse_fixed(&text, path)
}

pub fn parse_fixed(text: &str, path: &Path) -> Result<Vec<Exposure>, ConfigError> {
    let file: FixedFile = toml::from_str(text).map_err(|e| ConfigError::Toml {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    })?;
    let field = |source| ConfigError::Field {
        path: path.to_path_buf(),
        source,
    };
    let mut out: Vec<Exposure> = Vec::new();
    for (i, raw) in file.expose.iter().enumerate() {
        let at = |k: &str| format!("expose[{i}].{k}");
        let e = Exposure {
            protocol: match &raw.protocol {
                None => Protocol::Tcp,
                Some(p) => Protocol::parse(&at("protocol"), p).map_err(field)?,
            },
            port: model::port(&at("port"), raw.port).map_err(field)?,
            scope: Scope::parse(&at("scope"), &raw.scope).map_err(field)?,
            owner: match &raw.owner {
                None => None,
                Some(o) => Some(model::owner(&at("owner"), o).map_err(field)?),
            },
        };
        if out.iter().any(|x| x.key() == e.key()) {
            return Err(field(model::FieldError::new(
                at("port"),
                format!("{}/{} is listed twice", e.protocol, e.port),
            )));
        }
        out.push(e);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_exposures_are_validated_by_field() {
        let p = Path::new("/etc/tessera/firewall.toml");
        let e = parse_fixed(
            "[[expose]]\nport = 7443\nscope = \"public\"\nowner = \"node-api\"\n",
            p,
        )
        .unwrap();
        assert_eq!(e[0].port, 7443);
        assert_eq!(e[0].protocol, Protocol::Tcp);
        let err = parse_fixed("[[expose]]\nport = 0\nscope = \"public\"\n", p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("expose[0].port: 0 is not a port"), "{err}");
        let err = parse_fixed("[[expose]]\nport = 1\nscope = \"everyone\"\n", p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("expose[0].scope"), "{err}");
    }

    #[test]
    fn cluster_cidrs_are_read_and_other_sections_ignored() {
        let p = Path::new("/run/tessera/userdata.toml");
        let c = parse(
            "version = 1\n[network]\naddress = \"192.168.77.10/24\"\n[firewall]\ncluster_cidrs = [\"192.168.77.0/24\"]\n",
            p,
        )
        .unwrap();
        assert_eq!(c[0].to_string(), "192.168.77.0/24");
        assert!(parse("version = 1\n", p).unwrap().is_empty());
        let e = parse("[firewall]\ncluster_cidrs = [\"10.1.2.3/8\"]\n", p)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("firewall.cluster_cidrs[0]") && e.contains("10.0.0.0/8"),
            "{e}"
        );
    }
}
