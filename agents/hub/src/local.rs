//! The local channel: a unix stream socket where components connect, one session per
//! connection. A connection that sends a malformed, oversized or truncated frame gets an
//! error reply (correlation 0) and is closed; the others are not affected.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::io::BufReader;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::codec::{self, Frame};
use crate::defaults;
use crate::error::HubError;
use crate::hub::Hub;
use crate::protocol::{ClientMsg, HubMsg, Outcome};

/// Binds the socket, replacing a stale one, mode 0600 (root's components and agents).
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?;
        } else {
            anyhow::bail!(
                "{} exists and is not a socket; remove it or choose another --socket",
                path.display()
            );
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok(listener)
}

/// Accepts components until the task is dropped.
pub async fn serve(hub: Arc<Hub>, listener: UnixListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(hub.clone(), stream));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept on the hub socket failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(hub: Arc<Hub>, stream: UnixStream) {
    let pid = stream
        .peer_cred()
        .ok()
        .and_then(|c| c.pid())
        .unwrap_or_default();
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel(defaults::CONNECTION_QUEUE);
    let writer = tokio::spawn(codec::write_frames(wr, rx));
    // Named like API callers (`api:<subsystem>@<node>`): a routed call's receiver sees where
    // an anonymous caller is.
    let session = hub.open_session(tx.clone(), format!("local:{pid}@{}", hub.id()));
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    let mut buf = Vec::new();
    let mut first = true;
    loop {
        match codec::read_frame::<_, ClientMsg>(&mut rd, defaults::MAX_FRAME, &mut buf).await {
            Ok(Some(frame)) => {
                if let (
                    true,
                    ClientMsg::Hello {
                        name,
                        component_type,
                    },
                ) = (first, &frame.header)
                {
                    let msg = match hub.hello(session, name, component_type) {
                        Ok(component) => HubMsg::Welcome {
                            component,
                            hub: hub.id().to_string(),
                        },
                        Err(e) => HubMsg::Reply {
                            corr: 0,
                            from: None,
                            result: Outcome::Error(e),
                            remaining: 0,
                        },
                    };
                    let _ = tx.send(Frame::new(msg)).await;
                } else {
                    hub.handle_client(session, frame);
                }
                first = false;
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(pid, reason = %e, "closing a component connection");
                let err = HubError::bad(format!("{e}; the connection is closed"));
                let _ = tx
                    .send(Frame::new(HubMsg::Reply {
                        corr: 0,
                        from: None,
                        result: Outcome::Error(err),
                        remaining: 0,
                    }))
                    .await;
                break;
            }
        }
    }
    hub.close_session(session);
    drop(tx);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), writer).await;
}
