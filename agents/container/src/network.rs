//! The containers' network (`net = "bridge"`, the default): one bridge on the node
//! (`tessera0`, holding the gateway address of `[container_network]`'s subnet), one veth pair
//! per container (`eth0` inside with an address of the subnet and a default route through the
//! gateway, the host end on the bridge), forwarding and masquerade by the firewall service,
//! the node's name servers in the container's /etc/resolv.conf, and each published port a
//! firewall publication (DNAT with its scope) while the container runs.
//!
//! The veth pair is made between the runtime's create and start, when the container's init
//! waits in its new network namespace (`NetMode::New`); it goes away with that namespace when
//! the container's last process ends. Netlink sockets belong to the namespace of the thread
//! that opens them, so the inside is configured from a short-lived thread that has joined the
//! container's namespace; the agent's own threads never change namespace.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};
use tessera_netlink::{Links, RouteProtocol};
use tessera_userdata::schema::Port;

/// The node's container bridge.
pub const BRIDGE: &str = "tessera0";
/// Inside each container.
const INSIDE: &str = "eth0";
const FIREWALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("container network: {step}: {reason}")]
pub struct NetError {
    pub step: String,
    pub reason: String,
}

fn fail(step: impl Into<String>, reason: impl ToString) -> NetError {
    NetError {
        step: step.into(),
        reason: reason.to_string(),
    }
}

/// The containers' IPv4 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    /// `[container_network]` of user-data, or the default network.
    pub fn from_config(config: Option<&tessera_userdata::schema::ContainerNetwork>) -> Subnet {
        let fallback = Subnet {
            network: Ipv4Addr::new(10, 88, 0, 0),
            prefix: 24,
        };
        match config.map(|c| c.subnet) {
            Some(c) => match c.addr {
                IpAddr::V4(network) => Subnet {
                    network,
                    prefix: c.prefix,
                },
                IpAddr::V6(_) => fallback,
            },
            None => fallback,
        }
    }

    fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + n)
    }

    /// The bridge's address: the first of the subnet.
    pub fn gateway(&self) -> Ipv4Addr {
        self.host(1)
    }

    /// How many addresses the subnet holds, network and broadcast included.
    fn size(&self) -> u32 {
        1u32 << (32 - u32::from(self.prefix.clamp(1, 31)))
    }

    /// The lowest address not in `used` (after the gateway, before the broadcast address).
    pub fn allocate(&self, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        (2..self.size() - 1)
            .map(|n| self.host(n))
            .find(|a| !used.contains(a))
    }

    /// Whether a container of network mode `net` with `address` can start in this subnet:
    /// a bridged one needs an address in it; the other modes need none.
    pub fn fits(&self, net: &str, address: Option<Ipv4Addr>) -> bool {
        net != "bridge" || address.is_some_and(|a| self.contains(a))
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - u32::from(self.prefix.clamp(1, 31)));
        u32::from(a) & mask == u32::from(self.network)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The host end of a container's veth pair: `tv` and 12 hex digits of the name's SHA-256
/// (interface names have 15 bytes; container names up to 56).
pub fn host_veth(container: &str) -> String {
    let digest = Sha256::digest(container.as_bytes());
    format!("tv{}", &hex::encode(digest)[..12])
}

/// Runs `f` on a fresh thread with its own single-threaded tokio runtime, after the thread
/// has joined the network namespace `netns` if one is given.
fn on_netlink_thread<T: Send + 'static>(
    netns: Option<std::fs::File>,
    step: &str,
    f: impl FnOnce(Links) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, NetError>>>>
        + Send
        + 'static,
) -> Result<T, NetError> {
    let step = step.to_string();
    let s = step.clone();
    std::thread::Builder::new()
        .name("container-netlink".into())
        .spawn(move || {
            if let Some(ns) = &netns {
                nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                    |e| {
                        fail(
                            &s,
                            format!("joining the container's network namespace: {e}"),
                        )
                    },
                )?;
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .map_err(|e| fail(&s, format!("starting a tokio runtime: {e}")))?;
            rt.block_on(async move {
                let links = Links::connect()
                    .map_err(|e| fail(&s, format!("opening a netlink socket: {e}")))?;
                f(links).await
            })
        })
        .map_err(|e| fail(&step, format!("starting a thread: {e}")))?
        .join()
        .map_err(|_| fail(&step, "the netlink thread panicked"))?
}

fn write_sysctl(path: &str, value: &str) -> Result<(), NetError> {
    std::fs::write(path, value).map_err(|e| fail(format!("write {value} to {path}"), e))
}

