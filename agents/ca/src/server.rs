//! The HTTPS server: TLS (rustls, client certificates optional and CRL-checked), HTTP/1.1
//! (hyper), limits and timeouts so that slow or hostile clients cannot starve the others.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::service::service_fn;
use rcgen::KeyPair;
use serde_json::json;
use tessera_identity::https::{self, Event, Limits};
use tokio::net::TcpListener;

use crate::api;
use crate::audit;
use crate::error::{ApiError, Code};
use crate::files::{self, StateDir, SERVER_CERT, SERVER_KEY};
use crate::issue::{self, Authority};
use crate::records::{self, Kind};
use crate::service::{Ca, Peer};
use crate::state::{self, Db};

/// Handshakes and request headers within 10 s each; at most 1024 open connections (more wait
/// in the listen backlog).
pub const LIMITS: Limits = Limits {
    handshake: Duration::from_secs(10),
    header_read: Duration::from_secs(10),
    max_connections: 1024,
    max_buf: Some(api::MAX_BODY + 16 * 1024),
};
/// A request must be answered within this (body included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the server looks for a CRL written by `tessera ca revoke`.
pub const CRL_POLL: Duration = Duration::from_secs(2);
/// The CA's HTTPS certificate is re-issued when it has less than this left.
pub const SERVER_CERT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub state: StateDir,
    pub listen: SocketAddr,
    /// Lifetime of the certificates issued.
    pub lifetime: Duration,
}

/// A bound, ready CA server.
pub struct Server {
    ca: Arc<Ca>,
    listener: TcpListener,
}

/// Re-issues the CA's HTTPS certificate (same names, new key) when it is missing or close
/// to expiry.
fn ensure_server_cert(state: &StateDir, authority: &Authority) -> anyhow::Result<()> {
    let current = std::fs::read_to_string(state.path(SERVER_CERT)).ok();
    let leaf = current.as_deref().and_then(|pem| {
        rustls::pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes())
            .next()
            .and_then(|r: Result<rustls::pki_types::CertificateDer<'static>, _>| r.ok())
    });
    let remaining = leaf.as_ref().and_then(|der| {
        use x509_parser::prelude::FromDer;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
        Some(cert.validity().not_after.timestamp() - state::now())
    });
    if remaining.is_some_and(|left| left > SERVER_CERT_RENEW_BEFORE.as_secs() as i64)
        && state.path(SERVER_KEY).exists()
    {
        return Ok(());
    }
    let hosts = leaf
        .as_ref()
        .map(|der| issue::san_hosts(der))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(crate::setup::default_sans);
    tracing::info!(hosts = ?hosts, "issuing the CA's HTTPS certificate");
    write_server_cert(state, authority, &hosts)
}

/// Issues and writes `server.pem` (leaf + CA) and `server.key`, and records it.
pub fn write_server_cert(
    state: &StateDir,
    authority: &Authority,
    hosts: &[String],
) -> anyhow::Result<()> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let issued = authority.sign_server(hosts, &key)?;
    let mut conn = state::open(&state.database())?;
    state::transaction(&mut conn, |c| {
        records::insert(c, &issued, Kind::Server, None, state::now())?;
        audit::append(
            c,
            "certificate_issued",
            json!({ "serial": issued.serial, "subject": issued.subject, "via": "server", "hosts": hosts }),
        )?;
        Ok(())
    })?;
    files::write_file(
        &state.path(SERVER_KEY),
        key.serialize_pem().as_bytes(),
        0o600,
    )?;
    let chain = issued.pem() + &authority.ca_pem;
    files::write_file(&state.path(SERVER_CERT), chain.as_bytes(), 0o644)?;
    Ok(())
}

impl Server {
    /// Loads the state directory and binds the listener.
    pub async fn bind(opts: ServeOptions) -> anyhow::Result<Server> {
        opts.state.require_initialized()?;
        for name in [files::CA_KEY, SERVER_KEY, files::ADMIN_KEY] {
            if let Some(warning) = opts.state.check_private(name) {
                tracing::warn!("{warning}");
            }
        }
        let authority = Authority::load(&opts.state, opts.lifetime)?;
        ensure_server_cert(&opts.state, &authority)?;
        let identity = tessera_identity::tls::certified_key_from_pem(
            &opts.state.read(SERVER_CERT)?,
            &opts.state.read(SERVER_KEY)?,
        )
        .context("loading the CA's HTTPS certificate and key")?;
        let db = Db::open(&opts.state.database())?;
        let ca = Ca::new(authority, db, identity).await?;
        let listener = TcpListener::bind(opts.listen).await.with_context(|| {
            format!(
                "listening on {}; is another CA running there? pick another --listen",
                opts.listen
            )
        })?;
        Ok(Server { ca, listener })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn ca(&self) -> &Arc<Ca> {
        &self.ca
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Server { ca, listener } = self;
        let addr = listener.local_addr()?;
        tracing::info!(listen = %addr, cluster = %ca.authority.cluster, fingerprint = %tessera_identity::tls::fingerprint(ca.authority.ca.cert_der()), "CA serving");
        let maintenance = tokio::spawn({
            let ca = ca.clone();
            async move {
                loop {
                    tokio::time::sleep(CRL_POLL).await;
                    if let Err(e) = ca.sync_crl().await {
                        tracing::error!(reason = %e, "CRL maintenance failed");
                    }
                }
            }
        });
        let tls = {
            let ca = ca.clone();
            move || ca.tls_config()
        };
        https::serve(listener, tls, LIMITS, shutdown, report, move |conn, _| {
            let peer = Peer::from_certificates(conn.peer_certificates()).map(Arc::new);
            let ca = ca.clone();
            Some(service_fn(move |req| {
                request(ca.clone(), peer.clone(), req)
            }))
        })
        .await;
        maintenance.abort();
        tracing::info!("CA stopped");
        Ok(())
    }
}

fn report(event: Event<'_>) {
    match event {
        // Out of file descriptors and the like: the loop backs off and keeps serving.
        Event::AcceptFailed(e) => tracing::warn!(error = %e, "accept failed"),
        Event::HandshakeRefused { remote, error } => {
            tracing::info!(%remote, error = %error, "TLS handshake refused")
        }
        Event::HandshakeTimedOut { remote } => tracing::info!(%remote, "TLS handshake timed out"),
        Event::ConnectionError { remote, error } => {
            tracing::debug!(%remote, error = %error, "connection ended")
        }
    }
}

/// One request, answered within REQUEST_TIMEOUT.
async fn request(
    ca: Arc<Ca>,
    peer: Option<Arc<Peer>>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<api::Body>, std::convert::Infallible> {
    Ok(
        match tokio::time::timeout(REQUEST_TIMEOUT, api::handle(ca, peer, req)).await {
            Ok(resp) => resp,
            Err(_) => api::error_response(&ApiError::new(
                Code::Timeout,
                format!(
                    "the request took longer than {}s; send the body promptly",
                    REQUEST_TIMEOUT.as_secs()
                ),
            )),
        },
    )
}

/// Runs the server on a new multi-threaded runtime until SIGINT/SIGTERM.
pub fn serve_blocking(opts: ServeOptions) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ca")
        .build()?;
    rt.block_on(async {
        let server = Server::bind(opts).await?;
        server
            .run(async {
                let mut term =
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(s) => s,
                        Err(_) => return std::future::pending().await,
                    };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            })
            .await
    })
}
