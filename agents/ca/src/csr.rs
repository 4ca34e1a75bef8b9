//! CSR policy: the only thing the CA takes from a CSR is its public key, and only after the
//! CSR's self-signature proves the requester holds the private key.
//!
//! Accepted keys: ECDSA P-256, RSA 2048/3072/4096. Accepted CSR signatures: ECDSA with
//! SHA-256/384 for P-256; RSA PKCS#1 v1.5 with SHA-256/384/512, and RSA-PSS with SHA-256
//! (MGF1-SHA-256, 32-byte salt). The subject, SANs, extensions and attributes of the CSR are
//! ignored: the subject comes from the token binding or the presented certificate.

use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateSigningRequestDer;
use x509_parser::oid_registry::{
    Oid, OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_HASH_SHA256, OID_PKCS1_RSAENCRYPTION,
    OID_PKCS1_RSASSAPSS, OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA, OID_PKCS1_SHA512WITHRSA,
    OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384,
};
use x509_parser::prelude::{FromDer, X509CertificationRequest};
use x509_parser::public_key::PublicKey;
use x509_parser::signature_algorithm::RsaSsaPssParams;

use crate::error::{ApiError, Code};

/// Longest CSR PEM accepted (an RSA-4096 CSR is about 1.7 KB).
pub const MAX_CSR_PEM: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    EcdsaP256,
    Rsa(usize),
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyKind::EcdsaP256 => f.write_str("ecdsa-p256"),
            KeyKind::Rsa(bits) => write!(f, "rsa-{bits}"),
        }
    }
}

/// A CSR whose signature verified: its public key, ready to be certified.
#[derive(Debug)]
pub struct VerifiedKey {
    pub kind: KeyKind,
    pub spki: rcgen::SubjectPublicKeyInfo,
}

fn invalid(why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        Code::CsrInvalid,
        format!("the CSR cannot be read: {why}; send a PEM \"CERTIFICATE REQUEST\" (PKCS#10) as csr_pem"),
    )
}

fn key_type(why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        Code::CsrKeyType,
        format!("{why}; use an ECDSA P-256 or an RSA 2048/3072/4096 key"),
    )
}

/// Bit length of an RSA modulus (big-endian, possibly with a leading zero byte).
fn modulus_bits(modulus: &[u8]) -> usize {
    let m: &[u8] = &modulus[modulus.iter().take_while(|b| **b == 0).count()..];
    match m.first() {
        Some(first) => m.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

/// Parses and verifies a PEM CSR and applies the key policy.
pub fn verify_pem(pem: &str) -> Result<VerifiedKey, ApiError> {
    if pem.len() > MAX_CSR_PEM {
        return Err(invalid(format!(
            "it is {} bytes (at most {MAX_CSR_PEM})",
            pem.len()
        )));
    }
    let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| invalid(format!("no PEM CERTIFICATE REQUEST block ({e})")))?;
    verify_der(&der)
}

pub fn verify_der(der: &[u8]) -> Result<VerifiedKey, ApiError> {
    let (rest, csr) = X509CertificationRequest::from_der(der).map_err(invalid)?;
    if !rest.is_empty() {
        return Err(invalid("trailing bytes after the CSR"));
    }
    let info = &csr.certification_request_info;
    let spki = &info.subject_pki;
    let kind = match spki.parsed() {
        Ok(PublicKey::EC(_)) if spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            if curve.as_ref() != Some(&OID_EC_P256) {
                return Err(key_type(format!(
                    "the CSR's EC key is on curve {}, not P-256",
                    curve
                        .map(|c| c.to_id_string())
                        .unwrap_or_else(|| "?".into())
                )));
            }
            KeyKind::EcdsaP256
        }
        Ok(PublicKey::RSA(rsa)) if spki.algorithm.algorithm == OID_PKCS1_RSAENCRYPTION => {
            let bits = modulus_bits(rsa.modulus);
            if ![2048, 3072, 4096].contains(&bits) {
                return Err(key_type(format!("the CSR's RSA key has {bits} bits")));
            }
            KeyKind::Rsa(bits)
        }
        Ok(_) => {
            return Err(key_type(format!(
                "the CSR's key type {} is not accepted",
                spki.algorithm.algorithm.to_id_string()
            )))
        }
        Err(e) => return Err(invalid(format!("its public key: {e}"))),
    };

    let sig_alg = &csr.signature_algorithm;
    let algorithm: &'static dyn VerificationAlgorithm = match kind {
        KeyKind::EcdsaP256 => {
            if sig_alg.algorithm == OID_SIG_ECDSA_WITH_SHA256 {
                &signature::ECDSA_P256_SHA256_ASN1
            } else if sig_alg.algorithm == OID_SIG_ECDSA_WITH_SHA384 {
                &signature::ECDSA_P256_SHA384_ASN1
            } else {
                return Err(unsupported_signature(&sig_alg.algorithm));
            }
        }
        KeyKind::Rsa(_) => {
            if sig_alg.algorithm == OID_PKCS1_SHA256WITHRSA {
                &signature::RSA_PKCS1_2048_8192_SHA256
            } else if sig_alg.algorithm == OID_PKCS1_SHA384WITHRSA {
                &signature::RSA_PKCS1_2048_8192_SHA384
            } else if sig_alg.algorithm == OID_PKCS1_SHA512WITHRSA {
                &signature::RSA_PKCS1_2048_8192_SHA512
            } else if sig_alg.algorithm == OID_PKCS1_RSASSAPSS {
                check_pss_sha256(sig_alg.parameters.as_ref())?;
                &signature::RSA_PSS_2048_8192_SHA256
            } else {
                return Err(unsupported_signature(&sig_alg.algorithm));
            }
        }
    };
    UnparsedPublicKey::new(algorithm, spki.subject_public_key.data.as_ref())
        .verify(info.raw, csr.signature_value.data.as_ref())
        .map_err(|_| {
            ApiError::new(
                Code::CsrSignature,
                "the CSR's signature does not verify with its own public key (corrupted, or not signed by the key it carries); generate the CSR again with the key you will use",
            )
        })?;

    let spki = rcgen::SubjectPublicKeyInfo::from_der(spki.raw)
        .map_err(|e| invalid(format!("its public key cannot be certified: {e}")))?;
    Ok(VerifiedKey { kind, spki })
}

