//! NoCloud seeds: a small vfat volume labelled CIDATA holding `user-data` (Tessera's TOML
//! schema) and an empty `meta-data`, the way cloud images take their configuration. Made with
//! Debian's dosfstools and mtools, without root or loop devices.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::VmError;

/// Size of the seed volume; user-data documents are a few KiB.
const SIZE_BYTES: u64 = 2 * 1024 * 1024;

/// Writes `dir/seed.img`, a CIDATA vfat volume with `user_data` as its `user-data` file.
pub fn nocloud(dir: &Path, user_data: &str) -> Result<PathBuf, VmError> {
    let io = |action: String| move |source| VmError::Io { action, source };
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let img = dir.join("seed.img");
    let _ = std::fs::remove_file(&img);
    let file = std::fs::File::create(&img).map_err(io(format!("creating {}", img.display())))?;
    file.set_len(SIZE_BYTES)
        .map_err(io(format!("sizing {}", img.display())))?;
    drop(file);
    tool(
        "mkfs.vfat",
        Command::new("mkfs.vfat").args(["-n", "CIDATA"]).arg(&img),
    )?;
    for (name, body) in [("user-data", user_data), ("meta-data", "")] {
        let src = dir.join(format!("seed-{name}"));
        std::fs::write(&src, body).map_err(io(format!("writing {}", src.display())))?;
        tool(
            "mcopy",
            Command::new("mcopy")
                .arg("-i")
                .arg(&img)
                .arg(&src)
                .arg(format!("::{name}")),
        )?;
        let _ = std::fs::remove_file(&src);
    }
    Ok(img)
}

fn tool(name: &str, cmd: &mut Command) -> Result<(), VmError> {
    let out = cmd.output().map_err(|source| VmError::Io {
        action: format!(
            "running {name} (install dosfstools and mtools: `apt-get install dosfstools mtools`)"
        ),
        source,
    })?;
    if !out.status.success() {
        return Err(VmError::Io {
            action: format!(
                "{name} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            source: std::io::Error::other(format!("{name} exit status {}", out.status)),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_is_a_cidata_volume_holding_the_user_data() {
        let dir = tempfile::tempdir().unwrap();
        let img = nocloud(dir.path(), "version = 1\n").unwrap();
        let label = Command::new("mlabel")
            .args(["-s", "-i"])
            .arg(&img)
            .arg("::")
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&label.stdout).contains("CIDATA"));
        let user_data = Command::new("mtype")
            .arg("-i")
            .arg(&img)
            .arg("::user-data")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&user_data.stdout), "version = 1\n");
        let meta = Command::new("mdir")
            .arg("-i")
            .arg(&img)
            .arg("::meta-data")
            .output()
            .unwrap();
        assert!(meta.status.success());
    }
}
