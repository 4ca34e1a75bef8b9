//! The CA's HTTP API (agents/README.md, "CA HTTP API"): routing, body limits, JSON in and
//! out, errors as `{"error": "<code>", "reason": "…"}`.
//!
//! | method, path | auth |
//! | --- | --- |
//! | `GET /v1/ca.pem`, `GET /v1/crl.pem`, `GET /v1/health` | none |
//! | `POST /v1/redeem` | one-time token |
//! | `POST /v1/renew` | client certificate |
//! | `POST /v1/issue` | client certificate with the capability |
//! | `POST /v1/admin/tokens` | admin client certificate |

use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Code};
use crate::issue::rfc3339;
use crate::service::{Ca, Peer};

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

pub type Body = Full<Bytes>;

fn response(status: u16, content_type: &str, body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    // Replies carry certificates and tokens: never cache them.
    resp.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    resp
}

fn json(status: u16, value: serde_json::Value) -> Response<Body> {
    response(status, "application/json", value.to_string() + "\n")
}

pub fn error_response(e: &ApiError) -> Response<Body> {
    response(e.code.status(), "application/json", e.body() + "\n")
}

/// An oversized body is still read (and thrown away) up to this much, so that the client,
/// still sending, does not get a reset instead of the 413 reply.
const DRAIN_MAX: usize = 1024 * 1024;

/// Reads a JSON body of at most [`MAX_BODY`] bytes into `T`; `fields` is named in the error.
async fn read_json<T: DeserializeOwned>(
    req: Request<Incoming>,
    fields: &str,
) -> Result<T, ApiError> {
    let too_large = || {
        ApiError::new(
            Code::TooLarge,
            format!(
                "the request body is larger than {} KiB; send only {fields}",
                MAX_BODY / 1024
            ),
        )
    };
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_MAX as u64) {
        // Not worth reading: reply now, and hyper closes the connection.
        return Err(too_large());
    }
    let mut body = req.into_body();
    let mut bytes = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(
                Code::BadRequest,
                format!("the request body could not be read: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen > DRAIN_MAX {
            break;
        }
        if seen <= MAX_BODY {
            bytes.extend_from_slice(&data);
        }
    }
    if seen > MAX_BODY {
        return Err(too_large());
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            Code::BadRequest,
            format!("the body is not the JSON this endpoint takes ({e}); send a JSON object with {fields}"),
        )
    })
}

/// Answers one request. Never fails: errors become JSON error replies.
pub async fn handle(
    ca: Arc<Ca>,
    peer: Option<Arc<Peer>>,
    req: Request<Incoming>,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    match route(&ca, peer.as_deref(), req).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::warn!(%method, path = %path.escape_debug(), error = e.code.as_str(), reason = %e.reason, "request refused");
            error_response(&e)
        }
    }
}

async fn route(
    ca: &Arc<Ca>,
    peer: Option<&Peer>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path();
    let method = req.method();
    match (method, path) {
        (&Method::GET, "/v1/ca.pem") => Ok(response(
            200,
            "application/x-pem-file",
            ca.authority.ca_pem.clone(),
        )),
        (&Method::GET, "/v1/crl.pem") => Ok(response(200, "application/x-pem-file", ca.crl_pem())),
        (&Method::GET, "/v1/health") => Ok(json(200, serde_json::json!({ "status": "ok" }))),
        (&Method::POST, "/v1/redeem") => {
            let body = read_json(req, "token and csr_pem").await?;
            let issued = ca.redeem(body).await?;
            Ok(json(200, issued.reply(&ca.authority.ca_pem)))
        }
        (&Method::POST, "/v1/renew") => {
            let body = read_json(req, "csr_pem").await?;
            let issued = ca.renew(peer, body).await?;
            Ok(json(200, issued.reply(&ca.authority.ca_pem)))
        }
        (&Method::POST, "/v1/issue") => {
            let body = read_json(req, "csr_pem, subsystem, agent_id (and optionally capabilities, uris)").await?;
            let issued = ca.issue(peer, body).await?;
            Ok(json(200, issued.reply(&ca.authority.ca_pem)))
        }
        (&Method::POST, "/v1/admin/tokens") => {
            let body = read_json(req, "node, subsystem (and optionally capabilities, ttl_s, agent_id, uris)").await?;
            let created = ca.create_token(peer, body).await?;
            Ok(json(
                200,
                serde_json::json!({ "token": created.token, "expires": rfc3339(created.expires_at) }),
            ))
        }
        (_, "/v1/ca.pem" | "/v1/crl.pem" | "/v1/health" | "/v1/redeem" | "/v1/renew" | "/v1/issue" | "/v1/admin/tokens") => {
            Err(ApiError::new(
                Code::MethodNotAllowed,
                format!("{method} is not allowed on {path}; see the API table in agents/README.md"),
            ))
        }
        _ => Err(ApiError::new(
            Code::NotFound,
            format!(
                "no endpoint {:?}; the CA serves /v1/ca.pem, /v1/crl.pem, /v1/redeem, /v1/renew, /v1/issue, /v1/admin/tokens",
                path.chars().take(100).collect::<String>()
            ),
        )),
    }
}