fn unsupported_signature(oid: &Oid<'_>) -> ApiError {
    key_type(format!(
        "the CSR is signed with algorithm {}, which is not accepted (ECDSA with SHA-256/384, RSA PKCS#1 v1.5 with SHA-256/384/512 or RSA-PSS with SHA-256 are)",
        oid.to_id_string()
    ))
}

/// RSA-PSS is accepted with SHA-256, MGF1-SHA-256 and a 32-byte salt (what ring verifies).
fn check_pss_sha256(
    params: Option<&x509_parser::der_parser::asn1_rs::Any<'_>>,
) -> Result<(), ApiError> {
    let bad = || unsupported_signature(&OID_PKCS1_RSASSAPSS);
    let params = RsaSsaPssParams::try_from(params.ok_or_else(bad)?).map_err(|_| bad())?;
    let mgf = params.mask_gen_algorithm().map_err(|_| bad())?;
    if *params.hash_algorithm_oid() != OID_NIST_HASH_SHA256
        || mgf.hash != OID_NIST_HASH_SHA256
        || params.salt_length() != 32
    {
        return Err(key_type(
            "the CSR is signed with RSA-PSS parameters other than SHA-256/MGF1-SHA-256/salt 32",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, PublicKeyData};

    fn csr_with_subject(key: &KeyPair) -> String {
        let mut p = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        p.distinguished_name.push(DnType::OrganizationName, "admin");
        p.serialize_request(key).unwrap().pem().unwrap()
    }

    #[test]
    fn p256_csr_is_accepted_and_only_its_key_kept() {
        let key = KeyPair::generate().unwrap();
        let v = verify_pem(&csr_with_subject(&key)).unwrap();
        assert_eq!(v.kind, KeyKind::EcdsaP256);
        assert_eq!(v.spki.der_bytes(), key.der_bytes());
    }

    #[test]
    fn csr_with_bad_signature_is_refused() {
        let key = KeyPair::generate().unwrap();
        let pem = csr_with_subject(&key);
        let mut der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec();
        // Flip a bit inside the signed part (the subject): the signature no longer matches.
        let at = der.windows(5).position(|w| w == b"admin").unwrap();
        der[at] ^= 0x01;
        let e = verify_der(&der).unwrap_err();
        assert_eq!(e.code, Code::CsrSignature, "{}", e.reason);
    }

    #[test]
    fn p384_and_ed25519_keys_are_refused() {
        for alg in [&rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
            let key = KeyPair::generate_for(alg).unwrap();
            let e = verify_pem(&csr_with_subject(&key)).unwrap_err();
            assert_eq!(e.code, Code::CsrKeyType, "{}", e.reason);
            assert!(e.reason.contains("ECDSA P-256"), "{}", e.reason);
        }
    }

    #[test]
    fn garbage_is_refused_as_invalid() {
        for garbage in [
            "",
            "hello",
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            "-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n",
        ] {
            let e = verify_pem(garbage).unwrap_err();
            assert_eq!(e.code, Code::CsrInvalid, "{garbage:?}: {}", e.reason);
        }
        assert_eq!(
            verify_pem(&"A".repeat(MAX_CSR_PEM + 1)).unwrap_err().code,
            Code::CsrInvalid
        );
        assert_eq!(
            verify_der(&[0x30, 0x03, 0x02, 0x01, 0x00])
                .unwrap_err()
                .code,
            Code::CsrInvalid
        );
    }

    #[test]
    fn modulus_bits_ignores_the_sign_byte() {
        let mut m = vec![0u8];
        m.extend(vec![0xffu8; 256]);
        assert_eq!(modulus_bits(&m), 2048);
        assert_eq!(modulus_bits(&[0x01, 0x00]), 9);
    }

    /// RSA CSRs (ring cannot generate RSA keys) made once with openssl, checked in under
    /// tests/data: `openssl req -new -newkey rsa:N -nodes -subj /CN=x [-sigopt rsa_padding_mode:pss …]`.
    #[test]
    fn rsa_csrs_from_openssl_follow_the_size_policy() {
        let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
        for (file, expect) in [
            ("rsa2048.csr", Ok(KeyKind::Rsa(2048))),
            ("rsa3072.csr", Ok(KeyKind::Rsa(3072))),
            ("rsa4096.csr", Ok(KeyKind::Rsa(4096))),
            ("rsa2048-pss.csr", Ok(KeyKind::Rsa(2048))),
            ("rsa1024.csr", Err(Code::CsrKeyType)),
            ("rsa2048-sha1.csr", Err(Code::CsrKeyType)),
            ("p256-openssl.csr", Ok(KeyKind::EcdsaP256)),
        ] {
            let pem = std::fs::read_to_string(format!("{data}/{file}")).unwrap();
            let got = verify_pem(&pem).map(|v| v.kind).map_err(|e| e.code);
            assert_eq!(got, expect, "{file}");
        }
    }
}
