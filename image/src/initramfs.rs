//! The initramfs file tree (what goes where, and where each file came from), the minimal /etc
//! of a node, and the compression of the final archive.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use tessera_common::paths;

use crate::cpio::{self, Entry, Kind};
use crate::error::ImageError;
use crate::modules::Module;

/// Version of this builder, which is also the version of the Tessera files it packs.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where a file of the image comes from, as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Built by this project (the tessera binary, service files).
    Ours,
    /// Copied from a pinned Debian package (`name@version`).
    Package(String),
    /// Written by the builder (directories, links, /etc files, module indexes).
    Generated,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Ours => write!(f, "ours (tessera {VERSION})"),
            Origin::Package(p) => f.write_str(p),
            Origin::Generated => f.write_str("generated"),
        }
    }
}

/// The initramfs being assembled: path (relative, no leading `/`) → entry and origin.
#[derive(Debug, Default, Clone)]
pub struct Tree {
    entries: BTreeMap<String, (Entry, Origin)>,
}

fn rel(path: &str) -> String {
    path.trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

impl Tree {
    pub fn new() -> Tree {
        Tree::default()
    }

    fn insert(&mut self, path: &str, perm: u32, kind: Kind, origin: Origin) {
        let path = rel(path);
        // Parents first, so the archive never relies on the kernel creating directories.
        let mut cur = path.as_str();
        while let Some((parent, _)) = cur.rsplit_once('/') {
            self.entries.entry(parent.to_string()).or_insert_with(|| {
                (
                    Entry {
                        path: parent.to_string(),
                        perm: 0o755,
                        kind: Kind::Dir,
                    },
                    Origin::Generated,
                )
            });
            cur = parent;
        }
        self.entries
            .insert(path.clone(), (Entry { path, perm, kind }, origin));
    }

    pub fn dir(&mut self, path: &str, perm: u32) {
        self.insert(path, perm, Kind::Dir, Origin::Generated);
    }

    pub fn file(&mut self, path: &str, perm: u32, data: Vec<u8>, origin: Origin) {
        self.insert(path, perm, Kind::File(data), origin);
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.insert(
            path,
            0o777,
            Kind::Symlink(target.to_string()),
            Origin::Generated,
        );
    }

    /// A symlink copied from a package (recorded with that package as its origin).
    pub fn symlink_from(&mut self, path: &str, target: &str, origin: Origin) {
        self.insert(path, 0o777, Kind::Symlink(target.to_string()), origin);
    }

    pub fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) {
        self.insert(
            path,
            perm,
            Kind::CharDev { major, minor },
            Origin::Generated,
        );
    }

    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(&rel(path))
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(&rel(path)).map(|(e, _)| e)
    }

    /// Entries in archive order with their origins.
    pub fn iter(&self) -> impl Iterator<Item = (&Entry, &Origin)> {
        self.entries.values().map(|(e, o)| (e, o))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The uncompressed newc archive.
    pub fn to_cpio(&self) -> Vec<u8> {
        let entries: Vec<Entry> = self.entries.values().map(|(e, _)| e.clone()).collect();
        cpio::write(&entries)
    }
}

/// `/etc/os-release`, also the `.osrel` section of the UKI.
pub fn os_release() -> String {
    format!("NAME=Tessera\nID=tessera\nVERSION_ID={VERSION}\nPRETTY_NAME=\"Tessera {VERSION}\"\n")
}

/// Directories every node has, and the minimal /etc and /dev/console.
pub fn add_base(tree: &mut Tree) {
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "run", "var", "mnt", "lib",
    ] {
        tree.dir(d, 0o755);
    }
    tree.dir("dev", 0o755);
    tree.dir("root", 0o700);
    tree.dir("tmp", 0o1777);
    // The kernel opens /dev/console for init before anything mounts devtmpfs.
    tree.char_dev("dev/console", 0o600, 5, 1);
    let etc: [(&str, String); 6] = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                .into(),
        ),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n".into()),
        (
            "etc/hosts",
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".into(),
        ),
        ("etc/os-release", os_release()),
        (
            "etc/profile",
            "export PATH=/sbin:/bin:/usr/sbin:/usr/bin\nexport PS1='\\u@\\h:\\w\\$ '\n".into(),
        ),
        ("etc/shells", "/bin/sh\n/bin/ash\n".into()),
    ];
    for (path, text) in etc {
        tree.file(path, 0o644, text.into_bytes(), Origin::Generated);
    }
}

