//! Helpers for the end-to-end tests: the built binary and images, booting a VM of the test
//! image, and running shell commands on its serial console the way a developer would.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;
use tessera_qemu::{BootMode, Vm, VmConfig};

pub mod bundle;
pub mod ca;
pub mod curl;
pub mod privnet;

pub use privnet::PrivateNet;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// The static host binary `make image` leaves at out/bin/tessera.
pub fn tessera_bin() -> PathBuf {
    built("out/bin/tessera")
}

/// The node build of the binary (what the image contains), out/bin/tessera-node.
pub fn tessera_node_bin() -> PathBuf {
    built("out/bin/tessera-node")
}

fn built(rel: &str) -> PathBuf {
    let bin = repo_root().join(rel);
    assert!(
        bin.exists(),
        "{} is missing: run `make image` (or `make test`, which does) first",
        bin.display()
    );
    bin
}

/// The default image, as `make image` built it.
pub fn default_image() -> PathBuf {
    let dir = repo_root().join("out");
    assert!(
        dir.join("pxe/initramfs.img").exists(),
        "out/pxe/initramfs.img is missing: run `make image` first"
    );
    dir
}

/// The default image plus the test services of tests/services, built once per test run.
pub fn test_image() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = repo_root();
            let out = root.join("out/test-image");
            let status = Command::new(tessera_bin())
                .current_dir(&root)
                .args(["image", "build", "--out"])
                .arg(&out)
                .arg("--tessera-bin")
                .arg(tessera_node_bin())
                .arg("--extra-services")
                .arg(root.join("tests/services"))
                .status()
                .expect("run tessera image build");
            assert!(status.success(), "building the test image failed");
            out
        })
        .clone()
}

/// How long a boot may take under TCG, by mode (firmware and TFTP make PXE and disk slower).
pub fn boot_timeout(mode: BootMode) -> Duration {
    Duration::from_secs(match mode {
        BootMode::Kernel => 120,
        BootMode::Pxe => 240,
        BootMode::Disk => 300,
    })
}

/// Starts the VM `cfg` with its console logged to out/e2e-logs/<name>.log.
fn start_logged(mut cfg: VmConfig, name: &str) -> Vm {
    let logs = repo_root().join("out/e2e-logs");
    std::fs::create_dir_all(&logs).expect("create out/e2e-logs");
    let log = logs.join(format!("{name}.log"));
    let _ = std::fs::remove_file(&log);
    cfg.log_file = Some(log);
    Vm::start(&cfg).unwrap_or_else(|e| panic!("starting VM {name}: {e}"))
}

/// Starts a VM of `image` with a console log under out/e2e-logs/<name>.log.
pub fn boot(image: &Path, mode: BootMode, name: &str, append: &[&str]) -> Vm {
    boot_with_disks(image, mode, name, append, &[])
}

/// [`boot`] with extra disks attached (virtio, in order: /dev/vdb, /dev/vdc, …).
pub fn boot_with_disks(
    image: &Path,
    mode: BootMode,
    name: &str,
    append: &[&str],
    disks: &[PathBuf],
) -> Vm {
    let mut cfg = VmConfig::new(mode, image);
    cfg.name = name.to_string();
    cfg.append = append.iter().map(|s| s.to_string()).collect();
    cfg.disks = disks.to_vec();
    start_logged(cfg, name)
}

/// Starts a direct-kernel VM of `image` whose NIC is the tap `tap` in network namespace
/// `netns` (QEMU runs under `ip netns exec`), with its own `mac`, kernel arguments and disks.
pub fn boot_on_tap(
    image: &Path,
    name: &str,
    netns: &str,
    tap: &str,
    mac: &str,
    append: &[&str],
    disks: &[PathBuf],
) -> Vm {
    let mut cfg = VmConfig::new(BootMode::Kernel, image);
    cfg.name = name.to_string();
    cfg.append = append.iter().map(|s| s.to_string()).collect();
    cfg.disks = disks.to_vec();
    cfg.network = tessera_qemu::Network::Tap {
        netns: Some(netns.to_string()),
        ifname: tap.to_string(),
        mac: Some(mac.to_string()),
    };
    start_logged(cfg, name)
}

