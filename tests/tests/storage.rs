//! End-to-end: the storage service on a data disk named by NoCloud user-data. A blank qcow2
//! with backend btrfs becomes a Btrfs /var/lib/tessera; volumes, read-write and read-only
//! snapshots made with `tessera volume` keep their contents across a power-off and a second
//! boot with the same disk image. The same with lvm-thin (`lvs` shows the pool and the
//! snapshot's origin). A disk with an ext4 filesystem is not formatted without
//! `storage.wipe = true` (the signature is still there afterwards, and the node says why); with
//! it, the disk is formatted, and once it is full `tessera volume create` says so while the
//! node keeps answering. Without [storage] the service is ready and says there is no disk.

#[path = "../../agents/userdata/tests/common/mod.rs"]
mod userdata_helpers;

use std::path::{Path, PathBuf};
use std::time::Duration;
use tessera_e2e::*;
use tessera_qemu::{BootMode, Vm};
use userdata_helpers::fat_image;

const SETTLE: Duration = Duration::from_secs(120);

fn seed(dir: &Path, name: &str, storage: &str) -> PathBuf {
    let doc = format!("version = 1\n\n[storage]\n{storage}");
    fat_image(
        dir,
        name,
        2,
        &["-n", "CIDATA"],
        &[("user-data", doc.as_bytes()), ("meta-data", b"")],
    )
}

/// Boots with the seed as /dev/vda and the data disk as /dev/vdb, and waits until the storage
/// service has settled (ready, with or without a usable disk).
fn boot_storage(name: &str, seed: &Path, data: &Path) -> Vm {
    let vm = boot_with_disks(
        &default_image(),
        BootMode::Kernel,
        name,
        &[],
        &[seed.to_path_buf(), data.to_path_buf()],
    );
    wait_ready(&vm, BootMode::Kernel);
    sh_until(&vm, "tessera status", SETTLE, |s| {
        s.lines()
            .any(|l| l.split_whitespace().next() == Some("storage") && l.contains(" ready"))
    });
    vm
}

fn power_off(mut vm: Vm) {
    vm.send_line("tessera poweroff").unwrap();
    let exit = vm.wait_exit(Duration::from_secs(120)).unwrap();
    assert!(exit.is_clean_poweroff(), "{exit:?}");
}

/// Runs `command` expecting it to fail; returns its output.
fn fails(vm: &Vm, command: &str) -> String {
    let out = vm
        .run_command_status(command, Duration::from_secs(120))
        .unwrap();
    assert_ne!(out.status, 0, "{command} succeeded:\n{}", out.output);
    out.output
}

/// The checks both backends share on the first boot: a volume, a read-write and a read-only
/// snapshot, with the volume changed after the snapshots were taken.
fn make_volumes(vm: &Vm, snapshots: &str, create: &str) {
    sh(vm, create);
    sh(vm, "echo first > /var/lib/tessera/volumes/data/file");
    sh(vm, "tessera volume snapshot data snap-rw");
    sh(vm, "tessera volume snapshot data snap-ro --readonly");
    sh(vm, "echo second > /var/lib/tessera/volumes/data/file");
    let ro = fails(vm, &format!("echo x > {snapshots}/snap-ro/other"));
    assert!(ro.contains("Read-only file system"), "{ro}");
    sh(vm, &format!("echo rw > {snapshots}/snap-rw/other"));
    let bad = fails(vm, "tessera volume create ../etc");
    assert!(bad.contains("contains a slash"), "{bad}");
    let dup = fails(vm, "tessera volume create data");
    assert!(dup.contains("exists already"), "{dup}");
    let missing = fails(vm, "tessera volume snapshot nothing s9");
    assert!(
        missing.contains("no volume or snapshot named nothing"),
        "{missing}"
    );
}

