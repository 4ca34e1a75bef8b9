//! Restart intensity and backoff, knowing nothing of processes: whether the restart intensity
//! is exceeded (more than `max_restarts` within `period`), and how long to back off before the
//! next try. PID 1 uses it for services, the container agent for containers.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    pub max_restarts: u32,
    pub period: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Restart after this delay.
    RestartAfter(Duration),
    /// Intensity exceeded: stop trying.
    GiveUp { restarts: usize, period: Duration },
}

/// Sliding window of recent restarts of one service.
///
/// The window runs on the service's own clock: time spent waiting out a backoff does not
/// count toward `period`. Otherwise a backoff longer than period/max (8 s against 5 in 10 s)
/// spaces the restarts so that the intensity is never exceeded and a crash loop never ends.
#[derive(Debug, Clone)]
pub struct RestartTracker {
    intensity: Intensity,
    backoff: Backoff,
    recent: VecDeque<Instant>,
    /// Sum of the backoff delays handed out: subtracted from the wall clock.
    waited: Duration,
}

impl RestartTracker {
    pub fn new(intensity: Intensity, backoff: Backoff) -> Self {
        RestartTracker {
            intensity,
            backoff,
            recent: VecDeque::new(),
            waited: Duration::ZERO,
        }
    }

    /// Called when a restart is wanted at `now`.
    pub fn decide(&mut self, now: Instant) -> Decision {
        let now = now.checked_sub(self.waited).unwrap_or(now);
        while self
            .recent
            .front()
            .is_some_and(|&t| now.duration_since(t) >= self.intensity.period)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.intensity.max_restarts as usize {
            return Decision::GiveUp {
                restarts: self.recent.len() + 1,
                period: self.intensity.period,
            };
        }
        self.recent.push_back(now);
        let doublings = (self.recent.len() - 1).min(31) as u32;
        let delay = self
            .backoff
            .initial
            .saturating_mul(1u32 << doublings)
            .min(self.backoff.max);
        self.waited += delay;
        Decision::RestartAfter(delay)
    }

    /// Forget past restarts (after an operator starts the service by hand).
    pub fn reset(&mut self) {
        self.recent.clear();
        self.waited = Duration::ZERO;
    }

    /// Restarts inside the current window.
    pub fn recent(&self) -> usize {
        self.recent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(max: u32, period_ms: u64) -> RestartTracker {
        RestartTracker::new(
            Intensity {
                max_restarts: max,
                period: Duration::from_millis(period_ms),
            },
            Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_millis(350),
            },
        )
    }

    #[test]
    fn backoff_waits_do_not_spread_a_crash_loop_past_the_period() {
        // 5 restarts in 10 s, backoff capped at 8 s: a service that crashes as soon as it is
        // started (100 ms after each backoff) must still be given up on.
        let mut t = RestartTracker::new(
            Intensity {
                max_restarts: 5,
                period: Duration::from_secs(10),
            },
            Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(8),
            },
        );
        let mut now = Instant::now();
        for _ in 0..5 {
            match t.decide(now) {
                Decision::RestartAfter(d) => now += d + Duration::from_millis(100),
                other => panic!("gave up too early: {other:?}"),
            }
        }
        assert!(matches!(
            t.decide(now),
            Decision::GiveUp { restarts: 6, .. }
        ));
    }

    #[test]
    fn gives_up_after_max_restarts_within_period() {
        let mut t = tracker(3, 10_000);
        let now = Instant::now();
        for _ in 0..3 {
            assert!(matches!(t.decide(now), Decision::RestartAfter(_)));
        }
        assert_eq!(
            t.decide(now),
            Decision::GiveUp {
                restarts: 4,
                period: Duration::from_secs(10)
            }
        );
    }

    #[test]
    fn old_restarts_leave_the_window_on_the_services_own_clock() {
        let mut t = tracker(2, 1_000);
        let t0 = Instant::now();
        t.decide(t0); // backoff 100 ms
        t.decide(t0 + Duration::from_millis(100)); // backoff 200 ms; 300 ms waited in all
        assert!(matches!(
            t.decide(t0 + Duration::from_millis(999)),
            Decision::GiveUp { .. }
        ));
        // The first restart leaves the window once 1 s of the service's own time has passed
        // since it, which is 1 s plus the 300 ms of backoff on the wall clock.
        assert!(matches!(
            t.decide(t0 + Duration::from_millis(1_299)),
            Decision::GiveUp { .. }
        ));
        assert!(matches!(
            t.decide(t0 + Duration::from_millis(1_300)),
            Decision::RestartAfter(_)
        ));
    }

    #[test]
    fn backoff_doubles_up_to_max() {
        let mut t = tracker(10, 60_000);
        let now = Instant::now();
        let delays: Vec<Duration> = (0..4)
            .map(|_| match t.decide(now) {
                Decision::RestartAfter(d) => d,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(delays, [100, 200, 350, 350].map(Duration::from_millis));
    }

    #[test]
    fn zero_intensity_never_restarts() {
        assert!(matches!(
            tracker(0, 1000).decide(Instant::now()),
            Decision::GiveUp { .. }
        ));
    }

    #[test]
    fn reset_forgets() {
        let mut t = tracker(1, 60_000);
        t.decide(Instant::now());
        t.reset();
        assert_eq!(t.recent(), 0);
        assert!(matches!(
            t.decide(Instant::now()),
            Decision::RestartAfter(_)
        ));
    }
}
