//! What is on a disk already, read from its first bytes: the signatures the storage service
//! must not format over (filesystems, partition tables, LVM PVs, swap), and Tessera's own.
//! Pure functions over byte buffers, so that every signature is tested on the host.

/// How many bytes of the disk [`probe`] reads (the Btrfs superblock is at 64 KiB; iso9660's
/// volume descriptor at 32 KiB).
pub const PROBE_LEN: usize = 1024 * 1024;

/// The Btrfs label of a Tessera data disk.
pub const BTRFS_LABEL: &str = "tessera-data";
/// The LVM volume group of a Tessera data disk.
pub const LVM_VG: &str = "tessera";

/// What the first MiB of a disk says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// All zeroes, or nothing anyone recognises: safe to format.
    Blank,
    /// Btrfs labelled [`BTRFS_LABEL`].
    TesseraBtrfs,
    /// An LVM2 physical volume (the VG name is checked by lvm2 when it is activated).
    LvmPv,
    /// Something else: never formatted without `storage.wipe = true`.
    Foreign(&'static str),
}

fn at(buf: &[u8], offset: usize, magic: &[u8]) -> bool {
    buf.get(offset..offset + magic.len()) == Some(magic)
}

/// Reads the signatures in `buf` (the first [`PROBE_LEN`] bytes of the disk, or fewer).
pub fn probe(buf: &[u8]) -> Content {
    // Btrfs: magic "_BHRfS_M" at 64 KiB + 0x40, label at 64 KiB + 0x12b.
    const BTRFS_SB: usize = 0x10000;
    if at(buf, BTRFS_SB + 0x40, b"_BHRfS_M") {
        let label = buf
            .get(BTRFS_SB + 0x12b..BTRFS_SB + 0x12b + 256)
            .map(|l| &l[..l.iter().position(|b| *b == 0).unwrap_or(l.len())]);
        return if label == Some(BTRFS_LABEL.as_bytes()) {
            Content::TesseraBtrfs
        } else {
            Content::Foreign("a btrfs filesystem of another system (its label is not tessera-data)")
        };
    }
    // LVM2: "LABELONE" in one of the first four 512-byte sectors, type "LVM2 001" at +24.
    for sector in 0..4 {
        let o = sector * 512;
        if at(buf, o, b"LABELONE") && at(buf, o + 24, b"LVM2 001") {
            return Content::LvmPv;
        }
    }
    // ext2/3/4: magic 0xEF53 at 1024 + 0x38.
    if at(buf, 1024 + 0x38, &[0x53, 0xef]) {
        return Content::Foreign("an ext2/ext3/ext4 filesystem");
    }
    if at(buf, 0, b"XFSB") {
        return Content::Foreign("an XFS filesystem");
    }
    if at(buf, 4096 - 10, b"SWAPSPACE2") || at(buf, 4096 - 10, b"SWAP-SPACE") {
        return Content::Foreign("a swap area");
    }
    if at(buf, 0x8001, b"CD001") {
        return Content::Foreign("an ISO 9660 filesystem");
    }
    // GPT: "EFI PART" in LBA 1 (512-byte sectors; 4 KiB sectors put it at 4096).
    if at(buf, 512, b"EFI PART") || at(buf, 4096, b"EFI PART") {
        return Content::Foreign("a GPT partition table");
    }
    if at(buf, 510, &[0x55, 0xaa]) {
        // A FAT boot sector also ends in 55 AA; its file-system type string tells them apart.
        if at(buf, 0x36, b"FAT") || at(buf, 0x52, b"FAT32") {
            return Content::Foreign("a FAT filesystem");
        }
        if at(buf, 3, b"NTFS    ") {
            return Content::Foreign("an NTFS filesystem");
        }
        return Content::Foreign("an MBR partition table");
    }
    if at(buf, 0, b"LUKS\xba\xbe") {
        return Content::Foreign("a LUKS encrypted volume");
    }
    Content::Blank
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk() -> Vec<u8> {
        vec![0u8; PROBE_LEN]
    }

    fn put(buf: &mut [u8], offset: usize, bytes: &[u8]) {
        buf[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    #[test]
    fn zeroes_and_short_reads_are_blank() {
        assert_eq!(probe(&disk()), Content::Blank);
        assert_eq!(probe(&[]), Content::Blank);
        assert_eq!(probe(&[0xff; 100]), Content::Blank);
    }

    #[test]
    fn btrfs_is_ours_only_with_our_label() {
        let mut b = disk();
        put(&mut b, 0x10040, b"_BHRfS_M");
        put(&mut b, 0x1012b, b"tessera-data");
        assert_eq!(probe(&b), Content::TesseraBtrfs);
        put(&mut b, 0x1012b, b"tessera-dat2");
        assert!(matches!(probe(&b), Content::Foreign(s) if s.contains("btrfs")));
    }

    #[test]
    fn an_lvm_label_is_a_pv() {
        let mut b = disk();
        put(&mut b, 512, b"LABELONE");
        put(&mut b, 512 + 24, b"LVM2 001");
        assert_eq!(probe(&b), Content::LvmPv);
    }

    #[test]
    fn foreign_signatures_are_named() {
        let cases: [(usize, &[u8], &str); 8] = [
            (0x438, &[0x53, 0xef], "ext2/ext3/ext4"),
            (0, b"XFSB", "XFS"),
            (4086, b"SWAPSPACE2", "swap"),
            (0x8001, b"CD001", "ISO 9660"),
            (512, b"EFI PART", "GPT"),
            (510, &[0x55, 0xaa], "MBR"),
            (0, b"LUKS\xba\xbe", "LUKS"),
            (4096, b"EFI PART", "GPT"),
        ];
        for (offset, magic, name) in cases {
            let mut b = disk();
            put(&mut b, offset, magic);
            match probe(&b) {
                Content::Foreign(s) => assert!(s.contains(name), "{s} for {name}"),
                other => panic!("{other:?} for {name}"),
            }
        }
        let mut fat = disk();
        put(&mut fat, 510, &[0x55, 0xaa]);
        put(&mut fat, 0x36, b"FAT16   ");
        assert_eq!(probe(&fat), Content::Foreign("a FAT filesystem"));
    }
}
