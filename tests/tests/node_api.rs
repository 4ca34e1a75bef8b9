//! End-to-end: the node API in QEMU. The node boots with a one-time token from a CA on the
//! host, the `node` service gets its certificate from certmgr (O=node, UID=node), and the host
//! talks to it through a forwarded port with `curl` and an operator certificate of that CA
//! (`tessera ca init` writes admin.pem/admin.key): status, /metrics (parsed by the
//! `prometheus-parse` crate), mark-unavailable, and a client without a certificate refused.

use std::time::{Duration, Instant};

use tessera_e2e::ca::HostCa;
use tessera_e2e::curl::Curl;
use tessera_e2e::*;
use tessera_qemu::BootMode;

const NODE: &str = "node1.example";
const NAME: &str = "node.node1.example";

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Polls the API until it answers (the node agent comes up after certmgr).
fn first_answer(curl: &Curl, vm: &tessera_qemu::Vm) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = curl.run(true, &[], "/v1/status");
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the node API never answered: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            sh(vm, "tessera status; tessera logs node")
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Certificates that live 90 s: the node agent renews its own through certmgr (a holder may
/// ask for its successor) and the API keeps answering after the first certificate expired.
#[test]
fn the_node_api_renews_its_certificate_before_it_expires() {
    let mut ca = HostCa::init("node-api-renew");
    ca.lifetime = Some("90s".into());
    ca.serve();
    let token = ca.token(NODE);
    let args = ca.kernel_args(&token, NODE);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let port = free_port();
    let vm = boot_with_forwards("node-api-renew", &refs, &[(port, 7443)]);
    wait_ready(&vm, BootMode::Kernel);
    let curl = Curl {
        port,
        state: ca.state.clone(),
        name: NAME.into(),
    };
    first_answer(&curl, &vm);
    let first = sh(&vm, "tessera logs node | grep 'node identity obtained'");
    let renewed = sh_until(
        &vm,
        "tessera logs node | grep 'node identity renew'; true",
        Duration::from_secs(240),
        |out| out.contains("node identity renewed"),
    );
    let serial = |line: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("serial="))
            .map(|s| s.trim_matches('"').to_string())
            .unwrap_or_else(|| panic!("no serial= in {line:?}"))
    };
    let renewed_line = renewed
        .lines()
        .find(|l| l.contains("node identity renewed"))
        .expect("the renewal event");
    assert_ne!(serial(&first), serial(renewed_line), "{first}\n{renewed}");
    // The CA issued the successor as a node certificate of this node.
    let list = ca.list();
    assert!(
        list.contains(&serial(renewed_line)),
        "the CA's ledger lacks the renewed certificate:\n{list}"
    );
    // Past the first certificate's end, a new connection still verifies: it is shown the new one.
    std::thread::sleep(Duration::from_secs(95));
    let out = curl.run(true, &[], "/v1/status");
    assert!(
        out.status.success(),
        "after the first certificate expired: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        sh(
            &vm,
            "tessera logs node | tail -n 20; tessera logs certmgr | tail -n 20"
        )
    );
    let status = String::from_utf8_lossy(&out.stdout);
    assert_eq!(json(&status)["lifecycle"]["state"], "available", "{status}");
}

