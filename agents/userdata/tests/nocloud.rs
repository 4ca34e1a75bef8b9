//! The NoCloud source on real block devices: images attached to loop devices, found by
//! scanning (a sysfs directory that lists only the test's loop devices), labels read from the
//! devices, mounted with mount(2). Needs root and loop devices; says so and passes otherwise.
//!
//! Where the kernel has no vfat / iso9660 (this development container's kernel has neither),
//! the source's path is checked up to the mount call, which must fail with the reason; the
//! mount, read and unmount themselves are checked with ext4 standing in.

mod common;

use common::{fat_image, iso_image, run};
use std::path::{Path, PathBuf};
use std::process::Command;
use tessera_userdata::events::Events;
use tessera_userdata::label::FsType;
use tessera_userdata::nocloud::{scan, NoCloudSource};
use tessera_userdata::{mount, Source, SourceError};

const USER_DATA: &[u8] =
    b"version = 1\n[node]\ncluster = \"lab\"\n[hub]\nseeds = [\"n2.example\"]\n";
const META_DATA: &[u8] = b"instance-id: iid-local01\nlocal-hostname: seed-node.example\n";

/// A loop device attached to an image, detached on drop.
struct Loop(PathBuf);

impl Loop {
    fn attach(image: &Path) -> Option<Loop> {
        let out = Command::new("losetup")
            .args(["--find", "--show", "--read-only"])
            .arg(image)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!("losetup failed: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let l = Loop(dev);
        l.0.exists().then_some(l)
    }

    fn name(&self) -> String {
        self.0.file_name().unwrap().to_string_lossy().into_owned()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

fn loops_usable() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ok = root && Path::new("/dev/loop-control").exists();
    if !ok {
        eprintln!("skipped: needs root and /dev/loop-control (loop devices)");
    }
    ok
}

fn kernel_has(fs: &str) -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().last() == Some(fs))
}

/// A sysfs-like directory listing only these loop devices, with their real sizes.
fn fake_sys_block(dir: &Path, loops: &[&Loop]) -> PathBuf {
    let sys = dir.join("sys-class-block");
    std::fs::create_dir_all(&sys).unwrap();
    for l in loops {
        let name = l.name();
        std::fs::create_dir_all(sys.join(&name)).unwrap();
        let size = std::fs::read_to_string(format!("/sys/class/block/{name}/size"))
            .unwrap_or_else(|_| "2048\n".into());
        std::fs::write(sys.join(&name).join("size"), size).unwrap();
    }
    sys
}

fn is_mounted(dir: &Path) -> bool {
    let dir = dir.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&dir))
}

fn seed_files() -> Vec<(&'static str, &'static [u8])> {
    vec![("user-data", USER_DATA), ("meta-data", META_DATA)]
}

#[test]
fn scan_finds_cidata_volumes_on_block_devices() {
    if !loops_usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let other = fat_image(dir.path(), "other.img", 2, &["-n", "DATA"], &[]);
    let fat = fat_image(dir.path(), "fat.img", 2, &["-n", "CIDATA"], &seed_files());
    let iso = iso_image(
        dir.path(),
        "seed.iso",
        &["-V", "cidata", "-J", "-r"],
        &seed_files(),
    );
    let (Some(l1), Some(l2), Some(l3)) =
        (Loop::attach(&other), Loop::attach(&fat), Loop::attach(&iso))
    else {
        eprintln!("skipped: cannot attach loop devices");
        return;
    };
    let sys = fake_sys_block(dir.path(), &[&l1, &l2, &l3]);
    let (events, _) = Events::capture();
    let mut found: Vec<(PathBuf, FsType)> = scan(&sys, Path::new("/dev"), &events)
        .into_iter()
        .map(|v| (v.device, v.probe.fs))
        .collect();
    found.sort();
    let mut expected = vec![
        (l2.0.clone(), FsType::Vfat),
        (l3.0.clone(), FsType::Iso9660),
    ];
    expected.sort();
    assert_eq!(found, expected);
}

