//! The CA's HTTPS API as certmgr uses it (agents/README.md, "CA HTTP API"): first contact
//! pinned by fingerprint (`GET /v1/ca.pem`, nothing secret sent), then `POST /v1/redeem` with
//! the token and the CSR, `POST /v1/renew` and `POST /v1/issue` over mTLS.
//!
//! Every failure is sorted for the caller: the CA cannot be reached (wait and retry), it is not
//! the CA user-data pins (refuse, say which fingerprint it presented), or it refused the request
//! with a reason code (final for that token or certificate).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use serde::{Deserialize, Serialize};
use tessera_identity::profile::PeerIdentity;
use tessera_identity::tls::{self, CaTrust, TlsError};
use zeroize::Zeroizing;

use crate::defaults;
use crate::https::{self, HttpError, HttpsUrl, Limits};

/// A certificate the CA (or the node-local CA) issued.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Leaf first, then the CA certificate.
    pub chain: Vec<CertificateDer<'static>>,
    pub peer: PeerIdentity,
    pub not_before: SystemTime,
}

impl Issued {
    /// From the DER of the leaf and the CA.
    pub fn from_der(
        leaf: CertificateDer<'static>,
        ca: CertificateDer<'static>,
    ) -> Result<Issued, String> {
        let peer = PeerIdentity::from_der(&leaf).map_err(|e| e.to_string())?;
        let not_before = not_before(&leaf)?;
        Ok(Issued {
            chain: vec![leaf, ca],
            peer,
            not_before,
        })
    }

    /// The chain as PEM, leaf first.
    pub fn chain_pem(&self) -> String {
        self.chain
            .iter()
            .map(|c| tls::pem_encode("CERTIFICATE", c))
            .collect()
    }

    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// `DC=…, O=…, OU=…, UID=…`.
    pub fn subject_text(&self) -> String {
        subject_text(&self.peer)
    }

    pub fn lifetime(&self) -> Duration {
        self.peer
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }
}

pub fn subject_text(p: &PeerIdentity) -> String {
    format!(
        "DC={}, O={}, OU={}, UID={}",
        p.cluster, p.subsystem, p.node, p.agent_id
    )
}

fn not_before(der: &[u8]) -> Result<SystemTime, String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    let t = cert.validity().not_before.timestamp();
    Ok(UNIX_EPOCH + Duration::from_secs(t.max(0) as u64))
}

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("the CA at {url} cannot be reached ({reason})")]
    Unreachable {
        url: String,
        reason: String,
        /// The node has no route yet (the network is still coming up).
        no_route: bool,
    },
    #[error("the CA at {url} presented {presented}, user-data pins {pinned}; refusing to send the CSR — check ca.fingerprint (`tessera ca fingerprint` on the CA host prints it)")]
    FingerprintMismatch {
        url: String,
        presented: String,
        pinned: String,
    },
    #[error("the CA at {url} failed verification: {reason}; check ca.url (the name must be in the CA's server certificate: `tessera ca init --san …`)")]
    Untrusted { url: String, reason: String },
    #[error("the CA at {url} refused: {code}: {reason}")]
    Refused {
        url: String,
        status: u16,
        code: String,
        reason: String,
    },
    #[error("the CA at {url} sent a reply certmgr cannot use: {why}")]
    BadReply { url: String, why: String },
    #[error("{0}")]
    Config(String),
}

impl CaError {
    /// A refusal with a reason code: retrying the same request cannot help.
    pub fn is_refusal(&self) -> bool {
        matches!(self, CaError::Refused { code, .. } if code != "timeout" && code != "internal")
    }

    /// The token itself was refused (used, expired, unknown, mis-bound, malformed).
    pub fn is_token_refusal(&self) -> bool {
        matches!(self, CaError::Refused { code, .. } if code.starts_with("token_"))
    }

    /// The network is not up yet: worth a quick retry.
    pub fn no_route(&self) -> bool {
        matches!(self, CaError::Unreachable { no_route: true, .. })
    }

    /// The short cause for STATUS=, e.g. "connection refused".
    pub fn cause(&self) -> String {
        match self {
            CaError::Unreachable { reason, .. } => reason.clone(),
            CaError::Refused { code, reason, .. } => format!("{code}: {reason}"),
            other => other.to_string(),
        }
    }
}

