//! What certmgr needs from the node's configuration: the CA (URL, pinned fingerprint), the
//! bootstrap token, the node's host name and cluster, and the key mode.
//!
//! The `userdata` service writes the validated user-data to /run/tessera/userdata.toml and
//! hands the token over in the kernel keyring: a possessor-only `user` key
//! `tessera:bootstrap-token` in root's user keyring, with `ca.token = "keyring:…"` in the file
//! in its place. A file written by an older `userdata` may still hold the token itself; it is
//! used as is.

use crate::defaults;
use crate::secret::SecretBytes;
use std::path::Path;
use tessera_identity::keyring::{Key, Keyring, KeyringError, SpecialKeyring};
use tessera_identity::keys::KeyMode;
use tessera_userdata::LoadError;

/// The node's configuration as certmgr sees it.
#[derive(Debug)]
pub struct Settings {
    pub hostname: Option<String>,
    pub cluster: String,
    /// `None`: standalone (no CA in user-data, or no user-data at all).
    pub ca: Option<CaSettings>,
}

#[derive(Debug)]
pub struct CaSettings {
    pub url: String,
    pub fingerprint: String,
    pub token: BootstrapToken,
}

/// The bootstrap token and where it came from.
#[derive(Debug)]
pub struct BootstrapToken {
    secret: SecretBytes,
    /// The keyring key holding it, to invalidate once it is spent.
    key: Option<Key>,
    /// SHA-256 of the token: tells a new token from the one already tried, without keeping it.
    digest: [u8; 32],
}

impl BootstrapToken {
    pub fn new(token: &[u8], key: Option<Key>) -> BootstrapToken {
        let mut digest = [0u8; 32];
        digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token).as_ref());
        BootstrapToken {
            secret: SecretBytes::from_slice(token),
            key,
            digest,
        }
    }

    /// The token text (printable ASCII, validated by the userdata schema).
    pub fn expose(&self) -> &str {
        std::str::from_utf8(self.secret.as_slice()).unwrap_or_default()
    }

    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// Where it came from, for logs.
    pub fn origin(&self) -> &'static str {
        if self.key.is_some() {
            "kernel keyring"
        } else {
            "userdata.toml"
        }
    }

    /// Removes the token from the keyring: it was redeemed or refused, and is worthless now.
    pub fn discard(&self) -> Result<(), KeyringError> {
        match self.key {
            Some(key) => match key.invalidate() {
                Err(e) if e.errno() == Some(libc::ENOKEY) => Ok(()),
                other => other,
            },
            None => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("user-data says the bootstrap token is in the kernel keyring, but there is no `{desc}` key ({source}); it was already redeemed by an earlier certmgr run or removed — issue a new token with `tessera ca token --subsystem certmgr …` and deliver new user-data")]
    TokenGone {
        desc: &'static str,
        #[source]
        source: KeyringError,
    },
    #[error("the bootstrap token `{desc}` cannot be read from the kernel keyring: {source}; certmgr must run as root in the user session that the userdata service used")]
    TokenUnreadable {
        desc: &'static str,
        #[source]
        source: KeyringError,
    },
}

/// Reads user-data from `path` and the token from `token_keyring` (root's user keyring on a
/// node).
pub fn load(path: &Path, token_keyring: Keyring) -> Result<Settings, SettingsError> {
    let Some(config) = tessera_userdata::load(path)? else {
        return Ok(Settings {
            hostname: None,
            cluster: tessera_userdata::schema::DEFAULT_CLUSTER.to_string(),
            ca: None,
        });
    };
    let ca = match &config.ca {
        None => None,
        Some(ca) => {
            let token = if ca.token.expose() == defaults::TOKEN_IN_KEYRING {
                read_token(token_keyring)?
            } else {
                BootstrapToken::new(ca.token.expose().as_bytes(), None)
            };
            Some(CaSettings {
                url: ca.url.clone(),
                fingerprint: ca.fingerprint.clone(),
                token,
            })
        }
    };
    Ok(Settings {
        hostname: config.node.hostname.clone(),
        cluster: config.node.cluster.clone(),
        ca,
    })
}

/// Root's user keyring, where the `userdata` service leaves the token.
pub fn user_keyring() -> Result<Keyring, KeyringError> {
    Keyring::special(SpecialKeyring::User, true)
}

