//! Key generation in a throwaway child process. The `rsa` crate's big integers are freed
//! without being zeroized, so generating in this process would leave pieces of the primes in
//! freed heap memory (the diagnostic's memory scan finds them). A fork(2) child generates the
//! key, writes its PKCS#8 DER into a pipe and exits; its memory dies with it, and this process
//! only ever holds the DER in a locked, zeroized buffer.
//!
//! Only from a single-threaded process: forking a multi-threaded one and running arbitrary
//! code in the child (allocation, locks) is not safe, and the project forks such processes
//! only to exec. Multi-threaded callers generate in-process (see `kernel_rsa::generate`).

use super::memory::LockedBuf;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use rsa::pkcs8::SecretDocument;
use std::io;

/// Whether this process has exactly one thread (/proc/self/status).
pub(crate) fn single_threaded() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse::<u32>().ok())
        })
        == Some(1)
}

/// Runs `generate` in a forked child and returns the DER it produced, read straight into a
/// locked buffer of at most `max_len` bytes.
pub(crate) fn generate_in_child(
    max_len: usize,
    generate: impl FnOnce() -> Option<SecretDocument>,
) -> io::Result<LockedBuf> {
    let mut buf = LockedBuf::new(max_len)?;
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: fork(2). Callers run this only when the process has one thread, so no lock is
    // held by a thread that would not exist in the child; the child never returns into the
    // caller's frames (it leaves through _exit, even on panic).
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(read_end);
            let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let der = generate()?;
                let mut rest = der.as_bytes();
                while !rest.is_empty() {
                    let n = nix::unistd::write(&write_end, rest).ok()?;
                    rest = &rest[n..];
                }
                Some(())
            }));
            let code = if matches!(written, Ok(Some(()))) {
                0
            } else {
                1
            };
            // SAFETY: _exit(2) ends the child without running anything of the parent's.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            let mut len = 0;
            let read = loop {
                let slice = buf.as_mut_slice();
                if len == slice.len() {
                    break Err(io::Error::other(
                        "the key generated in the child is larger than expected",
                    ));
                }
                match nix::unistd::read(
                    std::os::fd::AsRawFd::as_raw_fd(&read_end),
                    &mut slice[len..],
                ) {
                    Ok(0) => break Ok(()),
                    Ok(n) => len += n,
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => break Err(e.into()),
                }
            };
            let status = loop {
                match waitpid(child, None) {
                    Err(nix::errno::Errno::EINTR) => {}
                    other => break other,
                }
            };
            read?;
            match status? {
                WaitStatus::Exited(_, 0) if len > 0 => {
                    buf.set_len(len);
                    Ok(buf)
                }
                other => Err(io::Error::other(format!(
                    "the key-generating child failed ({other:?})"
                ))),
            }
        }
    }
}
