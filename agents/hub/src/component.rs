//! `tessera hub component …`: components run by hand on a node's console, through the hub's
//! local channel (no certificate needed: the socket is root-only). `serve` joins groups and
//! answers every call with a reply naming its node, `call` sends a call and prints the replies,
//! `select` lists a group's members as this hub sees the cluster, `monitor` prints membership
//! changes (or a component's termination, or attribute changes) as they happen.
//!
//! Every result is one line of `KEY=value` words (`MEMBER-LEFT group=web component=… node=…`)
//! so that a person and a test can both read it.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::api::parse_target;
use crate::cli::{duration, parse_inputs, MonitorTarget};
use crate::client::{Client, Request, Response};
use crate::defaults;
use crate::protocol::{Event, Member, Selector, Watch};

#[derive(Debug, Args)]
pub struct ComponentArgs {
    /// The hub's local channel.
    #[arg(long, env = defaults::SOCKET_ENV, default_value = defaults::SOCKET_PATH)]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub command: ComponentCommand,
}

#[derive(Debug, Subcommand)]
pub enum ComponentCommand {
    /// Join groups and answer every call with a reply naming this node, until killed.
    Serve(ServeArgs),
    /// Call an operation on a target (`group:NAME`, a group name, or a component id) and print
    /// each reply.
    Call(CallArgs),
    /// Members of a group, as this hub sees the cluster.
    Select {
        group: String,
        /// One member only (selector `any`); default: all.
        #[arg(long)]
        any: bool,
    },
    /// Print a group's membership changes, a component's termination, or a target's
    /// attribute changes, one line each, until killed.
    Monitor(MonitorTarget),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// A group to join; repeatable.
    #[arg(long, required = true)]
    pub group: Vec<String>,
    /// The component's name; default `<type>-<pid>`.
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long = "type", default_value = "console")]
    pub component_type: String,
    /// The text every reply carries; default `hello from <node>`.
    #[arg(long)]
    pub reply: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct CallArgs {
    pub target: String,
    pub operation: String,
    /// Inputs, as JSON.
    #[arg(long, default_value = "null")]
    pub inputs: String,
    #[arg(long, default_value = "")]
    pub object: String,
    /// Every member of a group (selector `all`).
    #[arg(long)]
    pub all: bool,
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub expiry: Duration,
}

/// Where result lines go (stdout in the CLI, a channel in tests).
pub trait Lines: Send {
    fn line(&mut self, line: String);
}

impl<F: FnMut(String) + Send> Lines for F {
    fn line(&mut self, line: String) {
        self(line)
    }
}

fn member_words(m: &Member) -> String {
    format!(
        "component={} name={} type={} node={}",
        m.component, m.name, m.component_type, m.hub
    )
}

/// What `serve` answers a call with.
fn reply_outputs(
    text: &str,
    node: &str,
    name: &str,
    operation: &str,
    object: &str,
    inputs: Value,
) -> Value {
    json!({
        "reply": text,
        "node": node,
        "component": name,
        "operation": operation,
        "object": object,
        "inputs": inputs,
    })
}

/// Joins the groups and answers calls until `stop` completes or the hub goes away.
pub async fn serve(
    socket: &Path,
    args: &ServeArgs,
    out: &mut dyn Lines,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", args.component_type, std::process::id()));
    let client = Client::connect(socket, &name, &args.component_type).await?;
    let node = client.hub().to_string();
    let text = args
        .reply
        .clone()
        .unwrap_or_else(|| format!("hello from {node}"));
    // Each invocation is reported from the connection's reader; lines reach `out` here.
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    {
        let (node, name) = (node.clone(), name.clone());
        client.on_call(move |inv, r| {
            let _ = seen_tx.send(format!(
                "INVOKED caller={} operation={} object={}",
                inv.caller, inv.operation, inv.object
            ));
            r.reply(Ok(reply_outputs(
                &text,
                &node,
                &name,
                &inv.operation,
                &inv.object,
                inv.inputs,
            )))
        });
    }
    let groups: Vec<&str> = args.group.iter().map(String::as_str).collect();
    let counts = client.register(&groups).await?;
    let id = client
        .id()
        .ok_or_else(|| anyhow!("the hub gave this component no id"))?;
    let counts: Vec<String> = counts.iter().map(|(g, n)| format!("{g}:{n}")).collect();
    out.line(format!(
        "SERVING component={id} name={name} node={node} groups={}",
        counts.join(",")
    ));
    // A hub that went away ends the component: a select fails once the link is closed (the
    // component is a member, so the group is never empty).
    let mut check = tokio::time::interval(Duration::from_secs(5));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(line) = seen.recv() => out.line(line),
            _ = check.tick() => {
                client
                    .select(&args.group[0], Selector::Any)
                    .await
                    .map_err(|e| anyhow!("lost the hub: {}", e.reason))?;
            }
        }
    }
    client.unregister(&groups).await.ok();
    client.close().await;
    Ok(())
}

