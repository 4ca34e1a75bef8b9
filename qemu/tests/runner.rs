//! The runner and `tessera vm run` against a stand-in for QEMU: a shell script (passed as
//! the QEMU binary) that prints console lines and reads the "serial" input. No VM boots here.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tessera_qemu::cli::{run_vm, RunArgs, EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT};
use tessera_qemu::{BootMode, ExitReason, Vm, VmConfig, VmError};

const T: Duration = Duration::from_secs(10);

/// An image directory with placeholder files, and a VM config that runs `body` as QEMU.
fn fake(body: &str) -> (tempfile::TempDir, VmConfig) {
    let dir = tempfile::tempdir().unwrap();
    let pxe = dir.path().join("pxe");
    std::fs::create_dir_all(&pxe).unwrap();
    for f in ["vmlinuz", "initramfs.img", "boot.ipxe"] {
        std::fs::write(pxe.join(f), b"placeholder").unwrap();
    }
    let mut cfg = VmConfig::new(BootMode::Kernel, dir.path());
    let body = format!("cd \"$(dirname \"$0\")\"\n{body}");
    cfg.qemu_binary = support::fake_qemu(dir.path(), &body);
    (dir, cfg)
}

#[test]
fn wait_for_returns_each_match_once_in_console_order() {
    let (_d, cfg) = fake("printf 'a 1\\nb 1\\na 2\\nb 2\\n'; exec sleep 30");
    let vm = Vm::start(&cfg).unwrap();
    assert_eq!(vm.wait_for("b", T).unwrap(), "b 1");
    // "a 1" precedes the cursor: it is never returned again.
    assert_eq!(vm.wait_for("a", T).unwrap(), "a 2");
    assert_eq!(vm.wait_for("b", T).unwrap(), "b 2");
    assert!(matches!(
        vm.wait_for("b", Duration::from_millis(100)),
        Err(VmError::Timeout { .. })
    ));
}

#[test]
fn timeout_error_quotes_the_last_console_lines() {
    let (_d, cfg) = fake(
        "i=0; while [ $i -lt 100 ]; do echo \"boot line $i\"; i=$((i+1)); done; exec sleep 30",
    );
    let vm = Vm::start(&cfg).unwrap();
    vm.wait_for("boot line 99", T).unwrap();
    let err = vm
        .wait_for("TESSERA-READY", Duration::from_millis(200))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("timed out after 200ms waiting for `TESSERA-READY`"),
        "{err}"
    );
    assert!(err.contains("| boot line 99"), "{err}");
    assert!(err.contains("| boot line 60"), "{err}");
    assert!(!err.contains("| boot line 59"), "{err}");
}

#[test]
fn send_line_is_typed_into_the_serial_input() {
    let (_d, cfg) = fake("while read l; do echo \"got: $l\"; done");
    let vm = Vm::start(&cfg).unwrap();
    vm.send_line("hello guest").unwrap();
    assert_eq!(vm.wait_for("got:", T).unwrap(), "got: hello guest");
}

#[test]
fn qemu_exiting_early_fails_the_wait_with_its_status_and_stderr() {
    let (_d, cfg) = fake("echo 'SeaBIOS'; echo 'qemu: could not load kernel' >&2; exit 1");
    let mut vm = Vm::start(&cfg).unwrap();
    let err = vm.wait_for("TESSERA-INIT", T).unwrap_err().to_string();
    assert!(err.contains("QEMU exited (exit code 1)"), "{err}");
    assert!(err.contains("could not load kernel"), "{err}");
    assert!(err.contains("| SeaBIOS"), "{err}");
    let exit = vm.wait_exit(T).unwrap();
    assert_eq!(exit.reason, ExitReason::QemuError);
    assert_eq!(exit.describe(), "QEMU failed (exit code 1)");
}

