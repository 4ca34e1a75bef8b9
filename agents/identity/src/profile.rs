//! The Tessera certificate profile (agents/README.md, thesis 4.9.4): who a certificate names
//! and what it allows.
//!
//! - Subject `DC=<cluster>, O=<subsystem>, OU=<node FQDN>, UID=<agent id>`.
//! - SANs: DNS `<agent id>.<node FQDN>`, plus URI SANs for the agent's endpoints, whose host
//!   must be that same name (an agent cannot claim another agent's endpoints).
//! - The capabilities extension (`2.25.156323487611432925296521549316785262337`, not
//!   critical): DER `SEQUENCE OF UTF8String`, the subsystems the holder may request
//!   certificates for.
//! - EKU client + server auth; key usage digitalSignature (+ keyEncipherment for RSA keys).
//!
//! Every name that ends up in a certificate is validated here first, with a conservative
//! character set, so that hostile strings (control characters, newlines, `=`/`,` that would
//! confuse DN renderings, over-long labels) are refused with an error that says what to fix.
//!
//! The capabilities OID has a 127-bit arc, which rcgen (u64 arcs) cannot write. The
//! extension is therefore written under a placeholder OID of the same encoded length, and
//! the placeholder is swapped for the real OID both in the bytes that get signed and in the
//! certificate that comes out ([`CaIssuer`]), so the signature covers the real OID.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
    SignatureAlgorithm, SigningKey,
};
use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

/// The capabilities extension's OID, dotted.
pub const CAPABILITIES_OID: &str = "2.25.156323487611432925296521549316785262337";
/// Content octets of the DER encoding of [`CAPABILITIES_OID`] (without tag and length).
pub const CAPABILITIES_OID_DER: [u8; 20] = [
    0x69, 0x81, 0xeb, 0x9a, 0xe7, 0xbf, 0xe3, 0xc8, 0x95, 0xe1, 0xc1, 0xae, 0xf0, 0x95, 0x8c, 0x93,
    0xdc, 0xd5, 0x9e, 0x01,
];
/// Placeholder written by rcgen in place of the capabilities OID: `2.25.A.B.127` with `A`, `B`
/// chosen so that the encoding is 20 octets too (9 + 9 + 1 after the `2.25` octet).
const PLACEHOLDER_OID: &[u64] = &[2, 25, 0x7465_7373_6572_6131, 0x6361_7061_6269_6c69, 127];
/// userId (RFC 4519), the UID attribute.
pub const UID_OID: &[u64] = &[0, 9, 2342, 19200300, 100, 1, 1];
/// domainComponent (RFC 4519), the DC attribute.
pub const DC_OID: &[u64] = &[0, 9, 2342, 19200300, 100, 1, 25];

/// Subsystem of the operator's client certificates: the only ones admitted to admin APIs.
pub const ADMIN_SUBSYSTEM: &str = "admin";
/// Subsystem of the node's certificate manager.
pub const CERTMGR_SUBSYSTEM: &str = "certmgr";
/// What a node token (subsystem certmgr) lets the node's certificate manager hand out when the
/// operator names no capabilities: the subsystems of the agents the default image runs with an
/// identity (image/services/*.toml `identity = {…}`). A narrower token names its own list.
pub const DEFAULT_NODE_CAPABILITIES: &[&str] = &["node", "container", "hub"];
/// Default lifetime of an agent certificate: hours, not years.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(4 * 3600);
/// Longest URI SAN accepted.
const MAX_URI: usize = 255;
/// At most this many capabilities / URI SANs in one certificate.
const MAX_LIST: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("invalid {what} {value}: {why}; {fix}")]
    InvalidName {
        what: &'static str,
        value: String,
        why: String,
        fix: &'static str,
    },
    #[error("malformed capabilities extension: {0}; the certificate was not issued under the Tessera profile")]
    BadCapabilities(String),
    #[error("certificate cannot be parsed: {0}; present the PEM/DER certificate the Tessera CA returned")]
    BadCertificate(String),
    #[error("certificate subject has no single {0} attribute; it was not issued under the Tessera profile")]
    MissingField(&'static str),
    #[error("certificate could not be built: {0}")]
    Build(String),
}

type Result<T, E = ProfileError> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------------------------
// Name validation

/// Quotes a hostile string for an error message: escaped, and cut after 64 characters.
fn shown(value: &str) -> String {
    let mut out: String = value.chars().take(64).collect();
    if value.chars().count() > 64 {
        out.push('…');
    }
    format!("\"{}\"", out.escape_debug())
}

