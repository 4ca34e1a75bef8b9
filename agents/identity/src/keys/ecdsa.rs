//! `ecdsa-p256`: an ECDSA P-256 key kept in the kernel as a possessor-only `user` key, and
//! in this process only while it signs.
//!
//! What the kernel allows (checked on the host's 6.18 and Debian's 6.1): a `logon` key can
//! never be read back from userspace (KEYCTL_READ fails with EOPNOTSUPP), so a key this
//! process must sign with in userspace cannot live there. A `user` key can be read, but only
//! as its permission mask allows: this one grants view, read, search and setattr to
//! possessors (threads that reach it through the keyring it was added to, normally the
//! process keyring) and nothing to anyone else, so another process of the same UID, or a
//! fork(2) child (which does not inherit the process keyring), gets EACCES. Between add_key
//! and the permission change the kernel's default mask gives non-possessors view only.
//!
//! To sign, the PKCS#8 bytes are read into a locked, not-dumped buffer, parsed into a
//! `p256` signing key (zeroized on drop), used once, and everything is zeroized. The key is
//! generated with `p256` rather than ring because ring's `pkcs8::Document` and
//! `EcdsaKeyPair` keep the private scalar in memory that cannot be zeroized.

use super::memory::{scrub_stack, LockedBuf};
use super::rng::SystemRng;
use super::{fingerprint, spki_der, KeyError};
use crate::keyring::{Key, Keyring, Perm, Permissions};
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{DerSignature, SigningKey as P256SigningKey};
use p256::elliptic_curve::Generate;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, SecretDocument};
use rustls::pki_types::SubjectPublicKeyInfoDer;
use rustls::{SignatureAlgorithm, SignatureScheme};
use std::sync::Arc;

/// The kernel key type the ECDSA key is stored as.
pub const ECDSA_KEY_TYPE: &str = "user";

/// Possessors may view, read (to sign), search (to find and invalidate) and set attributes
/// (timeout, revoke); user, group and other get nothing.
pub fn ecdsa_permissions() -> Permissions {
    Permissions::possessor_only(Perm::VIEW | Perm::READ | Perm::SEARCH | Perm::SETATTR)
}

/// An ECDSA P-256 private key held in the kernel keyring. Clones share the kernel key, which
/// is invalidated when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct EcdsaP256Key {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    key: Key,
    /// Uncompressed SEC1 point (65 bytes).
    public_point: Vec<u8>,
    spki: Vec<u8>,
    /// Invalidate the kernel key with the last handle: false only while an adoption is still
    /// being checked, so that a failed one leaves the key as it was.
    owned: bool,
    pkcs8_len: usize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Best effort: the key may already be gone with its keyring.
        if self.owned {
            let _ = self.key.invalidate();
        }
    }
}

impl EcdsaP256Key {
    /// Generates a key and moves it into `keyring`; no copy of it stays in this process.
    pub fn generate(keyring: &Keyring) -> Result<EcdsaP256Key, KeyError> {
        EcdsaP256Key::load(keyring, generate()?)
    }

    /// Stores the new key (its PKCS#8 zeroized when dropped here) as a possessor-only
    /// `user` key.
    pub(crate) fn load(keyring: &Keyring, new: NewEcdsaKey) -> Result<EcdsaP256Key, KeyError> {
        let NewEcdsaKey {
            pkcs8,
            public_point,
        } = new;
        let spki = spki_der(&public_point, &rcgen::PKCS_ECDSA_P256_SHA256);
        let description = format!("tessera:ecdsa-p256:{}", fingerprint(&spki));
        let key = keyring
            .add(ECDSA_KEY_TYPE, &description, pkcs8.as_bytes())
            .map_err(|source| KeyError::Load {
                what: "ECDSA P-256",
                source,
            })?;
        let pkcs8_len = pkcs8.as_bytes().len();
        drop(pkcs8);
        let inner = Inner {
            key,
            public_point,
            spki,
            pkcs8_len,
            owned: true,
        };
        key.set_perm(ecdsa_permissions())
            .map_err(KeyError::Permissions)?;
        Ok(EcdsaP256Key {
            inner: Arc::new(inner),
        })
    }

    /// Takes over a P-256 key the kernel already holds in this process's keyrings (a child's,
    /// instantiated by the request-key callout) for the certificate whose public key is
    /// `public_point` (uncompressed SEC1): every signature checks the stored key against it.
    pub fn adopt(key: Key, public_point: &[u8]) -> Result<EcdsaP256Key, KeyError> {
        let pkcs8_len = key.read_into(&mut []).map_err(KeyError::Read)?;
        let inner = Inner {
            key,
            public_point: public_point.to_vec(),
            spki: spki_der(public_point, &rcgen::PKCS_ECDSA_P256_SHA256),
            pkcs8_len,
            owned: false,
        };
        let ecdsa = EcdsaP256Key {
            inner: Arc::new(inner),
        };
        // A first signature proves the pair now rather than in the middle of a handshake.
        ecdsa.sign(b"tessera: adopting a kernel-held key")?;
        Ok(EcdsaP256Key {
            inner: super::take_ownership(ecdsa.inner, |i| i.owned = true),
        })
    }

    /// The kernel key holding the private key.
    pub fn kernel_key(&self) -> Key {
        self.inner.key
    }

