//! End-to-end: the node's private keys on the real Debian kernel (6.1) in QEMU (TCG).
//! `tessera identity check` generates a key in a mode, signs a self-signed certificate and a
//! TLS 1.3 handshake through it, and shows that the key cannot be read back; each test reads
//! the check's `IDENTITY-CHECK key=value …` line on the console the way an operator would.
//! The host kernel these tests run on lacks `pkcs8_key_parser`, so this is the only place the
//! kernel-held RSA key is exercised for real.

use std::collections::BTreeMap;
use tessera_e2e::*;
use tessera_qemu::{BootMode, Vm};

/// Runs the check on the console and returns the fields of its IDENTITY-CHECK line.
fn identity_check(vm: &Vm, args: &str) -> (String, BTreeMap<String, String>) {
    let out = sh(vm, &format!("tessera identity check {args}"));
    let line = out
        .lines()
        .find(|l| l.starts_with("IDENTITY-CHECK "))
        .unwrap_or_else(|| panic!("no IDENTITY-CHECK line in:\n{out}"));
    let fields = tessera_qemu::parse_kv_line(line);
    (out, fields)
}

fn booted(name: &str) -> Vm {
    let vm = boot(&default_image(), BootMode::Kernel, name, &[]);
    wait_ready(&vm, BootMode::Kernel);
    vm
}

#[test]
fn kernel_rsa_key_signs_tls13_in_the_kernel_and_cannot_be_read_back() {
    let vm = booted("identity-kernel-rsa");
    let (out, f) = identity_check(&vm, "--mode kernel-rsa");
    assert_eq!(f["mode"], "kernel-rsa", "{out}");
    assert_eq!(f["result"], "ok", "{out}");
    assert_eq!(f["handshake"], "ok", "{out}");
    assert_eq!(f["tls"], "TLSv1_3", "{out}");
    // TLS 1.3 allows only PSS for RSA: EMSA-PSS in userspace, m^d mod n in the kernel.
    assert_eq!(f["scheme"], "RSA_PSS_SHA256", "{out}");
    assert_eq!(f["signature"], "verified", "{out}");
    // The asymmetric key type has no read operation, and a non-possessor may not even try.
    assert_eq!(f["owner_read"], "refused:EOPNOTSUPP", "{out}");
    assert_eq!(f["other_read"], "refused:EACCES", "{out}");
    assert_eq!(f["copies"], "0", "{out}");
    assert_eq!(f["removed"], "yes", "{out}");
    assert!(out.contains(" asymmetric \"tessera:rsa-2048:"), "{out}");
    assert!(
        out.contains("perm 29000000"),
        "possessor view/search/setattr only:\n{out}"
    );
}

#[test]
fn ecdsa_key_is_possessor_only_and_signs_tls13() {
    let vm = booted("identity-ecdsa");
    let (out, f) = identity_check(&vm, "--mode ecdsa-p256");
    assert_eq!(f["mode"], "ecdsa-p256", "{out}");
    assert_eq!(f["result"], "ok", "{out}");
    assert_eq!(f["tls"], "TLSv1_3", "{out}");
    assert_eq!(f["scheme"], "ECDSA_NISTP256_SHA256", "{out}");
    assert_eq!(f["signature"], "verified", "{out}");
    // The owner must read it to sign (into locked memory); nobody else may.
    assert_eq!(f["owner_read"], "allowed", "{out}");
    assert_eq!(f["other_read"], "refused:EACCES", "{out}");
    assert_eq!(f["copies"], "0", "{out}");
    assert!(out.contains(" user \"tessera:ecdsa-p256:"), "{out}");
    assert!(
        out.contains("perm 2b000000"),
        "possessor view/read/search/setattr only:\n{out}"
    );
}

#[test]
fn default_key_mode_on_the_debian_kernel_is_kernel_rsa_for_the_node_and_p256_for_agents() {
    let vm = booted("identity-detect");
    // pkcs8_key_parser is no boot module (PID 1 does not load it): certmgr's key-mode
    // detection loaded it through /sbin/modprobe and chose kernel-rsa, saying why.
    let init = sh(&vm, "tessera logs init | grep 'module loaded' || true");
    assert!(
        init.contains("virtio_net") && !init.contains("pkcs8_key_parser"),
        "{init}"
    );
    let modules = sh(&vm, "cat /proc/modules");
    assert!(modules.contains("pkcs8_key_parser"), "{modules}");
    let certmgr = sh(&vm, "tessera logs certmgr");
    assert!(
        certmgr.contains("node key generated")
            && certmgr.contains("key_mode=kernel-rsa")
            && certmgr.contains("why=\"detected: ")
            && certmgr.contains("child_key_mode=ecdsa-p256 child_why=\"default: "),
        "{certmgr}"
    );
    // The node API's and the hub's identities were made with P-256 keys, and both serve.
    for agent in ["node", "hub"] {
        let made = certmgr
            .lines()
            .find(|l| l.contains("child identity ready") && l.contains(&format!("O={agent},")))
            .unwrap_or_else(|| panic!("no {agent} identity in:\n{certmgr}"));
        assert!(made.contains("key_mode=ecdsa-p256"), "{made}");
    }
    let status = sh(&vm, "tessera identity status");
    assert!(status.contains("child keys ecdsa-p256"), "{status}");
    // The check's own detection agrees.
    let (out, f) = identity_check(&vm, "");
    assert!(out.contains("key mode kernel-rsa (detected:"), "{out}");
    assert_eq!(f["mode"], "kernel-rsa", "{out}");
    assert_eq!(f["result"], "ok", "{out}");
}
