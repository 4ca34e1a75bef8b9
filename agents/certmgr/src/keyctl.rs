//! The key system calls of the request-key hand-off that `tessera_identity::keyring` does not
//! wrap: request_key(2) for the child, and for the callout KEYCTL_ASSUME_AUTHORITY,
//! KEYCTL_INSTANTIATE and KEYCTL_REJECT (keyctl(2), include/uapi/linux/keyctl.h; a stable ABI).

use std::ffi::CString;
use std::io;

use tessera_identity::keyring::Key;

const KEYCTL_INSTANTIATE: libc::c_ulong = 12;
const KEYCTL_ASSUME_AUTHORITY: libc::c_ulong = 16;
const KEYCTL_REJECT: libc::c_ulong = 19;
/// The special keyring of request_key(2)'s destination: this process's keyring.
pub const KEY_SPEC_PROCESS_KEYRING: i32 = -2;
/// The authorisation key of the request the callout serves (after assuming authority).
pub const KEY_SPEC_REQKEY_AUTH_KEY: i32 = -7;

/// The errno is kept (callers tell EKEYREJECTED from ENOKEY); they say which call failed.
fn check(_op: &'static str, ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte"))
}

/// request_key(2): find or have the kernel construct (through /sbin/request-key) a key of
/// `key_type` and `description`, linked into `dest`.
pub fn request_key(
    key_type: &str,
    description: &str,
    callout_info: &str,
    dest: i32,
) -> io::Result<Key> {
    let t = cstring(key_type)?;
    let d = cstring(description)?;
    let c = cstring(callout_info)?;
    // SAFETY: three NUL-terminated strings that outlive the call, and an integer.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_request_key,
            t.as_ptr(),
            d.as_ptr(),
            c.as_ptr(),
            dest as libc::c_long,
        )
    };
    let serial = check("request_key", ret)?;
    i32::try_from(serial)
        .map(Key::from_serial)
        .map_err(|_| io::Error::other("key serial out of range"))
}

/// KEYCTL_ASSUME_AUTHORITY: act for the process whose request created `key`.
pub fn assume_authority(key: Key) -> io::Result<()> {
    // SAFETY: integers only.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_ASSUME_AUTHORITY,
            key.serial() as libc::c_long,
            0,
            0,
            0,
        )
    };
    check("KEYCTL_ASSUME_AUTHORITY", ret).map(drop)
}

/// KEYCTL_INSTANTIATE: gives the key under construction its payload (linking it nowhere
/// else: request_key(2) already linked it into the requester's destination keyring).
pub fn instantiate(key: Key, payload: &[u8]) -> io::Result<()> {
    // SAFETY: the payload pointer and length come from one live slice.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_INSTANTIATE,
            key.serial() as libc::c_long,
            payload.as_ptr(),
            payload.len(),
            0,
        )
    };
    check("KEYCTL_INSTANTIATE", ret).map(drop)
}

/// KEYCTL_REJECT: the request fails with `error` for `timeout_s` seconds, then may be tried
/// again.
pub fn reject(key: Key, timeout_s: u32, error: i32) -> io::Result<()> {
    // SAFETY: integers only.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_REJECT,
            key.serial() as libc::c_long,
            timeout_s as libc::c_long,
            error as libc::c_long,
            0,
        )
    };
    check("KEYCTL_REJECT", ret).map(drop)
}

/// One line of /proc/keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcKey {
    pub serial: i32,
    pub perm: String,
    pub uid: String,
    pub key_type: String,
    /// Description and the type's own detail (`: …`), as the kernel prints it.
    pub rest: String,
}

/// Parses /proc/keys (`<serial hex> <flags> <usage> <expiry> <perm> <uid> <gid> <type> <desc>`).
pub fn parse_proc_keys(text: &str) -> Vec<ProcKey> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let serial = i32::from_str_radix(parts.next()?, 16).ok()?;
            let _flags = parts.next()?;
            let _usage = parts.next()?;
            let _expiry = parts.next()?;
            let perm = parts.next()?.to_string();
            let uid = parts.next()?.to_string();
            let _gid = parts.next()?;
            let key_type = parts.next()?.to_string();
            let rest = parts.collect::<Vec<_>>().join(" ");
            Some(ProcKey {
                serial,
                perm,
                uid,
                key_type,
                rest,
            })
        })
        .collect()
}

/// The pid of the process that requested `target`, from the authorisation key the kernel
/// gave the callout: /proc/keys shows it as `.request_ key:<target hex> pid:<n> ci:<len>`
/// (the type column is cut to 9 characters).
pub fn requester_pid(proc_keys: &str, target: Key) -> Option<u32> {
    let wanted = format!("key:{:x}", target.serial());
    parse_proc_keys(proc_keys)
        .into_iter()
        .filter(|k| k.key_type.starts_with(".request"))
        .find(|k| k.rest.split_whitespace().next() == Some(wanted.as_str()))
        .and_then(|k| {
            k.rest
                .split_whitespace()
                .find_map(|w| w.strip_prefix("pid:"))
                .and_then(|p| p.parse().ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
1d4e0b11 I--Q---     1 perm 3f010000     0     0 keyring   _ses: 1
2a3b4c5d I--Q---     1 perm 1f030000     0     0 .request_ key:12345678 pid:4242 ci:7
2a3b4c5e I--Q---     1 perm 1f030000     0     0 .request_ key:1234567 pid:77 ci:7
12345678 I--Q---     1 perm 3f010000     0     0 user      tessera:identity:abc: 0
";

    #[test]
    fn proc_keys_lines_parse_and_name_the_requester() {
        let keys = parse_proc_keys(SAMPLE);
        assert_eq!(keys.len(), 4);
        assert_eq!(keys[0].serial, 0x1d4e0b11);
        assert_eq!(keys[3].key_type, "user");
        assert!(keys[3].rest.starts_with("tessera:identity:abc"));
        assert_eq!(
            requester_pid(SAMPLE, Key::from_serial(0x12345678)),
            Some(4242)
        );
        assert_eq!(requester_pid(SAMPLE, Key::from_serial(0x1234567)), Some(77));
        assert_eq!(requester_pid(SAMPLE, Key::from_serial(0x1)), None);
        assert_eq!(requester_pid("garbage\n", Key::from_serial(0x1)), None);
    }

    #[test]
    fn request_key_without_a_match_and_without_a_callout_says_no_key() {
        // No such key anywhere; an unknown key type never reaches /sbin/request-key.
        let e = request_key(
            "tessera-no-such-type",
            "x",
            "tessera",
            KEY_SPEC_PROCESS_KEYRING,
        )
        .unwrap_err();
        assert!(e.raw_os_error().is_some(), "{e}");
    }
}
