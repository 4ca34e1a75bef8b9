//! Private keys the agent process cannot read back (agents/README.md, "Keys"; thesis §4.9.6).
//!
//! Two modes:
//! - [`KeyMode::KernelRsa`]: RSA-2048 held by the kernel as an `asymmetric` key; signatures are
//!   encoded in userspace and the private operation runs in the kernel ([`KernelRsaKey`]).
//! - [`KeyMode::EcdsaP256`]: P-256 held by the kernel as a possessor-only `user` key, read into
//!   locked, zeroized memory only while signing ([`EcdsaP256Key`]).
//!
//! The default is [`KeyMode::detect`]: kernel-rsa wherever the kernel accepts a PKCS#8 RSA key
//! (Debian's kernel with `pkcs8_key_parser`), because then no copy of the private key exists in
//! the process at all after generation; ecdsa-p256 elsewhere.
//!
//! Both key types sign X.509 CSRs and certificates through rcgen's `SigningKey` trait and TLS
//! handshakes through rustls's `SigningKey`, so the private key never leaves its store for
//! either. [`check`] proves all of it on the running kernel. This module never writes a key to
//! a file, argv or the environment, and holds no state beyond the kernel keys it made.

mod check;
mod ecdsa;
mod emsa;
mod error;
mod exposure;
mod isolated;
mod kernel_rsa;
mod memory;
mod rng;

pub use check::{check, CheckError, CheckReport};
pub use ecdsa::{ecdsa_permissions, EcdsaP256Key, ECDSA_KEY_TYPE};
pub use emsa::EncodingError;
pub use error::KeyError;
pub use exposure::{Hit, ReadOutcome, ScanReport};
pub use kernel_rsa::{rsa_permissions, KernelRsaKey, RSA_BITS, RSA_KEY_TYPE};
pub use rng::RngError;

use crate::keyring::{Key, Keyring};

const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
use rustls::pki_types::{CertificateDer, SubjectPublicKeyInfoDer};
use rustls::sign::CertifiedKey;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Where a node's private key lives and how it signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyMode {
    /// RSA-2048 in the kernel (`asymmetric` key from PKCS#8): unreadable by the process.
    KernelRsa,
    /// ECDSA P-256 in a possessor-only `user` key, in locked memory only while signing.
    EcdsaP256,
}

/// The outcome of [`KeyMode::detect_with_reason`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detection {
    pub mode: KeyMode,
    pub reason: String,
}

/// A throwaway RSA-1024 key, public knowledge and never used to sign anything: loading it
/// tells whether the kernel can hold PKCS#8 RSA keys, without generating a real key.
const PROBE_PKCS8: &[u8] = include_bytes!("probe-rsa-1024.pk8");

impl KeyMode {
    pub const ALL: [KeyMode; 2] = [KeyMode::KernelRsa, KeyMode::EcdsaP256];

    pub fn name(self) -> &'static str {
        match self {
            KeyMode::KernelRsa => "kernel-rsa",
            KeyMode::EcdsaP256 => "ecdsa-p256",
        }
    }

    /// kernel-rsa if the `asymmetric` key type accepts a PKCS#8 RSA key (loading
    /// `pkcs8_key_parser` with `/sbin/modprobe` first if it does not), else ecdsa-p256.
    pub fn detect() -> KeyMode {
        KeyMode::detect_with_reason().mode
    }

    /// [`KeyMode::detect`] with a sentence saying why.
    pub fn detect_with_reason() -> Detection {
        let keyring = match Keyring::process() {
            Ok(k) => k,
            Err(e) => {
                return Detection {
                    mode: KeyMode::EcdsaP256,
                    reason: format!("no process keyring: {e}"),
                }
            }
        };
        let mut outcome = probe_kernel_rsa(&keyring);
        let mut modprobe = None;
        if outcome
            .as_ref()
            .is_err_and(|e| e.errno() == Some(libc::EBADMSG))
        {
            modprobe = Some(load_pkcs8_parser());
            outcome = probe_kernel_rsa(&keyring);
        }
        match outcome {
            Ok(()) => Detection {
                mode: KeyMode::KernelRsa,
                reason: "the kernel's asymmetric key type accepts PKCS#8 RSA keys and does the raw private operation".into(),
            },
            Err(e) => Detection {
                mode: KeyMode::EcdsaP256,
                reason: match modprobe {
                    Some(Err(why)) => format!("the kernel cannot hold a PKCS#8 RSA key ({e}; {why})"),
                    _ => format!("the kernel cannot hold a PKCS#8 RSA key ({e})"),
                },
            },
        }
    }
}

