//! `make demo` (NODES=3, the default): the whole mission on this machine. Three nodes boot in
//! QEMU on a private bridge (a network namespace with one tap per node; nothing reaches any
//! outside address) against one local cluster CA served on the bridge. Node 1 gets its
//! one-time token on the kernel command line, as PXE gives it; nodes 2 and 3 get theirs in
//! NoCloud user-data. Each node has a blank data disk and declares one container in
//! user-data: a component of the component hub (the node's own static `tessera` binary in a
//! busybox bundle, with the node's hub socket bound in). Once all three are up, node 3 calls
//! the component in node 1's container through the hubs, the demo prints the CA's ledger, and
//! the cluster powers off. `make demo NODES=1` runs the single-node demo instead
//! (scripts/demo.sh).

#[path = "../../../agents/userdata/tests/common/mod.rs"]
mod userdata_helpers;

use std::time::{Duration, Instant};

use tessera_e2e::bundle::{component_bundle, sha256_of};
use tessera_e2e::ca::HostCa;
use tessera_e2e::{boot_on_tap, data_disk, default_image, repo_root, sh_until, PrivateNet};
use tessera_qemu::Vm;
use userdata_helpers::nocloud_seed;

const CA_IP: &str = "192.168.77.1";
/// Name, tap, MAC, address.
const NODES: [(&str, &str, &str, &str); 3] = [
    ("demo-n1", "tap0", "52:54:00:77:03:11", "192.168.77.11"),
    ("demo-n2", "tap1", "52:54:00:77:03:12", "192.168.77.12"),
    ("demo-n3", "tap2", "52:54:00:77:03:13", "192.168.77.13"),
];
/// Three nodes booting at once under TCG on two cores, then keys and gossip.
const SETTLE: Duration = Duration::from_secs(300);

fn say(started: Instant, what: &str) {
    eprintln!("[demo {:>5.1}s] {what}", started.elapsed().as_secs_f64());
}

/// The node's user-data: its address, the cluster network and hub seeds, the data disk, the
/// declared component container, and (`with_ca`) the CA with the node's token.
fn user_data(ca: &HostCa, name: &str, address: &str, sha256: &str, with_ca: bool) -> String {
    let seeds: Vec<String> = NODES.iter().map(|n| format!("\"{}\"", n.3)).collect();
    let ca_section = if with_ca {
        format!(
            "[ca]\nurl = \"https://{CA_IP}:{}\"\nfingerprint = \"{}\"\ntoken = \"{}\"\n\n",
            ca.port,
            ca.fingerprint,
            ca.token(name)
        )
    } else {
        String::new()
    };
    format!(
        "version = 1\n\n[node]\nhostname = \"{name}\"\ncluster = \"prod\"\n\n{ca_section}\
         [network]\ninterface = \"eth0\"\naddress = \"{address}/24\"\n\n\
         [firewall]\ncluster_cidrs = [\"192.168.77.0/24\"]\n\n\
         [hub]\nseeds = [{seeds}]\n\n\
         [storage]\nbackend = \"btrfs\"\ndevice = \"/dev/vdb\"\n\n\
         [[containers]]\nname = \"web\"\nimage = \"/dev/vdc\"\nsha256 = \"{sha256}\"\nhub = true\n\
         args = [\"/sbin/tessera\", \"hub\", \"component\", \"serve\", \"--group\", \"web\", \
         \"--group\", \"at-{name}\", \"--name\", \"web-{name}\"]\n",
        seeds = seeds.join(", "),
    )
}

