//! End-to-end: a container's identity (issue 9 §3), in QEMU against a Tessera CA on the host
//! (its URL, fingerprint and the node's token in NoCloud user-data beside [storage]). The
//! node's token lists `web` among its capabilities; a container created with
//! `--identity web` gets a certmgr child token at its start on fd 3 (`TESSERA_IDENTITY_FD=3`)
//! and redeems it inside the container with the node binary in its rootfs (`tessera identity
//! fetch --mtls`: request_key(2), the kernel's callout on the node, then an mTLS handshake
//! signed with the kernel-held key and checked against the CA certmgr gives through its
//! socket), proving it holds a certificate `O=web, UID=<container name>`. Its environment and
//! argv hold no token, and neither its rootfs nor any process's environment or command line
//! holds its private key or the token (`tessera identity scan`).

#[path = "../../agents/userdata/tests/common/mod.rs"]
mod userdata_helpers;

use std::path::{Path, PathBuf};
use std::time::Duration;
use tessera_e2e::bundle::bundle_with;
use tessera_e2e::ca::HostCa;
use tessera_e2e::*;
use tessera_qemu::{BootMode, Vm};
use userdata_helpers::nocloud_seed;

const SETTLE: Duration = Duration::from_secs(180);
const NODE: &str = "node1.example";

/// The busybox bundle with the node's `tessera` binary as /bin/tessera, as a tar.
fn bundle_with_tessera(dir: &Path) -> PathBuf {
    bundle_with(
        dir,
        &[(tessera_node_bin(), "bin/tessera")],
        &["env", "tr", "grep", "wc", "cut"],
    )
}

fn boot_node(ca: &HostCa, dir: &Path) -> Vm {
    let token = ca.run(&[
        "token",
        "--node",
        NODE,
        "--subsystem",
        "certmgr",
        "--capabilities",
        "node,container,hub,web",
    ]);
    // The CA, the data disk and a declared container with an identity in one NoCloud
    // document (a kernel command line naming the CA would be the node's whole configuration).
    let tar = bundle_with_tessera(dir);
    let seed = nocloud_seed(
        dir,
        &format!(
            "version = 1\n\n[node]\nhostname = \"{NODE}\"\n\n[ca]\nurl = \"https://10.0.2.2:{}\"\nfingerprint = \"{}\"\ntoken = \"{token}\"\n\n[storage]\nbackend = \"btrfs\"\ndevice = \"/dev/vdb\"\n\n[[containers]]\nname = \"decl\"\nimage = \"/dev/vdc\"\nsha256 = \"{}\"\nrestart = \"no\"\nargs = [\"/bin/sh\", \"-c\", \"tessera identity fetch --mtls; echo DONE\"]\nidentity = {{ subsystem = \"web\" }}\n",
            ca.port,
            ca.fingerprint,
            tessera_e2e::bundle::sha256_of(&tar)
        ),
    );
    let data = data_disk(dir, "3G");
    let vm = boot_with_disks(
        &default_image(),
        BootMode::Kernel,
        "container-identity",
        &[],
        &[seed, data, tar],
    );
    vm.wait_for("node certificate stored in the keyring", SETTLE)
        .unwrap_or_else(|e| panic!("{e}"));
    wait_ready(&vm, BootMode::Kernel);
    sh_until(&vm, "tessera status", SETTLE, |s| {
        s.lines()
            .any(|l| l.split_whitespace().next() == Some("container") && l.contains(" ready"))
    });
    vm
}

/// The container's log once it holds `want` (a declared container may not exist yet).
fn logs_with(vm: &Vm, name: &str, want: &str) -> String {
    sh_until(
        vm,
        &format!("tessera container logs {name} 2>&1 || true"),
        SETTLE,
        |out| out.contains(want) || out.contains("stdout: IDENTITY-FAILED"),
    )
}

/// Runs `tessera identity scan` on the node, `secrets` piped to its stdin (typed in two
/// quoted halves, so the console line does not hold them whole); returns the output.
fn scan(vm: &Vm, secrets: &[&str], roots: &str) -> String {
    let words: Vec<String> = secrets
        .iter()
        .map(|s| {
            let (a, b) = s.split_at(s.len() / 2);
            format!("'{a}''{b}'")
        })
        .collect();
    let command = match words.is_empty() {
        true => format!("tessera identity scan {roots}"),
        false => format!(
            "printf '%s\\n' {} | tessera identity scan --secrets-stdin {roots}",
            words.join(" ")
        ),
    };
    let out = vm
        .run_command_status(&command, Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.output.contains("IDENTITY-SCAN "), "{}", out.output);
    out.output
}

/// The copy of the tessera binary in the rootfs embeds a public throwaway probe key
/// (`KeyMode::detect`; the scan skips only its own executable): any other hit, and any hit
/// of the token, is a leak.
fn assert_only_the_binarys_probe_key(out: &str) {
    for hit in out.lines().filter(|l| l.starts_with("SCAN-HIT ")) {
        assert!(
            hit.contains("/rootfs/bin/tessera ") && !hit.contains("secret #"),
            "a private key or the token was found: {hit}\n{out}"
        );
    }
}

