//! The X.509 identity of Tessera agents (see agents/README.md): the certificate profile,
//! rustls configurations for mTLS with the cluster CA pinned and its CRL checked, and private
//! keys that the agent process cannot read back (kernel-held RSA, possessor-only ECDSA).
//!
//! This crate holds no state and never talks to the network by itself; the CA service, the
//! certificate manager and the agents' APIs do, using it (`https` is their shared accept
//! loop).

pub mod https;
pub mod keyring;
pub mod keys;
pub mod profile;
pub mod tls;
