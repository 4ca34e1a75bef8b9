//! Parsers for the node's /proc files: pure functions over the text, so that the tests feed
//! them fixtures. Lines they do not understand are skipped, never fatal: a kernel that adds a
//! column must not take the metrics down.

/// The modes of a `cpuN` line in /proc/stat, in column order (node_exporter's names).
pub const CPU_MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

/// /proc/stat.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stat {
    /// Per CPU ("0", "1", …): ticks in each of [`CPU_MODES`].
    pub cpus: Vec<(String, [u64; 8])>,
    pub context_switches: Option<u64>,
    pub boot_time: Option<u64>,
    pub forks: Option<u64>,
    pub interrupts: Option<u64>,
    pub procs_running: Option<u64>,
    pub procs_blocked: Option<u64>,
}

pub fn parse_stat(text: &str) -> Stat {
    let mut stat = Stat::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(key) = words.next() else { continue };
        let first = || line.split_whitespace().nth(1).and_then(|v| v.parse().ok());
        match key {
            "ctxt" => stat.context_switches = first(),
            "btime" => stat.boot_time = first(),
            "processes" => stat.forks = first(),
            "intr" => stat.interrupts = first(),
            "procs_running" => stat.procs_running = first(),
            "procs_blocked" => stat.procs_blocked = first(),
            k if k.len() > 3 && k.starts_with("cpu") => {
                let mut ticks = [0u64; 8];
                for (slot, word) in ticks.iter_mut().zip(words) {
                    *slot = word.parse().unwrap_or(0);
                }
                stat.cpus.push((k[3..].to_string(), ticks));
            }
            _ => {}
        }
    }
    stat
}

/// /proc/meminfo: (key with `(`/`)` made `_` and trimmed, bytes or count, is it bytes).
pub fn parse_meminfo(text: &str) -> Vec<(String, f64, bool)> {
    text.lines()
        .filter_map(|line| {
            let (key, rest) = line.split_once(':')?;
            let mut words = rest.split_whitespace();
            let value: f64 = words.next()?.parse().ok()?;
            let key = key.trim().replace(['(', ')'], "_");
            let key = key.trim_end_matches('_').to_string();
            Some(match words.next() {
                Some("kB") => (key, value * 1024.0, true),
                _ => (key, value, false),
            })
        })
        .collect()
}

/// /proc/loadavg: the 1, 5 and 15 minute load averages.
pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut w = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([w.next()??, w.next()??, w.next()??])
}

/// One block device of /proc/diskstats.
#[derive(Debug, Clone, PartialEq)]
pub struct Disk {
    pub device: String,
    pub reads_completed: u64,
    pub read_bytes: u64,
    pub read_time_s: f64,
    pub writes_completed: u64,
    pub written_bytes: u64,
    pub write_time_s: f64,
    pub io_time_s: f64,
}

/// Sectors in /proc/diskstats are always 512 bytes, whatever the device's block size.
const SECTOR: u64 = 512;

/// /proc/diskstats, without loop and ram devices (as node_exporter leaves them out).
pub fn parse_diskstats(text: &str) -> Vec<Disk> {
    text.lines()
        .filter_map(|line| {
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.len() < 14 {
                return None;
            }
            let device = w[2];
            if device.starts_with("loop") || device.starts_with("ram") {
                return None;
            }
            let n = |i: usize| w[i].parse::<u64>().ok();
            Some(Disk {
                device: device.to_string(),
                reads_completed: n(3)?,
                read_bytes: n(5)? * SECTOR,
                read_time_s: n(6)? as f64 / 1000.0,
                writes_completed: n(7)?,
                written_bytes: n(9)? * SECTOR,
                write_time_s: n(10)? as f64 / 1000.0,
                io_time_s: n(12)? as f64 / 1000.0,
            })
        })
        .collect()
}

/// One interface of /proc/net/dev.
#[derive(Debug, Clone, PartialEq)]
pub struct NetDev {
    pub device: String,
    /// bytes, packets, errs, drop (receive).
    pub receive: [u64; 4],
    /// bytes, packets, errs, drop (transmit).
    pub transmit: [u64; 4],
}

