//! The service loop end to end: sources on a fake node (temp dirs, local servers), the file
//! written, the sd_notify messages sent, the events logged.

mod common;

use common::{file_server, free_port, Imds};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};
use tessera_common::cmdline::KernelArgs;
use tessera_userdata::events::Events;
use tessera_userdata::retry::RetryPolicy;
use tessera_userdata::service::{run, ServiceOptions};
use tessera_userdata::{load, Outcome};

const FP: &str = "sha256:2b318f01675311f8c277886ba374ff2a250f1bbda0bfd7061b91f006a4082432";

fn options(dir: &Path, cmdline: &str, imds: &str) -> ServiceOptions {
    let mut o = ServiceOptions::with_cmdline(KernelArgs::parse(cmdline), Some(imds));
    std::fs::create_dir_all(dir.join("sys")).unwrap();
    o.sys_block = dir.join("sys");
    o.dev_dir = dir.join("dev");
    o.mount_dir = dir.join("run/tessera/nocloud");
    o.output = dir.join("run/tessera/userdata.toml");
    let quick = RetryPolicy {
        budget: Duration::from_millis(500),
        initial: Duration::from_millis(20),
        max: Duration::from_millis(100),
        connect_timeout: Duration::from_millis(200),
        io_timeout: Duration::from_millis(500),
    };
    o.imds_retry = quick;
    o.config_retry = quick;
    o.pass_backoff_initial = Duration::from_millis(30);
    o.pass_backoff_max = Duration::from_millis(60);
    o
}

fn go(
    opts: &ServiceOptions,
) -> (
    Outcome,
    Vec<Vec<String>>,
    Events,
    tessera_userdata::events::Captured,
) {
    let (events, captured) = Events::capture();
    let mut sent = Vec::new();
    let outcome = run(opts, &events, &mut |m: &[String]| sent.push(m.to_vec())).unwrap();
    (outcome, sent, events, captured)
}

#[test]
fn command_line_config_is_written_0600_and_announced() {
    let dir = tempfile::tempdir().unwrap();
    let imds = Imds::start(None);
    let opts = options(
        dir.path(),
        &format!("console=ttyS0 tessera.hostname=n1.example tessera.ca=https://10.0.2.2:8443 tessera.ca_fp={FP} tessera.certmgr_token=tt1.secret"),
        &imds.url(),
    );
    let (outcome, sent, _, captured) = go(&opts);
    assert!(matches!(outcome, Outcome::Configured { ref source, .. } if source == "cmdline"));
    assert_eq!(
        sent,
        vec![vec![
            "READY=1".to_string(),
            "STATUS=config from cmdline".to_string()
        ]]
    );
    assert!(imds.seen().is_empty(), "lower sources are not asked");
    let meta = std::fs::metadata(&opts.output).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    let config = load(&opts.output).unwrap().unwrap();
    assert_eq!(config.node.hostname.as_deref(), Some("n1.example"));
    assert_eq!(config.ca.unwrap().token.expose(), "tt1.secret");
    let text = std::fs::read_to_string(&opts.output).unwrap();
    assert!(text.starts_with("# Node configuration from cmdline (kernel command line)"));
    // Events are JSON lines; the token never appears in them.
    let log = captured.text();
    assert!(!log.contains("tt1.secret"));
    let events = captured.events();
    let configured = events
        .iter()
        .find(|e| e["msg"] == "node configured")
        .unwrap();
    assert_eq!(configured["source"], "cmdline");
    assert_eq!(configured["level"], "info");
    assert_eq!(configured["hostname"], "n1.example");
}

