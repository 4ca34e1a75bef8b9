//! The certmgr socket protocol (agents/README.md, "certmgr socket protocol"): JSON lines over
//! a unix stream socket, one request, one reply, then close. Request and reply buffers that
//! carry a token or a key are built in place in zeroized buffers, never in growing strings.

use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::secret::SecretBytes;
use crate::tokens::ChildIdentity;

/// A request as it arrives: every field of every op, borrowed from the line (tokens contain
/// no JSON escapes, so they are never copied out of the zeroized buffer).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequest<'a> {
    pub op: &'a str,
    #[serde(default, borrow)]
    pub token: Option<&'a str>,
    #[serde(default)]
    pub subsystem: Option<String>,
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub capabilities: Option<Vec<String>>,
    #[serde(default)]
    pub uris: Option<Vec<String>>,
    /// redeem: the process the identity is for, as the kernel named it to the callout.
    #[serde(default)]
    pub pid: Option<u32>,
}

/// What a child asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildRequest {
    pub subsystem: String,
    pub agent_id: String,
    pub capabilities: Vec<String>,
    pub uris: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    Status,
    /// The CA certificate and CRL an agent pins for mTLS (public; any local caller).
    Trust,
    ChildToken(ChildRequest),
    Redeem {
        token: &'a str,
        pid: Option<u32>,
    },
}

pub use tessera_common::api_error::ApiError;

/// Parses one request line.
pub fn parse(line: &[u8]) -> Result<Request<'_>, ApiError> {
    let bad = |why: String| {
        ApiError::new(
            "bad_request",
            format!("{why}; send one JSON object per line such as {{\"op\":\"status\"}} (agents/README.md, \"certmgr socket protocol\")"),
        )
    };
    let raw: RawRequest<'_> =
        serde_json::from_slice(line).map_err(|e| bad(format!("not a request ({e})")))?;
    let extra = |allowed: &[&str]| -> Result<(), ApiError> {
        let given = [
            ("token", raw.token.is_some()),
            ("subsystem", raw.subsystem.is_some()),
            ("agent_id", raw.agent_id.is_some()),
            ("capabilities", raw.capabilities.is_some()),
            ("uris", raw.uris.is_some()),
            ("pid", raw.pid.is_some()),
        ];
        match given.iter().find(|(k, set)| *set && !allowed.contains(k)) {
            Some((k, _)) => Err(bad(format!("op {:?} takes no field {k:?}", raw.op))),
            None => Ok(()),
        }
    };
    match raw.op {
        "status" => {
            extra(&[])?;
            Ok(Request::Status)
        }
        "trust" => {
            extra(&[])?;
            Ok(Request::Trust)
        }
        "child-token" => {
            extra(&["subsystem", "agent_id", "capabilities", "uris"])?;
            let subsystem = raw
                .subsystem
                .clone()
                .ok_or_else(|| bad("child-token needs \"subsystem\"".into()))?;
            let agent_id = raw.agent_id.clone().unwrap_or_else(|| subsystem.clone());
            Ok(Request::ChildToken(ChildRequest {
                subsystem,
                agent_id,
                capabilities: raw.capabilities.clone().unwrap_or_default(),
                uris: raw.uris.clone().unwrap_or_default(),
            }))
        }
        "redeem" => {
            extra(&["token", "pid"])?;
            let token = raw
                .token
                .ok_or_else(|| bad("redeem needs \"token\"".into()))?;
            Ok(Request::Redeem {
                token,
                pid: raw.pid,
            })
        }
        other => Err(bad(format!(
            "unknown op {:?} (status, trust, child-token, redeem)",
            other.chars().take(40).collect::<String>()
        ))),
    }
}

/// `{"token":"…","expires_s":300}` in a zeroized buffer.
pub fn token_reply(token: &str, expires_s: u64) -> SecretBytes {
    let mut out = SecretBytes::with_capacity(token.len() + 64);
    out.push(b"{\"token\":\"");
    out.push(token.as_bytes());
    out.push(format!("\",\"expires_s\":{expires_s}}}\n").as_bytes());
    out
}

/// The redeem reply: chain, key mode, subject, serial and the PKCS#8 in base64, built in a
/// zeroized buffer sized once.
pub fn redeem_reply(identity: &ChildIdentity) -> SecretBytes {
    let head = json!({
        "chain_pem": identity.chain_pem,
        "key_mode": identity.key_mode.name(),
        "serial": identity.peer.serial,
        "subject": crate::ca_client::subject_text(&identity.peer),
    })
    .to_string();
    let b64_len = identity.pkcs8.len().div_ceil(3) * 4;
    let mut out = SecretBytes::with_capacity(head.len() + b64_len + 32);
    // `head` ends with '}': reopen it for the key field.
    out.push(&head.as_bytes()[..head.len() - 1]);
    out.push(b",\"key_pkcs8_b64\":\"");
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(identity.pkcs8.as_slice(), out.spare_mut())
        .unwrap_or(0);
    out.advance(n);
    out.push(b"\"}\n");
    out
}

