//! Which process holds which certmgr-issued identity: recorded when the request-key callout
//! redeems a token for a requester (whose pid the kernel names), consulted when a process asks
//! for a child token. A pid is matched together with the process's start time, so a pid reused
//! by another process inherits nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use tessera_identity::profile::PeerIdentity;

#[derive(Default)]
pub struct Peers {
    inner: Mutex<HashMap<u32, Holder>>,
}

struct Holder {
    start_time: u64,
    peer: PeerIdentity,
}

impl Peers {
    /// `pid` now holds `peer` (the latest identity it redeemed wins). The kernel names the
    /// thread that called request_key(2); the identity belongs to its whole process (the
    /// thread group that SO_PEERCRED names later).
    pub fn record(&self, pid: u32, peer: PeerIdentity) {
        let pid = thread_group_of(pid).unwrap_or(pid);
        let Some(start_time) = process_start_time(pid) else {
            return;
        };
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // Forget processes that are gone, so the map stays as small as the node.
        inner.retain(|pid, h| process_start_time(*pid) == Some(h.start_time));
        inner.insert(pid, Holder { start_time, peer });
    }

    /// The unexpired identity `pid` holds, if it is still the same process.
    pub fn identity_of(&self, pid: u32) -> Option<PeerIdentity> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let holder = inner.get(&pid)?;
        if process_start_time(pid) != Some(holder.start_time) {
            return None;
        }
        if holder.peer.not_after <= SystemTime::now() {
            return None;
        }
        Some(holder.peer.clone())
    }
}

/// The process (thread group) a thread id belongs to: `Tgid:` in /proc/<tid>/status.
pub fn thread_group_of(tid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()
}

/// Field 22 of /proc/<pid>/stat: when the process started, in clock ticks after boot.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: count after it.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(caps: &[&str], valid: bool) -> PeerIdentity {
        PeerIdentity {
            cluster: "c".into(),
            subsystem: "node".into(),
            node: "n".into(),
            agent_id: "node".into(),
            capabilities: caps.iter().map(|s| s.to_string()).collect(),
            serial: "01".into(),
            not_after: if valid {
                SystemTime::now() + std::time::Duration::from_secs(60)
            } else {
                SystemTime::now() - std::time::Duration::from_secs(1)
            },
        }
    }

    #[test]
    fn a_recorded_process_is_found_until_its_certificate_expires() {
        let peers = Peers::default();
        let me = std::process::id();
        assert!(process_start_time(me).is_some());
        assert!(peers.identity_of(me).is_none());
        peers.record(me, peer(&["container"], true));
        assert!(peers.identity_of(me).unwrap().has_capability("container"));
        peers.record(me, peer(&["container"], false));
        assert!(peers.identity_of(me).is_none());
    }

    #[test]
    fn an_identity_redeemed_by_a_thread_belongs_to_its_process() {
        let peers = Peers::default();
        let me = std::process::id();
        // A live thread of this process (its /proc/<tid> exists while it runs).
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            tx.send(nix::unistd::gettid().as_raw() as u32).unwrap();
            let _ = done_rx.recv();
        });
        let live_tid = rx.recv().unwrap();
        assert_ne!(live_tid, me);
        assert_eq!(thread_group_of(live_tid), Some(me));
        peers.record(live_tid, peer(&["hub"], true));
        assert!(peers.identity_of(me).is_some(), "the process holds it");
        drop(done_tx);
        worker.join().unwrap();
    }

    #[test]
    fn a_dead_process_is_not_recorded() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let peers = Peers::default();
        peers.record(pid, peer(&["hub"], true));
        assert!(peers.identity_of(pid).is_none());
    }
}
