//! An agent's mTLS identity, from the hand-off to rustls: the supervisor passes a one-time
//! token on a descriptor, request_key(2) turns it into the certificate chain and the private
//! key in this process's keyring (the key stays with the kernel), and certmgr's `trust` op
//! gives the CA to pin and its CRL. Every agent's network API builds its server and client
//! configurations here, so they all trust only the cluster CA, check its CRL and see their
//! peers' subsystem and capabilities (`tessera_identity::tls::peer_identity`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig};
use tessera_identity::keys::NodeKey;
use tessera_identity::profile::PeerIdentity;
use tessera_identity::tls::{self, CaTrust, ClientAuth};

use crate::client::{self, ClientError};
use crate::fetch::{self, FetchError};

#[derive(Debug, thiserror::Error)]
pub enum AgentIdentityError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("the hand-off left no private key for certificate {serial} in this process's keyring; the request-key callout did not finish — see `tessera logs certmgr`")]
    NoPrivateKey { serial: String },
    #[error("the private key of certificate {serial} cannot be used: {reason}")]
    Key { serial: String, reason: String },
    #[error("asking certmgr for the CA to trust failed: {0}")]
    Trust(#[from] ClientError),
    #[error("the CA or CRL certmgr gave is unusable: {0}")]
    BadTrust(String),
}

/// A certificate whose key the kernel holds, with the CA (and CRL) to check peers against.
pub struct AgentIdentity {
    pub peer: PeerIdentity,
    pub certified: Arc<CertifiedKey>,
    pub trust: CaTrust,
}

impl AgentIdentity {
    /// The identity PID 1 handed this service: the token on the descriptor named by
    /// `$TESSERA_IDENTITY_FD` (service files with `identity = {…}`), redeemed through
    /// certmgr's default socket.
    pub fn from_handoff() -> Result<AgentIdentity, AgentIdentityError> {
        let fd = fetch::token_fd(None, std::env::var(crate::defaults::IDENTITY_FD_ENV).ok())?;
        let token = fetch::read_token_fd(fd)?;
        AgentIdentity::obtain(&token, &client::default_socket())
    }

    /// Redeems `token` through request_key(2) and asks certmgr at `socket` for the trust.
    pub fn obtain(token: &str, socket: &Path) -> Result<AgentIdentity, AgentIdentityError> {
        let fetched = fetch::fetch(token)?;
        let serial = fetched.peer.serial.clone();
        let (key, _) = fetched
            .private_key
            .ok_or_else(|| AgentIdentityError::NoPrivateKey {
                serial: serial.clone(),
            })?;
        let bad_key = |reason: String| AgentIdentityError::Key {
            serial: serial.clone(),
            reason,
        };
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(fetched.chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| bad_key(format!("its chain is not PEM: {e}")))?;
        let leaf = chain
            .first()
            .ok_or_else(|| bad_key("its chain is empty".into()))?;
        let node_key = NodeKey::adopt(key, leaf).map_err(|e| bad_key(e.to_string()))?;
        let certified = node_key
            .into_certified_key(chain)
            .map_err(|e| bad_key(e.to_string()))?;
        let (ca_pem, crl_pem) = client::trust(socket)?;
        let mut trust =
            CaTrust::from_pem(&ca_pem).map_err(|e| AgentIdentityError::BadTrust(e.to_string()))?;
        if let Some(crl) = crl_pem {
            trust = trust
                .with_crl_pem(&crl)
                .map_err(|e| AgentIdentityError::BadTrust(e.to_string()))?;
        }
        Ok(AgentIdentity {
            peer: fetched.peer,
            certified,
            trust,
        })
    }

