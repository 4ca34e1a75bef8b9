//! What the firewall is made of, validated: exposures (protocol, port, scope, owner) and the
//! cluster networks (CIDRs). Every error names the field it is about, the value, and what a
//! good value looks like.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest owner label: it ends up in an nft rule comment (at most 128 bytes).
pub const MAX_OWNER: usize = 64;

/// A validation error: the field and why its value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    pub fn parse(field: &str, s: &str) -> Result<Protocol, FieldError> {
        match s {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            other => Err(FieldError::new(
                field,
                format!("`{other}` is not a protocol; use tcp or udp"),
            )),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who may reach an exposed port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Only the node itself (the loopback interface).
    NodeLocal,
    /// Sources in user-data's `firewall.cluster_cidrs`.
    Cluster,
    /// Anyone.
    Public,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::NodeLocal => "node-local",
            Scope::Cluster => "cluster",
            Scope::Public => "public",
        }
    }

    pub fn parse(field: &str, s: &str) -> Result<Scope, FieldError> {
        match s {
            "node-local" => Ok(Scope::NodeLocal),
            "cluster" => Ok(Scope::Cluster),
            "public" => Ok(Scope::Public),
            other => Err(FieldError::new(
                field,
                format!("`{other}` is not a scope; use node-local, cluster or public"),
            )),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A port opened to a scope. Identified by (protocol, port): exposing it again replaces it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exposure {
    pub protocol: Protocol,
    pub port: u16,
    pub scope: Scope,
    /// Who asked for it (a container, a service); shown by `tessera firewall show`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl Exposure {
    pub fn key(&self) -> (Protocol, u16) {
        (self.protocol, self.port)
    }
}

/// A host port forwarded to a container (DNAT to `to`), reachable from its scope: the
/// container agent publishes it while the container runs. Identified by (protocol, port),
/// like an exposure; a port is either exposed or published, never both.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publication {
    pub protocol: Protocol,
    /// The host port.
    pub port: u16,
    /// The container's address and port.
    pub to: std::net::SocketAddrV4,
    pub scope: Scope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl Publication {
    pub fn key(&self) -> (Protocol, u16) {
        (self.protocol, self.port)
    }
}

/// The containers' bridge: what arrives from its subnet is forwarded out of the node and
/// masqueraded behind the node's address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bridge {
    pub interface: String,
    pub subnet: Cidr,
}

/// Checks a network interface name (1-15 bytes, no `/`, whitespace or quotes).
pub fn interface(field: &str, s: &str) -> Result<String, FieldError> {
    let ok = !s.is_empty()
        && s.len() < 16
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "`{}` is not an interface name; use 1-15 letters, digits and - _ .",
                s.chars().take(40).collect::<String>()
            ),
        ))
    }
}

/// Checks a port number given as any JSON/TOML integer.
pub fn port(field: &str, value: i64) -> Result<u16, FieldError> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| FieldError::new(field, format!("{value} is not a port; use 1-65535")))
}

/// Parses a port written as text (the CLI).
pub fn port_text(field: &str, s: &str) -> Result<u16, FieldError> {
    let n: i64 = s
        .trim()
        .parse()
        .map_err(|_| FieldError::new(field, format!("`{s}` is not a port; use 1-65535")))?;
    port(field, n)
}

/// Checks an owner label: 1-64 of `a-z A-Z 0-9 . _ - : /`.
pub fn owner(field: &str, s: &str) -> Result<String, FieldError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_OWNER
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-:/".contains(c));
    if ok {
        Ok(s.to_string())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "`{}` is not an owner label; use 1-{MAX_OWNER} letters, digits and . _ - : /",
                s.chars().take(80).collect::<String>()
            ),
        ))
    }
}

/// An IPv4 or IPv6 network with its host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn host_bits_zero(addr: IpAddr, prefix: u8) -> (bool, IpAddr) {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            (bits & !mask == 0, IpAddr::V4((bits & mask).into()))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            (bits & !mask == 0, IpAddr::V6((bits & mask).into()))
        }
    }
}

