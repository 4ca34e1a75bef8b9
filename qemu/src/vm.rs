//! A running VM: starts QEMU with its console captured, waits for console lines, types into
//! the console, and says how the VM ended.

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tessera_common::paths::SHUTDOWN_LINE_PREFIX;

use crate::args::{self, ConsoleMode};
use crate::config::VmConfig;
use crate::console::{self, Console, ConsoleLine, Echo, Wait, TAIL_LINES};
use crate::error::VmError;
use crate::kv::parse_kv_line;
use crate::process::{self, QemuProcess};
use crate::qmp::{self, QmpReport};
use crate::shell;

/// What the kernel prints (always, even with `quiet`) as it halts, powers off or restarts.
const KERNEL_HALTED: &str = "reboot: System halted";
const KERNEL_RESTARTING: &str = "reboot: Restarting system";

/// After a halt the guest idles forever; QEMU is stopped after this grace.
const HALT_GRACE: Duration = Duration::from_secs(1);

/// Console lines quoted before a kernel panic line (what the guest did just before).
const PANIC_LINES_BEFORE: usize = 10;

/// How long to wait for the console shell to answer a probe before typing it again.
const SHELL_PROBE_RETRY: Duration = Duration::from_secs(3);

/// Most of QEMU's stderr kept for error messages.
const STDERR_LIMIT: usize = 16 * 1024;

/// How the VM ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest powered off (QEMU exited 0 on a guest shutdown).
    PowerOff,
    /// The guest reset; `-no-reboot` turned it into QEMU exiting.
    Reboot,
    /// The guest halted; the runner then stopped QEMU.
    Halt,
    /// A kernel panic (on the console or reported by QMP).
    KernelPanic,
    /// QEMU itself failed (non-zero exit status).
    QemuError,
    /// QEMU was killed (by the runner after a timeout, or by a signal from elsewhere).
    Killed,
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExitReason::PowerOff => "powered off",
            ExitReason::Reboot => "rebooted",
            ExitReason::Halt => "halted",
            ExitReason::KernelPanic => "kernel panic",
            ExitReason::QemuError => "QEMU failed",
            ExitReason::Killed => "killed",
        })
    }
}

/// The end of a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmExit {
    pub reason: ExitReason,
    /// QEMU's exit code (None when it died of a signal).
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// `mode=` of the guest's `TESSERA-SHUTDOWN` line, if it printed one.
    pub shutdown_mode: Option<String>,
    /// `reason` of QEMU's SHUTDOWN event (`guest-shutdown`, `guest-reset`, ...), if QMP
    /// reported one; None when QEMU quit without one (e.g. Ctrl-A X) or QMP was unreachable.
    pub qemu_shutdown_reason: Option<String>,
    /// Wall time from start to exit.
    pub elapsed: Duration,
    /// QEMU's diagnostics (stderr), minus known harmless warnings.
    pub stderr: String,
}

impl VmExit {
    /// The guest powered off on its own and QEMU exited cleanly.
    pub fn is_clean_poweroff(&self) -> bool {
        self.reason == ExitReason::PowerOff && self.code == Some(0)
    }

    /// One phrase for messages: "powered off", "QEMU failed (exit code 1)", ...
    pub fn describe(&self) -> String {
        match (self.reason, self.code, self.signal) {
            (ExitReason::QemuError, Some(c), _) => format!("QEMU failed (exit code {c})"),
            (ExitReason::Killed, _, Some(s)) => format!("killed (signal {s})"),
            (r, _, _) => r.to_string(),
        }
    }
}

/// What a command run on the console shell printed, and its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// The output lines, joined with newlines (console output is stdout and stderr mixed).
    pub output: String,
    pub status: i32,
}

/// Facts gathered when QEMU has exited, turned into an `ExitReason` by `classify`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExitFacts {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub killed_by_runner: bool,
    pub qmp: QmpReport,
    pub console_panic: bool,
    pub console_halted: bool,
    pub console_restarting: bool,
    pub shutdown_mode: Option<String>,
}

