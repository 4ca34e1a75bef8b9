//! The IMDSv2 source against a local server that speaks the protocol (tests/common).

mod common;

use common::{free_port, garbage_server, Imds};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tessera_userdata::events::Events;
use tessera_userdata::http::{self, HttpUrl};
use tessera_userdata::imds::ImdsSource;
use tessera_userdata::retry::RetryPolicy;
use tessera_userdata::{Source, SourceError};

const DOC: &[u8] = b"version = 1\n[node]\nhostname = \"i-0abc.example\"\ncluster = \"cloud\"\n";

fn policy(budget_ms: u64) -> RetryPolicy {
    RetryPolicy {
        budget: Duration::from_millis(budget_ms),
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
        connect_timeout: Duration::from_millis(500),
        io_timeout: Duration::from_millis(500),
    }
}

fn source(url: &str, budget_ms: u64) -> ImdsSource {
    ImdsSource {
        endpoint: HttpUrl::parse(url).unwrap(),
        retry: policy(budget_ms),
        token_ttl_seconds: 300,
    }
}

fn limits() -> http::Limits {
    http::Limits {
        connect_timeout: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
        max_body: 4096,
    }
}

#[test]
fn the_test_server_is_faithful_to_imdsv2() {
    let imds = Imds::start(Some(DOC));
    let base = HttpUrl::parse(&imds.url()).unwrap();
    let data = base.with_path("/latest/user-data");
    let token = base.with_path("/latest/api/token");
    // No token: 401. A made-up token: 401.
    assert_eq!(
        http::request("GET", &data, &[], limits()).unwrap().status,
        401
    );
    let fake = [("X-aws-ec2-metadata-token", "forged")];
    assert_eq!(
        http::request("GET", &data, &fake, limits()).unwrap().status,
        401
    );
    // The TTL header is required and bounded; GET on the token path is not allowed.
    assert_eq!(
        http::request("PUT", &token, &[], limits()).unwrap().status,
        400
    );
    let too_long = [("X-aws-ec2-metadata-token-ttl-seconds", "21601")];
    assert_eq!(
        http::request("PUT", &token, &too_long, limits())
            .unwrap()
            .status,
        400
    );
    assert_eq!(
        http::request("GET", &token, &[], limits()).unwrap().status,
        405
    );
    let forwarded = [
        ("X-aws-ec2-metadata-token-ttl-seconds", "60"),
        ("X-Forwarded-For", "1.2.3.4"),
    ];
    assert_eq!(
        http::request("PUT", &token, &forwarded, limits())
            .unwrap()
            .status,
        403
    );
    // The real exchange.
    let ttl = [("X-aws-ec2-metadata-token-ttl-seconds", "60")];
    let t = http::request("PUT", &token, &ttl, limits()).unwrap();
    assert_eq!(t.status, 200);
    let t = String::from_utf8(t.body).unwrap();
    let r = http::request("GET", &data, &[("X-aws-ec2-metadata-token", &t)], limits()).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, DOC));
    // No user-data: 404, even with a good token.
    *imds.state.user_data.lock().unwrap() = None;
    let r = http::request("GET", &data, &[("X-aws-ec2-metadata-token", &t)], limits()).unwrap();
    assert_eq!(r.status, 404);
}

#[test]
fn user_data_is_fetched_with_a_session_token() {
    let imds = Imds::start(Some(DOC));
    let (events, _) = Events::capture();
    let fetched = source(&imds.url(), 2000).fetch(&events).unwrap().unwrap();
    assert_eq!(
        fetched.config.node.hostname.as_deref(),
        Some("i-0abc.example")
    );
    assert_eq!(fetched.config.node.cluster, "cloud");
    assert_eq!(fetched.detail, format!("{}/latest/user-data", imds.url()));
    let seen = imds.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("PUT", "/latest/api/token")
    );
    assert_eq!(
        seen[0].header("X-aws-ec2-metadata-token-ttl-seconds"),
        Some("300")
    );
    assert_eq!((seen[1].method.as_str(), seen[1].status), ("GET", 200));
    assert!(seen[1]
        .header("X-aws-ec2-metadata-token")
        .is_some_and(|t| t.starts_with("AQAEA")));
}

