//! The user-data schema, version 1: a TOML document, read strictly.
//!
//! ```toml
//! version = 1                        # required; the only version this release reads
//!
//! [node]
//! hostname = "node1.example"         # RFC 1123 host name or FQDN (lower-cased)
//! cluster = "prod"                   # one DNS label; default "tessera"
//!
//! [ca]                               # all three required when [ca] is given
//! url = "https://ca.example:8443"    # https only; the CA is authenticated by the fingerprint
//! fingerprint = "sha256:<64 hex>"    # `tessera ca fingerprint` prints it
//! token = "<one-time token>"         # for the certificate manager (`tessera ca token`)
//!
//! [ssh]
//! authorized_keys = ["ssh-ed25519 AAAA… user@host"]   # "<type> <base64> [comment]"
//!
//! [storage]                          # backend and device required when [storage] is given
//! backend = "btrfs"                  # or "lvm-thin"
//! device = "/dev/vdb"                # a block device under /dev
//! wipe = false                       # default false
//!
//! [firewall]
//! cluster_cidrs = ["192.168.77.0/24"]  # networks (host bits zero), IPv4 or IPv6
//!
//! [hub]
//! seeds = ["node2.example"]          # host, host:port, IP or [IPv6]:port
//!
//! [network]                          # static addressing instead of DHCP
//! interface = "eth0"                 # required when [network] is given
//! address = "192.168.77.10/24"       # required: the node's address with its prefix length
//! gateway = "192.168.77.1"           # optional; same family as address
//! dns = ["192.168.77.1"]             # optional; at most 3
//!
//! [container_network]
//! subnet = "10.88.0.0/24"            # the containers' bridge network (IPv4, /16-/29; default)
//!
//! [[containers]]                     # the declared workload (see `containers`)
//! name = "web"
//! image = "http://10.0.2.2:8000/web.tar.zst"   # or a path on the node
//! sha256 = "sha256:<64 hex>"
//! ```
//!
//! Every section is optional; `version` is not. Unknown keys, wrong types and bad values are
//! errors that name the key path (`ca.fingerprint`, `ssh.authorized_keys[1]`) and the line and
//! column. A document for another schema version is refused before anything else is read.
//! SCHEMA.md beside this crate says the same for operators.

use crate::values::{self, Cidr, Secret};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use toml::Spanned;

/// The schema version this release reads and writes.
pub const SCHEMA_VERSION: i64 = 1;

/// Cluster name when `node.cluster` is not given.
pub const DEFAULT_CLUSTER: &str = "tessera";

/// Most DNS servers `network.dns` may list (resolv.conf readers use the first three).
pub const MAX_DNS: usize = 3;

/// A validated node configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    pub version: u32,
    pub node: Node,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<Ca>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh: Option<Ssh>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<Storage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firewall: Option<Firewall>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub: Option<Hub>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_network: Option<ContainerNetwork>,
    /// The declared workload (`[[containers]]`); last, as TOML wants arrays of tables.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<Container>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    pub cluster: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ca {
    pub url: String,
    pub fingerprint: String,
    pub token: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ssh {
    pub authorized_keys: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StorageBackend {
    Btrfs,
    LvmThin,
}

impl StorageBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageBackend::Btrfs => "btrfs",
            StorageBackend::LvmThin => "lvm-thin",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Storage {
    pub backend: StorageBackend,
    pub device: String,
    pub wipe: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Firewall {
    pub cluster_cidrs: Vec<Cidr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hub {
    pub seeds: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Network {
    pub interface: String,
    pub address: Cidr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    pub dns: Vec<IpAddr>,
}

/// Why a document (or a kernel argument) is not a valid configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Key path (`ca.fingerprint`, `ssh.authorized_keys[1]`); empty for whole-document errors.
    pub key: String,
    pub message: String,
    /// 1-based line and column in the document, when the problem has a place in it.
    pub line: Option<(usize, usize)>,
    /// The kernel argument (or meta-data key) the bad value came from, when not the document.
    pub origin: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)?;
        if let Some((l, c)) = self.line {
            write!(f, " (line {l}, column {c})")?;
        }
        if let Some(o) = &self.origin {
            write!(f, " ({o})")?;
        }
        Ok(())
    }
}

impl ConfigError {
    fn new(key: &str, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.to_string(),
            message: message.into(),
            line: None,
            origin: None,
        }
    }
}

