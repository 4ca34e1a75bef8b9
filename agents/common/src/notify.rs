//! The client side of the sd_notify protocol: one datagram of `KEY=VALUE` lines sent to the
//! unix socket named by `$NOTIFY_SOCKET` (a leading `@` means the abstract namespace).

use std::os::unix::net::UnixDatagram;

pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";
pub const WATCHDOG_USEC_ENV: &str = "WATCHDOG_USEC";

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET is not set: this process was not started by a supervisor that waits for readiness (set `ready = \"notify\"` in its service file)")]
    NoSocket,
    #[error("cannot send to the notify socket {socket}: {source}")]
    Send {
        socket: String,
        source: std::io::Error,
    },
    #[error(
        "bad notify assignment {0:?}: expected KEY=VALUE, for example READY=1 or STATUS=loading"
    )]
    BadAssignment(String),
}

/// Checks that every item is `KEY=VALUE` with a non-empty upper-case key.
pub fn validate(assignments: &[String]) -> Result<(), NotifyError> {
    for a in assignments {
        let ok = match a.split_once('=') {
            Some((k, _)) => {
                !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            }
            None => false,
        };
        if !ok || a.contains('\n') {
            return Err(NotifyError::BadAssignment(a.clone()));
        }
    }
    Ok(())
}

/// Sends the assignments as one datagram to `$NOTIFY_SOCKET`.
pub fn notify(assignments: &[String]) -> Result<(), NotifyError> {
    validate(assignments)?;
    let socket = std::env::var(NOTIFY_SOCKET_ENV).map_err(|_| NotifyError::NoSocket)?;
    send_to(&socket, &assignments.join("\n"))
}

/// Sends one message to a notify socket path (or `@abstract` name).
pub fn send_to(socket: &str, message: &str) -> Result<(), NotifyError> {
    let err = |source| NotifyError::Send {
        socket: socket.to_string(),
        source,
    };
    let sock = UnixDatagram::unbound().map_err(err)?;
    if let Some(name) = socket.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).map_err(err)?;
        sock.send_to_addr(message.as_bytes(), &addr).map_err(err)?;
    } else {
        sock.send_to(message.as_bytes(), socket).map_err(err)?;
    }
    Ok(())
}

/// Parses a received datagram into its assignments (invalid lines are skipped).
pub fn parse(datagram: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(datagram)
        .lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_accepts_assignments_and_rejects_junk() {
        assert!(validate(&["READY=1".into(), "STATUS=up and running".into()]).is_ok());
        assert!(validate(&["ready".into()]).is_err());
        assert!(validate(&["=1".into()]).is_err());
        assert!(validate(&["lower=1".into()]).is_err());
    }

    #[test]
    fn datagram_round_trip() {
        let dir = tempfile_dir();
        let path = dir.join("n.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        send_to(path.to_str().unwrap(), "READY=1\nSTATUS=ok").unwrap();
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(
            parse(&buf[..n]),
            vec![("READY".into(), "1".into()), ("STATUS".into(), "ok".into())]
        );
        std::fs::remove_dir_all(dir).ok();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("tessera-notify-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
