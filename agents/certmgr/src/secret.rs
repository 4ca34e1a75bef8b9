//! Buffers for key material and tokens: allocated once at their final size (never grown, so
//! no copy is left behind by a reallocation), locked in RAM (mlock: never swapped) and left out
//! of core dumps where the process may, and zeroized when dropped.

use std::fmt;
use zeroize::Zeroize;

pub struct SecretBytes {
    buf: Box<[u8]>,
    len: usize,
    locked: bool,
}

impl SecretBytes {
    /// A zeroed buffer with room for `capacity` bytes and length 0.
    pub fn with_capacity(capacity: usize) -> SecretBytes {
        let buf = vec![0u8; capacity.max(1)].into_boxed_slice();
        let ptr = buf.as_ptr() as *mut libc::c_void;
        // SAFETY: the range is the boxed slice this struct owns; mlock/madvise only change
        // page attributes. Failure (RLIMIT_MEMLOCK) is tolerated: the bytes are still zeroized.
        let locked = unsafe { libc::mlock(ptr, buf.len()) } == 0;
        SecretBytes {
            buf,
            len: 0,
            locked,
        }
    }

    /// A copy of `bytes` (the caller zeroizes its own copy).
    pub fn from_slice(bytes: &[u8]) -> SecretBytes {
        let mut s = SecretBytes::with_capacity(bytes.len());
        s.buf[..bytes.len()].copy_from_slice(bytes);
        s.len = bytes.len();
        s
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// The unused room after the content, to read or encode into.
    pub fn spare_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.len..]
    }

    /// Marks `n` more bytes of the spare room as content.
    pub fn advance(&mut self, n: usize) {
        self.len = (self.len + n).min(self.buf.len());
    }

    /// Appends `bytes`; false (nothing appended) when they do not fit.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        if bytes.len() > self.buf.len() - self.len {
            return false;
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        true
    }

    /// Drops the content (zeroized).
    pub fn clear(&mut self) {
        self.buf.zeroize();
        self.len = 0;
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.buf.zeroize();
        if self.locked {
            // SAFETY: the range locked in `with_capacity`, still owned by `buf`.
            unsafe { libc::munlock(self.buf.as_ptr() as *const libc::c_void, self.buf.len()) };
        }
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes, redacted>)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_stays_within_capacity_and_debug_redacts() {
        let mut s = SecretBytes::with_capacity(4);
        assert!(s.push(b"ab"));
        assert!(!s.push(b"cde"));
        assert!(s.push(b"cd"));
        assert_eq!(s.as_slice(), b"abcd");
        assert_eq!(format!("{s:?}"), "SecretBytes(<4 bytes, redacted>)");
        s.clear();
        assert!(s.is_empty());
    }
}
