//! End-to-end: the component hub across three nodes. Three VMs on a private L2 network the test
//! makes (a bridge and three taps in a network namespace; static 192.168.77.11-13 from NoCloud
//! user-data, which also names the hub seeds and the cluster network), each certified by one CA
//! served inside that namespace on the bridge's address 192.168.77.1 (hubs only trust peers
//! of their own cluster CA). A component on node 1 joins group `web`; node 2 sees it; node 3
//! calls it through the hubs (gossip over UDP 7442, the call over the mTLS hub-to-hub link on
//! TCP 7441) and gets node 1's reply; node 1 loses power, and node 3's monitor reports the
//! member gone once the failure detector notices.

#[path = "../../agents/userdata/tests/common/mod.rs"]
mod userdata_helpers;

use std::path::PathBuf;
use std::time::Duration;
use tessera_e2e::ca::HostCa;
use tessera_e2e::*;
use tessera_qemu::Vm;
use userdata_helpers::fat_image;

/// Three VMs booting at once under TCG on two cores, then gossip and certificates: generous.
const SETTLE: Duration = Duration::from_secs(300);
const CA_IP: &str = "192.168.77.1";
const NODES: [(&str, &str, &str, &str); 3] = [
    ("hub-n1", "tap0", "52:54:00:77:01:11", "192.168.77.11"),
    ("hub-n2", "tap1", "52:54:00:77:01:12", "192.168.77.12"),
    ("hub-n3", "tap2", "52:54:00:77:01:13", "192.168.77.13"),
];

/// A NoCloud volume: the node's name, address, CA and token, the cluster network and the
/// seeds (the same list on every node; a hub leaves itself out).
fn seed(ca: &HostCa, name: &str, address: &str) -> PathBuf {
    let dir = repo_root().join("out/e2e-seeds").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the seed directory");
    let seeds: Vec<String> = NODES.iter().map(|n| format!("\"{}\"", n.3)).collect();
    let doc = format!(
        "version = 1\n\n[node]\nhostname = \"{name}\"\ncluster = \"prod\"\n\n\
         [ca]\nurl = \"https://{CA_IP}:{port}\"\nfingerprint = \"{fp}\"\ntoken = \"{token}\"\n\n\
         [firewall]\ncluster_cidrs = [\"192.168.77.0/24\"]\n\n\
         [hub]\nseeds = [{seeds}]\n\n\
         [network]\ninterface = \"eth0\"\naddress = \"{address}/24\"\n",
        port = ca.port,
        fp = ca.fingerprint,
        token = ca.token(name),
        seeds = seeds.join(", "),
    );
    fat_image(
        &dir,
        "seed.img",
        2,
        &["-n", "CIDATA"],
        &[("user-data", doc.as_bytes()), ("meta-data", b"")],
    )
}

/// Waits until the hub service is ready (it may still be fetching its certificate).
fn hub_ready(vm: &Vm) {
    sh_until(vm, "tessera status", SETTLE, |s| {
        s.lines()
            .skip_while(|l| !l.starts_with("SERVICE "))
            .any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.first() == Some(&"hub") && cols.get(2) == Some(&"ready")
            })
    });
}