fn invalid(what: &'static str, value: &str, why: String, fix: &'static str) -> ProfileError {
    ProfileError::InvalidName {
        what,
        value: shown(value),
        why,
        fix,
    }
}

/// Why `label` is not a lowercase DNS label of at most `max` characters, if it is not.
fn label_problem(label: &str, max: usize) -> Option<String> {
    if label.is_empty() {
        return Some("it is empty".into());
    }
    if let Some((i, c)) = label
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Some(if c.is_control() {
            format!(
                "it contains a control character (U+{:04X}) at byte {i}",
                c as u32
            )
        } else if c.is_ascii_uppercase() {
            format!("it contains the upper-case letter '{c}' at byte {i}")
        } else {
            format!("it contains {:?} at byte {i}", c)
        });
    }
    if label.len() > max {
        return Some(format!(
            "it is {} characters long (at most {max})",
            label.len()
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Some("it starts or ends with '-'".into());
    }
    None
}

const LABEL_FIX: &str =
    "use 1-63 lower-case letters, digits and '-', not starting or ending with '-'";

/// A cluster name (the DC attribute): one lower-case DNS label.
pub fn validate_cluster(name: &str) -> Result<()> {
    match label_problem(name, 63) {
        Some(why) => Err(invalid("cluster name", name, why, LABEL_FIX)),
        None => Ok(()),
    }
}

/// A subsystem name (the O attribute, and each capability): one lower-case DNS label of at
/// most 32 characters, e.g. `certmgr`, `node`, `container`, `hub`.
pub fn validate_subsystem(name: &str) -> Result<()> {
    match label_problem(name, 32) {
        Some(why) => Err(invalid(
            "subsystem name",
            name,
            why,
            "use 1-32 lower-case letters, digits and '-' (e.g. certmgr, node, container, hub)",
        )),
        None => Ok(()),
    }
}

/// A capability is the name of a subsystem the holder may request certificates for.
pub fn validate_capability(name: &str) -> Result<()> {
    validate_subsystem(name).map_err(|e| match e {
        ProfileError::InvalidName {
            value, why, fix, ..
        } => ProfileError::InvalidName {
            what: "capability",
            value,
            why,
            fix,
        },
        other => other,
    })
}

/// An agent id (the UID attribute): one lower-case DNS label, because it prefixes the node's
/// FQDN in the DNS SAN. A UUID in its usual lower-case form fits.
pub fn validate_agent_id(id: &str) -> Result<()> {
    match label_problem(id, 63) {
        Some(why) => Err(invalid("agent id", id, why, LABEL_FIX)),
        None => Ok(()),
    }
}

/// A node's FQDN (the OU attribute), RFC 1123 host-name syntax: dot-separated labels of
/// letters, digits and '-', at most 253 characters. Upper case is refused rather than folded,
/// so that the name in a token binding and in the certificate are the same string.
pub fn validate_fqdn(fqdn: &str) -> Result<()> {
    const FIX: &str = "write the host name in lower case as dot-separated labels of letters, digits and '-' (RFC 1123), without a trailing dot";
    if fqdn.is_empty() {
        return Err(invalid("node FQDN", fqdn, "it is empty".into(), FIX));
    }
    if fqdn.len() > 253 {
        return Err(invalid(
            "node FQDN",
            fqdn,
            format!("it is {} characters long (at most 253)", fqdn.len()),
            FIX,
        ));
    }
    if fqdn.ends_with('.') {
        return Err(invalid("node FQDN", fqdn, "it ends with '.'".into(), FIX));
    }
    for (n, label) in fqdn.split('.').enumerate() {
        if let Some(why) = label_problem(label, 63) {
            return Err(invalid(
                "node FQDN",
                fqdn,
                format!("label {} is invalid: {why}", n + 1),
                FIX,
            ));
        }
    }
    Ok(())
}

/// A URI SAN: `<scheme>://<dns_name>[:port][/path]`, printable ASCII from a conservative set,
/// whose host must be the certificate's own DNS name (`<agent id>.<node FQDN>`).
pub fn validate_uri(uri: &str, dns_name: &str) -> Result<()> {
    const FIX: &str = "use <scheme>://<agent id>.<node FQDN>[:port][/path] with letters, digits and -._~/ in the path";
    let bad = |why: String| Err(invalid("endpoint URI", uri, why, FIX));
    if uri.len() > MAX_URI {
        return bad(format!(
            "it is {} characters long (at most {MAX_URI})",
            uri.len()
        ));
    }
    if let Some((i, c)) = uri.char_indices().find(|(_, c)| !c.is_ascii_graphic()) {
        return bad(format!("it contains {:?} at byte {i}", c));
    }
    let Some((scheme, rest)) = uri.split_once("://") else {
        return bad("it has no \"<scheme>://\"".into());
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_lowercase())
        && scheme
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+.-".contains(c));
    if !scheme_ok || scheme.len() > 16 {
        return bad(format!(
            "the scheme {} is not a lower-case URI scheme",
            shown(scheme)
        ));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = match authority.rsplit_once(':') {
        Some((host, port)) => {
            match port.parse::<u16>() {
                Ok(p) if p > 0 && !port.starts_with('0') => {}
                _ => return bad(format!("the port {} is not 1-65535", shown(port))),
            }
            host
        }
        None => authority,
    };
    if host != dns_name {
        return bad(format!(
            "its host {} is not this certificate's name {}",
            shown(host),
            shown(dns_name)
        ));
    }
    if let Some((i, c)) = path
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || "-._~/".contains(*c)))
    {
        return bad(format!("its path contains {:?} at byte {i}", c));
    }
    Ok(())
}

