//! The `net` service (`tessera agent net`): brings the node onto the network and keeps it
//! there. Steps, each logged as one JSON line on stdout:
//!
//! 1. loopback up; read user-data's `[network]` and `[node] hostname` (a bad file is
//!    reported and DHCP is used); the host name from user-data;
//! 2. the chosen interface up; IPv6 router advertisements accepted on it;
//! 3. wait for carrier (at most [`CARRIER_TIMEOUT`], then try anyway);
//! 4. static address, gateway and DNS from user-data, or DHCPv4 for as long as it runs;
//! 5. `READY=1` once the node has an address and a default route; `STATUS=` says what the
//!    service is doing at every step.
//!
//! User-data is read again every [`CONFIG_POLL`]; when its network part changed (IMDS
//! user-data arrives after DHCP) the service configures the node anew, without a restart.
//! The service owns the interface's IPv4 configuration: addresses it did not configure are
//! removed once it has configured its own.

use super::config::{self, NetworkConfig, StaticConfig};
use super::dhcp::{Action, Client, Destination, Lease, State};
use super::dhcp_socket::DhcpSocket;
use super::links::{choose_interface, Link, LinkKind, Links};
use anyhow::Context;
use netlink_packet_route::route::RouteProtocol;
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long to wait for the link's carrier before trying DHCP anyway.
pub const CARRIER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the interface to appear before warning (the wait goes on).
pub const INTERFACE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often user-data is read again: a changed `[network]` or host name is applied without
/// a restart.
pub const CONFIG_POLL: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(20);

/// Paths the service reads and writes (tests point them elsewhere).
#[derive(Debug, Clone)]
pub struct Paths {
    pub userdata: PathBuf,
    pub resolv_conf: PathBuf,
    pub proc_sys: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            userdata: config::USERDATA_FILE.into(),
            resolv_conf: config::RESOLV_CONF.into(),
            proc_sys: "/proc/sys".into(),
        }
    }
}

/// Runs the service on a one-thread tokio runtime; returns only on a fatal error.
pub fn run() -> anyhow::Result<()> {
    block_on_one_thread(serve(Paths::default()))
}

/// Runs an agent's main future on a one-thread tokio runtime (the agents of this crate need
/// no more).
pub fn block_on_one_thread(
    main: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(main)
}

pub async fn serve(paths: Paths) -> anyhow::Result<()> {
    let userdata = paths.userdata.clone();
    let mut node = Node {
        paths,
        started: Instant::now(),
        ready: false,
    };
    let links = Links::connect().context("opening the rtnetlink socket")?;
    let all = links.list().await?;
    if let Some(lo) = all.iter().find(|l| l.kind == LinkKind::Loopback) {
        links.set_up(lo).await?;
        log("info", "link up", json!({"interface": lo.name}));
    }
    loop {
        let config = node.read_config();
        tokio::select! {
            result = node.configure(&links, &config) => return result,
            () = config_changed(&userdata, &config) => {
                log("info", "user-data changed, reconfiguring", json!({"path": userdata.display().to_string()}));
            }
        }
    }
}

/// Returns once the user-data file holds a valid configuration other than `current` (the
/// `userdata` service may write it after the network is up, from IMDS).
async fn config_changed(path: &Path, current: &NetworkConfig) {
    loop {
        tokio::time::sleep(CONFIG_POLL).await;
        if config::load(path).is_ok_and(|new| new != *current) {
            return;
        }
    }
}

struct Node {
    paths: Paths,
    started: Instant,
    ready: bool,
}

impl Node {
    fn read_config(&self) -> NetworkConfig {
        match config::load(&self.paths.userdata) {
            Ok(config) => {
                for key in &config.unknown_keys {
                    log(
                        "warn",
                        "unknown user-data key ignored",
                        json!({"key": format!("network.{key}")}),
                    );
                }
                let mode = if config.static_config.is_some() {
                    "static"
                } else {
                    "dhcp"
                };
                log(
                    "info",
                    "network configuration",
                    json!({"mode": mode, "interface": config.interface}),
                );
                config
            }
            Err(e) => {
                log(
                    "error",
                    "user-data network section unusable, using DHCP",
                    json!({"reason": e.to_string()}),
                );
                NetworkConfig::default()
            }
        }
    }

