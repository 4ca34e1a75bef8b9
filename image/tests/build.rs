//! Builds with the real pinned Debian packages (downloaded into the repository's
//! `.cache/tessera` on first use, through apt) and checks what comes out.
//!
//! The pinned busybox-static stands in for the tessera binary: any static x86-64 executable
//! will do for the builder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tessera_image::cpio::{self, ReadEntry, S_IFCHR, S_IFLNK};
use tessera_image::lock::{LockFile, Role};
use tessera_image::{
    disk, fetch, qcow2, uki, BuildOptions, BuildReport, ImageError, DEFAULT_CMDLINE,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("image/ is inside the repository")
        .to_path_buf()
}

fn lock_path() -> PathBuf {
    repo().join("image/packages.lock")
}

fn cache() -> PathBuf {
    repo().join(".cache/tessera")
}

/// The pinned static busybox, used as --tessera-bin.
fn static_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let lock = LockFile::load(&lock_path()).expect("image/packages.lock");
        let p = fetch::fetch(&cache(), lock.get(Role::Busybox), &lock_path())
            .expect("fetch busybox-static");
        p.root.join("bin/busybox")
    })
    .clone()
}

fn extra_services(dir: &Path) -> PathBuf {
    let d = dir.join("extra-services");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("zz-test.toml"),
        "# a test service file, copied verbatim\n",
    )
    .unwrap();
    d
}

fn options(out: &Path) -> BuildOptions {
    let mut o = BuildOptions::new(repo());
    o.out = out.to_path_buf();
    o.tessera_bin = Some(static_binary());
    o
}

struct Built {
    _dir: tempfile::TempDir,
    out: PathBuf,
    extra: PathBuf,
    report: BuildReport,
}

/// One full build (with disk) shared by the tests that inspect its outputs.
fn full() -> &'static Built {
    static FULL: OnceLock<Built> = OnceLock::new();
    FULL.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let extra = extra_services(dir.path());
        let mut o = options(&out);
        o.extra_services = vec![extra.clone()];
        let report = tessera_image::build(&o).unwrap_or_else(|e| panic!("full build failed: {e}"));
        Built {
            _dir: dir,
            out,
            extra,
            report,
        }
    })
}

fn initramfs_entries(img: &Path) -> BTreeMap<String, ReadEntry> {
    let compressed = std::fs::read(img).unwrap();
    let archive = zstd::stream::decode_all(&compressed[..]).expect("initramfs.img is zstd");
    cpio::read(&archive)
        .unwrap()
        .into_iter()
        .map(|e| (e.path.clone(), e))
        .collect()
}

#[test]
fn initramfs_is_byte_identical_across_builds() {
    let first = full();
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(&dir.path().join("out"));
    o.extra_services = vec![first.extra.clone()];
    o.no_disk = true;
    tessera_image::build(&o).unwrap();
    let a = std::fs::read(first.out.join("pxe/initramfs.img")).unwrap();
    let b = std::fs::read(dir.path().join("out/pxe/initramfs.img")).unwrap();
    assert!(
        a == b,
        "two builds of the same inputs gave different initramfs.img"
    );
}

