//! The node API's requests and replies (JSON; `/metrics` in the Prometheus text format).
//!
//! | method, path | access | reply |
//! | --- | --- | --- |
//! | `GET /v1/status` | read | node, life-cycle, PID 1's view, services with health |
//! | `POST /v1/lifecycle` `{"state":"available"\|"unavailable","reason":…}` | change | the new life-cycle |
//! | `GET /v1/services` | read | services as PID 1 reports them, with health |
//! | `POST /v1/services/{name}/{start\|stop\|restart}` | change | PID 1's answer |
//! | `GET /v1/logs?follow=1&service=S&tail=N` | read | JSON lines, streamed while following |
//! | `GET /metrics` | read | Prometheus text |
//! | `GET /v1/volumes` | read | volumes, snapshots and free space (the storage service's list) |
//! | `POST /v1/volumes` `{"name":…,"size":bytes}` or `{"name":…,"source":…,"readonly":bool}` | change | the new volume or snapshot |
//! | `DELETE /v1/volumes/{name}` | change | `{"ok":true}` |
//! | `GET /v1/firewall` | read | cluster networks, exposures and the table in force (`tessera firewall show`) |
//! | `POST /v1/firewall/exposures` `{"port":8080,"protocol":"tcp","scope":"cluster","owner":…}` | change | the exposures, once the new ruleset is in force |
//! | `DELETE /v1/firewall/exposures/{tcp\|udp}/{port}` | change | `{"ok":true,"removed":bool}` |
//! | `/v1/containers`, `/v1/templates` | read / change (`container`) | see `containers` |
//!
//! Volume errors keep the storage service's reason: 400 bad name or request, 404 no such
//! volume, 409 exists, 507 no space left on the data disk, 503 no data disk (or refused).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tessera_common::control::{self, Reply, ServiceAction};
use tessera_identity::profile::PeerIdentity;

use super::auth::{self, Access};
use super::containers;
use super::node::Node;
use crate::lifecycle::Event;
use crate::metrics::format::CONTENT_TYPE;
use crate::net::service::log;

pub type Body = BoxBody<Bytes, Infallible>;

/// The content type of JSON-lines replies (logs).
pub const NDJSON: &str = "application/x-ndjson";

/// Request bodies are small JSON objects.
pub const MAX_BODY: usize = 16 * 1024;

pub(super) fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

