//! Serial console capture: a reader thread turns QEMU's serial output into timestamped lines
//! in a shared buffer, appends them to the log file and echoes the stream to a sink; waiters
//! block on the buffer until a line contains what they look for.
//!
//! Firmware and iPXE paint the console with terminal escape sequences (clear screen, colours,
//! cursor modes); they are stripped here so that lines can be matched and the log grepped.

use std::io::{Read, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a kernel prints when it panics (always, even with `quiet`).
pub const KERNEL_PANIC: &str = "Kernel panic - not syncing";

/// How many console lines timeout and failure messages quote.
pub const TAIL_LINES: usize = 40;

/// `now + timeout`, saturating: a caller's `Duration::MAX` means "far in the future".
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(10 * 365 * 24 * 3600))
}

/// One console line, with the time it arrived counted from VM start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleLine {
    pub at: Duration,
    pub text: String,
}

/// Receives the cleaned console stream as it arrives (e.g. to copy it to stdout).
pub type Echo = Box<dyn FnMut(&[u8]) + Send>;

/// Removes terminal escape sequences and control characters from a byte stream, keeping
/// newline, carriage return, tab and backspace. Streaming: a sequence may span reads.
///
/// A screen reset or clear (`ESC c`, `ESC [ ... J`) ends the current line: the BIOS serial
/// console emits one when the kernel's setup code sets the video mode, sometimes right after
/// iPXE's "ok" lost its newline, and the guest's first line must not be glued to it.
#[derive(Debug)]
pub struct EscapeFilter {
    state: EscState,
    at_line_start: bool,
}

impl Default for EscapeFilter {
    fn default() -> Self {
        EscapeFilter {
            state: EscState::Text,
            at_line_start: true,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum EscState {
    #[default]
    Text,
    Escape,
    /// `ESC [` ... final byte.
    Csi,
    /// `ESC ]` ... BEL or `ESC \`.
    Osc,
    OscEscape,
    /// `ESC (` and friends take one more byte.
    Charset,
}

impl EscapeFilter {
    pub fn filter(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            self.state = match (self.state, b) {
                (EscState::Text, 0x1b) => EscState::Escape,
                (EscState::Text, b) if b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x08) => {
                    EscState::Text
                }
                (EscState::Text, 0x7f) => EscState::Text,
                (EscState::Text, b) => {
                    self.emit(b, out);
                    EscState::Text
                }
                (EscState::Escape, b'[') => EscState::Csi,
                (EscState::Escape, b']') => EscState::Osc,
                (EscState::Escape, b'(' | b')' | b'*' | b'+' | b'#' | b'%') => EscState::Charset,
                (EscState::Escape, b'c') => {
                    self.break_line(out);
                    EscState::Text
                }
                (EscState::Escape, _) => EscState::Text,
                (EscState::Csi, b'J') => {
                    self.break_line(out);
                    EscState::Text
                }
                (EscState::Csi, 0x40..=0x7e) => EscState::Text,
                (EscState::Csi, _) => EscState::Csi,
                (EscState::Osc, 0x07) => EscState::Text,
                (EscState::Osc, 0x1b) => EscState::OscEscape,
                (EscState::Osc, _) => EscState::Osc,
                (EscState::OscEscape, _) => EscState::Text,
                (EscState::Charset, _) => EscState::Text,
            };
        }
    }

    fn emit(&mut self, b: u8, out: &mut Vec<u8>) {
        out.push(b);
        if b == b'\n' {
            self.at_line_start = true;
        } else if b != b'\r' {
            self.at_line_start = false;
        }
    }

    fn break_line(&mut self, out: &mut Vec<u8>) {
        if !self.at_line_start {
            self.emit(b'\n', out);
        }
    }
}

/// Builds lines from a filtered stream with a terminal's overwrite rules for `\r` and
/// backspace, so progress counters ("42%\b\b\b") end up as what a screen would show.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
    col: usize,
}

