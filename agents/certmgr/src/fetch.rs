//! The child's side of the hand-off (`tessera identity fetch`, and any agent that needs its
//! identity): read the one-time token from an inherited file descriptor, call request_key(2),
//! and find the certificate chain and the private key the callout put into this process's
//! keyring.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tessera_identity::keyring::{Key, Keyring};
use tessera_identity::profile::PeerIdentity;
use zeroize::Zeroizing;

use crate::defaults;
use crate::keyctl::{self, ProcKey};
use crate::tokens::is_token_shaped;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no token descriptor: pass --token-fd N or set {env} (the supervisor sets it for services with `identity = {{…}}`)")]
    NoFd { env: &'static str },
    #[error("{what} {value:?} is not a file descriptor number")]
    BadFd { what: String, value: String },
    #[error("cannot read the token from descriptor {fd}: {source}")]
    Read {
        fd: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("descriptor {0} holds no certmgr token (expected 43 base64url characters and a newline); get one with `tessera identity child-token SUBSYSTEM AGENT_ID`")]
    NotAToken(i32),
    #[error("certmgr refused the token (request_key: {0}); the kernel log says why: `tessera logs klog`")]
    Rejected(std::io::Error),
    #[error("the request-key callout did not run or failed (request_key: {0}); /sbin/request-key must be tessera and certmgr must be running")]
    NoCallout(std::io::Error),
    #[error("request_key failed: {0}; see `tessera logs klog`")]
    Request(std::io::Error),
    #[error("the certificate key {serial} is unusable: {why}")]
    BadChain { serial: i32, why: String },
}

/// Reads the token from `fd` (at most one line) and closes the descriptor.
pub fn read_token_fd(fd: i32) -> Result<Zeroizing<String>, FetchError> {
    if fd < 0 {
        return Err(FetchError::BadFd {
            what: "descriptor".into(),
            value: fd.to_string(),
        });
    }
    // SAFETY: the caller names a descriptor this process inherited for the token; it is
    // owned (and closed) here, as nothing else reads it.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut buf = Zeroizing::new([0u8; 128]);
    let mut len = 0;
    loop {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if len == buf.len() || buf[..len].contains(&b'\n') {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => return Err(FetchError::Read { fd, source }),
        }
    }
    let text = std::str::from_utf8(&buf[..len]).map_err(|_| FetchError::NotAToken(fd))?;
    let token = text.lines().next().unwrap_or_default().trim();
    if !is_token_shaped(token) {
        return Err(FetchError::NotAToken(fd));
    }
    Ok(Zeroizing::new(token.to_string()))
}

/// The descriptor from `--token-fd` or `$TESSERA_IDENTITY_FD`.
pub fn token_fd(arg: Option<i32>, env: Option<String>) -> Result<i32, FetchError> {
    if let Some(fd) = arg {
        return Ok(fd);
    }
    let value = env.ok_or(FetchError::NoFd {
        env: defaults::IDENTITY_FD_ENV,
    })?;
    value.trim().parse().map_err(|_| FetchError::BadFd {
        what: defaults::IDENTITY_FD_ENV.into(),
        value,
    })
}

/// What the hand-off left in this process's keyring.
#[derive(Debug)]
pub struct Fetched {
    /// The `user` key holding the chain (PEM).
    pub cert_key: Key,
    pub chain_pem: String,
    pub peer: PeerIdentity,
    /// The private key (`tessera:identity-key:<serial>`) and its type.
    pub private_key: Option<(Key, String)>,
}

