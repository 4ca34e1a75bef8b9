//! Hub-to-hub links: persistent TCP connections with mutual TLS (the cluster CA pinned, its
//! CRL checked, the peer's certificate naming subsystem `hub` and the node it claims to be).
//! Each hub dials the others for what it sends and reads what they dial in with; a link that
//! fails is dropped with what it queued (best effort) and dialled again on the next send.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use rustls::pki_types::ServerName;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig};
use tessera_identity::profile::PeerIdentity;
use tessera_identity::tls::{self, CaTrust, ClientAuth};
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::codec::{self, Frame};
use crate::defaults;
use crate::hub::Hub;
use crate::protocol::PeerMsg;

/// The hub's certificate and the CA it trusts.
#[derive(Clone)]
pub struct Tls {
    pub identity: Arc<CertifiedKey>,
    pub trust: CaTrust,
}

impl Tls {
    /// The node this certificate names: the hub's id in the cluster.
    pub fn node(&self) -> anyhow::Result<PeerIdentity> {
        let leaf = self.identity.cert.first().ok_or_else(|| {
            anyhow::anyhow!(
                "the hub's certificate chain is empty; give it the chain certmgr issued"
            )
        })?;
        Ok(PeerIdentity::from_der(leaf)?)
    }

    pub fn server_config(&self) -> anyhow::Result<Arc<ServerConfig>> {
        Ok(tls::server_config(
            self.identity.clone(),
            &self.trust,
            ClientAuth::Required,
        )?)
    }

    pub fn client_config(&self) -> anyhow::Result<Arc<ClientConfig>> {
        Ok(tls::client_config(
            Some(self.identity.clone()),
            &self.trust,
        )?)
    }
}

/// The hub's TLS configurations, swapped when its identity is renewed
/// ([`TlsConfigs::replace`]): each new connection, in or out, takes the current ones; open
/// links keep the session they have.
#[derive(Clone)]
pub struct TlsConfigs(Arc<RwLock<(Arc<ServerConfig>, Arc<ClientConfig>)>>);

impl TlsConfigs {
    pub fn new(tls: &Tls) -> anyhow::Result<TlsConfigs> {
        Ok(TlsConfigs(Arc::new(RwLock::new((
            tls.server_config()?,
            tls.client_config()?,
        )))))
    }

    /// Puts a renewed identity in use for new connections.
    pub fn replace(&self, tls: &Tls) -> anyhow::Result<()> {
        let fresh = (tls.server_config()?, tls.client_config()?);
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    pub fn server(&self) -> Arc<ServerConfig> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    pub fn client(&self) -> Arc<ClientConfig> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).1.clone()
    }
}

/// The name a hub's certificate is valid for: `hub.<node>`.
pub fn server_name(hub: &str) -> String {
    format!("{}.{hub}", defaults::HUB_AGENT_ID)
}

/// Outgoing links, one per peer hub.
pub struct PeerLinks {
    self_id: String,
    tls: TlsConfigs,
    links: Mutex<HashMap<String, mpsc::Sender<Frame<PeerMsg>>>>,
}

impl PeerLinks {
    pub fn new(self_id: String, tls: TlsConfigs) -> Arc<PeerLinks> {
        Arc::new(PeerLinks {
            self_id,
            tls,
            links: Mutex::new(HashMap::new()),
        })
    }

