//! What the hub knows of the cluster's components: its own (authoritative, immediate) and
//! every live hub's as published over gossip. Queries merge both; selectors pick members.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::HubError;
use crate::id::TargetId;
use crate::protocol::{Member, Selector, Target};

/// A component's description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub component_type: String,
}

/// An attribute value with the time (ms since the epoch) it was set: the newest wins when two
/// hubs hold one for the same group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stamped {
    #[serde(rename = "v")]
    pub value: Value,
    #[serde(rename = "t")]
    pub time_ms: u64,
}

/// The key of a target's attributes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttrTarget {
    Component(TargetId),
    Group(String),
}

impl From<&Target> for AttrTarget {
    fn from(t: &Target) -> Self {
        match t {
            Target::Group(g) => AttrTarget::Group(g.clone()),
            Target::Component(c) => AttrTarget::Component(*c),
        }
    }
}

/// One hub's published state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HubView {
    pub peer_addr: Option<SocketAddr>,
    pub api_addr: Option<SocketAddr>,
    pub components: BTreeMap<TargetId, ComponentInfo>,
    pub groups: BTreeMap<String, BTreeSet<TargetId>>,
    pub attributes: BTreeMap<AttrTarget, BTreeMap<String, Stamped>>,
}

/// Where a component is connected.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Location {
    Here,
    Hub(String),
}

#[derive(Debug, Default)]
pub struct Directory {
    pub local: HubView,
    pub remote: BTreeMap<String, HubView>,
    /// Round-robin position for `any`.
    cursor: usize,
}

/// Names of groups and attributes: what fits in gossip keys and on a command line.
pub fn validate_name(what: &str, name: &str) -> Result<(), HubError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(HubError::bad(format!(
            "{what} {:?} is not 1-128 characters of letters, digits, '.', '_', '-', '/'",
            name.chars().take(140).collect::<String>()
        )))
    }
}

impl Directory {
    fn views(&self) -> impl Iterator<Item = (Location, &HubView)> {
        std::iter::once((Location::Here, &self.local)).chain(
            self.remote
                .iter()
                .map(|(h, v)| (Location::Hub(h.clone()), v)),
        )
    }

    /// Where a component is, if any live hub has it.
    pub fn locate(&self, component: &TargetId) -> Option<Location> {
        self.views()
            .find(|(_, v)| v.components.contains_key(component))
            .map(|(l, _)| l)
    }

    /// Which hub has a component (this hub's id for local ones).
    pub fn hub_of(&self, component: &TargetId, self_id: &str) -> Option<String> {
        self.locate(component).map(|l| match l {
            Location::Here => self_id.to_string(),
            Location::Hub(h) => h,
        })
    }

    pub fn component(&self, id: &TargetId) -> Option<&ComponentInfo> {
        self.views().find_map(|(_, v)| v.components.get(id))
    }

    /// Members of a group, from every live hub.
    pub fn members(&self, group: &str) -> BTreeSet<TargetId> {
        self.views()
            .filter_map(|(_, v)| v.groups.get(group))
            .flatten()
            .copied()
            .collect()
    }

    /// Members of a group with where they are; `any` prefers one on this hub.
    pub fn select(&mut self, group: &str, selector: Selector) -> Vec<(TargetId, Location)> {
        let mut local: Vec<(TargetId, Location)> = Vec::new();
        let mut all: Vec<(TargetId, Location)> = Vec::new();
        for (loc, view) in self.views() {
            if let Some(m) = view.groups.get(group) {
                for id in m {
                    if loc == Location::Here {
                        local.push((*id, Location::Here));
                    }
                    all.push((*id, loc.clone()));
                }
            }
        }
        match selector {
            Selector::All => all,
            Selector::Any => {
                let pool = if local.is_empty() { all } else { local };
                if pool.is_empty() {
                    return pool;
                }
                self.cursor = self.cursor.wrapping_add(1);
                let pick = pool[self.cursor % pool.len()].clone();
                vec![pick]
            }
        }
    }

    /// Member descriptions, for replies.
    pub fn describe(&self, members: &[(TargetId, Location)], self_id: &str) -> Vec<Member> {
        members
            .iter()
            .map(|(id, loc)| {
                let info = self.component(id).cloned().unwrap_or(ComponentInfo {
                    name: String::new(),
                    component_type: String::new(),
                });
                Member {
                    component: *id,
                    name: info.name,
                    component_type: info.component_type,
                    hub: match loc {
                        Location::Here => self_id.to_string(),
                        Location::Hub(h) => h.clone(),
                    },
                }
            })
            .collect()
    }

