//! The TFTP root QEMU's user networking serves to the NIC's iPXE ROM.
//!
//! Without extra kernel arguments the image's own `pxe/` directory is served and iPXE runs
//! `boot.ipxe` as an operator's PXE server would. With extra arguments a per-VM directory is
//! made with links to the three image files plus a small `tessera.ipxe` that sets the
//! `tessera_args` variable (which `boot.ipxe` appends to the kernel line) and chains
//! `boot.ipxe`, so the image's script is used unchanged.

use std::path::{Path, PathBuf};

use crate::error::VmError;
use crate::image::{INITRD_FILE, IPXE_SCRIPT_FILE, KERNEL_FILE};

/// Name of the generated wrapper script in the per-VM TFTP directory.
pub const WRAPPER_SCRIPT: &str = "tessera.ipxe";

/// What QEMU's `-netdev user,tftp=DIR,bootfile=FILE` should serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TftpRoot {
    pub dir: PathBuf,
    pub bootfile: String,
}

/// Refuses kernel arguments iPXE would change: its command parser splits on whitespace,
/// expands `${...}`, and has no quoting in the ROM QEMU ships.
pub fn check_ipxe_arg(arg: &str) -> Result<(), VmError> {
    let reason = if arg.is_empty() {
        Some("it is empty")
    } else if arg.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("it contains whitespace or control characters")
    } else if arg.contains(['"', '\'', '\\']) {
        Some("it contains quotes or backslashes")
    } else if arg.contains('$') {
        Some("iPXE would expand `$`")
    } else if arg.starts_with('#') {
        Some("iPXE would read it as a comment")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(VmError::UnsafeIpxeArg {
            arg: arg.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The wrapper script that passes `args` to the image's `boot.ipxe`.
pub fn wrapper_script(args: &[String]) -> Result<String, VmError> {
    for arg in args {
        check_ipxe_arg(arg)?;
    }
    Ok(format!(
        "#!ipxe\nset tessera_args {}\nchain {IPXE_SCRIPT_FILE}\n",
        args.join(" ")
    ))
}

/// Chooses (and if needed creates, under `runtime_dir`) the TFTP root for a PXE boot.
pub fn prepare(pxe_dir: &Path, append: &[String], runtime_dir: &Path) -> Result<TftpRoot, VmError> {
    if append.is_empty() {
        return Ok(TftpRoot {
            dir: pxe_dir.to_path_buf(),
            bootfile: IPXE_SCRIPT_FILE.to_string(),
        });
    }
    let script = wrapper_script(append)?;
    let dir = runtime_dir.join("tftp");
    std::fs::create_dir_all(&dir)
        .map_err(|e| VmError::io(format!("cannot create {}", dir.display()), e))?;
    // Symlinks, not copies: QEMU's TFTP server opens files with open(2), which follows
    // them, and the kernel is ~14 MB.
    for name in [KERNEL_FILE, INITRD_FILE, IPXE_SCRIPT_FILE] {
        let link = dir.join(name);
        std::os::unix::fs::symlink(pxe_dir.join(name), &link)
            .map_err(|e| VmError::io(format!("cannot create {}", link.display()), e))?;
    }
    let wrapper = dir.join(WRAPPER_SCRIPT);
    std::fs::write(&wrapper, script)
        .map_err(|e| VmError::io(format!("cannot write {}", wrapper.display()), e))?;
    Ok(TftpRoot {
        dir,
        bootfile: WRAPPER_SCRIPT.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapper_sets_tessera_args_and_chains_boot_ipxe() {
        let s = wrapper_script(&["tessera.hostname=n1".into(), "loglevel=7".into()]).unwrap();
        assert_eq!(
            s,
            "#!ipxe\nset tessera_args tessera.hostname=n1 loglevel=7\nchain boot.ipxe\n"
        );
    }

    #[test]
    fn args_ipxe_would_mangle_are_refused_with_a_reason() {
        for bad in ["a b", "x=${y}", "x=\"a\"", "#c", "", "a\nb"] {
            let err = wrapper_script(&[bad.to_string()]).unwrap_err().to_string();
            assert!(
                err.contains("cannot be passed through iPXE"),
                "{bad}: {err}"
            );
            assert!(err.contains("--boot kernel"), "{bad}: {err}");
        }
    }

    #[test]
    fn no_extra_args_serves_the_image_directory_itself() {
        let rt = tempfile::tempdir().unwrap();
        let root = prepare(Path::new("/img/pxe"), &[], rt.path()).unwrap();
        assert_eq!(root.dir, Path::new("/img/pxe"));
        assert_eq!(root.bootfile, "boot.ipxe");
        assert!(!rt.path().join("tftp").exists());
    }

    #[test]
    fn extra_args_make_a_linked_tftp_dir_with_the_wrapper() {
        let img = tempfile::tempdir().unwrap();
        for f in ["vmlinuz", "initramfs.img", "boot.ipxe"] {
            std::fs::write(img.path().join(f), f).unwrap();
        }
        let rt = tempfile::tempdir().unwrap();
        let root = prepare(img.path(), &["tessera.token=abc".into()], rt.path()).unwrap();
        assert_eq!(root.bootfile, "tessera.ipxe");
        assert_eq!(root.dir, rt.path().join("tftp"));
        for f in ["vmlinuz", "initramfs.img", "boot.ipxe"] {
            assert_eq!(std::fs::read_to_string(root.dir.join(f)).unwrap(), f);
        }
        let wrapper = std::fs::read_to_string(root.dir.join("tessera.ipxe")).unwrap();
        assert!(wrapper.contains("set tessera_args tessera.token=abc\n"));
    }
}
