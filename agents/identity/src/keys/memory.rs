//! Where private-key bytes may sit in this process, and cleaning up after them: a small
//! buffer for key bytes in use, whose pages are locked in RAM (mlock(2): never written to
//! swap), left out of core dumps (MADV_DONTDUMP) and zeroized before they are freed; and
//! scrubbing the stack below the caller after a library computed with a key.

use std::io;
use zeroize::Zeroize;

pub(crate) struct LockedBuf {
    /// Page-aligned span [offset, offset + span) inside this allocation is what is locked; the
    /// Vec is never grown, so its memory never moves.
    storage: Vec<u8>,
    offset: usize,
    span: usize,
    len: usize,
}

fn page_size() -> usize {
    // SAFETY: sysconf(3) only reads a constant of the running system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page)
        .ok()
        .filter(|p| p.is_power_of_two())
        .unwrap_or(4096)
}

impl LockedBuf {
    /// A zeroed, locked buffer of `len` bytes.
    pub(crate) fn new(len: usize) -> io::Result<LockedBuf> {
        let page = page_size();
        let span = len.div_ceil(page).max(1) * page;
        let storage = vec![0u8; span + page];
        let addr = storage.as_ptr() as usize;
        let offset = addr.next_multiple_of(page) - addr;
        let start = storage.as_ptr().wrapping_add(offset) as *mut libc::c_void;
        // SAFETY: [start, start + span) lies inside `storage`, which this struct owns and
        // unlocks before freeing.
        if unsafe { libc::mlock(start, span) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let buf = LockedBuf {
            storage,
            offset,
            span,
            len,
        };
        // SAFETY: the same page-aligned range inside `storage`; madvise only changes flags.
        if unsafe { libc::madvise(start, span, libc::MADV_DONTDUMP) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(buf)
    }

    /// Shortens the buffer (the bytes past `len` stay zeroized-on-drop with the rest).
    pub(crate) fn set_len(&mut self, len: usize) {
        self.len = len.min(self.len);
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.storage[self.offset..self.offset + self.len]
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.offset..self.offset + self.len]
    }

    /// Where the locked bytes live.
    #[cfg(test)]
    pub(crate) fn address_range(&self) -> std::ops::Range<usize> {
        let start = self.storage.as_ptr() as usize + self.offset;
        start..start + self.span
    }
}

impl Drop for LockedBuf {
    fn drop(&mut self) {
        let start = self.storage.as_ptr().wrapping_add(self.offset) as *mut libc::c_void;
        // Zeroize (volatile writes the compiler cannot drop) before the pages are unlocked.
        self.storage.as_mut_slice().zeroize();
        // SAFETY: the range locked in `new`, still owned by `storage`. Errors are ignored:
        // the memory is freed right after and holds zeros only.
        unsafe {
            libc::madvise(start, self.span, libc::MADV_DODUMP);
            libc::munlock(start, self.span);
        }
    }
}

/// Bytes of stack zeroed by [`scrub_stack`]: more than key generation or one signature uses.
const SCRUB_BYTES: usize = 64 * 1024;

/// Zeroizes the stack region just below the caller's frame, where the functions it called
/// left their dead frames. Key generation (`rsa`, `p256`) leaves limbs of the primes there;
/// call this right after such a call returns.
#[inline(never)]
pub(crate) fn scrub_stack() {
    let mut area = [0u8; SCRUB_BYTES];
    area.zeroize();
    std::hint::black_box(&area);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The VmFlags of the mapping that contains `addr` (proc(5): lo = locked, dd = not dumped).
    fn vm_flags(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((lo, hi)) = range.split_once('-') {
                    if let (Ok(lo), Ok(hi)) =
                        (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                    {
                        inside = lo <= addr && addr < hi;
                        continue;
                    }
                }
            }
            if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return flags.trim().to_string();
                }
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    #[test]
    fn buffer_is_page_aligned_locked_and_left_out_of_core_dumps() {
        let mut buf = LockedBuf::new(100).expect("mlock (RLIMIT_MEMLOCK)");
        assert_eq!(buf.as_slice().len(), 100);
        buf.as_mut_slice().copy_from_slice(&[0xa5; 100]);
        let range = buf.address_range();
        assert_eq!(range.start % page_size(), 0);
        let flags = vm_flags(range.start);
        let words: Vec<&str> = flags.split_whitespace().collect();
        assert!(words.contains(&"lo") && words.contains(&"dd"), "{flags}");
    }

    #[test]
    fn buffer_starts_zeroed_and_spans_pages() {
        let buf = LockedBuf::new(5000).unwrap();
        assert!(buf.as_slice().iter().all(|&b| b == 0));
        assert_eq!(buf.as_slice().len(), 5000);
        assert_eq!(buf.address_range().len(), 2 * page_size());
    }
}
