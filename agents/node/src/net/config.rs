//! What the network should look like, from user-data: DHCP on the first Ethernet interface
//! unless `/run/tessera/userdata.toml` says otherwise. Only two parts of that file are read
//! here; the `userdata` service owns and validates the rest:
//!
//! ```toml
//! [node]
//! hostname = "node1"            # set: DHCP does not change the host name
//!
//! [network]
//! interface = "eth0"            # default: the first Ethernet interface
//! address = "192.168.77.10/24"  # static configuration instead of DHCP
//! gateway = "192.168.77.1"      # optional; a gateway outside the subnet is reached on-link
//! dns = ["192.168.77.1"]        # a list or one address
//! ```
//!
//! Also here: the host-name rule (DHCP may set it only while it is still the default) and
//! the text of /etc/resolv.conf.

use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr};
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
    /// user-data names the host (`[node] hostname`).
    pub hostname_in_userdata: bool,
    /// Keys of `[network]` this release does not know (reported, not fatal).
    pub unknown_keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticConfig {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<IpAddr>,
}

impl StaticConfig {
    /// Whether the gateway is outside the address's subnet (then the route is on-link).
    pub fn gateway_onlink(&self) -> bool {
        self.gateway
            .is_some_and(|gw| !same_subnet(self.address, gw, self.prefix_len))
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

    let interface = string("interface")?
        .map(|name| {
            valid_interface_name(name).then(|| name.to_string()).ok_or_else(|| {
                invalid(
                    "interface",
                    format!("{name:?} is not an interface name (1-15 characters, no '/', ':' or spaces)"),
                )
            })
        })
        .transpose()?;

    let gateway = string("gateway")?
        .map(|g| {
            g.parse::<Ipv4Addr>()
                .map_err(|_| invalid("gateway", format!("{g:?} is not an IPv4 address")))
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
                    format!("{cidr:?} is not an IPv4 address with a prefix, like 192.168.1.10/24"),
                )
            })?;
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
        hostname_in_userdata: data.node.hostname.is_some_and(|h| !h.is_empty()),
        unknown_keys,
    })
}

/// `a.b.c.d/n` with n in 1..=32.
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = s.trim().split_once('/')?;
    let len: u8 = len.parse().ok()?;
    ((1..=32).contains(&len)).then_some(())?;
    Some((ip.parse().ok()?, len))
}

pub fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix_len: u8) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    u32::from(a) & mask == u32::from(b) & mask
}

fn valid_interface_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// Whether DHCP may set the host name: only while nobody else did. PID 1 applies
/// `tessera.hostname=`, and any name other than the default counts as set.
pub fn dhcp_may_set_hostname(
    current: &str,
    kernel_arg_hostname: bool,
    hostname_in_userdata: bool,
) -> bool {
    current == tessera_common::paths::DEFAULT_HOSTNAME
        && !kernel_arg_hostname
        && !hostname_in_userdata
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