/// Makes the bridge (once per boot: it stays until the node powers off), turns on
/// forwarding, and has the firewall forward and masquerade the subnet.
pub fn ensure_bridge(subnet: Subnet, firewall: &Path) -> Result<(), NetError> {
    let gateway = subnet.gateway();
    on_netlink_thread(None, "set up the bridge", move |links| {
        Box::pin(async move {
            let bridge = match links
                .by_name(BRIDGE)
                .await
                .map_err(|e| fail("list links", e))?
            {
                Some(b) => b,
                None => {
                    links.add_bridge(BRIDGE).await.map_err(|e| {
                        fail(
                            "create the bridge",
                            e.to_string() + "; is the bridge module in the image?",
                        )
                    })?;
                    links
                        .by_name(BRIDGE)
                        .await
                        .map_err(|e| fail("list links", e))?
                        .ok_or_else(|| {
                            fail("create the bridge", "it is not there after creation")
                        })?
                }
            };
            links
                .add_address(&bridge, IpAddr::V4(gateway), subnet.prefix, None)
                .await
                .map_err(|e| fail("address the bridge", e))?;
            links
                .set_up(&bridge)
                .await
                .map_err(|e| fail("set the bridge up", e))
        })
    })?;
    write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
    // A published port reached on 127.0.0.1 is routed to the bridge: allowed there only.
    write_sysctl(
        &format!("/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet"),
        "1",
    )?;
    firewall_call(
        firewall,
        json!({"op": "bridge", "interface": BRIDGE, "subnet": subnet.to_string()}),
    )
}

/// Wires a created container (its init waiting in a new network namespace) to the bridge.
pub fn attach(
    container: &str,
    init_pid: u32,
    address: Ipv4Addr,
    subnet: Subnet,
) -> Result<(), NetError> {
    let ns_path = format!("/proc/{init_pid}/ns/net");
    let open = || {
        std::fs::File::open(&ns_path).map_err(|e| {
            fail(
                format!("open {ns_path}"),
                format!("{e}; did the container's init exit?"),
            )
        })
    };
    let host = host_veth(container);
    let ns = open()?;
    on_netlink_thread(None, "create the veth pair", move |links| {
        Box::pin(async move {
            let bridge = links
                .by_name(BRIDGE)
                .await
                .map_err(|e| fail("list links", e))?
                .ok_or_else(|| fail("create the veth pair", format!("no bridge {BRIDGE}")))?;
            // A pair left by an earlier run of this container (its namespace still held).
            links
                .delete(&host)
                .await
                .map_err(|e| fail("remove a stale veth", e))?;
            links
                .add_veth_into(&host, &bridge, INSIDE, ns.as_fd())
                .await
                .map_err(|e| {
                    fail(
                        "create the veth pair",
                        e.to_string() + "; is the veth module in the image?",
                    )
                })
        })
    })?;
    let gateway = subnet.gateway();
    on_netlink_thread(Some(open()?), "configure eth0", move |links| {
        Box::pin(async move {
            let inside = |step: &'static str| move |e: tessera_netlink::LinkError| fail(step, e);
            for name in ["lo", INSIDE] {
                let link = links
                    .by_name(name)
                    .await
                    .map_err(inside("list links"))?
                    .ok_or_else(|| fail("configure eth0", format!("no {name} in the container")))?;
                if name == INSIDE {
                    links
                        .add_address(&link, IpAddr::V4(address), subnet.prefix, None)
                        .await
                        .map_err(inside("address eth0"))?;
                }
                links.set_up(&link).await.map_err(inside("set a link up"))?;
                if name == INSIDE {
                    links
                        .set_default_route(&link, IpAddr::V4(gateway), RouteProtocol::Static, false)
                        .await
                        .map_err(inside("set the default route"))?;
                }
            }
            Ok(())
        })
    })
}

/// Removes the host end of a container's pair if it is still there (a stopped container's
/// pair goes with its namespace; this covers a namespace something else still holds).
pub fn detach(container: &str) -> Result<(), NetError> {
    let host = host_veth(container);
    on_netlink_thread(None, "remove the veth pair", move |links| {
        Box::pin(async move {
            links
                .delete(&host)
                .await
                .map_err(|e| fail("remove the veth pair", e))
        })
    })
}

/// The container's /etc/resolv.conf: the node's name servers that a container can reach
/// (not the node's loopback addresses), or none.
pub fn resolv_conf(node: &str) -> String {
    let mut out =
        String::from("# written by the Tessera container agent from the node's resolv.conf\n");
    for line in node.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("nameserver"), Some(ip))
                if ip.parse::<IpAddr>().is_ok_and(|ip| !ip.is_loopback()) =>
            {
                out.push_str(&format!("nameserver {ip}\n"));
            }
            (Some("search"), Some(_)) => out.push_str(&format!("{}\n", line.trim())),
            _ => {}
        }
    }
    out
}

/// Writes the container's /etc/resolv.conf into its root file system (replacing the
/// image's, as Docker and Podman do), if the rootfs has an /etc.
pub fn write_resolv_conf(rootfs: &Path, node_resolv: &Path) -> Result<(), NetError> {
    let etc = rootfs.join("etc");
    if !etc.is_dir() {
        return Ok(());
    }
    let node = std::fs::read_to_string(node_resolv).unwrap_or_default();
    let path = etc.join("resolv.conf");
    // A symlink in the image must not redirect the write outside the rootfs.
    if path.is_symlink() {
        std::fs::remove_file(&path).map_err(|e| fail(format!("replace {}", path.display()), e))?;
    }
    std::fs::write(&path, resolv_conf(&node))
        .map_err(|e| fail(format!("write {}", path.display()), e))
}

