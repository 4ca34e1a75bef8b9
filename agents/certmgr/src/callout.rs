//! `/sbin/request-key` (= tessera, by argv[0]): the kernel runs it when a process calls
//! `request_key("user", "tessera:identity:<token>", "tessera", …)` and no such key exists
//! (Documentation/security/keys/request-key.rst), as
//!
//! ```text
//! /sbin/request-key create <key> <uid> <gid> <thread keyring> <process keyring> <session keyring>
//! ```
//!
//! It assumes authority over the key under construction, reads the token from the key's
//! description, asks certmgr to redeem it (naming the requester's pid, which the kernel put in
//! the authorisation key), adds the private key to the requester's process keyring —
//! `asymmetric` (PKCS#8 through `pkcs8_key_parser`) for kernel-rsa, a possessor-only `user`
//! key for ecdsa-p256, described `tessera:identity-key:<serial>` — and instantiates the
//! requested key with the certificate chain (PEM). On any failure the key is rejected with a
//! short timeout, so the requester gets EKEYREJECTED at once instead of hanging; the reason
//! goes to the kernel log. The token travels only in the key description and on the socket.

use std::path::Path;
use std::process::ExitCode;

use base64::Engine;
use tessera_identity::keyring::{Key, Keyring};
use tessera_identity::keys::{ecdsa_permissions, rsa_permissions, KeyMode};

use crate::defaults;
use crate::keyctl;
use crate::protocol::RedeemReply;
use crate::secret::SecretBytes;
use crate::tokens::is_token_shaped;

/// The callout's arguments (after argv[0]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalloutArgs {
    pub key: Key,
    pub uid: u32,
    pub gid: u32,
    pub thread_keyring: i32,
    pub process_keyring: i32,
    pub session_keyring: i32,
}

/// Parses `create <key> <uid> <gid> <thread> <process> <session>`.
pub fn parse_args(args: &[String]) -> Result<CalloutArgs, String> {
    let [op, key, uid, gid, thread, process, session] = args else {
        return Err(format!(
            "expected `create <key> <uid> <gid> <thread keyring> <process keyring> <session keyring>`, got {} arguments",
            args.len()
        ));
    };
    if op != "create" {
        return Err(format!(
            "unknown operation {op:?} (only \"create\" is served)"
        ));
    }
    let int = |what: &str, v: &str| -> Result<i64, String> {
        v.parse::<i64>()
            .map_err(|_| format!("{what} {v:?} is not a number"))
    };
    let serial = |what: &str, v: &str| -> Result<i32, String> {
        i32::try_from(int(what, v)?).map_err(|_| format!("{what} {v} is out of range"))
    };
    let id = |what: &str, v: &str| -> Result<u32, String> {
        u32::try_from(int(what, v)?).map_err(|_| format!("{what} {v} is out of range"))
    };
    let key = serial("key", key)?;
    if key <= 0 {
        return Err(format!("key {key} is not a key serial"));
    }
    Ok(CalloutArgs {
        key: Key::from_serial(key),
        uid: id("uid", uid)?,
        gid: id("gid", gid)?,
        thread_keyring: serial("thread keyring", thread)?,
        process_keyring: serial("process keyring", process)?,
        session_keyring: serial("session keyring", session)?,
    })
}

/// The token in a `tessera:identity:<token>` description.
pub fn token_of(description: &str) -> Result<&str, String> {
    let token = description
        .strip_prefix(defaults::IDENTITY_DESC_PREFIX)
        .ok_or_else(|| {
            format!(
                "the requested key is not a Tessera identity (its description does not start with {:?})",
                defaults::IDENTITY_DESC_PREFIX
            )
        })?;
    if !is_token_shaped(token) {
        return Err("the token in the key description is not shaped like a certmgr token".into());
    }
    Ok(token)
}

