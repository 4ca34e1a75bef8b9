//! `[[containers]]`: the node's declared workload. The container agent imports each image
//! (fetched from `image`, checked against `sha256`), creates the container and keeps it
//! running by its restart policy, at every boot, with no operator action.
//!
//! ```toml
//! [[containers]]
//! name = "web"                                 # required; 1-56 of a-z, 0-9, '-'
//! image = "http://10.0.2.2:8000/web.tar.zst"   # required; http:// URL or a path on the node
//! sha256 = "sha256:<64 hex>"                   # required; the archive's digest
//! args = ["/bin/httpd", "-f"]                  # replaces the image's command
//! env = ["MODE=prod"]                          # KEY=VALUE, replacing the image's
//! memory_max = "64M"                           # bytes or a size; pids_max = 64; cpu_percent = 50
//! restart = "always"                           # "no", "on-failure" or "always" (default)
//! net = "bridge"                               # "bridge" (default), "none" (lo only) or "host"
//! ports = [{ host = 8080, container = 80, scope = "cluster" }]   # bridge only; protocol = "tcp"
//! hub = true                                   # the node's hub socket inside (components)
//! identity = { subsystem = "web" }             # a certmgr certificate at every start (identity.rs)
//!
//! [container_network]                          # optional
//! subnet = "10.88.0.0/24"                      # the bridge's IPv4 network (/16-/29; default)
//! ```

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{ConfigError, Document};
use crate::http::HttpUrl;
use crate::values::{self, Cidr};

mod identity;
pub use identity::Identity;

/// Most containers one document declares.
pub const MAX_CONTAINERS: usize = 32;
/// Largest `cpu_percent` (100 per CPU).
pub const MAX_CPU_PERCENT: u32 = 100 * 64;

/// One declared container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Container {
    pub name: String,
    /// `http://…` or an absolute path on the node.
    pub image: String,
    /// `sha256:<64 hex>`, lower case: the archive's digest and its template's key.
    pub sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids_max: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<u32>,
    pub restart: Restart,
    pub net: Net,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    /// The node's component hub inside the container: its local socket directory bound at
    /// the same path, so that a component in the container serves and calls through the hub.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub hub: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
}

/// A host port published to a port of the container, reachable from `scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    pub host: u16,
    pub container: u16,
    #[serde(default)]
    pub protocol: PortProtocol,
    pub scope: PortScope,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PortProtocol {
    #[default]
    Tcp,
    Udp,
}

impl PortProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
        }
    }
}

/// Who may reach a published port: the firewall's scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PortScope {
    NodeLocal,
    Cluster,
    Public,
}

impl PortScope {
    pub fn as_str(self) -> &'static str {
        match self {
            PortScope::NodeLocal => "node-local",
            PortScope::Cluster => "cluster",
            PortScope::Public => "public",
        }
    }
}

/// `[container_network]`: the containers' bridge network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ContainerNetwork {
    pub subnet: Cidr,
}

/// The bridge network when user-data names none.
pub const DEFAULT_SUBNET: &str = "10.88.0.0/24";

/// The subnet's prefix lengths: room for the gateway and at least five containers, and no
/// more than a /16 to allocate from.
const SUBNET_PREFIXES: std::ops::RangeInclusive<u8> = 16..=29;

fn container_subnet(s: &str) -> Result<Cidr, String> {
    let c = Cidr::parse_network(s)?;
    if !c.addr.is_ipv4() {
        return Err(format!(
            "{s:?}: containers get IPv4 addresses; give an IPv4 network such as {DEFAULT_SUBNET}"
        ));
    }
    if !SUBNET_PREFIXES.contains(&c.prefix) {
        return Err(format!(
            "{s:?}: use a prefix length of /16 to /29, e.g. {DEFAULT_SUBNET}"
        ));
    }
    Ok(c)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawContainerNetwork {
    subnet: Option<SubnetValue>,
}

/// Completes `[container_network]`.
pub(super) fn finish_network(
    raw: Option<&Spanned<RawContainerNetwork>>,
) -> Option<ContainerNetwork> {
    raw.and_then(|n| n.get_ref().subnet.as_ref())
        .map(|s| ContainerNetwork { subnet: s.0 })
}

/// What restarts a declared container when it ends (Docker's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    No,
    OnFailure,
    /// The default for declared containers: the node keeps its workload running.
    #[default]
    Always,
}