    /// Member counts of every group.
    pub fn group_counts(&self) -> BTreeMap<String, usize> {
        let mut names: BTreeSet<&String> = BTreeSet::new();
        for (_, v) in self.views() {
            names.extend(
                v.groups
                    .iter()
                    .filter(|(_, m)| !m.is_empty())
                    .map(|(g, _)| g),
            );
        }
        names
            .into_iter()
            .map(|g| (g.clone(), self.members(g).len()))
            .collect()
    }

    /// Attribute values of a target (the newest when several hubs hold one); all names when
    /// `names` is empty.
    pub fn attributes(&self, target: &AttrTarget, names: &[String]) -> BTreeMap<String, Value> {
        let mut best: BTreeMap<String, &Stamped> = BTreeMap::new();
        for (_, v) in self.views() {
            if let Some(attrs) = v.attributes.get(target) {
                for (name, s) in attrs {
                    if !names.is_empty() && !names.contains(name) {
                        continue;
                    }
                    match best.get(name) {
                        Some(b) if b.time_ms >= s.time_ms => {}
                        _ => {
                            best.insert(name.clone(), s);
                        }
                    }
                }
            }
        }
        best.into_iter()
            .map(|(k, s)| (k, s.value.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Layout;

    fn comp() -> TargetId {
        TargetId::new_component(&Layout::default(), "web", None).unwrap()
    }

    fn dir_with(local: &[TargetId], remote: &[(&str, TargetId)]) -> Directory {
        let mut d = Directory::default();
        for id in local {
            d.local.groups.entry("web".into()).or_default().insert(*id);
        }
        for (hub, id) in remote {
            d.remote
                .entry(hub.to_string())
                .or_default()
                .groups
                .entry("web".into())
                .or_default()
                .insert(*id);
        }
        d
    }

    #[test]
    fn all_selects_every_member_on_every_hub() {
        let (a, b, c) = (comp(), comp(), comp());
        let mut d = dir_with(&[a], &[("h2", b), ("h3", c)]);
        let got: BTreeSet<TargetId> = d
            .select("web", Selector::All)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(got, [a, b, c].into_iter().collect());
        assert_eq!(d.group_counts()["web"], 3);
    }

    #[test]
    fn any_prefers_a_local_member_and_rotates() {
        let (a1, a2, b) = (comp(), comp(), comp());
        let mut d = dir_with(&[a1, a2], &[("h2", b)]);
        let picks: BTreeSet<TargetId> = (0..10)
            .map(|_| {
                let s = d.select("web", Selector::Any);
                assert_eq!(s.len(), 1);
                assert_eq!(s[0].1, Location::Here);
                s[0].0
            })
            .collect();
        assert_eq!(
            picks,
            [a1, a2].into_iter().collect(),
            "both local members used"
        );
    }

    #[test]
    fn any_falls_back_to_remote_members() {
        let (b, c) = (comp(), comp());
        let mut d = dir_with(&[], &[("h2", b), ("h3", c)]);
        let picks: BTreeSet<Location> = (0..10)
            .map(|_| d.select("web", Selector::Any)[0].1.clone())
            .collect::<Vec<_>>()
            .into_iter()
            .collect::<BTreeSet<_>>();
        assert_eq!(picks.len(), 2);
        assert!(d.select("nope", Selector::Any).is_empty());
        assert!(d.select("nope", Selector::All).is_empty());
    }

    #[test]
    fn newest_attribute_wins_across_hubs() {
        let mut d = Directory::default();
        let t = AttrTarget::Group("web".into());
        let set = |v: &mut HubView, val: i64, time_ms: u64| {
            v.attributes.entry(t.clone()).or_default().insert(
                "load".into(),
                Stamped {
                    value: val.into(),
                    time_ms,
                },
            );
        };
        set(&mut d.local, 1, 100);
        set(d.remote.entry("h2".into()).or_default(), 2, 200);
        assert_eq!(d.attributes(&t, &[])["load"], 2);
        assert!(d.attributes(&t, &["other".into()]).is_empty());
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("group", "web-1.prod/x_y").is_ok());
        for bad in ["", "a:b", "a b", "é", &"x".repeat(129)] {
            assert!(validate_name("group", bad).is_err(), "{bad:?}");
        }
    }
}
