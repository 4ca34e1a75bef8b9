//! A reproducible writer (and a reader, for tests and tools) of the `newc` cpio format the
//! kernel unpacks as initramfs: entries sorted by path, every mtime 0, uid/gid 0, inode
//! numbers assigned in order. Device nodes are just headers, so no root is needed.

/// File type bits of `st_mode`.
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFCHR: u32 = 0o020000;
const TRAILER: &str = "TRAILER!!!";
const MAGIC: &[u8; 6] = b"070701";

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

/// One archive member. `path` is relative (`bin/busybox`, no leading `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    /// Permission bits only (e.g. 0o755); the type bits come from `kind`.
    pub perm: u32,
    pub kind: Kind,
}

impl Entry {
    /// Full `st_mode` with type bits.
    pub fn mode(&self) -> u32 {
        let ty = match self.kind {
            Kind::Dir => S_IFDIR,
            Kind::File(_) => S_IFREG,
            Kind::Symlink(_) => S_IFLNK,
            Kind::CharDev { .. } => S_IFCHR,
        };
        ty | (self.perm & 0o7777)
    }

    fn data(&self) -> &[u8] {
        match &self.kind {
            Kind::File(d) => d,
            Kind::Symlink(t) => t.as_bytes(),
            _ => &[],
        }
    }
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[allow(clippy::too_many_arguments)]
fn header(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: u32,
    rmaj: u32,
    rmin: u32,
    name: &str,
) {
    out.extend_from_slice(MAGIC);
    // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
    for v in [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        size,
        0,
        0,
        rmaj,
        rmin,
        name.len() as u32 + 1,
        0,
    ] {
        out.extend_from_slice(format!("{v:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

/// Writes `entries` as a newc archive, sorted by path (so parents precede children).
/// Panics only if a single file exceeds 4 GiB, which the format cannot hold.
pub fn write(entries: &[Entry]) -> Vec<u8> {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut out = Vec::new();
    for (i, e) in sorted.iter().enumerate() {
        let data = e.data();
        let size = u32::try_from(data.len()).expect("initramfs member larger than 4 GiB");
        let nlink = if matches!(e.kind, Kind::Dir) { 2 } else { 1 };
        let (rmaj, rmin) = match e.kind {
            Kind::CharDev { major, minor } => (major, minor),
            _ => (0, 0),
        };
        header(
            &mut out,
            i as u32 + 1,
            e.mode(),
            nlink,
            size,
            rmaj,
            rmin,
            &e.path,
        );
        out.extend_from_slice(data);
        pad4(&mut out);
    }
    header(&mut out, 0, 0, 1, 0, 0, 0, TRAILER);
    out
}

/// A member read back from an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEntry {
    pub ino: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u32,
    pub rdev: (u32, u32),
    pub path: String,
    pub data: Vec<u8>,
}

/// Parses a newc archive up to its trailer; every structural error is reported with its offset.
pub fn read(archive: &[u8]) -> Result<Vec<ReadEntry>, String> {
    let mut pos = 0usize;
    let mut out = Vec::new();
    let align = |p: usize| (p + 3) & !3;
    loop {
        let h = archive
            .get(pos..pos + 110)
            .ok_or(format!("truncated header at {pos}"))?;
        if &h[..6] != MAGIC {
            return Err(format!("bad magic at {pos}"));
        }
        let at = pos;
        let field = |i: usize| -> Result<u32, String> {
            let s = std::str::from_utf8(&h[6 + i * 8..14 + i * 8])
                .map_err(|_| format!("bad header at {at}"))?;
            u32::from_str_radix(s, 16).map_err(|_| format!("bad hex `{s}` at {at}"))
        };
        let (namesize, filesize) = (field(11)? as usize, field(6)? as usize);
        let name_start = pos + 110;
        let name = archive
            .get(name_start..name_start + namesize.saturating_sub(1))
            .ok_or(format!("truncated name at {pos}"))?;
        let path =
            String::from_utf8(name.to_vec()).map_err(|_| format!("non-UTF-8 name at {pos}"))?;
        let data_start = align(name_start + namesize);
        let data = archive
            .get(data_start..data_start + filesize)
            .ok_or(format!("truncated data of {path}"))?
            .to_vec();
        pos = align(data_start + filesize);
        if path == TRAILER {
            return Ok(out);
        }
        out.push(ReadEntry {
            ino: field(0)?,
            mode: field(1)?,
            uid: field(2)?,
            gid: field(3)?,
            mtime: field(5)?,
            rdev: (field(9)?, field(10)?),
            path,
            data,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Entry> {
        vec![
            Entry {
                path: "sbin/tessera".into(),
                perm: 0o755,
                kind: Kind::File(b"ELF!!".to_vec()),
            },
            Entry {
                path: "init".into(),
                perm: 0o777,
                kind: Kind::Symlink("/sbin/tessera".into()),
            },
            Entry {
                path: "dev/console".into(),
                perm: 0o600,
                kind: Kind::CharDev { major: 5, minor: 1 },
            },
            Entry {
                path: "dev".into(),
                perm: 0o755,
                kind: Kind::Dir,
            },
            Entry {
                path: "sbin".into(),
                perm: 0o755,
                kind: Kind::Dir,
            },
        ]
    }

    #[test]
    fn archive_reads_back_sorted_with_fixed_metadata() {
        let archive = write(&sample());
        let entries = read(&archive).unwrap();
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["dev", "dev/console", "init", "sbin", "sbin/tessera"]
        );
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.ino, i as u32 + 1);
            assert_eq!((e.uid, e.gid, e.mtime), (0, 0, 0));
        }
        assert_eq!(entries[4].mode, S_IFREG | 0o755);
        assert_eq!(entries[4].data, b"ELF!!");
    }

    #[test]
    fn device_node_and_symlink_entries() {
        let entries = read(&write(&sample())).unwrap();
        let console = &entries[1];
        assert_eq!(console.mode, S_IFCHR | 0o600);
        assert_eq!(console.rdev, (5, 1));
        assert!(console.data.is_empty());
        let init = &entries[2];
        assert_eq!(init.mode, S_IFLNK | 0o777);
        assert_eq!(init.data, b"/sbin/tessera");
    }

    #[test]
    fn headers_and_data_are_padded_to_four_bytes() {
        let archive = write(&[Entry {
            path: "abc".into(),
            perm: 0o644,
            kind: Kind::File(b"12345".to_vec()),
        }]);
        // 110-byte header + "abc\0" = 114 → padded to 116; 5 data bytes → padded to 124.
        assert_eq!(&archive[110..114], b"abc\0");
        assert_eq!(&archive[114..116], &[0, 0]);
        assert_eq!(&archive[116..121], b"12345");
        assert_eq!(&archive[121..124], &[0, 0, 0]);
        assert_eq!(&archive[124..130], MAGIC);
        assert_eq!(archive.len() % 4, 0);
        assert!(std::str::from_utf8(&archive[124 + 110..124 + 120])
            .unwrap()
            .starts_with(TRAILER));
    }

    #[test]
    fn output_does_not_depend_on_input_order() {
        let mut reversed = sample();
        reversed.reverse();
        assert_eq!(write(&sample()), write(&reversed));
    }

    #[test]
    fn truncated_archive_is_an_error() {
        let archive = write(&sample());
        assert!(read(&archive[..archive.len() - 120]).is_err());
        assert!(read(b"nonsense").is_err());
    }
}
