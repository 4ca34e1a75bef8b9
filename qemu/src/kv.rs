//! Reading the machine-readable console lines of the guest's PID 1
//! (`TESSERA-READY services=3 userspace_ms=80 uptime_ms=1200 failed=0`).

use std::collections::BTreeMap;

/// The `key=value` words of a line, in a map; other words (the `TESSERA-...` tag, a kernel
/// timestamp) are ignored, and a value may be double-quoted.
pub fn parse_kv_line(line: &str) -> BTreeMap<String, String> {
    line.split_whitespace()
        .filter_map(|word| word.split_once('='))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| {
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// A numeric field of a key=value line.
pub fn kv_u64(map: &BTreeMap<String, String>, key: &str) -> Option<u64> {
    map.get(key).and_then(|v| v.parse().ok())
}

/// The `HH:MM:SS.mmm` clock at the start of a console event line, in milliseconds.
pub fn clock_ms(line: &str) -> Option<u64> {
    let t = line.split_whitespace().next()?;
    let (hms, ms) = t.split_once('.')?;
    let mut p = hms.split(':').map(|x| x.parse::<u64>().ok());
    let (h, m, s) = (p.next()??, p.next()??, p.next()??);
    Some(((h * 60 + m) * 60 + s) * 1000 + ms.parse::<u64>().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_of_an_event_line_is_read_in_milliseconds() {
        assert_eq!(
            clock_ms("18:23:16.734 init: service started pid=94 service=node"),
            Some(((18 * 60 + 23) * 60 + 16) * 1000 + 734)
        );
        assert_eq!(clock_ms("TESSERA-READY services=7"), None);
    }

    #[test]
    fn ready_line_fields_become_a_map() {
        let m = parse_kv_line("TESSERA-READY services=3 userspace_ms=80 uptime_ms=1200 failed=0");
        assert_eq!(m.len(), 4);
        assert_eq!(m["services"], "3");
        assert_eq!(m["userspace_ms"], "80");
        assert_eq!(kv_u64(&m, "uptime_ms"), Some(1200));
        assert_eq!(kv_u64(&m, "failed"), Some(0));
    }

    #[test]
    fn words_without_equals_and_empty_keys_are_ignored_and_quotes_stripped() {
        let m = parse_kv_line("[    1.23] TESSERA-SHUTDOWN mode=\"poweroff\" =x stray");
        assert_eq!(m.len(), 1);
        assert_eq!(m["mode"], "poweroff");
    }

    #[test]
    fn a_value_may_contain_equals_signs() {
        let m = parse_kv_line("x token=abc==");
        assert_eq!(m["token"], "abc==");
        assert_eq!(kv_u64(&m, "token"), None);
    }
}