/// Validates a capability list: each a subsystem name, no duplicates, at most 32.
pub fn validate_capabilities(caps: &[String]) -> Result<()> {
    if caps.len() > MAX_LIST {
        return Err(ProfileError::InvalidName {
            what: "capability list",
            value: format!("of {} entries", caps.len()),
            why: format!("at most {MAX_LIST} are allowed"),
            fix: "list only the subsystems the holder spawns",
        });
    }
    for (i, c) in caps.iter().enumerate() {
        validate_capability(c)?;
        if caps[..i].contains(c) {
            return Err(invalid(
                "capability",
                c,
                "it is listed twice".into(),
                "list each capability once",
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Subject

/// The four names of the thesis DN. Construct with [`Subject::new`], which validates them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject {
    pub cluster: String,
    pub subsystem: String,
    pub node: String,
    pub agent_id: String,
}

impl Subject {
    pub fn new(cluster: &str, subsystem: &str, node: &str, agent_id: &str) -> Result<Self> {
        let s = Subject {
            cluster: cluster.to_string(),
            subsystem: subsystem.to_string(),
            node: node.to_string(),
            agent_id: agent_id.to_string(),
        };
        s.validate()?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<()> {
        validate_cluster(&self.cluster)?;
        validate_subsystem(&self.subsystem)?;
        validate_fqdn(&self.node)?;
        validate_agent_id(&self.agent_id)?;
        if self.dns_name().len() > 253 {
            return Err(invalid(
                "agent DNS name",
                &self.dns_name(),
                "<agent id>.<node FQDN> is longer than 253 characters".into(),
                "use a shorter agent id",
            ));
        }
        Ok(())
    }

    /// The DNS SAN: `<agent id>.<node FQDN>`.
    pub fn dns_name(&self) -> String {
        format!("{}.{}", self.agent_id, self.node)
    }

    /// `DC=…, O=…, OU=…, UID=…` in this order (DC as IA5String, per RFC 4519).
    pub fn distinguished_name(&self) -> Result<DistinguishedName> {
        let mut dn = DistinguishedName::new();
        let dc = self
            .cluster
            .as_str()
            .try_into()
            .map_err(|e| ProfileError::Build(format!("cluster name as IA5String: {e}")))?;
        dn.push(
            DnType::CustomDnType(DC_OID.to_vec()),
            DnValue::Ia5String(dc),
        );
        dn.push(DnType::OrganizationName, self.subsystem.as_str());
        dn.push(DnType::OrganizationalUnitName, self.node.as_str());
        dn.push(
            DnType::CustomDnType(UID_OID.to_vec()),
            self.agent_id.as_str(),
        );
        Ok(dn)
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DC={}, O={}, OU={}, UID={}",
            self.cluster, self.subsystem, self.node, self.agent_id
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Capabilities extension

/// DER `SEQUENCE OF UTF8String`.
pub fn encode_capabilities(caps: &[String]) -> Vec<u8> {
    let mut body = Vec::new();
    for c in caps {
        body.push(0x0c);
        push_len(&mut body, c.len());
        body.extend_from_slice(c.as_bytes());
    }
    let mut out = vec![0x30];
    push_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Reads one DER TLV with a definite, minimally encoded length: (tag, content, rest).
fn read_tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let (&tag, rest) = input.split_first().ok_or("truncated tag")?;
    let (&first, mut rest) = rest.split_first().ok_or("truncated length")?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return Err("bad length".into());
        }
        let (len_bytes, tail) = rest.split_at(n);
        rest = tail;
        if len_bytes[0] == 0 {
            return Err("non-minimal length".into());
        }
        let len = len_bytes.iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        if len < 0x80 {
            return Err("non-minimal length".into());
        }
        len
    };
    if rest.len() < len {
        return Err("content shorter than its length".into());
    }
    let (content, rest) = rest.split_at(len);
    Ok((tag, content, rest))
}

/// Parses and validates the extension's value.
pub fn decode_capabilities(der: &[u8]) -> Result<Vec<String>> {
    let bad = ProfileError::BadCapabilities;
    let (tag, mut body, rest) = read_tlv(der).map_err(bad)?;
    if tag != 0x30 {
        return Err(bad(format!("expected a SEQUENCE, found tag 0x{tag:02x}")));
    }
    if !rest.is_empty() {
        return Err(bad("trailing bytes after the SEQUENCE".into()));
    }
    let mut caps = Vec::new();
    while !body.is_empty() {
        let (tag, content, rest) = read_tlv(body).map_err(bad)?;
        if tag != 0x0c {
            return Err(bad(format!("expected a UTF8String, found tag 0x{tag:02x}")));
        }
        let s = std::str::from_utf8(content).map_err(|_| bad("invalid UTF-8".into()))?;
        caps.push(s.to_string());
        body = rest;
    }
    validate_capabilities(&caps)?;
    Ok(caps)
}

// ---------------------------------------------------------------------------------------------
// Building certificates

/// Converts a time for rcgen; `to_datetime()` gives the `time::OffsetDateTime` rcgen wants
/// (this crate reaches the `time` crate only through x509-parser).
fn asn1_time(t: SystemTime) -> Result<x509_parser::time::ASN1Time> {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    x509_parser::time::ASN1Time::from_timestamp(secs)
        .map_err(|e| ProfileError::Build(format!("time out of range: {e}")))
}

/// Is this public key RSA (which adds keyEncipherment to the key usage)?
pub fn is_rsa(alg: &SignatureAlgorithm) -> bool {
    [
        &rcgen::PKCS_RSA_SHA256,
        &rcgen::PKCS_RSA_SHA384,
        &rcgen::PKCS_RSA_SHA512,
    ]
    .contains(&alg)
}

/// Everything an agent certificate says. The CA fills it from a token binding or the
/// presented certificate, never from a CSR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    pub subject: Subject,
    pub capabilities: Vec<String>,
    pub uris: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Big-endian serial number; [`random_serial`] gives 128 random bits.
    pub serial: Vec<u8>,
}

/// 128 random bits for a serial number (positive once DER-encoded).
pub fn random_serial() -> Result<Vec<u8>> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ProfileError::Build("the system random number generator failed".into()))?;
    Ok(bytes.to_vec())
}

impl Leaf {
    pub fn validate(&self) -> Result<()> {
        self.subject.validate()?;
        validate_capabilities(&self.capabilities)?;
        if self.uris.len() > MAX_LIST {
            return Err(ProfileError::InvalidName {
                what: "endpoint URI list",
                value: format!("of {} entries", self.uris.len()),
                why: format!("at most {MAX_LIST} are allowed"),
                fix: "list only the endpoints the agent listens on",
            });
        }
        let dns = self.subject.dns_name();
        for u in &self.uris {
            validate_uri(u, &dns)?;
        }
        if self.not_after <= self.not_before {
            return Err(ProfileError::Build(
                "not_after is not after not_before".into(),
            ));
        }
        if self.serial.is_empty() || self.serial.len() > 19 {
            return Err(ProfileError::Build("serial must be 1-19 bytes".into()));
        }
        Ok(())
    }

    /// rcgen parameters for this certificate. The capabilities extension is written under the
    /// placeholder OID; only [`CaIssuer::sign`] produces the real thing.
    fn params(&self, rsa: bool) -> Result<CertificateParams> {
        self.validate()?;
        let mut p = CertificateParams::default();
        p.distinguished_name = self.subject.distinguished_name()?;
        p.subject_alt_names.push(SanType::DnsName(
            self.subject
                .dns_name()
                .try_into()
                .map_err(|e| ProfileError::Build(format!("DNS SAN: {e}")))?,
        ));
        for u in &self.uris {
            p.subject_alt_names.push(SanType::URI(
                u.as_str()
                    .try_into()
                    .map_err(|e| ProfileError::Build(format!("URI SAN: {e}")))?,
            ));
        }
        p.not_before = asn1_time(self.not_before)?.to_datetime();
        p.not_after = asn1_time(self.not_after)?.to_datetime();
        p.serial_number = Some(SerialNumber::from_slice(&self.serial));
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if rsa {
            p.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        p.use_authority_key_identifier_extension = true;
        p.custom_extensions.push(CustomExtension::from_oid_content(
            PLACEHOLDER_OID,
            encode_capabilities(&self.capabilities),
        ));
        Ok(p)
    }
}

/// DER of the placeholder OID (tag, length, content) and of the real one, computed once.
fn oid_tlvs() -> &'static (Vec<u8>, Vec<u8>) {
    static TLVS: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    TLVS.get_or_init(build_oid_tlvs)
}

fn build_oid_tlvs() -> (Vec<u8>, Vec<u8>) {
    let mut placeholder = vec![0x06, 20, 0x69];
    for arc in &PLACEHOLDER_OID[2..] {
        let mut groups = Vec::new();
        let mut v = *arc;
        loop {
            groups.push((v & 0x7f) as u8);
            v >>= 7;
            if v == 0 {
                break;
            }
        }
        groups.reverse();
        let last = groups.len() - 1;
        for (i, g) in groups.iter().enumerate() {
            placeholder.push(if i < last { g | 0x80 } else { *g });
        }
    }
    let mut real = vec![0x06, 20];
    real.extend_from_slice(&CAPABILITIES_OID_DER);
    (placeholder, real)
}

/// Replaces the single occurrence of the placeholder OID; refuses zero or several.
fn swap_placeholder(der: &[u8]) -> Result<Option<Vec<u8>>> {
    let (placeholder, real) = oid_tlvs();
    // Cheap first-byte test before the full comparison: this runs twice per certificate.
    let hits: Vec<usize> = der
        .windows(placeholder.len())
        .enumerate()
        .filter(|(_, w)| w[2] == placeholder[2] && w[0] == 0x06 && *w == placeholder.as_slice())
        .map(|(i, _)| i)
        .collect();
    match hits.as_slice() {
        [] => Ok(None),
        [at] => {
            let mut out = der.to_vec();
            out[*at..*at + real.len()].copy_from_slice(real);
            Ok(Some(out))
        }
        _ => Err(ProfileError::Build(
            "the to-be-signed data contains the placeholder OID more than once".into(),
        )),
    }
}

/// The CA's signing key as rcgen sees it: signs the bytes with the real capabilities OID.
pub struct ProfileKey<K>(K);

impl<K: PublicKeyData> PublicKeyData for ProfileKey<K> {
    fn der_bytes(&self) -> &[u8] {
        self.0.der_bytes()
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.0.algorithm()
    }
}

impl<K: SigningKey> SigningKey for ProfileKey<K> {
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        match swap_placeholder(msg) {
            Ok(Some(patched)) => self.0.sign(&patched),
            Ok(None) => self.0.sign(msg),
            Err(_) => Err(rcgen::Error::UnsupportedExtension),
        }
    }
}

/// A CA certificate and its key, ready to sign leaves and CRLs.
pub struct CaIssuer<K> {
    issuer: rcgen::Issuer<'static, ProfileKey<K>>,
    cert_der: CertificateDer<'static>,
}

impl<K: SigningKey> CaIssuer<K> {
    /// From the CA certificate (DER) and its key; the issuer name and key identifier are
    /// taken from the certificate, so leaves chain to it byte for byte.
    pub fn new(ca_cert: CertificateDer<'static>, key: K) -> Result<Self> {
        let issuer = rcgen::Issuer::from_ca_cert_der(&ca_cert, ProfileKey(key))
            .map_err(|e| ProfileError::BadCertificate(format!("CA certificate: {e}")))?;
        Ok(CaIssuer {
            issuer,
            cert_der: ca_cert,
        })
    }

    /// The rcgen issuer (for CRLs and certificates outside the agent profile).
    pub fn issuer(&self) -> &rcgen::Issuer<'static, impl SigningKey> {
        &self.issuer
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Signs `leaf` for `subject_key` (the public key from a verified CSR).
    pub fn sign(
        &self,
        leaf: &Leaf,
        subject_key: &impl PublicKeyData,
    ) -> Result<CertificateDer<'static>> {
        let params = leaf.params(is_rsa(subject_key.algorithm()))?;
        let cert = params
            .signed_by(subject_key, &self.issuer)
            .map_err(|e| ProfileError::Build(e.to_string()))?;
        match swap_placeholder(cert.der())? {
            Some(der) => Ok(CertificateDer::from(der)),
            None => Err(ProfileError::Build(
                "capabilities extension missing from the signed certificate".into(),
            )),
        }
    }
}

