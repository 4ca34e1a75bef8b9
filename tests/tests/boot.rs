//! End-to-end: the real image boots in QEMU (TCG) with the real Debian kernel, by direct
//! kernel boot, by PXE (iPXE ROM over QEMU's TFTP) and from the UEFI disk (OVMF), and its
//! PID 1 supervises as it should. Each test reads the console like a developer would.

use std::time::Duration;
use tessera_e2e::*;
use tessera_qemu::BootMode;

fn ready_fields(line: &str) -> std::collections::BTreeMap<String, String> {
    tessera_qemu::parse_kv_line(line)
}

/// What every boot mode must show: ready with the test services, a SIGKILLed service back,
/// the crash loop given up, and an orderly poweroff in reverse dependency order.
fn full_cycle(mode: BootMode, name: &str) {
    let image = test_image();
    let mut vm = boot(&image, mode, name, &[]);
    let ready = wait_ready(&vm, mode);
    let f = ready_fields(&ready);
    assert!(
        f["userspace_ms"].parse::<u64>().is_ok() && f["uptime_ms"].parse::<u64>().is_ok(),
        "{ready}"
    );

    // A service killed with SIGKILL comes back and is ready again.
    let before = status_row(&sh(&vm, "tessera status"), "victim");
    sh(&vm, "kill -KILL $(cat /run/victim.pid)");
    let status = sh_until(&vm, "tessera status", Duration::from_secs(30), |s| {
        let row = status_row(s, "victim");
        row[2] == "ready" && row[3] != before[3] && status_row(s, "crashloop")[2] == "failed"
    });
    assert_eq!(
        status_row(&status, "victim")[4],
        "1",
        "one restart recorded:\n{status}"
    );

    // The crash loop was given up after its intensity, and the node is still available.
    let crash = status_row(&status, "crashloop");
    assert_eq!(crash[2], "failed", "{status}");
    assert!(
        status.contains("restart intensity exceeded: 4 restarts within 1m"),
        "{status}"
    );
    assert!(
        status.lines().next().unwrap().contains("available"),
        "{status}"
    );

    // Poweroff: dependents stop first, then QEMU exits cleanly.
    vm.send_line("tessera poweroff").unwrap();
    let exit = vm.wait_exit(Duration::from_secs(60)).unwrap();
    assert!(exit.is_clean_poweroff(), "{exit:?}");
    let console = vm.console();
    let stop_pos = |svc: &str| {
        let field = format!("service={svc}");
        console
            .lines()
            .position(|l| {
                l.contains("stopping service") && l.split_whitespace().any(|w| w == field)
            })
            .unwrap_or_else(|| panic!("{svc} not stopped:\n{console}"))
    };
    assert!(
        stop_pos("chain-top") < stop_pos("chain-mid")
            && stop_pos("chain-mid") < stop_pos("chain-base"),
        "{console}"
    );
    assert!(console.contains("TESSERA-SHUTDOWN mode=poweroff"));
}

#[test]
fn kernel_boot_full_cycle() {
    full_cycle(BootMode::Kernel, "kernel-full-cycle");
}

#[test]
fn pxe_boot_full_cycle() {
    full_cycle(BootMode::Pxe, "pxe-full-cycle");
}

#[test]
fn disk_boot_full_cycle() {
    full_cycle(BootMode::Disk, "disk-full-cycle");
}

