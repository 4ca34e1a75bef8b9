//! rustls configurations for every network API between agents, nodes and the CA.
//!
//! - Only the cluster CA is trusted ([`CaTrust`]): one pinned certificate, never the system
//!   store. Its current CRL is checked on both sides (webpki's CRL support), so a revoked
//!   certificate fails the handshake. A config holds the CRL it was built with: when the CRL
//!   changes, build a new config (connections made with the old one keep their old view, and a
//!   new config has a fresh session cache, so nobody resumes past a revocation).
//! - First contact with the CA, before its certificate is known: [`pinned_client_config`]
//!   accepts a server only if the chain it presents contains a certificate whose SHA-256 is
//!   the expected fingerprint (from user-data or the kernel command line), and the server's
//!   own certificate verifies against that one (name, validity, signature).
//! - Identities are `Arc<CertifiedKey>`, so signing keys the process cannot read (kernel-held
//!   RSA, possessor-only ECDSA, see `keys`) plug in unchanged.
//! - The crypto provider is ring everywhere (musl-friendly, no aws-lc).

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    ClientConfig, CommonState, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::profile::PeerIdentity;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no certificate found in {0}; expected a PEM \"CERTIFICATE\" block")]
    NoCertificate(&'static str),
    #[error("{what} is not valid PEM: {detail}")]
    Pem { what: &'static str, detail: String },
    #[error("the CA certificate cannot be used: {0}; use the ca.pem the Tessera CA serves (`tessera ca fingerprint` shows its fingerprint)")]
    BadCa(String),
    #[error("CRL refused: {0}; fetch the current one from the CA (GET /v1/crl.pem)")]
    BadCrl(String),
    #[error(
        "fingerprint {0} is not sha256:<64 hex digits>; copy it from `tessera ca fingerprint`"
    )]
    BadFingerprint(String),
    #[error("the CA certificate's fingerprint is {actual}, expected {expected}; the CA was replaced or the fingerprint is wrong")]
    FingerprintMismatch { expected: String, actual: String },
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    #[error("private key refused: {0}")]
    Key(String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("certificate verifier: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
}

type Result<T, E = TlsError> = std::result::Result<T, E>;

/// The ring crypto provider, shared.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Whether a server asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every client must present a certificate from the CA (agent APIs).
    Required,
    /// A certificate is verified if presented; handlers decide (the CA: redeem needs none,
    /// renew/issue/admin do).
    Optional,
    /// No client certificates (public endpoints).
    None,
}