/// A container declared in user-data with `identity = { subsystem = "web" }` gets its
/// certificate the same way, with no operator action. (Its command runs `tessera` from a
/// shell that does not exec it: as the PID 1 of the container, tessera would take itself for
/// the node's init.)
fn declared_container_holds_its_identity(vm: &Vm) {
    let logs = logs_with(vm, "decl", "IDENTITY-MTLS ");
    assert!(
        logs.contains(&format!("server_saw=\"DC=prod, O=web, OU={NODE}, UID=decl")),
        "{logs}"
    );
}

#[test]
fn a_container_redeems_its_identity_from_fd_3_and_no_secret_is_left_behind() {
    let ca = HostCa::start("container-identity");
    let dir = test_dir("container-identity");
    let vm = boot_node(&ca, &dir);
    // The declared container's start imported the archive; the operator's import of the same
    // bytes is then a no-op.
    declared_container_holds_its_identity(&vm);
    let imported = sh(&vm, "tessera container import /dev/vdc");
    assert!(imported.contains("already imported"), "{imported}");
    let template = &only_template(&vm);

    // `web` redeems its token inside the container and proves the identity by mTLS.
    sh(
        &vm,
        &format!(
            "tessera container create web --template {template} --identity web --start -- /bin/sh -c 'echo ENV; env; echo ENDENV; echo ARGV $(tr \"\\0\" \" \" < /proc/1/cmdline); grep Seccomp: /proc/self/status; tessera identity fetch --mtls || echo IDENTITY-FAILED; echo REDEEMED; sleep 600'"
        ),
    );
    let logs = logs_with(&vm, "web", "stdout: REDEEMED");
    let mtls = logs
        .lines()
        .find(|l| l.contains("IDENTITY-MTLS "))
        .unwrap_or_else(|| panic!("no IDENTITY-MTLS line: the redemption failed:\n{logs}"));
    assert!(mtls.contains("result=ok"), "{mtls}");
    assert!(mtls.contains(&format!("name=web.{NODE}")), "{mtls}");
    assert!(
        mtls.contains(&format!("server_saw=\"DC=prod, O=web, OU={NODE}, UID=web")),
        "the certificate names subsystem web and the container's name:\n{mtls}"
    );
    assert!(
        logs.contains("Seccomp:\t2") || logs.contains("Seccomp: 2"),
        "{logs}"
    );
    // The environment: the descriptor's number, nothing token-shaped.
    let env: Vec<&str> = logs
        .lines()
        .skip_while(|l| !l.ends_with("stdout: ENV"))
        .skip(1)
        .take_while(|l| !l.ends_with("stdout: ENDENV"))
        .filter_map(|l| l.split("stdout: ").nth(1))
        .collect();
    assert!(env.contains(&"TESSERA_IDENTITY_FD=3"), "{logs}");
    for var in &env {
        let value = var.split_once('=').map(|(_, v)| v).unwrap_or_default();
        assert!(
            !(value.len() >= 40
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')),
            "a token-shaped value in the container's environment: {var}"
        );
    }
    assert!(
        !env.iter().any(|v| v.contains("tessera:identity")),
        "{logs}"
    );
    // argv: what the operator gave, nothing added.
    let argv = logs
        .lines()
        .find_map(|l| l.split("stdout: ARGV ").nth(1))
        .unwrap_or_else(|| panic!("no ARGV line:\n{logs}"));
    assert!(argv.starts_with("/bin/sh -c echo ENV;"), "{argv}");
    assert!(argv.trim_end().ends_with("sleep 600"), "{argv}");
    // The CA issued it to this node, with the container's name.
    let issued = ca.list();
    assert!(
        issued.contains("O=web") && issued.contains("UID=web"),
        "{issued}"
    );

    // `peek` reads its token from fd 3 itself (the only place it is), so the test knows it
    // and can look for it everywhere else: the container's bundle (rootfs and config.json)
    // and every process's environment and command line, web's included.
    sh(
        &vm,
        &format!("tessera container create peek --template {template} --identity web --start -- /bin/sh -c 'echo TOKEN $(cat <&3)'"),
    );
    let peeked = logs_with(&vm, "peek", "stdout: TOKEN ");
    let token = peeked
        .lines()
        .find_map(|l| l.split("stdout: TOKEN ").nth(1))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no token on fd 3:\n{peeked}"))
        .to_string();
    assert_eq!(token.len(), 43, "a certmgr token on fd 3: {peeked}");
    let bundles: Vec<String> = ["web", "peek"]
        .iter()
        .map(|n| {
            console_json(&sh(&vm, &format!("tessera container inspect {n}")))["record"]["bundle"]
                .as_str()
                .expect("bundle")
                .to_string()
        })
        .collect();
    let out = scan(&vm, &[&token], &bundles.join(" "));
    assert_only_the_binarys_probe_key(&out);
    // web still runs, holding its key in its keyring only.
    let list = sh(&vm, "tessera container list");
    assert!(
        list.lines()
            .any(|l| l.split_whitespace().next() == Some("web") && l.contains("running")),
        "{list}"
    );
    let out = scan(&vm, &[], &bundles[0]);
    assert_only_the_binarys_probe_key(&out);

    // A subsystem the node's token does not list is refused with certmgr's reason.
    let refused = vm
        .run_command_status(
            &format!("tessera container create db --template {template} --identity db --start -- /bin/true"),
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(refused.status, 0, "{}", refused.output);
    assert!(
        refused.output.contains("capability_missing"),
        "{}",
        refused.output
    );
    assert!(refused.output.contains("\"db\""), "{}", refused.output);
}
