//! End-to-end: the SSH developer console, checked with the host's OpenSSH client (a client
//! nobody here wrote) through a forwarded port (QEMU's user network: host 127.0.0.1:PORT →
//! guest 22, source 10.0.2.2). With a key in NoCloud user-data: that key logs in as root and
//! `tessera status` runs in the session; the server offers no password authentication and a
//! different key is refused; the host key the client saw is the one the node logged. Without
//! keys: the service is off (not failed), port 22 is neither listened on nor open in the
//! firewall, and the connection fails. Keys that arrive late (an IMDS that answers only after
//! the node booted) turn the console on without a restart.

#[path = "../../agents/userdata/tests/common/mod.rs"]
mod userdata_helpers;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use tessera_e2e::*;
use tessera_qemu::{BootMode, Vm};
use userdata_helpers::{nocloud_seed, Imds};

const SETTLE: Duration = Duration::from_secs(120);

fn fresh_dir(name: &str) -> PathBuf {
    let dir = repo_root().join("out/e2e-seeds").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test directory");
    dir
}

/// An ed25519 key pair made by OpenSSH's ssh-keygen: (private key file, public key line).
fn keypair(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C"])
        .arg(format!("{name}@host"))
        .arg("-f")
        .arg(&key)
        .output()
        .expect("run ssh-keygen (scripts/install-deps.sh installs openssh-client)");
    assert!(out.status.success(), "ssh-keygen: {out:?}");
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("read the public key");
    (key, public.trim().to_string())
}

/// The SHA256 fingerprint ssh-keygen gives a public key file.
fn fingerprint_of(public: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(public)
        .output()
        .expect("run ssh-keygen -lf");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .unwrap_or_else(|| panic!("no fingerprint in {text:?}"))
        .to_string()
}

/// The host's OpenSSH client against the forwarded port, with `extra` options, running
/// `command` as root. `-v` puts the negotiation (host key, offered methods) on stderr.
fn ssh(port: u16, key: &Path, extra: &[&str], command: &str) -> Output {
    Command::new("ssh")
        .args(["-v", "-p", &port.to_string(), "-i"])
        .arg(key)
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=30",
            "-o",
            "HostKeyAlgorithms=ssh-ed25519",
        ])
        .args(extra)
        .arg("root@127.0.0.1")
        .arg(command)
        .output()
        .expect("run ssh (scripts/install-deps.sh installs openssh-client)")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The value of `key=` in the `tessera logs` line that contains every one of `marks`.