/// The tessera multi-call binary as /sbin/tessera, with /init, /sbin/request-key and
/// /sbin/modprobe links (the kernel runs modprobe for `request_module()`, and only tessera
/// loads the image's compressed modules).
pub fn add_tessera(tree: &mut Tree, binary: Vec<u8>) {
    tree.file(paths::TESSERA_BIN, 0o755, binary, Origin::Ours);
    tree.symlink("init", paths::TESSERA_BIN);
    tree.symlink("sbin/request-key", "tessera");
    tree.symlink("sbin/modprobe", "tessera");
}

/// The applet paths of a busybox binary (`busybox --list-full`, run on the host).
pub fn busybox_applets(busybox: &Path) -> Result<Vec<String>, ImageError> {
    let command = format!("{} --list-full", busybox.display());
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|e| ImageError::Tool {
            command: command.clone(),
            detail: e.to_string(),
            fix: "the builder runs the pinned busybox-static on the host; build on x86_64 Linux"
                .into(),
        })?;
    if !out.status.success() {
        return Err(ImageError::Tool {
            command,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            fix: "delete the unpacked busybox-static from the cache and rebuild".into(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

/// /bin/busybox and a link per applet, except `init`/`linuxrc` (PID 1 is tessera) and any
/// path the image already has.
pub fn add_busybox(tree: &mut Tree, binary: Vec<u8>, applets: &[String], origin: &str) {
    tree.file(
        "bin/busybox",
        0o755,
        binary,
        Origin::Package(origin.to_string()),
    );
    for applet in applets {
        let name = Path::new(applet)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        if name.is_empty()
            || name == "init"
            || name == "linuxrc"
            || name == "busybox"
            || tree.contains(applet)
        {
            continue;
        }
        tree.symlink(applet, "/bin/busybox");
    }
}

/// The shipped modules under /lib/modules/<release>/, their modules.dep and modules.alias,
/// the package's modules.builtin (so modprobe of a built-in succeeds), and
/// /etc/tessera/modules.boot. Modules loaded at boot (and their dependencies) stay plain
/// `.ko`; the others are stored as `.ko.zst`, so that the kernel does not unpack megabytes
/// of modules that may never load (about 0.1 s of every boot under TCG). Tessera's module
/// loader (PID 1 and `/sbin/modprobe`) decompresses them when they are loaded.
pub fn add_modules(
    tree: &mut Tree,
    modules_dir: &Path,
    release: &str,
    modules: &BTreeMap<String, Module>,
    boot: &[String],
    origin: &str,
) -> Result<u64, ImageError> {
    let base = format!("{}/{release}", paths::MODULES_DIR);
    let at_boot = crate::modules::dependency_closure(boot, modules);
    let mut stored = modules.clone();
    let mut total = 0;
    for (name, m) in stored.iter_mut() {
        let src = modules_dir.join(&m.path);
        let mut data = std::fs::read(&src).map_err(|e| ImageError::io("read", &src, e))?;
        total += data.len() as u64;
        if !at_boot.contains(name) {
            data = compress(&data, Compression::Zstd)
                .map_err(|e| ImageError::io("compress", &src, e))?;
            m.path.push_str(".zst");
        }
        tree.file(
            &format!("{base}/{}", m.path),
            0o644,
            data,
            Origin::Package(origin.to_string()),
        );
    }
    let modules = &stored;
    tree.file(
        &format!("{base}/modules.dep"),
        0o644,
        crate::modules::modules_dep(modules).into_bytes(),
        Origin::Generated,
    );
    tree.file(
        &format!("{base}/modules.alias"),
        0o644,
        crate::modules::modules_alias(modules).into_bytes(),
        Origin::Generated,
    );
    let builtin = modules_dir.join("modules.builtin");
    if let Ok(data) = std::fs::read(&builtin) {
        tree.file(
            &format!("{base}/modules.builtin"),
            0o644,
            data,
            Origin::Package(origin.to_string()),
        );
    }
    let boot: String = boot
        .iter()
        .map(|m| format!("{}\n", crate::modules::normalize(m)))
        .collect();
    tree.file(
        paths::BOOT_MODULES_FILE,
        0o644,
        boot.into_bytes(),
        Origin::Generated,
    );
    Ok(total)
}

/// The programs of image/programs.toml and their shared libraries, each recorded with the
/// package it came from.
pub fn add_closure(tree: &mut Tree, closure: crate::libraries::Closure) {
    for (_, shipped) in closure.files {
        let origin = Origin::Package(shipped.origin);
        match shipped.kind {
            crate::libraries::ShippedKind::File { data, mode } => {
                tree.file(&shipped.path, mode, data, origin)
            }
            crate::libraries::ShippedKind::Symlink { target } => {
                tree.symlink_from(&shipped.path, &target, origin)
            }
        }
    }
}

/// Collects service files: every `*.toml` of `default_dir`, then of each extra dir in order
/// (a later file with the same name replaces an earlier one). Files are copied, not parsed:
/// PID 1 validates them at boot and reports bad ones.
pub fn collect_services(
    default_dir: &Path,
    extra: &[PathBuf],
) -> Result<BTreeMap<String, PathBuf>, ImageError> {
    let mut out = BTreeMap::new();
    let dirs =
        std::iter::once((default_dir, true)).chain(extra.iter().map(|d| (d.as_path(), false)));
    for (dir, is_default) in dirs {
        if !dir.is_dir() {
            return Err(ImageError::MissingInput {
                what: "service directory".into(),
                path: dir.to_path_buf(),
                fix: if is_default {
                    "restore image/services/ from git (or pass --repo pointing at the repository)"
                        .into()
                } else {
                    "create it or drop that --extra-services argument".into()
                },
            });
        }
        let entries = std::fs::read_dir(dir).map_err(|e| ImageError::io("list", dir, e))?;
        for e in entries {
            let p = e.map_err(|e| ImageError::io("list", dir, e))?.path();
            if p.extension().is_some_and(|x| x == "toml") && p.is_file() {
                if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
                    out.insert(name.to_string(), p.clone());
                }
            }
        }
    }
    Ok(out)
}

pub fn add_services(
    tree: &mut Tree,
    services: &BTreeMap<String, PathBuf>,
) -> Result<(), ImageError> {
    tree.dir(paths::SERVICES_DIR, 0o755);
    for (name, path) in services {
        let data = std::fs::read(path).map_err(|e| ImageError::io("read", path, e))?;
        tree.file(
            &format!("{}/{name}", paths::SERVICES_DIR),
            0o644,
            data,
            Origin::Ours,
        );
    }
    Ok(())
}

/// The /init of the busybox floor: the least userspace that proves the kernel reached init.
pub const FLOOR_INIT: &str = "#!/bin/sh\n\
# Tessera busybox floor: the baseline a Tessera boot is measured against.\n\
export PATH=/sbin:/bin:/usr/sbin:/usr/bin\n\
mount -t proc proc /proc\n\
echo \"FLOOR-INIT uptime=$(cat /proc/uptime)\"\n\
poweroff -f\n";

/// The whole floor image: busybox, a shell-script /init and /dev/console.
pub fn floor_tree(busybox: Vec<u8>, applets: &[String], origin: &str) -> Tree {
    let mut tree = Tree::new();
    for d in ["proc", "sys", "dev", "tmp"] {
        tree.dir(d, 0o755);
    }
    tree.char_dev("dev/console", 0o600, 5, 1);
    tree.file(
        "init",
        0o755,
        FLOOR_INIT.as_bytes().to_vec(),
        Origin::Generated,
    );
    add_busybox(&mut tree, busybox, applets, origin);
    tree
}

/// Compression of the initramfs archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd,
    Gzip,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::Zstd => "zstd -19",
            Compression::Gzip => "gzip -9",
        })
    }
}

