//! Monitors: what each one last saw, and the events that turn it into what is true now.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::directory::{AttrTarget, Directory};
use crate::id::TargetId;
use crate::protocol::{Event, Watch};

/// The state a monitor watches, as last seen.
#[derive(Debug, Clone, PartialEq)]
pub enum Snapshot {
    Members(BTreeSet<TargetId>),
    /// The hub a component is on, if any.
    Present(Option<String>),
    Attributes(BTreeMap<String, Value>),
}

/// What a watch sees in the directory now.
pub fn snapshot(watch: &Watch, dir: &Directory, self_id: &str) -> Snapshot {
    match watch {
        Watch::Group(g) => Snapshot::Members(dir.members(g)),
        Watch::Component(c) => Snapshot::Present(dir.hub_of(c, self_id)),
        Watch::Attributes { target, names } => {
            Snapshot::Attributes(dir.attributes(&AttrTarget::from(target), names))
        }
    }
}

/// The events from `before` to `after`. `live` tells whether a hub is still a live member
/// (to tell a component that disconnected from one lost with its hub).
pub fn diff(
    watch: &Watch,
    before: &Snapshot,
    after: &Snapshot,
    self_id: &str,
    live: impl Fn(&str) -> bool,
) -> Vec<Event> {
    match (watch, before, after) {
        (Watch::Group(g), Snapshot::Members(b), Snapshot::Members(a)) => {
            let mut out: Vec<Event> = a
                .difference(b)
                .map(|m| Event::Joined {
                    group: g.clone(),
                    member: *m,
                })
                .collect();
            out.extend(b.difference(a).map(|m| Event::Left {
                group: g.clone(),
                member: *m,
            }));
            out
        }
        (Watch::Component(c), Snapshot::Present(Some(hub)), Snapshot::Present(None)) => {
            let reason = if hub != self_id && !live(hub) {
                "hub_lost"
            } else {
                "disconnected"
            };
            vec![Event::Terminated {
                component: *c,
                reason: reason.into(),
            }]
        }
        (Watch::Attributes { .. }, Snapshot::Attributes(b), Snapshot::Attributes(a)) => {
            let mut out = Vec::new();
            for (k, v) in a {
                if b.get(k) != Some(v) {
                    out.push(Event::Attribute {
                        name: k.clone(),
                        value: Some(v.clone()),
                    });
                }
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(Event::Attribute {
                    name: k.clone(),
                    value: None,
                });
            }
            out
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Layout;

    fn comp() -> TargetId {
        TargetId::new_component(&Layout::default(), "web", None).unwrap()
    }

    #[test]
    fn group_changes_become_joined_and_left() {
        let (a, b, c) = (comp(), comp(), comp());
        let w = Watch::Group("web".into());
        let before = Snapshot::Members([a, b].into_iter().collect());
        let after = Snapshot::Members([b, c].into_iter().collect());
        let ev = diff(&w, &before, &after, "h1", |_| true);
        assert_eq!(ev.len(), 2);
        assert!(ev.contains(&Event::Joined {
            group: "web".into(),
            member: c
        }));
        assert!(ev.contains(&Event::Left {
            group: "web".into(),
            member: a
        }));
        assert!(diff(&w, &after, &after, "h1", |_| true).is_empty());
    }

    #[test]
    fn a_component_lost_with_its_hub_is_told_apart_from_a_disconnect() {
        let c = comp();
        let w = Watch::Component(c);
        let on_h2 = Snapshot::Present(Some("h2".into()));
        let gone = Snapshot::Present(None);
        let lost = diff(&w, &on_h2, &gone, "h1", |_| false);
        assert_eq!(
            lost,
            vec![Event::Terminated {
                component: c,
                reason: "hub_lost".into()
            }]
        );
        let closed = diff(&w, &on_h2, &gone, "h1", |_| true);
        assert!(matches!(&closed[0], Event::Terminated { reason, .. } if reason == "disconnected"));
        assert!(diff(&w, &gone, &on_h2, "h1", |_| true).is_empty());
    }

    #[test]
    fn attribute_changes_and_removals_are_reported() {
        let w = Watch::Attributes {
            target: crate::protocol::Target::Group("web".into()),
            names: vec![],
        };
        let before = Snapshot::Attributes(
            [
                ("a".to_string(), Value::from(1)),
                ("b".to_string(), Value::from(2)),
            ]
            .into_iter()
            .collect(),
        );
        let after = Snapshot::Attributes([("a".to_string(), Value::from(5))].into_iter().collect());
        let ev = diff(&w, &before, &after, "h1", |_| true);
        assert_eq!(
            ev,
            vec![
                Event::Attribute {
                    name: "a".into(),
                    value: Some(5.into())
                },
                Event::Attribute {
                    name: "b".into(),
                    value: None
                }
            ]
        );
    }
}
