//! The node's firewall (issue 4 §2): one nftables table, `inet tessera`, inbound policy drop,
//! applied with Debian's `nft` through its JSON interface and replaced whole on every change.
//!
//! - [`model`]: exposures, scopes, CIDRs and their validation;
//! - [`ruleset`]: the nft JSON transaction for a policy (pure, golden-tested);
//! - [`nft`]: running `nft -j` and summarising what the kernel holds;
//! - [`config`]: `firewall.cluster_cidrs` from user-data;
//! - [`store`]: exposures kept across restarts of the service;
//! - [`protocol`], [`api`]: the root-only JSON-lines socket /run/tessera/firewall.sock;
//! - [`service`]: `tessera agent firewall`;
//! - [`client`]: `tessera firewall show|expose|unexpose|ruleset`.

pub mod api;
pub mod client;
pub mod config;
pub mod model;
pub mod nft;
pub mod protocol;
pub mod ruleset;
pub mod service;
pub mod store;

pub use service::run;
