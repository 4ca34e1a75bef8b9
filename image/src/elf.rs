//! What the dynamic loader needs to run an ELF file: its interpreter (`PT_INTERP`) and the
//! shared libraries it names (`DT_NEEDED`), read with the `object` crate.

use object::elf::{DT_NEEDED, EM_X86_64};
use object::read::elf::{Dyn, ElfFile64, FileHeader, ProgramHeader};
use object::Endianness;

/// The dynamic-linking facts of one ELF file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DynamicInfo {
    /// `PT_INTERP`, e.g. `/lib64/ld-linux-x86-64.so.2`; `None` for libraries and static files.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` entries in file order, e.g. `libc.so.6`.
    pub needed: Vec<String>,
}

/// Reads the interpreter and `DT_NEEDED` of an x86-64 ELF file. The error says what is wrong
/// with the file; the caller adds which file it is.
pub fn dynamic_info(data: &[u8]) -> Result<DynamicInfo, String> {
    let elf = ElfFile64::<Endianness>::parse(data)
        .map_err(|e| format!("is not a 64-bit ELF file ({e})"))?;
    let endian = elf.endian();
    if elf.elf_header().e_machine(endian) != EM_X86_64 {
        return Err("is not an x86-64 ELF file".into());
    }
    let mut info = DynamicInfo::default();
    for ph in elf.elf_program_headers() {
        if let Some(interp) = ph
            .interpreter(endian, data)
            .map_err(|e| format!("has a bad PT_INTERP ({e})"))?
        {
            info.interpreter = Some(String::from_utf8_lossy(interp).into_owned());
        }
    }
    let sections = elf.elf_section_table();
    let Some((dyns, link)) = sections
        .dynamic(endian, data)
        .map_err(|e| format!("has a bad dynamic section ({e})"))?
    else {
        return Ok(info); // static
    };
    let strings = sections
        .strings(endian, data, link)
        .map_err(|e| format!("has a bad dynamic string table ({e})"))?;
    for d in dyns {
        if d.tag32(endian) == Some(DT_NEEDED) {
            let name = d
                .string(endian, strings)
                .map_err(|e| format!("has a bad DT_NEEDED entry ({e})"))?;
            info.needed.push(String::from_utf8_lossy(name).into_owned());
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_shell_names_libc_and_the_loader() {
        // /bin/sh of the build host (dash on Debian) is a dynamically linked x86-64 program.
        let data = std::fs::read("/bin/dash").expect("the build host is Debian with dash");
        let info = dynamic_info(&data).unwrap();
        assert_eq!(
            info.interpreter.as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        assert!(info.needed.contains(&"libc.so.6".to_string()), "{info:?}");
    }

    #[test]
    fn non_elf_input_is_refused_with_the_reason() {
        let err = dynamic_info(b"#!/bin/sh\necho hi\n").unwrap_err();
        assert!(err.contains("not a 64-bit ELF"), "{err}");
    }
}
