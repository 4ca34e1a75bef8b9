//! Importing OCI runtime bundles: what a good bundle becomes (plain, gzip, zstd), and every
//! hostile or broken archive refused with its code and the destination left empty.

#[path = "data/fixtures.rs"]
mod fixtures;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use fixtures::{
    busybox, busybox_rootfs, config_json, gzip, leftovers, sha256, zstd, CountingReader, Tb, Tmpfs,
};
use tar::EntryType;
use tessera_container::archive::{self, ImportError, Imported, Kind, Limits, Progress};

fn bundle_with(extra: impl FnOnce(&mut Tb)) -> Vec<u8> {
    let mut tb = Tb::new();
    tb.file(
        "config.json",
        0o644,
        &config_json(&["/bin/sh", "-c", "true"]),
    );
    busybox_rootfs(&mut tb, "rootfs/");
    extra(&mut tb);
    tb.finish()
}

fn bundle() -> Vec<u8> {
    bundle_with(|_| {})
}

fn import_with(bytes: &[u8], dest: &Path, limits: &Limits) -> Result<Imported, ImportError> {
    archive::import(bytes, dest, limits, None, &mut |_| {})
}

/// Imports `bytes`, expects the refusal `code`, and checks the destination is empty again.
fn refused_with(bytes: &[u8], limits: &Limits, code: &str) -> ImportError {
    let tmp = tempfile::tempdir().unwrap();
    let err = import_with(bytes, tmp.path(), limits).expect_err("the import must be refused");
    assert_eq!(err.code(), code, "wrong refusal: {err}");
    assert_eq!(
        leftovers(tmp.path()),
        Vec::<String>::new(),
        "the import left files behind ({err})"
    );
    err
}

fn refused(bytes: &[u8], code: &str) -> ImportError {
    refused_with(bytes, &Limits::default(), code)
}

