//! A throwaway CA in memory, for in-process clusters (the tests and `tessera bench hub`):
//! it issues certificates under the Tessera profile, so the hubs run the very same mTLS
//! checks as on a node. Never used by a real node, which gets its identity from certmgr.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::sign::CertifiedKey;
use tessera_identity::profile::{random_serial, CaIssuer, Leaf, Subject};
use tessera_identity::tls::{certified_key_from_pem, pem_encode, CaTrust};

use crate::peer::Tls;

pub struct EphemeralCa {
    issuer: CaIssuer<KeyPair>,
    cluster: String,
}

/// A certificate and its key as PEM text (for the CLI, which reads files).
pub struct PemIdentity {
    pub chain_pem: String,
    pub key_pem: String,
}

impl EphemeralCa {
    pub fn new(cluster: &str) -> anyhow::Result<EphemeralCa> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::default();
        p.distinguished_name
            .push(DnType::CommonName, format!("{cluster} ephemeral CA"));
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key)?;
        Ok(EphemeralCa {
            issuer: CaIssuer::new(cert.der().clone(), key)?,
            cluster: cluster.to_string(),
        })
    }

    pub fn trust(&self) -> anyhow::Result<CaTrust> {
        Ok(CaTrust::new(self.issuer.cert_der().clone())?)
    }

    pub fn ca_pem(&self) -> String {
        pem_encode("CERTIFICATE", self.issuer.cert_der())
    }

    /// A certificate for `subsystem` / `agent_id` on `node`.
    pub fn issue_pem(
        &self,
        subsystem: &str,
        agent_id: &str,
        node: &str,
    ) -> anyhow::Result<PemIdentity> {
        let key = KeyPair::generate()?;
        let now = SystemTime::now();
        let leaf = Leaf {
            subject: Subject::new(&self.cluster, subsystem, node, agent_id)?,
            capabilities: vec![],
            uris: vec![],
            not_before: now - Duration::from_secs(60),
            not_after: now + Duration::from_secs(24 * 3600),
            serial: random_serial()?,
        };
        let der = self.issuer.sign(&leaf, &key)?;
        Ok(PemIdentity {
            chain_pem: pem_encode("CERTIFICATE", &der) + &self.ca_pem(),
            key_pem: key.serialize_pem(),
        })
    }

    pub fn issue(
        &self,
        subsystem: &str,
        agent_id: &str,
        node: &str,
    ) -> anyhow::Result<Arc<CertifiedKey>> {
        let p = self.issue_pem(subsystem, agent_id, node)?;
        Ok(certified_key_from_pem(&p.chain_pem, &p.key_pem)?)
    }

    /// The identity of the hub of `node`.
    pub fn hub(&self, node: &str) -> anyhow::Result<Tls> {
        Ok(Tls {
            identity: self.issue(
                crate::defaults::HUB_SUBSYSTEM,
                crate::defaults::HUB_AGENT_ID,
                node,
            )?,
            trust: self.trust()?,
        })
    }
}