/// `sha256:<hex>` of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Parses `sha256:<hex>`; hex digits in either case, optionally colon-separated (as
/// `openssl x509 -fingerprint -sha256` prints them).
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32]> {
    let bad =
        || TlsError::BadFingerprint(format!("{:?}", text.chars().take(100).collect::<String>()));
    let hex = text
        .trim()
        .strip_prefix("sha256:")
        .or_else(|| text.trim().strip_prefix("SHA256:"))
        .ok_or_else(bad)?;
    let digits: Vec<u8> = hex.bytes().filter(|b| *b != b':').collect();
    if digits.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).map_err(|_| bad())?;
        out[i] = u8::from_str_radix(s, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// The pinned cluster CA and its current CRL.
#[derive(Debug, Clone)]
pub struct CaTrust {
    ca: CertificateDer<'static>,
    crls: Vec<CertificateRevocationListDer<'static>>,
}

impl CaTrust {
    /// Trusts exactly `ca`, which must be a CA certificate.
    pub fn new(ca: CertificateDer<'static>) -> Result<Self> {
        let (rest, cert) =
            X509Certificate::from_der(&ca).map_err(|e| TlsError::BadCa(e.to_string()))?;
        if !rest.is_empty() {
            return Err(TlsError::BadCa(
                "trailing bytes after the certificate".into(),
            ));
        }
        if !cert.is_ca() {
            return Err(TlsError::BadCa("basicConstraints does not say CA".into()));
        }
        Ok(CaTrust {
            ca,
            crls: Vec::new(),
        })
    }

    /// From the first certificate of a PEM text (the CA's `ca.pem`).
    pub fn from_pem(pem: &str) -> Result<Self> {
        let der = CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()
            .ok_or(TlsError::NoCertificate("the CA PEM"))?
            .map_err(|e| TlsError::Pem {
                what: "the CA certificate",
                detail: e.to_string(),
            })?;
        Self::new(der)
    }

    /// Like [`CaTrust::from_pem`], but only if the certificate has the expected fingerprint:
    /// the check after downloading `ca.pem` on first contact.
    pub fn from_pem_pinned(pem: &str, expected_fingerprint: &str) -> Result<Self> {
        parse_fingerprint(expected_fingerprint)?;
        let trust = Self::from_pem(pem)?;
        let actual = trust.fingerprint();
        let expected = format!(
            "sha256:{}",
            hex_of(&parse_fingerprint(expected_fingerprint)?)
        );
        if actual != expected {
            return Err(TlsError::FingerprintMismatch { expected, actual });
        }
        Ok(trust)
    }

    /// Replaces the CRLs. Each must parse, be issued by this CA and carry its valid
    /// signature; otherwise nothing changes.
    pub fn with_crls(mut self, crls: Vec<CertificateRevocationListDer<'static>>) -> Result<Self> {
        let (_, ca) =
            X509Certificate::from_der(&self.ca).map_err(|e| TlsError::BadCa(e.to_string()))?;
        for crl in &crls {
            let (rest, parsed) =
                x509_parser::revocation_list::CertificateRevocationList::from_der(crl)
                    .map_err(|e| TlsError::BadCrl(format!("cannot be parsed: {e}")))?;
            if !rest.is_empty() {
                return Err(TlsError::BadCrl("trailing bytes after the CRL".into()));
            }
            if parsed.issuer() != ca.subject() {
                return Err(TlsError::BadCrl(format!(
                    "issued by {}, not by the pinned CA {}",
                    parsed.issuer(),
                    ca.subject()
                )));
            }
            parsed.verify_signature(ca.public_key()).map_err(|_| {
                TlsError::BadCrl("its signature does not verify with the pinned CA's key".into())
            })?;
        }
        self.crls = crls;
        Ok(self)
    }

    /// Replaces the CRLs with those of a PEM text (`/v1/crl.pem`).
    pub fn with_crl_pem(self, pem: &str) -> Result<Self> {
        let crls = CertificateRevocationListDer::pem_slice_iter(pem.as_bytes())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem {
                what: "the CRL",
                detail: e.to_string(),
            })?;
        if crls.is_empty() {
            return Err(TlsError::BadCrl("no \"X509 CRL\" PEM block found".into()));
        }
        self.with_crls(crls)
    }

    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca
    }

    pub fn ca_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.ca)
    }

    pub fn crls(&self) -> &[CertificateRevocationListDer<'static>] {
        &self.crls
    }

    /// `sha256:<hex>` of the CA certificate's DER.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.ca)
    }

    fn roots(&self) -> Result<Arc<RootCertStore>> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca.clone())
            .map_err(|e| TlsError::BadCa(e.to_string()))?;
        Ok(Arc::new(roots))
    }

    fn server_verifier(&self) -> Result<Arc<WebPkiServerVerifier>> {
        Ok(
            WebPkiServerVerifier::builder_with_provider(self.roots()?, provider())
                .with_crls(self.crls.clone())
                .only_check_end_entity_revocation()
                .build()?,
        )
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// PEM text of one DER object, 64-column base64.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len() * 4 / 3 + 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |a, (i, b)| a | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// An identity from PEM texts: the certificate chain (leaf first) and a PKCS#8 / SEC1 /
/// PKCS#1 private key. For the CA's own keys and the operator's admin key, which are files
/// on the operator's machine; agents use keys the process cannot read.
pub fn certified_key_from_pem(chain_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>> {
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: "the certificate chain",
            detail: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate("the certificate chain"));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| TlsError::Pem {
        what: "the private key",
        detail: e.to_string(),
    })?;
    let key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Key(e.to_string()))?;
    let ck = CertifiedKey::new(chain, key);
    check_identity(&ck)?;
    Ok(Arc::new(ck))
}

