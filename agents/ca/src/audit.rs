//! The append-only, hash-chained audit log.
//!
//! Each entry stores the SHA-256 of the previous entry (`prev_hash`) and its own hash over
//! `seq, time, event, details, prev_hash`. Editing an entry breaks its hash; deleting one
//! breaks the sequence or the next entry's link; `tessera ca audit --verify` names the first
//! broken entry. Entries are written in the same transaction as the change they record, so
//! the log and the state never disagree. Truncating the tail cannot be detected from inside
//! the database: `--verify` prints the head hash so the operator can keep it elsewhere.
//!
//! Events: `ca_initialized`, `token_issued`, `token_redeemed`, `token_refused` (with the
//! reason code), `certificate_issued`, `certificate_renewed`, `certificate_revoked`.

use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;
use serde_json::Value;

/// `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub seq: i64,
    pub time: String,
    pub event: String,
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuditError {
    #[error("audit entry {seq} ({event} at {time}) does not match its hash: the entry was edited")]
    Edited {
        seq: i64,
        event: String,
        time: String,
    },
    #[error("audit entry {seq} ({event} at {time}) does not link to entry {prev}: an entry before it was edited, removed or inserted")]
    BrokenLink {
        seq: i64,
        prev: i64,
        event: String,
        time: String,
    },
    #[error("audit entries {from} to {to} are missing: they were deleted")]
    Missing { from: i64, to: i64 },
    #[error("reading the audit log: {0}")]
    Read(String),
}

fn entry_hash(seq: i64, time: &str, event: &str, details: &str, prev_hash: &str) -> String {
    let text = format!("{seq}\n{time}\n{event}\n{details}\n{prev_hash}");
    hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()))
}

/// Appends one entry. Call inside the transaction that makes the change it records; the
/// chain head is read inside that transaction, so concurrent writers (server and CLI) stay
/// on one chain.
pub fn append(conn: &Connection, event: &str, details: Value) -> rusqlite::Result<i64> {
    let head: Option<(i64, String)> = conn
        .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (seq, prev_hash) = match head {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, GENESIS.to_string()),
    };
    let time = tessera_common::log::now_rfc3339();
    let details = details.to_string();
    let hash = entry_hash(seq, &time, event, &details, &prev_hash);
    conn.prepare_cached(
        "INSERT INTO audit(seq, time, event, details, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(rusqlite::params![seq, time, event, details, prev_hash, hash])?;
    Ok(seq)
}

pub fn entries(conn: &Connection) -> rusqlite::Result<Vec<Entry>> {
    let mut stmt =
        conn.prepare("SELECT seq, time, event, details, prev_hash, hash FROM audit ORDER BY seq")?;
    let rows = stmt.query_map([], |r| {
        Ok(Entry {
            seq: r.get(0)?,
            time: r.get(1)?,
            event: r.get(2)?,
            details: r.get(3)?,
            prev_hash: r.get(4)?,
            hash: r.get(5)?,
        })
    })?;
    rows.collect()
}

/// What a successful verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub entries: usize,
    /// Hash of the last entry (or [`GENESIS`] when empty): record it to detect truncation.
    pub head: String,
}

/// Checks the whole chain; the error names the first bad entry.
pub fn verify(conn: &Connection) -> Result<Verified, AuditError> {
    let all = entries(conn).map_err(|e| AuditError::Read(e.to_string()))?;
    verify_entries(&all)
}

