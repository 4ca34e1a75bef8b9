//! The SSH developer console (issue 4 §7): Debian's dropbear on port 22, root login by key
//! only, the keys from user-data's `ssh.authorized_keys`. Off, with a port left closed, when
//! user-data has no keys.
//!
//! - [`authorized`]: which keys user-data allows and the `/root/.ssh/authorized_keys` file;
//! - [`host_keys`]: where the host keys live (the data volume, else tmpfs), made once with
//!   dropbearkey and their fingerprints;
//! - [`dropbear`]: dropbear's command line, its log lines as events, and whether it listens;
//! - [`service`]: `tessera agent ssh`: turns the console on and off as user-data says and
//!   opens port 22 through the firewall only while it is on.

pub mod authorized;
pub mod dropbear;
pub mod host_keys;
pub mod service;

pub use service::run;