/// Redeems `token` through request_key(2) into this process's keyring.
pub fn fetch(token: &str) -> Result<Fetched, FetchError> {
    let desc = Zeroizing::new(format!("{}{token}", defaults::IDENTITY_DESC_PREFIX));
    let key = keyctl::request_key(
        "user",
        &desc,
        defaults::CALLOUT_INFO,
        keyctl::KEY_SPEC_PROCESS_KEYRING,
    )
    .map_err(|e| match e.raw_os_error() {
        Some(libc::EKEYREJECTED) => FetchError::Rejected(e),
        Some(libc::ENOKEY) => FetchError::NoCallout(e),
        _ => FetchError::Request(e),
    })?;
    let bad = |why: String| FetchError::BadChain {
        serial: key.serial(),
        why,
    };
    let mut buf = vec![0u8; 32 * 1024];
    let n = key.read_into(&mut buf).map_err(|e| bad(e.to_string()))?;
    buf.truncate(n.min(buf.len()));
    let chain_pem = String::from_utf8(buf).map_err(|_| bad("not text".into()))?;
    let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or_else(|| bad("no certificate".into()))?
        .map_err(|e| bad(e.to_string()))?;
    let peer = PeerIdentity::from_der(&leaf).map_err(|e| bad(e.to_string()))?;
    let private_desc = format!("{}{}", defaults::IDENTITY_KEY_DESC_PREFIX, peer.serial);
    let private_key = Keyring::process().ok().and_then(|ring| {
        ["asymmetric", "user"].into_iter().find_map(|t| {
            ring.search(t, &private_desc)
                .ok()
                .map(|k| (k, t.to_string()))
        })
    });
    Ok(Fetched {
        cert_key: key,
        chain_pem,
        peer,
        private_key,
    })
}

/// The Tessera keys this process can see (/proc/keys), tokens in descriptions shortened:
/// `keyctl show` for a console without keyutils.
pub fn tessera_keys(proc_keys: &str) -> Vec<ProcKey> {
    keyctl::parse_proc_keys(proc_keys)
        .into_iter()
        .filter(|k| {
            k.rest.starts_with("tessera:")
                || k.rest.starts_with("_pid")
                || k.rest.starts_with("_uid")
        })
        .map(|mut k| {
            k.rest = redact(&k.rest);
            k
        })
        .collect()
}

/// `tessera:identity:<token>` → `tessera:identity:<first 6>…`.
pub fn redact(desc: &str) -> String {
    match desc.strip_prefix(defaults::IDENTITY_DESC_PREFIX) {
        Some(rest) => {
            let token: String = rest.chars().take_while(|c| *c != ':').collect();
            let shown: String = token.chars().take(6).collect();
            format!(
                "{}{shown}…{}",
                defaults::IDENTITY_DESC_PREFIX,
                &rest[token.len()..]
            )
        }
        None => desc.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_token_is_read_from_a_pipe_and_checked() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let token = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ";
        std::fs::File::from(w)
            .write_all(format!("{token}\n").as_bytes())
            .unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(r);
        assert_eq!(read_token_fd(fd).unwrap().as_str(), token);

        let (r, w) = nix::unistd::pipe().unwrap();
        std::fs::File::from(w).write_all(b"garbage\n").unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(r);
        assert!(matches!(read_token_fd(fd), Err(FetchError::NotAToken(_))));
    }

    #[test]
    fn the_descriptor_comes_from_the_flag_or_the_environment() {
        assert_eq!(token_fd(Some(3), Some("4".into())).unwrap(), 3);
        assert_eq!(token_fd(None, Some("4".into())).unwrap(), 4);
        assert!(matches!(token_fd(None, None), Err(FetchError::NoFd { .. })));
        assert!(token_fd(None, Some("x".into())).is_err());
    }

    #[test]
    fn listings_shorten_tokens() {
        let t = "A".repeat(43);
        assert_eq!(
            redact(&format!("tessera:identity:{t}: 1234")),
            "tessera:identity:AAAAAA…: 1234"
        );
        assert_eq!(redact("tessera:node:cert: 5"), "tessera:node:cert: 5");
        let text = format!(
            "00000001 I--Q--- 1 perm 3f010000 0 0 user tessera:identity:{t}: 10\n00000002 I--Q--- 1 perm 3f010000 0 0 user other: 1\n"
        );
        let keys = tessera_keys(&text);
        assert_eq!(keys.len(), 1);
        assert!(!keys[0].rest.contains(&t));
    }
}
