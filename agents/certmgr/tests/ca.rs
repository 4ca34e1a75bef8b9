//! certmgr against a real Tessera CA on 127.0.0.1 (the `tessera_ca` server in this process,
//! ephemeral port, temporary state directory), with ecdsa-p256 keys in the host's keyring
//! (the host kernel lacks `pkcs8_key_parser`, so kernel-rsa is exercised in QEMU only).
//! Each test names the behaviour it checks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tessera_ca::files::StateDir;
use tessera_ca::server::{ServeOptions, Server};
use tessera_ca::token::{self, Binding};
use tessera_ca::{audit, records, setup, state};
use tessera_certmgr::bootstrap;
use tessera_certmgr::ca_client::{CaClient, CaError};
use tessera_certmgr::client;
use tessera_certmgr::protocol::RedeemReply;
use tessera_certmgr::service::{self, Options};
use tessera_certmgr::settings::{BootstrapToken, CaSettings};
use tessera_identity::keyring::Keyring;
use tessera_identity::keys::{KeyMode, NodeKey};
use tessera_identity::profile;
use tessera_identity::tls;
use tessera_userdata::events::Events;

const NODE: &str = "n1.example";

/// A CA server on a thread of its own, stopped when dropped.
struct Ca {
    _dir: tempfile::TempDir,
    state: StateDir,
    addr: SocketAddr,
    fingerprint: String,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ca {
    fn start() -> Ca {
        Ca::start_on("127.0.0.1:0".parse().unwrap())
    }

    fn init() -> (tempfile::TempDir, StateDir) {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("ca"));
        setup::init(&state, "prod", &[]).unwrap();
        (dir, state)
    }

    fn start_on(listen: SocketAddr) -> Ca {
        let (dir, state) = Ca::init();
        Ca::serve(dir, state, listen)
    }