/// Decides why the VM ended. A panic wins over everything (a panicking kernel with
/// `panic=-1` resets, which looks like a reboot otherwise); QMP's SHUTDOWN reason is trusted
/// over console lines because it also sees resets the kernel did not announce.
pub fn classify(f: &ExitFacts) -> ExitReason {
    let qmp_reason = f.qmp.shutdown_reason.as_deref();
    let mode = f.shutdown_mode.as_deref();
    if f.console_panic || f.qmp.guest_panicked || qmp_reason == Some("guest-panic") {
        ExitReason::KernelPanic
    } else if f.killed_by_runner {
        if f.console_halted || mode == Some("halt") {
            ExitReason::Halt
        } else {
            ExitReason::Killed
        }
    } else if f.signal.is_some() {
        ExitReason::Killed
    } else if f.code != Some(0) {
        ExitReason::QemuError
    } else if qmp_reason == Some("guest-reset")
        || (qmp_reason.is_none() && (f.console_restarting || mode == Some("reboot")))
    {
        ExitReason::Reboot
    } else if matches!(qmp_reason, Some(r) if r.starts_with("host-")) {
        ExitReason::Killed
    } else {
        ExitReason::PowerOff
    }
}

/// A running QEMU. Dropping it kills QEMU.
pub struct Vm {
    config: VmConfig,
    process: QemuProcess,
    stdin: Mutex<Option<std::process::ChildStdin>>,
    console: Arc<Console>,
    stderr: Arc<Mutex<String>>,
    qmp: Arc<Mutex<QmpReport>>,
    qmp_commands: qmp::QmpCommands,
    threads: Vec<JoinHandle<()>>,
    started: Instant,
    command_line: String,
    exit: Option<VmExit>,
    /// Numbers the markers of console commands.
    next_command: AtomicU32,
    shell_ready: AtomicBool,
    // Holds the QMP socket, the UEFI variable store and the TFTP root until QEMU is gone.
    _runtime_dir: tempfile::TempDir,
}

impl Vm {
    /// Starts QEMU for `cfg` with the serial console captured.
    pub fn start(cfg: &VmConfig) -> Result<Vm, VmError> {
        Vm::start_with_echo(cfg, None)
    }

    /// Like `start`, and passes the cleaned console stream to `echo` as it arrives.
    pub fn start_with_echo(cfg: &VmConfig, echo: Option<Echo>) -> Result<Vm, VmError> {
        let runtime_dir = runtime_dir()?;
        let prepared = args::prepare(cfg, runtime_dir.path(), ConsoleMode::Captured)?;
        let qemu_args = args::qemu_args(cfg, &prepared);
        let log = match &cfg.log_file {
            Some(path) => Some(open_log(path)?),
            None => None,
        };
        let mut cmd = qemu_command(cfg);
        cmd.args(&qemu_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let spawned = process::spawn(cmd).map_err(|e| spawn_error(&cfg.qemu_binary, e))?;

        let console = Arc::new(Console::new(started));
        let stderr: Arc<Mutex<String>> = Arc::default();
        let mut threads = Vec::new();
        if let Some(out) = spawned.stdout {
            let t = console::spawn_reader(out, console.clone(), log, echo)
                .map_err(|e| VmError::io("cannot start the console reader thread", e))?;
            threads.push(t);
        }
        if let Some(err) = spawned.stderr {
            threads.push(spawn_stderr_reader(err, stderr.clone())?);
        }
        let (qmp, qmp_commands, qmp_thread) =
            qmp::spawn_listener(prepared.qmp_socket.clone(), spawned.process.exit_watch());
        threads.extend(qmp_thread);
        Ok(Vm {
            config: cfg.clone(),
            process: spawned.process,
            stdin: Mutex::new(spawned.stdin),
            console,
            stderr,
            qmp,
            qmp_commands,
            threads,
            started,
            command_line: command_line(&cfg.qemu_binary, &qemu_args),
            exit: None,
            next_command: AtomicU32::new(1),
            shell_ready: AtomicBool::new(false),
            _runtime_dir: runtime_dir,
        })
    }

    /// Presses keys together on the guest's keyboard, e.g. `["ctrl", "alt", "delete"]`.
    pub fn send_keys(&self, keys: &[&str]) -> Result<(), VmError> {
        self.qmp_commands
            .execute(&qmp::send_key_command(keys))
            .map_err(|e| VmError::io("sending keys over QMP", e))
    }

    /// Waits for the first console line after the previous match that contains `needle`
    /// and returns it. Fails on timeout, kernel panic or QEMU exit, quoting the console tail.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Result<String, VmError> {
        self.wait_indexed(needle, timeout).map(|(_, line)| line)
    }

