//! What an operator asks through the control socket: status, shutdown, and starting,
//! stopping or restarting a service.

use super::{StopIntent, Supervisor};
use tessera_common::control::{Reply, Request, ServiceAction, ServiceState};
use tessera_common::log::{Level, LogEvent};

impl Supervisor {
    pub(super) fn control(&mut self, request: Request) -> Reply {
        match request {
            Request::Status => Reply::Status(self.status()),
            Request::Shutdown { mode } => {
                self.begin_shutdown(
                    mode,
                    LogEvent::new("init", Level::Info, "shutdown requested")
                        .field("by", "control socket"),
                );
                Reply::Done {
                    message: format!("{} in progress", mode.as_str()),
                }
            }
            Request::Service { action, name } => self.service_action(action, &name),
            Request::Logs { .. } => Reply::Error {
                error: "logs are served by the control listener".into(),
            },
        }
    }

    fn service_action(&mut self, action: ServiceAction, name: &str) -> Reply {
        let Some(idx) = self.services.iter().position(|s| s.spec.name == name) else {
            let known: Vec<&str> = self.services.iter().map(|s| s.spec.name.as_str()).collect();
            return Reply::Error {
                error: format!("no service named {name:?}; known: {}", known.join(", ")),
            };
        };
        if self.shutdown.is_some() {
            return Reply::Error {
                error: "the node is shutting down".into(),
            };
        }
        let svc = &mut self.services[idx];
        let message = match action {
            ServiceAction::Stop
                if svc.running()
                    || matches!(svc.state, ServiceState::Waiting | ServiceState::Backoff) =>
            {
                self.stop(idx, StopIntent::Manual);
                format!("stopping {name}")
            }
            ServiceAction::Stop => format!("{name} is not running ({})", svc.state.as_str()),
            ServiceAction::Start | ServiceAction::Restart
                if matches!(
                    svc.state,
                    ServiceState::Stopped | ServiceState::Failed | ServiceState::Done
                ) =>
            {
                svc.tracker.reset();
                svc.generation += 1;
                svc.state = ServiceState::Waiting;
                svc.reason = None;
                format!("starting {name}")
            }
            ServiceAction::Start => format!("{name} is already {}", svc.state.as_str()),
            ServiceAction::Restart => {
                self.stop(idx, StopIntent::Restart);
                format!("restarting {name}")
            }
        };
        self.hub.push(
            LogEvent::new("init", Level::Info, "service action")
                .field("service", name)
                .field("action", format!("{action:?}").to_lowercase()),
        );
        Reply::Done { message }
    }
}
