//! `tessera vm run`: boot an image in QEMU, stream the console, optionally type a script
//! into the guest shell, and exit with the VM's fate (0 powered off, 1 failed, 2 timed out).

mod progress;
pub mod script;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tessera_common::paths::{INIT_LINE_PREFIX, READY_LINE_PREFIX, SHUTDOWN_LINE_PREFIX};

use crate::config::{Accel, BootMode, Machine, PortForward, VmConfig, DEFAULT_QEMU};
use crate::error::VmError;
use crate::kv::{kv_u64, parse_kv_line};
use crate::vm::{default_log_path, run_on_terminal, ExitReason, Vm, VmExit};
use progress::Progress;
use script::Shutdown;

/// Default of `--timeout` when the console is captured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// How often waits wake up to refresh the progress line.
const TICK: Duration = Duration::from_millis(250);

/// Stands for "no deadline" where a duration is needed (`--timeout 0`).
const NO_DEADLINE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Exit statuses of `tessera vm run`.
pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_TIMEOUT: u8 = 2;

#[derive(Debug, clap::Subcommand)]
pub enum VmCommand {
    /// Boot an image in QEMU and follow its console until the guest powers off.
    ///
    /// Exit status: 0 guest powered off cleanly, 1 failure (kernel panic, QEMU error,
    /// unexpected reboot, failed script command), 2 timeout (QEMU killed).
    Run(RunArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// How to boot: kernel (direct), pxe (iPXE over TFTP), disk (UEFI from disk.qcow2).
    #[arg(long, value_enum, default_value_t = BootMode::Kernel)]
    pub boot: BootMode,
    /// Image directory made by `tessera image build`.
    #[arg(long, value_name = "DIR", default_value = "out")]
    pub image: PathBuf,
    #[arg(long, value_name = "MB", default_value_t = 512)]
    pub memory: u32,
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cpus: u32,
    /// Extra kernel argument (repeatable; kernel and pxe boots only).
    #[arg(long, value_name = "ARG")]
    pub append: Vec<String>,
    /// Extra data disk, attached as virtio (repeatable; `.qcow2` is qcow2, else raw).
    #[arg(long, value_name = "FILE")]
    pub disk: Vec<PathBuf>,
    /// User-data (TOML, see the README) handed to the node on a NoCloud CIDATA volume, attached
    /// after the `--disk`s.
    #[arg(long, value_name = "FILE")]
    pub user_data: Option<PathBuf>,
    /// Forward host TCP port (on 127.0.0.1) to a guest port (repeatable).
    #[arg(long, value_name = "HOST:GUEST")]
    pub forward: Vec<PortForward>,
    /// Console log file [default: <image>/vm-<boot>.log].
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Give up (and kill QEMU) after this long, e.g. 90s or 5m; 0 means never
    /// [default: 10m; none with --interactive].
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
    /// Command typed into the guest shell after TESSERA-READY (repeatable, in order);
    /// `tessera poweroff` is typed last unless the last command powers off or reboots.
    #[arg(long, value_name = "CMD")]
    pub script: Vec<String>,
    /// Attach the console to this terminal (Ctrl-A X quits QEMU, Ctrl-A C its monitor).
    #[arg(long, conflicts_with = "script")]
    pub interactive: bool,
    #[arg(long, value_enum, default_value_t = Machine::Q35)]
    pub machine: Machine,
    /// CPU emulation; KVM only where it works.
    #[arg(long, value_enum, default_value_t = Accel::Tcg)]
    pub accel: Accel,
    /// QEMU binary.
    #[arg(long, value_name = "PATH", env = "TESSERA_QEMU", default_value = DEFAULT_QEMU)]
    pub qemu: PathBuf,
    /// Print the QEMU command line on stderr before starting.
    #[arg(long)]
    pub print_command: bool,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration like 90s or 5m: {e}"))
}

impl RunArgs {
    pub fn config(&self) -> VmConfig {
        let mut cfg = VmConfig::new(self.boot, &self.image);
        cfg.memory_mb = self.memory;
        cfg.cpus = self.cpus;
        cfg.append = self.append.clone();
        cfg.disks = self.disk.clone();
        cfg.forwards = self.forward.clone();
        cfg.log_file = Some(self.log_path());
        cfg.name = format!("tessera-{}", self.boot);
        cfg.machine = self.machine;
        cfg.accel = self.accel;
        cfg.qemu_binary = self.qemu.clone();
        cfg
    }