/// After the reboot: contents as they were, the read-only snapshot still read-only; delete.
fn check_volumes(vm: &Vm, snapshots: &str) {
    let list = sh(vm, "tessera volume list");
    for row in ["data ", "snap-rw ", "snap-ro "] {
        assert!(
            list.lines().any(|l| l.starts_with(row)),
            "no {row} in:\n{list}"
        );
    }
    assert!(
        list.lines()
            .any(|l| l.starts_with("snap-ro ") && l.contains(" ro ")),
        "{list}"
    );
    assert_eq!(
        sh(vm, "cat /var/lib/tessera/volumes/data/file").trim(),
        "second"
    );
    assert_eq!(
        sh(vm, &format!("cat {snapshots}/snap-rw/file")).trim(),
        "first"
    );
    assert_eq!(
        sh(vm, &format!("cat {snapshots}/snap-rw/other")).trim(),
        "rw"
    );
    assert_eq!(
        sh(vm, &format!("cat {snapshots}/snap-ro/file")).trim(),
        "first"
    );
    let ro = fails(vm, &format!("echo x > {snapshots}/snap-ro/other"));
    assert!(ro.contains("Read-only file system"), "{ro}");
    sh(vm, "tessera volume delete snap-rw");
    let list = sh(vm, "tessera volume list");
    assert!(!list.contains("snap-rw"), "{list}");
    let gone = fails(vm, "tessera volume delete snap-rw");
    assert!(
        gone.contains("no volume or snapshot named snap-rw"),
        "{gone}"
    );
}

