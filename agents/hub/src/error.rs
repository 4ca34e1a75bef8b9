//! The errors the hub answers with: a stable code for programs and a reason for people that
//! names the cause and the fix.

use serde::{Deserialize, Serialize};

/// Stable error codes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// The request is malformed or names something invalid.
    BadRequest,
    /// No component is reachable under the target.
    NoTarget,
    /// The correlation id is used by a pending request of the same requester.
    CorrelationInUse,
    /// Nobody answered before the request's expiry.
    Expired,
    /// The hub or a hub on the way could not deliver the request.
    Unreachable,
    /// The component answered with an error of its own.
    Component,
    /// The request needs a component identity (send `hello` first).
    NotComponent,
    /// The requester may not do this.
    Forbidden,
}

/// An error carried in replies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {reason}")]
pub struct HubError {
    pub code: Code,
    pub reason: String,
}

impl HubError {
    pub fn new(code: Code, reason: impl Into<String>) -> Self {
        HubError {
            code,
            reason: reason.into(),
        }
    }

    pub fn bad(reason: impl Into<String>) -> Self {
        Self::new(Code::BadRequest, reason)
    }

    /// The HTTP status of the API reply carrying this error.
    pub fn status(&self) -> u16 {
        match self.code {
            Code::BadRequest | Code::CorrelationInUse | Code::NotComponent => 400,
            Code::Forbidden => 403,
            Code::NoTarget => 404,
            Code::Expired => 504,
            Code::Unreachable | Code::Component => 502,
        }
    }
}