/// A CSR (PEM) carrying only `key`'s public key: the CA takes nothing else from it.
pub fn csr_pem(key: &impl SigningKey) -> Result<String> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .serialize_request(key)
        .and_then(|csr| csr.pem())
        .map_err(|e| ProfileError::Build(format!("CSR: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Reading certificates

/// What a handler knows about its peer after the mTLS handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub cluster: String,
    pub subsystem: String,
    pub node: String,
    pub agent_id: String,
    pub capabilities: Vec<String>,
    /// Lower-case hex, without leading zero bytes.
    pub serial: String,
    pub not_after: SystemTime,
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| ProfileError::BadCertificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(ProfileError::BadCertificate(
            "trailing bytes after the certificate".into(),
        ));
    }
    Ok(cert)
}

/// Serial number bytes as lower-case hex without leading zero bytes (the CA's key for it).
pub fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().take_while(|b| **b == 0).count();
    let hex: String = raw[start..].iter().map(|b| format!("{b:02x}")).collect();
    if hex.is_empty() {
        "00".into()
    } else {
        hex
    }
}

fn oid_is(oid: &x509_parser::oid_registry::Oid<'_>, arcs: &[u64]) -> bool {
    oid.iter()
        .map(|it| it.eq(arcs.iter().copied()))
        .unwrap_or(false)
}

