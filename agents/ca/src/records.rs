//! The records of issued and revoked certificates.

use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;
use serde_json::json;

use crate::audit;
use crate::error::{ApiError, Code};
use crate::issue::{rfc3339, Issued};

/// How a certificate came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Token redemption (`/v1/redeem`).
    Redeem,
    /// Renewal over mTLS (`/v1/renew`).
    Renew,
    /// Delegated signing by a certificate manager (`/v1/issue`).
    Issue,
    /// The operator's certificate (`init`).
    Admin,
    /// The CA's HTTPS certificate.
    Server,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Redeem => "redeem",
            Kind::Renew => "renew",
            Kind::Issue => "issue",
            Kind::Admin => "admin",
            Kind::Server => "server",
        }
    }
}

/// Revocation reasons (RFC 5280 CRLReason, the ones that apply here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Reason {
    Unspecified,
    KeyCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    PrivilegeWithdrawn,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unspecified => "unspecified",
            Reason::KeyCompromise => "key-compromise",
            Reason::AffiliationChanged => "affiliation-changed",
            Reason::Superseded => "superseded",
            Reason::CessationOfOperation => "cessation-of-operation",
            Reason::PrivilegeWithdrawn => "privilege-withdrawn",
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        <Reason as clap::ValueEnum>::value_variants()
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
    }

    pub fn crl_reason(self) -> rcgen::RevocationReason {
        use rcgen::RevocationReason as R;
        match self {
            Reason::Unspecified => R::Unspecified,
            Reason::KeyCompromise => R::KeyCompromise,
            Reason::AffiliationChanged => R::AffiliationChanged,
            Reason::Superseded => R::Superseded,
            Reason::CessationOfOperation => R::CessationOfOperation,
            Reason::PrivilegeWithdrawn => R::PrivilegeWithdrawn,
        }
    }
}

/// Records an issued certificate.
pub fn insert(
    conn: &Connection,
    cert: &Issued,
    kind: Kind,
    parent: Option<&str>,
    now: i64,
) -> Result<(), ApiError> {
    conn.prepare_cached(
        "INSERT INTO certificates(serial, subject, subsystem, node, agent_id, kind, parent, not_before, not_after, issued_at, der)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(rusqlite::params![
            cert.serial,
            cert.subject,
            cert.subsystem,
            cert.node,
            cert.agent_id,
            kind.as_str(),
            parent,
            cert.not_before,
            cert.not_after,
            now,
            cert.der.as_ref(),
        ])?;
    Ok(())
}

/// A certificate as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    pub serial: String,
    pub subject: String,
    pub kind: String,
    pub not_after: i64,
    pub revoked_at: Option<i64>,
    pub reason: Option<String>,
}

impl Record {
    pub fn status(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.not_after <= now {
            "expired"
        } else {
            "valid"
        }
    }
}

const SELECT: &str = "SELECT c.serial, c.subject, c.kind, c.not_after, r.revoked_at, r.reason
    FROM certificates c LEFT JOIN revocations r ON r.serial = c.serial";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    Ok(Record {
        serial: r.get(0)?,
        subject: r.get(1)?,
        kind: r.get(2)?,
        not_after: r.get(3)?,
        revoked_at: r.get(4)?,
        reason: r.get(5)?,
    })
}

pub fn get(conn: &Connection, serial: &str) -> Result<Option<Record>, ApiError> {
    Ok(conn
        .prepare_cached(&format!("{SELECT} WHERE c.serial=?1"))?
        .query_row([serial], row)
        .optional()?)
}