pub fn verify_entries(all: &[Entry]) -> Result<Verified, AuditError> {
    let mut prev_seq = 0;
    let mut prev_hash = GENESIS.to_string();
    for e in all {
        if e.seq != prev_seq + 1 {
            return Err(AuditError::Missing {
                from: prev_seq + 1,
                to: e.seq - 1,
            });
        }
        if e.prev_hash != prev_hash {
            return Err(AuditError::BrokenLink {
                seq: e.seq,
                prev: prev_seq,
                event: e.event.clone(),
                time: e.time.clone(),
            });
        }
        if entry_hash(e.seq, &e.time, &e.event, &e.details, &e.prev_hash) != e.hash {
            return Err(AuditError::Edited {
                seq: e.seq,
                event: e.event.clone(),
                time: e.time.clone(),
            });
        }
        prev_seq = e.seq;
        prev_hash = e.hash.clone();
    }
    Ok(Verified {
        entries: all.len(),
        head: prev_hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::state::open(&dir.path().join("ca.db")).unwrap();
        (dir, conn)
    }

    fn fill(conn: &Connection) {
        append(conn, "token_issued", json!({"node": "n1.example"})).unwrap();
        append(conn, "token_redeemed", json!({"serial": "ab"})).unwrap();
        append(conn, "certificate_issued", json!({"serial": "ab"})).unwrap();
        append(conn, "certificate_revoked", json!({"serial": "ab"})).unwrap();
    }

    /// Tampering needs the append-only triggers out of the way, as an attacker with the file
    /// would do.
    fn drop_triggers(conn: &Connection) {
        conn.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
            .unwrap();
    }

    #[test]
    fn intact_chain_verifies_and_links_each_entry() {
        let (_d, conn) = db();
        fill(&conn);
        let v = verify(&conn).unwrap();
        assert_eq!(v.entries, 4);
        let all = entries(&conn).unwrap();
        assert_eq!(all[0].prev_hash, GENESIS);
        for pair in all.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash);
        }
        assert_eq!(v.head, all[3].hash);
    }

    #[test]
    fn edited_entry_is_named() {
        let (_d, conn) = db();
        fill(&conn);
        drop_triggers(&conn);
        conn.execute(
            "UPDATE audit SET details='{\"serial\":\"cd\"}' WHERE seq=3",
            [],
        )
        .unwrap();
        let err = verify(&conn).unwrap_err();
        assert!(matches!(err, AuditError::Edited { seq: 3, .. }), "{err}");
        assert!(
            err.to_string()
                .contains("audit entry 3 (certificate_issued"),
            "{err}"
        );
    }

    #[test]
    fn rehashed_edit_breaks_the_next_link() {
        let (_d, conn) = db();
        fill(&conn);
        drop_triggers(&conn);
        // Recompute entry 2's own hash after editing it: entry 3 no longer links to it.
        let e = &entries(&conn).unwrap()[1];
        let details = "{\"serial\":\"ff\"}";
        let hash = entry_hash(e.seq, &e.time, &e.event, details, &e.prev_hash);
        conn.execute(
            "UPDATE audit SET details=?1, hash=?2 WHERE seq=2",
            rusqlite::params![details, hash],
        )
        .unwrap();
        let err = verify(&conn).unwrap_err();
        assert!(
            matches!(err, AuditError::BrokenLink { seq: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn deleted_entry_is_detected() {
        let (_d, conn) = db();
        fill(&conn);
        drop_triggers(&conn);
        conn.execute("DELETE FROM audit WHERE seq=2", []).unwrap();
        let err = verify(&conn).unwrap_err();
        assert_eq!(err, AuditError::Missing { from: 2, to: 2 });
    }

    #[test]
    fn triggers_refuse_updates_and_deletes() {
        let (_d, conn) = db();
        fill(&conn);
        let e = conn
            .execute("UPDATE audit SET event='x' WHERE seq=1", [])
            .unwrap_err();
        assert!(e.to_string().contains("append-only"), "{e}");
        assert!(conn.execute("DELETE FROM audit", []).is_err());
        assert_eq!(verify(&conn).unwrap().entries, 4);
    }

    #[test]
    fn empty_log_verifies_with_genesis_head() {
        let (_d, conn) = db();
        assert_eq!(
            verify(&conn).unwrap(),
            Verified {
                entries: 0,
                head: GENESIS.into()
            }
        );
    }
}