    pub fn log_path(&self) -> PathBuf {
        self.log
            .clone()
            .unwrap_or_else(|| default_log_path(&self.image, self.boot))
    }

    /// The effective timeout: None means wait forever.
    fn deadline_after(&self) -> Option<Duration> {
        let t = match self.timeout {
            Some(t) => t,
            None if self.interactive => return None,
            None => DEFAULT_TIMEOUT,
        };
        (!t.is_zero()).then_some(t)
    }
}

/// Entry point used by the `tessera` binary.
pub fn run(cmd: VmCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        VmCommand::Run(args) => {
            let outcome = run_vm(&args, true)?;
            eprintln!("{}", outcome.summary);
            Ok(ExitCode::from(outcome.code))
        }
    }
}

/// What `tessera vm run` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Process exit status: `EXIT_OK`, `EXIT_FAILED` or `EXIT_TIMEOUT`.
    pub code: u8,
    /// One line: mode, ready time, exit reason, log path.
    pub summary: String,
    pub exit: Option<VmExit>,
    /// `uptime_ms` and `userspace_ms` of the READY line.
    pub ready_uptime_ms: Option<u64>,
    pub userspace_ms: Option<u64>,
}

/// What the boot got to, for the summary.
#[derive(Debug, Default)]
struct Seen {
    init_uptime_ms: Option<u64>,
    ready: Option<std::collections::BTreeMap<String, String>>,
    failed_commands: Vec<(String, i32)>,
    expect_reboot: bool,
    timed_out_in: Option<String>,
    error: Option<String>,
}

/// With `--user-data`, builds the NoCloud seed in a temporary directory (kept while the VM
/// runs) and attaches it.
fn attach_user_data(
    args: &RunArgs,
    cfg: &mut VmConfig,
) -> Result<Option<tempfile::TempDir>, VmError> {
    let Some(path) = &args.user_data else {
        return Ok(None);
    };
    let doc = std::fs::read_to_string(path).map_err(|source| VmError::Io {
        action: format!(
            "reading the user-data {} (a TOML file; see the README's user-data schema)",
            path.display()
        ),
        source,
    })?;
    let dir = tempfile::tempdir().map_err(|source| VmError::Io {
        action: "creating a directory for the NoCloud seed".into(),
        source,
    })?;
    cfg.disks.push(crate::seed::nocloud(dir.path(), &doc)?);
    Ok(Some(dir))
}

/// Runs the VM; `echo_console` copies the console to stdout.
pub fn run_vm(args: &RunArgs, echo_console: bool) -> Result<Outcome, VmError> {
    let mut cfg = args.config();
    let _seed = attach_user_data(args, &mut cfg)?;
    let deadline = args.deadline_after().map(crate::console::deadline_after);
    if args.interactive {
        return run_interactive(args, &cfg);
    }
    let progress = Progress::new(echo_console);
    let echo = progress.clone();
    let mut vm = Vm::start_with_echo(&cfg, Some(Box::new(move |b: &[u8]| echo.console(b))))?;
    if args.print_command {
        progress.message(vm.command_line());
    }
    let mut seen = Seen::default();
    let ended = drive(&mut vm, args, &progress, deadline, &mut seen);
    if let Err(e) = ended {
        seen.error = Some(e);
    }
    // Then wait for QEMU to exit on its own (the guest powers off), or time out.
    progress.phase("waiting for the guest to power off");
    let exit = loop {
        if seen.timed_out_in.is_some() {
            vm.kill();
            break vm.wait_exit(Duration::from_secs(10)).ok();
        }
        match vm.wait_exit(TICK) {
            Ok(exit) => break Some(exit),
            Err(_) if past(deadline) => seen.timed_out_in = Some("waiting for power-off".into()),
            Err(_) => progress.tick(),
        }
    };
    progress.finish();
    Ok(outcome(args, &seen, exit, &vm))
}

