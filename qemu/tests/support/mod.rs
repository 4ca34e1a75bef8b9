//! Test fixtures for real boots: the Debian cloud kernel (fetched with apt once and cached
//! under the target directory), a busybox initramfs whose /init plays the documented
//! `TESSERA-*` console contract, and a bootable GPT disk with a unified kernel image.
//! Every helper returns None (and the test says it was skipped, and why) when a host tool
//! is missing, so that the suite still runs on a machine without them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The guest's /init. Behaviour is chosen on the kernel command line with `test.mode=`:
/// `poweroff` (default), `shell` (a root shell on the console after ready, with a `tessera`
/// stand-in that powers off), `panic` (init exits, the kernel panics), `reboot`.
pub const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
ms() { read u i < /proc/uptime; echo "${u%.*}${u#*.}0"; }
echo "TESSERA-INIT uptime_ms=$(ms)"
echo "CMDLINE $(cat /proc/cmdline)"
for d in /sys/bus/pci/devices/*; do echo "PCI $(cat $d/vendor):$(cat $d/device)"; done
mode=poweroff
for w in $(cat /proc/cmdline); do case "$w" in test.mode=*) mode=${w#test.mode=};; esac; done
echo "TESSERA-READY services=0 userspace_ms=0 uptime_ms=$(ms) failed=0"
case "$mode" in
panic) exit 1;;
reboot) echo "TESSERA-SHUTDOWN mode=reboot"; reboot -f;;
shell) exec sh;;
*) echo "TESSERA-SHUTDOWN mode=poweroff"; poweroff -f;;
esac
"#;

/// `tessera` inside the test guest: `tessera poweroff|reboot|status`.
pub const TESSERA_STANDIN: &str = r#"#!/bin/sh
case "$1" in
poweroff) echo "TESSERA-SHUTDOWN mode=poweroff"; poweroff -f;;
reboot) echo "TESSERA-SHUTDOWN mode=reboot"; reboot -f;;
status) echo "node state=available"; exit 0;;
*) echo "tessera: unknown command $1"; exit 2;;
esac
"#;

pub const BOOT_IPXE: &str = "#!ipxe\nkernel vmlinuz initrd=initramfs.img console=ttyS0 quiet panic=-1 ${tessera_args}\ninitrd initramfs.img\nboot\n";

/// A fixture this test needs is missing: fail, saying how to get it (never pass silently).
pub fn fixture_missing(test: &str, why: &str) {
    panic!("{test}: cannot run: {why}. Fix: run scripts/install-deps.sh (it installs busybox-static and the tools) and make sure apt can download linux-image-cloud-amd64");
}

fn cache_dir() -> PathBuf {
    // Integration tests get a per-target scratch directory from cargo; examples do not.
    option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("tessera-qemu-fixtures")
}

/// The Debian cloud kernel: `$TESSERA_TEST_KERNEL`, or fetched once with apt-get.
pub fn kernel() -> Option<PathBuf> {
    static KERNEL: OnceLock<Option<PathBuf>> = OnceLock::new();
    KERNEL
        .get_or_init(|| {
            if let Some(k) = std::env::var_os("TESSERA_TEST_KERNEL") {
                return Some(PathBuf::from(k));
            }
            let dir = cache_dir().join("kernel");
            let vmlinuz = dir.join("vmlinuz");
            if vmlinuz.is_file() {
                return Some(vmlinuz);
            }
            fetch_kernel(&dir, &vmlinuz)
                .map_err(|e| eprintln!("cannot fetch the Debian cloud kernel: {e}"))
                .ok()
        })
        .clone()
}

fn fetch_kernel(dir: &Path, vmlinuz: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let deps = run(Command::new("apt-cache").args(["depends", "linux-image-cloud-amd64"]))?;
    let pkg = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-cloud-amd64"))
        .ok_or("apt-cache does not know linux-image-cloud-amd64")?
        .to_string();
    run(Command::new("apt-get")
        .args(["download", &pkg])
        .current_dir(dir))?;
    let deb = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or("apt-get download left no .deb")?;
    // Extract only the kernel; a .part name keeps a half-written file from being used.
    let tmp = vmlinuz.with_extension("part");
    run(Command::new("sh").args([
        "-c",
        &format!(
            "dpkg-deb --fsys-tarfile '{}' | tar -xO --wildcards './boot/vmlinuz-*' > '{}'",
            deb.display(),
            tmp.display()
        ),
    ]))?;
    std::fs::rename(&tmp, vmlinuz).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&deb);
    Ok(vmlinuz.to_path_buf())
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A statically linked busybox (Debian's busybox-static installs one as /bin/busybox).
pub fn busybox() -> Option<PathBuf> {
    let p =
        PathBuf::from(std::env::var_os("TESSERA_TEST_BUSYBOX").unwrap_or("/bin/busybox".into()));
    let elf = std::fs::read(&p).ok()?;
    has_no_interpreter(&elf).then_some(p)
}

/// True for a 64-bit ELF without a PT_INTERP program header (i.e. statically linked).
fn has_no_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize)
    };
    if elf.get(0..5) != Some(b"\x7fELF\x02") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..phnum)
        .all(|i| elf.get(phoff + i * phentsize..phoff + i * phentsize + 4) != Some(&[3, 0, 0, 0]))
}

/// A newc cpio archive writer, enough for an initramfs.
#[derive(Default)]
pub struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let namez = format!("{name}\0");
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            namez.len() as u32,
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.out.extend_from_slice(namez.as_bytes());
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }

    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100000 | mode, (0, 0), data);
    }
    pub fn char_dev(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, (major, minor), &[]);
    }
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

/// The test initramfs: busybox, /dev/console, `init` as /init and the `tessera` stand-in.
pub fn initramfs(busybox: &Path, init: &str) -> Vec<u8> {
    let mut c = Cpio::default();
    for d in [
        "bin", "dev", "proc", "sys", "sbin", "usr", "usr/bin", "usr/sbin",
    ] {
        c.dir(d);
    }
    c.file(
        "bin/busybox",
        0o755,
        &std::fs::read(busybox).expect("read busybox"),
    );
    // The kernel opens /dev/console for /init before anything is mounted.
    c.char_dev("dev/console", 5, 1);
    c.file("init", 0o755, init.as_bytes());
    c.file("sbin/tessera", 0o755, TESSERA_STANDIN.as_bytes());
    c.finish()
}

/// An image directory with `pxe/{vmlinuz,initramfs.img,boot.ipxe}`, like `tessera image build`.
pub fn pxe_image() -> Option<tempfile::TempDir> {
    pxe_image_with_init(INIT)
}

/// Same, with another /init script.
pub fn pxe_image_with_init(init: &str) -> Option<tempfile::TempDir> {
    let kernel = kernel()?;
    let busybox = busybox()?;
    let dir = tempfile::tempdir().ok()?;
    let pxe = dir.path().join("pxe");
    std::fs::create_dir_all(&pxe).ok()?;
    std::fs::copy(&kernel, pxe.join("vmlinuz")).ok()?;
    std::fs::write(pxe.join("initramfs.img"), initramfs(&busybox, init)).ok()?;
    std::fs::write(pxe.join("boot.ipxe"), BOOT_IPXE).ok()?;
    Some(dir)
}

/// The systemd-boot EFI stub the image builder pinned (`image/packages.lock`), fetched into
/// the builder's cache (`.cache/tessera`) the way `tessera image build` does: never a host
/// path that `scripts/install-deps.sh` does not provide.
pub fn systemd_stub() -> Result<PathBuf, String> {
    use tessera_image::lock::{LockFile, Role};
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let lock_path = repo.join("image/packages.lock");
    let lock = LockFile::load(&lock_path).map_err(|e| e.to_string())?;
    let fetched = tessera_image::fetch::fetch(
        &repo.join(".cache/tessera"),
        lock.get(Role::EfiStub),
        &lock_path,
    )
    .map_err(|e| format!("cannot fetch the pinned EFI stub: {e}"))?;
    Ok(fetched.root.join(tessera_image::build::EFI_STUB_PATH))
}

/// Adds `disk.qcow2` to an image directory: a raw GPT disk (the runner sniffs the format)
/// whose EFI system partition holds a unified kernel image at \EFI\BOOT\BOOTX64.EFI with
/// `cmdline` baked in. Needs objcopy, the pinned systemd EFI stub, mkfs.vfat and mtools.
pub fn add_disk_image(image: &Path, cmdline: &str) -> Result<(), String> {
    let stub = systemd_stub()?;
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let w = |n: &str| work.path().join(n);
    std::fs::write(w("cmdline"), cmdline).map_err(|e| e.to_string())?;
    std::fs::write(w("osrel"), "NAME=test\nID=test\n").map_err(|e| e.to_string())?;
    let pxe = image.join("pxe");
    let uki = w("uki.efi");
    let s = |p: PathBuf| p.to_string_lossy().into_owned();
    run(Command::new("objcopy").args([
        "--add-section",
        &format!(".osrel={}", s(w("osrel"))),
        "--change-section-vma",
        ".osrel=0x20000",
        "--add-section",
        &format!(".cmdline={}", s(w("cmdline"))),
        "--change-section-vma",
        ".cmdline=0x30000",
        "--add-section",
        &format!(".linux={}", s(pxe.join("vmlinuz"))),
        "--change-section-vma",
        ".linux=0x2000000",
        "--add-section",
        &format!(".initrd={}", s(pxe.join("initramfs.img"))),
        "--change-section-vma",
        ".initrd=0x3000000",
        &s(stub),
        &s(uki.clone()),
    ]))?;
    let disk = image.join("disk.qcow2");
    let size: u64 = 64 << 20;
    let (first, last) = write_gpt(&disk, size)?;
    let sectors = last - first + 1;
    run(Command::new("mkfs.vfat").args([
        "-F",
        "32",
        "--offset",
        &first.to_string(),
        "-n",
        "ESP",
        &s(disk.clone()),
        &(sectors / 2).to_string(),
    ]))?;
    let img = format!("{}@@{}", disk.display(), first * 512);
    run(Command::new("mmd").args(["-i", &img, "::/EFI", "::/EFI/BOOT"]))?;
    run(Command::new("mcopy").args(["-i", &img, &s(uki), "::/EFI/BOOT/BOOTX64.EFI"]))?;
    Ok(())
}

/// Writes a protective MBR and primary + backup GPT with one EFI system partition;
/// returns its first and last sector.
fn write_gpt(path: &Path, size: u64) -> Result<(u64, u64), String> {
    use std::io::{Seek, SeekFrom, Write};
    let n = size / 512;
    let (first, last) = (2048u64, n - 34);
    let mut entries = vec![0u8; 128 * 128];
    // EFI system partition type GUID C12A7328-F81F-11D2-BA4B-00A0C93EC93B (mixed endian).
    entries[0..16].copy_from_slice(&[
        0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9,
        0x3b,
    ]);
    entries[16..32].copy_from_slice(b"tessera-test-esp");
    entries[32..40].copy_from_slice(&first.to_le_bytes());
    entries[40..48].copy_from_slice(&last.to_le_bytes());
    for (i, c) in "ESP".encode_utf16().enumerate() {
        entries[56 + 2 * i..58 + 2 * i].copy_from_slice(&c.to_le_bytes());
    }
    let entries_crc = crc32(&entries);
    let header = |current: u64, backup: u64, entries_lba: u64| {
        let mut h = vec![0u8; 512];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&current.to_le_bytes());
        h[32..40].copy_from_slice(&backup.to_le_bytes());
        h[40..48].copy_from_slice(&34u64.to_le_bytes());
        h[48..56].copy_from_slice(&(n - 34).to_le_bytes());
        h[56..72].copy_from_slice(b"tessera-testdisk");
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    let mut mbr = vec![0u8; 512];
    mbr[446 + 2] = 2; // CHS start 0/0/2
    mbr[446 + 4] = 0xee; // protective GPT
    mbr[446 + 5..446 + 8].copy_from_slice(&[0xff, 0xff, 0xff]);
    mbr[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
    mbr[446 + 12..446 + 16].copy_from_slice(&((n - 1).min(u32::MAX as u64) as u32).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    let io = |e: std::io::Error| e.to_string();
    let mut f = std::fs::File::create(path).map_err(io)?;
    f.set_len(size).map_err(io)?;
    f.write_all(&mbr).map_err(io)?;
    f.write_all(&header(1, n - 1, 2)).map_err(io)?;
    f.write_all(&entries).map_err(io)?;
    f.seek(SeekFrom::Start((n - 33) * 512)).map_err(io)?;
    f.write_all(&entries).map_err(io)?;
    f.write_all(&header(n - 1, 1, n - 33)).map_err(io)?;
    Ok((first, last))
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A stand-in for qemu-system-x86_64: a shell script (arguments ignored) with `body`.
pub fn fake_qemu(dir: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("fake-qemu");
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}
