//! The messages of the local channel (component ↔ hub) and of hub-to-hub links. Each is the
//! JSON header of a [`crate::codec::Frame`]; attachments travel beside it.
//!
//! Delivery is best effort (thesis 4.7.2): a request, reply, cast or event may be lost when a
//! hub, link or component goes away or a queue is full. Every request carries an expiry after
//! which the hub answers `expired` and drops late replies; retries and stronger semantics are
//! the requester's business.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::HubError;
use crate::id::TargetId;

/// What a request is addressed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A group by name: the selector picks its members.
    Group(String),
    /// One component.
    Component(TargetId),
}

/// Which members of a group a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    /// One member (one on this hub if there is one).
    #[default]
    Any,
    /// Every member.
    All,
}

impl std::str::FromStr for Selector {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "any" => Ok(Selector::Any),
            "all" => Ok(Selector::All),
            other => Err(format!("selector {other:?} is neither \"any\" nor \"all\"")),
        }
    }
}

/// What a monitor watches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Watch {
    /// Members joining and leaving a group.
    Group(String),
    /// A component terminating or being lost with its hub.
    Component(TargetId),
    /// Attribute values of a target (all names when `names` is empty).
    Attributes {
        target: Target,
        #[serde(default)]
        names: Vec<String>,
    },
}

/// A monitor's notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Joined {
        group: String,
        member: TargetId,
    },
    Left {
        group: String,
        member: TargetId,
    },
    /// `reason`: `disconnected` (it closed its channel), `hub_lost` (its hub left the cluster
    /// or was partitioned away) or `unknown` (not present when the monitor was set).
    Terminated {
        component: TargetId,
        reason: String,
    },
    /// `value: null` means removed.
    Attribute {
        name: String,
        value: Option<Value>,
    },
}

/// A component as others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub component: TargetId,
    pub name: String,
    #[serde(rename = "type")]
    pub component_type: String,
    pub hub: String,
}

/// Success or failure of one invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok(Value),
    Error(HubError),
}

/// Component → hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClientMsg {
    /// First message: present as a component. The hub answers `welcome` with its id.
    Hello {
        name: String,
        #[serde(rename = "type")]
        component_type: String,
    },
    Register {
        corr: u64,
        groups: Vec<String>,
    },
    Unregister {
        corr: u64,
        groups: Vec<String>,
    },
    Select {
        corr: u64,
        group: String,
        #[serde(default)]
        selector: Selector,
    },
    /// Request-reply. Replies carry `corr`; with selector `all`, one per member.
    Call {
        corr: u64,
        target: Target,
        #[serde(default)]
        object: String,
        operation: String,
        #[serde(default)]
        inputs: Value,
        #[serde(default)]
        selector: Selector,
        /// Milliseconds; the hub's default when absent.
        #[serde(default)]
        expiry_ms: Option<u64>,
    },
    /// Fire and forget: no reply, not even an error.
    Cast {
        target: Target,
        #[serde(default)]
        object: String,
        operation: String,
        #[serde(default)]
        inputs: Value,
        #[serde(default)]
        selector: Selector,
    },
    /// The answer to an `invoke`.
    Reply {
        invocation: u64,
        result: Outcome,
    },
    /// Set (value) or remove (null) attributes of the component itself, or of a group it is a
    /// member of.
    UpdateAttributes {
        corr: u64,
        #[serde(default)]
        group: Option<String>,
        values: BTreeMap<String, Option<Value>>,
    },
    SelectAttributes {
        corr: u64,
        target: Target,
        #[serde(default)]
        names: Vec<String>,
    },
    Monitor {
        corr: u64,
        watch: Watch,
    },
    Unmonitor {
        corr: u64,
        monitor: u64,
    },
}

/// Hub → component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum HubMsg {
    Welcome {
        component: TargetId,
        hub: String,
    },
    /// The answer to a request. `remaining`: replies still expected for this `corr`.
    Reply {
        corr: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<TargetId>,
        result: Outcome,
        #[serde(default)]
        remaining: u32,
    },
    /// A call or cast for this component. `reply: false` for casts.
    Invoke {
        invocation: u64,
        caller: String,
        object: String,
        operation: String,
        inputs: Value,
        expiry_ms: u64,
        reply: bool,
    },
    Event {
        monitor: u64,
        #[serde(flatten)]
        event: Event,
    },
}

/// Replies' payloads (`Outcome::Ok` values) of the non-call requests.
pub mod replies {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Counts {
        /// Members of each group at the time of the request (including the requester).
        pub counts: BTreeMap<String, usize>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Members {
        pub members: Vec<Member>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Attributes {
        pub attributes: BTreeMap<String, Value>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct MonitorSet {
        pub monitor: u64,
    }
}

/// Hub → hub, over a persistent mTLS link. Each hub dials the others for what it sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum PeerMsg {
    /// First frame on a link; must match the hub named by the link's certificate.
    Hello { hub: String },
    /// A call (`reply: true`) or cast for a component; `id` names it at the origin hub.
    Forward {
        id: u64,
        /// The hub that holds the request; the response goes straight back to it.
        origin: String,
        component: TargetId,
        caller: String,
        object: String,
        operation: String,
        inputs: Value,
        expiry_ms: u64,
        reply: bool,
        hops: u8,
    },
    /// The answer to a forwarded call (the origin hub maps `id` back to its requester).
    Response {
        id: u64,
        from: TargetId,
        result: Outcome,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms_are_readable_json() {
        let m = ClientMsg::Call {
            corr: 1,
            target: Target::Group("web".into()),
            object: "".into(),
            operation: "ping".into(),
            inputs: serde_json::json!({"x": 1}),
            selector: Selector::All,
            expiry_ms: Some(100),
        };
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.contains(r#""op":"call""#), "{text}");
        assert!(text.contains(r#""target":{"group":"web"}"#), "{text}");
        assert!(text.contains(r#""selector":"all""#), "{text}");
        let back: ClientMsg = serde_json::from_str(&text).unwrap();
        assert_eq!(back, m);
        let ev = HubMsg::Event {
            monitor: 3,
            event: Event::Left {
                group: "web".into(),
                member: crate::id::TargetId::group("x"),
            },
        };
        let text = serde_json::to_string(&ev).unwrap();
        assert!(text.contains(r#""event":"left""#), "{text}");
        assert_eq!(serde_json::from_str::<HubMsg>(&text).unwrap(), ev);
    }

    #[test]
    fn defaults_fill_optional_fields() {
        let m: ClientMsg = serde_json::from_str(
            r#"{"op":"call","corr":5,"target":{"group":"web"},"operation":"get"}"#,
        )
        .unwrap();
        match m {
            ClientMsg::Call {
                selector,
                expiry_ms,
                inputs,
                ..
            } => {
                assert_eq!(selector, Selector::Any);
                assert_eq!(expiry_ms, None);
                assert_eq!(inputs, Value::Null);
            }
            other => panic!("{other:?}"),
        }
    }
}
