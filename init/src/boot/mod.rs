//! Early boot, before any service runs: a short list of named steps. A failing step is
//! reported (console, log, `tessera status`) and the boot goes on — PID 1 never gives up.

pub mod modules;
pub mod mounts;
pub mod rng;

use crate::supervisor::logs::LogHub;
use std::time::Instant;
use tessera_common::cmdline::{KernelArgs, KNOWN_KEYS};
use tessera_common::log::{Level, LogEvent};
use tessera_common::paths;

/// What early boot learned and what went wrong.
#[derive(Default)]
pub struct Boot {
    pub args: KernelArgs,
    pub problems: Vec<String>,
}

type Step = fn(&mut Boot, &LogHub) -> Result<(), String>;

/// The boot sequence, in order.
const STEPS: &[(&str, Step)] = &[
    ("mount", |_, hub| mounts::mount_all(hub)),
    ("console", |_, _| mounts::attach_console()),
    ("kernel-args", read_kernel_args),
    ("hostname", set_hostname),
    ("modules", load_modules),
    ("rng", |_, hub| rng::seed(hub)),
    ("ctrl-alt-del", |_, _| disable_ctrl_alt_del()),
];

pub fn run(hub: &LogHub) -> Boot {
    let mut boot = Boot::default();
    for (name, step) in STEPS {
        let t = Instant::now();
        let result = step(&mut boot, hub);
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok(()) => hub.push(
                LogEvent::new("init", Level::Debug, "boot step done")
                    .field("step", *name)
                    .field("ms", (ms * 10.0).round() / 10.0),
            ),
            Err(e) => {
                hub.push(
                    LogEvent::new("init", Level::Error, "boot step failed")
                        .field("step", *name)
                        .field("error", e.clone()),
                );
                boot.problems.push(format!("boot step {name}: {e}"));
            }
        }
    }
    boot
}

fn read_kernel_args(boot: &mut Boot, hub: &LogHub) -> Result<(), String> {
    boot.args = KernelArgs::from_proc().map_err(|e| format!("cannot read /proc/cmdline: {e}"))?;
    for key in &boot.args.unknown {
        let known: Vec<String> = KNOWN_KEYS
            .iter()
            .map(|(k, _)| format!("tessera.{k}"))
            .collect();
        hub.push(
            LogEvent::new("init", Level::Warn, "unknown kernel argument ignored")
                .field("argument", key.clone())
                .field("known", known.join(" ")),
        );
    }
    Ok(())
}

/// RFC 1123 host name: labels of letters, digits and '-', not starting or ending with '-'.
pub fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn set_hostname(boot: &mut Boot, hub: &LogHub) -> Result<(), String> {
    let wanted = boot.args.get("hostname").filter(|h| !h.is_empty());
    let name = match wanted {
        Some(h) if valid_hostname(h) => h,
        Some(h) => {
            let msg = format!("tessera.hostname={h:?} is not a valid host name (letters, digits, '-' and '.', at most 64); using {:?}", paths::DEFAULT_HOSTNAME);
            hub.push(LogEvent::new("init", Level::Warn, &msg));
            boot.problems.push(msg);
            paths::DEFAULT_HOSTNAME
        }
        None => paths::DEFAULT_HOSTNAME,
    };
    nix::unistd::sethostname(name).map_err(|e| format!("sethostname({name}): {e}"))?;
    hub.push(LogEvent::new("init", Level::Info, "hostname set").field("hostname", name));
    Ok(())
}

fn load_modules(boot: &mut Boot, hub: &LogHub) -> Result<(), String> {
    let extra: Vec<String> = boot
        .args
        .get("modules")
        .map(|m| {
            m.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let problems = modules::load_boot_modules(hub, &extra);
    if problems.is_empty() {
        return Ok(());
    }
    let count = problems.len();
    boot.problems.extend(problems);
    Err(format!("{count} module(s) could not be loaded (see above)"))
}

/// The kernel then sends SIGINT to PID 1 on Ctrl-Alt-Del, which becomes an orderly reboot.
fn disable_ctrl_alt_del() -> Result<(), String> {
    nix::sys::reboot::set_cad_enabled(false)
        .map_err(|e| format!("cannot disable Ctrl-Alt-Del: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn hostnames_are_checked() {
        assert!(super::valid_hostname("node1.example"));
        assert!(!super::valid_hostname("bad_name"));
        assert!(!super::valid_hostname("-x"));
        assert!(!super::valid_hostname(""));
        assert!(!super::valid_hostname(&"a".repeat(65)));
    }
}
