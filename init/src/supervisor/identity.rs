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
                Err(_) => Err(format!(
                    "certmgr at {} did not answer within {}s",
                    socket.display(),
                    ASK_TIMEOUT.as_secs()
                )),
            };
        let _ = events.send(Event::IdentityToken {
            idx,
            generation,
            result,
        });
    });
}

async fn ask(socket: &std::path::Path, subsystem: &str, agent_id: &str) -> Result<String, String> {
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
        return Ok(token.to_string());
    }
    let code = value
        .get("error")
        .and_then(|v| v.as_str())
        .unwrap_or("unknown");
    let reason = value
        .get("reason")
        .and_then(|v| v.as_str())
        .unwrap_or("no reason given");
    Err(format!(
        "certmgr refused an identity for subsystem {subsystem:?}: {code}: {reason}"
    ))
}

/// A pipe holding `token` and a newline, its write end already closed: the read end, for the
/// child, and nothing else keeps the token.
pub fn token_pipe(token: &str) -> std::io::Result<OwnedFd> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let mut write = std::fs::File::from(write);
    std::io::Write::write_all(&mut write, format!("{token}\n").as_bytes())?;
    Ok(read)
}
