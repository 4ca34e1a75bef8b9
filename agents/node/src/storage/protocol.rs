//! The storage socket protocol: JSON lines over /run/tessera/storage.sock (root only), one
//! request, one reply ([`crate::ipc`]).
//!
//! | request | reply |
//! | --- | --- |
//! | `{"op":"status"}` | `{"state":"ready"\|"no_disk"\|"refused"\|"failed","reason":…,"backend":…,"device":…,"usage":{…}}` |
//! | `{"op":"list"}` | `{"backend":…,"volumes":[{name,kind,path,readonly,origin,size_bytes}],"usage":{total_bytes,free_bytes}}` |
//! | `{"op":"create","name":"data","size":1073741824}` | the new volume (`size` only for lvm-thin) |
//! | `{"op":"snapshot","source":"data","name":"s1","readonly":true}` | the new snapshot |
//! | `{"op":"delete","name":"s1"}` | `{"ok":true}` |
//!
//! Errors: `{"error":CODE,"reason":…}`, CODE one of bad_request, not_found, exists, no_space,
//! no_storage (no data disk, or it was refused: the reason says why), internal.

use serde::Deserialize;

use super::name::VolumeName;
use crate::ipc::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Status,
    List,
    Create {
        name: VolumeName,
        size: Option<u64>,
    },
    Snapshot {
        source: VolumeName,
        name: VolumeName,
        readonly: bool,
    },
    Delete {
        name: VolumeName,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    op: String,
    name: Option<String>,
    source: Option<String>,
    size: Option<u64>,
    readonly: Option<bool>,
}

fn name(field: &str, v: &Option<String>) -> Result<VolumeName, ApiError> {
    let v = v
        .as_deref()
        .ok_or_else(|| ApiError::new("bad_request", format!("{field}: missing")))?;
    VolumeName::parse(v).map_err(|e| ApiError::new("bad_request", e.to_string()))
}

pub fn parse(line: &[u8]) -> Result<Request, ApiError> {
    let raw: Raw = serde_json::from_slice(line).map_err(|e| {
        ApiError::new(
            "bad_request",
            format!(
                "not a request ({e}); send one JSON object per line such as {{\"op\":\"list\"}}"
            ),
        )
    })?;
    let only = |allowed: &[&str]| -> Result<(), ApiError> {
        let set = [
            ("name", raw.name.is_some()),
            ("source", raw.source.is_some()),
            ("size", raw.size.is_some()),
            ("readonly", raw.readonly.is_some()),
        ];
        match set.iter().find(|(k, s)| *s && !allowed.contains(k)) {
            Some((k, _)) => Err(ApiError::new(
                "bad_request",
                format!("op {:?} takes no field {k:?}", raw.op),
            )),
            None => Ok(()),
        }
    };
    match raw.op.as_str() {
        "status" => only(&[]).map(|_| Request::Status),
        "list" => only(&[]).map(|_| Request::List),
        "create" => {
            only(&["name", "size"])?;
            if raw.size == Some(0) {
                return Err(ApiError::new(
                    "bad_request",
                    "size: 0 bytes; give e.g. 1073741824 (1 GiB)",
                ));
            }
            Ok(Request::Create {
                name: name("name", &raw.name)?,
                size: raw.size,
            })
        }
        "snapshot" => {
            only(&["name", "source", "readonly"])?;
            Ok(Request::Snapshot {
                source: name("source", &raw.source)?,
                name: name("name", &raw.name)?,
                readonly: raw.readonly.unwrap_or(false),
            })
        }
        "delete" => {
            only(&["name"])?;
            Ok(Request::Delete {
                name: name("name", &raw.name)?,
            })
        }
        other => Err(ApiError::new(
            "bad_request",
            format!(
                "unknown op {:?} (status, list, create, snapshot, delete)",
                other.chars().take(40).collect::<String>()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> VolumeName {
        VolumeName::parse(s).unwrap()
    }

    #[test]
    fn requests_parse() {
        assert_eq!(parse(br#"{"op":"list"}"#), Ok(Request::List));
        assert_eq!(
            parse(br#"{"op":"create","name":"data","size":4096}"#),
            Ok(Request::Create {
                name: n("data"),
                size: Some(4096)
            })
        );
        assert_eq!(
            parse(br#"{"op":"snapshot","source":"data","name":"s1","readonly":true}"#),
            Ok(Request::Snapshot {
                source: n("data"),
                name: n("s1"),
                readonly: true
            })
        );
        assert_eq!(
            parse(br#"{"op":"delete","name":"s1"}"#),
            Ok(Request::Delete { name: n("s1") })
        );
    }

    #[test]
    fn bad_requests_say_why() {
        let reason = |l: &[u8]| parse(l).unwrap_err().reason;
        assert!(reason(br#"{"op":"create","name":"../etc"}"#).contains("contains a slash"));
        assert!(reason(br#"{"op":"create"}"#).starts_with("name: missing"));
        assert!(reason(br#"{"op":"delete","name":"a","size":1}"#).contains("\"size\""));
        assert!(reason(br#"{"op":"create","name":"a","size":0}"#).starts_with("size: 0"));
        assert!(reason(br#"{"op":"format"}"#).contains("unknown op"));
        assert!(reason(b"nope").starts_with("not a request"));
    }
}
