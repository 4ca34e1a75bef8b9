//! The component hub (thesis 4.2.9, 4.6.1, 4.7; DESIGN.md §5): components, and agents that
//! present themselves as components, find each other in groups and exchange management
//! messages (call, cast, attributes, monitors) through the hub of their node; the hubs of
//! all nodes form one peer-to-peer system with no special roles.
//!
//! Owns: the local channel (`/run/tessera/hub/hub.sock`), the hub's HTTPS API, hub-to-hub links
//! and the hub's gossip state. Must not touch: other agents' files or sockets, certificates
//! (it uses the identity it is given), the firewall.
//!
//! Modules, one job each: `id` (160-bit target ids), `ring` (virtual nodes), `protocol`
//! (messages), `codec` (frames), `pending` (correlation, expiry), `directory` (who is where,
//! selectors), `monitor` (monitor diffs), `keys` (gossip keys), `hub` (the core), `local`
//! (unix-socket channel), `client` (the library components use), `peer` (hub-to-hub mTLS),
//! `cluster` (chitchat), `api` (HTTPS JSON), `node` (one hub with all its listeners),
//! `service` (`tessera agent hub`), `cli` (`tessera hub …`), `component` (`tessera hub
//! component …`: components on a console), `bench` (`tessera bench hub`).

pub mod api;
#[cfg(feature = "bench")]
pub mod bench;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod codec;
pub mod component;
pub mod defaults;
pub mod directory;
pub mod ephemeral_ca;
pub mod error;
pub mod hub;
pub mod id;
pub mod keys;
pub mod local;
pub mod log;
pub mod monitor;
pub mod node;
pub mod peer;
pub mod pending;
pub mod protocol;
pub mod ring;
pub mod service;
pub mod testbed;

pub use client::Client;
pub use error::{Code, HubError};
pub use hub::{Hub, HubConfig};
pub use id::TargetId;
pub use protocol::{Event, Selector, Target, Watch};