/// One CA, pinned by fingerprint.
#[derive(Debug, Clone)]
pub struct CaClient {
    url: HttpsUrl,
    url_text: String,
    fingerprint: String,
    limits: Limits,
}

#[derive(Serialize)]
struct RedeemBody<'a> {
    token: &'a str,
    csr_pem: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    subsystem: &'a str,
}

#[derive(Serialize)]
struct RenewBody<'a> {
    csr_pem: &'a str,
}

#[derive(Serialize)]
struct IssueBody<'a> {
    csr_pem: &'a str,
    subsystem: &'a str,
    agent_id: &'a str,
    capabilities: &'a [String],
    uris: &'a [String],
}

#[derive(Deserialize)]
struct IssuedReply {
    certificate_pem: String,
    ca_pem: String,
}

#[derive(Deserialize)]
struct ErrorReply {
    error: String,
    #[serde(default)]
    reason: String,
}

impl CaClient {
    pub fn new(url: &str, fingerprint: &str) -> Result<CaClient, CaError> {
        let parsed = HttpsUrl::parse(url).map_err(|e| CaError::Config(e.to_string()))?;
        tls::parse_fingerprint(fingerprint).map_err(|e| CaError::Config(e.to_string()))?;
        Ok(CaClient {
            url_text: parsed.to_string(),
            url: parsed,
            fingerprint: fingerprint.to_ascii_lowercase(),
            limits: Limits {
                connect: defaults::CONNECT_TIMEOUT,
                io: defaults::IO_TIMEOUT,
                max_body: defaults::MAX_REPLY,
            },
        })
    }

    /// Shorter timeouts (tests).
    pub fn with_timeouts(mut self, connect: Duration, io: Duration) -> CaClient {
        self.limits.connect = connect;
        self.limits.io = io;
        self
    }

