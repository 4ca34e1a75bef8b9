//! What the CA does for each API call, independent of HTTP: redeem a token, renew, sign for a
//! certificate manager, mint a token for an admin. Also keeps the CRL and the TLS
//! configuration (which carries the CRL) current.
//!
//! Every operation validates its input completely before it writes anything; the write
//! (token compare-and-swap, certificate record, audit entries) is one transaction.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::CertificateRevocationListDer;
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use serde::Deserialize;
use serde_json::json;
use tessera_identity::profile::{self, PeerIdentity, Subject, ADMIN_SUBSYSTEM};
use tessera_identity::tls::{self, CaTrust, ClientAuth};

use crate::audit;
use crate::crl::{self, Crl};
use crate::csr;
use crate::error::{ApiError, Code};
use crate::issue::{Authority, Issued};
use crate::records::{self, Kind};
use crate::state::{self, Db};
use crate::token::{self, Binding, Claims};

/// `POST /v1/redeem`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedeemRequest {
    pub token: String,
    pub csr_pem: String,
    /// Optional: the node the caller believes the token is for (refused if different).
    #[serde(default)]
    pub node: Option<String>,
    /// Optional: the subsystem the caller believes the token is for.
    #[serde(default)]
    pub subsystem: Option<String>,
}

/// `POST /v1/renew`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub csr_pem: String,
}

/// `POST /v1/issue`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    pub csr_pem: String,
    pub subsystem: String,
    pub agent_id: String,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub uris: Vec<String>,
}

/// `POST /v1/admin/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub node: String,
    pub subsystem: String,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub ttl_s: Option<u64>,
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub uris: Vec<String>,
}

/// The verified client certificate of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub identity: PeerIdentity,
    pub der: Vec<u8>,
}

impl Peer {
    /// From a connection's first peer certificate; `None` if absent or outside the profile.
    pub fn from_certificates(
        certs: Option<&[rustls::pki_types::CertificateDer<'_>]>,
    ) -> Option<Peer> {
        let der = certs?.first()?;
        let identity = PeerIdentity::from_der(der).ok()?;
        Some(Peer {
            identity,
            der: der.as_ref().to_vec(),
        })
    }
}

/// The running CA.
pub struct Ca {
    pub authority: Authority,
    pub db: Db,
    crl: RwLock<Crl>,
    tls: RwLock<Arc<ServerConfig>>,
    server_identity: Arc<CertifiedKey>,
}

fn refuse_admin(subsystem: &str) -> Result<(), ApiError> {
    if subsystem == ADMIN_SUBSYSTEM {
        return Err(ApiError::new(
            Code::InvalidName,
            "admin certificates are made only by `tessera ca init` on the CA's machine, never through tokens or delegation",
        ));
    }
    Ok(())
}

fn needs_certificate(what: &str) -> ApiError {
    ApiError::new(
        Code::ClientCertificateRequired,
        format!("{what} needs a client certificate from this CA and the connection presented none; connect with your certificate and key (curl --cert cert.pem --key key.pem)"),
    )
}

impl Ca {
    /// Builds the CA from its loaded parts; signs a first CRL if the database has none.
    pub async fn new(
        authority: Authority,
        db: Db,
        server_identity: Arc<CertifiedKey>,
    ) -> Result<Arc<Ca>, ApiError> {
        let (crl, authority) = match db.read(crl::current)? {
            Some(crl) if !crl::needs_refresh(Some(&crl), state::now()) => (crl, authority),
            // Signing needs the authority inside the writer; it comes back out with the CRL.
            _ => {
                db.write(move |c| {
                    let crl = crl::refresh(c, &authority, state::now())?;
                    Ok((crl, authority))
                })
                .await?
            }
        };
        Self::assemble(authority, db, server_identity, crl)
    }

    fn assemble(
        authority: Authority,
        db: Db,
        server_identity: Arc<CertifiedKey>,
        crl: Crl,
    ) -> Result<Arc<Ca>, ApiError> {
        let tls = Self::tls_for(&authority, &server_identity, &crl)?;
        Ok(Arc::new(Ca {
            authority,
            db,
            crl: RwLock::new(crl),
            tls: RwLock::new(tls),
            server_identity,
        }))
    }

    fn tls_for(
        authority: &Authority,
        identity: &Arc<CertifiedKey>,
        crl: &Crl,
    ) -> Result<Arc<ServerConfig>, ApiError> {
        let trust = CaTrust::new(authority.ca.cert_der().clone())
            .and_then(|t| t.with_crls(vec![CertificateRevocationListDer::from(crl.der.clone())]))
            .map_err(ApiError::internal)?;
        tls::server_config(identity.clone(), &trust, ClientAuth::Optional)
            .map_err(ApiError::internal)
    }