fn fetch_through_loop(image: &Path, fs: &str) {
    let dir = tempfile::tempdir().unwrap();
    let Some(l) = Loop::attach(image) else {
        eprintln!("skipped: cannot attach a loop device");
        return;
    };
    let source = NoCloudSource {
        sys_block: fake_sys_block(dir.path(), &[&l]),
        dev_dir: "/dev".into(),
        mount_dir: dir.path().join("run/tessera/nocloud"),
    };
    let (events, captured) = Events::capture();
    let result = source.fetch(&events);
    assert!(!is_mounted(&source.mount_dir), "left mounted");
    assert!(!source.mount_dir.exists(), "mount point left behind");
    assert!(captured.text().contains("found NoCloud volume"));
    if kernel_has(fs) {
        let fetched = result.unwrap().unwrap();
        // meta-data's local-hostname fills in the host name the user-data does not set.
        assert_eq!(
            fetched.config.node.hostname.as_deref(),
            Some("seed-node.example")
        );
        assert_eq!(fetched.config.node.cluster, "lab");
        assert!(
            fetched.detail.contains("instance-id iid-local01"),
            "{}",
            fetched.detail
        );
    } else {
        eprintln!("this kernel has no {fs}: checking the path up to mount(2)");
        match result {
            Err(SourceError::Failed(reason)) => {
                assert!(
                    reason.contains(&format!("cannot mount {}", l.0.display())),
                    "{reason}"
                );
                assert!(
                    reason.contains(&format!("the kernel has no {fs} file system")),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn nocloud_fat_volume_end_to_end() {
    if !loops_usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = fat_image(dir.path(), "seed.img", 2, &["-n", "CIDATA"], &seed_files());
    fetch_through_loop(&img, "vfat");
}

#[test]
fn nocloud_iso9660_volume_end_to_end() {
    if !loops_usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = iso_image(
        dir.path(),
        "seed.iso",
        &["-V", "cidata", "-J", "-r"],
        &seed_files(),
    );
    fetch_through_loop(&img, "iso9660");
}

#[test]
fn mount_read_unmount_on_a_loop_device() {
    // ext4 stands in for vfat / iso9660 where the kernel lacks them: the same mount(2) flags,
    // the same reading (regular files, no links followed), the same cleanup.
    if !loops_usable() || !kernel_has("ext4") {
        eprintln!("skipped: needs loop devices and ext4");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("content");
    std::fs::create_dir(&content).unwrap();
    std::fs::write(content.join("user-data"), USER_DATA).unwrap();
    std::fs::write(content.join("meta-data"), META_DATA).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", content.join("evil")).unwrap();
    let img = dir.path().join("ext4.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-L",
            "CIDATA",
            "-d",
            content.to_str().unwrap(),
            img.to_str().unwrap(),
        ],
    );
    let Some(l) = Loop::attach(&img) else {
        eprintln!("skipped: cannot attach a loop device");
        return;
    };
    let mnt = dir.path().join("run/nocloud");
    let (user, meta, evil, flags) = mount::with_mounted(&l.0, "ext4", &mnt, |d| {
        assert!(is_mounted(d));
        let flags = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .find(|line| line.split(' ').nth(4) == Some(&*d.to_string_lossy()))
            .map(|line| line.split(' ').nth(5).unwrap_or_default().to_string())
            .unwrap_or_default();
        (
            mount::read_small_file(d, "user-data", 1 << 20).unwrap(),
            mount::read_small_file(d, "meta-data", 1 << 16).unwrap(),
            mount::read_small_file(d, "evil", 1 << 16),
            flags,
        )
    })
    .unwrap();
    assert_eq!(user.as_deref(), Some(USER_DATA));
    assert_eq!(meta.as_deref(), Some(META_DATA));
    assert!(evil.is_err(), "a symbolic link must not be followed");
    for f in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(flags.split(',').any(|x| x == f), "{f} missing in {flags}");
    }
    assert!(!is_mounted(&mnt));
    assert!(!mnt.exists());
}

#[test]
fn mount_failure_cleans_up_and_says_why() {
    if !loops_usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("m");
    let e = mount::with_mounted(Path::new("/dev/null"), "no-such-fs", &mnt, |_| ()).unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot mount /dev/null (no-such-fs) read-only"),
        "{e}"
    );
    assert!(!mnt.exists());
}