#[test]
fn btrfs_volumes_and_snapshots_survive_a_reboot() {
    let dir = test_dir("storage-btrfs");
    let data = data_disk(&dir, "1G");
    let seed = seed(
        &dir,
        "seed.img",
        "backend = \"btrfs\"\ndevice = \"/dev/vdb\"\n",
    );
    let vm = boot_storage("storage-btrfs", &seed, &data);
    let mounts = sh(&vm, "cat /proc/mounts");
    assert!(
        mounts.contains("/dev/vdb /var/lib/tessera btrfs "),
        "{mounts}"
    );
    make_volumes(
        &vm,
        "/var/lib/tessera/snapshots",
        "tessera volume create data",
    );
    // A client nobody here wrote sees our subvolumes, and the read-only flag.
    let subvols = sh(&vm, "btrfs subvolume list /var/lib/tessera");
    for p in ["volumes/data", "snapshots/snap-rw", "snapshots/snap-ro"] {
        assert!(
            subvols
                .lines()
                .any(|l| l.trim_end().ends_with(&format!(" path {p}"))),
            "{p} not in:\n{subvols}"
        );
    }
    let ro = sh(
        &vm,
        "btrfs property get -ts /var/lib/tessera/snapshots/snap-ro ro",
    );
    assert!(ro.contains("ro=true"), "{ro}");
    power_off(vm);

    let vm = boot_storage("storage-btrfs-again", &seed, &data);
    let logs = sh(&vm, "tessera logs storage");
    assert!(
        logs.contains("TesseraBtrfs") && !logs.contains("formatting the data disk"),
        "{logs}"
    );
    check_volumes(&vm, "/var/lib/tessera/snapshots");
    power_off(vm);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn lvm_thin_volumes_and_snapshots_survive_a_reboot() {
    let dir = test_dir("storage-lvm");
    let data = data_disk(&dir, "2G");
    let seed = seed(
        &dir,
        "seed.img",
        "backend = \"lvm-thin\"\ndevice = \"/dev/vdb\"\n",
    );
    let vm = boot_storage("storage-lvm", &seed, &data);
    let mounts = sh(&vm, "cat /proc/mounts");
    assert!(
        mounts.contains("/dev/tessera/meta /var/lib/tessera ext4 "),
        "{mounts}"
    );
    make_volumes(
        &vm,
        "/var/lib/tessera/volumes",
        "tessera volume create data --size 256M",
    );
    let lvs = sh(
        &vm,
        "LVM_SYSTEM_DIR=/run/tessera/lvm lvs --noheadings -o lv_name,origin,lv_attr tessera",
    );
    let row = |lv: &str| -> Vec<String> {
        lvs.lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .find(|c| c.first().map(String::as_str) == Some(lv))
            .unwrap_or_else(|| panic!("no {lv} in:\n{lvs}"))
    };
    assert!(row("pool")[1].starts_with("twi"), "{lvs}");
    assert_eq!(row("v-snap-ro")[1], "v-data", "{lvs}");
    assert_eq!(row("v-snap-rw")[1], "v-data", "{lvs}");
    assert!(row("v-snap-ro")[2].starts_with("Vri"), "{lvs}");
    power_off(vm);

    let vm = boot_storage("storage-lvm-again", &seed, &data);
    check_volumes(&vm, "/var/lib/tessera/volumes");
    power_off(vm);
    let _ = std::fs::remove_dir_all(&dir);
}

/// ext4's superblock magic (0xEF53 at byte 1080).
fn has_ext4_magic(disk: &Path) -> bool {
    let bytes = std::fs::read(disk).unwrap();
    bytes[1080..1082] == [0x53, 0xef]
}

#[test]
fn a_foreign_disk_is_kept_until_wipe_and_a_full_disk_says_so() {
    let dir = test_dir("storage-foreign");
    let data = dir.join("data.img");
    std::fs::File::create(&data)
        .unwrap()
        .set_len(320 << 20)
        .unwrap();
    host("mkfs.ext4", &["-q", "-F", data.to_str().unwrap()]);
    assert!(has_ext4_magic(&data));
    let keep = seed(
        &dir,
        "keep.img",
        "backend = \"btrfs\"\ndevice = \"/dev/vdb\"\n",
    );
    let vm = boot_storage("storage-foreign", &keep, &data);
    let status = sh(&vm, "tessera status");
    assert!(
        status.contains("holds an ext2/ext3/ext4 filesystem"),
        "{status}"
    );
    let logs = sh(&vm, "tessera logs storage");
    assert!(
        logs.contains("data disk refused") && logs.contains("storage.wipe = true"),
        "{logs}"
    );
    let refused = fails(&vm, "tessera volume list");
    assert!(
        refused.contains("no_storage") && refused.contains("set storage.wipe = true"),
        "{refused}"
    );
    let mounts = sh(&vm, "cat /proc/mounts");
    assert!(!mounts.contains("/var/lib/tessera"), "{mounts}");
    power_off(vm);
    assert!(has_ext4_magic(&data), "the ext4 filesystem was touched");

    let wipe = seed(
        &dir,
        "wipe.img",
        "backend = \"btrfs\"\ndevice = \"/dev/vdb\"\nwipe = true\n",
    );
    let vm = boot_storage("storage-wipe", &wipe, &data);
    let mounts = sh(&vm, "cat /proc/mounts");
    assert!(
        mounts.contains("/dev/vdb /var/lib/tessera btrfs "),
        "{mounts}"
    );
    // Fill the disk: the kernel refuses the write, then the service refuses new volumes.
    sh(&vm, "tessera volume create fill");
    let dd = fails(
        &vm,
        "dd if=/dev/zero of=/var/lib/tessera/volumes/fill/big bs=1M 2>&1",
    );
    assert!(dd.contains("No space left on device"), "{dd}");
    sh(&vm, "sync");
    let full = fails(&vm, "tessera volume create more");
    assert!(full.contains("no space left on the data disk"), "{full}");
    let full = fails(&vm, "tessera volume snapshot fill fill-snap");
    assert!(full.contains("no space left on the data disk"), "{full}");
    // The node is still there and says so.
    let status = sh(&vm, "tessera status");
    assert_eq!(status_row(&status, "storage")[2], "ready", "{status}");
    power_off(vm);
    assert!(!has_ext4_magic(&data), "the disk was not formatted");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_storage_in_user_data_the_service_is_ready_and_says_there_is_no_disk() {
    let vm = boot(&default_image(), BootMode::Kernel, "storage-none", &[]);
    wait_ready(&vm, BootMode::Kernel);
    let status = sh(&vm, "tessera status");
    let row = status_row(&status, "storage");
    assert_eq!(row[2], "ready", "{status}");
    assert!(row.join(" ").contains("no data disk"), "{status}");
    let logs = sh(&vm, "tessera logs storage");
    assert!(
        logs.contains("no data disk: user-data has no [storage]"),
        "{logs}"
    );
    let refused = fails(&vm, "tessera volume create data");
    assert!(
        refused.contains("no_storage") && refused.contains("add [storage] backend and device"),
        "{refused}"
    );
}
