//! The node's SSH host keys: made once with dropbearkey and kept, so that a client that
//! trusted the node once keeps trusting it. They live on the data volume when the storage
//! service has mounted one at /var/lib/tessera (they survive a reboot), else in tmpfs under
//! /run/tessera (new keys every boot). Existing keys are reused, never made again; a key file
//! dropbearkey cannot read is moved aside (kept, not deleted) and replaced.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::metrics::proc::parse_mounts;

/// The data volume's mount point (the storage service mounts it).
pub const DATA_VOLUME: &str = "/var/lib/tessera";
/// Where the keys go on the data volume.
pub const PERSISTENT_DIR: &str = "/var/lib/tessera/ssh";
/// Where they go without one (tmpfs).
pub const VOLATILE_DIR: &str = "/run/tessera/ssh";
/// dropbearkey from Debian's dropbear-bin.
pub const DROPBEARKEY: &str = "/usr/bin/dropbearkey";

/// The key types the node offers: ed25519 first (what current clients prefer), and ECDSA
/// P-256 for clients without it (RSA would cost seconds of key generation under TCG).
pub const KEY_TYPES: [KeyType; 2] = [KeyType::Ed25519, KeyType::Ecdsa];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Ed25519,
    Ecdsa,
}

impl KeyType {
    /// dropbearkey's `-t` name.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Ed25519 => "ed25519",
            KeyType::Ecdsa => "ecdsa",
        }
    }

    /// dropbearkey's arguments to make a key of this type.
    fn generate_args(self) -> &'static [&'static str] {
        match self {
            KeyType::Ed25519 => &["-t", "ed25519"],
            KeyType::Ecdsa => &["-t", "ecdsa", "-s", "256"],
        }
    }

    /// The file name dropbear's own packaging uses.
    pub fn file_name(self) -> String {
        format!("dropbear_{}_host_key", self.name())
    }
}

/// Where the host keys are kept, and whether that survives a reboot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDir {
    pub path: PathBuf,
    pub persistent: bool,
}

/// The key directory for a node whose mounts are `mounts` (the text of /proc/self/mounts):
/// on the data volume when `data_volume` is a mount point, else `volatile`.
pub fn choose_dir(mounts: &str, data_volume: &Path, persistent: &Path, volatile: &Path) -> KeyDir {
    let mounted = parse_mounts(mounts)
        .iter()
        .any(|m| Path::new(&m.mountpoint) == data_volume);
    if mounted {
        KeyDir {
            path: persistent.to_path_buf(),
            persistent: true,
        }
    } else {
        KeyDir {
            path: volatile.to_path_buf(),
            persistent: false,
        }
    }
}

/// One host key, ready for dropbear's `-r`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    pub kind: KeyType,
    pub path: PathBuf,
    /// The public key line (`ssh-ed25519 AAAA…`), for an operator's known_hosts.
    pub public_key: String,
    /// `SHA256:…`, as `ssh-keygen -l` and the OpenSSH client print it.
    pub fingerprint: String,
    /// Made now (false: found and reused).
    pub generated: bool,
    /// An unreadable key file that was moved aside to make room for this one.
    pub replaced: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    #[error("cannot prepare {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot run {program}: {source}; the image must ship dropbear-bin (image/programs.toml)"
    )]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {detail}")]
    Failed { command: String, detail: String },
    #[error("cannot move the unreadable key {path} aside: {source}; remove it by hand")]
    MoveAside {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The public key line and fingerprint in the output of `dropbearkey -y` (and of key
/// generation), or `None` when they are not both there.
pub fn parse_public(output: &str) -> Option<(String, String)> {
    let public = output.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        let (kind, data) = (words.next()?, words.next()?);
        (kind.starts_with("ssh-") || kind.starts_with("ecdsa-")).then(|| format!("{kind} {data}"))
    })?;
    let fingerprint = output.lines().find_map(|l| {
        l.trim()
            .strip_prefix("Fingerprint: ")
            .filter(|f| f.starts_with("SHA256:"))
            .map(str::to_string)
    })?;
    Some((public, fingerprint))
}

fn run(program: &Path, args: &[&str], path: &Path) -> Result<String, HostKeyError> {
    let out = Command::new(program)
        .args(args)
        .arg("-f")
        .arg(path)
        .output()
        .map_err(|source| HostKeyError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(HostKeyError::Failed {
            command: format!(
                "{} {} -f {}",
                program.display(),
                args.join(" "),
                path.display()
            ),
            detail: text.trim().to_string(),
        });
    }
    Ok(text)
}

fn public_of(program: &Path, path: &Path) -> Result<(String, String), HostKeyError> {
    let text = run(program, &["-y"], path)?;
    parse_public(&text).ok_or_else(|| HostKeyError::Failed {
        command: format!("{} -y -f {}", program.display(), path.display()),
        detail: format!("no public key and SHA256 fingerprint in its output: {text:?}"),
    })
}

/// The host keys in `dir`: each existing key is reused, a missing one is made.
pub fn ensure(dir: &KeyDir, dropbearkey: &Path) -> Result<Vec<HostKey>, HostKeyError> {
    let dir_error = |source| HostKeyError::Dir {
        path: dir.path.clone(),
        source,
    };
    std::fs::create_dir_all(&dir.path).map_err(dir_error)?;
    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o700))
        .map_err(dir_error)?;
    KEY_TYPES
        .iter()
        .map(|&kind| ensure_one(&dir.path, kind, dropbearkey))
        .collect()
}