#[test]
fn clean_exit_after_the_shutdown_line_is_a_poweroff_and_the_log_has_the_console() {
    let (d, mut cfg) =
        fake("echo 'TESSERA-INIT uptime_ms=5'; echo 'TESSERA-SHUTDOWN mode=poweroff'; exit 0");
    let log = d.path().join("logs/vm.log");
    cfg.log_file = Some(log.clone());
    let mut vm = Vm::start(&cfg).unwrap();
    let exit = vm.wait_exit(T).unwrap();
    assert!(exit.is_clean_poweroff(), "{exit:?}");
    assert_eq!(exit.shutdown_mode.as_deref(), Some("poweroff"));
    assert_eq!(
        std::fs::read_to_string(log).unwrap(),
        "TESSERA-INIT uptime_ms=5\nTESSERA-SHUTDOWN mode=poweroff\n"
    );
}

#[test]
fn wait_exit_times_out_without_killing_and_kill_then_ends_qemu() {
    let (_d, cfg) = fake("echo up; exec sleep 30");
    let mut vm = Vm::start(&cfg).unwrap();
    vm.wait_for("up", T).unwrap();
    let err = vm.wait_exit(Duration::from_millis(200)).unwrap_err();
    assert!(matches!(err, VmError::ExitTimeout { .. }), "{err}");
    assert!(err.to_string().contains("| up"), "{err}");
    vm.kill();
    let exit = vm.wait_exit(T).unwrap();
    assert_eq!(exit.reason, ExitReason::Killed);
}

#[test]
fn dropping_the_vm_kills_qemu() {
    let (_d, cfg) = fake("echo up; exec sleep 30");
    let vm = Vm::start(&cfg).unwrap();
    vm.wait_for("up", T).unwrap();
    let proc_dir = PathBuf::from(format!("/proc/{}", vm.pid()));
    drop(vm);
    let deadline = Instant::now() + T;
    // Gone, or a zombie about to be reaped by the waiter thread.
    while proc_dir.exists()
        && !std::fs::read_to_string(proc_dir.join("stat")).is_ok_and(|s| s.contains(") Z"))
    {
        assert!(Instant::now() < deadline, "QEMU still running after drop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn missing_qemu_binary_says_which_package_to_install() {
    let (_d, mut cfg) = fake("true");
    cfg.qemu_binary = "/nonexistent/qemu-system-x86_64".into();
    let err = Vm::start(&cfg).err().unwrap().to_string();
    assert_eq!(
        err,
        "QEMU (`/nonexistent/qemu-system-x86_64`) not found: install it with `apt-get install qemu-system-x86`"
    );
}

#[test]
fn missing_image_is_reported_before_qemu_starts() {
    let (d, cfg) = fake("touch started");
    std::fs::remove_file(d.path().join("pxe/initramfs.img")).unwrap();
    let err = Vm::start(&cfg).err().unwrap().to_string();
    assert!(
        err.contains("pxe/initramfs.img not found: run `make image`"),
        "{err}"
    );
    assert!(!d.path().join("started").exists());
}

/// A fake guest for the CLI: boots, then runs typed lines as shell commands, with a
/// `tessera` function standing in for the real CLI.
const FAKE_GUEST: &str = r#"
tessera() { case "$1" in poweroff) echo 'TESSERA-SHUTDOWN mode=poweroff'; exit 0;; status) echo 'state=available';; esac; }
echo 'TESSERA-INIT uptime_ms=100'
echo 'TESSERA-READY services=3 userspace_ms=80 uptime_ms=180 failed=0'
rc=0; while read -r line; do (exit $rc); eval "$line"; rc=$?; done
"#;

#[test]
fn run_command_returns_exactly_the_command_output() {
    let (_d, cfg) = fake(FAKE_GUEST);
    let vm = Vm::start(&cfg).unwrap();
    vm.wait_for("TESSERA-READY", T).unwrap();
    assert_eq!(vm.run_command("echo one; echo two", T).unwrap(), "one\ntwo");
    // A comment or quotes in the command do not swallow the end marker.
    assert_eq!(vm.run_command("echo 'a b' # note", T).unwrap(), "a b");
    assert_eq!(vm.run_command("true", T).unwrap(), "");
}

#[test]
fn run_command_failure_carries_status_and_output() {
    let (_d, cfg) = fake(FAKE_GUEST);
    let vm = Vm::start(&cfg).unwrap();
    let out = vm.run_command_status("echo nope; false", T).unwrap();
    assert_eq!((out.output.as_str(), out.status), ("nope", 1));
    let err = vm.run_command("echo nope; false", T).unwrap_err();
    assert!(
        matches!(err, VmError::CommandFailed { status: 1, .. }),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains("`echo nope; false` failed in the guest with exit status 1"));
}

