//! Orderly shutdown of the services: in reverse dependency order, in parallel where nothing
//! depends on a service any more. What happens after the last service exited (leftover
//! processes, unmounting, reboot(2)) is `crate::shutdown`.

use super::{StopIntent, Supervisor};
use tessera_common::control::{ServiceState, ShutdownMode};
use tessera_common::log::LogEvent;

impl Supervisor {
    /// Starts an orderly shutdown; `request` says who asked (logged, with the mode).
    pub(super) fn begin_shutdown(&mut self, mode: ShutdownMode, request: LogEvent) {
        if self.shutdown.is_some() {
            return;
        }
        self.shutdown = Some(mode);
        // The console shows the whole shutdown, as it showed the boot.
        self.hub.set_verbose_console(true);
        self.hub.push(request.field("mode", mode.as_str()));
        self.advance_shutdown();
    }

    /// Stops, in parallel, every running service that nothing running is ordered after.
    pub(super) fn advance_shutdown(&mut self) {
        for svc in self
            .services
            .iter_mut()
            .filter(|s| matches!(s.state, ServiceState::Waiting | ServiceState::Backoff))
        {
            svc.generation += 1;
            svc.state = ServiceState::Stopped;
        }
        let mut order = self.graph.start_order();
        order.reverse();
        for idx in order {
            let svc = &self.services[idx];
            if !matches!(svc.state, ServiceState::Starting | ServiceState::Ready) {
                continue;
            }
            if self
                .graph
                .stop_before(idx)
                .all(|j| !self.services[j].running())
            {
                self.stop(idx, StopIntent::Shutdown);
            }
        }
    }
}
