//! The structured log event every Tessera process emits and PID 1 keeps.
//!
//! A service writes lines to stdout/stderr. A line that is a JSON object keeps its keys as
//! fields (`level`, `message`/`msg` are understood); any other line becomes the message, with
//! an optional sd-daemon priority prefix (`<3>disk gone` is an error).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::time::SystemTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    /// Understands the usual spellings: `WARN`, `warning`, `err`, `trace`, …
    pub fn parse(s: &str) -> Option<Level> {
        match s.to_ascii_lowercase().as_str() {
            "trace" | "debug" => Some(Level::Debug),
            "info" | "notice" => Some(Level::Info),
            "warn" | "warning" => Some(Level::Warn),
            "error" | "err" | "crit" | "critical" | "alert" | "emerg" | "fatal" => {
                Some(Level::Error)
            }
            _ => None,
        }
    }

    /// Level of a syslog / sd-daemon priority 0-7.
    pub fn from_priority(p: u8) -> Level {
        match p {
            0..=3 => Level::Error,
            4 => Level::Warn,
            5 | 6 => Level::Info,
            _ => Level::Debug,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One log event, serialized as one JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEvent {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub level: Level,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<Stream>,
    pub message: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub fields: Map<String, Value>,
}

/// Current time in the log format.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl LogEvent {
    pub fn new(service: &str, level: Level, message: impl Into<String>) -> Self {
        LogEvent {
            time: now_rfc3339(),
            service: service.to_string(),
            pid: None,
            level,
            stream: None,
            message: message.into(),
            fields: Map::new(),
        }
    }

    pub fn field(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(key.to_string(), value.into());
        self
    }

    /// Turns one line a service wrote into an event. `line` has no trailing newline.
    pub fn from_service_line(service: &str, pid: u32, stream: Stream, line: &[u8]) -> Self {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        let mut event = LogEvent::new(service, Level::Info, String::new());
        event.pid = Some(pid);
        event.stream = Some(stream);
        if text.starts_with('{') {
            if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) {
                event.absorb_json(map);
                return event;
            }
        }
        let (level, message) = split_priority(text);
        if let Some(level) = level {
            event.level = level;
        }
        event.message = message.to_string();
        event
    }

    /// Moves the well-known keys of a JSON line into the event and keeps the rest as fields.
    fn absorb_json(&mut self, mut map: Map<String, Value>) {
        if let Some(level) = map
            .remove("level")
            .as_ref()
            .and_then(Value::as_str)
            .and_then(Level::parse)
        {
            self.level = level;
        }
        // tracing-subscriber's JSON format nests the message in "fields".
        if let Some(Value::Object(nested)) = map.remove("fields") {
            for (k, v) in nested {
                map.entry(k).or_insert(v);
            }
        }
        for key in ["message", "msg"] {
            if let Some(v) = map.remove(key) {
                self.message = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                break;
            }
        }
        self.fields = map;
    }

    /// One-line human rendering for the console and `tessera logs`.
    pub fn human(&self) -> String {
        let clock = self.time.get(11..23).unwrap_or(&self.time);
        let mut out = match self.pid {
            Some(pid) => format!("{clock} {}[{pid}]", self.service),
            None => format!("{clock} {}", self.service),
        };
        if self.level != Level::Info {
            out.push(' ');
            out.push_str(&self.level.as_str().to_ascii_uppercase());
        }
        out.push_str(": ");
        out.push_str(&self.message);
        for (k, v) in &self.fields {
            match v {
                Value::String(s) if !s.contains(' ') && !s.is_empty() => {
                    out.push_str(&format!(" {k}={s}"))
                }
                other => out.push_str(&format!(" {k}={other}")),
            }
        }
        out
    }
}

impl fmt::Display for LogEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.human())
    }
}

/// Strips an sd-daemon `<N>` priority prefix.
fn split_priority(text: &str) -> (Option<Level>, &str) {
    let b = text.as_bytes();
    if b.len() >= 3 && b[0] == b'<' && b[2] == b'>' && b[1].is_ascii_digit() {
        return (Some(Level::from_priority(b[1] - b'0')), &text[3..]);
    }
    (None, text)
}

