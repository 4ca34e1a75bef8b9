//! The certificate revocation list: signed by the CA, numbered, stored in the database so
//! the server and the CLI serve the same one.
//!
//! A CRL is valid for a day (`nextUpdate`); the server signs a new one when half of that has
//! passed, and immediately after each revocation. It lists revoked certificates until they
//! expire (an expired certificate is refused anyway).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use rusqlite::Connection;
use tessera_identity::tls::pem_encode;

use crate::error::ApiError;
use crate::issue::Authority;
use crate::records;
use crate::state;

pub const VALIDITY: Duration = Duration::from_secs(24 * 3600);

const KEY_NUMBER: &str = "crl_number";
const KEY_DER: &str = "crl_der";
const KEY_NEXT_UPDATE: &str = "crl_next_update";

/// The current CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crl {
    pub number: u64,
    pub der: Vec<u8>,
    pub next_update: i64,
}

impl Crl {
    pub fn pem(&self) -> String {
        pem_encode("X509 CRL", &self.der)
    }
}

fn number_of(bytes: Option<Vec<u8>>) -> u64 {
    bytes
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

pub fn current(conn: &Connection) -> Result<Option<Crl>, ApiError> {
    let Some(der) = state::meta_get(conn, KEY_DER)? else {
        return Ok(None);
    };
    Ok(Some(Crl {
        number: number_of(state::meta_get(conn, KEY_NUMBER)?),
        next_update: number_of(state::meta_get(conn, KEY_NEXT_UPDATE)?) as i64,
        der,
    }))
}

/// The CRL number only (cheap; the server polls it to notice revocations made by the CLI).
pub fn current_number(conn: &Connection) -> Result<u64, ApiError> {
    Ok(number_of(state::meta_get(conn, KEY_NUMBER)?))
}

fn offset(secs: i64) -> Result<time::OffsetDateTime, ApiError> {
    time::OffsetDateTime::from_unix_timestamp(secs).map_err(ApiError::internal)
}

/// Signs a new CRL from the revocation records and stores it. Call inside the write
/// transaction that changed the revocations.
pub fn refresh(conn: &Connection, ca: &Authority, now: i64) -> Result<Crl, ApiError> {
    let number = current_number(conn)? + 1;
    let mut revoked_certs = Vec::new();
    for (serial, at, reason) in records::revoked_unexpired(conn, now)? {
        revoked_certs.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(
                &hex::decode(&serial).map_err(ApiError::internal)?,
            ),
            revocation_time: offset(at)?,
            reason_code: Some(reason.crl_reason()),
            invalidity_date: None,
        });
    }
    let next_update = now + VALIDITY.as_secs() as i64;
    let params = CertificateRevocationListParams {
        this_update: offset(now - 60)?,
        next_update: offset(next_update)?,
        crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params
        .signed_by(ca.ca.issuer())
        .map_err(|e| ApiError::internal(format!("signing the CRL: {e}")))?;
    let der = crl.der().as_ref().to_vec();
    state::meta_set(conn, KEY_DER, &der)?;
    state::meta_set(conn, KEY_NUMBER, number.to_string().as_bytes())?;
    state::meta_set(conn, KEY_NEXT_UPDATE, next_update.to_string().as_bytes())?;
    Ok(Crl {
        number,
        der,
        next_update,
    })
}

/// Is the stored CRL missing or past half its validity?
pub fn needs_refresh(crl: Option<&Crl>, now: i64) -> bool {
    match crl {
        None => true,
        Some(c) => c.next_update - now < (VALIDITY.as_secs() / 2) as i64,
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_is_due_at_half_validity() {
        let crl = Crl {
            number: 1,
            der: vec![],
            next_update: 100_000,
        };
        assert!(!needs_refresh(Some(&crl), 100_000 - 13 * 3600));
        assert!(needs_refresh(Some(&crl), 100_000 - 11 * 3600));
        assert!(needs_refresh(None, 0));
    }
}
