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
//!   chain forward { type filter hook forward priority filter; policy drop;
//!     ct state established,related accept
//!     ct state invalid drop
//!     iifname BRIDGE oifname != BRIDGE accept           # containers out (masqueraded below)
//!     ct status dnat accept                              # published ports (scope checked at DNAT)
//!   }
//! only with a bridge or a publication (the NAT modules load on demand):
//!   chain prerouting { type nat hook prerouting priority dstnat; policy accept;
//!     per publication, by (protocol, port), except node-local:
//!       cluster: fib daddr type local ip saddr @cluster_v4 tcp dport P dnat ip to ADDR:CPORT
//!       public:  fib daddr type local tcp dport P dnat ip to ADDR:CPORT
//!   }
//!   chain output { type nat hook output priority -100; policy accept;
//!     per publication (the node itself is in every scope):
//!       fib daddr type local tcp dport P dnat ip to ADDR:CPORT
//!   }
//!   chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//!     ip saddr SUBNET oifname != BRIDGE masquerade       # containers out
//!     ip saddr 127.0.0.0/8 oifname BRIDGE masquerade     # a published port reached on 127.0.0.1
//!   }
//! ```

use serde_json::{json, Value};

use super::model::{Bridge, Cidr, Exposure, Publication, Scope};

pub const FAMILY: &str = "inet";
pub const TABLE: &str = "tessera";
pub const CHAIN: &str = "input";
pub const FORWARD: &str = "forward";
const PREROUTING: &str = "prerouting";
const OUTPUT: &str = "output";
const POSTROUTING: &str = "postrouting";
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
    /// The containers' bridge, once the container agent has made it.
    pub bridge: Option<Bridge>,
    /// Sorted by the ruleset, like exposures.
    pub publications: Vec<Publication>,
}

fn table() -> Value {
    json!({"family": FAMILY, "name": TABLE})
}

fn rule(expr: Vec<Value>, comment: &str) -> Value {
    rule_in(CHAIN, expr, comment)
}

fn rule_in(chain: &str, expr: Vec<Value>, comment: &str) -> Value {
    json!({"add": {"rule": {
        "family": FAMILY, "table": TABLE, "chain": chain,
        "expr": expr, "comment": comment,
    }}})
}

fn chain(name: &str, ty: &str, hook: &str, prio: i32, policy: &str) -> Value {
    json!({"add": {"chain": {
        "family": FAMILY, "table": TABLE, "name": name,
        "type": ty, "hook": hook, "prio": prio, "policy": policy,
    }}})
}

fn differs(left: Value, right: Value) -> Value {
    json!({"match": {"op": "!=", "left": left, "right": right}})
}

