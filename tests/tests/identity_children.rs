//! End-to-end: child identities through the kernel keyring, and where secrets are (not) found
//! after boot. In QEMU (TCG, the real Debian kernel) against a Tessera CA on the host: the
//! operator's root shell asks certmgr for a one-time token and pipes it into
//! `tessera identity fetch`, which calls request_key(2); the kernel runs /sbin/request-key
//! (tessera), which redeems the token with certmgr and instantiates the keys in the fetching
//! process's keyring. Then `tessera identity scan` looks through every file system and every
//! process's environment and command line for private keys and tokens. Both key modes.

use std::time::{Duration, Instant};
use tessera_e2e::ca::HostCa;
use tessera_e2e::*;
use tessera_qemu::{BootMode, Vm};

const BOOT: Duration = Duration::from_secs(180);

fn booted(name: &str, ca: &HostCa, token: &str, extra: &[&str]) -> Vm {
    let mut args = ca.kernel_args(token, "node1.example");
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let vm = boot(&default_image(), BootMode::Kernel, name, &refs);
    vm.wait_for("node certificate stored in the keyring", BOOT)
        .unwrap_or_else(|e| panic!("{e}"));
    wait_ready(&vm, BootMode::Kernel);
    vm
}

/// Fields of the `IDENTITY-FETCH` line (`subject="…"`, which has spaces, comes last).
fn fetched(out: &str) -> std::collections::BTreeMap<String, String> {
    let line = out
        .lines()
        .find(|l| l.starts_with("IDENTITY-FETCH "))
        .unwrap_or_else(|| panic!("no IDENTITY-FETCH line in:\n{out}"));
    let (head, subject) = line
        .split_once(" subject=\"")
        .unwrap_or_else(|| panic!("no subject in {line}"));
    let mut fields = tessera_qemu::parse_kv_line(head);
    fields.insert("subject".into(), subject.trim_end_matches('"').to_string());
    fields
}

/// Scans the node for private keys and for `secrets` piped to the scan's stdin (never in an
/// argument or the environment). Each secret is typed in two quoted halves, so that the shell
/// history, should busybox keep one in a file, does not hold the secret itself; `exprs` are
/// shell words such as `"$C"`. Returns the scan's output.
fn scan(vm: &Vm, secrets: &[&str], exprs: &[&str]) -> String {
    let mut words: Vec<String> = secrets
        .iter()
        .map(|s| {
            let (a, b) = s.split_at(s.len() / 2);
            format!("'{a}''{b}'")
        })
        .collect();
    words.extend(exprs.iter().map(|e| e.to_string()));
    let printf = words.join(" ");
    let out = vm
        .run_command_status(
            &format!("printf '%s\\n' {printf} | tessera identity scan --secrets-stdin /"),
            Duration::from_secs(120),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.output.contains("IDENTITY-SCAN "), "{}", out.output);
    out.output
}

#[test]
fn a_child_gets_its_certificate_and_kernel_held_key_through_request_key() {
    let ca = HostCa::start("children-rsa");
    let token = ca.token("node1.example");
    let vm = booted(
        "identity-child-rsa",
        &ca,
        &token,
        &["tessera.certmgr_child_key=kernel-rsa"],
    );
    let out = sh(
        &vm,
        "tessera identity child-token hub hub | tessera identity fetch --token-fd 0",
    );
    let f = fetched(&out);
    assert_eq!(
        f["subject"], "DC=prod, O=hub, OU=node1.example, UID=hub",
        "{out}"
    );
    // kernel-rsa (asked for; agents get P-256 by default): an asymmetric key the child cannot read back,
    // possessor view/search/setattr only, in its process keyring; the chain beside it.
    assert_eq!(f["private_type"], "asymmetric", "{out}");
    let serial = &f["serial"];
    let key_line = out
        .lines()
        .find(|l| l.contains(&format!("tessera:identity-key:{serial}")))
        .unwrap_or_else(|| panic!("no private key in the keyring listing:\n{out}"));
    assert!(key_line.contains(" 29000000 "), "{key_line}");
    assert!(key_line.contains("PKCS8.rsa"), "{key_line}");
    // The listing right-aligns ids in 9 columns: a 10-digit id has no space before it.
    let cert_key = &f["cert_key"];
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().next() == Some(cert_key.as_str())),
        "{out}"
    );
    assert!(out.contains("tessera:identity:"), "{out}");
    // The CA signed it for certmgr (/v1/issue), and the callout logged the hand-over.
    let list = ca.list();
    let row = list
        .lines()
        .find(|l| l.starts_with(serial.as_str()))
        .unwrap();
    assert!(row.contains("issue") && row.contains("O=hub"), "{row}");
    let klog = sh(&vm, "tessera logs klog");
    assert!(
        klog.contains(&format!(
            "tessera request-key: key {}: identity DC=prod, O=hub, OU=node1.example, UID=hub serial {serial}",
            f["cert_key"]
        )),
        "{klog}"
    );
    let log = sh(&vm, "tessera logs certmgr");
    assert!(log.contains("child identity handed over"), "{log}");

    // A token works once: a second fetch with it is refused at once, not left hanging.
    let started = Instant::now();
    let again = vm
        .run_command_status(
            "T=$(tessera identity child-token hub hub); printf '%s\\n' \"$T\" | tessera identity fetch --token-fd 0 >/dev/null; printf '%s\\n' \"$T\" | tessera identity fetch --token-fd 0",
            Duration::from_secs(60),
        )
        .unwrap();
    assert_ne!(again.status, 0, "{}", again.output);
    assert!(
        again.output.contains("certmgr refused the token"),
        "{}",
        again.output
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    let klog = sh(&vm, "tessera logs klog");
    assert!(
        klog.contains("refused: certmgr refused: token_used"),
        "{klog}"
    );

    // The identity works for mTLS as agents use it: server and client configurations from
    // the hand-off, the CA and its CRL from certmgr, both sides signing through the kernel.
    assert_mtls(&vm, "container", "web1", "node1.example");

    // Nothing secret on any file system or in any process's environment or command line.
    let report = scan(&vm, &[&token], &[]);
    assert!(report.contains(" hits=0"), "{report}");
}

