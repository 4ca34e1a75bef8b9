//! What a tar entry says, checked: its path as components (no "..", not absolute, bounded
//! length and depth), whether a symlink target climbs above the container's root, its link
//! target, and its mode, owner and mtime.

use std::io::Read;

use nix::sys::time::TimeSpec;

use super::ImportError;

/// Longest entry path accepted (PATH_MAX).
const MAX_PATH: usize = 4096;
/// Deepest entry accepted; keeps fd-per-level tree walks far below the fd limit.
const MAX_DEPTH: usize = 256;

#[derive(Clone, Copy)]
pub(crate) struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: TimeSpec,
}

impl Meta {
    /// Mode (permission bits only), owner and mtime from a tar header.
    pub(crate) fn of(h: &tar::Header, shown: &str) -> Result<Meta, ImportError> {
        let bad = |field: &str, e: &dyn std::fmt::Display| ImportError::Corrupt {
            detail: format!("entry {shown:?}: bad {field} in its tar header: {e}"),
        };
        let id = |v: std::io::Result<u64>, field: &str| -> Result<u32, ImportError> {
            let v = v.map_err(|e| bad(field, &e))?;
            u32::try_from(v).map_err(|e| bad(field, &e))
        };
        let mtime = h.mtime().map_err(|e| bad("mtime", &e))?;
        Ok(Meta {
            mode: h.mode().map_err(|e| bad("mode", &e))? & 0o7777,
            uid: id(h.uid(), "uid")?,
            gid: id(h.gid(), "gid")?,
            mtime: TimeSpec::new(i64::try_from(mtime).unwrap_or(i64::MAX), 0),
        })
    }
}

pub(crate) fn join(comps: &[&[u8]]) -> String {
    String::from_utf8_lossy(&comps.join(&b'/')).into_owned()
}

/// An entry path as components: no leading "/", no "..", "." and empty parts dropped.
pub(crate) fn components<'b>(path: &'b [u8], shown: &str) -> Result<Vec<&'b [u8]>, ImportError> {
    if path.starts_with(b"/") {
        return Err(ImportError::AbsolutePath {
            entry: shown.to_string(),
        });
    }
    let comps: Vec<&[u8]> = path
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    if comps.iter().any(|c| *c == b"..") {
        return Err(ImportError::PathEscapes {
            entry: shown.to_string(),
        });
    }
    if path.len() > MAX_PATH || comps.len() > MAX_DEPTH {
        let what = format!("a path longer than {MAX_PATH} bytes or deeper than {MAX_DEPTH}");
        return Err(ImportError::UnsupportedEntry {
            entry: shown.to_string(),
            what,
        });
    }
    Ok(comps)
}

/// Whether a relative symlink target, placed in a directory `depth` levels below the
/// container's root, climbs above that root. Absolute targets stay inside: the container
/// resolves them in its own root.
pub(crate) fn climbs_out(depth: usize, target: &[u8]) -> bool {
    if target.starts_with(b"/") {
        return false;
    }
    let mut depth = depth as i64;
    for comp in target.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

/// A link entry's target; an empty one is refused.
pub(crate) fn link_name<R: Read>(
    e: &tar::Entry<'_, R>,
    shown: &str,
) -> Result<Vec<u8>, ImportError> {
    match e.link_name_bytes() {
        Some(t) if !t.is_empty() => Ok(t.into_owned()),
        _ => Err(ImportError::UnsupportedEntry {
            entry: shown.to_string(),
            what: "a link without a target".to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_symlinks_may_not_climb_above_the_root() {
        assert!(!climbs_out(0, b"/etc/passwd"));
        assert!(!climbs_out(1, b"../bin/busybox"));
        assert!(climbs_out(0, b"../x"));
        assert!(climbs_out(1, b"a/../../../x"));
        assert!(!climbs_out(2, b"./../.."));
    }

    #[test]
    fn components_refuse_dotdot_and_absolute() {
        assert!(matches!(
            components(b"/etc", "/etc"),
            Err(ImportError::AbsolutePath { .. })
        ));
        assert!(matches!(
            components(b"a/../b", "x"),
            Err(ImportError::PathEscapes { .. })
        ));
        assert_eq!(
            components(b"./a//b/", "x").unwrap(),
            vec![&b"a"[..], &b"b"[..]]
        );
    }
}
