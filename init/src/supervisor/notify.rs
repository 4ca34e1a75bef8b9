//! The server side of sd_notify: one datagram socket per service at
//! `<runtime>/notify/<name>.sock`, so a message's sender is known by the socket it reached —
//! no race with short-lived senders such as `tessera notify` run from a shell script.

use super::Event;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::UnixDatagram;
use tokio::sync::mpsc::UnboundedSender;

/// A service's notify socket: its path (for NOTIFY_SOCKET) and a handle to drain it.
pub struct NotifySocket {
    pub path: PathBuf,
    socket: Arc<UnixDatagram>,
}

impl NotifySocket {
    /// Datagrams already queued, read without waiting. The supervisor calls this before it
    /// handles the service's exit, so that a READY=1 sent just before exiting is not lost
    /// behind the exit.
    pub fn drain(&self) -> Vec<Vec<(String, String)>> {
        let mut buf = vec![0u8; 4096];
        let mut out = Vec::new();
        while let Ok(n) = self.socket.try_recv(&mut buf) {
            out.push(tessera_common::notify::parse(&buf[..n]));
        }
        out
    }
}

/// Binds the service's socket and forwards each datagram as an `Event::Notify`.
pub fn listen(
    dir: &Path,
    service: &str,
    idx: usize,
    events: UnboundedSender<Event>,
) -> std::io::Result<NotifySocket> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{service}.sock"));
    let _ = std::fs::remove_file(&path);
    let socket = Arc::new(UnixDatagram::bind(&path)?);
    let reader = socket.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = reader.recv(&mut buf).await {
            let pairs = tessera_common::notify::parse(&buf[..n]);
            if events.send(Event::Notify { idx, pairs }).is_err() {
                break;
            }
        }
    });
    Ok(NotifySocket { path, socket })
}
