//! The HTTPS listener: TLS with client certificates required (rustls, the cluster CA pinned,
//! its CRL checked), HTTP/1.1 (hyper), with the same limits and timeouts as the CA's server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::node::Node;
use super::routes;
use crate::net::service::log;

/// The node API's port.
pub const DEFAULT_PORT: u16 = 7443;
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests other than a log stream must be answered within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub const MAX_CONNECTIONS: usize = 256;

/// Serves `node` on `listener` until `shutdown` completes.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (tcp, remote) = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    log("warn", "accept failed", json!({"reason": e.to_string()}));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (node, acceptor) = (node.clone(), acceptor.clone());
        tokio::spawn(async move {
            let _permit = permit;
            connection(node, acceptor, tcp, remote).await;
        });
    }
}

async fn connection(
    node: Arc<Node>,
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            log(
                "info",
                "TLS handshake refused",
                json!({"remote": remote.to_string(), "reason": e.to_string()}),
            );
            return;
        }
        Err(_) => {
            log(
                "info",
                "TLS handshake timed out",
                json!({"remote": remote.to_string()}),
            );
            return;
        }
    };
    let peer = tessera_identity::tls::peer_identity(tls.get_ref().1).map(Arc::new);
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let (node, peer) = (node.clone(), peer.clone());
        async move {
            let streaming = req.uri().path() == "/v1/logs";
            let work = routes::handle(node, peer, req);
            let resp = if streaming {
                work.await
            } else {
                tokio::time::timeout(REQUEST_TIMEOUT, work)
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
                    })
            };
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(tls), service);
    let _ = conn.await;
}
