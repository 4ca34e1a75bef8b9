//! End-to-end: the firewall service of the default image. One VM: the table `inet tessera`
//! with policy drop is what `nft list ruleset` shows, a ruleset the kernel refuses leaves the
//! one in force untouched, and `tessera firewall expose|unexpose` change it (and survive a
//! restart of the service). From the host through a forwarded port (QEMU's user network,
//! source 10.0.2.2, outside any cluster network): a public port answers, a cluster one does
//! not. Two VMs on a private L2 network the test makes (a bridge and two
//! taps in a network namespace, static 192.168.77.x from NoCloud user-data): a cluster-scoped
//! port is reachable from the peer, a node-local one is not, an unexposed one is dropped.

#[path = "../../agents/userdata/tests/common/mod.rs"]
mod userdata_helpers;

use std::path::PathBuf;
use std::time::Duration;
use tessera_e2e::*;
use tessera_qemu::{BootMode, Vm};
use userdata_helpers::fat_image;

fn booted(name: &str) -> Vm {
    let vm = boot(&default_image(), BootMode::Kernel, name, &[]);
    wait_ready(&vm, BootMode::Kernel);
    vm
}

/// Waits until the firewall service is ready (it settles with the others before
/// TESSERA-READY, but it may be restarting).
fn firewall_ready(vm: &Vm) {
    sh_until(vm, "tessera status", Duration::from_secs(60), |s| {
        s.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.first() == Some(&"firewall") && cols.get(2) == Some(&"ready")
        })
    });
}

#[test]
fn the_table_inet_tessera_drops_inbound_by_default() {
    let vm = booted("firewall-table");
    firewall_ready(&vm);
    let ruleset = sh(&vm, "nft list ruleset");
    assert!(ruleset.contains("table inet tessera {"), "{ruleset}");
    assert!(
        ruleset.contains("type filter hook input priority filter; policy drop;"),
        "{ruleset}"
    );
    for rule in [
        "iifname \"lo\" accept",
        "ct state established,related accept",
        "udp sport 67 udp dport 68 accept",
    ] {
        assert!(ruleset.contains(rule), "no `{rule}` in:\n{ruleset}");
    }
    let show = sh(&vm, "tessera firewall show");
    assert!(
        show.contains("chain input (hook input, policy drop)"),
        "{show}"
    );
    // The node API's port and the hub's three are fixed by the image (image/firewall.toml).
    assert!(show.contains("exposures: 4"), "{show}");
    assert!(
        show.contains("tcp   7443   public      node-api (fixed by the image)"),
        "{show}"
    );
    assert!(ruleset.contains("tcp dport 7443 accept"), "{ruleset}");
    assert!(
        show.contains("udp   7442   cluster     hub-gossip (fixed by the image)"),
        "{show}"
    );
    // The node still works through it: DHCP gave it its address (replies are let in).
    let addr = sh(&vm, "ip -4 addr show dev eth0");
    assert!(addr.contains("inet 10.0.2.15/24"), "{addr}");
}

#[test]
fn a_refused_ruleset_leaves_the_previous_one_in_force() {
    let vm = booted("firewall-refused");
    firewall_ready(&vm);
    let before = sh(&vm, "nft -j list table inet tessera");
    // The service's own transaction (delete and rebuild the whole table), with one rule
    // changed to use an expression the kernel cannot load (nft_log is not in the image):
    // the kernel refuses the batch after the table's deletion was queued.
    sh(&vm, "tessera firewall ruleset > /tmp/good.json");
    sh(
        &vm,
        "sed 's/{\"accept\": *null}/{\"log\":{\"prefix\":\"x\"}},{\"accept\":null}/' /tmp/good.json > /tmp/bad.json",
    );
    let bad = sh(&vm, "cat /tmp/bad.json");
    assert!(
        bad.contains("\"delete\":{\"table\"") && bad.contains("\"log\""),
        "{bad}"
    );
    let refused = sh(&vm, "nft -j -f /tmp/bad.json; echo rc=$?");
    assert!(!refused.contains("rc=0"), "nft accepted it:\n{refused}");
    let after = sh(&vm, "nft -j list table inet tessera");
    assert_eq!(
        before, after,
        "the table changed although the transaction was refused"
    );
    // The same transaction unchanged is accepted: the refusal was the log expression.
    let good = sh(&vm, "nft -j -f /tmp/good.json; echo rc=$?");
    assert!(good.contains("rc=0"), "{good}");
}

