//! The FAT and ISO 9660 label readers against images made by the real tools
//! (mkfs.vfat + mcopy from dosfstools/mtools, genisoimage, mkfs.ext4).

mod common;

use common::{fat_image, iso_image, run};
use std::os::unix::fs::FileExt;
use tessera_userdata::label::{probe, FsType, Probe};

fn probe_file(path: &std::path::Path) -> Option<Probe> {
    probe(&std::fs::File::open(path).unwrap()).unwrap()
}

fn vfat(label: &str) -> Option<Probe> {
    Some(Probe {
        fs: FsType::Vfat,
        label: label.into(),
    })
}

#[test]
fn fat12_fat16_fat32_labelled_cidata() {
    let dir = tempfile::tempdir().unwrap();
    for (name, mib, fat) in [
        ("f12.img", 2, "12"),
        ("f16.img", 20, "16"),
        ("f32.img", 40, "32"),
    ] {
        let img = fat_image(
            dir.path(),
            name,
            mib,
            &["-F", fat, "-n", "CIDATA"],
            &[
                ("user-data", b"version = 1\n"),
                ("meta-data", b"instance-id: i-1\n"),
            ],
        );
        assert_eq!(probe_file(&img), vfat("CIDATA"), "FAT{fat}");
    }
}

#[test]
fn fat32_with_larger_sectors_and_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let img = fat_image(
        dir.path(),
        "f32-4k.img",
        300,
        &["-F", "32", "-S", "4096", "-s", "1", "-n", "CIDATA"],
        &[],
    );
    assert_eq!(probe_file(&img), vfat("CIDATA"));
}

#[test]
fn fat_root_directory_label_wins_over_the_boot_sector() {
    let dir = tempfile::tempdir().unwrap();
    // FAT16: the extended boot record's label is at 43..54.
    let img = fat_image(dir.path(), "a.img", 20, &["-F", "16", "-n", "CIDATA"], &[]);
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(b"NO NAME    ", 43).unwrap();
    assert_eq!(
        probe_file(&img),
        vfat("CIDATA"),
        "label from the root directory"
    );

    // No root-directory entry: the boot sector's label is used.
    let img = fat_image(dir.path(), "b.img", 20, &["-F", "16"], &[]);
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(b"CIDATA     ", 43).unwrap();
    assert_eq!(
        probe_file(&img),
        vfat("CIDATA"),
        "label from the boot sector"
    );

    // mlabel rewrites the root-directory entry: that is the label.
    let img = fat_image(dir.path(), "c.img", 20, &["-F", "16", "-n", "CIDATA"], &[]);
    run("mlabel", &["-i", img.to_str().unwrap(), "::OTHER"]);
    assert_eq!(probe_file(&img).unwrap().label, "OTHER");
}

#[test]
fn fat_label_after_many_files_in_a_fat32_root() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..200)
        .map(|i| format!("a-long-file-name-{i}.txt"))
        .collect();
    let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    let img = fat_image(dir.path(), "many.img", 40, &["-F", "32", "-s", "1"], &files);
    // Label the volume after the files: the entry goes into a free slot in a later cluster.
    run("mlabel", &["-i", img.to_str().unwrap(), "::CIDATA"]);
    // Blank the boot sector's copy (FAT32: 71..82) so that only the directory entry counts.
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(b"NO NAME    ", 71).unwrap();
    assert_eq!(
        probe_file(&img).unwrap().label.to_ascii_uppercase(),
        "CIDATA"
    );
}

#[test]
fn fat_without_label_and_other_labels() {
    let dir = tempfile::tempdir().unwrap();
    let img = fat_image(dir.path(), "none.img", 2, &[], &[]);
    assert_eq!(probe_file(&img), vfat(""));
    let img = fat_image(dir.path(), "other.img", 2, &["-n", "DATA"], &[]);
    assert_eq!(probe_file(&img), vfat("DATA"));
}

#[test]
fn iso9660_labelled_cidata_with_and_without_extensions() {
    let dir = tempfile::tempdir().unwrap();
    let files: &[(&str, &[u8])] = &[("user-data", b"version = 1\n"), ("meta-data", b"")];
    // What cloud-localds does: lower-case label, Joliet and Rock Ridge.
    let img = iso_image(dir.path(), "seed.iso", &["-V", "cidata", "-J", "-r"], files);
    let p = probe_file(&img).unwrap();
    assert_eq!(p.fs, FsType::Iso9660);
    assert!(p.label.eq_ignore_ascii_case("cidata"), "{p:?}");
    let img = iso_image(dir.path(), "plain.iso", &["-V", "CIDATA"], files);
    assert_eq!(
        probe_file(&img),
        Some(Probe {
            fs: FsType::Iso9660,
            label: "CIDATA".into()
        })
    );
    let img = iso_image(dir.path(), "other.iso", &["-V", "INSTALL"], files);
    assert_eq!(probe_file(&img).unwrap().label, "INSTALL");
}

#[test]
fn other_file_systems_are_not_nocloud_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("ext4.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(8 * 1024 * 1024)
        .unwrap();
    run(
        "mkfs.ext4",
        &["-q", "-F", "-L", "CIDATA", img.to_str().unwrap()],
    );
    assert_eq!(probe_file(&img), None);
}