    /// `wait_for`, also returning the line's index in the console.
    fn wait_indexed(&self, needle: &str, timeout: Duration) -> Result<(usize, String), VmError> {
        match self.console.wait_for(needle, timeout) {
            Wait::Found(i, line) => Ok((i, line)),
            Wait::TimedOut => Err(VmError::Timeout {
                needle: needle.to_string(),
                waited: timeout,
                tail: self.console.tail(TAIL_LINES),
            }),
            Wait::Panic => {
                // The panic message comes first; give the trace a moment to arrive (with
                // panic=-1 the guest resets and QEMU exits right after it).
                self.console.wait_closed(Duration::from_secs(3));
                Err(VmError::KernelPanic {
                    needle: needle.to_string(),
                    tail: self
                        .console
                        .panic_context(PANIC_LINES_BEFORE, TAIL_LINES)
                        .unwrap_or_else(|| self.console.tail(TAIL_LINES)),
                })
            }
            Wait::Closed => {
                let status = self.process.wait(Duration::from_secs(2));
                let stderr = self.stderr_text();
                Err(VmError::Exited {
                    needle: needle.to_string(),
                    status: describe_status(status),
                    stderr: if stderr.is_empty() {
                        String::new()
                    } else {
                        format!("; QEMU said: {}", stderr.trim_end())
                    },
                    tail: self.console.tail(TAIL_LINES),
                })
            }
        }
    }

    /// Types `line` and Enter into the serial console.
    pub fn send_line(&self, line: &str) -> Result<(), VmError> {
        let mut stdin = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
        let Some(pipe) = stdin.as_mut() else {
            return Err(VmError::ConsoleClosed {
                source: std::io::Error::new(std::io::ErrorKind::BrokenPipe, "closed"),
            });
        };
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        pipe.write_all(&bytes)
            .and_then(|_| pipe.flush())
            .map_err(|source| VmError::ConsoleClosed { source })
    }

