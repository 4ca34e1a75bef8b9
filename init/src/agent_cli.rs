//! `tessera agent NAME`: the node agents, each run by the supervisor as its own service
//! process (`/sbin/tessera agent net`). Agents are on the boot path, so the usual form skips
//! building the whole CLI (see [`fast_path`]).

use std::process::ExitCode;

/// The agents this binary runs, with what each one does.
pub const AGENTS: &[(&str, &str)] = &[(
    "net",
    "network: links, DHCPv4 or static addresses, default route, resolv.conf, IPv6 RAs",
)];

/// `tessera agent NAME` exactly: runs the agent without parsing the command line with clap.
pub fn fast_path() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    let (verb, name) = (args.next()?, args.next()?);
    if verb != "agent" || args.next().is_some() {
        return None;
    }
    Some(run(name.to_str()?))
}

/// Runs one agent until it fails; the error is printed as a structured event on stderr.
pub fn run(name: &str) -> ExitCode {
    let result = match name {
        "net" => tessera_node::net::run(),
        other => {
            let known: Vec<&str> = AGENTS.iter().map(|(n, _)| *n).collect();
            Err(anyhow::anyhow!(
                "unknown agent {other:?}: this binary runs {}",
                known.join(", ")
            ))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let event = serde_json::json!({
                "level": "error",
                "msg": format!("agent {name} failed"),
                "reason": format!("{e:#}"),
            });
            eprintln!("{event}");
            ExitCode::FAILURE
        }
    }
}
