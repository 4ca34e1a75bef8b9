//! The refusal every local JSON-lines socket API sends (certmgr, firewall, storage):
//! `{"error":CODE,"reason":…}`, a stable code and a sentence with the cause and the fix.

use serde_json::json;

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
