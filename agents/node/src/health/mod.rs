//! Health checks per service, declared in the service files' `[health]` table (`spec`), run
//! by the node agent (`check`) for the services PID 1 runs; results are kept as state (the
//! API's status, `tessera_service_healthy`), logged as events when they change, and feed the
//! node life-cycle (a failing check makes the node unavailable).

pub mod check;
pub mod spec;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::json;
use tessera_common::control::ServiceState;

use crate::api::node::Node;
use crate::net::service::log;
use spec::HealthSpec;

/// The latest result of a service's check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthResult {
    pub check: HealthSpec,
    /// None while the service does not run (nothing to check).
    pub healthy: Option<bool>,
    pub detail: String,
    /// RFC 3339 time of the last check.
    pub checked_at: String,
}

/// How often the checker looks at PID 1's status to see which services run.
pub const TICK: Duration = Duration::from_secs(1);

/// Runs every service's check at its interval, forever.
pub async fn run(node: Arc<Node>, checks: Vec<(String, HealthSpec)>) {
    if checks.is_empty() {
        return;
    }
    let mut next: BTreeMap<String, tokio::time::Instant> = checks
        .iter()
        .enumerate()
        .map(|(i, (n, _))| {
            (
                n.clone(),
                tokio::time::Instant::now() + check::first_delay(i),
            )
        })
        .collect();
    loop {
        tokio::time::sleep(TICK).await;
        let n = node.clone();
        let status = tokio::task::spawn_blocking(move || n.pid1_status())
            .await
            .ok()
            .and_then(|s| s.ok());
        let Some(status) = status else { continue };
        let mut results = node.health();
        for (name, spec) in &checks {
            let now = tokio::time::Instant::now();
            if next.get(name).is_some_and(|t| *t > now) {
                continue;
            }
            next.insert(name.clone(), now + spec.interval);
            let svc = status.services.iter().find(|s| &s.name == name);
            let running = svc
                .is_some_and(|s| matches!(s.state, ServiceState::Ready | ServiceState::Starting));
            let (healthy, detail) = match svc {
                None => (None, "no such service in PID 1's status".to_string()),
                Some(s) if !running => (
                    None,
                    format!("not checked: the service is {}", s.state.as_str()),
                ),
                Some(s) => match check::run(spec, s.pid).await {
                    Ok(d) => (Some(true), d),
                    Err(d) => (Some(false), d),
                },
            };
            let before = results.get(name).and_then(|r| r.healthy);
            if before != healthy || !results.contains_key(name) {
                let level = if healthy == Some(false) {
                    "warn"
                } else {
                    "info"
                };
                let state = match healthy {
                    Some(true) => "passing",
                    Some(false) => "failing",
                    None => "unknown",
                };
                log(
                    level,
                    "health check",
                    json!({"service": name, "state": state, "reason": detail}),
                );
            }
            results.insert(
                name.clone(),
                HealthResult {
                    check: spec.clone(),
                    healthy,
                    detail,
                    checked_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                },
            );
        }
        node.set_health(results);
    }
}