    /// Queues a frame for `hub` at `addr`, dialling if there is no link.
    pub fn send(self: &Arc<Self>, hub: &str, addr: SocketAddr, frame: Frame<PeerMsg>) {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        let frame = match links.get(hub) {
            Some(tx) => match tx.try_send(frame) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::debug!(hub, "link queue full: frame dropped");
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(frame)) => frame,
            },
            None => frame,
        };
        let (tx, rx) = mpsc::channel(defaults::CONNECTION_QUEUE);
        let _ = tx.try_send(frame);
        links.insert(hub.to_string(), tx.clone());
        tokio::spawn(run_link(self.clone(), hub.to_string(), addr, tx, rx));
    }

    fn forget(&self, hub: &str, tx: &mpsc::Sender<Frame<PeerMsg>>) {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if links.get(hub).is_some_and(|t| t.same_channel(tx)) {
            links.remove(hub);
        }
    }

    /// Drops every link (the hub is stopping).
    pub fn close_all(&self) {
        self.links.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

async fn dial(
    links: &PeerLinks,
    hub: &str,
    addr: SocketAddr,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = tokio::time::timeout(defaults::HANDSHAKE_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("connecting timed out"))??;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(server_name(hub))?;
    let tls = tokio::time::timeout(
        defaults::HANDSHAKE_TIMEOUT,
        TlsConnector::from(links.tls.client()).connect(name, tcp),
    )
    .await
    .map_err(|_| anyhow::anyhow!("TLS handshake timed out"))??;
    let peer = tls::peer_identity(tls.get_ref().1)
        .ok_or_else(|| anyhow::anyhow!("the peer presented no Tessera certificate"))?;
    if peer.subsystem != defaults::HUB_SUBSYSTEM || peer.node != hub {
        anyhow::bail!(
            "the peer at {addr} is {}@{}, not the hub of {hub}",
            peer.subsystem,
            peer.node
        );
    }
    Ok(tls)
}

async fn run_link(
    links: Arc<PeerLinks>,
    hub: String,
    addr: SocketAddr,
    tx: mpsc::Sender<Frame<PeerMsg>>,
    mut rx: mpsc::Receiver<Frame<PeerMsg>>,
) {
    match dial(&links, &hub, addr).await {
        Ok(mut tls) => {
            tracing::info!(peer = %hub, %addr, "hub link up");
            let hello = Frame::new(PeerMsg::Hello {
                hub: links.self_id.clone(),
            });
            let mut buf = Vec::new();
            if codec::encode(&hello, &mut buf).is_ok() {
                use tokio::io::AsyncWriteExt;
                if tls.write_all(&buf).await.is_ok() {
                    // Leaves the map first so that new frames open a new link once this
                    // one fails, then drains.
                    codec::write_frames(tls, rx).await;
                    links.forget(&hub, &tx);
                    tracing::info!(peer = %hub, "hub link down");
                    return;
                }
            }
            links.forget(&hub, &tx);
        }
        Err(e) => {
            tracing::warn!(peer = %hub, %addr, reason = %e, "cannot reach hub; its messages are dropped until it answers");
            // Drop what arrives for a moment rather than dialling a dead hub per message.
            let until = tokio::time::Instant::now() + defaults::REDIAL_DELAY;
            while let Ok(Some(_)) = tokio::time::timeout_at(until, rx.recv()).await {}
            links.forget(&hub, &tx);
        }
    }
}

/// Accepts links from other hubs until the task is dropped.
pub async fn serve(hub: Arc<Hub>, listener: TcpListener, tls: TlsConfigs) {
    loop {
        match listener.accept().await {
            Ok((tcp, remote)) => {
                let _ = tcp.set_nodelay(true);
                let acceptor = TlsAcceptor::from(tls.server());
                tokio::spawn(serve_link(hub.clone(), acceptor, tcp, remote));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept on the hub-to-hub port failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_link(hub: Arc<Hub>, acceptor: TlsAcceptor, tcp: TcpStream, remote: SocketAddr) {
    let tls = match tokio::time::timeout(defaults::HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::info!(%remote, error = %e, "hub link refused: TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(%remote, "hub link refused: TLS handshake timed out");
            return;
        }
    };
    let Some(peer) = tls::peer_identity(tls.get_ref().1) else {
        tracing::warn!(%remote, "hub link refused: no Tessera certificate");
        return;
    };
    if peer.subsystem != defaults::HUB_SUBSYSTEM {
        tracing::warn!(%remote, subsystem = %peer.subsystem, "hub link refused: the certificate is not a hub's");
        return;
    }
    let mut rd = BufReader::with_capacity(64 * 1024, tls);
    let mut buf = Vec::new();
    match codec::read_frame::<_, PeerMsg>(&mut rd, defaults::MAX_FRAME, &mut buf).await {
        Ok(Some(Frame {
            header: PeerMsg::Hello { hub: name },
            ..
        })) if name == peer.node => {}
        _ => {
            tracing::warn!(%remote, node = %peer.node, "hub link refused: it did not introduce itself as the node its certificate names");
            return;
        }
    }
    loop {
        match codec::read_frame::<_, PeerMsg>(&mut rd, defaults::MAX_FRAME, &mut buf).await {
            Ok(Some(frame)) => hub.handle_peer(&peer.node, frame),
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(peer = %peer.node, reason = %e, "closing a hub link");
                break;
            }
        }
    }
}