    fn serve(dir: tempfile::TempDir, state: StateDir, listen: SocketAddr) -> Ca {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let server = Server::bind(ServeOptions {
                    state: st,
                    listen,
                    lifetime: profile::DEFAULT_LIFETIME,
                })
                .await
                .unwrap();
                addr_tx.send(server.local_addr().unwrap()).unwrap();
                let stopped = tokio::task::spawn_blocking(move || {
                    let _ = stop_rx.recv();
                });
                server
                    .run(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        let fingerprint = tls::CaTrust::from_pem(&state.read("ca.pem").unwrap())
            .unwrap()
            .fingerprint();
        Ca {
            _dir: dir,
            state,
            addr,
            fingerprint,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// A token as `tessera ca token --node n1.example --subsystem certmgr --capabilities …`.
    fn token(&self, caps: &[&str]) -> String {
        let binding = Binding::new(
            NODE,
            "certmgr",
            None,
            caps.iter().map(|s| s.to_string()).collect(),
            vec![],
        )
        .unwrap();
        let mut conn = state::open(&self.state.database()).unwrap();
        state::transaction(&mut conn, |c| {
            token::create(c, &binding, Duration::from_secs(600), "cli", state::now())
        })
        .unwrap()
        .token
    }

    fn certificates(&self) -> Vec<records::Record> {
        let conn = state::open(&self.state.database()).unwrap();
        records::list(&conn).unwrap()
    }

    fn audit_events(&self) -> Vec<String> {
        let conn = state::open(&self.state.database()).unwrap();
        audit::entries(&conn)
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect()
    }
}

impl Drop for Ca {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A keyring for one test, invalidated with its keys at the end.
struct Scratch(Keyring);

impl Scratch {
    fn new(name: &str) -> Scratch {
        Scratch(Keyring::process().unwrap().create_keyring(name).unwrap())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.0.as_key().invalidate();
    }
}

fn node_key(ring: &Scratch) -> NodeKey {
    NodeKey::generate(KeyMode::EcdsaP256, &ring.0).unwrap()
}

fn settings(ca: &Ca, token: &str) -> CaSettings {
    CaSettings {
        url: ca.url(),
        fingerprint: ca.fingerprint.clone(),
        token: BootstrapToken::new(token.as_bytes(), None),
    }
}

#[test]
fn bootstrap_redeems_the_token_and_renewal_keeps_the_subject() {
    let ca = Ca::start();
    let ring = Scratch::new("certmgr-it-bootstrap");
    let key = node_key(&ring);
    let token = ca.token(&["hub", "node"]);
    let client = CaClient::new(&ca.url(), &ca.fingerprint).unwrap();
    let id = bootstrap::attempt(&client, &settings(&ca, &token), &key, Some(NODE)).unwrap();
    let peer = &id.issued.peer;
    assert_eq!(
        (
            peer.cluster.as_str(),
            peer.subsystem.as_str(),
            peer.node.as_str(),
            peer.agent_id.as_str()
        ),
        ("prod", "certmgr", NODE, "certmgr")
    );
    assert_eq!(
        peer.capabilities,
        vec!["hub".to_string(), "node".to_string()]
    );
    assert_eq!(id.issued.chain.len(), 2);
    assert_eq!(tls::fingerprint(&id.issued.chain[1]), ca.fingerprint);
    // Renewal is scheduled at 2/3 of the lifetime ± 5 %.
    let life = id.issued.lifetime().as_secs_f64();
    let at = id
        .renew_at
        .duration_since(id.issued.not_before)
        .unwrap()
        .as_secs_f64();
    assert!(
        at >= life * (2.0 / 3.0 - 0.051) && at <= life * (2.0 / 3.0 + 0.051),
        "{at} of {life}"
    );
    assert!(ca.certificates().iter().any(|r| r.serial == peer.serial));
    assert!(ca.audit_events().contains(&"token_redeemed".to_string()));

    // Renewal over mTLS with the current identity: same subject, new serial.
    let renewed = bootstrap::renew_with_ca(&key, &id).unwrap();
    assert_ne!(renewed.issued.peer.serial, peer.serial);
    assert_eq!(renewed.issued.subject_text(), id.issued.subject_text());
    assert_eq!(renewed.issued.peer.capabilities, peer.capabilities);
    assert!(ca
        .audit_events()
        .contains(&"certificate_renewed".to_string()));
}

#[test]
fn a_replayed_token_is_refused_as_used_and_nothing_is_issued() {
    let ca = Ca::start();
    let ring = Scratch::new("certmgr-it-replay");
    let token = ca.token(&[]);
    let client = CaClient::new(&ca.url(), &ca.fingerprint).unwrap();
    bootstrap::attempt(
        &client,
        &settings(&ca, &token),
        &node_key(&ring),
        Some(NODE),
    )
    .unwrap();
    let before = ca.certificates().len();
    let err = bootstrap::attempt(
        &client,
        &settings(&ca, &token),
        &node_key(&ring),
        Some(NODE),
    )
    .err()
    .unwrap();
    assert!(err.is_token_refusal(), "{err}");
    assert!(
        matches!(&err, CaError::Refused { code, .. } if code == "token_used"),
        "{err}"
    );
    assert!(err.to_string().contains("token_used"), "{err}");
    assert_eq!(ca.certificates().len(), before);
}

#[test]
fn a_wrong_fingerprint_refuses_before_the_csr_is_sent() {
    let ca = Ca::start();
    let (_other_dir, other) = Ca::init();
    let other_fp = tls::CaTrust::from_pem(&other.read("ca.pem").unwrap())
        .unwrap()
        .fingerprint();
    let ring = Scratch::new("certmgr-it-fingerprint");
    let token = ca.token(&[]);
    let client = CaClient::new(&ca.url(), &other_fp).unwrap();
    let err = bootstrap::attempt(
        &client,
        &settings(&ca, &token),
        &node_key(&ring),
        Some(NODE),
    )
    .err()
    .unwrap();
    match &err {
        CaError::FingerprintMismatch {
            presented, pinned, ..
        } => {
            assert_eq!(presented, &ca.fingerprint);
            assert_eq!(pinned, &other_fp);
        }
        other => panic!("{other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "presented {}, user-data pins {}",
            ca.fingerprint, other_fp
        )) && text.contains("refusing to send the CSR")
            && text.contains("check ca.fingerprint"),
        "{text}"
    );
    // The CA never saw the token: it is unspent and still works with the right pin.
    assert!(!ca
        .audit_events()
        .iter()
        .any(|e| e == "token_refused" || e == "token_redeemed"));
    let good = CaClient::new(&ca.url(), &ca.fingerprint).unwrap();
    bootstrap::attempt(&good, &settings(&ca, &token), &node_key(&ring), Some(NODE)).unwrap();
}

#[test]
fn a_closed_port_is_unreachable_not_refused() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = CaClient::new(
        &format!("https://127.0.0.1:{port}"),
        "sha256:2b318f01675311f8c277886ba374ff2a250f1bbda0bfd7061b91f006a4082432",
    )
    .unwrap();
    let err = client.fetch_trust().err().unwrap();
    assert!(matches!(err, CaError::Unreachable { .. }), "{err}");
    assert_eq!(err.cause(), "connection refused");
    assert!(!err.is_refusal());
}

/// Options for a service run in `dir`, with user-data at `dir/userdata.toml`.
fn options(dir: &Path, ring: &Scratch) -> Options {
    Options {
        userdata: dir.join("userdata.toml"),
        socket: dir.join("certmgr.sock"),
        token_keyring: ring.0,
        cert_keyring: ring.0,
        hostname_file: dir.join("hostname"),
        parent_pid: std::process::id(),
        allow_operator: false,
        child_key_mode: tessera_identity::keys::KeyMode::EcdsaP256,
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        config_poll: Duration::from_millis(100),
        stop_when_ready: true,
        ca_timeouts: Some((Duration::from_secs(2), Duration::from_secs(10))),
    }
}

fn write_userdata(dir: &Path, url: &str, fp: &str) {
    std::fs::write(
        dir.join("userdata.toml"),
        format!(
            "version = 1\n[node]\nhostname = \"{NODE}\"\n[ca]\nurl = \"{url}\"\nfingerprint = \"{fp}\"\ntoken = \"keyring:tessera:bootstrap-token\"\n"
        ),
    )
    .unwrap();
}

/// Runs the service until it holds an identity; returns the sd_notify messages it sent.
fn run_service(opts: Options, ring: &Scratch) -> (Vec<String>, tessera_userdata::events::Captured) {
    let key = node_key(ring);
    let (events, captured) = Events::capture();
    let mut sent = Vec::new();
    service::run(opts, key, None, Arc::new(events), &mut |m: &[String]| {
        sent.extend(m.iter().cloned())
    })
    .unwrap();
    (sent, captured)
}

#[test]
fn the_service_bootstraps_from_the_keyring_token_and_serves_child_identities() {
    let ca = Ca::start();
    let dir = tempfile::tempdir().unwrap();
    let ring = Scratch::new("certmgr-it-service");
    let token = ca.token(&["hub"]);
    ring.0
        .add("user", "tessera:bootstrap-token", token.as_bytes())
        .unwrap();
    write_userdata(dir.path(), &ca.url(), &ca.fingerprint);
    let opts = options(dir.path(), &ring);
    let socket = opts.socket.clone();
    let (sent, captured) = run_service(opts, &ring);
    assert_eq!(
        sent.iter().filter(|m| *m == "READY=1").count(),
        1,
        "{sent:?}"
    );
    let status = sent
        .iter()
        .rev()
        .find(|m| m.starts_with("STATUS="))
        .unwrap();
    assert!(
        status
            .starts_with("STATUS=identity DC=prod, O=certmgr, OU=n1.example, UID=certmgr serial "),
        "{status}"
    );
    assert!(
        status.contains("valid until") && status.contains("renew at"),
        "{status}"
    );
    // The token was taken out of the keyring once redeemed; the chain is published there.
    assert!(ring.0.search("user", "tessera:bootstrap-token").is_err());
    let cert = ring.0.search("user", "tessera:node:cert").unwrap();
    let mut buf = vec![0u8; 8192];
    let n = cert.read_into(&mut buf).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&buf[..n])
            .matches("BEGIN CERTIFICATE")
            .count(),
        2
    );
    // The token never reaches the log.
    assert!(!captured.text().contains(&token));

