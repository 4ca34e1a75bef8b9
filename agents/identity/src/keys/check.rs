//! The key diagnostic behind `tessera identity check`: generate a key in a mode, sign a
//! self-signed certificate through it, run a real TLS 1.3 handshake between an in-process
//! rustls server using the key and a client that trusts the certificate, verify a signature
//! with ring, and show that the key is not exposed — this process cannot read an RSA key, a
//! non-possessor cannot read either, and no copy of the secret is left in writable memory.

use super::exposure::{self, Needles, ReadOutcome, ScanReport};
use super::{ecdsa, kernel_rsa, EcdsaP256Key, KernelRsaKey, KeyError, KeyMode, NodeKey};
use crate::keyring::{Description, Keyring, KeyringError};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection, SignatureScheme};
use std::fmt;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The name in the check's self-signed certificate.
const CHECK_NAME: &str = "identity-check.tessera.invalid";
/// Signatures timed; the report gives the median.
const SIGNATURES: usize = 5;

/// What the check did and measured. It is only returned when every step passed.
#[derive(Clone, Debug)]
pub struct CheckReport {
    pub mode: KeyMode,
    /// The kernel key as KEYCTL_DESCRIBE showed it.
    pub kernel_key: Description,
    pub key_serial: i32,
    /// Generating the key in the process.
    pub generate: Duration,
    /// Handing it to the kernel (add_key, permissions, for RSA the parse and checks).
    pub load: Duration,
    /// One signature through the key (median of several), verified with ring.
    pub sign: Duration,
    /// Signing the self-signed certificate through the key (rcgen).
    pub certificate: Duration,
    /// The whole in-memory TLS 1.3 handshake.
    pub handshake: Duration,
    pub tls_version: String,
    pub cipher_suite: String,
    /// The scheme the server signed its CertificateVerify with.
    pub handshake_scheme: String,
    /// KEYCTL_READ by this (possessing) process.
    pub read_by_owner: ReadOutcome,
    /// KEYCTL_READ by a forked child that does not possess the key.
    pub read_by_non_possessor: ReadOutcome,
    /// Copies of the private key found in this process's writable memory.
    pub memory: ScanReport,
    /// The kernel key was gone once the last handle was dropped.
    pub removed: bool,
}