fn prefix(c: &Cidr) -> Value {
    json!({"prefix": {"addr": c.addr.to_string(), "len": c.prefix}})
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
    let elem: Vec<Value> = cidrs.map(|c| prefix(&c)).collect();
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

fn forward_rules(bridge: Option<&Bridge>) -> Vec<Value> {
    let ct = |key: &str| json!({"ct": {"key": key}});
    let mut rules = vec![
        rule_in(
            FORWARD,
            vec![
                matches(ct("state"), json!(["established", "related"])),
                accept(),
            ],
            "established, related",
        ),
        rule_in(
            FORWARD,
            vec![
                matches(ct("state"), json!(["invalid"])),
                json!({"drop": null}),
            ],
            "invalid",
        ),
    ];
    if let Some(b) = bridge {
        rules.push(rule_in(
            FORWARD,
            vec![
                matches(meta("iifname"), json!(b.interface)),
                differs(meta("oifname"), json!(b.interface)),
                accept(),
            ],
            "containers out",
        ));
    }
    rules.push(rule_in(
        FORWARD,
        vec![matches(ct("status"), json!(["dnat"])), accept()],
        "published ports",
    ));
    rules
}

/// `fib daddr type local`: addressed to this node (any of its addresses).
fn to_this_node() -> Value {
    matches(
        json!({"fib": {"result": "type", "flags": ["daddr"]}}),
        json!("local"),
    )
}

fn publication_rules(p: &Publication) -> Vec<Value> {
    let proto = p.protocol.as_str();
    let dport = matches(payload(proto, "dport"), json!(p.port));
    let dnat =
        json!({"dnat": {"family": "ip", "addr": p.to.ip().to_string(), "port": p.to.port()}});
    let comment = match &p.owner {
        Some(o) => format!("publish {proto}/{} {} to {} ({o})", p.port, p.scope, p.to),
        None => format!("publish {proto}/{} {} to {}", p.port, p.scope, p.to),
    };
    let mut rules = vec![rule_in(
        OUTPUT,
        vec![to_this_node(), dport.clone(), dnat.clone()],
        &comment,
    )];
    match p.scope {
        Scope::NodeLocal => {}
        Scope::Cluster => rules.push(rule_in(
            PREROUTING,
            vec![
                to_this_node(),
                matches(payload("ip", "saddr"), json!(format!("@{SET_V4}"))),
                dport,
                dnat,
            ],
            &comment,
        )),
        Scope::Public => rules.push(rule_in(
            PREROUTING,
            vec![to_this_node(), dport, dnat],
            &comment,
        )),
    }
    rules
}

fn nat(policy: &Policy) -> Vec<Value> {
    let mut cmds = vec![
        chain(PREROUTING, "nat", "prerouting", -100, "accept"),
        chain(OUTPUT, "nat", "output", -100, "accept"),
        chain(POSTROUTING, "nat", "postrouting", 100, "accept"),
    ];
    let mut publications = policy.publications.clone();
    publications.sort();
    for p in &publications {
        cmds.extend(publication_rules(p));
    }
    if let Some(b) = &policy.bridge {
        let masquerade = json!({"masquerade": null});
        cmds.push(rule_in(
            POSTROUTING,
            vec![
                matches(payload("ip", "saddr"), prefix(&b.subnet)),
                differs(meta("oifname"), json!(b.interface)),
                masquerade.clone(),
            ],
            "containers out",
        ));
        let loopback = Cidr {
            addr: std::net::Ipv4Addr::new(127, 0, 0, 0).into(),
            prefix: 8,
        };
        cmds.push(rule_in(
            POSTROUTING,
            vec![
                matches(payload("ip", "saddr"), prefix(&loopback)),
                matches(meta("oifname"), json!(b.interface)),
                masquerade,
            ],
            "published ports from 127.0.0.1",
        ));
    }
    cmds
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
    cmds.push(chain(FORWARD, "filter", "forward", 0, "drop"));
    cmds.extend(forward_rules(policy.bridge.as_ref()));
    if policy.bridge.is_some() || !policy.publications.is_empty() {
        cmds.extend(nat(policy));
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
            ..Policy::default()
        };
        let value = render(&policy);
        golden("exposures.json", &value);
        // The order of the input does not matter.
        let mut reversed = policy.clone();
        reversed.exposures.reverse();
        assert_eq!(render(&reversed), value);
    }

    #[test]
    fn the_container_bridge_and_publications_match_golden() {
        let policy = Policy {
            cluster: vec![Cidr::parse("c", "192.168.77.0/24").unwrap()],
            exposures: vec![],
            bridge: Some(Bridge {
                interface: "tessera0".into(),
                subnet: Cidr::parse("s", "10.88.0.0/24").unwrap(),
            }),
            publications: ["public", "cluster", "node-local"]
                .iter()
                .enumerate()
                .map(|(i, scope)| Publication {
                    protocol: Protocol::Tcp,
                    port: 8080 + i as u16,
                    to: format!("10.88.0.{}:80", i + 2).parse().unwrap(),
                    scope: Scope::parse("scope", scope).unwrap(),
                    owner: Some(format!("container/c{i}")),
                })
                .collect(),
        };
        let value = render(&policy);
        golden("containers.json", &value);
        let chains: Vec<&str> = value["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["add"]["chain"]["name"].as_str())
            .collect();
        assert_eq!(
            chains,
            ["input", "forward", "prerouting", "output", "postrouting"]
        );
        // Without a bridge or publication there is no NAT chain (its modules stay unloaded).
        let plain = render(&Policy::default());
        assert!(!plain.to_string().contains("\"nat\""));
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
