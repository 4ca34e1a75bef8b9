//! End-to-end: what a container cannot do (issue 9 §4 "Isolation"), on one booted node with a
//! Btrfs data disk, driven through `tessera container` on the console as an operator would:
//!
//! - a memory hog (a busybox shell doubling a variable) is OOM-killed inside its memory.max,
//!   `inspect` reports it killed by the OOM killer (memory.events oom_kill), and the node
//!   stays available;
//! - a fork bomb stops at pids.max: the container's pids.current never exceeds it while the
//!   node keeps answering;
//! - a syscall the default seccomp profile denies (unshare(CLONE_NEWUSER), which the kernel
//!   grants root on the node itself) fails with EPERM, with Seccomp: 2 in /proc/self/status;
//! - the container sees only its own processes and its own files;
//! - hostile archives, built here with Python's tarfile and given to the node on a raw disk,
//!   are refused with their reason and leave no template or volume behind.

#[path = "../../agents/userdata/tests/common/mod.rs"]
mod userdata_helpers;

use std::path::{Path, PathBuf};
use std::time::Duration;
use tessera_e2e::bundle::{busybox_bundle, sha256_of};
use tessera_e2e::*;
use tessera_qemu::{BootMode, Vm};
use userdata_helpers::nocloud_seed;

const SETTLE: Duration = Duration::from_secs(180);

/// The hostile archives, each a name, the tar and the reason the import must give.
const HOSTILE: &[(&str, &str)] = &[
    ("dotdot", "has a \"..\" component: refused"),
    ("symlink-escape", "a symlink: refused"),
    ("device", "device node: refused"),
    ("setuid", "is setuid/setgid: refused"),
    ("no-config", "config.json missing next to rootfs/"),
    ("truncated", "the archive is truncated: refused"),
];