impl LineSplitter {
    /// Feeds bytes; returns the lines completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut done = Vec::new();
        for &b in bytes {
            match b {
                b'\n' => done.push(self.take()),
                b'\r' => self.col = 0,
                0x08 => self.col = self.col.saturating_sub(1),
                b => {
                    if self.col < self.buf.len() {
                        self.buf[self.col] = b;
                    } else {
                        self.buf.push(b);
                    }
                    self.col += 1;
                }
            }
        }
        done
    }

    /// The unfinished line (e.g. a shell prompt).
    pub fn partial(&self) -> String {
        String::from_utf8_lossy(&self.buf).trim_end().to_string()
    }

    /// Ends the unfinished line, if any.
    pub fn finish(&mut self) -> Option<String> {
        (!self.buf.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> String {
        let line = self.partial();
        self.buf.clear();
        self.col = 0;
        line
    }
}

/// Outcome of waiting for a console line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// The matching line and its index (for `between`).
    Found(usize, String),
    TimedOut,
    /// A kernel panic line appeared (and the needle was not found before it).
    Panic,
    /// The console closed (QEMU exited) without the needle.
    Closed,
}

#[derive(Debug, Default)]
struct State {
    lines: Vec<ConsoleLine>,
    splitter: LineSplitter,
    /// Index of the first line the next `wait_for` looks at.
    cursor: usize,
    /// Index of the first kernel panic line.
    panic_at: Option<usize>,
    closed: bool,
}

/// The shared console buffer.
#[derive(Debug)]
pub struct Console {
    state: Mutex<State>,
    changed: Condvar,
    started: Instant,
}

