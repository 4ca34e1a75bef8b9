//! `kernel-rsa`: an RSA-2048 key that lives only in the kernel, as an `asymmetric` key loaded
//! from PKCS#8 (the `pkcs8_key_parser` module). A throwaway child process generates it (see
//! `isolated`), this process hands the DER to add_key(2) from locked memory and zeroizes it;
//! from then on it cannot read the key back
//! (the asymmetric type has no read operation: KEYCTL_READ fails with EOPNOTSUPP), and only
//! possessors may use it (permission mask: view, search, setattr for possessors only).
//!
//! Signing: the message is hashed and encoded in userspace (EMSA-PSS for TLS, EMSA-PKCS1-v1_5
//! for X.509), then KEYCTL_PKEY_DECRYPT with `enc=raw` computes m^d mod n in the kernel.
//! Debian's 6.1 refuses KEYCTL_PKEY_SIGN with `enc=raw`, and its `enc=pkcs1` cannot do PSS.
//!
//! The key is generated with the `rsa` crate (RustCrypto, pure Rust, constant-time
//! crypto-bigint arithmetic, zeroize on drop; ring cannot generate RSA keys). Only its key
//! generation and PKCS#8 encoding are used, never its private-key operations.

use super::emsa;
use super::isolated;
use super::memory::{scrub_stack, LockedBuf};
use super::rng::SystemRng;
use super::{fingerprint, spki_der, KeyError};
use crate::keyring::{Key, Keyring, Perm, Permissions};
use rsa::pkcs8::{EncodePrivateKey, SecretDocument};
use rsa::PrivateKey as RsaPrivateKey;
use rustls::pki_types::SubjectPublicKeyInfoDer;
use rustls::{SignatureAlgorithm, SignatureScheme};
use std::sync::Arc;

/// Modulus size of generated keys.
pub const RSA_BITS: usize = 2048;
/// The kernel key type that holds the key.
pub const RSA_KEY_TYPE: &str = "asymmetric";

/// Possessors may view it, search for it (which is also what the public-key operations
/// require) and set attributes; nobody else may do anything.
pub fn rsa_permissions() -> Permissions {
    Permissions::possessor_only(Perm::VIEW | Perm::SEARCH | Perm::SETATTR)
}

/// An RSA-2048 private key held by the kernel. Clones share the kernel key, which is
/// invalidated when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct KernelRsaKey {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    key: Key,
    mod_bits: usize,
    /// RSAPublicKey DER (what rcgen puts in the SPKI bit string).
    rsa_public: Vec<u8>,
    spki: Vec<u8>,
    /// Invalidate the kernel key with the last handle: false only while an adoption is still
    /// being checked, so that a failed one leaves the key as it was.
    owned: bool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Best effort: the key may already be gone with its keyring.
        if self.owned {
            let _ = self.key.invalidate();
        }
    }
}

impl KernelRsaKey {
    /// Generates an RSA-2048 key and moves it into `keyring` as an `asymmetric` key; no copy
    /// of the private key stays in this process. Loads `pkcs8_key_parser` if the kernel needs
    /// it; fails when the kernel cannot parse PKCS#8 at all — `KeyMode::detect` tells
    /// beforehand.
    pub fn generate(keyring: &Keyring) -> Result<KernelRsaKey, KeyError> {
        KernelRsaKey::load(keyring, generate()?)
    }

    /// Loads the new key (its PKCS#8 zeroized when dropped here) into the kernel, restricts
    /// it, and checks that the kernel refuses to read it back and can do the raw operation.
    pub(crate) fn load(keyring: &Keyring, new: NewRsaKey) -> Result<KernelRsaKey, KeyError> {
        let NewRsaKey {
            pkcs8,
            rsa_public,
            mod_bits,
        } = new;
        let spki = spki_der(&rsa_public, &rcgen::PKCS_RSA_SHA256);
        let description = format!("tessera:rsa-{mod_bits}:{}", fingerprint(&spki));
        let mut added = keyring.add(RSA_KEY_TYPE, &description, pkcs8.as_slice());
        if added
            .as_ref()
            .is_err_and(|e| e.errno() == Some(libc::EBADMSG))
        {
            // No parser took the PKCS#8: the pkcs8_key_parser module is not loaded yet.
            if super::load_pkcs8_parser().is_ok() {
                added = keyring.add(RSA_KEY_TYPE, &description, pkcs8.as_slice());
            }
        }
        let key = added.map_err(|source| KeyError::Load {
            what: "RSA",
            source,
        })?;
        drop(pkcs8);
        let inner = Inner {
            key,
            mod_bits,
            rsa_public,
            spki,
            owned: true,
        };
        key.set_perm(rsa_permissions())
            .map_err(KeyError::Permissions)?;
        let rsa = KernelRsaKey {
            inner: Arc::new(inner),
        };
        rsa.check_kernel_key()?;
        Ok(rsa)
    }

