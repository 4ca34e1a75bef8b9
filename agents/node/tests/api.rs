//! The node API over real TLS on loopback: a CA made in this process (the Tessera profile,
//! signed through `CaIssuer` as the cluster CA signs), the server configuration every agent
//! uses (client certificates required), and clients with an operator certificate, a
//! read-only cluster certificate, and none. `/metrics` is parsed by the `prometheus-parse`
//! crate. PID 1 is absent here: the API says so in its status and keeps serving.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::sign::CertifiedKey;
use serde_json::Value;
use tessera_identity::profile::{random_serial, CaIssuer, Leaf, Subject};
use tessera_identity::tls::{self, certified_key_from_pem, pem_encode, CaTrust, ClientAuth};
use tessera_node::api::client::{self, Target};
use tessera_node::api::node::Node;
use tessera_node::api::server;
use tessera_node::metrics::Sources;

struct TestCa {
    issuer: CaIssuer<KeyPair>,
}

impl TestCa {
    fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name
            .push(DnType::CommonName, "prod test CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).unwrap();
        TestCa {
            issuer: CaIssuer::new(cert.der().clone(), key).unwrap(),
        }
    }

    fn trust(&self) -> CaTrust {
        CaTrust::new(self.issuer.cert_der().clone()).unwrap()
    }

    fn issue(&self, subsystem: &str, agent_id: &str, caps: &[&str]) -> Arc<CertifiedKey> {
        let key = KeyPair::generate().unwrap();
        let now = SystemTime::now();
        let leaf = Leaf {
            subject: Subject::new("prod", subsystem, "n1.example", agent_id).unwrap(),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            uris: vec![],
            not_before: now - Duration::from_secs(60),
            not_after: now + Duration::from_secs(3600),
            serial: random_serial().unwrap(),
        };
        let der = self.issuer.sign(&leaf, &key).unwrap();
        let chain =
            pem_encode("CERTIFICATE", &der) + &pem_encode("CERTIFICATE", self.issuer.cert_der());
        certified_key_from_pem(&chain, &key.serialize_pem()).unwrap()
    }
}

struct Api {
    ca: TestCa,
    addr: String,
    rt: tokio::runtime::Runtime,
}

