//! The container socket protocol: JSON lines over /run/tessera/container.sock (root only),
//! one request, one reply (`tessera_common::ipc`). The console CLI and the node API use it.
//!
//! | request | reply |
//! | --- | --- |
//! | `{"op":"status"}` | `{"available":bool,"reason":…,"backend":…}` |
//! | `{"op":"import","path":"/var/tmp/b.tar.zst","sha256":"sha256:…"}` | the template, `fresh` false when it existed |
//! | `{"op":"templates"}` | `{"templates":[{digest,name,kind,files,bytes,source}]}` |
//! | `{"op":"list"}` | `{"containers":[{name,template,state,exit,pid,restarts,restart}]}` |
//! | `{"op":"create","name":"web","template":"<digest or prefix>","args":[…],"env":["K=V"],"memory_max":bytes,"pids_max":N,"cpu_percent":N,"restart":"no"\|"on-failure"\|"always","net":"bridge"\|"none"\|"host","ports":[{"host":8080,"container":80,"protocol":"tcp","scope":"cluster"}],"hub":bool,"start":bool,"identity":{"subsystem":"web","capabilities":[…]}}` | the container (net defaults to bridge) |
//! | `{"op":"start"\|"inspect","name":"web"}` | the container (inspect adds cgroup stats) |
//! | `{"op":"stop","name":"web","grace_ms":5000}` | the container, stopped |
//! | `{"op":"kill","name":"web","signal":"SIGKILL"}` | `{"ok":true}` |
//! | `{"op":"delete","name":"web","force":bool}` | `{"ok":true}` |
//! | `{"op":"wait","name":"web","timeout_ms":60000}` | the container once its run has ended (`exit` set); `timeout` if it runs on |
//! | `{"op":"logs","name":"web","offset":N,"tail":N}` | `{"lines":[event…],"offset":N,"running":bool}`: from `offset` (none: the whole log, or its last `tail` lines); ask again with the offset to follow |
//!
//! Errors: `{"error":CODE,"reason":…}`: bad_request, not_found, exists, wrong_state,
//! unavailable (no data disk: the reason says why), timeout (a wait that ran out), the import refusals of
//! `archive::ImportError::code`, the storage service's codes, internal.

use serde::Deserialize;
use tessera_common::api_error::ApiError;

use crate::instances::Overrides;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    // Empty braces: deny_unknown_fields then refuses extra fields (a unit variant would not).
    Status {},
    Import {
        path: String,
        #[serde(default)]
        sha256: Option<String>,
    },
    Templates {},
    List {},
    Create {
        name: String,
        template: String,
        #[serde(default)]
        args: Option<Vec<String>>,
        #[serde(default)]
        env: Vec<String>,
        #[serde(default)]
        memory_max: Option<i64>,
        #[serde(default)]
        pids_max: Option<i64>,
        #[serde(default)]
        cpu_percent: Option<u32>,
        #[serde(default)]
        restart: Option<String>,
        #[serde(default)]
        net: Option<String>,
        /// `[{"host":8080,"container":80,"protocol":"tcp","scope":"cluster"}]`
        #[serde(default)]
        ports: Vec<crate::instances::Port>,
        /// Bind the node's hub socket directory into the container.
        #[serde(default)]
        hub: bool,
        #[serde(default)]
        start: bool,
        #[serde(default)]
        // Boxed: the variant is large enough already.
        identity: Option<Box<crate::identity::IdentitySpec>>,
    },
    Start {
        name: String,
    },
    Stop {
        name: String,
        #[serde(default)]
        grace_ms: Option<u64>,
    },
    Kill {
        name: String,
        #[serde(default)]
        signal: Option<String>,
    },
    Delete {
        name: String,
        #[serde(default)]
        force: bool,
    },
    Inspect {
        name: String,
    },
    /// Until the container's current run ends (a created, unstarted one is refused).
    Wait {
        name: String,
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    Logs {
        name: String,
        #[serde(default)]
        offset: Option<u64>,
        #[serde(default)]
        tail: Option<usize>,
    },
}

impl Request {
    /// The overrides a create request carries.
    pub fn overrides(&self) -> Overrides {
        match self {
            Request::Create {
                args,
                env,
                memory_max,
                pids_max,
                cpu_percent,
                hub,
                identity,
                ..
            } => Overrides {
                args: args.clone(),
                env: env.clone(),
                memory_max: *memory_max,
                pids_max: *pids_max,
                cpu_percent: *cpu_percent,
                hub: *hub,
                identity: identity.as_deref().cloned(),
            },
            _ => Overrides::default(),
        }
    }
}

pub fn parse(line: &[u8]) -> Result<Request, ApiError> {
    serde_json::from_slice(line).map_err(|e| {
        ApiError::new(
            "bad_request",
            format!(
                "not a request ({e}); send one JSON object per line such as {{\"op\":\"list\"}}"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_unknown_fields_are_refused() {
        assert_eq!(parse(br#"{"op":"list"}"#).unwrap(), Request::List {});
        assert_eq!(
            parse(br#"{"op":"stop","name":"web","grace_ms":100}"#).unwrap(),
            Request::Stop {
                name: "web".into(),
                grace_ms: Some(100)
            }
        );
        let c = parse(br#"{"op":"create","name":"w","template":"abc","args":["/bin/true"],"memory_max":1024}"#).unwrap();
        assert_eq!(c.overrides().args, Some(vec!["/bin/true".to_string()]));
        assert_eq!(c.overrides().memory_max, Some(1024));
        let c =
            parse(br#"{"op":"create","name":"w","template":"abc","identity":{"subsystem":"web"}}"#)
                .unwrap();
        assert_eq!(
            c.overrides().identity.map(|i| i.subsystem).as_deref(),
            Some("web")
        );
        let e = parse(br#"{"op":"create","name":"w","template":"abc","identity":{"subsystem":"web","key":"x"}}"#).unwrap_err();
        assert!(e.reason.contains("unknown field `key`"), "{}", e.reason);
        assert_eq!(
            parse(br#"{"op":"wait","name":"w"}"#).unwrap(),
            Request::Wait {
                name: "w".into(),
                timeout_ms: None
            }
        );
        let e = parse(br#"{"op":"list","x":1}"#).unwrap_err();
        assert_eq!(e.code, "bad_request");
        let e = parse(br#"{"op":"explode"}"#).unwrap_err();
        assert!(e.reason.contains("explode"), "{}", e.reason);
    }
}
