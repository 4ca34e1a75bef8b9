//! `tessera ca …`: the operator's commands. All but `serve` work directly on the state
//! directory (they may run while the server does; SQLite serialises the writes and the
//! server picks up a new CRL within two seconds).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use tessera_identity::profile;
use tessera_identity::tls::{fingerprint, CaTrust};

use crate::audit;
use crate::crl;
use crate::files::{StateDir, CA_CERT};
use crate::issue::{rfc3339, Authority};
use crate::records::{self, Reason};
use crate::server::{self, ServeOptions};
use crate::setup;
use crate::state;
use crate::token::{self, Binding};

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 10m, 4h, 1d)"))
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a new CA: key, self-signed certificate (10 years), its HTTPS certificate and
    /// the operator's admin certificate, in a new state directory.
    Init {
        /// State directory (created, mode 0700). Holds the CA key: keep it on the operator's machine.
        #[arg(long, env = "TESSERA_CA_STATE")]
        state: PathBuf,
        /// Cluster name (the DC of every certificate).
        #[arg(long)]
        cluster: String,
        /// Host name or IP address for the CA's HTTPS certificate; repeatable.
        /// Default: localhost, 127.0.0.1, 10.0.2.2 (QEMU guests reach the host there).
        #[arg(long = "san")]
        sans: Vec<String>,
    },
    /// Serve the CA's HTTPS API.
    Serve {
        #[arg(long, env = "TESSERA_CA_STATE")]
        state: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Lifetime of the certificates issued.
        #[arg(long, default_value = "4h", value_parser = duration)]
        lifetime: Duration,
    },
    /// Issue a one-time token bound to a node and subsystem; prints only the token.
    Token {
        #[arg(long, env = "TESSERA_CA_STATE")]
        state: PathBuf,
        /// The node's FQDN.
        #[arg(long)]
        node: String,
        /// The subsystem the certificate is for (certmgr, node, container, hub, …).
        #[arg(long)]
        subsystem: String,
        /// Subsystems the holder may request certificates for, comma-separated. Default for a
        /// node token (`--subsystem certmgr`): node,container,hub, the agents the default image
        /// runs with an identity; name fewer for a narrower node (`--capabilities node`), or
        /// `none` for a node that may hand out no identity. Other subsystems default to none.
        #[arg(long, value_delimiter = ',')]
        capabilities: Vec<String>,
        /// Agent id (UID); default: the subsystem name.
        #[arg(long)]
        agent_id: Option<String>,
        /// Endpoint URI SAN (`https://<agent>.<node>:<port>/…`); repeatable.
        #[arg(long = "uri")]
        uris: Vec<String>,
        /// How long the token stays redeemable.
        #[arg(long, default_value = "10m", value_parser = duration)]
        ttl: Duration,
    },
    /// Print the CA certificate's fingerprint (`sha256:<hex>`) for `tessera.ca_fp=`.
    Fingerprint {
        #[arg(long, env = "TESSERA_CA_STATE")]
        state: PathBuf,
    },
    /// List issued certificates: serial, subject, not-after, status.
    List {
        #[arg(long, env = "TESSERA_CA_STATE")]
        state: PathBuf,
    },
    /// Revoke a certificate by serial and publish a new CRL.
    Revoke {
        #[arg(long, env = "TESSERA_CA_STATE")]
        state: PathBuf,
        /// Serial in hex, as `list` shows it.
        serial: String,
        #[arg(long, value_enum, default_value = "unspecified")]
        reason: Reason,
    },
    /// Print the current CRL (PEM).
    Crl {
        #[arg(long, env = "TESSERA_CA_STATE")]
        state: PathBuf,
    },
    /// Issue a new operator certificate (admin.pem, admin.key in the state directory, replaced;
    /// valid for a year). Revoke the old one with `revoke` if it leaked.
    AdminCert {
        #[arg(long, env = "TESSERA_CA_STATE")]
        state: PathBuf,
        /// The operator's name (UID), a lower-case DNS label.
        #[arg(long, default_value = "admin")]
        name: String,
    },
    /// Print the audit log (JSON lines); with --verify, check its hash chain.
    Audit {
        #[arg(long, env = "TESSERA_CA_STATE")]
        state: PathBuf,
        #[arg(long)]
        verify: bool,
    },
}