/// zstd when the kernel can unpack it (`CONFIG_RD_ZSTD=y`), gzip otherwise.
pub fn compression_for(kernel_config: &BTreeMap<String, crate::kconfig::Value>) -> Compression {
    match kernel_config.get("CONFIG_RD_ZSTD") {
        Some(crate::kconfig::Value::Yes) => Compression::Zstd,
        _ => Compression::Gzip,
    }
}

/// Compresses deterministically (single-threaded zstd; gzip with mtime 0 and no file name).
pub fn compress(data: &[u8], how: Compression) -> std::io::Result<Vec<u8>> {
    match how {
        Compression::Zstd => zstd::bulk::compress(data, 19),
        Compression::Gzip => {
            use std::io::Write;
            let mut enc = flate2::GzBuilder::new()
                .mtime(0)
                .write(Vec::new(), flate2::Compression::best());
            enc.write_all(data)?;
            enc.finish()
        }
    }
}

/// Size of a built initramfs once unpacked (zstd or gzip, told apart by their magic bytes).
pub fn uncompressed_size(path: &Path) -> std::io::Result<u64> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut head = [0u8; 2];
    std::io::Read::read_exact(&mut std::fs::File::open(path)?, &mut head)?;
    let mut reader: Box<dyn std::io::Read> = if head == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(zstd::stream::read::Decoder::with_buffer(file)?)
    };
    std::io::copy(&mut reader, &mut std::io::sink())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncompressed_size_reads_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 100_000];
        for how in [Compression::Zstd, Compression::Gzip] {
            let p = dir.path().join("i.img");
            std::fs::write(&p, compress(&data, how).unwrap()).unwrap();
            assert_eq!(uncompressed_size(&p).unwrap(), 100_000);
        }
    }

    #[test]
    fn tree_creates_parents_and_tessera_links() {
        let mut t = Tree::new();
        add_base(&mut t);
        add_tessera(&mut t, b"bin".to_vec());
        add_busybox(
            &mut t,
            b"bb".to_vec(),
            &[
                "bin/sh".into(),
                "sbin/init".into(),
                "linuxrc".into(),
                "usr/bin/env".into(),
                "sbin/request-key".into(),
            ],
            "busybox-static@1",
        );
        assert_eq!(
            t.get("init").unwrap().kind,
            Kind::Symlink("/sbin/tessera".into())
        );
        assert_eq!(
            t.get("/sbin/request-key").unwrap().kind,
            Kind::Symlink("tessera".into())
        );
        assert_eq!(
            t.get("bin/sh").unwrap().kind,
            Kind::Symlink("/bin/busybox".into())
        );
        assert!(!t.contains("linuxrc"));
        assert_eq!(t.get("sbin/tessera").unwrap().perm, 0o755);
        assert_eq!(
            t.get("dev/console").unwrap().kind,
            Kind::CharDev { major: 5, minor: 1 }
        );
        assert_eq!(t.get("tmp").unwrap().perm, 0o1777);
        let os = String::from_utf8(match &t.get("etc/os-release").unwrap().kind {
            Kind::File(d) => d.clone(),
            _ => panic!(),
        })
        .unwrap();
        assert!(
            os.contains("ID=tessera\n")
                && os.contains("NAME=Tessera\n")
                && os.contains("VERSION_ID=")
        );
        // Every entry's parent directory is in the archive.
        let archive = cpio::read(&t.to_cpio()).unwrap();
        for e in &archive {
            if let Some((parent, _)) = e.path.rsplit_once('/') {
                assert!(
                    archive.iter().any(|p| p.path == parent),
                    "no parent for {}",
                    e.path
                );
            }
        }
    }

    #[test]
    fn extra_service_file_overrides_default_and_missing_dir_is_named() {
        let d = tempfile::tempdir().unwrap();
        let (def, extra) = (d.path().join("def"), d.path().join("extra"));
        std::fs::create_dir_all(&def).unwrap();
        std::fs::create_dir_all(&extra).unwrap();
        std::fs::write(def.join("net.toml"), "a").unwrap();
        std::fs::write(def.join("README"), "x").unwrap();
        std::fs::write(extra.join("net.toml"), "b").unwrap();
        std::fs::write(extra.join("test.toml"), "c").unwrap();
        let s = collect_services(&def, std::slice::from_ref(&extra)).unwrap();
        assert_eq!(s.keys().collect::<Vec<_>>(), ["net.toml", "test.toml"]);
        assert_eq!(s["net.toml"], extra.join("net.toml"));
        let missing = d.path().join("nope");
        let err = collect_services(&def, std::slice::from_ref(&missing))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&missing.display().to_string()) && err.contains("--extra-services"),
            "{err}"
        );
    }

    #[test]
    fn compression_is_deterministic_and_round_trips() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let z = compress(&data, Compression::Zstd).unwrap();
        assert_eq!(z, compress(&data, Compression::Zstd).unwrap());
        assert_eq!(zstd::bulk::decompress(&z, data.len()).unwrap(), data);
        let g = compress(&data, Compression::Gzip).unwrap();
        assert_eq!(g, compress(&data, Compression::Gzip).unwrap());
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&g[..]), &mut back).unwrap();
        assert_eq!(back, data);
    }
}