impl PeerIdentity {
    /// Reads a certificate issued under the profile. Names are validated again, so a
    /// certificate that could not have been issued by a Tessera CA is refused.
    pub fn from_der(der: &[u8]) -> Result<PeerIdentity> {
        let cert = parse_cert(der)?;
        let mut fields: [Option<&str>; 4] = [None; 4];
        let names = ["DC", "O", "OU", "UID"];
        for attr in cert.subject().iter_attributes() {
            let oid = attr.attr_type();
            let slot = if oid_is(oid, DC_OID) {
                0
            } else if oid_is(oid, &[2, 5, 4, 10]) {
                1
            } else if oid_is(oid, &[2, 5, 4, 11]) {
                2
            } else if oid_is(oid, UID_OID) {
                3
            } else {
                continue;
            };
            if fields[slot].is_some() {
                return Err(ProfileError::MissingField(names[slot]));
            }
            fields[slot] = Some(
                attr.as_str()
                    .map_err(|_| ProfileError::MissingField(names[slot]))?,
            );
        }
        let get = |i: usize| fields[i].ok_or(ProfileError::MissingField(names[i]));
        let subject = Subject::new(get(0)?, get(1)?, get(2)?, get(3)?)?;
        let mut capabilities = Vec::new();
        for ext in cert.extensions() {
            if ext.oid.as_bytes() == CAPABILITIES_OID_DER {
                capabilities = decode_capabilities(ext.value)?;
            }
        }
        let not_after = cert.validity().not_after.timestamp();
        Ok(PeerIdentity {
            cluster: subject.cluster,
            subsystem: subject.subsystem,
            node: subject.node,
            agent_id: subject.agent_id,
            capabilities,
            serial: serial_hex(cert.raw_serial()),
            not_after: UNIX_EPOCH + Duration::from_secs(not_after.max(0) as u64),
        })
    }