/// The redeem reply as the callout reads it; `key_pkcs8_b64` is borrowed from the zeroized
/// reply buffer.
#[derive(Debug, Deserialize)]
pub struct RedeemReply<'a> {
    pub chain_pem: String,
    pub key_mode: String,
    #[serde(default)]
    pub serial: String,
    #[serde(default)]
    pub subject: String,
    #[serde(borrow)]
    pub key_pkcs8_b64: &'a str,
}

/// An error reply, if `value` is one.
pub fn error_of(value: &Value) -> Option<ApiError> {
    let code = value.get("error")?.as_str()?;
    let reason = value
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("no reason given");
    Some(ApiError {
        code: leak_code(code),
        reason: reason.to_string(),
    })
}

/// Error codes are a small fixed set; unknown ones from a newer certmgr become "error".
fn leak_code(code: &str) -> &'static str {
    const CODES: &[&str] = &[
        "bad_request",
        "forbidden",
        "not_ready",
        "token_invalid",
        "token_unknown",
        "token_used",
        "token_expired",
        "identity_failed",
        "too_many_tokens",
        "invalid_name",
        "capability_missing",
        "timeout",
        "busy",
        "internal",
    ];
    CODES
        .iter()
        .find(|c| **c == code)
        .copied()
        .unwrap_or("error")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_identity::keys::KeyMode;
    use tessera_identity::profile::PeerIdentity;

    #[test]
    fn requests_parse_and_protocol_errors_say_what_is_wrong() {
        assert_eq!(parse(br#"{"op":"status"}"#).unwrap(), Request::Status);
        assert_eq!(parse(br#"{"op":"trust"}"#).unwrap(), Request::Trust);
        assert_eq!(
            parse(br#"{"op":"child-token","subsystem":"hub","agent_id":"hub"}"#).unwrap(),
            Request::ChildToken(ChildRequest {
                subsystem: "hub".into(),
                agent_id: "hub".into(),
                capabilities: vec![],
                uris: vec![],
            })
        );
        // agent_id defaults to the subsystem.
        assert!(matches!(
            parse(br#"{"op":"child-token","subsystem":"node"}"#).unwrap(),
            Request::ChildToken(ChildRequest { agent_id, .. }) if agent_id == "node"
        ));
        assert_eq!(
            parse(br#"{"op":"redeem","token":"abc","pid":7}"#).unwrap(),
            Request::Redeem {
                token: "abc",
                pid: Some(7)
            }
        );
        for (line, needle) in [
            (&b"not json"[..], "not a request"),
            (br#"{"op":"launch"}"#, "unknown op"),
            (
                br#"{"op":"status","token":"x"}"#,
                "takes no field \"token\"",
            ),
            (br#"{"op":"child-token"}"#, "needs \"subsystem\""),
            (br#"{"op":"redeem"}"#, "needs \"token\""),
            (br#"{"op":"status","extra":1}"#, "unknown field"),
            (br#"{"op":"child-token","subsystem":7}"#, "invalid type"),
        ] {
            let e = parse(line).unwrap_err();
            assert_eq!(e.code, "bad_request");
            assert!(e.reason.contains(needle), "{line:?}: {e}");
        }
    }

    #[test]
    fn redeem_reply_round_trips_through_the_callout_parser() {
        let id = ChildIdentity {
            chain_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            key_mode: KeyMode::EcdsaP256,
            pkcs8: SecretBytes::from_slice(&[1, 2, 3, 4, 5]),
            peer: PeerIdentity {
                cluster: "c".into(),
                subsystem: "hub".into(),
                node: "n1".into(),
                agent_id: "hub".into(),
                capabilities: vec![],
                serial: "0a".into(),
                not_after: std::time::SystemTime::now(),
            },
        };
        let reply = redeem_reply(&id);
        assert_eq!(reply.as_slice().last(), Some(&b'\n'));
        let parsed: RedeemReply<'_> = serde_json::from_slice(reply.as_slice()).unwrap();
        assert_eq!(parsed.chain_pem, id.chain_pem);
        assert_eq!(parsed.key_mode, "ecdsa-p256");
        assert_eq!(parsed.subject, "DC=c, O=hub, OU=n1, UID=hub");
        assert_eq!(parsed.key_pkcs8_b64, "AQIDBAU=");
        let token = token_reply("tok", 300);
        let v: Value = serde_json::from_slice(token.as_slice()).unwrap();
        assert_eq!(v, json!({"token": "tok", "expires_s": 300}));
        let e = error_of(&json!({"error": "token_used", "reason": "r"})).unwrap();
        assert_eq!((e.code, e.reason.as_str()), ("token_used", "r"));
        assert_eq!(
            error_of(&json!({"error": "new_code"})).unwrap().code,
            "error"
        );
        assert!(error_of(&json!({"token": "x"})).is_none());
    }
}
