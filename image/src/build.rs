//! The build pipeline, as a list of named steps: check inputs → fetch → modules → kernel
//! config → initramfs → PXE set → UKI → disk → manifest → commit. Each step is a call into
//! the module that owns it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::ImageError;
use crate::fetch::{self, FetchedPackage};
use crate::initramfs::{self, Compression, Origin, Tree, VERSION};
use crate::kconfig;
use crate::libraries;
use crate::lock::{LockFile, Role};
use crate::manifest::{self, OutputFile};
use crate::modules::{KernelModules, ModuleLists};
use crate::output::Staging;
use crate::programs::ProgramList;
use crate::progress::{human, Progress};
use crate::{disk, qcow2, uki};

/// Kernel command line of the UKI and of boot.ipxe unless `--cmdline` says otherwise.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 quiet panic=-1";
/// The list of programs shipped from Debian packages, relative to the repository.
pub const PROGRAMS_FILE: &str = "image/programs.toml";
/// Ports the image's own services need open, relative to the repository, and where the
/// firewall service reads them on a node.
pub const FIREWALL_FILE: &str = "image/firewall.toml";
pub const FIREWALL_IMAGE_PATH: &str = "etc/tessera/firewall.toml";
/// Path of the EFI stub inside systemd-boot-efi.
pub const EFI_STUB_PATH: &str = "usr/lib/systemd/boot/efi/linuxx64.efi.stub";

/// Everything a build needs. [`BuildOptions::new`] fills the defaults relative to a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// Repository root: image/services, image/modules.toml and kernel-config/ are read from it.
    pub repo: PathBuf,
    pub out: PathBuf,
    /// The tessera binary to pack; `None` means the running executable.
    pub tessera_bin: Option<PathBuf>,
    /// More service directories; a file here replaces a default one with the same name.
    pub extra_services: Vec<PathBuf>,
    pub cache: PathBuf,
    pub lock: PathBuf,
    /// Build the busybox floor instead of the Tessera image.
    pub floor: bool,
    /// Skip the UKI and disk.qcow2.
    pub no_disk: bool,
    pub cmdline: String,
}

impl BuildOptions {
    /// Defaults: `<repo>/out`, `<repo>/.cache/tessera`, `<repo>/image/packages.lock`.
    pub fn new(repo: impl Into<PathBuf>) -> BuildOptions {
        let repo = repo.into();
        BuildOptions {
            out: repo.join("out"),
            tessera_bin: None,
            extra_services: Vec::new(),
            cache: repo.join(".cache/tessera"),
            lock: repo.join("image/packages.lock"),
            floor: false,
            no_disk: false,
            cmdline: DEFAULT_CMDLINE.to_string(),
            repo,
        }
    }

    fn services_dir(&self) -> PathBuf {
        self.repo.join("image/services")
    }
    fn module_lists(&self) -> PathBuf {
        self.repo.join("image/modules.toml")
    }
    fn programs(&self) -> PathBuf {
        self.repo.join(PROGRAMS_FILE)
    }
    fn fragment(&self) -> PathBuf {
        self.repo.join("kernel-config/tessera.fragment")
    }
    fn option_modules(&self) -> PathBuf {
        self.repo.join("kernel-config/modules.toml")
    }
}

/// What a successful build produced, with the sizes the benchmark and the CLI report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildReport {
    pub out: PathBuf,
    pub floor: bool,
    pub kernel_release: String,
    /// `name@version` of every pinned package used.
    pub packages: Vec<String>,
    pub vmlinuz_bytes: u64,
    pub initramfs_bytes: u64,
    pub initramfs_uncompressed_bytes: u64,
    pub compression: Compression,
    pub initramfs_entries: usize,
    /// Normalized names of the shipped modules (boot + ship + dependencies).
    pub modules: Vec<String>,
    pub uki_bytes: Option<u64>,
    /// Size of disk.qcow2 on disk, and its virtual size.
    pub disk_bytes: Option<u64>,
    pub disk_virtual_bytes: Option<u64>,
    pub elapsed: Duration,
}