    /// SubjectPublicKeyInfo DER (id-ecPublicKey, prime256v1).
    pub fn public_key_spki(&self) -> &[u8] {
        &self.inner.spki
    }

    /// ECDSA-P256-SHA256 over `msg`, ASN.1 DER encoded (what TLS and X.509 carry).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        let signed = self.sign_once(msg);
        scrub_stack();
        signed
    }

    fn sign_once(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        let inner = &self.inner;
        let mut buf =
            LockedBuf::new(inner.pkcs8_len).map_err(|source| KeyError::Lock { source })?;
        let n = inner
            .key
            .read_into(buf.as_mut_slice())
            .map_err(KeyError::Read)?;
        let bad = |reason: String| KeyError::BadKeyMaterial {
            serial: inner.key.serial(),
            reason,
        };
        if n != inner.pkcs8_len {
            return Err(bad(format!("{n} bytes, expected {}", inner.pkcs8_len)));
        }
        let signing =
            P256SigningKey::from_pkcs8_der(buf.as_slice()).map_err(|e| bad(e.to_string()))?;
        drop(buf);
        if signing.verifying_key().to_sec1_point(false).as_bytes() != inner.public_point.as_slice()
        {
            return Err(bad(
                "its public key differs from the one this handle was made for".into(),
            ));
        }
        let signature: DerSignature = signing
            .try_sign(msg)
            .map_err(|e| KeyError::Sign(e.to_string()))?;
        Ok(signature.as_bytes().to_vec())
    }

    /// This key with its certificate chain (end entity first), for a rustls config.
    pub fn into_certified_key(
        self,
        cert_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    ) -> Result<Arc<rustls::sign::CertifiedKey>, KeyError> {
        super::certified(Arc::new(self), cert_chain)
    }
}

/// A freshly generated key: PKCS#8 DER (zeroized on drop) and its public point.
pub(crate) struct NewEcdsaKey {
    pkcs8: SecretDocument,
    public_point: Vec<u8>,
}

impl NewEcdsaKey {
    /// The PKCS#8 DER (for the diagnostic's memory scan).
    pub(crate) fn pkcs8(&self) -> &[u8] {
        self.pkcs8.as_bytes()
    }
}

/// A new P-256 key; the `p256` signing key is zeroized when it goes out of scope, and the
/// stack it was computed on is scrubbed.
pub(crate) fn generate() -> Result<NewEcdsaKey, KeyError> {
    let new = generate_on_stack();
    scrub_stack();
    new
}

fn generate_on_stack() -> Result<NewEcdsaKey, KeyError> {
    let signing = P256SigningKey::try_generate_from_rng(&mut SystemRng::new())?;
    let pkcs8 = signing.to_pkcs8_der().map_err(|e| KeyError::Encode {
        what: "ECDSA P-256",
        reason: e.to_string(),
    })?;
    let public_point = signing
        .verifying_key()
        .to_sec1_point(false)
        .as_bytes()
        .to_vec();
    Ok(NewEcdsaKey {
        pkcs8,
        public_point,
    })
}

impl rcgen::PublicKeyData for EcdsaP256Key {
    fn der_bytes(&self) -> &[u8] {
        &self.inner.public_point
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// CSRs and certificates signed through the kernel-held key.
impl rcgen::SigningKey for EcdsaP256Key {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        EcdsaP256Key::sign(self, msg).map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

impl rustls::sign::SigningKey for EcdsaP256Key {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(EcdsaSigner(self.clone())) as Box<dyn rustls::sign::Signer>)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.inner.spki.as_slice()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

#[derive(Debug)]
struct EcdsaSigner(EcdsaP256Key);

impl rustls::sign::Signer for EcdsaSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.0
            .sign(message)
            .map_err(|e| rustls::Error::General(e.to_string()))
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::ScratchKeyring;

    fn handle_for(key: Key, like: &EcdsaP256Key) -> EcdsaP256Key {
        EcdsaP256Key {
            inner: Arc::new(Inner {
                key,
                public_point: like.inner.public_point.clone(),
                spki: like.inner.spki.clone(),
                pkcs8_len: like.inner.pkcs8_len,
                owned: true,
            }),
        }
    }

    #[test]
    fn another_key_or_garbage_in_the_kernel_key_is_refused() {
        let ring = ScratchKeyring::new("tessera-test-ecdsa-swap");
        let real = EcdsaP256Key::generate(&ring.0).unwrap();
        let other = EcdsaP256Key::generate(&ring.0).unwrap();
        let swapped = handle_for(other.kernel_key(), &real);
        let err = swapped.sign(b"x").unwrap_err();
        assert!(err.to_string().contains("public key differs"), "{err}");

        let garbage = ring
            .0
            .add(
                "user",
                "tessera-test:garbage",
                &vec![0u8; real.inner.pkcs8_len],
            )
            .unwrap();
        let err = handle_for(garbage, &real).sign(b"x").unwrap_err();
        assert!(matches!(err, KeyError::BadKeyMaterial { .. }), "{err}");

        let short = ring.0.add("user", "tessera-test:short", b"abc").unwrap();
        let err = handle_for(short, &real).sign(b"x").unwrap_err();
        assert!(err.to_string().contains("3 bytes"), "{err}");
        // The real key still signs.
        real.sign(b"x").unwrap();
    }
}
