//! Host tests of the key modes. The host kernel has keyrings and the `asymmetric` type but
//! not `pkcs8_key_parser`, so kernel-rsa is exercised end to end only where the kernel takes
//! PKCS#8 (tests/tests/identity_keys.rs boots Debian's kernel for that); here it must fail
//! with a clear reason.

use super::*;
use crate::keyring::Perm;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};

type Scratch = crate::keyring::ScratchKeyring;

fn kernel_takes_pkcs8_rsa() -> bool {
    KeyMode::detect() == KeyMode::KernelRsa
}

#[test]
fn key_modes_have_stable_names() {
    for mode in KeyMode::ALL {
        assert_eq!(mode.name().parse::<KeyMode>().unwrap(), mode);
        assert_eq!(mode.to_string(), mode.name());
    }
    let err = "rsa".parse::<KeyMode>().unwrap_err();
    assert!(
        err.to_string().contains("kernel-rsa or ecdsa-p256"),
        "{err}"
    );
}

#[test]
fn detection_says_why() {
    let detection = KeyMode::detect_with_reason();
    assert!(!detection.reason.is_empty());
    if detection.mode == KeyMode::EcdsaP256 {
        assert!(detection.reason.contains("PKCS#8"), "{}", detection.reason);
    }
}

#[test]
fn ecdsa_key_is_possessor_only_and_signs_verifiably() {
    let ring = Scratch::new("tessera-test-keys-ecdsa");
    let key = EcdsaP256Key::generate(&ring.0).unwrap();
    let d = key.kernel_key().describe().unwrap();
    assert_eq!(d.key_type, "user");
    assert!(
        d.description.starts_with("tessera:ecdsa-p256:"),
        "{}",
        d.description
    );
    assert_eq!(d.perm, ecdsa_permissions());
    assert_eq!(d.perm.user(), Perm::NONE);
    assert_eq!(d.perm.group(), Perm::NONE);
    assert_eq!(d.perm.other(), Perm::NONE);

    let public = rcgen::PublicKeyData::der_bytes(&key).to_vec();
    assert_eq!(public.len(), 65);
    let sig = key.sign(b"hello").unwrap();
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &public)
        .verify(b"hello", &sig)
        .expect("signature verifies");
}

#[test]
fn ecdsa_key_is_unreadable_by_a_non_possessor() {
    let ring = Scratch::new("tessera-test-keys-ecdsa-fork");
    let key = EcdsaP256Key::generate(&ring.0).unwrap();
    // This process possesses it (it must read it to sign) ...
    assert_eq!(
        exposure::read_by_self(key.kernel_key()),
        ReadOutcome::Allowed
    );
    // ... a fork child, same UID but without the process keyring, does not.
    assert_eq!(
        exposure::read_by_non_possessor(key.kernel_key()).unwrap(),
        ReadOutcome::Refused(libc::EACCES)
    );
}

#[test]
fn dropping_the_last_handle_removes_the_kernel_key() {
    let ring = Scratch::new("tessera-test-keys-drop");
    let key = EcdsaP256Key::generate(&ring.0).unwrap();
    let kernel = key.kernel_key();
    let clone = key.clone();
    drop(key);
    assert!(kernel.describe().is_ok(), "a clone still holds it");
    drop(clone);
    let err = kernel.describe().unwrap_err();
    assert_eq!(err.errno(), Some(libc::ENOKEY), "{err}");
}

#[test]
fn csr_is_signed_through_the_kernel_key() {
    let ring = Scratch::new("tessera-test-keys-csr");
    let key = NodeKey::generate(KeyMode::EcdsaP256, &ring.0).unwrap();
    let params = rcgen::CertificateParams::new(vec!["node.tessera.invalid".to_string()]).unwrap();
    let csr = params.serialize_request(&key).unwrap();
    // rcgen parses and verifies the CSR's self-signature.
    let parsed = rcgen::CertificateSigningRequestParams::from_der(csr.der()).expect("CSR verifies");
    assert_eq!(
        rcgen::PublicKeyData::der_bytes(&parsed.public_key),
        rcgen::PublicKeyData::der_bytes(&key)
    );
}

