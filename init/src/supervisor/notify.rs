//! The server side of sd_notify: one datagram socket per service at
//! `<runtime>/notify/<name>.sock`, so a message's sender is known by the socket it reached —
//! no race with short-lived senders such as `tessera notify` run from a shell script.

use super::Event;
use std::path::{Path, PathBuf};
use tokio::net::UnixDatagram;
use tokio::sync::mpsc::UnboundedSender;

/// Binds the service's socket and forwards each datagram as an `Event::Notify`.
pub fn listen(
    dir: &Path,
    service: &str,
    idx: usize,
    events: UnboundedSender<Event>,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{service}.sock"));
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path)?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf).await {
            let pairs = tessera_common::notify::parse(&buf[..n]);
            if events.send(Event::Notify { idx, pairs }).is_err() {
                break;
            }
        }
    });
    Ok(path)
}
