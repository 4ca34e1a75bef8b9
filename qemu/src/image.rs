//! Finding the files of a built image (and of extra data disks) and checking that they exist
//! before QEMU is started, so that a missing file is reported with its fix instead of as a
//! QEMU error.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::config::{BootMode, VmConfig};
use crate::error::VmError;

/// Kernel, initramfs and iPXE script, relative to the image directory.
pub const PXE_DIR: &str = "pxe";
pub const KERNEL_FILE: &str = "vmlinuz";
pub const INITRD_FILE: &str = "initramfs.img";
pub const IPXE_SCRIPT_FILE: &str = "boot.ipxe";
/// The bootable disk image (GPT + EFI system partition with the unified kernel image).
pub const DISK_FILE: &str = "disk.qcow2";

/// Format of a disk image as QEMU's `format=` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    Qcow2,
    Raw,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        }
    }

    /// Data disks: by file name. Never by content, because the guest writes these disks and
    /// a guest-written qcow2 header in a raw image must not change how the host opens it.
    pub fn by_extension(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("qcow2") => DiskFormat::Qcow2,
            _ => DiskFormat::Raw,
        }
    }

    /// The boot disk: by its magic. It is opened with `snapshot=on`, so the guest never
    /// writes it, and sniffing lets a raw image stand in for `disk.qcow2`.
    pub fn sniff(path: &Path) -> Result<Self, VmError> {
        let mut magic = [0u8; 4];
        let mut file = std::fs::File::open(path)
            .map_err(|e| VmError::io(format!("cannot open {}", path.display()), e))?;
        let n = file
            .read(&mut magic)
            .map_err(|e| VmError::io(format!("cannot read {}", path.display()), e))?;
        Ok(if n == 4 && magic == *b"QFI\xfb" {
            DiskFormat::Qcow2
        } else {
            DiskFormat::Raw
        })
    }
}

/// The image files one boot mode needs, as absolute paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootFiles {
    Kernel {
        kernel: PathBuf,
        initrd: PathBuf,
    },
    Pxe {
        /// Directory holding the three files; served as QEMU's TFTP root when no extra
        /// kernel arguments are needed.
        dir: PathBuf,
        kernel: PathBuf,
        initrd: PathBuf,
        script: PathBuf,
    },
    Disk {
        disk: PathBuf,
        format: DiskFormat,
    },
}

/// Checks that the files `cfg.boot` needs exist and returns them.
pub fn locate(cfg: &VmConfig) -> Result<BootFiles, VmError> {
    let pxe = cfg.image_dir.join(PXE_DIR);
    let need = |rel: PathBuf| -> Result<PathBuf, VmError> {
        if !rel.is_file() {
            return Err(VmError::ImageFileMissing {
                path: rel,
                image_dir: cfg.image_dir.clone(),
            });
        }
        absolute(&rel)
    };
    Ok(match cfg.boot {
        BootMode::Kernel => BootFiles::Kernel {
            kernel: need(pxe.join(KERNEL_FILE))?,
            initrd: need(pxe.join(INITRD_FILE))?,
        },
        BootMode::Pxe => {
            let kernel = need(pxe.join(KERNEL_FILE))?;
            let initrd = need(pxe.join(INITRD_FILE))?;
            let script = need(pxe.join(IPXE_SCRIPT_FILE))?;
            BootFiles::Pxe {
                dir: absolute(&pxe)?,
                kernel,
                initrd,
                script,
            }
        }
        BootMode::Disk => {
            let disk = need(cfg.image_dir.join(DISK_FILE))?;
            let format = DiskFormat::sniff(&disk)?;
            BootFiles::Disk { disk, format }
        }
    })
}

/// Checks that every data disk exists and returns absolute paths with their formats.
pub fn data_disks(cfg: &VmConfig) -> Result<Vec<(PathBuf, DiskFormat)>, VmError> {
    cfg.disks
        .iter()
        .map(|d| {
            if !d.is_file() {
                return Err(VmError::DiskMissing { path: d.clone() });
            }
            Ok((absolute(d)?, DiskFormat::by_extension(d)))
        })
        .collect()
}

fn absolute(path: &Path) -> Result<PathBuf, VmError> {
    std::fs::canonicalize(path)
        .map_err(|e| VmError::io(format!("cannot resolve {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_with(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        dir
    }

    #[test]
    fn missing_kernel_names_the_file_and_make_image() {
        let dir = image_with(&["pxe/initramfs.img"]);
        let cfg = VmConfig::new(BootMode::Kernel, dir.path());
        let msg = locate(&cfg).unwrap_err().to_string();
        assert!(msg.contains("pxe/vmlinuz not found"), "{msg}");
        assert!(msg.contains("run `make image`"), "{msg}");
    }

    #[test]
    fn missing_ipxe_script_is_reported_in_pxe_mode_only() {
        let dir = image_with(&["pxe/vmlinuz", "pxe/initramfs.img"]);
        assert!(locate(&VmConfig::new(BootMode::Kernel, dir.path())).is_ok());
        let msg = locate(&VmConfig::new(BootMode::Pxe, dir.path()))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("pxe/boot.ipxe not found"), "{msg}");
    }

    #[test]
    fn missing_disk_image_is_reported_in_disk_mode() {
        let dir = image_with(&["pxe/vmlinuz", "pxe/initramfs.img", "pxe/boot.ipxe"]);
        let msg = locate(&VmConfig::new(BootMode::Disk, dir.path()))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("disk.qcow2 not found"), "{msg}");
    }

    #[test]
    fn boot_disk_format_is_sniffed_from_the_qcow2_magic() {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("a.img");
        std::fs::write(&q, b"QFI\xfb\0\0\0\x03").unwrap();
        let r = dir.path().join("b.qcow2");
        std::fs::write(&r, [0u8; 512]).unwrap();
        assert_eq!(DiskFormat::sniff(&q).unwrap(), DiskFormat::Qcow2);
        assert_eq!(DiskFormat::sniff(&r).unwrap(), DiskFormat::Raw);
    }

    #[test]
    fn data_disk_format_follows_the_extension() {
        assert_eq!(
            DiskFormat::by_extension(Path::new("d.QCOW2")),
            DiskFormat::Qcow2
        );
        assert_eq!(
            DiskFormat::by_extension(Path::new("d.img")),
            DiskFormat::Raw
        );
    }

    #[test]
    fn missing_data_disk_suggests_how_to_create_one() {
        let mut cfg = VmConfig::new(BootMode::Kernel, "out");
        cfg.disks = vec![PathBuf::from("/nonexistent/data.img")];
        let msg = data_disks(&cfg).unwrap_err().to_string();
        assert!(msg.contains("/nonexistent/data.img not found"), "{msg}");
        assert!(msg.contains("truncate -s 1G"), "{msg}");
    }
}