#[test]
fn certified_key_must_match_the_certificate() {
    let ring = Scratch::new("tessera-test-keys-match");
    let key = NodeKey::generate(KeyMode::EcdsaP256, &ring.0).unwrap();
    let own = rcgen::CertificateParams::new(vec!["a.invalid".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let other_key = rcgen::KeyPair::generate().unwrap();
    let foreign = rcgen::CertificateParams::new(vec!["a.invalid".to_string()])
        .unwrap()
        .self_signed(&other_key)
        .unwrap();
    let err = key
        .clone()
        .into_certified_key(vec![foreign.der().clone()])
        .unwrap_err();
    assert!(matches!(err, KeyError::CertificateMismatch(_)), "{err}");
    let certified = key.into_certified_key(vec![own.der().clone()]).unwrap();
    assert_eq!(certified.cert.len(), 1);
}

#[test]
fn a_kernel_key_is_adopted_only_for_its_own_certificate() {
    let ring = Scratch::new("tessera-test-keys-adopt");
    let key = NodeKey::generate(KeyMode::EcdsaP256, &ring.0).unwrap();
    let own = rcgen::CertificateParams::new(vec!["a.invalid".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let foreign = rcgen::CertificateParams::new(vec!["a.invalid".to_string()])
        .unwrap()
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap();
    // Refused adoptions say why and leave the kernel key in place.
    let err = NodeKey::adopt(key.kernel_key(), foreign.der()).unwrap_err();
    assert!(matches!(err, KeyError::BadKeyMaterial { .. }), "{err}");
    let err = NodeKey::adopt(key.kernel_key(), &CertificateDer::from(vec![1u8, 2, 3])).unwrap_err();
    assert!(matches!(err, KeyError::CertificateMismatch(_)), "{err}");
    assert!(key.kernel_key().describe().is_ok());
    // The adopted handle signs for the certificate, and makes a working rustls identity.
    let adopted = NodeKey::adopt(key.kernel_key(), own.der()).unwrap();
    assert_eq!(adopted.mode(), KeyMode::EcdsaP256);
    assert_eq!(adopted.public_key_spki(), key.public_key_spki());
    let certified = adopted.into_certified_key(vec![own.der().clone()]).unwrap();
    assert!(certified.keys_match().is_ok());
}

#[test]
fn ecdsa_check_passes_end_to_end_on_the_host() {
    // The check scans the whole process's memory for the key: run it in a process of its own,
    // away from the threads of other tests (their buffers made the scan flaky).
    const ISOLATED: &str = "TESSERA_TEST_ISOLATED";
    if std::env::var_os(ISOLATED).is_none() {
        let exe = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new(exe)
            .args([
                "keys::tests::ecdsa_check_passes_end_to_end_on_the_host",
                "--exact",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(ISOLATED, "1")
            .output()
            .expect("run the check in its own process");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "the isolated run did not run the test"
        );
        return;
    }
    let report = check(KeyMode::EcdsaP256).expect("check");
    assert_eq!(report.tls_version, "TLSv1_3");
    assert_eq!(report.handshake_scheme, "ECDSA_NISTP256_SHA256");
    assert_eq!(report.read_by_owner, ReadOutcome::Allowed);
    assert_eq!(
        report.read_by_non_possessor,
        ReadOutcome::Refused(libc::EACCES)
    );
    assert!(report.removed);
    assert!(report.memory.hits.is_empty(), "{:?}", report.memory);
    assert!(report.memory.scanned_bytes > 0);
    let text = report.to_string();
    let last = text.lines().last().unwrap();
    assert!(
        last.starts_with("IDENTITY-CHECK mode=ecdsa-p256 result=ok handshake=ok"),
        "{last}"
    );
    println!("{text}");
}

#[test]
fn kernel_rsa_without_the_pkcs8_parser_fails_with_the_fix() {
    if kernel_takes_pkcs8_rsa() {
        // This kernel has the parser: the full check must pass instead.
        let report = check(KeyMode::KernelRsa).expect("check");
        assert_eq!(report.read_by_owner, ReadOutcome::Refused(libc::EOPNOTSUPP));
        assert_eq!(report.handshake_scheme, "RSA_PSS_SHA256");
        println!("{report}");
        return;
    }
    let ring = Scratch::new("tessera-test-keys-rsa");
    let err = KernelRsaKey::generate(&ring.0).unwrap_err();
    assert!(
        matches!(&err, KeyError::Load { source, .. } if source.errno() == Some(libc::EBADMSG)),
        "{err}"
    );
    assert!(err.to_string().contains("pkcs8_key_parser"), "{err}");
}

#[test]
fn memory_scan_sees_a_live_pkcs8_and_nothing_once_it_is_dropped() {
    let new = ecdsa::generate().unwrap();
    let mut needles = exposure::Needles::new();
    check::ecdsa_needles(new.pkcs8(), &mut needles);
    assert!(!needles.is_empty());
    let live = exposure::scan(&needles).unwrap();
    assert!(!live.hits.is_empty(), "the live PKCS#8 must be found");
    drop(new);
    let after = exposure::scan(&needles).unwrap();
    if !after.hits.is_empty() {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        for h in &after.hits {
            for l in maps.lines() {
                let (r, _) = l.split_once(' ').unwrap();
                let (a, b) = r.split_once('-').unwrap();
                let (a, b) = (
                    usize::from_str_radix(a, 16).unwrap(),
                    usize::from_str_radix(b, 16).unwrap(),
                );
                if a <= h.address && h.address < b {
                    eprintln!(
                        "DEBUG hit {:#x} in {l} size {}K offset {:#x} sp~{:#x}",
                        h.address,
                        (b - a) / 1024,
                        h.address - a,
                        &maps as *const _ as usize
                    );
                }
            }
        }
    }
    assert!(after.hits.is_empty(), "{after:?}");
}

#[test]
fn rsa_generated_in_a_child_leaves_no_copy_of_the_secret() {
    // The test harness is multi-threaded, which generate() avoids forking; the child here
    // only generates and writes, which glibc's fork handlers make safe enough for a test.
    let new = kernel_rsa::generate_isolated().unwrap();
    let mut needles = exposure::Needles::new();
    check::rsa_needles(new.pkcs8(), &mut needles);
    assert!(!needles.is_empty());
    let live = exposure::scan(&needles).unwrap();
    assert!(!live.hits.is_empty(), "the locked DER is found while alive");
    drop(new);
    let after = exposure::scan(&needles).unwrap();
    assert!(after.hits.is_empty(), "{after:?}");
}

#[test]
fn rsa_generated_in_process_has_the_public_key_of_its_der() {
    use rsa::pkcs8::DecodePrivateKey;
    let new = kernel_rsa::generate_in_process().unwrap();
    let private = rsa::PrivateKey::from_pkcs8_der(new.pkcs8()).unwrap();
    let spki_from_der = {
        use rsa::pkcs1::EncodeRsaPublicKey;
        private
            .to_public_key()
            .to_pkcs1_der()
            .unwrap()
            .as_bytes()
            .to_vec()
    };
    assert_eq!(new.public_der(), spki_from_der.as_slice());
    assert_eq!(new.mod_bits(), 2048);
}

#[test]
fn probe_key_is_pkcs8_rsa() {
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::PublicKeyParts;
    let probe = rsa::PrivateKey::from_pkcs8_der(PROBE_PKCS8).expect("the probe key must be PKCS#8");
    assert_eq!(probe.n().as_ref().bit_width(), 1024);
}