/// Writes the hostile archives of [`HOSTILE`] into `dir` (from the good bundle at
/// `dir/bundle`), with Python's tarfile, which writes what it is told.
fn hostile_archives(dir: &Path, good: &Path) {
    let script = r##"
import io, os, sys, tarfile
out, bundle, good = sys.argv[1], sys.argv[2], sys.argv[3]
config = open(os.path.join(bundle, "config.json"), "rb").read()
def regular(name, data=b"x\n", mode=0o644):
    i = tarfile.TarInfo(name); i.size = len(data); i.mode = mode
    return (i, data)
def archive(name, entries, with_config=True):
    with tarfile.open(os.path.join(out, name + ".tar"), "w", format=tarfile.GNU_FORMAT) as t:
        if with_config:
            i, data = regular("config.json", config)
            t.addfile(i, io.BytesIO(data))
        d = tarfile.TarInfo("rootfs"); d.type = tarfile.DIRTYPE; d.mode = 0o755
        t.addfile(d)
        for info, data in entries:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
archive("dotdot", [regular("rootfs/../../escaped")])
link = tarfile.TarInfo("rootfs/etc"); link.type = tarfile.SYMTYPE; link.linkname = "/etc"
archive("symlink-escape", [(link, None), regular("rootfs/etc/passwd", b"evil::0:0::/:/bin/sh\n")])
dev = tarfile.TarInfo("rootfs/mem"); dev.type = tarfile.CHRTYPE; dev.devmajor = 1; dev.devminor = 1; dev.mode = 0o666
archive("device", [(dev, None)])
archive("setuid", [regular("rootfs/su", b"#!/bin/sh\n", 0o4755)])
archive("no-config", [regular("rootfs/hello")], with_config=False)
whole = open(good, "rb").read()
# Cut inside busybox's data (well past the headers at the start), on a 512-byte boundary.
open(os.path.join(out, "truncated.tar"), "wb").write(whole[: (len(whole) // 2) // 512 * 512])
"##;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir)
        .arg(dir.join("bundle"))
        .arg(good)
        .output()
        .expect("run python3");
    assert!(out.status.success(), "python3: {out:?}");
}

/// One raw disk holding `files` one after another, each at a 1 MiB boundary; returns the disk
/// and each file's (offset in 512-byte blocks, length in blocks).
fn carrier_disk(dir: &Path, files: &[PathBuf]) -> (PathBuf, Vec<(u64, u64)>) {
    let mut bytes = Vec::new();
    let mut at = Vec::new();
    for f in files {
        let data = std::fs::read(f).unwrap();
        let blocks = (data.len() as u64).div_ceil(512);
        at.push(((bytes.len() / 512) as u64, blocks));
        bytes.extend_from_slice(&data);
        bytes.resize(bytes.len().div_ceil(1 << 20) * (1 << 20), 0);
    }
    let disk = dir.join("hostile.img");
    std::fs::write(&disk, &bytes).unwrap();
    (disk, at)
}

fn boot_node(dir: &Path, disks: Vec<PathBuf>) -> Vm {
    let seed = nocloud_seed(
        dir,
        "version = 1\n\n[storage]\nbackend = \"btrfs\"\ndevice = \"/dev/vdb\"\n",
    );
    let mut all = vec![seed, data_disk(dir, "3G")];
    all.extend(disks);
    let vm = boot_with_disks(
        &default_image(),
        BootMode::Kernel,
        "container-isolation",
        &[],
        &all,
    );
    wait_ready(&vm, BootMode::Kernel);
    sh_until(&vm, "tessera status", SETTLE, |s| {
        s.lines()
            .any(|l| l.split_whitespace().next() == Some("container") && l.contains(" ready"))
    });
    vm
}

/// The node still answers: its status, and a fresh container runs to completion.
fn node_available(vm: &Vm, template: &str, probe: &str) {
    let status = sh(vm, "tessera status");
    assert!(status.contains("available"), "{status}");
    sh(
        vm,
        &format!("tessera container create {probe} --template {template} --start -- /bin/busybox echo alive"),
    );
    sh_until(
        vm,
        &format!("tessera container logs {probe}"),
        SETTLE,
        |out| out.contains("stdout: alive"),
    );
}

fn memory_hog_is_oom_killed(vm: &Vm, template: &str) {
    sh(
        vm,
        &format!("tessera container create hog --template {template} --memory 24M --start -- /bin/busybox sh -c 'x=0123456789abcdef; while :; do x=$x$x; done'"),
    );
    let inspect = sh_until(vm, "tessera container inspect hog", SETTLE, |out| {
        console_json(out)["state"] == "exited"
    });
    let v = console_json(&inspect);
    assert_eq!(
        v["exit"]["signal"], 9,
        "SIGKILLed by the OOM killer: {inspect}"
    );
    assert_eq!(
        v["exit"]["oom_killed"], true,
        "reported as OOM-killed: {inspect}"
    );
    let list = sh(vm, "tessera container list");
    assert!(list.contains("oom"), "the list shows why it died:\n{list}");
    node_available(vm, template, "after-hog");
}

fn fork_bomb_stops_at_pids_max(vm: &Vm, template: &str) {
    // The init makes a fifo, starts the bomb, then blocks reading the fifo (a builtin: it
    // needs no fork of its own) so that the container lives on while the bomb runs.
    sh(
        vm,
        &format!("tessera container create bomb --template {template} --pids 16 --cpu 30 --start -- /bin/busybox sh -c '/bin/busybox mkfifo /tmp/f; b() {{ b | b & }}; b; read x <> /tmp/f'"),
    );
    let cgroup = "/sys/fs/cgroup/containers/bomb";
    sh_until(vm, &format!("cat {cgroup}/pids.events"), SETTLE, |out| {
        out.split_whitespace()
            .nth(1)
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    });
    assert_eq!(sh(vm, &format!("cat {cgroup}/pids.max")).trim(), "16");
    for _ in 0..10 {
        let current: u64 = sh(vm, &format!("cat {cgroup}/pids.current"))
            .trim()
            .parse()
            .expect("pids.current is a number");
        assert!(current <= 16, "pids.current {current} exceeds pids.max 16");
        let status = sh(vm, "tessera status");
        assert!(
            status.contains("available"),
            "the node stopped answering:\n{status}"
        );
    }
    let events = sh(vm, &format!("cat {cgroup}/pids.events"));
    sh(vm, "tessera container kill bomb");
    sh_until(vm, "tessera container list", SETTLE, |out| {
        out.lines()
            .any(|l| l.split_whitespace().next() == Some("bomb") && !l.contains("running"))
    });
    sh(vm, "tessera container rm bomb --force");
    assert!(events.starts_with("max "), "{events}");
}

fn denied_syscall_is_eperm(vm: &Vm, template: &str) {
    // On the node, as root, the kernel grants a new user namespace ...
    let on_node = sh(vm, "busybox unshare -U busybox true && echo granted");
    assert!(on_node.contains("granted"), "{on_node}");
    // ... and in a container the default seccomp profile refuses it.
    sh(
        vm,
        &format!("tessera container create sys --template {template} --start -- /bin/busybox sh -c 'grep Seccomp: /proc/self/status; /bin/busybox unshare -U /bin/true; echo status $?'"),
    );
    let logs = sh_until(vm, "tessera container logs sys", SETTLE, |out| {
        out.contains("status ")
    });
    assert!(
        logs.contains("Seccomp:\t2") || logs.contains("Seccomp: 2"),
        "{logs}"
    );
    assert!(logs.contains("Operation not permitted"), "EPERM: {logs}");
    assert!(logs.contains("stdout: status 1"), "{logs}");
}

fn sees_only_its_own_processes_and_files(vm: &Vm, template: &str) {
    sh(
        vm,
        &format!("tessera container create look --template {template} --start -- /bin/busybox sh -c 'echo PS; /bin/busybox ps -o pid,comm; echo LS $(ls /); ls /var/lib/tessera /sbin/tessera /etc/tessera 2>&1; echo END'"),
    );
    let logs = sh_until(vm, "tessera container logs look", SETTLE, |out| {
        out.contains("stdout: END")
    });
    let ps: Vec<&str> = logs
        .lines()
        .skip_while(|l| !l.ends_with("stdout: PS"))
        .skip(2)
        .take_while(|l| !l.contains("stdout: LS"))
        .filter_map(|l| l.split("stdout: ").nth(1))
        .collect();
    assert!(
        ps.first()
            .is_some_and(|l| l.split_whitespace().next() == Some("1")),
        "its shell is PID 1: {ps:?}\n{logs}"
    );
    assert!(ps.len() <= 2, "it sees other processes: {ps:?}");
    assert!(
        !logs.contains("tessera agent") && !logs.contains("certmgr"),
        "{logs}"
    );
    let ls = logs
        .lines()
        .find_map(|l| l.split("stdout: LS ").nth(1))
        .unwrap_or_else(|| panic!("{logs}"));
    let mut top: Vec<&str> = ls.split_whitespace().collect();
    top.sort_unstable();
    assert_eq!(top, ["bin", "dev", "etc", "proc", "sys", "tmp"], "{logs}");
    for path in ["/var/lib/tessera", "/sbin/tessera", "/etc/tessera"] {
        assert!(
            logs.contains(&format!("{path}: No such file or directory")),
            "{path} of the node is visible:\n{logs}"
        );
    }
}

fn hostile_archives_are_refused_and_leave_nothing(vm: &Vm, at: &[(u64, u64)], good_sha: &str) {
    let templates_before = sh(vm, "tessera container templates --json");
    let volumes_before = sh(vm, "tessera volume list --json");
    // The good bundle with a digest it does not have.
    let (good_at, good_len) = at[0];
    sh(
        vm,
        &format!(
            "dd if=/dev/vdd of=/tmp/good.tar bs=512 skip={good_at} count={good_len} 2>/dev/null"
        ),
    );
    let wrong = format!("sha256:{}", "0".repeat(64));
    assert_ne!(wrong, good_sha);
    let cases = HOSTILE
        .iter()
        .zip(&at[1..])
        .map(|((name, reason), (off, len))| (name.to_string(), *reason, Some((*off, *len))))
        .chain([(
            "digest".to_string(),
            "refused, the content is not what was asked for",
            None,
        )]);
    for (name, reason, place) in cases {
        let file = match place {
            Some((off, len)) => {
                sh(vm, &format!("dd if=/dev/vdd of=/tmp/{name}.tar bs=512 skip={off} count={len} 2>/dev/null"));
                format!("/tmp/{name}.tar")
            }
            None => "/tmp/good.tar --sha256 ".to_string() + &wrong,
        };
        let out = vm
            .run_command_status(
                &format!("tessera container import {file}"),
                Duration::from_secs(120),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(out.status, 0, "{name} was accepted:\n{}", out.output);
        assert!(
            out.output.contains(reason),
            "{name}: wanted {reason:?}, got:\n{}",
            out.output
        );
        assert_eq!(
            out.output.matches(reason).count(),
            1,
            "{name}: the reason is said once:\n{}",
            out.output
        );
    }
    assert_eq!(
        console_json(&sh(vm, "tessera container templates --json")),
        console_json(&templates_before),
        "a refused import left a template"
    );
    let names = |text: &str| -> Vec<String> {
        console_json(text)["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["name"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(
        names(&sh(vm, "tessera volume list --json")),
        names(&volumes_before),
        "a refused import left a volume"
    );
}

#[test]
fn containers_are_confined_and_hostile_archives_leave_nothing() {
    let dir = test_dir("container-isolation");
    let good = busybox_bundle(&dir);
    hostile_archives(&dir, &good);
    let mut files = vec![good.clone()];
    files.extend(HOSTILE.iter().map(|(n, _)| dir.join(format!("{n}.tar"))));
    let (carrier, at) = carrier_disk(&dir, &files);
    let vm = boot_node(&dir, vec![good.clone(), carrier]);
    let imported = sh(&vm, "tessera container import /dev/vdc");
    assert!(imported.contains("imported /dev/vdc (bundle"), "{imported}");
    let template = &only_template(&vm);

    memory_hog_is_oom_killed(&vm, template);
    fork_bomb_stops_at_pids_max(&vm, template);
    denied_syscall_is_eperm(&vm, template);
    sees_only_its_own_processes_and_files(&vm, template);
    hostile_archives_are_refused_and_leave_nothing(&vm, &at, &sha256_of(&good));
}
