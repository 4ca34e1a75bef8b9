//! `tessera firewall …`: a client of the firewall socket for the console and scripts.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::model::{self, Protocol, Scope};

/// How long the CLI waits for an answer (an apply runs nft once).
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Sends one request and returns the reply; an `{"error":…}` reply is an error.
pub fn call(socket: &Path, request: &Value) -> anyhow::Result<Value> {
    crate::ipc::call(socket, "firewall", request, TIMEOUT)
}

/// `PORT` or `PORT/PROTO` (tcp by default).
pub fn parse_port_spec(spec: &str) -> Result<(Protocol, u16), model::FieldError> {
    let (port, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, Protocol::parse("protocol", proto)?),
        None => (spec, Protocol::Tcp),
    };
    Ok((proto, model::port_text("port", port)?))
}

pub fn expose(socket: &Path, spec: &str, scope: &str, owner: Option<&str>) -> anyhow::Result<()> {
    let (protocol, port) = parse_port_spec(spec)?;
    let scope = Scope::parse("--scope", scope)?;
    let mut req = json!({"op": "expose", "protocol": protocol, "port": port, "scope": scope});
    if let Some(o) = owner {
        req["owner"] = json!(o);
    }
    call(socket, &req)?;
    println!("exposed {protocol}/{port} to {scope}");
    Ok(())
}

pub fn unexpose(socket: &Path, spec: &str) -> anyhow::Result<()> {
    let (protocol, port) = parse_port_spec(spec)?;
    let v = call(
        socket,
        &json!({"op": "unexpose", "protocol": protocol, "port": port}),
    )?;
    if v["removed"].as_bool() == Some(true) {
        println!("unexposed {protocol}/{port}");
    } else {
        println!("{protocol}/{port} was not exposed");
    }
    Ok(())
}

pub fn ruleset(socket: &Path) -> anyhow::Result<()> {
    let v = call(socket, &json!({"op": "ruleset"}))?;
    println!("{v}");
    Ok(())
}

pub fn show(socket: &Path, as_json: bool) -> anyhow::Result<()> {
    let v = call(socket, &json!({"op": "show"}))?;
    if as_json {
        println!("{v}");
    } else {
        print!("{}", render_show(&v));
    }
    Ok(())
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The text of `tessera firewall show`.
pub fn render_show(v: &Value) -> String {
    let mut out = String::new();
    let cluster = strs(&v["cluster_cidrs"]);
    out.push_str(&format!(
        "cluster networks: {}\n",
        if cluster.is_empty() {
            "none (firewall.cluster_cidrs is empty: the cluster scope admits no one)".to_string()
        } else {
            cluster.join(", ")
        }
    ));
    let exposures = v["exposures"].as_array().cloned().unwrap_or_default();
    let fixed = v["fixed"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!("exposures: {}\n", exposures.len()));
    if !exposures.is_empty() {
        out.push_str(&format!(
            "  {:<6}{:<7}{:<12}{}\n",
            "PROTO", "PORT", "SCOPE", "OWNER"
        ));
        for e in &exposures {
            out.push_str(&format!(
                "  {:<6}{:<7}{:<12}{}{}\n",
                e["protocol"].as_str().unwrap_or("?"),
                e["port"].to_string(),
                e["scope"].as_str().unwrap_or("?"),
                e["owner"].as_str().unwrap_or("-"),
                if fixed.contains(e) {
                    " (fixed by the image)"
                } else {
                    ""
                }
            ));
        }
    }
    let publications = v["publications"].as_array().cloned().unwrap_or_default();
    if !publications.is_empty() {
        out.push_str(&format!(
            "published to containers: {}\n",
            publications.len()
        ));
        out.push_str(&format!(
            "  {:<6}{:<7}{:<12}{:<22}{}\n",
            "PROTO", "PORT", "SCOPE", "TO", "OWNER"
        ));
        for p in &publications {
            out.push_str(&format!(
                "  {:<6}{:<7}{:<12}{:<22}{}\n",
                p["protocol"].as_str().unwrap_or("?"),
                p["port"].to_string(),
                p["scope"].as_str().unwrap_or("?"),
                p["to"].as_str().unwrap_or("?"),
                p["owner"].as_str().unwrap_or("-"),
            ));
        }
    }
    if let Some(b) = v["bridge"].as_object() {
        out.push_str(&format!(
            "container bridge: {} {} (forwarded out, masqueraded)\n",
            b.get("interface").and_then(Value::as_str).unwrap_or("?"),
            b.get("subnet").and_then(Value::as_str).unwrap_or("?"),
        ));
    }
    match &v["table"] {
        Value::Null => out.push_str("kernel: table inet tessera is not loaded\n"),
        t if t.get("error").is_some() => {
            out.push_str(&format!("kernel: {}\n", t["error"].as_str().unwrap_or("?")))
        }
        t => {
            for c in t["chains"].as_array().cloned().unwrap_or_default() {
                let rules = strs(&c["rules"]);
                out.push_str(&format!(
                    "kernel: table inet tessera, chain {} (hook {}, policy {}), {} rules\n",
                    c["name"].as_str().unwrap_or("?"),
                    c["hook"].as_str().unwrap_or("-"),
                    c["policy"].as_str().unwrap_or("-"),
                    rules.len()
                ));
                for r in rules {
                    out.push_str(&format!("  {r}\n"));
                }
            }
            for s in t["sets"].as_array().cloned().unwrap_or_default() {
                let elems = strs(&s["elements"]);
                out.push_str(&format!(
                    "  set {}: {}\n",
                    s["name"].as_str().unwrap_or("?"),
                    if elems.is_empty() {
                        "empty".to_string()
                    } else {
                        elems.join(", ")
                    }
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs_parse() {
        assert_eq!(parse_port_spec("8080"), Ok((Protocol::Tcp, 8080)));
        assert_eq!(parse_port_spec("53/udp"), Ok((Protocol::Udp, 53)));
        assert_eq!(parse_port_spec("0").unwrap_err().field, "port");
        assert_eq!(parse_port_spec("53/icmp").unwrap_err().field, "protocol");
    }

    #[test]
    fn show_text_lists_exposures_and_the_kernel_table() {
        let v = json!({
            "cluster_cidrs": ["192.168.77.0/24"],
            "exposures": [{"protocol": "tcp", "port": 8080, "scope": "cluster", "owner": "web"}],
            "table": {"chains": [{"name": "input", "hook": "input", "policy": "drop",
                                  "rules": ["loopback", "expose tcp/8080 cluster (web)"]}],
                      "sets": [{"name": "cluster_v4", "elements": ["192.168.77.0/24"]},
                               {"name": "cluster_v6", "elements": []}]},
        });
        let text = render_show(&v);
        assert!(
            text.contains("cluster networks: 192.168.77.0/24\n"),
            "{text}"
        );
        assert!(text.contains("  tcp   8080   cluster     web\n"), "{text}");
        assert!(
            text.contains("chain input (hook input, policy drop), 2 rules\n"),
            "{text}"
        );
        assert!(text.contains("  set cluster_v6: empty\n"), "{text}");
    }
}
