//! Progress lines on stderr, one per build step, with sizes: image builds take seconds to
//! minutes and the user should see which step is running.

use std::time::Instant;

/// Prints `[  1.2s] step     message` lines to stderr.
#[derive(Debug)]
pub struct Progress {
    start: Instant,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            start: Instant::now(),
        }
    }
}

impl Progress {
    pub fn new() -> Progress {
        Progress::default()
    }

    pub fn step(&self, step: &str, message: impl std::fmt::Display) {
        eprintln!(
            "[{:6.1}s] {step:<10} {message}",
            self.start.elapsed().as_secs_f64()
        );
    }

    pub fn elapsed(&self) -> std::time::Duration {
        self.start.elapsed()
    }
}

/// Byte counts as people read them: `1.9 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_sizes() {
        assert_eq!(super::human(12), "12 B");
        assert_eq!(super::human(2 * 1024 * 1024 + 100_000), "2.1 MiB");
    }
}