impl Cidr {
    /// Parses `address/prefix`; `field` names it in errors.
    pub fn parse(field: &str, s: &str) -> Result<Cidr, FieldError> {
        let bad = |why: String| FieldError::new(field, why);
        let (a, p) = s.split_once('/').ok_or_else(|| {
            bad(format!(
                "`{s}` is not a network; write address/prefix, e.g. 192.168.77.0/24"
            ))
        })?;
        let addr = IpAddr::from_str(a)
            .map_err(|_| bad(format!("`{a}` in `{s}` is not an IPv4 or IPv6 address")))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = p
            .parse::<u8>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| bad(format!("`{p}` in `{s}` is not a prefix length (0-{max})")))?;
        let (zero, network) = host_bits_zero(addr, prefix);
        if !zero {
            return Err(bad(format!(
                "`{s}` has host bits set; write the network, {network}/{prefix}"
            )));
        }
        Ok(Cidr { addr, prefix })
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        Cidr::parse("cidr", &s).map_err(serde::de::Error::custom)
    }
}

/// Parses a list of CIDRs, naming the entry that is wrong (`firewall.cluster_cidrs[1]`);
/// duplicates are refused too.
pub fn cidr_list(field: &str, items: &[String]) -> Result<Vec<Cidr>, FieldError> {
    let mut out: Vec<Cidr> = Vec::new();
    for (i, s) in items.iter().enumerate() {
        let name = format!("{field}[{i}]");
        let c = Cidr::parse(&name, s)?;
        if out.contains(&c) {
            return Err(FieldError::new(name, format!("`{s}` is listed twice")));
        }
        out.push(c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_both_families() {
        let c = Cidr::parse("x", "192.168.77.0/24").unwrap();
        assert_eq!(c.to_string(), "192.168.77.0/24");
        assert!(c.is_ipv4());
        let c = Cidr::parse("x", "fd00:77::/64").unwrap();
        assert_eq!(c.to_string(), "fd00:77::/64");
        assert_eq!(Cidr::parse("x", "0.0.0.0/0").unwrap().prefix, 0);
    }

    #[test]
    fn bad_cidrs_name_the_field_and_the_fix() {
        let e = cidr_list(
            "firewall.cluster_cidrs",
            &["10.0.0.0/8".into(), "192.168.77.10/24".into()],
        )
        .unwrap_err();
        assert_eq!(e.field, "firewall.cluster_cidrs[1]");
        assert!(
            e.reason.contains("host bits") && e.reason.contains("192.168.77.0/24"),
            "{e}"
        );
        let e = Cidr::parse("f", "192.168.77.0").unwrap_err();
        assert!(e.reason.contains("address/prefix"), "{e}");
        let e = Cidr::parse("f", "192.168.77.0/33").unwrap_err();
        assert!(e.reason.contains("0-32"), "{e}");
        let e = Cidr::parse("f", "fd00::/129").unwrap_err();
        assert!(e.reason.contains("0-128"), "{e}");
        let e = Cidr::parse("f", "node1/24").unwrap_err();
        assert!(e.reason.contains("not an IPv4 or IPv6 address"), "{e}");
        let e = cidr_list("c", &["10.0.0.0/8".into(), "10.0.0.0/8".into()]).unwrap_err();
        assert_eq!(e.to_string(), "c[1]: `10.0.0.0/8` is listed twice");
    }

    #[test]
    fn ports_scopes_protocols_and_owners_are_checked() {
        assert_eq!(port("port", 8080), Ok(8080));
        assert_eq!(
            port("port", 0).unwrap_err().to_string(),
            "port: 0 is not a port; use 1-65535"
        );
        assert!(port("port", 65536).is_err());
        assert!(port("port", -1).is_err());
        assert_eq!(port_text("port", "443"), Ok(443));
        assert!(port_text("port", "https")
            .unwrap_err()
            .reason
            .contains("`https`"));
        assert_eq!(Scope::parse("scope", "cluster"), Ok(Scope::Cluster));
        let e = Scope::parse("scope", "world").unwrap_err();
        assert_eq!(e.field, "scope");
        assert!(e.reason.contains("node-local, cluster or public"), "{e}");
        assert_eq!(Protocol::parse("protocol", "udp"), Ok(Protocol::Udp));
        assert!(Protocol::parse("protocol", "sctp")
            .unwrap_err()
            .reason
            .contains("tcp or udp"));
        assert_eq!(
            owner("owner", "container/web-1").unwrap(),
            "container/web-1"
        );
        assert!(owner("owner", "a b").is_err());
        assert!(owner("owner", &"x".repeat(65)).is_err());
    }
}