#[test]
fn initramfs_has_init_links_console_modules_and_services() {
    let b = full();
    let e = initramfs_entries(&b.out.join("pxe/initramfs.img"));
    let link = |p: &str| {
        let x = &e[p];
        assert_eq!(x.mode & 0o170000, S_IFLNK, "{p} is a symlink");
        String::from_utf8(x.data.clone()).unwrap()
    };
    assert_eq!(link("init"), "/sbin/tessera");
    assert_eq!(link("sbin/request-key"), "tessera");
    assert_eq!(link("bin/sh"), "/bin/busybox");
    assert!(!e.contains_key("linuxrc") && !e.contains_key("sbin/init"));
    assert_eq!(e["sbin/tessera"].mode & 0o777, 0o755);
    assert_eq!(
        e["sbin/tessera"].data,
        std::fs::read(static_binary()).unwrap()
    );
    let console = &e["dev/console"];
    assert_eq!((console.mode, console.rdev), (S_IFCHR | 0o600, (5, 1)));
    for d in [
        "proc", "sys", "run", "tmp", "root", "var", "mnt", "usr/bin", "usr/sbin",
    ] {
        assert!(e.contains_key(d), "/{d} missing");
    }
    // Modules: the boot list, and a modules.dep line in depmod order.
    let release = &b.report.kernel_release;
    let text = |p: &str| String::from_utf8(e[p].data.clone()).unwrap();
    assert_eq!(
        text("etc/tessera/modules.boot"),
        "virtio_pci\nvirtio_blk\nvirtio_net\nvirtio_rng\nnf_tables\nnft_ct\n"
    );
    let dep = text(&format!("lib/modules/{release}/modules.dep"));
    // Boot modules stay plain .ko; modules only shipped are zstd-compressed .ko.zst.
    assert!(
        dep.lines()
            .any(|l| l.starts_with("kernel/fs/btrfs/btrfs.ko.zst:")),
        "btrfs is compressed"
    );
    let btrfs = &e[&format!("lib/modules/{release}/kernel/fs/btrfs/btrfs.ko.zst")].data;
    assert_eq!(&btrfs[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd magic");
    assert!(e.contains_key(&format!(
        "lib/modules/{release}/kernel/drivers/virtio/virtio_pci.ko"
    )));
    // A boot module's dependencies are loaded at boot too: plain as well.
    assert!(e.contains_key(&format!(
        "lib/modules/{release}/kernel/net/netfilter/nf_conntrack.ko"
    )));
    assert_eq!(link("sbin/modprobe"), "tessera");
    let virtio_net = dep
        .lines()
        .find(|l| l.starts_with("kernel/drivers/net/virtio_net.ko:"))
        .expect("virtio_net line");
    let pos = |m: &str| {
        virtio_net
            .find(m)
            .unwrap_or_else(|| panic!("{m} in {virtio_net}"))
    };
    assert!(pos("net_failover.ko") < pos("/failover.ko"), "{virtio_net}");
    for line in dep.lines() {
        let ko = line.split(':').next().unwrap();
        assert!(
            e.contains_key(&format!("lib/modules/{release}/{ko}")),
            "{ko} listed but not shipped"
        );
    }
    assert!(text(&format!("lib/modules/{release}/modules.alias"))
        .contains("alias nft-expr-ct nft_ct\n"));
    // Every default service file, plus the extra one.
    for f in std::fs::read_dir(repo().join("image/services")).unwrap() {
        let name = f.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".toml") {
            assert!(
                e.contains_key(&format!("etc/tessera/services/{name}")),
                "{name} not copied"
            );
        }
    }
    assert_eq!(
        text("etc/tessera/services/zz-test.toml"),
        "# a test service file, copied verbatim\n"
    );
    assert!(text("etc/os-release").contains("ID=tessera\n"));
    assert!(text("etc/profile").contains("PATH=/sbin:/bin:/usr/sbin:/usr/bin"));
}

#[test]
fn uki_has_osrel_cmdline_linux_and_initrd_sections() {
    let b = full();
    let image = std::fs::read(b.out.join("uki.efi")).unwrap();
    let h = uki::parse_headers(&image).unwrap();
    let names: Vec<&str> = h.sections.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names[names.len() - 4..],
        [".osrel", ".cmdline", ".linux", ".initrd"]
    );
    let body = |name: &str| {
        let s = h.sections.iter().find(|s| s.name == name).unwrap();
        assert_eq!(
            s.virtual_address % h.section_alignment,
            0,
            "{name} VMA aligned"
        );
        assert_eq!(
            s.raw_offset % h.file_alignment,
            0,
            "{name} file offset aligned"
        );
        image[s.raw_offset as usize..(s.raw_offset + s.virtual_size) as usize].to_vec()
    };
    assert_eq!(
        body(".linux"),
        std::fs::read(b.out.join("pxe/vmlinuz")).unwrap()
    );
    assert_eq!(
        body(".initrd"),
        std::fs::read(b.out.join("pxe/initramfs.img")).unwrap()
    );
    assert_eq!(
        body(".cmdline"),
        format!("{DEFAULT_CMDLINE}\0").into_bytes()
    );
    assert!(String::from_utf8(body(".osrel"))
        .unwrap()
        .contains("ID=tessera"));
    // The new sections come after every stub section, in memory and in the file.
    let stub_end = h.sections[..h.sections.len() - 4]
        .iter()
        .map(|s| s.virtual_address + s.virtual_size)
        .max()
        .unwrap();
    assert!(h.sections[h.sections.len() - 4].virtual_address >= stub_end);
}

