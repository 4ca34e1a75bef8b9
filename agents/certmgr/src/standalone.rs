//! The node-local CA of a standalone node (no CA in user-data): made in memory when certmgr
//! starts, its key never leaves certmgr's memory and dies with it. It issues the node
//! identity and child identities under the same profile as the cluster CA, so agents still
//! speak mTLS — with peers on this node only, since nobody else trusts this CA.

use std::time::SystemTime;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, IsCa, KeyPair,
    KeyUsagePurpose, PublicKeyData, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use tessera_identity::profile::{self, CaIssuer, Leaf, Subject};
use tessera_identity::tls::CaTrust;

use crate::ca_client::Issued;
use crate::defaults;

#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    #[error("the node-local CA cannot be made: {0}")]
    Create(String),
    #[error("the node-local CA cannot issue this certificate: {0}")]
    Issue(String),
}

pub struct LocalCa {
    issuer: CaIssuer<KeyPair>,
    trust: CaTrust,
    lifetime: std::time::Duration,
}

impl LocalCa {
    /// A new P-256 CA for `cluster`, named after the node.
    pub fn new(cluster: &str, node: &str) -> Result<LocalCa, StandaloneError> {
        let err = |e: &dyn std::fmt::Display| StandaloneError::Create(e.to_string());
        profile::validate_cluster(cluster).map_err(|e| err(&e))?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| err(&e))?;
        let now = SystemTime::now();
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        let dc = cluster.try_into().map_err(|e| err(&e))?;
        dn.push(
            DnType::CustomDnType(profile::DC_OID.to_vec()),
            DnValue::Ia5String(dc),
        );
        dn.push(DnType::OrganizationName, "tessera");
        dn.push(DnType::CommonName, format!("Tessera node-local CA {node}"));
        p.distinguished_name = dn;
        p.not_before = asn1(now - defaults::BACKDATE)
            .map_err(|e| err(&e))?
            .to_datetime();
        p.not_after = asn1(now + defaults::STANDALONE_CA_LIFETIME)
            .map_err(|e| err(&e))?
            .to_datetime();
        p.serial_number = Some(SerialNumber::from_slice(
            &profile::random_serial().map_err(|e| err(&e))?,
        ));
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p.use_authority_key_identifier_extension = false;
        let cert = p.self_signed(&key).map_err(|e| err(&e))?;
        let der = CertificateDer::from(cert.der().to_vec());
        let trust = CaTrust::new(der.clone()).map_err(|e| err(&e))?;
        let issuer = CaIssuer::new(der, key).map_err(|e| err(&e))?;
        Ok(LocalCa {
            issuer,
            trust,
            lifetime: profile::DEFAULT_LIFETIME,
        })
    }

    /// Certificates of another lifetime (tests).
    pub fn with_lifetime(mut self, lifetime: std::time::Duration) -> LocalCa {
        self.lifetime = lifetime;
        self
    }

    pub fn trust(&self) -> &CaTrust {
        &self.trust
    }

    /// A certificate for `subject_key` under the profile.
    pub fn issue(
        &self,
        subject: Subject,
        capabilities: Vec<String>,
        uris: Vec<String>,
        subject_key: &impl PublicKeyData,
    ) -> Result<Issued, StandaloneError> {
        let err = |e: &dyn std::fmt::Display| StandaloneError::Issue(e.to_string());
        let now = SystemTime::now();
        let leaf = Leaf {
            subject,
            capabilities,
            uris,
            not_before: now - defaults::BACKDATE,
            not_after: now + self.lifetime,
            serial: profile::random_serial().map_err(|e| err(&e))?,
        };
        let der = self.issuer.sign(&leaf, subject_key).map_err(|e| err(&e))?;
        Issued::from_der(der, self.trust.ca_der().clone()).map_err(|e| err(&e))
    }
}

/// `t` as x509-parser's time, whose `to_datetime()` is what rcgen takes.
fn asn1(t: SystemTime) -> Result<x509_parser::time::ASN1Time, String> {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs() as i64;
    x509_parser::time::ASN1Time::from_timestamp(secs).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::{FromDer, X509Certificate};

    #[test]
    fn standalone_ca_issues_profile_correct_certificates() {
        let ca = LocalCa::new("tessera", "node1.example").unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let subject = Subject::new("tessera", "hub", "node1.example", "hub").unwrap();
        let issued = ca
            .issue(
                subject,
                vec!["container".into()],
                vec!["https://hub.node1.example:7443".into()],
                &key,
            )
            .unwrap();
        assert_eq!(issued.peer.subsystem, "hub");
        assert_eq!(issued.peer.node, "node1.example");
        assert_eq!(issued.peer.agent_id, "hub");
        assert_eq!(issued.peer.cluster, "tessera");
        assert_eq!(issued.peer.capabilities, vec!["container".to_string()]);
        assert_eq!(
            issued.subject_text(),
            "DC=tessera, O=hub, OU=node1.example, UID=hub"
        );
        assert_eq!(
            profile::uri_sans(issued.leaf()).unwrap(),
            vec!["https://hub.node1.example:7443".to_string()]
        );
        let lifetime = issued.lifetime().as_secs();
        assert!(
            (profile::DEFAULT_LIFETIME.as_secs()..=profile::DEFAULT_LIFETIME.as_secs() + 61)
                .contains(&lifetime),
            "{lifetime}"
        );
        // Signed by the local CA, and usable for mTLS against it.
        let (_, leaf) = X509Certificate::from_der(issued.leaf()).unwrap();
        let (_, root) = X509Certificate::from_der(ca.trust().ca_der()).unwrap();
        leaf.verify_signature(Some(root.public_key())).unwrap();
        assert!(root.is_ca());
        assert_eq!(leaf.issuer(), root.subject());
        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && eku.server_auth);
        // The chain is leaf + CA.
        assert_eq!(issued.chain.len(), 2);
        assert_eq!(issued.chain_pem().matches("BEGIN CERTIFICATE").count(), 2);
    }

    #[test]
    fn a_bad_name_is_refused_with_the_fix() {
        assert!(LocalCa::new("Bad Cluster", "n1").is_err());
        let ca = LocalCa::new("tessera", "n1").unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let subject = Subject {
            cluster: "tessera".into(),
            subsystem: "hub".into(),
            node: "n1".into(),
            agent_id: "x".into(),
        };
        let err = ca
            .issue(subject, vec![], vec!["https://other.n1/".into()], &key)
            .err()
            .unwrap();
        assert!(err.to_string().contains("URI"), "{err}");
    }
}