fn response_line(r: &Response) -> String {
    let from = r
        .from
        .map(|id| id.to_string())
        .unwrap_or_else(|| "hub".into());
    match &r.result {
        Ok(v) => format!("REPLY from={from} {v}"),
        Err(e) => format!(
            "ERROR from={from} code={} reason={}",
            json!(e.code).as_str().unwrap_or("unknown"),
            e.reason
        ),
    }
}

/// Sends one call (to one member, or to all with `--all`) and prints each reply; an error
/// reply makes the command fail after printing.
pub async fn call(socket: &Path, args: &CallArgs, out: &mut dyn Lines) -> anyhow::Result<()> {
    let target = parse_target(&args.target).map_err(|e| anyhow!(e.reason))?;
    let inputs = parse_inputs(&args.inputs)?;
    let client = Client::connect_anonymous(socket).await?;
    let req = Request::new(target, &args.operation)
        .object(&args.object)
        .inputs(inputs)
        .expiry(args.expiry);
    let replies = if args.all {
        client.call_all(req).await?
    } else {
        vec![client.request(req).await]
    };
    let failed = replies.iter().filter(|r| r.result.is_err()).count();
    for r in &replies {
        out.line(response_line(r));
    }
    client.close().await;
    if replies.is_empty() {
        anyhow::bail!("no reply within {:?}", args.expiry);
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} replies were errors", replies.len());
    }
    Ok(())
}

/// Prints `GROUP group=… members=N`, then the members of `group`, one line each.
pub async fn select(
    socket: &Path,
    group: &str,
    selector: Selector,
    out: &mut dyn Lines,
) -> anyhow::Result<()> {
    let client = Client::connect_anonymous(socket).await?;
    let members = client.select(group, selector).await?;
    out.line(format!("GROUP group={group} members={}", members.len()));
    for m in &members {
        out.line(format!("MEMBER group={group} {}", member_words(m)));
    }
    client.close().await;
    Ok(())
}

/// What `monitor` watches, from its flags.
pub fn watch_of(
    group: Option<String>,
    component: Option<String>,
    attributes: Option<String>,
    names: Vec<String>,
) -> anyhow::Result<Watch> {
    Ok(match (group, component, attributes) {
        (Some(g), _, _) => Watch::Group(g),
        (_, Some(c), _) => Watch::Component(c.parse().map_err(|e| {
            anyhow!("--component {c:?}: {e}; give the 40-hex-digit id `select` prints")
        })?),
        (_, _, Some(t)) => Watch::Attributes {
            target: parse_target(&t).map_err(|e| anyhow!(e.reason))?,
            names,
        },
        _ => anyhow::bail!(
            "say what to monitor: --group NAME, --component ID or --attributes TARGET"
        ),
    })
}

/// The line for one monitor event; group members are named with what `known` holds about them.
fn event_line(event: &Event, known: &BTreeMap<String, Member>) -> String {
    let who = |group: &str, id: &crate::TargetId| match known.get(&id.to_string()) {
        Some(m) => format!("group={group} {}", member_words(m)),
        None => format!("group={group} component={id} node=unknown"),
    };
    match event {
        Event::Joined { group, member } => format!("MEMBER-JOINED {}", who(group, member)),
        Event::Left { group, member } => format!("MEMBER-LEFT {}", who(group, member)),
        Event::Terminated { component, reason } => {
            format!("TERMINATED component={component} reason={reason}")
        }
        Event::Attribute { name, value } => format!(
            "ATTRIBUTE name={name} value={}",
            value.clone().unwrap_or(Value::Null)
        ),
    }
}

/// The members of a group by id (empty when it has none).
async fn members(client: &Client, group: &str) -> BTreeMap<String, Member> {
    client
        .select(group, Selector::All)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.component.to_string(), m))
        .collect()
}

