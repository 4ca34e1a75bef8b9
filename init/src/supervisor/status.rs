//! What `tessera status` shows: the node and every service.

use super::{Service, Supervisor};
use tessera_common::control::{NodeStatus, ServiceStatus, Status};

/// Guest uptime in milliseconds (CLOCK_BOOTTIME, the clock behind /proc/uptime).
pub fn uptime_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

/// Resident set size of this process in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

impl Supervisor {
    pub(super) fn status(&self) -> Status {
        let state = match (self.shutdown, self.ready_ms) {
            (Some(_), _) => "destroying",
            (None, Some(_)) => "available",
            (None, None) => "initializing",
        };
        let failed: Vec<&str> = self
            .services
            .iter()
            .filter(|s| s.state == tessera_common::control::ServiceState::Failed)
            .map(|s| s.spec.name.as_str())
            .collect();
        let reason = match state {
            "initializing" => Some("services starting".to_string()),
            "available" if !failed.is_empty() => {
                Some(format!("failed services: {}", failed.join(", ")))
            }
            "destroying" => self.shutdown.map(|m| format!("{} in progress", m.as_str())),
            _ => None,
        };
        Status {
            node: NodeStatus {
                hostname: nix::unistd::gethostname()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                state: state.to_string(),
                reason,
                pid1: self.opts.pid1,
                uptime_ms: uptime_ms(),
                ready_userspace_ms: self.ready_ms,
                rss_kib: rss_kib(),
                kernel: nix::sys::utsname::uname()
                    .map(|u| u.release().to_string_lossy().into_owned())
                    .unwrap_or_default(),
                problems: self.opts.problems.clone(),
            },
            services: self.services.iter().map(service_status).collect(),
        }
    }
}

fn service_status(s: &Service) -> ServiceStatus {
    ServiceStatus {
        name: s.spec.name.clone(),
        kind: s.spec.kind.as_str().to_string(),
        state: s.state,
        pid: s.pid,
        restarts: s.restarts,
        status: s.status_text.clone(),
        reason: s.reason.clone(),
    }
}