/// Prints one structured event on stdout, where PID 1 turns it into a log event of the
/// service: `{"level":…,"msg":…,<fields>}` (level and message first, for a human reading the
/// raw line); fields that are null are left out.
pub fn print_event(level: &str, msg: &str, fields: serde_json::Value) {
    println!("{}", event_line(level, msg, fields));
}

/// The line [`print_event`] prints.
pub fn event_line(level: &str, msg: &str, fields: serde_json::Value) -> String {
    use serde_json::json;
    let mut line = format!("{{\"level\":{},\"msg\":{}", json!(level), json!(msg));
    if let serde_json::Value::Object(fields) = fields {
        for (key, value) in fields.iter().filter(|(_, v)| !v.is_null()) {
            line.push_str(&format!(",{}:{value}", json!(key)));
        }
    }
    line.push('}');
    line
}

#[cfg(test)]
mod tests {
    #[test]
    fn events_are_one_json_object_per_line() {
        let line = event_line(
            "info",
            "dhcp bound",
            serde_json::json!({"address": "10.0.2.15/24", "router": "10.0.2.2", "lease_s": 86400, "domain": null}),
        );
        assert_eq!(
            line,
            r#"{"level":"info","msg":"dhcp bound","address":"10.0.2.15/24","lease_s":86400,"router":"10.0.2.2"}"#
        );
        let event = LogEvent::from_service_line("net", 1, Stream::Stdout, line.as_bytes());
        assert_eq!(event.message, "dhcp bound");
        assert_eq!(event.fields["lease_s"], 86400);
    }

    use super::*;

    #[test]
    fn plain_line_is_wrapped_with_service_pid_and_stream() {
        let e = LogEvent::from_service_line("web", 42, Stream::Stderr, b"listening on :80");
        assert_eq!(e.service, "web");
        assert_eq!(e.pid, Some(42));
        assert_eq!(e.stream, Some(Stream::Stderr));
        assert_eq!(e.level, Level::Info);
        assert_eq!(e.message, "listening on :80");
        assert!(e.fields.is_empty());
    }

    #[test]
    fn priority_prefix_sets_level() {
        let e = LogEvent::from_service_line("s", 1, Stream::Stdout, b"<3>disk gone");
        assert_eq!(e.level, Level::Error);
        assert_eq!(e.message, "disk gone");
    }

    #[test]
    fn json_line_keeps_its_fields() {
        let line = br#"{"level":"WARN","msg":"slow","latency_ms":250,"peer":"10.0.0.2"}"#;
        let e = LogEvent::from_service_line("s", 7, Stream::Stdout, line);
        assert_eq!(e.level, Level::Warn);
        assert_eq!(e.message, "slow");
        assert_eq!(e.fields["latency_ms"], 250);
        assert_eq!(e.fields["peer"], "10.0.0.2");
        assert!(!e.fields.contains_key("level"));
    }

    #[test]
    fn tracing_json_nested_message_is_found() {
        let line =
            br#"{"timestamp":"x","level":"INFO","fields":{"message":"hello","n":1},"target":"t"}"#;
        let e = LogEvent::from_service_line("s", 7, Stream::Stdout, line);
        assert_eq!(e.message, "hello");
        assert_eq!(e.fields["n"], 1);
        assert_eq!(e.fields["target"], "t");
    }

    #[test]
    fn broken_json_is_kept_as_text() {
        let e = LogEvent::from_service_line("s", 7, Stream::Stdout, b"{not json");
        assert_eq!(e.message, "{not json");
    }

    #[test]
    fn event_round_trips_as_json_line() {
        let e = LogEvent::new("init", Level::Warn, "x").field("service", "a");
        let line = serde_json::to_string(&e).unwrap();
        assert!(!line.contains('\n'));
        let back: LogEvent = serde_json::from_str(&line).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn invalid_utf8_does_not_fail() {
        let e = LogEvent::from_service_line("s", 1, Stream::Stdout, b"a\xffb");
        assert_eq!(e.message, "a\u{fffd}b");
    }
}