/// Prints `MONITORING …` once the monitor is set, then one line per event until `stop`
/// completes or the hub goes away.
pub async fn monitor(
    socket: &Path,
    watch: Watch,
    out: &mut dyn Lines,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let client = Client::connect_anonymous(socket).await?;
    let mut monitor = client.monitor(watch.clone()).await?;
    let group = match &watch {
        Watch::Group(g) => Some(g.clone()),
        _ => None,
    };
    // Members as last seen, so that a leaving member is named with its node.
    let mut known = match &group {
        Some(g) => members(&client, g).await,
        None => BTreeMap::new(),
    };
    out.line(match &group {
        Some(g) => format!("MONITORING group={g} members={}", known.len()),
        None => format!("MONITORING {}", json!(watch)),
    });
    tokio::pin!(stop);
    loop {
        let event = tokio::select! {
            _ = &mut stop => break,
            e = monitor.events.recv() => e,
        };
        let Some(event) = event else {
            anyhow::bail!("the hub closed the connection; is `tessera agent hub` still running?");
        };
        if let (Event::Joined { .. }, Some(g)) = (&event, &group) {
            known.extend(members(&client, g).await);
        }
        out.line(event_line(&event, &known));
    }
    client.close().await;
    Ok(())
}

/// SIGTERM or SIGINT.
async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs one `tessera hub component …` command, printing to stdout.
pub async fn run(args: ComponentArgs) -> anyhow::Result<()> {
    let mut out = |l: String| println!("{l}");
    let socket = args.socket.as_path();
    match args.command {
        ComponentCommand::Serve(s) => serve(socket, &s, &mut out, terminated()).await,
        ComponentCommand::Call(c) => call(socket, &c, &mut out).await,
        ComponentCommand::Select { group, any } => {
            let selector = if any { Selector::Any } else { Selector::All };
            select(socket, &group, selector, &mut out).await
        }
        ComponentCommand::Monitor(MonitorTarget {
            group,
            component,
            attributes,
            names,
        }) => {
            let watch = watch_of(group, component, attributes, names)?;
            monitor(socket, watch, &mut out, terminated()).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Code, HubError};
    use crate::TargetId;

    fn member(id: &TargetId) -> Member {
        Member {
            component: *id,
            name: "web-1".into(),
            component_type: "console".into(),
            hub: "n1.example".into(),
        }
    }

    #[test]
    fn leaving_members_are_named_with_their_node() {
        let id: TargetId = "0123456789abcdef0123456789abcdef01234567".parse().unwrap();
        let mut known = BTreeMap::new();
        let left = Event::Left {
            group: "web".into(),
            member: id,
        };
        assert_eq!(
            event_line(&left, &known),
            format!("MEMBER-LEFT group=web component={id} node=unknown")
        );
        known.insert(id.to_string(), member(&id));
        assert_eq!(
            event_line(&left, &known),
            format!("MEMBER-LEFT group=web component={id} name=web-1 type=console node=n1.example")
        );
        let t = Event::Terminated {
            component: id,
            reason: "hub_lost".into(),
        };
        assert_eq!(
            event_line(&t, &known),
            format!("TERMINATED component={id} reason=hub_lost")
        );
    }

    #[test]
    fn replies_and_errors_are_one_line_each() {
        let ok = Response {
            from: None,
            result: Ok(json!({"reply": "hi"})),
            attachments: vec![],
        };
        assert_eq!(response_line(&ok), r#"REPLY from=hub {"reply":"hi"}"#);
        let err = Response {
            from: None,
            result: Err(HubError::new(
                Code::NoTarget,
                "group \"web\" has no members",
            )),
            attachments: vec![],
        };
        assert_eq!(
            response_line(&err),
            r#"ERROR from=hub code=no_target reason=group "web" has no members"#
        );
    }

    #[test]
    fn monitor_flags_name_what_is_missing_or_wrong() {
        let e = watch_of(None, None, None, vec![]).unwrap_err();
        assert!(e.to_string().contains("--group NAME"), "{e}");
        let e = watch_of(None, Some("xyz".into()), None, vec![]).unwrap_err();
        assert!(e.to_string().contains("--component \"xyz\""), "{e}");
        assert_eq!(
            watch_of(Some("web".into()), None, None, vec![]).unwrap(),
            Watch::Group("web".into())
        );
    }
}
