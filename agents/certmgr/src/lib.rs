//! `tessera-certmgr`: the node's certificate manager (agents/README.md, "Child identities";
//! thesis 4.9.6, "Initial handoff" and "Subsequent handoff").
//!
//! Owns: the node identity — its key (generated on the node, held by the kernel), the
//! bootstrap with the cluster CA (CSR + one-time token over HTTPS pinned by fingerprint),
//! renewal at about 2/3 of the lifetime, and the standalone node-local CA when user-data names
//! no CA; child identities handed out through one-time local tokens on
//! `/run/tessera/certmgr.sock`; the `/sbin/request-key` callout that turns such a token into
//! keys in the requester's keyring; and the client side of all of it (`tessera identity …`).
//!
//! Must not: write a private key or a token to a file, argv or the environment (tokens travel
//! in the kernel keyring, in key descriptions and over the unix socket only), trust anything
//! the CA sends before its fingerprint checked out, or touch another agent's state.
//!
//! Modules, one job each: `agent_identity` (an agent's mTLS identity from the hand-off), `service` (the `tessera agent certmgr` process), `settings` (user-data
//! and the bootstrap token in the keyring), `https` (a small HTTP/1.1 client over rustls),
//! `ca_client` (the CA API, pinning), `bootstrap`, `renew` (scheduling), `standalone` (the
//! node-local CA), `node` (the node identity and what certmgr says about it), `keygen` (child
//! keys), `children` (issuing child identities), `tokens` (one-time local tokens), `peers`
//! (which process holds which identity), `api` (the socket server), `protocol` (its messages),
//! `client` (its client), `cli` (the `tessera identity …` commands), `callout` (`/sbin/request-key`), `keyctl` (the key system calls the
//! identity crate does not wrap), `fetch` (`tessera identity fetch` and `keys`), `scan`
//! (`tessera identity scan`), `secret` (locked, zeroized buffers), `defaults`.

pub mod agent_identity;
pub mod api;
pub mod bootstrap;
pub mod ca_client;
pub mod callout;
pub mod children;
pub mod cli;
pub mod client;
pub mod defaults;
pub mod fetch;
pub mod https;
pub mod keyctl;
pub mod keygen;
pub mod node;
pub mod peers;
pub mod protocol;
pub mod renew;
pub mod scan;
pub mod secret;
pub mod service;
pub mod settings;
pub mod standalone;
pub mod tokens;

#[cfg(feature = "bench")]
pub mod bench;

pub use service::run_service;
