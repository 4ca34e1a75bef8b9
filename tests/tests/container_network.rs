//! End-to-end: container networking across two nodes on a private L2 network (a bridge and
//! two taps in a network namespace the test makes; static 192.168.77.21-22 from NoCloud
//! user-data). Node A's firewall admits only node B to the cluster scope; the test host, on
//! the bridge's 192.168.77.1, is outside it.
//!
//! On node A a container declared in user-data serves HTTP on port 80 of its bridged address
//! and publishes it three times: 8080 to the cluster, 8081 to the node only, 8082 to anyone.
//! A second container (made on the console) reaches the first over the node's container
//! bridge and node B over NAT, and has the node's name server in its resolv.conf. Each
//! published port answers exactly where its scope says; a stopped container's ports are
//! withdrawn and come back when it starts again.

#[path = "../../agents/userdata/tests/common/mod.rs"]
mod userdata_helpers;

use std::path::PathBuf;
use std::time::Duration;
use tessera_e2e::bundle::{busybox_bundle, sha256_of};
use tessera_e2e::*;
use tessera_qemu::Vm;
use userdata_helpers::nocloud_seed;

/// Two VMs booting at once under TCG on two cores, then a declared container: generous.
const SETTLE: Duration = Duration::from_secs(300);
const HOST_IP: &str = "192.168.77.1";
const A_IP: &str = "192.168.77.21";
const B_IP: &str = "192.168.77.22";
/// What the web container serves: its own /etc/passwd (busybox httpd -h /etc).
const SERVED: &str = "root:x:0:0:root:/:/bin/sh";

fn seed(dir: &std::path::Path, name: &str, address: &str, extra: &str) -> PathBuf {
    let doc = format!(
        "version = 1\n\n[node]\nhostname = \"{name}\"\n\n\
         [network]\ninterface = \"eth0\"\naddress = \"{address}/24\"\ndns = [\"{HOST_IP}\"]\n\n\
         [firewall]\ncluster_cidrs = [\"{B_IP}/32\"]\n\n\
         [storage]\nbackend = \"btrfs\"\ndevice = \"/dev/vdb\"\n{extra}"
    );
    nocloud_seed(dir, &doc)
}

/// An HTTP GET of `url` (`http://IP:PORT/PATH`) written with `nc` (Debian's static busybox
/// `wget` crashes in glibc's resolver even for an IP address), as a shell command; `nc` is
/// the program named.
fn get_command(nc: &str, url: &str) -> String {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (ip, port) = authority.split_once(':').unwrap_or((authority, "80"));
    format!("printf \"GET /{path} HTTP/1.0\\r\\n\\r\\n\" | {nc} -w 5 {ip} {port}")
}

/// The reply on a node's console, or `FAILED` if nothing answered within 5 s.
fn fetch(vm: &Vm, url: &str) -> String {
    let out = sh(vm, &format!("{} 2>&1; true", get_command("nc", url)));
    if out.contains("HTTP/1.") {
        out
    } else {
        "FAILED".into()
    }
}

/// `curl` from the test host on the private network's bridge.
fn fetch_from_host(net: &PrivateNet, url: &str) -> String {
    let out = net
        .command(std::path::Path::new("curl"))
        .args(["-s", "--max-time", "5", url])
        .output()
        .expect("run curl in the test's network namespace");
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        "FAILED".into()
    }
}

/// The container's address on the bridge, from `tessera container inspect`.
fn address_of(vm: &Vm, name: &str) -> String {
    let out = sh(vm, &format!("tessera container inspect {name}"));
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    v["address"].as_str().unwrap_or_default().to_string()
}

fn container_row(vm: &Vm, name: &str, word: &str) -> String {
    sh_until(vm, "tessera container list", SETTLE, |out| {
        out.lines()
            .any(|l| l.split_whitespace().next() == Some(name) && l.contains(word))
    })
}

