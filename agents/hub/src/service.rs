//! `tessera agent hub`: the long-running service. Reads `node.cluster` and `hub.seeds` from
//! the user-data (`/run/tessera/userdata.toml`), listens on the local socket, the API port,
//! the hub-to-hub port and the gossip port, tells the supervisor it is ready (sd_notify
//! `READY=1`), and leaves the cluster on SIGTERM/SIGINT.
//!
//! Its identity (certificate and key) comes from the caller: PID 1's multi-call binary fetches
//! it from certmgr (the `TESSERA_IDENTITY_FD` hand-off) and calls [`run_with_identity`];
//! `--cert/--key/--ca` files are for development.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tessera_identity::tls::{self, CaTrust};

use crate::defaults;
use crate::node::{HubNode, NodeConfig};
use crate::peer::{Tls, TlsConfigs};

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// The local channel.
    #[arg(long, default_value = defaults::SOCKET_PATH)]
    pub socket: PathBuf,
    #[arg(long, default_value_t = SocketAddr::from((Ipv4Addr::UNSPECIFIED, defaults::API_PORT)))]
    pub api_listen: SocketAddr,
    #[arg(long, default_value_t = SocketAddr::from((Ipv4Addr::UNSPECIFIED, defaults::PEER_PORT)))]
    pub peer_listen: SocketAddr,
    #[arg(long, default_value_t = SocketAddr::from((Ipv4Addr::UNSPECIFIED, defaults::GOSSIP_PORT)))]
    pub gossip_listen: SocketAddr,
    /// The address other hubs reach this one at; default: user-data's `network.address`, else
    /// the first non-loopback IPv4 address.
    #[arg(long)]
    pub advertise: Option<IpAddr>,
    /// The user-data file (`node.cluster`, `hub.seeds`).
    #[arg(long, default_value = defaults::USERDATA_FILE)]
    pub userdata: PathBuf,
    /// More seeds (host, host:port, IP or [IPv6]:port), besides user-data's `hub.seeds`.
    #[arg(long = "seed")]
    pub seeds: Vec<String>,
    /// Development only: certificate chain, key and CA as PEM files.
    #[arg(long, requires_all = ["key", "ca"])]
    pub cert: Option<PathBuf>,
    #[arg(long)]
    pub key: Option<PathBuf>,
    #[arg(long)]
    pub ca: Option<PathBuf>,
}

/// A seed with the gossip port added when it names none.
pub fn seed_addr(seed: &str) -> String {
    if seed.parse::<SocketAddr>().is_ok() {
        return seed.to_string();
    }
    if let Ok(ip) = seed.parse::<IpAddr>() {
        return SocketAddr::new(ip, defaults::GOSSIP_PORT).to_string();
    }
    match seed.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok() => seed.to_string(),
        _ => format!("{seed}:{}", defaults::GOSSIP_PORT),
    }
}

