//! The CA's SQLite database: schema, durable settings, and the server's single writer.
//!
//! WAL journal with `synchronous=FULL`: a reply is sent only after the transaction holding
//! its writes is on disk. The server funnels every write through one thread that commits in
//! batches (group commit): whatever requests arrived while the previous batch was syncing
//! share the next fsync, each inside its own savepoint, so one failing request rolls back
//! alone. Reads use a small pool of separate connections (WAL lets them run beside the
//! writer). The CLI works on the same file directly; SQLite's locking and `busy_timeout`
//! serialise it with a running server.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::error::ApiError;

/// Schema version in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;
/// Most requests committed in one transaction.
const MAX_BATCH: usize = 512;
/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;
-- One-time tokens. Only the SHA-256 of a token is stored; the token itself is shown once.
CREATE TABLE IF NOT EXISTS tokens (
    hash         TEXT PRIMARY KEY,
    node         TEXT NOT NULL,
    subsystem    TEXT NOT NULL,
    agent_id     TEXT NOT NULL,
    capabilities TEXT NOT NULL,   -- JSON array
    uris         TEXT NOT NULL,   -- JSON array
    created_at   INTEGER NOT NULL, -- unix seconds
    expires_at   INTEGER NOT NULL,
    created_by   TEXT NOT NULL,
    used_at      INTEGER,
    used_serial  TEXT
) STRICT;
CREATE TABLE IF NOT EXISTS certificates (
    serial     TEXT PRIMARY KEY,  -- lower-case hex
    subject    TEXT NOT NULL,
    subsystem  TEXT NOT NULL,
    node       TEXT NOT NULL,
    agent_id   TEXT NOT NULL,
    kind       TEXT NOT NULL,     -- redeem | renew | issue | admin | server
    parent     TEXT,              -- renew: the renewed serial; issue: the delegating serial
    not_before INTEGER NOT NULL,
    not_after  INTEGER NOT NULL,
    issued_at  INTEGER NOT NULL,
    der        BLOB NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS certificates_not_after ON certificates(not_after);
CREATE TABLE IF NOT EXISTS revocations (
    serial     TEXT PRIMARY KEY REFERENCES certificates(serial),
    revoked_at INTEGER NOT NULL,
    reason     TEXT NOT NULL
) STRICT;
-- Append-only, hash-chained (see audit.rs); the triggers stop accidental edits, the chain
-- detects deliberate ones.
CREATE TABLE IF NOT EXISTS audit (
    seq       INTEGER PRIMARY KEY,
    time      TEXT NOT NULL,
    event     TEXT NOT NULL,
    details   TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
) STRICT;
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"#;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot open the CA database {path}: {source}; check the state directory and its permissions")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("the CA database {path} has schema version {found}, this tessera knows {SCHEMA_VERSION}; use the tessera version that created it")]
    Version { path: PathBuf, found: i64 },
    #[error("creating {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Opens (creating if needed, mode 0600) the database with the durable settings.
pub fn open(path: &Path) -> Result<Connection, StateError> {
    if !path.exists() {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|source| StateError::Create {
                path: path.into(),
                source,
            })?;
    }
    let err = |source| StateError::Open {
        path: path.into(),
        source,
    };
    let conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
    // journal_mode answers with a row; the others are plain statements.
    let _: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(err)?;
    conn.execute_batch(
        "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA journal_size_limit=67108864;",
    )
    .map_err(err)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    match version {
        0 => {
            conn.execute_batch(SCHEMA).map_err(err)?;
            conn.execute_batch(&format!("PRAGMA user_version={SCHEMA_VERSION}"))
                .map_err(err)?;
        }
        SCHEMA_VERSION => {}
        found => {
            return Err(StateError::Version {
                path: path.into(),
                found,
            })
        }
    }
    Ok(conn)
}

pub fn meta_get(conn: &Connection, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT value FROM meta WHERE key=?1")?
        .query_row([key], |r| r.get(0))
        .optional()
}

pub fn meta_set(conn: &Connection, key: &str, value: &[u8]) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
        rusqlite::params![key, value],
    )?;
    Ok(())
}

/// Current time, unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Runs `f` in an immediate (write-locked) transaction and commits: the CLI's way to write.
pub fn transaction<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Connection) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let txn = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let out = f(&txn)?;
    txn.commit()?;
    Ok(out)
}

type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A write request: runs against the batch's transaction (or learns it could not start),
/// says whether its savepoint should be kept, and how to reply once the batch is committed.
type Job = Box<dyn FnOnce(Result<&Connection, String>) -> (bool, Completion) + Send>;

/// The server's handle on the database: one writer thread, a pool of readers.
pub struct Db {
    path: PathBuf,
    jobs: mpsc::Sender<Job>,
    readers: Mutex<Vec<Connection>>,
    /// Dropping it stops the checkpoint thread.
    _checkpoints: mpsc::Sender<()>,
}

