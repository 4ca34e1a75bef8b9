//! The node agent of a Tessera node (DESIGN §5, thesis 4.6.5): it makes the machine usable
//! and visible. So far it owns the network (`net`): links, addresses, routes, DNS and the
//! host name from DHCP, run as the `net` service (`tessera agent net`); and the firewall
//! (`firewall`): the nftables table `inet tessera` and its exposures API, run as the
//! `firewall` service (`tessera agent firewall`); the SSH developer console (`ssh`):
//! dropbear with root's keys from user-data, run as the `ssh` service (`tessera agent ssh`); and the data disk (`storage`): Btrfs or
//! LVM-thin volumes and snapshots, run as the `storage` service (`tessera agent storage`).
//!
//! It talks to PID 1 only through sd_notify and its stdout (structured log events). The
//! network goes through the kernel's own interfaces (rtnetlink, sockets, /proc/sys), never by
//! running `ip` or `udhcpc`; the only programs it runs are Debian's `nft` (through its JSON
//! interface, as DESIGN §7 asks), `/sbin/modprobe` (tessera) for the nftables modules, and
//! Debian's dropbear and dropbearkey for the console.

pub mod api;
pub mod cli;
pub mod firewall;
pub mod health;
pub use tessera_common::ipc;
pub mod lifecycle;
pub mod metrics;
pub mod net;
pub mod ssh;
pub mod storage;