#[test]
fn no_user_data_is_no_config() {
    let imds = Imds::start(None);
    let (events, _) = Events::capture();
    assert_eq!(source(&imds.url(), 2000).fetch(&events), Ok(None));
    // An empty document is no configuration either.
    *imds.state.user_data.lock().unwrap() = Some(b"\n".to_vec());
    assert_eq!(source(&imds.url(), 2000).fetch(&events), Ok(None));
}

#[test]
fn a_server_that_comes_up_late_is_waited_for_with_backoff() {
    let imds = Imds::start_late(Some(DOC), Duration::from_millis(700));
    let (events, captured) = Events::capture();
    let start = Instant::now();
    let fetched = source(&imds.url(), 5000).fetch(&events).unwrap().unwrap();
    assert!(start.elapsed() >= Duration::from_millis(600));
    assert_eq!(
        fetched.config.node.hostname.as_deref(),
        Some("i-0abc.example")
    );
    let retries: Vec<_> = captured
        .events()
        .into_iter()
        .filter(|e| e["msg"] == "metadata service did not answer; retrying")
        .collect();
    assert!(retries.len() >= 2, "{retries:?}");
    assert!(retries[0]["reason"]
        .as_str()
        .unwrap()
        .contains("cannot connect"));
    // The delays grow (doubling with jitter: each within [d/2, d]).
    let delays: Vec<u64> = retries
        .iter()
        .map(|e| e["delay_ms"].as_u64().unwrap())
        .collect();
    assert!(
        delays[0] <= 50 && delays.last().unwrap() >= &50,
        "{delays:?}"
    );
}

#[test]
fn busy_service_is_retried() {
    let imds = Imds::start(Some(DOC));
    imds.state.fail_first.store(3, Ordering::SeqCst);
    let (events, _) = Events::capture();
    let fetched = source(&imds.url(), 5000).fetch(&events).unwrap();
    assert!(fetched.is_some());
    assert_eq!(imds.seen().iter().filter(|s| s.status == 503).count(), 3);
}

#[test]
fn a_refused_token_is_replaced() {
    let imds = Imds::start(Some(DOC));
    imds.state.revoke_tokens_once.store(true, Ordering::SeqCst);
    let (events, _) = Events::capture();
    assert!(source(&imds.url(), 5000).fetch(&events).unwrap().is_some());
    let statuses: Vec<(String, u16)> = imds
        .seen()
        .into_iter()
        .map(|s| (s.method, s.status))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("PUT".to_string(), 200),
            ("GET".to_string(), 401),
            ("PUT".to_string(), 200),
            ("GET".to_string(), 200)
        ]
    );
}

#[test]
fn garbage_is_no_answer_within_the_budget() {
    let port = garbage_server(b"\x00\x01garbage that is not HTTP\r\n\r\n");
    let (events, _) = Events::capture();
    let start = Instant::now();
    let e = source(&format!("http://127.0.0.1:{port}"), 800)
        .fetch(&events)
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    match e {
        SourceError::NoAnswer(reason) => {
            assert!(reason.contains("not an HTTP response"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn nobody_listening_is_no_answer_within_the_budget() {
    let port = free_port();
    let (events, _) = Events::capture();
    let start = Instant::now();
    let e = source(&format!("http://127.0.0.1:{port}"), 600)
        .fetch(&events)
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(
        matches!(e, SourceError::NoAnswer(ref r) if r.contains("cannot connect")),
        "{e}"
    );
}

#[test]
fn something_that_is_not_imdsv2_has_no_config() {
    // Any web server: PUT on the token path is 404/405.
    let port = common::file_server("/index.html", b"hello".to_vec());
    let (events, captured) = Events::capture();
    assert_eq!(
        source(&format!("http://127.0.0.1:{port}"), 2000).fetch(&events),
        Ok(None)
    );
    assert!(captured.text().contains("not an IMDSv2 service"));
}

#[test]
fn invalid_user_data_names_the_document_and_the_key() {
    let imds = Imds::start(Some(
        b"version = 1\n[ca]\nurl = \"https://ca:8443\"\nfingerprint = \"sha256:abc\"\ntoken = \"t\"\n",
    ));
    let (events, _) = Events::capture();
    match source(&imds.url(), 2000).fetch(&events).unwrap_err() {
        SourceError::Invalid { document, error } => {
            assert_eq!(
                document,
                format!("user-data at {}/latest/user-data", imds.url())
            );
            assert_eq!(error.key, "ca.fingerprint");
            assert_eq!(error.line, Some((4, 15)));
        }
        other => panic!("{other:?}"),
    }
}