    /// The TLS configuration for new connections (it carries the current CRL).
    pub fn tls_config(&self) -> Arc<ServerConfig> {
        match self.tls.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn crl_pem(&self) -> String {
        match self.crl.read() {
            Ok(c) => c.pem(),
            Err(poisoned) => poisoned.into_inner().pem(),
        }
    }

    fn install_crl(&self, crl: Crl) -> Result<(), ApiError> {
        let tls = Self::tls_for(&self.authority, &self.server_identity, &crl)?;
        tracing::info!(crl_number = crl.number, "CRL installed");
        if let Ok(mut t) = self.tls.write() {
            *t = tls;
        }
        if let Ok(mut c) = self.crl.write() {
            *c = crl;
        }
        Ok(())
    }

    fn crl_number(&self) -> u64 {
        self.crl.read().map(|c| c.number).unwrap_or(0)
    }

    /// Picks up a CRL written by another process (`tessera ca revoke`) and re-signs the CRL
    /// when it is due. Called periodically by the server.
    pub async fn sync_crl(self: &Arc<Self>) -> Result<(), ApiError> {
        let stored = self.db.read(crl::current)?;
        if let Some(stored) = &stored {
            if stored.number != self.crl_number() {
                self.install_crl(stored.clone())?;
            }
        }
        if crl::needs_refresh(stored.as_ref(), state::now()) {
            let ca = self.clone();
            let fresh = self
                .db
                .write(move |c| crl::refresh(c, &ca.authority, state::now()))
                .await?;
            self.install_crl(fresh)?;
        }
        Ok(())
    }

    /// Redeems a one-time token for a certificate.
    pub async fn redeem(self: &Arc<Self>, req: RedeemRequest) -> Result<Issued, ApiError> {
        token::check_shape(&req.token)?;
        let claims = Claims {
            node: req.node,
            subsystem: req.subsystem,
        };
        let key = csr::verify_pem(&req.csr_pem)?;
        let hash = token::hash(&req.token);
        let record = self.db.read(|c| token::lookup(c, &hash))?;
        let rec = match (token::check(record.as_ref(), &claims, state::now()), record) {
            (Ok(()), Some(rec)) => rec,
            (Err(e), Some(rec)) => {
                let code = e.code;
                self.db
                    .write(move |c| token::audit_refusal(c, &rec, code))
                    .await?;
                return Err(e);
            }
            (Err(e), None) => {
                return Err(e);
            }
            (Ok(()), None) => return Err(ApiError::internal("token check without record")),
        };
        let b = &rec.binding;
        let subject = Subject::new(&self.authority.cluster, &b.subsystem, &b.node, &b.agent_id)?;
        let issued = self.authority.sign_agent(
            subject,
            b.capabilities.clone(),
            b.uris.clone(),
            &key.spki,
            None,
        )?;
        let key_kind = key.kind.to_string();
        let outcome = self
            .db
            .write(move |c| {
                let now = state::now();
                if !token::consume(c, &rec.hash, now, &issued.serial)? {
                    // Lost the race to a concurrent redemption, or expired meanwhile.
                    let fresh = token::lookup(c, &rec.hash)?;
                    let err = token::check(fresh.as_ref(), &Claims::default(), now)
                        .err()
                        .unwrap_or_else(|| ApiError::new(Code::TokenUsed, "token already used"));
                    token::audit_refusal(c, &rec, err.code)?;
                    return Ok(Err(err));
                }
                records::insert(c, &issued, Kind::Redeem, None, now)?;
                audit::append(
                    c,
                    "token_redeemed",
                    json!({ "token_hash": rec.hash, "serial": issued.serial }),
                )?;
                audit::append(
                    c,
                    "certificate_issued",
                    json!({
                        "serial": issued.serial, "subject": issued.subject, "via": "redeem",
                        "key": key_kind, "not_after": issued.not_after,
                    }),
                )?;
                Ok(Ok(issued))
            })
            .await?;
        let issued = outcome?;
        tracing::info!(serial = %issued.serial, subject = %issued.subject, via = "redeem", "certificate issued");
        Ok(issued)
    }

    /// The presented certificate, checked against the records (ours, valid, not revoked).
    fn presented(&self, peer: Option<&Peer>, what: &str) -> Result<Peer, ApiError> {
        let peer = peer.ok_or_else(|| needs_certificate(what))?;
        if peer.identity.cluster != self.authority.cluster {
            return Err(ApiError::new(
                Code::CertificateUnknown,
                format!(
                    "the certificate is for cluster {:?}, this CA serves {:?}",
                    peer.identity.cluster, self.authority.cluster
                ),
            ));
        }
        let serial = peer.identity.serial.clone();
        self.db
            .read(|c| records::check_presented(c, &serial, state::now()))?;
        Ok(peer.clone())
    }

    /// Renews the presented certificate: same subject, capabilities and endpoints, new
    /// validity, the CSR's (possibly new) key.
    pub async fn renew(
        self: &Arc<Self>,
        peer: Option<&Peer>,
        req: RenewRequest,
    ) -> Result<Issued, ApiError> {
        let peer = self.presented(peer, "renewal")?;
        let key = csr::verify_pem(&req.csr_pem)?;
        let uris = profile::uri_sans(&peer.der)?;
        let issued = self.authority.sign_agent(
            peer.identity.subject(),
            peer.identity.capabilities.clone(),
            uris,
            &key.spki,
            None,
        )?;
        let previous = peer.identity.serial.clone();
        let issued = self
            .db
            .write(move |c| {
                let now = state::now();
                // Again inside the transaction: a revocation may have landed meanwhile.
                records::check_presented(c, &previous, now)?;
                records::insert(c, &issued, Kind::Renew, Some(&previous), now)?;
                audit::append(
                    c,
                    "certificate_renewed",
                    json!({
                        "serial": issued.serial, "previous": previous,
                        "subject": issued.subject, "not_after": issued.not_after,
                    }),
                )?;
                Ok(issued)
            })
            .await?;
        tracing::info!(serial = %issued.serial, subject = %issued.subject, via = "renew", "certificate issued");
        Ok(issued)
    }

    /// Delegated signing for a certificate manager: the caller's certificate must list the
    /// requested subsystem, and may only pass on capabilities it holds itself.
    pub async fn issue(
        self: &Arc<Self>,
        peer: Option<&Peer>,
        req: IssueRequest,
    ) -> Result<Issued, ApiError> {
        let peer = self.presented(peer, "delegated signing")?;
        refuse_admin(&req.subsystem)?;
        let id = &peer.identity;
        if !id.has_capability(&req.subsystem) {
            return Err(ApiError::new(
                Code::CapabilityMissing,
                format!(
                    "certificate {} ({}) may request certificates for [{}], not for {:?}; the operator grants capabilities with `tessera ca token … --capabilities …`",
                    id.serial,
                    id.subject(),
                    id.capabilities.join(", "),
                    req.subsystem
                ),
            ));
        }
        if let Some(extra) = req.capabilities.iter().find(|c| !id.has_capability(c)) {
            return Err(ApiError::new(
                Code::CapabilityMissing,
                format!(
                    "certificate {} cannot pass on capability {extra:?}, which it does not hold itself",
                    id.serial
                ),
            ));
        }
        let subject = Subject::new(
            &self.authority.cluster,
            &req.subsystem,
            &id.node,
            &req.agent_id,
        )?;
        profile::validate_capabilities(&req.capabilities)?;
        for u in &req.uris {
            profile::validate_uri(u, &subject.dns_name())?;
        }
        let key = csr::verify_pem(&req.csr_pem)?;
        let issued =
            self.authority
                .sign_agent(subject, req.capabilities, req.uris, &key.spki, None)?;
        let by = id.serial.clone();
        let key_kind = key.kind.to_string();
        let issued = self
            .db
            .write(move |c| {
                let now = state::now();
                records::check_presented(c, &by, now)?;
                records::insert(c, &issued, Kind::Issue, Some(&by), now)?;
                audit::append(
                    c,
                    "certificate_issued",
                    json!({
                        "serial": issued.serial, "subject": issued.subject, "via": "issue",
                        "by": by, "key": key_kind, "not_after": issued.not_after,
                    }),
                )?;
                Ok(issued)
            })
            .await?;
        tracing::info!(serial = %issued.serial, subject = %issued.subject, via = "issue", "certificate issued");
        Ok(issued)
    }

    /// Mints a token for an admin client.
    pub async fn create_token(
        self: &Arc<Self>,
        peer: Option<&Peer>,
        req: TokenRequest,
    ) -> Result<token::Created, ApiError> {
        let peer = peer.ok_or_else(|| {
            ApiError::new(
                Code::ClientCertificateRequired,
                "admin endpoints need the operator's client certificate and the connection presented none; use admin.pem and admin.key from the CA's state directory (curl --cert admin.pem --key admin.key), or run `tessera ca token` on the CA's machine",
            )
        })?;
        if !peer.identity.is_admin() {
            return Err(ApiError::new(
                Code::AdminRequired,
                format!(
                    "admin endpoints need an admin certificate (O=admin); certificate {} is for subsystem {:?}",
                    peer.identity.serial, peer.identity.subsystem
                ),
            ));
        }
        let peer = self.presented(Some(peer), "an admin endpoint")?;
        refuse_admin(&req.subsystem)?;
        if req.capabilities.iter().any(|c| c == ADMIN_SUBSYSTEM) {
            refuse_admin(ADMIN_SUBSYSTEM)?;
        }
        let binding = Binding::new(
            &req.node,
            &req.subsystem,
            req.agent_id.as_deref(),
            req.capabilities,
            req.uris,
        )?;
        let ttl = Duration::from_secs(req.ttl_s.unwrap_or(token::DEFAULT_TTL.as_secs()));
        let by = format!("admin:{}", peer.identity.serial);
        let created = self
            .db
            .write(move |c| token::create(c, &binding, ttl, &by, state::now()))
            .await?;
        tracing::info!(node = %req.node, subsystem = %req.subsystem, "token issued");
        Ok(created)
    }
}