    /// A server presenting this identity; clients must present a certificate of the cluster.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, tls::TlsError> {
        tls::server_config(self.certified.clone(), &self.trust, ClientAuth::Required)
    }

    /// A client presenting this identity, trusting only the cluster CA.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, tls::TlsError> {
        tls::client_config(Some(self.certified.clone()), &self.trust)
    }

    /// The DNS name in this identity's certificate (`<agent id>.<node>`), which clients dial.
    pub fn dns_name(&self) -> String {
        format!("{}.{}", self.peer.agent_id, self.peer.node)
    }

    /// A successor of this identity (thesis 4.8, subsequent hand-off): certmgr at `socket`
    /// gives a holder a token for its own subsystem and agent id, redeemed like the first one;
    /// the CA and CRL to trust are fetched again with it.
    pub fn renew(&self, socket: &Path) -> Result<AgentIdentity, AgentIdentityError> {
        let token = client::child_token(
            socket,
            &self.peer.subsystem,
            &self.peer.agent_id,
            &self.peer.capabilities,
        )?;
        AgentIdentity::obtain(&token, socket)
    }
}

/// Retries of a failed renewal come at least this far apart.
pub const RENEW_RETRY_MIN: Duration = Duration::from_secs(5);

/// How long to wait before renewing a certificate valid until `not_after`: two thirds of what
/// is left, at least [`RENEW_RETRY_MIN`] (so a failed renewal is retried ever more often as
/// the end nears, and at that pace once it is past).
pub fn renew_delay(not_after: SystemTime, now: SystemTime) -> Duration {
    let left = not_after.duration_since(now).unwrap_or_default();
    (left * 2 / 3).max(RENEW_RETRY_MIN)
}

/// What a renewal thread reports: the new identity, or why it could not get one.
pub type RenewReport = Result<PeerIdentity, String>;

/// The TLS configurations of an identity that keeps itself renewed. Servers and clients take
/// the current ones for each new connection; open connections keep the ones they started with.
pub struct LiveTls {
    current: RwLock<(Arc<ServerConfig>, Arc<ClientConfig>)>,
}

impl LiveTls {
    pub fn new(identity: &AgentIdentity) -> Result<Arc<LiveTls>, tls::TlsError> {
        Ok(Arc::new(LiveTls {
            current: RwLock::new((identity.server_config()?, identity.client_config()?)),
        }))
    }

    pub fn server(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    pub fn client(&self) -> Arc<ClientConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    /// Renews `identity` through certmgr at `socket` before it expires, for as long as the
    /// process runs; `report` hears of every renewal and failure.
    pub fn keep_renewed(
        self: &Arc<Self>,
        identity: AgentIdentity,
        socket: PathBuf,
        report: impl Fn(RenewReport) + Send + 'static,
    ) -> std::io::Result<()> {
        let live = self.clone();
        keep_renewed(
            identity,
            socket,
            move |new| {
                let configs = (new.server_config(), new.client_config());
                let (server, client) = match configs {
                    (Ok(s), Ok(c)) => (s, c),
                    (Err(e), _) | (_, Err(e)) => return Err(e.to_string()),
                };
                *live.current.write().unwrap_or_else(|p| p.into_inner()) = (server, client);
                Ok(())
            },
            report,
        )
    }
}

/// Renews `identity` through certmgr at `socket` before it expires, for as long as the process
/// runs, on a thread of its own: `apply` puts each successor in use (an error keeps the old one
/// and is retried like a failed renewal), `report` hears of every renewal and failure.
pub fn keep_renewed(
    identity: AgentIdentity,
    socket: PathBuf,
    apply: impl Fn(&AgentIdentity) -> Result<(), String> + Send + 'static,
    report: impl Fn(RenewReport) + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("identity-renew".into())
        .spawn(move || {
            let mut identity = identity;
            loop {
                std::thread::sleep(renew_delay(identity.peer.not_after, SystemTime::now()));
                let renewed = identity
                    .renew(&socket)
                    .map_err(|e| e.to_string())
                    .and_then(|new| apply(&new).map(|()| new));
                match renewed {
                    Ok(new) => {
                        report(Ok(new.peer.clone()));
                        identity = new;
                    }
                    Err(why) => report(Err(why)),
                }
            }
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_at_two_thirds_of_what_is_left_and_retries_near_the_end() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hours = |h: u64| Duration::from_secs(h * 3600);
        assert_eq!(renew_delay(now + hours(3), now), hours(2));
        assert_eq!(
            renew_delay(now + Duration::from_secs(6), now),
            RENEW_RETRY_MIN
        );
        // Already expired: keep trying at the retry pace.
        assert_eq!(renew_delay(now - hours(1), now), RENEW_RETRY_MIN);
    }
}
