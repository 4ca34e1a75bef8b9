//! `tessera agent hub` as the supervisor runs it: settings from a user-data file, readiness
//! over sd_notify, components served on the socket, an orderly stop on SIGTERM. In a test
//! binary of its own: it sets NOTIFY_SOCKET and raises SIGTERM in this process.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use tessera_hub::client::Client;
use tessera_hub::ephemeral_ca::EphemeralCa;
use tessera_hub::service::{run_with_identity, AgentArgs};
use tessera_hub::Selector;

#[test]
fn the_service_reads_user_data_reports_ready_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let ready = UnixDatagram::bind(&notify).unwrap();
    ready
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    std::env::set_var("NOTIFY_SOCKET", &notify);
    let userdata = dir.path().join("userdata.toml");
    std::fs::write(
        &userdata,
        "version = 1\n[node]\nhostname = \"n1.example\"\ncluster = \"prod\"\n[hub]\nseeds = [\"127.0.0.1:9\"]\n",
    )
    .unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let gossip = udp.local_addr().unwrap();
    drop(udp);
    let socket = dir.path().join("hub.sock");
    let args = AgentArgs {
        socket: socket.clone(),
        api_listen: "127.0.0.1:0".parse().unwrap(),
        peer_listen: "127.0.0.1:0".parse().unwrap(),
        gossip_listen: gossip,
        advertise: None,
        userdata,
        seeds: vec![],
        cert: None,
        key: None,
        ca: None,
    };
    let ca = EphemeralCa::new("prod").unwrap();
    let tls = ca.hub("n1.example").unwrap();
    let service = std::thread::spawn(move || run_with_identity(args, tls, |_| Ok(())));

    let mut buf = [0u8; 512];
    let n = ready
        .recv(&mut buf)
        .expect("no readiness notification within 30 s");
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg}");
    assert!(msg.contains("STATUS=serving on"), "{msg}");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = Client::connect(&socket, "smoke", "test").await.unwrap();
        assert_eq!(c.hub(), "n1.example");
        assert_eq!(c.register(&["smoke"]).await.unwrap()["smoke"], 1);
        assert_eq!(c.select("smoke", Selector::All).await.unwrap().len(), 1);
    });

    // SAFETY: raise(3) sends SIGTERM to this process, whose handler tokio installed.
    unsafe { libc::raise(libc::SIGTERM) };
    let result = service.join().unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(!socket.exists(), "the socket is removed on stop");
}
