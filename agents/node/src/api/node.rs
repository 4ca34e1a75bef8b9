//! What the node API serves from: the life-cycle, the latest health results, PID 1's control
//! socket and the metric sources. Shared by the API handlers and the health checker.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde_json::json;
use tessera_common::control::{Client, Reply, Request, Status};

use crate::health::HealthResult;
use crate::lifecycle::{self, Event, Lifecycle, Refused};
use crate::metrics::{self, Family, Sources};
use crate::net::service::log;

pub struct Node {
    pub control: PathBuf,
    pub sources: Sources,
    lifecycle: Mutex<Lifecycle>,
    health: Mutex<BTreeMap<String, HealthResult>>,
}

impl Node {
    pub fn new(control: PathBuf, sources: Sources) -> Node {
        Node {
            control,
            sources,
            lifecycle: Mutex::new(Lifecycle::new()),
            health: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn lifecycle(&self) -> Lifecycle {
        self.lifecycle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Applies a life-cycle event; a change of state or reason is logged as an event.
    pub fn apply(&self, event: Event) -> Result<Lifecycle, Refused> {
        let mut current = self.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        let next = lifecycle::transition(&current, event)?;
        if next.state != current.state || next.reason != current.reason {
            log(
                "info",
                "node life-cycle",
                json!({"from": current.state.as_str(), "state": next.state.as_str(), "reason": next.reason}),
            );
        }
        *current = next.clone();
        Ok(next)
    }

    pub fn health(&self) -> BTreeMap<String, HealthResult> {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stores the latest results and feeds the failing services to the life-cycle.
    pub fn set_health(&self, results: BTreeMap<String, HealthResult>) {
        let failing = results
            .iter()
            .filter(|(_, r)| r.healthy == Some(false))
            .map(|(n, _)| n.clone())
            .collect();
        *self.health.lock().unwrap_or_else(|p| p.into_inner()) = results;
        let _ = self.apply(Event::Health { failing });
    }

    /// PID 1's status (blocking: call from a blocking thread).
    pub fn pid1_status(&self) -> Result<Status, String> {
        match Client::call(&self.control, &Request::Status) {
            Ok(Reply::Status(s)) => Ok(s),
            Ok(other) => Err(format!("PID 1 answered the status request with {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Life-cycle and health as metric families.
    pub fn families(&self) -> Vec<Family> {
        let l = self.lifecycle();
        let mut state = Family::gauge(
            "tessera_node_state",
            "The node's life-cycle state (1 for the current state).",
        );
        for s in ["initializing", "available", "unavailable"] {
            state.sample(
                &[("state", s)],
                if s == l.state.as_str() { 1.0 } else { 0.0 },
            );
        }
        let mut healthy = Family::gauge(
            "tessera_service_healthy",
            "1 when the service's health check passes, 0 when it fails.",
        );
        for (name, r) in self.health() {
            if let Some(h) = r.healthy {
                healthy.sample(&[("service", &name)], if h { 1.0 } else { 0.0 });
            }
        }
        vec![state, healthy]
    }

    /// The Prometheus exposition (blocking: reads /proc and asks PID 1).
    pub fn metrics_text(&self) -> String {
        let status = self.pid1_status().ok();
        metrics::exposition(&self.sources, status.as_ref(), self.families())
    }
}
