//! Making a child identity: a new key of the node's key mode, certified by the cluster CA
//! (`POST /v1/issue` over mTLS with the node identity) or by the node-local CA. The child gets
//! the node's cluster and node name; the CA (or, standalone, certmgr) decides the rest from
//! the request, never from the key.

use tessera_identity::keys::KeyMode;
use tessera_identity::profile::{self, Subject};

use crate::keygen::{ChildKey, KeygenHelper};
use crate::node::{NodeIdentity, Signer};
use crate::protocol::ChildRequest;
use crate::tokens::ChildIdentity;

/// Checks the names of a request before anything is generated.
pub fn validate(req: &ChildRequest) -> Result<(), String> {
    profile::validate_subsystem(&req.subsystem).map_err(|e| e.to_string())?;
    profile::validate_agent_id(&req.agent_id).map_err(|e| e.to_string())?;
    profile::validate_capabilities(&req.capabilities).map_err(|e| e.to_string())?;
    Ok(())
}

/// Generates, certifies and returns the child's identity (the slow part: runs on its own
/// thread while the token is already on its way).
pub fn make(
    node: &NodeIdentity,
    key_mode: KeyMode,
    helper: Option<&KeygenHelper>,
    req: &ChildRequest,
) -> Result<ChildIdentity, String> {
    let key = ChildKey::generate(key_mode, helper).map_err(|e| e.to_string())?;
    let issued = match &node.signer {
        Signer::Ca { client, trust } => {
            let csr = key.csr_pem().map_err(|e| e.to_string())?;
            client
                .issue(
                    trust,
                    node.certified.clone(),
                    &csr,
                    &req.subsystem,
                    &req.agent_id,
                    &req.capabilities,
                    &req.uris,
                )
                .map_err(|e| e.to_string())?
        }
        Signer::Local(ca) => {
            let me = &node.issued.peer;
            let subject = Subject::new(&me.cluster, &req.subsystem, &me.node, &req.agent_id)
                .map_err(|e| e.to_string())?;
            ca.issue(
                subject,
                req.capabilities.clone(),
                req.uris.clone(),
                &key.public_key(),
            )
            .map_err(|e| e.to_string())?
        }
    };
    Ok(ChildIdentity {
        chain_pem: issued.chain_pem(),
        key_mode: key.mode(),
        pkcs8: key.into_pkcs8(),
        peer: issued.peer,
    })
}
