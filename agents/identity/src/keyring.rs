//! The kernel key retention service (keyrings(7), keyctl(2)) as small safe calls: add a key
//! of any type to a keyring, set its permissions, describe, read, search, revoke or invalidate
//! it, and the public-key operations of `asymmetric` keys (`KEYCTL_PKEY_QUERY`,
//! `KEYCTL_PKEY_DECRYPT`, `KEYCTL_PKEY_SIGN`).
//!
//! This module owns only the system calls; which key goes where, and why, is `keys`'s job.
//! It uses raw `add_key(2)`/`keyctl(2)` rather than linux-keyutils: that crate adds only
//! `user` keys, has no public-key operations, and its `read_to_vec` leaves an unzeroized
//! 64 KiB copy of whatever it read; the `keyutils` crate links the C libkeyutils, which the
//! static musl binary does not have.

use std::ffi::CString;
use std::fmt;
use std::io;

// keyctl(2) commands and constants (include/uapi/linux/keyctl.h; a stable ABI).
const KEYCTL_GET_KEYRING_ID: libc::c_ulong = 0;
const KEYCTL_REVOKE: libc::c_ulong = 3;
const KEYCTL_SETPERM: libc::c_ulong = 5;
const KEYCTL_DESCRIBE: libc::c_ulong = 6;
const KEYCTL_UNLINK: libc::c_ulong = 9;
const KEYCTL_SEARCH: libc::c_ulong = 10;
const KEYCTL_READ: libc::c_ulong = 11;
const KEYCTL_SET_TIMEOUT: libc::c_ulong = 15;
const KEYCTL_INVALIDATE: libc::c_ulong = 21;
const KEYCTL_PKEY_QUERY: libc::c_ulong = 24;
const KEYCTL_PKEY_DECRYPT: libc::c_ulong = 26;
const KEYCTL_PKEY_SIGN: libc::c_ulong = 27;

/// The keyrings every process can name without knowing their serial (`KEY_SPEC_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecialKeyring {
    /// This thread only.
    Thread,
    /// The threads of this process; not inherited by fork(2) children.
    Process,
    /// This login session (inherited by children).
    Session,
    /// Every process of this UID.
    User,
    /// The UID's default session keyring.
    UserSession,
}

impl SpecialKeyring {
    fn spec(self) -> i32 {
        match self {
            SpecialKeyring::Thread => -1,
            SpecialKeyring::Process => -2,
            SpecialKeyring::Session => -3,
            SpecialKeyring::User => -4,
            SpecialKeyring::UserSession => -5,
        }
    }
}

/// One group of permission bits (possessor, user, group or other) of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Perm(u8);

impl Perm {
    pub const NONE: Perm = Perm(0);
    /// See the key's attributes (`KEYCTL_DESCRIBE`, /proc/keys).
    pub const VIEW: Perm = Perm(0x01);
    /// Read the payload (`KEYCTL_READ`).
    pub const READ: Perm = Perm(0x02);
    /// Update the payload, revoke.
    pub const WRITE: Perm = Perm(0x04);
    /// Find the key in a search; use it in public-key operations; invalidate it.
    pub const SEARCH: Perm = Perm(0x08);
    /// Link the key into a keyring.
    pub const LINK: Perm = Perm(0x10);
    /// Change permissions, owner, timeout; revoke.
    pub const SETATTR: Perm = Perm(0x20);
    pub const ALL: Perm = Perm(0x3f);

    pub fn bits(self) -> u8 {
        self.0
    }

    pub fn contains(self, other: Perm) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Perm {
    type Output = Perm;
    fn bitor(self, rhs: Perm) -> Perm {
        Perm(self.0 | rhs.0)
    }
}

/// A key's permission mask: possessor, user, group and other, 8 bits each (keyctl_setperm(3)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permissions(u32);

impl Permissions {
    pub fn new(possessor: Perm, user: Perm, group: Perm, other: Perm) -> Permissions {
        Permissions(
            u32::from(possessor.0) << 24
                | u32::from(user.0) << 16
                | u32::from(group.0) << 8
                | u32::from(other.0),
        )
    }