#[test]
fn the_node_api_serves_status_metrics_and_lifecycle_to_an_operator_over_mtls() {
    let ca = HostCa::start("node-api");
    let token = ca.token(NODE);
    let args = ca.kernel_args(&token, NODE);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let port = free_port();
    let vm = boot_with_forwards("node-api", &refs, &[(port, 7443)]);
    wait_ready(&vm, BootMode::Kernel);
    // While the firewall is in the image, the API's port has to be exposed to reach it.
    sh(&vm, "[ -S /run/tessera/firewall.sock ] && tessera firewall expose 7443/tcp --scope public --owner node; true");
    let curl = Curl {
        port,
        state: ca.state.clone(),
        name: NAME.into(),
    };

    let status = first_answer(&curl, &vm);
    let v = json(&status);
    assert_eq!(v["lifecycle"]["state"], "available", "{status}");
    assert_eq!(v["node"]["hostname"], NODE, "{status}");
    let services = v["services"].as_array().expect("services");
    assert!(
        services
            .iter()
            .any(|s| s["name"] == "node" && s["state"] == "ready"),
        "{status}"
    );

    // /metrics, parsed by a Prometheus text parser nobody here wrote.
    let text = curl.ok(&[], "/metrics");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("/metrics does not parse ({e}):\n{text}"));
    let has = |m: &str| scrape.samples.iter().any(|s| s.metric == m);
    for m in [
        "node_cpu_seconds_total",
        "node_memory_MemAvailable_bytes",
        "node_load1",
        "node_network_receive_bytes_total",
        "tessera_service_memory_bytes",
        "tessera_service_up",
    ] {
        assert!(has(m), "{m} missing from /metrics:\n{text}");
    }
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "tessera_service_memory_bytes"
                && s.labels.get("service") == Some("certmgr")),
        "no cgroup memory for certmgr:\n{text}"
    );

    // /v1/volumes reaches the storage service: this node's user-data has no [storage], so
    // 503 with the service's reason.
    let out = curl.run(true, &["-w", "\n%{http_code}"], "/v1/volumes");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.trim_end().ends_with("503"), "{text}");
    assert!(
        text.contains("\"no_storage\"") && text.contains("user-data has no [storage]"),
        "{text}"
    );

    // The firewall over the API: the image's fixed exposure is listed; an exposure added
    // through POST is in force on the node (nft's own view), and DELETE removes it.
    let fw = json(&curl.ok(&[], "/v1/firewall"));
    assert!(
        fw["exposures"]
            .as_array()
            .is_some_and(|e| e.iter().any(|x| x["port"] == 7443)),
        "{fw}"
    );
    let exposed = curl.ok(
        &[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"port":8080,"protocol":"tcp","scope":"cluster","owner":"e2e"}"#,
        ],
        "/v1/firewall/exposures",
    );
    assert!(exposed.contains("8080"), "{exposed}");
    let table = sh(&vm, "nft list table inet tessera");
    assert!(table.contains("8080"), "{table}");
    let bad = curl.run(
        true,
        &[
            "-w",
            "\n%{http_code}",
            "-X",
            "POST",
            "-d",
            r#"{"port":99999,"scope":"cluster"}"#,
        ],
        "/v1/firewall/exposures",
    );
    let bad = String::from_utf8_lossy(&bad.stdout).into_owned();
    assert!(
        bad.trim_end().ends_with("400") && bad.contains("port"),
        "{bad}"
    );
    let removed = curl.ok(&["-X", "DELETE"], "/v1/firewall/exposures/tcp/8080");
    assert!(removed.contains("\"removed\":true"), "{removed}");
    assert!(!sh(&vm, "nft list table inet tessera").contains("8080"));

    // mark-unavailable through the API changes the status, with the reason.
    let marked = curl.ok(
        &[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"state":"unavailable","reason":"e2e maintenance"}"#,
        ],
        "/v1/lifecycle",
    );
    assert_eq!(
        json(&marked)["lifecycle"]["state"],
        "unavailable",
        "{marked}"
    );
    let v = json(&curl.ok(&[], "/v1/status"));
    assert_eq!(v["lifecycle"]["state"], "unavailable");
    assert_eq!(
        v["lifecycle"]["reason"],
        "marked unavailable by operator admin: e2e maintenance"
    );

    // A client without a certificate gets no answer.
    let out = curl.run(false, &[], "/v1/status");
    assert!(
        !out.status.success(),
        "a client without a certificate was served: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A node token narrower than the image (`--capabilities node`): certmgr refuses the hub's
/// identity, which no retry can cure, so PID 1 gives the hub up at once instead of restarting
/// it forever; the node settles (`failed=1` on TESSERA-READY) and says why in `tessera status`
/// and in the node API.
#[test]
fn a_refused_identity_is_given_up_at_once_and_reported_with_its_reason() {
    let ca = HostCa::start("node-api-narrow");
    let token = ca.run(&[
        "token",
        "--node",
        NODE,
        "--subsystem",
        "certmgr",
        "--capabilities",
        "node",
    ]);
    let args = ca.kernel_args(&token, NODE);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let port = free_port();
    let vm = boot_with_forwards("node-api-narrow", &refs, &[(port, 7443)]);
    let ready = wait_ready(&vm, BootMode::Kernel);
    assert!(ready.contains(" failed=1"), "{ready}");

    let st = sh(&vm, "tessera status");
    let row = status_row(&st, "hub");
    assert_eq!(row[2], "failed", "{st}");
    assert!(
        st.contains("capability_missing") && st.contains("retrying cannot cure this"),
        "{st}"
    );
    // Given up, not retried: PID 1 logged no restart of the hub.
    let restarts = sh(
        &vm,
        "tessera logs init | grep -c 'restarting service service=hub '; true",
    );
    assert_eq!(restarts.trim(), "0", "the hub was restarted:\n{restarts}");

    let curl = Curl {
        port,
        state: ca.state.clone(),
        name: NAME.into(),
    };
    first_answer(&curl, &vm);
    let services = json(&curl.ok(&[], "/v1/services"));
    let hub = services["services"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == "hub"))
        .unwrap_or_else(|| panic!("no hub in /v1/services: {services}"));
    assert_eq!(hub["state"], "failed", "{hub}");
    assert!(
        hub["reason"]
            .as_str()
            .is_some_and(|r| r.contains("capability_missing")),
        "{hub}"
    );
}
