//! Identities for services: before starting a service whose file has `identity = {…}`, the
//! supervisor asks certmgr for a one-time token (agents/README.md, "Child identities") and
//! hands it to the service on an inherited pipe — never in argv, the environment or a file.

use super::Event;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc::UnboundedSender;

/// certmgr's socket inside the runtime directory.
pub const CERTMGR_SOCKET_NAME: &str = "certmgr.sock";
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// certmgr's refusals that asking again cannot cure: the node's certificate does not list the
/// subsystem (its capabilities are fixed when the CA issues it), the caller or the names are
/// not allowed. Anything else (not ready yet, busy, certmgr restarting) is worth a retry.
const PERMANENT_CODES: &[&str] = &[
    "capability_missing",
    "forbidden",
    "invalid_name",
    "bad_request",
];

/// Why no token came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    /// Retrying cannot cure it: the service is given up at once, with this reason.
    pub permanent: bool,
}

impl Refusal {
    fn transient(reason: String) -> Refusal {
        Refusal {
            reason,
            permanent: false,
        }
    }

    /// certmgr's refusal `{"error":CODE,"reason":…}` of a request for `subsystem`.
    pub fn from_certmgr(subsystem: &str, code: &str, reason: &str) -> Refusal {
        Refusal {
            reason: format!(
                "certmgr refused an identity for subsystem {subsystem:?}: {code}: {reason}"
            ),
            permanent: PERMANENT_CODES.contains(&code),
        }
    }
}

/// Asks certmgr for a child token in the background; the answer comes back as an event.
pub fn request_token(
    socket: PathBuf,
    idx: usize,
    generation: u64,
    subsystem: String,
    agent_id: String,
    events: UnboundedSender<Event>,
) {
    tokio::spawn(async move {
        let result =
            match tokio::time::timeout(ASK_TIMEOUT, ask(&socket, &subsystem, &agent_id)).await {
                Ok(r) => r,
                Err(_) => Err(Refusal::transient(format!(
                    "certmgr at {} did not answer within {}s",
                    socket.display(),
                    ASK_TIMEOUT.as_secs()
                ))),
            };
        let _ = events.send(Event::IdentityToken {
            idx,
            generation,
            result,
        });
    });
}

async fn ask(socket: &std::path::Path, subsystem: &str, agent_id: &str) -> Result<String, Refusal> {
    ask_once(socket, subsystem, agent_id)
        .await
        .map_err(Refusal::transient)?
}

/// The exchange itself: an I/O failure is the outer error (transient), certmgr's answer the
/// inner result.
async fn ask_once(
    socket: &std::path::Path,
    subsystem: &str,
    agent_id: &str,
) -> Result<Result<String, Refusal>, String> {
    let stream = UnixStream::connect(socket).await.map_err(|e| {
        format!(
            "cannot reach certmgr at {}: {e} (does the service require certmgr?)",
            socket.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(
        &serde_json::json!({"op": "child-token", "subsystem": subsystem, "agent_id": agent_id}),
    )
    .map_err(|e| e.to_string())?;
    line.push(b'\n');
    write
        .write_all(&line)
        .await
        .map_err(|e| format!("writing to certmgr: {e}"))?;
    let mut reply = String::new();
    BufReader::new(read)
        .read_line(&mut reply)
        .await
        .map_err(|e| format!("reading certmgr's reply: {e}"))?;
    let value: serde_json::Value =
        serde_json::from_str(&reply).map_err(|e| format!("certmgr's reply is not JSON ({e})"))?;
    if let Some(token) = value.get("token").and_then(|t| t.as_str()) {
        return Ok(Ok(token.to_string()));
    }
    let code = value
        .get("error")
        .and_then(|v| v.as_str())
        .unwrap_or("unknown");
    let reason = value
        .get("reason")
        .and_then(|v| v.as_str())
        .unwrap_or("no reason given");
    Ok(Err(Refusal::from_certmgr(subsystem, code, reason)))
}

/// A pipe holding `token` and a newline, its write end already closed: the read end, for the
/// child, and nothing else keeps the token.
pub fn token_pipe(token: &str) -> std::io::Result<OwnedFd> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let mut write = std::fs::File::from(write);
    std::io::Write::write_all(&mut write, format!("{token}\n").as_bytes())?;
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::Refusal;

    #[test]
    fn a_missing_capability_is_permanent_and_not_ready_is_not() {
        let r = Refusal::from_certmgr(
            "hub",
            "capability_missing",
            "the node identity may request certificates for [node]",
        );
        assert!(r.permanent);
        assert!(
            r.reason.contains("subsystem \"hub\": capability_missing"),
            "{}",
            r.reason
        );
        assert!(!Refusal::from_certmgr("hub", "not_ready", "wait").permanent);
        assert!(!Refusal::from_certmgr("hub", "busy", "try again").permanent);
        assert!(!Refusal::from_certmgr("hub", "something_new", "?").permanent);
    }
}
