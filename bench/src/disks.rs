//! The ext4 disk a container benchmark or test hands its VM: Debian's crun (the reference
//! runtime, which the node image does not ship) with its shared libraries and dynamic loader,
//! and OCI bundles made from Debian's busybox-static, each both as a directory (what crun
//! runs) and as a tar of that same directory (what `tessera container import` reads).
//!
//! Layout of the disk, mounted at [`MOUNT`] in the guest:
//! - `bin/crun`, `lib/*.so*` (what `ldd /usr/bin/crun` lists), `lib64/ld-linux-x86-64.so.2`;
//! - `bundles/<name>/{config.json,rootfs/}` and `bundles/<name>.tar`.
//!
//! crun is run through the loader on the disk ([`crun_in_guest`]): the node's initramfs has
//! no glibc, and the disk leaves the node's root untouched.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use serde_json::{json, Value};

/// The crun the comparisons are against (Debian 12's package).
pub const CRUN_VERSION: &str = "1.8.1";
/// Where the guest mounts the disk.
pub const MOUNT: &str = "/mnt/crun";
const LOADER: &str = "/lib64/ld-linux-x86-64.so.2";

/// busybox applets every bundle's rootfs has in /bin.
const APPLETS: [&str; 18] = [
    "sh", "echo", "cat", "grep", "id", "hostname", "sort", "env", "true", "sleep", "mkdir", "cut",
    "pwd", "ls", "wc", "printf", "tr", "sed",
];

/// The guest shell command that mounts the disk at [`MOUNT`].
pub fn mount_in_guest(device: &str) -> String {
    format!("mkdir -p {MOUNT} && mount -t ext4 {device} {MOUNT}")
}

/// The guest command line that runs crun from the disk (append crun's arguments).
/// `--no-pivot` is not part of it: the caller adds it to `run`, since the node root is an
/// initramfs, where pivot_root(2) is refused (our runtime does MS_MOVE + chroot there too).
pub fn crun_in_guest() -> String {
    format!("{MOUNT}/lib64/ld-linux-x86-64.so.2 --library-path {MOUNT}/lib {MOUNT}/bin/crun")
}

/// The spec version of the bundles written here: crun 1.8.1 refuses any ociVersion but 1.0.x
/// ("unknown version specified"); our runtime takes any 1.x.
pub const BUNDLE_OCI_VERSION: &str = "1.0.2";

/// The container agent's default spec (`tessera_container::spec::default_spec`, what runc
/// writes) as JSON, running `args`, with ociVersion [`BUNDLE_OCI_VERSION`].
pub fn default_config(args: &[&str]) -> Value {
    let mut spec = tessera_container::spec::default_spec();
    spec.set_version(BUNDLE_OCI_VERSION.to_string());
    if let Some(p) = spec.process_mut() {
        p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    }
    serde_json::to_value(&spec).expect("an oci-spec Spec serializes")
}

/// A disk being assembled in a staging directory.
pub struct DiskBuilder {
    staging: PathBuf,
}

impl DiskBuilder {
    /// Stages crun and its libraries under `dir/staging` (made anew).
    pub fn new(dir: &Path) -> anyhow::Result<DiskBuilder> {
        let staging = dir.join("staging");
        let _ = std::fs::remove_dir_all(&staging);
        for d in ["bin", "lib", "lib64", "bundles"] {
            std::fs::create_dir_all(staging.join(d))
                .with_context(|| format!("creating {}", staging.join(d).display()))?;
        }
        stage_crun(&staging)?;
        Ok(DiskBuilder { staging })
    }

    /// Adds bundle `name`: a busybox rootfs with `files` (path in the rootfs → contents) and
    /// `config` as config.json, as a directory and as a tar of it.
    pub fn add_bundle(
        &self,
        name: &str,
        config: &Value,
        files: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let bundles = self.staging.join("bundles");
        let root = bundles.join(name);
        let rootfs = root.join("rootfs");
        busybox_rootfs(&rootfs)?;
        for (path, text) in files {
            let p = rootfs.join(path.trim_start_matches('/'));
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        }
        std::fs::write(root.join("config.json"), serde_json::to_vec_pretty(config)?)?;
        let tar = bundles.join(format!("{name}.tar"));
        run(Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["--numeric-owner", "--owner=0", "--group=0", "-cf"])
            .arg(&tar)
            .args(["config.json", "rootfs"]))
        .context("packing the bundle with tar")
    }

    /// Writes the ext4 image `out` (`mke2fs -d`, e2fsprogs) and removes the staging directory.
    pub fn finish(self, out: &Path) -> anyhow::Result<PathBuf> {
        let _ = std::fs::remove_file(out);
        run(Command::new("mke2fs")
            .args(["-q", "-t", "ext4", "-L", "crun", "-d"])
            .arg(&self.staging)
            .arg(out)
            .arg("256M"))
        .context("making the crun disk with mke2fs -d (apt-get install e2fsprogs)")?;
        let _ = std::fs::remove_dir_all(&self.staging);
        Ok(out.to_path_buf())
    }
}

/// Copies /usr/bin/crun, the libraries `ldd` resolves for it and the dynamic loader.
fn stage_crun(staging: &Path) -> anyhow::Result<()> {
    let crun = Path::new("/usr/bin/crun");
    let version = output(Command::new(crun).arg("--version")).context(
        "running /usr/bin/crun --version: install Debian's crun (scripts/install-deps.sh does)",
    )?;
    let first = version.lines().next().unwrap_or_default();
    if first != format!("crun version {CRUN_VERSION}") {
        bail!("/usr/bin/crun is {first:?}, the comparisons are against crun {CRUN_VERSION}: install Debian 12's package (apt-get install crun=1.8.1-1+deb12u1)");
    }
    std::fs::copy(crun, staging.join("bin/crun")).context("copying /usr/bin/crun")?;
    let ldd =
        output(Command::new("ldd").arg(crun)).context("running ldd /usr/bin/crun (libc-bin)")?;
    for line in ldd.lines() {
        // "\tlibcap.so.2 => /lib/x86_64-linux-gnu/libcap.so.2 (0x…)"
        let mut words = line.split_whitespace();
        let (Some(soname), Some("=>"), Some(path)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        std::fs::copy(path, staging.join("lib").join(soname))
            .with_context(|| format!("copying {path} (from ldd /usr/bin/crun)"))?;
    }
    std::fs::copy(LOADER, staging.join("lib64/ld-linux-x86-64.so.2"))
        .with_context(|| format!("copying the dynamic loader {LOADER}"))?;
    Ok(())
}

/// /bin/busybox with [`APPLETS`], /etc/passwd and /etc/group (root and `probe`, 1000:1000),
/// the directories mounts go on, and a world-writable /tmp.
fn busybox_rootfs(rootfs: &Path) -> anyhow::Result<()> {
    for d in ["bin", "proc", "dev", "sys", "etc", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).context(
        "copying /bin/busybox (Debian's busybox-static, installed by scripts/install-deps.sh)",
    )?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nprobe:x:1000:1000:probe:/home/probe:/bin/sh\n",
    )?;
    std::fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\nwheel:x:10:probe\nprobe:x:1000:\n",
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    Ok(())
}

/// A JSON object for config.json's `process.rlimits` entry.
pub fn rlimit(typ: &str, soft: u64, hard: u64) -> Value {
    json!({"type": typ, "soft": soft, "hard": hard})
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    output(cmd).map(drop)
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