/// Reads the `tessera:bootstrap-token` key into locked memory.
pub fn read_token(keyring: Keyring) -> Result<BootstrapToken, SettingsError> {
    let desc = defaults::BOOTSTRAP_TOKEN_DESC;
    let key = keyring
        .search("user", desc)
        .map_err(|source| SettingsError::TokenGone { desc, source })?;
    let mut buf = SecretBytes::with_capacity(4096);
    let n = key
        .read_into(buf.spare_mut())
        .map_err(|source| SettingsError::TokenUnreadable { desc, source })?;
    if n > buf.capacity() || n == 0 {
        return Err(SettingsError::TokenUnreadable {
            desc,
            source: KeyringError::TooLarge {
                op: "KEYCTL_READ",
                requested: n,
            },
        });
    }
    buf.advance(n);
    let text = buf.as_slice();
    let trimmed_len = text
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    Ok(BootstrapToken::new(&text[..trimmed_len], Some(key)))
}

/// The node key mode: `tessera.certmgr_key=` on the kernel command line, else
/// `$TESSERA_CERTMGR_KEY_MODE`, else what the kernel supports. Returns the reason with it.
pub fn key_mode(cmdline: &str, env: Option<&str>) -> (KeyMode, String) {
    let detected = || {
        let d = KeyMode::detect_with_reason();
        (d.mode, format!("detected: {}", d.reason))
    };
    chosen_mode(
        cmdline,
        defaults::KEY_MODE_ARG,
        env,
        defaults::KEY_MODE_ENV,
        detected,
    )
}

/// The key mode of child identities: `tessera.certmgr_child_key=`, else
/// `$TESSERA_CERTMGR_CHILD_KEY_MODE`, else ecdsa-p256. Agents' keys are made while the node
/// boots, and a P-256 key takes milliseconds where RSA-2048 takes a second under emulation.
/// kernel-rsa needs a node whose own key is kernel-rsa (the kernel supports it).
pub fn child_key_mode(cmdline: &str, env: Option<&str>, node: KeyMode) -> (KeyMode, String) {
    let default = || {
        (
            KeyMode::EcdsaP256,
            "default: P-256 child keys are generated in milliseconds at boot".to_string(),
        )
    };
    let (mode, why) = chosen_mode(
        cmdline,
        defaults::CHILD_KEY_MODE_ARG,
        env,
        defaults::CHILD_KEY_MODE_ENV,
        default,
    );
    if mode == KeyMode::KernelRsa && node != KeyMode::KernelRsa {
        return (
            KeyMode::EcdsaP256,
            format!("{why}, but the node key is {node}: this kernel cannot hold RSA keys; using ecdsa-p256"),
        );
    }
    (mode, why)
}

