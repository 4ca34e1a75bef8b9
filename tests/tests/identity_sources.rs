//! End-to-end: the node's one-time token reaches it through each user-data source, and the
//! certificate manager redeems it with the CA on the host (10.0.2.2 from the guest): PXE
//! kernel arguments (through QEMU's TFTP and the iPXE ROM), a NoCloud volume (vfat and
//! iso9660, labelled CIDATA, made by mkfs.vfat / genisoimage), and EC2-style IMDSv2 from a
//! local test server speaking the protocol (PUT for a session token, GET with it).

#[path = "../../agents/userdata/tests/common/mod.rs"]
mod userdata_helpers;

use std::path::PathBuf;
use std::time::Duration;
use tessera_e2e::ca::HostCa;
use tessera_e2e::*;
use tessera_qemu::{BootMode, Vm};
use userdata_helpers::{fat_image, iso_image, Imds};

const BOOT: Duration = Duration::from_secs(300);

/// The minimum user-data schema with the CA section filled in for `node`.
fn user_data(ca: &HostCa, token: &str, node: &str) -> String {
    format!(
        "version = 1\n\n[node]\nhostname = \"{node}\"\n\n[ca]\nurl = \"https://10.0.2.2:{}\"\n\
         fingerprint = \"{}\"\ntoken = \"{token}\"\n",
        ca.port, ca.fingerprint
    )
}

/// Waits for the node certificate and checks that it names `node`, that the CA's ledger holds
/// it and that the source the user-data came from is `source`.
fn assert_certified(vm: &Vm, ca: &HostCa, node: &str, source: &str) {
    // User-data that arrives after the network (IMDS) can find certmgr already standalone,
    // and past TESSERA-READY events no longer reach the console: ask the node.
    wait_ready(vm, BootMode::Kernel);
    let subject = format!("DC=prod, O=certmgr, OU={node}, UID=certmgr");
    let stored = sh_until(vm, "tessera logs certmgr", BOOT, |l| {
        l.contains("node certificate stored in the keyring")
    });
    assert!(stored.contains(&subject), "{stored}");
    let logs = sh(vm, "tessera logs userdata");
    assert!(logs.contains(&format!("source={source}")), "{logs}");
    let status = sh(vm, "tessera identity status");
    assert!(status.contains(&subject), "{status}");
    let serial = status
        .lines()
        .find_map(|l| l.strip_prefix("serial"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no serial in:\n{status}"))
        .to_string();
    let list = ca.list();
    assert!(
        list.lines()
            .any(|l| l.starts_with(&serial) && l.contains(&subject)),
        "serial {serial} not in `tessera ca list`:\n{list}"
    );
    assert_eq!(sh(vm, "hostname").trim(), node);
}

fn seed_dir(name: &str) -> PathBuf {
    let dir = repo_root().join("out/e2e-seeds").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the seed directory");
    dir
}

#[test]
fn pxe_boot_with_the_token_on_the_kernel_command_line_gets_the_certificate() {
    let ca = HostCa::start("sources-pxe");
    let token = ca.token("pxe1.example");
    let args = ca.kernel_args(&token, "pxe1.example");
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let vm = boot(&default_image(), BootMode::Pxe, "identity-pxe", &refs);
    assert_certified(&vm, &ca, "pxe1.example", "cmdline");
    // The arguments came through boot.ipxe's kernel line (`initrd=` is iPXE's), not -append.
    let cmdline = sh(&vm, "cat /proc/cmdline");
    assert!(
        cmdline.contains("initrd=initramfs.img") && cmdline.contains("tessera.ca_fp=sha256:"),
        "{cmdline}"
    );
}

#[test]
fn a_nocloud_vfat_seed_gets_the_node_its_certificate() {
    let ca = HostCa::start("sources-nocloud-vfat");
    let token = ca.token("seed1.example");
    let doc = user_data(&ca, &token, "seed1.example");
    let dir = seed_dir("vfat");
    let seed = fat_image(
        &dir,
        "seed.img",
        2,
        &["-n", "CIDATA"],
        &[("user-data", doc.as_bytes()), ("meta-data", b"")],
    );
    let vm = boot_with_disks(
        &default_image(),
        BootMode::Kernel,
        "identity-nocloud-vfat",
        &["tessera.imds=off"],
        &[seed],
    );
    assert_certified(&vm, &ca, "seed1.example", "nocloud");
    // The validated configuration is root's alone, and the token is not in it.
    let mode = sh(&vm, "stat -c %a /run/tessera/userdata.toml");
    assert_eq!(mode.trim(), "600");
    let userdata = sh(&vm, "cat /run/tessera/userdata.toml");
    assert!(!userdata.contains(&token), "{userdata}");
}

#[test]
fn a_nocloud_iso9660_seed_gets_the_node_its_certificate() {
    let ca = HostCa::start("sources-nocloud-iso");
    let token = ca.token("seed2.example");
    let doc = user_data(&ca, &token, "seed2.example");
    let dir = seed_dir("iso");
    let seed = iso_image(
        &dir,
        "seed.iso",
        &["-V", "cidata", "-J", "-r"],
        &[("user-data", doc.as_bytes()), ("meta-data", b"")],
    );
    let vm = boot_with_disks(
        &default_image(),
        BootMode::Kernel,
        "identity-nocloud-iso",
        &["tessera.imds=off"],
        &[seed],
    );
    assert_certified(&vm, &ca, "seed2.example", "nocloud");
}

#[test]
fn imdsv2_user_data_gets_the_node_its_certificate() {
    let ca = HostCa::start("sources-imds");
    let token = ca.token("cloud1.example");
    let doc = user_data(&ca, &token, "cloud1.example");
    let imds = Imds::start(Some(doc.as_bytes()));
    let endpoint = format!("tessera.imds=http://10.0.2.2:{}", imds.port);
    let vm = boot(
        &default_image(),
        BootMode::Kernel,
        "identity-imds",
        &[&endpoint],
    );
    assert_certified(&vm, &ca, "cloud1.example", "imds");

    // IMDSv2, as EC2 speaks it: a session token first (PUT with a TTL), then the user-data
    // with that token; nothing fetched without one.
    let seen = imds.seen();
    let put = seen
        .iter()
        .position(|r| r.method == "PUT" && r.path == "/latest/api/token")
        .unwrap_or_else(|| panic!("no token PUT: {seen:?}"));
    assert!(
        seen[put]
            .header("x-aws-ec2-metadata-token-ttl-seconds")
            .is_some(),
        "{seen:?}"
    );
    let get = seen
        .iter()
        .position(|r| r.method == "GET" && r.path == "/latest/user-data" && r.status == 200)
        .unwrap_or_else(|| panic!("no user-data GET: {seen:?}"));
    assert!(put < get, "{seen:?}");
    assert!(
        seen[get].header("x-aws-ec2-metadata-token").is_some(),
        "{seen:?}"
    );
}