    /// Takes over an RSA key the kernel already holds in this process's keyrings (a child's,
    /// instantiated by the request-key callout) for the certificate whose public key is
    /// `rsa_public` (RSAPublicKey DER): the kernel must refuse to read it back, and a probe
    /// signature made through it must verify with that public key.
    pub fn adopt(key: Key, rsa_public: &[u8]) -> Result<KernelRsaKey, KeyError> {
        use x509_parser::prelude::FromDer;
        let public = x509_parser::public_key::RSAPublicKey::from_der(rsa_public)
            .map_err(|e| KeyError::CertificateMismatch(format!("not an RSA public key: {e}")))?
            .1;
        let mod_bits = public.key_size();
        let inner = Inner {
            key,
            mod_bits,
            rsa_public: rsa_public.to_vec(),
            spki: spki_der(rsa_public, &rcgen::PKCS_RSA_SHA256),
            owned: false,
        };
        let rsa = KernelRsaKey {
            inner: Arc::new(inner),
        };
        rsa.check_kernel_key()?;
        let mut probe = [0u8; 32];
        SystemRng::new().fill(&mut probe)?;
        let signature = rsa.sign_pss_sha256(&probe)?;
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PSS_2048_8192_SHA256,
            rsa_public,
        )
        .verify(&probe, &signature)
        .map_err(|_| {
            KeyError::CertificateMismatch(format!(
                "kernel key {} does not sign for the certificate's public key",
                key.serial()
            ))
        })?;
        Ok(KernelRsaKey {
            inner: super::take_ownership(rsa.inner, |i| i.owned = true),
        })
    }

    /// The key must be unreadable and must offer the raw private operation at our size.
    fn check_kernel_key(&self) -> Result<(), KeyError> {
        let mut probe = zeroize::Zeroizing::new([0u8; 16]);
        if self.inner.key.read_into(probe.as_mut()).is_ok() {
            return Err(KeyError::RsaKeyReadable);
        }
        let query = self
            .inner
            .key
            .pkey_query("enc=raw")
            .map_err(KeyError::PrivateOperation)?;
        let k = self.modulus_len();
        let usable = query.key_size as usize == self.inner.mod_bits
            && query.supports(crate::keyring::PkeyQuery::SUPPORTS_DECRYPT)
            && usize::from(query.max_dec_size) >= k
            && usize::from(query.max_enc_size) >= k;
        if !usable {
            return Err(KeyError::KernelRsaUnusable {
                got: query.key_size,
                want: self.inner.mod_bits as u32,
                ops: query.supported_ops,
            });
        }
        Ok(())
    }

    fn modulus_len(&self) -> usize {
        self.inner.mod_bits.div_ceil(8)
    }

    /// The kernel key holding the private key.
    pub fn kernel_key(&self) -> Key {
        self.inner.key
    }

    /// SubjectPublicKeyInfo DER (rsaEncryption).
    pub fn public_key_spki(&self) -> &[u8] {
        &self.inner.spki
    }

    /// RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte random salt (TLS 1.3's
    /// `rsa_pss_rsae_sha256`).
    pub fn sign_pss_sha256(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut salt = [0u8; 32];
        SystemRng::new().fill(&mut salt)?;
        let em = emsa::pss_sha256(msg, self.inner.mod_bits, &salt)?;
        self.private_op(&em)
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 (X.509 `sha256WithRSAEncryption`; TLS 1.2 only).
    pub fn sign_pkcs1_sha256(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        let em = emsa::pkcs1_sha256(msg, self.inner.mod_bits)?;
        self.private_op(&em)
    }

    /// m^d mod n in the kernel, as a k-byte big-endian signature.
    fn private_op(&self, em: &[u8]) -> Result<Vec<u8>, KeyError> {
        let k = self.modulus_len();
        let mut out = vec![0u8; k];
        let n = self
            .inner
            .key
            .pkey_decrypt("enc=raw", em, &mut out)
            .map_err(KeyError::PrivateOperation)?;
        if n > k || n == 0 {
            return Err(KeyError::PrivateOperationLength { got: n, want: k });
        }
        // Some kernels strip leading zero bytes of the result; I2OSP wants exactly k bytes.
        if n < k {
            out.copy_within(0..n, k - n);
            out[..k - n].fill(0);
        }
        Ok(out)
    }

    /// This key with its certificate chain (end entity first), for a rustls config.
    pub fn into_certified_key(
        self,
        cert_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    ) -> Result<Arc<rustls::sign::CertifiedKey>, KeyError> {
        super::certified(Arc::new(self), cert_chain)
    }
}

/// A freshly generated key: PKCS#8 DER in locked memory (zeroized on drop) and its public
/// half.
pub(crate) struct NewRsaKey {
    pkcs8: LockedBuf,
    rsa_public: Vec<u8>,
    mod_bits: usize,
}

impl NewRsaKey {
    /// The PKCS#8 DER (for the diagnostic's memory scan).
    pub(crate) fn pkcs8(&self) -> &[u8] {
        self.pkcs8.as_slice()
    }

