//! Where log events go: a bounded in-memory ring (for `tessera logs`), a broadcast to live
//! followers (`tessera logs -f`), and a mirror to the console while the node boots.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::Mutex;
use tessera_common::log::{Level, LogEvent, Stream};
use tessera_common::paths::MAX_LOG_LINE;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::broadcast;

pub struct LogHub {
    ring: Mutex<VecDeque<LogEvent>>,
    capacity: usize,
    live: broadcast::Sender<LogEvent>,
    console: Mutex<ConsoleMirror>,
}

struct ConsoleMirror {
    out: Box<dyn Write + Send>,
    /// While booting, each service's events at or above its level are mirrored; after, only
    /// warnings and errors.
    booting: bool,
    levels: HashMap<String, Level>,
}

impl LogHub {
    pub fn new(capacity: usize, console: Box<dyn Write + Send>) -> Self {
        let (live, _) = broadcast::channel(1024);
        LogHub {
            ring: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity: capacity.max(1),
            live,
            console: Mutex::new(ConsoleMirror {
                out: console,
                booting: true,
                levels: HashMap::new(),
            }),
        }
    }

    /// Lowest level of `service`'s events mirrored to the console during boot.
    pub fn set_console_level(&self, service: &str, level: Level) {
        lock(&self.console)
            .levels
            .insert(service.to_string(), level);
    }

    /// While booting (and shutting down) the console shows each service's events at or above
    /// its level; otherwise only warnings and errors.
    pub fn set_verbose_console(&self, verbose: bool) {
        lock(&self.console).booting = verbose;
    }

    /// Writes a line to the console as is (the machine-readable lines).
    pub fn console_line(&self, line: &str) {
        let mut c = lock(&self.console);
        let _ = writeln!(c.out, "{line}");
        let _ = c.out.flush();
    }

    pub fn push(&self, event: LogEvent) {
        {
            let mut c = lock(&self.console);
            let min = if c.booting {
                c.levels.get(&event.service).copied().unwrap_or(Level::Info)
            } else {
                Level::Warn
            };
            if event.level >= min {
                let _ = writeln!(c.out, "{}", event.human());
                let _ = c.out.flush();
            }
        }
        // Ring and live stream change under one lock, so that a follower that takes a
        // snapshot and subscribes at once sees every event exactly once.
        let mut ring = lock(&self.ring);
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(event.clone());
        let _ = self.live.send(event);
    }

    /// The last `tail` kept events (all when None), optionally of one service.
    pub fn snapshot(&self, service: Option<&str>, tail: Option<usize>) -> Vec<LogEvent> {
        select(&lock(&self.ring), service, tail)
    }

    /// A snapshot like [`LogHub::snapshot`] plus a receiver of every later event.
    pub fn follow(
        &self,
        service: Option<&str>,
        tail: Option<usize>,
    ) -> (Vec<LogEvent>, broadcast::Receiver<LogEvent>) {
        let ring = lock(&self.ring);
        let rx = self.live.subscribe();
        (select(&ring, service, tail), rx)
    }
}

fn select(ring: &VecDeque<LogEvent>, service: Option<&str>, tail: Option<usize>) -> Vec<LogEvent> {
    let mut out: Vec<LogEvent> = ring
        .iter()
        .filter(|e| service.is_none_or(|s| e.service == s))
        .cloned()
        .collect();
    if let Some(n) = tail {
        out.drain(..out.len().saturating_sub(n));
    }
    out
}

/// A poisoned lock only means a panic elsewhere; the data is still usable for logging.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads a service's stdout or stderr line by line into the hub until end of file. Lines
/// longer than MAX_LOG_LINE are cut, and the cut is marked with `truncated=true`.
pub async fn capture<R: AsyncRead + Unpin>(
    hub: &LogHub,
    service: &str,
    pid: u32,
    stream: Stream,
    reader: R,
) {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    let mut skipping = false;
    loop {
        let buf = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(buf) => buf,
        };
        let (chunk, found_newline) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], true),
            None => (buf, false),
        };
        let used = chunk.len() + usize::from(found_newline);
        if !skipping {
            let room = MAX_LOG_LINE - line.len();
            line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if line.len() == MAX_LOG_LINE && (chunk.len() > room || !found_newline) {
                hub.push(
                    LogEvent::from_service_line(service, pid, stream, &line)
                        .field("truncated", true),
                );
                line.clear();
                skipping = !found_newline;
            } else if found_newline {
                hub.push(LogEvent::from_service_line(service, pid, stream, &line));
                line.clear();
            }
        } else if found_newline {
            skipping = false;
        }
        reader.consume(used);
    }
    if !line.is_empty() {
        hub.push(LogEvent::from_service_line(service, pid, stream, &line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn hub(cap: usize) -> (LogHub, Sink) {
        let sink = Sink::default();
        (LogHub::new(cap, Box::new(sink.clone())), sink)
    }

    #[test]
    fn ring_is_bounded_and_keeps_the_newest() {
        let (h, _) = hub(3);
        for i in 0..5 {
            h.push(LogEvent::new("s", Level::Info, format!("m{i}")));
        }
        let msgs: Vec<String> = h
            .snapshot(None, None)
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert_eq!(msgs, vec!["m2", "m3", "m4"]);
        assert_eq!(h.snapshot(None, Some(1))[0].message, "m4");
    }

    #[test]
    fn snapshot_filters_by_service() {
        let (h, _) = hub(10);
        h.push(LogEvent::new("a", Level::Info, "1"));
        h.push(LogEvent::new("b", Level::Info, "2"));
        assert_eq!(h.snapshot(Some("b"), None).len(), 1);
    }

    #[test]
    fn console_mirror_follows_levels_and_boot_phase() {
        let (h, sink) = hub(10);
        h.set_console_level("klog", Level::Warn);
        h.push(LogEvent::new("klog", Level::Info, "quiet-kernel-info"));
        h.push(LogEvent::new("web", Level::Info, "boot-info"));
        h.set_verbose_console(false);
        h.push(LogEvent::new("web", Level::Info, "later-info"));
        h.push(LogEvent::new("web", Level::Error, "later-error"));
        let text = sink.text();
        assert!(!text.contains("quiet-kernel-info"));
        assert!(text.contains("boot-info"));
        assert!(!text.contains("later-info"));
        assert!(text.contains("later-error"));
        assert_eq!(
            h.snapshot(None, None).len(),
            4,
            "everything is kept in the ring"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn capture_splits_lines_keeps_json_and_cuts_long_lines() {
        let (h, _) = hub(100);
        let long = "x".repeat(MAX_LOG_LINE + 10);
        let input = format!(
            "plain\n{{\"level\":\"error\",\"msg\":\"boom\",\"code\":7}}\n{long}\nafter\nno-newline"
        );
        capture(&h, "svc", 9, Stream::Stdout, input.as_bytes()).await;
        let ev = h.snapshot(None, None);
        let msgs: Vec<&str> = ev.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            msgs.len(),
            5,
            "{:?}",
            msgs.iter().map(|m| m.len()).collect::<Vec<_>>()
        );
        assert_eq!(msgs[0], "plain");
        assert_eq!(
            (msgs[1], ev[1].level, ev[1].fields["code"].as_i64()),
            ("boom", Level::Error, Some(7))
        );
        assert_eq!(msgs[2].len(), MAX_LOG_LINE);
        assert_eq!(ev[2].fields["truncated"], true);
        assert_eq!(msgs[3], "after");
        assert_eq!(msgs[4], "no-newline");
        assert!(ev.iter().all(|e| e.pid == Some(9) && e.service == "svc"));
    }
}
