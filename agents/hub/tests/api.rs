//! The hub's HTTPS API with mTLS, checked with our CLI's client and with curl (a client
//! nobody here wrote), against an in-process cluster.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use tessera_hub::cli::{client_config, ApiClient};
use tessera_hub::client::Client;
use tessera_hub::testbed::{hub_name, Testbed};
use tessera_hub::Selector;

const LIMIT: Duration = Duration::from_secs(30);

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(t: &Testbed) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let admin =
            t.ca.issue_pem("admin", "operator", "operator.example")
                .unwrap();
        std::fs::write(dir.path().join("ca.pem"), t.ca.ca_pem()).unwrap();
        std::fs::write(dir.path().join("admin.pem"), admin.chain_pem).unwrap();
        std::fs::write(dir.path().join("admin.key"), admin.key_pem).unwrap();
        Files { dir }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

async fn api(t: &Testbed, hub: usize, files: &Files) -> ApiClient {
    let config = client_config(
        &files.path("ca.pem"),
        &files.path("admin.pem"),
        &files.path("admin.key"),
    )
    .unwrap();
    let addr = t.node(hub).api_addr.unwrap();
    ApiClient::connect(addr, &format!("hub.{}", hub_name(hub)), config)
        .await
        .unwrap()
}

fn curl(
    t: &Testbed,
    hub: usize,
    files: &Files,
    path: &str,
    cert: bool,
    data: Option<&str>,
) -> (bool, String) {
    let addr = t.node(hub).api_addr.unwrap();
    let host = format!("hub.{}", hub_name(hub));
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "--cacert"])
        .arg(files.path("ca.pem"))
        .arg("--resolve")
        .arg(format!("{host}:{}:127.0.0.1", addr.port()));
    if cert {
        cmd.arg("--cert").arg(files.path("admin.pem"));
        cmd.arg("--key").arg(files.path("admin.key"));
    }
    if let Some(d) = data {
        cmd.args(["-H", "content-type: application/json", "--data", d]);
    }
    cmd.arg(format!("https://{host}:{}{path}", addr.port()));
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

async fn member(t: &Testbed, hub: usize) -> Client {
    let c = Client::connect(&t.socket(hub), "w", "web").await.unwrap();
    c.on_call(|inv, r| r.reply(Ok(json!({"caller": inv.caller, "inputs": inv.inputs}))));
    c.register(&["web"]).await.unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_select_and_call_through_the_api_name_the_caller() {
    let t = Testbed::start(2, Duration::from_millis(50)).await.unwrap();
    let files = Files::new(&t);
    assert!(t.wait_for(LIMIT, |t| t.converged()).await.is_some());
    let m = member(&t, 0).await;
    assert!(t
        .wait_for(LIMIT, |t| t
            .node(1)
            .hub
            .select("web", Selector::All)
            .unwrap()
            .len()
            == 1)
        .await
        .is_some());
    let mut c = api(&t, 1, &files).await;
    let (s, v) = c.json("GET", "/v1/groups", None).await.unwrap();
    assert_eq!((s, v["groups"]["web"].clone()), (200, json!(1)));
    let (s, v) = c
        .json("GET", "/v1/groups/web?selector=all", None)
        .await
        .unwrap();
    assert_eq!(s, 200);
    assert_eq!(v["members"][0]["component"], json!(m.id().unwrap()));
    let (s, v) = c
        .json(
            "POST",
            "/v1/call",
            Some(json!({"target": {"group": "web"}, "operation": "get", "inputs": [1, 2]})),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let reply = &v["replies"][0];
    assert_eq!(reply["ok"]["inputs"], json!([1, 2]));
    assert_eq!(reply["ok"]["caller"], "api:admin@operator.example", "{v}");
    // Errors carry a code and a reason.
    let (s, v) = c
        .json(
            "POST",
            "/v1/call",
            Some(json!({"target": {"group": "none"}, "operation": "x"})),
        )
        .await
        .unwrap();
    assert_eq!((s, v["error"].clone()), (404, json!("no_target")));
    let (s, v) = c
        .json("POST", "/v1/call", Some(json!({"nonsense": 1})))
        .await
        .unwrap();
    assert_eq!(s, 400, "{v}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_with_a_client_certificate_is_served_and_without_one_is_refused() {
    let t = Testbed::start(1, Duration::from_millis(50)).await.unwrap();
    let files = Files::new(&t);
    let _m = member(&t, 0).await;
    let (ok, out) = curl(&t, 0, &files, "/v1/groups", true, None);
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["groups"]["web"], 1);
    let (ok, out) = curl(
        &t,
        0,
        &files,
        "/v1/call",
        true,
        Some(r#"{"target":{"group":"web"},"operation":"get","inputs":"x"}"#),
    );
    assert!(ok && out.contains(r#""inputs":"x""#), "{out}");
    let (ok, out) = curl(&t, 0, &files, "/v1/groups", false, None);
    assert!(!ok, "served without a client certificate: {out}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_streams_membership_events() {
    let t = Testbed::start(1, Duration::from_millis(50)).await.unwrap();
    let files = Files::new(&t);
    let mut c = api(&t, 0, &files).await;
    let socket = t.socket(0);
    let joiner = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let c = Client::connect(Path::new(&socket), "late", "web")
            .await
            .unwrap();
        c.register(&["web"]).await.unwrap();
        c
    });
    let mut lines = Vec::new();
    tokio::time::timeout(
        LIMIT,
        c.stream("/v1/monitor?group=web", |l| {
            lines.push(l.to_string());
            !l.contains("joined")
        }),
    )
    .await
    .unwrap()
    .unwrap();
    let _c = joiner.await.unwrap();
    assert!(
        lines[0].contains("monitor"),
        "first line acknowledges: {lines:?}"
    );
    let last: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(last["event"], "joined");
    assert_eq!(last["group"], "web");
    t.stop().await;
}