/// A step of the check that failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("no process keyring: {0}")]
    Keyring(#[source] KeyringError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("the self-signed certificate could not be made through the key: {0}")]
    Certificate(#[source] rcgen::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS I/O between the in-memory peers: {0}")]
    TlsIo(#[source] std::io::Error),
    #[error("the TLS handshake did not finish after {0} flights")]
    HandshakeStalled(usize),
    #[error("the handshake finished but the server never signed through the kernel key")]
    KeyNotUsed,
    #[error("application data did not cross the TLS connection intact")]
    DataMismatch,
    #[error("a signature made through the key did not verify with ring ({0})")]
    Verify(&'static str),
    #[error("{0} — the key is exposed")]
    Exposed(String),
    #[error("kernel key {0} was still there after its last handle was dropped")]
    NotRemoved(i32),
    #[error("probing reads of the key: {0}")]
    Probe(#[source] std::io::Error),
}

/// Runs the whole check for `mode` on this kernel; a key is made in the process keyring and
/// removed again.
pub fn check(mode: KeyMode) -> Result<CheckReport, CheckError> {
    let keyring = Keyring::process().map_err(CheckError::Keyring)?;

    // Generate, keep search needles from the secret, load into the kernel.
    let started = Instant::now();
    let mut needles = Needles::new();
    let (key, generate, load) = match mode {
        KeyMode::KernelRsa => {
            let new = kernel_rsa::generate()?;
            let generate = started.elapsed();
            rsa_needles(new.pkcs8(), &mut needles);
            let loading = Instant::now();
            let key = KernelRsaKey::load(&keyring, new)?;
            (NodeKey::KernelRsa(key), generate, loading.elapsed())
        }
        KeyMode::EcdsaP256 => {
            let new = ecdsa::generate()?;
            let generate = started.elapsed();
            ecdsa_needles(new.pkcs8(), &mut needles);
            let loading = Instant::now();
            let key = EcdsaP256Key::load(&keyring, new)?;
            (NodeKey::EcdsaP256(key), generate, loading.elapsed())
        }
    };
    if needles.is_empty() {
        return Err(CheckError::Probe(std::io::Error::other(
            "the new key's PKCS#8 could not be parsed to find its secret for the memory scan",
        )));
    }
    let kernel_key = key.kernel_key();
    let description = kernel_key
        .describe()
        .map_err(|e| CheckError::Key(KeyError::Keyring(e)))?;

    let sign = time_and_verify_signatures(&key)?;

    let started = Instant::now();
    let params = {
        let mut p = rcgen::CertificateParams::new(vec![CHECK_NAME.to_string()])
            .map_err(CheckError::Certificate)?;
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        p
    };
    let cert = params.self_signed(&key).map_err(CheckError::Certificate)?;
    let certificate = started.elapsed();
    let cert_der = cert.der().clone();

    let (handshake, tls) = handshake_with(&key, cert_der)?;

    let read_by_owner = exposure::read_by_self(kernel_key);
    if mode == KeyMode::KernelRsa && read_by_owner == ReadOutcome::Allowed {
        return Err(CheckError::Exposed(
            "this process could read the kernel-held RSA key".into(),
        ));
    }
    let read_by_non_possessor =
        exposure::read_by_non_possessor(kernel_key).map_err(CheckError::Probe)?;
    if read_by_non_possessor == ReadOutcome::Allowed {
        return Err(CheckError::Exposed(
            "a process that does not possess the key could read it".into(),
        ));
    }

    // Every handle is gone: the kernel key must be too, and no copy may be left in memory.
    drop(key);
    let removed = kernel_key
        .describe()
        .is_err_and(|e| e.errno() == Some(libc::ENOKEY));
    if !removed {
        return Err(CheckError::NotRemoved(kernel_key.serial()));
    }
    let memory = exposure::scan(&needles).map_err(CheckError::Probe)?;
    drop(needles);
    if !memory.hits.is_empty() {
        let places: Vec<String> = memory
            .hits
            .iter()
            .map(|h| {
                let order = if h.reversed { " (little-endian)" } else { "" };
                let mapping = if h.mapping.is_empty() {
                    "[anon]"
                } else {
                    &h.mapping
                };
                format!("{}{order} at {:#x} in {mapping}", h.secret, h.address)
            })
            .collect();
        return Err(CheckError::Exposed(format!(
            "{} copies of the private key are left in this process's memory: {}",
            memory.hits.len(),
            places.join(", ")
        )));
    }

    Ok(CheckReport {
        mode,
        kernel_key: description,
        key_serial: kernel_key.serial(),
        generate,
        load,
        sign,
        certificate,
        handshake,
        tls_version: tls.version,
        cipher_suite: tls.suite,
        handshake_scheme: tls.scheme,
        read_by_owner,
        read_by_non_possessor,
        memory,
        removed,
    })
}

pub(crate) fn rsa_needles(pkcs8: &[u8], needles: &mut Needles) {
    use rsa::pkcs1::RsaPrivateKeyRef;
    use rsa::pkcs8::PrivateKeyInfoRef;
    let Ok(info) = PrivateKeyInfoRef::try_from(pkcs8) else {
        return;
    };
    let Ok(rsa) = RsaPrivateKeyRef::try_from(info.private_key) else {
        return;
    };
    needles.add("d", rsa.private_exponent.as_bytes());
    needles.add("p", rsa.prime1.as_bytes());
    needles.add("q", rsa.prime2.as_bytes());
}

pub(crate) fn ecdsa_needles(pkcs8: &[u8], needles: &mut Needles) {
    use p256::pkcs8::PrivateKeyInfoRef;
    use sec1::EcPrivateKey;
    let Ok(info) = PrivateKeyInfoRef::try_from(pkcs8) else {
        return;
    };
    let Ok(ec) = EcPrivateKey::try_from(info.private_key.as_bytes()) else {
        return;
    };
    needles.add("scalar", ec.private_key);
}

/// Signs a fixed message `SIGNATURES` times with the TLS scheme of the key, verifies each with
/// ring, and returns the median time.
fn time_and_verify_signatures(key: &NodeKey) -> Result<Duration, CheckError> {
    let msg = b"tessera identity check";
    let public = rcgen::PublicKeyData::der_bytes(key);
    let mut times = Vec::with_capacity(SIGNATURES);
    for _ in 0..SIGNATURES {
        let started = Instant::now();
        let (signature, alg): (Vec<u8>, &'static dyn ring::signature::VerificationAlgorithm) =
            match key {
                NodeKey::KernelRsa(k) => (
                    k.sign_pss_sha256(msg)?,
                    &ring::signature::RSA_PSS_2048_8192_SHA256,
                ),
                NodeKey::EcdsaP256(k) => (k.sign(msg)?, &ring::signature::ECDSA_P256_SHA256_ASN1),
            };
        times.push(started.elapsed());
        ring::signature::UnparsedPublicKey::new(alg, public)
            .verify(msg, &signature)
            .map_err(|_| CheckError::Verify("TLS signature scheme"))?;
    }
    if let NodeKey::KernelRsa(k) = key {
        // The X.509 scheme too (what rcgen uses for CSRs and certificates).
        let signature = k.sign_pkcs1_sha256(msg)?;
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            public,
        )
        .verify(msg, &signature)
        .map_err(|_| CheckError::Verify("PKCS#1 v1.5"))?;
    }
    times.sort();
    Ok(times[times.len() / 2])
}

struct TlsOutcome {
    version: String,
    suite: String,
    scheme: String,
}

/// The node key as a rustls signing key that also records which scheme it signed with.
#[derive(Debug)]
struct Recording {
    key: NodeKey,
    used: Arc<Mutex<Option<SignatureScheme>>>,
}

impl rustls::sign::SigningKey for Recording {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
        let signer = self.key.choose_scheme(offered)?;
        Some(Box::new(RecordingSigner {
            signer,
            used: self.used.clone(),
        }))
    }

    fn public_key(&self) -> Option<rustls::pki_types::SubjectPublicKeyInfoDer<'_>> {
        rustls::sign::SigningKey::public_key(&self.key)
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        rustls::sign::SigningKey::algorithm(&self.key)
    }
}

#[derive(Debug)]
struct RecordingSigner {
    signer: Box<dyn rustls::sign::Signer>,
    used: Arc<Mutex<Option<SignatureScheme>>>,
}

impl rustls::sign::Signer for RecordingSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let signature = self.signer.sign(message)?;
        if let Ok(mut used) = self.used.lock() {
            *used = Some(self.signer.scheme());
        }
        Ok(signature)
    }

    fn scheme(&self) -> SignatureScheme {
        self.signer.scheme()
    }
}

