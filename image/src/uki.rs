//! The unified kernel image: the pinned systemd-boot stub (`linuxx64.efi.stub`, systemd 252,
//! which has no ukify) with `.osrel`, `.cmdline`, `.linux` and `.initrd` sections appended.
//! The PE edit is done here rather than with objcopy so the result is exact and reproducible:
//! new sections go after the stub's last section, at virtual addresses aligned to the stub's
//! SectionAlignment and file offsets aligned to its FileAlignment.

/// `IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ`
const DATA_READONLY: u32 = 0x4000_0040;
const SECTION_HEADER: usize = 40;
/// Data directory index of the certificate table (a signed stub cannot be extended).
const DIR_SECURITY: usize = 4;

fn align(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

fn u16_at(b: &[u8], o: usize) -> Result<u16, String> {
    b.get(o..o + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| format!("truncated at {o:#x}"))
}

fn u32_at(b: &[u8], o: usize) -> Result<u32, String> {
    b.get(o..o + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| format!("truncated at {o:#x}"))
}

fn put_u32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

/// One section header of a PE image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub virtual_size: u32,
    pub virtual_address: u32,
    pub raw_size: u32,
    pub raw_offset: u32,
    pub characteristics: u32,
}

/// What the builder needs from a PE32+ image's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeHeaders {
    pub coff: usize,
    pub optional: usize,
    pub section_table: usize,
    pub section_alignment: u32,
    pub file_alignment: u32,
    pub size_of_headers: u32,
    pub sections: Vec<Section>,
    pub signed: bool,
}

/// Parses the headers of a PE32+ (x86-64 EFI) image.
pub fn parse_headers(pe: &[u8]) -> Result<PeHeaders, String> {
    if pe.get(..2) != Some(b"MZ") {
        return Err("not a PE image (no MZ header)".into());
    }
    let nt = u32_at(pe, 0x3c)? as usize;
    if pe.get(nt..nt + 4) != Some(b"PE\0\0") {
        return Err("not a PE image (no PE signature)".into());
    }
    let coff = nt + 4;
    let count = u16_at(pe, coff + 2)? as usize;
    let optional = coff + 20;
    let opt_size = u16_at(pe, coff + 16)? as usize;
    if u16_at(pe, optional)? != 0x20b {
        return Err("not a PE32+ image".into());
    }
    let dirs = u32_at(pe, optional + 108)? as usize;
    let signed = dirs > DIR_SECURITY && u32_at(pe, optional + 112 + DIR_SECURITY * 8 + 4)? != 0;
    let section_table = optional + opt_size;
    let mut sections = Vec::with_capacity(count);
    for i in 0..count {
        let o = section_table + i * SECTION_HEADER;
        let raw = pe.get(o..o + 8).ok_or("truncated section table")?;
        let name = String::from_utf8_lossy(raw)
            .trim_end_matches('\0')
            .to_string();
        sections.push(Section {
            name,
            virtual_size: u32_at(pe, o + 8)?,
            virtual_address: u32_at(pe, o + 12)?,
            raw_size: u32_at(pe, o + 16)?,
            raw_offset: u32_at(pe, o + 20)?,
            characteristics: u32_at(pe, o + 36)?,
        });
    }
    Ok(PeHeaders {
        coff,
        optional,
        section_table,
        section_alignment: u32_at(pe, optional + 32)?,
        file_alignment: u32_at(pe, optional + 36)?,
        size_of_headers: u32_at(pe, optional + 60)?,
        sections,
        signed,
    })
}

