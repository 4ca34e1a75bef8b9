//! Validators for the single values of the schema. Each takes the text as written and returns
//! the normalized value or a message saying what is expected (never echoing a secret).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The SSH key types an authorized key may have (what dropbear and OpenSSH accept today).
pub const SSH_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Longest user-data document (EC2 allows 16 KiB; NoCloud and URLs get more room).
pub const MAX_DOCUMENT: usize = 1024 * 1024;

/// A host name or FQDN per RFC 1123, returned in lower case.
pub fn hostname(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("empty; write a host name such as node1.example".into());
    }
    if s.len() > 253 {
        return Err(format!(
            "host name is {} characters long; at most 253",
            s.len()
        ));
    }
    if s.ends_with('.') {
        return Err(format!(
            "bad host name {s:?}: no trailing dot (write {:?})",
            s.trim_end_matches('.')
        ));
    }
    if s.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "{s:?} is an IP address; a host name such as node1.example is needed"
        ));
    }
    for label in s.split('.') {
        if label.is_empty() {
            return Err(format!(
                "bad host name {s:?}: empty label (two dots in a row or a leading dot)"
            ));
        }
        if label.len() > 63 {
            return Err(format!(
                "bad host name: label {:?}… is {} characters long; at most 63 (RFC 1123)",
                label.chars().take(16).collect::<String>(),
                label.len()
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(format!(
                "bad host name {s:?}: {c:?} is not allowed; use letters, digits and '-' (RFC 1123)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "bad host name {s:?}: label {label:?} starts or ends with '-' (RFC 1123)"
            ));
        }
    }
    if s.rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        && s.contains('.')
    {
        return Err(format!(
            "bad host name {s:?}: the last label is all digits (RFC 1123 forbids it)"
        ));
    }
    Ok(s.to_ascii_lowercase())
}

/// A cluster name: one DNS label, returned in lower case (it becomes the DC= of certificates).
pub fn cluster(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!("bad cluster name {s:?}: expected 1-63 letters, digits or '-' (one DNS label, not starting or ending with '-'), such as \"prod\""))
    }
}

/// The CA's URL: `https://host[:port][/path]`.
pub fn ca_url(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &s[8..]
    } else if lower.starts_with("http://") {
        return Err(format!(
            "{s:?}: the CA is reached over HTTPS only; write https://{}",
            &s[7..]
        ));
    } else {
        return Err(format!(
            "{s:?} is not an https:// URL; write it like https://ca.example:8443"
        ));
    };
    if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{s:?}: URL contains {c:?}"));
    }
    if s.contains(['?', '#']) {
        return Err(format!("{s:?}: no query or fragment in the CA URL"));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(format!(
            "{s:?}: no user name or password in the CA URL; the CA is authenticated by its fingerprint"
        ));
    }
    host_port(authority).map_err(|e| format!("{s:?}: {e}"))?;
    Ok(s.to_string())
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; returns (host, port).
pub fn host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| "unclosed '[' in the host".to_string())?;
        addr.parse::<Ipv6Addr>()
            .map_err(|_| format!("{addr:?} is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("unexpected {p:?} after the IPv6 address"))?,
            ),
        };
        (addr.to_string(), port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (s.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    if !host.contains(':') && host.parse::<Ipv4Addr>().is_err() {
        hostname(&host)?;
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(format!("bad port {p:?}: expected 1-65535")),
        },
    };
    Ok((host.to_ascii_lowercase(), port))
}

/// `sha256:` followed by 64 hex digits, returned in lower case.
pub fn fingerprint(s: &str) -> Result<String, String> {
    sha256_value(s, "(`tessera ca fingerprint` prints it)")
}

/// `sha256:<64 hex>` of an image or bundle archive (`sha256sum FILE` prints the hex).
pub fn digest(s: &str) -> Result<String, String> {
    sha256_value(s, "(`sha256sum FILE` prints the hex digits)")
}

fn sha256_value(s: &str, hint: &str) -> Result<String, String> {
    const EXPECTED: &str = "expected \"sha256:\" followed by 64 hex digits";
    let Some(hex) = s
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("sha256:"))
        .map(|_| &s[7..])
    else {
        let colon_hex = s.len() == 95
            && s.split(':')
                .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
        if colon_hex {
            return Err(format!("{EXPECTED}; this looks like openssl's colon-separated form: remove the colons and put \"sha256:\" in front"));
        }
        return Err(format!("{EXPECTED} {hint}"));
    };
    if let Some(c) = hex.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(format!("{EXPECTED}; {c:?} is not a hex digit"));
    }
    if hex.len() != 64 {
        return Err(format!("{EXPECTED}, got {} hex digits {hint}", hex.len()));
    }
    Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
}

/// A one-time token: 1-4096 visible ASCII characters. The value is never echoed.
pub fn token(s: &str) -> Result<Secret, String> {
    if s.is_empty() {
        return Err("empty; give the one-time token printed by `tessera ca token`".into());
    }
    if s.len() > 4096 {
        return Err(format!("{} characters long; at most 4096", s.len()));
    }
    if s.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
        return Err("contains a space or a character that is not printable ASCII; copy the token exactly as `tessera ca token` printed it".into());
    }
    Ok(Secret(s.to_string()))
}

