//! stub
use std::sync::Arc;
pub async fn serve(
    _hub: Arc<crate::hub::Hub>,
    _l: tokio::net::TcpListener,
    _s: Arc<rustls::ServerConfig>,
) {
}