/// Loads the kernel's PKCS#8 key parser with `/sbin/modprobe` (tessera's own on a node, kmod
/// elsewhere). The asymmetric key type does not ask for parser modules by itself.
pub(crate) fn load_pkcs8_parser() -> Result<(), String> {
    let output = std::process::Command::new("/sbin/modprobe")
        .args(["-q", "--", "pkcs8_key_parser"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("running /sbin/modprobe pkcs8_key_parser failed: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "/sbin/modprobe pkcs8_key_parser: {} {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Adds the probe key, asks for the raw private operation, removes it.
fn probe_kernel_rsa(keyring: &Keyring) -> Result<(), crate::keyring::KeyringError> {
    let key = keyring.add(RSA_KEY_TYPE, "tessera:probe-rsa", PROBE_PKCS8)?;
    let query = key.pkey_query("enc=raw");
    let _ = key.invalidate();
    let query = query?;
    if query.supports(crate::keyring::PkeyQuery::SUPPORTS_DECRYPT) {
        Ok(())
    } else {
        Err(crate::keyring::KeyringError::Syscall {
            op: "KEYCTL_PKEY_QUERY",
            source: std::io::Error::from_raw_os_error(libc::EOPNOTSUPP),
            hint: "the key does not offer the raw private operation (decrypt)",
        })
    }
}

impl fmt::Display for KeyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown key mode name.
#[derive(Debug, thiserror::Error)]
#[error("unknown key mode {0:?}: use kernel-rsa or ecdsa-p256")]
pub struct UnknownKeyMode(pub String);

impl FromStr for KeyMode {
    type Err = UnknownKeyMode;
    fn from_str(s: &str) -> Result<KeyMode, UnknownKeyMode> {
        KeyMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownKeyMode(s.to_string()))
    }
}

/// A node's private key in either mode. Clones share the kernel key.
#[derive(Clone, Debug)]
pub enum NodeKey {
    KernelRsa(KernelRsaKey),
    EcdsaP256(EcdsaP256Key),
}

impl NodeKey {
    /// Generates a key of `mode` into `keyring` (normally [`Keyring::process`]).
    pub fn generate(mode: KeyMode, keyring: &Keyring) -> Result<NodeKey, KeyError> {
        Ok(match mode {
            KeyMode::KernelRsa => NodeKey::KernelRsa(KernelRsaKey::generate(keyring)?),
            KeyMode::EcdsaP256 => NodeKey::EcdsaP256(EcdsaP256Key::generate(keyring)?),
        })
    }

    /// Takes over the private key `key` (already in this process's keyrings) for the end-entity
    /// certificate `leaf`; its mode follows the certificate's public-key algorithm. Fails when
    /// the kernel key does not sign for that public key.
    pub fn adopt(key: Key, leaf: &CertificateDer<'_>) -> Result<NodeKey, KeyError> {
        use x509_parser::prelude::FromDer;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(leaf)
            .map_err(|e| KeyError::CertificateMismatch(format!("unreadable certificate: {e}")))?;
        let spki = &cert.tbs_certificate.subject_pki;
        let public = spki.subject_public_key.data.as_ref();
        match spki.algorithm.algorithm.to_id_string().as_str() {
            OID_RSA_ENCRYPTION => Ok(NodeKey::KernelRsa(KernelRsaKey::adopt(key, public)?)),
            OID_EC_PUBLIC_KEY => Ok(NodeKey::EcdsaP256(EcdsaP256Key::adopt(key, public)?)),
            other => Err(KeyError::CertificateMismatch(format!(
                "public-key algorithm {other} is neither RSA nor ECDSA P-256"
            ))),
        }
    }

    pub fn mode(&self) -> KeyMode {
        match self {
            NodeKey::KernelRsa(_) => KeyMode::KernelRsa,
            NodeKey::EcdsaP256(_) => KeyMode::EcdsaP256,
        }
    }

    /// The kernel key holding the private key.
    pub fn kernel_key(&self) -> Key {
        match self {
            NodeKey::KernelRsa(k) => k.kernel_key(),
            NodeKey::EcdsaP256(k) => k.kernel_key(),
        }
    }

    /// SubjectPublicKeyInfo DER.
    pub fn public_key_spki(&self) -> &[u8] {
        match self {
            NodeKey::KernelRsa(k) => k.public_key_spki(),
            NodeKey::EcdsaP256(k) => k.public_key_spki(),
        }
    }

    /// This key with its certificate chain (end entity first), for a rustls config. Fails if
    /// the end-entity certificate is not for this key.
    pub fn into_certified_key(
        self,
        cert_chain: Vec<CertificateDer<'static>>,
    ) -> Result<Arc<CertifiedKey>, KeyError> {
        match self {
            NodeKey::KernelRsa(k) => k.into_certified_key(cert_chain),
            NodeKey::EcdsaP256(k) => k.into_certified_key(cert_chain),
        }
    }
}

impl rcgen::PublicKeyData for NodeKey {
    fn der_bytes(&self) -> &[u8] {
        match self {
            NodeKey::KernelRsa(k) => k.der_bytes(),
            NodeKey::EcdsaP256(k) => k.der_bytes(),
        }
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            NodeKey::KernelRsa(k) => rcgen::PublicKeyData::algorithm(k),
            NodeKey::EcdsaP256(k) => rcgen::PublicKeyData::algorithm(k),
        }
    }
}

impl rcgen::SigningKey for NodeKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            NodeKey::KernelRsa(k) => rcgen::SigningKey::sign(k, msg),
            NodeKey::EcdsaP256(k) => rcgen::SigningKey::sign(k, msg),
        }
    }
}

