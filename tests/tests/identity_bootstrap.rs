//! End-to-end: the node's certificate manager bootstraps the node identity in QEMU (TCG, the
//! real Debian kernel) against a Tessera CA running on the host (`tessera ca serve` on
//! 127.0.0.1, which the guest reaches as 10.0.2.2). The token comes on the kernel command line
//! as PXE would deliver it. Each test reads the console, `tessera status`, `tessera identity
//! status` and the CA's own `list` and `audit` the way an operator would.

use std::time::Duration;
use tessera_e2e::ca::HostCa;
use tessera_e2e::*;
use tessera_qemu::{BootMode, Vm};

const BOOT: Duration = Duration::from_secs(180);

fn boot_with(name: &str, args: &[String]) -> Vm {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    boot(&default_image(), BootMode::Kernel, name, &refs)
}

/// The serial number in `tessera identity status`.
fn field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {name} in:\n{status}"))
}

#[test]
fn token_on_the_kernel_command_line_gets_the_node_its_certificate() {
    let ca = HostCa::start("bootstrap");
    let token = ca.token("node1.example");
    let vm = boot_with(
        "identity-bootstrap",
        &ca.kernel_args(&token, "node1.example"),
    );
    let stored = vm
        .wait_for("node certificate stored in the keyring", BOOT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        stored.contains("subject=\"DC=prod, O=certmgr, OU=node1.example, UID=certmgr\""),
        "{stored}"
    );
    wait_ready(&vm, BootMode::Kernel);

    let status = sh(&vm, "tessera identity status");
    assert_eq!(field(&status, "mode"), "ca", "{status}");
    assert_eq!(field(&status, "state"), "ready", "{status}");
    assert_eq!(
        field(&status, "subject"),
        "DC=prod, O=certmgr, OU=node1.example, UID=certmgr"
    );
    assert_eq!(
        field(&status, "issuer"),
        format!("https://10.0.2.2:{}", ca.port)
    );
    assert_eq!(field(&status, "may issue"), "node, container, hub");
    let serial = field(&status, "serial");

    // The CA's ledger and audit log on the host show the same certificate and the redemption.
    let list = ca.list();
    let row = list
        .lines()
        .find(|l| l.starts_with(&serial))
        .unwrap_or_else(|| panic!("serial {serial} not in `tessera ca list`:\n{list}"));
    assert!(row.contains("valid") && row.contains("redeem"), "{row}");
    assert!(
        row.contains("DC=prod, O=certmgr, OU=node1.example, UID=certmgr"),
        "{row}"
    );
    let audit = ca.audit();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"event\":\"token_redeemed\"") && l.contains(&serial)),
        "{audit}"
    );

    // certmgr is ready and says what it holds; the chain is in the kernel keyring.
    let st = sh(&vm, "tessera status");
    let row = status_row(&st, "certmgr");
    assert_eq!(row[2], "ready", "{st}");
    assert!(
        st.contains("identity DC=prod, O=certmgr, OU=node1.example, UID=certmgr serial "),
        "{st}"
    );
    let keys = sh(&vm, "cat /proc/keys");
    assert!(keys.contains(" user      tessera:node:cert: "), "{keys}");
    // The token went through the keyring, and is gone from it; the file never held it.
    assert!(!keys.contains("tessera:bootstrap-token"), "{keys}");
    let userdata = sh(&vm, "cat /run/tessera/userdata.toml");
    assert!(!userdata.contains(&token), "{userdata}");
    assert!(
        userdata.contains("token = \"keyring:tessera:bootstrap-token\""),
        "{userdata}"
    );
}

