//! The node agent of a Tessera node (DESIGN §5, thesis 4.6.5): it makes the machine usable
//! and visible. So far it owns the network (`net`): links, addresses, routes, DNS and the
//! host name from DHCP, run as the `net` service (`tessera agent net`).
//!
//! It must not start processes, and talks to PID 1 only through sd_notify and its stdout
//! (structured log events); everything it configures goes through the kernel's own
//! interfaces (rtnetlink, sockets, /proc/sys), never by running `ip` or `udhcpc`.

pub mod api;
pub mod cli;
pub mod health;
pub mod lifecycle;
pub mod metrics;
pub mod net;