/// The names of the default image's service files (image/services/*.toml).
fn default_services() -> Vec<String> {
    let dir = repo_root().join("image/services");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| {
            let path = e.ok()?.path();
            (path.extension()? == "toml").then(|| path.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    names.sort();
    names
}

#[test]
fn default_image_reaches_ready_with_its_services() {
    let vm = boot(&default_image(), BootMode::Kernel, "default-ready", &[]);
    let ready = wait_ready(&vm, BootMode::Kernel);
    let f = ready_fields(&ready);
    // Every service file of the default image (image/services), all up: userdata is done (no
    // user-data), certmgr holds a standalone identity, the others are ready.
    let services = default_services();
    assert!(
        ["certmgr", "console", "klog", "net", "userdata"]
            .iter()
            .all(|s| services.iter().any(|x| x == s)),
        "{services:?}"
    );
    assert_eq!(
        (f["services"].as_str(), f["failed"].as_str()),
        (services.len().to_string().as_str(), "0"),
        "{ready}"
    );
    let status = sh(&vm, "tessera status");
    for svc in &services {
        let state = &status_row(&status, svc)[2];
        assert!(
            state == "ready" || state == "done",
            "{svc} is {state}:\n{status}"
        );
    }
    assert!(status.contains("PID 1 RSS"), "{status}");
    let kernel_log = sh(&vm, "tessera logs klog | tail -n 3");
    assert!(
        kernel_log.lines().count() == 3 && kernel_log.contains("klog["),
        "{kernel_log}"
    );
}

#[test]
fn malformed_service_file_is_named_with_its_line_and_skipped() {
    let vm = boot(&test_image(), BootMode::Kernel, "malformed", &[]);
    let line = vm
        .wait_for("service file skipped", boot_timeout(BootMode::Kernel))
        .unwrap();
    assert!(line.contains("malformed.toml:4:11"), "{line}");
    wait_ready(&vm, BootMode::Kernel);
    let status = sh(&vm, "tessera status");
    assert!(
        !status.lines().any(|l| l.starts_with("malformed ")),
        "{status}"
    );
    assert!(
        status.contains(
            "problem: /etc/tessera/services/malformed.toml:4:11: unknown variant `sometimes`"
        ),
        "{status}"
    );
}

#[test]
fn module_missing_from_the_image_is_a_clear_error_and_the_node_still_boots() {
    let vm = boot(
        &test_image(),
        BootMode::Kernel,
        "missing-module",
        &["tessera.modules=no_such_module"],
    );
    let line = vm
        .wait_for("kernel module missing", boot_timeout(BootMode::Kernel))
        .unwrap();
    assert!(line.contains("module=no_such_module"), "{line}");
    wait_ready(&vm, BootMode::Kernel);
    let status = sh(&vm, "tessera status");
    assert!(
        status.contains("kernel module no_such_module is not in the image"),
        "{status}"
    );
    assert!(status.contains("add it to image/modules.toml"), "{status}");
}

#[test]
fn unknown_kernel_argument_is_a_warning_not_a_failure() {
    let vm = boot(
        &test_image(),
        BootMode::Kernel,
        "unknown-arg",
        &["tessera.colour=blue", "tessera.hostname=node7"],
    );
    let warn = vm
        .wait_for(
            "unknown kernel argument ignored",
            boot_timeout(BootMode::Kernel),
        )
        .unwrap();
    assert!(warn.contains("tessera.colour"), "{warn}");
    wait_ready(&vm, BootMode::Kernel);
    assert_eq!(sh(&vm, "hostname"), "node7");
}

#[test]
fn services_get_their_capability_bounding_set_and_cgroup_limits() {
    let vm = boot(&test_image(), BootMode::Kernel, "confined", &[]);
    wait_ready(&vm, BootMode::Kernel);
    let logs = sh(&vm, "tessera logs confined");
    // CAP_NET_BIND_SERVICE is capability 10.
    assert!(
        logs.contains("CapBnd:\t0000000000000400") || logs.contains("CapBnd: 0000000000000400"),
        "{logs}"
    );
    assert!(logs.contains("pids.max=16 memory.max=33554432"), "{logs}");
    assert_eq!(
        sh(&vm, "cat /sys/fs/cgroup/services/confined/cpu.max"),
        "50000 100000"
    );
}

#[test]
fn compressed_modules_load_by_name_and_through_the_kernels_modprobe_requests() {
    let vm = boot(&default_image(), BootMode::Kernel, "modprobe", &[]);
    wait_ready(&vm, BootMode::Kernel);
    // btrfs ships as .ko.zst; tessera decompresses it and loads its dependencies first.
    assert!(sh(&vm, "ls /lib/modules/*/kernel/fs/btrfs/").contains("btrfs.ko.zst"));
    let loaded = sh(&vm, "tessera modprobe btrfs");
    assert!(
        loaded.starts_with("loaded ") && loaded.trim_end().ends_with("btrfs"),
        "{loaded}"
    );
    assert!(sh(&vm, "grep -c btrfs /proc/filesystems") == "1");
    // The kernel asks /sbin/modprobe (tessera) for "fs-iso9660" when a mount needs it.
    let _ = vm.run_command_status(
        "mount -t iso9660 /dev/null /mnt 2>/dev/null",
        Duration::from_secs(30),
    );
    assert_eq!(sh(&vm, "grep -c iso9660 /proc/filesystems"), "1");
    let missing = vm
        .run_command_status("tessera modprobe no_such_thing", Duration::from_secs(30))
        .unwrap();
    assert_ne!(missing.status, 0);
    assert!(
        missing.output.contains("module no_such_thing not found"),
        "{}",
        missing.output
    );
}

#[test]
fn ctrl_alt_del_is_an_orderly_reboot() {
    let mut vm = boot(&test_image(), BootMode::Kernel, "ctrl-alt-del", &[]);
    wait_ready(&vm, BootMode::Kernel);
    // Give the QMP connection a moment after boot; then press the keys.
    vm.send_keys(&["ctrl", "alt", "delete"]).unwrap();
    let exit = vm.wait_exit(Duration::from_secs(60)).unwrap();
    assert_eq!(exit.reason, tessera_qemu::ExitReason::Reboot, "{exit:?}");
    let console = vm.console();
    assert!(
        console.contains("shutdown requested by signal mode=reboot signal=SIGINT"),
        "{console}"
    );
    assert!(
        console.contains("TESSERA-SHUTDOWN mode=reboot"),
        "{console}"
    );
    assert!(
        console
            .lines()
            .any(|l| l.contains("stopping service") && l.contains("service=chain-top")),
        "{console}"
    );
}

#[test]
fn signals_to_pid1_are_orderly_poweroff_halt_and_reboot() {
    use tessera_qemu::ExitReason;
    let cases = [
        ("kill -PWR 1", "SIGPWR", "poweroff", ExitReason::PowerOff),
        (
            "busybox poweroff",
            "SIGUSR2",
            "poweroff",
            ExitReason::PowerOff,
        ),
        ("busybox halt", "SIGUSR1", "halt", ExitReason::Halt),
        ("busybox reboot", "SIGTERM", "reboot", ExitReason::Reboot),
    ];
    for (command, signal, mode, reason) in cases {
        let mut vm = boot(
            &default_image(),
            BootMode::Kernel,
            &format!("signal-{signal}"),
            &[],
        );
        wait_ready(&vm, BootMode::Kernel);
        vm.send_line(command).unwrap();
        let exit = vm.wait_exit(Duration::from_secs(60)).unwrap();
        let console = vm.console();
        assert_eq!(exit.reason, reason, "{command}: {exit:?}\n{console}");
        assert!(
            console.contains(&format!(
                "shutdown requested by signal mode={mode} signal={signal}"
            )),
            "{command}:\n{console}"
        );
        assert!(
            console.contains(&format!("TESSERA-SHUTDOWN mode={mode}")),
            "{command}:\n{console}"
        );
    }
}
