//! The agents' local APIs: JSON lines over a root-only unix socket, one request, one reply,
//! then close (like certmgr's). The firewall, storage and container services serve their
//! protocols with [`serve`]; their CLIs, the node API and peer agents talk to them with
//! [`call`] / [`ask`].
//! Who asks is read from the socket (SO_PEERCRED): root only, whatever the file mode says.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};

use crate::log::print_event as log;

/// Longest request line.
pub const MAX_REQUEST_LINE: usize = 4096;
/// How long a client may take to send its line.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 8;

pub use crate::api_error::ApiError;

/// Answers one request line (already read, from a root caller) with one reply.
pub type Handler = dyn Fn(&[u8]) -> Result<Value, ApiError> + Send + Sync;

/// Binds the socket at `path` (replacing a stale one, mode 0600) and serves it on a thread
/// named after `what` (the service, also used in refusals).
pub fn serve(
    path: &Path,
    what: &'static str,
    handler: Arc<Handler>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let listener = crate::api_error::bind_private(path)?;
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name(format!("{what}-api"))
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                    let _ = conn.write_all(
                        &ApiError::new(
                            "busy",
                            format!("the {what} service is serving too many requests; try again"),
                        )
                        .line(),
                    );
                    continue;
                }
                active.fetch_add(1, Ordering::SeqCst);
                let (handler, done) = (handler.clone(), active.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("{what}-conn"))
                    .spawn(move || {
                        serve_one(conn, what, &*handler);
                        done.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    active.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })
}

fn serve_one(mut conn: UnixStream, what: &str, handler: &Handler) {
    let reply = match nix::sys::socket::getsockopt(
        &conn,
        nix::sys::socket::sockopt::PeerCredentials,
    ) {
        Err(e) => ApiError::new("internal", format!("SO_PEERCRED: {e}")).line(),
        Ok(cred) if cred.uid() != 0 => {
            log(
                "warn",
                "request refused",
                json!({"caller_pid": cred.pid(), "caller_uid": cred.uid(), "error": "forbidden"}),
            );
            ApiError::new(
                "forbidden",
                format!(
                    "the {what} API is for root; process {} runs as uid {}",
                    cred.pid(),
                    cred.uid()
                ),
            )
            .line()
        }
        Ok(cred) => match read_line(&mut conn) {
            Ok(line) => reply_line(handler(&line), cred.pid()),
            Err(e) => e.line(),
        },
    };
    let _ = conn.write_all(&reply);
    let _ = conn.flush();
}

/// The reply line for a result; refusals are logged with the caller.
pub fn reply_line(result: Result<Value, ApiError>, caller_pid: i32) -> Vec<u8> {
    match result {
        Ok(v) => {
            let mut out = v.to_string().into_bytes();
            out.push(b'\n');
            out
        }
        Err(e) => {
            log(
                "warn",
                "request refused",
                json!({"caller_pid": caller_pid, "error": e.code, "reason": e.reason}),
            );
            e.line()
        }
    }
}

fn read_line(conn: &mut UnixStream) -> Result<Vec<u8>, ApiError> {
    let _ = conn.set_read_timeout(Some(READ_TIMEOUT));
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        if let Some(end) = buf.iter().position(|b| *b == b'\n') {
            buf.truncate(end);
            return Ok(buf);
        }
        if buf.len() > MAX_REQUEST_LINE {
            return Err(ApiError::new(
                "bad_request",
                format!("the request line is longer than {MAX_REQUEST_LINE} bytes"),
            ));
        }
        match conn.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Err(ApiError::new("bad_request", "empty request")),
            Ok(0) => return Ok(buf),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(ApiError::new(
                    "bad_request",
                    format!(
                        "no complete request line within {} s: {e}",
                        READ_TIMEOUT.as_secs()
                    ),
                ))
            }
        }
    }
}

/// A reply that is an `{"error":…}` refusal, kept apart from a failure to ask.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct Refused {
    pub code: String,
    pub reason: String,
}

/// Sends one request to the `what` service's socket and returns the reply as it came
/// (a refusal is `Ok(Err(…))`, so that callers can map its code).
pub fn ask(
    socket: &Path,
    what: &str,
    request: &Value,
    timeout: Duration,
) -> anyhow::Result<Result<Value, Refused>> {
    let mut conn = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot connect to {}: is the {what} service running (`tessera status`)? The API is for root",
            socket.display()
        )
    })?;
    conn.set_read_timeout(Some(timeout))?;
    let mut line = request.to_string();
    line.push('\n');
    conn.write_all(line.as_bytes())?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply)
        .with_context(|| format!("reading the reply from {}", socket.display()))?;
    let v: Value = serde_json::from_str(reply.trim()).with_context(|| {
        format!("the {what} service answered something that is not JSON: {reply:?}")
    })?;
    Ok(match v.get("error").and_then(Value::as_str) {
        Some(code) => Err(Refused {
            code: code.to_string(),
            reason: v
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        }),
        None => Ok(v),
    })
}

/// Like [`ask`], with a refusal as an error (what CLIs print).
pub fn call(
    socket: &Path,
    what: &str,
    request: &Value,
    timeout: Duration,
) -> anyhow::Result<Value> {
    Ok(ask(socket, what, request, timeout)??)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_caller_gets_the_handlers_reply_and_refusals_keep_their_code() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sock");
        let handler: Arc<Handler> = Arc::new(|line: &[u8]| {
            if line == b"{\"op\":\"ping\"}" {
                Ok(json!({"pong": true}))
            } else {
                Err(ApiError::new("bad_request", "only ping"))
            }
        });
        serve(&path, "test", handler).unwrap();
        let t = Duration::from_secs(5);
        if nix::unistd::geteuid().is_root() {
            assert_eq!(
                call(&path, "test", &json!({"op": "ping"}), t).unwrap(),
                json!({"pong": true})
            );
            let refused = ask(&path, "test", &json!({"op": "x"}), t)
                .unwrap()
                .unwrap_err();
            assert_eq!(refused.code, "bad_request");
            assert_eq!(refused.reason, "only ping");
        } else {
            let refused = ask(&path, "test", &json!({"op": "ping"}), t)
                .unwrap()
                .unwrap_err();
            assert_eq!(refused.code, "forbidden");
        }
    }

    #[test]
    fn a_missing_socket_names_the_service() {
        let e = call(
            Path::new("/nonexistent/x.sock"),
            "storage",
            &json!({}),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("is the storage service running"),
            "{e}"
        );
    }
}
