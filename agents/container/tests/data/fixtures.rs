//! Test fixtures shared by tests/archive.rs and tests/image.rs (included with `#[path]`):
//! a tar writer that can also write the hostile entries the `tar` crate's own API refuses
//! (`..`, absolute paths, devices), compressors, and a busybox rootfs from Debian's
//! busybox-static.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

use tar::{EntryType, Header};

pub const MTIME: u64 = 1_700_000_000;
pub const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
pub const GROUP: &[u8] = b"root:x:0:\nwheel:x:10:app\napp:x:1000:\n";

/// Debian's static busybox, the only binary the fixtures need.
pub fn busybox() -> Vec<u8> {
    std::fs::read("/bin/busybox").unwrap_or_else(|e| {
        panic!("/bin/busybox: {e}: these tests need Debian's busybox-static (apt-get install -y busybox-static)")
    })
}

pub struct Tb {
    b: tar::Builder<Vec<u8>>,
}

impl Default for Tb {
    fn default() -> Self {
        Self::new()
    }
}

impl Tb {
    pub fn new() -> Self {
        Tb {
            b: tar::Builder::new(Vec::new()),
        }
    }

    /// A header with the path (and link target) written raw, so any bytes go in.
    pub fn header(kind: EntryType, path: &str, link: &str, mode: u32, size: u64) -> Header {
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        h
    }

    pub fn raw(&mut self, mut h: Header, data: &[u8]) -> &mut Self {
        h.set_cksum();
        self.b.append(&h, data).expect("append to a Vec");
        self
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.raw(Self::header(EntryType::Directory, path, "", mode, 0), b"")
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.raw(
            Self::header(EntryType::Regular, path, "", mode, data.len() as u64),
            data,
        )
    }

    pub fn file_owned(
        &mut self,
        path: &str,
        mode: u32,
        uid: u64,
        gid: u64,
        data: &[u8],
    ) -> &mut Self {
        let mut h = Self::header(EntryType::Regular, path, "", mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.raw(h, data)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.raw(
            Self::header(EntryType::Symlink, path, target, 0o777, 0),
            b"",
        )
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.raw(Self::header(EntryType::Link, path, target, 0o644, 0), b"")
    }

    pub fn special(&mut self, path: &str, kind: EntryType) -> &mut Self {
        let mut h = Self::header(kind, path, "", 0o666, 0);
        h.set_device_major(1).expect("gnu header");
        h.set_device_minor(3).expect("gnu header");
        self.raw(h, b"")
    }

    /// The archive with its two end-of-archive blocks.
    pub fn finish(self) -> Vec<u8> {
        self.b.into_inner().expect("finish a Vec")
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).expect("gzip into a Vec");
    gz.finish().expect("gzip into a Vec")
}

pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(bytes, 3).expect("zstd into a Vec")
}

pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// A small busybox rootfs under `prefix` ("rootfs/" for a bundle, "" for a layer): the
/// binary, applet symlinks (relative and absolute), a hard link, passwd/group, /tmp 1777, a
/// fifo and a file owned by 1000:1000.
pub fn busybox_rootfs(tb: &mut Tb, prefix: &str) {
    let p = |s: &str| format!("{prefix}{s}");
    if !prefix.is_empty() {
        tb.dir(prefix, 0o755);
    }
    tb.dir(&p("bin/"), 0o755)
        .file(&p("bin/busybox"), 0o755, &busybox())
        .symlink(&p("bin/sh"), "busybox")
        .symlink(&p("bin/ls"), "/bin/busybox")
        .hardlink(&p("bin/true"), &p("bin/busybox"))
        .dir(&p("etc/"), 0o755)
        .file(&p("etc/passwd"), 0o644, PASSWD)
        .file(&p("etc/group"), 0o644, GROUP)
        .dir(&p("tmp/"), 0o1777)
        .dir(&p("home/"), 0o755)
        .file_owned(&p("home/app.txt"), 0o640, 1000, 1000, b"hello\n")
        .special(&p("run.fifo"), EntryType::Fifo);
}

/// A config.json for `args`, from the crate's own default spec.
pub fn config_json(args: &[&str]) -> Vec<u8> {
    let mut spec = tessera_container::spec::default_spec();
    if let Some(p) = spec.process_mut() {
        p.set_args(Some(args.iter().map(|a| a.to_string()).collect()));
    }
    serde_json::to_vec_pretty(&spec).expect("serialize a spec")
}

/// What is left in a directory.
pub fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read the destination")
        .map(|e| {
            e.expect("read the destination")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// A 1 MiB tmpfs, unmounted when dropped.
pub struct Tmpfs(pub tempfile::TempDir);

impl Tmpfs {
    pub fn mount() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount (util-linux)");
        assert!(
            status.success(),
            "mount -t tmpfs failed: these tests run as root"
        );
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

/// Counts what is read through it.
pub struct CountingReader<'a> {
    pub inner: &'a [u8],
    pub read: &'a std::cell::Cell<u64>,
}

impl std::io::Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}
