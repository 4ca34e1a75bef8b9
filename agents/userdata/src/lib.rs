//! `tessera-userdata`: acquires and validates the node's configuration ("user-data").
//!
//! Owns: the v1 schema ([`schema`], SCHEMA.md), the three sources behind one [`Source`]
//! trait — kernel command line ([`cmdline`]), NoCloud volume ([`nocloud`], with the FAT and
//! ISO 9660 label readers in [`label`]), EC2 IMDSv2 ([`imds`], over the small client in
//! [`http`]) — and the `userdata` service ([`service`]) that tries them in that order and
//! writes the result to `/run/tessera/userdata.toml`.
//!
//! Must not: start anything, configure the node itself (host name, network, storage are the
//! node agent's), or talk to the CA (the certificate manager's). Readers of the written file
//! use [`load`].

pub mod cmdline;
pub mod defaults;
pub mod events;
pub mod http;
pub mod imds;
pub mod label;
pub mod mount;
pub mod nocloud;
pub mod retry;
pub mod schema;
pub mod service;
pub mod source;
pub mod values;

pub use schema::{Config, ConfigError};
pub use service::run_service;
pub use source::{Fetched, Outcome, Source, SourceError};

use std::path::Path;

/// Why the written configuration could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {error}")]
    Invalid { path: String, error: ConfigError },
}

/// Reads the configuration the service wrote (normally [`defaults::USERDATA_FILE`]).
/// `Ok(None)` when there is none: the node runs standalone.
pub fn load(path: &Path) -> Result<Option<Config>, LoadError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(LoadError::Read {
                path: path.display().to_string(),
                source,
            })
        }
    };
    schema::parse(&bytes)
        .map(Some)
        .map_err(|error| LoadError::Invalid {
            path: path.display().to_string(),
            error,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_reads_back_validates_and_treats_absence_as_standalone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("userdata.toml");
        assert!(load(&path).unwrap().is_none());
        std::fs::write(&path, "# header\nversion = 1\n[node]\nhostname = \"n1\"\n").unwrap();
        assert_eq!(
            load(&path).unwrap().unwrap().node.hostname.as_deref(),
            Some("n1")
        );
        std::fs::write(&path, "version = 1\n[node]\nhostname = \"n_1\"\n").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: node.hostname: bad host name", path.display())),
            "{e}"
        );
    }
}
