//! The CA's HTTPS API against a real server on 127.0.0.1 (ephemeral port), checked with our
//! client and with clients nobody here wrote: openssl and curl.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rcgen::KeyPair;
use rustls::sign::CertifiedKey;
use serde_json::{json, Value};
use tessera_ca::client::{Connection, Reply};
use tessera_ca::files::StateDir;
use tessera_ca::server::{ServeOptions, Server};
use tessera_ca::token::{self, Binding};
use tessera_ca::{audit, cli, setup, state};
use tessera_identity::profile::{self, PeerIdentity};
use tessera_identity::tls::{self, CaTrust};

struct Harness {
    _dir: tempfile::TempDir,
    work: PathBuf,
    state: StateDir,
    addr: SocketAddr,
    trust: CaTrust,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// A certificate holder: its key and certificate.
struct Holder {
    key: KeyPair,
    cert_pem: String,
    reply: Value,
}

impl Holder {
    fn identity(&self) -> Arc<CertifiedKey> {
        tls::certified_key_from_pem(&self.cert_pem, &self.key.serialize_pem()).unwrap()
    }

    fn peer(&self) -> PeerIdentity {
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(self.cert_pem.as_bytes())
            .map(|d: rustls::pki_types::CertificateDer<'static>| d)
            .unwrap();
        PeerIdentity::from_der(&der).unwrap()
    }
}

impl Harness {
    async fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("ca"));
        setup::init(&state, "prod", &[]).unwrap();
        let server = Server::bind(ServeOptions {
            state: state.clone(),
            listen: "127.0.0.1:0".parse().unwrap(),
            lifetime: profile::DEFAULT_LIFETIME,
        })
        .await
        .unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        let trust = CaTrust::from_pem(&state.read("ca.pem").unwrap()).unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        Harness {
            _dir: dir,
            work,
            state,
            addr,
            trust,
            _stop: stop,
        }
    }

    async fn connect(&self, identity: Option<Arc<CertifiedKey>>) -> Connection {
        let config = tls::client_config(identity, &self.trust).unwrap();
        Connection::connect(self.addr, "localhost", Some(config))
            .await
            .unwrap()
    }

    /// A token made the way `tessera ca token` makes it.
    fn token(&self, node: &str, subsystem: &str, caps: &[&str], ttl: Duration) -> String {
        let binding = Binding::new(
            node,
            subsystem,
            None,
            caps.iter().map(|s| s.to_string()).collect(),
            vec![],
        )
        .unwrap();
        let mut conn = state::open(&self.state.database()).unwrap();
        state::transaction(&mut conn, |c| {
            token::create(c, &binding, ttl, "cli", state::now())
        })
        .unwrap()
        .token
    }

    async fn redeem(&self, token: &str) -> Holder {
        let key = KeyPair::generate().unwrap();
        let reply = self
            .connect(None)
            .await
            .post_json(
                "/v1/redeem",
                &json!({ "token": token, "csr_pem": profile::csr_pem(&key).unwrap() }),
            )
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        let reply = reply.json().unwrap();
        Holder {
            key,
            cert_pem: reply["certificate_pem"].as_str().unwrap().to_string(),
            reply,
        }
    }

    async fn certmgr(&self) -> Holder {
        let t = self.token(
            "n1.example",
            "certmgr",
            &["node", "container"],
            token::DEFAULT_TTL,
        );
        self.redeem(&t).await
    }

    fn admin(&self) -> Arc<CertifiedKey> {
        tls::certified_key_from_pem(
            &self.state.read("admin.pem").unwrap(),
            &self.state.read("admin.key").unwrap(),
        )
        .unwrap()
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.work.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }

    fn path(&self, name: &str) -> String {
        self.state.path(name).display().to_string()
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    fn count(&self, sql: &str) -> i64 {
        let conn = state::open(&self.state.database()).unwrap();
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }
}

fn error_code(reply: &Reply) -> String {
    reply.json().unwrap()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Runs a real client off the async threads (the server shares the runtime).
async fn run(cmd: &str, args: Vec<String>, cwd: &Path) -> std::process::Output {
    let (cmd, cwd) = (cmd.to_string(), cwd.to_path_buf());
    tokio::task::spawn_blocking(move || {
        Command::new(&cmd)
            .args(&args)
            .current_dir(cwd)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeem_renew_revoke_then_renew_is_refused() {
    let h = Harness::start().await;
    let holder = h.certmgr().await;
    let id = holder.peer();
    assert_eq!(
        (
            id.subsystem.as_str(),
            id.node.as_str(),
            id.agent_id.as_str()
        ),
        ("certmgr", "n1.example", "certmgr")
    );
    assert_eq!(
        id.capabilities,
        vec!["node".to_string(), "container".to_string()]
    );
    assert_eq!(holder.reply["serial"], id.serial);
    assert_eq!(holder.reply["ca_pem"], h.trust.ca_pem());

    // Renew over mTLS with a new key: same subject, new serial.
    let mut conn = h.connect(Some(holder.identity())).await;
    let new_key = KeyPair::generate().unwrap();
    let reply = conn
        .post_json(
            "/v1/renew",
            &json!({ "csr_pem": profile::csr_pem(&new_key).unwrap() }),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let renewed = Holder {
        key: new_key,
        cert_pem: reply.json().unwrap()["certificate_pem"]
            .as_str()
            .unwrap()
            .to_string(),
        reply: Value::Null,
    };
    let renewed_id = renewed.peer();
    assert_eq!(renewed_id.subject(), id.subject());
    assert_eq!(renewed_id.capabilities, id.capabilities);
    assert_ne!(renewed_id.serial, id.serial);

    // Revoke the original with the CLI, as the operator would, while the server runs.
    cli::run(cli::CaCommand::Revoke {
        state: h.state.dir.clone(),
        serial: id.serial.clone(),
        reason: tessera_ca::records::Reason::KeyCompromise,
    })
    .unwrap();

    // On the open connection, the server refuses the renewal from its records...
    let reply = conn
        .post_json(
            "/v1/renew",
            &json!({ "csr_pem": profile::csr_pem(&holder.key).unwrap() }),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(error_code(&reply), "revoked");
    assert!(reply.json().unwrap()["reason"]
        .as_str()
        .unwrap()
        .contains("key-compromise"));

    // ...and once it has picked up the new CRL, new connections fail in the TLS handshake.
    let config = tls::client_config(Some(holder.identity()), &h.trust).unwrap();
    let mut refused = false;
    for _ in 0..50 {
        let attempt = match Connection::connect(h.addr, "localhost", Some(config.clone())).await {
            // With TLS 1.3 the client learns of the refusal on its first read.
            Ok(mut c) => c.get("/v1/health").await.map(|_| ()),
            Err(e) => Err(e),
        };
        if attempt.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused,
        "the revoked certificate still passes the TLS handshake"
    );

    // The renewed certificate is unaffected.
    let reply = h
        .connect(Some(renewed.identity()))
        .await
        .post_json(
            "/v1/renew",
            &json!({ "csr_pem": profile::csr_pem(&renewed.key).unwrap() }),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());

    // Every step is in the audit log, and the chain holds.
    let conn = state::open(&h.state.database()).unwrap();
    let events: Vec<String> = audit::entries(&conn)
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    for e in [
        "token_issued",
        "token_redeemed",
        "certificate_issued",
        "certificate_renewed",
        "certificate_revoked",
    ] {
        assert!(
            events.contains(&e.to_string()),
            "{e} missing from {events:?}"
        );
    }
    audit::verify(&conn).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_verify_accepts_issued_certificates() {
    let h = Harness::start().await;
    let holder = h.certmgr().await;
    let cert = h.write("cert.pem", &holder.cert_pem);
    let out = run(
        "openssl",
        args(&[
            "verify",
            "-CAfile",
            &h.path("ca.pem"),
            "-purpose",
            "sslclient",
            cert.to_str().unwrap(),
        ]),
        &h.work,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": OK"));
    for (file, purpose) in [("server.pem", "sslserver"), ("admin.pem", "sslclient")] {
        let out = run(
            "openssl",
            args(&[
                "verify",
                "-CAfile",
                &h.path("ca.pem"),
                "-purpose",
                purpose,
                &h.path(file),
            ]),
            &h.work,
        )
        .await;
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_x509_text_shows_dn_and_capabilities_extension() {
    let h = Harness::start().await;
    let holder = h.certmgr().await;
    let cert = h.write("cert.pem", &holder.cert_pem);
    let out = run(
        "openssl",
        args(&["x509", "-noout", "-text", "-in", cert.to_str().unwrap()]),
        &h.work,
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("Subject: DC=prod, O=certmgr, OU=n1.example, UID=certmgr")
            || text.contains("Subject: DC = prod, O = certmgr, OU = n1.example, UID = certmgr"),
        "{text}"
    );
    assert!(text.contains("DNS:certmgr.n1.example"), "{text}");
    assert!(
        text.contains("TLS Web Client Authentication, TLS Web Server Authentication")
            || text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{text}"
    );
    assert!(text.contains("Digital Signature"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    // The capabilities extension, by OID, with the UTF8Strings inside.
    assert!(text.contains(profile::CAPABILITIES_OID), "{text}");
    let after_oid = &text[text.find(profile::CAPABILITIES_OID).unwrap()..];
    let value_line = after_oid.lines().nth(1).unwrap_or_default();
    assert!(
        value_line.contains("node") && value_line.contains("container"),
        "{text}"
    );
    // asn1parse shows the extension's value octets: SEQUENCE OF UTF8String, byte for byte.
    let out = run(
        "openssl",
        args(&["asn1parse", "-in", cert.to_str().unwrap()]),
        &h.work,
    )
    .await;
    let parsed = String::from_utf8_lossy(&out.stdout);
    let caps = hex::encode_upper(profile::encode_capabilities(&[
        "node".into(),
        "container".into(),
    ]));
    assert!(parsed.contains(&format!("[HEX DUMP]:{caps}")), "{parsed}");
    // The serial is the 128-bit one the API returned.
    let serial = holder.reply["serial"].as_str().unwrap();
    assert!(serial.len() >= 30, "{serial}");
    let out = run(
        "openssl",
        args(&["x509", "-noout", "-serial", "-in", cert.to_str().unwrap()]),
        &h.work,
    )
    .await;
    let shown = String::from_utf8_lossy(&out.stdout).trim().to_lowercase();
    assert!(
        shown
            .trim_start_matches("serial=")
            .trim_start_matches('0')
            .ends_with(serial.trim_start_matches('0')),
        "{shown} vs {serial}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_renews_with_client_certificate() {
    let h = Harness::start().await;
    let holder = h.certmgr().await;
    let cert = h.write("cert.pem", &holder.cert_pem);
    let key = h.write("key.pem", &holder.key.serialize_pem());
    let body = h.write(
        "body.json",
        &json!({ "csr_pem": profile::csr_pem(&holder.key).unwrap() }).to_string(),
    );
    let out = run(
        "curl",
        args(&[
            "-sS",
            "--cacert",
            &h.path("ca.pem"),
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "-H",
            "content-type: application/json",
            "--data-binary",
            &format!("@{}", body.display()),
            "-w",
            "\n%{http_code}",
            &h.url("/v1/renew"),
        ]),
        &h.work,
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, status) = text.rsplit_once('\n').unwrap();
    assert_eq!(status, "200", "{text}");
    let reply: Value = serde_json::from_str(body).unwrap();
    assert!(reply["certificate_pem"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    assert_ne!(reply["serial"], holder.reply["serial"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_verifies_the_ca_server() {
    let h = Harness::start().await;
    let out = run(
        "openssl",
        args(&[
            "s_client",
            "-connect",
            &format!("127.0.0.1:{}", h.addr.port()),
            "-CAfile",
            &h.path("ca.pem"),
            "-verify_return_error",
            "-verify_hostname",
            "localhost",
            "-servername",
            "localhost",
            "-brief",
        ]),
        &h.work,
    )
    .await;
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Verification: OK"), "{text}");
    // The IP SAN for QEMU guests is there as well.
    let out = run(
        "openssl",
        args(&[
            "x509",
            "-noout",
            "-ext",
            "subjectAltName",
            "-in",
            &h.path("server.pem"),
        ]),
        &h.work,
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("IP Address:10.0.2.2") && text.contains("DNS:localhost"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoint_refuses_clients_without_an_admin_certificate() {
    let h = Harness::start().await;
    let request = json!({ "node": "n2.example", "subsystem": "certmgr", "capabilities": ["node"], "ttl_s": 300 });
    // No certificate at all: 401 with the fix.
    let reply = h
        .connect(None)
        .await
        .post_json("/v1/admin/tokens", &request)
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(error_code(&reply), "client_certificate_required");
    assert!(reply.text().contains("admin.pem"), "{}", reply.text());
    // curl without a certificate gets the same.
    let out = run(
        "curl",
        args(&[
            "-sS",
            "--cacert",
            &h.path("ca.pem"),
            "--data-binary",
            &request.to_string(),
            "-w",
            "\n%{http_code}",
            &h.url("/v1/admin/tokens"),
        ]),
        &h.work,
    )
    .await;
    assert!(
        String::from_utf8_lossy(&out.stdout).ends_with("\n401"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // An agent certificate is not an admin certificate: 403.
    let agent = h.certmgr().await;
    let reply = h
        .connect(Some(agent.identity()))
        .await
        .post_json("/v1/admin/tokens", &request)
        .await
        .unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(error_code(&reply), "admin_required");
    // The operator's certificate works, and the token it gets is redeemable.
    let reply = h
        .connect(Some(h.admin()))
        .await
        .post_json("/v1/admin/tokens", &request)
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let token = reply.json().unwrap()["token"].as_str().unwrap().to_string();
    let holder = h.redeem(&token).await;
    assert_eq!(holder.peer().node, "n2.example");
    // Admin tokens cannot mint admin certificates.
    let reply = h
        .connect(Some(h.admin()))
        .await
        .post_json(
            "/v1/admin/tokens",
            &json!({ "node": "n2.example", "subsystem": "admin" }),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_bodies_are_refused_and_nothing_is_written() {
    let h = Harness::start().await;
    let certs_before = h.count("SELECT count(*) FROM certificates");
    let tokens_before = h.count("SELECT count(*) FROM tokens");
    let audit_before = h.count("SELECT count(*) FROM audit");
    let mut conn = h.connect(None).await;
    let key = KeyPair::generate().unwrap();
    let csr = profile::csr_pem(&key).unwrap();
    let token = h.token("n1.example", "node", &[], token::DEFAULT_TTL);
    let tokens_before = tokens_before + 1;
    let audit_before = audit_before + 1;

    // 100 KiB body with a Content-Length.
    let big = format!(
        "{{\"token\":\"{}\",\"csr_pem\":\"{}\"}}",
        token,
        "A".repeat(100 * 1024)
    );
    let reply = conn.post("/v1/redeem", big).await.unwrap();
    assert_eq!(
        (reply.status, error_code(&reply).as_str()),
        (413, "too_large")
    );

    // The same without a Content-Length (chunked), through curl.
    let big = h.write("big.json", &"x".repeat(200 * 1024));
    let out = run(
        "curl",
        args(&[
            "-sS",
            "--cacert",
            &h.path("ca.pem"),
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &format!("@{}", big.display()),
            "-w",
            "\n%{http_code}",
            &h.url("/v1/redeem"),
        ]),
        &h.work,
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.ends_with("\n413") && text.contains("too_large"),
        "{text}"
    );

    let mut conn = h.connect(None).await;
    let mut csr_bad = csr.clone();
    // Corrupt the signature bytes near the end of the base64.
    let at = csr_bad.rfind("-----END").unwrap() - 10;
    let c = if &csr_bad[at..at + 1] == "A" {
        "B"
    } else {
        "A"
    };
    csr_bad.replace_range(at..at + 1, c);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("garbage JSON", "{not json".into(), 400, "bad_request"),
        ("binary", "\u{0}\u{1}\u{2}".into(), 400, "bad_request"),
        ("array", "[1,2,3]".into(), 400, "bad_request"),
        ("unknown field", json!({"token": token, "csr_pem": csr, "admin": true}).to_string(), 400, "bad_request"),
        ("garbage token", json!({"token": "AAAA\n\u{7}", "csr_pem": csr}).to_string(), 400, "token_invalid"),
        ("unknown token", json!({"token": token::generate().unwrap(), "csr_pem": csr}).to_string(), 403, "token_unknown"),
        ("CSR garbage", json!({"token": token, "csr_pem": "-----BEGIN CERTIFICATE REQUEST-----\nZm9v\n-----END CERTIFICATE REQUEST-----\n"}).to_string(), 400, "csr_invalid"),
        ("CSR bad signature", json!({"token": token, "csr_pem": csr_bad}).to_string(), 400, "csr_signature"),
        ("node with newline", json!({"token": token, "csr_pem": csr, "node": "n1.example\nX: y"}).to_string(), 403, "token_binding"),
    ];
    for (what, body, status, code) in cases {
        let reply = conn.post("/v1/redeem", body).await.unwrap();
        assert_eq!(
            (reply.status, error_code(&reply)),
            (status, code.to_string()),
            "{what}: {}",
            reply.text()
        );
        assert!(
            reply.json().unwrap()["reason"].as_str().unwrap().len() > 20,
            "{what}: reason explains"
        );
    }
    // Hostile names in an admin token request.
    let mut admin = h.connect(Some(h.admin())).await;
    for body in [
        json!({"node": "n1.example\r\n", "subsystem": "node"}),
        json!({"node": "n1.example", "subsystem": "no de"}),
        json!({"node": "n1.example", "subsystem": "node", "capabilities": ["hub\u{0}"]}),
        json!({"node": "n1.example", "subsystem": "node", "agent_id": "../x"}),
        json!({"node": &"a.".repeat(200), "subsystem": "node"}),
    ] {
        let reply = admin.post_json("/v1/admin/tokens", &body).await.unwrap();
        assert_eq!(
            (reply.status, error_code(&reply).as_str()),
            (400, "invalid_name"),
            "{body}: {}",
            reply.text()
        );
    }
    let reply = admin
        .post_json(
            "/v1/admin/tokens",
            &json!({"node": "n1.example", "subsystem": "node", "ttl_s": 0}),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 400, "{}", reply.text());
    // Unknown paths and methods.
    assert_eq!(conn.get("/v1/nope").await.unwrap().status, 404);
    assert_eq!(conn.get("/v1/redeem").await.unwrap().status, 405);

    // Nothing was written: no certificate, no token, no audit entry (the binding refusal
    // of a real token is audited; it spent nothing).
    assert_eq!(h.count("SELECT count(*) FROM certificates"), certs_before);
    assert_eq!(h.count("SELECT count(*) FROM tokens"), tokens_before);
    assert_eq!(
        h.count("SELECT count(*) FROM tokens WHERE used_at IS NOT NULL"),
        0
    );
    assert_eq!(
        h.count("SELECT count(*) FROM audit WHERE event != 'token_refused'"),
        audit_before
    );
    // And the server keeps serving: the token still works.
    let holder = h.redeem(&token).await;
    assert_eq!(holder.peer().subsystem, "node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redemptions_over_https_exactly_one_wins() {
    let h = Arc::new(Harness::start().await);
    let token = h.token("n1.example", "certmgr", &[], token::DEFAULT_TTL);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (h, token) = (h.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let key = KeyPair::generate().unwrap();
            let body = json!({ "token": token, "csr_pem": profile::csr_pem(&key).unwrap() });
            h.connect(None)
                .await
                .post_json("/v1/redeem", &body)
                .await
                .unwrap()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        let reply = t.await.unwrap();
        if reply.status != 200 {
            assert_eq!(error_code(&reply), "token_used", "{}", reply.text());
        }
        statuses.push(reply.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 31);
    assert_eq!(
        h.count("SELECT count(*) FROM certificates WHERE kind='redeem'"),
        1
    );
    assert_eq!(
        h.count("SELECT count(*) FROM audit WHERE event='token_refused'"),
        31
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_expired_and_misbound_tokens_are_refused_with_reasons() {
    let h = Harness::start().await;
    let token = h.token("n1.example", "certmgr", &[], token::DEFAULT_TTL);
    let _ = h.redeem(&token).await;
    let key = KeyPair::generate().unwrap();
    let csr = profile::csr_pem(&key).unwrap();
    let mut conn = h.connect(None).await;

    let replay = conn
        .post_json("/v1/redeem", &json!({ "token": token, "csr_pem": csr }))
        .await
        .unwrap();
    assert_eq!(
        (replay.status, error_code(&replay).as_str()),
        (409, "token_used")
    );
    let reason = replay.json().unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains("token already used")
            && reason.contains("tessera ca token --node n1.example --subsystem certmgr"),
        "{reason}"
    );

    let short = h.token("n1.example", "node", &[], Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = conn
        .post_json("/v1/redeem", &json!({ "token": short, "csr_pem": csr }))
        .await
        .unwrap();
    assert_eq!(
        (expired.status, error_code(&expired).as_str()),
        (410, "token_expired")
    );

    let other = h.token("n1.example", "hub", &[], token::DEFAULT_TTL);
    let wrong = conn
        .post_json(
            "/v1/redeem",
            &json!({ "token": other, "csr_pem": csr, "node": "n9.example" }),
        )
        .await
        .unwrap();
    assert_eq!(
        (wrong.status, error_code(&wrong).as_str()),
        (403, "token_binding")
    );
    // Not spent: the right node redeems it.
    let right = conn
        .post_json(
            "/v1/redeem",
            &json!({ "token": other, "csr_pem": csr, "node": "n1.example", "subsystem": "hub" }),
        )
        .await
        .unwrap();
    assert_eq!(right.status, 200, "{}", right.text());

    let conn_db = state::open(&h.state.database()).unwrap();
    let reasons: Vec<String> = audit::entries(&conn_db)
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "token_refused")
        .map(|e| {
            serde_json::from_str::<Value>(&e.details).unwrap()["reason"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        reasons,
        vec!["token_used", "token_expired", "token_binding"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegated_issue_requires_the_capability() {
    let h = Harness::start().await;
    let certmgr = h.certmgr().await; // capabilities: node, container
    let mut conn = h.connect(Some(certmgr.identity())).await;
    let key = KeyPair::generate().unwrap();
    let csr = profile::csr_pem(&key).unwrap();
    let ok = conn
        .post_json(
            "/v1/issue",
            &json!({
                "csr_pem": csr, "subsystem": "container", "agent_id": "c-42",
                "uris": ["https://c-42.n1.example:9443/v1"]
            }),
        )
        .await
        .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    let child = Holder {
        key,
        cert_pem: ok.json().unwrap()["certificate_pem"]
            .as_str()
            .unwrap()
            .into(),
        reply: Value::Null,
    };
    let id = child.peer();
    assert_eq!(
        (
            id.subsystem.as_str(),
            id.node.as_str(),
            id.agent_id.as_str()
        ),
        ("container", "n1.example", "c-42")
    );
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(child.cert_pem.as_bytes())
        .map(|d: rustls::pki_types::CertificateDer<'static>| d)
        .unwrap();
    assert_eq!(
        profile::uri_sans(&der).unwrap(),
        vec!["https://c-42.n1.example:9443/v1".to_string()]
    );

    for (body, code) in [
        (
            json!({"csr_pem": csr, "subsystem": "hub", "agent_id": "hub"}),
            "capability_missing",
        ),
        (
            json!({"csr_pem": csr, "subsystem": "node", "agent_id": "node", "capabilities": ["hub"]}),
            "capability_missing",
        ),
        (
            json!({"csr_pem": csr, "subsystem": "node", "agent_id": "node", "uris": ["https://other.n1.example:1"]}),
            "invalid_name",
        ),
        (
            json!({"csr_pem": csr, "subsystem": "admin", "agent_id": "x"}),
            "invalid_name",
        ),
    ] {
        let reply = conn.post_json("/v1/issue", &body).await.unwrap();
        assert_eq!(error_code(&reply), code, "{body}: {}", reply.text());
    }
    // The child, holding no capabilities, cannot delegate.
    let reply = h
        .connect(Some(child.identity()))
        .await
        .post_json(
            "/v1/issue",
            &json!({"csr_pem": csr, "subsystem": "container", "agent_id": "c-43"}),
        )
        .await
        .unwrap();
    assert_eq!(error_code(&reply), "capability_missing");
    // Without a certificate: 401.
    let reply = h
        .connect(None)
        .await
        .post_json(
            "/v1/issue",
            &json!({"csr_pem": csr, "subsystem": "node", "agent_id": "n"}),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_contact_pins_the_ca_by_fingerprint() {
    let h = Harness::start().await;
    let fp = h.trust.fingerprint();
    let pinned = tls::pinned_client_config(&fp, None).unwrap();
    let mut conn = Connection::connect(h.addr, "127.0.0.1", Some(pinned))
        .await
        .unwrap();
    let reply = conn.get("/v1/ca.pem").await.unwrap();
    assert_eq!(reply.status, 200);
    let trust = CaTrust::from_pem_pinned(&reply.text(), &fp).unwrap();
    assert_eq!(trust.fingerprint(), fp);
    // Another fingerprint: the handshake fails.
    let other = tls::pinned_client_config(&format!("sha256:{}", "00".repeat(32)), None).unwrap();
    assert!(Connection::connect(h.addr, "127.0.0.1", Some(other))
        .await
        .is_err());
    // The CRL the CA serves is signed by it and accepted by the trust store.
    let crl = conn.get("/v1/crl.pem").await.unwrap();
    assert!(crl.text().starts_with("-----BEGIN X509 CRL-----"));
    trust.with_crl_pem(&crl.text()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crl_lists_revoked_serials_for_openssl() {
    let h = Harness::start().await;
    let holder = h.certmgr().await;
    let serial = holder.peer().serial;
    cli::run(cli::CaCommand::Revoke {
        state: h.state.dir.clone(),
        serial: serial.to_uppercase(),
        reason: tessera_ca::records::Reason::Superseded,
    })
    .unwrap();
    // The server serves the new CRL within its poll interval.
    let mut conn = h.connect(None).await;
    let mut text = String::new();
    for _ in 0..50 {
        text = conn.get("/v1/crl.pem").await.unwrap().text();
        let file = h.write("crl.pem", &text);
        let out = run(
            "openssl",
            args(&[
                "crl",
                "-noout",
                "-text",
                "-CAfile",
                &h.path("ca.pem"),
                "-in",
                file.to_str().unwrap(),
            ]),
            &h.work,
        )
        .await;
        let shown = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if shown.to_lowercase().replace(':', "").contains(&serial) {
            assert!(shown.contains("verify OK"), "{shown}");
            assert!(shown.contains("Superseded"), "{shown}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("serial {serial} never appeared in the served CRL:\n{text}");
}