/// Boot → init → ready → script. Returns early (Ok) when the VM ends or time runs out, with
/// `seen` saying how far it got; Err carries a failure message worth showing.
fn drive(
    vm: &mut Vm,
    args: &RunArgs,
    progress: &Progress,
    deadline: Option<Instant>,
    seen: &mut Seen,
) -> Result<(), String> {
    progress.phase(format!("booting ({})", args.boot));
    let Some(init) = wait_step(vm, progress, INIT_LINE_PREFIX, deadline, seen)? else {
        return Ok(());
    };
    seen.init_uptime_ms = kv_u64(&parse_kv_line(&init), "uptime_ms");
    progress.phase("PID 1 started, waiting for services");
    let Some(ready) = wait_step(vm, progress, READY_LINE_PREFIX, deadline, seen)? else {
        return Ok(());
    };
    let ready = parse_kv_line(&ready);
    progress.message(&ready_message(&ready, vm.elapsed()));
    seen.ready = Some(ready);
    if args.script.is_empty() {
        return Ok(());
    }
    run_script(vm, args, progress, deadline, seen)
}

fn run_script(
    vm: &mut Vm,
    args: &RunArgs,
    progress: &Progress,
    deadline: Option<Instant>,
    seen: &mut Seen,
) -> Result<(), String> {
    progress.phase("waiting for the guest shell");
    // Commands run in one go each; progress ticks between them only.
    let left = || deadline.map_or(NO_DEADLINE, |d| d.saturating_duration_since(Instant::now()));
    match vm.wait_for_shell(left()) {
        Ok(()) => {}
        Err(VmError::Timeout { .. }) => {
            seen.timed_out_in = Some("waiting for the guest shell".into());
            return Ok(());
        }
        Err(VmError::KernelPanic { .. }) | Err(VmError::Exited { .. }) => return Ok(()),
        Err(e) => return Err(e.to_string()),
    }
    let cmds = script::with_final_poweroff(&args.script);
    let total = cmds.len();
    for (i, cmd) in cmds.iter().enumerate() {
        let n = i + 1;
        progress.phase(format!("script {n}/{total}: {cmd}"));
        if let Some(kind) = script::shutdown_kind(cmd) {
            vm.send_line(cmd).map_err(|e| e.to_string())?;
            seen.expect_reboot = kind == Shutdown::Reboot;
            if n < total {
                progress.message(&format!(
                    "`{cmd}` ends the guest: the {} command(s) after it are not run",
                    total - n
                ));
            }
            return Ok(());
        }
        match vm.run_command_status(cmd, left()) {
            Ok(out) if out.status == 0 => {}
            Ok(out) => {
                progress.message(&format!("`{cmd}` failed with exit status {}", out.status));
                seen.failed_commands.push((cmd.clone(), out.status));
            }
            Err(VmError::Timeout { .. }) => {
                seen.timed_out_in = Some(format!("running `{cmd}`"));
                return Ok(());
            }
            Err(VmError::KernelPanic { .. }) | Err(VmError::Exited { .. }) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// Waits for `needle` while refreshing progress. Ok(None): time ran out (recorded in
/// `seen`) or the VM ended; Err: a failure to report (panic, QEMU exit before the line).
fn wait_step(
    vm: &Vm,
    progress: &Progress,
    needle: &str,
    deadline: Option<Instant>,
    seen: &mut Seen,
) -> Result<Option<String>, String> {
    loop {
        match vm.wait_for(needle, TICK) {
            Ok(line) => return Ok(Some(line)),
            Err(VmError::Timeout { .. }) => {
                if past(deadline) {
                    seen.timed_out_in = Some(format!("waiting for {needle}"));
                    return Ok(None);
                }
                progress.tick();
            }
            // The exit classification reports panics and early exits; no need to repeat.
            Err(VmError::KernelPanic { .. }) | Err(VmError::Exited { .. }) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn past(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

fn ready_message(ready: &std::collections::BTreeMap<String, String>, wall: Duration) -> String {
    let mut msg = match kv_u64(ready, "uptime_ms") {
        Some(ms) => format!("ready in {:.2} s guest uptime", ms as f64 / 1000.0),
        None => "ready".to_string(),
    };
    if let Some(us) = kv_u64(ready, "userspace_ms") {
        msg.push_str(&format!(" (userspace {us} ms)"));
    }
    if let Some(n) = kv_u64(ready, "services") {
        msg.push_str(&format!(", {n} services"));
    }
    match kv_u64(ready, "failed") {
        Some(0) | None => {}
        Some(k) => msg.push_str(&format!(", {k} FAILED")),
    }
    msg.push_str(&format!(", {:.1} s wall", wall.as_secs_f64()));
    msg
}

fn outcome(args: &RunArgs, seen: &Seen, exit: Option<VmExit>, vm: &Vm) -> Outcome {
    let ready_uptime_ms = seen.ready.as_ref().and_then(|r| kv_u64(r, "uptime_ms"));
    let userspace_ms = seen.ready.as_ref().and_then(|r| kv_u64(r, "userspace_ms"));
    let (code, how) = match (&seen.timed_out_in, &exit) {
        (Some(phase), _) => {
            let t = args.deadline_after().unwrap_or_default();
            (
                EXIT_TIMEOUT,
                format!(
                    "timed out after {} {phase} (QEMU killed)",
                    humantime::format_duration(t)
                ),
            )
        }
        (None, None) => (EXIT_FAILED, "QEMU did not exit after being killed".into()),
        (None, Some(exit)) => {
            let clean = exit.is_clean_poweroff()
                || (exit.reason == ExitReason::Reboot
                    && seen.expect_reboot
                    && exit.code == Some(0));
            let mut how = exit.describe();
            match &exit.shutdown_mode {
                Some(m) => how.push_str(&format!(" ({SHUTDOWN_LINE_PREFIX} mode={m})")),
                None if exit.reason == ExitReason::PowerOff => {
                    how.push_str(&format!(" (no {SHUTDOWN_LINE_PREFIX} line)"))
                }
                None => {}
            }
            if exit.reason == ExitReason::Reboot && !seen.expect_reboot {
                how.push_str(", unexpected");
            }
            if !seen.failed_commands.is_empty() {
                let list: Vec<String> = seen
                    .failed_commands
                    .iter()
                    .map(|(c, rc)| format!("`{c}` rc={rc}"))
                    .collect();
                how.push_str(&format!("; script failed: {}", list.join(", ")));
            }
            if let Some(e) = &seen.error {
                how.push_str(&format!("; {e}"));
            }
            if !exit.stderr.trim().is_empty() && !clean {
                how.push_str(&format!("; QEMU said: {}", exit.stderr.trim()));
            }
            let ok = clean && seen.failed_commands.is_empty() && seen.error.is_none();
            (if ok { EXIT_OK } else { EXIT_FAILED }, how)
        }
    };
    let ready = match (ready_uptime_ms, seen.init_uptime_ms) {
        (Some(ms), _) => format!(
            "ready at {:.2} s guest uptime (userspace {} ms)",
            ms as f64 / 1000.0,
            userspace_ms.map_or("?".into(), |u| u.to_string())
        ),
        (None, Some(ms)) => format!("PID 1 started at {ms} ms but never ready"),
        (None, None) => "PID 1 never started".into(),
    };
    let summary = format!(
        "[vm] {} boot: {how}; {ready}; wall {:.1} s; console log {}",
        args.boot,
        vm.elapsed().as_secs_f64(),
        args.log_path().display()
    );
    Outcome {
        code,
        summary,
        exit,
        ready_uptime_ms,
        userspace_ms,
    }
}

fn run_interactive(args: &RunArgs, cfg: &VmConfig) -> Result<Outcome, VmError> {
    eprintln!(
        "[vm] {} boot, console on this terminal: Ctrl-A X quits, Ctrl-A C toggles the QEMU monitor",
        args.boot
    );
    let exit = run_on_terminal(cfg, args.deadline_after())?;
    // Ctrl-A X is the user's way out: QEMU 7.2 exits 0 with a `host-qmp-quit` SHUTDOWN reason.
    let (code, how) = match (exit.reason, exit.qemu_shutdown_reason.as_deref()) {
        (ExitReason::Killed, _) if exit.signal == Some(libc::SIGKILL) => {
            (EXIT_TIMEOUT, "timed out (QEMU killed)".to_string())
        }
        (ExitReason::PowerOff | ExitReason::Killed, r) if exit.code == Some(0) => match r {
            Some("host-ui" | "host-qmp-quit") | None => {
                (EXIT_OK, "QEMU quit (Ctrl-A X)".to_string())
            }
            Some(r) if r.starts_with("host-") => (EXIT_OK, format!("QEMU stopped ({r})")),
            _ => (EXIT_OK, exit.describe()),
        },
        _ => (EXIT_FAILED, exit.describe()),
    };
    let summary = format!(
        "[vm] {} boot (interactive): {how}; wall {:.1} s; console log {}",
        args.boot,
        exit.elapsed.as_secs_f64(),
        args.log_path().display()
    );
    Ok(Outcome {
        code,
        summary,
        exit: Some(exit),
        ready_uptime_ms: None,
        userspace_ms: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        vm: VmCommand,
    }

    fn parse(args: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(std::iter::once("vm").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{e}"));
        let VmCommand::Run(r) = cli.vm;
        r
    }

    #[test]
    fn defaults_are_kernel_boot_of_out_with_a_ten_minute_timeout() {
        let r = parse(&["run"]);
        assert_eq!(r.boot, BootMode::Kernel);
        assert_eq!(r.image, PathBuf::from("out"));
        assert_eq!(r.log_path(), PathBuf::from("out/vm-kernel.log"));
        assert_eq!(r.deadline_after(), Some(DEFAULT_TIMEOUT));
        let cfg = r.config();
        assert_eq!((cfg.memory_mb, cfg.cpus), (512, 1));
    }

    #[test]
    fn repeatable_flags_collect_in_order() {
        let r = parse(&[
            "run",
            "--boot",
            "pxe",
            "--image",
            "img",
            "--append",
            "a=1",
            "--append",
            "b=2",
            "--disk",
            "d1.qcow2",
            "--disk",
            "d2.img",
            "--forward",
            "2222:22",
            "--script",
            "tessera status",
            "--script",
            "uname -a",
            "--memory",
            "1024",
            "--cpus",
            "2",
        ]);
        let cfg = r.config();
        assert_eq!(cfg.boot, BootMode::Pxe);
        assert_eq!(cfg.append, ["a=1", "b=2"]);
        assert_eq!(
            cfg.disks,
            [PathBuf::from("d1.qcow2"), PathBuf::from("d2.img")]
        );
        assert_eq!(
            cfg.forwards,
            [PortForward {
                host: 2222,
                guest: 22
            }]
        );
        assert_eq!(r.script, ["tessera status", "uname -a"]);
        assert_eq!(cfg.log_file, Some(PathBuf::from("img/vm-pxe.log")));
        assert_eq!((cfg.memory_mb, cfg.cpus), (1024, 2));
    }

    #[test]
    fn timeout_accepts_humantime_and_zero_means_none() {
        assert_eq!(
            parse(&["run", "--timeout", "90s"]).deadline_after(),
            Some(Duration::from_secs(90))
        );
        assert_eq!(parse(&["run", "--timeout", "0"]).deadline_after(), None);
        assert_eq!(parse(&["run", "--interactive"]).deadline_after(), None);
        assert!(Cli::try_parse_from(["vm", "run", "--timeout", "soon"]).is_err());
    }

    #[test]
    fn interactive_conflicts_with_script() {
        assert!(Cli::try_parse_from(["vm", "run", "--interactive", "--script", "ls"]).is_err());
    }
}
