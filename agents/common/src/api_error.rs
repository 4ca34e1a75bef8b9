//! What every local JSON-lines socket API shares (certmgr, firewall, storage): the socket,
//! bound private, and the refusal `{"error":CODE,"reason":…}`, a stable code and a sentence
//! with the cause and the fix.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;

use serde_json::json;

/// Binds a unix socket at `path` with mode 0600, replacing a stale one and making its
/// directory. (Callers still check who connects with SO_PEERCRED.)
pub fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// A refusal with a stable code and a sentence with the cause and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct ApiError {
    pub code: &'static str,
    pub reason: String,
}

impl ApiError {
    pub fn new(code: &'static str, reason: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason: reason.into(),
        }
    }

    /// The reply line.
    pub fn line(&self) -> Vec<u8> {
        let mut v = json!({"error": self.code, "reason": self.reason})
            .to_string()
            .into_bytes();
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_one_json_line() {
        assert_eq!(
            ApiError::new("busy", "try again").line(),
            b"{\"error\":\"busy\",\"reason\":\"try again\"}\n"
        );
    }
}
