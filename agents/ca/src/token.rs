//! One-time tokens (thesis 4.9.6, "Initial handoff").
//!
//! A token is 256 random bits, base64url (43 characters), shown once and stored only as its
//! SHA-256. It is bound to a node FQDN, a subsystem, an agent id and capabilities (and
//! optionally endpoint URIs): the certificate it buys says exactly that, whatever the CSR
//! claims. It expires after a TTL (default 10 minutes) and is redeemed once: redemption is a
//! compare-and-swap in SQLite (`UPDATE … WHERE hash=? AND used_at IS NULL`), so of concurrent
//! redemptions exactly one wins.

use std::time::Duration;

use ring::rand::SecureRandom;
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tessera_identity::profile;

use crate::audit;
use crate::error::{ApiError, Code};

pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
/// Longest TTL: long enough for a slow PXE rollout, short enough that a leaked token dies.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Length of a token: 32 bytes in unpadded base64url.
pub const TOKEN_LEN: usize = 43;

/// What a token entitles its holder to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub node: String,
    pub subsystem: String,
    pub agent_id: String,
    pub capabilities: Vec<String>,
    pub uris: Vec<String>,
}

impl Binding {
    /// Validates every name; the agent id defaults to the subsystem name (one agent of each
    /// subsystem per node, addressable as `<subsystem>.<node>`).
    pub fn new(
        node: &str,
        subsystem: &str,
        agent_id: Option<&str>,
        capabilities: Vec<String>,
        uris: Vec<String>,
    ) -> Result<Binding, ApiError> {
        let agent_id = agent_id.unwrap_or(subsystem);
        profile::validate_fqdn(node)?;
        profile::validate_subsystem(subsystem)?;
        profile::validate_agent_id(agent_id)?;
        profile::validate_capabilities(&capabilities)?;
        let dns = format!("{agent_id}.{node}");
        for u in &uris {
            profile::validate_uri(u, &dns)?;
        }
        Ok(Binding {
            node: node.into(),
            subsystem: subsystem.into(),
            agent_id: agent_id.into(),
            capabilities,
            uris,
        })
    }

    /// The command that issues a fresh token for the same binding (for error messages).
    pub fn reissue_hint(&self) -> String {
        let mut cmd = format!(
            "tessera ca token --node {} --subsystem {}",
            self.node, self.subsystem
        );
        if self.agent_id != self.subsystem {
            cmd.push_str(&format!(" --agent-id {}", self.agent_id));
        }
        if !self.capabilities.is_empty() {
            cmd.push_str(&format!(" --capabilities {}", self.capabilities.join(",")));
        }
        cmd
    }
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 3);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |a, (i, b)| a | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A fresh token (the secret; never stored).
pub fn generate() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ApiError::internal("the system random number generator failed"))?;
    Ok(base64url(&bytes))
}

/// What the database keeps: hex SHA-256 of the token text.
pub fn hash(token: &str) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ))
}

/// Refuses anything not shaped like a token before it reaches the database.
pub fn check_shape(token: &str) -> Result<(), ApiError> {
    let ok = token.len() == TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::TokenInvalid,
            format!("the token is not {TOKEN_LEN} base64url characters; pass it exactly as `tessera ca token` printed it"),
        ))
    }
}

/// A token just created: the secret and when it expires (unix seconds).
#[derive(Debug, Clone)]
pub struct Created {
    pub token: String,
    pub expires_at: i64,
}

/// Creates and records a token; `created_by` says who asked (`cli` or an admin serial).
pub fn create(
    conn: &Connection,
    binding: &Binding,
    ttl: Duration,
    created_by: &str,
    now: i64,
) -> Result<Created, ApiError> {
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(ApiError::new(
            Code::BadRequest,
            format!(
                "token TTL {} is out of range; use 1s to {}",
                humantime::format_duration(ttl),
                humantime::format_duration(MAX_TTL)
            ),
        ));
    }
    let token = generate()?;
    let hash = hash(&token);
    let expires_at = now + ttl.as_secs() as i64;
    conn.prepare_cached(
        "INSERT INTO tokens(hash, node, subsystem, agent_id, capabilities, uris, created_at, expires_at, created_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(rusqlite::params![
            hash,
            binding.node,
            binding.subsystem,
            binding.agent_id,
            serde_json::to_string(&binding.capabilities).map_err(ApiError::internal)?,
            serde_json::to_string(&binding.uris).map_err(ApiError::internal)?,
            now,
            expires_at,
            created_by,
        ])?;
    audit::append(
        conn,
        "token_issued",
        json!({
            "token_hash": hash,
            "node": binding.node,
            "subsystem": binding.subsystem,
            "agent_id": binding.agent_id,
            "capabilities": binding.capabilities,
            "expires_at": expires_at,
            "by": created_by,
        }),
    )?;
    Ok(Created { token, expires_at })
}

/// A token's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub hash: String,
    pub binding: Binding,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

