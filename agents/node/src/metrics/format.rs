//! The Prometheus text exposition format (version 0.0.4): metric families with `# HELP` and
//! `# TYPE`, label values escaped (`\\`, `\"`, `\n`), values as Prometheus writes them
//! (`NaN`, `+Inf`, `-Inf`).

use std::fmt::Write;

/// The content type of the text format, for the `/metrics` reply.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One metric family: a name, its help text, and its samples (labels, value).
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    pub samples: Vec<(Vec<(String, String)>, f64)>,
}

impl Family {
    pub fn new(name: impl Into<String>, kind: Kind, help: impl Into<String>) -> Family {
        Family {
            name: name.into(),
            help: help.into(),
            kind,
            samples: Vec::new(),
        }
    }

    pub fn counter(name: impl Into<String>, help: impl Into<String>) -> Family {
        Family::new(name, Kind::Counter, help)
    }

    pub fn gauge(name: impl Into<String>, help: impl Into<String>) -> Family {
        Family::new(name, Kind::Gauge, help)
    }

    /// Adds a sample with these labels.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Family {
        self.samples.push((
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        ));
        self
    }

    /// A family with one unlabelled sample.
    pub fn single(mut self, value: f64) -> Family {
        self.sample(&[], value);
        self
    }
}

/// `\`, `"` and newlines escaped, as the format requires inside label values.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// `\` and newlines escaped, as the format requires in `# HELP` lines.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A value as Prometheus writes it.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// Metric and label names: `[a-zA-Z_:][a-zA-Z0-9_:]*` (labels without `:`); anything else
/// becomes `_` (meminfo's `Active(anon)` → `Active_anon_`, trimmed by the caller).
pub fn sanitize_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

/// The whole exposition: families in the order given, empty families left out.
pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families.iter().filter(|f| !f.samples.is_empty()) {
        let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(&f.help));
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
        for (labels, value) in &f.samples {
            out.push_str(&f.name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label_value(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", format_value(*value));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label_value("x\ny"), "x\\ny");
        let mut f = Family::gauge("node_filesystem_avail_bytes", "Free space.\nLine two");
        f.sample(&[("mountpoint", "/mnt/\"q\"\\x\n")], 1.0);
        assert_eq!(
            render(&[f]),
            "# HELP node_filesystem_avail_bytes Free space.\\nLine two\n\
             # TYPE node_filesystem_avail_bytes gauge\n\
             node_filesystem_avail_bytes{mountpoint=\"/mnt/\\\"q\\\"\\\\x\\n\"} 1\n"
        );
    }

    #[test]
    fn values_are_written_the_prometheus_way() {
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(1.5), "1.5");
        assert_eq!(format_value(3091651622.0), "3091651622");
        assert_eq!(format_value(0.0), "0");
    }

    #[test]
    fn empty_families_are_left_out_and_labels_keep_their_order() {
        let mut cpu = Family::counter("node_cpu_seconds_total", "CPU time.");
        cpu.sample(&[("cpu", "0"), ("mode", "user")], 2.5);
        let empty = Family::gauge("node_nothing", "none");
        assert_eq!(
            render(&[empty, cpu]),
            "# HELP node_cpu_seconds_total CPU time.\n# TYPE node_cpu_seconds_total counter\n\
             node_cpu_seconds_total{cpu=\"0\",mode=\"user\"} 2.5\n"
        );
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize_name("Active(anon)"), "Active_anon_");
        assert_eq!(sanitize_name("9lives"), "_9lives");
    }
}
