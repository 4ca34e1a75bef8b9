//! Who may do what on the node API. The TLS layer already refused anyone without a
//! certificate of the cluster CA (chain and CRL checked); this decides per request:
//!
//! - reading (every GET): any certificate of the cluster in the Tessera profile;
//! - changing the node (every POST and DELETE: life-cycle, services, volumes, firewall): an
//!   operator certificate (`O=admin`, from `tessera ca init` / `tessera ca admin-cert`) or a
//!   certificate whose capabilities list `node` (the node's certificate manager, a cluster
//!   controller holding that capability);
//! - changing containers (`/v1/containers`, `/v1/templates`): an operator certificate or one
//!   whose capabilities list `container` (a workload scheduler).

use tessera_identity::profile::PeerIdentity;

/// The capability that lets a non-operator certificate change a node.
pub const NODE_CAPABILITY: &str = "node";
/// The capability that lets a non-operator certificate change the node's containers.
pub const CONTAINER_CAPABILITY: &str = "container";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    /// A change, allowed to operators and holders of this capability.
    Change(&'static str),
}

/// Why a request is refused (HTTP 403), or Ok.
pub fn authorize(peer: Option<&PeerIdentity>, access: Access) -> Result<(), String> {
    let Some(peer) = peer else {
        return Err("the client certificate is not a Tessera certificate (no cluster, subsystem and agent id in its subject); use one issued by the cluster CA".into());
    };
    match access {
        Access::Read => Ok(()),
        Access::Change(capability) if peer.is_admin() || peer.has_capability(capability) => {
            Ok(())
        }
        Access::Change(capability) => Err(format!(
            "{} (O={}) may read but not change this: changes need an operator certificate (`tessera ca admin-cert`) or one with the `{capability}` capability",
            peer.dns_name(),
            peer.subsystem
        )),
    }
}

/// How the peer is named in events and life-cycle reasons.
pub fn who(peer: Option<&PeerIdentity>) -> String {
    match peer {
        Some(p) if p.is_admin() => format!("operator {}", p.agent_id),
        Some(p) => format!("{}/{}", p.subsystem, p.dns_name()),
        None => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn peer(subsystem: &str, caps: &[&str]) -> PeerIdentity {
        PeerIdentity {
            cluster: "prod".into(),
            subsystem: subsystem.into(),
            node: "n1.example".into(),
            agent_id: "a".into(),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            serial: "01".into(),
            not_after: SystemTime::now(),
        }
    }

    #[test]
    fn operators_and_node_capability_holders_may_change_the_node() {
        let node = Access::Change(NODE_CAPABILITY);
        assert_eq!(authorize(Some(&peer("admin", &[])), node), Ok(()));
        assert_eq!(
            authorize(Some(&peer("certmgr", &["node", "hub"])), node),
            Ok(())
        );
    }

    #[test]
    fn other_cluster_members_may_only_read() {
        let hub = peer("hub", &["container"]);
        assert_eq!(authorize(Some(&hub), Access::Read), Ok(()));
        let why = authorize(Some(&hub), Access::Change(NODE_CAPABILITY)).unwrap_err();
        assert!(why.contains("admin-cert") && why.contains("O=hub"), "{why}");
    }

    #[test]
    fn containers_change_with_the_container_capability_only() {
        let containers = Access::Change(CONTAINER_CAPABILITY);
        assert_eq!(authorize(Some(&peer("admin", &[])), containers), Ok(()));
        assert_eq!(
            authorize(Some(&peer("sched", &["container"])), containers),
            Ok(())
        );
        let why = authorize(Some(&peer("certmgr", &["node", "hub"])), containers).unwrap_err();
        assert!(why.contains("`container` capability"), "{why}");
    }

    #[test]
    fn certificates_outside_the_profile_are_refused() {
        assert!(authorize(None, Access::Read).is_err());
    }
}
