//! One-time local tokens for child identities: 256 random bits (base64url, 43 characters),
//! single use, expiring after 5 minutes. Only their SHA-256 is kept. A token is handed out at
//! once, while its identity is still being made (thesis 4.9.6: "generate the token associated
//! with the outcome, and return it immediately"); redeeming it waits for that outcome.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine;
use tessera_identity::keys::KeyMode;
use tessera_identity::profile::PeerIdentity;
use zeroize::Zeroizing;

use crate::secret::SecretBytes;

/// A child's identity, ready to be handed over once.
#[derive(Debug)]
pub struct ChildIdentity {
    /// Leaf first, then the CA.
    pub chain_pem: String,
    pub key_mode: KeyMode,
    pub pkcs8: SecretBytes,
    pub peer: PeerIdentity,
}

/// The SHA-256 of a token: how the store knows it.
pub type TokenId = [u8; 32];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("this is not a certmgr token (43 base64url characters); pass the token `tessera identity child-token` printed")]
    Invalid,
    #[error("certmgr does not know this token (it restarted since, or the token is mistyped); ask for a new one")]
    Unknown,
    #[error("this token was already redeemed; tokens are single use — ask certmgr for a new one")]
    Used,
    #[error("this token expired (tokens live {0} s); ask certmgr for a new one")]
    Expired(u64),
    #[error("the identity for this token could not be made: {0}")]
    Failed(String),
    #[error("the identity for this token is still being made after {0} s; try again")]
    Timeout(u64),
    #[error("{0} identities are already waiting to be redeemed; redeem or let them expire first")]
    Full(usize),
}

impl TokenError {
    /// The protocol's error code.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Invalid => "token_invalid",
            TokenError::Unknown => "token_unknown",
            TokenError::Used => "token_used",
            TokenError::Expired(_) => "token_expired",
            TokenError::Failed(_) => "identity_failed",
            TokenError::Timeout(_) => "timeout",
            TokenError::Full(_) => "too_many_tokens",
        }
    }
}

enum Slot {
    Pending,
    Ready(ChildIdentity),
    Failed(String),
}

struct Entry {
    expires: Instant,
    slot: Slot,
}

#[derive(Clone, Copy)]
enum Spent {
    Used,
    Expired,
}

#[derive(Default)]
struct Inner {
    live: HashMap<TokenId, Entry>,
    /// Tokens redeemed or expired, kept until they would have expired anyway, to say so.
    spent: HashMap<TokenId, (Instant, Spent)>,
}

pub struct TokenStore {
    inner: Mutex<Inner>,
    changed: Condvar,
    ttl: Duration,
    max_live: usize,
}

