//! The X.509 identity of Tessera agents (see agents/README.md): the certificate profile,
//! rustls configurations for mTLS with the cluster CA pinned and its CRL checked, and private
//! keys that the agent process cannot read back (kernel-held RSA, possessor-only ECDSA).
//!
//! This crate holds no state and never talks to the network; the CA service and the
//! certificate manager do, using it.

pub mod keyring;
pub mod keys;
pub mod profile;
pub mod tls;
