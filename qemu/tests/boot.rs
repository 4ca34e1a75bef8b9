//! Real boots of the three modes with the Debian cloud kernel and a busybox initramfs that
//! plays the guest side of the console contract (see support/mod.rs). Each test is well
//! under a minute under TCG.

mod support;

use std::time::Duration;

use tessera_qemu::{parse_kv_line, BootMode, ExitReason, Vm, VmConfig, VmError};

const BOOT: Duration = Duration::from_secs(60);

fn config(boot: BootMode, image: &std::path::Path) -> VmConfig {
    let mut cfg = VmConfig::new(boot, image);
    cfg.name = format!("tessera-test-{boot}");
    cfg
}

#[test]
fn kernel_boot_reaches_init_with_the_extra_args_and_powers_off_cleanly() {
    let Some(image) = support::pxe_image() else {
        return support::fixture_missing("kernel boot", "no kernel or static busybox");
    };
    let data = image.path().join("data.img");
    std::fs::write(&data, vec![0u8; 1 << 20]).unwrap();
    let log = image.path().join("vm.log");
    let mut cfg = config(BootMode::Kernel, image.path());
    cfg.append = vec!["test.marker=kernel42".into()];
    cfg.disks = vec![data];
    cfg.log_file = Some(log.clone());
    let mut vm = Vm::start(&cfg).unwrap();

    let init = vm.wait_for("TESSERA-INIT", BOOT).unwrap();
    let uptime = parse_kv_line(&init)["uptime_ms"].parse::<u64>().unwrap();
    let cmdline = vm.wait_for("CMDLINE", BOOT).unwrap();
    assert!(
        cmdline.contains("console=ttyS0 quiet panic=-1 test.marker=kernel42"),
        "{cmdline}"
    );
    let exit = vm.wait_exit(BOOT).unwrap();
    assert!(exit.is_clean_poweroff(), "{exit:?}\n{}", vm.console());
    assert_eq!(exit.shutdown_mode.as_deref(), Some("poweroff"));
    // virtio-blk (1af4:1001): exactly the one data disk.
    let blk = vm.console().matches("PCI 0x1af4:0x1001").count();
    assert_eq!(blk, 1, "{}", vm.console());
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("TESSERA-READY"), "{logged}");
    eprintln!(
        "kernel boot: guest uptime at /init {uptime} ms, wall {:.2} s",
        exit.elapsed.as_secs_f64()
    );
}

#[test]
fn pxe_boot_fetches_the_kernel_over_tftp_and_passes_extra_args_through_ipxe() {
    let Some(image) = support::pxe_image() else {
        return support::fixture_missing("pxe boot", "no kernel or static busybox");
    };
    let mut cfg = config(BootMode::Pxe, image.path());
    cfg.append = vec!["test.marker=pxe42".into()];
    let mut vm = Vm::start(&cfg).unwrap();

    vm.wait_for("tessera.ipxe", BOOT).unwrap();
    let script_at = vm.elapsed();
    vm.wait_for("vmlinuz... ok", BOOT).unwrap();
    // The kernel resets the UART while iPXE's last "ok" may still be in flight: match the
    // start of the line only.
    vm.wait_for("initramfs.img...", BOOT).unwrap();
    let fetched_at = vm.elapsed();
    let init = vm.wait_for("TESSERA-INIT", BOOT).unwrap();
    let cmdline = vm.wait_for("CMDLINE", BOOT).unwrap();
    assert!(cmdline.contains("test.marker=pxe42"), "{cmdline}");
    let exit = vm.wait_exit(BOOT).unwrap();
    assert!(exit.is_clean_poweroff(), "{exit:?}\n{}", vm.console());
    eprintln!(
        "pxe boot: {init}; kernel+initramfs over TFTP in ~{:.2} s; wall {:.2} s",
        (fetched_at - script_at).as_secs_f64(),
        exit.elapsed.as_secs_f64()
    );
}

#[test]
fn disk_boot_runs_the_unified_kernel_image_under_ovmf_without_touching_the_image() {
    let Some(image) = support::pxe_image() else {
        return support::fixture_missing("disk boot", "no kernel or static busybox");
    };
    if let Err(why) = support::add_disk_image(image.path(), "console=ttyS0 quiet panic=-1") {
        return support::fixture_missing("disk boot", &why);
    }
    let disk = image.path().join("disk.qcow2");
    let before = std::fs::read(&disk).unwrap();
    let cfg = config(BootMode::Disk, image.path());
    let mut vm = Vm::start(&cfg).unwrap();
    let init = vm.wait_for("TESSERA-INIT", BOOT).unwrap();
    let exit = vm.wait_exit(BOOT).unwrap();
    assert!(exit.is_clean_poweroff(), "{exit:?}\n{}", vm.console());
    assert!(
        std::fs::read(&disk).unwrap() == before,
        "disk image changed"
    );
    eprintln!(
        "disk boot: {init}; wall {:.2} s",
        exit.elapsed.as_secs_f64()
    );
}

