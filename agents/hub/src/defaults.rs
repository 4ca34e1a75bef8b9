//! Every path, port, limit and timing of the hub, in one place.

use std::time::Duration;

/// The local channel: components connect here.
/// In a directory of its own, so that a container given the hub (`hub = true`) binds the
/// directory and still reaches the socket after the hub restarts and binds it anew.
pub const SOCKET_DIR: &str = "/run/tessera/hub";
pub const SOCKET_PATH: &str = "/run/tessera/hub/hub.sock";
/// Points clients at another socket (host tests, development).
pub const SOCKET_ENV: &str = "TESSERA_HUB_SOCKET";
/// The HTTPS (mTLS, JSON) API for tools and remote clients.
pub const API_PORT: u16 = 7440;
/// Hub-to-hub links (mTLS): routed calls and casts.
pub const PEER_PORT: u16 = 7441;
/// Gossip (chitchat over UDP).
pub const GOSSIP_PORT: u16 = 7442;
/// The validated user-data (`hub.seeds`).
pub const USERDATA_FILE: &str = tessera_userdata::defaults::USERDATA_FILE;
/// The agent id in the hub's certificate (`UID=hub`, DNS SAN `hub.<node>`).
pub const HUB_AGENT_ID: &str = "hub";
/// The subsystem a peer hub's certificate must name.
pub const HUB_SUBSYSTEM: &str = "hub";

/// Largest frame accepted on the local channel and on hub-to-hub links.
pub const MAX_FRAME: usize = 4 * 1024 * 1024;
/// Frames queued towards one connection at most; beyond, messages are dropped (best effort).
pub const CONNECTION_QUEUE: usize = 8192;
/// Expiry of a request that names none.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(5);
/// Longest expiry a request may ask for.
pub const MAX_EXPIRY: Duration = Duration::from_secs(300);
/// How often expired requests are answered and dropped.
pub const EXPIRY_TICK: Duration = Duration::from_millis(10);

/// Virtual nodes of the ring (a power of two).
pub const VIRTUAL_NODES: u32 = 64;
/// Hubs in a target's preference list: the primary and N-1 alternatives.
pub const REPLICAS: usize = 3;
/// Bits of the virtual-node index that a component type fixes: each type lives in
/// 1/2^TYPE_BITS of the virtual nodes.
pub const TYPE_BITS: u8 = 3;

/// Chitchat gossip round.
pub const GOSSIP_INTERVAL: Duration = Duration::from_millis(200);
/// Phi-accrual threshold of chitchat's failure detector.
pub const PHI_THRESHOLD: f64 = 8.0;
/// A dead hub's state is forgotten after this.
pub const DEAD_NODE_GRACE: Duration = Duration::from_secs(3600);

/// A hub-to-hub TLS handshake must finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait before dialling a hub again after a failed attempt.
pub const REDIAL_DELAY: Duration = Duration::from_millis(500);
/// A routed message is forwarded at most this many times between hubs.
pub const MAX_HOPS: u8 = 2;
/// Largest API request body.
pub const MAX_API_BODY: usize = 1024 * 1024;
