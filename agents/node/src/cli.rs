//! `tessera node …` (the node API from an operator's machine, over mTLS) and `tessera metrics`
//! (on the node's console: the same exposition computed locally, no TLS).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::api::client::{self, Target};
use crate::api::server::DEFAULT_PORT;

#[derive(Args, Debug)]
pub struct NodeArgs {
    /// The node API, HOST:PORT (port 7443 on the node).
    #[arg(long)]
    pub addr: String,
    /// The name in the node's certificate, `node.<node FQDN>`; defaults to HOST when it is a
    /// name rather than an address.
    #[arg(long)]
    pub server_name: Option<String>,
    /// The cluster CA certificate (PEM), e.g. `<ca state>/ca.pem`.
    #[arg(long)]
    pub ca: PathBuf,
    /// Client certificate chain (PEM): an operator certificate from `tessera ca admin-cert`.
    #[arg(long)]
    pub cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long)]
    pub key: PathBuf,
    #[command(subcommand)]
    pub command: NodeCommand,
}

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Node, life-cycle and services (JSON).
    Status,
    /// Services as PID 1 reports them, with health (JSON).
    Services,
    /// Log events as JSON lines; -f follows.
    Logs {
        #[arg(short, long)]
        follow: bool,
        /// Only this service's events.
        service: Option<String>,
    },
    /// The Prometheus exposition.
    Metrics,
    /// Volumes and snapshots on the node's data disk (JSON).
    Volumes,
    /// The firewall: cluster networks, exposures, the table in force (JSON).
    Firewall,
    /// Open PORT[/udp] to a scope (node-local, cluster, public).
    Expose {
        port: String,
        #[arg(long)]
        scope: String,
        #[arg(long)]
        owner: Option<String>,
    },
    /// Close PORT[/udp] again.
    Unexpose { port: String },
    /// Take the node out of service, saying why.
    MarkUnavailable { reason: String },
    /// Put it back.
    MarkAvailable {
        #[arg(default_value = "")]
        reason: String,
    },
    /// Start, stop or restart a service.
    Service { action: String, name: String },
}

fn target(a: &NodeArgs) -> anyhow::Result<Target> {
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let trust = tessera_identity::tls::CaTrust::from_pem(&read(&a.ca)?)
        .with_context(|| format!("{} is not the cluster CA certificate (PEM)", a.ca.display()))?;
    let identity = tessera_identity::tls::certified_key_from_pem(&read(&a.cert)?, &read(&a.key)?)
        .context("loading --cert and --key")?;
    let tls = tessera_identity::tls::client_config(Some(identity), &trust)?;
    let host = a.addr.rsplit_once(':').map_or(a.addr.as_str(), |(h, _)| h);
    let server_name = match &a.server_name {
        Some(n) => n.clone(),
        None if host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok() => anyhow::bail!(
            "--addr {} is an address, but the node's certificate names `node.<node FQDN>`; pass --server-name node.<node FQDN>",
            a.addr
        ),
        None => host.to_string(),
    };
    let addr = if a.addr.contains(':') {
        a.addr.clone()
    } else {
        format!("{}:{DEFAULT_PORT}", a.addr)
    };
    Ok(Target {
        addr,
        server_name,
        tls,
    })
}

/// Runs `tessera node …`; the exit code is non-zero when the node refused.
pub fn run_node(a: NodeArgs) -> anyhow::Result<std::process::ExitCode> {
    let t = target(&a)?;
    let mark = |state: &str, reason: &str| {
        Some(serde_json::json!({"state": state, "reason": reason}).to_string())
    };
    let (method, path, body) = match &a.command {
        NodeCommand::Status => ("GET", "/v1/status".to_string(), None),
        NodeCommand::Services => ("GET", "/v1/services".into(), None),
        NodeCommand::Logs { follow, service } => {
            let mut q = format!("follow={}", u8::from(*follow));
            if let Some(s) = service {
                q.push_str(&format!("&service={s}"));
            }
            ("GET", format!("/v1/logs?{q}"), None)
        }
        NodeCommand::Metrics => ("GET", "/metrics".into(), None),
        NodeCommand::Volumes => ("GET", "/v1/volumes".into(), None),
        NodeCommand::Firewall => ("GET", "/v1/firewall".into(), None),
        NodeCommand::Expose { port, scope, owner } => {
            let (protocol, port) = crate::firewall::client::parse_port_spec(port)?;
            let mut body = serde_json::json!({"port": port, "protocol": protocol, "scope": scope});
            if let Some(o) = owner {
                body["owner"] = serde_json::json!(o);
            }
            (
                "POST",
                "/v1/firewall/exposures".into(),
                Some(body.to_string()),
            )
        }
        NodeCommand::Unexpose { port } => {
            let (protocol, port) = crate::firewall::client::parse_port_spec(port)?;
            (
                "DELETE",
                format!("/v1/firewall/exposures/{protocol}/{port}"),
                None,
            )
        }
        NodeCommand::MarkUnavailable { reason } => {
            ("POST", "/v1/lifecycle".into(), mark("unavailable", reason))
        }
        NodeCommand::MarkAvailable { reason } => {
            ("POST", "/v1/lifecycle".into(), mark("available", reason))
        }
        NodeCommand::Service { action, name } => {
            ("POST", format!("/v1/services/{name}/{action}"), None)
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut out = std::io::stdout();
    let status = rt.block_on(client::request(&t, method, &path, body, &mut out))?;
    Ok(if (200..300).contains(&status) {
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!("the node answered {status}");
        std::process::ExitCode::FAILURE
    })
}

/// `tessera metrics` on the node: the exposition the API serves, computed here.
pub fn run_metrics() -> anyhow::Result<()> {
    let node = crate::api::node::Node::new(
        tessera_common::paths::default_control_socket(),
        crate::metrics::Sources::default(),
    );
    let status = node.pid1_status().ok();
    print!(
        "{}",
        crate::metrics::exposition(&node.sources, status.as_ref(), Vec::new())
    );
    Ok(())
}