#[test]
fn expose_and_unexpose_change_the_ruleset_and_survive_a_restart() {
    let vm = booted("firewall-expose");
    firewall_ready(&vm);
    let out = sh(
        &vm,
        "tessera firewall expose 8080 --scope public --owner e2e",
    );
    assert!(out.contains("exposed tcp/8080 to public"), "{out}");
    sh(&vm, "tessera firewall expose 5353/udp --scope node-local");
    let ruleset = sh(&vm, "nft list table inet tessera");
    assert!(ruleset.contains("tcp dport 8080 accept"), "{ruleset}");
    assert!(
        ruleset.contains("iifname \"lo\" udp dport 5353 accept"),
        "{ruleset}"
    );
    let show = sh(&vm, "tessera firewall show");
    assert!(show.contains("exposures: 6"), "{show}");
    assert!(show.contains("tcp   8080   public      e2e"), "{show}");

    // Bad input is refused by field, and nothing changes.
    let bad = sh(
        &vm,
        "tessera firewall expose 70000 --scope public 2>&1; echo rc=$?",
    );
    assert!(
        bad.contains("port: 70000 is not a port") && bad.contains("rc=1"),
        "{bad}"
    );
    let bad = sh(
        &vm,
        "tessera firewall expose 81 --scope world 2>&1; echo rc=$?",
    );
    assert!(
        bad.contains("--scope: `world` is not a scope") && bad.contains("rc=1"),
        "{bad}"
    );

    let fixed = sh(&vm, "tessera firewall unexpose 7443 2>&1; echo rc=$?");
    assert!(
        fixed.contains("fixed by the image") && fixed.contains("rc=1"),
        "{fixed}"
    );

    sh(&vm, "tessera service restart firewall");
    firewall_ready(&vm);
    let ruleset = sh(&vm, "nft list table inet tessera");
    assert!(
        ruleset.contains("tcp dport 8080 accept"),
        "exposure lost in a restart:\n{ruleset}"
    );

    let out = sh(&vm, "tessera firewall unexpose 8080");
    assert!(out.contains("unexposed tcp/8080"), "{out}");
    let ruleset = sh(&vm, "nft list table inet tessera");
    assert!(!ruleset.contains("dport 8080"), "{ruleset}");
    assert!(ruleset.contains("udp dport 5353"), "{ruleset}");
    let logs = sh(&vm, "tessera logs firewall");
    assert!(logs.contains("unexposed"), "{logs}");
}

/// What a host client gets from a forwarded port within a few seconds (QEMU's user network
/// accepts on the host side at once and only then connects to the guest).
fn host_read(port: u16) -> String {
    use std::io::Read;
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(6)));
    let mut got = Vec::new();
    let _ = conn.read_to_end(&mut got);
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn from_outside_the_cluster_a_public_port_answers_and_a_cluster_port_does_not() {
    // The host reaches the guest from 10.0.2.2, which is in no cluster network here.
    let port = free_port();
    let vm = boot_with_forwards("firewall-scopes", &[], &[(port, 8080)]);
    wait_ready(&vm, BootMode::Kernel);
    firewall_ready(&vm);
    sh(&vm, "nc -ll -p 8080 -e /bin/hostname >/dev/null 2>&1 &");
    sh(&vm, "tessera firewall expose 8080 --scope cluster");
    let cluster = host_read(port);
    assert!(
        !cluster.contains("tessera"),
        "a cluster port answered a source outside the cluster: {cluster:?}"
    );
    sh(&vm, "tessera firewall expose 8080 --scope public");
    let public = host_read(port);
    assert!(
        public.contains("tessera"),
        "the public port did not answer: {public:?}"
    );
    sh(&vm, "tessera firewall unexpose 8080");
    let closed = host_read(port);
    assert!(
        !closed.contains("tessera"),
        "the unexposed port answered: {closed:?}"
    );
}

