//! The node life-cycle of thesis 4.5.2 as explicit state: initializing → available ⇄
//! unavailable, each state with the reason it was entered. [`transition`] is a pure function
//! from (state, event) to the next state; the agent applies it, logs every change as an event
//! and reports the state through the API and the metrics.
//!
//! Rules:
//! - initializing → available when the agent is up (API listening, PID 1 answering), or →
//!   unavailable if health checks already fail;
//! - available → unavailable when a health check fails, or when an operator marks it;
//! - unavailable → available when the failing checks pass again — unless an operator marked
//!   it unavailable: then only an operator's mark-available brings it back, and that is
//!   refused while checks fail (the reason names them).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeState {
    Initializing,
    Available,
    Unavailable,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Initializing => "initializing",
            NodeState::Available => "available",
            NodeState::Unavailable => "unavailable",
        }
    }
}

/// The life-cycle state and why the node is in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    pub state: NodeState,
    pub reason: String,
    /// Set when an operator marked the node unavailable: who and why it stays so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
    /// Services whose health checks fail now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failing: Vec<String>,
}

impl Lifecycle {
    pub fn new() -> Lifecycle {
        Lifecycle {
            state: NodeState::Initializing,
            reason: "node agent starting".into(),
            held_by: None,
            failing: Vec::new(),
        }
    }
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle::new()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The agent finished initializing.
    AgentReady,
    /// The set of services whose health checks fail (empty: all pass).
    Health { failing: Vec<String> },
    /// An operator (or a peer with the `node` capability) asks for a state.
    Mark {
        available: bool,
        reason: String,
        by: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("a reason is required to mark the node unavailable: say why, e.g. {{\"state\":\"unavailable\",\"reason\":\"kernel upgrade\"}}")]
    NoReason,
    #[error("the node is still initializing; mark it available once `tessera status` shows the node agent ready")]
    Initializing,
    #[error("health checks fail for {}; fix them (GET /v1/status shows each check's reason) before marking the node available", .0.join(", "))]
    ChecksFailing(Vec<String>),
}

/// The next life-cycle (equal to `current` when nothing changes), or why a mark is refused.
pub fn transition(current: &Lifecycle, event: Event) -> Result<Lifecycle, Refused> {
    let mut next = current.clone();
    match event {
        Event::AgentReady => {
            if current.state == NodeState::Initializing && current.held_by.is_none() {
                if current.failing.is_empty() {
                    next.state = NodeState::Available;
                    next.reason = "node agent ready".into();
                } else {
                    next.state = NodeState::Unavailable;
                    next.reason = failing_reason(&current.failing);
                }
            }
        }
        Event::Health { mut failing } => {
            failing.sort();
            failing.dedup();
            next.failing = failing.clone();
            match current.state {
                NodeState::Initializing => {}
                _ if current.held_by.is_some() => {}
                NodeState::Available if !failing.is_empty() => {
                    next.state = NodeState::Unavailable;
                    next.reason = failing_reason(&failing);
                }
                NodeState::Unavailable if failing.is_empty() => {
                    next.state = NodeState::Available;
                    next.reason = "health checks pass again".into();
                }
                NodeState::Unavailable if failing != current.failing => {
                    next.reason = failing_reason(&failing);
                }
                _ => {}
            }
        }
        Event::Mark {
            available: false,
            reason,
            by,
        } => {
            let reason = reason.trim();
            if reason.is_empty() {
                return Err(Refused::NoReason);
            }
            next.state = NodeState::Unavailable;
            next.reason = format!("marked unavailable by {by}: {reason}");
            next.held_by = Some(by);
        }
        Event::Mark {
            available: true,
            reason,
            by,
        } => {
            if current.state == NodeState::Initializing && current.held_by.is_none() {
                return Err(Refused::Initializing);
            }
            if !current.failing.is_empty() {
                return Err(Refused::ChecksFailing(current.failing.clone()));
            }
            next.state = NodeState::Available;
            next.held_by = None;
            next.reason = match reason.trim() {
                "" => format!("marked available by {by}"),
                r => format!("marked available by {by}: {r}"),
            };
        }
    }
    Ok(next)
}

fn failing_reason(failing: &[String]) -> String {
    format!("health check failing: {}", failing.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(l: &Lifecycle, e: Event) -> Lifecycle {
        transition(l, e).unwrap()
    }

    fn mark(available: bool, reason: &str) -> Event {
        Event::Mark {
            available,
            reason: reason.into(),
            by: "admin".into(),
        }
    }

    fn health(failing: &[&str]) -> Event {
        Event::Health {
            failing: failing.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn starts_initializing_and_becomes_available_when_the_agent_is_ready() {
        let l = Lifecycle::new();
        assert_eq!(l.state, NodeState::Initializing);
        let l = apply(&l, Event::AgentReady);
        assert_eq!(l.state, NodeState::Available);
        assert_eq!(l.reason, "node agent ready");
    }

    #[test]
    fn failing_checks_at_start_make_it_unavailable_with_the_services_named() {
        let l = apply(&Lifecycle::new(), health(&["web"]));
        assert_eq!(l.state, NodeState::Initializing);
        let l = apply(&l, Event::AgentReady);
        assert_eq!(l.state, NodeState::Unavailable);
        assert_eq!(l.reason, "health check failing: web");
    }

    #[test]
    fn health_moves_available_and_unavailable_back_and_forth() {
        let l = apply(&Lifecycle::new(), Event::AgentReady);
        let l = apply(&l, health(&["db", "web", "db"]));
        assert_eq!(l.state, NodeState::Unavailable);
        assert_eq!(l.reason, "health check failing: db, web");
        let l = apply(&l, health(&["web"]));
        assert_eq!(l.reason, "health check failing: web");
        let l = apply(&l, health(&[]));
        assert_eq!(l.state, NodeState::Available);
        assert_eq!(l.reason, "health checks pass again");
    }

    #[test]
    fn an_operator_mark_holds_until_the_operator_lifts_it() {
        let l = apply(&Lifecycle::new(), Event::AgentReady);
        let l = apply(&l, mark(false, "kernel upgrade"));
        assert_eq!(l.state, NodeState::Unavailable);
        assert_eq!(l.reason, "marked unavailable by admin: kernel upgrade");
        assert_eq!(l.held_by.as_deref(), Some("admin"));
        // Checks passing do not override the operator.
        let l = apply(&l, health(&[]));
        assert_eq!(l.state, NodeState::Unavailable);
        let l = apply(&l, mark(true, ""));
        assert_eq!(l.state, NodeState::Available);
        assert_eq!(l.reason, "marked available by admin");
        assert_eq!(l.held_by, None);
    }

    #[test]
    fn marks_are_refused_with_the_fix() {
        let ready = apply(&Lifecycle::new(), Event::AgentReady);
        assert_eq!(
            transition(&ready, mark(false, "  ")),
            Err(Refused::NoReason)
        );
        assert_eq!(
            transition(&Lifecycle::new(), mark(true, "")),
            Err(Refused::Initializing)
        );
        let failing = apply(&ready, health(&["web"]));
        let err = transition(&failing, mark(true, "")).unwrap_err();
        assert_eq!(err, Refused::ChecksFailing(vec!["web".into()]));
        assert!(err.to_string().contains("web"), "{err}");
    }

    #[test]
    fn an_operator_may_mark_a_node_unavailable_while_it_initializes() {
        let l = apply(&Lifecycle::new(), mark(false, "hold"));
        assert_eq!(l.state, NodeState::Unavailable);
        assert_eq!(apply(&l, Event::AgentReady).state, NodeState::Unavailable);
    }
}
