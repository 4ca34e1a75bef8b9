//! The bootable disk: a GPT disk (1 GiB virtual) whose only partition is an EFI system
//! partition (FAT32) holding the UKI at `\EFI\BOOT\BOOTX64.EFI`; the rest of the disk is left
//! unpartitioned for the node's data partition. Built in memory as a sparse disk with the `gpt`
//! and `fatfs` crates (no root, no loop devices, no mtools) and written out as qcow2.
//!
//! Everything is derived from the UKI bytes (disk and partition GUIDs, FAT volume id) and
//! FAT timestamps are fixed, so the same UKI gives the same disk.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom, Write};

use sha2::{Digest, Sha256};

/// Virtual size of the disk image.
pub const DISK_SIZE: u64 = 1 << 30;
/// Logical block size.
pub const SECTOR: u64 = 512;
/// The ESP starts at 1 MiB, the usual alignment.
pub const ESP_FIRST_LBA: u64 = 2048;
/// Smallest ESP; it grows when the UKI needs more room.
pub const ESP_MIN_SIZE: u64 = 64 << 20;
/// Granularity of the sparse disk (and the qcow2 cluster size).
pub const CHUNK: usize = 64 << 10;
/// Where the UKI lives on the ESP: the removable-media default boot path of x86-64 UEFI.
pub const UKI_ESP_PATH: &str = "EFI/BOOT/BOOTX64.EFI";

/// A fixed-size disk held in memory, storing only the chunks that were written.
#[derive(Clone, PartialEq, Eq)]
pub struct SparseDisk {
    len: u64,
    pos: u64,
    chunks: BTreeMap<u64, Box<[u8]>>,
}

impl std::fmt::Debug for SparseDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SparseDisk {{ len: {}, chunks: {} }}",
            self.len,
            self.chunks.len()
        )
    }
}

impl SparseDisk {
    pub fn new(len: u64) -> SparseDisk {
        SparseDisk {
            len,
            pos: 0,
            chunks: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Chunks (index, CHUNK bytes) that hold at least one non-zero byte, in order.
    pub fn data_chunks(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.chunks
            .iter()
            .filter(|(_, c)| c.iter().any(|b| *b != 0))
            .map(|(i, c)| (*i, &c[..]))
    }

    /// Stores a whole chunk (used when reading an image back).
    pub fn put_chunk(&mut self, index: u64, data: &[u8]) {
        let mut c = vec![0u8; CHUNK].into_boxed_slice();
        let n = data.len().min(CHUNK);
        c[..n].copy_from_slice(&data[..n]);
        self.chunks.insert(index, c);
    }
}

impl Read for SparseDisk {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(avail) as usize;
        let mut done = 0;
        while done < n {
            let p = self.pos + done as u64;
            let (idx, off) = (p / CHUNK as u64, (p % CHUNK as u64) as usize);
            let take = (CHUNK - off).min(n - done);
            match self.chunks.get(&idx) {
                Some(c) => buf[done..done + take].copy_from_slice(&c[off..off + take]),
                None => buf[done..done + take].fill(0),
            }
            done += take;
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for SparseDisk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pos + buf.len() as u64 > self.len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the disk",
            ));
        }
        let mut done = 0;
        while done < buf.len() {
            let p = self.pos + done as u64;
            let (idx, off) = (p / CHUNK as u64, (p % CHUNK as u64) as usize);
            let take = (CHUNK - off).min(buf.len() - done);
            let c = self
                .chunks
                .entry(idx)
                .or_insert_with(|| vec![0u8; CHUNK].into_boxed_slice());
            c[off..off + take].copy_from_slice(&buf[done..done + take]);
            done += take;
        }
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn seek_to(pos: u64, len: u64, from: SeekFrom) -> io::Result<u64> {
    let new = match from {
        SeekFrom::Start(o) => o as i128,
        SeekFrom::End(o) => len as i128 + o as i128,
        SeekFrom::Current(o) => pos as i128 + o as i128,
    };
    if new < 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "seek before the start",
        ));
    }
    Ok(new as u64)
}

