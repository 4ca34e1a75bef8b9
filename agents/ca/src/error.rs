//! The errors the CA API returns: a stable code for programs, a sentence with the cause and
//! the fix for people, and the HTTP status both map to.

use serde::Serialize;
use std::fmt;

/// Stable error codes of the CA API (`{"error": "<code>", "reason": "…"}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// The token is not one this CA issued (or its record is gone).
    TokenUnknown,
    /// The token was already redeemed.
    TokenUsed,
    /// The token's TTL has passed.
    TokenExpired,
    /// The request names a node or subsystem other than the token's binding.
    TokenBinding,
    /// The token is not even shaped like a token.
    TokenInvalid,
    /// The CSR cannot be parsed.
    CsrInvalid,
    /// The CSR's self-signature does not verify.
    CsrSignature,
    /// The CSR's key type or size is not accepted.
    CsrKeyType,
    /// The caller's certificate lacks the capability for the requested subsystem.
    CapabilityMissing,
    /// The presented certificate is revoked.
    Revoked,
    /// The presented certificate is not in this CA's records.
    CertificateUnknown,
    /// The presented certificate has expired.
    CertificateExpired,
    /// The endpoint needs a client certificate and none was presented.
    ClientCertificateRequired,
    /// The endpoint needs an admin (`O=admin`) certificate.
    AdminRequired,
    /// The request body is larger than the limit.
    TooLarge,
    /// The body is not the JSON the endpoint expects.
    BadRequest,
    /// A name (node, subsystem, agent id, capability, URI) is refused by the profile.
    InvalidName,
    NotFound,
    MethodNotAllowed,
    /// The request took longer than the server allows.
    Timeout,
    /// Something failed inside the CA; the reason says what.
    Internal,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::TokenUnknown => "token_unknown",
            Code::TokenUsed => "token_used",
            Code::TokenExpired => "token_expired",
            Code::TokenBinding => "token_binding",
            Code::TokenInvalid => "token_invalid",
            Code::CsrInvalid => "csr_invalid",
            Code::CsrSignature => "csr_signature",
            Code::CsrKeyType => "csr_key_type",
            Code::CapabilityMissing => "capability_missing",
            Code::Revoked => "revoked",
            Code::CertificateUnknown => "certificate_unknown",
            Code::CertificateExpired => "certificate_expired",
            Code::ClientCertificateRequired => "client_certificate_required",
            Code::AdminRequired => "admin_required",
            Code::TooLarge => "too_large",
            Code::BadRequest => "bad_request",
            Code::InvalidName => "invalid_name",
            Code::NotFound => "not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::Timeout => "timeout",
            Code::Internal => "internal",
        }
    }

    /// The HTTP status of the reply.
    pub fn status(self) -> u16 {
        match self {
            Code::TokenInvalid
            | Code::CsrInvalid
            | Code::CsrSignature
            | Code::CsrKeyType
            | Code::BadRequest
            | Code::InvalidName => 400,
            Code::ClientCertificateRequired => 401,
            Code::TokenUnknown
            | Code::TokenBinding
            | Code::CapabilityMissing
            | Code::Revoked
            | Code::CertificateUnknown
            | Code::CertificateExpired
            | Code::AdminRequired => 403,
            Code::NotFound => 404,
            Code::MethodNotAllowed => 405,
            Code::Timeout => 408,
            Code::TokenUsed => 409,
            Code::TokenExpired => 410,
            Code::TooLarge => 413,
            Code::Internal => 500,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An API error: what the client gets back, and what the CLI prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} ({code})")]
pub struct ApiError {
    pub code: Code,
    pub reason: String,
}

impl ApiError {
    pub fn new(code: Code, reason: impl Into<String>) -> Self {
        ApiError {
            code,
            reason: reason.into(),
        }
    }

    pub fn internal(what: impl fmt::Display) -> Self {
        ApiError::new(
            Code::Internal,
            format!("internal error: {what}; the CA logged it, retry or ask the operator to look at the CA's log"),
        )
    }

    /// The JSON body `{"error": "<code>", "reason": "<sentence>"}`.
    pub fn body(&self) -> String {
        serde_json::json!({ "error": self.code.as_str(), "reason": self.reason }).to_string()
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        ApiError::internal(format!("database: {e}"))
    }
}

impl From<tessera_identity::profile::ProfileError> for ApiError {
    fn from(e: tessera_identity::profile::ProfileError) -> Self {
        use tessera_identity::profile::ProfileError;
        match e {
            ProfileError::InvalidName { .. } | ProfileError::BadCapabilities(_) => {
                ApiError::new(Code::InvalidName, e.to_string())
            }
            other => ApiError::internal(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_json_with_code_and_reason() {
        let e = ApiError::new(Code::TokenUsed, "token already used\n— issue a new one");
        let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(v["error"], "token_used");
        assert_eq!(v["reason"], "token already used\n— issue a new one");
        assert!(!e.body().contains('\n'), "newlines are escaped");
    }

    #[test]
    fn codes_map_to_statuses() {
        assert_eq!(Code::TooLarge.status(), 413);
        assert_eq!(Code::ClientCertificateRequired.status(), 401);
        assert_eq!(Code::AdminRequired.status(), 403);
        assert_eq!(Code::TokenUsed.status(), 409);
        assert_eq!(
            serde_json::to_string(&Code::CapabilityMissing).unwrap(),
            "\"capability_missing\""
        );
    }
}
