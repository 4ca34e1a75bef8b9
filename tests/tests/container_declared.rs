//! End-to-end: containers declared in user-data and the node API's `/v1/containers`, in QEMU
//! on a real data disk. The image is the busybox bundle, served by a small HTTP server on the
//! host (10.0.2.2 from the VM) and named with its sha256, as an operator would publish it.
//!
//! - LVM thin: the node comes up with its declared workload and no operator action (fetched,
//!   imported, created, started); a declared container that crash-loops is given up after its
//!   intensity while the node and its sibling stay up; `tessera container exec` runs a command
//!   inside the running one; after a reboot, with the file server
//!   gone, the workload runs again from the template already on the disk.
//! - Btrfs, with a CA: an operator certificate drives containers through the node API with
//!   curl (list, templates, create, start, logs and logs?follow=1, stop, delete); a client
//!   without a certificate of the cluster gets nothing; after kill -9 of the agent the declared
//!   container still runs, and the restarted agent reports the same process.

#[path = "../../agents/userdata/tests/common/mod.rs"]
mod userdata_helpers;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tessera_e2e::bundle::{busybox_bundle, sha256_of, FileServer};
use tessera_e2e::ca::HostCa;
use tessera_e2e::curl::Curl;
use tessera_e2e::*;
use tessera_qemu::{BootMode, Vm};
use userdata_helpers::nocloud_seed;

const SETTLE: Duration = Duration::from_secs(180);

/// The row of `name` in `tessera container list`, once `pred` holds for it.
fn row_until(vm: &Vm, name: &str, pred: impl Fn(&str) -> bool) -> String {
    let list = sh_until(vm, "tessera container list", SETTLE, |out| {
        out.lines()
            .any(|l| l.split_whitespace().next() == Some(name) && pred(l))
    });
    list.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_default()
        .to_string()
}

fn declared(name: &str, url: &str, sha: &str, script: &str, extra: &str) -> String {
    format!("\n[[containers]]\nname = \"{name}\"\nimage = \"{url}\"\nsha256 = \"{sha}\"\nargs = [\"/bin/sh\", \"-c\", \"{script}\"]\n{extra}")
}

