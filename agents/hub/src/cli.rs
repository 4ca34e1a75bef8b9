//! `tessera hub …`: the operator's view of the hubs, through a hub's HTTPS API with a client
//! certificate from the cluster CA (the operator's admin certificate, or any agent's).

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use serde_json::{json, Value};
use tessera_identity::tls::{self, CaTrust};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::api::parse_target;
use crate::defaults;

pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 5s)"))
}

#[derive(Debug, Args)]
pub struct HubArgs {
    /// A hub's API, host:port.
    #[arg(long, env = "TESSERA_HUB_API", default_value = "127.0.0.1:7440")]
    pub api: String,
    /// The name the hub's certificate must carry; default `hub.<host>`.
    #[arg(long)]
    pub server_name: Option<String>,
    /// The cluster CA certificate (PEM), e.g. the CA state directory's ca.pem.
    #[arg(long, env = "TESSERA_HUB_CA")]
    pub ca: Option<PathBuf>,
    /// Your client certificate chain (PEM), e.g. admin.pem.
    #[arg(long, env = "TESSERA_HUB_CERT")]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM), e.g. admin.key.
    #[arg(long, env = "TESSERA_HUB_KEY")]
    pub key: Option<PathBuf>,
    #[command(subcommand)]
    pub command: HubCommand,
}

/// What `monitor` follows: a group, a component or a target's attributes (the API and
/// `tessera hub component monitor` take the same flags).
#[derive(Debug, Args)]
pub struct MonitorTarget {
    #[arg(long, conflicts_with_all = ["component", "attributes"])]
    pub group: Option<String>,
    #[arg(long, conflicts_with = "attributes")]
    pub component: Option<String>,
    #[arg(long)]
    pub attributes: Option<String>,
    /// Attribute names (with --attributes); default all.
    #[arg(long)]
    pub names: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum HubCommand {
    /// Every group and its member count.
    Groups,
    /// Members of a group.
    Select {
        group: String,
        /// One member only (selector `any`); default: all.
        #[arg(long)]
        any: bool,
    },
    /// Call an operation on a target (`group:NAME`, a group name, or a component id).
    Call {
        target: String,
        operation: String,
        /// Inputs, as JSON.
        #[arg(long, default_value = "null")]
        inputs: String,
        #[arg(long, default_value = "")]
        object: String,
        /// Every member of a group (selector `all`).
        #[arg(long)]
        all: bool,
        #[arg(long, default_value = "5s", value_parser = duration)]
        expiry: Duration,
    },
    /// Fire-and-forget to a target.
    Cast {
        target: String,
        operation: String,
        #[arg(long, default_value = "null")]
        inputs: String,
        #[arg(long, default_value = "")]
        object: String,
        #[arg(long)]
        all: bool,
    },
    /// Attribute values of a target.
    Attributes { target: String, names: Vec<String> },
    /// Follow a group's membership, a component's termination, or a target's attributes.
    Monitor(MonitorTarget),
    /// The virtual-node table as this hub computes it.
    Ring,
    /// Components on this node's console, through the local socket (no certificate needed).
    Component(crate::component::ComponentArgs),
}

/// One keep-alive HTTPS connection to a hub's API.
pub struct ApiClient {
    sender: http1::SendRequest<Full<Bytes>>,
    host: String,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for ApiClient {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl ApiClient {
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        config: Arc<ClientConfig>,
    ) -> anyhow::Result<ApiClient> {
        let tcp = TcpStream::connect(addr).await.with_context(|| {
            format!("connecting to the hub API at {addr}; is the hub running there? (--api)")
        })?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| anyhow!("server name {server_name:?}: {e}"))?;
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .with_context(|| {
                format!("TLS with the hub at {addr} (certificate for {server_name}?); check --ca, --cert, --key and --server-name")
            })?;
        let (sender, conn) = http1::handshake(TokioIo::new(tls)).await?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(ApiClient {
            sender,
            host: server_name.to_string(),
            driver,
        })
    }

    async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        self.sender.ready().await?;
        Ok(self.sender.send_request(req).await?)
    }