/// A value given outside the document (kernel argument, NoCloud meta-data), with its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Given<T> {
    pub value: T,
    /// `kernel argument tessera.ca_fp`, `meta-data local-hostname`.
    pub origin: String,
}

/// Values that replace the document's (see [`finish`]). Each is validated when it is built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overlay {
    pub hostname: Option<Given<String>>,
    pub ca_url: Option<Given<String>>,
    pub ca_fingerprint: Option<Given<String>>,
    pub ca_token: Option<Given<Secret>>,
}

impl Overlay {
    pub fn is_empty(&self) -> bool {
        self == &Overlay::default()
    }

    /// Validates one value for `key` with its origin, the way the document's would be.
    pub fn set(&mut self, key: &str, value: &str, origin: &str) -> Result<(), ConfigError> {
        let err = |message: String| ConfigError {
            origin: Some(origin.to_string()),
            ..ConfigError::new(key, message)
        };
        let given = |value| Given {
            value,
            origin: origin.to_string(),
        };
        match key {
            "node.hostname" => self.hostname = Some(given(values::hostname(value).map_err(err)?)),
            "ca.url" => self.ca_url = Some(given(values::ca_url(value).map_err(err)?)),
            "ca.fingerprint" => {
                self.ca_fingerprint = Some(given(values::fingerprint(value).map_err(err)?))
            }
            "ca.token" => {
                self.ca_token = Some(Given {
                    value: values::token(value).map_err(err)?,
                    origin: origin.to_string(),
                })
            }
            other => return Err(err(format!("{other} cannot be given outside the document"))),
        }
        Ok(())
    }
}

/// A parsed, not yet completed document: every value is checked, required keys are not
/// (a kernel argument may still supply them). [`finish`] turns it into a [`Config`].
#[derive(Debug, Default)]
pub struct Document {
    raw: RawDoc,
    text: String,
}

impl Document {
    /// No document: a configuration made only of overlay values (the kernel command line).
    pub fn empty() -> Self {
        Document::default()
    }

    /// Whether the document sets `node.hostname`.
    pub fn has_hostname(&self) -> bool {
        self.raw
            .node
            .as_ref()
            .is_some_and(|n| n.get_ref().hostname.is_some())
    }

    fn line_col(&self, span: Range<usize>) -> Option<(usize, usize)> {
        (!self.text.is_empty()).then(|| line_col(&self.text, span.start))
    }
}

/// Parses and validates a complete document.
pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
    finish(parse_document(bytes)?, &Overlay::default())
}

/// True for a document with nothing but blank lines and comments (no configuration at all).
pub fn is_blank(bytes: &[u8]) -> bool {
    String::from_utf8_lossy(bytes)
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
}

