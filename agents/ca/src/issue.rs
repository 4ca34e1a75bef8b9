//! Issuing certificates: the CA's own (self-signed CA, its HTTPS server certificate, the
//! operator's admin certificate) and agent certificates from verified public keys.
//!
//! The CA key is ECDSA P-256: signing takes tens of microseconds (RSA-2048 takes about a
//! millisecond), which is what lets one CA issue thousands of short-lived certificates a
//! second; P-256 is verified by every TLS stack in use (webpki, OpenSSL, Go, browsers), and
//! ring, the only crypto library in the image, signs with it (it cannot generate RSA keys).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use serde_json::json;
use tessera_identity::profile::{self, CaIssuer, Leaf, Subject};
use tessera_identity::tls::pem_encode;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

use crate::error::ApiError;
use crate::files::{StateDir, CA_CERT, CA_KEY};

/// The CA certificate's lifetime.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The CA's HTTPS certificate and the admin certificate: renewed by `serve` / re-`init`.
pub const SERVICE_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start this far in the past, for clocks slightly behind the CA's.
pub const BACKDATE: Duration = Duration::from_secs(60);

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn rcgen_time(t: SystemTime) -> Result<time::OffsetDateTime, ApiError> {
    time::OffsetDateTime::from_unix_timestamp(unix(t)).map_err(ApiError::internal)
}

/// A certificate just signed.
#[derive(Debug, Clone)]
pub struct Issued {
    pub der: CertificateDer<'static>,
    pub serial: String,
    /// The subject as text, for records and logs.
    pub subject: String,
    pub subsystem: String,
    pub node: String,
    pub agent_id: String,
    pub not_before: i64,
    pub not_after: i64,
}

impl Issued {
    pub fn pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.der)
    }

    /// The API's reply: `{certificate_pem, ca_pem, serial, not_after}`.
    pub fn reply(&self, ca_pem: &str) -> serde_json::Value {
        json!({
            "certificate_pem": self.pem(),
            "ca_pem": ca_pem,
            "serial": self.serial,
            "not_after": rfc3339(self.not_after),
        })
    }
}

