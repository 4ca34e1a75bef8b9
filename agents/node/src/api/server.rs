//! The HTTPS listener: TLS with client certificates required (rustls, the cluster CA pinned,
//! its CRL checked), HTTP/1.1 (hyper), with the same limits and timeouts as the CA's server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use serde_json::json;
use tessera_identity::https::{self, Event, Limits};
use tokio::net::TcpListener;

use super::node::Node;
use super::routes;
use crate::net::service::log;

/// The node API's port.
pub const DEFAULT_PORT: u16 = 7443;
pub const LIMITS: Limits = Limits {
    handshake: Duration::from_secs(10),
    header_read: Duration::from_secs(10),
    max_connections: 256,
    max_buf: None,
};
/// Requests other than a log stream must be answered within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `node` on `listener` until `shutdown` completes; `tls` gives each new connection
/// the current configuration (the identity renews itself).
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    tls: impl Fn() -> Arc<rustls::ServerConfig> + Send + Sync + 'static,
    shutdown: impl Future<Output = ()>,
) {
    https::serve(listener, tls, LIMITS, shutdown, report, move |conn, _| {
        // Who the peer is comes from its client certificate, once per connection.
        let peer = tessera_identity::tls::peer_identity(conn).map(Arc::new);
        let node = node.clone();
        Some(service_fn(move |req| {
            request(node.clone(), peer.clone(), req)
        }))
    })
    .await
}

fn report(event: Event<'_>) {
    match event {
        Event::AcceptFailed(e) => log("warn", "accept failed", json!({"reason": e.to_string()})),
        Event::HandshakeRefused { remote, error } => log(
            "info",
            "TLS handshake refused",
            json!({"remote": remote.to_string(), "reason": error.to_string()}),
        ),
        Event::HandshakeTimedOut { remote } => log(
            "info",
            "TLS handshake timed out",
            json!({"remote": remote.to_string()}),
        ),
        Event::ConnectionError { .. } => {}
    }
}

/// One request: the handler, within REQUEST_TIMEOUT unless it is a log stream.
async fn request(
    node: Arc<Node>,
    peer: Option<Arc<tessera_identity::profile::PeerIdentity>>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<routes::Body>, std::convert::Infallible> {
    let streaming = req.uri().path() == "/v1/logs";
    let work = routes::handle(node, peer, req);
    if streaming {
        return Ok(work.await);
    }
    Ok(tokio::time::timeout(REQUEST_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            routes::error(
                hyper::StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!(
                    "the request took longer than {}s; PID 1 may be busy — try again",
                    REQUEST_TIMEOUT.as_secs()
                ),
            )
        }))
}
