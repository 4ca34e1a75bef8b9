//! `tessera ca init`: a new CA in a new state directory.

use std::time::Duration;

use anyhow::{bail, Context};
use rcgen::KeyPair;
use serde_json::json;
use tessera_identity::profile::{self, Subject, ADMIN_SUBSYSTEM};
use tessera_identity::tls::{fingerprint, pem_encode};

use crate::audit;
use crate::crl;
use crate::files::{self, StateDir, ADMIN_CERT, ADMIN_KEY, CA_CERT, CA_KEY};
use crate::issue::{self, Authority, SERVICE_LIFETIME};
use crate::records::{self, Kind};
use crate::server;
use crate::state;

/// Names in the CA's HTTPS certificate unless `--san` is given: the host itself, and
/// 10.0.2.2, which is how QEMU user-mode guests reach the host.
pub fn default_sans() -> Vec<String> {
    ["localhost", "127.0.0.1", "10.0.2.2"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The node name in the operator's certificate (`OU`).
pub const ADMIN_NODE: &str = "operator";

/// What `init` made.
#[derive(Debug, Clone)]
pub struct Initialized {
    pub fingerprint: String,
    pub cluster: String,
    pub sans: Vec<String>,
}

pub fn init(state: &StateDir, cluster: &str, sans: &[String]) -> anyhow::Result<Initialized> {
    profile::validate_cluster(cluster)?;
    let sans = if sans.is_empty() {
        default_sans()
    } else {
        sans.to_vec()
    };
    for host in &sans {
        issue::parse_host(host).map_err(|e| anyhow::anyhow!("--san {host:?}: {}", e.reason))?;
    }
    if state.path(CA_KEY).exists() || state.database().exists() {
        bail!(
            "{} already holds a CA; a new one would orphan every certificate the old one issued. Use another --state directory, or remove this one on purpose",
            state.dir.display()
        );
    }
    files::create_private_dir(&state.dir)?;

    let (ca_key, ca_der) = issue::new_ca(cluster)?;
    files::write_file(
        &state.path(CA_KEY),
        ca_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    files::write_file(
        &state.path(CA_CERT),
        pem_encode("CERTIFICATE", &ca_der).as_bytes(),
        0o644,
    )?;
    let fp = fingerprint(&ca_der);

    let mut conn = state::open(&state.database())?;
    state::transaction(&mut conn, |c| {
        state::meta_set(c, "cluster", cluster.as_bytes())?;
        audit::append(
            c,
            "ca_initialized",
            json!({ "cluster": cluster, "fingerprint": fp }),
        )?;
        Ok(())
    })?;

    let authority = Authority::load(state, profile::DEFAULT_LIFETIME)?;
    server::write_server_cert(state, &authority, &sans)?;
    write_admin_cert(state, &authority, "admin")?;
    state::transaction(&mut conn, |c| {
        crl::refresh(c, &authority, state::now()).map(|_| ())
    })?;
    Ok(Initialized {
        fingerprint: fp,
        cluster: cluster.to_string(),
        sans,
    })
}

/// The operator's client certificate: `DC=<cluster>, O=admin, OU=operator, UID=<name>`.
pub fn write_admin_cert(state: &StateDir, authority: &Authority, name: &str) -> anyhow::Result<()> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let subject = Subject::new(&authority.cluster, ADMIN_SUBSYSTEM, ADMIN_NODE, name)?;
    let issued = authority.sign_agent(subject, vec![], vec![], &key, Some(SERVICE_LIFETIME))?;
    let mut conn = state::open(&state.database())?;
    state::transaction(&mut conn, |c| {
        records::insert(c, &issued, Kind::Admin, None, state::now())?;
        audit::append(
            c,
            "certificate_issued",
            json!({ "serial": issued.serial, "subject": issued.subject, "via": "admin" }),
        )?;
        Ok(())
    })?;
    files::write_file(
        &state.path(ADMIN_KEY),
        key.serialize_pem().as_bytes(),
        0o600,
    )
    .context("writing the admin key")?;
    files::write_file(&state.path(ADMIN_CERT), issued.pem().as_bytes(), 0o644)?;
    Ok(())
}

/// Lifetime text for messages.
pub fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_writes_keys_0600_and_refuses_to_run_twice() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("ca"));
        let done = init(&state, "prod", &[]).unwrap();
        assert!(done.fingerprint.starts_with("sha256:"));
        assert_eq!(done.sans, default_sans());
        for key in [CA_KEY, files::SERVER_KEY, ADMIN_KEY, files::DATABASE] {
            let mode = std::fs::metadata(state.path(key))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600, "{key}");
        }
        let mode = std::fs::metadata(&state.dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let e = init(&state, "prod", &[]).unwrap_err();
        assert!(e.to_string().contains("already holds a CA"), "{e}");
        // Admin certificate is O=admin of the cluster.
        let pem = state.read(ADMIN_CERT).unwrap();
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
            .map(|d: rustls::pki_types::CertificateDer<'static>| d)
            .unwrap();
        let id = profile::PeerIdentity::from_der(&der).unwrap();
        assert!(id.is_admin());
        assert_eq!(id.cluster, "prod");
        let conn = state::open(&state.database()).unwrap();
        assert_eq!(audit::verify(&conn).unwrap().entries, 3);
        assert!(crl::current(&conn).unwrap().is_some());
    }

    #[test]
    fn hostile_cluster_and_sans_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("ca"));
        assert!(init(&state, "prod\nX", &[]).is_err());
        assert!(init(&state, "prod", &["bad host".into()]).is_err());
        assert!(!state.dir.exists());
    }
}
