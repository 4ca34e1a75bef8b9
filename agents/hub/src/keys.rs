//! How a hub's state is written into its chitchat key-value map, and read back from a peer's.
//!
//! | key | value |
//! | --- | --- |
//! | `peer` / `api` | the hub-to-hub and API socket addresses |
//! | `c:<component id>` | `{"name":…,"type":…}` |
//! | `g:<group>:<component id>` | empty: the component is a member |
//! | `a:c:<component id>:<name>` / `a:g:<group>:<name>` | `{"v": value, "t": ms}` |
//!
//! Group and attribute names never contain `:` (see `directory::validate_name`).

use crate::directory::{AttrTarget, ComponentInfo, HubView, Stamped};
use crate::id::TargetId;

pub const PEER_KEY: &str = "peer";
pub const API_KEY: &str = "api";

/// One change to this hub's published state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publish {
    Set(String, String),
    Delete(String),
}

pub fn component_key(id: &TargetId) -> String {
    format!("c:{id}")
}

pub fn group_key(group: &str, id: &TargetId) -> String {
    format!("g:{group}:{id}")
}

pub fn attr_key(target: &AttrTarget, name: &str) -> String {
    match target {
        AttrTarget::Component(id) => format!("a:c:{id}:{name}"),
        AttrTarget::Group(g) => format!("a:g:{g}:{name}"),
    }
}

/// Reads a peer's published state; keys that do not parse are skipped (a newer hub may
/// publish more).
pub fn parse_view<'a>(kvs: impl Iterator<Item = (&'a str, &'a str)>) -> HubView {
    let mut view = HubView::default();
    for (k, v) in kvs {
        if k == PEER_KEY {
            view.peer_addr = v.parse().ok();
        } else if k == API_KEY {
            view.api_addr = v.parse().ok();
        } else if let Some(id) = k.strip_prefix("c:") {
            if let (Ok(id), Ok(info)) = (
                id.parse::<TargetId>(),
                serde_json::from_str::<ComponentInfo>(v),
            ) {
                view.components.insert(id, info);
            }
        } else if let Some(rest) = k.strip_prefix("g:") {
            if let Some((group, id)) = rest.rsplit_once(':') {
                if let Ok(id) = id.parse::<TargetId>() {
                    view.groups.entry(group.to_string()).or_default().insert(id);
                }
            }
        } else if let Some(rest) = k.strip_prefix("a:") {
            let Some((target, name)) = rest.rsplit_once(':') else {
                continue;
            };
            let target = if let Some(id) = target.strip_prefix("c:") {
                match id.parse::<TargetId>() {
                    Ok(id) => AttrTarget::Component(id),
                    Err(_) => continue,
                }
            } else if let Some(g) = target.strip_prefix("g:") {
                AttrTarget::Group(g.to_string())
            } else {
                continue;
            };
            if let Ok(s) = serde_json::from_str::<Stamped>(v) {
                view.attributes
                    .entry(target)
                    .or_default()
                    .insert(name.to_string(), s);
            }
        }
    }
    view
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Layout;

    #[test]
    fn published_keys_parse_back_into_the_view() {
        let id = TargetId::new_component(&Layout::default(), "web", None).unwrap();
        let info = ComponentInfo {
            name: "w1".into(),
            component_type: "web".into(),
        };
        let stamped = Stamped {
            value: serde_json::json!({"load": 3}),
            time_ms: 9,
        };
        let kvs = [
            (PEER_KEY.to_string(), "127.0.0.1:7441".to_string()),
            (component_key(&id), serde_json::to_string(&info).unwrap()),
            (group_key("web", &id), String::new()),
            (
                attr_key(&AttrTarget::Group("web".into()), "load"),
                serde_json::to_string(&stamped).unwrap(),
            ),
            (
                attr_key(&AttrTarget::Component(id), "state"),
                serde_json::to_string(&stamped).unwrap(),
            ),
            ("g:broken".into(), String::new()),
            ("c:nothex".into(), "{}".into()),
        ];
        let view = parse_view(kvs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(view.peer_addr, Some("127.0.0.1:7441".parse().unwrap()));
        assert_eq!(view.components[&id], info);
        assert!(view.groups["web"].contains(&id));
        assert_eq!(view.groups.len(), 1);
        assert_eq!(
            view.attributes[&AttrTarget::Group("web".into())]["load"],
            stamped
        );
        assert!(view.attributes[&AttrTarget::Component(id)].contains_key("state"));
    }
}