/// Waits for TESSERA-READY and returns the line.
pub fn wait_ready(vm: &Vm, mode: BootMode) -> String {
    vm.wait_for("TESSERA-READY", boot_timeout(mode))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The JSON document a console command printed. Log lines the console mixes in (the
/// kernel's OOM report, service events mirrored while the node boots) are left out: the
/// document starts at a line `{` and ends at the next line `}` (or is that one line), and
/// log lines inside it start with their time.
pub fn console_json(text: &str) -> serde_json::Value {
    let mut ended = false;
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with('{'))
        .take_while(|l| {
            let more = !ended;
            ended = ended || *l == "}" || (l.starts_with('{') && l.trim_end().ends_with('}'));
            more
        })
        .filter(|l| !l.starts_with(|c: char| c.is_ascii_digit()))
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The prefix `tessera container create --template` takes (12 hex digits) of the node's one
/// template, from `tessera container templates --json`.
pub fn only_template(vm: &Vm) -> String {
    let templates = console_json(&sh(vm, "tessera container templates --json"));
    let digest = templates["templates"][0]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no template on the node: {templates}"));
    digest[7..19].to_string()
}

/// Runs a shell command on the console and returns what it printed; fails the test if the
/// command exits non-zero.
pub fn sh(vm: &Vm, command: &str) -> String {
    vm.run_command(command, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("command {command:?}: {e}"))
}

/// Polls a console command until its output satisfies `pred`.
pub fn sh_until(vm: &Vm, command: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let out = sh(vm, command);
        if pred(&out) {
            return out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "output of {command:?} never matched; last:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The row of `service` in `tessera status` output, split into columns.
pub fn status_row(status: &str, service: &str) -> Vec<String> {
    // Rows follow the `SERVICE …` header (the node line above it may start with any word).
    status
        .lines()
        .skip_while(|l| !l.starts_with("SERVICE "))
        .find(|l| l.split_whitespace().next() == Some(service))
        .unwrap_or_else(|| panic!("no row for {service} in:\n{status}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Starts a direct-kernel VM of the default image with host ports forwarded to guest ports
/// (`(host, guest)`, the host side on 127.0.0.1 only).
pub fn boot_with_forwards(name: &str, append: &[&str], forwards: &[(u16, u16)]) -> Vm {
    boot_with_forwards_and_disks(name, append, forwards, &[])
}

/// [`boot_with_forwards`] with extra disks attached (a NoCloud seed: /dev/vdb, …).
pub fn boot_with_forwards_and_disks(
    name: &str,
    append: &[&str],
    forwards: &[(u16, u16)],
    disks: &[PathBuf],
) -> Vm {
    let mut cfg = VmConfig::new(BootMode::Kernel, default_image());
    cfg.name = name.to_string();
    cfg.append = append.iter().map(|s| s.to_string()).collect();
    cfg.forwards = forwards
        .iter()
        .map(|&(host, guest)| tessera_qemu::PortForward { host, guest })
        .collect();
    cfg.disks = disks.to_vec();
    start_logged(cfg, name)
}

/// A free TCP port on 127.0.0.1 (for a forward).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A fresh directory under out/e2e-seeds for one test's disks and files (made anew).
pub fn test_dir(name: &str) -> PathBuf {
    let dir = repo_root().join("out/e2e-seeds").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test directory");
    dir
}

/// An empty qcow2 data disk of `size` (`3G`) in `dir`, as `data.qcow2`.
pub fn data_disk(dir: &Path, size: &str) -> PathBuf {
    let disk = dir.join("data.qcow2");
    host(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", disk.to_str().unwrap(), size],
    );
    disk
}

/// Runs a host program; fails the test with its output if it fails.
pub fn host(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
}

#[cfg(test)]
mod tests {
    use super::console_json;

    #[test]
    fn console_json_leaves_out_the_log_lines_the_console_mixes_in() {
        let text = "20:20:57.980 klog[80] WARN: oom\n{\n  \"a\": 1,\n20:20:57.981 klog[80] WARN: CPU: 0\n  \"b\": [\n    2\n  ]\n}\n20:20:57.982 klog[80] WARN: Call Trace:\n <TASK>\n";
        assert_eq!(console_json(text), serde_json::json!({"a": 1, "b": [2]}));
        assert_eq!(
            console_json("{\"one\":\"line\"}\n trailing words\n"),
            serde_json::json!({"one": "line"})
        );
    }
}