pub fn lookup(conn: &Connection, hash: &str) -> Result<Option<Record>, ApiError> {
    let row = conn
        .prepare_cached(
            "SELECT node, subsystem, agent_id, capabilities, uris, expires_at, used_at FROM tokens WHERE hash=?1",
        )?
        .query_row([hash], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                ))
            })
        .optional()?;
    let Some((node, subsystem, agent_id, caps, uris, expires_at, used_at)) = row else {
        return Ok(None);
    };
    let list = |s: &str| -> Result<Vec<String>, ApiError> {
        serde_json::from_str(s).map_err(|e| ApiError::internal(format!("token record: {e}")))
    };
    Ok(Some(Record {
        hash: hash.into(),
        binding: Binding {
            node,
            subsystem,
            agent_id,
            capabilities: list(&caps)?,
            uris: list(&uris)?,
        },
        expires_at,
        used_at,
    }))
}

/// What a redeemer may say it expects (both optional): a token presented with the wrong
/// node or subsystem is refused without being spent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Claims {
    pub node: Option<String>,
    pub subsystem: Option<String>,
}

fn time_of(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Decides whether `record` may be redeemed now with `claims`; the error says why not and
/// how to get a usable token.
pub fn check(record: Option<&Record>, claims: &Claims, now: i64) -> Result<(), ApiError> {
    let Some(r) = record else {
        return Err(ApiError::new(
            Code::TokenUnknown,
            "this CA never issued that token (or it was mistyped); issue one with `tessera ca token --node <fqdn> --subsystem <name>`",
        ));
    };
    if let Some(at) = r.used_at {
        return Err(ApiError::new(
            Code::TokenUsed,
            format!(
                "token already used (redeemed at {}) — issue a new one with `{}`",
                time_of(at),
                r.binding.reissue_hint()
            ),
        ));
    }
    if r.expires_at <= now {
        return Err(ApiError::new(
            Code::TokenExpired,
            format!(
                "token expired at {} — issue a new one with `{} --ttl 30m` (a longer TTL if the node boots slowly)",
                time_of(r.expires_at),
                r.binding.reissue_hint()
            ),
        ));
    }
    for (claimed, bound, what) in [
        (&claims.node, &r.binding.node, "node"),
        (&claims.subsystem, &r.binding.subsystem, "subsystem"),
    ] {
        if let Some(c) = claimed {
            if c != bound {
                return Err(ApiError::new(
                    Code::TokenBinding,
                    format!(
                        "this token is bound to {what} {bound:?}, but the request is for {what} {c:?} — use the token issued for this {what}, or issue one with `tessera ca token --node <fqdn> --subsystem <name>`"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The compare-and-swap: marks the token used by `serial` if, and only if, it is still
/// unused and unexpired. Returns whether this caller won.
pub fn consume(conn: &Connection, hash: &str, now: i64, serial: &str) -> Result<bool, ApiError> {
    let changed = conn
        .prepare_cached(
            "UPDATE tokens SET used_at=?1, used_serial=?2 WHERE hash=?3 AND used_at IS NULL AND expires_at > ?1",
        )?
        .execute(rusqlite::params![now, serial, hash])?;
    Ok(changed == 1)
}

/// Records a refused redemption of a token this CA knows (unknown or malformed tokens are
/// only logged, so garbage cannot fill the audit log).
pub fn audit_refusal(conn: &Connection, record: &Record, code: Code) -> Result<(), ApiError> {
    audit::append(
        conn,
        "token_refused",
        json!({
            "token_hash": record.hash,
            "node": record.binding.node,
            "subsystem": record.binding.subsystem,
            "reason": code.as_str(),
        }),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::state::open(&dir.path().join("ca.db")).unwrap();
        (dir, conn)
    }

    fn binding() -> Binding {
        Binding::new("n1.example", "certmgr", None, vec!["node".into()], vec![]).unwrap()
    }

    #[test]
    fn tokens_are_256_bit_base64url_and_stored_hashed() {
        let (_d, conn) = db();
        let t = create(&conn, &binding(), DEFAULT_TTL, "cli", 1000).unwrap();
        assert_eq!(t.token.len(), TOKEN_LEN);
        check_shape(&t.token).unwrap();
        assert_eq!(t.expires_at, 1600);
        let stored: Vec<String> = conn
            .prepare("SELECT hash FROM tokens")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(stored, vec![hash(&t.token)]);
        let dump: String = conn
            .query_row("SELECT group_concat(details) FROM audit", [], |r| r.get(0))
            .unwrap();
        assert!(!dump.contains(&t.token), "the token itself is never stored");
        assert_ne!(generate().unwrap(), generate().unwrap());
    }

    #[test]
    fn base64url_matches_the_standard_alphabet() {
        assert_eq!(base64url(b"\xfb\xff"), "-_8");
        assert_eq!(base64url(b"Man"), "TWFu");
        assert_eq!(base64url(&[0u8; 32]).len(), 43);
    }

    #[test]
    fn lifecycle_redeem_once_then_used() {
        let (_d, conn) = db();
        let b = binding();
        let t = create(&conn, &b, DEFAULT_TTL, "cli", 1000).unwrap();
        let h = hash(&t.token);
        let rec = lookup(&conn, &h).unwrap().unwrap();
        assert_eq!(rec.binding, b);
        check(Some(&rec), &Claims::default(), 1001).unwrap();
        assert!(consume(&conn, &h, 1001, "aa").unwrap());
        assert!(
            !consume(&conn, &h, 1002, "bb").unwrap(),
            "second redemption loses"
        );
        let rec = lookup(&conn, &h).unwrap().unwrap();
        let e = check(Some(&rec), &Claims::default(), 1003).unwrap_err();
        assert_eq!(e.code, Code::TokenUsed);
        assert!(
            e.reason
                .contains("tessera ca token --node n1.example --subsystem certmgr"),
            "{}",
            e.reason
        );
    }

    #[test]
    fn expired_token_is_refused_and_cannot_be_consumed() {
        let (_d, conn) = db();
        let t = create(&conn, &binding(), Duration::from_secs(60), "cli", 1000).unwrap();
        let h = hash(&t.token);
        let rec = lookup(&conn, &h).unwrap().unwrap();
        assert_eq!(
            check(Some(&rec), &Claims::default(), 1060)
                .unwrap_err()
                .code,
            Code::TokenExpired
        );
        assert!(!consume(&conn, &h, 1060, "aa").unwrap());
        assert!(
            consume(&conn, &h, 1059, "aa").unwrap(),
            "valid one second before"
        );
    }

    #[test]
    fn wrong_binding_is_refused_without_spending_the_token() {
        let (_d, conn) = db();
        let t = create(&conn, &binding(), DEFAULT_TTL, "cli", 1000).unwrap();
        let rec = lookup(&conn, &hash(&t.token)).unwrap().unwrap();
        for claims in [
            Claims {
                node: Some("n2.example".into()),
                subsystem: None,
            },
            Claims {
                node: None,
                subsystem: Some("node".into()),
            },
        ] {
            assert_eq!(
                check(Some(&rec), &claims, 1001).unwrap_err().code,
                Code::TokenBinding
            );
        }
        let right = Claims {
            node: Some("n1.example".into()),
            subsystem: Some("certmgr".into()),
        };
        check(Some(&rec), &right, 1001).unwrap();
        assert!(lookup(&conn, &rec.hash).unwrap().unwrap().used_at.is_none());
    }

    #[test]
    fn unknown_and_garbage_tokens_are_refused() {
        let (_d, conn) = db();
        let unknown = generate().unwrap();
        let rec = lookup(&conn, &hash(&unknown)).unwrap();
        assert_eq!(
            check(rec.as_ref(), &Claims::default(), 0).unwrap_err().code,
            Code::TokenUnknown
        );
        for garbage in [
            "",
            "short",
            &"a".repeat(44),
            &format!("{}=", "a".repeat(42)),
            &format!("{}\n", "a".repeat(42)),
            "ñññññññññññññññññññññ",
        ] {
            assert_eq!(
                check_shape(garbage).unwrap_err().code,
                Code::TokenInvalid,
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn hostile_bindings_are_refused() {
        assert!(Binding::new("n1.example\n", "certmgr", None, vec![], vec![]).is_err());
        assert!(Binding::new("n1.example", "cert mgr", None, vec![], vec![]).is_err());
        assert!(Binding::new("n1.example", "certmgr", Some("a/b"), vec![], vec![]).is_err());
        assert!(
            Binding::new("n1.example", "certmgr", None, vec!["no\0de".into()], vec![]).is_err()
        );
        assert!(Binding::new(
            "n1.example",
            "node",
            None,
            vec![],
            vec!["https://evil.example".into()]
        )
        .is_err());
        let e = Binding::new("n1.example", "certmgr", None, vec![], vec![]);
        assert_eq!(e.unwrap().agent_id, "certmgr");
    }

    #[test]
    fn ttl_out_of_range_is_refused() {
        let (_d, conn) = db();
        assert!(create(&conn, &binding(), Duration::ZERO, "cli", 0).is_err());
        assert!(create(
            &conn,
            &binding(),
            MAX_TTL + Duration::from_secs(1),
            "cli",
            0
        )
        .is_err());
    }

    #[test]
    fn concurrent_redemptions_exactly_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.db");
        let conn = crate::state::open(&path).unwrap();
        let t = create(&conn, &binding(), DEFAULT_TTL, "cli", crate::state::now()).unwrap();
        let h = Arc::new(hash(&t.token));
        const THREADS: usize = 16;
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|i| {
                let (path, h, barrier) = (path.clone(), h.clone(), barrier.clone());
                std::thread::spawn(move || {
                    // Each thread has its own connection, as separate processes would.
                    let mut conn = crate::state::open(&path).unwrap();
                    barrier.wait();
                    crate::state::transaction(&mut conn, |c| {
                        consume(c, &h, crate::state::now(), &format!("{i:02x}"))
                    })
                    .unwrap()
                })
            })
            .collect();
        let wins = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|w| *w)
            .count();
        assert_eq!(wins, 1);
    }
}
