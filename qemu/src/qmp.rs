//! QEMU's machine protocol (QMP), used to learn why QEMU stopped — the SHUTDOWN event says
//! whether the guest powered off, reset (which `-no-reboot` turns into an exit) or panicked,
//! which the console alone cannot tell for a firmware-level reset — and to press keys on the
//! guest's keyboard (Ctrl-Alt-Del).

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
) -> (Arc<Mutex<QmpReport>>, QmpCommands, Option<JoinHandle<()>>) {
    let report: Arc<Mutex<QmpReport>> = Arc::default();
    let commands = QmpCommands::default();
    let (out, writer) = (report.clone(), commands.clone());
    let handle = std::thread::Builder::new()
        .name("vm-qmp".into())
        .spawn(move || {
            if let Some(stream) = connect(&socket, &qemu) {
                let _ = listen(stream, &out, &writer);
            }
        })
        .ok();
    (report, commands, handle)
}

/// The sending side of the QMP connection (QEMU takes one client; the listener owns it).
#[derive(Clone, Default)]
pub struct QmpCommands(Arc<Mutex<Option<UnixStream>>>);

impl QmpCommands {
    /// Sends one command; its reply is read (and ignored) by the listener.
    pub fn execute(&self, command: &serde_json::Value) -> std::io::Result<()> {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let stream = guard.as_mut().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "QMP is not connected (yet)",
            )
        })?;
        let mut line = serde_json::to_vec(command)?;
        line.push(b'\n');
        stream.write_all(&line)
    }
}

/// `send-key` with QEMU key codes, pressed together (e.g. ctrl, alt, delete).
pub fn send_key_command(keys: &[&str]) -> serde_json::Value {
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .map(|k| serde_json::json!({"type": "qcode", "data": k}))
        .collect();
    serde_json::json!({"execute": "send-key", "arguments": {"keys": keys}})
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

fn listen(
    stream: UnixStream,
    report: &Mutex<QmpReport>,
    commands: &QmpCommands,
) -> std::io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut lines = BufReader::new(stream).lines();
    // The greeting, then capabilities negotiation: events flow only after it.
    lines.next().transpose()?;
    writer.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
    *commands.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(writer);
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
    fn send_key_presses_keys_together() {
        let c = send_key_command(&["ctrl", "alt", "delete"]);
        assert_eq!(c["execute"], "send-key");
        assert_eq!(
            c["arguments"]["keys"][2],
            serde_json::json!({"type": "qcode", "data": "delete"})
        );
    }

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
