//! Golden files for service manifests: each tests/data/manifests/<name>.toml parses into the
//! summary, or fails with the error, in <name>.expected.

use std::path::Path;
use tessera_init::supervisor::manifest::{parse, ServiceSpec};

fn summary(s: &ServiceSpec) -> String {
    let d = |d: std::time::Duration| humantime::format_duration(d).to_string();
    format!(
        "name={} kind={} restart={:?} escalation={:?} ready={:?}\nexec={} args={:?} env={:?}\nrequires={:?} after={:?}\nintensity={}/{} backoff={}..{} watchdog={:?}\nstop={}/{} caps={:?} nnp={} console={}/{:?}\nlimits={:?}\n",
        s.name, s.kind.as_str(), s.restart, s.escalation, s.ready,
        s.exec.display(), s.args, s.env,
        s.requires, s.after,
        s.intensity.max_restarts, d(s.intensity.period), d(s.backoff.initial), d(s.backoff.max), s.watchdog.map(d),
        s.stop_signal.as_str(), d(s.stop_grace), s.capabilities, s.no_new_privileges, s.console, s.console_level,
        s.limits.files(),
    )
}

/// The `[health]` line, only for files that have one.
fn health_summary(s: &ServiceSpec) -> String {
    s.health
        .as_ref()
        .map(|h| format!("health={}\n", serde_json::to_string(h).unwrap()))
        .unwrap_or_default()
}

#[test]
fn manifests_match_their_golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/manifests");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 6);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = Path::new(file.file_name().unwrap());
        let got = match parse(name, &text) {
            Ok(spec) => summary(&spec) + &health_summary(&spec),
            Err(e) => format!("{e}\n"),
        };
        let expected = std::fs::read_to_string(file.with_extension("expected")).unwrap();
        assert_eq!(got, expected, "golden mismatch for {}", file.display());
    }
}
