//! `tessera image`: builds the Tessera node image on the host, without root.
//!
//! It owns the path from pinned inputs to bootable outputs:
//! - inputs: `image/packages.lock` (Debian kernel, busybox-static, systemd-boot stub, pinned by
//!   version and sha256), `image/modules.toml`, `image/services/*.toml`,
//!   `kernel-config/tessera.fragment` and `kernel-config/modules.toml`;
//! - steps: fetch (`apt-get download` into `.cache/tessera`, never `apt-get install`) → module
//!   closure from `.modinfo` → kernel config check → reproducible initramfs (newc cpio, zstd)
//!   → PXE set → UKI → GPT/FAT disk as qcow2 → manifest;
//! - outputs under `--out`: `pxe/{vmlinuz,initramfs.img,boot.ipxe}`, `uki.efi`, `disk.qcow2`,
//!   `manifest.txt`, swapped into place only when every step succeeded.
//!
//! It must not touch: the host system (no mounts, loop devices, sudo or package installs),
//! anything in the output directory other than the names in [`output::OWNED`] (the Makefile's
//! `bin/` is carried over), or what runs inside the node — it copies service files without
//! parsing them; PID 1 validates them at boot.

pub mod build;
pub mod cpio;
pub mod disk;
pub mod elf;
pub mod error;
pub mod fetch;
pub mod initramfs;
pub mod kconfig;
pub mod libraries;
pub mod lock;
pub mod manifest;
pub mod modules;
pub mod output;
pub mod programs;
pub mod progress;
pub mod qcow2;
pub mod uki;

use std::path::PathBuf;

pub use build::{build, BuildOptions, BuildReport, DEFAULT_CMDLINE};
pub use error::ImageError;

use progress::human;

/// `tessera image ...`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ImageCommand {
    /// Build the node image (PXE set, UKI, disk) from the pinned Debian packages.
    Build(BuildArgs),
    /// Pin the image's Debian packages in image/packages.lock from the current apt candidates.
    Lock(LockArgs),
}

/// `tessera image build`
#[derive(Debug, Clone, clap::Args)]
pub struct BuildArgs {
    /// Repository root; the other defaults are relative to it.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Output directory [default: <repo>/out].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The static tessera binary to pack as /sbin/tessera [default: this executable].
    #[arg(long)]
    pub tessera_bin: Option<PathBuf>,
    /// Another directory of service files (*.toml) to add; repeatable; a file with the same
    /// name as a default one replaces it.
    #[arg(long = "extra-services", value_name = "DIR")]
    pub extra_services: Vec<PathBuf>,
    /// Where fetched .debs and unpacked packages are kept [default: <repo>/.cache/tessera].
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Package lock file [default: <repo>/image/packages.lock].
    #[arg(long)]
    pub lock: Option<PathBuf>,
    /// Build the busybox floor (same kernel, /init prints FLOOR-INIT and powers off) instead:
    /// only the PXE set (pxe/vmlinuz, initramfs.img, boot.ipxe).
    #[arg(long)]
    pub floor: bool,
    /// Skip uki.efi and disk.qcow2 (quick test images).
    #[arg(long)]
    pub no_disk: bool,
    /// Kernel command line baked into the UKI and boot.ipxe.
    #[arg(long, default_value = DEFAULT_CMDLINE)]
    pub cmdline: String,
}

impl BuildArgs {
    pub fn options(&self) -> BuildOptions {
        let mut o = BuildOptions::new(&self.repo);
        if let Some(p) = &self.out {
            o.out = p.clone();
        }
        if let Some(p) = &self.cache {
            o.cache = p.clone();
        }
        if let Some(p) = &self.lock {
            o.lock = p.clone();
        }
        o.tessera_bin = self.tessera_bin.clone();
        o.extra_services = self.extra_services.clone();
        o.floor = self.floor;
        o.no_disk = self.no_disk;
        o.cmdline = self.cmdline.clone();
        o
    }
}

/// `tessera image lock`
#[derive(Debug, Clone, clap::Args)]
pub struct LockArgs {
    /// Repository root.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Lock file [default: <repo>/image/packages.lock].
    #[arg(long)]
    pub lock: Option<PathBuf>,
    /// Rewrite the lock with today's apt candidates (without it, a stale lock is an error).
    #[arg(long)]
    pub update: bool,
}

/// Runs a `tessera image` subcommand; progress goes to stderr.
pub fn run(cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Build(args) => {
            let r = build(&args.options())?;
            let mut summary = format!(
                "image ready in {}: kernel {} (vmlinuz {}), initramfs {} ({} uncompressed, {})",
                r.out.display(),
                r.kernel_release,
                human(r.vmlinuz_bytes),
                human(r.initramfs_bytes),
                human(r.initramfs_uncompressed_bytes),
                r.compression,
            );
            if let (Some(uki), Some(disk)) = (r.uki_bytes, r.disk_bytes) {
                summary.push_str(&format!(
                    ", uki.efi {}, disk.qcow2 {}",
                    human(uki),
                    human(disk)
                ));
            }
            eprintln!("{summary}");
            Ok(())
        }
        ImageCommand::Lock(args) => {
            let path = args
                .lock
                .clone()
                .unwrap_or_else(|| args.repo.join("image/packages.lock"));
            let describe = |l: &lock::LockFile| {
                l.packages
                    .iter()
                    .map(|p| format!("  {}: {} {}", p.role, p.name, p.version))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            let programs = programs::ProgramList::load(&args.repo.join(build::PROGRAMS_FILE))?;
            match lock::lock(&path, &programs, args.update)? {
                lock::LockOutcome::Created(l) => {
                    eprintln!("wrote {}:\n{}", path.display(), describe(&l))
                }
                lock::LockOutcome::UpToDate(l) => {
                    eprintln!("{} is up to date:\n{}", path.display(), describe(&l))
                }
                lock::LockOutcome::Updated(_, changes) => {
                    eprintln!(
                        "updated {}:\n{}\ncommit it",
                        path.display(),
                        changes.join("\n")
                    )
                }
            }
            Ok(())
        }
    }
}
