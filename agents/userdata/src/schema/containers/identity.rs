//! `containers[i].identity`: the container gets a certmgr child certificate at every start,
//! subject `O=<subsystem>, UID=<container name>`, handed to its process as a one-time token on
//! fd 3 (`TESSERA_IDENTITY_FD=3`) and redeemed with request_key(2), as services get theirs.
//!
//! ```toml
//! identity = { subsystem = "web", capabilities = ["web-worker"] }
//! ```

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

/// At most this many capabilities (the certificate profile's limit).
pub const MAX_CAPABILITIES: usize = 32;
/// Subsystems no container may claim: the operator's certificates and the node's own
/// certificate manager.
pub const RESERVED_SUBSYSTEMS: &[&str] = &["admin", "certmgr"];

/// What a declared container's certificate says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// The O= of its certificate; the node's token must list it among its capabilities.
    pub subsystem: String,
    /// Subsystems the container may in turn request certificates for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
}

/// A subsystem name for a container's certificate.
pub fn subsystem(s: &str) -> Result<String, String> {
    if let Some(why) = tessera_common::names::subsystem_problem(s) {
        return Err(format!(
            "bad subsystem {s:?}: {why}; use 1-32 lower-case letters, digits and '-' (e.g. web)"
        ));
    }
    if RESERVED_SUBSYSTEMS.contains(&s) {
        return Err(format!(
            "{s:?} is reserved (operators and the node's certificate manager); choose the name of the container's own subsystem (e.g. web)"
        ));
    }
    Ok(s.to_string())
}

fn capability(s: &str) -> Result<String, String> {
    match tessera_common::names::subsystem_problem(s) {
        Some(why) => Err(format!(
            "bad capability {s:?}: {why}; a capability names a subsystem: 1-32 lower-case letters, digits and '-'"
        )),
        None => Ok(s.to_string()),
    }
}

validated!(SubsystemValue, String, subsystem);
validated!(CapabilityValue, String, capability);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::schema) struct RawIdentity {
    subsystem: Option<SubsystemValue>,
    #[serde(default)]
    capabilities: Vec<CapabilityValue>,
}

impl RawIdentity {
    /// The identity, or which key is wrong (relative to `identity`) and why.
    pub(in crate::schema) fn finish(&self) -> Result<Identity, (&'static str, String)> {
        let subsystem = self.subsystem.as_ref().ok_or((
            "subsystem",
            "missing in identity: name the certificate's subsystem (identity = { subsystem = \"web\" })"
                .to_string(),
        ))?;
        let capabilities: Vec<String> = self.capabilities.iter().map(|c| c.0.clone()).collect();
        if capabilities.len() > MAX_CAPABILITIES {
            return Err((
                "capabilities",
                format!(
                    "{} capabilities; at most {MAX_CAPABILITIES}",
                    capabilities.len()
                ),
            ));
        }
        if let Some((i, c)) = capabilities
            .iter()
            .enumerate()
            .find(|(i, c)| capabilities[..*i].contains(c))
        {
            return Err((
                "capabilities",
                format!("{c:?} is listed twice (entries {i} and earlier); list each once"),
            ));
        }
        Ok(Identity {
            subsystem: subsystem.0.clone(),
            capabilities,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::parse;

    const SHA: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn doc(identity: &str) -> String {
        format!("version = 1\n[[containers]]\nname = \"web\"\nimage = \"/x.tar\"\nsha256 = \"{SHA}\"\n{identity}\n")
    }

    #[test]
    fn an_identity_is_read_and_written_back() {
        let c = parse(
            doc("identity = { subsystem = \"web\", capabilities = [\"worker\"] }").as_bytes(),
        )
        .unwrap();
        let id = c.containers[0].identity.as_ref().unwrap();
        assert_eq!(id.subsystem, "web");
        assert_eq!(id.capabilities, vec!["worker".to_string()]);
        assert_eq!(parse(c.to_toml().as_bytes()).unwrap(), c);
        assert!(
            c.summary()
                .contains("containers[0].identity = \"web\" (capabilities: worker)"),
            "{}",
            c.summary()
        );
        let none = parse(doc("").as_bytes()).unwrap();
        assert_eq!(none.containers[0].identity, None);
    }

    #[test]
    fn bad_identities_name_the_key_and_the_line() {
        let cases = [
            (
                "identity = { }",
                "containers[0].identity.subsystem: missing in identity",
            ),
            (
                "identity = { subsystem = \"Web\" }",
                "containers[0].identity.subsystem: bad subsystem \"Web\"",
            ),
            (
                "identity = { subsystem = \"admin\" }",
                "containers[0].identity.subsystem: \"admin\" is reserved",
            ),
            (
                "identity = { subsystem = \"web\", agent_id = \"x\" }",
                "containers[0].identity.agent_id: unknown key `agent_id`",
            ),
            (
                "identity = { subsystem = \"web\", capabilities = [\"a\", \"a\"] }",
                "containers[0].identity.capabilities: \"a\" is listed twice",
            ),
            (
                "identity = { subsystem = \"web\", capabilities = [\"a_b\"] }",
                "containers[0].identity.capabilities[0]: bad capability \"a_b\"",
            ),
            ("identity = \"web\"", "containers[0].identity: invalid type"),
        ];
        for (body, want) in cases {
            let e = parse(doc(body).as_bytes()).unwrap_err().to_string();
            assert!(e.starts_with(want), "{body}\n→ {e}\nwanted {want}");
            assert!(e.contains("(line 6"), "{body}\n→ {e}: no line");
        }
    }
}
