//! When to renew: at about 2/3 of a certificate's lifetime, moved by a random jitter of ±5 %
//! of the lifetime so that nodes booted together do not all renew in the same second; after a
//! failure, again with backoff, but never past the certificate's expiry.

use std::time::{Duration, SystemTime};

use tessera_userdata::retry::Backoff;

use crate::defaults;

/// The renewal time for a certificate valid from `not_before` to `not_after`, with `jitter`
/// in [-1, 1] scaling [`defaults::RENEW_JITTER`].
pub fn renew_at_with(not_before: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    let jitter = jitter.clamp(-1.0, 1.0);
    let fraction = defaults::RENEW_FRACTION + jitter * defaults::RENEW_JITTER;
    not_before + lifetime.mul_f64(fraction)
}

/// The renewal time with a fresh random jitter.
pub fn renew_at(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    renew_at_with(not_before, not_after, random_unit())
}

/// A uniform random number in [-1, 1].
pub fn random_unit() -> f64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        return 0.0;
    }
    let x = u64::from_le_bytes(b) >> 11; // 53 random bits
    (x as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
}

/// Retrying a failed renewal until the certificate expires.
pub struct RenewRetry {
    backoff: Backoff,
    not_after: SystemTime,
}

impl RenewRetry {
    pub fn new(not_after: SystemTime) -> RenewRetry {
        RenewRetry {
            backoff: Backoff::new(defaults::RENEW_RETRY_INITIAL, defaults::RENEW_RETRY_MAX),
            not_after,
        }
    }

    /// The delay before the next attempt, or `None` once the certificate has expired. The
    /// last attempt is made shortly before the expiry rather than after it.
    pub fn next_delay(&mut self, now: SystemTime) -> Option<Duration> {
        let left = self.not_after.duration_since(now).ok()?;
        if left.is_zero() {
            return None;
        }
        let delay = self.backoff.next_delay();
        Some(delay.min(left.mul_f64(0.5).max(Duration::from_secs(1)).min(left)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_at_two_thirds_within_the_jitter_bounds() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let life = Duration::from_secs(4 * 3600);
        let end = start + life;
        let exact = renew_at_with(start, end, 0.0);
        assert_eq!(exact.duration_since(start).unwrap().as_secs(), 9600);
        let lo = renew_at_with(start, end, -1.0)
            .duration_since(start)
            .unwrap();
        let hi = renew_at_with(start, end, 1.0)
            .duration_since(start)
            .unwrap();
        assert_eq!(lo.as_secs(), 9600 - 720);
        assert_eq!(hi.as_secs(), 9600 + 720);
        // Out-of-range jitter is clamped.
        assert_eq!(
            renew_at_with(start, end, 7.0),
            renew_at_with(start, end, 1.0)
        );
        for _ in 0..1000 {
            let t = renew_at(start, end).duration_since(start).unwrap();
            assert!(lo <= t && t <= hi, "{t:?}");
            assert!(t < life);
        }
        // The jitter really varies.
        let a: Vec<_> = (0..20).map(|_| renew_at(start, end)).collect();
        assert!(a.iter().any(|t| *t != a[0]));
    }

    #[test]
    fn failed_renewals_back_off_but_stop_at_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut retry = RenewRetry::new(now + Duration::from_secs(3600));
        let first = retry.next_delay(now).unwrap();
        assert!(first <= defaults::RENEW_RETRY_INITIAL, "{first:?}");
        let mut last = first;
        for _ in 0..20 {
            last = retry.next_delay(now).unwrap();
        }
        assert!(last <= defaults::RENEW_RETRY_MAX, "{last:?}");
        assert!(last >= defaults::RENEW_RETRY_MAX / 2, "{last:?}");
        // Close to the expiry the delay shrinks to what is left.
        let d = retry.next_delay(now + Duration::from_secs(3590)).unwrap();
        assert!(d <= Duration::from_secs(10), "{d:?}");
        assert_eq!(retry.next_delay(now + Duration::from_secs(3600)), None);
        assert_eq!(retry.next_delay(now + Duration::from_secs(4000)), None);
    }
}
