//! The client side of the certmgr socket: `tessera identity status|child-token`, the
//! request-key callout, and anything else on the node that talks to certmgr.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use zeroize::Zeroizing;

use crate::defaults;
use crate::protocol::{self, ApiError};
use crate::secret::SecretBytes;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach certmgr at {path}: {source}; is the certmgr service running? (`tessera status`)")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to certmgr at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("certmgr's reply is not what the protocol says: {0}")]
    BadReply(String),
    #[error("certmgr refused: {0}")]
    Refused(ApiError),
}

impl ClientError {
    /// The protocol error code of a refusal.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            ClientError::Refused(e) => Some(e.code),
            _ => None,
        }
    }
}

/// The socket: `$TESSERA_CERTMGR_SOCKET` or /run/tessera/certmgr.sock.
pub fn default_socket() -> PathBuf {
    match std::env::var_os(defaults::SOCKET_ENV) {
        Some(p) if !p.is_empty() => p.into(),
        _ => defaults::SOCKET_PATH.into(),
    }
}

/// Sends one request line, returns the reply line in a zeroized buffer. `wait` bounds the
/// whole exchange (a redeem may wait for an identity still being made).
pub fn call(socket: &Path, request: &[u8], wait: Duration) -> Result<SecretBytes, ClientError> {
    let path = socket.display().to_string();
    let io = |source| ClientError::Io {
        path: path.clone(),
        source,
    };
    let mut conn = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: path.clone(),
        source,
    })?;
    conn.set_read_timeout(Some(wait)).map_err(io)?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    conn.write_all(request).map_err(io)?;
    if !request.ends_with(b"\n") {
        conn.write_all(b"\n").map_err(io)?;
    }
    let mut reply = SecretBytes::with_capacity(defaults::MAX_REPLY_LINE);
    loop {
        if reply.as_slice().ends_with(b"\n") {
            break;
        }
        if reply.spare_mut().is_empty() {
            return Err(ClientError::BadReply("the reply is too long".into()));
        }
        match conn.read(reply.spare_mut()) {
            Ok(0) => break,
            Ok(n) => reply.advance(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    if reply.is_empty() {
        return Err(ClientError::BadReply(
            "certmgr closed without a reply".into(),
        ));
    }
    Ok(reply)
}

/// A JSON reply that is not an error.
fn json(reply: &SecretBytes) -> Result<Value, ClientError> {
    let v: Value = serde_json::from_slice(reply.as_slice())
        .map_err(|e| ClientError::BadReply(format!("not JSON ({e})")))?;
    match protocol::error_of(&v) {
        Some(e) => Err(ClientError::Refused(e)),
        None => Ok(v),
    }
}

/// `{"op":"status"}`.
pub fn status(socket: &Path) -> Result<Value, ClientError> {
    let reply = call(socket, br#"{"op":"status"}"#, Duration::from_secs(10))?;
    json(&reply)
}

/// `{"op":"trust"}`: the CA certificate (PEM) and its CRL, if certmgr has one.
pub fn trust(socket: &Path) -> Result<(String, Option<String>), ClientError> {
    let reply = call(socket, br#"{"op":"trust"}"#, Duration::from_secs(10))?;
    let v = json(&reply)?;
    let ca = v
        .get("ca_pem")
        .and_then(Value::as_str)
        .ok_or_else(|| ClientError::BadReply("no \"ca_pem\" in the reply".into()))?;
    let crl = v.get("crl_pem").and_then(Value::as_str).map(str::to_string);
    Ok((ca.to_string(), crl))
}

/// `{"op":"child-token",…}`: the token, for piping to the child only.
pub fn child_token(
    socket: &Path,
    subsystem: &str,
    agent_id: &str,
    capabilities: &[String],
) -> Result<Zeroizing<String>, ClientError> {
    let mut req =
        serde_json::json!({"op": "child-token", "subsystem": subsystem, "agent_id": agent_id});
    if !capabilities.is_empty() {
        req["capabilities"] = capabilities.into();
    }
    let reply = call(socket, req.to_string().as_bytes(), Duration::from_secs(10))?;
    let v = json(&reply)?;
    let token = v
        .get("token")
        .and_then(Value::as_str)
        .ok_or_else(|| ClientError::BadReply("no \"token\" in the reply".into()))?;
    Ok(Zeroizing::new(token.to_string()))
}

/// `{"op":"redeem",…}`: the raw reply (chain and key), in a zeroized buffer; parse it with
/// [`protocol::RedeemReply`].
pub fn redeem(socket: &Path, token: &str, pid: Option<u32>) -> Result<SecretBytes, ClientError> {
    let mut req = SecretBytes::with_capacity(token.len() + 64);
    req.push(b"{\"op\":\"redeem\",\"token\":\"");
    req.push(token.as_bytes());
    req.push(b"\"");
    if let Some(pid) = pid {
        req.push(format!(",\"pid\":{pid}").as_bytes());
    }
    req.push(b"}\n");
    let reply = call(
        socket,
        req.as_slice(),
        defaults::REDEEM_WAIT + Duration::from_secs(5),
    )?;
    // Errors are small JSON objects starting with "error" (keys are sorted); a success holds
    // the key and is parsed in place by the caller, never copied into a `Value`.
    if reply.as_slice().starts_with(b"{\"error\"") {
        return match json(&reply) {
            Err(e) => Err(e),
            Ok(_) => Err(ClientError::BadReply(
                "an error reply without a code".into(),
            )),
        };
    }
    Ok(reply)
}
