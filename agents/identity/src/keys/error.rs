//! What can go wrong with a key, each variant saying the cause and the fix.

use crate::keyring::KeyringError;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("generating the {what} key failed: {reason}")]
    Generate { what: &'static str, reason: String },

    #[error("encoding the new {what} key failed: {reason}")]
    Encode { what: &'static str, reason: String },

    #[error("the kernel refused the {what} key: {source}")]
    Load {
        what: &'static str,
        #[source]
        source: KeyringError,
    },

    #[error("restricting the kernel key's permissions failed: {0}")]
    Permissions(#[source] KeyringError),

    #[error("KEYCTL_READ on the kernel-held RSA key succeeded, so the private key would be readable from this process; refusing to use it (the asymmetric key type of this kernel must not implement read)")]
    RsaKeyReadable,

    #[error("the kernel reports the RSA key as {got} bits with ops {ops:#x}, expected {want} bits with raw decrypt; this kernel's asymmetric key type cannot do the private operation Tessera needs — use the ecdsa-p256 key mode")]
    KernelRsaUnusable { got: u32, want: u32, ops: u32 },

    #[error("the kernel's private-key operation failed: {0}")]
    PrivateOperation(#[source] KeyringError),

    #[error("the kernel's private-key operation returned {got} bytes for a {want}-byte modulus")]
    PrivateOperationLength { got: usize, want: usize },

    #[error(transparent)]
    Encoding(#[from] super::emsa::EncodingError),

    #[error(transparent)]
    Random(#[from] super::rng::RngError),

    #[error("reading the ECDSA key from the kernel failed: {0}")]
    Read(#[source] KeyringError),

    #[error("the kernel key {serial} does not hold a PKCS#8 P-256 private key ({reason}); it was changed or replaced — generate a new key")]
    BadKeyMaterial { serial: i32, reason: String },

    #[error("locking memory for the private key failed: {source}; raise RLIMIT_MEMLOCK (ulimit -l) or run with CAP_IPC_LOCK")]
    Lock {
        #[source]
        source: std::io::Error,
    },

    #[error("signing failed: {0}")]
    Sign(String),

    #[error(
        "the certificate does not match the key: {0}; pass the chain issued for this key's CSR"
    )]
    CertificateMismatch(String),

    #[error("the keyring is unusable: {0}")]
    Keyring(#[source] KeyringError),
}