/// Parses a document and checks every value in it (not yet the required keys).
pub fn parse_document(bytes: &[u8]) -> Result<Document, ConfigError> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    if bytes.len() > values::MAX_DOCUMENT {
        return Err(ConfigError::new(
            "",
            format!(
                "user-data is {} bytes; at most {} are read",
                bytes.len(),
                values::MAX_DOCUMENT
            ),
        ));
    }
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return Err(ConfigError::new("", "user-data is gzip-compressed; Tessera reads plain TOML (see agents/userdata/SCHEMA.md)"));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ConfigError::new(
            "",
            format!(
                "user-data is not UTF-8 text (bad byte at offset {}); it must be a TOML document",
                e.valid_up_to()
            ),
        )
    })?;
    let first = text.lines().next().unwrap_or_default().trim();
    if first.starts_with("#cloud-config") {
        return Err(ConfigError::new("", "this is cloud-init YAML (#cloud-config); Tessera reads TOML user-data starting with `version = 1` (see agents/userdata/SCHEMA.md)"));
    }
    if first.starts_with("#!") {
        return Err(ConfigError::new("", "this is a script (#!); Tessera runs no user-data scripts: give a TOML document starting with `version = 1`"));
    }
    if first.to_ascii_lowercase().starts_with("content-type:") {
        return Err(ConfigError::new("", "this is a MIME multi-part document; Tessera reads one TOML document starting with `version = 1`"));
    }
    let at = |span: Option<Range<usize>>| span.map(|s| line_col(text, s.start));

    // The version first: a document for another schema is refused before its keys are read.
    #[derive(Deserialize)]
    struct VersionOnly {
        version: Option<Spanned<toml::Value>>,
    }
    let v: VersionOnly = toml::from_str(text).map_err(|e| ConfigError {
        line: at(e.span()),
        ..ConfigError::new("", polish(e.message()))
    })?;
    let Some(version) = v.version else {
        return Err(ConfigError::new(
            "version",
            "missing; user-data starts with `version = 1` (see agents/userdata/SCHEMA.md)",
        ));
    };
    let version_err = |message: String| ConfigError {
        line: at(Some(version.span())),
        ..ConfigError::new("version", message)
    };
    match version.get_ref() {
        toml::Value::Integer(SCHEMA_VERSION) => {}
        toml::Value::Integer(n) => {
            return Err(version_err(format!(
                "unsupported schema version {n}; this node reads version {SCHEMA_VERSION} (see agents/userdata/SCHEMA.md)"
            )))
        }
        other => {
            return Err(version_err(format!(
                "expected the integer {SCHEMA_VERSION}, found a {}",
                other.type_str()
            )))
        }
    }

    let deserializer = toml::Deserializer::parse(text).map_err(|e| ConfigError {
        line: at(e.span()),
        ..ConfigError::new("", polish(e.message()))
    })?;
    let raw: RawDoc = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e
            .path()
            .to_string()
            .replace("$__serde_spanned_private_value.", "")
            .replace(".$__serde_spanned_private_value", "");
        let key = if key == "." { String::new() } else { key };
        // toml places errors inside an array at the array; point at the element instead.
        let span = element_span(text, &key).or_else(|| e.inner().span());
        ConfigError {
            line: at(span),
            ..ConfigError::new(&key, polish(e.inner().message()))
        }
    })?;
    Ok(Document {
        raw,
        text: text.to_string(),
    })
}