fn seed(name: &str, address: &str) -> PathBuf {
    let dir = repo_root().join("out/e2e-seeds").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the seed directory");
    let doc = format!(
        "version = 1\n\n[node]\nhostname = \"{name}\"\n\n[firewall]\ncluster_cidrs = [\"192.168.77.0/24\"]\n\n\
         [network]\ninterface = \"eth0\"\naddress = \"{address}\"\n"
    );
    fat_image(
        &dir,
        "seed.img",
        2,
        &["-n", "CIDATA"],
        &[("user-data", doc.as_bytes()), ("meta-data", b"")],
    )
}

fn boot_on(net: &PrivateNet, name: &str, tap: &str, mac: &str, address: &str) -> Vm {
    boot_on_tap(
        &default_image(),
        name,
        &net.netns,
        tap,
        mac,
        &["tessera.imds=off"],
        &[seed(name, address)],
    )
}

/// `nc` from `vm` to `addr:port`; what it printed and its exit status.
fn connect(vm: &Vm, addr: &str, port: u16) -> String {
    sh(
        vm,
        &format!("echo hi | timeout 8 nc -w 4 {addr} {port} 2>&1; echo rc=$?"),
    )
}

#[test]
fn cluster_ports_are_reachable_from_the_peer_node_local_and_unexposed_ones_are_not() {
    let net = PrivateNet::new("tessera-fw", &["tap0", "tap1"]);
    let a = boot_on(
        &net,
        "fw-a",
        "tap0",
        "52:54:00:77:00:0a",
        "192.168.77.10/24",
    );
    let b = boot_on(
        &net,
        "fw-b",
        "tap1",
        "52:54:00:77:00:0b",
        "192.168.77.11/24",
    );
    wait_ready(&a, BootMode::Kernel);
    wait_ready(&b, BootMode::Kernel);
    firewall_ready(&a);
    firewall_ready(&b);
    let show = sh(&a, "tessera firewall show");
    assert!(show.contains("cluster networks: 192.168.77.0/24"), "{show}");

    // Servers on A answering with its host name: cluster, node-local and unexposed ports.
    for port in [8080, 9090, 7070] {
        sh(
            &a,
            &format!("nc -ll -p {port} -e /bin/hostname >/dev/null 2>&1 &"),
        );
    }
    sh(
        &a,
        "tessera firewall expose 8080 --scope cluster --owner e2e",
    );
    sh(
        &a,
        "tessera firewall expose 9090 --scope node-local --owner e2e",
    );

    // The L2 network works both ways (ICMP echo is essential, so it passes).
    let ping = sh(&b, "ping -c 2 -W 2 192.168.77.10; echo rc=$?");
    assert!(ping.contains("rc=0"), "{ping}");

    let cluster = connect(&b, "192.168.77.10", 8080);
    assert!(
        cluster.contains("fw-a") && cluster.contains("rc=0"),
        "cluster port 8080 not reachable from the peer:\n{cluster}"
    );
    let local = connect(&b, "192.168.77.10", 9090);
    assert!(
        !local.contains("fw-a") && !local.contains("rc=0"),
        "node-local port 9090 reachable from the peer:\n{local}"
    );
    assert!(
        local.contains("timed out"),
        "9090 was not dropped (nc did not time out):\n{local}"
    );
    let closed = connect(&b, "192.168.77.10", 7070);
    assert!(
        !closed.contains("fw-a") && !closed.contains("rc=0"),
        "unexposed port 7070 reachable from the peer:\n{closed}"
    );
    assert!(
        closed.contains("timed out"),
        "7070 was not dropped (nc did not time out):\n{closed}"
    );
    // The node-local port does answer on the node itself.
    let own = connect(&a, "127.0.0.1", 9090);
    assert!(own.contains("fw-a") && own.contains("rc=0"), "{own}");
    drop((a, b));
}