#[test]
fn tessera_config_url_is_fetched_and_merged() {
    let dir = tempfile::tempdir().unwrap();
    let doc = format!("version = 1\n[node]\ncluster = \"lab\"\nhostname = \"shared.example\"\n[ca]\nurl = \"https://ca.example:8443\"\nfingerprint = \"{FP}\"\n[firewall]\ncluster_cidrs = [\"192.168.77.0/24\"]\n");
    let port = file_server("/nodes/common.toml", doc.into_bytes());
    let opts = options(
        dir.path(),
        &format!("tessera.config=http://127.0.0.1:{port}/nodes/common.toml tessera.hostname=n3.example tessera.certmgr_token=tok3"),
        "http://127.0.0.1:1",
    );
    let (outcome, sent, _, _) = go(&opts);
    assert!(matches!(outcome, Outcome::Configured { .. }), "{outcome:?}");
    assert_eq!(sent[0][1], "STATUS=config from cmdline");
    let c = load(&opts.output).unwrap().unwrap();
    assert_eq!(c.node.hostname.as_deref(), Some("n3.example"));
    assert_eq!(c.node.cluster, "lab");
    assert_eq!(c.ca.unwrap().token.expose(), "tok3");
    assert_eq!(
        c.firewall.unwrap().cluster_cidrs[0].to_string(),
        "192.168.77.0/24"
    );
}

#[test]
fn no_config_anywhere_is_standalone_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let imds = Imds::start(None);
    let opts = options(dir.path(), "console=ttyS0 tessera.hostname=n1", &imds.url());
    let (outcome, sent, _, captured) = go(&opts);
    assert_eq!(outcome, Outcome::Standalone { unanswered: vec![] });
    assert_eq!(
        sent,
        vec![vec![
            "READY=1".to_string(),
            "STATUS=standalone (no user-data)".to_string()
        ]]
    );
    assert!(!opts.output.exists());
    assert_eq!(load(&opts.output).unwrap(), None);
    let sources: Vec<String> = captured
        .events()
        .iter()
        .filter(|e| e["msg"] == "no user-data here")
        .map(|e| e["source"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sources, vec!["cmdline", "nocloud", "imds"]);
}

#[test]
fn imds_config_when_nothing_comes_first() {
    let dir = tempfile::tempdir().unwrap();
    let imds = Imds::start(Some(
        b"version = 1\n[node]\nhostname = \"from-imds.example\"\n",
    ));
    let opts = options(dir.path(), "", &imds.url());
    let (_, sent, _, _) = go(&opts);
    assert_eq!(sent[0][1], "STATUS=config from imds");
    assert_eq!(
        load(&opts.output)
            .unwrap()
            .unwrap()
            .node
            .hostname
            .as_deref(),
        Some("from-imds.example")
    );
}

#[test]
fn bad_config_is_reported_ready_is_sent_and_the_network_source_is_retried_until_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let imds = Imds::start(Some(
        b"version = 1\n[storage]\nbackend = \"zfs\"\ndevice = \"/dev/vdb\"\n",
    ));
    let mut opts = options(dir.path(), "", &imds.url());
    opts.max_passes = Some(20);
    let (events, captured) = Events::capture();
    let mut sent: Vec<Vec<String>> = Vec::new();
    let state = imds.state.clone();
    let outcome = run(&opts, &events, &mut |m: &[String]| {
        sent.push(m.to_vec());
        // The operator fixes the user-data after the node reported the problem twice.
        if sent.len() == 2 {
            *state.user_data.lock().unwrap() = Some(
                b"version = 1\n[storage]\nbackend = \"btrfs\"\ndevice = \"/dev/vdb\"\n".to_vec(),
            );
        }
    })
    .unwrap();
    assert!(matches!(outcome, Outcome::Configured { ref source, .. } if source == "imds"));
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(
        sent[0][0], "READY=1",
        "ready after the first pass, bad config or not"
    );
    assert_eq!(
        sent[0][1],
        "STATUS=bad config from imds: storage.backend: unknown value `zfs`, expected `btrfs` or `lvm-thin` (line 3, column 11); retrying"
    );
    assert_eq!(sent[1].len(), 1, "READY=1 is sent once");
    assert_eq!(sent[2], vec!["STATUS=config from imds".to_string()]);
    // One error event naming the source and the key; the repetition is only debug.
    let errors: Vec<_> = captured
        .events()
        .into_iter()
        .filter(|e| e["msg"] == "invalid user-data")
        .collect();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["level"], "error");
    assert_eq!(errors[0]["source"], "imds");
    assert_eq!(errors[0]["key"], "storage.backend");
    assert_eq!(errors[0]["line"], 3);
    assert_eq!(errors[1]["level"], "debug");
    assert_eq!(
        load(&opts.output)
            .unwrap()
            .unwrap()
            .storage
            .unwrap()
            .backend
            .as_str(),
        "btrfs"
    );
}

