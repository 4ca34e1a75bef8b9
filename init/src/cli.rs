//! The CLI verbs that talk to a running PID 1 over its control socket: `status`, `logs`,
//! `service`, `poweroff`/`reboot`/`halt`, and `notify` (sd_notify from shell services).

use anyhow::{anyhow, bail, Context};
use std::path::Path;
use std::time::{Duration, Instant};
use tessera_common::control::{
    Client, Reply, Request, ServiceAction, ServiceState, ShutdownMode, Status,
};
use tessera_common::log::LogEvent;

fn status_of(socket: &Path) -> anyhow::Result<Status> {
    match Client::call(socket, &Request::Status)? {
        Reply::Status(s) => Ok(s),
        other => Err(anyhow!("unexpected reply to status: {other:?}")),
    }
}

pub fn status(socket: &Path, json: bool) -> anyhow::Result<()> {
    let s = status_of(socket)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    print!("{}", render_status(&s));
    Ok(())
}

pub fn render_status(s: &Status) -> String {
    let n = &s.node;
    let mut out = format!("node {}  {}", n.hostname, n.state);
    if let Some(r) = &n.reason {
        out.push_str(&format!(" ({r})"));
    }
    out.push_str(&format!("  up {:.1}s", n.uptime_ms as f64 / 1000.0));
    if let Some(ms) = n.ready_userspace_ms {
        out.push_str(&format!("  ready {ms} ms after PID 1 start"));
    }
    out.push_str(&format!(
        "  {} RSS {:.1} MiB  kernel {}\n",
        if n.pid1 { "PID 1" } else { "supervisor" },
        n.rss_kib as f64 / 1024.0,
        n.kernel
    ));
    let rows: Vec<[String; 6]> = s
        .services
        .iter()
        .map(|v| {
            let detail = [v.status.as_deref(), v.reason.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("; ");
            [
                v.name.clone(),
                v.kind.clone(),
                v.state.as_str().into(),
                v.pid.map(|p| p.to_string()).unwrap_or("-".into()),
                v.restarts.to_string(),
                detail,
            ]
        })
        .collect();
    let header = ["SERVICE", "KIND", "STATE", "PID", "RESTARTS", "DETAIL"].map(String::from);
    let widths: Vec<usize> = (0..5)
        .map(|i| {
            rows.iter()
                .chain([&header])
                .map(|r| r[i].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in [&header].into_iter().chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i < 5 {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for p in &n.problems {
        out.push_str(&format!("problem: {p}\n"));
    }
    out
}

pub fn logs(
    socket: &Path,
    follow: bool,
    tail: Option<usize>,
    json: bool,
    service: Option<String>,
) -> anyhow::Result<()> {
    let mut client = Client::send(
        socket,
        &Request::Logs {
            follow,
            service,
            tail,
        },
    )?;
    while let Some(reply) = client.next_reply()? {
        if let Reply::Event(e) = reply {
            print_event(&e, json)?;
        }
    }
    Ok(())
}

fn print_event(e: &LogEvent, json: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let line = if json {
        serde_json::to_string(e)?
    } else {
        e.human()
    };
    // A closed pipe (`tessera logs | head`) ends the command quietly.
    if writeln!(out, "{line}").is_err() {
        std::process::exit(0);
    }
    Ok(())
}

/// Starts/stops/restarts a service and, unless `no_wait`, waits until it got there.
pub fn service(
    socket: &Path,
    action: ServiceAction,
    name: &str,
    no_wait: bool,
) -> anyhow::Result<()> {
    match Client::call(
        socket,
        &Request::Service {
            action,
            name: name.to_string(),
        },
    )? {
        Reply::Done { message } => println!("{message}"),
        other => bail!("unexpected reply: {other:?}"),
    }
    if no_wait {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status_of(socket)?;
        let svc = s
            .services
            .iter()
            .find(|v| v.name == name)
            .with_context(|| format!("service {name} vanished"))?;
        let done = match action {
            ServiceAction::Stop => matches!(
                svc.state,
                ServiceState::Stopped | ServiceState::Failed | ServiceState::Done
            ),
            _ => matches!(svc.state, ServiceState::Ready | ServiceState::Done),
        };
        if done {
            println!("{name}: {}", svc.state.as_str());
            return Ok(());
        }
        if svc.state == ServiceState::Failed {
            bail!(
                "{name} failed: {}. See `tessera logs {name}`",
                svc.reason.as_deref().unwrap_or("no reason recorded")
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{name} is still {} after 60 s; see `tessera logs {name}`",
                svc.state.as_str()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn shutdown(socket: &Path, mode: ShutdownMode) -> anyhow::Result<()> {
    match Client::call(socket, &Request::Shutdown { mode })? {
        Reply::Done { message } => {
            println!("{message}");
            Ok(())
        }
        other => bail!("unexpected reply: {other:?}"),
    }
}

pub fn notify(
    mut assignments: Vec<String>,
    ready: bool,
    status: Option<String>,
) -> anyhow::Result<()> {
    if ready {
        assignments.push("READY=1".into());
    }
    if let Some(s) = status {
        assignments.push(format!("STATUS={s}"));
    }
    if assignments.is_empty() {
        bail!(
            "nothing to send: give KEY=VALUE pairs, e.g. `tessera notify READY=1 STATUS=serving`"
        );
    }
    tessera_common::notify::notify(&assignments)?;
    Ok(())
}

/// `tessera modprobe` (and `/sbin/modprobe`, run by the kernel for `request_module()`):
/// loads a module, by name or alias, after its dependencies.
pub fn modprobe(quiet: bool, name: &str, params: &[String]) -> anyhow::Result<()> {
    let index = crate::kmod::ModuleIndex::for_running_kernel();
    match index.modprobe(name, &params.join(" ")).map_err(|e| anyhow!(e))? {
        crate::kmod::Outcome::Loaded(mods) if !quiet => println!("loaded {}", mods.join(" ")),
        crate::kmod::Outcome::Builtin if !quiet => println!("{name} is built into the kernel"),
        crate::kmod::Outcome::NotFound if quiet => std::process::exit(1),
        crate::kmod::Outcome::NotFound => bail!("module {name} not found in {}: it is neither shipped in the image nor built in (add it to image/modules.toml)", index.dir().display()),
        _ => {}
    }
    Ok(())
}