pub fn list(conn: &Connection) -> Result<Vec<Record>, ApiError> {
    let mut stmt = conn.prepare(&format!("{SELECT} ORDER BY c.issued_at, c.serial"))?;
    let rows = stmt.query_map([], row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A presented client certificate must be one of ours, unexpired and not revoked.
pub fn check_presented(conn: &Connection, serial: &str, now: i64) -> Result<Record, ApiError> {
    let Some(rec) = get(conn, serial)? else {
        return Err(ApiError::new(
            Code::CertificateUnknown,
            format!("certificate {serial} is not in this CA's records; present a certificate this CA issued"),
        ));
    };
    if rec.revoked_at.is_some() {
        return Err(ApiError::new(
            Code::Revoked,
            format!(
                "certificate {serial} is revoked ({}); the holder needs a new token: `tessera ca token --node … --subsystem …`",
                rec.reason.as_deref().unwrap_or("unspecified")
            ),
        ));
    }
    if rec.not_after <= now {
        return Err(ApiError::new(
            Code::CertificateExpired,
            format!(
                "certificate {serial} expired at {}; renew before 2/3 of the lifetime, or bootstrap again with a new token",
                rfc3339(rec.not_after)
            ),
        ));
    }
    Ok(rec)
}

/// Normalises a serial typed by a person: hex, any case, optional colons, leading zeros.
pub fn normalize_serial(text: &str) -> Result<String, ApiError> {
    let hex: String = text
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.is_empty() || hex.len() > 40 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::new(
            Code::BadRequest,
            format!(
                "{:?} is not a certificate serial; use the hex serial `tessera ca list` shows",
                text.chars().take(60).collect::<String>()
            ),
        ));
    }
    let padded = if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex
    };
    let bytes = hex::decode(padded).map_err(ApiError::internal)?;
    Ok(tessera_identity::profile::serial_hex(&bytes))
}

/// Revokes a certificate and records it in the audit log. The CRL is refreshed by the
/// caller (crl::refresh) in the same transaction.
pub fn revoke(
    conn: &Connection,
    serial: &str,
    reason: Reason,
    by: &str,
    now: i64,
) -> Result<Record, ApiError> {
    let Some(rec) = get(conn, serial)? else {
        return Err(ApiError::new(
            Code::NotFound,
            format!("no certificate with serial {serial}; `tessera ca list` shows the serials"),
        ));
    };
    if rec.revoked_at.is_some() {
        return Err(ApiError::new(
            Code::Revoked,
            format!("certificate {serial} is already revoked"),
        ));
    }
    conn.execute(
        "INSERT INTO revocations(serial, revoked_at, reason) VALUES (?1, ?2, ?3)",
        rusqlite::params![serial, now, reason.as_str()],
    )?;
    audit::append(
        conn,
        "certificate_revoked",
        json!({ "serial": serial, "subject": rec.subject, "reason": reason.as_str(), "by": by }),
    )?;
    Ok(Record {
        revoked_at: Some(now),
        reason: Some(reason.as_str().into()),
        ..rec
    })
}

/// Revoked certificates that have not yet expired (expired ones need no CRL entry).
pub fn revoked_unexpired(
    conn: &Connection,
    now: i64,
) -> Result<Vec<(String, i64, Reason)>, ApiError> {
    let mut stmt = conn.prepare(
        "SELECT r.serial, r.revoked_at, r.reason FROM revocations r
         JOIN certificates c ON c.serial = r.serial WHERE c.not_after > ?1 ORDER BY r.serial",
    )?;
    let rows = stmt.query_map([now], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (serial, at, reason) = row?;
        out.push((
            serial,
            at,
            Reason::parse(&reason).unwrap_or(Reason::Unspecified),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_normalised() {
        assert_eq!(normalize_serial("00:AB:cd").unwrap(), "abcd");
        assert_eq!(normalize_serial(" 7f01 ").unwrap(), "7f01");
        assert_eq!(normalize_serial("0ab").unwrap(), "ab");
        for bad in ["", "xyz", "12 34", &"a".repeat(41), "ab\n"] {
            if bad == "ab\n" {
                // Surrounding whitespace is trimmed, like a copied line.
                assert_eq!(normalize_serial(bad).unwrap(), "ab");
                continue;
            }
            assert!(normalize_serial(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reasons_round_trip() {
        for r in <Reason as clap::ValueEnum>::value_variants() {
            assert_eq!(Reason::parse(r.as_str()), Some(*r));
        }
    }
}
