//! Whether a key is exposed: can this process read the kernel key, can a process that does
//! not possess it, and is any copy of its secret bytes left in this process's writable memory.
//! Only the diagnostic ([`super::check`]) and tests use this.

use crate::keyring::Key;
use std::fmt;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use zeroize::Zeroizing;

/// What KEYCTL_READ did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The payload was returned.
    Allowed,
    /// Refused with this errno.
    Refused(i32),
}

impl fmt::Display for ReadOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadOutcome::Allowed => f.write_str("allowed"),
            ReadOutcome::Refused(errno) => write!(f, "refused:{}", errno_name(*errno)),
        }
    }
}

pub(crate) fn errno_name(errno: i32) -> String {
    match errno {
        libc::EACCES => "EACCES".into(),
        libc::EOPNOTSUPP => "EOPNOTSUPP".into(),
        libc::ENOKEY => "ENOKEY".into(),
        libc::EKEYREVOKED => "EKEYREVOKED".into(),
        libc::EKEYEXPIRED => "EKEYEXPIRED".into(),
        libc::EPERM => "EPERM".into(),
        n => format!("errno{n}"),
    }
}

/// KEYCTL_READ by this process.
pub(crate) fn read_by_self(key: Key) -> ReadOutcome {
    let mut buf = Zeroizing::new([0u8; 64]);
    match key.read_into(buf.as_mut()) {
        Ok(_) => ReadOutcome::Allowed,
        Err(e) => ReadOutcome::Refused(e.errno().unwrap_or(0)),
    }
}

