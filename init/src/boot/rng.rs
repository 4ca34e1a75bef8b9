//! Seeding the kernel RNG early. The image has no secret to give (it is the same on every
//! node), so PID 1 mixes in boot-unique data without crediting entropy, mixes in a saved seed
//! when one exists, and reports whether the kernel's CRNG is ready — on QEMU the virtio-rng
//! module (loaded at boot) and the CPU's RDRAND are what make it ready.

use crate::supervisor::logs::LogHub;
use std::io::Write;
use tessera_common::log::{Level, LogEvent};

/// A seed saved by a previous boot (the data volume provides it once storage exists).
pub const SEED_FILE: &str = "/var/lib/tessera/random-seed";

pub fn seed(hub: &LogHub) -> Result<(), String> {
    let mut urandom = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")
        .map_err(|e| format!("cannot open /dev/urandom: {e}"))?;
    let mut mix = Vec::new();
    for source in [
        "/proc/cmdline",
        "/proc/interrupts",
        "/sys/class/dmi/id/product_uuid",
        SEED_FILE,
    ] {
        if let Ok(bytes) = std::fs::read(source) {
            mix.extend_from_slice(&bytes);
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    mix.extend_from_slice(&now.as_nanos().to_le_bytes());
    urandom
        .write_all(&mix)
        .map_err(|e| format!("cannot write to /dev/urandom: {e}"))?;

    let mut probe = [0u8; 1];
    match nix::errno::Errno::result(
        // The raw syscall, not libc's getrandom(): std declares that symbol weak, and in a
        // static musl link where nothing else needs it, it resolves to address 0.
        // SAFETY: getrandom(2) into a 1-byte stack buffer we own.
        unsafe { libc::syscall(libc::SYS_getrandom, probe.as_mut_ptr(), 1usize, libc::GRND_NONBLOCK) },
    ) {
        Ok(_) => hub.push(LogEvent::new("init", Level::Info, "kernel RNG ready")),
        Err(nix::errno::Errno::EAGAIN) => hub.push(LogEvent::new("init", Level::Warn, "kernel RNG not initialised yet; reads of /dev/random will block until it is").field("fix", "give the VM a virtio-rng device (-device virtio-rng-pci) or boot on a CPU with RDRAND")),
        Err(e) => return Err(format!("getrandom probe failed: {}", e.desc())),
    }
    Ok(())
}