impl TokenStore {
    pub fn new(ttl: Duration, max_live: usize) -> TokenStore {
        TokenStore {
            inner: Mutex::new(Inner::default()),
            changed: Condvar::new(),
            ttl,
            max_live,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent maps behind: keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new token whose identity is still to be made ([`TokenStore::complete`]).
    pub fn create(&self) -> Result<(Zeroizing<String>, TokenId), TokenError> {
        let mut inner = self.lock();
        prune(&mut inner, Instant::now());
        if inner.live.len() >= self.max_live {
            return Err(TokenError::Full(self.max_live));
        }
        let mut raw = Zeroizing::new([0u8; 32]);
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), raw.as_mut())
            .map_err(|_| TokenError::Failed("the system random number generator failed".into()))?;
        let token = Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(*raw));
        let id = token_id(&token);
        inner.live.insert(
            id,
            Entry {
                expires: Instant::now() + self.ttl,
                slot: Slot::Pending,
            },
        );
        Ok((token, id))
    }

    /// The outcome of making the identity behind `id`.
    pub fn complete(&self, id: &TokenId, outcome: Result<ChildIdentity, String>) {
        let mut inner = self.lock();
        if let Some(entry) = inner.live.get_mut(id) {
            entry.slot = match outcome {
                Ok(identity) => Slot::Ready(identity),
                Err(reason) => Slot::Failed(reason),
            };
        }
        drop(inner);
        self.changed.notify_all();
    }

    /// Redeems `token` once, waiting up to `wait` for an identity still being made.
    pub fn redeem(&self, token: &str, wait: Duration) -> Result<ChildIdentity, TokenError> {
        if !is_token_shaped(token) {
            return Err(TokenError::Invalid);
        }
        let id = token_id(token);
        let deadline = Instant::now() + wait;
        let mut inner = self.lock();
        loop {
            let now = Instant::now();
            prune(&mut inner, now);
            if let Some((_, spent)) = inner.spent.get(&id) {
                return Err(match spent {
                    Spent::Used => TokenError::Used,
                    Spent::Expired => TokenError::Expired(self.ttl.as_secs()),
                });
            }
            let Some(entry) = inner.live.get(&id) else {
                return Err(TokenError::Unknown);
            };
            if !matches!(entry.slot, Slot::Pending) {
                let expires = entry.expires;
                let entry = inner.live.remove(&id).map(|e| e.slot);
                inner.spent.insert(id, (expires, Spent::Used));
                return match entry {
                    Some(Slot::Ready(identity)) => Ok(identity),
                    Some(Slot::Failed(reason)) => Err(TokenError::Failed(reason)),
                    _ => Err(TokenError::Unknown),
                };
            }
            if now >= deadline {
                return Err(TokenError::Timeout(wait.as_secs()));
            }
            inner = self
                .changed
                .wait_timeout(inner, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Tokens not yet redeemed (for status).
    pub fn live(&self) -> usize {
        let mut inner = self.lock();
        prune(&mut inner, Instant::now());
        inner.live.len()
    }
}

/// Drops expired live tokens (zeroizing their keys) and forgets spent ones past their time.
fn prune(inner: &mut Inner, now: Instant) {
    let expired: Vec<TokenId> = inner
        .live
        .iter()
        .filter(|(_, e)| e.expires <= now)
        .map(|(id, _)| *id)
        .collect();
    for id in expired {
        if let Some(e) = inner.live.remove(&id) {
            inner
                .spent
                .insert(id, (now + Duration::from_secs(60), Spent::Expired));
            drop(e);
        }
    }
    inner.spent.retain(|_, (until, _)| *until > now);
}

pub fn token_id(token: &str) -> TokenId {
    let mut id = [0u8; 32];
    id.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
    id
}

/// 43 characters of the base64url alphabet: 256 bits without padding.
pub fn is_token_shaped(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn identity() -> ChildIdentity {
        ChildIdentity {
            chain_pem: "chain".into(),
            key_mode: KeyMode::EcdsaP256,
            pkcs8: SecretBytes::from_slice(b"key"),
            peer: PeerIdentity {
                cluster: "c".into(),
                subsystem: "hub".into(),
                node: "n".into(),
                agent_id: "hub".into(),
                capabilities: vec![],
                serial: "01".into(),
                not_after: std::time::SystemTime::now(),
            },
        }
    }

    #[test]
    fn tokens_are_256_bit_and_single_use() {
        let store = TokenStore::new(Duration::from_secs(300), 8);
        let (token, id) = store.create().unwrap();
        assert!(is_token_shaped(&token), "{}", token.as_str());
        let (other, _) = store.create().unwrap();
        assert_ne!(token.as_str(), other.as_str());
        store.complete(&id, Ok(identity()));
        let got = store.redeem(&token, Duration::ZERO).unwrap();
        assert_eq!(got.chain_pem, "chain");
        assert_eq!(
            store.redeem(&token, Duration::ZERO).unwrap_err(),
            TokenError::Used
        );
        assert_eq!(store.live(), 1);
    }

    #[test]
    fn garbage_and_unknown_tokens_are_told_apart() {
        let store = TokenStore::new(Duration::from_secs(300), 8);
        assert_eq!(
            store.redeem("x", Duration::ZERO).unwrap_err(),
            TokenError::Invalid
        );
        assert_eq!(
            store.redeem(&"a".repeat(42), Duration::ZERO).unwrap_err(),
            TokenError::Invalid
        );
        assert_eq!(
            store
                .redeem(&format!("{}/", "a".repeat(42)), Duration::ZERO)
                .unwrap_err(),
            TokenError::Invalid
        );
        assert_eq!(
            store.redeem(&"A".repeat(43), Duration::ZERO).unwrap_err(),
            TokenError::Unknown
        );
    }

    #[test]
    fn tokens_expire() {
        let store = TokenStore::new(Duration::from_millis(50), 8);
        let (token, id) = store.create().unwrap();
        store.complete(&id, Ok(identity()));
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(
            store.redeem(&token, Duration::ZERO).unwrap_err(),
            TokenError::Expired(0)
        );
        assert_eq!(store.live(), 0);
    }

    #[test]
    fn redeem_waits_for_a_pending_identity_and_reports_failures() {
        let store = Arc::new(TokenStore::new(Duration::from_secs(300), 8));
        let (token, id) = store.create().unwrap();
        assert_eq!(
            store.redeem(&token, Duration::from_millis(20)).unwrap_err(),
            TokenError::Timeout(0)
        );
        let s = store.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            s.complete(&id, Ok(identity()));
        });
        assert!(store.redeem(&token, Duration::from_secs(5)).is_ok());
        t.join().unwrap();

        let (token, id) = store.create().unwrap();
        store.complete(&id, Err("CA refused: capability_missing".into()));
        let err = store.redeem(&token, Duration::ZERO).unwrap_err();
        assert_eq!(err.code(), "identity_failed");
        assert!(err.to_string().contains("capability_missing"));
        assert_eq!(
            store.redeem(&token, Duration::ZERO).unwrap_err(),
            TokenError::Used
        );
    }

    #[test]
    fn concurrent_redemptions_of_one_token_yield_exactly_one_identity() {
        let store = Arc::new(TokenStore::new(Duration::from_secs(300), 8));
        let (token, id) = store.create().unwrap();
        let token = Arc::new(token.to_string());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (s, t) = (store.clone(), token.clone());
                std::thread::spawn(move || s.redeem(&t, Duration::from_secs(5)).is_ok())
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        store.complete(&id, Ok(identity()));
        let wins = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|ok| *ok)
            .count();
        assert_eq!(wins, 1);
    }

    #[test]
    fn the_number_of_live_tokens_is_bounded() {
        let store = TokenStore::new(Duration::from_secs(300), 2);
        store.create().unwrap();
        store.create().unwrap();
        assert_eq!(store.create().unwrap_err(), TokenError::Full(2));
    }
}