    /// A request with a JSON reply: `(status, body)`.
    pub async fn json(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))?;
        let resp = self.send(req).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let value = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "the hub answered {status} with something that is not JSON: {:?}",
                String::from_utf8_lossy(&bytes)
            )
        })?;
        Ok((status, value))
    }

    /// A streamed GET: each line of the body is handed to `line` as it arrives.
    pub async fn stream(
        &mut self,
        path: &str,
        mut line: impl FnMut(&str) -> bool,
    ) -> anyhow::Result<()> {
        let req = Request::get(path)
            .header(hyper::header::HOST, &self.host)
            .body(Full::new(Bytes::new()))?;
        let resp = self.send(req).await?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            if let Some(data) = frame.data_ref() {
                pending.extend_from_slice(data);
                while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
                    let l: Vec<u8> = pending.drain(..=pos).collect();
                    if !line(String::from_utf8_lossy(&l).trim_end()) {
                        return Ok(());
                    }
                }
            }
        }
        if status != 200 {
            anyhow::bail!("the hub refused the monitor ({status})");
        }
        Ok(())
    }
}

/// Reads the CA, certificate and key files into a client configuration.
pub fn client_config(
    ca: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<Arc<ClientConfig>> {
    let read = |p: &std::path::Path, what: &str| {
        std::fs::read_to_string(p).with_context(|| format!("reading {what} {}", p.display()))
    };
    let trust = CaTrust::from_pem(&read(ca, "the CA certificate")?)?;
    let identity =
        tls::certified_key_from_pem(&read(cert, "the certificate")?, &read(key, "the key")?)?;
    Ok(tls::client_config(Some(identity), &trust)?)
}

fn print(value: &Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    let _ = writeln!(std::io::stdout(), "{text}");
}

fn check(status: u16, value: Value) -> anyhow::Result<Value> {
    if status >= 400 {
        let reason = value["reason"].as_str().unwrap_or("no reason given");
        anyhow::bail!(
            "the hub refused ({status} {}): {reason}",
            value["error"].as_str().unwrap_or("")
        );
    }
    Ok(value)
}

/// `--inputs` as JSON, or an error saying how to quote text.
pub(crate) fn parse_inputs(inputs: &str) -> anyhow::Result<Value> {
    serde_json::from_str(inputs).with_context(|| {
        format!("--inputs {inputs:?} is not JSON; quote strings: --inputs '\"text\"'")
    })
}

fn call_body(
    target: &str,
    operation: &str,
    object: &str,
    inputs: &str,
    all: bool,
    expiry: Option<Duration>,
) -> anyhow::Result<Value> {
    let target = parse_target(target).map_err(|e| anyhow!(e.reason))?;
    let inputs = parse_inputs(inputs)?;
    let mut body = json!({
        "target": target,
        "object": object,
        "operation": operation,
        "inputs": inputs,
        "selector": if all { "all" } else { "any" },
    });
    if let Some(e) = expiry {
        body["expiry_ms"] = json!(e.as_millis() as u64);
    }
    Ok(body)
}

/// The client certificate files the API commands need, or what to pass.
fn credentials(
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> anyhow::Result<Arc<ClientConfig>> {
    match (&ca, &cert, &key) {
        (Some(ca), Some(cert), Some(key)) => client_config(ca, cert, key),
        _ => anyhow::bail!(
            "the hub API needs --ca, --cert and --key (or TESSERA_HUB_CA, TESSERA_HUB_CERT, TESSERA_HUB_KEY), e.g. the CA state directory's ca.pem, admin.pem and admin.key; on a node's console use `tessera hub component …`, which goes through the local socket"
        ),
    }
}

/// Runs one `tessera hub …` command: `component` on the local socket, the rest against the API.
pub async fn run_async(args: HubArgs) -> anyhow::Result<()> {
    let HubArgs {
        api: api_addr,
        server_name,
        ca,
        cert,
        key,
        command,
    } = args;
    let command = match command {
        HubCommand::Component(c) => return crate::component::run(c).await,
        other => other,
    };
    let addr = api_addr
        .to_socket_addrs()
        .with_context(|| format!("--api {:?} is not host:port", api_addr))?
        .next()
        .ok_or_else(|| anyhow!("--api {:?} resolves to no address", api_addr))?;
    let host = api_addr
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(&api_addr);
    let server_name = server_name.unwrap_or_else(|| {
        format!(
            "{}.{}",
            defaults::HUB_AGENT_ID,
            host.trim_matches(['[', ']'])
        )
    });
    let config = credentials(ca, cert, key)?;
    let mut api = ApiClient::connect(addr, &server_name, config).await?;
    match command {
        HubCommand::Groups => {
            let (s, v) = api.json("GET", "/v1/groups", None).await?;
            print(&check(s, v)?["groups"]);
        }
        HubCommand::Select { group, any } => {
            let path = format!(
                "/v1/groups/{group}?selector={}",
                if any { "any" } else { "all" }
            );
            let (s, v) = api.json("GET", &path, None).await?;
            print(&check(s, v)?["members"]);
        }
        HubCommand::Call {
            target,
            operation,
            inputs,
            object,
            all,
            expiry,
        } => {
            let body = call_body(&target, &operation, &object, &inputs, all, Some(expiry))?;
            let (s, v) = api.json("POST", "/v1/call", Some(body)).await?;
            print(&check(s, v)?["replies"]);
        }
        HubCommand::Cast {
            target,
            operation,
            inputs,
            object,
            all,
        } => {
            let body = call_body(&target, &operation, &object, &inputs, all, None)?;
            let (s, v) = api.json("POST", "/v1/cast", Some(body)).await?;
            check(s, v)?;
        }
        HubCommand::Attributes { target, names } => {
            let path = format!("/v1/attributes/{target}?names={}", names.join(","));
            let (s, v) = api.json("GET", &path, None).await?;
            print(&check(s, v)?["attributes"]);
        }
        HubCommand::Monitor(MonitorTarget {
            group,
            component,
            attributes,
            names,
        }) => {
            let q = match (group, component, attributes) {
                (Some(g), _, _) => format!("group={g}"),
                (_, Some(c), _) => format!("component={c}"),
                (_, _, Some(t)) => format!("attributes={t}&names={}", names.join(",")),
                _ => anyhow::bail!(
                    "say what to monitor: --group NAME, --component ID or --attributes TARGET"
                ),
            };
            api.stream(&format!("/v1/monitor?{q}"), |line| {
                writeln!(std::io::stdout(), "{line}").is_ok()
            })
            .await?;
        }
        HubCommand::Ring => {
            let (s, v) = api.json("GET", "/v1/ring", None).await?;
            print(&check(s, v)?);
        }
        HubCommand::Component(c) => crate::component::run(c).await?,
    }
    Ok(())
}

/// `tessera hub …` from a synchronous main.
pub fn run(args: HubArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_bodies_carry_target_selector_inputs_and_expiry() {
        let b = call_body(
            "group:web",
            "get",
            "",
            r#"{"a":1}"#,
            true,
            Some(Duration::from_millis(1500)),
        )
        .unwrap();
        assert_eq!(b["target"], json!({"group": "web"}));
        assert_eq!(b["selector"], "all");
        assert_eq!(b["inputs"], json!({"a": 1}));
        assert_eq!(b["expiry_ms"], 1500);
        let id = "0123456789abcdef0123456789abcdef01234567";
        let b = call_body(id, "get", "obj", "null", false, None).unwrap();
        assert_eq!(b["target"], json!({"component": id}));
        assert_eq!(b["selector"], "any");
        assert!(b.get("expiry_ms").is_none());
        let e = call_body("web", "get", "", "not json", false, None).unwrap_err();
        assert!(e.to_string().contains("is not JSON"), "{e}");
    }

    #[test]
    fn api_commands_without_certificates_say_what_to_pass() {
        let e = credentials(Some("ca.pem".into()), None, None).unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("--ca, --cert and --key") && e.contains("tessera hub component"),
            "{e}"
        );
    }

    #[test]
    fn refusals_name_the_code_and_reason() {
        let e = check(
            404,
            json!({"error": "no_target", "reason": "group \"x\" has no members"}),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the hub refused (404 no_target): group \"x\" has no members"
        );
        assert!(check(200, json!({})).is_ok());
    }
}