/// Places new sections (name, length) after the existing ones: each starts at the next
/// SectionAlignment boundary after the previous section's end in memory, and at the next
/// FileAlignment boundary after `file_end` (and the previous new section) in the file.
pub fn layout(
    existing: &[Section],
    section_alignment: u32,
    file_alignment: u32,
    file_end: u64,
    new: &[(&str, usize)],
) -> Result<Vec<Section>, String> {
    if section_alignment == 0 || file_alignment == 0 {
        return Err("alignment of 0 in the PE header".into());
    }
    let (sa, fa) = (section_alignment as u64, file_alignment as u64);
    let mut va = existing
        .iter()
        .map(|s| s.virtual_address as u64 + (s.virtual_size.max(s.raw_size)) as u64)
        .max()
        .unwrap_or(0);
    let mut off = existing
        .iter()
        .map(|s| s.raw_offset as u64 + s.raw_size as u64)
        .max()
        .unwrap_or(0)
        .max(file_end);
    let mut out = Vec::new();
    for (name, len) in new {
        if name.len() > 8 {
            return Err(format!("section name {name} is longer than 8 bytes"));
        }
        va = align(va, sa);
        off = align(off, fa);
        let raw = align(*len as u64, fa);
        let s = Section {
            name: name.to_string(),
            virtual_size: u32::try_from(*len)
                .map_err(|_| format!("{name} is larger than 4 GiB"))?,
            virtual_address: u32::try_from(va)
                .map_err(|_| "image larger than 4 GiB".to_string())?,
            raw_size: u32::try_from(raw).map_err(|_| format!("{name} is larger than 4 GiB"))?,
            raw_offset: u32::try_from(off).map_err(|_| "image larger than 4 GiB".to_string())?,
            characteristics: DATA_READONLY,
        };
        va += *len as u64;
        off += raw;
        out.push(s);
    }
    Ok(out)
}

