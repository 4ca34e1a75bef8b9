//! The hub's membership in the cluster, on chitchat (scuttlebutt gossip with a phi-accrual
//! failure detector): each hub publishes its components, group memberships, attributes and
//! addresses in its own key-value state; every change in the set of live hubs or in their
//! state becomes the hub's new view of the others. A hub that the failure detector declares
//! dead (or that a partition hides) drops out of the view: its components leave their groups
//! and monitors fire; when it is seen again, its state is back.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chitchat::transport::Transport;
use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use tokio::sync::mpsc;

use crate::defaults;
use crate::directory::HubView;
use crate::hub::Hub;
use crate::keys::{self, Publish};

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Cluster name: hubs of other clusters are ignored.
    pub cluster_id: String,
    pub gossip_listen: SocketAddr,
    pub gossip_advertise: SocketAddr,
    /// `host:port` or `ip:port` of hubs to join through.
    pub seeds: Vec<String>,
    pub gossip_interval: Duration,
    pub phi_threshold: f64,
    /// Published for the others.
    pub peer_addr: SocketAddr,
    pub api_addr: Option<SocketAddr>,
}

impl ClusterConfig {
    pub fn failure_detector(&self) -> FailureDetectorConfig {
        FailureDetectorConfig {
            phi_threshold: self.phi_threshold,
            // A short window adapts quickly to the real gossip rate.
            sampling_window_size: 100,
            max_interval: self.gossip_interval * 20,
            initial_interval: self.gossip_interval,
            dead_node_grace_period: defaults::DEAD_NODE_GRACE,
        }
    }
}

/// A running membership.
pub struct Cluster {
    handle: ChitchatHandle,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Cluster {
    /// Joins (or starts) the cluster.
    pub async fn start(
        hub: Arc<Hub>,
        config: ClusterConfig,
        transport: &dyn Transport,
    ) -> anyhow::Result<Cluster> {
        let generation = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or_default();
        let id = ChitchatId::new(hub.id().to_string(), generation, config.gossip_advertise);
        // Changes made from now on queue up; the snapshot below has everything before.
        let (ptx, prx) = mpsc::unbounded_channel();
        hub.attach_publisher(ptx);
        let mut initial = hub.published_state();
        initial.push((keys::PEER_KEY.into(), config.peer_addr.to_string()));
        if let Some(api) = config.api_addr {
            initial.push((keys::API_KEY.into(), api.to_string()));
        }
        let chitchat_config = ChitchatConfig {
            chitchat_id: id,
            cluster_id: config.cluster_id.clone(),
            gossip_interval: config.gossip_interval,
            listen_addr: config.gossip_listen,
            seed_nodes: config.seeds.clone(),
            failure_detector_config: config.failure_detector(),
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V0,
        };
        let handle = spawn_chitchat(chitchat_config, initial, transport)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot start gossip on {}: {e}; is another hub using the port?",
                    config.gossip_listen
                )
            })?;
        let publisher = tokio::spawn(publish(handle.chitchat(), prx));
        let watcher = tokio::spawn(watch(hub.clone(), handle.chitchat()));
        tracing::info!(hub = hub.id(), gossip = %config.gossip_advertise, seeds = ?config.seeds, "joining the cluster");
        Ok(Cluster {
            handle,
            tasks: vec![publisher, watcher],
        })
    }

    /// Live hubs as chitchat sees them (this one included).
    pub async fn live(&self) -> Vec<String> {
        let cc = self.handle.chitchat();
        let guard = cc.lock().await;
        let mut out: Vec<String> = guard
            .live_nodes()
            .map(|id| id.node_id.to_string())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Leaves: gossip stops, so the others' failure detectors declare this hub dead.
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = self.handle.shutdown().await;
    }
}

async fn publish(
    chitchat: Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
    mut rx: mpsc::UnboundedReceiver<Vec<Publish>>,
) {
    while let Some(mut batch) = rx.recv().await {
        while let Ok(more) = rx.try_recv() {
            batch.extend(more);
        }
        let mut guard = chitchat.lock().await;
        let state = guard.self_node_state();
        for op in batch {
            match op {
                Publish::Set(k, v) => state.set(k, v),
                Publish::Delete(k) => {
                    if state.get(&k).is_some() {
                        state.delete(&k)
                    }
                }
            }
        }
    }
}

async fn watch(hub: Arc<Hub>, chitchat: Arc<tokio::sync::Mutex<chitchat::Chitchat>>) {
    let mut live = chitchat.lock().await.live_nodes_watcher();
    loop {
        let views = {
            let nodes = live.borrow_and_update();
            let mut latest: BTreeMap<String, (u64, HubView)> = BTreeMap::new();
            for (id, state) in nodes.iter() {
                if &*id.node_id == hub.id() {
                    continue;
                }
                // A restarted hub may still be listed under its old generation.
                if latest
                    .get(&*id.node_id)
                    .is_some_and(|(g, _)| *g >= id.generation_id)
                {
                    continue;
                }
                latest.insert(
                    id.node_id.to_string(),
                    (id.generation_id, keys::parse_view(state.key_values())),
                );
            }
            latest.into_iter().map(|(k, (_, v))| (k, v)).collect()
        };
        hub.set_remote(views);
        if live.changed().await.is_err() {
            return;
        }
    }
}
