//! The nftables ruleset of the node as one JSON transaction for `nft -j -f -`: the table
//! `inet tessera` is added (so that deleting it cannot fail), deleted and built again in the
//! same batch, so the kernel swaps the whole table atomically or — if any part is refused —
//! keeps the previous one. Pure: the same input always gives the same bytes.
//!
//! ```text
//! table inet tessera
//!   set cluster_v4 { type ipv4_addr; flags interval; elements = firewall.cluster_cidrs (IPv4) }
//!   set cluster_v6 { type ipv6_addr; flags interval; elements = firewall.cluster_cidrs (IPv6) }
//!   chain input { type filter hook input priority filter; policy drop;
//!     iifname "lo" accept                              # loopback
//!     ct state established,related accept
//!     ct state invalid drop
//!     icmp type { echo-request, destination-unreachable, time-exceeded, parameter-problem } accept
//!     icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem,
//!                   echo-request, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } accept
//!     udp sport 67 udp dport 68 accept                 # DHCPv4 client
//!     per exposure, by (protocol, port):
//!       node-local: iifname "lo" tcp dport P accept
//!       cluster:    ip saddr @cluster_v4 tcp dport P accept; ip6 saddr @cluster_v6 tcp dport P accept
//!       public:     tcp dport P accept
//!   }
//! ```

use serde_json::{json, Value};

use super::model::{Cidr, Exposure, Scope};

pub const FAMILY: &str = "inet";
pub const TABLE: &str = "tessera";
pub const CHAIN: &str = "input";
pub const SET_V4: &str = "cluster_v4";
pub const SET_V6: &str = "cluster_v6";

const ICMP_TYPES: [&str; 4] = [
    "echo-request",
    "destination-unreachable",
    "time-exceeded",
    "parameter-problem",
];
const ICMPV6_TYPES: [&str; 8] = [
    "destination-unreachable",
    "packet-too-big",
    "time-exceeded",
    "parameter-problem",
    "echo-request",
    "nd-router-advert",
    "nd-neighbor-solicit",
    "nd-neighbor-advert",
];

/// What the ruleset is built from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub cluster: Vec<Cidr>,
    /// Sorted by (protocol, port) by the caller or not: the ruleset sorts them.
    pub exposures: Vec<Exposure>,
}

fn table() -> Value {
    json!({"family": FAMILY, "name": TABLE})
}

fn rule(expr: Vec<Value>, comment: &str) -> Value {
    json!({"add": {"rule": {
        "family": FAMILY, "table": TABLE, "chain": CHAIN,
        "expr": expr, "comment": comment,
    }}})
}

fn matches(left: Value, right: Value) -> Value {
    // A list of flags (`ct state established,related`) is `in`; values and sets are `==`.
    let op = if right.is_array() { "in" } else { "==" };
    json!({"match": {"op": op, "left": left, "right": right}})
}

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

fn accept() -> Value {
    json!({"accept": null})
}

fn set(name: &str, ty: &str, cidrs: impl Iterator<Item = Cidr>) -> Value {
    let elem: Vec<Value> = cidrs
        .map(|c| json!({"prefix": {"addr": c.addr.to_string(), "len": c.prefix}}))
        .collect();
    let mut s = json!({
        "family": FAMILY, "table": TABLE, "name": name, "type": ty,
        "flags": ["interval"], "auto-merge": true,
    });
    if !elem.is_empty() {
        s["elem"] = Value::Array(elem);
    }
    json!({"add": {"set": s}})
}

fn exposure_rules(e: &Exposure) -> Vec<Value> {
    let proto = e.protocol.as_str();
    let dport = matches(payload(proto, "dport"), json!(e.port));
    let comment = match &e.owner {
        Some(o) => format!("expose {proto}/{} {} ({o})", e.port, e.scope),
        None => format!("expose {proto}/{} {}", e.port, e.scope),
    };
    match e.scope {
        Scope::NodeLocal => vec![rule(
            vec![matches(meta("iifname"), json!("lo")), dport, accept()],
            &comment,
        )],
        Scope::Cluster => vec![
            rule(
                vec![
                    matches(payload("ip", "saddr"), json!(format!("@{SET_V4}"))),
                    dport.clone(),
                    accept(),
                ],
                &comment,
            ),
            rule(
                vec![
                    matches(payload("ip6", "saddr"), json!(format!("@{SET_V6}"))),
                    dport,
                    accept(),
                ],
                &comment,
            ),
        ],
        Scope::Public => vec![rule(vec![dport, accept()], &comment)],
    }
}

