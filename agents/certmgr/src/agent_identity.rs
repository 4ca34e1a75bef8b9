//! An agent's mTLS identity, from the hand-off to rustls: the supervisor passes a one-time
//! token on a descriptor, request_key(2) turns it into the certificate chain and the private
//! key in this process's keyring (the key stays with the kernel), and certmgr's `trust` op
//! gives the CA to pin and its CRL. Every agent's network API builds its server and client
//! configurations here, so they all trust only the cluster CA, check its CRL and see their
//! peers' subsystem and capabilities (`tessera_identity::tls::peer_identity`).

use std::path::Path;
use std::sync::Arc;

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
}
