//! The conditions of a benchmark run: the host's load average before and after, its CPU
//! model, for benchmarks that boot VMs the QEMU version, and what share of the machine's CPU
//! time went to other processes (and to the hypervisor, as steal) while it ran. A run that
//! began with a 1-minute load above [`BUSY_LOAD`], or during which others took more than
//! [`BUSY_OTHERS`] of the CPU or the hypervisor stole more than [`BUSY_STEAL`], gets no goal
//! verdict: its figures say more about the neighbours than about us. Shared by every
//! `tessera bench …` (the host build only).

/// The 1-minute load above which a run is reported as made on a busy machine.
pub const BUSY_LOAD: f64 = 1.5;
/// The share of all CPUs' time used by processes outside this benchmark's process tree above
/// which the run was made on a busy machine.
pub const BUSY_OTHERS: f64 = 0.20;
/// The share of all CPUs' time stolen by the hypervisor above which the run was made on a
/// busy host.
pub const BUSY_STEAL: f64 = 0.10;

/// What was measured around a run.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    pub load_before: String,
    pub load_after: String,
    pub cpu: String,
    /// `qemu-system-x86_64 --version`'s first line, for benchmarks that boot VMs.
    pub qemu: Option<String>,
    ticks_before: Option<Ticks>,
    /// Shares of all CPUs' time during the run (after [`Conditions::finish`]).
    pub others_share: Option<f64>,
    pub steal_share: Option<f64>,
}

/// CPU time in clock ticks: the machine's (all CPUs) and this process tree's.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Ticks {
    busy: u64,
    steal: u64,
    total: u64,
    own: u64,
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

/// The aggregate `cpu` line of /proc/stat: (busy, steal, total) ticks. Busy is user, nice,
/// system, irq and softirq (guest time is inside user); total adds idle, iowait and steal.
fn machine_ticks(proc_stat: &str) -> Option<(u64, u64, u64)> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let [user, nice, system, idle, iowait, irq, softirq, steal] = f[..] else {
        return None;
    };
    let busy = user + nice + system + irq + softirq;
    Some((busy, steal, busy + idle + iowait + steal))
}

/// One /proc/<pid>/stat: (ppid, utime + stime + cutime + cstime). The command name may hold
/// spaces and parentheses, so fields are counted from its last `)`.
fn process_ticks(stat: &str) -> Option<(u32, u64)> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ppid = f.get(1)?.parse().ok()?;
    let mut ticks = 0;
    for i in 11..=14 {
        ticks += f.get(i)?.parse::<u64>().ok()?;
    }
    Some((ppid, ticks))
}

/// This process's CPU ticks, its reaped children's, and its live children's (QEMU, nats-server,
/// cfssl run as direct children while a benchmark measures).
fn own_ticks() -> Option<u64> {
    let me = std::process::id();
    let (_, mut own) = process_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let is_pid = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        if !is_pid {
            continue;
        }
        if let Some((ppid, t)) = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| process_ticks(&s))
        {
            if ppid == me {
                own += t;
            }
        }
    }
    Some(own)
}

fn read_ticks() -> Option<Ticks> {
    let (busy, steal, total) = machine_ticks(&std::fs::read_to_string("/proc/stat").ok()?)?;
    Some(Ticks {
        busy,
        steal,
        total,
        own: own_ticks()?,
    })
}

/// (others' share, steal share) of all CPUs' time between two readings.
fn shares(before: Ticks, after: Ticks) -> Option<(f64, f64)> {
    let total = after.total.checked_sub(before.total).filter(|t| *t > 0)? as f64;
    let busy = after.busy.saturating_sub(before.busy);
    let own = after.own.saturating_sub(before.own);
    let steal = after.steal.saturating_sub(before.steal);
    Some((
        busy.saturating_sub(own) as f64 / total,
        steal as f64 / total,
    ))
}

impl Conditions {
    /// Reads the load, CPU model and CPU time before a run; `qemu` is the emulator's version line.
    pub fn before(qemu: Option<String>) -> Conditions {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".to_string());
        Conditions {
            load_before: loadavg(),
            cpu,
            qemu,
            ticks_before: read_ticks(),
            ..Conditions::default()
        }
    }