impl Seek for SparseDisk {
    fn seek(&mut self, from: SeekFrom) -> io::Result<u64> {
        self.pos = seek_to(self.pos, self.len, from)?;
        Ok(self.pos)
    }
}

/// A window (a partition) of a larger device.
#[derive(Debug)]
pub struct Slice<'a, D> {
    inner: &'a mut D,
    start: u64,
    len: u64,
    pos: u64,
}

impl<'a, D: Seek> Slice<'a, D> {
    pub fn new(inner: &'a mut D, start: u64, len: u64) -> Slice<'a, D> {
        Slice {
            inner,
            start,
            len,
            pos: 0,
        }
    }
}

impl<D: Read + Seek> Read for Slice<'_, D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let n = self.inner.read(&mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<D: Write + Seek> Write for Slice<'_, D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pos + buf.len() as u64 > self.len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<D: Seek> Seek for Slice<'_, D> {
    fn seek(&mut self, from: SeekFrom) -> io::Result<u64> {
        self.pos = seek_to(self.pos, self.len, from)?;
        Ok(self.pos)
    }
}

/// Fixed FAT timestamps (1980-01-01, the FAT epoch) so the ESP is reproducible.
#[derive(Debug)]
struct EpochTime;

impl fatfs::TimeProvider for EpochTime {
    fn get_current_date(&self) -> fatfs::Date {
        fatfs::Date {
            year: 1980,
            month: 1,
            day: 1,
        }
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        fatfs::DateTime {
            date: self.get_current_date(),
            time: fatfs::Time {
                hour: 0,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
}

static EPOCH_TIME: EpochTime = EpochTime;

/// Where the ESP is on the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub disk_size: u64,
    pub esp_first_lba: u64,
    pub esp_sectors: u64,
}

impl Layout {
    pub fn esp_offset(&self) -> u64 {
        self.esp_first_lba * SECTOR
    }
    pub fn esp_size(&self) -> u64 {
        self.esp_sectors * SECTOR
    }
}

/// The ESP is 64 MiB, or larger (in whole MiB) if the UKI needs it: twice the UKI leaves
/// room for FAT overhead and an A/B update later.
pub fn layout_for(uki_len: u64) -> Layout {
    let want = (uki_len * 2 + (4 << 20)).max(ESP_MIN_SIZE);
    let mib = 1u64 << 20;
    Layout {
        disk_size: DISK_SIZE,
        esp_first_lba: ESP_FIRST_LBA,
        esp_sectors: want.div_ceil(mib) * mib / SECTOR,
    }
}

fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn uuid_from(seed: &[u8; 32], label: &[u8]) -> uuid::Uuid {
    let d = digest(&[seed, label]);
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    uuid::Builder::from_random_bytes(b).into_uuid()
}

fn disk_err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// Builds the disk holding `uki`.
pub fn build(uki: &[u8]) -> Result<(SparseDisk, Layout), String> {
    let layout = layout_for(uki.len() as u64);
    let last_lba = layout.esp_first_lba + layout.esp_sectors - 1;
    if (last_lba + 34) * SECTOR > layout.disk_size {
        return Err(format!(
            "the UKI ({} bytes) does not fit on a {} byte disk",
            uki.len(),
            layout.disk_size
        ));
    }
    let seed = digest(&[uki]);
    let mut disk = SparseDisk::new(layout.disk_size);

    let sectors = layout.disk_size / SECTOR;
    let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(sectors - 1).unwrap_or(u32::MAX));
    mbr.overwrite_lba0(&mut disk)
        .map_err(|e| disk_err("protective MBR", e))?;
    let mut gdisk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(&mut disk, Some(uuid_from(&seed, b"disk")))
        .map_err(|e| disk_err("GPT header", e))?;
    let esp = gpt::partition::Partition {
        part_type_guid: gpt::partition_types::EFI,
        part_guid: uuid_from(&seed, b"esp"),
        first_lba: layout.esp_first_lba,
        last_lba,
        flags: 0,
        name: "EFI System Partition".into(),
    };
    gdisk
        .update_partitions(BTreeMap::from([(1, esp)]))
        .map_err(|e| disk_err("GPT partition", e))?;
    gdisk.write().map_err(|e| disk_err("GPT write", e))?;

    let volume_id = u32::from_le_bytes([seed[0], seed[1], seed[2], seed[3]]);
    {
        let mut part = Slice::new(&mut disk, layout.esp_offset(), layout.esp_size());
        fatfs::format_volume(
            &mut part,
            fatfs::FormatVolumeOptions::new()
                // FAT32, as UEFI asks of an ESP, needs at least 65525 clusters: 512-byte
                // clusters give 131072 on 64 MiB.
                .fat_type(fatfs::FatType::Fat32)
                .bytes_per_cluster(512)
                .volume_id(volume_id)
                .volume_label(*b"TESSERA-ESP"),
        )
        .map_err(|e| disk_err("FAT format", e))?;
    }
    let part = Slice::new(&mut disk, layout.esp_offset(), layout.esp_size());
    let fs = fatfs::FileSystem::new(part, fatfs::FsOptions::new().time_provider(&EPOCH_TIME))
        .map_err(|e| disk_err("FAT open", e))?;
    {
        let root = fs.root_dir();
        let boot = root
            .create_dir("EFI")
            .and_then(|efi| efi.create_dir("BOOT"))
            .map_err(|e| disk_err("FAT mkdir EFI/BOOT", e))?;
        let mut f = boot
            .create_file("BOOTX64.EFI")
            .map_err(|e| disk_err("FAT create BOOTX64.EFI", e))?;
        f.truncate().map_err(|e| disk_err("FAT truncate", e))?;
        f.write_all(uki)
            .map_err(|e| disk_err("FAT write BOOTX64.EFI", e))?;
        f.flush().map_err(|e| disk_err("FAT flush", e))?;
    }
    fs.unmount().map_err(|e| disk_err("FAT unmount", e))?;
    let mut part = Slice::new(&mut disk, layout.esp_offset(), layout.esp_size());
    fix_dot_entries(&mut part).map_err(|e| disk_err("FAT directory fix-up", e))?;
    Ok((disk, layout))
}

const DIR_ENTRY: usize = 32;
const ATTR_LFN: u8 = 0x0f;
const ATTR_DIR: u8 = 0x10;

/// fatfs 0.3.6 writes long-name entries before the `.` and `..` entries of every directory
/// it creates, and points `..` of a first-level directory at the root cluster instead of 0
/// (fixed upstream after 0.3.6, rafalh/rust-fatfs#99 and #100). Firmware copes, `fsck.fat`
/// does not: rewrite each directory so that `.` and `..` are its first two plain entries.
pub fn fix_dot_entries<D: Read + Write + Seek>(vol: &mut D) -> io::Result<()> {
    let mut boot = [0u8; 512];
    vol.seek(SeekFrom::Start(0))?;
    vol.read_exact(&mut boot)?;
    let u16_at = |o: usize| u16::from_le_bytes([boot[o], boot[o + 1]]) as u64;
    let u32_at =
        |o: usize| u32::from_le_bytes([boot[o], boot[o + 1], boot[o + 2], boot[o + 3]]) as u64;
    let (bps, spc, reserved, fats) = (u16_at(11), boot[13] as u64, u16_at(14), boot[16] as u64);
    let (fat_size, root) = (u32_at(36), u32_at(44));
    if &boot[82..90] != b"FAT32   " || bps == 0 || spc == 0 || fat_size == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a FAT32 boot sector",
        ));
    }
    let cluster_bytes = (bps * spc) as usize;
    let offset = |c: u64| (reserved + fats * fat_size + (c - 2) * spc) * bps;
    // (directory cluster, cluster its `..` must name: 0 for the root)
    let mut todo: Vec<(u64, u64)> = Vec::new();
    let children = |buf: &[u8]| -> Vec<u64> {
        buf.chunks(DIR_ENTRY)
            .take_while(|e| e[0] != 0)
            .filter(|e| e[0] != 0xe5 && e[11] != ATTR_LFN && e[11] & ATTR_DIR != 0 && e[0] != b'.')
            .map(|e| {
                (u16::from_le_bytes([e[20], e[21]]) as u64) << 16
                    | u16::from_le_bytes([e[26], e[27]]) as u64
            })
            .collect()
    };
    let mut buf = vec![0u8; cluster_bytes];
    vol.seek(SeekFrom::Start(offset(root)))?;
    vol.read_exact(&mut buf)?;
    todo.extend(children(&buf).into_iter().map(|c| (c, 0)));
    while let Some((dir, parent)) = todo.pop() {
        vol.seek(SeekFrom::Start(offset(dir)))?;
        vol.read_exact(&mut buf)?;
        let mut kept: Vec<&[u8]> = Vec::new();
        let mut pending: Vec<&[u8]> = Vec::new();
        let mut dotdot_at = None;
        for e in buf.chunks(DIR_ENTRY).take_while(|e| e[0] != 0) {
            if e[11] == ATTR_LFN && e[0] != 0xe5 {
                pending.push(e);
                continue;
            }
            let name = &e[..11];
            if name == b".          " || name == b"..         " {
                pending.clear(); // the bogus long names of `.` and `..`
                if name[1] == b'.' {
                    dotdot_at = Some(kept.len());
                }
            } else {
                kept.append(&mut pending);
            }
            kept.push(e);
        }
        let mut out: Vec<u8> = kept.concat();
        if let Some(i) = dotdot_at {
            let o = i * DIR_ENTRY;
            out[o + 20..o + 22].copy_from_slice(&((parent >> 16) as u16).to_le_bytes());
            out[o + 26..o + 28].copy_from_slice(&(parent as u16).to_le_bytes());
        }
        todo.extend(children(&out).into_iter().map(|c| (c, dir)));
        out.resize(cluster_bytes, 0);
        vol.seek(SeekFrom::Start(offset(dir)))?;
        vol.write_all(&out)?;
    }
    vol.flush()
}