#[test]
fn a_replayed_token_is_refused_and_the_console_names_the_token() {
    let ca = HostCa::start("replay");
    let token = ca.token("node1.example");
    let args = ca.kernel_args(&token, "node1.example");
    let first = boot_with("identity-replay-first", &args);
    first
        .wait_for("node certificate stored in the keyring", BOOT)
        .unwrap_or_else(|e| panic!("{e}"));
    drop(first);
    let ledger = ca.list();

    let second = boot_with("identity-replay-second", &args);
    let refused = second
        .wait_for("the CA refused the bootstrap token", BOOT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(refused.contains("ERROR"), "shown as an error: {refused}");
    assert!(refused.contains("error=token_used"), "{refused}");
    assert!(
        refused.contains("bootstrap token refused by the CA at https://10.0.2.2:"),
        "{refused}"
    );
    assert!(refused.contains("already"), "the CA's reason: {refused}");
    assert!(refused.contains("waiting for new user-data"), "{refused}");
    // Not ready, and the reason is in `tessera status`; no retry loop against the CA.
    let st = sh(&second, "tessera status");
    let row = status_row(&st, "certmgr");
    assert_eq!(row[2], "starting", "{st}");
    assert!(st.contains("bootstrap token refused by the CA"), "{st}");
    std::thread::sleep(Duration::from_secs(3));
    let audit = ca.audit();
    let refusals = audit
        .lines()
        .filter(|l| l.contains("\"event\":\"token_refused\""))
        .count();
    assert_eq!(refusals, 1, "{audit}");
    assert_eq!(ca.list(), ledger, "the CA's certificate list is unchanged");
}

#[test]
fn a_wrong_ca_fingerprint_stops_the_node_before_it_sends_its_csr() {
    let ca = HostCa::start("fingerprint");
    let impostor = HostCa::init("fingerprint-other");
    let token = ca.token("node1.example");
    let mut args = ca.kernel_args(&token, "node1.example");
    args[1] = format!("tessera.ca_fp={}", impostor.fingerprint);
    let vm = boot_with("identity-fingerprint", &args);
    let line = vm
        .wait_for("refusing to talk to the CA", BOOT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains(&format!(
            "the CA at https://10.0.2.2:{} presented {}, user-data pins {}; refusing to send the CSR — check ca.fingerprint",
            ca.port, ca.fingerprint, impostor.fingerprint
        )),
        "{line}"
    );
    let st = sh(&vm, "tessera status");
    assert!(st.contains("refusing to send the CSR"), "{st}");
    // The CA never saw the token: it is neither redeemed nor refused.
    let audit = ca.audit();
    assert!(!audit.contains("\"event\":\"token_redeemed\""), "{audit}");
    assert!(!audit.contains("\"event\":\"token_refused\""), "{audit}");
}

#[test]
fn with_the_ca_down_at_boot_the_node_waits_then_gets_its_certificate() {
    let mut ca = HostCa::init("down");
    let token = ca.token("node1.example");
    let vm = boot_with("identity-ca-down", &ca.kernel_args(&token, "node1.example"));
    let waiting = vm
        .wait_for("waiting for the CA", BOOT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(waiting.contains("WARN"), "{waiting}");
    let st = sh_until(&vm, "tessera status", Duration::from_secs(30), |s| {
        s.contains("waiting for the CA at")
    });
    assert!(
        st.contains(&format!(
            "waiting for the CA at https://10.0.2.2:{} (connection refused), retry in",
            ca.port
        )),
        "{st}"
    );
    assert_eq!(status_row(&st, "certmgr")[2], "starting", "{st}");
    ca.serve();
    vm.wait_for(
        "node certificate stored in the keyring",
        Duration::from_secs(90),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    wait_ready(&vm, BootMode::Kernel);
    let status = sh(&vm, "tessera identity status");
    assert_eq!(field(&status, "state"), "ready", "{status}");
}

#[test]
fn without_a_ca_the_node_has_a_standalone_identity() {
    let vm = boot(
        &default_image(),
        BootMode::Kernel,
        "identity-standalone",
        &[],
    );
    wait_ready(&vm, BootMode::Kernel);
    let st = sh(&vm, "tessera status");
    assert_eq!(status_row(&st, "certmgr")[2], "ready", "{st}");
    assert!(
        st.contains(
            "standalone identity (node-local CA): DC=tessera, O=certmgr, OU=tessera, UID=certmgr"
        ),
        "{st}"
    );
    let status = sh(&vm, "tessera identity status");
    assert_eq!(field(&status, "mode"), "standalone", "{status}");
    assert_eq!(field(&status, "issuer"), "node-local CA", "{status}");
    // Agents still get identities, from the node-local CA.
    let out = sh(
        &vm,
        "tessera identity child-token node | tessera identity fetch --token-fd 0",
    );
    assert!(
        out.contains("subject=\"DC=tessera, O=node, OU=tessera, UID=node\""),
        "{out}"
    );
}