pub(super) fn reply(status: StatusCode, content_type: &str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

pub fn json_reply(status: StatusCode, v: &Value) -> Response<Body> {
    let mut text = v.to_string();
    text.push('\n');
    reply(status, "application/json", full(text))
}

/// `{"error": code, "reason": sentence with the fix}`.
pub fn error(status: StatusCode, code: &str, reason: impl Into<String>) -> Response<Body> {
    json_reply(status, &json!({"error": code, "reason": reason.into()}))
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response<Body>> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

pub async fn handle(
    node: Arc<Node>,
    peer: Option<Arc<PeerIdentity>>,
    req: Request<Incoming>,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let access = match (&method, segments.as_slice()) {
        // Waiting for an exit changes nothing: any cluster certificate may.
        (&Method::POST, ["v1", "containers", _, "wait"]) => Access::Read,
        (&Method::POST | &Method::DELETE, ["v1", "containers" | "templates", ..]) => {
            Access::Change(auth::CONTAINER_CAPABILITY)
        }
        (&Method::POST | &Method::DELETE, _) => Access::Change(auth::NODE_CAPABILITY),
        _ => Access::Read,
    };
    if let Err(why) = auth::authorize(peer.as_deref(), access) {
        log(
            "warn",
            "node API request refused",
            json!({"peer": auth::who(peer.as_deref()), "method": method.as_str(), "path": path, "reason": why}),
        );
        return error(StatusCode::FORBIDDEN, "forbidden", why);
    }
    let result = match (&method, segments.as_slice()) {
        (&Method::GET, ["v1", "status"]) => status(&node).await,
        (&Method::POST, ["v1", "lifecycle"]) => lifecycle(&node, peer.as_deref(), req).await,
        (&Method::GET, ["v1", "services"]) => services(&node).await,
        (&Method::POST, ["v1", "services", name, action]) => service_action(&node, peer.as_deref(), name, action).await,
        (&Method::GET, ["v1", "logs"]) => logs(&node, &query).await,
        (&Method::GET, ["metrics"]) => {
            let n = node.clone();
            blocking(move || n.metrics_text()).await.map(|t| reply(StatusCode::OK, CONTENT_TYPE, full(t)))
        }
        (&Method::GET, ["v1", "volumes"]) => volumes(json!({"op": "list"})).await,
        (&Method::POST, ["v1", "volumes"]) => volume_change(req).await,
        (&Method::DELETE, ["v1", "volumes", name]) => volumes(json!({"op": "delete", "name": name})).await,
        (&Method::GET, ["v1", "firewall"]) => proxy(FIREWALL, json!({"op": "show"})).await,
        (&Method::POST, ["v1", "firewall", "exposures"]) => expose(req).await,
        (&Method::DELETE, ["v1", "firewall", "exposures", protocol, port]) => unexpose(protocol, port).await,
        (_, ["v1", "containers" | "templates", ..]) => containers::route(&method, &segments[1..], &query, req).await,
        (_, ["v1", "status" | "lifecycle" | "services" | "logs" | "volumes" | "firewall", ..]) | (_, ["metrics"]) => Ok(not_allowed(&method, &path)),
        _ => Ok(error(StatusCode::NOT_FOUND, "not_found", format!("no {path} here; the node API serves /v1/status, /v1/lifecycle, /v1/services, /v1/logs, /v1/volumes, /v1/firewall, /v1/containers, /v1/templates and /metrics"))),
    };
    result.unwrap_or_else(|e| e)
}

pub fn not_allowed(method: &Method, path: &str) -> Response<Body> {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {path}; see the table in the README (Node API)"),
    )
}

/// PID 1's status with each service's health merged in.
fn services_json(node: &Node, status: &control::Status) -> Value {
    let health = node.health();
    Value::Array(
        status
            .services
            .iter()
            .map(|s| {
                let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
                if let (Some(h), Value::Object(m)) = (health.get(&s.name), &mut v) {
                    m.insert(
                        "health".into(),
                        serde_json::to_value(h).unwrap_or(Value::Null),
                    );
                }
                v
            })
            .collect(),
    )
}

async fn status(node: &Arc<Node>) -> Result<Response<Body>, Response<Body>> {
    let n = node.clone();
    let pid1 = blocking(move || n.pid1_status()).await?;
    let lifecycle = node.lifecycle();
    let body = match pid1 {
        Ok(s) => json!({
            "node": {"hostname": s.node.hostname, "kernel": s.node.kernel, "uptime_ms": s.node.uptime_ms},
            "lifecycle": lifecycle,
            "pid1": s.node,
            "services": services_json(node, &s),
        }),
        Err(e) => json!({
            "node": {"hostname": nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok())},
            "lifecycle": lifecycle,
            "pid1_error": e,
            "services": [],
        }),
    };
    Ok(json_reply(StatusCode::OK, &body))
}

pub(super) async fn read_json(req: Request<Incoming>) -> Result<Value, Response<Body>> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("reading the body: {e} (bodies are limited to {MAX_BODY} bytes)"),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the body is not JSON: {e}"),
        )
    })
}

async fn lifecycle(
    node: &Arc<Node>,
    peer: Option<&PeerIdentity>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Response<Body>> {
    let body = read_json(req).await?;
    let reason = body
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let available = match body.get("state").and_then(Value::as_str) {
        Some("available") => true,
        Some("unavailable") => false,
        other => {
            return Err(error(StatusCode::BAD_REQUEST, "bad_request", format!("state must be \"available\" or \"unavailable\", got {other:?}; send {{\"state\":\"unavailable\",\"reason\":\"…\"}}")))
        }
    };
    let by = auth::who(peer);
    match node.apply(Event::Mark {
        available,
        reason,
        by,
    }) {
        Ok(l) => Ok(json_reply(StatusCode::OK, &json!({"lifecycle": l}))),
        Err(e) => Err(error(StatusCode::CONFLICT, "refused", e.to_string())),
    }
}

async fn services(node: &Arc<Node>) -> Result<Response<Body>, Response<Body>> {
    let n = node.clone();
    match blocking(move || n.pid1_status()).await? {
        Ok(s) => Ok(json_reply(
            StatusCode::OK,
            &json!({"services": services_json(node, &s)}),
        )),
        Err(e) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "pid1_unreachable",
            e,
        )),
    }
}

