//! `image/programs.toml`: programs shipped from Debian packages together with the shared
//! libraries they need (nft today; dropbear, mkfs.btrfs and lvm2 later).
//!
//! ```toml
//! [[program]]
//! path = "/usr/sbin/nft"        # path inside the package, and in the image
//! package = "nftables"          # the package that ships it
//! links = []                    # optional: more names for it in the image (symlinks)
//! ```
//!
//! `tessera image lock --update` pins each package with the `lib*` packages of its Depends
//! closure (role `program` and `library` in image/packages.lock); the builder ships the file and
//! the `DT_NEEDED` closure resolved against those pinned packages (see [`crate::libraries`]).

use std::path::Path;

use serde::Deserialize;

use crate::error::ImageError;

/// One program of the list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Program {
    pub path: String,
    pub package: String,
    #[serde(default)]
    pub links: Vec<String>,
}

/// The whole list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramList {
    #[serde(default, rename = "program")]
    pub programs: Vec<Program>,
}

fn check_path(what: &str, path: &str) -> Result<(), String> {
    let ok = path.starts_with('/')
        && path.len() > 1
        && !path.ends_with('/')
        && path
            .split('/')
            .skip(1)
            .all(|c| !c.is_empty() && c != "." && c != "..")
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._+-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} `{path}` must be an absolute path without `.`/`..` components (e.g. /usr/sbin/nft)"
        ))
    }
}

impl ProgramList {
    /// Parses and validates the list; the error names the offending entry.
    pub fn parse(text: &str) -> Result<ProgramList, String> {
        let list: ProgramList =
            toml::from_str(text).map_err(|e| e.to_string().trim().to_string())?;
        let mut seen = std::collections::BTreeSet::new();
        for (i, p) in list.programs.iter().enumerate() {
            let at = |m: String| format!("program[{i}]: {m}");
            check_path("path", &p.path).map_err(at)?;
            for l in &p.links {
                check_path("links entry", l).map_err(at)?;
            }
            crate::lock::check_package_name(&p.package).map_err(at)?;
            if !seen.insert(p.path.clone()) {
                return Err(at(format!("{} is listed twice", p.path)));
            }
        }
        Ok(list)
    }

    /// Reads the list at `path`; a missing file is an empty list (no programs).
    pub fn load(path: &Path) -> Result<ProgramList, ImageError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ProgramList::default()),
            Err(e) => return Err(ImageError::io("read", path, e)),
        };
        ProgramList::parse(&text).map_err(|problem| ImageError::BadInput {
            path: path.to_path_buf(),
            problem,
            fix: "fix the entry (keys: path, package, links)".into(),
        })
    }

    /// The packages the programs come from, sorted, without duplicates.
    pub fn packages(&self) -> Vec<String> {
        let set: std::collections::BTreeSet<String> =
            self.programs.iter().map(|p| p.package.clone()).collect();
        set.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_parses_with_optional_links() {
        let l = ProgramList::parse(
            "[[program]]\npath = \"/usr/sbin/nft\"\npackage = \"nftables\"\n\n[[program]]\npath = \"/sbin/lvm\"\npackage = \"lvm2\"\nlinks = [\"/sbin/lvcreate\"]\n",
        )
        .unwrap();
        assert_eq!(l.programs.len(), 2);
        assert_eq!(l.programs[1].links, ["/sbin/lvcreate"]);
        assert_eq!(l.packages(), ["lvm2", "nftables"]);
    }

    #[test]
    fn bad_entries_are_named() {
        let e =
            ProgramList::parse("[[program]]\npath = \"usr/sbin/nft\"\npackage = \"nftables\"\n")
                .unwrap_err();
        assert!(e.contains("program[0]") && e.contains("absolute"), "{e}");
        let e = ProgramList::parse("[[program]]\npath = \"/a/../b\"\npackage = \"nftables\"\n")
            .unwrap_err();
        assert!(e.contains("path"), "{e}");
        let e = ProgramList::parse("[[program]]\npath = \"/usr/sbin/nft\"\npackage = \"-x\"\n")
            .unwrap_err();
        assert!(e.contains("-x"), "{e}");
        let e = ProgramList::parse("[[program]]\npath = \"/x\"\npackage = \"a1\"\nsurprise = 1\n")
            .unwrap_err();
        assert!(e.contains("surprise"), "{e}");
    }
}