/// One authorized key: `<type> <base64> [comment]`. The base64 must decode to an SSH public
/// key blob of the same type. Returns the line with single spaces.
pub fn authorized_key(s: &str) -> Result<String, String> {
    if s.contains(['\n', '\r']) {
        return Err("one key per string: this one has a line break".into());
    }
    let mut words = s.split_whitespace();
    let Some(kind) = words.next() else {
        return Err("empty; expected \"<type> <base64> [comment]\" such as \"ssh-ed25519 AAAAC3Nza… user@host\"".into());
    };
    if !SSH_KEY_TYPES.contains(&kind) {
        if kind == "ssh-dss" {
            return Err("DSA keys (ssh-dss) are not accepted; use an ssh-ed25519 key".into());
        }
        if kind.contains(['=', ',', '"']) {
            return Err(format!("authorized_keys options ({kind:?}) are not supported; give \"<type> <base64> [comment]\""));
        }
        return Err(format!(
            "unknown key type {kind:?}; expected one of {}",
            SSH_KEY_TYPES.join(", ")
        ));
    }
    let Some(data) = words.next() else {
        return Err(format!("no key data after {kind:?}"));
    };
    let blob = base64_decode(data).ok_or_else(|| {
        format!("the {kind} key data is not valid base64 (cut short when copied?)")
    })?;
    let mut reader = Wire(&blob);
    let inner = reader
        .string()
        .ok_or_else(|| format!("the {kind} key data is not an SSH public key"))?;
    if inner != kind.as_bytes() {
        return Err(format!(
            "the key data is a {} key but the line says {kind}",
            String::from_utf8_lossy(inner)
        ));
    }
    key_fields(kind, &mut reader).ok_or_else(|| {
        format!("the {kind} key data is cut short or malformed (copied incompletely?)")
    })?;
    if kind == "ssh-rsa" {
        // key_fields checked that e and n are there; count the bits of n.
        let mut again = Wire(&blob);
        again.string();
        again.string();
        let n = again.string().unwrap_or_default();
        let bits = n.iter().skip_while(|&&b| b == 0).count() * 8;
        if bits < 2048 {
            return Err(format!("the ssh-rsa key has about {bits} bits; at least 2048 are needed (or use ssh-ed25519)"));
        }
    }
    let comment: Vec<&str> = words.collect();
    let mut line = format!("{kind} {data}");
    if !comment.is_empty() {
        line.push(' ');
        line.push_str(&comment.join(" "));
    }
    Ok(line)
}

/// Reads the public key fields that follow the type name (RFC 4253, 5656, 8709, and
/// OpenSSH's PROTOCOL.u2f); `None` unless they are all there and nothing follows.
fn key_fields(kind: &str, r: &mut Wire) -> Option<()> {
    let ecdsa_point = |r: &mut Wire, curve: &str| -> Option<()> {
        let len = match curve {
            "nistp256" => 65,
            "nistp384" => 97,
            "nistp521" => 133,
            _ => return None,
        };
        let point = r.string()?;
        (point.len() == len && point[0] == 4).then_some(())
    };
    match kind {
        "ssh-ed25519" => (r.string()?.len() == 32).then_some(())?,
        "ssh-rsa" => {
            r.string()?; // e
            r.string()?; // n
        }
        "sk-ssh-ed25519@openssh.com" => {
            (r.string()?.len() == 32).then_some(())?;
            r.string()?; // application
        }
        "sk-ecdsa-sha2-nistp256@openssh.com" => {
            (r.string()? == b"nistp256").then_some(())?;
            ecdsa_point(r, "nistp256")?;
            r.string()?; // application
        }
        ecdsa => {
            let curve = ecdsa.strip_prefix("ecdsa-sha2-")?;
            (r.string()? == curve.as_bytes()).then_some(())?;
            ecdsa_point(r, curve)?;
        }
    }
    r.0.is_empty().then_some(())
}

/// SSH wire format reader: uint32 length-prefixed strings.
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    fn string(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_be_bytes(self.0.get(..4)?.try_into().ok()?) as usize;
        let s = self.0.get(4..4usize.checked_add(len)?)?;
        self.0 = &self.0[4 + len..];
        Some(s)
    }
}

/// Standard base64 with padding (what authorized_keys uses).
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let b = s.as_bytes();
    if b.is_empty() || !b.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    for (i, chunk) in b.chunks(4).enumerate() {
        let last = i == b.len() / 4 - 1;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

/// A block device path under /dev.
pub fn device_path(s: &str) -> Result<String, String> {
    let ok = s.starts_with("/dev/")
        && s.len() > 5
        && s.len() <= 255
        && !s.split('/').any(|p| p == "..")
        && !s.contains(|c: char| c.is_whitespace() || c.is_control())
        && !s.ends_with('/');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a device path; expected a block device under /dev/, such as /dev/vdb"
        ))
    }
}