/// Entry point for argv[0] = `request-key`.
pub fn main(args: &[String]) -> ExitCode {
    let parsed = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            // Without a key to reject, exiting non-zero makes the kernel negate it.
            kmsg(&format!("bad arguments: {e}"));
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = keyctl::assume_authority(parsed.key) {
        kmsg(&format!(
            "key {}: KEYCTL_ASSUME_AUTHORITY: {e}",
            parsed.key.serial()
        ));
        return ExitCode::FAILURE;
    }
    match serve(&parsed, &crate::client::default_socket()) {
        Ok(summary) => {
            kmsg_level(6, &format!("key {}: {summary}", parsed.key.serial()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            kmsg(&format!("key {}: refused: {e}", parsed.key.serial()));
            let _ = keyctl::reject(
                parsed.key,
                defaults::NEGATIVE_KEY_TIMEOUT_S,
                libc::EKEYREJECTED,
            );
            ExitCode::FAILURE
        }
    }
}

/// Redeems the token and instantiates; returns a line for the log.
pub fn serve(args: &CalloutArgs, socket: &Path) -> Result<String, String> {
    let desc = args
        .key
        .describe()
        .map_err(|e| format!("cannot describe the requested key: {e}"))?;
    if desc.key_type != "user" {
        return Err(format!(
            "the requested key is of type {:?}; Tessera identities are \"user\" keys",
            desc.key_type
        ));
    }
    let token = token_of(&desc.description)?;
    let pid = std::fs::read_to_string("/proc/keys")
        .ok()
        .and_then(|t| keyctl::requester_pid(&t, args.key));
    let reply = crate::client::redeem(socket, token, pid).map_err(|e| e.to_string())?;
    let reply: RedeemReply<'_> = serde_json::from_slice(reply.as_slice())
        .map_err(|e| format!("certmgr's redeem reply is not what the protocol says ({e})"))?;
    let mode: KeyMode = reply.key_mode.parse().map_err(|e| format!("{e}"))?;
    let mut pkcs8 = SecretBytes::with_capacity(reply.key_pkcs8_b64.len());
    let n = base64::engine::general_purpose::STANDARD
        .decode_slice(reply.key_pkcs8_b64.as_bytes(), pkcs8.spare_mut())
        .map_err(|e| format!("key_pkcs8_b64 is not base64 ({e})"))?;
    pkcs8.advance(n);
    if args.process_keyring <= 0 {
        return Err("the requester has no process keyring; call request_key with KEY_SPEC_PROCESS_KEYRING as the destination".into());
    }
    let ring = Keyring::from_serial(args.process_keyring);
    let key_desc = format!("{}{}", defaults::IDENTITY_KEY_DESC_PREFIX, reply.serial);
    let private = add_private_key(ring, mode, &key_desc, pkcs8.as_slice())?;
    drop(pkcs8);
    if let Err(e) = keyctl::instantiate(args.key, reply.chain_pem.as_bytes()) {
        let _ = private.invalidate();
        return Err(format!("cannot instantiate the certificate key: {e}"));
    }
    Ok(format!(
        "identity {} serial {} for pid {} ({} key {})",
        reply.subject,
        reply.serial,
        pid.map_or("?".to_string(), |p| p.to_string()),
        mode,
        private.serial()
    ))
}

/// Adds the child's private key to its process keyring, possessor-only.
fn add_private_key(ring: Keyring, mode: KeyMode, desc: &str, pkcs8: &[u8]) -> Result<Key, String> {
    let (key_type, perm) = match mode {
        KeyMode::KernelRsa => ("asymmetric", rsa_permissions()),
        KeyMode::EcdsaP256 => ("user", ecdsa_permissions()),
    };
    let add = || ring.add(key_type, desc, pkcs8);
    let key = match add() {
        Err(e) if e.errno() == Some(libc::EBADMSG) && mode == KeyMode::KernelRsa => {
            crate::keygen::load_pkcs8_parser();
            add()
        }
        other => other,
    }
    .map_err(|e| format!("cannot add the private key to the requester's process keyring: {e}"))?;
    if let Err(e) = key.set_perm(perm) {
        let _ = key.invalidate();
        return Err(format!("cannot restrict the private key: {e}"));
    }
    Ok(key)
}

fn kmsg(line: &str) {
    kmsg_level(4, line)
}

/// The callout has no stdout anyone reads: its messages go to the kernel log (`tessera logs
/// klog`).
fn kmsg_level(level: u8, line: &str) {
    use std::io::Write;
    // The kernel log escapes non-ASCII bytes: keep messages ASCII.
    let line: String = line
        .chars()
        .map(|c| match c {
            '\u{2014}' | '\u{2013}' => '-',
            c if c.is_ascii() && !c.is_ascii_control() => c,
            _ => '?',
        })
        .collect();
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = f.write_all(format!("<{level}>tessera request-key: {line}\n").as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_kernels_arguments_parse() {
        let a = parse_args(&args(&["create", "123", "0", "0", "0", "456", "789"])).unwrap();
        assert_eq!(a.key, Key::from_serial(123));
        assert_eq!((a.uid, a.gid), (0, 0));
        assert_eq!(
            (a.thread_keyring, a.process_keyring, a.session_keyring),
            (0, 456, 789)
        );
    }

    #[test]
    fn bad_arguments_are_refused_with_the_reason() {
        for (v, needle) in [
            (&["create", "1"][..], "got 2 arguments"),
            (
                &["update", "1", "0", "0", "0", "0", "0"],
                "unknown operation",
            ),
            (
                &["create", "x", "0", "0", "0", "0", "0"],
                "key \"x\" is not a number",
            ),
            (
                &["create", "0", "0", "0", "0", "0", "0"],
                "not a key serial",
            ),
            (
                &["create", "1", "-1", "0", "0", "0", "0"],
                "uid -1 is out of range",
            ),
            (
                &["create", "99999999999", "0", "0", "0", "0", "0"],
                "out of range",
            ),
        ] {
            let e = parse_args(&args(v)).unwrap_err();
            assert!(e.contains(needle), "{v:?}: {e}");
        }
    }

    #[test]
    fn the_token_comes_from_the_description() {
        let t = "A".repeat(43);
        assert_eq!(token_of(&format!("tessera:identity:{t}")).unwrap(), t);
        assert!(token_of("tessera:identity:short").is_err());
        assert!(token_of(&format!("other:{t}"))
            .unwrap_err()
            .contains("not a Tessera identity"));
    }
}
