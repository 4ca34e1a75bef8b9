//! The service supervisor: starts services from their files in dependency order (independent
//! ones in parallel), waits for readiness, restarts them by their OTP restart type within a
//! restart intensity, stops them in reverse order, and answers the control socket.
//!
//! One event loop owns all service state and is the single owner of child exit statuses:
//! it reaps with `waitpid(-1, WNOHANG)` on SIGCHLD, and nothing else in the process waits
//! for children. It runs as PID 1 on a node and as a child subreaper on a host (tests).

pub mod cgroup;
pub mod control;
pub mod graph;
pub mod identity;
pub mod logs;
pub mod manifest;
pub mod notify;
mod operator;
pub mod restart;
mod shutdown;
pub mod spawn;
mod status;

pub use status::{rss_kib, uptime_ms};

use graph::Graph;
use logs::LogHub;
use manifest::{Escalation, Kind, Readiness, ServiceSpec};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use restart::{Decision, RestartTracker};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_common::control::{Reply, Request, ServiceState, ShutdownMode};
use tessera_common::log::{Level, LogEvent, Stream};
use tessera_common::paths;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};

/// How the supervisor is set up; PID 1 and the host subreaper differ only here.
pub struct Options {
    pub services_dir: PathBuf,
    pub runtime_dir: PathBuf,
    /// cgroup v2 mount to put services under; None runs without cgroups (host tests).
    pub cgroup_base: Option<PathBuf>,
    pub pid1: bool,
    /// When PID 1 (or the subreaper run) started, for `userspace_ms`.
    pub started: Instant,
    /// Problems found before the supervisor ran (early boot), shown in `tessera status`.
    pub problems: Vec<String>,
    /// PATH given to services.
    pub service_path: String,
}

/// Inputs to the event loop from its helper tasks.
pub enum Event {
    Notify {
        idx: usize,
        pairs: Vec<(String, String)>,
    },
    /// certmgr's answer to the supervisor's request for a service's identity token.
    IdentityToken {
        idx: usize,
        generation: u64,
        result: Result<String, identity::Refusal>,
    },
    Timer {
        idx: usize,
        generation: u64,
        kind: TimerKind,
    },
    Control {
        request: Request,
        reply: oneshot::Sender<Reply>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    /// Back-off elapsed: start again.
    Restart,
    /// Grace period elapsed: SIGKILL.
    Kill,
    /// No WATCHDOG=1 within the period.
    Watchdog,
}

/// Why a service is being stopped, which decides what happens when it has exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopIntent {
    Manual,
    Shutdown,
    /// Operator restart: start again, with a fresh restart intensity.
    Restart,
    /// A service it requires restarts (rest_for_one): start again when that one is ready.
    Escalation,
    /// Watchdog expired: counts as a crash.
    Watchdog,
}

struct Service {
    spec: ServiceSpec,
    state: ServiceState,
    pid: Option<u32>,
    /// Bumped whenever a pending timer must be ignored.
    generation: u64,
    watchdog_generation: u64,
    tracker: RestartTracker,
    restarts: u32,
    status_text: Option<String>,
    reason: Option<String>,
    stop_intent: Option<StopIntent>,
    notify_socket: Option<notify::NotifySocket>,
    /// The one-time identity token obtained for the next start, until it is handed over.
    identity_token: Option<String>,
}

impl Service {
    fn running(&self) -> bool {
        matches!(
            self.state,
            ServiceState::Starting | ServiceState::Ready | ServiceState::Stopping
        )
    }

    fn settled(&self) -> bool {
        matches!(
            self.state,
            ServiceState::Ready | ServiceState::Done | ServiceState::Failed | ServiceState::Stopped
        )
    }

    fn up(&self) -> bool {
        matches!(self.state, ServiceState::Ready | ServiceState::Done)
    }
}

pub struct Supervisor {
    opts: Options,
    services: Vec<Service>,
    graph: Graph,
    hub: Arc<LogHub>,
    cgroups: Option<cgroup::Cgroups>,
    events: mpsc::UnboundedSender<Event>,
    inbox: mpsc::UnboundedReceiver<Event>,
    ready_ms: Option<u64>,
    shutdown: Option<ShutdownMode>,
}