/// Reads a file back from the ESP of a disk built here (tests and `tessera` tools).
pub fn read_esp_file(disk: &mut SparseDisk, path: &str) -> Result<Vec<u8>, String> {
    let gdisk = gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .open_from_device(&mut *disk)
        .map_err(|e| disk_err("GPT read", e))?;
    let esp = gdisk
        .partitions()
        .values()
        .find(|p| p.part_type_guid == gpt::partition_types::EFI)
        .cloned()
        .ok_or("no EFI system partition")?;
    drop(gdisk);
    let (start, len) = (
        esp.first_lba * SECTOR,
        (esp.last_lba - esp.first_lba + 1) * SECTOR,
    );
    let fs = fatfs::FileSystem::new(Slice::new(disk, start, len), fatfs::FsOptions::new())
        .map_err(|e| disk_err("FAT open", e))?;
    let mut f = fs
        .root_dir()
        .open_file(path)
        .map_err(|e| disk_err(path, e))?;
    let mut out = Vec::new();
    f.read_to_end(&mut out).map_err(|e| disk_err(path, e))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_disk_reads_zeros_and_written_bytes() {
        let mut d = SparseDisk::new(1 << 20);
        d.seek(SeekFrom::Start(CHUNK as u64 - 2)).unwrap();
        d.write_all(b"abcd").unwrap();
        let mut buf = [9u8; 8];
        d.seek(SeekFrom::Start(CHUNK as u64 - 4)).unwrap();
        d.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"\0\0abcd\0\0");
        assert_eq!(d.data_chunks().count(), 2);
        d.seek(SeekFrom::End(-1)).unwrap();
        assert!(d.write_all(b"xy").is_err());
    }

    #[test]
    fn gpt_has_one_esp_and_fat_holds_the_uki() {
        let uki: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let (mut disk, layout) = build(&uki).unwrap();
        assert_eq!(disk.len(), DISK_SIZE);
        assert_eq!(layout.esp_offset(), 1 << 20);
        assert_eq!(layout.esp_size(), ESP_MIN_SIZE);
        // Protective MBR signature and GPT header signature.
        let mut lba = vec![0u8; 1024];
        disk.seek(SeekFrom::Start(0)).unwrap();
        disk.read_exact(&mut lba).unwrap();
        assert_eq!(&lba[510..512], &[0x55, 0xaa]);
        assert_eq!(lba[446 + 4], 0xee);
        assert_eq!(&lba[512..520], b"EFI PART");
        let gdisk = gpt::GptConfig::new()
            .writable(false)
            .open_from_device(&mut disk)
            .unwrap();
        let parts: Vec<_> = gdisk
            .partitions()
            .values()
            .filter(|p| p.is_used())
            .cloned()
            .collect();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].part_type_guid, gpt::partition_types::EFI);
        assert_eq!(parts[0].first_lba, ESP_FIRST_LBA);
        // The rest of the disk is free for the data partition.
        assert!(gdisk.header().last_usable * SECTOR > 1000 << 20);
        drop(gdisk);
        assert_eq!(read_esp_file(&mut disk, UKI_ESP_PATH).unwrap(), uki);
        // Mostly holes: only the written parts take memory.
        assert!(disk.data_chunks().count() * CHUNK < 8 << 20);
    }

    #[test]
    fn esp_directories_start_with_dot_entries_and_pass_fsck() {
        let (mut disk, layout) = build(b"uki").unwrap();
        let mut esp = vec![0u8; layout.esp_size() as usize];
        disk.seek(SeekFrom::Start(layout.esp_offset())).unwrap();
        disk.read_exact(&mut esp).unwrap();
        assert_eq!(&esp[82..90], b"FAT32   ");
        // Walk EFI/ and EFI/BOOT/ by hand: `.` then `..` must be the first two entries.
        let bps = u16::from_le_bytes([esp[11], esp[12]]) as usize;
        let (spc, reserved, fats) = (
            esp[13] as usize,
            u16::from_le_bytes([esp[14], esp[15]]) as usize,
            esp[16] as usize,
        );
        let fat_size = u32::from_le_bytes([esp[36], esp[37], esp[38], esp[39]]) as usize;
        let root = u32::from_le_bytes([esp[44], esp[45], esp[46], esp[47]]) as usize;
        let at = |c: usize| (reserved + fats * fat_size + (c - 2) * spc) * bps;
        let find = |dir: usize, name: &[u8; 11]| -> usize {
            let e = esp[at(dir)..at(dir) + spc * bps]
                .chunks(32)
                .find(|e| &e[..11] == name)
                .unwrap();
            u16::from_le_bytes([e[26], e[27]]) as usize
                | (u16::from_le_bytes([e[20], e[21]]) as usize) << 16
        };
        let efi = find(root, b"EFI        ");
        let boot = find(efi, b"BOOT       ");
        for (dir, parent) in [(efi, 0), (boot, efi)] {
            let d = &esp[at(dir)..];
            assert_eq!(&d[..11], b".          ");
            assert_eq!(&d[32..43], b"..         ");
            assert_eq!(
                u16::from_le_bytes([d[32 + 26], d[32 + 27]]) as usize,
                parent
            );
        }
        assert_eq!(read_esp_file(&mut disk, UKI_ESP_PATH).unwrap(), b"uki");
        // dosfstools' checker, where the host has it.
        if std::process::Command::new("fsck.fat")
            .arg("--help")
            .output()
            .is_ok()
        {
            let f = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(f.path(), &esp).unwrap();
            let out = std::process::Command::new("fsck.fat")
                .arg("-n")
                .arg(f.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }

    #[test]
    fn disk_is_reproducible_and_esp_grows_for_big_ukis() {
        let uki = vec![7u8; 100_000];
        assert_eq!(build(&uki).unwrap().0, build(&uki).unwrap().0);
        assert_eq!(layout_for(40 << 20).esp_size(), 84 << 20);
    }
}
