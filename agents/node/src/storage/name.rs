//! Volume and snapshot names: one path component the backends can use as a directory name
//! (Btrfs) and inside an LV name (LVM), so no slashes, no dots, nothing lvm2 reserves.

use std::fmt;

/// Longest name (an LV name is `v-<name>`; lvm2 allows 127 characters).
pub const MAX_LEN: usize = 64;

/// A checked volume or snapshot name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct VolumeName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("volume name {name:?} {why}; use 1-{MAX_LEN} letters, digits, `-` or `_`, starting with a letter or digit (e.g. data-1)")]
pub struct NameError {
    pub name: String,
    pub why: &'static str,
}

impl VolumeName {
    pub fn parse(name: &str) -> Result<VolumeName, NameError> {
        let bad = |why| {
            Err(NameError {
                name: name.chars().take(80).collect(),
                why,
            })
        };
        if name.is_empty() {
            return bad("is empty");
        }
        if name.len() > MAX_LEN {
            return bad("is too long");
        }
        if name.contains('/') {
            return bad("contains a slash");
        }
        if name.contains('.') {
            return bad("contains a dot");
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return bad("contains a character other than letters, digits, `-` and `_`");
        }
        if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return bad("does not start with a letter or digit");
        }
        Ok(VolumeName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VolumeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names_pass() {
        for n in ["data", "data-1", "web_2", "7", &"a".repeat(MAX_LEN)] {
            assert_eq!(VolumeName::parse(n).unwrap().as_str(), n);
        }
    }

    #[test]
    fn bad_names_say_why_and_how() {
        let why = |n: &str| VolumeName::parse(n).unwrap_err().why;
        assert_eq!(why(""), "is empty");
        assert_eq!(why("a/b"), "contains a slash");
        assert_eq!(why(".."), "contains a dot");
        assert_eq!(why("a.b"), "contains a dot");
        assert_eq!(why(&"a".repeat(MAX_LEN + 1)), "is too long");
        assert_eq!(why("-x"), "does not start with a letter or digit");
        assert!(why("a b").contains("other than"));
        assert!(why("é").contains("other than"));
        let text = VolumeName::parse("a/b").unwrap_err().to_string();
        assert!(
            text.contains("\"a/b\" contains a slash; use 1-64 letters"),
            "{text}"
        );
    }
}