/// A child identity of `subsystem`/`agent` makes a TLS 1.3 mTLS handshake with itself, each
/// side verifying the other against the pinned CA with the CA's CRL loaded.
fn assert_mtls(vm: &Vm, subsystem: &str, agent: &str, node: &str) {
    let out = sh(
        vm,
        &format!(
            "tessera identity child-token {subsystem} {agent} | tessera identity fetch --token-fd 0 --mtls"
        ),
    );
    let subject = format!("DC=prod, O={subsystem}, OU={node}, UID={agent}");
    let line = out
        .lines()
        .find(|l| l.starts_with("IDENTITY-MTLS "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("result=ok version=TLSv1_3 crls=1 "), "{line}");
    assert!(line.contains(&format!("name={agent}.{node} ")), "{line}");
    assert!(
        line.contains(&format!("server_saw=\"{subject} caps=")),
        "{line}"
    );
    assert!(
        line.contains(&format!("client_saw=\"{subject} caps=")),
        "{line}"
    );
}

#[test]
fn ecdsa_children_get_possessor_only_keys_and_no_secret_leaks() {
    let ca = HostCa::start("children-ecdsa");
    let token = ca.token("node1.example");
    let vm = booted(
        "identity-child-ecdsa",
        &ca,
        &token,
        &["tessera.certmgr_key=ecdsa-p256"],
    );
    let status = sh(&vm, "tessera identity status");
    assert!(status.contains("key mode   ecdsa-p256"), "{status}");
    let out = sh(
        &vm,
        "tessera identity child-token container c1 | tessera identity fetch --token-fd 0",
    );
    let f = fetched(&out);
    assert_eq!(
        f["subject"], "DC=prod, O=container, OU=node1.example, UID=c1",
        "{out}"
    );
    // ecdsa-p256: a user key that only its possessor may read (view/read/search/setattr).
    assert_eq!(f["private_type"], "user", "{out}");
    let key_line = out
        .lines()
        .find(|l| l.contains(&format!("tessera:identity-key:{}", f["serial"])))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(key_line.contains(" 2b000000 "), "{key_line}");
    assert_mtls(&vm, "container", "web2", "node1.example");

    // The scanner finds what it looks for (a key-shaped file, a secret on a command line) ...
    // (Typed in pieces, so that not even the shell's history holds the markers whole.)
    sh(
        &vm,
        "echo 'x-----BEGIN PRIVATE ''KEY-----' > /tmp/planted.pem",
    );
    sh(
        &vm,
        // (`; true`: a lone command in `sh -c` is exec'd, which would drop the marked argv.)
        "sh -c 'sleep 120; true' 'planted-''secret-xyz' & echo $! > /tmp/planted.pid",
    );
    let pid = sh(&vm, "cat /tmp/planted.pid").trim().to_string();
    let planted = scan(&vm, &["planted-secret-xyz"], &[]);
    assert!(
        planted.contains("SCAN-HIT path=/tmp/planted.pem pattern=\"PEM private key\""),
        "{planted}"
    );
    assert!(
        planted.contains(&format!(
            "SCAN-HIT path=/proc/{pid}/cmdline pattern=\"secret #1\""
        )),
        "{planted}"
    );
    sh(
        &vm,
        "kill $(cat /tmp/planted.pid); rm /tmp/planted.pem /tmp/planted.pid",
    );

    // ... and after boot and a child hand-off finds no private key, neither the node's
    // (redeemed) token nor a child token not yet redeemed.
    sh(&vm, "C=$(tessera identity child-token hub hub); echo ${#C}");
    let report = scan(&vm, &[&token], &["\"$C\""]);
    assert!(
        report.contains(" patterns=5 "),
        "three key markers and two secrets: {report}"
    );
    assert!(report.contains(" hits=0"), "{report}");
    assert!(
        report.contains("SCAN-SKIPPED path=/sbin/tessera"),
        "{report}"
    );
    let files: usize = tessera_qemu::parse_kv_line(
        report
            .lines()
            .find(|l| l.starts_with("IDENTITY-SCAN"))
            .unwrap(),
    )["files"]
        .parse()
        .unwrap();
    let in_image = initramfs_files(&default_image());
    assert!(
        files >= in_image,
        "the whole root file system was scanned ({in_image} files in the image): {report}"
    );
}

/// Regular files the image's initramfs holds, from its manifest (`/path  size  origin`;
/// directories have size `-`, symbolic links an arrow).
fn initramfs_files(image: &std::path::Path) -> usize {
    let manifest = std::fs::read_to_string(image.join("manifest.txt")).expect("manifest.txt");
    manifest
        .lines()
        .filter(|l| l.starts_with('/') && !l.contains(" -> "))
        .filter(|l| l.split_whitespace().nth(1) != Some("-"))
        .count()
}
