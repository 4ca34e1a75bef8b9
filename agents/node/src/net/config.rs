//! What the network should look like, from user-data: DHCP on the first Ethernet interface
//! unless `/run/tessera/userdata.toml` says otherwise. Only two parts of that file are read
//! here:
//!
//! ```toml
//! [node]
//! hostname = "node1.example"    # applied by this service, unless tessera.hostname= was given
//!
//! [network]
//! interface = "eth0"            # default: the first Ethernet interface
//! address = "192.168.77.10/24"  # static configuration instead of DHCP (IPv4 or IPv6)
//! gateway = "192.168.77.1"      # optional, same family; outside the subnet: on-link
//! dns = ["192.168.77.1"]        # a list or one address
//! ```
//!
//! This is the v1 schema of agents/userdata (its SCHEMA.md), read leniently: the `userdata`
//! service validated the file, and a key this release does not know is reported, not fatal.
//! Also here: which host name to set, and the text of /etc/resolv.conf.

use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Where the `userdata` service leaves the node's validated configuration.
pub const USERDATA_FILE: &str = "/run/tessera/userdata.toml";
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// The resolver reads at most this many name servers (MAXNS in musl and glibc).
pub const MAX_NAMESERVERS: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkConfig {
    /// The interface to configure; `None`: the first Ethernet interface.
    pub interface: Option<String>,
    /// `None`: DHCP.
    pub static_config: Option<StaticConfig>,
    /// The host name user-data gives (`[node] hostname`).
    pub hostname: Option<String>,
    /// Keys of `[network]` this release does not know (reported, not fatal).
    pub unknown_keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticConfig {
    pub address: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    pub dns: Vec<IpAddr>,
}

impl StaticConfig {
    /// Whether the gateway is outside the address's subnet (then the route is on-link).
    pub fn gateway_onlink(&self) -> bool {
        self.gateway
            .is_some_and(|gw| !same_subnet(self.address, gw, self.prefix_len))
    }

    pub fn cidr(&self) -> String {
        format!("{}/{}", self.address, self.prefix_len)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid TOML: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("{path}: [network] {key}: {reason}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },
}

#[derive(Deserialize, Default)]
struct UserData {
    #[serde(default)]
    node: Node,
    #[serde(default)]
    network: toml::Table,
}

#[derive(Deserialize, Default)]
struct Node {
    hostname: Option<String>,
}

/// Reads the user-data file; a missing file means DHCP on the first Ethernet interface.
pub fn load(path: &Path) -> Result<NetworkConfig, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NetworkConfig::default()),
        Err(source) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Parses user-data text (`path` is for messages).
pub fn parse(text: &str, path: &Path) -> Result<NetworkConfig, ConfigError> {
    let data: UserData = toml::from_str(text).map_err(|e| ConfigError::Toml {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    })?;
    let invalid = |key, reason: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        key,
        reason,
    };
    let net = &data.network;
    let string = |key: &'static str| -> Result<Option<&str>, ConfigError> {
        match net.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(invalid(
                key,
                format!("expected a string, found {}", other.type_str()),
            )),
        }
    };

    let interface = match string("interface")? {
        Some(name) if !valid_interface_name(name) => {
            return Err(invalid(
                "interface",
                format!(
                    "{name:?} is not an interface name (1-15 characters, no '/', ':' or spaces)"
                ),
            ))
        }
        name => name.map(str::to_string),
    };

    let gateway = string("gateway")?
        .map(|g| {
            g.parse::<IpAddr>()
                .map_err(|_| invalid("gateway", format!("{g:?} is not an IP address")))
        })
        .transpose()?;

    let dns_values: Vec<&toml::Value> = match net.get("dns") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items.iter().collect(),
        Some(one) => vec![one],
    };
    let dns = dns_values
        .into_iter()
        .map(|v| {
            v.as_str()
                .and_then(|s| s.parse::<IpAddr>().ok())
                .ok_or_else(|| invalid("dns", format!("{v} is not an IP address")))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let static_config = match string("address")? {
        Some(cidr) => {
            let (address, prefix_len) = parse_cidr(cidr).ok_or_else(|| {
                invalid(
                    "address",
                    format!(
                        "{cidr:?} is not an address with a prefix length, like 192.168.1.10/24 or fd00::10/64"
                    ),
                )
            })?;
            if let Some(gw) = gateway.filter(|gw| gw.is_ipv4() != address.is_ipv4()) {
                return Err(invalid(
                    "gateway",
                    format!("{gw} is not in the same address family as address {cidr}"),
                ));
            }
            Some(StaticConfig {
                address,
                prefix_len,
                gateway,
                dns,
            })
        }
        None if gateway.is_some() || !dns.is_empty() => {
            return Err(invalid(
                "address",
                "gateway and dns are for a static configuration and need `address` (remove them to use DHCP)".into(),
            ))
        }
        None => None,
    };

    let known = ["interface", "address", "gateway", "dns"];
    let unknown_keys = net
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .cloned()
        .collect();
    Ok(NetworkConfig {
        interface,
        static_config,
        hostname: data.node.hostname.filter(|h| !h.is_empty()),
        unknown_keys,
    })
}

/// `a.b.c.d/n` (n in 1..=32) or `x:y::z/n` (n in 1..=128).
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = s.trim().split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (1..=max).contains(&len).then_some((ip, len))
}

/// Whether two addresses of one family share their first `prefix_len` bits.
pub fn same_subnet(a: IpAddr, b: IpAddr, prefix_len: u8) -> bool {
    let keep = |bits: u32| u128::MAX.checked_shl(bits - u32::from(prefix_len).min(bits));
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = keep(32).map_or(0, |m| m as u32);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = keep(128).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

fn valid_interface_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// The host name to set, if any. `tessera.hostname=` wins (PID 1 applied it); then
/// user-data's; the DHCP server's only while the name is still the default, so that DHCP never
/// renames a node someone named.
pub fn hostname_to_set<'a>(
    current: &str,
    kernel_arg_hostname: bool,
    userdata: Option<&'a str>,
    dhcp: Option<&'a str>,
) -> Option<&'a str> {
    if kernel_arg_hostname {
        return None;
    }
    let wanted = match userdata {
        Some(name) => name,
        None if current == tessera_common::paths::DEFAULT_HOSTNAME => dhcp?,
        None => return None,
    };
    (wanted != current).then_some(wanted)
}

/// An RFC 1123 host name that fits the kernel's 64 bytes.
pub fn valid_hostname(name: &str) -> bool {
    name.len() <= 64
        && !name.is_empty()
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// The text of /etc/resolv.conf; `source` says where the servers came from.
pub fn resolv_conf(source: &str, nameservers: &[IpAddr], search: Option<&str>) -> String {
    let mut text = format!("# Written by tessera net ({source}).\n");
    if let Some(domain) = search.filter(|d| valid_hostname(d)) {
        text.push_str(&format!("search {domain}\n"));
    }
    for ns in nameservers.iter().take(MAX_NAMESERVERS) {
        text.push_str(&format!("nameserver {ns}\n"));
    }
    text
}
