//! The firewall socket protocol: JSON lines over /run/tessera/firewall.sock, one request, one
//! reply, then close (like certmgr's). Root only.
//!
//! | request | reply |
//! | --- | --- |
//! | `{"op":"show"}` | `{"cluster_cidrs":[…],"exposures":[…],"table":{chains,sets}}` |
//! | `{"op":"expose","protocol":"tcp","port":8080,"scope":"cluster","owner":"web"}` | `{"ok":true,"exposures":[…]}` once the new ruleset is in force |
//! | `{"op":"unexpose","protocol":"tcp","port":8080}` | `{"ok":true,"removed":true}` |
//! | `{"op":"ruleset"}` | the nft JSON transaction in force |
//! | `{"op":"publish","protocol":"tcp","port":8080,"to":"10.88.0.2:80","scope":"cluster","owner":"container/web"}` | `{"ok":true,"publications":[…]}`: host port 8080 DNATed to the container, from the scope |
//! | `{"op":"unpublish","protocol":"tcp","port":8080}` | `{"ok":true,"removed":true}` |
//! | `{"op":"bridge","interface":"tessera0","subnet":"10.88.0.0/24"}` | `{"ok":true,"changed":bool}`: the containers' bridge forwarded and masqueraded |
//!
//! `protocol` defaults to tcp, `owner` is optional. A port is exposed or published, not both
//! (`exists`); only a publication's owner may replace it. Errors: `{"error":CODE,"reason":…}` with
//! CODE one of bad_request, forbidden, rejected (nft refused; the old ruleset stays), internal.

use serde::Deserialize;
use serde_json::Value;

use super::model::{self, Bridge, Cidr, Exposure, FieldError, Protocol, Publication};

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
    Publish(Publication),
    Unpublish { protocol: Protocol, port: u16 },
    Bridge(Bridge),
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
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    interface: Option<String>,
    #[serde(default)]
    subnet: Option<String>,
}

fn scope_of(raw: &Raw) -> Result<model::Scope, ApiError> {
    match &raw.scope {
        None => Err(FieldError::new("scope", "missing; use node-local, cluster or public").into()),
        Some(s) => Ok(model::Scope::parse("scope", s)?),
    }
}

fn owner_of(raw: &Raw) -> Result<Option<String>, ApiError> {
    Ok(match &raw.owner {
        None => None,
        Some(o) => Some(model::owner("owner", o)?),
    })
}

