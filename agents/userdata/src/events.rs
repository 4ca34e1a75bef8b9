//! Structured events: one JSON object per line on stdout, which the supervisor keeps as log
//! events (`level`, `msg`, and the other keys as fields).

use serde_json::{Map, Value};
use std::io::Write;
use std::sync::{Arc, Mutex};
use tessera_common::log::Level;

/// Where events go. Cheap to share by reference; writes are serialized.
pub struct Events {
    out: Mutex<Box<dyn Write + Send>>,
}

impl Events {
    /// Events on stdout (what the supervisor captures).
    pub fn stdout() -> Self {
        Events {
            out: Mutex::new(Box::new(std::io::stdout())),
        }
    }

    /// Events into a shared buffer, for tests.
    pub fn capture() -> (Self, Captured) {
        let buf = Captured::default();
        (
            Events {
                out: Mutex::new(Box::new(buf.clone())),
            },
            buf,
        )
    }

    /// Writes one event: `{"level":…,"msg":…, fields…}`.
    pub fn emit(&self, level: Level, msg: &str, fields: &[(&str, Value)]) {
        let mut map = Map::new();
        map.insert("level".into(), level.as_str().into());
        map.insert("msg".into(), msg.into());
        for (k, v) in fields {
            map.insert((*k).to_string(), v.clone());
        }
        let mut line = Value::Object(map).to_string();
        line.push('\n');
        if let Ok(mut out) = self.out.lock() {
            // Nothing sensible to do when stdout is gone; the service goes on.
            let _ = out.write_all(line.as_bytes());
            let _ = out.flush();
        }
    }

    pub fn debug(&self, msg: &str, fields: &[(&str, Value)]) {
        self.emit(Level::Debug, msg, fields)
    }
    pub fn info(&self, msg: &str, fields: &[(&str, Value)]) {
        self.emit(Level::Info, msg, fields)
    }
    pub fn warn(&self, msg: &str, fields: &[(&str, Value)]) {
        self.emit(Level::Warn, msg, fields)
    }
    pub fn error(&self, msg: &str, fields: &[(&str, Value)]) {
        self.emit(Level::Error, msg, fields)
    }
}

/// The buffer behind [`Events::capture`].
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Every event so far, parsed.
    pub fn events(&self) -> Vec<Map<String, Value>> {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| match serde_json::from_str(l) {
                Ok(Value::Object(m)) => Some(m),
                _ => None,
            })
            .collect()
    }

    /// The raw text written.
    pub fn text(&self) -> String {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_json_object_per_line_that_the_supervisor_understands() {
        let (events, captured) = Events::capture();
        events.info("config found", &[("source", "nocloud".into())]);
        events.error("bad\nline", &[("key", "ca.url".into())]);
        let text = captured.text();
        assert_eq!(text.lines().count(), 2);
        let first = text.lines().next().unwrap();
        assert_eq!(
            first,
            r#"{"level":"info","msg":"config found","source":"nocloud"}"#
        );
        let e = tessera_common::log::LogEvent::from_service_line(
            "userdata",
            1,
            tessera_common::log::Stream::Stdout,
            text.lines().nth(1).unwrap().as_bytes(),
        );
        assert_eq!(e.level, Level::Error);
        assert_eq!(e.message, "bad\nline");
        assert_eq!(e.fields["key"], "ca.url");
    }
}
