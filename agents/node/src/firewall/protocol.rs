//! The firewall socket protocol: JSON lines over /run/tessera/firewall.sock, one request, one
//! reply, then close (like certmgr's). Root only.
//!
//! | request | reply |
//! | --- | --- |
//! | `{"op":"show"}` | `{"cluster_cidrs":[…],"exposures":[…],"table":{chains,sets}}` |
//! | `{"op":"expose","protocol":"tcp","port":8080,"scope":"cluster","owner":"web"}` | `{"ok":true,"exposures":[…]}` once the new ruleset is in force |
//! | `{"op":"unexpose","protocol":"tcp","port":8080}` | `{"ok":true,"removed":true}` |
//! | `{"op":"ruleset"}` | the nft JSON transaction in force |
//!
//! `protocol` defaults to tcp, `owner` is optional. Errors: `{"error":CODE,"reason":…}` with
//! CODE one of bad_request, forbidden, rejected (nft refused; the old ruleset stays), internal.

use serde::Deserialize;
use serde_json::Value;

use super::model::{self, Exposure, FieldError, Protocol};

pub use crate::ipc::ApiError;

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> ApiError {
        ApiError::new("bad_request", e.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Show,
    Ruleset,
    Expose(Exposure),
    Unexpose { protocol: Protocol, port: u16 },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    op: String,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    port: Option<Value>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    owner: Option<String>,
}

fn port_of(raw: &Raw) -> Result<u16, ApiError> {
    match &raw.port {
        None => Err(FieldError::new("port", "missing; give the port number (1-65535)").into()),
        Some(v) => match v.as_i64() {
            Some(n) => Ok(model::port("port", n)?),
            None => Err(FieldError::new("port", format!("{v} is not a port; use 1-65535")).into()),
        },
    }
}

fn protocol_of(raw: &Raw) -> Result<Protocol, ApiError> {
    Ok(match &raw.protocol {
        None => Protocol::Tcp,
        Some(p) => Protocol::parse("protocol", p)?,
    })
}

/// Parses one request line.
pub fn parse(line: &[u8]) -> Result<Request, ApiError> {
    let raw: Raw = serde_json::from_slice(line).map_err(|e| {
        ApiError::new(
            "bad_request",
            format!(
                "not a request ({e}); send one JSON object per line such as {{\"op\":\"show\"}}"
            ),
        )
    })?;
    let no = |fields: &[(&str, bool)]| -> Result<(), ApiError> {
        match fields.iter().find(|(_, set)| *set) {
            Some((k, _)) => Err(ApiError::new(
                "bad_request",
                format!("op {:?} takes no field {k:?}", raw.op),
            )),
            None => Ok(()),
        }
    };
    let fields = [
        ("protocol", raw.protocol.is_some()),
        ("port", raw.port.is_some()),
        ("scope", raw.scope.is_some()),
        ("owner", raw.owner.is_some()),
    ];
    match raw.op.as_str() {
        "show" => {
            no(&fields)?;
            Ok(Request::Show)
        }
        "ruleset" => {
            no(&fields)?;
            Ok(Request::Ruleset)
        }
        "expose" => {
            let scope = match &raw.scope {
                None => {
                    return Err(FieldError::new(
                        "scope",
                        "missing; use node-local, cluster or public",
                    )
                    .into())
                }
                Some(s) => model::Scope::parse("scope", s)?,
            };
            let owner = match &raw.owner {
                None => None,
                Some(o) => Some(model::owner("owner", o)?),
            };
            Ok(Request::Expose(Exposure {
                protocol: protocol_of(&raw)?,
                port: port_of(&raw)?,
                scope,
                owner,
            }))
        }
        "unexpose" => {
            no(&fields[2..])?;
            Ok(Request::Unexpose {
                protocol: protocol_of(&raw)?,
                port: port_of(&raw)?,
            })
        }
        other => Err(ApiError::new(
            "bad_request",
            format!(
                "unknown op {:?} (show, expose, unexpose, ruleset)",
                other.chars().take(40).collect::<String>()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::model::Scope;

    #[test]
    fn requests_parse() {
        assert_eq!(parse(br#"{"op":"show"}"#), Ok(Request::Show));
        assert_eq!(
            parse(br#"{"op":"expose","port":8080,"scope":"cluster","owner":"web"}"#),
            Ok(Request::Expose(Exposure {
                protocol: Protocol::Tcp,
                port: 8080,
                scope: Scope::Cluster,
                owner: Some("web".into()),
            }))
        );
        assert_eq!(
            parse(br#"{"op":"unexpose","protocol":"udp","port":53}"#),
            Ok(Request::Unexpose {
                protocol: Protocol::Udp,
                port: 53
            })
        );
    }

    #[test]
    fn bad_requests_name_the_field() {
        let reason = |line: &[u8]| parse(line).unwrap_err().reason;
        assert!(reason(br#"{"op":"expose","port":0,"scope":"public"}"#)
            .starts_with("port: 0 is not a port"));
        assert!(reason(br#"{"op":"expose","port":"80","scope":"public"}"#).starts_with("port: "));
        assert!(reason(br#"{"op":"expose","port":80}"#).starts_with("scope: missing"));
        assert!(
            reason(br#"{"op":"expose","port":80,"scope":"world"}"#).starts_with("scope: `world`")
        );
        assert!(
            reason(br#"{"op":"expose","port":80,"scope":"public","protocol":"icmp"}"#)
                .starts_with("protocol: `icmp`")
        );
        assert!(
            reason(br#"{"op":"expose","port":80,"scope":"public","owner":"a b"}"#)
                .starts_with("owner: ")
        );
        assert!(reason(br#"{"op":"unexpose","port":80,"scope":"public"}"#).contains("\"scope\""));
        assert!(reason(br#"{"op":"show","extra":1}"#).contains("extra"));
        assert!(reason(br#"{"op":"flush"}"#).contains("unknown op"));
    }
}
