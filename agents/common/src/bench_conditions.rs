//! The conditions of a benchmark run: the host's load average before and after, its CPU
//! model and the QEMU version. A machine whose 1-minute load was above [`BUSY_LOAD`] when the
//! run began gets no goal verdict: its figures say more about the neighbours than about us.

use std::process::Command;

/// The 1-minute load above which a run is reported as made on a busy machine.
pub const BUSY_LOAD: f64 = 1.5;

/// What was measured around a run.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    pub load_before: String,
    pub load_after: String,
    pub cpu: String,
    pub qemu: String,
}

/// The first three fields of /proc/loadavg ("0.52 0.61 0.70"), or why there are none.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

fn first_load(s: &str) -> Option<f64> {
    s.split_whitespace().next()?.parse().ok()
}

impl Conditions {
    /// Reads the load, CPU model and QEMU version before a run.
    pub fn before(qemu: &str) -> Conditions {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".to_string());
        let qemu = Command::new(qemu)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.lines().next().map(str::to_string))
            .unwrap_or_else(|| format!("unknown ({qemu} --version failed)"));
        Conditions {
            load_before: loadavg(),
            load_after: String::new(),
            cpu,
            qemu,
        }
    }

    /// Whether the machine was too busy at the start for a verdict.
    pub fn busy(&self) -> bool {
        first_load(&self.load_before).is_some_and(|l| l > BUSY_LOAD)
    }

    pub fn print(&self) {
        println!("host: {}; {}", self.cpu, self.qemu);
        println!(
            "load average (1, 5, 15 min): before {}, after {}",
            self.load_before, self.load_after
        );
        if self.busy() {
            println!(
                "the machine was busy (1-minute load above {BUSY_LOAD} at the start): no goal verdict; run again on a quiet machine"
            );
        }
    }
}

/// A goal's verdict: none on a busy machine.
pub fn verdict(pass: bool, busy: bool) -> &'static str {
    match (busy, pass) {
        (true, _) => "no verdict (busy)",
        (false, true) => "pass",
        (false, false) => "FAIL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_machine_gets_no_verdict() {
        assert_eq!(verdict(true, false), "pass");
        assert_eq!(verdict(false, false), "FAIL");
        assert_eq!(verdict(false, true), "no verdict (busy)");
    }

    #[test]
    fn busy_is_the_one_minute_load_above_the_threshold() {
        let mut c = Conditions {
            load_before: "1.60 0.20 0.10".into(),
            ..Conditions::default()
        };
        assert!(c.busy());
        c.load_before = "1.50 3.00 3.00".into();
        assert!(!c.busy());
        c.load_before = "unknown (no /proc)".into();
        assert!(!c.busy());
    }
}