#[test]
fn silent_metadata_service_does_not_hold_up_the_boot() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), "", &format!("http://127.0.0.1:{}", free_port()));
    opts.max_passes = Some(2);
    let start = Instant::now();
    let (events, _) = Events::capture();
    let mut first_ready = None;
    let mut sent = Vec::new();
    let outcome = run(&opts, &events, &mut |m: &[String]| {
        if m.iter().any(|a| a == "READY=1") {
            first_ready = Some(start.elapsed());
        }
        sent.push(m.to_vec());
    })
    .unwrap();
    let ready = first_ready.expect("READY=1 sent");
    assert!(ready < Duration::from_millis(1500), "ready after {ready:?}");
    assert!(matches!(outcome, Outcome::Standalone { ref unanswered } if unanswered.len() == 1));
    assert_eq!(
        sent[0][1],
        "STATUS=standalone (no user-data); imds did not answer, retrying"
    );
    assert_eq!(sent.len(), 2, "retried once more (max_passes = 2)");
}

#[test]
fn unreachable_config_url_fails_the_pass_and_is_not_replaced_by_imds() {
    let dir = tempfile::tempdir().unwrap();
    let imds = Imds::start(Some(b"version = 1\n"));
    let mut opts = options(
        dir.path(),
        &format!("tessera.config=http://127.0.0.1:{}/n.toml", free_port()),
        &imds.url(),
    );
    opts.max_passes = Some(1);
    let (outcome, sent, _, captured) = go(&opts);
    assert!(matches!(outcome, Outcome::Broken { ref source, .. } if source == "cmdline"));
    assert!(
        sent[0][1].starts_with("STATUS=no config yet from cmdline: cannot fetch tessera.config:"),
        "{:?}",
        sent[0]
    );
    assert!(imds.seen().is_empty());
    assert!(!opts.output.exists());
    assert!(captured
        .events()
        .iter()
        .any(|e| e["msg"] == "cannot get user-data" && e["level"] == "error"));
}

#[test]
fn bad_imds_override_is_reported_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), "", "https://10.0.0.1");
    opts.max_passes = Some(1);
    let (outcome, sent, _, _) = go(&opts);
    assert!(matches!(outcome, Outcome::Broken { ref source, .. } if source == "imds"));
    assert!(
        sent[0][1].contains("bad metadata endpoint (TESSERA_IMDS_ENDPOINT)"),
        "{:?}",
        sent[0]
    );
}

#[test]
fn imds_off_means_no_probing_and_a_definite_standalone() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), "", "http://127.0.0.1:1");
    // As the node reads `tessera.imds=off` (KernelArgs keeps it once `imds` is a known key).
    let mut args = KernelArgs::default();
    args.values.insert("imds".into(), "off".into());
    opts.imds_endpoint =
        tessera_userdata::service::imds_endpoint(&args, Some("http://127.0.0.1:1"));
    let names: Vec<String> = opts
        .sources()
        .iter()
        .map(|s| s.name().to_string())
        .collect();
    assert_eq!(names, vec!["cmdline", "nocloud"]);
    let (outcome, sent, _, _) = go(&opts);
    assert_eq!(outcome, Outcome::Standalone { unanswered: vec![] });
    assert_eq!(sent[0][1], "STATUS=standalone (no user-data)");
}