#[test]
fn lvm_thin_node_comes_up_with_its_declared_workload_gives_up_a_crash_loop_and_keeps_it_across_a_reboot(
) {
    let dir = test_dir("container-declared");
    let tar = busybox_bundle(&dir);
    let sha = sha256_of(&tar);
    let server = FileServer::start(&tar);
    let url = server.url_for_vm(&tar);
    let doc = format!(
        "version = 1\n\n[storage]\nbackend = \"lvm-thin\"\ndevice = \"/dev/vdb\"\n{}{}",
        declared(
            "ticker",
            &url,
            &sha,
            "echo boot $(cat /proc/sys/kernel/random/boot_id); while true; do echo tick; sleep 1; done",
            "memory_max = \"32M\"\n"
        ),
        declared("crashy", &url, &sha, "echo crash; exit 3", "restart = \"always\"\n"),
    );
    let disks = [nocloud_seed(&dir, &doc), data_disk(&dir, "3G")];
    let vm = boot_with_disks(
        &default_image(),
        BootMode::Kernel,
        "container-declared",
        &["tessera.imds=off"],
        &disks,
    );
    wait_ready(&vm, BootMode::Kernel);

    let ticker = row_until(&vm, "ticker", |l| l.contains("running"));
    assert!(ticker.contains("always"), "{ticker}");
    assert_eq!(
        server.served.load(Ordering::SeqCst),
        1,
        "one download for both containers of one image"
    );
    let logs = sh_until(&vm, "tessera container logs ticker", SETTLE, |out| {
        out.contains("stdout: tick")
    });
    let first_boot = logs
        .lines()
        .find_map(|l| l.split("stdout: boot ").nth(1))
        .unwrap_or_else(|| panic!("no boot line in {logs}"))
        .trim()
        .to_string();
    // The limit of the declaration is the container's.
    let inspect: serde_json::Value =
        serde_json::from_str(sh(&vm, "tessera container inspect ticker").trim()).unwrap();
    assert_eq!(inspect["declared"], true, "{inspect}");
    let cgroup = inspect["cgroup"]
        .as_str()
        .unwrap_or_else(|| panic!("no cgroup in {inspect}"))
        .to_string();
    let max = sh(&vm, &format!("cat {cgroup}/memory.max"));
    assert_eq!(max.trim(), (32u64 << 20).to_string());

    // exec: a command inside the running container, with its exit status.
    let out = sh(
        &vm,
        "tessera container exec ticker -e X=1 -- /bin/sh -c 'echo in $X; ls -d /proc/[0-9]* | wc -l'; echo rc=$?",
    );
    assert!(out.contains("in 1"), "{out}");
    let seen: usize = out
        .lines()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no process count in {out}"));
    assert!(seen <= 5, "exec sees the container's processes only: {out}");
    let out = sh(
        &vm,
        "tessera container exec ticker -- /bin/sh -c 'exit 3'; echo rc=$?",
    );
    assert!(out.contains("rc=3"), "{out}");

    // The crash loop is given up after its intensity; the node and the sibling stay up.
    let crashy = row_until(&vm, "crashy", |l| l.contains("failed"));
    assert!(crashy.contains("failed(3)"), "{crashy}");
    let agent_log = sh(&vm, "tessera logs container");
    assert!(
        agent_log
            .lines()
            .any(|l| l.contains("giving up") && l.contains("container=crashy")),
        "{agent_log}"
    );
    let inspect = sh(&vm, "tessera container inspect crashy");
    assert!(inspect.contains("restart intensity exceeded"), "{inspect}");
    row_until(&vm, "ticker", |l| l.contains("running"));
    let status = sh(&vm, "tessera status");
    assert!(status.contains("available"), "{status}");

    // Reboot with the server gone: the template on the disk is all the node needs.
    drop(server);
    vm.send_line("tessera poweroff").unwrap();
    let mut vm = vm;
    let exit = vm.wait_exit(Duration::from_secs(90)).unwrap();
    assert!(exit.is_clean_poweroff(), "{exit:?}");
    let console = vm.console();
    assert!(
        console.contains("container stopped for shutdown"),
        "containers are stopped before the agents they depend on"
    );
    let vm = boot_with_disks(
        &default_image(),
        BootMode::Kernel,
        "container-declared-again",
        &["tessera.imds=off"],
        &disks,
    );
    wait_ready(&vm, BootMode::Kernel);
    row_until(&vm, "ticker", |l| l.contains("running"));
    let logs = sh_until(&vm, "tessera container logs ticker", SETTLE, |out| {
        out.contains("stdout: boot ")
    });
    assert!(
        !logs.contains(&first_boot),
        "the log is of this boot's run: {logs}"
    );
    let agent_log = sh(&vm, "tessera logs container");
    assert!(
        !agent_log.contains("downloading image"),
        "nothing is fetched again: {agent_log}"
    );
    assert!(
        agent_log.contains("declared container started"),
        "{agent_log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_operator_drives_containers_through_the_node_api() {
    const NODE: &str = "ctr1.example";
    let dir = test_dir("container-api");
    let tar = busybox_bundle(&dir);
    let sha = sha256_of(&tar);
    let server = FileServer::start(&tar);
    let ca = HostCa::start("container-api");
    let token = ca.token(NODE);
    let doc = format!(
        "version = 1\n\n[node]\nhostname = \"{NODE}\"\n\n[ca]\nurl = \"https://10.0.2.2:{}\"\nfingerprint = \"{}\"\ntoken = \"{token}\"\n\n[storage]\nbackend = \"btrfs\"\ndevice = \"/dev/vdb\"\n{}",
        ca.port,
        ca.fingerprint,
        declared("hello", &server.url_for_vm(&tar), &sha, "while true; do echo hello; sleep 2; done", ""),
    );
    let port = free_port();
    let vm = boot_with_forwards_and_disks(
        "container-api",
        &["tessera.imds=off"],
        &[(port, 7443)],
        &[nocloud_seed(&dir, &doc), data_disk(&dir, "3G")],
    );
    wait_ready(&vm, BootMode::Kernel);
    let curl = Curl {
        port,
        state: ca.state.clone(),
        name: format!("node.{NODE}"),
    };
    let json = |t: &str| -> serde_json::Value {
        serde_json::from_str(t.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {t}"))
    };

    // The declared container, as the API lists it.
    let deadline = Instant::now() + SETTLE;
    let list = loop {
        let out = curl.run(true, &[], "/v1/containers");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("\"running\"") {
            break json(&text);
        }
        assert!(
            Instant::now() < deadline,
            "hello never ran: {text}\n{}",
            sh(&vm, "tessera status; tessera logs container | tail -n 30")
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    assert_eq!(list["containers"][0]["name"], "hello", "{list}");
    assert_eq!(list["containers"][0]["declared"], true, "{list}");
    let templates = json(&curl.ok(&[], "/v1/templates"));
    assert_eq!(templates["templates"][0]["digest"], sha, "{templates}");

    // Create, start, logs (whole, then followed to the end), stop, delete.
    let post = |path: &str, body: &str| {
        curl.status(
            &[
                "-X",
                "POST",
                "-H",
                "content-type: application/json",
                "--data",
                body,
            ],
            path,
        )
    };
    let (body, code) = post(
        "/v1/containers",
        &format!("{{\"name\":\"api1\",\"template\":\"{}\",\"args\":[\"/bin/sh\",\"-c\",\"echo from-api; sleep 4; echo done\"]}}", &sha[..19]),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["state"], "stopped", "{body}");
    let (body, code) = post(
        "/v1/containers",
        &format!("{{\"name\":\"api1\",\"template\":\"{sha}\"}}"),
    );
    assert_eq!(code, 409, "a second api1: {body}");
    assert_eq!(json(&body)["error"], "exists", "{body}");
    let (body, code) = post("/v1/containers/api1/start", "");
    assert_eq!(code, 200, "{body}");
    let followed = curl.ok(&["--max-time", "60"], "/v1/containers/api1/logs?follow=1");
    let messages: Vec<String> = followed
        .lines()
        .map(|l| json(l)["message"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(messages, ["from-api", "done"], "{followed}");
    let one = json(&curl.ok(&[], "/v1/containers/api1"));
    assert_eq!(one["state"], "exited", "{one}");
    assert_eq!(one["exit"]["code"], 0, "{one}");
    let tail = curl.ok(&[], "/v1/containers/api1/logs?tail=1");
    assert_eq!(tail.lines().count(), 1, "{tail}");
    assert!(tail.contains("\"done\""), "{tail}");

    let (body, code) = post(
        "/v1/containers",
        &format!("{{\"name\":\"api2\",\"template\":\"{sha}\",\"args\":[\"/bin/sleep\",\"300\"],\"start\":true}}"),
    );
    assert_eq!(code, 200, "{body}");
    let (body, code) = curl.status(&["-X", "DELETE"], "/v1/containers/api2");
    assert_eq!(
        code, 409,
        "a running container is not deleted without force: {body}"
    );
    let (body, code) = post("/v1/containers/api2/stop", "{\"grace_ms\":1000}");
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["state"], "exited", "{body}");
    for name in ["api1", "api2"] {
        let (body, code) = curl.status(&["-X", "DELETE"], &format!("/v1/containers/{name}"));
        assert_eq!(code, 200, "{body}");
    }
    let (body, code) = curl.status(&[], "/v1/containers/api2");
    assert_eq!(code, 404, "{body}");
    let volumes = sh(&vm, "tessera volume list");
    assert!(!volumes.contains("ctr-api"), "{volumes}");

    // kill -9 the agent: the container keeps running, and the agent PID 1 restarts finds it
    // again and reports it as before.
    let before = json(&curl.ok(&[], "/v1/containers/hello"));
    let agent = status_row(&sh(&vm, "tessera status"), "container")[3].clone();
    sh(&vm, &format!("kill -9 {agent}"));
    sh_until(&vm, "tessera status", SETTLE, |out| {
        let row = status_row(out, "container");
        row[2] == "ready" && row[3] != agent
    });
    let after = json(&curl.ok(&[], "/v1/containers/hello"));
    assert_eq!(after["state"], "running", "{after}");
    assert_eq!(
        after["pid"], before["pid"],
        "the same process: {before} {after}"
    );
    assert_eq!(after["restarts"], 0, "{after}");
    let alive = sh(&vm, &format!("kill -0 {} && echo alive", before["pid"]));
    assert!(alive.contains("alive"), "{alive}");

    // Without a certificate of the cluster: refused at the handshake.
    let out = curl.run(false, &[], "/v1/containers");
    assert!(!out.status.success(), "{out:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
