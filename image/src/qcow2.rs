//! A minimal qcow2 (version 3) writer for a sparse disk, and a reader to check it.
//! Only clusters holding data are stored, so a 1 GiB disk with a 64 MiB ESP stays small.
//! Written here rather than with `qemu-img convert`, which is not part of a plain QEMU install
//! (qemu-utils) and would be one more host tool to have.
//!
//! File layout, in clusters of 64 KiB: header, refcount table, refcount blocks, L1 table,
//! L2 tables, data clusters in guest order. Every cluster has refcount 1 and every L1/L2 entry
//! carries the COPIED flag, which is what `qemu-img check` expects of an image without
//! snapshots.

use std::io::{self, Write};

use crate::disk::{SparseDisk, CHUNK};

const MAGIC: &[u8; 4] = b"QFI\xfb";
const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// 64-bit entries per L1/L2 cluster and per refcount-table cluster.
const ENTRIES: u64 = CLUSTER / 8;
/// 16-bit refcounts per refcount block (refcount_order 4).
const REFCOUNTS: u64 = CLUSTER / 2;
const COPIED: u64 = 1 << 63;
const HEADER_LEN: u32 = 104;

/// Writes `disk` as a qcow2 image to `out`; returns the number of bytes written.
pub fn write(disk: &SparseDisk, out: &mut impl Write) -> io::Result<u64> {
    assert_eq!(
        CHUNK as u64, CLUSTER,
        "the sparse disk chunk is the qcow2 cluster"
    );
    let data: Vec<(u64, &[u8])> = disk.data_chunks().collect();
    let l1_entries = disk.len().div_ceil(CLUSTER * ENTRIES);
    let l1_clusters = (l1_entries * 8).div_ceil(CLUSTER).max(1);
    let mut l2_indexes: Vec<u64> = data.iter().map(|(g, _)| g / ENTRIES).collect();
    l2_indexes.dedup();
    let fixed = 1 + l1_clusters + l2_indexes.len() as u64 + data.len() as u64;
    // Refcount blocks cover themselves too: grow until the count is stable.
    let (mut rt_clusters, mut rb_clusters) = (1u64, 1u64);
    loop {
        let total = fixed + rt_clusters + rb_clusters;
        let rb = total.div_ceil(REFCOUNTS);
        let rt = (rb * 8).div_ceil(CLUSTER);
        if rb == rb_clusters && rt == rt_clusters {
            break;
        }
        (rb_clusters, rt_clusters) = (rb, rt);
    }
    let total = fixed + rt_clusters + rb_clusters;
    let rt_at = 1;
    let rb_at = rt_at + rt_clusters;
    let l1_at = rb_at + rb_clusters;
    let l2_at = l1_at + l1_clusters;
    let data_at = l2_at + l2_indexes.len() as u64;

    let mut header = vec![0u8; CLUSTER as usize];
    let mut put = |off: usize, bytes: &[u8]| header[off..off + bytes.len()].copy_from_slice(bytes);
    put(0, MAGIC);
    put(4, &3u32.to_be_bytes());
    put(20, &CLUSTER_BITS.to_be_bytes());
    put(24, &disk.len().to_be_bytes());
    put(36, &(l1_entries as u32).to_be_bytes());
    put(40, &(l1_at * CLUSTER).to_be_bytes());
    put(48, &(rt_at * CLUSTER).to_be_bytes());
    put(56, &(rt_clusters as u32).to_be_bytes());
    put(96, &4u32.to_be_bytes()); // refcount_order: 16-bit refcounts
    put(100, &HEADER_LEN.to_be_bytes());
    // Bytes 104..112 stay zero: the end-of-header-extensions marker.
    out.write_all(&header)?;

    let mut table = vec![0u8; (rt_clusters * CLUSTER) as usize];
    for i in 0..rb_clusters {
        let o = (i * 8) as usize;
        table[o..o + 8].copy_from_slice(&((rb_at + i) * CLUSTER).to_be_bytes());
    }
    out.write_all(&table)?;

    let mut blocks = vec![0u8; (rb_clusters * CLUSTER) as usize];
    for c in 0..total {
        blocks[(c * 2) as usize..(c * 2 + 2) as usize].copy_from_slice(&1u16.to_be_bytes());
    }
    out.write_all(&blocks)?;

    let mut l1 = vec![0u8; (l1_clusters * CLUSTER) as usize];
    for (n, idx) in l2_indexes.iter().enumerate() {
        let o = (idx * 8) as usize;
        l1[o..o + 8].copy_from_slice(&(((l2_at + n as u64) * CLUSTER) | COPIED).to_be_bytes());
    }
    out.write_all(&l1)?;

    for idx in &l2_indexes {
        let mut l2 = vec![0u8; CLUSTER as usize];
        for (n, (g, _)) in data
            .iter()
            .enumerate()
            .filter(|(_, (g, _))| g / ENTRIES == *idx)
        {
            let o = ((g % ENTRIES) * 8) as usize;
            l2[o..o + 8]
                .copy_from_slice(&(((data_at + n as u64) * CLUSTER) | COPIED).to_be_bytes());
        }
        out.write_all(&l2)?;
    }
    for (_, chunk) in &data {
        out.write_all(chunk)?;
    }
    Ok(total * CLUSTER)
}

