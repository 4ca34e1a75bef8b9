//! PID 1 of a Tessera node: early boot (mounts, modules, RNG, hostname, console), the service
//! supervisor, signal handling and orderly shutdown — plus the CLI verbs that talk to it.
//!
//! This crate owns process supervision and the machine's life from `/init` to reboot(2). It
//! must not grow agent logic (networking, identity, storage): those are services it starts.

pub mod boot;
pub mod cli;
pub mod klog;
pub mod kmod;
pub mod pid1;
pub mod shutdown;
pub mod supervisor;