    /// Configures the node as `config` says; returns only on a fatal error.
    async fn configure(&mut self, links: &Links, config: &NetworkConfig) -> anyhow::Result<()> {
        if config.hostname.is_some() {
            self.apply_hostname(config, None);
        }
        let link = self
            .wait_for_interface(links, config.interface.as_deref())
            .await?;
        links.set_up(&link).await?;
        log(
            "info",
            "link up",
            json!({"interface": link.name, "mac": mac_text(&link.mac)}),
        );
        self.accept_router_advertisements(&link.name);
        self.promote_secondaries(&link.name);
        self.wait_for_carrier(links, &link).await?;
        match &config.static_config {
            Some(s) => {
                self.configure_static(links, &link, s).await?;
                std::future::pending().await
            }
            None => self.run_dhcp(links, &link, config).await,
        }
    }

    async fn wait_for_interface(
        &self,
        links: &Links,
        wanted: Option<&str>,
    ) -> anyhow::Result<Link> {
        let what = wanted.map_or("an Ethernet interface".to_string(), |n| {
            format!("interface {n}")
        });
        self.status(&format!("waiting for {what}"));
        let deadline = Instant::now() + INTERFACE_TIMEOUT;
        let mut warned = false;
        loop {
            let all = links.list().await?;
            if let Some(link) = choose_interface(&all, wanted) {
                return Ok(link.clone());
            }
            if !warned && Instant::now() >= deadline {
                warned = true;
                let present: Vec<&str> = all.iter().map(|l| l.name.as_str()).collect();
                log(
                    "warn",
                    "interface not found, still waiting",
                    json!({"wanted": what, "present": present, "fix": "load the NIC's driver (tessera.modules=) or fix [network] interface in user-data"}),
                );
            }
            tokio::time::sleep(POLL * 5).await;
        }
    }