impl Restart {
    pub fn as_str(self) -> &'static str {
        match self {
            Restart::No => "no",
            Restart::OnFailure => "on-failure",
            Restart::Always => "always",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Net {
    /// Its own namespace with a veth on the node's container bridge: an address from
    /// `[container_network]`, NAT out, the node's DNS servers, published `ports`.
    #[default]
    Bridge,
    /// Its own namespace with only `lo`.
    None,
    /// The node's namespace.
    Host,
}

impl Net {
    pub fn as_str(self) -> &'static str {
        match self {
            Net::Bridge => "bridge",
            Net::None => "none",
            Net::Host => "host",
        }
    }
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    Http(HttpUrl),
    File(std::path::PathBuf),
}

impl Container {
    pub fn source(&self) -> ImageSource {
        match HttpUrl::parse(&self.image) {
            Ok(url) => ImageSource::Http(url),
            Err(_) => ImageSource::File(self.image.clone().into()),
        }
    }
}

/// A container name: it names a volume, a cgroup and a state directory on the node.
pub fn container_name(s: &str) -> Result<String, String> {
    if tessera_common::names::is_container_name(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "bad container name {s:?}: use 1-56 lower-case letters, digits or '-', starting with a letter or digit (e.g. web-1)"
        ))
    }
}

/// `http://host[:port]/path` or an absolute path on the node.
pub fn image_reference(s: &str) -> Result<String, String> {
    if s.starts_with('/') {
        if s.contains('\0') || s.split('/').any(|c| c == "..") {
            return Err(format!("{s:?}: a path on the node without '..' or NUL"));
        }
        return Ok(s.to_string());
    }
    HttpUrl::parse(s).map(|_| s.to_string()).map_err(|e| {
        format!("{e} (or give an absolute path on the node; the archive's sha256 vouches for its bytes)")
    })
}

fn plain_string(s: &str) -> Result<String, String> {
    if s.contains('\0') {
        return Err("contains a NUL character".into());
    }
    Ok(s.to_string())
}