    #[cfg(test)]
    pub(crate) fn public_der(&self) -> &[u8] {
        &self.rsa_public
    }

    #[cfg(test)]
    pub(crate) fn mod_bits(&self) -> usize {
        self.mod_bits
    }
}

/// Room for the PKCS#8 DER of an RSA-2048 key (about 1.2 KB).
const PKCS8_MAX: usize = 4096;

/// A new RSA-2048 key: in a throwaway child process when this process is single-threaded
/// (no trace of the key is left here but the DER, in locked memory), otherwise in-process
/// with the stack scrubbed afterwards — the `rsa` crate then leaves freed, unzeroized pieces
/// of the primes on the heap; generate before starting threads to avoid that.
pub(crate) fn generate() -> Result<NewRsaKey, KeyError> {
    if isolated::single_threaded() {
        generate_isolated()
    } else {
        generate_in_process()
    }
}

pub(crate) fn generate_isolated() -> Result<NewRsaKey, KeyError> {
    let pkcs8 = isolated::generate_in_child(PKCS8_MAX, || generate_pkcs8().ok()).map_err(|e| {
        KeyError::Generate {
            what: "RSA-2048",
            reason: e.to_string(),
        }
    })?;
    with_public_parts(pkcs8)
}

pub(crate) fn generate_in_process() -> Result<NewRsaKey, KeyError> {
    let der = generate_pkcs8();
    scrub_stack();
    let der = der?;
    let mut pkcs8 =
        LockedBuf::new(der.as_bytes().len()).map_err(|source| KeyError::Lock { source })?;
    pkcs8.as_mut_slice().copy_from_slice(der.as_bytes());
    drop(der);
    with_public_parts(pkcs8)
}

/// The key as PKCS#8 DER (zeroized on drop); the `RsaPrivateKey` is zeroized on return.
fn generate_pkcs8() -> Result<SecretDocument, KeyError> {
    let private =
        RsaPrivateKey::new(&mut SystemRng::new(), RSA_BITS).map_err(|e| KeyError::Generate {
            what: "RSA-2048",
            reason: e.to_string(),
        })?;
    private.to_pkcs8_der().map_err(|e| KeyError::Encode {
        what: "RSA-2048",
        reason: e.to_string(),
    })
}

/// Reads n and e out of the DER without big-integer arithmetic (nothing secret is copied).
fn with_public_parts(pkcs8: LockedBuf) -> Result<NewRsaKey, KeyError> {
    use rsa::pkcs1::der::Encode;
    use rsa::pkcs1::{RsaPrivateKeyRef, RsaPublicKey};
    use rsa::pkcs8::PrivateKeyInfoRef;
    let encode = |reason: String| KeyError::Encode {
        what: "RSA-2048",
        reason,
    };
    let info = PrivateKeyInfoRef::try_from(pkcs8.as_slice()).map_err(|e| encode(e.to_string()))?;
    let private =
        RsaPrivateKeyRef::try_from(info.private_key).map_err(|e| encode(e.to_string()))?;
    let modulus = private.modulus.as_bytes();
    let mod_bits = modulus
        .first()
        .map(|top| 8 * modulus.len() - top.leading_zeros() as usize)
        .unwrap_or(0);
    let public = RsaPublicKey {
        modulus: private.modulus,
        public_exponent: private.public_exponent,
    };
    let rsa_public = public.to_der().map_err(|e| encode(e.to_string()))?;
    Ok(NewRsaKey {
        pkcs8,
        rsa_public,
        mod_bits,
    })
}

impl rcgen::PublicKeyData for KernelRsaKey {
    fn der_bytes(&self) -> &[u8] {
        &self.inner.rsa_public
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        // rcgen 0.14 has no RSA-PSS algorithm; CSRs and certificates use PKCS#1 v1.5.
        &rcgen::PKCS_RSA_SHA256
    }
}

/// CSRs and certificates signed through the kernel-held key.
impl rcgen::SigningKey for KernelRsaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.sign_pkcs1_sha256(msg)
            .map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

impl rustls::sign::SigningKey for KernelRsaKey {
    /// PSS first (the only RSA scheme of TLS 1.3), PKCS#1 v1.5 for TLS 1.2 peers without PSS.
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
        [
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::RSA_PKCS1_SHA256,
        ]
        .into_iter()
        .find(|s| offered.contains(s))
        .map(|scheme| {
            Box::new(RsaSigner {
                key: self.clone(),
                scheme,
            }) as Box<dyn rustls::sign::Signer>
        })
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.inner.spki.as_slice()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::RSA
    }
}

#[derive(Debug)]
struct RsaSigner {
    key: KernelRsaKey,
    scheme: SignatureScheme,
}

impl rustls::sign::Signer for RsaSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let signed = match self.scheme {
            SignatureScheme::RSA_PSS_SHA256 => self.key.sign_pss_sha256(message),
            _ => self.key.sign_pkcs1_sha256(message),
        };
        signed.map_err(|e| rustls::Error::General(e.to_string()))
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}