/// Completes a document: overlay values replace the document's, then required keys and the
/// rules between keys are checked, and defaults filled in.
pub fn finish(doc: Document, overlay: &Overlay) -> Result<Config, ConfigError> {
    let raw = &doc.raw;
    let from_overlay = |g: &Given<String>| g.value.clone();

    let node = {
        let (hostname, cluster) = match &raw.node {
            Some(n) => (
                n.get_ref().hostname.clone().map(|h| h.0),
                n.get_ref().cluster.clone().map(|c| c.0),
            ),
            None => (None, None),
        };
        Node {
            hostname: overlay.hostname.as_ref().map(from_overlay).or(hostname),
            cluster: cluster.unwrap_or_else(|| DEFAULT_CLUSTER.to_string()),
        }
    };

    // Where a missing key should have been: the section's header, or a kernel argument.
    let missing = |section: Option<Range<usize>>, key: &str, kernel_hint: Option<&str>| {
        let name = key.split('.').next().unwrap_or_default();
        match (section, kernel_hint) {
            (Some(span), _) => ConfigError {
                line: doc.line_col(span),
                ..ConfigError::new(key, format!("missing in [{name}]"))
            },
            (None, Some(hint)) => ConfigError::new(
                key,
                format!("missing; add {hint} to the kernel command line"),
            ),
            (None, None) => ConfigError::new(key, format!("missing in [{name}]")),
        }
    };

    let ca_given =
        overlay.ca_url.is_some() || overlay.ca_fingerprint.is_some() || overlay.ca_token.is_some();
    let ca = match (&raw.ca, ca_given) {
        (None, false) => None,
        (section, _) => {
            let span = section.as_ref().map(|s| s.span());
            let r = section.as_ref().map(|s| s.get_ref());
            let url = overlay
                .ca_url
                .as_ref()
                .map(from_overlay)
                .or_else(|| r.and_then(|r| r.url.clone().map(|v| v.0)))
                .ok_or_else(|| {
                    missing(
                        span.clone(),
                        "ca.url",
                        Some("tessera.ca=https://<host>:<port>"),
                    )
                })?;
            let fingerprint = overlay
                .ca_fingerprint
                .as_ref()
                .map(from_overlay)
                .or_else(|| r.and_then(|r| r.fingerprint.clone().map(|v| v.0)))
                .ok_or_else(|| {
                    missing(
                        span.clone(),
                        "ca.fingerprint",
                        Some("tessera.ca_fp=sha256:<64 hex digits>"),
                    )
                })?;
            let token = overlay
                .ca_token
                .as_ref()
                .map(|g| g.value.clone())
                .or_else(|| r.and_then(|r| r.token.clone().map(|v| v.0)))
                .ok_or_else(|| {
                    missing(
                        span.clone(),
                        "ca.token",
                        Some("tessera.certmgr_token=<token>"),
                    )
                })?;
            Some(Ca {
                url,
                fingerprint,
                token,
            })
        }
    };

    let ssh = raw.ssh.as_ref().map(|s| Ssh {
        authorized_keys: s
            .get_ref()
            .authorized_keys
            .iter()
            .map(|k| k.0.clone())
            .collect(),
    });

    let storage = match &raw.storage {
        None => None,
        Some(s) => {
            let r = s.get_ref();
            Some(Storage {
                backend: r
                    .backend
                    .ok_or_else(|| missing(Some(s.span()), "storage.backend", None))?,
                device: r
                    .device
                    .clone()
                    .map(|d| d.0)
                    .ok_or_else(|| missing(Some(s.span()), "storage.device", None))?,
                wipe: r.wipe,
            })
        }
    };

    let firewall = raw.firewall.as_ref().map(|f| Firewall {
        cluster_cidrs: f.get_ref().cluster_cidrs.iter().map(|c| c.0).collect(),
    });

    let hub = raw.hub.as_ref().map(|h| Hub {
        seeds: h.get_ref().seeds.iter().map(|s| s.0.clone()).collect(),
    });

    let network = match &raw.network {
        None => None,
        Some(n) => {
            let r = n.get_ref();
            let interface = r
                .interface
                .clone()
                .map(|i| i.0)
                .ok_or_else(|| missing(Some(n.span()), "network.interface", None))?;
            let address = r
                .address
                .as_ref()
                .map(|a| a.0)
                .ok_or_else(|| missing(Some(n.span()), "network.address", None))?;
            let gateway = match &r.gateway {
                Some(g) if g.get_ref().0.is_ipv4() != address.addr.is_ipv4() => {
                    return Err(ConfigError {
                        line: doc.line_col(g.span()),
                        ..ConfigError::new(
                            "network.gateway",
                            format!(
                                "{} is not in the same address family as network.address {address}",
                                g.get_ref().0
                            ),
                        )
                    })
                }
                Some(g) => Some(g.get_ref().0),
                None => None,
            };
            let dns: Vec<IpAddr> = match &r.dns {
                Some(d) if d.get_ref().len() > MAX_DNS => {
                    return Err(ConfigError {
                        line: doc.line_col(d.span()),
                        ..ConfigError::new(
                            "network.dns",
                            format!(
                                "{} servers listed; at most {MAX_DNS} (resolvers read only the first {MAX_DNS})",
                                d.get_ref().len()
                            ),
                        )
                    })
                }
                Some(d) => d.get_ref().iter().map(|i| i.0).collect(),
                None => Vec::new(),
            };
            Some(Network {
                interface,
                address,
                gateway,
                dns,
            })
        }
    };

    let containers = containers::finish(&doc, raw.containers.as_deref().unwrap_or_default())?;
    let container_network = containers::finish_network(raw.container_network.as_ref());

    Ok(Config {
        version: SCHEMA_VERSION as u32,
        node,
        ca,
        ssh,
        storage,
        firewall,
        hub,
        network,
        container_network,
        containers,
    })
}

impl Config {
    /// A configuration with nothing but defaults (what a standalone node runs with).
    pub fn standalone() -> Self {
        Config {
            version: SCHEMA_VERSION as u32,
            node: Node {
                hostname: None,
                cluster: DEFAULT_CLUSTER.to_string(),
            },
            ca: None,
            ssh: None,
            storage: None,
            firewall: None,
            hub: None,
            network: None,
            container_network: None,
            containers: Vec::new(),
        }
    }

    /// The document as written to the node (`/run/tessera/userdata.toml`), tokens included.
    pub fn to_toml(&self) -> String {
        // Serializing plain strings, integers and arrays cannot fail.
        toml::to_string(self).unwrap_or_default()
    }

