//! `tessera container …`: the console's commands. Everything goes through the agent's socket
//! but `import`, which runs the same import (`templates::import_file`) in the CLI's own
//! process so that it can show progress.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;
use serde_json::{json, Value};

use crate::archive::Limits;
use crate::service::SOCKET;
use crate::storage::Storage;
use crate::templates;

/// A create runs a snapshot and, with --start, the container's setup under TCG.
const TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Import an OCI runtime bundle (config.json + rootfs/) or an OCI image layout, as a tar
    /// (plain, gzip or zstd), into a template; a second import of the same bytes does nothing.
    Import {
        file: PathBuf,
        /// The archive's expected digest (`sha256:<hex>`): refused if it differs.
        #[arg(long)]
        sha256: Option<String>,
        /// Allow setuid/setgid files in the archive.
        #[arg(long)]
        allow_setuid: bool,
    },
    /// Templates on the data disk.
    Templates {
        #[arg(long)]
        json: bool,
    },
    /// Containers and their state.
    #[command(alias = "ls")]
    List {
        #[arg(long)]
        json: bool,
    },
    /// Make a container from a template (its digest, or 12+ hex digits of it).
    Create {
        name: String,
        #[arg(long)]
        template: String,
        /// KEY=VALUE, repeatable.
        #[arg(long = "env")]
        env: Vec<String>,
        /// memory.max: bytes or K/M/G.
        #[arg(long)]
        memory: Option<String>,
        /// pids.max.
        #[arg(long)]
        pids: Option<i64>,
        /// cpu.max as a share of one CPU in percent.
        #[arg(long)]
        cpu: Option<u32>,
        /// no | on-failure | always.
        #[arg(long, default_value = "no")]
        restart: String,
        /// bridge (a veth on the node's container bridge, NAT out) | none (lo only) | host.
        #[arg(long, default_value = "bridge")]
        net: String,
        /// Publish a host port to a container port: HOST:CONTAINER[/udp]@SCOPE, SCOPE one of
        /// node-local, cluster, public (e.g. 8080:80@cluster). Repeatable; bridge only.
        #[arg(short = 'p', long = "publish", value_parser = parse_publish)]
        publish: Vec<crate::instances::Port>,
        /// Bind the node's component hub socket into the container (/run/tessera/hub).
        #[arg(long)]
        hub: bool,
        /// Start it too.
        #[arg(long)]
        start: bool,
        /// A certmgr certificate for this subsystem at every start (agent id: the name),
        /// handed to the process as a one-time token on fd 3 (TESSERA_IDENTITY_FD).
        #[arg(long, value_name = "SUBSYSTEM")]
        identity: Option<String>,
        /// Capabilities of that certificate (subsystems it may request), comma-separated.
        #[arg(long, value_delimiter = ',', requires = "identity")]
        identity_capabilities: Vec<String>,
        /// The program and its arguments, replacing the template's process.args.
        #[arg(last = true)]
        args: Vec<String>,
    },
    Start {
        name: String,
    },
    /// SIGTERM, then SIGKILL after the grace period.
    Stop {
        name: String,
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        grace: Duration,
    },
    Kill {
        name: String,
        #[arg(long, default_value = "SIGKILL")]
        signal: String,
    },
    /// Delete a stopped container and its snapshot (--force: running ones too).
    Rm {
        name: String,
        #[arg(long)]
        force: bool,
    },
    /// Run a command in a running container, set up like its own process (namespaces,
    /// cgroup, root, user, capabilities, seccomp); exits with the command's status.
    Exec {
        name: String,
        /// KEY=VALUE added to the container's environment, repeatable.
        #[arg(short = 'e', long = "env")]
        env: Vec<String>,
        /// The program and its arguments.
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
    /// Until the container's run ends; prints its exit code (128+N for signal N, as a shell
    /// does) and exits with it.
    Wait {
        name: String,
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Everything about one container, with its cgroup figures (JSON).
    Inspect {
        name: String,
    },
    /// Benchmark on this node (`make bench-container` runs it): create+start+wait+delete of
    /// /bin/true, ours against `crun run` of the same bundle, template clone, RSS.
    Bench(crate::bench::BenchArgs),
    /// The container's stdout and stderr; -f follows.
    Logs {
        name: String,
        #[arg(short, long)]
        follow: bool,
        /// JSON lines as kept.
        #[arg(long)]
        json: bool,
    },
}

fn call(request: Value) -> anyhow::Result<Value> {
    call_within(request, Duration::ZERO)
}

/// A request the agent may take `longer` than usual over (a stop's grace, a wait).
fn call_within(request: Value, longer: Duration) -> anyhow::Result<Value> {
    tessera_common::ipc::call(Path::new(SOCKET), "container", &request, longer + TIMEOUT)
}

/// An exit as a shell reports it: the code, or 128 + the signal's number.
fn shell_status(exit: &Value) -> i32 {
    match (exit["code"].as_i64(), exit["signal"].as_i64()) {
        (Some(c), _) => c as i32,
        (None, Some(s)) => 128 + s as i32,
        // No exit recorded (the reply always has one after a wait): a failure all the same.
        (None, None) => 1,
    }
}

fn parse_bytes(s: &str) -> anyhow::Result<i64> {
    let n = tessera_common::size::parse_size(s).map_err(anyhow::Error::msg)?;
    i64::try_from(n).map_err(|_| anyhow::anyhow!("size {s:?} is out of range"))
}

/// Runs a `tessera container` command.
pub fn run(cmd: ContainerCommand) -> anyhow::Result<()> {
    match cmd {
        ContainerCommand::Import {
            file,
            sha256,
            allow_setuid,
        } => import(&file, sha256.as_deref(), allow_setuid),
        ContainerCommand::Templates { json } => {
            let v = call(json!({"op": "templates"}))?;
            if json {
                println!("{v}");
                return Ok(());
            }
            println!(
                "{:<20} {:<7} {:>8} {:>10}  SOURCE",
                "DIGEST", "KIND", "FILES", "BYTES"
            );
            for t in v["templates"].as_array().into_iter().flatten() {
                let digest = t["digest"].as_str().unwrap_or("");
                println!(
                    "{:<20} {:<7} {:>8} {:>10}  {}",
                    digest.get(..19).unwrap_or(digest),
                    t["kind"].as_str().unwrap_or(""),
                    t["files"],
                    t["bytes"],
                    t["source"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        ContainerCommand::List { json } => {
            let v = call(json!({"op": "list"}))?;
            if json {
                println!("{v}");
                return Ok(());
            }
            println!(
                "{:<20} {:<9} {:>7} {:<12} {:>8}  TEMPLATE",
                "NAME", "STATE", "PID", "RESTART", "RESTARTS"
            );
            for c in v["containers"].as_array().into_iter().flatten() {
                let state = match (&c["state"], &c["exit"]) {
                    // Killed by the OOM killer (memory.events oom_kill): say so, not just 9.
                    (s, Value::Object(e)) if e.get("oom_killed") == Some(&Value::Bool(true)) => {
                        format!("{}(oom)", s.as_str().unwrap_or(""))
                    }
                    (s, Value::Object(e)) => format!(
                        "{}({})",
                        s.as_str().unwrap_or(""),
                        e.get("code")
                            .or(e.get("signal"))
                            .map(|x| x.to_string())
                            .unwrap_or_default()
                    ),
                    (s, _) => s.as_str().unwrap_or("").to_string(),
                };
                let digest = c["template"].as_str().unwrap_or("");
                println!(
                    "{:<20} {:<9} {:>7} {:<12} {:>8}  {}",
                    c["name"].as_str().unwrap_or(""),
                    state,
                    c["pid"]
                        .as_u64()
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| "-".into()),
                    c["restart"].as_str().unwrap_or(""),
                    c["restarts"],
                    digest.get(..19).unwrap_or(digest)
                );
            }
            Ok(())
        }
        ContainerCommand::Create {
            name,
            template,
            env,
            memory,
            pids,
            cpu,
            restart,
            net,
            publish,
            hub,
            start,
            identity,
            identity_capabilities,
            args,
        } => {
            let mut req = json!({"op": "create", "name": name, "template": template, "env": env,
                "restart": restart, "net": net, "ports": publish, "hub": hub, "start": start});
            if let Some(subsystem) = identity {
                req["identity"] =
                    json!({"subsystem": subsystem, "capabilities": identity_capabilities});
            }
            if !args.is_empty() {
                req["args"] = json!(args);
            }
            if let Some(m) = memory {
                req["memory_max"] = json!(parse_bytes(&m)?);
            }
            if let Some(p) = pids {
                req["pids_max"] = json!(p);
            }
            if let Some(c) = cpu {
                req["cpu_percent"] = json!(c);
            }
            let v = call(req)?;
            println!(
                "container {name} {}",
                v["state"].as_str().unwrap_or("created")
            );
            Ok(())
        }
        ContainerCommand::Start { name } => {
            let v = call(json!({"op": "start", "name": name}))?;
            println!(
                "container {name} {} pid {}",
                v["state"].as_str().unwrap_or(""),
                v["pid"]
            );
            Ok(())
        }
        ContainerCommand::Stop { name, grace } => {
            // The agent may wait the whole grace period, then for the kill.
            let v = call_within(
                json!({"op": "stop", "name": name, "grace_ms": grace.as_millis() as u64}),
                grace,
            )?;
            println!(
                "container {name} {} {}",
                v["state"].as_str().unwrap_or(""),
                v["exit"]
            );
            Ok(())
        }
        ContainerCommand::Kill { name, signal } => {
            call(json!({"op": "kill", "name": name, "signal": signal}))?;
            Ok(())
        }
        ContainerCommand::Rm { name, force } => {
            call(json!({"op": "delete", "name": name, "force": force}))?;
            println!("container {name} deleted");
            Ok(())
        }
        ContainerCommand::Wait { name, timeout } => {
            let v = call_within(
                json!({"op": "wait", "name": name, "timeout_ms": timeout.as_millis() as u64}),
                timeout,
            )?;
            let code = shell_status(&v["exit"]);
            println!("{code}");
            std::process::exit(code)
        }
        ContainerCommand::Inspect { name } => {
            let v = call(json!({"op": "inspect", "name": name}))?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        ContainerCommand::Logs { name, follow, json } => logs(&name, follow, json),
        ContainerCommand::Bench(args) => crate::bench::run(args),
        ContainerCommand::Exec { name, env, args } => {
            crate::instances::check_name(&name)?;
            // The agent says whether it exists; the exec itself runs in this process.
            call(json!({"op": "inspect", "name": name}))?;
            let dir = Path::new(crate::service::STATE_ROOT).join(&name);
            let code = crate::runtime::exec::exec(&dir, &args, &env)?;
            std::process::exit(code)
        }
    }
}

fn import(file: &Path, sha256: Option<&str>, allow_setuid: bool) -> anyhow::Result<()> {
    let limits = Limits {
        allow_setuid,
        ..Limits::default()
    };
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let mut report = |p: crate::archive::Progress| {
        eprintln!(
            "[import] {:.1} MiB read ({:.0}% of the archive), {} entries",
            p.bytes_read as f64 / (1 << 20) as f64,
            if size > 0 {
                (p.bytes_read as f64 * 100.0 / size as f64).min(100.0)
            } else {
                0.0
            },
            p.entries
        );
    };
    let done = templates::import_file(&Storage::default(), file, sha256, &limits, &mut report)?;
    let t = &done.template;
    if done.fresh {
        println!(
            "imported {} ({}, {} files, {} bytes) as template {}",
            file.display(),
            t.kind,
            t.files,
            t.bytes,
            t.digest
        );
    } else {
        println!("already imported: template {} ({})", t.digest, t.kind);
    }
    Ok(())
}

fn logs(name: &str, follow: bool, json: bool) -> anyhow::Result<()> {
    let print = |v: &Value| {
        if json {
            println!("{v}");
            return;
        }
        match (
            v["time"].as_str(),
            v["stream"].as_str(),
            v["message"].as_str(),
        ) {
            (Some(t), Some(s), Some(m)) => println!("{} {s}: {m}", t.get(11..23).unwrap_or(t)),
            _ => println!("{v}"),
        }
    };
    let mut offset: Option<u64> = None;
    loop {
        let v = call(json!({"op": "logs", "name": name, "offset": offset}))?;
        if offset.is_none() && v["started"] == false && !follow {
            anyhow::bail!("container {name} has no log yet: has it been started (`tessera container start {name}`)?");
        }
        let lines = v["lines"].as_array().cloned().unwrap_or_default();
        lines.iter().for_each(print);
        offset = Some(v["offset"].as_u64().unwrap_or(0));
        if lines.is_empty() {
            // Drained: done, unless following a container that still runs.
            if !follow || v["running"] != true {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// `HOST:CONTAINER[/tcp|/udp]@SCOPE` (`tessera container create -p`).
fn parse_publish(s: &str) -> Result<crate::instances::Port, String> {
    let usage = || {
        format!("{s:?}: write HOST:CONTAINER[/udp]@SCOPE, e.g. 8080:80@cluster (scopes: node-local, cluster, public)")
    };
    let (ports, scope) = s.split_once('@').ok_or_else(usage)?;
    let (ports, protocol) = match ports.split_once('/') {
        Some((p, proto)) => (p, proto),
        None => (ports, "tcp"),
    };
    let (host, container) = ports.split_once(':').ok_or_else(usage)?;
    let port = |p: &str| p.parse::<u16>().ok().filter(|n| *n != 0).ok_or_else(usage);
    let value = serde_json::json!({
        "host": port(host)?, "container": port(container)?, "protocol": protocol, "scope": scope,
    });
    serde_json::from_value(value).map_err(|e| format!("{}: {e}", usage()))
}

#[cfg(test)]
mod publish_tests {
    use super::parse_publish;
    use tessera_userdata::schema::{PortProtocol, PortScope};

    #[test]
    fn exits_become_shell_statuses() {
        assert_eq!(super::shell_status(&serde_json::json!({"code": 3})), 3);
        assert_eq!(
            super::shell_status(&serde_json::json!({"signal": 9, "oom_killed": true})),
            137
        );
        assert_eq!(super::shell_status(&serde_json::Value::Null), 1);
    }

    #[test]
    fn publish_flags_parse_and_bad_ones_say_the_form() {
        let p = parse_publish("8080:80@cluster").unwrap();
        assert_eq!(
            (p.host, p.container, p.protocol, p.scope),
            (8080, 80, PortProtocol::Tcp, PortScope::Cluster)
        );
        let p = parse_publish("5353:53/udp@node-local").unwrap();
        assert_eq!(
            (p.protocol, p.scope),
            (PortProtocol::Udp, PortScope::NodeLocal)
        );
        for bad in [
            "8080:80",
            "8080@public",
            "0:80@public",
            "8080:80/sctp@public",
            "8080:80@world",
            "x:80@public",
        ] {
            let e = parse_publish(bad).unwrap_err();
            assert!(e.contains("HOST:CONTAINER"), "{bad}: {e}");
        }
    }
}
