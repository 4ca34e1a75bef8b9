//! The operator's commands (`tessera ca …`) on a state directory, as `run` executes them.

use std::path::Path;
use std::time::Duration;

use tessera_ca::cli::{run, CaCommand};
use tessera_ca::records::Reason;
use tessera_ca::state;

fn init(dir: &Path) {
    run(CaCommand::Init {
        state: dir.to_path_buf(),
        cluster: "prod".into(),
        sans: vec!["ca.prod.example".into(), "192.0.2.10".into()],
    })
    .unwrap();
}

fn count(dir: &Path, sql: &str) -> i64 {
    let conn = state::open(&dir.join("ca.db")).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn token_list_revoke_crl_fingerprint_and_audit_work_on_the_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("ca");
    init(&state);
    run(CaCommand::Token {
        state: state.clone(),
        node: "n1.prod.example".into(),
        subsystem: "certmgr".into(),
        capabilities: vec!["node".into(), "hub".into()],
        agent_id: None,
        uris: vec![],
        ttl: Duration::from_secs(600),
    })
    .unwrap();
    assert_eq!(
        count(
            &state,
            "SELECT count(*) FROM tokens WHERE node='n1.prod.example' AND used_at IS NULL"
        ),
        1
    );
    run(CaCommand::Fingerprint {
        state: state.clone(),
    })
    .unwrap();
    run(CaCommand::List {
        state: state.clone(),
    })
    .unwrap();
    run(CaCommand::Crl {
        state: state.clone(),
    })
    .unwrap();
    let admin_serial: String = {
        let conn = state::open(&state.join("ca.db")).unwrap();
        conn.query_row(
            "SELECT serial FROM certificates WHERE kind='admin'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    run(CaCommand::Revoke {
        state: state.clone(),
        serial: admin_serial.clone(),
        reason: Reason::CessationOfOperation,
    })
    .unwrap();
    assert_eq!(count(&state, "SELECT count(*) FROM revocations"), 1);
    // Revoking twice, or an unknown serial, fails with a message.
    let twice = run(CaCommand::Revoke {
        state: state.clone(),
        serial: admin_serial,
        reason: Reason::Unspecified,
    });
    assert!(twice.unwrap_err().to_string().contains("already revoked"));
    let unknown = run(CaCommand::Revoke {
        state: state.clone(),
        serial: "abcdef".into(),
        reason: Reason::Unspecified,
    });
    assert!(unknown.unwrap_err().to_string().contains("tessera ca list"));
    run(CaCommand::AdminCert {
        state: state.clone(),
        name: "alice".into(),
    })
    .unwrap();
    assert_eq!(
        count(
            &state,
            "SELECT count(*) FROM certificates WHERE kind='admin' AND subject LIKE '%UID=alice'"
        ),
        1
    );
    assert!(run(CaCommand::AdminCert {
        state: state.clone(),
        name: "Alice Smith".into(),
    })
    .is_err());
    run(CaCommand::Audit {
        state: state.clone(),
        verify: true,
    })
    .unwrap();
    run(CaCommand::Audit {
        state: state.clone(),
        verify: false,
    })
    .unwrap();
}

#[test]
fn audit_verify_names_the_tampered_entry() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("ca");
    init(&state);
    let conn = state::open(&state.join("ca.db")).unwrap();
    conn.execute_batch(
        "DROP TRIGGER audit_no_update;
         UPDATE audit SET details='{\"cluster\":\"evil\"}' WHERE seq=1;",
    )
    .unwrap();
    let e = run(CaCommand::Audit {
        state: state.clone(),
        verify: true,
    })
    .unwrap_err();
    let text = format!("{e:#}");
    assert!(
        text.contains("tampered") && text.contains("audit entry 1 (ca_initialized"),
        "{text}"
    );
}

#[test]
fn commands_refuse_hostile_input_and_uninitialized_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("ca");
    let e = run(CaCommand::List {
        state: state.clone(),
    })
    .unwrap_err();
    assert!(e.to_string().contains("tessera ca init"), "{e}");
    init(&state);
    for (node, subsystem) in [
        ("n1.example\n", "node"),
        ("n1.example", "no de"),
        ("n1.example", "admin"),
    ] {
        let e = run(CaCommand::Token {
            state: state.clone(),
            node: node.into(),
            subsystem: subsystem.into(),
            capabilities: vec![],
            agent_id: None,
            uris: vec![],
            ttl: Duration::from_secs(600),
        })
        .unwrap_err();
        assert!(!e.to_string().contains('\n'), "{e}");
    }
    assert_eq!(count(&state, "SELECT count(*) FROM tokens"), 0);
    let e = run(CaCommand::Revoke {
        state: state.clone(),
        serial: "zz; DROP TABLE audit".into(),
        reason: Reason::Unspecified,
    })
    .unwrap_err();
    assert!(e.to_string().contains("not a certificate serial"), "{e}");
    let e = run(CaCommand::Init {
        state: state.clone(),
        cluster: "prod".into(),
        sans: vec![],
    })
    .unwrap_err();
    assert!(e.to_string().contains("already holds a CA"), "{e}");
}
