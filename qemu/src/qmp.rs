//! QEMU's machine protocol (QMP), used for one thing: learning why QEMU stopped. The
//! SHUTDOWN event says whether the guest powered off, reset (which `-no-reboot` turns into
//! an exit) or panicked, which the console alone cannot tell for a firmware-level reset.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::process::ExitWatch;

/// What QMP reported before QEMU exited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QmpReport {
    /// `reason` of the SHUTDOWN event: `guest-shutdown`, `guest-reset`, `guest-panic`,
    /// `host-signal`, ...
    pub shutdown_reason: Option<String>,
    /// A GUEST_PANICKED event arrived (needs a pvpanic device in the guest).
    pub guest_panicked: bool,
}

/// Starts a thread that connects to `socket` once QEMU has created it and records events
/// until QEMU exits. Never fails: without QMP the runner falls back to the console.
/// The thread ends when QEMU closes the socket (or exits before it could be reached).
pub fn spawn_listener(
    socket: PathBuf,
    qemu: ExitWatch,
) -> (Arc<Mutex<QmpReport>>, Option<JoinHandle<()>>) {
    let report: Arc<Mutex<QmpReport>> = Arc::default();
    let out = report.clone();
    let handle = std::thread::Builder::new()
        .name("vm-qmp".into())
        .spawn(move || {
            if let Some(stream) = connect(&socket, &qemu) {
                let _ = listen(stream, &out);
            }
        })
        .ok();
    (report, handle)
}

fn connect(socket: &PathBuf, qemu: &ExitWatch) -> Option<UnixStream> {
    let start = Instant::now();
    while !qemu.exited() {
        if let Ok(s) = UnixStream::connect(socket) {
            return Some(s);
        }
        // QEMU creates the socket within milliseconds of starting; back off if it does not
        // (e.g. a test stand-in for QEMU that has no QMP at all).
        let pause = if start.elapsed() < Duration::from_secs(5) {
            10
        } else {
            200
        };
        std::thread::sleep(Duration::from_millis(pause));
    }
    None
}

fn listen(stream: UnixStream, report: &Mutex<QmpReport>) -> std::io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut lines = BufReader::new(stream).lines();
    // The greeting, then capabilities negotiation: events flow only after it.
    lines.next().transpose()?;
    writer.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
    for line in lines {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line?) else {
            continue;
        };
        apply_event(&msg, &mut report.lock().unwrap_or_else(|e| e.into_inner()));
    }
    Ok(())
}

/// Records what one QMP message says about the VM's end.
pub fn apply_event(msg: &serde_json::Value, report: &mut QmpReport) {
    match msg.get("event").and_then(|e| e.as_str()) {
        Some("SHUTDOWN") => {
            report.shutdown_reason = msg
                .pointer("/data/reason")
                .and_then(|r| r.as_str())
                .map(str::to_string);
        }
        Some("GUEST_PANICKED") => report.guest_panicked = true,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_event_reason_is_recorded() {
        let mut r = QmpReport::default();
        let msg = serde_json::json!({"timestamp": {"seconds": 1, "microseconds": 2},
            "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-reset"}});
        apply_event(&msg, &mut r);
        assert_eq!(r.shutdown_reason.as_deref(), Some("guest-reset"));
        apply_event(&serde_json::json!({"return": {}}), &mut r);
        apply_event(&serde_json::json!({"event": "GUEST_PANICKED"}), &mut r);
        assert!(r.guest_panicked);
    }
}