impl Supervisor {
    /// Loads the service files and prepares the supervisor. Bad files and unsatisfiable
    /// dependencies are logged with their cause and skipped.
    pub fn new(mut opts: Options, hub: Arc<LogHub>) -> Supervisor {
        let t = Instant::now();
        let (specs, file_errors) = manifest::load_dir(&opts.services_dir);
        hub.push(
            LogEvent::new("init", Level::Debug, "service files read")
                .field("ms", t.elapsed().as_secs_f64() * 1000.0),
        );
        for e in &file_errors {
            hub.push(
                LogEvent::new("init", Level::Error, "service file skipped")
                    .field("error", e.to_string())
                    .field("file", e.file.display().to_string()),
            );
            opts.problems.push(e.to_string());
        }
        let (specs, graph, graph_problems) = graph::build(specs);
        for p in graph_problems {
            hub.push(
                LogEvent::new("init", Level::Error, "service skipped")
                    .field("service", p.service.clone())
                    .field("error", p.message.clone()),
            );
            opts.problems.push(p.message);
        }
        let cgroups = match &opts.cgroup_base {
            Some(base) => match cgroup::Cgroups::setup(base) {
                Ok((cg, missing)) => {
                    for m in missing {
                        hub.push(
                            LogEvent::new("init", Level::Warn, "cgroup controller unavailable")
                                .field("controller", m),
                        );
                    }
                    Some(cg)
                }
                Err(e) => {
                    let msg = format!(
                        "cgroups unavailable under {}: {e}; services run without limits",
                        base.display()
                    );
                    hub.push(LogEvent::new("init", Level::Error, &msg));
                    opts.problems.push(msg);
                    None
                }
            },
            None => None,
        };
        hub.push(
            LogEvent::new("init", Level::Debug, "cgroups set up")
                .field("ms", t.elapsed().as_secs_f64() * 1000.0),
        );
        let services = specs
            .into_iter()
            .map(|spec| {
                hub.set_console_level(&spec.name, spec.console_level);
                Service {
                    tracker: RestartTracker::new(spec.intensity, spec.backoff),
                    spec,
                    state: ServiceState::Waiting,
                    pid: None,
                    generation: 0,
                    watchdog_generation: 0,
                    restarts: 0,
                    status_text: None,
                    reason: None,
                    stop_intent: None,
                    notify_socket: None,
                    identity_token: None,
                }
            })
            .collect();
        let (events, inbox) = mpsc::unbounded_channel();
        Supervisor {
            opts,
            services,
            graph,
            hub,
            cgroups,
            events,
            inbox,
            ready_ms: None,
            shutdown: None,
        }
    }

    /// Runs until a shutdown has stopped every service; returns the requested mode.
    pub async fn run(mut self) -> ShutdownMode {
        // Signal handlers come first so that no child exit can be missed.
        let mut sigchld = signal(SignalKind::child())
            .expect("registering SIGCHLD fails only when the process is out of resources");
        let mut sig_term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut sig_int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut sig_pwr = signal(SignalKind::from_raw(libc::SIGPWR)).expect("SIGPWR handler");
        let mut sig_usr1 = signal(SignalKind::user_defined1()).expect("SIGUSR1 handler");
        let mut sig_usr2 = signal(SignalKind::user_defined2()).expect("SIGUSR2 handler");

        let names: Vec<String> = self
            .services
            .iter()
            .map(|s| s.spec.name.clone())
            .chain(["init".to_string(), "kernel".to_string()])
            .collect();
        let socket = paths::control_socket(&self.opts.runtime_dir);
        if let Err(e) = control::listen(
            &socket,
            self.events.clone(),
            self.hub.clone(),
            Arc::new(names),
        ) {
            let msg = format!(
                "control socket {} unavailable: {e}; the tessera CLI will not work",
                socket.display()
            );
            self.hub.push(LogEvent::new("init", Level::Error, &msg));
            self.opts.problems.push(msg);
        }
        self.hub.push(
            LogEvent::new("init", Level::Debug, "control socket up").field(
                "ms_since_start",
                self.opts.started.elapsed().as_secs_f64() * 1000.0,
            ),
        );
        self.reap();
        self.advance();
        loop {
            tokio::select! {
                _ = sigchld.recv() => self.reap(),
                Some(event) = self.inbox.recv() => self.handle(event),
                _ = sig_term.recv() => self.signal_shutdown("SIGTERM", self.default_mode(ShutdownMode::Reboot)),
                _ = sig_int.recv() => self.signal_shutdown("SIGINT", self.default_mode(ShutdownMode::Reboot)),
                _ = sig_pwr.recv() => self.signal_shutdown("SIGPWR", ShutdownMode::Poweroff),
                _ = sig_usr1.recv() => self.signal_shutdown("SIGUSR1", ShutdownMode::Halt),
                _ = sig_usr2.recv() => self.signal_shutdown("SIGUSR2", ShutdownMode::Poweroff),
            }
            if let Some(mode) = self.shutdown {
                if !self.services.iter().any(Service::running) {
                    self.hub.push(
                        LogEvent::new("init", Level::Info, "all services stopped")
                            .field("mode", mode.as_str()),
                    );
                    return mode;
                }
            }
        }
    }

