//! The node's containers over the node API: each request becomes one request to the
//! container agent's socket (the same operations as `tessera container …`), so the API, the
//! console and user-data share one implementation.
//!
//! | method, path | access | container agent request, reply |
//! | --- | --- | --- |
//! | `GET /v1/containers` | read | `list` |
//! | `POST /v1/containers` `{"name":…,"template":…,"args":[…],"env":[…],"memory_max":…,"pids_max":…,"cpu_percent":…,"restart":…,"net":…,"start":bool}` | change | `create`: the container |
//! | `GET /v1/containers/{name}` | read | `inspect`: state, exit, cgroup stats, record |
//! | `POST /v1/containers/{name}/start` | change | `start` |
//! | `POST /v1/containers/{name}/stop` `{"grace_ms":5000}` (body optional) | change | `stop`: the container, stopped |
//! | `POST /v1/containers/{name}/kill` `{"signal":"SIGTERM"}` (body optional, default SIGKILL) | change | `kill` |
//! | `POST /v1/containers/{name}/wait` `{"timeout_ms":60000}` (body optional) | read | `wait`: the container once its run has ended; 504 timeout if it runs on |
//! | `DELETE /v1/containers/{name}?force=1` | change | `delete` |
//! | `GET /v1/containers/{name}/logs?follow=1&tail=N` | read | JSON lines of its output; with `follow` streamed until the container stops |
//! | `GET /v1/templates` | read | `templates` |
//!
//! Refusals keep the agent's code: 400 bad_request, 404 not_found, 409 exists or wrong_state,
//! 503 unavailable (no data disk: the reason says why) or no_containers (agent down).

use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::routes::{
    ask_local, body_with_op, error, full, ndjson_stream, not_allowed, proxy, read_json, reply,
    Body, Local, NDJSON,
};

const CONTAINER: Local = Local {
    socket: tessera_common::paths::CONTAINER_SOCKET,
    what: "container",
    unreachable: "no_containers",
    // A create snapshots the template and sets the container up: seconds under TCG.
    timeout: Duration::from_secs(120),
};

/// The container agent's default wait and stop grace, and the longest wait
/// (`tessera_container::service`).
const DEFAULT_WAIT_MS: u64 = 60_000;
const DEFAULT_GRACE_MS: u64 = 5_000;
const MAX_WAIT_MS: u64 = 24 * 3600 * 1000;

/// How often a follower asks for more output.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

type Reply = Result<Response<Body>, Response<Body>>;

/// `segments` after `v1`: `["containers", …]` or `["templates"]`.
pub async fn route(
    method: &Method,
    segments: &[&str],
    query: &str,
    req: Request<Incoming>,
) -> Reply {
    let path = format!("/v1/{}", segments.join("/"));
    match (method, segments) {
        (&Method::GET, ["templates"]) => proxy(CONTAINER, json!({"op": "templates"})).await,
        (&Method::GET, ["containers"]) => proxy(CONTAINER, json!({"op": "list"})).await,
        (&Method::POST, ["containers"]) => create(req).await,
        (&Method::GET, ["containers", name]) => {
            proxy(CONTAINER, json!({"op": "inspect", "name": name})).await
        }
        (&Method::DELETE, ["containers", name]) => {
            let force = flag(query, "force")
                .map_err(|e| error(StatusCode::BAD_REQUEST, "bad_request", e))?;
            proxy(
                CONTAINER,
                json!({"op": "delete", "name": name, "force": force}),
            )
            .await
        }
        (&Method::POST, ["containers", name, action @ ("start" | "stop" | "kill" | "wait")]) => {
            action_request(name, action, req).await
        }
        (&Method::GET, ["containers", name, "logs"]) => logs(name, query).await,
        (&Method::POST, ["containers", _, other]) => Err(error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("unknown action {other:?}; use start, stop, kill or wait"),
        )),
        _ => Err(not_allowed(method, &path)),
    }
}

/// `POST /v1/containers`: the body is the create request without `op`.
async fn create(req: Request<Incoming>) -> Reply {
    let example = r#"{"name":"web","template":"<digest>","start":true}"#;
    proxy(CONTAINER, body_with_op(req, "create", example).await?).await
}