#[test]
fn typed_commands_reach_the_guest_shell_and_tessera_poweroff_ends_the_vm() {
    let Some(image) = support::pxe_image() else {
        return support::fixture_missing("console shell", "no kernel or static busybox");
    };
    let mut cfg = config(BootMode::Kernel, image.path());
    cfg.append = vec!["test.mode=shell".into()];
    let mut vm = Vm::start(&cfg).unwrap();
    vm.wait_for("TESSERA-READY", BOOT).unwrap();
    vm.send_line("echo sum=$((6*7))").unwrap();
    // The echoed input says "$((6*7))"; only the shell's output says 42.
    assert_eq!(vm.wait_for("sum=42", BOOT).unwrap().trim(), "sum=42");
    let out = vm
        .run_command("echo x=$((2+3)); cat /proc/sys/kernel/ostype", BOOT)
        .unwrap();
    assert_eq!(out, "x=5\nLinux");
    vm.send_line("tessera poweroff").unwrap();
    let exit = vm.wait_exit(BOOT).unwrap();
    assert_eq!(exit.reason, ExitReason::PowerOff, "{}", vm.console());
    assert_eq!(exit.shutdown_mode.as_deref(), Some("poweroff"));
}

#[test]
fn kernel_panic_fails_the_wait_with_the_console_tail_and_is_the_exit_reason() {
    let Some(image) = support::pxe_image() else {
        return support::fixture_missing("kernel panic", "no kernel or static busybox");
    };
    let mut cfg = config(BootMode::Kernel, image.path());
    cfg.append = vec!["test.mode=panic".into()];
    let mut vm = Vm::start(&cfg).unwrap();
    vm.wait_for("TESSERA-READY", BOOT).unwrap();
    let err = vm.wait_for("never printed", BOOT).unwrap_err();
    assert!(matches!(err, VmError::KernelPanic { .. }), "{err}");
    assert!(
        err.to_string().contains("Kernel panic - not syncing"),
        "{err}"
    );
    let exit = vm.wait_exit(BOOT).unwrap();
    assert_eq!(exit.reason, ExitReason::KernelPanic);
}

#[test]
fn guest_reboot_ends_qemu_and_is_reported_as_a_reboot() {
    let Some(image) = support::pxe_image() else {
        return support::fixture_missing("reboot", "no kernel or static busybox");
    };
    let mut cfg = config(BootMode::Kernel, image.path());
    cfg.append = vec!["test.mode=reboot".into()];
    let mut vm = Vm::start(&cfg).unwrap();
    let exit = vm.wait_exit(BOOT).unwrap();
    assert_eq!(exit.reason, ExitReason::Reboot, "{}", vm.console());
    assert_eq!(exit.code, Some(0));
    // Only one boot: -no-reboot stopped the second.
    assert_eq!(vm.console().matches("TESSERA-INIT").count(), 1);
}

#[test]
fn cli_pxe_boot_runs_a_script_in_the_guest_shell_and_exits_0() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        vm: tessera_qemu::VmCommand,
    }
    // No --append: the image's own pxe/ directory is the TFTP root and its boot.ipxe runs
    // unchanged, so the shell mode is the test /init's default here.
    let init = support::INIT.replace("mode=poweroff\n", "mode=shell\n");
    let Some(image) = support::pxe_image_with_init(&init) else {
        return support::fixture_missing("cli pxe script", "no kernel or static busybox");
    };
    let image_arg = image.path().display().to_string();
    let argv = [
        "vm",
        "run",
        "--boot",
        "pxe",
        "--image",
        &image_arg,
        "--timeout",
        "90s",
        "--script",
        "tessera status",
        "--script",
        "cat /proc/cmdline",
    ];
    let tessera_qemu::VmCommand::Run(args) = Cli::try_parse_from(argv).unwrap().vm;
    let out = tessera_qemu::cli::run_vm(&args, false).unwrap();
    assert_eq!(out.code, tessera_qemu::cli::EXIT_OK, "{}", out.summary);
    let log = std::fs::read_to_string(image.path().join("vm-pxe.log")).unwrap();
    assert!(log.contains("node state=available"), "{log}");
    assert!(log.contains("boot.ipxe"), "{log}");
    assert!(out.ready_uptime_ms.is_some());
}