async fn service_action(
    node: &Arc<Node>,
    peer: Option<&PeerIdentity>,
    name: &str,
    action: &str,
) -> Result<Response<Body>, Response<Body>> {
    let action = match action {
        "start" => ServiceAction::Start,
        "stop" => ServiceAction::Stop,
        "restart" => ServiceAction::Restart,
        other => {
            return Err(error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("unknown action {other:?}; use start, stop or restart"),
            ))
        }
    };
    log(
        "info",
        "service action",
        json!({"service": name, "action": format!("{action:?}").to_lowercase(), "peer": auth::who(peer)}),
    );
    let socket = node.control.clone();
    let request = control::Request::Service {
        action,
        name: name.to_string(),
    };
    match blocking(move || control::Client::call(&socket, &request)).await? {
        Ok(Reply::Done { message }) => Ok(json_reply(StatusCode::OK, &json!({"message": message}))),
        Ok(other) => Ok(json_reply(
            StatusCode::OK,
            &serde_json::to_value(other).unwrap_or(Value::Null),
        )),
        Err(control::ClientError::Refused(e)) => Err(error(StatusCode::CONFLICT, "refused", e)),
        Err(e) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "pid1_unreachable",
            e.to_string(),
        )),
    }
}

/// The HTTP status of a storage or firewall service refusal.
pub fn refusal_status(code: &str) -> StatusCode {
    match code {
        "rejected" => StatusCode::UNPROCESSABLE_ENTITY,
        "bad_request" => StatusCode::BAD_REQUEST,
        "not_found" => StatusCode::NOT_FOUND,
        "exists" | "wrong_state" => StatusCode::CONFLICT,
        "no_space" => StatusCode::INSUFFICIENT_STORAGE,
        "no_storage" | "busy" | "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        "forbidden" => StatusCode::FORBIDDEN,
        "timeout" => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A local service's socket the node API proxies to, and the code it answers with when the
/// service cannot be reached.
pub(super) struct Local {
    pub socket: &'static str,
    pub what: &'static str,
    pub unreachable: &'static str,
    pub timeout: std::time::Duration,
}

const STORAGE: Local = Local {
    socket: crate::storage::service::SOCKET,
    what: "storage",
    unreachable: "no_storage",
    timeout: crate::storage::client::TIMEOUT,
};

const FIREWALL: Local = Local {
    socket: crate::firewall::service::SOCKET,
    what: "firewall",
    unreachable: "no_firewall",
    timeout: crate::firewall::client::TIMEOUT,
};

/// Asks a local service; its refusals keep their code and reason as an HTTP error.
pub(super) async fn ask_local(to: Local, request: Value) -> Result<Value, Response<Body>> {
    let asked = blocking(move || {
        crate::ipc::ask(
            std::path::Path::new(to.socket),
            to.what,
            &request,
            to.timeout,
        )
    })
    .await?;
    match asked {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(refused)) => Err(error(
            refusal_status(&refused.code),
            &refused.code,
            refused.reason,
        )),
        Err(e) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            to.unreachable,
            format!("{e:#}"),
        )),
    }
}

/// Proxies one request to a local service's socket: its reply as the response body.
pub(super) async fn proxy(to: Local, request: Value) -> Result<Response<Body>, Response<Body>> {
    ask_local(to, request)
        .await
        .map(|v| json_reply(StatusCode::OK, &v))
}

/// A JSON-lines response fed by `rx` as the lines come; it ends when the sender is dropped.
pub(super) fn ndjson_stream(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response<Body> {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    reply(
        StatusCode::OK,
        NDJSON,
        BodyExt::boxed(StreamBody::new(stream)),
    )
}

async fn volumes(request: Value) -> Result<Response<Body>, Response<Body>> {
    proxy(STORAGE, request).await
}

/// The request body, a JSON object, with `"op"` set: what a local service is asked. Anything
/// else is refused with `example` of what to send.
pub(super) async fn body_with_op(
    req: Request<Incoming>,
    op: &str,
    example: &str,
) -> Result<Value, Response<Body>> {
    let mut body = read_json(req).await?;
    let Value::Object(fields) = &mut body else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("send a JSON object: {example}"),
        ));
    };
    fields.insert("op".into(), json!(op));
    Ok(body)
}