/// Checks that `binary` is a statically linked x86-64 ELF executable: the image has no
/// dynamic loader, so anything else would fail at boot with a confusing "not found".
pub fn check_static_elf(binary: &[u8]) -> Result<(), String> {
    let u16_at = |o: usize| {
        binary
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    if binary.get(..4) != Some(b"\x7fELF") || binary.get(4) != Some(&2) {
        return Err("is not a 64-bit ELF executable".into());
    }
    if u16_at(0x12) != Some(62) {
        return Err("is not an x86-64 executable".into());
    }
    let phoff = binary
        .get(0x20..0x28)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    let (Some(phoff), Some(phentsize), Some(phnum)) = (phoff, u16_at(0x36), u16_at(0x38)) else {
        return Err("has a truncated ELF header".into());
    };
    for i in 0..phnum as u64 {
        let o = (phoff + i * phentsize as u64) as usize;
        let ty = binary
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if ty == Some(3) {
            return Err("is dynamically linked (it has a PT_INTERP program header)".into());
        }
    }
    Ok(())
}

fn read_input(what: &str, path: &Path, fix: &str) -> Result<Vec<u8>, ImageError> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ImageError::MissingInput {
            what: what.into(),
            path: path.to_path_buf(),
            fix: fix.into(),
        },
        _ => ImageError::io("read", path, e),
    })
}

fn write_out(path: &Path, data: &[u8]) -> Result<u64, ImageError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| ImageError::io("create", parent, e))?;
    }
    std::fs::write(path, data).map_err(|e| ImageError::io("write", path, e))?;
    Ok(data.len() as u64)
}

/// The kernel release of an unpacked linux-image package (its single lib/modules/ entry),
/// after checking that the vmlinuz and config the build needs are there.
fn kernel_release(kernel: &FetchedPackage) -> Result<String, ImageError> {
    let modules = kernel.root.join("lib/modules");
    let bad = |problem: String| ImageError::BadInput {
        path: kernel.root.clone(),
        problem,
        fix: format!(
            "the `kernel` package of the lock ({}) must be a linux-image-<release> package",
            kernel.locked.name
        ),
    };
    let releases: Vec<String> = std::fs::read_dir(&modules)
        .map_err(|e| bad(format!("no lib/modules directory ({e})")))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    let [release] = releases.as_slice() else {
        return Err(bad(format!(
            "expected one kernel release in lib/modules, found {releases:?}"
        )));
    };
    for f in [
        format!("boot/vmlinuz-{release}"),
        format!("boot/config-{release}"),
    ] {
        if !kernel.root.join(&f).is_file() {
            return Err(bad(format!("{f} is missing")));
        }
    }
    Ok(release.clone())
}

/// The iPXE script served next to vmlinuz and initramfs.img.
pub fn boot_ipxe(cmdline: &str) -> String {
    format!(
        "#!ipxe\n\
         # Tessera network boot. Serve this file with vmlinuz and initramfs.img from the same\n\
         # directory (TFTP or HTTP) and chain it. Node-specific kernel arguments go in the iPXE\n\
         # variable tessera_args, set before chaining, e.g.\n\
         #   set tessera_args tessera.hostname=n1 tessera.ca=https://ca:8443 tessera.ca_fp=sha256:... tessera.token=...\n\
         #   chain tftp://${{next-server}}/boot.ipxe\n\
         # or edit the kernel line below. An unset variable expands to nothing.\n\
         kernel vmlinuz initrd=initramfs.img {cmdline} ${{tessera_args}}\n\
         initrd initramfs.img\n\
         boot\n"
    )
}

