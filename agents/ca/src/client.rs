//! A small HTTPS client for the CA API (HTTP/1.1 keep-alive over rustls): used by the
//! benchmark and the tests, and usable by anything that talks to the CA.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// One keep-alive connection to the CA (or any HTTPS JSON server).
pub struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    host: String,
    driver: tokio::task::JoinHandle<()>,
}

/// A reply: status and body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "reply {} is not JSON: {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Connection {
    /// Connects over TLS to `addr`, verifying the server as `server_name`. `None` as config
    /// means plain HTTP (for peers measured without TLS).
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        config: Option<Arc<ClientConfig>>,
    ) -> anyhow::Result<Connection> {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        let (sender, driver) = match config {
            Some(config) => {
                let name = ServerName::try_from(server_name.to_string())
                    .map_err(|e| anyhow!("server name {server_name:?}: {e}"))?;
                let tls = TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .with_context(|| format!("TLS handshake with {addr}"))?;
                let (sender, conn) = http1::handshake(TokioIo::new(tls)).await?;
                (
                    sender,
                    tokio::spawn(async move {
                        let _ = conn.await;
                    }),
                )
            }
            None => {
                let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await?;
                (
                    sender,
                    tokio::spawn(async move {
                        let _ = conn.await;
                    }),
                )
            }
        };
        Ok(Connection {
            sender,
            host: server_name.to_string(),
            driver,
        })
    }

    async fn send(&mut self, req: Request<Full<Bytes>>) -> anyhow::Result<Reply> {
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Reply { status, body })
    }

    pub async fn get(&mut self, path: &str) -> anyhow::Result<Reply> {
        let req = Request::get(path)
            .header(hyper::header::HOST, &self.host)
            .body(Full::new(Bytes::new()))?;
        self.send(req).await
    }

    /// POSTs raw bytes as JSON.
    pub async fn post(&mut self, path: &str, body: impl Into<Bytes>) -> anyhow::Result<Reply> {
        let req = Request::post(path)
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.into()))?;
        self.send(req).await
    }

    pub async fn post_json(
        &mut self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<Reply> {
        self.post(path, body.to_string()).await
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}
