//! Progress of `tessera vm run` on stderr, sharing the terminal with the console on stdout.
//!
//! On a terminal a single status line (`[vm] booting (kernel) 3.1s`) is rewritten in place;
//! it is wiped before console output is written and redrawn only when the console is at the
//! start of a line, so a shell prompt is never overwritten. Elsewhere (CI logs) phases are
//! plain lines, with a reminder every 15 seconds.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const PLAIN_REMINDER: Duration = Duration::from_secs(15);

#[derive(Debug)]
struct State {
    tty: bool,
    phase: String,
    phase_since: Instant,
    started: Instant,
    drawn: bool,
    console_at_line_start: bool,
    last_plain: Instant,
    echo_console: bool,
}

/// Shared between the main loop and the console echo thread.
#[derive(Debug, Clone)]
pub struct Progress(Arc<Mutex<State>>);

impl Progress {
    pub fn new(echo_console: bool) -> Self {
        let now = Instant::now();
        Progress(Arc::new(Mutex::new(State {
            tty: std::io::stderr().is_terminal(),
            phase: String::new(),
            phase_since: now,
            started: now,
            drawn: false,
            console_at_line_start: true,
            last_plain: now,
            echo_console,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a new phase ("booting (kernel)", "waiting for ready", ...).
    pub fn phase(&self, phase: impl Into<String>) {
        let mut st = self.lock();
        st.phase = phase.into();
        st.phase_since = Instant::now();
        if st.tty {
            redraw(&mut st);
        } else {
            st.last_plain = Instant::now();
            eprintln!("[vm] {}", st.phase);
        }
    }

    /// Refreshes the elapsed time.
    pub fn tick(&self) {
        let mut st = self.lock();
        if st.tty {
            redraw(&mut st);
        } else if st.last_plain.elapsed() >= PLAIN_REMINDER {
            st.last_plain = Instant::now();
            eprintln!(
                "[vm] {} ({:.0} s)",
                st.phase,
                st.phase_since.elapsed().as_secs_f64()
            );
        }
    }

    /// A line that stays (e.g. "[vm] ready in 3.2 s guest uptime").
    pub fn message(&self, text: &str) {
        let mut st = self.lock();
        wipe(&mut st);
        if st.echo_console && !st.console_at_line_start {
            // Keep the message off the end of an unfinished console line (a prompt).
            eprintln!();
        }
        eprintln!("[vm] {text}");
        if st.tty {
            redraw(&mut st);
        }
    }

    /// Removes the status line for good (before the summary).
    pub fn finish(&self) {
        let mut st = self.lock();
        wipe(&mut st);
        if st.echo_console && !st.console_at_line_start {
            eprintln!();
        }
    }

    /// Writes console output to stdout around the status line.
    pub fn console(&self, bytes: &[u8]) {
        let mut st = self.lock();
        if !st.echo_console || bytes.is_empty() {
            return;
        }
        wipe(&mut st);
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(bytes).and_then(|_| out.flush());
        drop(out);
        st.console_at_line_start = bytes.ends_with(b"\n");
        if st.tty {
            redraw(&mut st);
        }
    }
}

fn redraw(st: &mut State) {
    if !st.console_at_line_start {
        return;
    }
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\r\x1b[K[vm] {} {:.1}s",
        st.phase,
        st.started.elapsed().as_secs_f64()
    );
    let _ = err.flush();
    st.drawn = true;
}

fn wipe(st: &mut State) {
    if st.drawn {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K");
        let _ = err.flush();
        st.drawn = false;
    }
}