/// `POST /v1/firewall/exposures` `{"port":8080,"protocol":"tcp","scope":"cluster","owner":…}`.
async fn expose(req: Request<Incoming>) -> Result<Response<Body>, Response<Body>> {
    let example = r#"{"port":8080,"protocol":"tcp","scope":"cluster","owner":"web"}"#;
    proxy(FIREWALL, body_with_op(req, "expose", example).await?).await
}

/// `DELETE /v1/firewall/exposures/{tcp|udp}/{port}`.
async fn unexpose(protocol: &str, port: &str) -> Result<Response<Body>, Response<Body>> {
    let port: u16 = port.parse().map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{port:?} is not a port; use DELETE /v1/firewall/exposures/tcp/8080"),
        )
    })?;
    proxy(
        FIREWALL,
        json!({"op": "unexpose", "protocol": protocol, "port": port}),
    )
    .await
}

/// `POST /v1/volumes`: a snapshot when the body names a `source`, else a new volume.
async fn volume_change(req: Request<Incoming>) -> Result<Response<Body>, Response<Body>> {
    let mut body = read_json(req).await?;
    let Value::Object(fields) = &mut body else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "send a JSON object: {\"name\":\"data\"} or {\"name\":\"s1\",\"source\":\"data\",\"readonly\":true}",
        ));
    };
    let op = if fields.contains_key("source") {
        "snapshot"
    } else {
        "create"
    };
    fields.insert("op".into(), json!(op));
    volumes(body).await
}

/// `follow`, `service` and `tail` from the query string.
pub fn logs_request(query: &str) -> Result<control::Request, String> {
    let mut follow = false;
    let mut service = None;
    let mut tail = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "follow" => follow = matches!(v, "1" | "true" | ""),
            "service" => service = Some(v.to_string()),
            "tail" => {
                tail = Some(
                    v.parse()
                        .map_err(|_| format!("tail must be a number, got {v:?}"))?,
                )
            }
            other => {
                return Err(format!(
                    "unknown parameter {other:?}; use follow=1, service=NAME, tail=N"
                ))
            }
        }
    }
    Ok(control::Request::Logs {
        follow,
        service,
        tail,
    })
}

async fn logs(node: &Arc<Node>, query: &str) -> Result<Response<Body>, Response<Body>> {
    let request =
        logs_request(query).map_err(|e| error(StatusCode::BAD_REQUEST, "bad_request", e))?;
    let socket = node.control.clone();
    let mut client = blocking(move || control::Client::send(&socket, &request))
        .await?
        .map_err(|e| {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "pid1_unreachable",
                e.to_string(),
            )
        })?;
    // A blocking reader feeds the stream; it ends when PID 1 closes or the client goes away
    // (the next event then finds the channel closed).
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::task::spawn_blocking(move || {
        while let Ok(Some(Reply::Event(e))) = client.next_reply() {
            let mut line = serde_json::to_string(&e).unwrap_or_default();
            line.push('\n');
            if tx.blocking_send(Bytes::from(line)).is_err() {
                break;
            }
        }
    });
    Ok(ndjson_stream(rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_refusals_keep_their_meaning_in_http() {
        assert_eq!(refusal_status("bad_request"), StatusCode::BAD_REQUEST);
        assert_eq!(refusal_status("rejected"), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(refusal_status("not_found"), StatusCode::NOT_FOUND);
        assert_eq!(refusal_status("exists"), StatusCode::CONFLICT);
        assert_eq!(refusal_status("no_space"), StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(
            refusal_status("no_storage"),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            refusal_status("internal"),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn logs_query_is_parsed_strictly() {
        assert_eq!(
            logs_request("follow=1&service=net&tail=5").unwrap(),
            control::Request::Logs {
                follow: true,
                service: Some("net".into()),
                tail: Some(5)
            }
        );
        assert_eq!(
            logs_request("").unwrap(),
            control::Request::Logs {
                follow: false,
                service: None,
                tail: None
            }
        );
        assert!(logs_request("tail=many").unwrap_err().contains("tail"));
        assert!(logs_request("folow=1").unwrap_err().contains("folow"));
    }
}
