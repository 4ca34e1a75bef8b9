//! Networking of the node: loopback and one NIC up, IPv4 by DHCP (or static from user-data),
//! the default route, /etc/resolv.conf, IPv6 router advertisements.
//!
//! - `links`: rtnetlink wrappers (links, addresses, routes), the `tessera-netlink` crate;
//! - [`dhcp`]: the DHCPv4 client state machine, pure (no I/O, no clock);
//! - [`dhcp_socket`]: the UDP socket the client talks through;
//! - [`config`]: user-data's `[network]`, the host-name rule, resolv.conf text;
//! - [`service`]: the loop that ties them together and reports readiness.

pub mod config;
pub mod dhcp;
pub mod dhcp_socket;
pub use tessera_netlink as links;
pub mod service;

pub use service::run;