/// A TLS 1.3 handshake and one round of application data between an in-memory rustls server
/// that signs with `key` and a client that trusts only `cert`.
fn handshake_with(
    key: &NodeKey,
    cert: CertificateDer<'static>,
) -> Result<(Duration, TlsOutcome), CheckError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let used = Arc::new(Mutex::new(None));
    let signing = Arc::new(Recording {
        key: key.clone(),
        used: used.clone(),
    });
    let certified = Arc::new(rustls::sign::CertifiedKey::new(vec![cert.clone()], signing));
    certified.keys_match()?;
    let server_config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let client_config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(CHECK_NAME)
        .map_err(|e| CheckError::Tls(rustls::Error::General(e.to_string())))?;

    let started = Instant::now();
    let mut client = ClientConnection::new(Arc::new(client_config), name)?;
    let mut server = ServerConnection::new(Arc::new(server_config))?;
    let mut flights = 0;
    while client.is_handshaking() || server.is_handshaking() {
        flights += 1;
        if flights > 10 {
            return Err(CheckError::HandshakeStalled(flights - 1));
        }
        crate::tls::pump(&mut client, &mut server)?;
        crate::tls::pump(&mut server, &mut client)?;
    }
    let handshake = started.elapsed();

    client
        .writer()
        .write_all(b"ping")
        .map_err(CheckError::TlsIo)?;
    crate::tls::pump(&mut client, &mut server)?;
    let mut got = [0u8; 4];
    server
        .reader()
        .read_exact(&mut got)
        .map_err(CheckError::TlsIo)?;
    if &got != b"ping" {
        return Err(CheckError::DataMismatch);
    }

    let scheme = used
        .lock()
        .ok()
        .and_then(|u| *u)
        .ok_or(CheckError::KeyNotUsed)?;
    let outcome = TlsOutcome {
        version: client
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default(),
        suite: client
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default(),
        scheme: format!("{scheme:?}"),
    };
    Ok((handshake, outcome))
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

impl fmt::Display for CheckReport {
    /// Human-readable lines, then one `IDENTITY-CHECK key=value ...` line for scripts and tests.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = &self.kernel_key;
        let p = k.perm;
        writeln!(f, "identity check, mode {}", self.mode)?;
        writeln!(
            f,
            "  kernel key       {} {} {:?} perm {} (possessor {:#04x}, user {:#04x}, group {:#04x}, other {:#04x})",
            self.key_serial,
            k.key_type,
            k.description,
            p,
            p.possessor().bits(),
            p.user().bits(),
            p.group().bits(),
            p.other().bits()
        )?;
        writeln!(f, "  generate         {} ms", ms(self.generate))?;
        writeln!(f, "  load             {} ms", ms(self.load))?;
        writeln!(
            f,
            "  sign             {} ms (median of {SIGNATURES}, each verified with ring)",
            ms(self.sign)
        )?;
        writeln!(
            f,
            "  certificate      {} ms (self-signed through the kernel key)",
            ms(self.certificate)
        )?;
        writeln!(
            f,
            "  TLS handshake    {} ms ({}, {}, server signed with {})",
            ms(self.handshake),
            self.tls_version,
            self.cipher_suite,
            self.handshake_scheme
        )?;
        writeln!(f, "  read by owner    {}", self.read_by_owner)?;
        writeln!(
            f,
            "  read by others   {} (a forked child without the process keyring)",
            self.read_by_non_possessor
        )?;
        writeln!(
            f,
            "  memory           {} copies of the private key in {} KiB of writable memory",
            self.memory.hits.len(),
            self.memory.scanned_bytes / 1024
        )?;
        writeln!(
            f,
            "  after drop       {}",
            if self.removed {
                "kernel key removed"
            } else {
                "kernel key still there"
            }
        )?;
        write!(
            f,
            "IDENTITY-CHECK mode={} result=ok handshake=ok tls={} scheme={} signature=verified owner_read={} other_read={} copies={} removed={} generate_ms={} load_ms={} sign_ms={} cert_ms={} handshake_ms={}",
            self.mode,
            self.tls_version,
            self.handshake_scheme,
            self.read_by_owner,
            self.read_by_non_possessor,
            self.memory.hits.len(),
            if self.removed { "yes" } else { "no" },
            ms(self.generate),
            ms(self.load),
            ms(self.sign),
            ms(self.certificate),
            ms(self.handshake)
        )
    }
}