    /// One `key = value` line per setting, tokens redacted: for logs, status and golden tests.
    pub fn summary(&self) -> String {
        let mut out = vec![format!("version = {}", self.version)];
        let mut line = |k: &str, v: String| out.push(format!("{k} = {v}"));
        if let Some(h) = &self.node.hostname {
            line("node.hostname", format!("{h:?}"));
        }
        line("node.cluster", format!("{:?}", self.node.cluster));
        if let Some(ca) = &self.ca {
            line("ca.url", format!("{:?}", ca.url));
            line("ca.fingerprint", format!("{:?}", ca.fingerprint));
            line("ca.token", format!("{:?}", ca.token));
        }
        if let Some(ssh) = &self.ssh {
            line(
                "ssh.authorized_keys",
                format!("{} keys", ssh.authorized_keys.len()),
            );
            for (i, k) in ssh.authorized_keys.iter().enumerate() {
                line(&format!("ssh.authorized_keys[{i}]"), format!("{k:?}"));
            }
        }
        if let Some(s) = &self.storage {
            line("storage.backend", format!("{:?}", s.backend.as_str()));
            line("storage.device", format!("{:?}", s.device));
            line("storage.wipe", s.wipe.to_string());
        }
        if let Some(f) = &self.firewall {
            line("firewall.cluster_cidrs", list(&f.cluster_cidrs));
        }
        if let Some(h) = &self.hub {
            line("hub.seeds", list(&h.seeds));
        }
        if let Some(n) = &self.network {
            line("network.interface", format!("{:?}", n.interface));
            line("network.address", format!("\"{}\"", n.address));
            if let Some(g) = n.gateway {
                line("network.gateway", format!("\"{g}\""));
            }
            line("network.dns", list(&n.dns));
        }
        if let Some(n) = &self.container_network {
            line(
                "container_network.subnet",
                format!("{:?}", n.subnet.to_string()),
            );
        }
        containers::summary(&self.containers, &mut line);
        out.join("\n") + "\n"
    }
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The span of the value at a key path ending in an array index (`ssh.authorized_keys[1]`).
fn element_span(text: &str, path: &str) -> Option<Range<usize>> {
    if !path.ends_with(']') {
        return None;
    }
    let root = toml::de::DeTable::parse(text).ok()?;
    let mut steps = Vec::new();
    for part in path.split('.') {
        let (name, indexes) = part.split_once('[').unwrap_or((part, ""));
        steps.push(Err(name));
        for i in indexes.split('[').filter(|i| !i.is_empty()) {
            steps.push(Ok(i.trim_end_matches(']').parse::<usize>().ok()?));
        }
    }
    let mut steps = steps.into_iter();
    let Some(Err(first)) = steps.next() else {
        return None;
    };
    let mut value = root
        .get_ref()
        .iter()
        .find(|(k, _)| k.get_ref() == first)
        .map(|(_, v)| v)?;
    for step in steps {
        value = match step {
            Ok(i) => value.get_ref().get(i)?,
            Err(name) => value.get_ref().get(name)?,
        };
    }
    Some(value.span())
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before[before.rfind('\n').map(|i| i + 1).unwrap_or(0)..]
        .chars()
        .count()
        + 1;
    (line, col)
}

/// Serde's messages in TOML's words, on one line.
fn polish(message: &str) -> String {
    let mut m = message.trim().replace('\n', "; ");
    for (from, to) in [
        ("invalid type: map", "invalid type: table"),
        ("invalid type: sequence", "invalid type: array"),
        ("expected a sequence", "expected an array"),
        ("expected a borrowed string", "expected a string"),
        ("unknown field", "unknown key"),
        ("unknown variant", "unknown value"),
    ] {
        m = m.replace(from, to);
    }
    // "expected struct RawCa" → "expected a table"
    if let Some(i) = m.find("expected struct Raw") {
        m.replace_range(i.., "expected a table");
    }
    m
}

// ---- The document as read: every value validated on the way in, required keys optional. ----

macro_rules! validated {
    ($name:ident, $t:ty, $check:path) => {
        #[derive(Debug, Clone)]
        struct $name($t);
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $check(&s).map($name).map_err(de::Error::custom)
            }
        }
    };
}