    pub fn subject(&self) -> Subject {
        Subject {
            cluster: self.cluster.clone(),
            subsystem: self.subsystem.clone(),
            node: self.node.clone(),
            agent_id: self.agent_id.clone(),
        }
    }

    /// `<agent id>.<node FQDN>`.
    pub fn dns_name(&self) -> String {
        format!("{}.{}", self.agent_id, self.node)
    }

    /// May the holder request certificates for `subsystem`?
    pub fn has_capability(&self, subsystem: &str) -> bool {
        self.capabilities.iter().any(|c| c == subsystem)
    }

    /// An operator certificate (`O=admin`).
    pub fn is_admin(&self) -> bool {
        self.subsystem == ADMIN_SUBSYSTEM
    }
}

/// The URI SANs of a certificate (the agent's endpoints), in order.
pub fn uri_sans(der: &[u8]) -> Result<Vec<String>> {
    let cert = parse_cert(der)?;
    let mut out = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                if let GeneralName::URI(u) = name {
                    out.push(u.to_string());
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn capabilities_oid_der_matches_the_dotted_oid() {
        // Decode the content octets back to arcs with u128 arithmetic.
        let bytes = CAPABILITIES_OID_DER;
        assert_eq!(bytes[0], 2 * 40 + 25);
        let mut arc: u128 = 0;
        for b in &bytes[1..] {
            arc = (arc << 7) | (*b & 0x7f) as u128;
        }
        assert_eq!(bytes[bytes.len() - 1] & 0x80, 0);
        assert_eq!(format!("2.25.{arc}"), CAPABILITIES_OID);
    }

    #[test]
    fn placeholder_oid_has_the_same_encoded_length() {
        let (placeholder, real) = oid_tlvs();
        assert_eq!(placeholder.len(), real.len());
        assert_ne!(placeholder, real);
    }

    #[test]
    fn capabilities_round_trip() {
        for list in [
            caps(&[]),
            caps(&["node"]),
            caps(&["node", "container", "hub"]),
        ] {
            let der = encode_capabilities(&list);
            assert_eq!(decode_capabilities(&der).unwrap(), list);
        }
        // Long lists use the long length form.
        let many: Vec<String> = (0..32).map(|i| format!("subsystem-{i}")).collect();
        let der = encode_capabilities(&many);
        assert_eq!(der[1], 0x82);
        assert_eq!(decode_capabilities(&der).unwrap(), many);
    }

    #[test]
    fn capabilities_encoding_is_sequence_of_utf8string() {
        assert_eq!(
            encode_capabilities(&caps(&["node", "hub"])),
            [0x30, 11, 0x0c, 4, b'n', b'o', b'd', b'e', 0x0c, 3, b'h', b'u', b'b']
        );
    }

    #[test]
    fn malformed_capabilities_are_refused() {
        for bad in [
            &[][..],
            &[0x31, 0][..],                               // SET, not SEQUENCE
            &[0x30, 3, 0x13, 1, b'a'][..],                // PrintableString
            &[0x30, 5, 0x0c, 3, b'a'][..],                // truncated
            &[0x30, 0, 0][..],                            // trailing byte
            &[0x30, 3, 0x0c, 1, 0xff][..],                // invalid UTF-8
            &[0x30, 4, 0x0c, 2, b'a', b'\n'][..],         // control character
            &[0x30, 0x81, 3, 0x0c, 1, b'a'][..],          // non-minimal length
            &[0x30, 6, 0x0c, 1, b'a', 0x0c, 1, b'a'][..], // duplicate
        ] {
            assert!(decode_capabilities(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn names_follow_the_conservative_charset() {
        assert!(validate_cluster("prod-eu1").is_ok());
        assert!(validate_subsystem("certmgr").is_ok());
        assert!(validate_agent_id("3f2c9a1e-8b7d-4c2e-9f10-2a3b4c5d6e7f").is_ok());
        assert!(validate_fqdn("n1.cluster.example.com").is_ok());
        assert!(validate_fqdn("tessera").is_ok());
        assert!(
            validate_fqdn("1node.example").is_ok(),
            "RFC 1123 allows a leading digit"
        );

        for bad in [
            "", "-a", "a-", "A", "a_b", "a.b", "a b", "a\nb", "a\0", "é", "a=b", "a,b",
        ] {
            assert!(validate_cluster(bad).is_err(), "cluster {bad:?}");
            assert!(validate_agent_id(bad).is_err(), "agent id {bad:?}");
        }
        assert!(validate_subsystem(&"a".repeat(33)).is_err());
        assert!(validate_cluster(&"a".repeat(64)).is_err());
        for bad in [
            "",
            "n1.",
            ".n1",
            "n1..example",
            "n1.-x.example",
            "N1.example",
            "n1.exa mple",
            "n1.example\r\nX-Injected: 1",
            "n1/../etc",
        ] {
            assert!(validate_fqdn(bad).is_err(), "fqdn {bad:?}");
        }
        let long = format!("{}.example", "a".repeat(63)).repeat(4);
        assert!(validate_fqdn(&long).is_err());
    }

    #[test]
    fn errors_show_hostile_names_escaped_and_say_the_fix() {
        let e = validate_fqdn("n1\nexample").unwrap_err().to_string();
        assert!(e.contains("\\n"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        assert!(e.contains("control character"), "{e}");
        assert!(e.contains("lower case"), "{e}");
        let e = validate_agent_id(&"x".repeat(500)).unwrap_err().to_string();
        assert!(e.len() < 400, "{e}");
    }

    #[test]
    fn uris_must_name_the_agent() {
        let dns = "node.n1.example";
        assert!(validate_uri("https://node.n1.example:8443/v1", dns).is_ok());
        assert!(validate_uri("https://node.n1.example", dns).is_ok());
        for bad in [
            "https://other.n1.example:8443",
            "https://node.n1.example:0",
            "https://node.n1.example:99999",
            "https://node.n1.example:8443/a b",
            "https://node.n1.example:8443/a?b",
            "node.n1.example:8443",
            "HTTPS://node.n1.example",
            "https://user@node.n1.example",
            "https://node.n1.example/\n",
        ] {
            assert!(validate_uri(bad, dns).is_err(), "{bad:?}");
        }
    }

    fn test_ca() -> CaIssuer<rcgen::KeyPair> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, "test CA");
        p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = p.self_signed(&key).unwrap();
        CaIssuer::new(cert.der().clone(), key).unwrap()
    }

    fn leaf() -> Leaf {
        let now = SystemTime::now();
        Leaf {
            subject: Subject::new("prod", "certmgr", "n1.example", "certmgr").unwrap(),
            capabilities: caps(&["node", "container"]),
            uris: vec!["https://certmgr.n1.example:7443/v1".into()],
            not_before: now,
            not_after: now + DEFAULT_LIFETIME,
            serial: random_serial().unwrap(),
        }
    }

    #[test]
    fn signed_leaf_has_dn_sans_extension_and_usages() {
        let ca = test_ca();
        let key = rcgen::KeyPair::generate().unwrap();
        let l = leaf();
        let der = ca.sign(&l, &key).unwrap();
        let id = PeerIdentity::from_der(&der).unwrap();
        assert_eq!(
            (
                id.cluster.as_str(),
                id.subsystem.as_str(),
                id.node.as_str(),
                id.agent_id.as_str()
            ),
            ("prod", "certmgr", "n1.example", "certmgr")
        );
        assert_eq!(id.capabilities, caps(&["node", "container"]));
        assert_eq!(id.serial, serial_hex(&l.serial));
        assert_eq!(uri_sans(&der).unwrap(), l.uris);

        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let sans: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert!(
            sans.contains(&"DNSName(certmgr.n1.example)".to_string()),
            "{sans:?}"
        );
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && eku.server_auth);
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_encipherment());
        assert!(!cert.is_ca());
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.as_bytes() == CAPABILITIES_OID_DER)
            .expect("capabilities extension");
        assert!(!ext.critical);
        // The placeholder is gone and the signature covers the real OID.
        let (placeholder, _) = oid_tlvs();
        assert!(!der.windows(placeholder.len()).any(|w| w == placeholder));
        let (_, ca_cert) = X509Certificate::from_der(ca.cert_der()).unwrap();
        cert.verify_signature(Some(ca_cert.public_key())).unwrap();
        assert_eq!(cert.issuer(), ca_cert.subject());
        // DC is an IA5String, UID the userId attribute.
        let subject = cert.subject().to_string();
        assert!(subject.contains("DC=prod"), "{subject}");
        assert!(subject.contains("OU=n1.example"), "{subject}");
    }

    #[test]
    fn leaf_with_hostile_names_is_not_signed() {
        let ca = test_ca();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut l = leaf();
        l.subject.node = "n1.example\nOU=evil".into();
        assert!(matches!(
            ca.sign(&l, &key),
            Err(ProfileError::InvalidName { .. })
        ));
        let mut l = leaf();
        l.uris = vec!["https://hub.n1.example:1".into()];
        assert!(ca.sign(&l, &key).is_err());
    }

    #[test]
    fn foreign_certificate_is_not_a_peer_identity() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["example.com".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert!(matches!(
            PeerIdentity::from_der(cert.der()),
            Err(ProfileError::MissingField(_))
        ));
        assert!(PeerIdentity::from_der(b"garbage").is_err());
    }

    #[test]
    fn csr_carries_only_the_public_key() {
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = csr_pem(&key).unwrap();
        let csr = rcgen::CertificateSigningRequestParams::from_pem(&pem).unwrap();
        assert_eq!(csr.public_key.der_bytes(), key.der_bytes());
        assert_eq!(csr.params.distinguished_name.iter().count(), 0);
    }

    #[test]
    fn serial_hex_strips_leading_zero_bytes() {
        assert_eq!(serial_hex(&[0, 0x8f, 1]), "8f01");
        assert_eq!(serial_hex(&[0]), "00");
    }
}
