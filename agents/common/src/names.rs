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

/// What is wrong with a certificate subsystem name (the O= of a Tessera certificate, and the
/// capabilities that name subsystems): 1-32 lower-case letters, digits or '-', not starting or
/// ending with '-'. None when it is fine. The same rule as tessera-identity's profile, for
/// crates that check names before they reach certmgr (user-data, the container agent).
pub fn subsystem_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("it is empty".into());
    }
    if let Some((i, c)) = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Some(format!("it contains {c:?} at byte {i}"));
    }
    if s.len() > 32 {
        return Some(format!("it is {} characters long (at most 32)", s.len()));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Some("it starts or ends with '-'".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsystem_names() {
        assert_eq!(subsystem_problem("web-1"), None);
        assert_eq!(subsystem_problem(&"a".repeat(32)), None);
        for bad in ["", "-web", "web-", "Web", "a_b", "a.b", &"a".repeat(33)] {
            assert!(subsystem_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn container_names() {
        assert!(is_container_name("web-1"));
        assert!(is_container_name(&"a".repeat(56)));
        for bad in ["", "-web", "Web", "a_b", "a.b", &"a".repeat(57)] {
            assert!(!is_container_name(bad), "{bad:?}");
        }
    }
}