impl Console {
    pub fn new(started: Instant) -> Self {
        Console {
            state: Mutex::default(),
            changed: Condvar::new(),
            started,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking reader thread must not take the console down with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds cleaned serial output (see `EscapeFilter`); returns the lines it completed.
    pub fn feed(&self, clean: &[u8]) -> Vec<String> {
        let mut st = self.lock();
        let lines = st.splitter.push(clean);
        self.add_lines(&mut st, &lines);
        drop(st);
        self.changed.notify_all();
        lines
    }

    /// Marks the end of the stream; an unfinished line becomes a line.
    pub fn close(&self) -> Option<String> {
        let mut st = self.lock();
        let last = st.splitter.finish();
        if let Some(line) = &last {
            self.add_lines(&mut st, std::slice::from_ref(line));
        }
        st.closed = true;
        drop(st);
        self.changed.notify_all();
        last
    }

    fn add_lines(&self, st: &mut State, lines: &[String]) {
        let at = self.started.elapsed();
        for text in lines {
            if st.panic_at.is_none() && text.contains(KERNEL_PANIC) {
                st.panic_at = Some(st.lines.len());
            }
            st.lines.push(ConsoleLine {
                at,
                text: text.clone(),
            });
        }
    }

    /// Waits for the first line at or after the cursor that contains `needle`, and moves the
    /// cursor past it. Lines before the cursor are never matched again.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Wait {
        let deadline = crate::console::deadline_after(timeout);
        let mut st = self.lock();
        loop {
            let start = st.cursor;
            if let Some(i) = st.lines[start..]
                .iter()
                .position(|l| l.text.contains(needle))
            {
                st.cursor = start + i + 1;
                return Wait::Found(start + i, st.lines[start + i].text.clone());
            }
            if st.panic_at.is_some() {
                return Wait::Panic;
            }
            if st.closed {
                return Wait::Closed;
            }
            let now = Instant::now();
            if now >= deadline {
                return Wait::TimedOut;
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits until the stream has ended; false on timeout.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = crate::console::deadline_after(timeout);
        let mut st = self.lock();
        while !st.closed {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// The last `n` lines (plus the unfinished one), one per line.
    pub fn tail(&self, n: usize) -> String {
        let st = self.lock();
        let mut out: Vec<&str> = st.lines[st.lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| l.text.as_str())
            .collect();
        let partial = st.splitter.partial();
        if !partial.is_empty() {
            out.push(&partial);
        }
        quote(out.into_iter())
    }

    /// Everything so far, cleaned, including the unfinished line.
    pub fn text(&self) -> String {
        let st = self.lock();
        let mut s = String::new();
        for l in &st.lines {
            s.push_str(&l.text);
            s.push('\n');
        }
        s.push_str(&st.splitter.partial());
        s
    }

    pub fn lines(&self) -> Vec<ConsoleLine> {
        self.lock().lines.clone()
    }

    /// The texts of the lines strictly between line indexes `after` and `before`.
    pub fn between(&self, after: usize, before: usize) -> Vec<String> {
        let st = self.lock();
        let end = before.min(st.lines.len());
        st.lines
            .get(after + 1..end)
            .unwrap_or_default()
            .iter()
            .map(|l| l.text.clone())
            .collect()
    }

    /// The first line (anywhere, cursor ignored) containing `needle`.
    pub fn find(&self, needle: &str) -> Option<String> {
        self.lock()
            .lines
            .iter()
            .find(|l| l.text.contains(needle))
            .map(|l| l.text.clone())
    }

    pub fn panicked(&self) -> bool {
        self.lock().panic_at.is_some()
    }

    /// The lines around the first kernel panic (a few before it, the trace after it),
    /// quoted like `tail`; None without a panic.
    pub fn panic_context(&self, before: usize, after: usize) -> Option<String> {
        let st = self.lock();
        let at = st.panic_at?;
        let end = (at + after + 1).min(st.lines.len());
        Some(quote(
            st.lines[at.saturating_sub(before)..end]
                .iter()
                .map(|l| l.text.as_str()),
        ))
    }
}

/// Console lines as quoted in messages, one per line.
fn quote<'a>(lines: impl Iterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = lines.map(|l| format!("  | {l}")).collect();
    if quoted.is_empty() {
        return "  (no console output)".to_string();
    }
    quoted.join("\n")
}

/// Starts the thread that reads `serial` until EOF into `console`, appending each line to
/// `log` and passing the cleaned stream to `echo`.
pub fn spawn_reader(
    mut serial: impl Read + Send + 'static,
    console: Arc<Console>,
    mut log: Option<std::fs::File>,
    mut echo: Option<Echo>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("vm-console".into())
        .spawn(move || {
            let mut buf = [0u8; 8192];
            let mut filter = EscapeFilter::default();
            let mut clean = Vec::with_capacity(buf.len());
            loop {
                let n = match serial.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                clean.clear();
                filter.filter(&buf[..n], &mut clean);
                // Echo before the lines become visible to waiters, so that whatever a waiter
                // prints after a match comes after the matched line on the terminal.
                if let Some(echo) = echo.as_mut() {
                    echo(&clean);
                }
                let lines = console.feed(&clean);
                write_log(&mut log, &lines);
            }
            let last = console.close();
            write_log(&mut log, &last.into_iter().collect::<Vec<_>>());
        })
}

fn write_log(log: &mut Option<std::fs::File>, lines: &[String]) {
    let Some(file) = log else { return };
    for line in lines {
        // A full disk must not stop console capture: stop logging instead.
        if writeln!(file, "{line}").is_err() {
            *log = None;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(input: &[u8]) -> String {
        let mut out = Vec::new();
        EscapeFilter::default().filter(input, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escape_sequences_from_firmware_are_removed() {
        assert_eq!(
            clean(b"\x1bc\x1b[?7l\x1b[2JTESSERA-INIT uptime_ms=5\r\n"),
            "TESSERA-INIT uptime_ms=5\r\n"
        );
        assert_eq!(clean(b"\x1b[=3h\x1b[0;1miPXE\x1b[0m ok"), "iPXE ok");
        assert_eq!(clean(b"a\x1b]0;title\x07b\x1b(Bc"), "abc");
    }

    #[test]
    fn a_screen_reset_or_clear_ends_the_current_line() {
        assert_eq!(
            clean(b"initramfs.img... o\x1bc\x1b[?7l\x1b[2JTESSERA-INIT uptime_ms=5\r\n"),
            "initramfs.img... o\nTESSERA-INIT uptime_ms=5\r\n"
        );
        // At the start of a line it adds nothing.
        assert_eq!(clean(b"ok\r\n\x1bc\x1b[2Jnext\n"), "ok\r\nnext\n");
    }

    #[test]
    fn escape_filter_handles_sequences_split_across_reads() {
        let mut f = EscapeFilter::default();
        let mut out = Vec::new();
        f.filter(b"x\x1b[", &mut out);
        f.filter(b"0;3", &mut out);
        f.filter(b"6my", &mut out);
        assert_eq!(out, b"xy");
    }

    #[test]
    fn splitter_applies_carriage_return_and_backspace_like_a_terminal() {
        let mut s = LineSplitter::default();
        assert_eq!(
            s.push(b"vmlinuz... 10%\x08\x08\x0899%\r\n"),
            ["vmlinuz... 99%"]
        );
        assert_eq!(s.push(b"abcdef\rxy\n"), ["xycdef"]);
        assert_eq!(s.push(b"~ # "), Vec::<String>::new());
        assert_eq!(s.partial(), "~ #");
        assert_eq!(s.finish().as_deref(), Some("~ #"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn wait_for_moves_a_cursor_past_each_match() {
        let c = Console::new(Instant::now());
        c.feed(b"A 1\nB 1\nA 2\nB 2\n");
        let t = Duration::from_millis(10);
        assert_eq!(c.wait_for("B", t), Wait::Found(1, "B 1".into()));
        // "A 1" is behind the cursor now: the next A is "A 2".
        assert_eq!(c.wait_for("A", t), Wait::Found(2, "A 2".into()));
        assert_eq!(c.wait_for("B", t), Wait::Found(3, "B 2".into()));
        assert_eq!(c.wait_for("B", t), Wait::TimedOut);
        // Lines arriving later are seen.
        c.feed(b"B 3\n");
        assert_eq!(c.wait_for("B", t), Wait::Found(4, "B 3".into()));
        assert_eq!(c.between(0, 3), ["B 1", "A 2"]);
        assert!(c.between(3, 3).is_empty());
        assert!(c.between(9, 2).is_empty());
    }

    #[test]
    fn wait_for_wakes_up_when_a_line_arrives_from_another_thread() {
        let c = Arc::new(Console::new(Instant::now()));
        let c2 = c.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            c2.feed(b"TESSERA-READY services=1\n");
        });
        assert_eq!(
            c.wait_for("TESSERA-READY", Duration::from_secs(5)),
            Wait::Found(0, "TESSERA-READY services=1".into())
        );
        t.join().unwrap();
    }

    #[test]
    fn a_kernel_panic_ends_the_wait_unless_the_needle_came_first() {
        let c = Console::new(Instant::now());
        c.feed(b"ready\n[ 1.0] Kernel panic - not syncing: Attempted to kill init!\n");
        let t = Duration::from_secs(5);
        assert_eq!(c.wait_for("ready", t), Wait::Found(0, "ready".into()));
        assert_eq!(c.wait_for("never", t), Wait::Panic);
        assert!(c.panicked());
        for i in 0..100 {
            c.feed(format!("trace {i}\n").as_bytes());
        }
        let ctx = c.panic_context(1, 2).unwrap();
        assert_eq!(
            ctx,
            "  | ready\n  | [ 1.0] Kernel panic - not syncing: Attempted to kill init!\n  | trace 0\n  | trace 1"
        );
    }

    #[test]
    fn an_endless_timeout_does_not_overflow() {
        let c = Console::new(Instant::now());
        c.feed(b"x\n");
        assert_eq!(c.wait_for("x", Duration::MAX), Wait::Found(0, "x".into()));
    }

    #[test]
    fn closing_flushes_the_unfinished_line_and_ends_waits() {
        let c = Console::new(Instant::now());
        c.feed(b"one\ntwo");
        assert_eq!(c.close().as_deref(), Some("two"));
        assert_eq!(
            c.wait_for("two", Duration::from_secs(5)),
            Wait::Found(1, "two".into())
        );
        assert_eq!(c.wait_for("three", Duration::from_secs(5)), Wait::Closed);
        assert!(c.wait_closed(Duration::ZERO));
    }

    #[test]
    fn tail_quotes_the_last_lines_and_the_prompt() {
        let c = Console::new(Instant::now());
        for i in 0..100 {
            c.feed(format!("line {i}\n").as_bytes());
        }
        c.feed(b"~ # ");
        let tail = c.tail(TAIL_LINES);
        assert_eq!(tail.lines().count(), TAIL_LINES + 1);
        assert!(tail.starts_with("  | line 60\n"), "{tail}");
        assert!(tail.ends_with("  | line 99\n  | ~ #"), "{tail}");
        assert_eq!(c.text().lines().count(), 101);
    }
}