    /// Only a process that possesses the key (reaches it through its thread, process or
    /// session keyring) gets `perm`; nobody else, not even the same UID, gets anything.
    pub fn possessor_only(perm: Perm) -> Permissions {
        Permissions::new(perm, Perm::NONE, Perm::NONE, Perm::NONE)
    }

    pub fn from_bits(bits: u32) -> Permissions {
        Permissions(bits)
    }

    pub fn bits(self) -> u32 {
        self.0
    }

    pub fn possessor(self) -> Perm {
        Perm((self.0 >> 24) as u8)
    }

    pub fn user(self) -> Perm {
        Perm((self.0 >> 16) as u8)
    }

    pub fn group(self) -> Perm {
        Perm((self.0 >> 8) as u8)
    }

    pub fn other(self) -> Perm {
        Perm(self.0 as u8)
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// What `KEYCTL_DESCRIBE` tells about a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    pub key_type: String,
    pub uid: u32,
    pub gid: u32,
    pub perm: Permissions,
    pub description: String,
}

impl Description {
    /// Parses the kernel's `type;uid;gid;perm;description` (perm in hex).
    pub fn parse(text: &str) -> Result<Description, KeyringError> {
        let bad = || KeyringError::BadDescription(text.to_string());
        let mut parts = text.splitn(5, ';');
        let mut next = || parts.next().ok_or_else(bad);
        let key_type = next()?.to_string();
        let uid = next()?.parse().map_err(|_| bad())?;
        let gid = next()?.parse().map_err(|_| bad())?;
        let perm = u32::from_str_radix(next()?, 16).map_err(|_| bad())?;
        let description = next()?.to_string();
        Ok(Description {
            key_type,
            uid,
            gid,
            perm: Permissions(perm),
            description,
        })
    }
}

/// What `KEYCTL_PKEY_QUERY` tells about an asymmetric key (struct keyctl_pkey_query).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PkeyQuery {
    pub supported_ops: u32,
    /// Key size in bits.
    pub key_size: u32,
    pub max_data_size: u16,
    pub max_sig_size: u16,
    pub max_enc_size: u16,
    pub max_dec_size: u16,
    spare: [u32; 10],
}

impl PkeyQuery {
    pub const SUPPORTS_ENCRYPT: u32 = 0x01;
    pub const SUPPORTS_DECRYPT: u32 = 0x02;
    pub const SUPPORTS_SIGN: u32 = 0x04;
    pub const SUPPORTS_VERIFY: u32 = 0x08;

