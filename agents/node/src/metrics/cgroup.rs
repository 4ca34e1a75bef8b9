//! Parsers for a service's cgroup v2 files (`/sys/fs/cgroup/services/<name>/`, where the
//! supervisor puts each service): pure functions over the text.

/// `cpu.stat`: (user seconds, system seconds), from `user_usec` / `system_usec`.
pub fn parse_cpu_stat(text: &str) -> Option<(f64, f64)> {
    let mut user = None;
    let mut system = None;
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("user_usec", v)) => user = v.trim().parse::<u64>().ok(),
            Some(("system_usec", v)) => system = v.trim().parse::<u64>().ok(),
            _ => {}
        }
    }
    Some((user? as f64 / 1e6, system? as f64 / 1e6))
}

/// A one-number file (`memory.current`, `pids.current`, `memory.peak`); "max" is +Inf.
pub fn parse_single(text: &str) -> Option<f64> {
    match text.trim() {
        "max" => Some(f64::INFINITY),
        v => v.parse::<u64>().ok().map(|v| v as f64),
    }
}

/// `io.stat`: (read bytes, written bytes), summed over devices.
pub fn parse_io_stat(text: &str) -> (u64, u64) {
    let mut read = 0u64;
    let mut written = 0u64;
    for word in text.split_whitespace() {
        match word.split_once('=') {
            Some(("rbytes", v)) => read = read.saturating_add(v.parse().unwrap_or(0)),
            Some(("wbytes", v)) => written = written.saturating_add(v.parse().unwrap_or(0)),
            _ => {}
        }
    }
    (read, written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/tests/data/metrics/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn cpu_stat_is_user_and_system_seconds() {
        assert_eq!(parse_cpu_stat(&fixture("cpu.stat")), Some((1.0, 0.52)));
        assert_eq!(parse_cpu_stat("usage_usec 5\n"), None);
    }

    #[test]
    fn single_values_and_max() {
        assert_eq!(parse_single("4096\n"), Some(4096.0));
        assert_eq!(parse_single("max\n"), Some(f64::INFINITY));
        assert_eq!(parse_single("lots"), None);
    }

    #[test]
    fn io_stat_sums_devices() {
        assert_eq!(parse_io_stat(&fixture("io.stat")), (5096, 8192));
        assert_eq!(parse_io_stat(""), (0, 0));
    }
}
