//! Container identities (issue 9 §3): a container created with `identity = { subsystem, … }`
//! (user-data, the socket's `create`, `tessera container create --identity`) gets a certmgr
//! child certificate at every start, subject `O=<subsystem>, UID=<container name>`, the way
//! PID 1 gives services theirs (init/src/supervisor/identity.rs):
//!
//! 1. the agent asks certmgr (its socket, `tessera_certmgr::client::child_token`) for a
//!    one-time token and writes it into a pipe whose write end it closes at once;
//! 2. the pipe's read end is the shim's stdin (`--identity SOCKET`); the shim moves it to fd 3
//!    before anything else, so the container's init inherits it there, and closes its own
//!    copy once the init is cloned;
//! 3. the container's process finds `TESSERA_IDENTITY_FD=3` (the variable's name and the
//!    number: never the token) and redeems the token with request_key(2), as
//!    `AgentIdentity::from_handoff()` does; the kernel's request-key callout runs on the node
//!    and puts the chain and the private key into that process's keyring. certmgr's socket is
//!    bound at its usual path inside the container, so `trust` (the CA and CRL) and renewals
//!    work unchanged.
//!
//! Nothing of it reaches the rootfs, config.json, the environment or argv. The default
//! seccomp profile, which denies the keyring calls, lets such a container use exactly the ones
//! redemption and signing need ([`crate::runtime::seccomp::keyring_rules`]).
//!
//! certmgr admits the agent as the node's root with CAP_SYS_PTRACE (its `operator` rule: such
//! a process could read certmgr's memory anyway); what a container may be certified for is
//! bounded by the node certificate's capabilities, which the CA enforces.

use std::os::fd::OwnedFd;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tessera_common::api_error::ApiError;

/// Where a container's process finds its token.
pub const FD: i32 = 3;
/// certmgr's socket inside a container with an identity (its path on the node, so
/// `tessera_certmgr::client::default_socket()` finds it).
pub const CERTMGR_SOCKET: &str = "/run/tessera/certmgr.sock";
/// Subsystems no container may claim.
const RESERVED: &[&str] = &["admin", "certmgr"];

/// What a container's certificate says besides its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySpec {
    pub subsystem: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
}

impl IdentitySpec {
    /// The names' rules of the certificate profile, checked before anything is created.
    pub fn check(&self) -> Result<(), ApiError> {
        let bad = |what: &str, v: &str, why: String| {
            ApiError::new(
                "bad_request",
                format!("identity {what} {v:?}: {why}; use 1-32 lower-case letters, digits and '-' (e.g. web)"),
            )
        };
        if let Some(why) = tessera_common::names::subsystem_problem(&self.subsystem) {
            return Err(bad("subsystem", &self.subsystem, why));
        }
        if RESERVED.contains(&self.subsystem.as_str()) {
            return Err(ApiError::new(
                "bad_request",
                format!("identity subsystem {:?} is reserved (operators and the node's certificate manager); name the container's own subsystem", self.subsystem),
            ));
        }
        for (i, c) in self.capabilities.iter().enumerate() {
            if let Some(why) = tessera_common::names::subsystem_problem(c) {
                return Err(bad("capability", c, why));
            }
            if self.capabilities[..i].contains(c) {
                return Err(ApiError::new(
                    "bad_request",
                    format!("identity capability {c:?} is listed twice; list each once"),
                ));
            }
        }
        if self.capabilities.len() > 32 {
            return Err(ApiError::new(
                "bad_request",
                "identity capabilities: at most 32",
            ));
        }
        Ok(())
    }
}

/// A one-time token for container `name` from certmgr at `socket`, in a pipe whose write end
/// is closed: its read end, for the shim's stdin.
pub fn token_pipe(socket: &Path, name: &str, spec: &IdentitySpec) -> Result<OwnedFd, ApiError> {
    let token =
        tessera_certmgr::client::child_token(socket, &spec.subsystem, name, &spec.capabilities)
            .map_err(|e| {
                let code = match e.code() {
                    Some("capability_missing" | "forbidden" | "invalid_name") => "identity_refused",
                    _ => "identity_unavailable",
                };
                ApiError::new(
                    code,
                    format!(
                        "no identity for container {name} (subsystem {:?}): {e}",
                        spec.subsystem
                    ),
                )
            })?;
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| ApiError::new("internal", format!("pipe for the identity token: {e}")))?;
    let mut line = zeroize::Zeroizing::new(token.as_bytes().to_vec());
    line.push(b'\n');
    std::io::Write::write_all(&mut std::fs::File::from(write), &line)
        .map_err(|e| ApiError::new("internal", format!("writing the identity token: {e}")))?;
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::IdentitySpec;

    fn spec(subsystem: &str, caps: &[&str]) -> IdentitySpec {
        IdentitySpec {
            subsystem: subsystem.into(),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn names_are_checked_before_anything_is_made() {
        assert!(spec("web", &["worker"]).check().is_ok());
        for (s, want) in [
            (spec("Web", &[]), "identity subsystem \"Web\""),
            (spec("admin", &[]), "is reserved"),
            (spec("web", &["a", "a"]), "listed twice"),
            (spec("web", &["a b"]), "identity capability \"a b\""),
        ] {
            let e = s.check().unwrap_err();
            assert_eq!(e.code, "bad_request");
            assert!(e.reason.contains(want), "{}", e.reason);
        }
    }

    #[test]
    fn the_wire_form_is_strict() {
        let s: IdentitySpec =
            serde_json::from_str(r#"{"subsystem":"web","capabilities":["x"]}"#).unwrap();
        assert_eq!(s, spec("web", &["x"]));
        assert!(
            serde_json::from_str::<IdentitySpec>(r#"{"subsystem":"web","agent_id":"x"}"#).is_err()
        );
        assert_eq!(
            serde_json::to_string(&spec("web", &[])).unwrap(),
            r#"{"subsystem":"web"}"#
        );
    }
}