fn required<'a>(
    value: &'a Option<String>,
    field: &str,
    example: &str,
) -> Result<&'a str, ApiError> {
    value
        .as_deref()
        .ok_or_else(|| FieldError::new(field, format!("missing; e.g. {example}")).into())
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
    // Ordered so that each op's allowed fields lead: show/ruleset take none, unexpose and
    // unpublish the first two, expose the first four, publish five, bridge only the last two.
    let fields = [
        ("protocol", raw.protocol.is_some()),
        ("port", raw.port.is_some()),
        ("scope", raw.scope.is_some()),
        ("owner", raw.owner.is_some()),
        ("to", raw.to.is_some()),
        ("interface", raw.interface.is_some()),
        ("subnet", raw.subnet.is_some()),
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
            no(&fields[4..])?;
            Ok(Request::Expose(Exposure {
                protocol: protocol_of(&raw)?,
                port: port_of(&raw)?,
                scope: scope_of(&raw)?,
                owner: owner_of(&raw)?,
            }))
        }
        "unexpose" | "unpublish" => {
            no(&fields[2..])?;
            let (protocol, port) = (protocol_of(&raw)?, port_of(&raw)?);
            Ok(if raw.op == "unexpose" {
                Request::Unexpose { protocol, port }
            } else {
                Request::Unpublish { protocol, port }
            })
        }
        "publish" => {
            no(&fields[5..])?;
            let to = required(
                &raw.to,
                "to",
                "\"10.88.0.2:80\" (the container's IPv4 address and port)",
            )?;
            let to: std::net::SocketAddrV4 = to.parse().map_err(|_| {
                FieldError::new(
                    "to",
                    format!(
                        "`{}` is not IPv4-address:port, e.g. 10.88.0.2:80",
                        to.chars().take(60).collect::<String>()
                    ),
                )
            })?;
            if to.port() == 0 {
                return Err(FieldError::new("to", "port 0; use 1-65535").into());
            }
            Ok(Request::Publish(Publication {
                protocol: protocol_of(&raw)?,
                port: port_of(&raw)?,
                to,
                scope: scope_of(&raw)?,
                owner: owner_of(&raw)?,
            }))
        }
        "bridge" => {
            no(&fields[..5])?;
            let interface = model::interface(
                "interface",
                required(&raw.interface, "interface", "\"tessera0\"")?,
            )?;
            let subnet = Cidr::parse(
                "subnet",
                required(&raw.subnet, "subnet", "\"10.88.0.0/24\"")?,
            )?;
            if !subnet.is_ipv4() {
                return Err(FieldError::new(
                    "subnet",
                    "containers get IPv4 addresses; give an IPv4 network",
                )
                .into());
            }
            Ok(Request::Bridge(Bridge { interface, subnet }))
        }
        other => Err(ApiError::new(
            "bad_request",
            format!(
                "unknown op {:?} (show, expose, unexpose, publish, unpublish, bridge, ruleset)",
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
        assert!(
            reason(br#"{"op":"expose","port":80,"scope":"public","to":"1.2.3.4:5"}"#)
                .contains("\"to\"")
        );
    }

    #[test]
    fn publications_and_the_bridge_parse_and_bad_ones_name_the_field() {
        assert_eq!(
            parse(br#"{"op":"publish","port":8080,"to":"10.88.0.2:80","scope":"cluster","owner":"container/web"}"#),
            Ok(Request::Publish(Publication {
                protocol: Protocol::Tcp,
                port: 8080,
                to: "10.88.0.2:80".parse().unwrap(),
                scope: Scope::Cluster,
                owner: Some("container/web".into()),
            }))
        );
        assert_eq!(
            parse(br#"{"op":"unpublish","protocol":"udp","port":53}"#),
            Ok(Request::Unpublish {
                protocol: Protocol::Udp,
                port: 53
            })
        );
        assert_eq!(
            parse(br#"{"op":"bridge","interface":"tessera0","subnet":"10.88.0.0/24"}"#),
            Ok(Request::Bridge(Bridge {
                interface: "tessera0".into(),
                subnet: Cidr::parse("s", "10.88.0.0/24").unwrap(),
            }))
        );
        let reason = |line: &[u8]| parse(line).unwrap_err().reason;
        assert!(
            reason(br#"{"op":"publish","port":80,"scope":"public"}"#).starts_with("to: missing")
        );
        assert!(
            reason(br#"{"op":"publish","port":80,"scope":"public","to":"web:80"}"#)
                .starts_with("to: `web:80`")
        );
        assert!(
            reason(br#"{"op":"publish","port":80,"scope":"public","to":"[::1]:80"}"#)
                .starts_with("to: ")
        );
        assert!(reason(br#"{"op":"publish","port":80,"to":"10.0.0.2:80"}"#)
            .starts_with("scope: missing"));
        assert!(
            reason(br#"{"op":"bridge","interface":"a b","subnet":"10.88.0.0/24"}"#)
                .starts_with("interface: ")
        );
        assert!(
            reason(br#"{"op":"bridge","interface":"br0","subnet":"10.88.0.1/24"}"#)
                .contains("host bits")
        );
        assert!(
            reason(br#"{"op":"bridge","interface":"br0","subnet":"fd00::/64"}"#)
                .starts_with("subnet: ")
        );
        assert!(
            reason(br#"{"op":"bridge","interface":"br0","subnet":"10.88.0.0/24","port":1}"#)
                .contains("\"port\"")
        );
    }
}
