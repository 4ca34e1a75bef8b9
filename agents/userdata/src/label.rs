//! File system labels read from the superblock, without mounting: FAT (12/16/32) and
//! ISO 9660. Enough to find a NoCloud volume; nothing here trusts the bytes it reads (every
//! offset is bounds-checked, every loop is bounded).

use std::io;

/// File system types a NoCloud volume may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FsType {
    Vfat,
    Iso9660,
}

impl FsType {
    /// The type name mount(2) wants.
    pub fn mount_type(self) -> &'static str {
        match self {
            FsType::Vfat => "vfat",
            FsType::Iso9660 => "iso9660",
        }
    }
}

/// What a device holds, as far as labels go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub fs: FsType,
    /// The label with trailing spaces removed; empty when the volume has none.
    pub label: String,
}

/// Random access to a device or an image.
pub trait ReadAt {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

/// Fills `buf` from `offset`; `Ok(false)` when the device ends first.
fn read_full<R: ReadAt + ?Sized>(dev: &R, buf: &mut [u8], offset: u64) -> io::Result<bool> {
    let mut done = 0;
    while done < buf.len() {
        match dev.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => return Ok(false),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// ISO 9660 first (a hybrid ISO also has a boot sector), then FAT.
pub fn probe<R: ReadAt + ?Sized>(dev: &R) -> io::Result<Option<Probe>> {
    if let Some(label) = iso9660_label(dev)? {
        return Ok(Some(Probe {
            fs: FsType::Iso9660,
            label,
        }));
    }
    if let Some(label) = fat_label(dev)? {
        return Ok(Some(Probe {
            fs: FsType::Vfat,
            label,
        }));
    }
    Ok(None)
}

fn trim_label(bytes: &[u8]) -> String {
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != 0)
        .map_or(0, |i| i + 1);
    bytes[..end]
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

/// The volume identifier of the primary volume descriptor, when the device is ISO 9660.
/// Volume descriptors start at sector 16 (32 KiB) and end with a terminator (type 255).
pub fn iso9660_label<R: ReadAt + ?Sized>(dev: &R) -> io::Result<Option<String>> {
    const SECTOR: u64 = 2048;
    let mut sector = [0u8; 2048];
    for i in 16..16 + 32 {
        if !read_full(dev, &mut sector, i * SECTOR)? {
            return Ok(None);
        }
        if &sector[1..6] != b"CD001" || sector[6] != 1 {
            return Ok(None);
        }
        match sector[0] {
            // Primary volume descriptor: volume identifier at 40..72 (a-/d-characters).
            1 => return Ok(Some(trim_label(&sector[40..72]))),
            255 => return Ok(None),
            _ => continue,
        }
    }
    Ok(None)
}

/// The label of a FAT volume: the volume-ID entry of the root directory (what `mlabel` and
/// Windows write), or else the label in the extended boot record (what `mkfs.vfat -n` also
/// writes). "NO NAME" means none. Same precedence as blkid.
pub fn fat_label<R: ReadAt + ?Sized>(dev: &R) -> io::Result<Option<String>> {
    let mut bs = [0u8; 512];
    if !read_full(dev, &mut bs, 0)? {
        return Ok(None);
    }
    let Some(bpb) = Bpb::parse(&bs) else {
        return Ok(None);
    };
    let boot_label = bpb
        .boot_label
        .clone()
        .filter(|l| l != "NO NAME")
        .unwrap_or_default();
    match bpb.root_dir_label(dev)? {
        Some(label) => Ok(Some(label)),
        None => Ok(Some(boot_label)),
    }
}

/// The parts of a FAT BIOS parameter block needed to find the root directory.
#[derive(Debug)]
struct Bpb {
    bytes_per_sector: u64,
    sectors_per_cluster: u64,
    reserved: u64,
    fats: u64,
    root_entries: u64,
    fat_size: u64,
    /// FAT32: first cluster of the root directory.
    root_cluster: Option<u32>,
    boot_label: Option<String>,
}

fn le16(b: &[u8], at: usize) -> u64 {
    u16::from_le_bytes([b[at], b[at + 1]]) as u64
}

fn le32(b: &[u8], at: usize) -> u64 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as u64
}

impl Bpb {
    fn parse(bs: &[u8; 512]) -> Option<Bpb> {
        // Jump instruction, then sane geometry; then the signature or a FAT type string.
        if !(bs[0] == 0xEB && bs[2] == 0x90 || bs[0] == 0xE9) {
            return None;
        }
        let bytes_per_sector = le16(bs, 11);
        let sectors_per_cluster = bs[13] as u64;
        let reserved = le16(bs, 14);
        let fats = bs[16] as u64;
        let root_entries = le16(bs, 17);
        let total16 = le16(bs, 19);
        let media = bs[21];
        let fat16_size = le16(bs, 22);
        let total32 = le32(bs, 32);
        let geometry_ok = matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096)
            && sectors_per_cluster.is_power_of_two()
            && sectors_per_cluster <= 128
            && reserved >= 1
            && (1..=4).contains(&fats)
            && (media == 0xF0 || media >= 0xF8)
            && (total16 != 0 || total32 != 0);
        if !geometry_ok {
            return None;
        }
        let fat32 = fat16_size == 0;
        let (fat_size, root_cluster, ext) = if fat32 {
            (le32(bs, 36), Some(le32(bs, 44) as u32), 64)
        } else {
            (fat16_size, None, 36)
        };
        if fat_size == 0 || (fat32 && root_entries != 0) || (!fat32 && root_entries == 0) {
            return None;
        }
        let signed = bs[510] == 0x55 && bs[511] == 0xAA;
        let type_string = &bs[ext + 18..ext + 26];
        if !signed && !type_string.starts_with(b"FAT") {
            return None;
        }
        // Extended boot record: signature 0x29 (0x28 has no label), label at +7, 11 bytes.
        let boot_label = (bs[ext + 2] == 0x29).then(|| trim_label(&bs[ext + 7..ext + 18]));
        Some(Bpb {
            bytes_per_sector,
            sectors_per_cluster,
            reserved,
            fats,
            root_entries,
            fat_size,
            root_cluster,
            boot_label,
        })
    }

    fn first_data_sector(&self) -> u64 {
        let root_sectors = (self.root_entries * 32).div_ceil(self.bytes_per_sector);
        self.reserved + self.fats * self.fat_size + root_sectors
    }

    /// The root directory's volume-ID entry, if any.
    fn root_dir_label<R: ReadAt + ?Sized>(&self, dev: &R) -> io::Result<Option<String>> {
        let bps = self.bytes_per_sector;
        match self.root_cluster {
            None => {
                let start = (self.reserved + self.fats * self.fat_size) * bps;
                let len = (self.root_entries * 32).min(64 * 1024) as usize;
                let mut dir = vec![0u8; len];
                if !read_full(dev, &mut dir, start)? {
                    return Ok(None);
                }
                Ok(scan_dir(&dir).unwrap_or(None))
            }
            Some(first) => {
                // Follow the root directory's cluster chain, at most 64 clusters.
                let cluster_bytes = self.sectors_per_cluster * bps;
                let mut cluster = first;
                let mut dir = vec![0u8; cluster_bytes as usize];
                for _ in 0..64 {
                    if !(2..0x0FFF_FFF8).contains(&cluster) {
                        break;
                    }
                    let sector =
                        self.first_data_sector() + (cluster as u64 - 2) * self.sectors_per_cluster;
                    if !read_full(dev, &mut dir, sector * bps)? {
                        return Ok(None);
                    }
                    if let Some(found) = scan_dir(&dir) {
                        return Ok(found);
                    }
                    let mut entry = [0u8; 4];
                    if !read_full(dev, &mut entry, self.reserved * bps + cluster as u64 * 4)? {
                        return Ok(None);
                    }
                    cluster = u32::from_le_bytes(entry) & 0x0FFF_FFFF;
                }
                Ok(None)
            }
        }
    }
}

/// Scans 32-byte directory entries: `Some(label)` for a volume-ID entry, `Some(None)` at the
/// end-of-directory mark, `None` when the block ends without either.
fn scan_dir(dir: &[u8]) -> Option<Option<String>> {
    for entry in dir.chunks_exact(32) {
        match entry[0] {
            0x00 => return Some(None),
            0xE5 => continue,
            _ => {}
        }
        let attr = entry[11];
        if attr == 0x0F {
            continue; // long file name piece
        }
        if attr & 0x08 != 0 && attr & 0x10 == 0 {
            let mut name = [0u8; 11];
            name.copy_from_slice(&entry[..11]);
            if name[0] == 0x05 {
                name[0] = 0xE5;
            }
            return Some(Some(trim_label(&name)));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_in_zeros_or_short_input() {
        let zeros = vec![0u8; 128 * 1024];
        assert_eq!(probe(zeros.as_slice()).unwrap(), None);
        assert_eq!(probe(&[0xEBu8, 0x3C, 0x90][..]).unwrap(), None);
        assert_eq!(probe(&[][..]).unwrap(), None);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..300 {
            let mut img: Vec<u8> = (0..70_000).map(|_| next() as u8).collect();
            // Make some of them look like FAT or ISO 9660 to get past the first checks.
            match next() % 3 {
                0 => {
                    img[0] = 0xEB;
                    img[2] = 0x90;
                    img[11..13].copy_from_slice(&512u16.to_le_bytes());
                    img[13] = 1 << (next() % 8);
                    img[16] = 2;
                    img[21] = 0xF8;
                    img[510] = 0x55;
                    img[511] = 0xAA;
                }
                1 => {
                    img[32768 + 1..32768 + 6].copy_from_slice(b"CD001");
                    img[32768 + 6] = 1;
                }
                _ => {}
            }
            let _ = probe(img.as_slice());
        }
    }
}
