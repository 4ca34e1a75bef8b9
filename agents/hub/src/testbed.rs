//! In-process clusters of hubs for the tests and the benchmark: real hubs (core, sockets,
//! mTLS links with certificates from an [`EphemeralCa`]) gossiping over chitchat's in-memory
//! channel transport, which can also cut and restore links to make partitions.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chitchat::transport::ChannelTransport;

use crate::ephemeral_ca::EphemeralCa;
use crate::node::{HubNode, NodeConfig};

pub struct Testbed {
    pub ca: EphemeralCa,
    pub transport: ChannelTransport,
    pub hubs: Vec<Option<HubNode>>,
    pub gossip_interval: Duration,
    dir: PathBuf,
}

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// The name of hub `i`.
pub fn hub_name(i: usize) -> String {
    format!("n{i}.example")
}

/// The (in-memory) gossip address of hub `i`.
pub fn gossip_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 20_000 + i as u16))
}

impl Testbed {
    /// An empty testbed; add hubs with [`Testbed::add`].
    pub fn new(gossip_interval: Duration) -> anyhow::Result<Testbed> {
        let dir = std::env::temp_dir().join(format!(
            "tessera-hub-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Testbed {
            ca: EphemeralCa::new("test")?,
            transport: ChannelTransport::default(),
            hubs: Vec::new(),
            gossip_interval,
            dir,
        })
    }

    /// A testbed with `n` hubs, each with a local socket.
    pub async fn start(n: usize, gossip_interval: Duration) -> anyhow::Result<Testbed> {
        let mut t = Self::new(gossip_interval)?;
        for _ in 0..n {
            t.add().await?;
        }
        Ok(t)
    }

    pub fn socket(&self, i: usize) -> PathBuf {
        self.dir.join(format!("hub{i}.sock"))
    }

    /// Starts the next hub, seeded with the first three.
    pub async fn add(&mut self) -> anyhow::Result<usize> {
        let i = self.hubs.len();
        let seeds = (0..i.min(3)).map(|s| gossip_addr(s).to_string()).collect();
        let mut config = NodeConfig::loopback("test", 0, seeds);
        config.gossip_listen = gossip_addr(i);
        config.gossip_interval = self.gossip_interval;
        config.socket = Some(self.socket(i));
        config.api_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        let node = HubNode::start(config, self.ca.hub(&hub_name(i))?, &self.transport).await?;
        self.hubs.push(Some(node));
        Ok(i)
    }

    pub fn node(&self, i: usize) -> &HubNode {
        match self.hubs.get(i).and_then(|h| h.as_ref()) {
            Some(n) => n,
            None => panic!("hub {i} is not running"),
        }
    }

    /// Stops hub `i` (its gossip stops: the others must detect it).
    pub async fn kill(&mut self, i: usize) {
        if let Some(n) = self.hubs.get_mut(i).and_then(|h| h.take()) {
            n.stop().await;
        }
    }

    fn running(&self) -> impl Iterator<Item = (usize, &HubNode)> {
        self.hubs
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.as_ref().map(|h| (i, h)))
    }

    /// Whether every running hub sees exactly the running hubs as members.
    pub fn converged(&self) -> bool {
        let want: Vec<String> = self.running().map(|(i, _)| hub_name(i)).collect();
        let mut want = want;
        want.sort();
        self.running().all(|(_, h)| h.hub.members() == want)
    }

    /// Polls `f` until it holds or `limit` passes; returns how long it took.
    pub async fn wait_for(
        &self,
        limit: Duration,
        f: impl Fn(&Testbed) -> bool,
    ) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if f(self) {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }

    /// Cuts gossip between the two sides.
    pub async fn partition(&self, a: &[usize], b: &[usize]) {
        for x in a {
            for y in b {
                self.transport
                    .remove_link(gossip_addr(*x), gossip_addr(*y))
                    .await;
            }
        }
    }

    /// Restores gossip between the two sides.
    pub async fn heal(&self, a: &[usize], b: &[usize]) {
        for x in a {
            for y in b {
                self.transport
                    .add_link(gossip_addr(*x), gossip_addr(*y))
                    .await;
            }
        }
    }

    pub async fn stop(mut self) {
        for h in self.hubs.iter_mut() {
            if let Some(n) = h.take() {
                n.stop().await;
            }
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