fn cli_args(cfg: &VmConfig, extra: &[&str]) -> RunArgs {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        vm: tessera_qemu::VmCommand,
    }
    let mut argv = vec![
        "tessera-vm".to_string(),
        "run".into(),
        "--image".into(),
        cfg.image_dir.display().to_string(),
        "--qemu".into(),
        cfg.qemu_binary.display().to_string(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    let tessera_qemu::VmCommand::Run(args) = Cli::try_parse_from(argv).unwrap().vm;
    args
}

#[test]
fn cli_script_runs_commands_then_powers_off_and_exits_0() {
    let (d, cfg) = fake(FAKE_GUEST);
    let args = cli_args(
        &cfg,
        &["--script", "tessera status", "--script", "echo hi > typed"],
    );
    let out = run_vm(&args, false).unwrap();
    assert_eq!(out.code, EXIT_OK, "{}", out.summary);
    assert_eq!(out.ready_uptime_ms, Some(180));
    assert_eq!(out.userspace_ms, Some(80));
    assert_eq!(
        std::fs::read_to_string(d.path().join("typed")).unwrap(),
        "hi\n"
    );
    assert!(
        out.summary
            .contains("kernel boot: powered off (TESSERA-SHUTDOWN mode=poweroff)"),
        "{}",
        out.summary
    );
    assert!(
        out.summary
            .contains("ready at 0.18 s guest uptime (userspace 80 ms)"),
        "{}",
        out.summary
    );
    let log = d.path().join("vm-kernel.log");
    assert!(
        out.summary.contains(&log.display().to_string()),
        "{}",
        out.summary
    );
    assert!(std::fs::read_to_string(log)
        .unwrap()
        .contains("state=available"));
}

#[test]
fn cli_failed_script_command_makes_the_exit_status_1() {
    let (_d, cfg) = fake(FAKE_GUEST);
    let args = cli_args(&cfg, &["--script", "false"]);
    let out = run_vm(&args, false).unwrap();
    assert_eq!(out.code, EXIT_FAILED, "{}", out.summary);
    assert!(
        out.summary.contains("script failed: `false` rc=1"),
        "{}",
        out.summary
    );
}

#[test]
fn cli_timeout_kills_qemu_and_exits_2() {
    let (_d, cfg) = fake("echo 'TESSERA-INIT uptime_ms=1'; exec sleep 30");
    let args = cli_args(&cfg, &["--timeout", "1s"]);
    let started = Instant::now();
    let out = run_vm(&args, false).unwrap();
    assert_eq!(out.code, EXIT_TIMEOUT, "{}", out.summary);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        out.summary
            .contains("timed out after 1s waiting for TESSERA-READY (QEMU killed)"),
        "{}",
        out.summary
    );
    assert!(
        out.summary
            .contains("PID 1 started at 1 ms but never ready"),
        "{}",
        out.summary
    );
}

#[test]
fn cli_qemu_failure_exits_1_with_qemu_message() {
    let (_d, cfg) = fake("echo 'qemu-system-x86_64: -drive x: Could not open' >&2; exit 1");
    let args = cli_args(&cfg, &[]);
    let out = run_vm(&args, false).unwrap();
    assert_eq!(out.code, EXIT_FAILED, "{}", out.summary);
    assert!(
        out.summary.contains("QEMU failed (exit code 1)"),
        "{}",
        out.summary
    );
    assert!(out.summary.contains("Could not open"), "{}", out.summary);
    assert!(
        out.summary.contains("PID 1 never started"),
        "{}",
        out.summary
    );
}

#[test]
fn cli_disk_mode_with_append_is_refused_with_the_reason() {
    let (_d, cfg) = fake("true");
    let args = cli_args(&cfg, &["--boot", "disk", "--append", "x=1"]);
    let err = run_vm(&args, false).unwrap_err().to_string();
    assert!(
        err.starts_with("disk boot cannot take extra kernel arguments (x=1)"),
        "{err}"
    );
}