    /// Reads the load after the run and what others and the hypervisor took during it.
    pub fn finish(&mut self) {
        self.load_after = loadavg();
        if let Some((others, steal)) = self
            .ticks_before
            .zip(read_ticks())
            .and_then(|(b, a)| shares(b, a))
        {
            self.others_share = Some(others);
            self.steal_share = Some(steal);
        }
    }

    /// Why the machine was too busy for a verdict, if it was.
    pub fn busy_reason(&self) -> Option<String> {
        if let Some(l) = first_load(&self.load_before).filter(|l| *l > BUSY_LOAD) {
            return Some(format!(
                "1-minute load {l:.2} at the start, above {BUSY_LOAD}"
            ));
        }
        if let Some(o) = self.others_share.filter(|o| *o > BUSY_OTHERS) {
            return Some(format!(
                "other processes used {:.0}% of the CPUs during the run, above {:.0}%",
                o * 100.0,
                BUSY_OTHERS * 100.0
            ));
        }
        if let Some(s) = self.steal_share.filter(|s| *s > BUSY_STEAL) {
            return Some(format!(
                "the hypervisor stole {:.0}% of the CPUs during the run, above {:.0}%",
                s * 100.0,
                BUSY_STEAL * 100.0
            ));
        }
        None
    }

    /// Whether the machine was too busy for a verdict.
    pub fn busy(&self) -> bool {
        self.busy_reason().is_some()
    }

    pub fn print(&self) {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        match &self.qemu {
            Some(q) => println!("host: {} ({cores} CPUs); {q}", self.cpu),
            None => println!("host: {} ({cores} CPUs)", self.cpu),
        }
        println!(
            "load average (1, 5, 15 min): before {}, after {}",
            self.load_before, self.load_after
        );
        if let (Some(o), Some(s)) = (self.others_share, self.steal_share) {
            println!(
                "during the run: other processes {:.1}% of the CPUs' time, hypervisor steal {:.1}%",
                o * 100.0,
                s * 100.0
            );
        }
        if let Some(why) = self.busy_reason() {
            println!("the machine was busy ({why}): no goal verdict; run again on a quiet machine");
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
        c.others_share = Some(0.35);
        assert!(c
            .busy_reason()
            .is_some_and(|r| r.contains("other processes used 35%")));
        c.others_share = Some(0.05);
        c.steal_share = Some(0.30);
        assert!(c.busy_reason().is_some_and(|r| r.contains("stole 30%")));
        c.steal_share = Some(0.01);
        assert!(!c.busy());
    }

    #[test]
    fn proc_stat_lines_are_read_into_ticks() {
        let stat = "cpu  143399 0 21940 224310 712 0 1756 58 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(
            machine_ticks(stat),
            Some((
                143399 + 21940 + 1756,
                58,
                143399 + 21940 + 1756 + 224310 + 712 + 58
            ))
        );
        assert_eq!(machine_ticks("cpu  1 2 3\n"), None);
        // A command name with spaces and a parenthesis; utime stime cutime cstime = 7 3 100 20.
        let pid = "4242 (qemu (x) y) S 17 4242 4242 0 -1 4194560 900 0 0 0 7 3 100 20 20 0 3 0 55 1000 200";
        assert_eq!(process_ticks(pid), Some((17, 130)));
        assert_eq!(process_ticks("4242 (cut"), None);
    }

    #[test]
    fn others_share_is_the_machines_busy_time_less_this_process_trees() {
        let before = Ticks {
            busy: 1000,
            steal: 10,
            total: 5000,
            own: 400,
        };
        let after = Ticks {
            busy: 1600,
            steal: 30,
            total: 6000,
            own: 800,
        };
        let (others, steal) = shares(before, after).expect("ticks advanced");
        assert!((others - 0.2).abs() < 1e-9, "{others}");
        assert!((steal - 0.02).abs() < 1e-9, "{steal}");
        assert_eq!(shares(after, after), None);
        let _ = read_ticks().expect("this Linux host has /proc/stat and /proc/self/stat");
    }
}
