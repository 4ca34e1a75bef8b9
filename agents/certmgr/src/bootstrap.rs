//! Node bootstrap (thesis 4.9.6, "Initial handoff"): with the key generated on the node,
//! send the one-time token and the CSR to a server that must present the pinned CA; or, standalone, have the node-local CA sign. Either way the
//! result is the node identity: certificate chain plus the kernel-held key, for mTLS.

use std::sync::Arc;

use tessera_identity::keys::NodeKey;
use tessera_identity::profile::{self, Subject};

use crate::ca_client::{CaClient, CaError, Issued};
use crate::defaults;
use crate::node::{NodeIdentity, Signer};
use crate::renew;
use crate::settings::CaSettings;
use crate::standalone::LocalCa;

/// One bootstrap attempt against the CA: the token and CSR go over one connection, and only
/// once the server proved in the handshake that it holds the pinned CA.
pub fn attempt(
    client: &CaClient,
    ca: &CaSettings,
    key: &NodeKey,
    node: Option<&str>,
) -> Result<NodeIdentity, CaError> {
    let csr = profile::csr_pem(key).map_err(|e| CaError::Config(format!("CSR: {e}")))?;
    let (issued, trust) =
        client.redeem_pinned(ca.token.expose(), &csr, node, defaults::NODE_SUBSYSTEM)?;
    certify(
        key,
        issued,
        Signer::Ca {
            client: client.clone(),
            trust,
        },
    )
    .map_err(CaError::Config)
}

/// Renews the node identity over mTLS (same key, new certificate).
pub fn renew_with_ca(key: &NodeKey, current: &NodeIdentity) -> Result<NodeIdentity, CaError> {
    let Signer::Ca { client, trust } = &current.signer else {
        return Err(CaError::Config("not a CA-issued identity".into()));
    };
    let csr = profile::csr_pem(key).map_err(|e| CaError::Config(format!("CSR: {e}")))?;
    let issued = client.renew(trust, current.certified.clone(), &csr)?;
    certify(key, issued, current.signer.clone()).map_err(CaError::Config)
}

/// The certificate with the key, for rustls, and when to renew it.
pub fn certify(key: &NodeKey, issued: Issued, signer: Signer) -> Result<NodeIdentity, String> {
    let certified = key
        .clone()
        .into_certified_key(issued.chain.clone())
        .map_err(|e| e.to_string())?;
    let renew_at = renew::renew_at(issued.not_before, issued.peer.not_after);
    Ok(NodeIdentity {
        issued,
        certified,
        renew_at,
        signer,
    })
}

/// The node identity from the node-local CA: `O=certmgr, UID=certmgr`, allowed to ask for the
/// node's usual children.
pub fn standalone(
    local: &Arc<LocalCa>,
    key: &NodeKey,
    cluster: &str,
    node: &str,
) -> Result<NodeIdentity, String> {
    let subject = Subject::new(
        cluster,
        defaults::NODE_SUBSYSTEM,
        node,
        defaults::NODE_SUBSYSTEM,
    )
    .map_err(|e| e.to_string())?;
    let caps = defaults::STANDALONE_CAPABILITIES
        .iter()
        .map(|s| s.to_string())
        .collect();
    let issued = local
        .issue(subject, caps, vec![], key)
        .map_err(|e| e.to_string())?;
    certify(key, issued, Signer::Local(local.clone()))
}

/// The node's name for its certificates: user-data's, else the kernel's host name (PID 1 set
/// it from `tessera.hostname=`), else "tessera".
pub fn node_name(userdata: Option<&str>, kernel: Option<&str>) -> String {
    [userdata, kernel]
        .into_iter()
        .flatten()
        .map(|n| n.trim().trim_end_matches('.').to_ascii_lowercase())
        .find(|n| profile::validate_fqdn(n).is_ok())
        .unwrap_or_else(|| tessera_common::paths::DEFAULT_HOSTNAME.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_name_prefers_user_data_then_the_kernel() {
        assert_eq!(node_name(Some("n1.example"), Some("k")), "n1.example");
        assert_eq!(node_name(None, Some("Node2.Example.\n")), "node2.example");
        assert_eq!(node_name(Some("bad name"), None), "tessera");
        assert_eq!(node_name(None, None), "tessera");
    }
}
