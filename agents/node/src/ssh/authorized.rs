//! The keys allowed to log in: user-data's `ssh.authorized_keys` (validated by the userdata
//! service: one `<type> <base64> [comment]` per entry), written to root's
//! `~/.ssh/authorized_keys` for dropbear, which reads the file at every login attempt.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Root's home in the image (/etc/passwd).
pub const ROOT_HOME: &str = "/root";

/// The authorized keys user-data gives; none when there is no user-data or no `[ssh]`.
pub fn from_userdata(path: &Path) -> Result<Vec<String>, tessera_userdata::LoadError> {
    Ok(tessera_userdata::load(path)?
        .and_then(|config| config.ssh)
        .map(|ssh| ssh.authorized_keys)
        .unwrap_or_default())
}

/// The text of `authorized_keys`: a header saying where it comes from, then one key a line.
/// dropbear skips the header (a line that is no key of a known type).
pub fn render(keys: &[String]) -> String {
    let mut text = String::from(
        "# Written by the tessera ssh service from user-data ssh.authorized_keys; edits are replaced.\n",
    );
    for key in keys {
        text.push_str(key);
        text.push('\n');
    }
    text
}

/// Writes `<home>/.ssh/authorized_keys` (mode 0600, its directory 0700: dropbear refuses
/// keys that others could change) and returns its path.
pub fn install(home: &Path, keys: &[String]) -> std::io::Result<PathBuf> {
    let dir = home.join(".ssh");
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let file = dir.join("authorized_keys");
    tessera_userdata::service::write_atomically(&file, render(keys).as_bytes(), 0o600)?;
    Ok(file)
}

/// Removes the file again when the console turns off (a missing file is fine).
pub fn remove(home: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(home.join(".ssh/authorized_keys")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBqTUlATjTi9TSvjMAMTsKQ0Cp/i6LcXZfChQpJ7QSsx dev@laptop";

    #[test]
    fn the_file_has_a_header_and_one_key_a_line() {
        let other = "ecdsa-sha2-nistp256 AAAAE2VjZHNh";
        let text = render(&[KEY.to_string(), other.to_string()]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("# Written by the tessera ssh service"));
        assert_eq!(&lines[1..], [KEY, other]);
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn install_makes_a_private_file_in_a_private_directory_and_remove_undoes_it() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".ssh")).unwrap();
        std::fs::set_permissions(
            home.path().join(".ssh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let file = install(home.path(), &[KEY.to_string()]).unwrap();
        assert_eq!(file, home.path().join(".ssh/authorized_keys"));
        assert_eq!(
            std::fs::metadata(home.path().join(".ssh")).unwrap().mode() & 0o777,
            0o700
        );
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        assert!(std::fs::read_to_string(&file).unwrap().contains(KEY));
        remove(home.path()).unwrap();
        assert!(!file.exists());
        remove(home.path()).unwrap();
    }

    #[test]
    fn keys_come_from_user_data_and_none_without_an_ssh_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("userdata.toml");
        assert!(from_userdata(&path).unwrap().is_empty());
        std::fs::write(&path, "version = 1\n").unwrap();
        assert!(from_userdata(&path).unwrap().is_empty());
        std::fs::write(
            &path,
            format!("version = 1\n[ssh]\nauthorized_keys = [\"{KEY}\"]\n"),
        )
        .unwrap();
        assert_eq!(from_userdata(&path).unwrap(), [KEY]);
        std::fs::write(
            &path,
            "version = 1\n[ssh]\nauthorized_keys = [\"ssh-dss AAAA\"]\n",
        )
        .unwrap();
        let e = from_userdata(&path).unwrap_err().to_string();
        assert!(e.contains("ssh.authorized_keys[0]"), "{e}");
    }
}
