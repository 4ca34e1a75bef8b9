//! Shared vocabulary of Tessera: where things live on a node (`paths`), what a log event looks
//! like (`log`), how the CLI talks to PID 1 (`control`), how a service says it is ready
//! (`notify`), how `tessera.*` kernel arguments are read (`cmdline`), and the agents' local
//! JSON-lines socket APIs (`ipc`: the small server loop and the client).
//!
//! This crate holds data types, tiny clients and that one socket loop. It must not start
//! processes, own state or depend on any other Tessera crate: everything else depends on it.

pub mod api_error;
pub mod bench_conditions;
pub mod cmdline;
pub mod control;
pub mod ipc;
pub mod log;
pub mod names;
pub mod notify;
pub mod paths;
pub mod restart;
pub mod size;
