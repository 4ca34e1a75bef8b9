//! The hub's HTTPS API (mTLS: every client presents a certificate from the cluster CA; its
//! subsystem and node name the caller to the components), JSON in and out, errors as
//! `{"error": "<code>", "reason": "…"}`.
//!
//! | method, path | what |
//! | --- | --- |
//! | `GET /v1/health` | this hub, the live hubs, the ring size |
//! | `GET /v1/groups` | every group with its member count |
//! | `GET /v1/groups/{group}?selector=any\|all` | members |
//! | `POST /v1/call` | `{target, object?, operation, inputs?, selector?, expiry_ms?, attachments_hex?}` → `{replies: [{from, ok \| error, attachments_hex}]}` |
//! | `POST /v1/cast` | same body, 202 |
//! | `GET /v1/attributes/{group:NAME \| component id}?names=a,b` | values |
//! | `GET /v1/monitor?group=G \| component=ID \| attributes=TARGET[&names=a,b]` | events as JSON lines, streamed until the client hangs up |
//! | `GET /v1/ring` | each virtual node's preference list |

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use tessera_identity::https::{self, Event, Limits};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::codec::Frame;
use crate::defaults;
use crate::error::{Code, HubError};
use crate::hub::Hub;
use crate::id::TargetId;
use crate::peer::TlsConfigs;
use crate::protocol::{ClientMsg, HubMsg, Outcome, Selector, Target, Watch};

pub type Body = BoxBody<Bytes, Infallible>;

/// Handshake and request headers within 10 s; at most 256 open connections.
const LIMITS: Limits = Limits {
    handshake: defaults::HANDSHAKE_TIMEOUT,
    header_read: Duration::from_secs(10),
    max_connections: 256,
    max_buf: None,
};

fn json_response(status: u16, value: Value) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(value.to_string() + "\n")).boxed());
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = "application/json".parse() {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

fn error_response(e: &HubError) -> Response<Body> {
    json_response(e.status(), json!({ "error": e.code, "reason": e.reason }))
}

/// A streamed body fed by a channel.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// Parses `group:NAME`, a bare group name, or a 40-hex-digit component id.
pub fn parse_target(text: &str) -> Result<Target, HubError> {
    if let Some(g) = text.strip_prefix("group:") {
        return Ok(Target::Group(g.to_string()));
    }
    if text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return text
            .parse::<TargetId>()
            .map(Target::Component)
            .map_err(|e| HubError::bad(e.to_string()));
    }
    Ok(Target::Group(text.to_string()))
}

fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hexval = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hexval(b[i + 1]), hexval(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn param<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The body of `POST /v1/call` and `/v1/cast`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallBody {
    pub target: Target,
    #[serde(default)]
    pub object: String,
    pub operation: String,
    #[serde(default)]
    pub inputs: Value,
    #[serde(default)]
    pub selector: Selector,
    #[serde(default)]
    pub expiry_ms: Option<u64>,
    #[serde(default)]
    pub attachments_hex: Vec<String>,
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, HubError> {
    let limited = http_body_util::Limited::new(req.into_body(), defaults::MAX_API_BODY);
    limited.collect().await.map(|c| c.to_bytes()).map_err(|e| {
        HubError::bad(format!(
            "cannot read the request body ({e}); send at most {} KiB of JSON",
            defaults::MAX_API_BODY / 1024
        ))
    })
}

/// Runs an API request as a short-lived session of the hub.
struct ApiSession {
    hub: Arc<Hub>,
    id: u64,
    rx: mpsc::Receiver<Frame<HubMsg>>,
}

impl ApiSession {
    fn open(hub: &Arc<Hub>, label: &str) -> ApiSession {
        let (tx, rx) = mpsc::channel(defaults::CONNECTION_QUEUE);
        let id = hub.open_session(tx, label.to_string());
        ApiSession {
            hub: hub.clone(),
            id,
            rx,
        }
    }
}

impl Drop for ApiSession {
    fn drop(&mut self) {
        self.hub.close_session(self.id);
    }
}

async fn call(hub: &Arc<Hub>, label: &str, body: CallBody, cast: bool) -> Response<Body> {
    let mut attachments = Vec::new();
    for a in &body.attachments_hex {
        match hex::decode(a) {
            Ok(b) => attachments.push(b),
            Err(_) => {
                return error_response(&HubError::bad(
                    "attachments_hex holds something that is not hexadecimal",
                ))
            }
        }
    }
    let mut s = ApiSession::open(hub, label);
    if cast {
        hub.handle_client(
            s.id,
            Frame::with(
                ClientMsg::Cast {
                    target: body.target,
                    object: body.object,
                    operation: body.operation,
                    inputs: body.inputs,
                    selector: body.selector,
                },
                attachments,
            ),
        );
        return json_response(202, json!({ "cast": true }));
    }
    let expiry = body.expiry_ms;
    hub.handle_client(
        s.id,
        Frame::with(
            ClientMsg::Call {
                corr: 1,
                target: body.target,
                object: body.object,
                operation: body.operation,
                inputs: body.inputs,
                selector: body.selector,
                expiry_ms: expiry,
            },
            attachments,
        ),
    );
    let limit =
        Duration::from_millis(expiry.unwrap_or(defaults::DEFAULT_EXPIRY.as_millis() as u64))
            .min(defaults::MAX_EXPIRY)
            + Duration::from_secs(2);
    let mut replies = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Some(frame)) = tokio::time::timeout_at(deadline, s.rx.recv()).await {
        if let HubMsg::Reply {
            from,
            result,
            remaining,
            ..
        } = frame.header
        {
            let hexes: Vec<String> = frame.attachments.iter().map(hex::encode).collect();
            if from.is_none() && replies.is_empty() {
                if let Outcome::Error(e) = &result {
                    return error_response(e);
                }
            }
            let mut r = match result {
                Outcome::Ok(v) => json!({ "ok": v }),
                Outcome::Error(e) => json!({ "error": { "code": e.code, "reason": e.reason } }),
            };
            r["from"] = json!(from);
            if !hexes.is_empty() {
                r["attachments_hex"] = json!(hexes);
            }
            replies.push(r);
            if remaining == 0 {
                break;
            }
        }
    }
    json_response(200, json!({ "replies": replies }))
}

fn monitor(hub: &Arc<Hub>, label: &str, q: &[(String, String)]) -> Response<Body> {
    let names: Vec<String> = param(q, "names")
        .map(|n| {
            n.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let watch = if let Some(g) = param(q, "group") {
        Watch::Group(g.to_string())
    } else if let Some(c) = param(q, "component") {
        match c.parse::<TargetId>() {
            Ok(id) => Watch::Component(id),
            Err(e) => return error_response(&HubError::bad(e.to_string())),
        }
    } else if let Some(t) = param(q, "attributes") {
        match parse_target(t) {
            Ok(target) => Watch::Attributes { target, names },
            Err(e) => return error_response(&e),
        }
    } else {
        return error_response(&HubError::bad(
            "say what to monitor: ?group=NAME, ?component=ID or ?attributes=TARGET",
        ));
    };
    let mut s = ApiSession::open(hub, label);
    hub.handle_client(s.id, Frame::new(ClientMsg::Monitor { corr: 1, watch }));
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        while let Some(frame) = s.rx.recv().await {
            let line = match frame.header {
                HubMsg::Reply {
                    result: Outcome::Error(e),
                    ..
                } => json!({ "error": e.code, "reason": e.reason }),
                HubMsg::Reply {
                    result: Outcome::Ok(v),
                    ..
                } => v,
                HubMsg::Event { event, .. } => serde_json::to_value(event).unwrap_or(Value::Null),
                _ => continue,
            };
            if tx.send(Bytes::from(line.to_string() + "\n")).await.is_err() {
                break; // the client hung up; dropping the session ends the monitor
            }
        }
    });
    let mut resp = Response::new(ChannelBody(rx).boxed());
    if let Ok(v) = "application/x-ndjson".parse() {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

/// Routes one request.
pub async fn handle(hub: Arc<Hub>, label: Arc<str>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let q = query(&req);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method().clone(), segments.as_slice()) {
        (Method::GET, ["v1", "health"]) => json_response(
            200,
            json!({
                "hub": hub.id(),
                "members": hub.members(),
                "vnodes": hub.ring().vnodes(),
                "in_flight": hub.in_flight().0,
            }),
        ),
        (Method::GET, ["v1", "groups"]) => {
            json_response(200, json!({ "groups": hub.group_counts() }))
        }
        (Method::GET, ["v1", "groups", group]) => {
            let selector = match param(&q, "selector").unwrap_or("all").parse::<Selector>() {
                Ok(s) => s,
                Err(e) => return error_response(&HubError::bad(e)),
            };
            match hub.select(group, selector) {
                Ok(m) => json_response(200, json!({ "group": group, "members": m })),
                Err(e) => error_response(&e),
            }
        }
        (Method::POST, ["v1", op @ ("call" | "cast")]) => {
            let cast = *op == "cast";
            let bytes = match read_body(req).await {
                Ok(b) => b,
                Err(e) => return error_response(&e),
            };
            match serde_json::from_slice::<CallBody>(&bytes) {
                Ok(body) => call(&hub, &label, body, cast).await,
                Err(e) => error_response(&HubError::bad(format!(
                    "the body is not a call: {e}; send {{\"target\":{{\"group\":\"web\"}},\"operation\":\"…\"}}"
                ))),
            }
        }
        (Method::GET, ["v1", "attributes", target]) => {
            let names: Vec<String> = param(&q, "names")
                .map(|n| {
                    n.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            match parse_target(&percent_decode(target)).and_then(|t| hub.attributes(&t, &names)) {
                Ok(a) => json_response(200, json!({ "attributes": a })),
                Err(e) => error_response(&e),
            }
        }
        (Method::GET, ["v1", "monitor"]) => monitor(&hub, &label, &q),
        (Method::GET, ["v1", "ring"]) => {
            let ring = hub.ring();
            let table: Vec<Value> = (0..ring.vnodes())
                .map(|v| json!({ "vnode": v, "hubs": ring.preference(v) }))
                .collect();
            json_response(
                200,
                json!({ "vnodes": ring.vnodes(), "members": ring.members(), "table": table }),
            )
        }
        _ => error_response(&HubError::new(
            Code::NoTarget,
            format!(
                "no such endpoint: {} {path}; see GET /v1/health, /v1/groups, POST /v1/call",
                req.method()
            ),
        )),
    }
}

/// Serves the API until the task is dropped. Callers need a Tessera certificate.
pub async fn serve(hub: Arc<Hub>, listener: TcpListener, configs: TlsConfigs) {
    let tls = move || configs.server();
    https::serve(
        listener,
        tls,
        LIMITS,
        std::future::pending(),
        report,
        move |conn, remote| {
            let Some(peer) = tessera_identity::tls::peer_identity(conn) else {
                tracing::info!(%remote, "API client without a Tessera certificate refused");
                return None;
            };
            let label: Arc<str> = format!("api:{}@{}", peer.subsystem, peer.node).into();
            tracing::info!(%remote, caller = %label, "API client connected");
            let hub = hub.clone();
            Some(service_fn(move |req| {
                let (hub, label) = (hub.clone(), label.clone());
                async move { Ok::<_, Infallible>(handle(hub, label, req).await) }
            }))
        },
    )
    .await
}

fn report(event: Event<'_>) {
    match event {
        Event::AcceptFailed(e) => tracing::warn!(error = %e, "accept on the API port failed"),
        Event::HandshakeRefused { remote, error } => {
            tracing::info!(%remote, error = %error, "API TLS handshake refused")
        }
        Event::HandshakeTimedOut { remote } => {
            tracing::info!(%remote, "API TLS handshake timed out")
        }
        Event::ConnectionError { remote, error } => {
            tracing::debug!(%remote, error = %error, "API connection ended")
        }
    }
}