fn firewall_call(socket: &Path, request: serde_json::Value) -> Result<(), NetError> {
    let op = request["op"].as_str().unwrap_or("?").to_string();
    tessera_common::ipc::call(socket, "firewall", &request, FIREWALL_TIMEOUT)
        .map(|_| ())
        .map_err(|e| fail(format!("firewall {op}"), format!("{e:#}")))
}

/// The owner label of a container's publications.
pub fn owner(container: &str) -> String {
    format!("container/{container}")
}

/// Publishes the container's ports (host port → address:container port, with the scope).
pub fn publish(
    firewall: &Path,
    container: &str,
    address: Ipv4Addr,
    ports: &[Port],
) -> Result<(), NetError> {
    for p in ports {
        firewall_call(
            firewall,
            json!({
                "op": "publish", "protocol": p.protocol.as_str(), "port": p.host,
                "to": format!("{address}:{}", p.container), "scope": p.scope.as_str(),
                "owner": owner(container),
            }),
        )?;
    }
    Ok(())
}

/// Withdraws the container's ports; every one is tried, the first error is returned.
pub fn unpublish(firewall: &Path, ports: &[Port]) -> Result<(), NetError> {
    let mut first = None;
    for p in ports {
        let r = firewall_call(
            firewall,
            json!({"op": "unpublish", "protocol": p.protocol.as_str(), "port": p.host}),
        );
        if let (Err(e), None) = (r, &first) {
            first = Some(e);
        }
    }
    first.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(s: &str, prefix: u8) -> Subnet {
        Subnet {
            network: s.parse().unwrap(),
            prefix,
        }
    }

    #[test]
    fn addresses_are_allocated_lowest_first_after_the_gateway_and_never_the_broadcast() {
        let s = subnet("10.88.0.0", 29);
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 88, 0, 1));
        let mut used = BTreeSet::new();
        let mut got = Vec::new();
        while let Some(a) = s.allocate(&used) {
            used.insert(a);
            got.push(a.to_string());
        }
        assert_eq!(
            got,
            [
                "10.88.0.2",
                "10.88.0.3",
                "10.88.0.4",
                "10.88.0.5",
                "10.88.0.6"
            ]
        );
        used.remove(&Ipv4Addr::new(10, 88, 0, 4));
        assert_eq!(
            s.allocate(&used),
            Some(Ipv4Addr::new(10, 88, 0, 4)),
            "a freed address is reused"
        );
        assert!(s.contains(Ipv4Addr::new(10, 88, 0, 7)));
        assert!(!s.contains(Ipv4Addr::new(10, 88, 1, 2)));
        assert_eq!(
            subnet("10.99.0.0", 16).allocate(&BTreeSet::new()),
            Some(Ipv4Addr::new(10, 99, 0, 2))
        );
        // A bridged container's address must be in today's subnet; other modes have none.
        assert!(s.fits("bridge", Some(Ipv4Addr::new(10, 88, 0, 3))));
        assert!(
            !s.fits("bridge", Some(Ipv4Addr::new(10, 99, 0, 3))),
            "the subnet changed"
        );
        assert!(!s.fits("bridge", None));
        assert!(s.fits("none", None) && s.fits("host", None));
    }

    #[test]
    fn host_veth_names_fit_an_interface_name_and_differ_per_container() {
        let a = host_veth(&"a".repeat(56));
        assert_eq!(a.len(), 14);
        assert!(a.starts_with("tv"));
        assert_ne!(host_veth("web-1"), host_veth("web-2"));
        assert_eq!(host_veth("web-1"), host_veth("web-1"));
    }

    #[test]
    fn resolv_conf_keeps_reachable_name_servers_and_search() {
        let node = "# from DHCP\nnameserver 10.0.2.3\nnameserver 127.0.0.53\nnameserver fd00::3\nsearch example.org\noptions edns0\n";
        assert_eq!(
            resolv_conf(node),
            "# written by the Tessera container agent from the node's resolv.conf\nnameserver 10.0.2.3\nnameserver fd00::3\nsearch example.org\n"
        );
    }

    #[test]
    fn the_resolv_conf_write_replaces_a_symlink_instead_of_following_it() {
        let d = tempfile::tempdir().unwrap();
        let rootfs = d.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        let outside = d.path().join("outside");
        std::fs::write(&outside, "keep").unwrap();
        std::os::unix::fs::symlink(&outside, rootfs.join("etc/resolv.conf")).unwrap();
        let node = d.path().join("node-resolv.conf");
        std::fs::write(&node, "nameserver 192.168.77.1\n").unwrap();
        write_resolv_conf(&rootfs, &node).unwrap();
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep");
        let inside = std::fs::read_to_string(rootfs.join("etc/resolv.conf")).unwrap();
        assert!(inside.ends_with("nameserver 192.168.77.1\n"), "{inside}");
        // No /etc in the image: nothing written, no error.
        write_resolv_conf(&d.path().join("empty"), &node).unwrap();
    }
}