#[test]
fn disk_qcow2_has_a_gpt_esp_holding_the_uki() {
    let b = full();
    let image = std::fs::read(b.out.join("disk.qcow2")).unwrap();
    let mut d = qcow2::read(&image).unwrap();
    assert_eq!(d.len(), 1 << 30);
    assert_eq!(b.report.disk_virtual_bytes, Some(1 << 30));
    let on_esp = disk::read_esp_file(&mut d, disk::UKI_ESP_PATH).unwrap();
    assert!(
        on_esp == std::fs::read(b.out.join("uki.efi")).unwrap(),
        "BOOTX64.EFI differs from uki.efi"
    );
    // Sparse: far smaller than its virtual size.
    assert!((image.len() as u64) < 64 << 20);
}

#[test]
fn manifest_lists_outputs_and_every_initramfs_entry() {
    let b = full();
    let m = std::fs::read_to_string(b.out.join("manifest.txt")).unwrap();
    for out in [
        "pxe/vmlinuz",
        "pxe/initramfs.img",
        "pxe/boot.ipxe",
        "uki.efi",
        "disk.qcow2",
    ] {
        let size = std::fs::metadata(b.out.join(out)).unwrap().len();
        let line = m
            .lines()
            .find(|l| l.starts_with(&format!("{out} ")))
            .unwrap_or_else(|| panic!("{out} in manifest"));
        assert!(line.contains(&format!(" {size}  ")), "{line}");
    }
    let lines: Vec<&str> = m.lines().collect();
    for path in initramfs_entries(&b.out.join("pxe/initramfs.img")).keys() {
        assert!(
            lines.iter().any(
                |l| l.starts_with(&format!("/{path} ")) || l.starts_with(&format!("/{path}/ "))
            ),
            "/{path} missing"
        );
    }
    let line = |p: &str| *lines.iter().find(|l| l.starts_with(p)).unwrap();
    assert!(
        line("/sbin/tessera ").ends_with(&format!("ours (tessera {})", env!("CARGO_PKG_VERSION")))
    );
    assert!(line("/bin/busybox ").ends_with("busybox-static@1:1.35.0-4+deb12u1+b1"));
    assert!(line("/lib/modules/").ends_with("generated"));
    assert!(line("/etc/passwd ").ends_with("generated"));
    assert!(lines.iter().any(
        |l| l.contains("btrfs.ko") && l.ends_with("linux-image-6.1.0-56-cloud-amd64@6.1.192-2")
    ));
}

#[test]
fn pxe_set_has_ipxe_script() {
    let b = full();
    let s = std::fs::read_to_string(b.out.join("pxe/boot.ipxe")).unwrap();
    assert!(s.starts_with("#!ipxe\n"));
    assert!(s.contains(
        "kernel vmlinuz initrd=initramfs.img console=ttyS0 quiet panic=-1 ${tessera_args}\n"
    ));
    assert!(s.ends_with("initrd initramfs.img\nboot\n"));
}

