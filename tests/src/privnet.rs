//! A private L2 network for multi-VM tests: a network namespace with a bridge `br0` and one
//! tap per VM (QEMU runs in the namespace: see [`crate::boot_on_tap`]). Nothing in it reaches
//! any outside address. Removed, with everything in it, when dropped.

use std::process::Command;

pub struct PrivateNet {
    pub netns: String,
}

/// Runs `ip ARGS…`; fails the test with ip's message if it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip(8)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PrivateNet {
    /// The namespace `<prefix>-<pid>` (a prefix per test file, so that tests running at the
    /// same time do not collide) with `br0` and the taps, all up.
    pub fn new(prefix: &str, taps: &[&str]) -> PrivateNet {
        let netns = format!("{prefix}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &netns]).output();
        ip(&["netns", "add", &netns]);
        let net = PrivateNet { netns };
        let ns = net.netns.as_str();
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&["-n", ns, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", ns, "link", "set", "br0", "up"]);
        for tap in taps {
            ip(&["-n", ns, "tuntap", "add", "dev", tap, "mode", "tap"]);
            ip(&["-n", ns, "link", "set", tap, "master", "br0"]);
            ip(&["-n", ns, "link", "set", tap, "up"]);
        }
        net
    }

    /// Gives the bridge an address (`192.168.77.1/24`), so that a process run in the namespace
    /// with [`PrivateNet::command`] serves the VMs.
    pub fn address_bridge(&self, cidr: &str) {
        ip(&["-n", &self.netns, "addr", "add", cidr, "dev", "br0"]);
    }

    /// `program` run inside the namespace (`ip netns exec`).
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns]).arg(program);
        c
    }
}

impl Drop for PrivateNet {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}