validated!(HostnameValue, String, values::hostname);
validated!(ClusterValue, String, values::cluster);
validated!(CaUrlValue, String, values::ca_url);
validated!(FingerprintValue, String, values::fingerprint);
validated!(TokenValue, Secret, values::token);
validated!(AuthorizedKeyValue, String, values::authorized_key);
validated!(DeviceValue, String, values::device_path);
validated!(NetworkCidrValue, Cidr, Cidr::parse_network);
validated!(HostCidrValue, Cidr, Cidr::parse_host);
validated!(SeedValue, String, values::seed);
validated!(InterfaceValue, String, values::interface);
validated!(IpValue, IpAddr, values::ip);

// After the macro: the section's module uses it.
mod containers;
pub use containers::{
    Container, ContainerNetwork, Identity as ContainerIdentity, ImageSource, Net, Port,
    PortProtocol, PortScope, Restart, DEFAULT_SUBNET,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDoc {
    #[allow(dead_code)]
    version: Option<de::IgnoredAny>,
    node: Option<Spanned<RawNode>>,
    ca: Option<Spanned<RawCa>>,
    ssh: Option<Spanned<RawSsh>>,
    storage: Option<Spanned<RawStorage>>,
    firewall: Option<Spanned<RawFirewall>>,
    hub: Option<Spanned<RawHub>>,
    network: Option<Spanned<RawNetwork>>,
    container_network: Option<Spanned<containers::RawContainerNetwork>>,
    containers: Option<Vec<Spanned<containers::RawContainer>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    hostname: Option<HostnameValue>,
    cluster: Option<ClusterValue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCa {
    url: Option<CaUrlValue>,
    fingerprint: Option<FingerprintValue>,
    token: Option<TokenValue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSsh {
    #[serde(default)]
    authorized_keys: Vec<AuthorizedKeyValue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    backend: Option<StorageBackend>,
    device: Option<DeviceValue>,
    #[serde(default)]
    wipe: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFirewall {
    #[serde(default)]
    cluster_cidrs: Vec<NetworkCidrValue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHub {
    #[serde(default)]
    seeds: Vec<SeedValue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    interface: Option<InterfaceValue>,
    address: Option<HostCidrValue>,
    gateway: Option<Spanned<IpValue>>,
    dns: Option<Spanned<Vec<IpValue>>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn minimal_document_gets_defaults() {
        let c = parse(b"version = 1\n").unwrap();
        assert_eq!(c, Config::standalone());
    }

    #[test]
    fn written_document_reads_back_identically() {
        let text = format!(
            "version = 1\n[node]\nhostname = \"n1.example\"\n[ca]\nurl = \"https://ca:8443\"\nfingerprint = \"{FP}\"\ntoken = \"tok\"\n[network]\ninterface = \"eth0\"\naddress = \"10.0.0.2/24\"\ngateway = \"10.0.0.1\"\ndns = [\"10.0.0.1\"]\n[firewall]\ncluster_cidrs = [\"10.0.0.0/24\"]\n"
        );
        let c = parse(text.as_bytes()).unwrap();
        let again = parse(c.to_toml().as_bytes()).unwrap();
        assert_eq!(c, again);
        assert_eq!(again.ca.unwrap().token.expose(), "tok");
    }

    #[test]
    fn overlay_replaces_document_values_and_fills_missing_ones() {
        let doc = parse_document(
            format!("version = 1\n[node]\nhostname = \"doc.example\"\ncluster = \"prod\"\n[ca]\nurl = \"https://ca:1\"\nfingerprint = \"{FP}\"\n").as_bytes(),
        )
        .unwrap();
        let mut o = Overlay::default();
        o.set(
            "node.hostname",
            "cmd.example",
            "kernel argument tessera.hostname",
        )
        .unwrap();
        o.set("ca.token", "t0k", "kernel argument tessera.certmgr_token")
            .unwrap();
        let c = finish(doc, &o).unwrap();
        assert_eq!(c.node.hostname.as_deref(), Some("cmd.example"));
        assert_eq!(c.node.cluster, "prod");
        let ca = c.ca.unwrap();
        assert_eq!(ca.url, "https://ca:1");
        assert_eq!(ca.token.expose(), "t0k");
    }

    #[test]
    fn missing_key_of_a_document_section_points_at_the_section() {
        let e = parse(b"version = 1\n\n[storage]\nbackend = \"btrfs\"\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "storage.device: missing in [storage] (line 3, column 1)"
        );
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_col("a\nbä c", 5), (2, 3));
        assert_eq!(line_col("abc", 99), (1, 4));
    }
}
