//! One hub with everything around it: the core, the expiry timer, the local socket, the
//! hub-to-hub listener and links, the HTTPS API and the gossip membership. The service and the
//! tests start hubs through this.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chitchat::transport::Transport;
use tokio::net::TcpListener;

use crate::api;
use crate::cluster::{Cluster, ClusterConfig};
use crate::defaults;
use crate::hub::{Hub, HubConfig};
use crate::local;
use crate::peer::{PeerLinks, Tls, TlsConfigs};

/// Where a hub listens and whom it joins.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub cluster_id: String,
    /// The local channel; `None` for a hub without one (some tests).
    pub socket: Option<PathBuf>,
    pub peer_listen: SocketAddr,
    /// What the others dial; the bound address when `None` (unless unspecified).
    pub peer_advertise: Option<std::net::IpAddr>,
    pub api_listen: Option<SocketAddr>,
    pub gossip_listen: SocketAddr,
    pub gossip_advertise: Option<SocketAddr>,
    pub seeds: Vec<String>,
    pub gossip_interval: Duration,
    pub phi_threshold: f64,
    pub vnodes: u32,
}

impl NodeConfig {
    /// Loopback addresses with ephemeral TCP ports (tests, the benchmark).
    pub fn loopback(cluster_id: &str, gossip_port: u16, seeds: Vec<String>) -> NodeConfig {
        let lo = std::net::Ipv4Addr::LOCALHOST;
        NodeConfig {
            cluster_id: cluster_id.to_string(),
            socket: None,
            peer_listen: (lo, 0).into(),
            peer_advertise: None,
            api_listen: None,
            gossip_listen: (lo, gossip_port).into(),
            gossip_advertise: None,
            seeds,
            gossip_interval: defaults::GOSSIP_INTERVAL,
            phi_threshold: defaults::PHI_THRESHOLD,
            vnodes: defaults::VIRTUAL_NODES,
        }
    }
}

/// A running hub.
pub struct HubNode {
    pub hub: Arc<Hub>,
    pub socket: Option<PathBuf>,
    pub peer_addr: SocketAddr,
    pub api_addr: Option<SocketAddr>,
    pub gossip_addr: SocketAddr,
    /// The TLS configurations its links and API use; replace them when the identity is renewed.
    pub tls: TlsConfigs,
    links: Arc<PeerLinks>,
    cluster: Option<Cluster>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl HubNode {
    /// Starts a hub named by its certificate's node.
    pub async fn start(
        config: NodeConfig,
        tls: Tls,
        transport: &dyn Transport,
    ) -> anyhow::Result<HubNode> {
        let me = tls.node()?;
        if me.subsystem != defaults::HUB_SUBSYSTEM {
            anyhow::bail!(
                "the certificate is for subsystem {:?}, not {:?}; start the hub with the identity the supervisor hands it (identity = {{ subsystem = \"hub\", agent_id = \"hub\" }})",
                me.subsystem,
                defaults::HUB_SUBSYSTEM
            );
        }
        let mut hub_config = HubConfig::new(me.node.clone());
        hub_config.vnodes = config.vnodes;
        let hub = Hub::new(hub_config)?;
        let configs = TlsConfigs::new(&tls)?;
        let links = PeerLinks::new(me.node.clone(), configs.clone());
        {
            let links = links.clone();
            hub.attach_peers(Arc::new(move |h: &str, addr, frame| {
                links.send(h, addr, frame)
            }));
        }
        let mut tasks = vec![hub.spawn_expiry()];

        let peer_listener = TcpListener::bind(config.peer_listen)
            .await
            .with_context(|| {
                format!(
                "listening for hubs on {}; is another hub running? choose another --peer-listen",
                config.peer_listen
            )
            })?;
        let bound = peer_listener.local_addr()?;
        let peer_addr = match config.peer_advertise {
            Some(ip) => SocketAddr::new(ip, bound.port()),
            None => bound,
        };
        tasks.push(tokio::spawn(crate::peer::serve(
            hub.clone(),
            peer_listener,
            configs.clone(),
        )));

        let api_addr = match config.api_listen {
            Some(listen) => {
                let listener = TcpListener::bind(listen).await.with_context(|| {
                    format!("listening for the API on {listen}; choose another --api-listen")
                })?;
                let addr = listener.local_addr()?;
                tasks.push(tokio::spawn(api::serve(
                    hub.clone(),
                    listener,
                    configs.clone(),
                )));
                Some(match config.peer_advertise {
                    Some(ip) => SocketAddr::new(ip, addr.port()),
                    None => addr,
                })
            }
            None => None,
        };

        if let Some(path) = &config.socket {
            let listener = local::bind(path)?;
            tasks.push(tokio::spawn(local::serve(hub.clone(), listener)));
        }

        let gossip_advertise = config.gossip_advertise.unwrap_or(config.gossip_listen);
        let cluster = Cluster::start(
            hub.clone(),
            ClusterConfig {
                cluster_id: config.cluster_id.clone(),
                gossip_listen: config.gossip_listen,
                gossip_advertise,
                seeds: config.seeds.clone(),
                gossip_interval: config.gossip_interval,
                phi_threshold: config.phi_threshold,
                peer_addr,
                api_addr,
            },
            transport,
        )
        .await?;
        Ok(HubNode {
            hub,
            socket: config.socket,
            peer_addr,
            api_addr,
            gossip_addr: gossip_advertise,
            tls: configs,
            links,
            cluster: Some(cluster),
            tasks,
        })
    }

    /// Live hubs as the gossip layer sees them.
    pub async fn live(&self) -> Vec<String> {
        match &self.cluster {
            Some(c) => c.live().await,
            None => vec![self.hub.id().to_string()],
        }
    }

    /// Stops everything: listeners close, gossip stops (the others detect the failure).
    pub async fn stop(mut self) {
        self.abort_tasks();
        if let Some(c) = self.cluster.take() {
            c.stop().await;
        }
        if let Some(path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
    }

    fn abort_tasks(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.links.close_all();
    }
}

impl Drop for HubNode {
    fn drop(&mut self) {
        self.abort_tasks();
    }
}