/// The PE checksum (as computed by ImageHlp's CheckSumMappedFile), the checksum field skipped.
pub fn pe_checksum(pe: &[u8], checksum_offset: usize) -> u32 {
    let mut sum: u64 = 0;
    for (i, chunk) in pe.chunks(2).enumerate() {
        if i * 2 == checksum_offset || i * 2 == checksum_offset + 2 {
            continue;
        }
        let word = chunk[0] as u64 | (chunk.get(1).copied().unwrap_or(0) as u64) << 8;
        sum += word;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    (sum as u32).wrapping_add(pe.len() as u32)
}

/// Appends `sections` (name, contents) to the stub and returns the new image.
pub fn append_sections(stub: &[u8], sections: &[(&str, &[u8])]) -> Result<Vec<u8>, String> {
    let h = parse_headers(stub)?;
    if h.signed {
        return Err(
            "the stub carries an Authenticode signature; use the unsigned systemd-boot-efi stub"
                .into(),
        );
    }
    let table_end = h.section_table + (h.sections.len() + sections.len()) * SECTION_HEADER;
    let first_raw = h
        .sections
        .iter()
        .map(|s| s.raw_offset)
        .filter(|o| *o > 0)
        .min()
        .unwrap_or(h.size_of_headers);
    if table_end > h.size_of_headers as usize || table_end > first_raw as usize {
        return Err(format!(
            "no room for {} more section headers (table would end at {table_end:#x}, headers end at {:#x})",
            sections.len(),
            h.size_of_headers.min(first_raw)
        ));
    }
    let sizes: Vec<(&str, usize)> = sections.iter().map(|(n, d)| (*n, d.len())).collect();
    let placed = layout(
        &h.sections,
        h.section_alignment,
        h.file_alignment,
        stub.len() as u64,
        &sizes,
    )?;

    let end = placed
        .last()
        .map(|s| s.raw_offset as usize + s.raw_size as usize)
        .unwrap_or(stub.len());
    let mut out = stub.to_vec();
    out.resize(end, 0);
    for (i, (s, (_, data))) in placed.iter().zip(sections).enumerate() {
        out[s.raw_offset as usize..s.raw_offset as usize + data.len()].copy_from_slice(data);
        let o = h.section_table + (h.sections.len() + i) * SECTION_HEADER;
        let mut name = [0u8; 8];
        name[..s.name.len()].copy_from_slice(s.name.as_bytes());
        out[o..o + 8].copy_from_slice(&name);
        put_u32(&mut out, o + 8, s.virtual_size);
        put_u32(&mut out, o + 12, s.virtual_address);
        put_u32(&mut out, o + 16, s.raw_size);
        put_u32(&mut out, o + 20, s.raw_offset);
        out[o + 24..o + 36].fill(0); // relocations, line numbers: none
        put_u32(&mut out, o + 36, s.characteristics);
    }
    let count = (h.sections.len() + sections.len()) as u16;
    out[h.coff + 2..h.coff + 4].copy_from_slice(&count.to_le_bytes());
    let init_data = u32_at(&out, h.optional + 8)? + placed.iter().map(|s| s.raw_size).sum::<u32>();
    put_u32(&mut out, h.optional + 8, init_data);
    let image_end = placed
        .iter()
        .chain(&h.sections)
        .map(|s| s.virtual_address as u64 + s.virtual_size.max(s.raw_size) as u64)
        .max()
        .unwrap_or(0);
    put_u32(
        &mut out,
        h.optional + 56,
        align(image_end, h.section_alignment as u64) as u32,
    );
    let sum = pe_checksum(&out, h.optional + 64);
    put_u32(&mut out, h.optional + 64, sum);
    Ok(out)
}

/// Builds the UKI: `.osrel`, `.cmdline` (NUL-terminated, the stub hands it to the kernel as
/// a C string), `.linux`, `.initrd`.
pub fn build(
    stub: &[u8],
    os_release: &str,
    cmdline: &str,
    kernel: &[u8],
    initrd: &[u8],
) -> Result<Vec<u8>, String> {
    let mut cmd = cmdline.as_bytes().to_vec();
    cmd.push(0);
    append_sections(
        stub,
        &[
            (".osrel", os_release.as_bytes()),
            (".cmdline", &cmd),
            (".linux", kernel),
            (".initrd", initrd),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sec(name: &str, va: u32, vsize: u32, off: u32, raw: u32) -> Section {
        Section {
            name: name.into(),
            virtual_size: vsize,
            virtual_address: va,
            raw_size: raw,
            raw_offset: off,
            characteristics: 0,
        }
    }

    /// The section table of systemd 252's linuxx64.efi.stub (objdump -h).
    fn stub_sections() -> Vec<Section> {
        vec![
            sec(".text", 0x4000, 0xbff0, 0x400, 0xc000),
            sec(".reloc", 0x10000, 0xc, 0xc400, 0x200),
            sec(".data", 0x11000, 0x34b8, 0xc600, 0x3600),
            sec(".dynamic", 0x15000, 0x100, 0xfc00, 0x200),
            sec(".rela", 0x16000, 0xf30, 0xfe00, 0x1000),
            sec(".dynsym", 0x17000, 0x18, 0x10e00, 0x200),
            sec(".sbat", 0x19000, 0xe2, 0x11000, 0x200),
            sec(".sdmagic", 0x19100, 0x34, 0x11200, 0x200),
        ]
    }

    #[test]
    fn new_sections_follow_the_last_one_aligned() {
        let placed = layout(
            &stub_sections(),
            0x200,
            0x200,
            0x11400,
            &[
                (".osrel", 70),
                (".cmdline", 30),
                (".linux", 0x7_0001),
                (".initrd", 5),
            ],
        )
        .unwrap();
        // .sdmagic ends in memory at 0x19100 + 0x200 (its raw size) = 0x19300, which is not
        // on a 0x200 boundary: the first new section starts at the next one.
        assert_eq!(placed[0].virtual_address, 0x19400);
        assert_eq!(placed[0].raw_offset, 0x11400);
        assert_eq!(placed[1].virtual_address, 0x19600);
        assert_eq!(placed[1].raw_offset, 0x11600);
        assert_eq!(placed[2].virtual_address, 0x19800);
        assert_eq!(placed[2].raw_size, 0x7_0200);
        assert_eq!(placed[3].virtual_address, 0x19800 + 0x7_0200);
        for w in placed.windows(2) {
            assert!(
                w[1].virtual_address as u64
                    >= w[0].virtual_address as u64 + w[0].virtual_size as u64
            );
            assert!(w[1].raw_offset >= w[0].raw_offset + w[0].raw_size);
        }
        for s in &placed {
            assert_eq!(s.virtual_address % 0x200, 0);
            assert_eq!(s.raw_offset % 0x200, 0);
        }
    }

    #[test]
    fn layout_respects_page_alignment_and_trailing_file_data() {
        let placed = layout(
            &stub_sections(),
            0x1000,
            0x200,
            0x11555,
            &[(".osrel", 1), (".linux", 0x1001)],
        )
        .unwrap();
        assert_eq!(placed[0].virtual_address, 0x1a000);
        assert_eq!(placed[0].raw_offset, 0x11600);
        assert_eq!(placed[1].virtual_address, 0x1b000);
        assert!(layout(&[], 0x200, 0x200, 0, &[(".toolongname", 1)]).is_err());
    }

    #[test]
    fn checksum_skips_its_own_field() {
        let mut img = vec![1u8, 0, 2, 0, 0xff, 0xff, 0xff, 0xff, 3, 0];
        let a = pe_checksum(&img, 4);
        img[4..8].copy_from_slice(&[0, 0, 0, 0]);
        assert_eq!(a, pe_checksum(&img, 4));
        assert_eq!(a, 1 + 2 + 3 + 10);
    }
}