    /// Waits until the console shell reads input: types a harmless probe (again every few
    /// seconds, in case the shell flushed its input on start) until its output appears.
    /// `run_command` does this once by itself.
    pub fn wait_for_shell(&self, timeout: Duration) -> Result<(), VmError> {
        let deadline = crate::console::deadline_after(timeout);
        loop {
            let n = self.next_command.fetch_add(1, Ordering::Relaxed);
            self.send_line(&shell::probe(n))?;
            let left = deadline.saturating_duration_since(Instant::now());
            match self.wait_for(shell::PROBE_OUTPUT, left.min(SHELL_PROBE_RETRY)) {
                Ok(_) => {
                    self.shell_ready.store(true, Ordering::Relaxed);
                    return Ok(());
                }
                Err(VmError::Timeout { .. }) if Instant::now() < deadline => continue,
                Err(VmError::Timeout { tail, .. }) => {
                    return Err(VmError::Timeout {
                        needle: "an answer from the console shell".into(),
                        waited: timeout,
                        tail,
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs `command` on the console shell and returns its output (without the typed line);
    /// fails if it exits non-zero or does not finish within `timeout`. The command must not
    /// read from the console.
    pub fn run_command(&self, command: &str, timeout: Duration) -> Result<String, VmError> {
        let out = self.run_command_status(command, timeout)?;
        if out.status != 0 {
            return Err(VmError::CommandFailed {
                command: command.to_string(),
                status: out.status,
                output: out.output,
            });
        }
        Ok(out.output)
    }

    /// Like `run_command`, returning the exit status instead of failing on it.
    pub fn run_command_status(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<CommandOutput, VmError> {
        let deadline = crate::console::deadline_after(timeout);
        if !self.shell_ready.load(Ordering::Relaxed) {
            self.wait_for_shell(timeout)?;
        }
        let n = self.next_command.fetch_add(1, Ordering::Relaxed);
        self.send_line(&shell::command_line(n, command))?;
        let left = || deadline.saturating_duration_since(Instant::now());
        let (start, _) = self.wait_indexed(&shell::start_output(n), left())?;
        let (end, end_line) = self.wait_indexed(&shell::end_output(n), left())?;
        Ok(CommandOutput {
            output: self.console.between(start, end).join("\n"),
            status: shell::parse_status(&end_line).unwrap_or(-1),
        })
    }

    /// Waits up to `timeout` for QEMU to exit and says how the VM ended. On timeout QEMU
    /// keeps running (call `kill`). A guest that halted is stopped after a short grace.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<VmExit, VmError> {
        if let Some(exit) = &self.exit {
            return Ok(exit.clone());
        }
        let deadline = crate::console::deadline_after(timeout);
        let mut halted_at: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let slice = deadline
                .saturating_duration_since(now)
                .min(Duration::from_millis(200));
            if self.process.wait(slice).is_some() {
                break;
            }
            if halted_at.is_none() && self.console.find(KERNEL_HALTED).is_some() {
                halted_at = Some(Instant::now());
            }
            if halted_at.is_some_and(|t| t.elapsed() >= HALT_GRACE) {
                self.process.kill();
                continue;
            }
            if Instant::now() >= deadline {
                return Err(VmError::ExitTimeout {
                    waited: timeout,
                    tail: self.console.tail(TAIL_LINES),
                });
            }
        }
        Ok(self.finish())
    }

    /// Kills QEMU (if running) and waits for it to be gone.
    pub fn kill(&mut self) {
        self.process.kill();
        if self.process.wait(Duration::from_secs(10)).is_some() && self.exit.is_none() {
            self.finish();
        }
    }

    /// Collects the exit facts once QEMU has exited.
    fn finish(&mut self) -> VmExit {
        if let Some(exit) = &self.exit {
            return exit.clone();
        }
        let status = self.process.status();
        // Once QEMU is gone its pipes and socket close, so every reader thread ends.
        if self.console.wait_closed(Duration::from_secs(5)) {
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
        let shutdown_mode = self
            .console
            .find(SHUTDOWN_LINE_PREFIX)
            .and_then(|l| parse_kv_line(&l).get("mode").cloned());
        let facts = ExitFacts {
            code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            killed_by_runner: self.process.was_killed(),
            qmp: self.qmp.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            console_panic: self.console.panicked(),
            console_halted: self.console.find(KERNEL_HALTED).is_some(),
            console_restarting: self.console.find(KERNEL_RESTARTING).is_some(),
            shutdown_mode: shutdown_mode.clone(),
        };
        let exit = VmExit {
            reason: classify(&facts),
            code: facts.code,
            signal: facts.signal,
            shutdown_mode,
            qemu_shutdown_reason: facts.qmp.shutdown_reason.clone(),
            elapsed: self.started.elapsed(),
            stderr: self.stderr_text(),
        };
        self.exit = Some(exit.clone());
        exit
    }

    /// The whole console so far (escape sequences removed).
    pub fn console(&self) -> String {
        self.console.text()
    }

    /// Console lines with their arrival times (for measurements).
    pub fn console_lines(&self) -> Vec<ConsoleLine> {
        self.console.lines()
    }

    /// The last `n` console lines, quoted, for messages.
    pub fn console_tail(&self, n: usize) -> String {
        self.console.tail(n)
    }

    /// Time since QEMU was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// The QEMU command line, shell-quoted, for logs and bug reports.
    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    /// QEMU's diagnostics so far.
    pub fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.process.kill();
    }
}

/// QEMU's command: the binary itself, or `ip netns exec NS <binary>` for a tap in a network
/// namespace (ip(8) enters the namespace and execs QEMU, so the pid is QEMU's).
fn qemu_command(cfg: &VmConfig) -> Command {
    match &cfg.network {
        crate::config::Network::Tap {
            netns: Some(ns), ..
        } => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns]).arg(&cfg.qemu_binary);
            cmd
        }
        _ => Command::new(&cfg.qemu_binary),
    }
}

/// Runs a VM with the console on this process's terminal (`-serial mon:stdio` style:
/// Ctrl-A X quits, Ctrl-A C is QEMU's monitor) until it exits or `timeout` passes.
/// QEMU appends the console to `cfg.log_file` itself.
pub fn run_on_terminal(cfg: &VmConfig, timeout: Option<Duration>) -> Result<VmExit, VmError> {
    let runtime_dir = runtime_dir()?;
    if let Some(log) = &cfg.log_file {
        open_log(log)?;
    }
    let console = ConsoleMode::Terminal {
        log: cfg.log_file.clone(),
    };
    let prepared = args::prepare(cfg, runtime_dir.path(), console)?;
    let qemu_args = args::qemu_args(cfg, &prepared);
    let mut cmd = qemu_command(cfg);
    cmd.args(&qemu_args);
    let started = Instant::now();
    let spawned = process::spawn(cmd).map_err(|e| spawn_error(&cfg.qemu_binary, e))?;
    let qemu = spawned.process;
    let (qmp, _commands, qmp_thread) =
        qmp::spawn_listener(prepared.qmp_socket.clone(), qemu.exit_watch());
    let status = match timeout {
        Some(t) => match qemu.wait(t) {
            Some(s) => s,
            None => {
                qemu.kill();
                qemu.wait(Duration::from_secs(10))
                    .ok_or_else(|| VmError::ExitTimeout {
                        waited: t,
                        tail: "  (console was on the terminal)".into(),
                    })?
            }
        },
        None => loop {
            if let Some(s) = qemu.wait(Duration::from_secs(3600)) {
                break s;
            }
        },
    };
    if let Some(t) = qmp_thread {
        let _ = t.join();
    }
    let facts = ExitFacts {
        code: status.code(),
        signal: status.signal(),
        killed_by_runner: qemu.was_killed(),
        qmp: qmp.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        ..ExitFacts::default()
    };
    Ok(VmExit {
        reason: classify(&facts),
        code: facts.code,
        signal: facts.signal,
        shutdown_mode: None,
        qemu_shutdown_reason: facts.qmp.shutdown_reason.clone(),
        elapsed: started.elapsed(),
        stderr: String::new(),
    })
}

fn runtime_dir() -> Result<tempfile::TempDir, VmError> {
    tempfile::Builder::new()
        .prefix("tessera-vm-")
        .tempdir()
        .map_err(|e| VmError::io("cannot create a runtime directory for the VM", e))
}

fn open_log(path: &Path) -> Result<std::fs::File, VmError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| VmError::io(format!("cannot create {}", parent.display()), e))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| VmError::io(format!("cannot open console log {}", path.display()), e))
}