/// A key the process cannot read reports no public key; only a known mismatch is an error.
fn check_identity(identity: &CertifiedKey) -> Result<()> {
    match identity.keys_match() {
        Ok(()) => Ok(()),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch)
        }
        Err(e) => Err(TlsError::Rustls(e)),
    }
}

static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn versions() -> &'static [&'static rustls::SupportedProtocolVersion] {
    VERSIONS
}

/// A server presenting `identity`, trusting only `ca` (and its CRL) for client certificates.
pub fn server_config(
    identity: Arc<CertifiedKey>,
    ca: &CaTrust,
    client_auth: ClientAuth,
) -> Result<Arc<ServerConfig>> {
    check_identity(&identity)?;
    let verifier = match client_auth {
        ClientAuth::None => WebPkiClientVerifier::no_client_auth(),
        ClientAuth::Required | ClientAuth::Optional => {
            let mut builder = WebPkiClientVerifier::builder_with_provider(ca.roots()?, provider())
                .with_crls(ca.crls.clone())
                .only_check_end_entity_revocation();
            if client_auth == ClientAuth::Optional {
                builder = builder.allow_unauthenticated();
            }
            builder.build()?
        }
    };
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions())?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(identity)));
    Ok(Arc::new(config))
}

/// A client trusting only `ca` (and its CRL) for servers, presenting `identity` if given.
pub fn client_config(
    identity: Option<Arc<CertifiedKey>>,
    ca: &CaTrust,
) -> Result<Arc<ClientConfig>> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions())?
        .with_webpki_verifier(ca.server_verifier()?);
    Ok(Arc::new(with_identity(builder, identity)?))
}

fn with_identity(
    builder: rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>,
    identity: Option<Arc<CertifiedKey>>,
) -> Result<ClientConfig> {
    Ok(match identity {
        Some(id) => {
            check_identity(&id)?;
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(id)))
        }
        None => builder.with_no_client_auth(),
    })
}

/// A client for the first contact with the CA: the server must present, in its chain, a
/// certificate whose SHA-256 is `expected_fingerprint`, and its own certificate must verify
/// against that one for the name dialled. Use it to download `ca.pem` (then check it with
/// [`CaTrust::from_pem_pinned`]) or to redeem a token.
pub fn pinned_client_config(
    expected_fingerprint: &str,
    identity: Option<Arc<CertifiedKey>>,
) -> Result<Arc<ClientConfig>> {
    let verifier = PinnedCaVerifier {
        fingerprint: parse_fingerprint(expected_fingerprint)?,
        provider: provider(),
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    Ok(Arc::new(with_identity(builder, identity)?))
}

/// Verifies a server against the CA certificate found by fingerprint in its own chain.
#[derive(Debug)]
struct PinnedCaVerifier {
    fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let pinned = intermediates
            .iter()
            .find(|c| ring::digest::digest(&ring::digest::SHA256, c).as_ref() == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(format!(
                    "the server's chain has no certificate with fingerprint sha256:{}; it is not the expected CA",
                    hex_of(&self.fingerprint)
                ))
            })?;
        let trust = CaTrust::new(pinned.clone().into_owned())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let verifier = trust
            .server_verifier()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The verified peer's identity, for handlers: `None` when the peer presented no certificate
/// or one outside the Tessera profile. Pass a `ServerConnection` or `ClientConnection`.
pub fn peer_identity(conn: &CommonState) -> Option<PeerIdentity> {
    let leaf = conn.peer_certificates()?.first()?;
    PeerIdentity::from_der(leaf).ok()
}

/// Moves every pending TLS record from one peer to the other and lets the receiver process it
/// (in-memory handshakes of diagnostics and tests).
pub fn pump<A, B, DA, DB>(from: &mut A, to: &mut B) -> std::result::Result<(), rustls::Error>
where
    A: std::ops::DerefMut<Target = rustls::ConnectionCommon<DA>>,
    B: std::ops::DerefMut<Target = rustls::ConnectionCommon<DB>>,
{
    let io = |e: std::io::Error| rustls::Error::General(format!("in-memory TLS: {e}"));
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire).map_err(io)?;
    }
    let mut rest = wire.as_slice();
    while !rest.is_empty() {
        to.read_tls(&mut rest).map_err(io)?;
        to.process_new_packets()?;
    }
    Ok(())
}