/// A Linux network interface name (what the kernel's dev_valid_name accepts).
pub fn interface(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && !s.contains(|c: char| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not an interface name; expected 1-15 characters without '/', ':' or spaces, such as eth0"))
    }
}

/// An IPv4 or IPv6 address.
pub fn ip(s: &str) -> Result<IpAddr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an IPv4 or IPv6 address"))
}

/// An address with a prefix length: `192.168.77.0/24`, `fd00::/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Cidr {
    /// The network part: the address with the host bits cleared.
    pub fn network(&self) -> Cidr {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Cidr {
            addr,
            prefix: self.prefix,
        }
    }

    /// Parses `addr/prefix`; the address may have host bits set.
    pub fn parse_host(s: &str) -> Result<Cidr, String> {
        let Some((a, p)) = s.split_once('/') else {
            return Err(format!(
                "{s:?} has no prefix length; write it like 192.168.77.10/24"
            ));
        };
        let addr = ip(a)?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => {
                return Err(format!(
                    "{s:?}: bad prefix length /{p}; at most /{max} for {}",
                    if addr.is_ipv4() { "IPv4" } else { "IPv6" }
                ))
            }
        };
        Ok(Cidr { addr, prefix })
    }

    /// Parses a network: host bits must be zero.
    pub fn parse_network(s: &str) -> Result<Cidr, String> {
        let c = Self::parse_host(s)?;
        let net = c.network();
        if net != c {
            return Err(format!("{s:?} has host bits set; did you mean \"{net}\"?"));
        }
        Ok(c)
    }
}

/// A hub seed: a host name or address, with an optional port.
pub fn seed(s: &str) -> Result<String, String> {
    host_port(s).map_err(|e| format!("bad seed {s:?}: {e}"))?;
    Ok(s.to_ascii_lowercase())
}

/// A value that must not show up in logs: `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself, for whoever must send it (the certificate manager).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted, {} characters>", self.0.len())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert_eq!(hostname("Node1.Example").unwrap(), "node1.example");
        assert_eq!(hostname("n1").unwrap(), "n1");
        assert!(hostname("1node.example").is_ok());
        for bad in [
            "", "a..b", "-a.b", "a-.b", "a_b", "a.b.", "10.0.0.1", "a.123", "ä.b",
        ] {
            assert!(hostname(bad).is_err(), "{bad}");
        }
        assert!(hostname(&"a".repeat(64)).is_err());
        assert!(hostname(&format!("{}.b", "a".repeat(63))).is_ok());
    }

    #[test]
    fn fingerprints() {
        let hex = "AB".repeat(32);
        assert_eq!(
            fingerprint(&format!("SHA256:{hex}")).unwrap(),
            format!("sha256:{}", hex.to_lowercase())
        );
        assert!(fingerprint(&"ab".repeat(32)).is_err());
        let colons = vec!["AB"; 32].join(":");
        assert!(fingerprint(&colons).unwrap_err().contains("colon"));
        assert!(fingerprint("sha256:xyz").unwrap_err().contains("'x'"));
    }

    #[test]
    fn base64_round_trips_known_vectors() {
        assert_eq!(base64_decode("Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(base64_decode("Zm9vYg==").unwrap(), b"foob");
        assert_eq!(base64_decode("Zm9vYmE=").unwrap(), b"fooba");
        assert!(base64_decode("Zm9vY").is_none());
        assert!(base64_decode("Zm=vYmFy").is_none());
        assert!(base64_decode("Zm9v!mFy").is_none());
    }

    #[test]
    fn cidrs() {
        assert_eq!(
            Cidr::parse_network("192.168.77.0/24").unwrap().to_string(),
            "192.168.77.0/24"
        );
        assert!(Cidr::parse_network("192.168.77.1/24")
            .unwrap_err()
            .contains("192.168.77.0/24"));
        assert!(Cidr::parse_network("fd00::/64").is_ok());
        assert!(Cidr::parse_network("fd00::1/64").is_err());
        assert!(Cidr::parse_network("10.0.0.0/33").is_err());
        assert!(Cidr::parse_network("0.0.0.0/0").is_ok());
        assert!(Cidr::parse_host("192.168.77.10/24").is_ok());
        assert!(Cidr::parse_host("192.168.77.10").is_err());
    }

    #[test]
    fn host_ports() {
        assert_eq!(
            host_port("Node2.example:7946").unwrap(),
            ("node2.example".into(), Some(7946))
        );
        assert_eq!(
            host_port("[fd00::1]:80").unwrap(),
            ("fd00::1".into(), Some(80))
        );
        assert!(host_port("node:0").is_err());
        assert!(host_port("node:http").is_err());
        assert!(host_port(":80").is_err());
    }

    #[test]
    fn secrets_are_redacted() {
        let s = Secret::new("abc");
        assert_eq!(
            format!("{s:?} {s}"),
            "<redacted, 3 characters> <redacted, 3 characters>"
        );
    }
}