fn be64(b: &[u8], o: usize) -> Result<u64, String> {
    b.get(o..o + 8)
        .map(|s| u64::from_be_bytes(s.try_into().unwrap_or([0; 8])))
        .ok_or_else(|| format!("truncated at {o}"))
}

fn be32(b: &[u8], o: usize) -> Result<u32, String> {
    b.get(o..o + 4)
        .map(|s| u32::from_be_bytes(s.try_into().unwrap_or([0; 4])))
        .ok_or_else(|| format!("truncated at {o}"))
}

/// Reads a qcow2 image (as written by [`write`]: 64 KiB clusters, no compression, no backing
/// file) back into a sparse disk.
pub fn read(image: &[u8]) -> Result<SparseDisk, String> {
    if image.get(..4) != Some(MAGIC) {
        return Err("not a qcow2 image".into());
    }
    if be32(image, 20)? != CLUSTER_BITS {
        return Err("only 64 KiB clusters are supported".into());
    }
    let size = be64(image, 24)?;
    let l1_entries = be32(image, 36)? as u64;
    let l1_at = be64(image, 40)? as usize;
    let mut disk = SparseDisk::new(size);
    let offset_mask = 0x00ff_ffff_ffff_fe00u64;
    for i in 0..l1_entries {
        let l2 = (be64(image, l1_at + (i * 8) as usize)? & offset_mask) as usize;
        if l2 == 0 {
            continue;
        }
        for j in 0..ENTRIES {
            let entry = be64(image, l2 + (j * 8) as usize)?;
            if entry & (1 << 62) != 0 {
                return Err("compressed clusters are not supported".into());
            }
            let at = (entry & offset_mask) as usize;
            if at == 0 {
                continue;
            }
            let chunk = image
                .get(at..at + CLUSTER as usize)
                .ok_or("data cluster past the end")?;
            disk.put_chunk(i * ENTRIES + j, chunk);
        }
    }
    Ok(disk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom};

    #[test]
    fn qcow2_round_trips_and_stores_only_data() {
        let mut d = SparseDisk::new(1 << 30);
        d.write_all(b"first").unwrap();
        d.seek(SeekFrom::Start(600 << 20)).unwrap(); // in the second L2 table's range
        d.write_all(b"second").unwrap();
        d.seek(SeekFrom::End(-5)).unwrap();
        d.write_all(b"last!").unwrap();
        let mut img = Vec::new();
        let n = write(&d, &mut img).unwrap();
        assert_eq!(n, img.len() as u64);
        // header + refcount table + refcount block + L1 + 2 L2 + 3 data clusters
        assert_eq!(img.len() as u64, 9 * CLUSTER);
        assert_eq!(&img[..4], MAGIC);
        let back = read(&img).unwrap();
        assert_eq!(back.len(), d.len());
        let a: Vec<_> = back.data_chunks().collect();
        let b: Vec<_> = d.data_chunks().collect();
        assert_eq!(a, b);
        // Every cluster of the file has refcount 1, none beyond.
        let rb = be64(&img, CLUSTER as usize).unwrap() as usize;
        for c in 0..9 {
            assert_eq!(&img[rb + c * 2..rb + c * 2 + 2], &[0, 1]);
        }
        assert_eq!(&img[rb + 18..rb + 20], &[0, 0]);
    }

    #[test]
    fn empty_disk_is_just_metadata() {
        let mut img = Vec::new();
        write(&SparseDisk::new(1 << 30), &mut img).unwrap();
        assert_eq!(img.len() as u64, 4 * CLUSTER);
        assert_eq!(read(&img).unwrap().data_chunks().count(), 0);
        assert!(read(b"nope").is_err());
    }
}
