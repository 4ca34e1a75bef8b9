//! The cluster CA service and `tessera ca …` (agents/README.md; thesis 4.9.6, "Initial
//! handoff"): one-time tokens, issuance from CSRs under the Tessera certificate profile,
//! renewal and delegated signing over mTLS, revocation and CRL, SQLite state with a
//! hash-chained audit log, and the HTTPS API that serves all of it.
//!
//! Owns: the CA's state directory (keys, certificates, `ca.db`) and its HTTPS API. It trusts
//! nothing in a CSR but its public key: the subject comes from the token binding or the
//! presented certificate. It must not touch node state, the kernel keyring or another
//! agent's files; the certificate profile and TLS setup it uses belong to
//! `tessera-identity`.
//!
//! Modules, one job each: `cli` (the commands), `setup` (init), `server` (HTTPS, limits,
//! timeouts), `api` (routing, JSON), `service` (what each call does), `token`, `csr` (CSR
//! policy), `issue` (signing), `records` (issued/revoked), `crl`, `audit`, `state` (SQLite,
//! group commit), `files` (state directory), `bench` (`tessera bench ca`).

pub mod api;
pub mod audit;
pub mod bench;
pub mod cli;
pub mod client;
pub mod crl;
pub mod csr;
pub mod error;
pub mod files;
pub mod issue;
pub mod log;
pub mod records;
pub mod server;
pub mod service;
pub mod setup;
pub mod state;
pub mod token;

pub use bench::{bench, CaBenchArgs};
pub use cli::{run, CaCommand};
