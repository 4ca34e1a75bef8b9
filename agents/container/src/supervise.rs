//! Supervision of the containers: one pass every tick logs state changes and forwards the
//! containers' output as log events under their names, and restarts a container that ended
//! by its restart policy, with the intensity and backoff of services; node shutdown stops
//! them all.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};
use tessera_common::log::print_event as log;
use tessera_common::restart::{Decision, RestartTracker};

use crate::instances::{Record, RestartPolicy};
use crate::runtime::{self, Exit, Status};
use crate::service::{lock, status_word, Agent, BACKOFF, DEFAULT_GRACE, INTENSITY};

/// What the supervision loop knows of one container.
pub(crate) struct Watch {
    pub tracker: RestartTracker,
    /// Stopped by an operator, or given up: not restarted.
    pub held: bool,
    pub restart_at: Option<Instant>,
    pub restarts: u32,
    /// Last status reported, to log changes once.
    pub last: String,
    /// Why restarts stopped (intensity exceeded), until an operator starts it again.
    pub given_up: Option<String>,
    pub log_offset: u64,
}

impl Watch {
    pub fn new() -> Watch {
        Watch {
            tracker: RestartTracker::new(INTENSITY, BACKOFF),
            held: false,
            restart_at: None,
            restarts: 0,
            last: String::new(),
            given_up: None,
            log_offset: 0,
        }
    }
}

impl Agent {
    /// One pass of supervision: log state changes and output, restart by policy.
    pub fn supervise_once(&self) {
        let records: Vec<Record> = lock(&self.records).values().cloned().collect();
        for record in records {
            let dir = self.state_dir(&record.name);
            let state = runtime::state(&dir).ok();
            let mut ended = false;
            let due = {
                let mut watches = lock(&self.watches);
                let w = watches
                    .entry(record.name.clone())
                    .or_insert_with(Watch::new);
                forward_logs(&record.name, &dir, w);
                let word = state
                    .as_ref()
                    .map(|s| status_word(&s.status))
                    .unwrap_or("stopped");
                if word != w.last {
                    ended = matches!(
                        state.as_ref().map(|s| &s.status),
                        Some(Status::Stopped(_)) | Some(Status::Lost { init_alive: false })
                    );
                    if let Some(Status::Stopped(exit)) = state.as_ref().map(|s| &s.status) {
                        log(
                            "info",
                            "container exited",
                            json!({"container": record.name, "exit": exit.to_string()}),
                        );
                    } else if let Some(Status::Lost { init_alive }) =
                        state.as_ref().map(|s| &s.status)
                    {
                        log(
                            "warn",
                            "container lost its shim",
                            json!({"container": record.name, "init_alive": init_alive}),
                        );
                    }
                    w.last = word.to_string();
                }
                decide_restart(&record, state.as_ref().map(|s| &s.status), w)
            };
            // Its published ports go with it (a restart publishes them again).
            if ended {
                self.unpublish(&record);
            }
            if due {
                match self.launch(&record) {
                    Ok(()) => {
                        if let Some(w) = lock(&self.watches).get_mut(&record.name) {
                            w.restarts += 1;
                        }
                    }
                    Err(e) => log(
                        "error",
                        "container restart failed",
                        json!({"container": record.name, "error": e.reason}),
                    ),
                }
            }
        }
    }

    /// Stops every running container (node shutdown): in parallel, each with the default grace.
    pub fn stop_all(&self) {
        let records: Vec<Record> = lock(&self.records).values().cloned().collect();
        let dirs: Vec<(String, PathBuf)> = records
            .iter()
            .map(|r| {
                self.hold(&r.name);
                (r.name.clone(), self.state_dir(&r.name))
            })
            .filter(|(_, d)| d.exists())
            .collect();
        std::thread::scope(|s| {
            for (name, dir) in &dirs {
                s.spawn(move || {
                    if let Ok(exit) = runtime::stop(dir, DEFAULT_GRACE) {
                        log(
                            "info",
                            "container stopped for shutdown",
                            json!({"container": name, "exit": exit.to_string()}),
                        );
                    }
                });
            }
        });
    }
}

/// Whether a stopped container is due for its restart now (scheduling it when it just ended).
fn decide_restart(record: &Record, status: Option<&Status>, w: &mut Watch) -> bool {
    if w.held || record.restart == RestartPolicy::No {
        return false;
    }
    let failed = match status {
        Some(Status::Stopped(Exit::Code(0))) => false,
        Some(Status::Stopped(_)) | Some(Status::Lost { init_alive: false }) => true,
        _ => return false,
    };
    if !failed && record.restart == RestartPolicy::OnFailure {
        return false;
    }
    let now = Instant::now();
    match w.restart_at {
        Some(at) => {
            if now >= at {
                w.restart_at = None;
                return true;
            }
            false
        }
        None => {
            match w.tracker.decide(now) {
                Decision::RestartAfter(delay) => {
                    log(
                        "warn",
                        "restarting container",
                        json!({"container": record.name, "delay_ms": delay.as_millis() as u64, "restarts": w.restarts + 1}),
                    );
                    w.restart_at = Some(now + delay);
                }
                Decision::GiveUp { restarts, period } => {
                    let reason = format!(
                        "restart intensity exceeded: {restarts} restarts within {}",
                        humantime::format_duration(period)
                    );
                    log(
                        "error",
                        "container failed; giving up",
                        json!({"container": record.name, "reason": reason}),
                    );
                    w.held = true;
                    w.given_up = Some(reason);
                }
            }
            false
        }
    }
}

/// New lines of the container's log.jsonl as log events under the container's name.
fn forward_logs(name: &str, dir: &Path, w: &mut Watch) {
    let Ok(chunk) = runtime::logs::read(dir, Some(w.log_offset), None, runtime::LOG_LIMIT as usize)
    else {
        return;
    };
    w.log_offset = chunk.offset;
    for line in &chunk.lines {
        let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
        // Both streams at info: a container's stderr is its own business, and warnings are
        // mirrored on the console, where a chatty container would bury the node's own.
        let message = v["message"].as_str().unwrap_or(line);
        log(
            "info",
            message,
            json!({"container": name, "stream": v["stream"]}),
        );
    }
}