/// KEYCTL_READ by a fork(2) child: same UID, same session keyring, but not the process
/// keyring (children do not inherit it), so it does not possess keys added there.
pub(crate) fn read_by_non_possessor(key: Key) -> io::Result<ReadOutcome> {
    // SAFETY: fork(2). The child only makes the keyctl(2) system call on a stack buffer and
    // leaves with _exit(2): no allocation, no locks, no destructors.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let mut buf = [0u8; 64];
        let code = match key.read_into(&mut buf) {
            Ok(_) => 0,
            Err(e) => e.errno().unwrap_or(255).clamp(1, 255),
        };
        // SAFETY: _exit(2) ends the child without running the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    loop {
        // SAFETY: waitpid(2) on our own child with a valid status pointer.
        let ret = unsafe { libc::waitpid(pid, &mut status, 0) };
        if ret == pid {
            break;
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
    if !libc::WIFEXITED(status) {
        return Err(io::Error::other(
            "the key-reading child did not exit normally",
        ));
    }
    Ok(match libc::WEXITSTATUS(status) {
        0 => ReadOutcome::Allowed,
        errno => ReadOutcome::Refused(errno),
    })
}

/// Secret byte strings to look for, kept zeroized on drop; each is searched as stored and
/// byte-reversed (big-number libraries keep little-endian limbs).
pub(crate) struct Needles {
    needles: Vec<Zeroizing<Vec<u8>>>,
    /// (secret name, byte-reversed) of each needle.
    labels: Vec<(&'static str, bool)>,
}

/// Bytes taken from the middle of each secret integer: long enough never to match by chance.
const NEEDLE_LEN: usize = 16;

impl Needles {
    pub(crate) fn new() -> Needles {
        Needles {
            needles: Vec::new(),
            labels: Vec::new(),
        }
    }

    /// Adds a window from the middle of `secret` (and its reverse), named `name`.
    pub(crate) fn add(&mut self, name: &'static str, secret: &[u8]) {
        if secret.len() < NEEDLE_LEN {
            return;
        }
        let start = (secret.len() - NEEDLE_LEN) / 2;
        let mut forward = Zeroizing::new(Vec::with_capacity(NEEDLE_LEN));
        forward.extend_from_slice(&secret[start..start + NEEDLE_LEN]);
        let mut reversed = Zeroizing::new(Vec::with_capacity(NEEDLE_LEN));
        reversed.extend(forward.iter().rev());
        self.needles.push(forward);
        self.needles.push(reversed);
        self.labels.push((name, false));
        self.labels.push((name, true));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    fn ranges(&self) -> Vec<Range<usize>> {
        let labels = self.labels.as_ptr() as usize;
        let mut r: Vec<Range<usize>> = self
            .needles
            .iter()
            .map(|n| n.as_ptr() as usize..n.as_ptr() as usize + n.capacity())
            .collect();
        r.push(
            self.needles.as_ptr() as usize
                ..self.needles.as_ptr() as usize
                    + self.needles.capacity() * std::mem::size_of::<Zeroizing<Vec<u8>>>(),
        );
        r.push(labels..labels + self.labels.capacity() * std::mem::size_of::<(&str, bool)>());
        r
    }
}

/// Where a copy of a secret was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    pub address: usize,
    /// Which secret (e.g. "d", "p", "scalar") and whether it was found byte-reversed.
    pub secret: &'static str,
    pub reversed: bool,
    /// The mapping's name from /proc/self/maps ("[heap]", "[stack]", "" for anonymous).
    pub mapping: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    pub scanned_bytes: u64,
    pub hits: Vec<Hit>,
}

/// Reads every private writable mapping of this process through /proc/self/mem and reports
/// each place a needle occurs, except the needles' own storage and the scan buffer.
pub(crate) fn scan(needles: &Needles) -> io::Result<ScanReport> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let regions: Vec<(Range<usize>, String)> = maps.lines().filter_map(parse_map_line).collect();
    let mem = std::fs::File::open("/proc/self/mem")?;
    const CHUNK: usize = 1 << 20;
    let mut chunk = Zeroizing::new(vec![0u8; CHUNK]);
    let mut excluded = needles.ranges();
    excluded.push(chunk.as_ptr() as usize..chunk.as_ptr() as usize + CHUNK);
    let mut report = ScanReport::default();
    for (range, name) in regions {
        let mut at = range.start;
        while at < range.end {
            let len = CHUNK.min(range.end - at);
            let buf = &mut chunk[..len];
            // Unreadable pages (guard pages) end this region's scan.
            let Ok(n) = mem.read_at(buf, at as u64) else {
                break;
            };
            if n == 0 {
                break;
            }
            report.scanned_bytes += n as u64;
            for (needle, &(secret, reversed)) in needles.needles.iter().zip(&needles.labels) {
                for offset in find_all(&buf[..n], needle) {
                    let address = at + offset;
                    if !excluded.iter().any(|r| r.contains(&address)) {
                        report.hits.push(Hit {
                            address,
                            secret,
                            reversed,
                            mapping: name.clone(),
                        });
                    }
                }
            }
            // Overlap chunks so a needle across a boundary is still seen.
            at += if n == len && at + n < range.end {
                n - (NEEDLE_LEN - 1)
            } else {
                n
            };
        }
    }
    Ok(report)
}

/// `start-end rw-p offset dev inode [name]` → the range and name of private writable mappings.
fn parse_map_line(line: &str) -> Option<(Range<usize>, String)> {
    let mut fields = line.split_whitespace();
    let (lo, hi) = fields.next()?.split_once('-')?;
    let perms = fields.next()?;
    if !(perms.starts_with("rw") && perms.ends_with('p')) {
        return None;
    }
    let name = fields.nth(3).unwrap_or("").to_string();
    let range = usize::from_str_radix(lo, 16).ok()?..usize::from_str_radix(hi, 16).ok()?;
    Some((range, name))
}

fn find_all<'a>(haystack: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    let first = needle[0];
    haystack
        .iter()
        .enumerate()
        .filter(move |&(_, &b)| b == first)
        .map(|(i, _)| i)
        .filter(move |&i| haystack[i..].starts_with(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_select_private_writable_mappings() {
        let heap =
            "55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]";
        assert_eq!(
            parse_map_line(heap),
            Some((0x55d0c0a00000..0x55d0c0a21000, "[heap]".into()))
        );
        let anon = "7f0000000000-7f0000001000 rw-p 00000000 00:00 0";
        assert_eq!(parse_map_line(anon).unwrap().1, "");
        assert!(
            parse_map_line("7f0000000000-7f0000001000 r-xp 00000000 08:01 42 /bin/x").is_none()
        );
        assert!(
            parse_map_line("7f0000000000-7f0000001000 rw-s 00000000 00:05 9 /dev/zero").is_none()
        );
    }

    #[test]
    fn scan_finds_a_planted_secret_and_not_a_zeroized_one() {
        let secret: Vec<u8> = (0..64u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(11))
            .collect();
        let mut needles = Needles::new();
        needles.add("test", &secret);
        // The secret itself is a copy.
        let found = scan(&needles).unwrap();
        let at = secret.as_ptr() as usize;
        assert!(
            found
                .hits
                .iter()
                .any(|h| (at..at + 64).contains(&h.address)),
            "{found:?}"
        );
        assert!(found.scanned_bytes > 0);
        // Zeroized, it is gone (other stale copies may exist in freed memory, so look only here).
        let mut secret = secret;
        zeroize::Zeroize::zeroize(&mut secret[..]);
        let found = scan(&needles).unwrap();
        assert!(
            !found
                .hits
                .iter()
                .any(|h| (at..at + 64).contains(&h.address)),
            "{found:?}"
        );
    }

    #[test]
    fn find_all_reports_every_occurrence() {
        let hay = b"abcXYZabXYZ";
        assert_eq!(find_all(hay, b"XYZ").collect::<Vec<_>>(), vec![3, 8]);
    }
}