    let st = client::status(&socket).unwrap();
    assert_eq!(st["mode"], "ca");
    assert_eq!(st["state"], "ready");
    assert_eq!(
        st["node"]["subject"],
        "DC=prod, O=certmgr, OU=n1.example, UID=certmgr"
    );
    assert_eq!(st["node"]["key_mode"], "ecdsa-p256");

    // A child identity: token at once, identity signed by the CA through /v1/issue.
    let child = client::child_token(&socket, "hub", "hub", &[]).unwrap();
    let reply = client::redeem(&socket, &child, None).unwrap();
    let parsed: RedeemReply<'_> = serde_json::from_slice(reply.as_slice()).unwrap();
    assert_eq!(parsed.subject, "DC=prod, O=hub, OU=n1.example, UID=hub");
    assert_eq!(parsed.key_mode, "ecdsa-p256");
    assert!(!parsed.key_pkcs8_b64.is_empty());
    assert!(ca.certificates().iter().any(|r| r.serial == parsed.serial));
    // Single use.
    let again = client::redeem(&socket, &child, None).unwrap_err();
    assert_eq!(again.code(), Some("token_used"), "{again}");
    // The node holds no capability for "container": refused before anything is made.
    let err = client::child_token(&socket, "container", "c1", &[]).unwrap_err();
    assert_eq!(err.code(), Some("capability_missing"), "{err}");
}