fn env_entry(s: &str) -> Result<String, String> {
    match s.split_once('=') {
        Some((k, _)) if !k.is_empty() && !s.contains('\0') => Ok(s.to_string()),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

validated!(ContainerNameValue, String, container_name);
validated!(ImageValue, String, image_reference);
validated!(DigestValue, String, values::digest);
validated!(ArgValue, String, plain_string);
validated!(EnvValue, String, env_entry);
validated!(SubnetValue, Cidr, container_subnet);

/// `memory_max`: bytes (an integer) or a size ("64M").
#[derive(Debug, Clone)]
struct SizeValue(u64);

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum NumOrText {
            Num(i64),
            Text(String),
        }
        match NumOrText::deserialize(d)? {
            NumOrText::Num(n) if n > 0 => Ok(SizeValue(n as u64)),
            NumOrText::Num(n) => Err(de::Error::custom(format!(
                "{n} is not a size; give bytes (67108864) or a size (\"64M\")"
            ))),
            NumOrText::Text(t) => tessera_common::size::parse_size(&t)
                .map(SizeValue)
                .map_err(de::Error::custom),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawContainer {
    name: Option<Spanned<ContainerNameValue>>,
    image: Option<ImageValue>,
    sha256: Option<DigestValue>,
    args: Option<Spanned<Vec<ArgValue>>>,
    #[serde(default)]
    env: Vec<EnvValue>,
    memory_max: Option<SizeValue>,
    pids_max: Option<Spanned<u64>>,
    cpu_percent: Option<Spanned<u32>>,
    restart: Option<Restart>,
    net: Option<Net>,
    ports: Option<Spanned<Vec<Port>>>,
    #[serde(default)]
    hub: bool,
    identity: Option<Spanned<identity::RawIdentity>>,
}

/// Completes the declared containers: required keys, unique names, bounds.
pub(super) fn finish(
    doc: &Document,
    raw: &[Spanned<RawContainer>],
) -> Result<Vec<Container>, ConfigError> {
    let at = |key: String, span: std::ops::Range<usize>, message: String| ConfigError {
        line: doc.line_col(span),
        ..ConfigError::new(&key, message)
    };
    if raw.len() > MAX_CONTAINERS {
        return Err(at(
            "containers".into(),
            raw[MAX_CONTAINERS].span(),
            format!(
                "{} containers declared; at most {MAX_CONTAINERS}",
                raw.len()
            ),
        ));
    }
    let mut out: Vec<Container> = Vec::new();
    for (i, c) in raw.iter().enumerate() {
        let span = c.span();
        let r = c.get_ref();
        let key = |k: &str| format!("containers[{i}].{k}");
        let missing = |k: &str| {
            at(
                key(k),
                span.clone(),
                "missing in [[containers]]".to_string(),
            )
        };
        let name = r.name.as_ref().ok_or_else(|| missing("name"))?;
        if out.iter().any(|o| o.name == name.get_ref().0) {
            return Err(at(
                key("name"),
                name.span(),
                format!(
                    "{:?} is declared twice; each container needs its own name",
                    name.get_ref().0
                ),
            ));
        }
        let image = r.image.as_ref().ok_or_else(|| missing("image"))?;
        let sha256 = r.sha256.as_ref().ok_or_else(|| missing("sha256"))?;
        let args = match &r.args {
            Some(a) if a.get_ref().is_empty() => {
                return Err(at(
                    key("args"),
                    a.span(),
                    "empty; leave it out to run the image's own command".into(),
                ))
            }
            Some(a) => Some(a.get_ref().iter().map(|v| v.0.clone()).collect()),
            None => None,
        };
        let pids_max = match &r.pids_max {
            Some(p) if *p.get_ref() == 0 => {
                return Err(at(
                    key("pids_max"),
                    p.span(),
                    "0 would forbid the container's own process; give at least 1".into(),
                ))
            }
            p => p.as_ref().map(|p| *p.get_ref()),
        };
        let cpu_percent = match &r.cpu_percent {
            Some(p) if *p.get_ref() == 0 || *p.get_ref() > MAX_CPU_PERCENT => {
                return Err(at(
                    key("cpu_percent"),
                    p.span(),
                    format!(
                        "{} is out of range; give 1-{MAX_CPU_PERCENT} (100 is one CPU)",
                        p.get_ref()
                    ),
                ))
            }
            p => p.as_ref().map(|p| *p.get_ref()),
        };
        let net = r.net.unwrap_or_default();
        let ports = match &r.ports {
            None => Vec::new(),
            Some(p) => {
                let list = p.get_ref();
                if !list.is_empty() && net != Net::Bridge {
                    return Err(at(
                        key("ports"),
                        p.span(),
                        format!("net = {:?} has no ports to publish; use net = \"bridge\" (the default) or remove ports", net.as_str()),
                    ));
                }
                for (j, port) in list.iter().enumerate() {
                    if port.host == 0 || port.container == 0 {
                        return Err(at(
                            format!("containers[{i}].ports[{j}]"),
                            p.span(),
                            "port 0; use 1-65535".into(),
                        ));
                    }
                    let clash = out
                        .iter()
                        .flat_map(|o| o.ports.iter().map(move |q| (o.name.as_str(), q)))
                        .chain(list[..j].iter().map(|q| (name.get_ref().0.as_str(), q)))
                        .find(|(_, q)| q.host == port.host && q.protocol == port.protocol);
                    if let Some((owner, _)) = clash {
                        return Err(at(
                            format!("containers[{i}].ports[{j}].host"),
                            p.span(),
                            format!(
                                "{}/{} is already published by {owner:?}; each host port goes to one container",
                                port.protocol.as_str(),
                                port.host
                            ),
                        ));
                    }
                }
                list.clone()
            }
        };
        let identity =
            match &r.identity {
                Some(id) => Some(id.get_ref().finish().map_err(|(k, message)| {
                    at(key(&format!("identity.{k}")), id.span(), message)
                })?),
                None => None,
            };
        out.push(Container {
            name: name.get_ref().0.clone(),
            image: image.0.clone(),
            sha256: sha256.0.clone(),
            args,
            env: r.env.iter().map(|e| e.0.clone()).collect(),
            memory_max: r.memory_max.as_ref().map(|m| m.0),
            pids_max,
            cpu_percent,
            restart: r.restart.unwrap_or_default(),
            net,
            ports,
            hub: r.hub,
            identity,
        });
    }
    Ok(out)
}

/// `containers[i].key = value` lines for [`super::Config::summary`].
pub(super) fn summary(containers: &[Container], line: &mut dyn FnMut(&str, String)) {
    for (i, c) in containers.iter().enumerate() {
        let k = |s: &str| format!("containers[{i}].{s}");
        line(&k("name"), format!("{:?}", c.name));
        line(&k("image"), format!("{:?}", c.image));
        line(&k("sha256"), format!("{:?}", c.sha256));
        if let Some(a) = &c.args {
            line(&k("args"), format!("{a:?}"));
        }
        if !c.env.is_empty() {
            line(&k("env"), format!("{} variables", c.env.len()));
        }
        if let Some(m) = c.memory_max {
            line(&k("memory_max"), m.to_string());
        }
        if let Some(p) = c.pids_max {
            line(&k("pids_max"), p.to_string());
        }
        if let Some(p) = c.cpu_percent {
            line(&k("cpu_percent"), p.to_string());
        }
        line(&k("restart"), format!("{:?}", c.restart.as_str()));
        line(&k("net"), format!("{:?}", c.net.as_str()));
        if c.hub {
            line(&k("hub"), "true".into());
        }
        if let Some(id) = &c.identity {
            let caps = match id.capabilities.is_empty() {
                true => String::new(),
                false => format!(" (capabilities: {})", id.capabilities.join(", ")),
            };
            line(&k("identity"), format!("{:?}{caps}", id.subsystem));
        }
        for (j, p) in c.ports.iter().enumerate() {
            line(
                &k(&format!("ports[{j}]")),
                format!(
                    "{}/{} -> {} {}",
                    p.protocol.as_str(),
                    p.host,
                    p.container,
                    p.scope.as_str()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;

    const SHA: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn doc(body: &str) -> String {
        format!("version = 1\n{body}")
    }

    #[test]
    fn declared_containers_get_defaults_and_read_back_identically() {
        let text = doc(&format!(
            "[[containers]]\nname = \"web\"\nimage = \"http://10.0.2.2:8000/web.tar\"\nsha256 = \"{}\"\nargs = [\"/bin/sh\", \"-c\", \"echo hi\"]\nenv = [\"A=1\"]\nmemory_max = \"64M\"\npids_max = 32\ncpu_percent = 50\n\n[[containers]]\nname = \"db\"\nimage = \"/var/lib/db.tar\"\nsha256 = \"{SHA}\"\nrestart = \"on-failure\"\nnet = \"host\"\n",
            SHA.to_uppercase().replace("SHA256:", "sha256:")
        ));
        let c = parse(text.as_bytes()).unwrap();
        assert_eq!(c.containers.len(), 2);
        let web = &c.containers[0];
        assert_eq!(web.sha256, SHA, "digests are lower-cased");
        assert_eq!(web.memory_max, Some(64 << 20));
        assert_eq!(web.restart, super::Restart::Always);
        assert_eq!(web.net, super::Net::Bridge, "bridge is the default");
        assert!(matches!(web.source(), super::ImageSource::Http(_)));
        assert!(matches!(
            c.containers[1].source(),
            super::ImageSource::File(_)
        ));
        assert_eq!(c.containers[1].restart, super::Restart::OnFailure);
        let again = parse(c.to_toml().as_bytes()).unwrap();
        assert_eq!(c, again);
        assert!(
            c.summary().contains("containers[1].net = \"host\""),
            "{}",
            c.summary()
        );
    }

    #[test]
    fn bad_containers_are_refused_with_the_key_and_the_fix() {
        let cases = [
            ("[[containers]]\nimage = \"/x.tar\"\n", "containers[0].name: missing in [[containers]] (line 2"),
            (&format!("[[containers]]\nname = \"Web\"\nimage = \"/x\"\nsha256 = \"{SHA}\"\n"), "containers[0].name: bad container name \"Web\""),
            (&format!("[[containers]]\nname = \"a\"\nimage = \"/x\"\nsha256 = \"{SHA}\"\n[[containers]]\nname = \"a\"\nimage = \"/y\"\nsha256 = \"{SHA}\"\n"), "containers[1].name: \"a\" is declared twice"),
            ("[[containers]]\nname = \"a\"\nimage = \"https://h/x\"\nsha256 = \"sha256:00\"\n", "containers[0].image: \"https://h/x\": https is not supported"),
            ("[[containers]]\nname = \"a\"\nimage = \"/x\"\nsha256 = \"sha256:00\"\n", "containers[0].sha256: expected \"sha256:\" followed by 64 hex digits, got 2"),
            (&format!("[[containers]]\nname = \"a\"\nimage = \"/x\"\nsha256 = \"{SHA}\"\nargs = []\n"), "containers[0].args: empty"),
            (&format!("[[containers]]\nname = \"a\"\nimage = \"/x\"\nsha256 = \"{SHA}\"\nenv = [\"NOEQUALS\"]\n"), "containers[0].env[0]: \"NOEQUALS\" is not KEY=VALUE"),
            (&format!("[[containers]]\nname = \"a\"\nimage = \"/x\"\nsha256 = \"{SHA}\"\nmemory_max = \"lots\"\n"), "containers[0].memory_max: size \"lots\" is not a number"),
            (&format!("[[containers]]\nname = \"a\"\nimage = \"/x\"\nsha256 = \"{SHA}\"\npids_max = 0\n"), "containers[0].pids_max: 0 would forbid"),
            (&format!("[[containers]]\nname = \"a\"\nimage = \"/x\"\nsha256 = \"{SHA}\"\nrestart = \"sometimes\"\n"), "containers[0].restart: unknown value `sometimes`"),
            (&format!("[[containers]]\nname = \"a\"\nimage = \"/x\"\nsha256 = \"{SHA}\"\nports = [80]\n"), "containers[0].ports[0]: invalid type: integer `80`, expected struct Port"),
            (&format!("[[containers]]\nname = \"a\"\nimage = \"/x\"\nsha256 = \"{SHA}\"\nports = [{{ host = 80, container = 80 }}]\n"), "containers[0].ports[0]: missing field `scope`"),
            (&format!("[[containers]]\nname = \"a\"\nimage = \"/x\"\nsha256 = \"{SHA}\"\nports = [{{ host = 80, container = 80, scope = \"world\" }}]\n"), "containers[0].ports[0].scope: unknown value `world`, expected one of `node-local`"),
            (&format!("[[containers]]\nname = \"a\"\nimage = \"/x\"\nsha256 = \"{SHA}\"\nports = [{{ host = 0, container = 80, scope = \"public\" }}]\n"), "containers[0].ports[0]: port 0"),
            (&format!("[[containers]]\nname = \"a\"\nimage = \"/x\"\nsha256 = \"{SHA}\"\nnet = \"host\"\nports = [{{ host = 80, container = 80, scope = \"public\" }}]\n"), "containers[0].ports: net = \"host\" has no ports"),
            (&format!("[[containers]]\nname = \"a\"\nimage = \"/x\"\nsha256 = \"{SHA}\"\nports = [{{ host = 80, container = 80, scope = \"public\" }}]\n[[containers]]\nname = \"b\"\nimage = \"/x\"\nsha256 = \"{SHA}\"\nports = [{{ host = 80, container = 81, scope = \"cluster\" }}]\n"), "containers[1].ports[0].host: tcp/80 is already published by \"a\""),
            ("[container_network]\nsubnet = \"10.88.0.0/30\"\n", "container_network.subnet: \"10.88.0.0/30\": use a prefix length of /16 to /29"),
            ("[container_network]\nsubnet = \"fd00::/64\"\n", "container_network.subnet: \"fd00::/64\": containers get IPv4"),
            (&format!("[[containers]]\nname = \"a\"\nimage = \"/../etc/x\"\nsha256 = \"{SHA}\"\n"), "containers[0].image: \"/../etc/x\": a path on the node"),
        ];
        for (body, want) in cases {
            let e = parse(doc(body).as_bytes()).unwrap_err().to_string();
            assert!(e.starts_with(want), "{body}\n→ {e}\nwanted {want}");
        }
    }

    #[test]
    fn published_ports_and_the_container_network_read_back_identically() {
        let text = doc(&format!(
            "[container_network]\nsubnet = \"10.99.0.0/16\"\n\n[[containers]]\nname = \"web\"\nimage = \"/x\"\nsha256 = \"{SHA}\"\nports = [{{ host = 8080, container = 80, scope = \"cluster\" }}, {{ host = 5353, container = 53, protocol = \"udp\", scope = \"node-local\" }}]\nhub = true\n"
        ));
        let c = parse(text.as_bytes()).unwrap();
        let ports = &c.containers[0].ports;
        assert_eq!(ports.len(), 2);
        assert_eq!((ports[0].host, ports[0].container), (8080, 80));
        assert_eq!(
            ports[0].protocol,
            super::PortProtocol::Tcp,
            "tcp is the default"
        );
        assert_eq!(ports[1].scope, super::PortScope::NodeLocal);
        assert!(c.containers[0].hub);
        assert_eq!(
            c.container_network.unwrap().subnet.to_string(),
            "10.99.0.0/16"
        );
        assert!(
            c.summary()
                .contains("containers[0].ports[1] = udp/5353 -> 53 node-local"),
            "{}",
            c.summary()
        );
        assert_eq!(parse(c.to_toml().as_bytes()).unwrap(), c);
    }

    #[test]
    fn more_than_the_limit_is_refused() {
        let one = format!("[[containers]]\nname = \"c\"\nimage = \"/x\"\nsha256 = \"{SHA}\"\n");
        let many: String = (0..=super::MAX_CONTAINERS)
            .map(|i| one.replace("\"c\"", &format!("\"c{i}\"")))
            .collect();
        let e = parse(doc(&many).as_bytes()).unwrap_err().to_string();
        assert!(e.contains("at most 32"), "{e}");
    }
}
