//! End-to-end: the container agent in QEMU on a real data disk, both backends. The test builds
//! an OCI runtime bundle from Debian's busybox-static (config.json from the agent's default
//! spec), hands it to the node as a raw disk (/dev/vdc: the tar's bytes, a multiple of 512),
//! and drives `tessera container` on the console the way an operator would: import (twice: the
//! second is a no-op), two instances of one template that write the same path and each see
//! only their own, their output in `tessera container logs`, the process alone in its PID
//! namespace, delete freeing the snapshot. Without a data disk the agent is ready and says why
//! containers are unavailable.

#[path = "../../agents/userdata/tests/common/mod.rs"]
mod userdata_helpers;

use std::path::Path;
use std::time::Duration;
use tessera_e2e::bundle::busybox_bundle;
use tessera_e2e::*;
use tessera_qemu::{BootMode, Vm};
use userdata_helpers::nocloud_seed;

const SETTLE: Duration = Duration::from_secs(120);

fn boot_node(name: &str, dir: &Path, storage: Option<&str>) -> Vm {
    let doc = match storage {
        Some(s) => format!("version = 1\n\n[storage]\n{s}"),
        None => "version = 1\n".to_string(),
    };
    let seed = nocloud_seed(dir, &doc);
    let data = data_disk(dir, "3G");
    let tar = busybox_bundle(dir);
    let vm = boot_with_disks(
        &default_image(),
        BootMode::Kernel,
        name,
        &[],
        &[seed, data, tar],
    );
    wait_ready(&vm, BootMode::Kernel);
    sh_until(&vm, "tessera status", SETTLE, |s| {
        s.lines()
            .any(|l| l.split_whitespace().next() == Some("container") && l.contains(" ready"))
    });
    vm
}

/// Waits until the container has exited and returns `tessera container list`.
fn exited(vm: &Vm, name: &str) -> String {
    sh_until(vm, "tessera container list", SETTLE, |out| {
        out.lines()
            .any(|l| l.split_whitespace().next() == Some(name) && l.contains("exited"))
    })
}

fn run_two_instances(backend: &str, storage: &str) {
    let dir = test_dir(&format!("container-{backend}"));
    let vm = boot_node(&format!("container-{backend}"), &dir, Some(storage));

    let first = sh(&vm, "tessera container import /dev/vdc");
    assert!(first.contains("imported /dev/vdc (bundle"), "{first}");
    let again = sh(&vm, "tessera container import /dev/vdc");
    assert!(again.contains("already imported"), "{again}");
    let templates = console_json(&sh(&vm, "tessera container templates --json"));
    let template = &templates["templates"][0];
    let digest = template["digest"]
        .as_str()
        .expect("a template digest")
        .to_string();
    let template_path = template["path"].as_str().expect("its path").to_string();
    assert_eq!(
        templates["templates"].as_array().map(Vec::len),
        Some(1),
        "{templates}"
    );

    // Two instances of one template write the same path.
    for (name, word) in [("a", "alpha"), ("b", "beta")] {
        sh(
            &vm,
            &format!(
                "tessera container create {name} --template {} --start -- /bin/sh -c 'echo {word} > /shared.txt; cat /shared.txt; echo pid1 $$; echo pids $(ls -d /proc/[0-9]* | wc -l); hostname; echo oops >&2'",
                &digest[7..19]
            ),
        );
    }
    // wait blocks until the run ends and passes its status on; a container never started is
    // refused with the fix.
    let short = &digest[7..19];
    sh(
        &vm,
        &format!(
            "tessera container create c --template {short} --start -- /bin/sh -c 'sleep 1; exit 3'"
        ),
    );
    let waited = sh(&vm, "tessera container wait c; echo status=$?");
    assert!(
        waited.contains("3\nstatus=3") || waited.contains("3\r\nstatus=3"),
        "{waited}"
    );
    sh(
        &vm,
        &format!("tessera container create d --template {short} -- /bin/true"),
    );
    let refused = sh(&vm, "tessera container wait d; echo status=$?");
    assert!(
        refused.contains("has not been started") && refused.contains("status=1"),
        "{refused}"
    );
    sh(&vm, "tessera container rm c; tessera container rm d");
    // Both have ended and the agent has forwarded their output (stderr included).
    for name in ["a", "b"] {
        exited(&vm, name);
        sh_until(&vm, "tessera logs container", SETTLE, |out| {
            out.contains(&format!("oops container={name}"))
        });
    }
    for (name, word) in [("a", "alpha"), ("b", "beta")] {
        let list = exited(&vm, name);
        let row = list
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap();
        assert!(row.contains("exited(0)"), "{list}");
        let logs = sh(&vm, &format!("tessera container logs {name}"));
        assert!(logs.contains(&format!("stdout: {word}")), "{logs}");
        // Alone in its PID namespace: its shell is PID 1, and /proc shows only the shell and
        // the few processes of its command substitution (the node runs dozens).
        assert!(logs.contains("stdout: pid1 1"), "{logs}");
        let pids: usize = logs
            .lines()
            .find_map(|l| l.split("stdout: pids ").nth(1))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no pids line in {logs}"));
        assert!(pids <= 4, "the container sees {pids} processes:\n{logs}");
        assert!(logs.contains(&format!("stdout: {name}")), "{logs}");
        assert!(logs.contains("stderr: oops"), "{logs}");
        let inspect = console_json(&sh(&vm, &format!("tessera container inspect {name}")));
        let bundle = inspect["record"]["bundle"]
            .as_str()
            .expect("bundle")
            .to_string();
        let seen = sh(&vm, &format!("cat {bundle}/rootfs/shared.txt"));
        assert_eq!(seen.trim(), word, "{name} sees only its own write");
    }
    // The template is untouched.
    let out = sh(
        &vm,
        &format!("[ -e {template_path}/rootfs/shared.txt ] && echo present || echo absent"),
    );
    assert_eq!(
        out.trim(),
        "absent",
        "the template was written through an instance"
    );
    // The agent's log has each container's output under its name.
    let agent_log = sh(&vm, "tessera logs container");
    assert!(agent_log.contains("alpha container=a"), "{agent_log}");

    // Delete frees the snapshot; the template stays.
    sh(&vm, "tessera container rm a");
    let volumes = sh(&vm, "tessera volume list");
    assert!(!volumes.contains("ctr-a"), "{volumes}");
    assert!(
        volumes.contains("ctr-b") && volumes.contains("tpl-"),
        "{volumes}"
    );
    let list = sh(&vm, "tessera container list");
    assert!(!list.lines().any(|l| l.starts_with("a ")), "{list}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn btrfs_two_instances_of_one_template_see_only_their_own_writes() {
    run_two_instances("btrfs", "backend = \"btrfs\"\ndevice = \"/dev/vdb\"\n");
}

#[test]
fn lvm_thin_two_instances_of_one_template_see_only_their_own_writes() {
    run_two_instances("lvm", "backend = \"lvm-thin\"\ndevice = \"/dev/vdb\"\n");
}

#[test]
fn without_a_data_disk_the_agent_is_ready_and_says_why_containers_are_unavailable() {
    let dir = test_dir("container-nodisk");
    let vm = boot_node("container-nodisk", &dir, None);
    let st = sh(&vm, "tessera status");
    assert!(st.contains("containers unavailable"), "{st}");
    let out = vm
        .run_command(
            "tessera container list; echo rc=$?",
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.contains("unavailable") && out.contains("[storage]"),
        "{out}"
    );
    assert!(out.contains("rc=1"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
