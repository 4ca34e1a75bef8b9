//! Running the Debian tools the backends need (mkfs.btrfs, lvm, mke2fs): a command line is
//! data (`Vec<String>`, built and tested by the backends), run here with its output captured.

use std::process::{Command, Stdio};

use super::backend::StorageError;

/// The environment every `lvm` run gets: its config directory (no udev, no lvmetad, no
/// thin_check; written by [`super::lvm::write_config`]) and no warnings about inherited fds.
pub const LVM_ENV: [(&str, &str); 2] = [
    ("LVM_SYSTEM_DIR", super::lvm::CONFIG_DIR),
    ("LVM_SUPPRESS_FD_WARNINGS", "1"),
];

/// Runs `argv`; stdout on success, else an error with the tool's own words.
pub fn run(argv: &[String]) -> Result<String, StorageError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| StorageError::Internal("empty command line".into()))?;
    let out = Command::new(program)
        .args(args)
        .envs(LVM_ENV)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            StorageError::Internal(format!(
                "cannot run {program}: {e}; the image ships it from image/programs.toml"
            ))
        })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("WARNING: "))
        .collect::<Vec<_>>()
        .join("; ");
    let text = format!(
        "`{}` failed ({}): {}",
        argv.join(" "),
        out.status,
        said.trim()
    );
    if said.contains("No space left")
        || said.contains("nsufficient free space")
        || said.contains("free space in thin pool")
    {
        return Err(StorageError::no_space(&text));
    }
    Err(StorageError::Internal(text))
}
