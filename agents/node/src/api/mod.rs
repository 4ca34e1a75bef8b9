//! The node API (DESIGN §5, issue 4 §6): HTTPS with mTLS using the identity the node agent
//! gets from certmgr, JSON replies, `/metrics` in the Prometheus text format. `auth` says who
//! may do what, `routes` the requests, `server` the listener, `client` the host side
//! (`tessera node …`), `service` the `node` service (`tessera agent node`).

pub mod auth;
pub mod client;
pub mod containers;
pub mod node;
pub mod routes;
pub mod server;
pub mod service;
