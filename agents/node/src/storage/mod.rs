//! Storage on the data disk (issue 4 §3): the disk user-data names (`[storage] backend,
//! device, wipe`) is formatted when blank, adopted when it is a Tessera data disk, and refused
//! (with the reason in status and logs) when it holds anything else and `wipe` is not set.
//! Volumes and snapshots through one [`backend::Backend`] trait over two backends.
//!
//! - [`name`]: volume names and their checks;
//! - [`probe`]: signatures on the disk, from its first MiB; [`plan`]: format, adopt or refuse;
//! - [`config`]: `[storage]` from user-data;
//! - [`backend`]: the trait, volumes, errors; [`btrfs`] over [`btrfs_ioctl`]; [`lvm`] over
//!   lvm2's command lines ([`command`]); [`mount`]: mounts and freezing;
//! - [`protocol`]: the root-only JSON-lines socket /run/tessera/storage.sock;
//! - [`service`]: `tessera agent storage`; [`client`]: `tessera volume …`;
//! - [`bench`]: `tessera volume bench`, snapshot latency against the Debian tools.

pub mod backend;
pub mod bench;
pub mod btrfs;
pub mod btrfs_ioctl;
pub mod client;
pub mod command;
pub mod config;
pub mod lvm;
pub mod mount;
pub mod name;
pub mod plan;
pub mod probe;
pub mod protocol;
pub mod service;

pub use service::run_service as run;