/// A key mode set on the kernel command line (`tessera.<arg>=`), else in the environment,
/// else `default()`; an unknown value falls back to the default and says so.
fn chosen_mode(
    cmdline: &str,
    arg: &str,
    env: Option<&str>,
    env_name: &str,
    default: impl Fn() -> (KeyMode, String),
) -> (KeyMode, String) {
    let prefix = format!("tessera.{arg}=");
    let from_cmdline = cmdline
        .split_ascii_whitespace()
        .find_map(|w| w.strip_prefix(prefix.as_str()))
        .map(|v| (v.trim_matches('"').to_string(), "kernel argument"));
    let from_env = env
        .filter(|v| !v.is_empty())
        .map(|v| (v.to_string(), env_name));
    let Some((value, origin)) = from_cmdline.or(from_env) else {
        return default();
    };
    match value.parse::<KeyMode>() {
        Ok(mode) => (mode, format!("set by {origin}")),
        Err(e) => {
            let (mode, why) = default();
            (mode, format!("{e} ({origin}); instead {why}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scratch(Keyring);
    impl Scratch {
        fn new(name: &str) -> Scratch {
            Scratch(Keyring::process().unwrap().create_keyring(name).unwrap())
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = self.0.as_key().invalidate();
        }
    }

    const FP: &str = "sha256:2b318f01675311f8c277886ba374ff2a250f1bbda0bfd7061b91f006a4082432";

    #[test]
    fn no_file_or_no_ca_section_is_standalone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("userdata.toml");
        let ring = Scratch::new("certmgr-test-settings-none");
        assert!(load(&path, ring.0).unwrap().ca.is_none());
        std::fs::write(&path, "version = 1\n[node]\nhostname = \"n1.example\"\n").unwrap();
        let s = load(&path, ring.0).unwrap();
        assert!(s.ca.is_none());
        assert_eq!(s.hostname.as_deref(), Some("n1.example"));
        assert_eq!(s.cluster, "tessera");
    }

    #[test]
    fn token_comes_from_the_keyring_and_is_discarded_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("userdata.toml");
        let ring = Scratch::new("certmgr-test-settings-keyring");
        std::fs::write(
            &path,
            format!("version = 1\n[ca]\nurl = \"https://10.0.2.2:8443\"\nfingerprint = \"{FP}\"\ntoken = \"{}\"\n", defaults::TOKEN_IN_KEYRING),
        )
        .unwrap();
        let err = load(&path, ring.0).unwrap_err();
        assert!(matches!(err, SettingsError::TokenGone { .. }), "{err}");
        assert!(err.to_string().contains("tessera ca token"), "{err}");

        ring.0
            .add("user", defaults::BOOTSTRAP_TOKEN_DESC, b"tok-123\n")
            .unwrap();
        let s = load(&path, ring.0).unwrap();
        let ca = s.ca.unwrap();
        assert_eq!(ca.token.expose(), "tok-123");
        assert_eq!(ca.token.origin(), "kernel keyring");
        assert_eq!(ca.url, "https://10.0.2.2:8443");
        ca.token.discard().unwrap();
        assert!(ring
            .0
            .search("user", defaults::BOOTSTRAP_TOKEN_DESC)
            .is_err());
        // Discarding twice is fine.
        ca.token.discard().unwrap();
    }

    #[test]
    fn a_token_written_in_the_file_is_used_as_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("userdata.toml");
        let ring = Scratch::new("certmgr-test-settings-inline");
        std::fs::write(
            &path,
            format!("version = 1\n[ca]\nurl = \"https://ca.example:8443\"\nfingerprint = \"{FP}\"\ntoken = \"abc\"\n"),
        )
        .unwrap();
        let ca = load(&path, ring.0).unwrap().ca.unwrap();
        assert_eq!(ca.token.expose(), "abc");
        assert_eq!(ca.token.origin(), "userdata.toml");
        assert_ne!(
            ca.token.digest(),
            BootstrapToken::new(b"abd", None).digest()
        );
    }

    #[test]
    fn key_mode_from_kernel_argument_then_environment() {
        let (mode, why) = key_mode("quiet tessera.certmgr_key=ecdsa-p256", Some("kernel-rsa"));
        assert_eq!(mode, KeyMode::EcdsaP256);
        assert!(why.contains("kernel argument"), "{why}");
        let (mode, why) = key_mode("quiet", Some("ecdsa-p256"));
        assert_eq!(mode, KeyMode::EcdsaP256);
        assert!(why.contains(defaults::KEY_MODE_ENV), "{why}");
        let (_, why) = key_mode("tessera.certmgr_key=dsa", None);
        assert!(why.contains("unknown key mode"), "{why}");
    }

    #[test]
    fn child_keys_default_to_p256_and_follow_the_argument_where_the_kernel_allows() {
        let (mode, why) = child_key_mode("quiet", None, KeyMode::KernelRsa);
        assert_eq!(mode, KeyMode::EcdsaP256);
        assert!(why.starts_with("default"), "{why}");
        let arg = "tessera.certmgr_child_key=kernel-rsa";
        let (mode, why) = child_key_mode(arg, None, KeyMode::KernelRsa);
        assert_eq!(mode, KeyMode::KernelRsa);
        assert!(why.contains("kernel argument"), "{why}");
        let (mode, why) = child_key_mode("", Some("kernel-rsa"), KeyMode::KernelRsa);
        assert_eq!(mode, KeyMode::KernelRsa);
        assert!(why.contains(defaults::CHILD_KEY_MODE_ENV), "{why}");
        // A node whose kernel holds no RSA keys cannot hand its children kernel-rsa keys.
        let (mode, why) = child_key_mode(arg, None, KeyMode::EcdsaP256);
        assert_eq!(mode, KeyMode::EcdsaP256);
        assert!(why.contains("cannot hold RSA keys"), "{why}");
        let (mode, why) = child_key_mode("tessera.certmgr_child_key=dsa", None, KeyMode::KernelRsa);
        assert_eq!(mode, KeyMode::EcdsaP256);
        assert!(why.contains("unknown key mode"), "{why}");
    }
}
