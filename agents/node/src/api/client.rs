//! The host side of the node API: one HTTPS request with the operator's client certificate,
//! the node's certificate checked against the cluster CA for the name it must carry.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Where and as whom to connect.
pub struct Target {
    pub addr: String,
    /// The name the node's certificate carries (`node.<node FQDN>`).
    pub server_name: String,
    pub tls: Arc<rustls::ClientConfig>,
}

/// Sends one request; the reply body is written to `out` as it arrives (log streams), and
/// the status code returned.
pub async fn request(
    target: &Target,
    method: &str,
    path: &str,
    body: Option<String>,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<u16> {
    let tcp = TcpStream::connect(&target.addr).await.with_context(|| {
        format!(
            "connecting to the node API at {}; is the node up and the port forwarded?",
            target.addr
        )
    })?;
    let name = ServerName::try_from(target.server_name.clone())
        .with_context(|| format!("{:?} is not a DNS name", target.server_name))?;
    let tls = TlsConnector::from(target.tls.clone())
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS with the node API at {} as {} failed; check --ca (the cluster CA), --cert/--key (a certificate of that CA) and --server-name", target.addr, target.server_name))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, &target.server_name)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let resp = send
        .send_request(req)
        .await
        .context("sending the request")?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.context("reading the reply")?.into_data() {
            out.write_all(&data)?;
            out.flush()?;
        }
    }
    Ok(status)
}