fn logged(logs: &str, marks: &[&str], key: &str) -> String {
    let line = logs
        .lines()
        .find(|l| marks.iter().all(|m| l.contains(m)))
        .unwrap_or_else(|| panic!("no line with {marks:?} in:\n{logs}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
        .to_string()
}

fn boot_node(name: &str, user_data: &str, port: u16) -> Vm {
    let dir = fresh_dir(name);
    let vm = boot_with_forwards_and_disks(
        name,
        &["tessera.imds=off"],
        &[(port, 22)],
        &[nocloud_seed(&dir, user_data)],
    );
    wait_ready(&vm, BootMode::Kernel);
    vm
}

#[test]
fn a_key_from_user_data_logs_in_as_root_and_nothing_else_does() {
    let dir = fresh_dir("ssh-keys");
    let (key, public) = keypair(&dir, "dev");
    let (other_key, _) = keypair(&dir, "stranger");
    let port = free_port();
    let vm = boot_node(
        "ssh-on",
        &format!(
            "version = 1\n\n[node]\nhostname = \"ssh-on\"\n\n[ssh]\nauthorized_keys = [\"{public}\"]\n"
        ),
        port,
    );
    let status = sh_until(&vm, "tessera status", SETTLE, |s| {
        status_row(s, "ssh").get(2).map(String::as_str) == Some("ready")
    });
    let row = status_row(&status, "ssh").join(" ");
    assert!(row.contains("on: port 22,"), "{row}");
    let fw = sh(&vm, "tessera firewall show");
    assert!(fw.contains("  tcp   22     public      ssh\n"), "{fw}");
    let logs = sh(&vm, "tessera logs ssh");
    let node_fp = logged(&logs, &["ssh host key", "type=ssh-ed25519"], "fingerprint");
    assert!(node_fp.starts_with("SHA256:"), "{node_fp}");

    // The key logs in; the session is root's, with the CLI on its PATH.
    let out = ssh(
        port,
        &key,
        &[],
        "tessera status; echo HOME=$HOME; echo PATH=$PATH; id -u",
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "ssh failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("SERVICE "), "no service table:\n{stdout}");
    assert_eq!(status_row(&stdout, "ssh")[2], "ready", "{stdout}");
    assert!(stdout.contains("HOME=/root\n"), "{stdout}");
    let path = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PATH="))
        .unwrap_or_default();
    assert!(path.split(':').any(|p| p == "/sbin"), "{path}");
    assert!(stdout.trim_end().ends_with("\n0"), "not root:\n{stdout}");
    // The host key the client was shown is the one the node logged.
    let seen = stderr
        .lines()
        .find_map(|l| l.strip_prefix("debug1: Server host key: ssh-ed25519 "))
        .unwrap_or_else(|| panic!("no host key in the client's output:\n{stderr}"));
    assert_eq!(seen.trim(), node_fp);
    // The server offers public keys only.
    let methods = stderr
        .lines()
        .find_map(|l| l.strip_prefix("debug1: Authentications that can continue: "))
        .unwrap_or_else(|| panic!("no offered methods in:\n{stderr}"));
    assert_eq!(methods.trim(), "publickey", "{stderr}");
    // The node logged the login with the key's fingerprint.
    let dev_fp = fingerprint_of(&key.with_extension("pub"));
    let logins = sh_until(&vm, "tessera logs ssh", SETTLE, |l| {
        l.contains("login accepted")
    });
    assert_eq!(
        logged(&logins, &["login accepted"], "key_fingerprint"),
        dev_fp
    );

    // A terminal works (devpts), and the developer's commands are there.
    let out = ssh(
        port,
        &key,
        &["-tt"],
        "tty; tessera logs -n 3 ssh; tessera service restart klog; tessera metrics | grep -c '^node_'",
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("/dev/pts/"), "{stdout}");
    assert!(stdout.contains("klog: ready"), "{stdout}");

    // Password authentication is refused: the server never offers it.
    let out = ssh(
        port,
        &key,
        &[
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
            "-o",
            "PubkeyAuthentication=no",
        ],
        "true",
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("Permission denied (publickey)"), "{stderr}");
    // Another key is refused.
    let out = ssh(port, &other_key, &[], "true");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("Permission denied (publickey)"), "{stderr}");
    // authorized_keys is root's and private.
    let mode = sh(&vm, "stat -c '%a %U' /root/.ssh /root/.ssh/authorized_keys");
    assert_eq!(
        mode.split_whitespace().collect::<Vec<_>>(),
        ["700", "root", "600", "root"]
    );
}

#[test]
fn without_keys_the_console_is_off_and_port_22_stays_closed() {
    let dir = fresh_dir("ssh-nokeys");
    let (key, _) = keypair(&dir, "dev");
    let port = free_port();
    let vm = boot_node(
        "ssh-off",
        "version = 1\n\n[node]\nhostname = \"ssh-off\"\n",
        port,
    );
    let status = sh_until(&vm, "tessera status", SETTLE, |s| {
        status_row(s, "ssh").get(2).map(String::as_str) == Some("ready")
    });
    let row = status_row(&status, "ssh").join(" ");
    assert!(
        row.contains("off: user-data has no ssh.authorized_keys"),
        "{row}"
    );
    let logs = sh(&vm, "tessera logs ssh");
    assert!(
        logs.contains("ssh off: user-data has no ssh.authorized_keys"),
        "{logs}"
    );
    // Nothing listens on 22 (0016 in /proc/net/tcp), the firewall has no exposure for it.
    let tcp = sh(&vm, "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null; true");
    assert!(
        !tcp.lines()
            .any(|l| l.contains(":0016 ") && l.split_whitespace().nth(3) == Some("0A")),
        "{tcp}"
    );
    let fw = sh(&vm, "tessera firewall show");
    assert!(!fw.contains("  tcp   22 "), "{fw}");
    let out = ssh(port, &key, &["-o", "ConnectTimeout=15"], "true");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains("Authenticated") && !stderr.contains("Server host key"),
        "{stderr}"
    );
}

#[test]
fn keys_that_arrive_late_from_imds_turn_the_console_on() {
    let dir = fresh_dir("ssh-late");
    let (key, public) = keypair(&dir, "dev");
    let doc = format!(
        "version = 1\n\n[node]\nhostname = \"ssh-late\"\n\n[ssh]\nauthorized_keys = [\"{public}\"]\n"
    );
    // The metadata service answers 30 s after the test starts: the node boots without
    // user-data, the userdata service keeps retrying, and the ssh service follows the file.
    let imds = Imds::start_late(Some(doc.as_bytes()), Duration::from_secs(30));
    let port = free_port();
    let endpoint = format!("tessera.imds=http://10.0.2.2:{}", imds.port);
    let vm = boot_with_forwards_and_disks("ssh-late", &[&endpoint], &[(port, 22)], &[]);
    wait_ready(&vm, BootMode::Kernel);
    // Both follow the late document: the console turns on and the host name changes (two
    // services, in either order).
    let status = sh_until(&vm, "tessera status", Duration::from_secs(240), |s| {
        status_row(s, "ssh").join(" ").contains("on: port 22,") && s.contains("node ssh-late ")
    });
    // Still the first process: turned on by reading user-data again, not by a restart.
    assert_eq!(status_row(&status, "ssh")[4], "0", "{status}");
    let out = ssh(port, &key, &[], "hostname; tessera status");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.starts_with("ssh-late\n"), "{stdout}");
    assert!(stdout.contains("SERVICE "), "{stdout}");
}