fn ensure_one(dir: &Path, kind: KeyType, dropbearkey: &Path) -> Result<HostKey, HostKeyError> {
    let path = dir.join(kind.file_name());
    let mut replaced = None;
    if path.exists() {
        match public_of(dropbearkey, &path) {
            Ok((public_key, fingerprint)) => {
                return Ok(HostKey {
                    kind,
                    path,
                    public_key,
                    fingerprint,
                    generated: false,
                    replaced: None,
                })
            }
            Err(HostKeyError::Failed { .. }) => {
                let aside = path.with_extension("unreadable");
                std::fs::rename(&path, &aside).map_err(|source| HostKeyError::MoveAside {
                    path: path.clone(),
                    source,
                })?;
                replaced = Some(aside);
            }
            Err(e) => return Err(e),
        }
    }
    run(dropbearkey, kind.generate_args(), &path)?;
    let (public_key, fingerprint) = public_of(dropbearkey, &path)?;
    Ok(HostKey {
        kind,
        path,
        public_key,
        fingerprint,
        generated: true,
        replaced,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "rootfs / rootfs rw 0 0\n\
        proc /proc proc rw,nosuid,nodev,noexec 0 0\n\
        tmpfs /run tmpfs rw,nosuid,nodev,mode=755 0 0\n";

    fn choose(mounts: &str) -> KeyDir {
        choose_dir(
            mounts,
            Path::new(DATA_VOLUME),
            Path::new(PERSISTENT_DIR),
            Path::new(VOLATILE_DIR),
        )
    }

    #[test]
    fn keys_go_to_the_data_volume_only_when_it_is_mounted() {
        assert_eq!(
            choose(MOUNTS),
            KeyDir {
                path: VOLATILE_DIR.into(),
                persistent: false
            }
        );
        let with_volume = format!("{MOUNTS}/dev/vdb /var/lib/tessera btrfs rw,relatime 0 0\n");
        assert_eq!(
            choose(&with_volume),
            KeyDir {
                path: PERSISTENT_DIR.into(),
                persistent: true
            }
        );
        // A volume mounted below it, or a directory of a similar name, is not the data volume.
        let elsewhere = format!(
            "{MOUNTS}/dev/vdb /var/lib/tessera/volumes/a btrfs rw 0 0\n/dev/vdc /var/lib/tessera2 ext4 rw 0 0\n"
        );
        assert!(!choose(&elsewhere).persistent);
    }

    #[test]
    fn dropbearkey_output_gives_the_public_key_and_fingerprint() {
        // Verbatim from dropbearkey 2022.83 (`-y -f`).
        let out = "Public key portion is:\n\
            ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBqTUlATjTi9TSvjMAMTsKQ0Cp/i6LcXZfChQpJ7QSsx root@vm\n\
            Fingerprint: SHA256:iznaJ+eDOz/Mf9sDMlXF7ZhGXPxmE2t4mpT2EK4hRt0\n";
        assert_eq!(
            parse_public(out),
            Some((
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBqTUlATjTi9TSvjMAMTsKQ0Cp/i6LcXZfChQpJ7QSsx"
                    .into(),
                "SHA256:iznaJ+eDOz/Mf9sDMlXF7ZhGXPxmE2t4mpT2EK4hRt0".into()
            ))
        );
        let ecdsa = "Public key portion is:\necdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTI= root@n1\nFingerprint: SHA256:abc\n";
        assert_eq!(
            parse_public(ecdsa).unwrap().0,
            "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTI="
        );
        // An old MD5 fingerprint, or an error, is no answer.
        assert_eq!(
            parse_public("ssh-rsa AAAA x\nFingerprint: md5 12:34\n"),
            None
        );
        assert_eq!(parse_public("Exited: Failed reading 'k'\n"), None);
    }

    #[test]
    fn an_unusable_dropbearkey_is_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let key_dir = KeyDir {
            path: dir.path().join("ssh"),
            persistent: false,
        };
        let e = ensure(&key_dir, Path::new("/nonexistent/dropbearkey"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("dropbear-bin"), "{e}");
    }

    #[test]
    fn existing_keys_are_reused_and_unreadable_ones_moved_aside() {
        // A stand-in for dropbearkey with its output format: -y reads the file, -t writes one.
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("dropbearkey");
        std::fs::write(
            &tool,
            "#!/bin/sh\n\
             case \"$1\" in\n\
             -y) grep -q '^KEY ' \"$3\" || { echo \"Exited: Failed reading '$3'\" >&2; exit 1; }\n\
                 echo 'Public key portion is:'; echo \"ssh-ed25519 $(cut -d' ' -f2 \"$3\") root@n\"\n\
                 echo \"Fingerprint: SHA256:$(cut -d' ' -f2 \"$3\")\" ;;\n\
             -t) eval last=\\${$#}; echo \"KEY $2$$\" > \"$last\" ;;\n\
             esac\n",
        )
        .unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let key_dir = KeyDir {
            path: dir.path().join("ssh"),
            persistent: true,
        };
        let first = ensure(&key_dir, &tool).unwrap();
        assert_eq!(first.len(), 2);
        assert!(first.iter().all(|k| k.generated && k.replaced.is_none()));
        assert_eq!(
            std::fs::metadata(&key_dir.path)
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        let again = ensure(&key_dir, &tool).unwrap();
        assert!(again.iter().all(|k| !k.generated));
        assert_eq!(
            first.iter().map(|k| &k.fingerprint).collect::<Vec<_>>(),
            again.iter().map(|k| &k.fingerprint).collect::<Vec<_>>()
        );
        let ed = key_dir.path.join(KeyType::Ed25519.file_name());
        std::fs::write(&ed, "garbage\n").unwrap();
        let third = ensure(&key_dir, &tool).unwrap();
        assert!(third[0].generated);
        let aside = third[0].replaced.clone().unwrap();
        assert_eq!(std::fs::read_to_string(aside).unwrap(), "garbage\n");
        assert!(!third[1].generated);
    }
}
