//! The container agent of a Tessera node (DESIGN §5, thesis 4.6.4 "Container controller").
//!
//! It owns what a workload needs on a node, in modules that each do one job:
//! - `archive`: reading an OCI runtime bundle or an OCI image layout from a tar stream (plain,
//!   gzip or zstd), refusing hostile archives, checking every digest;
//! - `image`: an OCI image layout turned into a runtime bundle (layers in order with
//!   whiteouts, the image config turned into the process spec);
//! - `spec`: config.json: loading it with errors that name the field, and the default spec;
//! - `runtime`: running a bundle isolated: the shim (the container's parent, which outlives the
//!   agent), the container's init (namespaces, mounts, pivot_root, limits, capabilities,
//!   seccomp) and the small typed protocol between them;
//! - `storage`: the storage service's socket, through which templates and instances are made;
//! - `templates`: archives imported into read-only template volumes, keyed by digest;
//! - `instances`: a container's COW snapshot of its template, its config.json and record;
//! - `network`: the node's container bridge, each container's veth pair, DNS and published
//!   ports (through the firewall service);
//! - `identity`: a container's certmgr certificate, handed to its process on fd 3;
//! - `protocol` and `service`: `tessera agent container` and its root-only socket;
//! - `cli`: `tessera container …`;
//! - `bench`: the guest half of `make bench-container` (ours vs crun, clone, RSS).
//!
//! It must not touch the data disk except through the storage service, nor the firewall except
//! through the firewall service; it never forks from a multi-threaded process without exec.

pub mod archive;
pub mod bench;
pub mod cli;
pub mod declared;
pub mod identity;
pub mod image;
pub mod instances;
pub mod network;
pub mod protocol;
pub mod runtime;
pub mod service;
pub mod spec;
pub mod storage;
mod supervise;
pub mod templates;
