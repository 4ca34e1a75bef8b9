//! The accept loop every Tessera HTTPS API runs (the CA, the node API, the hub API): TLS with
//! a handshake deadline, at most `max_connections` connections at once, HTTP/1.1 with a
//! header-read deadline, until `shutdown` completes. What a connection may do is the caller's
//! `service`, made once the handshake has shown who the peer is.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub handshake: Duration,
    pub header_read: Duration,
    pub max_connections: usize,
    /// hyper's read buffer; `None` keeps its default.
    pub max_buf: Option<usize>,
}

/// What the loop saw, for the caller's log (each server logs in its own style).
#[derive(Debug)]
pub enum Event<'a> {
    /// accept(2) failed (out of descriptors and the like); the loop backs off and goes on.
    AcceptFailed(&'a std::io::Error),
    HandshakeRefused {
        remote: SocketAddr,
        error: &'a std::io::Error,
    },
    HandshakeTimedOut {
        remote: SocketAddr,
    },
    /// The connection ended with an HTTP-level error (a client that went away, mostly).
    ConnectionError {
        remote: SocketAddr,
        error: &'a hyper::Error,
    },
}

/// Serves `listener` until `shutdown` completes. `tls` gives the configuration for each new
/// connection (a server may renew its certificate or reload its CRL while it runs).
/// `service` gets the finished handshake (the peer's certificates are in it) and returns the
/// connection's service, or `None` to close the connection at once.
pub async fn serve<S, B, M, R, T>(
    listener: TcpListener,
    tls: T,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    report: R,
    service: M,
) where
    T: Fn() -> Arc<rustls::ServerConfig>,
    M: Fn(&rustls::ServerConnection, SocketAddr) -> Option<S> + Send + Sync + 'static,
    R: Fn(Event<'_>) + Send + Sync + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (report, service) = (Arc::new(report), Arc::new(service));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (tcp, remote) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    report(Event::AcceptFailed(&e));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(tls());
        let (report, service) = (report.clone(), service.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    return report(Event::HandshakeRefused {
                        remote,
                        error: &error,
                    })
                }
                Err(_) => return report(Event::HandshakeTimedOut { remote }),
            };
            let Some(svc) = service(tls.get_ref().1, remote) else {
                return;
            };
            let mut http = http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.header_read);
            if let Some(n) = limits.max_buf {
                http.max_buf_size(n);
            }
            if let Err(error) = http.serve_connection(TokioIo::new(tls), svc).await {
                report(Event::ConnectionError {
                    remote,
                    error: &error,
                });
            }
        });
    }
}