#[test]
fn a_member_on_node1_is_called_from_node3_and_its_power_loss_fires_node3s_monitor() {
    let net = PrivateNet::new("tessera-hub", &["tap0", "tap1", "tap2"]);
    net.address_bridge(&format!("{CA_IP}/24"));
    let mut ca = HostCa::init_with_sans("hub-cluster", &[CA_IP]);
    ca.serve_in(&net, CA_IP);

    let mut vms: Vec<Vm> = NODES
        .iter()
        .map(|(name, tap, mac, address)| {
            boot_on_tap(
                &default_image(),
                name,
                &net.netns,
                tap,
                mac,
                &["tessera.imds=off"],
                &[seed(&ca, name, address)],
            )
        })
        .collect();
    for vm in &vms {
        vm.wait_for("TESSERA-READY", SETTLE)
            .unwrap_or_else(|e| panic!("{e}"));
        hub_ready(vm);
    }
    let (n1, n2, n3) = (&vms[0], &vms[1], &vms[2]);

    // Each hub holds a certificate of the cluster CA for subsystem hub, named after its node.
    let logs = sh(n1, "tessera logs hub");
    assert!(logs.contains("hub ready"), "{logs}");
    assert!(logs.contains("192.168.77.11:7442"), "{logs}");

    // Node 1: a component in group web, in the background, its lines in a file.
    sh(
        n1,
        "tessera hub component serve --group web --name web-1 >/tmp/serve.log 2>&1 &",
    );
    let serving = sh_until(n1, "cat /tmp/serve.log", SETTLE, |l| {
        l.contains("SERVING ") || l.contains("rror")
    });
    assert!(
        serving.contains("name=web-1 node=hub-n1 groups=web:1"),
        "{serving}"
    );

    // Node 2 sees node 1's member through gossip.
    let members = sh_until(
        n2,
        "tessera hub component select web 2>&1; true",
        SETTLE,
        |l| l.contains("MEMBER group=web"),
    );
    assert!(
        members.contains("GROUP group=web members=1")
            && members.contains("name=web-1 type=console node=hub-n1"),
        "{members}"
    );

    // Node 3 calls the group: one member, on node 1, answers through the hub-to-hub link.
    let reply = sh_until(
        n3,
        "tessera hub component call group:web echo --object o --inputs '\"ping\"' 2>&1; echo rc=$?",
        SETTLE,
        |l| l.contains("REPLY ") || l.contains("rc=0"),
    );
    assert!(
        reply.contains(r#""reply":"hello from hub-n1""#)
            && reply.contains(r#""inputs":"ping""#)
            && reply.contains("rc=0"),
        "{reply}"
    );
    let served = sh(n1, "cat /tmp/serve.log");
    assert!(
        served.contains("INVOKED caller=local:")
            && served.contains("@hub-n3 operation=echo object=o"),
        "{served}"
    );

    // A bad call is refused with the cause and the fix, and the member is still there.
    let bad = sh(
        n3,
        "tessera hub component call web echo --inputs 'not json' 2>&1; echo rc=$?",
    );
    assert!(bad.contains("is not JSON") && bad.contains("rc=1"), "{bad}");

    // Node 3 monitors group web; then node 1 loses power (QEMU killed: no goodbye).
    sh(
        n3,
        "tessera hub component monitor --group web >/tmp/monitor.log 2>&1 &",
    );
    let monitoring = sh_until(n3, "cat /tmp/monitor.log", SETTLE, |l| {
        l.contains("MONITORING") || l.contains("rror")
    });
    assert!(
        monitoring.contains("MONITORING group=web members=1"),
        "{monitoring}"
    );
    let killed = std::time::Instant::now();
    vms[0].kill();
    let (n2, n3) = (&vms[1], &vms[2]);
    let left = sh_until(n3, "cat /tmp/monitor.log", SETTLE, |l| {
        l.contains("MEMBER-LEFT") || l.contains("rror")
    });
    // A figure for the README, not an assertion (TCG and a shared machine set the pace).
    eprintln!(
        "HUB-E2E member_left_seen_after_ms={} hub_memory_peak_bytes={}",
        killed.elapsed().as_millis(),
        sh(n2, "cat /sys/fs/cgroup/services/hub/memory.peak").trim()
    );
    assert!(
        left.contains("MEMBER-LEFT group=web component=")
            && left.contains("name=web-1 type=console node=hub-n1"),
        "{left}"
    );
    // Node 2 agrees: no member left in web.
    let after = sh_until(
        n2,
        "tessera hub component select web 2>&1; true",
        SETTLE,
        |l| !l.contains("MEMBER group=web"),
    );
    assert!(after.contains("GROUP group=web members=0"), "{after}");
    drop(vms);
    drop(ca);
}
