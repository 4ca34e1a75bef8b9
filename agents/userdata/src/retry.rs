//! Backoff with jitter, and the retry budget of a network source within one pass.

use std::time::{Duration, Instant};

/// How long a network source keeps trying within one pass, and how it spaces its attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total time one pass may spend on the source (attempts start only within it).
    pub budget: Duration,
    pub initial: Duration,
    pub max: Duration,
    pub connect_timeout: Duration,
    pub io_timeout: Duration,
}

/// Doubling delays from `initial` up to `max`, each drawn from [d/2, d] ("equal jitter") so
/// that many nodes booting together do not retry in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { next: initial, max }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next.min(self.max);
        self.next = (d * 2).min(self.max);
        jitter(d)
    }
}

/// A duration in [d/2, d].
pub fn jitter(d: Duration) -> Duration {
    let half = d / 2;
    let span = (d - half).as_nanos() as u64;
    if span == 0 {
        return d;
    }
    half + Duration::from_nanos(random_u64() % (span + 1))
}

/// Random bits from the kernel (getrandom(2)); the clock if that fails.
fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // The raw system call: in the static musl link libc's getrandom symbol may be missing.
    // SAFETY: the buffer is valid for 8 bytes; GRND_NONBLOCK never blocks at boot.
    let n = unsafe {
        libc::syscall(
            libc::SYS_getrandom,
            buf.as_mut_ptr(),
            buf.len(),
            libc::GRND_NONBLOCK,
        )
    };
    if n == 8 {
        return u64::from_ne_bytes(buf);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_nanos() as u64 ^ (std::process::id() as u64).rotate_left(32)
}

/// Runs `attempt` until it returns `Done`, the budget runs out, or it returns `GiveUp`.
/// Each attempt gets the time left in the budget (at least `min_attempt`).
pub enum Step<T, E> {
    Done(T),
    /// Worth another try after a delay.
    Retry(E),
    /// No point trying again in this pass.
    GiveUp(E),
}

/// Retries within `policy.budget`; returns the last error when it runs out.
pub fn retry<T, E>(
    policy: &RetryPolicy,
    mut on_retry: impl FnMut(&E, Duration, u32),
    mut attempt: impl FnMut(Duration) -> Step<T, E>,
) -> Result<T, E> {
    let deadline = Instant::now() + policy.budget;
    let mut backoff = Backoff::new(policy.initial, policy.max);
    let mut n = 0u32;
    loop {
        n += 1;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(200));
        match attempt(left) {
            Step::Done(t) => return Ok(t),
            Step::GiveUp(e) => return Err(e),
            Step::Retry(e) => {
                let delay = backoff.next_delay();
                if Instant::now() + delay >= deadline {
                    return Err(e);
                }
                on_retry(&e, delay, n);
                std::thread::sleep(delay);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_stay_within_jitter_bounds() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let bounds = [100, 200, 400, 400, 400];
        for ms in bounds {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(ms / 2) && d <= Duration::from_millis(ms),
                "{d:?} not in [{}, {ms}] ms",
                ms / 2
            );
        }
    }

    #[test]
    fn jitter_spreads_values() {
        let d = Duration::from_secs(1);
        let samples: std::collections::BTreeSet<_> = (0..20).map(|_| jitter(d)).collect();
        assert!(samples.len() > 10, "jitter should not be constant");
    }

    #[test]
    fn retry_stops_at_the_budget() {
        let policy = RetryPolicy {
            budget: Duration::from_millis(300),
            initial: Duration::from_millis(20),
            max: Duration::from_millis(40),
            connect_timeout: Duration::from_millis(10),
            io_timeout: Duration::from_millis(10),
        };
        let start = Instant::now();
        let mut tries = 0;
        let r: Result<(), &str> = retry(
            &policy,
            |_, _, _| {},
            |_| {
                tries += 1;
                Step::Retry("down")
            },
        );
        assert_eq!(r, Err("down"));
        assert!(tries >= 3, "{tries}");
        assert!(start.elapsed() < Duration::from_millis(600));
        let r: Result<u32, &str> = retry(&policy, |_, _, _| {}, |_| Step::GiveUp("no"));
        assert_eq!(r, Err("no"));
    }
}
