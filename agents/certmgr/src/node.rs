//! The node identity and what certmgr says about it: the mode (cluster CA or standalone), the
//! state (waiting or ready) with the reason, the certificate, its renewal time, and the
//! certificate chain published in the kernel keyring as `tessera:node:cert`.

use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::sign::CertifiedKey;
use serde_json::{json, Value};
use tessera_identity::keyring::{Key, Keyring, KeyringError, Perm, Permissions};
use tessera_identity::keys::KeyMode;
use tessera_identity::tls::CaTrust;

use crate::ca_client::{CaClient, Issued};
use crate::standalone::LocalCa;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The cluster CA from user-data.
    Ca,
    /// The node-local CA.
    Standalone,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Ca => "ca",
            Mode::Standalone => "standalone",
        }
    }
}

/// Who signs for this node right now.
#[derive(Clone)]
pub enum Signer {
    Ca { client: CaClient, trust: CaTrust },
    Local(Arc<LocalCa>),
}

/// The node's certificate with its key, ready for mTLS.
#[derive(Clone)]
pub struct NodeIdentity {
    pub issued: Issued,
    pub certified: Arc<CertifiedKey>,
    pub renew_at: SystemTime,
    pub signer: Signer,
}

pub struct State {
    pub key_mode: KeyMode,
    /// What child identities' keys are made with.
    pub child_key_mode: KeyMode,
    pub mode: Mode,
    pub ready: bool,
    /// The STATUS= text: why it waits, or what it holds.
    pub reason: String,
    pub identity: Option<NodeIdentity>,
    /// The cluster CA's latest CRL (PEM), for agents' mTLS: fetched after every certificate.
    pub crl_pem: Option<String>,
}

/// The state, shared by the identity loop and the socket API.
pub struct Shared {
    state: RwLock<State>,
}

impl Shared {
    pub fn new(key_mode: KeyMode, child_key_mode: KeyMode) -> Arc<Shared> {
        Arc::new(Shared {
            state: RwLock::new(State {
                key_mode,
                child_key_mode,
                mode: Mode::Ca,
                ready: false,
                reason: "starting".into(),
                identity: None,
                crl_pem: None,
            }),
        })
    }

    pub fn update(&self, f: impl FnOnce(&mut State)) {
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
    }

    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
        f(&s)
    }

    /// The identity to sign children with, if the node has one.
    pub fn identity(&self) -> Option<NodeIdentity> {
        self.read(|s| s.identity.clone())
    }

    /// The `trust` reply of the socket protocol: the CA certificate agents pin and its CRL.
    pub fn trust_json(&self) -> Option<Value> {
        self.read(|s| {
            let id = s.identity.as_ref()?;
            let ca_pem = match &id.signer {
                Signer::Ca { trust, .. } => trust.ca_pem(),
                Signer::Local(local) => local.trust().ca_pem(),
            };
            Some(json!({"ca_pem": ca_pem, "crl_pem": s.crl_pem}))
        })
    }

    /// The `status` reply of the socket protocol.
    pub fn status_json(&self) -> Value {
        self.read(|s| {
            let node = s.identity.as_ref().map(|id| {
                json!({
                    "subject": id.issued.subject_text(),
                    "serial": id.issued.peer.serial,
                    "not_after": rfc3339(id.issued.peer.not_after),
                    "renew_at": rfc3339(id.renew_at),
                    "key_mode": s.key_mode.name(),
                    "capabilities": id.issued.peer.capabilities,
                    "issuer": match &id.signer {
                        Signer::Ca { client, .. } => client.url().to_string(),
                        Signer::Local(_) => "node-local CA".to_string(),
                    },
                })
            });
            json!({
                "mode": s.mode.as_str(),
                "state": if s.ready { "ready" } else { "waiting" },
                "reason": s.reason,
                "key_mode": s.key_mode.name(),
                "child_key_mode": s.child_key_mode.name(),
                "node": node,
            })
        })
    }
}

/// RFC 3339 with seconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The STATUS= line of a node that holds `id`.
pub fn ready_status(mode: Mode, id: &NodeIdentity) -> String {
    let prefix = match mode {
        Mode::Standalone => "standalone identity (node-local CA): ",
        Mode::Ca => "identity ",
    };
    format!(
        "{prefix}{} serial {} valid until {}, renew at {}",
        id.issued.subject_text(),
        short_serial(&id.issued.peer.serial),
        rfc3339(id.issued.peer.not_after),
        rfc3339(id.renew_at)
    )
}

fn short_serial(serial: &str) -> &str {
    &serial[..serial.len().min(16)]
}

/// Writes the chain to the `tessera:node:cert` user key of `keyring` (root's user keyring on a
/// node): readable by root processes, which is fine for certificates; the key is elsewhere.
pub fn publish_chain(keyring: Keyring, chain_pem: &str) -> Result<Key, KeyringError> {
    let key = keyring.add(
        "user",
        crate::defaults::NODE_CERT_DESC,
        chain_pem.as_bytes(),
    )?;
    key.set_perm(Permissions::new(
        Perm::ALL,
        Perm::VIEW | Perm::READ | Perm::SEARCH,
        Perm::NONE,
        Perm::NONE,
    ))?;
    Ok(key)
}
