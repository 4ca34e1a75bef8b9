//! The `node` service (`tessera agent node`): obtains its identity from the token PID 1
//! hands over on fd 3, serves the node API on port 7443, runs the health checks, and keeps
//! the node life-cycle (initializing → available once the API listens).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use serde_json::json;
use tessera_certmgr::agent_identity::{AgentIdentity, LiveTls};

use super::node::Node;
use super::server;
use crate::health;
use crate::lifecycle::Event;
use crate::metrics::Sources;
use crate::net::service::log;

/// Overrides the listen address (default `0.0.0.0:7443`).
pub const LISTEN_ENV: &str = "TESSERA_NODE_API";

pub fn run() -> anyhow::Result<()> {
    let listen: SocketAddr = match std::env::var(LISTEN_ENV) {
        Ok(v) => v.parse().with_context(|| {
            format!("{LISTEN_ENV}={v:?} is not an address; write it like 0.0.0.0:7443")
        })?,
        Err(_) => SocketAddr::from(([0, 0, 0, 0], server::DEFAULT_PORT)),
    };
    let identity = AgentIdentity::from_handoff().context(
        "obtaining the node API's certificate from certmgr (the service file must say `identity = { subsystem = \"node\", agent_id = \"node\" }`)",
    )?;
    let tls = LiveTls::new(&identity)?;
    let name = identity.dns_name();
    log(
        "info",
        "node identity obtained",
        json!({"name": name, "serial": identity.peer.serial, "not_after": humantime::format_rfc3339_seconds(identity.peer.not_after).to_string()}),
    );
    // The certificate lives a few hours; the API presents the renewed one to new connections.
    tls.keep_renewed(identity, tessera_certmgr::client::default_socket(), |r| match r {
        Ok(peer) => log(
            "info",
            "node identity renewed",
            json!({"serial": peer.serial, "not_after": humantime::format_rfc3339_seconds(peer.not_after).to_string()}),
        ),
        Err(why) => log(
            "warn",
            "node identity renewal failed; retrying",
            json!({"reason": why, "fix": "see `tessera logs certmgr` and `tessera identity status`"}),
        ),
    })?;

    let node = Arc::new(Node::new(
        tessera_common::paths::default_control_socket(),
        Sources::default(),
    ));
    let (checks, errors) = health::spec::load_dir(Path::new(tessera_common::paths::SERVICES_DIR));
    for e in errors {
        log("warn", "health check not loaded", json!({"reason": e}));
    }
    for (name, spec) in &checks {
        log(
            "info",
            "health check",
            json!({"service": name, "check": spec}),
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("node")
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}; is another node agent running? set {LISTEN_ENV} to another address"))?;
        tokio::spawn(health::run(node.clone(), checks));
        node.apply(Event::AgentReady).ok();
        log("info", "node API serving", json!({"listen": listen.to_string(), "name": name}));
        let _ = tessera_common::notify::notify(&["READY=1".into(), format!("STATUS=node API on {listen}")]);
        server::serve(node, listener, move || tls.server(), async {
            if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                term.recv().await;
            } else {
                std::future::pending::<()>().await;
            }
        })
        .await;
        Ok(())
    })
}
