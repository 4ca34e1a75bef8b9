//! UEFI firmware for disk boots: the read-only OVMF code and a per-VM copy of the variable
//! store (OVMF writes boot entries into it; the shared template must stay pristine).

use std::path::{Path, PathBuf};

use crate::error::VmError;

/// Flash images for one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firmware {
    pub code: PathBuf,
    pub vars: PathBuf,
}

/// Checks the firmware files and copies the variable store template into `runtime_dir`.
pub fn prepare(code: &Path, vars_template: &Path, runtime_dir: &Path) -> Result<Firmware, VmError> {
    for path in [code, vars_template] {
        if !path.is_file() {
            return Err(VmError::FirmwareMissing {
                path: path.to_path_buf(),
            });
        }
    }
    let vars = runtime_dir.join("OVMF_VARS.fd");
    std::fs::copy(vars_template, &vars).map_err(|e| {
        VmError::io(
            format!(
                "cannot copy {} to {}",
                vars_template.display(),
                vars.display()
            ),
            e,
        )
    })?;
    Ok(Firmware {
        code: code.to_path_buf(),
        vars,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars_are_copied_per_vm_and_the_template_is_untouched() {
        let src = tempfile::tempdir().unwrap();
        let code = src.path().join("CODE.fd");
        let tmpl = src.path().join("VARS.fd");
        std::fs::write(&code, b"code").unwrap();
        std::fs::write(&tmpl, b"vars").unwrap();
        let rt = tempfile::tempdir().unwrap();
        let fw = prepare(&code, &tmpl, rt.path()).unwrap();
        assert_eq!(fw.code, code);
        assert!(fw.vars.starts_with(rt.path()));
        std::fs::write(&fw.vars, b"changed").unwrap();
        assert_eq!(std::fs::read(&tmpl).unwrap(), b"vars");
    }

    #[test]
    fn missing_firmware_says_to_install_ovmf() {
        let rt = tempfile::tempdir().unwrap();
        let msg = prepare(
            Path::new("/nonexistent/CODE.fd"),
            Path::new("/x"),
            rt.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("/nonexistent/CODE.fd not found"), "{msg}");
        assert!(msg.contains("apt-get install ovmf"), "{msg}");
    }
}