    pub fn supports(&self, op: u32) -> bool {
        self.supported_ops & op == op
    }
}

/// struct keyctl_pkey_params.
#[repr(C)]
struct PkeyParams {
    key_id: i32,
    in_len: u32,
    out_len: u32,
    spare: [u32; 7],
}

/// A failed key operation: which one, the errno, and what usually fixes it.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("{op} failed: {source}; {hint}")]
    Syscall {
        op: &'static str,
        #[source]
        source: io::Error,
        hint: &'static str,
    },
    #[error("the {what} contains a NUL byte, which keyctl(2) cannot take")]
    Nul { what: &'static str },
    #[error("KEYCTL_DESCRIBE returned {0:?}, which is not type;uid;gid;perm;description")]
    BadDescription(String),
    #[error("{op}: {requested} bytes is more than keyctl(2) can take")]
    TooLarge { op: &'static str, requested: usize },
}

impl KeyringError {
    /// The errno of a failed system call.
    pub fn errno(&self) -> Option<i32> {
        match self {
            KeyringError::Syscall { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    fn from_errno(op: &'static str) -> KeyringError {
        let source = io::Error::last_os_error();
        let hint = hint(source.raw_os_error().unwrap_or(0));
        KeyringError::Syscall { op, source, hint }
    }
}

fn hint(errno: i32) -> &'static str {
    match errno {
        libc::ENOSYS => "this kernel has no key retention service (CONFIG_KEYS)",
        libc::ENOKEY => "no such key: it was never added, was invalidated, or is not reachable from this process's keyrings",
        libc::EACCES => "permission denied: this process does not possess the key and its user/group/other permissions do not grant the operation",
        libc::EOPNOTSUPP => "the key type does not support this operation (asymmetric and logon keys cannot be read back)",
        libc::EKEYREVOKED => "the key was revoked: create a new one",
        libc::EKEYEXPIRED => "the key expired: create a new one",
        libc::EDQUOT => "the UID's key quota is used up: invalidate unused keys or raise /proc/sys/kernel/keys/maxkeys and maxbytes",
        libc::EBADMSG => "no parser of this key type recognised the payload (a PKCS#8 key for the asymmetric type needs the pkcs8_key_parser module: `tessera modprobe pkcs8_key_parser`)",
        libc::ENODEV => "this key type is not registered in the kernel (its module is not loaded)",
        libc::ENOPKG => "the kernel lacks the crypto algorithm for this key",
        libc::EINVAL => "the kernel rejected an argument (description format, info string, or buffer sizes for this key)",
        libc::EPERM => "not permitted (key type names starting with '.' are kernel-only)",
        _ => "see keyctl(2)",
    }
}

fn cstring(what: &'static str, s: &str) -> Result<CString, KeyringError> {
    CString::new(s).map_err(|_| KeyringError::Nul { what })
}

fn check(op: &'static str, ret: libc::c_long) -> Result<libc::c_long, KeyringError> {
    if ret < 0 {
        Err(KeyringError::from_errno(op))
    } else {
        Ok(ret)
    }
}

fn to_serial(op: &'static str, ret: libc::c_long) -> Result<i32, KeyringError> {
    let ret = check(op, ret)?;
    i32::try_from(ret).map_err(|_| KeyringError::Syscall {
        op,
        source: io::Error::from_raw_os_error(libc::ERANGE),
        hint: "the kernel returned a key serial outside the 32-bit range",
    })
}

/// keyctl(2) with its four arguments. Callers pass pointers only to buffers that live
/// across the call, with their true lengths.
///
/// # Safety
/// Every pointer among the arguments must be valid for what `cmd` does with it.
unsafe fn keyctl(
    cmd: libc::c_ulong,
    a2: libc::c_ulong,
    a3: libc::c_ulong,
    a4: libc::c_ulong,
    a5: libc::c_ulong,
) -> libc::c_long {
    // SAFETY: forwarded from the caller's contract.
    unsafe { libc::syscall(libc::SYS_keyctl, cmd, a2, a3, a4, a5) }
}

/// A keyring, by serial. Copying it does not copy the keyring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keyring {
    serial: i32,
}

impl Keyring {
    /// The serial of a special keyring; `create` makes it if the process has none yet.
    pub fn special(which: SpecialKeyring, create: bool) -> Result<Keyring, KeyringError> {
        // SAFETY: KEYCTL_GET_KEYRING_ID takes two integers, no pointers.
        let ret = unsafe {
            keyctl(
                KEYCTL_GET_KEYRING_ID,
                which.spec() as libc::c_ulong,
                libc::c_ulong::from(create),
                0,
                0,
            )
        };
        Ok(Keyring {
            serial: to_serial("KEYCTL_GET_KEYRING_ID", ret)?,
        })
    }

    /// This process's own keyring (created if needed): possessed by its threads only.
    pub fn process() -> Result<Keyring, KeyringError> {
        Keyring::special(SpecialKeyring::Process, true)
    }

    pub fn from_serial(serial: i32) -> Keyring {
        Keyring { serial }
    }

    pub fn serial(&self) -> i32 {
        self.serial
    }

    /// As a key, to describe, set permissions on or invalidate the keyring itself.
    pub fn as_key(&self) -> Key {
        Key {
            serial: self.serial,
        }
    }

    /// Adds (or, for types that support update, updates) a key and links it here.
    pub fn add(
        &self,
        key_type: &str,
        description: &str,
        payload: &[u8],
    ) -> Result<Key, KeyringError> {
        let key_type = cstring("key type", key_type)?;
        let description = cstring("key description", description)?;
        // SAFETY: both strings are NUL-terminated and outlive the call; the payload pointer
        // and length come from one slice.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_add_key,
                key_type.as_ptr(),
                description.as_ptr(),
                payload.as_ptr(),
                payload.len(),
                self.serial,
            )
        };
        Ok(Key {
            serial: to_serial("add_key", ret)?,
        })
    }

    /// A new empty keyring linked into this one.
    pub fn create_keyring(&self, name: &str) -> Result<Keyring, KeyringError> {
        let key_type = cstring("key type", "keyring")?;
        let name = cstring("keyring name", name)?;
        // SAFETY: both strings are NUL-terminated and outlive the call; a keyring takes no
        // payload (NULL, 0).
        let ret = unsafe {
            libc::syscall(
                libc::SYS_add_key,
                key_type.as_ptr(),
                name.as_ptr(),
                std::ptr::null::<u8>(),
                0usize,
                self.serial,
            )
        };
        Ok(Keyring {
            serial: to_serial("add_key(keyring)", ret)?,
        })
    }

    /// Finds a key by type and exact description in this keyring and the keyrings it links.
    pub fn search(&self, key_type: &str, description: &str) -> Result<Key, KeyringError> {
        let key_type = cstring("key type", key_type)?;
        let description = cstring("key description", description)?;
        // SAFETY: both strings are NUL-terminated and outlive the call; 0 = link nowhere.
        let ret = unsafe {
            keyctl(
                KEYCTL_SEARCH,
                self.serial as libc::c_ulong,
                key_type.as_ptr() as libc::c_ulong,
                description.as_ptr() as libc::c_ulong,
                0,
            )
        };
        Ok(Key {
            serial: to_serial("KEYCTL_SEARCH", ret)?,
        })
    }

    /// Removes the link from this keyring to `key`.
    pub fn unlink(&self, key: Key) -> Result<(), KeyringError> {
        // SAFETY: two serials, no pointers.
        let ret = unsafe {
            keyctl(
                KEYCTL_UNLINK,
                key.serial as libc::c_ulong,
                self.serial as libc::c_ulong,
                0,
                0,
            )
        };
        check("KEYCTL_UNLINK", ret).map(drop)
    }
}

/// A key, by serial. Copying it does not copy the key; dropping it does not remove it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    serial: i32,
}