fn assert_bundle_intact(dest: &Path, imported: &Imported) {
    assert_eq!(imported.kind, Kind::Bundle);
    let mut names = leftovers(dest);
    names.sort();
    assert_eq!(
        names,
        ["config.json", "rootfs"],
        "only config.json and rootfs/ stay"
    );
    let args = imported
        .spec
        .process()
        .as_ref()
        .unwrap()
        .args()
        .clone()
        .unwrap();
    assert_eq!(args, ["/bin/sh", "-c", "true"]);
    let r = dest.join("rootfs");
    let bb = fs::symlink_metadata(r.join("bin/busybox")).unwrap();
    assert_eq!(bb.permissions().mode() & 0o7777, 0o755);
    assert_eq!(
        fs::read(r.join("bin/busybox")).unwrap(),
        busybox(),
        "busybox content intact"
    );
    assert_eq!(bb.mtime() as u64, fixtures::MTIME);
    assert_eq!(
        fs::read_link(r.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(
        fs::read_link(r.join("bin/ls")).unwrap(),
        Path::new("/bin/busybox")
    );
    let hard = fs::symlink_metadata(r.join("bin/true")).unwrap();
    assert_eq!(
        hard.ino(),
        bb.ino(),
        "bin/true is a hard link to bin/busybox"
    );
    assert_eq!(bb.nlink(), 2);
    let tmp = fs::symlink_metadata(r.join("tmp")).unwrap();
    assert!(tmp.is_dir());
    assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
    assert_eq!(tmp.mtime() as u64, fixtures::MTIME, "directory mtime kept");
    let owned = fs::symlink_metadata(r.join("home/app.txt")).unwrap();
    assert_eq!((owned.uid(), owned.gid()), (1000, 1000));
    assert_eq!(owned.permissions().mode() & 0o7777, 0o640);
    assert!(fs::symlink_metadata(r.join("run.fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    let out = std::process::Command::new(r.join("bin/busybox"))
        .arg("true")
        .status()
        .unwrap();
    assert!(out.success(), "the imported busybox runs");
    let expected = busybox().len() + fixtures::PASSWD.len() + fixtures::GROUP.len() + 6;
    assert_eq!(imported.bytes, expected as u64, "bytes under rootfs/");
}

#[test]
fn bundle_plain_gzip_and_zstd_import_with_config_and_rootfs_intact() {
    let plain = bundle();
    for (name, bytes) in [
        ("plain", plain.clone()),
        ("gzip", gzip(&plain)),
        ("zstd", zstd(&plain)),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let mut reports = Vec::new();
        let imported =
            archive::import(&bytes[..], tmp.path(), &Limits::default(), None, &mut |p| {
                reports.push(p)
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_bundle_intact(tmp.path(), &imported);
        assert_eq!(
            imported.digest,
            sha256(&bytes),
            "{name}: digest of the bytes as given"
        );
        let last: Progress = *reports.last().expect("progress reported at the end");
        assert_eq!(last.bytes_read, bytes.len() as u64, "{name}");
        assert_eq!(last.entries, 14, "{name}: {last:?}");
    }
}

#[test]
fn progress_is_reported_every_few_mib_and_at_the_end() {
    let bytes = bundle_with(|t| {
        t.file("rootfs/filler", 0o644, &vec![3u8; 16 << 20]);
    });
    let tmp = tempfile::tempdir().unwrap();
    let mut reports: Vec<Progress> = Vec::new();
    archive::import(&bytes[..], tmp.path(), &Limits::default(), None, &mut |p| {
        reports.push(p)
    })
    .unwrap();
    assert!(reports.len() >= 4, "18 MiB read, reports: {reports:?}");
    assert!(
        reports
            .windows(2)
            .all(|w| w[0].bytes_read <= w[1].bytes_read),
        "{reports:?}"
    );
    assert_eq!(reports.last().unwrap().bytes_read, bytes.len() as u64);
}

#[test]
fn second_import_of_the_same_content_has_the_same_digest() {
    let bytes = gzip(&bundle());
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = import_with(&bytes, a.path(), &Limits::default()).unwrap();
    let second = import_with(&bytes, b.path(), &Limits::default()).unwrap();
    assert_eq!(first.digest, second.digest);
    assert_eq!(archive::digest_of(&bytes[..]).unwrap(), first.digest);
    assert_eq!(first.files, second.files);
}

#[test]
fn expected_digest_checked_after_the_stream() {
    let bytes = bundle();
    let tmp = tempfile::tempdir().unwrap();
    let right = sha256(&bytes);
    archive::import(
        &bytes[..],
        tmp.path(),
        &Limits::default(),
        Some(&right),
        &mut |_| {},
    )
    .unwrap();

    let wrong = sha256(b"something else");
    let tmp = tempfile::tempdir().unwrap();
    let err = archive::import(
        &bytes[..],
        tmp.path(),
        &Limits::default(),
        Some(&wrong),
        &mut |_| {},
    )
    .unwrap_err();
    assert_eq!(err.code(), "digest_mismatch", "{err}");
    assert!(
        err.to_string().contains(&right) && err.to_string().contains(&wrong),
        "{err}"
    );
    assert!(leftovers(tmp.path()).is_empty());

    let err = archive::import(
        &bytes[..],
        tmp.path(),
        &Limits::default(),
        Some("md5:abc"),
        &mut |_| {},
    )
    .unwrap_err();
    assert_eq!(err.code(), "bad_digest", "{err}");
    assert!(leftovers(tmp.path()).is_empty());
}

#[test]
fn destination_must_be_empty_and_is_not_touched_when_it_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("keep"), b"mine").unwrap();
    let err = import_with(&bundle(), tmp.path(), &Limits::default()).unwrap_err();
    assert_eq!(err.code(), "dest_not_empty", "{err}");
    assert_eq!(leftovers(tmp.path()), ["keep"]);
}

#[test]
fn dotdot_and_absolute_paths_are_refused() {
    refused(
        &bundle_with(|t| {
            t.file("rootfs/../../escaped", 0o644, b"x");
        }),
        "path_escapes",
    );
    refused(
        &bundle_with(|t| {
            t.file("rootfs/a/../../b", 0o644, b"x");
        }),
        "path_escapes",
    );
    refused(
        &bundle_with(|t| {
            t.file("/tmp/escaped-absolute", 0o644, b"x");
        }),
        "absolute_path",
    );
    assert!(!Path::new("/tmp/escaped-absolute").exists());
}

#[test]
fn symlinks_climbing_out_are_refused_and_absolute_ones_kept() {
    let e = refused(
        &bundle_with(|t| {
            t.symlink("rootfs/up", "../../etc");
        }),
        "link_escapes",
    );
    assert!(e.to_string().contains("rootfs/up"), "{e}");
    refused(
        &bundle_with(|t| {
            t.symlink("rootfs/bin/up", "../../../x");
        }),
        "link_escapes",
    );
    refused(
        &bundle_with(|t| {
            t.symlink("rootfs/u", "a/../../b");
        }),
        "link_escapes",
    );
    // Outside rootfs/ only plain files: a symlinked config.json is not followed anywhere.
    let mut tb = Tb::new();
    tb.symlink("config.json", "/etc/passwd");
    busybox_rootfs(&mut tb, "rootfs/");
    refused(&tb.finish(), "unsupported_entry");
}

#[test]
fn entry_below_a_symlink_to_etc_does_not_write_the_hosts_etc_passwd() {
    let before = fs::read("/etc/passwd").unwrap();
    let bytes = bundle_with(|t| {
        t.symlink("rootfs/a", "/etc")
            .file("rootfs/a/passwd", 0o644, b"evil::0:0::/:/bin/sh\n");
    });
    let err = refused(&bytes, "through_symlink");
    assert!(err.to_string().contains("rootfs/a/passwd"), "{err}");
    assert_eq!(
        fs::read("/etc/passwd").unwrap(),
        before,
        "host /etc/passwd untouched"
    );

    // Same with a symlink straight at a directory of the host.
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().to_str().unwrap().to_string();
    let bytes = bundle_with(|t| {
        t.symlink("rootfs/out", &target)
            .file("rootfs/out/planted", 0o644, b"x");
    });
    refused(&bytes, "through_symlink");
    assert!(
        leftovers(outside.path()).is_empty(),
        "nothing written through the symlink"
    );
}

#[test]
fn hard_links_must_point_at_an_extracted_file_inside_the_root() {
    for target in [
        "/etc/passwd",
        "rootfs/../../etc/passwd",
        "config.json",
        "rootfs/missing",
        "rootfs/bin",
    ] {
        let e = refused(
            &bundle_with(|t| {
                t.hardlink("rootfs/h", target);
            }),
            "link_escapes",
        );
        assert!(e.to_string().contains(target), "{e}");
    }
    // A hard link before its target is extracted.
    let mut tb = Tb::new();
    tb.file("config.json", 0o644, &config_json(&["/bin/sh"]));
    tb.dir("rootfs/", 0o755)
        .hardlink("rootfs/early", "rootfs/late")
        .file("rootfs/late", 0o644, b"x");
    refused(&tb.finish(), "link_escapes");
}

#[test]
fn device_nodes_are_refused() {
    refused(
        &bundle_with(|t| {
            t.special("rootfs/dev-null", EntryType::Char);
        }),
        "device_node",
    );
    refused(
        &bundle_with(|t| {
            t.special("rootfs/sda", EntryType::Block);
        }),
        "device_node",
    );
}

#[test]
fn setuid_and_setgid_files_are_refused_unless_allowed() {
    let suid = bundle_with(|t| {
        t.file("rootfs/bin/su", 0o4755, b"#!/bin/sh\n");
    });
    let e = refused(&suid, "setuid");
    assert!(
        e.to_string().contains("4755") && e.to_string().contains("allow_setuid"),
        "{e}"
    );
    refused(
        &bundle_with(|t| {
            t.file("rootfs/bin/sg", 0o2755, b"x");
        }),
        "setuid",
    );

    let tmp = tempfile::tempdir().unwrap();
    let limits = Limits {
        allow_setuid: true,
        ..Limits::default()
    };
    import_with(&suid, tmp.path(), &limits).unwrap();
    let mode = fs::metadata(tmp.path().join("rootfs/bin/su"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o4755, "setuid kept when allowed");
}

#[test]
fn sizes_and_counts_past_the_limits_are_refused() {
    let big = vec![7u8; busybox().len() + 10];
    let bytes = bundle_with(|t| {
        t.file("rootfs/big", 0o644, &big);
    });
    let limits = Limits {
        max_file_bytes: busybox().len() as u64 + 1,
        ..Limits::default()
    };
    let e = refused_with(&bytes, &limits, "too_large");
    assert!(e.to_string().contains("rootfs/big"), "{e}");

    let limits = Limits {
        max_bytes: 3 << 20,
        ..Limits::default()
    };
    let bytes = bundle_with(|t| {
        t.file("rootfs/big", 0o644, &vec![1u8; 2 << 20]);
    });
    refused_with(&bytes, &limits, "too_large");

    let limits = Limits {
        max_entries: 5,
        ..Limits::default()
    };
    refused_with(&bundle(), &limits, "too_many_entries");
}

#[test]
fn a_decompression_bomb_stops_at_its_header() {
    // A header for a 1 GiB file, then 1 GiB of zeros as 1024 tiny gzip members.
    let header = Tb::header(EntryType::Regular, "rootfs/bomb", "", 0o644, 1 << 30);
    let mut bomb = gzip(header.as_bytes());
    let member = gzip(&vec![0u8; 1 << 20]);
    for _ in 0..1024 {
        bomb.extend_from_slice(&member);
    }
    let read = std::cell::Cell::new(0u64);
    let reader = CountingReader {
        inner: &bomb[..],
        read: &read,
    };
    let tmp = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_file_bytes: 1 << 20,
        ..Limits::default()
    };
    let err = archive::import(reader, tmp.path(), &limits, None, &mut |_| {}).unwrap_err();
    assert_eq!(err.code(), "too_large", "{err}");
    assert!(
        read.get() < bomb.len() as u64 / 4,
        "read {} of {} bytes",
        read.get(),
        bomb.len()
    );
    assert!(leftovers(tmp.path()).is_empty());
}

#[test]
fn a_huge_pax_header_is_refused_before_it_is_buffered() {
    let bytes = bundle_with(|t| {
        let pax = vec![b'a'; 8 << 20];
        t.raw(
            Tb::header(
                EntryType::XHeader,
                "PaxHeaders/x",
                "",
                0o644,
                pax.len() as u64,
            ),
            &pax,
        );
        t.file("rootfs/after-pax", 0o644, b"x");
    });
    let e = refused(&bytes, "too_large");
    assert!(e.to_string().contains("PAX"), "{e}");
}

#[test]
fn truncated_tar_is_refused() {
    let full = bundle();
    // Inside busybox's data.
    refused(&full[..full.len() / 2], "truncated");
    // Without the two end-of-archive blocks: `tar` alone would take this for a whole archive.
    refused(&full[..full.len() - 1024], "truncated");
    // With one of the two.
    refused(&full[..full.len() - 512], "truncated");
    // Inside the first entry's data, and inside the second entry's header.
    refused(&full[..512 + 100], "truncated");
    let second_header = 512 + config_json(&["/bin/sh", "-c", "true"]).len().div_ceil(512) * 512;
    refused(&full[..second_header + 100], "truncated");
}

#[test]
fn truncated_gzip_and_zstd_are_refused() {
    let gz = gzip(&bundle());
    refused(&gz[..gz.len() / 2], "truncated");
    // Only the gzip trailer (CRC and length) missing: the tar inside is complete.
    refused(&gz[..gz.len() - 4], "truncated");
    let zst = zstd(&bundle());
    refused(&zst[..zst.len() / 2], "truncated");
    refused(&zst[..zst.len() - 3], "truncated");
}

#[test]
fn not_a_bundle_names_what_was_found_and_what_is_expected() {
    let mut tb = Tb::new();
    tb.file("hello.txt", 0o644, b"hi");
    let e = refused(&tb.finish(), "not_an_archive");
    assert!(
        e.to_string().contains("hello.txt") && e.to_string().contains("config.json"),
        "{e}"
    );
    refused(b"", "not_an_archive");
    refused(&vec![b'x'; 4096], "corrupt");
}

#[test]
fn missing_config_json_is_refused() {
    let mut tb = Tb::new();
    busybox_rootfs(&mut tb, "rootfs/");
    let e = refused(&tb.finish(), "missing_config");
    assert!(e.to_string().contains("config.json"), "{e}");
}

fn bundle_with_config(config: &[u8]) -> Vec<u8> {
    let mut tb = Tb::new();
    tb.file("./config.json", 0o644, config);
    busybox_rootfs(&mut tb, "./rootfs/");
    tb.finish()
}

#[test]
fn malformed_config_json_is_refused_naming_the_field() {
    let cases: [(&[u8], &str); 6] = [
        (br#"{"ociVersion":"1.0.0","root":{"path":"rootfs"},"process":{"user":{"uid":0,"gid":0},"args":"sh","cwd":"/"}}"#, "process.args"),
        (br#"{"ociVersion":"1.0.0","root":{"path":"rootfs"},"process":{"user":{"uid":0,"gid":0},"args":[],"cwd":"/"}}"#, "process.args"),
        (br#"{"ociVersion":"2.0.0","root":{"path":"rootfs"},"process":{"user":{"uid":0,"gid":0},"args":["sh"],"cwd":"/"}}"#, "ociVersion"),
        (br#"{"ociVersion":"1.0.0","root":{"path":"rootfs"}}"#, "process"),
        (br#"{"ociVersion":"1.0.0","root":{"path":"/"},"process":{"user":{"uid":0,"gid":0},"args":["sh"],"cwd":"/"}}"#, "root.path"),
        (br#"{"ociVersion": "1.0.0", "root": {"#, "config.json"),
    ];
    for (config, field) in cases {
        let e = refused(&bundle_with_config(config), "bad_config");
        assert!(e.to_string().contains(&format!("{field}:")), "{field}: {e}");
    }
    let e = refused(&bundle_with_config(cases[0].0), "bad_config");
    assert!(
        e.to_string()
            .contains("config.json: process.args: invalid type"),
        "{e}"
    );
}

#[test]
fn disk_full_mid_import_is_no_space_and_leaves_nothing() {
    let fs = Tmpfs::mount();
    let dest = fs.0.path().join("template");
    fs::create_dir(&dest).unwrap();
    let bytes = bundle_with(|t| {
        t.file("rootfs/filler", 0o644, &vec![9u8; 2 << 20]);
    });
    let err = import_with(&bytes, &dest, &Limits::default()).unwrap_err();
    assert_eq!(err.code(), "no_space", "{err}");
    assert!(
        err.to_string()
            .contains("rootfs/bin/busybox: no space left"),
        "{err}"
    );
    assert!(leftovers(&dest).is_empty(), "half a template left behind");
}
