//! The socket server of the firewall protocol on /run/tessera/firewall.sock (mode 0600, root
//! only; the socket handling is [`crate::ipc`]'s).

use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};

use super::protocol::{self, ApiError, Request};
use super::service::Firewall;
use crate::ipc;

/// Binds the socket (replacing a stale one) and serves it on a thread.
pub fn serve(path: &Path, fw: Arc<Firewall>) -> std::io::Result<std::thread::JoinHandle<()>> {
    ipc::serve(
        path,
        "firewall",
        Arc::new(move |line: &[u8]| handle(line, &fw)),
    )
}

/// Answers one request line.
pub fn handle(line: &[u8], fw: &Firewall) -> Result<Value, ApiError> {
    protocol::parse(line).and_then(|request| match request {
        Request::Show => Ok(fw.show()),
        Request::Ruleset => Ok(fw.ruleset()),
        Request::Expose(e) => fw
            .expose(e)
            .map(|all| json!({"ok": true, "exposures": all})),
        Request::Unexpose { protocol, port } => fw
            .unexpose(protocol, port)
            .map(|removed| json!({"ok": true, "removed": removed})),
        Request::Publish(p) => fw
            .publish(p)
            .map(|all| json!({"ok": true, "publications": all})),
        Request::Unpublish { protocol, port } => fw
            .unpublish(protocol, port)
            .map(|removed| json!({"ok": true, "removed": removed})),
        Request::Bridge(b) => fw
            .set_bridge(b)
            .map(|changed| json!({"ok": true, "changed": changed})),
    })
}
