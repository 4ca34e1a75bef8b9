//! Byte sizes as operators write them: `4096`, `512M`, `1G` (binary units). One parser for
//! volume sizes, container memory limits and user-data.

/// `1G`, `512M`, `100m`, `4096` (bytes), `64MiB`: a size greater than zero.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("size {text:?} is not a number; use e.g. 1G or 512M"))?;
    let mult: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KIB" => 1 << 10,
        "M" | "MIB" => 1 << 20,
        "G" | "GIB" => 1 << 30,
        "T" | "TIB" => 1 << 40,
        _ => {
            return Err(format!(
                "size {text:?} has an unknown unit; use K, M, G or T"
            ))
        }
    };
    match n.checked_mul(mult) {
        Some(0) | None => Err(format!("size {text:?} is out of range; use e.g. 1G")),
        Some(b) => Ok(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1X").unwrap_err().contains("unknown unit"));
        assert!(parse_size("G").unwrap_err().contains("not a number"));
        assert!(parse_size("99999999999T")
            .unwrap_err()
            .contains("out of range"));
    }
}
