//! Names more than one crate checks: a container's name names a volume (`ctr-<name>`), a
//! cgroup and a state directory, and user-data declares containers by it.

/// 1-56 lower-case letters, digits or '-', not starting with '-' (`ctr-` + 56 fits the
/// storage service's 64-character volume names).
pub fn is_container_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 56
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names() {
        assert!(is_container_name("web-1"));
        assert!(is_container_name(&"a".repeat(56)));
        for bad in ["", "-web", "Web", "a_b", "a.b", &"a".repeat(57)] {
            assert!(!is_container_name(bad), "{bad:?}");
        }
    }
}