pub fn rfc3339(secs: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The CA: its certificate and key, the cluster it serves, the lifetime it gives.
pub struct Authority {
    pub cluster: String,
    pub ca: CaIssuer<KeyPair>,
    pub ca_pem: String,
    pub ca_not_after: i64,
    pub lifetime: Duration,
}

impl Authority {
    /// Loads `ca.pem` and `ca.key` from the state directory.
    pub fn load(state: &StateDir, lifetime: Duration) -> anyhow::Result<Authority> {
        use anyhow::Context;
        let ca_pem = state.read(CA_CERT)?;
        let key = KeyPair::from_pem(&state.read(CA_KEY)?).with_context(|| {
            format!("{} is not a PEM private key", state.path(CA_KEY).display())
        })?;
        let trust = tessera_identity::tls::CaTrust::from_pem(&ca_pem)?;
        let der = trust.ca_der().clone();
        let (_, cert) = X509Certificate::from_der(&der)
            .map_err(|e| anyhow::anyhow!("{}: {e}", state.path(CA_CERT).display()))?;
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            anyhow::bail!(
                "{} does not belong to the certificate in {}; restore the matching pair",
                state.path(CA_KEY).display(),
                state.path(CA_CERT).display()
            );
        }
        let cluster = cert
            .subject()
            .iter_attributes()
            .find(|a| {
                a.attr_type()
                    .iter()
                    .map(|it| it.eq(profile::DC_OID.iter().copied()))
                    .unwrap_or(false)
            })
            .and_then(|a| a.as_str().ok())
            .map(str::to_string)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{} has no DC (cluster) attribute; it was not made by `tessera ca init`",
                    state.path(CA_CERT).display()
                )
            })?;
        let ca_not_after = cert.validity().not_after.timestamp();
        Ok(Authority {
            cluster,
            ca: CaIssuer::new(der, key)?,
            ca_pem: trust.ca_pem(),
            ca_not_after,
            lifetime,
        })
    }

    /// Validity window for a certificate issued now, capped by the CA's own expiry.
    fn window(&self, lifetime: Duration) -> (SystemTime, SystemTime) {
        let now = SystemTime::now();
        let ca_end = UNIX_EPOCH + Duration::from_secs(self.ca_not_after.max(0) as u64);
        ((now - BACKDATE), (now + lifetime).min(ca_end))
    }

    /// Signs an agent certificate under the profile for `key`.
    pub fn sign_agent(
        &self,
        subject: Subject,
        capabilities: Vec<String>,
        uris: Vec<String>,
        key: &impl PublicKeyData,
        lifetime: Option<Duration>,
    ) -> Result<Issued, ApiError> {
        let (not_before, not_after) = self.window(lifetime.unwrap_or(self.lifetime));
        let leaf = Leaf {
            subject,
            capabilities,
            uris,
            not_before,
            not_after,
            serial: profile::random_serial()?,
        };
        let der = self.ca.sign(&leaf, key)?;
        Ok(Issued {
            serial: profile::serial_hex(&leaf.serial),
            subject: leaf.subject.to_string(),
            subsystem: leaf.subject.subsystem,
            node: leaf.subject.node,
            agent_id: leaf.subject.agent_id,
            not_before: unix(not_before),
            not_after: unix(not_after),
            der,
        })
    }

    /// The CA's HTTPS server certificate for `hosts` (DNS names or IP addresses).
    pub fn sign_server(&self, hosts: &[String], key: &KeyPair) -> Result<Issued, ApiError> {
        let (not_before, not_after) = self.window(SERVICE_LIFETIME);
        let serial = profile::random_serial()?;
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        push_dc(&mut p.distinguished_name, &self.cluster)?;
        p.distinguished_name.push(DnType::OrganizationName, "ca");
        p.distinguished_name.push(DnType::CommonName, "tessera-ca");
        for h in hosts {
            p.subject_alt_names.push(parse_host(h)?);
        }
        p.not_before = rcgen_time(not_before)?;
        p.not_after = rcgen_time(not_after)?;
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        let cert = p
            .signed_by(key, self.ca.issuer())
            .map_err(ApiError::internal)?;
        Ok(Issued {
            der: cert.der().clone(),
            serial: profile::serial_hex(&serial),
            subject: format!("DC={}, O=ca, CN=tessera-ca", self.cluster),
            subsystem: "ca".into(),
            node: hosts.first().cloned().unwrap_or_default(),
            agent_id: "ca".into(),
            not_before: unix(not_before),
            not_after: unix(not_after),
        })
    }
}

fn push_dc(dn: &mut DistinguishedName, cluster: &str) -> Result<(), ApiError> {
    let dc = cluster
        .try_into()
        .map_err(|e| ApiError::internal(format!("cluster name: {e}")))?;
    dn.push(
        DnType::CustomDnType(profile::DC_OID.to_vec()),
        DnValue::Ia5String(dc),
    );
    Ok(())
}

/// A `--san` value: an IP address or an RFC 1123 host name.
pub fn parse_host(host: &str) -> Result<SanType, ApiError> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    profile::validate_fqdn(host)?;
    Ok(SanType::DnsName(
        host.try_into().map_err(ApiError::internal)?,
    ))
}