/// Builds the image described by `opts` into `opts.out`, atomically.
pub fn build(opts: &BuildOptions) -> Result<BuildReport, ImageError> {
    let progress = Progress::new();

    // Check the local inputs first: a typo in a flag should fail before any download.
    let tessera_bin = match &opts.tessera_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| ImageError::io("find the running executable", "/proc/self/exe", e))?,
    };
    let services = if opts.floor {
        Default::default()
    } else {
        initramfs::collect_services(&opts.services_dir(), &opts.extra_services)?
    };
    let tessera = if opts.floor {
        Vec::new()
    } else {
        let bin = read_input(
            "tessera binary (--tessera-bin)",
            &tessera_bin,
            "build it with `cargo build --release --target x86_64-unknown-linux-musl -p tessera-init` and pass its path",
        )?;
        check_static_elf(&bin).map_err(|problem| ImageError::BadInput {
            path: tessera_bin.clone(),
            problem,
            fix: "pass a static musl build: --tessera-bin target/x86_64-unknown-linux-musl/release/tessera".into(),
        })?;
        bin
    };
    let module_lists = if opts.floor {
        ModuleLists::default()
    } else {
        ModuleLists::load(&opts.module_lists())?
    };
    let programs = if opts.floor {
        ProgramList::default()
    } else {
        ProgramList::load(&opts.programs())?
    };
    let lock = LockFile::load(&opts.lock)?;
    let staging = Staging::create(&opts.out)?;
    progress.step(
        "inputs",
        format!(
            "{} ({}), {} service file(s), lock {}",
            if opts.floor {
                "busybox floor".to_string()
            } else {
                format!("tessera {VERSION}")
            },
            if opts.floor {
                "-".to_string()
            } else {
                human(tessera.len() as u64)
            },
            services.len(),
            opts.lock.display()
        ),
    );

    // fetch + unpack
    let mut roles = vec![Role::Kernel, Role::Busybox];
    if !opts.floor && !opts.no_disk {
        roles.push(Role::EfiStub);
    }
    let mut fetched = Vec::new();
    for role in roles {
        let p = fetch::fetch(&opts.cache, lock.get(role), &opts.lock)?;
        progress.step(
            "fetch",
            format!(
                "{} {} ({}, {})",
                p.locked.name,
                p.locked.version,
                human(p.deb_size),
                if p.cached {
                    "cached, sha256 ok"
                } else {
                    "downloaded, sha256 ok"
                }
            ),
        );
        fetched.push(p);
    }
    // Program packages and their libraries (only when the image has programs).
    let mut runtime = Vec::new();
    if !programs.programs.is_empty() {
        let pins: Vec<_> = lock
            .with_role(Role::Program)
            .into_iter()
            .chain(lock.with_role(Role::Library))
            .collect();
        for pin in pins {
            runtime.push(fetch::fetch(&opts.cache, pin, &opts.lock)?);
        }
        let (fresh, cached) =
            runtime.iter().fold(
                (0, 0),
                |(f, c), p| {
                    if p.cached {
                        (f, c + 1)
                    } else {
                        (f + 1, c)
                    }
                },
            );
        progress.step(
            "fetch",
            format!(
                "{} program and library packages ({} downloaded, {} cached, sha256 ok)",
                runtime.len(),
                fresh,
                cached
            ),
        );
    }
    let kernel = &fetched[0];
    let busybox = &fetched[1];
    let release = kernel_release(kernel)?;
    progress.step("unpack", format!("kernel release {release}"));
    let kernel_config_path = kernel.root.join(format!("boot/config-{release}"));
    let config_text = std::fs::read_to_string(&kernel_config_path)
        .map_err(|e| ImageError::io("read", &kernel_config_path, e))?;
    let kernel_config = kconfig::parse_config(&config_text);

    let busybox_bin = busybox.root.join("bin/busybox");
    let applets = initramfs::busybox_applets(&busybox_bin)?;
    let busybox_bytes =
        std::fs::read(&busybox_bin).map_err(|e| ImageError::io("read", &busybox_bin, e))?;

    // modules + kernel config
    let mut tree = Tree::new();
    let mut shipped = Vec::new();
    if opts.floor {
        tree = initramfs::floor_tree(busybox_bytes, &applets, &busybox.locked.origin());
    } else {
        let modules_dir = kernel.root.join("lib/modules").join(&release);
        let km = KernelModules::scan(&modules_dir)?;
        let roots: Vec<String> = module_lists
            .boot
            .iter()
            .chain(&module_lists.ship)
            .cloned()
            .collect();
        let closure = km.resolve(&roots, &kernel.locked.origin())?;
        shipped = closure.keys().cloned().collect();

        let shipped_set: BTreeSet<String> = closure.keys().cloned().collect();
        let checked = kconfig::check_files(
            &opts.fragment(),
            &opts.option_modules(),
            &kernel_config_path,
            &release,
            &shipped_set,
        )?;
        progress.step(
            "kconfig",
            format!("{checked} options of kernel-config/tessera.fragment satisfied"),
        );

        initramfs::add_base(&mut tree);
        initramfs::add_tessera(&mut tree, tessera);
        initramfs::add_busybox(&mut tree, busybox_bytes, &applets, &busybox.locked.origin());
        let ko_bytes = initramfs::add_modules(
            &mut tree,
            &modules_dir,
            &release,
            &closure,
            &module_lists.boot,
            &kernel.locked.origin(),
        )?;
        initramfs::add_services(&mut tree, &services)?;
        if let Ok(data) = std::fs::read(opts.repo.join(FIREWALL_FILE)) {
            tree.file(FIREWALL_IMAGE_PATH, 0o644, data, Origin::Ours);
        }
        if !programs.programs.is_empty() {
            let closure = libraries::resolve(&programs, &runtime, &opts.programs())?;
            let (files, bytes) = (closure.files.len(), closure.bytes());
            initramfs::add_closure(&mut tree, closure);
            progress.step(
                "programs",
                format!(
                    "{} with libraries: {files} paths, {}",
                    programs
                        .programs
                        .iter()
                        .map(|p| p.path.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    human(bytes)
                ),
            );
        }
        progress.step(
            "modules",
            format!(
                "{} of {} shipped ({} listed, {}), {} at boot",
                closure.len(),
                km.len(),
                roots.len(),
                human(ko_bytes),
                module_lists.boot.len()
            ),
        );
    }

    // initramfs
    let archive = tree.to_cpio();
    let compression = initramfs::compression_for(&kernel_config);
    let initrd = initramfs::compress(&archive, compression)
        .map_err(|e| ImageError::io("compress", "initramfs", e))?;
    progress.step(
        "initramfs",
        format!(
            "{} entries, {} uncompressed, {} compressed ({compression})",
            tree.len(),
            human(archive.len() as u64),
            human(initrd.len() as u64)
        ),
    );

    // PXE set
    let vmlinuz_path = kernel.root.join(format!("boot/vmlinuz-{release}"));
    let vmlinuz =
        std::fs::read(&vmlinuz_path).map_err(|e| ImageError::io("read", &vmlinuz_path, e))?;
    let kernel_origin = Origin::Package(kernel.locked.origin());
    let mut outputs = Vec::new();
    let mut put = |rel: &str, data: &[u8], origin: Origin| -> Result<(), ImageError> {
        let size = write_out(&staging.dir.join(rel), data)?;
        outputs.push(OutputFile {
            path: rel.to_string(),
            size,
            origin,
        });
        Ok(())
    };
    put("pxe/vmlinuz", &vmlinuz, kernel_origin)?;
    put("pxe/initramfs.img", &initrd, Origin::Generated)?;
    // The floor gets boot.ipxe too, so that it can be measured by PXE as well.
    put(
        "pxe/boot.ipxe",
        boot_ipxe(&opts.cmdline).as_bytes(),
        Origin::Generated,
    )?;
    progress.step(
        "pxe",
        format!(
            "vmlinuz {}, initramfs.img {}",
            human(vmlinuz.len() as u64),
            human(initrd.len() as u64)
        ),
    );

    // UKI + disk
    let (mut uki_bytes, mut disk_bytes, mut disk_virtual) = (None, None, None);
    if !opts.floor && !opts.no_disk {
        let stub_path = fetched[2].root.join(EFI_STUB_PATH);
        let stub = std::fs::read(&stub_path).map_err(|e| ImageError::io("read", &stub_path, e))?;
        let image = uki::build(
            &stub,
            &initramfs::os_release(),
            &opts.cmdline,
            &vmlinuz,
            &initrd,
        )
        .map_err(|problem| ImageError::Uki {
            stub: fetched[2].locked.origin(),
            problem,
        })?;
        put("uki.efi", &image, Origin::Generated)?;
        uki_bytes = Some(image.len() as u64);
        progress.step(
            "uki",
            format!(
                "uki.efi {} (cmdline `{}`)",
                human(image.len() as u64),
                opts.cmdline
            ),
        );

        let (sparse, layout) =
            disk::build(&image).map_err(|problem| ImageError::Disk { problem })?;
        let disk_path = staging.dir.join("disk.qcow2");
        let file = std::fs::File::create(&disk_path)
            .map_err(|e| ImageError::io("create", &disk_path, e))?;
        let mut w = std::io::BufWriter::new(file);
        let size =
            qcow2::write(&sparse, &mut w).map_err(|e| ImageError::io("write", &disk_path, e))?;
        std::io::Write::flush(&mut w).map_err(|e| ImageError::io("write", &disk_path, e))?;
        outputs.push(OutputFile {
            path: "disk.qcow2".into(),
            size,
            origin: Origin::Generated,
        });
        disk_bytes = Some(size);
        disk_virtual = Some(layout.disk_size);
        progress.step(
            "disk",
            format!(
                "disk.qcow2 {} ({} virtual, GPT, ESP {} FAT32 with \\{})",
                human(size),
                human(layout.disk_size),
                human(layout.esp_size()),
                disk::UKI_ESP_PATH.replace('/', "\\")
            ),
        );
    }

    // manifest
    let packages: Vec<String> = fetched
        .iter()
        .chain(&runtime)
        .map(|p| p.locked.origin())
        .collect();
    if !opts.floor {
        let header = [
            format!("tessera {VERSION}, kernel {release}, initramfs {compression}"),
            format!("packages: {}", packages.join(", ")),
            format!("cmdline: {}", opts.cmdline),
        ];
        let text = manifest::render(&header, &outputs, &tree);
        write_out(&staging.dir.join("manifest.txt"), text.as_bytes())?;
        progress.step(
            "manifest",
            format!("manifest.txt, {} entries", tree.len() + outputs.len()),
        );
    }

    let out = staging.commit()?;
    progress.step(
        "done",
        format!(
            "{} in {:.1}s",
            out.display(),
            progress.elapsed().as_secs_f64()
        ),
    );
    Ok(BuildReport {
        out,
        floor: opts.floor,
        kernel_release: release,
        packages,
        vmlinuz_bytes: vmlinuz.len() as u64,
        initramfs_bytes: initrd.len() as u64,
        initramfs_uncompressed_bytes: archive.len() as u64,
        compression,
        initramfs_entries: tree.len(),
        modules: shipped,
        uki_bytes,
        disk_bytes,
        disk_virtual_bytes: disk_virtual,
        elapsed: progress.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipxe_script_has_kernel_initrd_and_boot() {
        let s = boot_ipxe(DEFAULT_CMDLINE);
        assert!(s.starts_with("#!ipxe\n"));
        assert!(s.contains(
            "\nkernel vmlinuz initrd=initramfs.img console=ttyS0 quiet panic=-1 ${tessera_args}\n"
        ));
        assert!(s.contains("\ninitrd initramfs.img\nboot\n"));
    }

    #[test]
    fn static_elf_check() {
        let mut elf = vec![0u8; 0x40 + 56];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[0x12] = 62;
        elf[0x20] = 0x40; // phoff
        elf[0x36] = 56; // phentsize
        elf[0x38] = 1; // phnum
        elf[0x40] = 1; // PT_LOAD
        assert_eq!(check_static_elf(&elf), Ok(()));
        elf[0x40] = 3; // PT_INTERP
        assert!(check_static_elf(&elf)
            .unwrap_err()
            .contains("dynamically linked"));
        assert!(check_static_elf(b"#!/bin/sh\n").is_err());
    }

    #[test]
    fn defaults_are_relative_to_the_repository() {
        let o = BuildOptions::new("/r");
        assert_eq!(o.out, Path::new("/r/out"));
        assert_eq!(o.cache, Path::new("/r/.cache/tessera"));
        assert_eq!(o.lock, Path::new("/r/image/packages.lock"));
        assert_eq!(o.services_dir(), Path::new("/r/image/services"));
        assert_eq!(o.cmdline, DEFAULT_CMDLINE);
    }
}