#[test]
fn the_service_waits_for_a_ca_that_is_down_then_succeeds() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // The CA's state exists (the operator knows its fingerprint), the server is not up yet.
    let (ca_dir, state) = Ca::init();
    let fp = tls::CaTrust::from_pem(&state.read("ca.pem").unwrap())
        .unwrap()
        .fingerprint();
    let binding = Binding::new(NODE, "certmgr", None, vec![], vec![]).unwrap();
    let mut conn = state::open(&state.database()).unwrap();
    let token = state::transaction(&mut conn, |c| {
        token::create(c, &binding, Duration::from_secs(600), "cli", state::now())
    })
    .unwrap()
    .token;
    drop(conn);
    let dir = tempfile::tempdir().unwrap();
    let ring = Scratch::new("certmgr-it-down");
    ring.0
        .add("user", "tessera:bootstrap-token", token.as_bytes())
        .unwrap();
    write_userdata(dir.path(), &format!("https://127.0.0.1:{port}"), &fp);
    let opts = options(dir.path(), &ring);
    let starter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        Ca::serve(ca_dir, state, listen)
    });
    let started = Instant::now();
    let (sent, captured) = run_service(opts, &ring);
    let _ca = starter.join().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1400));
    let waiting = sent
        .iter()
        .find(|m| m.starts_with("STATUS=waiting for the CA"))
        .unwrap_or_else(|| panic!("{sent:?}"));
    assert!(
        waiting.starts_with(&format!(
            "STATUS=waiting for the CA at https://127.0.0.1:{port} (connection refused), retry in "
        )),
        "{waiting}"
    );
    // READY only once the certificate is there, after the waiting.
    let ready_at = sent.iter().position(|m| m == "READY=1").unwrap();
    let waiting_at = sent.iter().position(|m| m == waiting).unwrap();
    assert!(waiting_at < ready_at, "{sent:?}");
    // The first wait is a warning (on the console), repeats are debug.
    let events = captured.events();
    let waits: Vec<&serde_json::Map<String, Value>> = events
        .iter()
        .filter(|e| e["msg"] == "waiting for the CA")
        .collect();
    assert_eq!(waits[0]["level"], "warn");
    assert!(
        waits.iter().skip(1).all(|e| e["level"] == "debug"),
        "{waits:?}"
    );
}

#[test]
fn a_refused_token_is_final_and_certmgr_waits_for_new_user_data() {
    let ca = Ca::start();
    let token = ca.token(&[]);
    // Spend the token first, as a replayed PXE boot would find it.
    let ring = Scratch::new("certmgr-it-refused");
    let client = CaClient::new(&ca.url(), &ca.fingerprint).unwrap();
    bootstrap::attempt(
        &client,
        &settings(&ca, &token),
        &node_key(&ring),
        Some(NODE),
    )
    .unwrap();
    ring.0
        .add("user", "tessera:bootstrap-token", token.as_bytes())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_userdata(dir.path(), &ca.url(), &ca.fingerprint);
    let opts = options(dir.path(), &ring);
    // New user-data (a fresh token) arrives a little later.
    let fresh = ca.token(&[]);
    let ring_serial = ring.0.serial();
    let deliver = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(800));
        Keyring::from_serial(ring_serial)
            .add("user", "tessera:bootstrap-token", fresh.as_bytes())
            .unwrap();
    });
    let redemptions_before = ca
        .audit_events()
        .iter()
        .filter(|e| *e == "token_refused")
        .count();
    let (sent, captured) = run_service(opts, &ring);
    deliver.join().unwrap();
    let refused = sent
        .iter()
        .find(|m| m.starts_with("STATUS=bootstrap token refused by the CA"))
        .unwrap_or_else(|| panic!("{sent:?}"));
    assert!(refused.contains("token_used"), "{refused}");
    assert!(refused.contains("waiting for new user-data"), "{refused}");
    let events = captured.events();
    let e = events
        .iter()
        .find(|e| e["msg"] == "the CA refused the bootstrap token")
        .unwrap();
    assert_eq!(e["level"], "error");
    assert_eq!(e["error"], "token_used");
    // Refused once, not hammered: exactly one more refusal in the audit log.
    let refusals = ca
        .audit_events()
        .iter()
        .filter(|e| *e == "token_refused")
        .count();
    assert_eq!(refusals, redemptions_before + 1);
    assert!(sent.contains(&"READY=1".to_string()));
}

