//! The control socket: JSON-line requests from the `tessera` CLI (see
//! `tessera_common::control`). Log requests are answered here from the log hub; everything
//! else goes to the supervisor loop as an event and its reply is written back.

use super::logs::LogHub;
use super::Event;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use tessera_common::control::{Reply, Request};
use tessera_common::log::{Level, LogEvent};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc::UnboundedSender, oneshot};

const MAX_REQUEST: u64 = 64 * 1024;

pub fn listen(
    path: &Path,
    events: UnboundedSender<Event>,
    hub: Arc<LogHub>,
    names: Arc<Vec<String>>,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, events.clone(), hub.clone(), names.clone()));
        }
    });
    Ok(())
}

async fn serve(
    stream: UnixStream,
    events: UnboundedSender<Event>,
    hub: Arc<LogHub>,
    names: Arc<Vec<String>>,
) {
    let allowed = stream
        .peer_cred()
        .map(|c| c.uid() == 0 || c.uid() == nix::unistd::geteuid().as_raw())
        .unwrap_or(false);
    let (read, mut write) = stream.into_split();
    if !allowed {
        let _ = send(
            &mut write,
            &Reply::Error {
                error: "only root may use the control socket".into(),
            },
        )
        .await;
        return;
    }
    let mut line = String::new();
    if BufReader::new(read.take(MAX_REQUEST))
        .read_line(&mut line)
        .await
        .is_err()
    {
        return;
    }
    let request = match serde_json::from_str::<Request>(&line) {
        Ok(r) => r,
        Err(e) => {
            let _ = send(
                &mut write,
                &Reply::Error {
                    error: format!("bad request ({e}); is the CLI the same version as the node?"),
                },
            )
            .await;
            return;
        }
    };
    match request {
        Request::Logs {
            follow,
            service,
            tail,
        } => {
            if let Some(s) = &service {
                if !names.iter().any(|n| n == s) {
                    let error = format!("no service named {s:?}; known: {}", names.join(", "));
                    let _ = send(&mut write, &Reply::Error { error }).await;
                    return;
                }
            }
            stream_logs(&mut write, &hub, service.as_deref(), tail, follow).await;
        }
        other => {
            let (reply, answer) = oneshot::channel();
            if events
                .send(Event::Control {
                    request: other,
                    reply,
                })
                .is_err()
            {
                return;
            }
            if let Ok(r) = answer.await {
                let _ = send(&mut write, &r).await;
            }
        }
    }
}

async fn stream_logs(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    hub: &LogHub,
    service: Option<&str>,
    tail: Option<usize>,
    follow: bool,
) {
    let (past, mut live) = hub.follow(service, tail);
    for e in past {
        if send(write, &Reply::Event(e)).await.is_err() {
            return;
        }
    }
    if !follow {
        return;
    }
    loop {
        let event = match live.recv().await {
            Ok(e) if service.is_none_or(|s| e.service == s) => e,
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(n)) => LogEvent::new(
                "init",
                Level::Warn,
                "log follower fell behind; events were dropped",
            )
            .field("dropped", n),
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if send(write, &Reply::Event(event)).await.is_err() {
            return;
        }
    }
}

async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await
}