/// The whole transaction.
pub fn render(policy: &Policy) -> Value {
    let mut cmds = vec![
        json!({"metainfo": {"json_schema_version": 1}}),
        json!({"add": {"table": table()}}),
        json!({"delete": {"table": table()}}),
        json!({"add": {"table": table()}}),
        set(
            SET_V4,
            "ipv4_addr",
            policy.cluster.iter().copied().filter(Cidr::is_ipv4),
        ),
        set(
            SET_V6,
            "ipv6_addr",
            policy.cluster.iter().copied().filter(|c| !c.is_ipv4()),
        ),
        json!({"add": {"chain": {
            "family": FAMILY, "table": TABLE, "name": CHAIN,
            "type": "filter", "hook": "input", "prio": 0, "policy": "drop",
        }}}),
        rule(
            vec![matches(meta("iifname"), json!("lo")), accept()],
            "loopback",
        ),
        rule(
            vec![
                matches(
                    json!({"ct": {"key": "state"}}),
                    json!(["established", "related"]),
                ),
                accept(),
            ],
            "established, related",
        ),
        rule(
            vec![
                matches(json!({"ct": {"key": "state"}}), json!(["invalid"])),
                json!({"drop": null}),
            ],
            "invalid",
        ),
        rule(
            vec![
                matches(payload("icmp", "type"), json!({"set": ICMP_TYPES})),
                accept(),
            ],
            "essential icmp",
        ),
        rule(
            vec![
                matches(payload("icmpv6", "type"), json!({"set": ICMPV6_TYPES})),
                accept(),
            ],
            "essential icmpv6",
        ),
        rule(
            vec![
                matches(payload("udp", "sport"), json!(67)),
                matches(payload("udp", "dport"), json!(68)),
                accept(),
            ],
            "dhcp client",
        ),
    ];
    let mut exposures = policy.exposures.clone();
    exposures.sort();
    for e in &exposures {
        cmds.extend(exposure_rules(e));
    }
    json!({"nftables": cmds})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::model::Protocol;
    use std::path::PathBuf;

    fn golden(name: &str, value: &Value) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/firewall")
            .join(name);
        let text = serde_json::to_string_pretty(value).unwrap() + "\n";
        if std::env::var_os("TESSERA_UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &text).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; create it with TESSERA_UPDATE_GOLDEN=1 cargo test -p tessera-node",
                path.display()
            )
        });
        assert_eq!(text, want, "ruleset differs from {}", path.display());
    }

    #[test]
    fn base_ruleset_matches_golden() {
        golden("base.json", &render(&Policy::default()));
    }

    #[test]
    fn exposures_in_every_scope_match_golden() {
        let policy = Policy {
            cluster: vec![
                Cidr::parse("c", "192.168.77.0/24").unwrap(),
                Cidr::parse("c", "fd00:77::/64").unwrap(),
            ],
            exposures: vec![
                Exposure {
                    protocol: Protocol::Udp,
                    port: 5353,
                    scope: Scope::Public,
                    owner: None,
                },
                Exposure {
                    protocol: Protocol::Tcp,
                    port: 8443,
                    scope: Scope::Cluster,
                    owner: Some("hub".into()),
                },
                Exposure {
                    protocol: Protocol::Tcp,
                    port: 9000,
                    scope: Scope::NodeLocal,
                    owner: Some("container/web".into()),
                },
            ],
        };
        let value = render(&policy);
        golden("exposures.json", &value);
        // The order of the input does not matter.
        let mut reversed = policy.clone();
        reversed.exposures.reverse();
        assert_eq!(render(&reversed), value);
    }

    #[test]
    fn transaction_replaces_the_whole_table_first() {
        let v = render(&Policy::default());
        let cmds = v["nftables"].as_array().unwrap();
        assert_eq!(cmds[1], json!({"add": {"table": table()}}));
        assert_eq!(cmds[2], json!({"delete": {"table": table()}}));
        assert_eq!(cmds[3], json!({"add": {"table": table()}}));
        let chain = &cmds[6]["add"]["chain"];
        assert_eq!(chain["policy"], "drop");
        assert_eq!(chain["hook"], "input");
    }
}
