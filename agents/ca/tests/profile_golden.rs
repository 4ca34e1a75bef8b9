//! Golden files for the certificate profile: the to-be-signed part of a CA certificate and of
//! an agent certificate, built from fixed keys, serials and times, must stay byte-identical
//! (tests/data/*.tbs.hex). ECDSA signatures are randomised, so only the TBS is compared;
//! tests/data/*.txt hold `openssl x509 -text` of the same certificates for reviewers.
//!
//! After an intended profile change: `UPDATE_GOLDEN=1 cargo test -p tessera-ca --test
//! profile_golden`, then review the diff of tests/data.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::KeyPair;
use tessera_ca::issue;
use tessera_identity::profile::{CaIssuer, Leaf, Subject};
use tessera_identity::tls::pem_encode;
use x509_parser::prelude::{FromDer, X509Certificate};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn key(name: &str) -> KeyPair {
    // Test-only keys, generated with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`.
    KeyPair::from_pem(&std::fs::read_to_string(data(name)).unwrap()).unwrap()
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// 2030-01-01T00:00:00Z.
const T0: u64 = 1_893_456_000;

fn check(name: &str, der: &[u8]) {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    let tbs = hex::encode(cert.tbs_certificate.as_ref());
    let golden = data(&format!("{name}.tbs.hex"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, format!("{tbs}\n")).unwrap();
        let pem = data(&format!("{name}.pem"));
        std::fs::write(&pem, pem_encode("CERTIFICATE", der)).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&pem)
            .output()
            .unwrap();
        std::fs::write(data(&format!("{name}.txt")), out.stdout).unwrap();
        std::fs::remove_file(pem).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).unwrap();
    assert_eq!(
        tbs,
        expected.trim(),
        "{name}: the profile changed; if intended, regenerate with UPDATE_GOLDEN=1 and review tests/data"
    );
}

fn golden_ca() -> CaIssuer<KeyPair> {
    let ca_key = key("golden-ca.key");
    let params =
        issue::ca_params("golden", at(T0), at(T0 + 10 * 365 * 86400), &[0x42; 16]).unwrap();
    let cert = params.self_signed(&ca_key).unwrap();
    CaIssuer::new(cert.der().clone(), ca_key).unwrap()
}

#[test]
fn ca_certificate_matches_the_golden_file() {
    let ca = golden_ca();
    check("profile-ca", ca.cert_der());
}

#[test]
fn agent_certificate_matches_the_golden_file() {
    let ca = golden_ca();
    let leaf = Leaf {
        subject: Subject::new("golden", "certmgr", "n1.golden.example", "certmgr").unwrap(),
        capabilities: vec!["node".into(), "container".into(), "hub".into()],
        uris: vec!["https://certmgr.n1.golden.example:7443/v1".into()],
        not_before: at(T0),
        not_after: at(T0 + 4 * 3600),
        serial: vec![0x5e; 16],
    };
    let der = ca.sign(&leaf, &key("golden-leaf.key")).unwrap();
    check("profile-certmgr", &der);
}