/// start, stop (`grace_ms`) and kill (`signal`), with an optional JSON body.
async fn action_request(name: &str, action: &str, req: Request<Incoming>) -> Reply {
    let empty = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0")
        || (!req.headers().contains_key(hyper::header::CONTENT_LENGTH)
            && !req.headers().contains_key(hyper::header::TRANSFER_ENCODING));
    let mut request = if empty {
        json!({})
    } else {
        read_json(req).await?
    };
    let Value::Object(fields) = &mut request else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the body, when given, is a JSON object such as {\"grace_ms\":5000} or {\"signal\":\"SIGTERM\"}",
        ));
    };
    fields.insert("op".into(), json!(action));
    fields.insert("name".into(), json!(name));
    // A wait or a stop may outlast the usual timeout: the agent ends them, this backs it up.
    let ms = |key: &str| fields.get(key).and_then(Value::as_u64);
    let longer = match action {
        "wait" => Some(ms("timeout_ms").unwrap_or(DEFAULT_WAIT_MS).min(MAX_WAIT_MS)),
        "stop" => Some(ms("grace_ms").unwrap_or(DEFAULT_GRACE_MS).min(MAX_WAIT_MS)),
        _ => None,
    };
    let to = match longer {
        Some(extra) => Local {
            timeout: CONTAINER.timeout + Duration::from_millis(extra),
            ..CONTAINER
        },
        None => CONTAINER,
    };
    proxy(to, request).await
}

/// `name=1` (or `true`, or bare) in the query.
fn flag(query: &str, name: &str) -> Result<bool, String> {
    let mut on = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k != name {
            return Err(format!("unknown parameter {k:?}; use {name}=1"));
        }
        on = matches!(v, "1" | "true" | "");
    }
    Ok(on)
}

/// `follow` and `tail` of a logs query.
pub fn logs_query(query: &str) -> Result<(bool, Option<usize>), String> {
    let mut follow = false;
    let mut tail = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "follow" => follow = matches!(v, "1" | "true" | ""),
            "tail" => {
                tail = Some(
                    v.parse()
                        .map_err(|_| format!("tail must be a number, got {v:?}"))?,
                )
            }
            other => return Err(format!("unknown parameter {other:?}; use follow=1, tail=N")),
        }
    }
    Ok((follow, tail))
}

/// Asks the agent for the output after `offset`.
async fn logs_chunk(
    name: String,
    offset: Option<u64>,
    tail: Option<usize>,
) -> Result<Value, Response<Body>> {
    let request = json!({"op": "logs", "name": name, "offset": offset, "tail": tail});
    ask_local(CONTAINER, request).await
}

fn lines_of(v: &Value) -> Bytes {
    let mut out = String::new();
    for line in v["lines"].as_array().into_iter().flatten() {
        out.push_str(&line.to_string());
        out.push('\n');
    }
    Bytes::from(out)
}

/// The container's output as JSON lines; with `follow`, streamed while it runs.
async fn logs(name: &str, query: &str) -> Reply {
    let (follow, tail) =
        logs_query(query).map_err(|e| error(StatusCode::BAD_REQUEST, "bad_request", e))?;
    // The first chunk answers errors (no such container, agent down) with a status.
    let first = logs_chunk(name.to_string(), None, tail).await?;
    if !follow {
        return Ok(reply(StatusCode::OK, NDJSON, full(lines_of(&first))));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let name = name.to_string();
    tokio::spawn(async move {
        let mut v = first;
        loop {
            let lines = lines_of(&v);
            let drained = lines.is_empty();
            if !drained && tx.send(lines).await.is_err() {
                return; // the client went away
            }
            if drained {
                if v["running"] != true {
                    return;
                }
                tokio::time::sleep(FOLLOW_POLL).await;
            }
            let offset = v["offset"].as_u64();
            v = match logs_chunk(name.clone(), offset, None).await {
                Ok(v) => v,
                Err(_) => return, // deleted, or the agent went away: the stream ends
            };
        }
    });
    Ok(ndjson_stream(rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_queries_are_read_strictly() {
        assert_eq!(logs_query("follow=1&tail=5"), Ok((true, Some(5))));
        assert_eq!(logs_query(""), Ok((false, None)));
        assert!(logs_query("tail=x").unwrap_err().contains("tail"));
        assert!(logs_query("service=a").unwrap_err().contains("service"));
    }

    #[test]
    fn lines_become_json_lines() {
        let v = json!({"lines": [{"message": "a"}, {"message": "b"}], "offset": 9});
        assert_eq!(
            lines_of(&v),
            Bytes::from("{\"message\":\"a\"}\n{\"message\":\"b\"}\n")
        );
        assert!(lines_of(&json!({"lines": []})).is_empty());
    }
}