impl Key {
    pub fn from_serial(serial: i32) -> Key {
        Key { serial }
    }

    pub fn serial(&self) -> i32 {
        self.serial
    }

    /// Type, owner, permissions and description.
    pub fn describe(&self) -> Result<Description, KeyringError> {
        let mut buf = vec![0u8; 256];
        loop {
            // SAFETY: the buffer is valid for writes of its length during the call.
            let ret = unsafe {
                keyctl(
                    KEYCTL_DESCRIBE,
                    self.serial as libc::c_ulong,
                    buf.as_mut_ptr() as libc::c_ulong,
                    buf.len() as libc::c_ulong,
                    0,
                )
            };
            // The return value is the full length including the NUL, even when it did not fit.
            let needed = check("KEYCTL_DESCRIBE", ret)? as usize;
            if needed <= buf.len() {
                let text = String::from_utf8_lossy(&buf[..needed.saturating_sub(1)]);
                return Description::parse(&text);
            }
            buf.resize(needed, 0);
        }
    }

    pub fn set_perm(&self, perm: Permissions) -> Result<(), KeyringError> {
        // SAFETY: a serial and an integer mask, no pointers.
        let ret = unsafe {
            keyctl(
                KEYCTL_SETPERM,
                self.serial as libc::c_ulong,
                perm.0 as libc::c_ulong,
                0,
                0,
            )
        };
        check("KEYCTL_SETPERM", ret).map(drop)
    }

    /// Reads the payload into `buf` and returns the payload's full size: when that is larger
    /// than `buf`, only `buf.len()` bytes were written and the caller needs a larger buffer.
    pub fn read_into(&self, buf: &mut [u8]) -> Result<usize, KeyringError> {
        // SAFETY: the buffer is valid for writes of its length during the call.
        let ret = unsafe {
            keyctl(
                KEYCTL_READ,
                self.serial as libc::c_ulong,
                buf.as_mut_ptr() as libc::c_ulong,
                buf.len() as libc::c_ulong,
                0,
            )
        };
        Ok(check("KEYCTL_READ", ret)? as usize)
    }

