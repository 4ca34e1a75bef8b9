//! A boot's timeline read from its console: PID 1's `TESSERA-INIT`/`TESSERA-READY` lines, the
//! supervisor's `service started`/`service ready` events, certmgr's certificate event and the
//! node agent's and hub's serving events. Event lines carry the guest's wall clock
//! (`HH:MM:SS.mmm`); `TESSERA-READY` carries both the uptime and the time since PID 1
//! started, and the supervisor's `node ready` event right after it the clock, which ties the
//! two together: every figure here is in milliseconds since PID 1 started.

use std::collections::BTreeMap;

use anyhow::bail;
use tessera_qemu::kv::{clock_ms, kv_u64};
use tessera_qemu::parse_kv_line;

/// One service's start and readiness, since PID 1 started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceTimes {
    pub started: Option<u64>,
    pub ready: Option<u64>,
}

impl ServiceTimes {
    /// Start → ready, if both were seen.
    pub fn start_to_ready(&self) -> Option<u64> {
        Some(self.ready?.saturating_sub(self.started?))
    }
}

/// What one boot's console says, since PID 1 started (`init_uptime_ms` is the uptime then).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeline {
    pub init_uptime_ms: u64,
    pub ready_uptime_ms: u64,
    pub userspace_ms: u64,
    pub failed: u64,
    pub services: BTreeMap<String, ServiceTimes>,
    /// The node certificate in the keyring (cluster CA or node-local CA).
    pub cert_ms: Option<u64>,
    /// The node API serving with its certificate.
    pub api_ms: Option<u64>,
    /// The hub serving (joined its cluster's gossip).
    pub hub_ms: Option<u64>,
}

impl Timeline {
    /// The node `available`: its API serves with its own certificate and the hub has joined.
    pub fn available_ms(&self) -> Option<u64> {
        Some(self.api_ms?.max(self.hub_ms?))
    }

    /// Reads a console transcript; it must reach TESSERA-READY.
    pub fn parse(text: &str) -> anyhow::Result<Timeline> {
        let mut t = Timeline::default();
        // (line's clock, what it marks) until PID 1's start in clock time is known.
        let mut marks: Vec<(u64, Mark)> = Vec::new();
        let mut pid1_clock = None;
        let mut ready_seen = false;
        for line in text.lines() {
            let kv = parse_kv_line(line);
            if line.starts_with("TESSERA-INIT ") {
                t.init_uptime_ms = kv_u64(&kv, "uptime_ms").unwrap_or(0);
                continue;
            }
            if line.starts_with("TESSERA-READY ") {
                t.ready_uptime_ms = kv_u64(&kv, "uptime_ms").unwrap_or(0);
                t.userspace_ms = kv_u64(&kv, "userspace_ms").unwrap_or(0);
                t.failed = kv_u64(&kv, "failed").unwrap_or(0);
                ready_seen = true;
                continue;
            }
            let Some(clock) = clock_ms(line) else {
                continue;
            };
            let service = kv.get("service").cloned();
            if line.contains(" init: node ready ") && pid1_clock.is_none() {
                if let Some(us) = kv_u64(&kv, "userspace_ms") {
                    pid1_clock = Some(clock.saturating_sub(us));
                }
            } else if line.contains(" init: service started ") {
                if let Some(s) = service {
                    marks.push((clock, Mark::Started(s)));
                }
            } else if line.contains(" init: service ready ") {
                if let Some(s) = service {
                    marks.push((clock, Mark::Ready(s)));
                }
            } else if line.contains(" certmgr[")
                && (line.contains(": node certificate stored in the keyring")
                    || line.contains(": standalone identity (node-local CA)"))
            {
                marks.push((clock, Mark::Cert));
            } else if line.contains(" node[") && line.contains(": node API serving ") {
                marks.push((clock, Mark::Api));
            } else if line.contains(" hub[") && line.contains(": hub ready ") {
                marks.push((clock, Mark::Hub));
            }
        }
        if !ready_seen || t.init_uptime_ms == 0 {
            bail!("the console lacks TESSERA-INIT or TESSERA-READY");
        }
        let Some(zero) = pid1_clock else {
            bail!("the console lacks the supervisor's `node ready` event after TESSERA-READY");
        };
        for (clock, mark) in marks {
            let at = clock.saturating_sub(zero);
            let first = |slot: &mut Option<u64>| *slot = slot.or(Some(at));
            match mark {
                Mark::Started(s) => first(&mut t.services.entry(s).or_default().started),
                Mark::Ready(s) => first(&mut t.services.entry(s).or_default().ready),
                Mark::Cert => first(&mut t.cert_ms),
                Mark::Api => first(&mut t.api_ms),
                Mark::Hub => first(&mut t.hub_ms),
            }
        }
        Ok(t)
    }
}

enum Mark {
    Started(String),
    Ready(String),
    Cert,
    Api,
    Hub,
}