#[test]
fn published_ports_answer_only_within_their_scope_and_containers_reach_out_through_nat() {
    let net = PrivateNet::new("tessera-ctn", &["tap0", "tap1"]);
    net.address_bridge(&format!("{HOST_IP}/24"));
    let dir_a = test_dir("ctn-a");
    let dir_b = test_dir("ctn-b");
    let tar = busybox_bundle(&dir_a);
    let declared = format!(
        "\n[[containers]]\nname = \"web\"\nimage = \"/dev/vdc\"\nsha256 = \"{sha}\"\n\
         args = [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/etc\"]\n\
         ports = [{{ host = 8080, container = 80, scope = \"cluster\" }}, \
         {{ host = 8081, container = 80, scope = \"node-local\" }}, \
         {{ host = 8082, container = 80, scope = \"public\" }}]\n",
        sha = sha256_of(&tar)
    );
    let a_disks = [
        seed(&dir_a, "ctn-a", A_IP, &declared),
        data_disk(&dir_a, "3G"),
        tar.clone(),
    ];
    let b_disks = [seed(&dir_b, "ctn-b", B_IP, ""), data_disk(&dir_b, "3G")];
    let a = boot_on_tap(
        &default_image(),
        "ctn-a",
        &net.netns,
        "tap0",
        "52:54:00:77:02:21",
        &["tessera.imds=off"],
        &a_disks,
    );
    let b = boot_on_tap(
        &default_image(),
        "ctn-b",
        &net.netns,
        "tap1",
        "52:54:00:77:02:22",
        &["tessera.imds=off"],
        &b_disks,
    );
    for vm in [&a, &b] {
        vm.wait_for("TESSERA-READY", SETTLE)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    // The declared container is up with an address of the default container network, and
    // the firewall holds its three publications.
    let row = container_row(&a, "web", "running");
    assert!(row.contains("running"), "{row}");
    assert_eq!(address_of(&a, "web"), "10.88.0.2");
    let fw = sh(&a, "tessera firewall show");
    for port in ["8080", "8081", "8082"] {
        assert!(
            fw.lines().any(|l| l.contains(port)
                && l.contains("10.88.0.2:80")
                && l.contains("container/web")),
            "publication of {port} missing:\n{fw}"
        );
    }
    assert!(
        fw.contains("container bridge: tessera0 10.88.0.0/24"),
        "{fw}"
    );

    // Node B is in A's cluster scope: cluster and public answer, node-local does not.
    assert!(fetch(&b, &format!("http://{A_IP}:8080/passwd")).contains(SERVED));
    assert!(fetch(&b, &format!("http://{A_IP}:8082/passwd")).contains(SERVED));
    assert_eq!(
        fetch(&b, &format!("http://{A_IP}:8081/passwd")).trim(),
        "FAILED"
    );
    // The test host is outside the cluster: only public answers.
    assert!(fetch_from_host(&net, &format!("http://{A_IP}:8082/passwd")).contains(SERVED));
    assert_eq!(
        fetch_from_host(&net, &format!("http://{A_IP}:8080/passwd")),
        "FAILED"
    );
    assert_eq!(
        fetch_from_host(&net, &format!("http://{A_IP}:8081/passwd")),
        "FAILED"
    );
    // Node A itself is in every scope, on its own address and on 127.0.0.1.
    assert!(fetch(&a, "http://127.0.0.1:8081/passwd").contains(SERVED));
    assert!(fetch(&a, &format!("http://{A_IP}:8080/passwd")).contains(SERVED));

    // A second container: over the bridge to the first, over NAT to node B (which has no
    // route to 10.88.0.0/24: only masquerade gets the reply back), the node's DNS server.
    sh(
        &b,
        "mkdir -p /tmp/www && echo hello-from-b > /tmp/www/index.html",
    );
    sh(&b, "tessera firewall expose 9000 --scope public");
    sh(&b, "busybox httpd -p 9000 -h /tmp/www");
    let digest = sha256_of(&tar);
    sh(
        &a,
        &format!("tessera container create client --template {digest} --start -- /bin/busybox sleep 3600"),
    );
    container_row(&a, "client", "running");
    let ip = sh(
        &a,
        "tessera container exec client -- /bin/busybox ip -4 addr show eth0",
    );
    assert!(ip.contains("inet 10.88.0.3/24"), "{ip}");
    let route = sh(&a, "tessera container exec client -- /bin/busybox ip route");
    assert!(route.contains("default via 10.88.0.1 dev eth0"), "{route}");
    let resolv = sh(
        &a,
        "tessera container exec client -- /bin/busybox cat /etc/resolv.conf",
    );
    assert!(
        resolv.contains(&format!("nameserver {HOST_IP}")),
        "{resolv}"
    );
    let in_client = |url: &str| {
        let get = get_command("/bin/busybox nc", url);
        sh(
            &a,
            &format!("tessera container exec client -- /bin/busybox sh -c '{get}'"),
        )
    };
    let direct = in_client("http://10.88.0.2:80/passwd");
    assert!(direct.contains(SERVED), "{direct}");
    let out = in_client(&format!("http://{B_IP}:9000/"));
    assert!(out.contains("hello-from-b"), "{out}");
    // A host port is one container's: a second claim is refused with the owner's name.
    let clash = sh(
        &a,
        &format!(
            "tessera container create other --template {digest} -p 8082:80@public 2>&1; echo rc=$?"
        ),
    );
    assert!(
        clash.contains("already published by container web") && clash.contains("rc=1"),
        "{clash}"
    );

    // Stopped: its ports are withdrawn. Started again: they are back.
    sh(&a, "tessera container stop web");
    let fw = sh(&a, "tessera firewall show");
    assert!(!fw.contains("container/web"), "{fw}");
    assert_eq!(
        fetch(&b, &format!("http://{A_IP}:8082/passwd")).trim(),
        "FAILED"
    );
    sh(&a, "tessera container start web");
    container_row(&a, "web", "running");
    assert!(fetch(&b, &format!("http://{A_IP}:8082/passwd")).contains(SERVED));
    assert_eq!(
        address_of(&a, "web"),
        "10.88.0.2",
        "the address is kept across a restart"
    );

    // Deleting frees the address and the publications; the node stays up.
    sh(&a, "tessera container rm --force client");
    let fw = sh(&a, "tessera firewall show");
    assert!(
        fw.contains("container/web") && !fw.contains("container/client"),
        "{fw}"
    );
    let status = sh(&a, "tessera status");
    assert!(
        status_row(&status, "container").contains(&"ready".to_string()),
        "{status}"
    );
}