    pub fn url(&self) -> &str {
        &self.url_text
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// First contact: `GET /v1/ca.pem` from a server that must present the pinned CA, and the
    /// downloaded certificate must have the pinned fingerprint too. Sends nothing secret.
    pub fn fetch_trust(&self) -> Result<CaTrust, CaError> {
        let config = tls::pinned_client_config(&self.fingerprint, None)
            .map_err(|e| CaError::Config(e.to_string()))?;
        let reply = self.exchange(config, "/v1/ca.pem", None, |source| {
            self.refused_server(source)
        })?;
        self.pinned_trust(&String::from_utf8_lossy(&reply), "/v1/ca.pem")
    }

    /// The CA certificate `pem` (from `what`), which must have the pinned fingerprint.
    fn pinned_trust(&self, pem: &str, what: &str) -> Result<CaTrust, CaError> {
        CaTrust::from_pem_pinned(pem, &self.fingerprint).map_err(|e| match e {
            TlsError::FingerprintMismatch { actual, .. } => CaError::FingerprintMismatch {
                url: self.url_text.clone(),
                presented: actual,
                pinned: self.fingerprint.clone(),
            },
            other => CaError::BadReply {
                url: self.url_text.clone(),
                why: format!("{what}: {other}"),
            },
        })
    }

    /// `GET /v1/crl.pem` from the trusted CA: its current revocation list, checked against the
    /// CA before it is handed to anyone.
    pub fn fetch_crl(&self, trust: &CaTrust) -> Result<String, CaError> {
        let config = tls::client_config(None, trust).map_err(|e| CaError::Config(e.to_string()))?;
        let reply = self.exchange(config, "/v1/crl.pem", None, |source| self.untrusted(source))?;
        let pem = String::from_utf8_lossy(&reply).into_owned();
        trust
            .clone()
            .with_crl_pem(&pem)
            .map_err(|e| CaError::BadReply {
                url: self.url_text.clone(),
                why: format!("/v1/crl.pem: {e}"),
            })?;
        Ok(pem)
    }

    /// `POST /v1/redeem` with the node's token and CSR, as the first contact: one connection
    /// to a server that must present the pinned CA in its chain — when it does not, the
    /// handshake fails and nothing is sent — and whose reply must carry that same CA.
    pub fn redeem_pinned(
        &self,
        token: &str,
        csr_pem: &str,
        node: Option<&str>,
        subsystem: &str,
    ) -> Result<(Issued, CaTrust), CaError> {
        let config = tls::pinned_client_config(&self.fingerprint, None)
            .map_err(|e| CaError::Config(e.to_string()))?;
        let body = RedeemBody {
            token,
            csr_pem,
            node,
            subsystem,
        };
        let reply = self.send(
            config,
            "/v1/redeem",
            &body,
            token.len() + csr_pem.len(),
            |source| self.refused_server(source),
        )?;
        let ca_pem = serde_json::from_slice::<IssuedReply>(&reply)
            .map(|r| r.ca_pem)
            .map_err(|e| CaError::BadReply {
                url: self.url_text.clone(),
                why: format!("not the JSON of an issued certificate ({e})"),
            })?;
        let trust = self.pinned_trust(&ca_pem, "/v1/redeem")?;
        let issued = self.issued(&reply, &trust)?;
        Ok((issued, trust))
    }

    /// `POST /v1/renew` over mTLS with the current identity.
    pub fn renew(
        &self,
        trust: &CaTrust,
        identity: Arc<CertifiedKey>,
        csr_pem: &str,
    ) -> Result<Issued, CaError> {
        let body = RenewBody { csr_pem };
        self.post(trust, Some(identity), "/v1/renew", &body, csr_pem.len())
    }

    /// `POST /v1/issue` over mTLS: a certificate for a child of this node.
    #[allow(clippy::too_many_arguments)]
    pub fn issue(
        &self,
        trust: &CaTrust,
        identity: Arc<CertifiedKey>,
        csr_pem: &str,
        subsystem: &str,
        agent_id: &str,
        capabilities: &[String],
        uris: &[String],
    ) -> Result<Issued, CaError> {
        let body = IssueBody {
            csr_pem,
            subsystem,
            agent_id,
            capabilities,
            uris,
        };
        self.post(trust, Some(identity), "/v1/issue", &body, csr_pem.len())
    }

    fn post(
        &self,
        trust: &CaTrust,
        identity: Option<Arc<CertifiedKey>>,
        path: &str,
        body: &impl Serialize,
        size_hint: usize,
    ) -> Result<Issued, CaError> {
        let config: Arc<ClientConfig> =
            tls::client_config(identity, trust).map_err(|e| CaError::Config(e.to_string()))?;
        let reply = self.send(config, path, body, size_hint, |source| {
            self.untrusted(source)
        })?;
        self.issued(&reply, trust)
    }

    /// A handshake with a server that the trusted CA does not vouch for.
    fn untrusted(&self, source: rustls::Error) -> CaError {
        CaError::Untrusted {
            url: self.url_text.clone(),
            reason: source.to_string(),
        }
    }

    /// POSTs `body` as JSON (serialized into one zeroized buffer) through [`Self::exchange`].
    fn send(
        &self,
        config: Arc<ClientConfig>,
        path: &str,
        body: &impl Serialize,
        size_hint: usize,
        on_tls: impl FnOnce(rustls::Error) -> CaError,
    ) -> Result<Vec<u8>, CaError> {
        // Sized once (CSR PEM needs no escaping but newlines), so serializing never
        // reallocates and leaves no copy of the token behind.
        let mut json = Zeroizing::new(Vec::with_capacity(2 * size_hint + 1024));
        serde_json::to_writer(&mut *json, body).map_err(|e| CaError::Config(e.to_string()))?;
        self.exchange(config, path, Some(&json), on_tls)
    }

    /// One request (a GET without `body`, a POST with it); the body of a 200 reply, or the
    /// error that explains the failed handshake (`on_tls`), transport or refusal.
    fn exchange(
        &self,
        config: Arc<ClientConfig>,
        path: &str,
        body: Option<&[u8]>,
        on_tls: impl FnOnce(rustls::Error) -> CaError,
    ) -> Result<Vec<u8>, CaError> {
        let reply = match https::request(&self.url, config, path, body, self.limits) {
            Ok(r) => r,
            Err(HttpError::Tls { source, .. }) => return Err(on_tls(source)),
            Err(e) => return Err(self.transport(e)),
        };
        if reply.status != 200 {
            return Err(self.error_reply(reply.status, &reply.body));
        }
        Ok(reply.body)
    }

    fn issued(&self, body: &[u8], trust: &CaTrust) -> Result<Issued, CaError> {
        let bad = |why: String| CaError::BadReply {
            url: self.url_text.clone(),
            why,
        };
        let reply: IssuedReply = serde_json::from_slice(body)
            .map_err(|e| bad(format!("not the JSON of an issued certificate ({e})")))?;
        let leaf = CertificateDer::pem_slice_iter(reply.certificate_pem.as_bytes())
            .next()
            .ok_or_else(|| bad("certificate_pem holds no certificate".into()))?
            .map_err(|e| bad(format!("certificate_pem: {e}")))?;
        let ca = CaTrust::from_pem(&reply.ca_pem).map_err(|e| bad(format!("ca_pem: {e}")))?;
        if ca.fingerprint() != trust.fingerprint() {
            return Err(bad(format!(
                "ca_pem is {}, not the pinned CA {}",
                ca.fingerprint(),
                trust.fingerprint()
            )));
        }
        Issued::from_der(leaf, ca.ca_der().clone()).map_err(bad)
    }

    fn transport(&self, e: HttpError) -> CaError {
        let no_route = matches!(
            e.raw_os_error(),
            Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH) | Some(libc::EADDRNOTAVAIL)
        );
        let reason = match &e {
            HttpError::Connect { source, .. } => io_reason(source),
            HttpError::Io { source, .. } => format!("connection broken: {}", io_reason(source)),
            HttpError::BadUrl { .. } => return CaError::Config(e.to_string()),
            other => other.to_string(),
        };
        CaError::Unreachable {
            url: self.url_text.clone(),
            reason,
            no_route,
        }
    }