/// The CA certificate's parameters: `DC=<cluster>, O=tessera, CN=Tessera CA <cluster>`, CA
/// with path length 0 (it signs only end entities), keyCertSign + cRLSign.
pub fn ca_params(
    cluster: &str,
    not_before: SystemTime,
    not_after: SystemTime,
    serial: &[u8],
) -> anyhow::Result<CertificateParams> {
    profile::validate_cluster(cluster)?;
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    push_dc(&mut p.distinguished_name, cluster)?;
    p.distinguished_name
        .push(DnType::OrganizationName, "tessera");
    p.distinguished_name
        .push(DnType::CommonName, format!("Tessera CA {cluster}"));
    p.not_before = rcgen_time(not_before)?;
    p.not_after = rcgen_time(not_after)?;
    p.serial_number = Some(SerialNumber::from_slice(serial));
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

/// A new self-signed P-256 CA valid for 10 years.
pub fn new_ca(cluster: &str) -> anyhow::Result<(KeyPair, CertificateDer<'static>)> {
    let now = SystemTime::now();
    let p = ca_params(
        cluster,
        now - BACKDATE,
        now + CA_LIFETIME,
        &profile::random_serial()?,
    )?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = p.self_signed(&key)?;
    Ok((key, cert.der().clone()))
}

/// DNS names and IP addresses of a certificate's SAN (to re-issue the server certificate
/// with the same names).
pub fn san_hosts(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(d) => out.push(d.to_string()),
                    GeneralName::IPAddress(b) => {
                        if let Ok(a) = <[u8; 4]>::try_from(*b) {
                            out.push(std::net::IpAddr::from(a).to_string());
                        } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                            out.push(std::net::IpAddr::from(a).to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_identity::profile::PeerIdentity;

    fn authority() -> (tempfile::TempDir, Authority) {
        let dir = tempfile::tempdir().unwrap();
        let (key, der) = new_ca("prod").unwrap();
        let state = StateDir::new(dir.path());
        crate::files::write_file(
            &state.path(CA_CERT),
            pem_encode("CERTIFICATE", &der).as_bytes(),
            0o644,
        )
        .unwrap();
        crate::files::write_file(&state.path(CA_KEY), key.serialize_pem().as_bytes(), 0o600)
            .unwrap();
        let a = Authority::load(&state, profile::DEFAULT_LIFETIME).unwrap();
        (dir, a)
    }

    #[test]
    fn ca_certificate_is_a_p256_ca_for_the_cluster() {
        let (_d, a) = authority();
        assert_eq!(a.cluster, "prod");
        let (_, cert) = X509Certificate::from_der(a.ca.cert_der()).unwrap();
        assert!(cert.is_ca());
        let bc = cert.basic_constraints().unwrap().unwrap().value;
        assert_eq!(bc.path_len_constraint, Some(0));
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        let years = (cert.validity().not_after.timestamp()
            - cert.validity().not_before.timestamp())
            / (365 * 24 * 3600);
        assert_eq!(years, 10);
        assert_eq!(
            cert.public_key().algorithm.algorithm,
            x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
        );
    }

    #[test]
    fn subject_comes_from_the_binding_not_the_key() {
        let (_d, a) = authority();
        let key = KeyPair::generate().unwrap();
        let subject = Subject::new("prod", "node", "n1.example", "node").unwrap();
        let issued = a
            .sign_agent(subject, vec!["container".into()], vec![], &key, None)
            .unwrap();
        let id = PeerIdentity::from_der(&issued.der).unwrap();
        assert_eq!(
            (id.subsystem.as_str(), id.node.as_str()),
            ("node", "n1.example")
        );
        assert_eq!(id.serial, issued.serial);
        assert_eq!(issued.not_after - issued.not_before, 4 * 3600 + 60);
        assert_eq!(id.capabilities, vec!["container".to_string()]);
    }

    #[test]
    fn lifetime_is_capped_by_the_ca() {
        let (_d, a) = authority();
        let key = KeyPair::generate().unwrap();
        let subject = Subject::new("prod", "node", "n1.example", "node").unwrap();
        let issued = a
            .sign_agent(
                subject,
                vec![],
                vec![],
                &key,
                Some(Duration::from_secs(20 * 365 * 24 * 3600)),
            )
            .unwrap();
        assert_eq!(issued.not_after, a.ca_not_after);
    }

    #[test]
    fn server_certificate_names_the_hosts() {
        let (_d, a) = authority();
        let key = KeyPair::generate().unwrap();
        let hosts = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "10.0.2.2".to_string(),
        ];
        let issued = a.sign_server(&hosts, &key).unwrap();
        assert_eq!(san_hosts(&issued.der), hosts);
        assert!(parse_host("bad host\n").is_err());
    }

    #[test]
    fn mismatched_ca_key_is_refused() {
        let (dir, _) = authority();
        let state = StateDir::new(dir.path());
        let other = KeyPair::generate().unwrap();
        std::fs::remove_file(state.path(CA_KEY)).unwrap();
        crate::files::write_file(&state.path(CA_KEY), other.serialize_pem().as_bytes(), 0o600)
            .unwrap();
        let e = Authority::load(&state, profile::DEFAULT_LIFETIME)
            .err()
            .unwrap();
        assert!(e.to_string().contains("does not belong"), "{e}");
    }
}