#[test]
fn cached_deb_is_reused_without_download() {
    let lock = LockFile::load(&lock_path()).unwrap();
    let _ = static_binary();
    let p = fetch::fetch(&cache(), lock.get(Role::Busybox), &lock_path()).unwrap();
    assert!(p.cached);
}

#[test]
fn floor_build_has_only_the_pxe_set_and_a_script_init() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("floor");
    let mut o = BuildOptions::new(repo());
    o.out = out.clone();
    o.floor = true;
    let r = tessera_image::build(&o).unwrap();
    let mut files: Vec<String> = walk(&out);
    files.sort();
    // No UKI or disk: the floor is booted by kernel and by PXE only.
    assert_eq!(files, ["pxe/boot.ipxe", "pxe/initramfs.img", "pxe/vmlinuz"]);
    let e = initramfs_entries(&out.join("pxe/initramfs.img"));
    let init = String::from_utf8(e["init"].data.clone()).unwrap();
    assert!(
        init.starts_with("#!/bin/sh\n")
            && init.contains("FLOOR-INIT uptime=$(cat /proc/uptime)")
            && init.contains("poweroff -f")
    );
    assert_eq!(e["dev/console"].rdev, (5, 1));
    assert!(r.floor && r.uki_bytes.is_none());
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(
                walk(&p)
                    .into_iter()
                    .map(|s| format!("{}/{s}", p.file_name().unwrap().to_string_lossy())),
            );
        } else {
            out.push(p.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    out
}

/// An output directory holding a previous build, to check that failures leave it alone.
fn previous_output(dir: &Path) -> PathBuf {
    let out = dir.join("out");
    std::fs::create_dir_all(out.join("pxe")).unwrap();
    std::fs::write(out.join("pxe/initramfs.img"), "previous").unwrap();
    std::fs::write(out.join("manifest.txt"), "previous").unwrap();
    out
}

fn assert_untouched(dir: &Path, out: &Path) {
    assert_eq!(
        std::fs::read_to_string(out.join("pxe/initramfs.img")).unwrap(),
        "previous"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("manifest.txt")).unwrap(),
        "previous"
    );
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(
        names.iter().all(|n| !n.starts_with(".out.")),
        "staging left behind: {names:?}"
    );
}

#[test]
fn missing_extra_services_dir_fails_naming_it_and_keeps_previous_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = previous_output(dir.path());
    let missing = dir.path().join("no-such-services");
    let mut o = options(&out);
    o.extra_services = vec![missing.clone()];
    let err = tessera_image::build(&o).unwrap_err();
    assert!(matches!(err, ImageError::MissingInput { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&missing.display().to_string()) && msg.contains("--extra-services"),
        "{msg}"
    );
    assert_untouched(dir.path(), &out);
}

#[test]
fn missing_tessera_bin_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = previous_output(dir.path());
    let mut o = options(&out);
    o.tessera_bin = Some(dir.path().join("no-tessera"));
    let msg = tessera_image::build(&o).unwrap_err().to_string();
    assert!(
        msg.contains("no-tessera") && msg.contains("--tessera-bin"),
        "{msg}"
    );
    assert_untouched(dir.path(), &out);
}

/// A copy of the repository's inputs that a test may break.
fn repo_copy(dir: &Path) -> PathBuf {
    let r = dir.join("repo");
    for sub in ["image/services", "kernel-config"] {
        std::fs::create_dir_all(r.join(sub)).unwrap();
        for f in std::fs::read_dir(repo().join(sub)).unwrap() {
            let f = f.unwrap();
            if f.path().is_file() {
                std::fs::copy(f.path(), r.join(sub).join(f.file_name())).unwrap();
            }
        }
    }
    std::fs::copy(
        repo().join("image/modules.toml"),
        r.join("image/modules.toml"),
    )
    .unwrap();
    r
}