    fn error_reply(&self, status: u16, body: &[u8]) -> CaError {
        match serde_json::from_slice::<ErrorReply>(body) {
            Ok(e) => CaError::Refused {
                url: self.url_text.clone(),
                status,
                code: e.error,
                reason: e.reason,
            },
            Err(_) if status >= 500 => CaError::Unreachable {
                url: self.url_text.clone(),
                reason: format!("HTTP {status}"),
                no_route: false,
            },
            Err(_) => CaError::BadReply {
                url: self.url_text.clone(),
                why: format!(
                    "HTTP {status}: {:?}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ),
            },
        }
    }

    /// The pinned handshake failed: find out what the server presented, with a second
    /// handshake that only records the chain and aborts (nothing is ever sent over it).
    fn refused_server(&self, why: rustls::Error) -> CaError {
        let presented = presented_chain(&self.url, self.limits);
        let pinned_present = presented.iter().any(|fp| fp == &self.fingerprint);
        match presented.last() {
            Some(last) if !pinned_present => CaError::FingerprintMismatch {
                url: self.url_text.clone(),
                presented: last.clone(),
                pinned: self.fingerprint.clone(),
            },
            _ => CaError::Untrusted {
                url: self.url_text.clone(),
                reason: why.to_string(),
            },
        }
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => "timed out".into(),
        _ => match e.raw_os_error() {
            Some(libc::ENETUNREACH) => "network unreachable".into(),
            Some(libc::EHOSTUNREACH) => "no route to host".into(),
            _ => e.to_string(),
        },
    }
}

/// Fingerprints of the certificates a server presents (leaf first), or none if no handshake
/// got that far.
fn presented_chain(url: &HttpsUrl, limits: Limits) -> Vec<String> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let verifier = Recorder {
        seen: seen.clone(),
        provider: tls::provider(),
    };
    let config = ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        });
    if let Ok(config) = config {
        let _ = https::request(url, Arc::new(config), "/", None, limits);
    }
    let out = seen.lock().map(|v| v.clone()).unwrap_or_default();
    out
}

/// Records the presented chain and refuses it: the handshake never completes, so nothing
/// is sent to the server.
#[derive(Debug)]
struct Recorder {
    seen: Arc<Mutex<Vec<String>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(tls::fingerprint(end_entity));
            seen.extend(intermediates.iter().map(|c| tls::fingerprint(c)));
        }
        Err(rustls::Error::General(
            "recording the presented chain only".into(),
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