/// Memory at idle, from the guest's `RSS <pid> <rss kib> <pss kib> <cmdline>` lines
/// ([`RSS_COMMAND`]). The agents are one static binary: its text is shared, and each agent's
/// RSS counts it again; the sum of their PSS (shared pages split among their users) is what
/// they take together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    pub pid1_kib: u64,
    /// PID 1's PSS: its RSS counts the binary's text that the agents share.
    pub pid1_pss_kib: u64,
    /// Every `tessera agent …` and `tessera klog` process (not the console's CLI commands).
    pub agents_rss_kib: u64,
    pub agents_pss_kib: u64,
    /// RSS per agent.
    pub per_agent: BTreeMap<String, u64>,
}

/// Prints one `RSS <pid> <VmRSS kB> <Pss kB> <argv…>` line per process with a resident set.
pub const RSS_COMMAND: &str = "for d in /proc/[0-9]*; do r=$(sed -n 's/^VmRSS:[^0-9]*\\([0-9]*\\).*/\\1/p' $d/status 2>/dev/null); p=$(sed -n 's/^Pss:[^0-9]*\\([0-9]*\\).*/\\1/p' $d/smaps_rollup 2>/dev/null); [ -n \"$r\" ] && echo \"RSS ${d#/proc/} $r ${p:-0} $(tr '\\0' ' ' < $d/cmdline 2>/dev/null)\"; done; true";

impl Memory {
    pub fn parse(text: &str) -> anyhow::Result<Memory> {
        let mut m = Memory::default();
        for line in text.lines() {
            let mut w = line.split_whitespace();
            if w.next() != Some("RSS") {
                continue;
            }
            let mut num = || w.next().and_then(|k| k.parse::<u64>().ok());
            let (Some(pid), Some(kib), Some(pss)) = (num(), num(), num()) else {
                continue;
            };
            let argv: Vec<&str> = w.collect();
            if pid == 1 {
                m.pid1_kib = kib;
                m.pid1_pss_kib = pss;
                continue;
            }
            let is_tessera = argv
                .first()
                .is_some_and(|a| a.rsplit('/').next() == Some("tessera"));
            // The shell's own `tessera` commands are not agents; agents run as `tessera agent X`
            // or `tessera klog`.
            let name = match argv.get(1..) {
                Some(["agent", name, ..]) => name.to_string(),
                Some(["klog", ..]) => "klog".to_string(),
                _ => continue,
            };
            if is_tessera {
                m.agents_rss_kib += kib;
                m.agents_pss_kib += pss;
                *m.per_agent.entry(name).or_default() += kib;
            }
        }
        if m.pid1_kib == 0 {
            bail!("no resident-set line for PID 1 in:\n{text}");
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "\
TESSERA-INIT uptime_ms=2960
04:37:50.298 init: service started pid=79 service=console
04:37:50.299 init: service ready service=console
04:37:50.614 init: service started pid=85 service=certmgr
04:37:51.796 certmgr[85]: standalone identity (node-local CA) cert_key=1 uptime_ms=4735
04:37:51.798 init: service ready service=certmgr
04:37:53.173 node[103]: node API serving listen=0.0.0.0:7443 name=node.tessera
04:37:53.484 hub[100]: hub ready api=Some(10.0.2.15:7440) cluster=tessera
04:37:53.487 init: service ready service=hub
TESSERA-READY services=11 userspace_ms=3470 uptime_ms=6427 failed=0
04:37:53.489 init: node ready failed=0 services=11 userspace_ms=3470
";

    #[test]
    fn events_are_placed_in_time_since_pid1_started() {
        let t = Timeline::parse(CONSOLE).unwrap();
        assert_eq!(t.init_uptime_ms, 2960);
        assert_eq!(
            (t.ready_uptime_ms, t.userspace_ms, t.failed),
            (6427, 3470, 0)
        );
        // PID 1 started at 04:37:53.489 - 3470 ms = 04:37:50.019.
        assert_eq!(t.services["console"].started, Some(279));
        assert_eq!(t.services["certmgr"].start_to_ready(), Some(1184));
        assert_eq!(t.services["hub"].started, None);
        assert_eq!(t.cert_ms, Some(1777));
        assert_eq!(t.api_ms, Some(3154));
        assert_eq!(t.available_ms(), Some(3465));
    }

    #[test]
    fn a_console_without_ready_is_refused() {
        let text = CONSOLE.replace("TESSERA-READY", "TESSERA-NOT");
        let e = Timeline::parse(&text).unwrap_err().to_string();
        assert!(e.contains("TESSERA-READY"), "{e}");
    }

    #[test]
    fn agents_memory_is_the_tessera_agents_and_klog_not_the_shell() {
        let text = "\
RSS 1 6200 3000 /init
RSS 79 900 300 /bin/sh -l
RSS 80 1500 200 /sbin/tessera klog
RSS 85 4100 1200 /sbin/tessera agent certmgr
RSS 86 3000 900 /sbin/tessera agent firewall
RSS 120 2000 700 tessera status
";
        let m = Memory::parse(text).unwrap();
        assert_eq!((m.pid1_kib, m.pid1_pss_kib), (6200, 3000));
        assert_eq!((m.agents_rss_kib, m.agents_pss_kib), (8600, 2300));
        assert_eq!(m.per_agent["certmgr"], 4100);
        assert!(!m.per_agent.contains_key("status"));
        assert!(Memory::parse("RSS 80 1500 200 /sbin/tessera klog\n").is_err());
    }
}