impl rustls::sign::SigningKey for NodeKey {
    fn choose_scheme(
        &self,
        offered: &[rustls::SignatureScheme],
    ) -> Option<Box<dyn rustls::sign::Signer>> {
        match self {
            NodeKey::KernelRsa(k) => k.choose_scheme(offered),
            NodeKey::EcdsaP256(k) => k.choose_scheme(offered),
        }
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.public_key_spki()))
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        match self {
            NodeKey::KernelRsa(k) => rustls::sign::SigningKey::algorithm(k),
            NodeKey::EcdsaP256(k) => rustls::sign::SigningKey::algorithm(k),
        }
    }
}

/// SubjectPublicKeyInfo DER as rcgen writes it into CSRs and certificates.
fn spki_der(public: &[u8], algorithm: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
    struct Public<'a>(&'a [u8], &'static rcgen::SignatureAlgorithm);
    impl rcgen::PublicKeyData for Public<'_> {
        fn der_bytes(&self) -> &[u8] {
            self.0
        }
        fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
            self.1
        }
    }
    rcgen::PublicKeyData::subject_public_key_info(&Public(public, algorithm))
}

/// First 8 bytes of SHA-256 of the SPKI, in hex: names the kernel key.
fn fingerprint(spki: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, spki);
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `inner` with `mark` applied; adoption holds the only handle, so it is unwrapped in place.
fn take_ownership<T>(inner: Arc<T>, mark: impl FnOnce(&mut T)) -> Arc<T> {
    let mut inner = inner;
    if let Some(i) = Arc::get_mut(&mut inner) {
        mark(i);
    }
    inner
}

fn certified(
    key: Arc<dyn rustls::sign::SigningKey>,
    cert_chain: Vec<CertificateDer<'static>>,
) -> Result<Arc<CertifiedKey>, KeyError> {
    let certified = CertifiedKey::new(cert_chain, key);
    certified
        .keys_match()
        .map_err(|e| KeyError::CertificateMismatch(e.to_string()))?;
    Ok(Arc::new(certified))
}

#[cfg(test)]
mod tests;
