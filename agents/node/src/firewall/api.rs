//! The socket server of the firewall protocol on /run/tessera/firewall.sock (mode 0600).
//! Who asks is read from the socket (SO_PEERCRED): root only, whatever the file mode says.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::protocol::{self, ApiError, Request};
use super::service::Firewall;
use crate::net::service::log;

/// Longest request line.
pub const MAX_REQUEST_LINE: usize = 4096;
/// How long a client may take to send its line.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 8;

/// Binds the socket (replacing a stale one) and serves it on a thread.
pub fn serve(path: &Path, fw: Arc<Firewall>) -> std::io::Result<std::thread::JoinHandle<()>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("firewall-api".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                    let _ = conn.write_all(
                        &ApiError::new(
                            "busy",
                            "the firewall is serving too many requests; try again",
                        )
                        .line(),
                    );
                    continue;
                }
                active.fetch_add(1, Ordering::SeqCst);
                let (fw, done) = (fw.clone(), active.clone());
                let spawned = std::thread::Builder::new()
                    .name("firewall-conn".into())
                    .spawn(move || {
                        serve_one(conn, &fw);
                        done.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    active.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })
}

fn serve_one(mut conn: UnixStream, fw: &Firewall) {
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
                    "the firewall API is for root; process {} runs as uid {}",
                    cred.pid(),
                    cred.uid()
                ),
            )
            .line()
        }
        Ok(cred) => match read_line(&mut conn) {
            Ok(line) => handle(&line, cred.pid(), fw),
            Err(e) => e.line(),
        },
    };
    let _ = conn.write_all(&reply);
    let _ = conn.flush();
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

/// Answers one request line.
pub fn handle(line: &[u8], caller_pid: i32, fw: &Firewall) -> Vec<u8> {
    let result = protocol::parse(line).and_then(|request| match request {
        Request::Show => Ok(fw.show()),
        Request::Ruleset => Ok(fw.ruleset()),
        Request::Expose(e) => fw
            .expose(e)
            .map(|all| json!({"ok": true, "exposures": all})),
        Request::Unexpose { protocol, port } => fw
            .unexpose(protocol, port)
            .map(|removed| json!({"ok": true, "removed": removed})),
    });
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