impl Api {
    fn start() -> Api {
        let ca = TestCa::new();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let tls = tls::server_config(
            ca.issue("node", "node", &[]),
            &ca.trust(),
            ClientAuth::Required,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let node = Arc::new(Node::new(
            dir.path().join("no-pid1.sock"),
            Sources::default(),
        ));
        node.apply(tessera_node::lifecycle::Event::AgentReady)
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        rt.spawn(server::serve(
            node,
            listener,
            move || tls.clone(),
            std::future::pending(),
        ));
        Api { ca, addr, rt }
    }

    fn target(&self, identity: Option<Arc<CertifiedKey>>) -> Target {
        Target {
            addr: self.addr.clone(),
            server_name: "node.n1.example".into(),
            tls: tls::client_config(identity, &self.ca.trust()).unwrap(),
        }
    }

    fn call(
        &self,
        identity: Option<Arc<CertifiedKey>>,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> anyhow::Result<(u16, String)> {
        let target = self.target(identity);
        let mut out = Vec::new();
        let status = self.rt.block_on(client::request(
            &target,
            method,
            path,
            body.map(str::to_string),
            &mut out,
        ))?;
        Ok((status, String::from_utf8(out).unwrap()))
    }

    fn operator(&self) -> Arc<CertifiedKey> {
        self.ca.issue("admin", "operator", &[])
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn an_operator_reads_the_status_and_the_life_cycle() {
    let api = Api::start();
    let (code, body) = api
        .call(Some(api.operator()), "GET", "/v1/status", None)
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["lifecycle"]["state"], "available", "{body}");
    assert_eq!(v["lifecycle"]["reason"], "node agent ready", "{body}");
    assert!(
        v["pid1_error"]
            .as_str()
            .unwrap()
            .contains("cannot reach PID 1"),
        "{body}"
    );
}

#[test]
fn mark_unavailable_and_available_change_the_status_with_the_reason() {
    let api = Api::start();
    let op = api.operator();
    let (code, body) = api
        .call(
            Some(op.clone()),
            "POST",
            "/v1/lifecycle",
            Some(r#"{"state":"unavailable","reason":"kernel upgrade"}"#),
        )
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let (_, body) = api
        .call(Some(op.clone()), "GET", "/v1/status", None)
        .unwrap();
    let v = json(&body);
    assert_eq!(v["lifecycle"]["state"], "unavailable");
    assert_eq!(
        v["lifecycle"]["reason"],
        "marked unavailable by operator operator: kernel upgrade"
    );
    // Without a reason the mark is refused, and says how to give one.
    let (code, body) = api
        .call(
            Some(op.clone()),
            "POST",
            "/v1/lifecycle",
            Some(r#"{"state":"unavailable"}"#),
        )
        .unwrap();
    assert_eq!(code, 409, "{body}");
    assert!(
        json(&body)["reason"]
            .as_str()
            .unwrap()
            .contains("reason is required"),
        "{body}"
    );
    let (code, body) = api
        .call(
            Some(op.clone()),
            "POST",
            "/v1/lifecycle",
            Some(r#"{"state":"available"}"#),
        )
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["lifecycle"]["state"], "available");
}

#[test]
fn a_cluster_certificate_without_the_node_capability_may_read_but_not_change() {
    let api = Api::start();
    let hub = api.ca.issue("hub", "hub", &[]);
    let (code, _) = api
        .call(Some(hub.clone()), "GET", "/v1/status", None)
        .unwrap();
    assert_eq!(code, 200);
    let (code, body) = api
        .call(
            Some(hub),
            "POST",
            "/v1/lifecycle",
            Some(r#"{"state":"unavailable","reason":"x"}"#),
        )
        .unwrap();
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("admin-cert"), "{body}");
    // A holder of the `node` capability may.
    let certmgr = api.ca.issue("certmgr", "certmgr", &["node"]);
    let (code, body) = api
        .call(
            Some(certmgr),
            "POST",
            "/v1/lifecycle",
            Some(r#"{"state":"unavailable","reason":"drain"}"#),
        )
        .unwrap();
    assert_eq!(code, 200, "{body}");
}

#[test]
fn a_client_without_a_certificate_is_refused_in_the_handshake() {
    let api = Api::start();
    let err = api.call(None, "GET", "/v1/status", None);
    assert!(err.is_err(), "{err:?}");
    // A certificate of another CA is refused as well.
    let other = TestCa::new().issue("admin", "operator", &[]);
    assert!(api.call(Some(other), "GET", "/v1/status", None).is_err());
}

#[test]
fn metrics_parse_with_a_third_party_prometheus_parser() {
    let api = Api::start();
    let (code, body) = api
        .call(Some(api.operator()), "GET", "/metrics", None)
        .unwrap();
    assert_eq!(code, 200);
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the exposition parses");
    let names: std::collections::BTreeSet<&str> =
        scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for name in [
        "node_cpu_seconds_total",
        "node_memory_MemAvailable_bytes",
        "node_load1",
        "node_network_receive_bytes_total",
        "tessera_node_state",
        "tessera_node_agent_cpu_seconds_total",
    ] {
        assert!(names.contains(name), "{name} missing; got {names:?}");
    }
    let state = scrape
        .samples
        .iter()
        .find(|s| s.metric == "tessera_node_state" && s.labels.get("state") == Some("available"))
        .unwrap();
    assert!(
        matches!(state.value, prometheus_parse::Value::Gauge(v) if v == 1.0),
        "{state:?}"
    );
    let cpu = scrape
        .samples
        .iter()
        .find(|s| s.metric == "node_cpu_seconds_total")
        .unwrap();
    assert!(cpu.labels.get("cpu").is_some() && cpu.labels.get("mode").is_some());
}

#[test]
fn volumes_and_firewall_without_their_services_answer_503_with_a_reason() {
    let api = Api::start();
    // No storage service on this host: 503 saying which service to look at.
    let (code, body) = api
        .call(Some(api.operator()), "GET", "/v1/volumes", None)
        .unwrap();
    assert_eq!(code, 503, "{body}");
    assert_eq!(json(&body)["error"], "no_storage");
    assert!(body.contains("is the storage service running"), "{body}");
    let (code, body) = api
        .call(Some(api.operator()), "POST", "/v1/volumes", Some("[1]"))
        .unwrap();
    assert_eq!(code, 400, "{body}");
    // Deleting is a change: a certificate without the node capability may not.
    let hub = api.ca.issue("hub", "hub", &[]);
    let (code, body) = api
        .call(Some(hub.clone()), "DELETE", "/v1/volumes/data", None)
        .unwrap();
    assert_eq!(code, 403, "{body}");
    let (code, body) = api
        .call(Some(api.operator()), "GET", "/v1/firewall", None)
        .unwrap();
    assert_eq!(code, 503, "{body}");
    assert_eq!(json(&body)["error"], "no_firewall");
    assert!(body.contains("is the firewall service running"), "{body}");
    let (code, body) = api
        .call(
            Some(hub),
            "POST",
            "/v1/firewall/exposures",
            Some(r#"{"port":8080,"scope":"cluster"}"#),
        )
        .unwrap();
    assert_eq!(code, 403, "{body}");
    let (code, _) = api
        .call(Some(api.operator()), "GET", "/v2/nothing", None)
        .unwrap();
    assert_eq!(code, 404);
}