    /// Revokes the key: it stays until garbage-collected, but every use fails.
    pub fn revoke(&self) -> Result<(), KeyringError> {
        // SAFETY: a serial, no pointers.
        let ret = unsafe { keyctl(KEYCTL_REVOKE, self.serial as libc::c_ulong, 0, 0, 0) };
        check("KEYCTL_REVOKE", ret).map(drop)
    }

    /// Invalidates the key: it is unlinked everywhere and destroyed at once.
    pub fn invalidate(&self) -> Result<(), KeyringError> {
        // SAFETY: a serial, no pointers.
        let ret = unsafe { keyctl(KEYCTL_INVALIDATE, self.serial as libc::c_ulong, 0, 0, 0) };
        check("KEYCTL_INVALIDATE", ret).map(drop)
    }

    /// Expires the key `seconds` from now (0 clears the timeout).
    pub fn set_timeout(&self, seconds: u32) -> Result<(), KeyringError> {
        // SAFETY: a serial and an integer, no pointers.
        let ret = unsafe {
            keyctl(
                KEYCTL_SET_TIMEOUT,
                self.serial as libc::c_ulong,
                libc::c_ulong::from(seconds),
                0,
                0,
            )
        };
        check("KEYCTL_SET_TIMEOUT", ret).map(drop)
    }

    /// `KEYCTL_PKEY_QUERY` with an info string such as `enc=raw`.
    pub fn pkey_query(&self, info: &str) -> Result<PkeyQuery, KeyringError> {
        let info = cstring("keyctl info string", info)?;
        let mut result = PkeyQuery::default();
        // SAFETY: the info string is NUL-terminated and the result is a #[repr(C)]
        // struct keyctl_pkey_query, both live across the call.
        let ret = unsafe {
            keyctl(
                KEYCTL_PKEY_QUERY,
                self.serial as libc::c_ulong,
                0,
                info.as_ptr() as libc::c_ulong,
                &mut result as *mut PkeyQuery as libc::c_ulong,
            )
        };
        check("KEYCTL_PKEY_QUERY", ret)?;
        Ok(result)
    }

    /// `KEYCTL_PKEY_DECRYPT`: the private-key operation on `input`; with `enc=raw` on an RSA
    /// key that is `input^d mod n`. Returns the number of bytes written to `output`.
    pub fn pkey_decrypt(
        &self,
        info: &str,
        input: &[u8],
        output: &mut [u8],
    ) -> Result<usize, KeyringError> {
        self.pkey_op(
            KEYCTL_PKEY_DECRYPT,
            "KEYCTL_PKEY_DECRYPT",
            info,
            input,
            output,
        )
    }

    /// `KEYCTL_PKEY_SIGN`. The kernel pads and hashes as `info` says (`enc=pkcs1 hash=sha256`);
    /// Debian's 6.1 refuses `enc=raw` here, which is why `keys` signs through `pkey_decrypt`.
    pub fn pkey_sign(
        &self,
        info: &str,
        input: &[u8],
        output: &mut [u8],
    ) -> Result<usize, KeyringError> {
        self.pkey_op(KEYCTL_PKEY_SIGN, "KEYCTL_PKEY_SIGN", info, input, output)
    }

    fn pkey_op(
        &self,
        cmd: libc::c_ulong,
        op: &'static str,
        info: &str,
        input: &[u8],
        output: &mut [u8],
    ) -> Result<usize, KeyringError> {
        let info = cstring("keyctl info string", info)?;
        let len =
            |n: usize| u32::try_from(n).map_err(|_| KeyringError::TooLarge { op, requested: n });
        let params = PkeyParams {
            key_id: self.serial,
            in_len: len(input.len())?,
            out_len: len(output.len())?,
            spare: [0; 7],
        };
        // SAFETY: params is a #[repr(C)] struct keyctl_pkey_params whose lengths are those of
        // `input` (read) and `output` (written); all four live across the call.
        let ret = unsafe {
            keyctl(
                cmd,
                &params as *const PkeyParams as libc::c_ulong,
                info.as_ptr() as libc::c_ulong,
                input.as_ptr() as libc::c_ulong,
                output.as_mut_ptr() as libc::c_ulong,
            )
        };
        Ok(check(op, ret)? as usize)
    }
}