#[test]
fn standalone_without_a_ca_gives_a_node_local_identity_and_child_identities() {
    let dir = tempfile::tempdir().unwrap();
    let ring = Scratch::new("certmgr-it-standalone");
    std::fs::write(dir.path().join("hostname"), "node7.example\n").unwrap();
    let opts = options(dir.path(), &ring);
    let socket = opts.socket.clone();
    let (sent, _) = run_service(opts, &ring);
    assert!(sent.contains(&"READY=1".to_string()), "{sent:?}");
    let status = sent
        .iter()
        .rev()
        .find(|m| m.starts_with("STATUS="))
        .unwrap();
    assert!(
        status.starts_with("STATUS=standalone identity (node-local CA): DC=tessera, O=certmgr, OU=node7.example, UID=certmgr"),
        "{status}"
    );
    let st = client::status(&socket).unwrap();
    assert_eq!(st["mode"], "standalone");
    assert_eq!(st["node"]["issuer"], "node-local CA");
    let child = client::child_token(&socket, "node", "node", &[]).unwrap();
    let reply = client::redeem(&socket, &child, None).unwrap();
    let parsed: RedeemReply<'_> = serde_json::from_slice(reply.as_slice()).unwrap();
    assert_eq!(
        parsed.subject,
        "DC=tessera, O=node, OU=node7.example, UID=node"
    );
    assert_eq!(parsed.chain_pem.matches("BEGIN CERTIFICATE").count(), 2);
}

#[test]
fn socket_callers_without_standing_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ring = Scratch::new("certmgr-it-forbidden");
    let mut opts = options(dir.path(), &ring);
    // Not the supervisor, no identity, and the operator rule is off.
    opts.parent_pid = 1;
    let socket: PathBuf = opts.socket.clone();
    run_service(opts, &ring);
    let err = client::child_token(&socket, "hub", "hub", &[]).unwrap_err();
    assert_eq!(err.code(), Some("forbidden"), "{err}");
    assert!(
        err.to_string().contains("holds no certmgr-issued identity"),
        "{err}"
    );
    let bad = client::call(&socket, b"{\"op\":\"launch\"}\n", Duration::from_secs(5)).unwrap();
    let v: Value = serde_json::from_slice(bad.as_slice()).unwrap();
    assert_eq!(v["error"], "bad_request");
    let garbage = client::redeem(&socket, "not-a-token", None).unwrap_err();
    assert_eq!(garbage.code(), Some("token_invalid"), "{garbage}");
    let unknown = client::redeem(&socket, &"Q".repeat(43), None).unwrap_err();
    assert_eq!(unknown.code(), Some("token_unknown"), "{unknown}");
}

#[test]
fn a_standalone_node_switches_to_the_ca_when_user_data_names_one_later() {
    let ca = Ca::start();
    let dir = tempfile::tempdir().unwrap();
    let ring = Scratch::new("certmgr-it-late-ca");
    let mut opts = options(dir.path(), &ring);
    opts.stop_when_ready = false;
    let socket = opts.socket.clone();
    let key = node_key(&ring);
    let (events, _captured) = Events::capture();
    std::thread::spawn(move || {
        let _ = service::run(opts, key, None, Arc::new(events), &mut |_: &[String]| {});
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mode = |want: &str, subject: &str| loop {
        if let Ok(st) = client::status(&socket) {
            if st["mode"] == want && st["state"] == "ready" && st["node"]["subject"] == subject {
                return st;
            }
        }
        assert!(Instant::now() < deadline, "certmgr never reached {want}");
        std::thread::sleep(Duration::from_millis(50));
    };
    mode(
        "standalone",
        "DC=tessera, O=certmgr, OU=tessera, UID=certmgr",
    );
    // As the userdata service does when IMDS answers late: token to the keyring, then the file.
    let token = ca.token(&["hub"]);
    ring.0
        .add("user", "tessera:bootstrap-token", token.as_bytes())
        .unwrap();
    write_userdata(dir.path(), &ca.url(), &ca.fingerprint);
    let st = mode("ca", "DC=prod, O=certmgr, OU=n1.example, UID=certmgr");
    assert_eq!(st["node"]["issuer"], ca.url());
}
