//! The end of an orderly shutdown, after the supervisor has stopped every service: processes
//! that are left get SIGTERM, then SIGKILL after a grace period; file systems are synced and
//! unmounted (or remounted read-only); then reboot(2). As a host subreaper the same steps
//! apply to our own descendants only, and the process exits instead of rebooting.

use crate::supervisor::logs::LogHub;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::time::{Duration, Instant};
use tessera_common::control::ShutdownMode;
use tessera_common::log::{Level, LogEvent};
use tessera_common::paths;

/// Signals every process that is left (PID 1: all; subreaper: our descendants).
fn signal_leftovers(pid1: bool, sig: Signal) -> usize {
    if pid1 {
        // kill(-1) reaches every process but PID 1 itself.
        return usize::from(kill(Pid::from_raw(-1), sig).is_ok());
    }
    let pids = descendants(std::process::id());
    for &p in &pids {
        let _ = kill(Pid::from_raw(p as i32), sig);
    }
    pids.len()
}

/// Every process below `root`, from /proc.
pub fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|pid| {
                    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                    // The command may hold spaces and parentheses; fields resume after the last ')'.
                    let ppid = stat
                        .rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse()
                        .ok()?;
                    Some((pid, ppid))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// Reaps children until none is left or the deadline passes. True when none is left.
fn reap_until(deadline: Instant) -> bool {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Err(nix::errno::Errno::ECHILD) => return true,
            Ok(WaitStatus::StillAlive) | Err(_) => {
                if Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(_) => {}
        }
    }
}

/// Stops what is left. PID 1 then syncs, unmounts and reboots (never returns); a subreaper
/// returns so that its caller can exit.
pub fn finish(mode: ShutdownMode, pid1: bool, hub: &LogHub) {
    if signal_leftovers(pid1, Signal::SIGTERM) > 0
        && !reap_until(Instant::now() + paths::LEFTOVER_GRACE)
    {
        hub.push(LogEvent::new(
            "init",
            Level::Warn,
            "processes left after SIGTERM; sending SIGKILL",
        ));
        signal_leftovers(pid1, Signal::SIGKILL);
        reap_until(Instant::now() + Duration::from_secs(2));
    }
    nix::unistd::sync();
    if !pid1 {
        return;
    }
    unmount_all(hub);
    hub.console_line(&format!(
        "{} mode={}",
        paths::SHUTDOWN_LINE_PREFIX,
        mode.as_str()
    ));
    let how = match mode {
        ShutdownMode::Poweroff => nix::sys::reboot::RebootMode::RB_POWER_OFF,
        ShutdownMode::Reboot => nix::sys::reboot::RebootMode::RB_AUTOBOOT,
        ShutdownMode::Halt => nix::sys::reboot::RebootMode::RB_HALT_SYSTEM,
    };
    let err = nix::sys::reboot::reboot(how).err();
    hub.push(
        LogEvent::new("init", Level::Error, "reboot(2) failed; staying up")
            .field("error", err.map(|e| e.desc()).unwrap_or("returned")),
    );
    crate::pid1::idle_forever();
}

/// Unmounts block-device file systems (innermost first); what stays busy is remounted
/// read-only so that nothing is lost at power-off.
fn unmount_all(hub: &LogHub) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for line in mounts.lines().rev() {
        let mut f = line.split_whitespace();
        let (Some(source), Some(target)) = (f.next(), f.next()) else {
            continue;
        };
        if !source.starts_with("/dev/") || target == "/" {
            continue;
        }
        let target = target.replace("\\040", " ");
        if nix::mount::umount(target.as_str()).is_ok() {
            hub.push(LogEvent::new("init", Level::Info, "unmounted").field("target", target));
            continue;
        }
        let ro = nix::mount::MsFlags::MS_REMOUNT | nix::mount::MsFlags::MS_RDONLY;
        let result = nix::mount::mount(
            None::<&str>,
            target.as_str(),
            None::<&str>,
            ro,
            None::<&str>,
        );
        hub.push(
            LogEvent::new(
                "init",
                if result.is_ok() {
                    Level::Info
                } else {
                    Level::Error
                },
                "remounted read-only (busy)",
            )
            .field("target", target),
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn descendants_finds_children_and_grandchildren() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 5 & wait"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let found = super::descendants(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.contains(&child.id()), "{found:?}");
        assert!(
            found.len() >= 2,
            "the sleep grandchild is found too: {found:?}"
        );
    }
}