/// The capabilities a token binds: what the operator named (`none` for an empty list), or for
/// a node token that names none, what the default image's agents need.
fn token_capabilities(subsystem: &str, named: Vec<String>) -> Vec<String> {
    if named.len() == 1 && named[0] == "none" {
        return Vec::new();
    }
    if named.is_empty() && subsystem == profile::CERTMGR_SUBSYSTEM {
        return profile::DEFAULT_NODE_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .collect();
    }
    named
}

/// Runs a `tessera ca` command.
pub fn run(cmd: CaCommand) -> anyhow::Result<()> {
    match cmd {
        CaCommand::Init {
            state,
            cluster,
            sans,
        } => {
            let state = StateDir::new(state);
            let done = setup::init(&state, &cluster, &sans)?;
            let dir = state.dir.display();
            println!("CA for cluster {} created in {dir}", done.cluster);
            println!("fingerprint: {}", done.fingerprint);
            println!("HTTPS names: {}", done.sans.join(", "));
            println!("keys (mode 0600): {dir}/ca.key, {dir}/server.key, {dir}/admin.key");
            println!("next:");
            println!("  tessera ca serve --state {dir} --listen 127.0.0.1:8443");
            println!("  tessera ca token --state {dir} --node <fqdn> --subsystem certmgr");
            println!(
                "  boot a node with: tessera.ca=https://10.0.2.2:8443 tessera.ca_fp={} tessera.certmgr_token=<token>",
                done.fingerprint
            );
            Ok(())
        }
        CaCommand::Serve {
            state,
            listen,
            lifetime,
        } => {
            crate::log::init();
            server::serve_blocking(ServeOptions {
                state: StateDir::new(state),
                listen,
                lifetime,
            })
        }
        CaCommand::Token {
            state,
            node,
            subsystem,
            capabilities,
            agent_id,
            uris,
            ttl,
        } => {
            let state = StateDir::new(state);
            state.require_initialized()?;
            if subsystem == profile::ADMIN_SUBSYSTEM
                || capabilities.iter().any(|c| c == profile::ADMIN_SUBSYSTEM)
            {
                anyhow::bail!(
                    "admin certificates are made only by `tessera ca init`, never through tokens"
                );
            }
            let capabilities = token_capabilities(&subsystem, capabilities);
            let binding = Binding::new(&node, &subsystem, agent_id.as_deref(), capabilities, uris)
                .map_err(|e| anyhow::anyhow!(e.reason))?;
            let mut conn = state::open(&state.database())?;
            let created = state::transaction(&mut conn, |c| {
                token::create(c, &binding, ttl, "cli", state::now())
            })
            .map_err(|e| anyhow::anyhow!(e.reason))?;
            eprintln!(
                "token for {}.{} ({}), expires {}",
                binding.agent_id,
                binding.node,
                binding.subsystem,
                rfc3339(created.expires_at)
            );
            println!("{}", created.token);
            Ok(())
        }
        CaCommand::Fingerprint { state } => {
            let state = StateDir::new(state);
            let trust = CaTrust::from_pem(&state.read(CA_CERT)?)?;
            println!("{}", fingerprint(trust.ca_der()));
            Ok(())
        }
        CaCommand::List { state } => {
            let state = StateDir::new(state);
            state.require_initialized()?;
            let conn = state::open(&state.database())?;
            let now = state::now();
            let all = records::list(&conn).map_err(|e| anyhow::anyhow!(e.reason))?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<34} {:<21} {:<8} {:<6} SUBJECT",
                "SERIAL", "NOT AFTER", "STATUS", "KIND"
            )?;
            for r in all {
                writeln!(
                    out,
                    "{:<34} {:<21} {:<8} {:<6} {}",
                    r.serial,
                    rfc3339(r.not_after),
                    r.status(now),
                    r.kind,
                    r.subject
                )?;
            }
            Ok(())
        }
        CaCommand::Revoke {
            state,
            serial,
            reason,
        } => {
            let state = StateDir::new(state);
            state.require_initialized()?;
            let serial =
                records::normalize_serial(&serial).map_err(|e| anyhow::anyhow!(e.reason))?;
            let authority = Authority::load(&state, profile::DEFAULT_LIFETIME)?;
            let mut conn = state::open(&state.database())?;
            let (rec, crl) = state::transaction(&mut conn, |c| {
                let now = state::now();
                let rec = records::revoke(c, &serial, reason, "cli", now)?;
                let crl = crl::refresh(c, &authority, now)?;
                Ok((rec, crl))
            })
            .map_err(|e| anyhow::anyhow!(e.reason))?;
            println!(
                "revoked {} ({}), reason {}; CRL number {} published",
                rec.serial,
                rec.subject,
                reason.as_str(),
                crl.number
            );
            Ok(())
        }
        CaCommand::Crl { state } => {
            let state = StateDir::new(state);
            state.require_initialized()?;
            let mut conn = state::open(&state.database())?;
            let current = crl::current(&conn).map_err(|e| anyhow::anyhow!(e.reason))?;
            let crl = match current {
                Some(c) if !crl::needs_refresh(Some(&c), state::now()) => c,
                _ => {
                    let authority = Authority::load(&state, profile::DEFAULT_LIFETIME)?;
                    state::transaction(&mut conn, |c| crl::refresh(c, &authority, state::now()))
                        .map_err(|e| anyhow::anyhow!(e.reason))?
                }
            };
            print!("{}", crl.pem());
            Ok(())
        }
        CaCommand::AdminCert { state, name } => {
            let state = StateDir::new(state);
            state.require_initialized()?;
            profile::validate_agent_id(&name)?;
            let authority = Authority::load(&state, profile::DEFAULT_LIFETIME)?;
            setup::write_admin_cert(&state, &authority, &name)?;
            println!(
                "new admin certificate for {name}: {}, key {} (mode 0600)",
                state.path(crate::files::ADMIN_CERT).display(),
                state.path(crate::files::ADMIN_KEY).display()
            );
            Ok(())
        }
        CaCommand::Audit { state, verify } => {
            let state = StateDir::new(state);
            state.require_initialized()?;
            let conn = state::open(&state.database())?;
            if verify {
                let v = audit::verify(&conn).with_context(|| {
                    format!(
                        "the audit log of {} has been tampered with",
                        state.dir.display()
                    )
                })?;
                println!("audit log intact: {} entries, head {}", v.entries, v.head);
                return Ok(());
            }
            let mut out = std::io::stdout().lock();
            for e in audit::entries(&conn)? {
                // Details are stored as JSON text; show them as JSON, not as a string.
                let details = serde_json::from_str::<serde_json::Value>(&e.details)
                    .unwrap_or(serde_json::Value::String(e.details.clone()));
                let line = serde_json::json!({
                    "seq": e.seq, "time": e.time, "event": e.event, "details": details,
                    "prev_hash": e.prev_hash, "hash": e.hash,
                });
                writeln!(out, "{line}")?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::token_capabilities;

    fn caps(list: &[&str]) -> Vec<String> {
        list.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn a_node_token_without_capabilities_covers_the_default_images_agents() {
        assert_eq!(
            token_capabilities("certmgr", vec![]),
            caps(&["node", "container", "hub"])
        );
    }

    #[test]
    fn named_capabilities_narrow_a_node_token_and_none_empties_it() {
        assert_eq!(
            token_capabilities("certmgr", caps(&["node"])),
            caps(&["node"])
        );
        assert!(token_capabilities("certmgr", caps(&["none"])).is_empty());
    }

    #[test]
    fn other_subsystems_get_no_capabilities_unless_named() {
        assert!(token_capabilities("hub", vec![]).is_empty());
        assert_eq!(token_capabilities("node", caps(&["hub"])), caps(&["hub"]));
    }
}