    async fn wait_for_carrier(&self, links: &Links, link: &Link) -> anyhow::Result<()> {
        self.status(&format!("waiting for carrier on {}", link.name));
        let start = Instant::now();
        loop {
            let carrier = links.get(link.index).await?.is_some_and(|l| l.carrier);
            if carrier {
                log(
                    "info",
                    "carrier up",
                    json!({"interface": link.name, "waited_ms": start.elapsed().as_millis() as u64}),
                );
                return Ok(());
            }
            if start.elapsed() >= CARRIER_TIMEOUT {
                log(
                    "warn",
                    "no carrier, trying anyway",
                    json!({"interface": link.name, "waited_s": CARRIER_TIMEOUT.as_secs()}),
                );
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// IPv6: accept router advertisements and autoconfigure addresses from them.
    fn accept_router_advertisements(&self, interface: &str) {
        match self.set_sysctls(interface, "ipv6", &["accept_ra", "autoconf"]) {
            Ok(()) => log(
                "info",
                "ipv6 router advertisements accepted",
                json!({"interface": interface}),
            ),
            Err(e) => log(
                "warn",
                "ipv6 router advertisements not enabled",
                json!({"interface": interface, "reason": e.to_string()}),
            ),
        }
    }

    /// IPv4: when the primary address goes, promote a secondary instead of deleting all of
    /// them with it, so that replacing an address (new one added, old one removed) keeps the
    /// new one.
    fn promote_secondaries(&self, interface: &str) {
        if let Err(e) = self.set_sysctls(interface, "ipv4", &["promote_secondaries"]) {
            log(
                "warn",
                "ipv4 promote_secondaries not set",
                json!({"interface": interface, "reason": e.to_string()}),
            );
        }
    }

    /// Writes 1 to /proc/sys/net/<family>/conf/<interface>/<key> for each key.
    fn set_sysctls(&self, interface: &str, family: &str, keys: &[&str]) -> std::io::Result<()> {
        let dir = self
            .paths
            .proc_sys
            .join("net")
            .join(family)
            .join("conf")
            .join(interface);
        keys.iter()
            .try_for_each(|key| std::fs::write(dir.join(key), "1\n"))
    }

    async fn configure_static(
        &mut self,
        links: &Links,
        link: &Link,
        s: &StaticConfig,
    ) -> anyhow::Result<()> {
        let cidr = s.cidr();
        links
            .add_address(link, s.address, s.prefix_len, None)
            .await?;
        // IPv6 keeps its link-local and autoconfigured addresses.
        if let IpAddr::V4(address) = s.address {
            remove_other_addresses(links, link, address).await?;
        }
        if let Some(gateway) = s.gateway {
            links
                .set_default_route(link, gateway, RouteProtocol::Static, s.gateway_onlink())
                .await?;
        }
        log(
            "info",
            "static address configured",
            json!({"interface": link.name, "address": cidr, "router": s.gateway, "dns": s.dns}),
        );
        if !s.dns.is_empty() {
            self.write_resolv_conf("static configuration from user-data", &s.dns, None)?;
        }
        match s.gateway {
            Some(gw) => self.ready(&format!("static {cidr} via {gw}")),
            // No gateway is the operator's choice (a private network): ready with the address.
            None => self.ready(&format!("static {cidr}, no gateway configured")),
        }
        Ok(())
    }

    async fn run_dhcp(
        &mut self,
        links: &Links,
        link: &Link,
        config: &NetworkConfig,
    ) -> anyhow::Result<()> {
        let mac = link.ethernet_address().with_context(|| {
            format!(
                "{} has no Ethernet address: DHCP needs one (name another interface in user-data)",
                link.name
            )
        })?;
        let socket = DhcpSocket::bind(&link.name)?;
        let mut client = Client::new(mac, random_seed(&mac), Instant::now());
        let mut buf = vec![0u8; 2048];
        let mut shown = String::new();
        loop {
            let deadline = client.next_deadline();
            let actions = tokio::select! {
                received = socket.recv(&mut buf) => {
                    let (n, from) = received.context("receiving DHCP replies")?;
                    match client.on_packet(&buf[..n], Instant::now()) {
                        Ok(actions) => actions,
                        Err(why) => {
                            log("debug", "dhcp packet ignored", json!({"from": from.to_string(), "reason": why.to_string()}));
                            Vec::new()
                        }
                    }
                }
                _ = sleep_until(deadline) => client.on_timer(Instant::now()),
            };
            for action in actions {
                self.carry_out(links, link, config, &socket, action).await?;
            }
            let status = dhcp_status(client.state(), &link.name);
            // "dhcp bound" has its own event (configure_lease); the other states get this one.
            if status != shown {
                if !matches!(client.state(), State::Bound { .. }) {
                    log(
                        "info",
                        "dhcp state",
                        json!({"state": client.state().name(), "status": status}),
                    );
                }
                self.status(&status);
                shown = status;
            }
        }
    }

    async fn carry_out(
        &mut self,
        links: &Links,
        link: &Link,
        config: &NetworkConfig,
        socket: &DhcpSocket,
        action: Action,
    ) -> anyhow::Result<()> {
        match action {
            Action::Send { kind, packet, to } => {
                let dest = match to {
                    Destination::Broadcast => "255.255.255.255".to_string(),
                    Destination::Server(ip) => ip.to_string(),
                };
                match socket.send(&packet, to).await {
                    Ok(()) => log(
                        "debug",
                        "dhcp sent",
                        json!({"type": format!("{kind:?}").to_uppercase(), "to": dest}),
                    ),
                    // The retransmission timer tries again.
                    Err(e) => log(
                        "warn",
                        "dhcp send failed",
                        json!({"type": format!("{kind:?}").to_uppercase(), "to": dest, "reason": e.to_string()}),
                    ),
                }
            }
            Action::Configure(lease) => self.configure_lease(links, link, config, &lease).await?,
            Action::Renewed(lease) => {
                links
                    .add_address(
                        link,
                        lease.address.into(),
                        lease.prefix_len,
                        lifetime(&lease),
                    )
                    .await?;
                log(
                    "info",
                    "dhcp renewed",
                    json!({"address": cidr(&lease), "server": lease.server.to_string(), "lease_s": lease.duration_secs()}),
                );
                if self.ready {
                    self.status(&bound_status(&lease));
                }
            }
            Action::Deconfigure { lease, reason } => {
                links
                    .remove_address(link, lease.address.into(), lease.prefix_len)
                    .await?;
                log(
                    "warn",
                    "dhcp lease lost, address removed",
                    json!({"address": cidr(&lease), "reason": reason}),
                );
                self.ready = false;
            }
        }
        Ok(())
    }

    async fn configure_lease(
        &mut self,
        links: &Links,
        link: &Link,
        config: &NetworkConfig,
        lease: &Lease,
    ) -> anyhow::Result<()> {
        links
            .add_address(
                link,
                lease.address.into(),
                lease.prefix_len,
                lifetime(lease),
            )
            .await?;
        remove_other_addresses(links, link, lease.address).await?;
        if let Some(mtu) = lease.mtu {
            links.set_mtu(link, mtu.into()).await?;
        }
        let router = lease.routers.first().copied();
        if let Some(router) = router {
            let onlink =
                !config::same_subnet(lease.address.into(), router.into(), lease.prefix_len);
            links
                .set_default_route(link, router.into(), RouteProtocol::Dhcp, onlink)
                .await?;
        }
        log(
            "info",
            "dhcp bound",
            json!({
                "interface": link.name,
                "address": cidr(lease),
                "router": router.map(|r| r.to_string()),
                "dns": lease.dns,
                "server": lease.server.to_string(),
                "lease_s": lease.duration_secs(),
            }),
        );
        if !lease.dns.is_empty() {
            let dns: Vec<IpAddr> = lease.dns.iter().map(|&ip| ip.into()).collect();
            let source = format!("DHCP from {}", lease.server);
            self.write_resolv_conf(&source, &dns, lease.domain.as_deref())?;
        }
        if lease.hostname.is_some() {
            self.apply_hostname(config, lease.hostname.as_deref());
        }
        if router.is_some() {
            self.ready(&bound_status(lease));
        } else {
            log(
                "warn",
                "dhcp lease has no router, not ready",
                json!({"address": cidr(lease)}),
            );
        }
        Ok(())
    }

    fn write_resolv_conf(
        &self,
        source: &str,
        dns: &[IpAddr],
        search: Option<&str>,
    ) -> anyhow::Result<()> {
        let text = config::resolv_conf(source, dns, search);
        let path = &self.paths.resolv_conf;
        write_atomically(path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        log(
            "info",
            "resolv.conf written",
            json!({"path": path.display().to_string(), "nameservers": dns, "search": search}),
        );
        Ok(())
    }

    /// Sets user-data's host name, or the one a DHCP server offered (`dhcp`), as
    /// [`config::hostname_to_set`] decides. Written through /proc/sys/kernel/hostname: root's
    /// file, so no CAP_SYS_ADMIN is needed (sethostname(2) would need it).
    fn apply_hostname(&self, config: &NetworkConfig, dhcp: Option<&str>) {
        let file = self.paths.proc_sys.join("kernel/hostname");
        let current = std::fs::read_to_string(&file).unwrap_or_default();
        let current = current.trim();
        let kernel_arg = tessera_common::cmdline::KernelArgs::from_proc()
            .is_ok_and(|a| a.get("hostname").is_some());
        let source = if config.hostname.is_some() {
            "user-data"
        } else {
            "dhcp"
        };
        let offered = config.hostname.as_deref().or(dhcp).unwrap_or_default();
        let Some(name) =
            config::hostname_to_set(current, kernel_arg, config.hostname.as_deref(), dhcp)
        else {
            if offered != current {
                log(
                    "info",
                    "host name kept",
                    json!({"offered": offered, "source": source, "current": current, "reason": "named by tessera.hostname= or user-data"}),
                );
            }
            return;
        };
        if !config::valid_hostname(name) {
            log(
                "warn",
                "host name invalid, not applied",
                json!({"offered": name, "source": source}),
            );
            return;
        }
        match std::fs::write(&file, name) {
            Ok(()) => log(
                "info",
                "hostname set",
                json!({"hostname": name, "source": source}),
            ),
            Err(e) => log(
                "warn",
                "hostname not set",
                json!({"hostname": name, "source": source, "reason": e.to_string()}),
            ),
        }
    }

    fn status(&self, text: &str) {
        let _ = tessera_common::notify::notify(&[format!("STATUS={text}")]);
    }

    fn ready(&mut self, text: &str) {
        if !self.ready {
            log(
                "info",
                "network ready",
                json!({"status": text, "since_start_ms": self.started.elapsed().as_millis() as u64}),
            );
        }
        self.ready = true;
        let _ = tessera_common::notify::notify(&["READY=1".into(), format!("STATUS={text}")]);
    }
}

/// One structured event on stdout, which the supervisor keeps as a log event.
pub use tessera_common::log::print_event as log;

fn dhcp_status(state: &State, interface: &str) -> String {
    match state {
        State::Init { .. } => format!("DHCP: starting over on {interface}"),
        State::Selecting => format!("DHCP: discovering on {interface}"),
        State::Requesting { offer } => {
            format!("DHCP: requesting {} from {}", offer.address, offer.server)
        }
        State::Bound { lease } => bound_status(lease),
        State::Renewing { lease } => {
            format!("DHCP: renewing {} with {}", lease.address, lease.server)
        }
        State::Rebinding { lease } => format!("DHCP: rebinding {}", lease.address),
    }
}

fn bound_status(lease: &Lease) -> String {
    let lease_text = match lease.duration {
        Some(d) => format!("lease {}s", d.as_secs()),
        None => "infinite lease".to_string(),
    };
    match lease.routers.first() {
        Some(router) => format!("bound {} via {router}, {lease_text}", cidr(lease)),
        None => format!("bound {} (no router), {lease_text}", cidr(lease)),
    }
}

/// What is left of the lease, as the address's lifetime in the kernel.
fn lifetime(lease: &Lease) -> Option<Duration> {
    lease
        .expires_at()
        .map(|t| t.saturating_duration_since(Instant::now()))
}

/// The service owns the link's IPv4 configuration: addresses it did not just configure
/// (an earlier lease, a static address from before a restart) go.
async fn remove_other_addresses(links: &Links, link: &Link, keep: Ipv4Addr) -> anyhow::Result<()> {
    for (address, prefix_len) in links.ipv4_addresses(link).await? {
        if address != keep {
            links
                .remove_address(link, address.into(), prefix_len)
                .await?;
            log(
                "info",
                "old address removed",
                json!({"interface": link.name, "address": format!("{address}/{prefix_len}")}),
            );
        }
    }
    Ok(())
}

fn cidr(lease: &Lease) -> String {
    format!("{}/{}", lease.address, lease.prefix_len)
}

fn mac_text(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Writes a sibling temporary file and renames it over `path`: readers see the old or the
/// new file, never a partial one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// 64 bits from the kernel's random pool; if that fails, the MAC, pid and clock mixed.
fn random_seed(mac: &[u8; 6]) -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: the buffer is valid for 8 bytes.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), 8, libc::GRND_NONBLOCK) };
    if n == 8 {
        return u64::from_ne_bytes(bytes);
    }
    let mut seed = [0u8; 8];
    seed[..6].copy_from_slice(mac);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    u64::from_ne_bytes(seed) ^ nanos ^ u64::from(std::process::id()).rotate_left(32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::dhcp::Offer;

    fn lease(routers: Vec<Ipv4Addr>, duration: Option<Duration>) -> Lease {
        Lease {
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix_len: 24,
            server: Ipv4Addr::new(10, 0, 2, 2),
            routers,
            dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
            domain: None,
            hostname: None,
            mtu: None,
            duration,
            renew_after: Duration::from_secs(43200),
            rebind_after: Duration::from_secs(75600),
            start: Instant::now(),
        }
    }

    #[test]
    fn status_says_what_the_client_is_doing() {
        let gw = Ipv4Addr::new(10, 0, 2, 2);
        let day = Some(Duration::from_secs(86400));
        let offer = Offer {
            address: Ipv4Addr::new(10, 0, 2, 15),
            server: gw,
        };
        let cases = [
            (State::Selecting, "DHCP: discovering on eth0"),
            (
                State::Requesting { offer },
                "DHCP: requesting 10.0.2.15 from 10.0.2.2",
            ),
            (
                State::Bound {
                    lease: lease(vec![gw], day),
                },
                "bound 10.0.2.15/24 via 10.0.2.2, lease 86400s",
            ),
            (
                State::Bound {
                    lease: lease(vec![], None),
                },
                "bound 10.0.2.15/24 (no router), infinite lease",
            ),
            (
                State::Renewing {
                    lease: lease(vec![gw], day),
                },
                "DHCP: renewing 10.0.2.15 with 10.0.2.2",
            ),
            (
                State::Rebinding {
                    lease: lease(vec![gw], day),
                },
                "DHCP: rebinding 10.0.2.15",
            ),
        ];
        for (state, text) in cases {
            assert_eq!(dhcp_status(&state, "eth0"), text);
        }
    }

    #[test]
    fn resolv_conf_is_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "nameserver 192.0.2.1\n").unwrap();
        write_atomically(&path, b"nameserver 10.0.2.3\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "nameserver 10.0.2.3\n"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["resolv.conf"], "no temporary file left behind");
    }
}