/// /proc/net/dev (the two header lines have no `:` before the numbers and are skipped).
pub fn parse_net_dev(text: &str) -> Vec<NetDev> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let v: Vec<u64> = rest
                .split_whitespace()
                .map(|w| w.parse().ok())
                .collect::<Option<_>>()?;
            if v.len() < 12 {
                return None;
            }
            Some(NetDev {
                device: name.trim().to_string(),
                receive: [v[0], v[1], v[2], v[3]],
                transmit: [v[8], v[9], v[10], v[11]],
            })
        })
        .collect()
}

/// A mounted file system from /proc/mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub device: String,
    pub mountpoint: String,
    pub fstype: String,
    pub readonly: bool,
}

/// Pseudo file systems without space to report (node_exporter's default exclusions).
const PSEUDO_FS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "proc",
    "pstore",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "sysfs",
    "tracefs",
];

/// /proc/mounts, pseudo file systems left out, `\040`-style escapes decoded.
pub fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.len() < 4 || PSEUDO_FS.contains(&w[2]) {
                return None;
            }
            Some(Mount {
                device: unescape_octal(w[0]),
                mountpoint: unescape_octal(w[1]),
                fstype: w[2].to_string(),
                readonly: w[3].split(',').any(|o| o == "ro"),
            })
        })
        .collect()
}

/// The kernel writes space, tab, newline and backslash in mount fields as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/data/metrics/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn stat_gives_per_cpu_ticks_and_counters() {
        let s = parse_stat(&fixture("stat"));
        assert_eq!(s.cpus.len(), 2, "the aggregate `cpu` line is not a CPU");
        assert_eq!(s.cpus[0].0, "0");
        assert_eq!(s.cpus[1].1, [803106, 0, 107687, 662661, 5914, 0, 2212, 479]);
        assert_eq!(s.context_switches, Some(27782318));
        assert_eq!(s.boot_time, Some(1795613549));
        assert_eq!(s.forks, Some(445989));
        assert_eq!(s.interrupts, Some(12995468));
        assert_eq!(s.procs_running, Some(3));
        assert_eq!(s.procs_blocked, Some(0));
    }

    #[test]
    fn meminfo_is_in_bytes_with_node_exporter_names() {
        let m = parse_meminfo(&fixture("meminfo"));
        let get = |k: &str| m.iter().find(|e| e.0 == k).cloned();
        let avail = get("MemAvailable").expect("MemAvailable");
        assert!(avail.2 && avail.1 > 0.0 && avail.1 % 1024.0 == 0.0);
        assert!(get("Active_anon").is_some_and(|e| e.2), "{m:?}");
        let huge = get("HugePages_Total").expect("HugePages_Total");
        assert!(!huge.2, "a page count is not bytes");
    }

    #[test]
    fn loadavg_has_three_averages() {
        assert_eq!(
            parse_loadavg("0.52 1.25 2.00 3/455 12345\n"),
            Some([0.52, 1.25, 2.0])
        );
        assert_eq!(parse_loadavg("garbage"), None);
    }

    #[test]
    fn diskstats_skip_loop_devices_and_count_sectors_as_512_bytes() {
        let d = parse_diskstats(&fixture("diskstats"));
        let names: Vec<&str> = d.iter().map(|d| d.device.as_str()).collect();
        assert_eq!(names, ["vda", "vda1"]);
        assert_eq!(d[0].reads_completed, 4721);
        assert_eq!(d[0].read_bytes, 395442 * 512);
        assert_eq!(d[0].written_bytes, 74944 * 512);
        assert_eq!(d[0].writes_completed, 2083);
        assert_eq!(d[0].io_time_s, 3.196);
    }

    #[test]
    fn net_dev_skips_headers() {
        let n = parse_net_dev(&fixture("net/dev"));
        assert_eq!(n.len(), 4);
        let eth0 = n.iter().find(|n| n.device == "eth0").unwrap();
        assert_eq!(eth0.receive, [1583772303, 63709, 0, 0]);
        assert_eq!(eth0.transmit, [3407219, 39992, 0, 0]);
    }

    #[test]
    fn mounts_leave_out_pseudo_file_systems_and_decode_escapes() {
        let m = parse_mounts(&fixture("mounts"));
        let points: Vec<&str> = m.iter().map(|m| m.mountpoint.as_str()).collect();
        assert_eq!(points, ["/", "/run", "/var/lib/tessera", "/mnt/with space"]);
        assert!(m[3].readonly && !m[2].readonly);
        assert_eq!(m[2].fstype, "btrfs");
    }
}