fn main() {
    let started = Instant::now();
    let image = default_image();
    let work = repo_root().join("out/demo/cluster");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("create out/demo/cluster");

    let net = PrivateNet::new("tessera-demo", &["tap0", "tap1", "tap2"]);
    net.address_bridge(&format!("{CA_IP}/24"));
    let mut ca = HostCa::init_with_sans("demo", &[CA_IP]);
    ca.serve_in(&net, CA_IP);
    say(
        started,
        &format!(
            "cluster CA {} serving on {CA_IP}:{} in network namespace {}",
            ca.fingerprint, ca.port, net.netns
        ),
    );
    let bundle = component_bundle(&work);
    let sha = sha256_of(&bundle);
    say(
        started,
        &format!("component bundle {sha} (busybox + the node's tessera binary)"),
    );

    let vms: Vec<Vm> = NODES
        .iter()
        .enumerate()
        .map(|(i, (name, tap, mac, address))| {
            let dir = work.join(name);
            std::fs::create_dir_all(&dir).expect("create a node directory");
            let on_cmdline = i == 0;
            let doc = user_data(&ca, name, address, &sha, !on_cmdline);
            let mut append = vec!["tessera.imds=off".to_string()];
            if on_cmdline {
                append.extend([
                    format!("tessera.ca=https://{CA_IP}:{}", ca.port),
                    format!("tessera.ca_fp={}", ca.fingerprint),
                    format!("tessera.token={}", ca.token(name)),
                ]);
            }
            let append: Vec<&str> = append.iter().map(String::as_str).collect();
            // A disk is one VM's (QEMU locks it): each node reads its own copy of the bundle.
            let bundle_disk = dir.join("bundle.tar");
            std::fs::copy(&bundle, &bundle_disk).expect("copy the bundle for the node");
            let disks = [nocloud_seed(&dir, &doc), data_disk(&dir, "3G"), bundle_disk];
            say(
                started,
                &format!(
                    "booting {name} ({address}), token {}",
                    if on_cmdline {
                        "on the kernel command line"
                    } else {
                        "in NoCloud user-data"
                    }
                ),
            );
            boot_on_tap(&image, name, &net.netns, tap, mac, &append, &disks)
        })
        .collect();

    for (vm, (name, ..)) in vms.iter().zip(NODES) {
        let line = vm
            .wait_for("TESSERA-READY", SETTLE)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let ready = line
            .lines()
            .rev()
            .find(|l| l.contains("TESSERA-READY"))
            .unwrap_or("");
        say(started, &format!("{name}: {}", ready.trim()));
    }
    for (vm, (name, ..)) in vms.iter().zip(NODES) {
        sh_until(vm, "tessera container list", SETTLE, |out| {
            out.lines()
                .any(|l| l.starts_with("web ") && l.contains("running"))
        });
        let served = sh_until(vm, "tessera container logs web", SETTLE, |l| {
            l.contains("SERVING ")
        });
        let serving = served
            .lines()
            .find(|l| l.contains("SERVING "))
            .unwrap_or("");
        say(
            started,
            &format!("{name}: declared container web running: {}", serving.trim()),
        );
    }

    let n3 = &vms[2];
    let members = sh_until(
        n3,
        "tessera hub component select web 2>&1; true",
        SETTLE,
        |l| l.contains("members=3"),
    );
    say(started, "demo-n3 sees the group web across the cluster:");
    for l in members.lines().filter(|l| l.contains("group=web")) {
        eprintln!("    {}", l.trim());
    }
    let reply = sh_until(
        n3,
        "tessera hub component call group:at-demo-n1 echo --object o --inputs '\"ping\"' 2>&1; echo rc=$?",
        SETTLE,
        |l| l.contains("rc=0"),
    );
    say(
        started,
        "demo-n3 calls the component in demo-n1's container through the hubs:",
    );
    for l in reply.lines().filter(|l| l.contains("REPLY")) {
        eprintln!("    {}", l.trim());
    }
    assert!(
        reply.contains("hello from demo-n1"),
        "the reply did not come from demo-n1:\n{reply}"
    );

    for (vm, (name, ..)) in vms.iter().zip(NODES) {
        let _ = vm.send_line("tessera poweroff");
        let _ = vm.wait_for("TESSERA-SHUTDOWN", Duration::from_secs(120));
        say(started, &format!("{name} powered off"));
    }
    drop(vms);
    say(started, "the CA's ledger:");
    println!("{}", ca.list());
    say(started, "done");
}