fn spawn_error(binary: &Path, e: std::io::Error) -> VmError {
    if e.kind() == std::io::ErrorKind::NotFound {
        VmError::QemuMissing {
            binary: binary.to_path_buf(),
        }
    } else {
        VmError::Spawn {
            binary: binary.to_path_buf(),
            source: e,
        }
    }
}

fn spawn_stderr_reader(
    err: std::process::ChildStderr,
    out: Arc<Mutex<String>>,
) -> Result<JoinHandle<()>, VmError> {
    std::thread::Builder::new()
        .name("vm-stderr".into())
        .spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                // SeaBIOS reads its serial-console setting from an `etc/` name, which QEMU
                // warns about on every PXE boot; it is expected.
                if line.contains("externally provided fw_cfg item names") {
                    continue;
                }
                let mut s = out.lock().unwrap_or_else(|e| e.into_inner());
                if s.len() < STDERR_LIMIT {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        })
        .map_err(|e| VmError::io("cannot start the QEMU stderr reader thread", e))
}

fn describe_status(status: Option<ExitStatus>) -> String {
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (_, Some(sig)) => format!("signal {sig}"),
            _ => "unknown status".into(),
        },
        None => "still exiting".into(),
    }
}

fn command_line(binary: &Path, args: &[String]) -> String {
    std::iter::once(binary.to_string_lossy().into_owned())
        .chain(args.iter().cloned())
        .map(|a| shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=.,/:+@%".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Where `tessera vm run` writes the console by default: next to the image.
pub fn default_log_path(image_dir: &Path, boot: crate::config::BootMode) -> PathBuf {
    image_dir.join(format!("vm-{boot}.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ExitFacts {
        ExitFacts {
            code: Some(0),
            ..ExitFacts::default()
        }
    }

    fn qmp(reason: &str) -> QmpReport {
        QmpReport {
            shutdown_reason: Some(reason.into()),
            guest_panicked: false,
        }
    }

    #[test]
    fn clean_exit_is_a_poweroff() {
        assert_eq!(classify(&facts()), ExitReason::PowerOff);
        let f = ExitFacts {
            qmp: qmp("guest-shutdown"),
            shutdown_mode: Some("poweroff".into()),
            ..facts()
        };
        assert_eq!(classify(&f), ExitReason::PowerOff);
    }

    #[test]
    fn guest_reset_is_a_reboot_from_qmp_or_the_console() {
        let f = ExitFacts {
            qmp: qmp("guest-reset"),
            ..facts()
        };
        assert_eq!(classify(&f), ExitReason::Reboot);
        let f = ExitFacts {
            console_restarting: true,
            ..facts()
        };
        assert_eq!(classify(&f), ExitReason::Reboot);
        let f = ExitFacts {
            shutdown_mode: Some("reboot".into()),
            ..facts()
        };
        assert_eq!(classify(&f), ExitReason::Reboot);
    }

    #[test]
    fn panic_wins_over_the_reset_it_causes() {
        let f = ExitFacts {
            qmp: qmp("guest-reset"),
            console_panic: true,
            ..facts()
        };
        assert_eq!(classify(&f), ExitReason::KernelPanic);
    }

    #[test]
    fn nonzero_exit_is_a_qemu_error_and_signals_are_kills() {
        let f = ExitFacts {
            code: Some(1),
            ..facts()
        };
        assert_eq!(classify(&f), ExitReason::QemuError);
        let f = ExitFacts {
            code: None,
            signal: Some(9),
            killed_by_runner: true,
            ..facts()
        };
        assert_eq!(classify(&f), ExitReason::Killed);
        let f = ExitFacts {
            qmp: qmp("host-signal"),
            ..facts()
        };
        assert_eq!(classify(&f), ExitReason::Killed);
    }

    #[test]
    fn a_halted_guest_stopped_by_the_runner_is_a_halt() {
        let f = ExitFacts {
            code: None,
            signal: Some(9),
            killed_by_runner: true,
            console_halted: true,
            ..facts()
        };
        assert_eq!(classify(&f), ExitReason::Halt);
    }

    #[test]
    fn a_vm_can_be_shared_with_and_moved_to_other_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Vm>();
    }

    #[test]
    fn command_line_is_shell_quoted() {
        let s = command_line(
            Path::new("qemu-system-x86_64"),
            &[
                "-append".into(),
                "console=ttyS0 quiet".into(),
                "it's".into(),
            ],
        );
        assert_eq!(
            s,
            r"qemu-system-x86_64 -append 'console=ttyS0 quiet' 'it'\''s'"
        );
    }
}