/// What an in-memory handshake showed: each side's verified view of the other.
#[derive(Debug)]
pub struct LoopbackHandshake {
    pub version: String,
    /// The client's identity as the server verified it.
    pub client_seen_by_server: Option<PeerIdentity>,
    /// The server's identity as the client verified it.
    pub server_seen_by_client: Option<PeerIdentity>,
}

/// A whole handshake between a client and a server of these configurations, in memory: proves
/// that an identity works for mTLS (both private keys sign, both chains verify) without a
/// socket.
pub fn loopback_handshake(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    server_name: &str,
) -> std::result::Result<LoopbackHandshake, rustls::Error> {
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| rustls::Error::General(format!("server name {server_name:?}: {e}")))?;
    let mut c = rustls::ClientConnection::new(client, name)?;
    let mut s = rustls::ServerConnection::new(server)?;
    let mut flights = 0;
    while c.is_handshaking() || s.is_handshaking() {
        flights += 1;
        if flights > 10 {
            return Err(rustls::Error::General(
                "the handshake did not finish after 10 flights".into(),
            ));
        }
        pump(&mut c, &mut s)?;
        pump(&mut s, &mut c)?;
    }
    Ok(LoopbackHandshake {
        version: c
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default(),
        client_seen_by_server: peer_identity(&s),
        server_seen_by_client: peer_identity(&c),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{random_serial, CaIssuer, Leaf, Subject, DEFAULT_LIFETIME};
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa,
        KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
    };
    use std::io::{Read, Write};
    use std::time::SystemTime;

    struct TestCa {
        issuer: CaIssuer<KeyPair>,
    }

    impl TestCa {
        fn new() -> TestCa {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::default();
            p.distinguished_name.push(DnType::CommonName, "test CA");
            p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            p.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let cert = p.self_signed(&key).unwrap();
            TestCa {
                issuer: CaIssuer::new(cert.der().clone(), key).unwrap(),
            }
        }

        fn trust(&self) -> CaTrust {
            CaTrust::new(self.issuer.cert_der().clone()).unwrap()
        }

        /// An identity for `<agent>.n1.example`, with the CA in its chain.
        fn identity(&self, agent: &str, caps: &[&str]) -> (Arc<CertifiedKey>, String) {
            let key = KeyPair::generate().unwrap();
            let now = SystemTime::now();
            let leaf = Leaf {
                subject: Subject::new("prod", agent, "n1.example", agent).unwrap(),
                capabilities: caps.iter().map(|s| s.to_string()).collect(),
                uris: vec![],
                not_before: now - std::time::Duration::from_secs(60),
                not_after: now + DEFAULT_LIFETIME,
                serial: random_serial().unwrap(),
            };
            let der = self.issuer.sign(&leaf, &key).unwrap();
            let serial = PeerIdentity::from_der(&der).unwrap().serial;
            let chain = pem_encode("CERTIFICATE", &der)
                + &pem_encode("CERTIFICATE", self.issuer.cert_der());
            (
                certified_key_from_pem(&chain, &key.serialize_pem()).unwrap(),
                serial,
            )
        }

        fn crl(&self, revoked_serial_hex: Option<&str>) -> CertificateRevocationListDer<'static> {
            let now = SystemTime::now();
            let t = |s: SystemTime| {
                let secs = s.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
                x509_parser::time::ASN1Time::from_timestamp(secs)
                    .unwrap()
                    .to_datetime()
            };
            let revoked_certs = revoked_serial_hex
                .map(|hex| {
                    let bytes: Vec<u8> = (0..hex.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                        .collect();
                    vec![RevokedCertParams {
                        serial_number: SerialNumber::from_slice(&bytes),
                        revocation_time: t(now),
                        reason_code: None,
                        invalidity_date: None,
                    }]
                })
                .unwrap_or_default();
            let params = CertificateRevocationListParams {
                this_update: t(now - std::time::Duration::from_secs(60)),
                next_update: t(now + std::time::Duration::from_secs(3600)),
                crl_number: SerialNumber::from_slice(&[1]),
                issuing_distribution_point: None,
                revoked_certs,
                key_identifier_method: KeyIdMethod::Sha256,
            };
            params
                .signed_by(self.issuer.issuer())
                .unwrap()
                .der()
                .clone()
        }
    }

    /// What one handshake gave: (client result, server result, identity the server saw,
    /// identity the client saw).
    type Outcome = (
        std::result::Result<(), String>,
        std::result::Result<(), String>,
        Option<PeerIdentity>,
        Option<PeerIdentity>,
    );

    /// Runs one TLS handshake and a ping-pong over a loopback socket.
    fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>, name: &str) -> Outcome {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server_thread = std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            let mut conn = rustls::ServerConnection::new(server).unwrap();
            let mut stream = rustls::Stream::new(&mut conn, &mut sock);
            let mut buf = [0u8; 5];
            let res = stream.read_exact(&mut buf).map_err(|e| e.to_string());
            if res.is_ok() {
                stream.write_all(b"world").unwrap();
                stream.flush().unwrap();
            }
            let id = peer_identity(&conn);
            (res, id)
        });
        let mut sock = std::net::TcpStream::connect(addr).unwrap();
        let name = ServerName::try_from(name.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(client, name).unwrap();
        let mut stream = rustls::Stream::new(&mut conn, &mut sock);
        let res = stream
            .write_all(b"hello")
            .and_then(|_| stream.flush())
            .and_then(|_| {
                let mut buf = [0u8; 5];
                stream.read_exact(&mut buf)
            })
            .map_err(|e| e.to_string());
        let client_saw = peer_identity(&conn);
        drop(sock);
        let (server_res, server_saw) = server_thread.join().unwrap();
        (res, server_res, server_saw, client_saw)
    }

    #[test]
    fn mutual_tls_gives_both_sides_the_peer_identity() {
        let ca = TestCa::new();
        let (server_id, _) = ca.identity("node", &[]);
        let (client_id, _) = ca.identity("certmgr", &["node", "hub"]);
        let server = server_config(server_id, &ca.trust(), ClientAuth::Required).unwrap();
        let client = client_config(Some(client_id), &ca.trust()).unwrap();
        let (c, s, server_saw, client_saw) = handshake(server, client, "node.n1.example");
        assert_eq!(c, Ok(()));
        assert_eq!(s, Ok(()));
        let peer = server_saw.unwrap();
        assert_eq!(peer.subsystem, "certmgr");
        assert!(peer.has_capability("hub"));
        assert_eq!(client_saw.unwrap().subsystem, "node");
    }

    #[test]
    fn required_client_auth_refuses_a_client_without_certificate() {
        let ca = TestCa::new();
        let (server_id, _) = ca.identity("node", &[]);
        let server = server_config(server_id, &ca.trust(), ClientAuth::Required).unwrap();
        let client = client_config(None, &ca.trust()).unwrap();
        let (c, s, _, _) = handshake(server, client, "node.n1.example");
        assert!(c.is_err() && s.is_err(), "{c:?} {s:?}");
    }

    #[test]
    fn optional_client_auth_admits_anonymous_clients() {
        let ca = TestCa::new();
        let (server_id, _) = ca.identity("node", &[]);
        let server = server_config(server_id, &ca.trust(), ClientAuth::Optional).unwrap();
        let client = client_config(None, &ca.trust()).unwrap();
        let (c, s, server_saw, _) = handshake(server, client, "node.n1.example");
        assert_eq!((c, s), (Ok(()), Ok(())));
        assert!(server_saw.is_none());
    }

    #[test]
    fn certificate_from_another_ca_is_refused_both_ways() {
        let ca = TestCa::new();
        let other = TestCa::new();
        let (server_id, _) = ca.identity("node", &[]);
        let (stranger, _) = other.identity("certmgr", &[]);
        let server = server_config(server_id.clone(), &ca.trust(), ClientAuth::Required).unwrap();
        let client = client_config(Some(stranger), &ca.trust()).unwrap();
        let (c, s, _, _) = handshake(server, client, "node.n1.example");
        assert!(c.is_err() && s.is_err());
        // A client trusting the other CA refuses our server.
        let server = server_config(server_id, &ca.trust(), ClientAuth::None).unwrap();
        let client = client_config(None, &other.trust()).unwrap();
        let (c, _, _, _) = handshake(server, client, "node.n1.example");
        let e = c.unwrap_err();
        assert!(e.contains("invalid peer certificate"), "{e}");
    }

    #[test]
    fn wrong_server_name_is_refused() {
        let ca = TestCa::new();
        let (server_id, _) = ca.identity("node", &[]);
        let server = server_config(server_id, &ca.trust(), ClientAuth::None).unwrap();
        let client = client_config(None, &ca.trust()).unwrap();
        let (c, _, _, _) = handshake(server, client, "hub.n1.example");
        let e = c.unwrap_err();
        assert!(e.contains("not valid for name"), "{e}");
    }

    #[test]
    fn revoked_client_is_refused_by_the_server() {
        let ca = TestCa::new();
        let (server_id, _) = ca.identity("node", &[]);
        let (client_id, serial) = ca.identity("certmgr", &[]);
        let trust = ca.trust().with_crls(vec![ca.crl(Some(&serial))]).unwrap();
        let server = server_config(server_id.clone(), &trust, ClientAuth::Required).unwrap();
        let client = client_config(Some(client_id.clone()), &ca.trust()).unwrap();
        let (_, s, _, _) = handshake(server, client.clone(), "node.n1.example");
        assert!(s.unwrap_err().contains("Revoked"));
        // The same client passes with a CRL that does not list it.
        let trust = ca.trust().with_crls(vec![ca.crl(None)]).unwrap();
        let server = server_config(server_id, &trust, ClientAuth::Required).unwrap();
        let (c, s, _, _) = handshake(server, client, "node.n1.example");
        assert_eq!((c, s), (Ok(()), Ok(())));
    }

    #[test]
    fn revoked_server_is_refused_by_the_client() {
        let ca = TestCa::new();
        let (server_id, serial) = ca.identity("node", &[]);
        let server = server_config(server_id, &ca.trust(), ClientAuth::None).unwrap();
        let trust = ca.trust().with_crls(vec![ca.crl(Some(&serial))]).unwrap();
        let client = client_config(None, &trust).unwrap();
        let (c, _, _, _) = handshake(server, client, "node.n1.example");
        assert!(c.unwrap_err().contains("Revoked"));
    }

    #[test]
    fn crl_from_another_ca_is_refused() {
        let ca = TestCa::new();
        let other = TestCa::new();
        let err = ca.trust().with_crls(vec![other.crl(None)]).unwrap_err();
        assert!(matches!(err, TlsError::BadCrl(_)), "{err}");
        let err = ca
            .trust()
            .with_crls(vec![CertificateRevocationListDer::from(b"junk".to_vec())])
            .unwrap_err();
        assert!(matches!(err, TlsError::BadCrl(_)), "{err}");
    }

    #[test]
    fn pinned_client_accepts_the_ca_with_that_fingerprint_only() {
        let ca = TestCa::new();
        let (server_id, _) = ca.identity("node", &[]);
        let server = server_config(server_id, &ca.trust(), ClientAuth::None).unwrap();
        let good = pinned_client_config(&ca.trust().fingerprint(), None).unwrap();
        let (c, _, _, _) = handshake(server.clone(), good.clone(), "node.n1.example");
        assert_eq!(c, Ok(()));
        // Name checks still apply.
        let (c, _, _, _) = handshake(server.clone(), good, "hub.n1.example");
        assert!(c.is_err());
        let other = TestCa::new();
        let bad = pinned_client_config(&other.trust().fingerprint(), None).unwrap();
        let (c, _, _, _) = handshake(server, bad, "node.n1.example");
        assert!(c.unwrap_err().contains("not the expected CA"));
    }

    #[test]
    fn downloaded_ca_pem_is_checked_against_the_fingerprint() {
        let ca = TestCa::new();
        let pem = ca.trust().ca_pem();
        let fp = ca.trust().fingerprint();
        assert_eq!(
            CaTrust::from_pem_pinned(&pem, &fp).unwrap().fingerprint(),
            fp
        );
        let upper = format!("sha256:{}", fp[7..].to_uppercase());
        assert!(CaTrust::from_pem_pinned(&pem, &upper).is_ok());
        let other = TestCa::new().trust().fingerprint();
        assert!(matches!(
            CaTrust::from_pem_pinned(&pem, &other),
            Err(TlsError::FingerprintMismatch { .. })
        ));
    }

    #[test]
    fn fingerprints_are_parsed_strictly() {
        assert!(parse_fingerprint(&format!("sha256:{}", "ab".repeat(32))).is_ok());
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(
            parse_fingerprint(&format!("sha256:{colons}")).unwrap(),
            [0xab; 32]
        );
        for bad in [
            "",
            "sha256:",
            "md5:abcd",
            &format!("sha256:{}", "zz".repeat(32)),
            &format!("sha256:{}", "ab".repeat(31)),
        ] {
            assert!(parse_fingerprint(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fingerprint_is_sha256_of_the_der() {
        let ca = TestCa::new();
        let fp = ca.trust().fingerprint();
        assert!(fp.starts_with("sha256:") && fp.len() == 7 + 64);
        assert_eq!(fp, fingerprint(ca.issuer.cert_der()));
    }

    #[test]
    fn a_leaf_is_not_accepted_as_the_ca() {
        let ca = TestCa::new();
        let (id, _) = ca.identity("node", &[]);
        assert!(matches!(
            CaTrust::new(id.cert[0].clone()),
            Err(TlsError::BadCa(_))
        ));
        assert!(CaTrust::from_pem("not pem").is_err());
    }

    #[test]
    fn mismatched_key_is_refused() {
        let ca = TestCa::new();
        let (id, _) = ca.identity("node", &[]);
        let other = KeyPair::generate().unwrap();
        let chain = pem_encode("CERTIFICATE", &id.cert[0]);
        assert!(matches!(
            certified_key_from_pem(&chain, &other.serialize_pem()),
            Err(TlsError::KeyMismatch)
        ));
    }

    #[test]
    fn pem_encoding_round_trips() {
        for len in [1usize, 2, 3, 47, 48, 49, 100] {
            let data: Vec<u8> = (0..len as u8).collect();
            let pem = pem_encode("CERTIFICATE", &data);
            let back = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
            assert_eq!(back.as_ref(), data.as_slice(), "{len}");
        }
        let ca = TestCa::new();
        let pem = ca.trust().ca_pem();
        assert_eq!(
            CaTrust::from_pem(&pem).unwrap().ca_der(),
            ca.issuer.cert_der()
        );
    }
}