fn options_in(r: &Path, out: &Path) -> BuildOptions {
    let mut o = BuildOptions::new(r);
    o.out = out.to_path_buf();
    o.cache = cache();
    o.lock = lock_path();
    o.tessera_bin = Some(static_binary());
    o.no_disk = true;
    o
}

#[test]
fn module_missing_from_kernel_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo_copy(dir.path());
    let modules = std::fs::read_to_string(r.join("image/modules.toml")).unwrap();
    std::fs::write(
        r.join("image/modules.toml"),
        modules.replace("ship = [", "ship = [\n    \"no-such-module\","),
    )
    .unwrap();
    let out = previous_output(dir.path());
    let err = tessera_image::build(&options_in(&r, &out)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ImageError::ModuleNotFound { .. }), "{err:?}");
    assert!(
        msg.contains("`no_such_module`") && msg.contains("linux-image-6.1.0-56-cloud-amd64"),
        "{msg}"
    );
    assert_untouched(dir.path(), &out);
}

#[test]
fn unsatisfied_kernel_config_names_every_missing_option() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo_copy(dir.path());
    let frag = r.join("kernel-config/tessera.fragment");
    let text = std::fs::read_to_string(&frag).unwrap();
    std::fs::write(&frag, format!("{text}CONFIG_TESSERA_NOT_A_REAL_OPTION=y\n")).unwrap();
    let modules = std::fs::read_to_string(r.join("image/modules.toml")).unwrap();
    std::fs::write(
        r.join("image/modules.toml"),
        modules.replace("\"isofs\",", ""),
    )
    .unwrap();
    let out = previous_output(dir.path());
    let err = tessera_image::build(&options_in(&r, &out)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ImageError::KernelConfig { .. }), "{err:?}");
    assert!(
        msg.contains("CONFIG_TESSERA_NOT_A_REAL_OPTION: absent from the kernel config"),
        "{msg}"
    );
    assert!(
        msg.contains("CONFIG_ISO9660_FS: is a module (=m), but the image does not ship isofs"),
        "{msg}"
    );
    assert_untouched(dir.path(), &out);
}

fn broken_lock(dir: &Path, edit: impl Fn(&mut tessera_image::lock::LockedPackage)) -> PathBuf {
    let mut lock = LockFile::load(&lock_path()).unwrap();
    for p in lock.packages.iter_mut().filter(|p| p.role == Role::Busybox) {
        edit(p);
    }
    let path = dir.join("packages.lock");
    std::fs::write(&path, lock.render()).unwrap();
    path
}

#[test]
fn unavailable_pinned_version_names_package_version_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo_copy(dir.path());
    let out = previous_output(dir.path());
    let mut o = options_in(&r, &out);
    o.lock = broken_lock(dir.path(), |p| p.version = "1:0.0.1-1".into());
    o.cache = dir.path().join("cache");
    let err = tessera_image::build(&o).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, ImageError::PackageUnavailable { .. }),
        "{err:?}"
    );
    assert!(
        msg.contains("busybox-static version 1:0.0.1-1")
            && msg.contains("tessera image lock --update"),
        "{msg}"
    );
    assert_untouched(dir.path(), &out);
}

#[test]
fn sha256_mismatch_is_an_error_naming_both_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo_copy(dir.path());
    let out = previous_output(dir.path());
    let mut o = options_in(&r, &out);
    let wrong = "0".repeat(64);
    o.lock = broken_lock(dir.path(), |p| p.sha256 = wrong.clone());
    o.cache = dir.path().join("cache");
    let err = tessera_image::build(&o).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ImageError::Sha256Mismatch { .. }), "{err:?}");
    let lock = LockFile::load(&lock_path()).unwrap();
    assert!(
        msg.contains(&wrong) && msg.contains(&lock.get(Role::Busybox).sha256),
        "{msg}"
    );
    assert_untouched(dir.path(), &out);
}
