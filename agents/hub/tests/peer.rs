//! Hub-to-hub links accept only hubs: the peer's certificate must be a hub's from the cluster
//! CA, and it must introduce itself as the node its certificate names.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tessera_hub::codec::{self, Frame};
use tessera_hub::peer::server_name;
use tessera_hub::protocol::PeerMsg;
use tessera_hub::testbed::{hub_name, Testbed};
use tessera_identity::tls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Dials hub 0's peer port with `identity`, says hello as `claim`, and reports whether the
/// hub kept the link open.
async fn link_stays_open(
    t: &Testbed,
    identity: Arc<rustls::sign::CertifiedKey>,
    claim: &str,
) -> bool {
    let config = tls::client_config(Some(identity), &t.ca.trust().unwrap()).unwrap();
    let tcp = TcpStream::connect(t.node(0).peer_addr).await.unwrap();
    let name = ServerName::try_from(server_name(&hub_name(0))).unwrap();
    let Ok(mut s) = TlsConnector::from(config).connect(name, tcp).await else {
        return false;
    };
    let hello = codec::to_bytes(&Frame::new(PeerMsg::Hello { hub: claim.into() })).unwrap();
    if s.write_all(&hello).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    match tokio::time::timeout(Duration::from_millis(1500), s.read(&mut buf)).await {
        Err(_) => true,                  // still open, nothing to say: accepted
        Ok(Ok(0)) | Ok(Err(_)) => false, // closed by the hub
        Ok(Ok(_)) => true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_hubs_telling_the_truth_about_their_name_may_link() {
    let t = Testbed::start(1, Duration::from_millis(50)).await.unwrap();
    let hub5 = t.ca.issue("hub", "hub", &hub_name(5)).unwrap();
    assert!(
        link_stays_open(&t, hub5.clone(), &hub_name(5)).await,
        "a real hub is accepted"
    );
    assert!(
        !link_stays_open(&t, hub5, &hub_name(7)).await,
        "a hub lying about its name"
    );
    let admin = t.ca.issue("admin", "operator", "operator.example").unwrap();
    assert!(
        !link_stays_open(&t, admin, "operator.example").await,
        "not a hub's certificate"
    );
    t.stop().await;
}

/// The serial of the certificate hub 0 presents on its peer port to a new connection.
async fn presented_serial(t: &Testbed) -> String {
    let me = t.ca.issue("hub", "hub", &hub_name(9)).unwrap();
    let config = tls::client_config(Some(me), &t.ca.trust().unwrap()).unwrap();
    let tcp = TcpStream::connect(t.node(0).peer_addr).await.unwrap();
    let name = ServerName::try_from(server_name(&hub_name(0))).unwrap();
    let s = TlsConnector::from(config).connect(name, tcp).await.unwrap();
    let peer = tls::peer_identity(s.get_ref().1).expect("a Tessera certificate");
    peer.serial
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_identity_is_presented_to_new_connections() {
    let t = Testbed::start(1, Duration::from_millis(50)).await.unwrap();
    let before = presented_serial(&t).await;
    let renewed = t.ca.hub(&hub_name(0)).unwrap();
    let expected = tessera_hub::peer::Tls::node(&renewed).unwrap().serial;
    t.node(0).tls.replace(&renewed).unwrap();
    let after = presented_serial(&t).await;
    assert_ne!(before, after);
    assert_eq!(after, expected);
    t.stop().await;
}