/// A keyring for one test under this process's keyring, invalidated with its keys on drop.
#[cfg(test)]
pub(crate) struct ScratchKeyring(pub(crate) Keyring);

#[cfg(test)]
impl ScratchKeyring {
    pub(crate) fn new(name: &str) -> ScratchKeyring {
        let process = Keyring::process().expect("process keyring");
        ScratchKeyring(process.create_keyring(name).expect("scratch keyring"))
    }
}

#[cfg(test)]
impl Drop for ScratchKeyring {
    fn drop(&mut self) {
        let _ = self.0.as_key().invalidate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Scratch = ScratchKeyring;

    #[test]
    fn permissions_pack_four_groups() {
        let p = Permissions::new(Perm::ALL, Perm::VIEW, Perm::NONE, Perm::READ);
        assert_eq!(p.bits(), 0x3f01_0002);
        assert_eq!(p.possessor(), Perm::ALL);
        assert_eq!(p.user(), Perm::VIEW);
        assert_eq!(p.other(), Perm::READ);
        let only = Permissions::possessor_only(Perm::VIEW | Perm::SEARCH);
        assert_eq!(only.bits(), 0x0900_0000);
        assert_eq!(only.to_string(), "09000000");
    }

    #[test]
    fn description_parses_and_rejects_garbage() {
        let d = Description::parse("user;0;0;3f010000;tessera:a;b").unwrap();
        assert_eq!(d.key_type, "user");
        assert_eq!(d.perm.bits(), 0x3f01_0000);
        assert_eq!(d.description, "tessera:a;b");
        assert!(Description::parse("user;x;0;0;d").is_err());
        assert!(Description::parse("user;0;0").is_err());
    }

    #[test]
    fn user_key_add_describe_read_search_invalidate() {
        let ring = Scratch::new("tessera-test-keyring-basic");
        let key = ring
            .0
            .add("user", "tessera-test:basic", b"payload")
            .unwrap();
        let d = key.describe().unwrap();
        assert_eq!(
            (d.key_type.as_str(), d.description.as_str()),
            ("user", "tessera-test:basic")
        );
        let mut buf = [0u8; 16];
        let n = key.read_into(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"payload");
        // A short buffer reports the full size.
        let mut short = [0u8; 3];
        assert_eq!(key.read_into(&mut short).unwrap(), 7);
        assert_eq!(ring.0.search("user", "tessera-test:basic").unwrap(), key);
        key.invalidate().unwrap();
        let err = key.describe().unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENOKEY), "{err}");
        assert!(err.to_string().contains("no such key"), "{err}");
    }

    #[test]
    fn logon_keys_cannot_be_read_back() {
        let ring = Scratch::new("tessera-test-keyring-logon");
        // logon descriptions need a "service:" prefix.
        let key = ring
            .0
            .add("logon", "tessera:logon-test", b"secret")
            .unwrap();
        let mut buf = [0u8; 16];
        let err = key.read_into(&mut buf).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EOPNOTSUPP), "{err}");
        assert_eq!(buf, [0u8; 16]);
    }

    #[test]
    fn revoked_key_refuses_use() {
        let ring = Scratch::new("tessera-test-keyring-revoke");
        let key = ring.0.add("user", "tessera-test:revoke", b"x").unwrap();
        key.revoke().unwrap();
        let err = key.read_into(&mut [0u8; 4]).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EKEYREVOKED), "{err}");
    }

    #[test]
    fn pkey_ops_on_a_user_key_are_not_supported() {
        let ring = Scratch::new("tessera-test-keyring-pkey");
        let key = ring.0.add("user", "tessera-test:pkey", b"x").unwrap();
        let err = key.pkey_query("enc=raw").unwrap_err();
        assert_eq!(err.errno(), Some(libc::EOPNOTSUPP), "{err}");
    }

    #[test]
    fn nul_in_description_is_refused_before_the_kernel() {
        let ring = Keyring::process().unwrap();
        let err = ring.add("user", "a\0b", b"x").unwrap_err();
        assert!(matches!(err, KeyringError::Nul { .. }), "{err}");
    }
}