    /// On a host, SIGTERM and Ctrl-C end the run rather than "reboot" it.
    fn default_mode(&self, pid1_mode: ShutdownMode) -> ShutdownMode {
        if self.opts.pid1 {
            pid1_mode
        } else {
            ShutdownMode::Poweroff
        }
    }

    fn signal_shutdown(&mut self, signal: &str, mode: ShutdownMode) {
        self.begin_shutdown(
            mode,
            LogEvent::new("init", Level::Info, "shutdown requested by signal")
                .field("signal", signal),
        );
    }

    /// Collects every exited child. Unknown pids are orphans re-parented to us.
    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(WaitStatus::Exited(pid, code)) => self.child_exited(
                    pid.as_raw() as u32,
                    code == 0,
                    format!("exited with status {code}"),
                ),
                Ok(WaitStatus::Signaled(pid, sig, _)) => self.child_exited(
                    pid.as_raw() as u32,
                    false,
                    format!("killed by {}", sig.as_str()),
                ),
                Ok(_) => {}
            }
        }
        self.advance();
    }

    fn child_exited(&mut self, pid: u32, normal: bool, how: String) {
        let Some(idx) = self.services.iter().position(|s| s.pid == Some(pid)) else {
            self.hub.push(
                LogEvent::new("init", Level::Debug, "reaped orphan")
                    .field("pid", pid)
                    .field("status", how),
            );
            return;
        };
        // Whatever the main process left in its group goes with it.
        let _ = kill(Pid::from_raw(-(pid as i32)), Signal::SIGKILL);
        // Messages it sent before exiting come first (READY=1 then exit 0 is a normal end).
        let pending = self.services[idx]
            .notify_socket
            .as_ref()
            .map(|n| n.drain())
            .unwrap_or_default();
        for pairs in pending {
            self.notified(idx, pairs);
        }
        let svc = &mut self.services[idx];
        svc.pid = None;
        svc.generation += 1;
        let name = svc.spec.name.clone();
        let level = if normal || svc.state == ServiceState::Stopping {
            Level::Info
        } else {
            Level::Warn
        };
        self.hub.push(
            LogEvent::new("init", level, "service exited")
                .field("service", name)
                .field("pid", pid)
                .field("status", how.clone()),
        );
        match (svc.state, svc.stop_intent.take()) {
            (ServiceState::Stopping, Some(StopIntent::Watchdog)) => {
                self.crashed(idx, false, "watchdog expired".into())
            }
            (ServiceState::Stopping, Some(StopIntent::Restart)) => {
                svc.tracker.reset();
                svc.state = ServiceState::Waiting;
            }
            (ServiceState::Stopping, Some(StopIntent::Escalation)) => {
                svc.state = ServiceState::Waiting
            }
            (ServiceState::Stopping, _) => {
                svc.state = ServiceState::Stopped;
                svc.reason = Some(format!("stopped ({how})"));
            }
            (ServiceState::Starting, _) if svc.spec.kind == Kind::Oneshot && normal => {
                svc.state = ServiceState::Done;
                svc.reason = Some(how);
                self.hub.push(
                    LogEvent::new("init", Level::Info, "service done")
                        .field("service", svc.spec.name.clone()),
                );
            }
            _ => self.crashed(idx, normal, how),
        }
    }

    /// A service ended on its own: restart it, or give up, by its restart type and intensity.
    fn crashed(&mut self, idx: usize, normal: bool, how: String) {
        let svc = &mut self.services[idx];
        let name = svc.spec.name.clone();
        if self.shutdown.is_some() || !restart::wants_restart(svc.spec.restart, normal) {
            svc.state = match (normal, svc.state) {
                // It was ready and finished its work: what requires it may still start.
                (true, ServiceState::Ready) => ServiceState::Done,
                (true, _) => ServiceState::Stopped,
                (false, _) => ServiceState::Failed,
            };
            svc.reason = Some(how);
            return;
        }
        match svc.tracker.decide(Instant::now()) {
            Decision::RestartAfter(delay) => {
                svc.restarts += 1;
                svc.state = ServiceState::Backoff;
                svc.reason = Some(how);
                let (generation, restarts, escalation) =
                    (svc.generation, svc.restarts, svc.spec.escalation);
                self.hub.push(
                    LogEvent::new("init", Level::Warn, "restarting service")
                        .field("service", name)
                        .field("delay_ms", delay.as_millis() as u64)
                        .field("restarts", restarts),
                );
                self.timer(idx, generation, TimerKind::Restart, delay);
                if escalation == Escalation::RestForOne {
                    for dep in self.graph.dependents(idx) {
                        self.stop(dep, StopIntent::Escalation);
                    }
                }
            }
            Decision::GiveUp { restarts, period } => {
                let reason = format!(
                    "restart intensity exceeded: {restarts} restarts within {}; last: {how}",
                    humantime::format_duration(period)
                );
                self.give_up(idx, reason);
            }
        }
    }

    /// The service is not tried again: failed, with the reason `tessera status` and the node
    /// API report; the node settles without it.
    fn give_up(&mut self, idx: usize, reason: String) {
        let svc = &mut self.services[idx];
        self.hub.push(
            LogEvent::new("init", Level::Error, "service failed; giving up")
                .field("service", svc.spec.name.clone())
                .field("reason", reason.clone()),
        );
        svc.state = ServiceState::Failed;
        svc.reason = Some(reason);
    }

    fn timer(&self, idx: usize, generation: u64, kind: TimerKind, after: Duration) {
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = events.send(Event::Timer {
                idx,
                generation,
                kind,
            });
        });
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Notify { idx, pairs } => self.notified(idx, pairs),
            Event::Timer {
                idx,
                generation,
                kind,
            } => self.timer_fired(idx, generation, kind),
            Event::Control { request, reply } => {
                let answer = self.control(request);
                let _ = reply.send(answer);
            }
            Event::IdentityToken {
                idx,
                generation,
                result,
            } => self.identity_token(idx, generation, result),
        }
        self.advance();
    }

    fn timer_fired(&mut self, idx: usize, generation: u64, kind: TimerKind) {
        let svc = &mut self.services[idx];
        match kind {
            TimerKind::Restart
                if svc.generation == generation && svc.state == ServiceState::Backoff =>
            {
                svc.state = ServiceState::Waiting
            }
            TimerKind::Kill
                if svc.generation == generation && svc.state == ServiceState::Stopping =>
            {
                if let Some(pid) = svc.pid {
                    self.hub.push(
                        LogEvent::new("init", Level::Warn, "service did not stop in time; killing")
                            .field("service", svc.spec.name.clone())
                            .field("grace_ms", svc.spec.stop_grace.as_millis() as u64),
                    );
                    let _ = kill(Pid::from_raw(-(pid as i32)), Signal::SIGKILL);
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                    if let Some(cg) = &self.cgroups {
                        let _ = cg.kill(&svc.spec.name);
                    }
                }
            }
            TimerKind::Watchdog
                if svc.watchdog_generation == generation && svc.state == ServiceState::Ready =>
            {
                self.hub.push(
                    LogEvent::new("init", Level::Error, "watchdog expired")
                        .field("service", svc.spec.name.clone()),
                );
                self.stop(idx, StopIntent::Watchdog);
            }
            _ => {}
        }
    }

    fn notified(&mut self, idx: usize, pairs: Vec<(String, String)>) {
        for (key, value) in pairs {
            let svc = &mut self.services[idx];
            match key.as_str() {
                "READY"
                    if value == "1"
                        && svc.state == ServiceState::Starting
                        && svc.spec.ready == Readiness::Notify =>
                {
                    self.mark_ready(idx)
                }
                "STATUS" => svc.status_text = Some(value),
                "WATCHDOG" if value == "1" => self.arm_watchdog(idx),
                "WATCHDOG" if value == "trigger" => self.stop(idx, StopIntent::Watchdog),
                _ => {}
            }
        }
    }

    fn arm_watchdog(&mut self, idx: usize) {
        let svc = &mut self.services[idx];
        if let (Some(period), ServiceState::Ready) = (svc.spec.watchdog, svc.state) {
            svc.watchdog_generation += 1;
            let generation = svc.watchdog_generation;
            self.timer(idx, generation, TimerKind::Watchdog, period);
        }
    }

    fn mark_ready(&mut self, idx: usize) {
        let svc = &mut self.services[idx];
        svc.state = ServiceState::Ready;
        self.hub.push(
            LogEvent::new("init", Level::Info, "service ready")
                .field("service", svc.spec.name.clone()),
        );
        self.arm_watchdog(idx);
    }

    /// Moves everything forward that can move: starts waiting services whose dependencies
    /// are up, fails those whose requirements failed, continues a shutdown, and announces
    /// readiness once every service has settled.
    fn advance(&mut self) {
        if self.shutdown.is_some() {
            self.advance_shutdown();
            return;
        }
        loop {
            let mut changed = false;
            for idx in self.graph.start_order() {
                if self.services[idx].state != ServiceState::Waiting {
                    continue;
                }
                let blocked_by = self.graph.requires[idx].iter().find(|&&d| {
                    matches!(
                        self.services[d].state,
                        ServiceState::Failed | ServiceState::Stopped
                    )
                });
                if let Some(&dep) = blocked_by {
                    let reason = format!(
                        "required service {:?} is {}",
                        self.services[dep].spec.name,
                        self.services[dep].state.as_str()
                    );
                    self.hub.push(
                        LogEvent::new("init", Level::Error, "service not started")
                            .field("service", self.services[idx].spec.name.clone())
                            .field("reason", reason.clone()),
                    );
                    self.services[idx].state = ServiceState::Failed;
                    self.services[idx].reason = Some(reason);
                    changed = true;
                    continue;
                }
                let requires_up = self.graph.requires[idx]
                    .iter()
                    .all(|&d| self.services[d].up());
                let after_settled = self.graph.after[idx]
                    .iter()
                    .all(|&d| self.services[d].settled());
                if requires_up && after_settled {
                    self.start(idx);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        self.announce_ready();
    }

    fn announce_ready(&mut self) {
        if self.ready_ms.is_some() || !self.services.iter().all(Service::settled) {
            return;
        }
        let userspace_ms = self.opts.started.elapsed().as_millis() as u64;
        self.ready_ms = Some(userspace_ms);
        let up = self.services.iter().filter(|s| s.up()).count();
        let failed = self
            .services
            .iter()
            .filter(|s| s.state == ServiceState::Failed)
            .count();
        self.hub.console_line(&format!(
            "{} services={up} userspace_ms={userspace_ms} uptime_ms={} failed={failed}",
            paths::READY_LINE_PREFIX,
            uptime_ms()
        ));
        self.hub.push(
            LogEvent::new("init", Level::Info, "node ready")
                .field("services", up)
                .field("failed", failed)
                .field("userspace_ms", userspace_ms),
        );
        self.hub.set_verbose_console(false);
    }

    /// The token for a service waiting to start arrived (or could not be had).
    fn identity_token(
        &mut self,
        idx: usize,
        generation: u64,
        result: Result<String, identity::Refusal>,
    ) {
        let svc = &mut self.services[idx];
        if svc.generation != generation || svc.state != ServiceState::Starting || svc.pid.is_some()
        {
            return; // stopped or restarted meanwhile; the token expires unused
        }
        match result {
            Ok(token) => {
                svc.identity_token = Some(token);
                self.start(idx);
            }
            Err(refusal) if refusal.permanent => {
                let reason = format!("{} (retrying cannot cure this)", refusal.reason);
                self.give_up(idx, reason)
            }
            Err(refusal) => self.start_failed(idx, refusal.reason),
        }
    }

    fn start(&mut self, idx: usize) {
        // A service with an identity first gets its token from certmgr, then starts.
        let svc = &mut self.services[idx];
        if let (Some((subsystem, agent_id)), None) = (&svc.spec.identity, &svc.identity_token) {
            svc.state = ServiceState::Starting;
            svc.generation += 1;
            let socket = self.opts.runtime_dir.join(identity::CERTMGR_SOCKET_NAME);
            identity::request_token(
                socket,
                idx,
                svc.generation,
                subsystem.clone(),
                agent_id.clone(),
                self.events.clone(),
            );
            return;
        }
        let events = self.events.clone();
        let notify_dir = self.opts.runtime_dir.join(paths::NOTIFY_DIR_NAME);
        let svc = &mut self.services[idx];
        let name = svc.spec.name.clone();
        if svc.spec.ready == Readiness::Notify && svc.notify_socket.is_none() {
            match notify::listen(&notify_dir, &name, idx, events) {
                Ok(socket) => svc.notify_socket = Some(socket),
                Err(e) => {
                    return self.start_failed(
                        idx,
                        format!(
                            "cannot create its notify socket in {}: {e}",
                            notify_dir.display()
                        ),
                    )
                }
            }
        }
        let cgroup_procs = match &self.cgroups {
            Some(cg) => match cg.prepare(&name, &svc.spec.limits) {
                Ok(f) => Some(f),
                Err(e) => {
                    return self.start_failed(
                        idx,
                        format!("cannot set up its cgroup {}: {e}", cg.dir(&name).display()),
                    )
                }
            },
            None => None,
        };
        let token_pipe = match self.services[idx]
            .identity_token
            .take()
            .map(|t| identity::token_pipe(&t))
        {
            Some(Ok(fd)) => Some(fd),
            Some(Err(e)) => {
                return self.start_failed(idx, format!("cannot pass its identity token: {e}"))
            }
            None => None,
        };
        let svc = &self.services[idx];
        let launch = spawn::Launch {
            spec: &svc.spec,
            notify_socket: svc.notify_socket.as_ref().map(|n| n.path.as_path()),
            cgroup_procs: cgroup_procs.as_ref(),
            path: &self.opts.service_path,
            identity_fd: token_pipe.as_ref().map(std::os::fd::AsRawFd::as_raw_fd),
        };
        let spawned = match spawn::spawn(&launch) {
            Ok(s) => s,
            Err(e) => return self.start_failed(idx, e.to_string()),
        };
        let pid = spawned.pid;
        for (fd, stream) in [
            (spawned.stdout, Stream::Stdout),
            (spawned.stderr, Stream::Stderr),
        ] {
            let Some(fd) = fd else { continue };
            let Ok(pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
                continue;
            };
            let (hub, name) = (self.hub.clone(), name.clone());
            tokio::spawn(async move { logs::capture(&hub, &name, pid, stream, pipe).await });
        }
        let svc = &mut self.services[idx];
        svc.pid = Some(pid);
        svc.state = ServiceState::Starting;
        svc.reason = None;
        self.hub.push(
            LogEvent::new("init", Level::Info, "service started")
                .field("service", name)
                .field("pid", pid),
        );
        if svc.spec.kind == Kind::LongRun && svc.spec.ready == Readiness::Started {
            self.mark_ready(idx);
        }
    }

    /// A start that never produced a process counts as a crash (so it is retried within the
    /// restart intensity, then given up with this reason).
    fn start_failed(&mut self, idx: usize, reason: String) {
        self.hub.push(
            LogEvent::new("init", Level::Error, "service could not start")
                .field("service", self.services[idx].spec.name.clone())
                .field("error", reason.clone()),
        );
        self.crashed(idx, false, reason);
    }

    fn stop(&mut self, idx: usize, intent: StopIntent) {
        let svc = &mut self.services[idx];
        match (svc.state, svc.pid) {
            (ServiceState::Starting | ServiceState::Ready, Some(pid)) => {
                svc.state = ServiceState::Stopping;
                svc.stop_intent = Some(intent);
                svc.generation += 1;
                let (generation, grace, sig) =
                    (svc.generation, svc.spec.stop_grace, svc.spec.stop_signal);
                self.hub.push(
                    LogEvent::new("init", Level::Info, "stopping service")
                        .field("service", svc.spec.name.clone())
                        .field("pid", pid)
                        .field("signal", sig.as_str()),
                );
                let _ = kill(Pid::from_raw(pid as i32), sig);
                let _ = kill(Pid::from_raw(-(pid as i32)), sig);
                self.timer(idx, generation, TimerKind::Kill, grace);
            }
            (ServiceState::Stopping, _)
                if matches!(intent, StopIntent::Shutdown | StopIntent::Manual) =>
            {
                // A plain stop wins over a pending restart.
                svc.stop_intent = Some(intent);
            }
            (ServiceState::Waiting | ServiceState::Backoff, _) | (ServiceState::Starting, None) => {
                svc.generation += 1;
                svc.state = match intent {
                    StopIntent::Restart | StopIntent::Escalation => ServiceState::Waiting,
                    _ => ServiceState::Stopped,
                };
            }
            _ => {}
        }
    }
}