impl Db {
    pub fn open(path: &Path) -> Result<Db, StateError> {
        let writer = open(path)?;
        // Checkpoints run on their own thread, so a commit never waits for one.
        writer
            .execute_batch("PRAGMA wal_autocheckpoint=0")
            .map_err(|source| StateError::Open {
                path: path.into(),
                source,
            })?;
        let checkpointer = open(path)?;
        let spawn_err = |source| StateError::Create {
            path: path.into(),
            source,
        };
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("ca-db-writer".into())
            .spawn(move || writer_loop(writer, queue))
            .map_err(spawn_err)?;
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("ca-db-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, stopped))
            .map_err(spawn_err)?;
        Ok(Db {
            path: path.into(),
            jobs,
            readers: Mutex::new(Vec::new()),
            _checkpoints: stop,
        })
    }

    /// Runs `f` inside the next batch; resolves after the batch is durably committed. An `Err`
    /// from `f` rolls back `f`'s writes only.
    pub async fn write<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&Connection) -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Ok(conn) => f(conn),
                Err(e) => Err(ApiError::internal(format!("database: {e}"))),
            };
            let keep = result.is_ok();
            let reply: Completion = Box::new(move |commit| {
                let out = match commit {
                    Ok(()) => result,
                    Err(e) => Err(ApiError::internal(format!("database commit: {e}"))),
                };
                let _ = tx.send(out);
            });
            (keep, reply)
        });
        self.jobs
            .send(job)
            .map_err(|_| ApiError::internal("the database writer has stopped"))?;
        rx.await
            .map_err(|_| ApiError::internal("the database writer has stopped"))?
    }

    /// Runs `f` on a pooled read connection.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let pooled = self.readers.lock().ok().and_then(|mut p| p.pop());
        let conn = match pooled {
            Some(c) => c,
            None => open(&self.path).map_err(ApiError::internal)?,
        };
        let out = f(&conn);
        if let Ok(mut pool) = self.readers.lock() {
            if pool.len() < 16 {
                pool.push(conn);
            }
        }
        out
    }
}

/// Runs a parameterless statement through the statement cache (no re-parsing per request).
fn run_cached(conn: &Connection, sql: &str) -> Result<(), String> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Copies the WAL into the database file every second (PASSIVE: never blocks the writer).
fn checkpoint_loop(conn: Connection, stop: mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "WAL checkpoint");
        }
    }
}

fn writer_loop(mut conn: Connection, queue: mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut replies = Vec::with_capacity(batch.len());
        let commit = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(txn) => {
                for job in batch {
                    let started = run_cached(&txn, "SAVEPOINT job");
                    // A panicking request must not take the writer (and every later request)
                    // down: its savepoint is rolled back and its caller gets an error.
                    let run =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &started {
                            Ok(()) => job(Ok(&txn)),
                            Err(e) => job(Err(e.clone())),
                        }));
                    let (keep, reply): (bool, Completion) = match run {
                        Ok(done) => done,
                        Err(_) => {
                            tracing::error!("a database write panicked; rolled back");
                            (false, Box::new(|_| {}))
                        }
                    };
                    if started.is_ok() {
                        let end = if keep {
                            run_cached(&txn, "RELEASE job")
                        } else {
                            run_cached(&txn, "ROLLBACK TO job")
                                .and_then(|_| run_cached(&txn, "RELEASE job"))
                        };
                        if let Err(e) = end {
                            tracing::error!(error = %e, "savepoint");
                        }
                    }
                    replies.push(reply);
                }
                txn.commit().map_err(|e| e.to_string())
            }
            Err(e) => {
                let e = e.to_string();
                for job in batch {
                    let (_, reply) = job(Err(e.clone()));
                    replies.push(reply);
                }
                Err(e)
            }
        };
        if let Err(e) = &commit {
            tracing::error!(error = %e, requests = replies.len(), "database batch failed");
        }
        for reply in replies {
            reply(commit.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_is_wal_full_sync_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.db");
        let conn = open(&path).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "FULL");
        let perms = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(perms, 0o600);
        drop(conn);
        open(&path).unwrap(); // reopening an existing database works
    }

    #[tokio::test]
    async fn a_panicking_write_does_not_stop_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("ca.db")).unwrap();
        let failed = db
            .write(|c| -> Result<(), ApiError> {
                meta_set(c, "k", b"1")?;
                panic!("bug in a request");
            })
            .await;
        assert!(failed.is_err());
        db.write(|c| Ok(meta_set(c, "other", b"2")?)).await.unwrap();
        let (k, other) = db
            .read(|c| Ok((meta_get(c, "k")?, meta_get(c, "other")?)))
            .unwrap();
        assert_eq!((k, other), (None, Some(b"2".to_vec())));
    }

    #[test]
    fn meta_values_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("ca.db")).unwrap();
        assert_eq!(meta_get(&conn, "k").unwrap(), None);
        meta_set(&conn, "k", b"1").unwrap();
        meta_set(&conn, "k", b"2").unwrap();
        assert_eq!(meta_get(&conn, "k").unwrap(), Some(b"2".to_vec()));
    }

    #[tokio::test]
    async fn failing_write_rolls_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = std::sync::Arc::new(Db::open(&dir.path().join("ca.db")).unwrap());
        let mut tasks = Vec::new();
        for i in 0..50 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                db.write(move |c| {
                    meta_set(c, &format!("k{i}"), b"x")?;
                    if i % 2 == 1 {
                        return Err(ApiError::internal("odd"));
                    }
                    Ok(i)
                })
                .await
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap().is_ok(), i % 2 == 0);
        }
        let n: i64 = db
            .read(|c| Ok(c.query_row("SELECT count(*) FROM meta", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(n, 25);
    }
}