/// The first up, non-loopback IPv4 address of this machine.
pub fn first_ipv4() -> Option<Ipv4Addr> {
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `addrs` with a list we only read and then free.
    if unsafe { libc::getifaddrs(&mut addrs) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = addrs;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        let up = ifa.ifa_flags & libc::IFF_UP as u32 != 0;
        let lo = ifa.ifa_flags & libc::IFF_LOOPBACK as u32 != 0;
        if up && !lo && !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr is non-null and, for AF_INET, a sockaddr_in.
            let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
            if family == libc::AF_INET {
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                found = Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
                break;
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: frees the list getifaddrs allocated, once.
    unsafe { libc::freeifaddrs(addrs) };
    found
}

/// What the user-data says about this hub.
struct Settings {
    cluster: String,
    /// `hub.seeds` and `--seed`, each with a port.
    seeds: Vec<String>,
    /// `network.address` (static addressing), the address the node is known by.
    address: Option<IpAddr>,
}

fn settings(args: &AgentArgs) -> anyhow::Result<Settings> {
    let config = tessera_userdata::load(&args.userdata)
        .with_context(|| format!("reading {}", args.userdata.display()))?;
    let cluster = config
        .as_ref()
        .map(|c| c.node.cluster.clone())
        .unwrap_or_else(|| tessera_userdata::schema::DEFAULT_CLUSTER.to_string());
    let address = config
        .as_ref()
        .and_then(|c| c.network.as_ref())
        .map(|n| n.address.addr);
    let mut seeds: Vec<String> = config
        .and_then(|c| c.hub)
        .map(|h| h.seeds)
        .unwrap_or_default();
    seeds.extend(args.seeds.iter().cloned());
    Ok(Settings {
        cluster,
        seeds: seeds.iter().map(|s| seed_addr(s)).collect(),
        address,
    })
}

/// The seeds without this hub's own gossip address: one seed list can be shared by every
/// node of a cluster.
fn other_seeds(seeds: Vec<String>, own: SocketAddr) -> Vec<String> {
    seeds
        .into_iter()
        .filter(|s| s.parse::<SocketAddr>().ok() != Some(own))
        .collect()
}

fn tls_from_files(args: &AgentArgs) -> anyhow::Result<Tls> {
    let (Some(cert), Some(key), Some(ca)) = (&args.cert, &args.key, &args.ca) else {
        anyhow::bail!("no identity: start the hub from its service file (identity = {{ subsystem = \"hub\", agent_id = \"hub\" }}) so that PID 1 hands it one, or pass --cert, --key and --ca for development");
    };
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    Ok(Tls {
        identity: tls::certified_key_from_pem(&read(cert)?, &read(key)?)?,
        trust: CaTrust::from_pem(&read(ca)?)?,
    })
}

fn notify(status: &str, ready: bool) {
    let mut a = vec![format!("STATUS={status}")];
    if ready {
        a.insert(0, "READY=1".into());
    }
    if let Err(e) = tessera_common::notify::notify(&a) {
        tracing::debug!(reason = %e, "no readiness notification");
    }
}

/// Logs what the identity's renewal thread reports.
pub fn report_renewal(r: Result<tessera_identity::profile::PeerIdentity, String>) {
    match r {
        Ok(peer) => tracing::info!(
            serial = %peer.serial,
            not_after = %humantime::format_rfc3339_seconds(peer.not_after),
            "hub identity renewed"
        ),
        Err(why) => tracing::warn!(
            reason = %why,
            fix = "see `tessera logs certmgr` and `tessera identity status`",
            "hub identity renewal failed; retrying"
        ),
    }
}

/// `tessera agent hub` with its identity from `--cert/--key/--ca` (not renewed).
pub fn run_agent(args: AgentArgs) -> anyhow::Result<()> {
    crate::log::init();
    let tls = tls_from_files(&args)?;
    run_with_identity(args, tls, |_| Ok(()))
}

/// Runs the hub with the identity PID 1 fetched for it, until SIGTERM/SIGINT. `renew` gets
/// the running hub's TLS configurations once it is up, to replace them as the identity is
/// renewed.
pub fn run_with_identity(
    args: AgentArgs,
    tls: Tls,
    renew: impl FnOnce(TlsConfigs) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    crate::log::init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("hub")
        .build()?;
    rt.block_on(async move {
        let Settings {
            cluster,
            seeds,
            address,
        } = settings(&args)?;
        let advertise = args
            .advertise
            .or(address)
            .or_else(|| first_ipv4().map(IpAddr::V4))
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let unspecified = |a: SocketAddr| a.ip().is_unspecified();
        let gossip_advertise = if unspecified(args.gossip_listen) {
            SocketAddr::new(advertise, args.gossip_listen.port())
        } else {
            args.gossip_listen
        };
        let seeds = other_seeds(seeds, gossip_advertise);
        let config = NodeConfig {
            cluster_id: cluster.clone(),
            socket: Some(args.socket.clone()),
            peer_listen: args.peer_listen,
            peer_advertise: unspecified(args.peer_listen).then_some(advertise),
            api_listen: Some(args.api_listen),
            gossip_listen: args.gossip_listen,
            gossip_advertise: Some(gossip_advertise),
            seeds: seeds.clone(),
            gossip_interval: defaults::GOSSIP_INTERVAL,
            phi_threshold: defaults::PHI_THRESHOLD,
            vnodes: defaults::VIRTUAL_NODES,
        };
        let node = HubNode::start(config, tls, &chitchat::transport::UdpTransport).await?;
        renew(node.tls.clone())?;
        tracing::info!(
            hub = node.hub.id(),
            cluster = %cluster,
            socket = %args.socket.display(),
            peer = %node.peer_addr,
            api = ?node.api_addr,
            gossip = %node.gossip_addr,
            seeds = ?seeds,
            "hub ready"
        );
        notify(&format!("serving on {}", args.socket.display()), true);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        notify("leaving the cluster", false);
        node.stop().await;
        tracing::info!("hub stopped");
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_get_the_gossip_port_when_they_name_none() {
        assert_eq!(seed_addr("n2.example"), "n2.example:7442");
        assert_eq!(seed_addr("n2.example:9000"), "n2.example:9000");
        assert_eq!(seed_addr("192.168.77.2"), "192.168.77.2:7442");
        assert_eq!(seed_addr("[fd00::2]:9000"), "[fd00::2]:9000");
        assert_eq!(seed_addr("fd00::2"), "[fd00::2]:7442");
    }

    #[test]
    fn a_shared_seed_list_leaves_out_the_hub_itself() {
        let seeds = ["192.168.77.11", "192.168.77.12", "n3.example"]
            .iter()
            .map(|s| seed_addr(s))
            .collect();
        let own: SocketAddr = "192.168.77.11:7442".parse().unwrap();
        assert_eq!(
            other_seeds(seeds, own),
            vec!["192.168.77.12:7442", "n3.example:7442"]
        );
    }
}
