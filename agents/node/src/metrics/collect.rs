//! Reading the files and turning them into metric families: node metrics from /proc (names
//! as node_exporter's), service metrics from each service's cgroup and PID 1's status
//! (`tessera_service_*`), and the node agent's own rusage.

use std::path::{Path, PathBuf};

use tessera_common::control::Status;

use super::cgroup;
use super::format::{sanitize_name, Family};
use super::proc;

/// Where the files are: `/proc` and the supervisor's cgroup sub-tree on a node; fixture
/// directories in tests.
#[derive(Debug, Clone)]
pub struct Sources {
    pub proc: PathBuf,
    pub cgroup_services: PathBuf,
}

impl Default for Sources {
    fn default() -> Sources {
        Sources {
            proc: "/proc".into(),
            cgroup_services: tessera_common::paths::CGROUP_SERVICES.into(),
        }
    }
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Clock ticks per second of /proc/stat's CPU columns.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Every node metric: CPU, memory, load, file systems, disks, network.
pub fn node_families(src: &Sources) -> Vec<Family> {
    let mut out = Vec::new();
    if let Some(text) = read(&src.proc.join("stat")) {
        out.extend(stat_families(&proc::parse_stat(&text), ticks_per_second()));
    }
    if let Some(text) = read(&src.proc.join("meminfo")) {
        out.extend(meminfo_families(&proc::parse_meminfo(&text)));
    }
    if let Some(load) = read(&src.proc.join("loadavg")).and_then(|t| proc::parse_loadavg(&t)) {
        for (name, v) in ["node_load1", "node_load5", "node_load15"].iter().zip(load) {
            out.push(Family::gauge(*name, "Load average.").single(v));
        }
    }
    if let Some(text) = read(&src.proc.join("mounts")) {
        out.extend(filesystem_families(&proc::parse_mounts(&text)));
    }
    if let Some(text) = read(&src.proc.join("diskstats")) {
        out.extend(disk_families(&proc::parse_diskstats(&text)));
    }
    if let Some(text) = read(&src.proc.join("net/dev")) {
        out.extend(net_families(&proc::parse_net_dev(&text)));
    }
    out
}

pub fn stat_families(s: &proc::Stat, ticks: f64) -> Vec<Family> {
    let mut cpu = Family::counter(
        "node_cpu_seconds_total",
        "Seconds the CPUs spent in each mode.",
    );
    for (n, t) in &s.cpus {
        for (mode, v) in proc::CPU_MODES.iter().zip(t) {
            cpu.sample(&[("cpu", n), ("mode", mode)], *v as f64 / ticks);
        }
    }
    let mut out = vec![cpu];
    let scalars = [
        (
            "node_context_switches_total",
            "Total number of context switches.",
            s.context_switches,
            true,
        ),
        (
            "node_boot_time_seconds",
            "Node boot time, in unixtime.",
            s.boot_time,
            false,
        ),
        ("node_forks_total", "Total number of forks.", s.forks, true),
        (
            "node_intr_total",
            "Total number of interrupts serviced.",
            s.interrupts,
            true,
        ),
        (
            "node_procs_running",
            "Number of processes in runnable state.",
            s.procs_running,
            false,
        ),
        (
            "node_procs_blocked",
            "Number of processes blocked waiting for I/O to complete.",
            s.procs_blocked,
            false,
        ),
    ];
    for (name, help, value, counter) in scalars {
        if let Some(v) = value {
            let f = if counter {
                Family::counter(name, help)
            } else {
                Family::gauge(name, help)
            };
            out.push(f.single(v as f64));
        }
    }
    out
}

pub fn meminfo_families(m: &[(String, f64, bool)]) -> Vec<Family> {
    m.iter()
        .map(|(key, v, bytes)| {
            let key = sanitize_name(key);
            let name = if *bytes {
                format!("node_memory_{key}_bytes")
            } else {
                format!("node_memory_{key}")
            };
            Family::gauge(name, format!("Memory information field {key}.")).single(*v)
        })
        .collect()
}

pub fn filesystem_families(mounts: &[proc::Mount]) -> Vec<Family> {
    let mut size = Family::gauge("node_filesystem_size_bytes", "Filesystem size in bytes.");
    let mut free = Family::gauge(
        "node_filesystem_free_bytes",
        "Filesystem free space in bytes.",
    );
    let mut avail = Family::gauge(
        "node_filesystem_avail_bytes",
        "Filesystem space available to non-root users in bytes.",
    );
    let mut files = Family::gauge("node_filesystem_files", "Filesystem total file nodes.");
    let mut files_free = Family::gauge(
        "node_filesystem_files_free",
        "Filesystem total free file nodes.",
    );
    let mut ro = Family::gauge("node_filesystem_readonly", "Filesystem read-only status.");
    let mut seen = std::collections::BTreeSet::new();
    for m in mounts {
        if !seen.insert(m.mountpoint.clone()) {
            continue;
        }
        let Ok(st) = nix::sys::statvfs::statvfs(m.mountpoint.as_str()) else {
            continue;
        };
        let labels = [
            ("device", m.device.as_str()),
            ("fstype", m.fstype.as_str()),
            ("mountpoint", m.mountpoint.as_str()),
        ];
        let block = st.fragment_size() as f64;
        size.sample(&labels, st.blocks() as f64 * block);
        free.sample(&labels, st.blocks_free() as f64 * block);
        avail.sample(&labels, st.blocks_available() as f64 * block);
        files.sample(&labels, st.files() as f64);
        files_free.sample(&labels, st.files_free() as f64);
        ro.sample(&labels, if m.readonly { 1.0 } else { 0.0 });
    }
    vec![size, free, avail, files, files_free, ro]
}

pub fn disk_families(disks: &[proc::Disk]) -> Vec<Family> {
    let mut f = [
        Family::counter(
            "node_disk_reads_completed_total",
            "The total number of reads completed successfully.",
        ),
        Family::counter(
            "node_disk_read_bytes_total",
            "The total number of bytes read successfully.",
        ),
        Family::counter(
            "node_disk_read_time_seconds_total",
            "The total number of seconds spent by all reads.",
        ),
        Family::counter(
            "node_disk_writes_completed_total",
            "The total number of writes completed successfully.",
        ),
        Family::counter(
            "node_disk_written_bytes_total",
            "The total number of bytes written successfully.",
        ),
        Family::counter(
            "node_disk_write_time_seconds_total",
            "This is the total number of seconds spent by all writes.",
        ),
        Family::counter(
            "node_disk_io_time_seconds_total",
            "Total seconds spent doing I/Os.",
        ),
    ];
    for d in disks {
        let l = [("device", d.device.as_str())];
        let values = [
            d.reads_completed as f64,
            d.read_bytes as f64,
            d.read_time_s,
            d.writes_completed as f64,
            d.written_bytes as f64,
            d.write_time_s,
            d.io_time_s,
        ];
        for (family, v) in f.iter_mut().zip(values) {
            family.sample(&l, v);
        }
    }
    f.into()
}

pub fn net_families(devs: &[proc::NetDev]) -> Vec<Family> {
    let names = ["bytes", "packets", "errs", "drop"];
    let mut out = Vec::new();
    for (dir, pick) in [
        (
            "receive",
            (|d: &proc::NetDev| d.receive) as fn(&proc::NetDev) -> [u64; 4],
        ),
        ("transmit", |d: &proc::NetDev| d.transmit),
    ] {
        for (i, what) in names.iter().enumerate() {
            let mut f = Family::counter(
                format!("node_network_{dir}_{what}_total"),
                format!("Network device statistic {dir}_{what}."),
            );
            for d in devs {
                f.sample(&[("device", d.device.as_str())], pick(d)[i] as f64);
            }
            out.push(f);
        }
    }
    out
}

/// Per-service metrics: the cgroup of every service PID 1 knows (or, without its status,
/// every cgroup under the services sub-tree), and PID 1's view (state, restarts).
pub fn service_families(src: &Sources, status: Option<&Status>) -> Vec<Family> {
    let names: Vec<String> = match status {
        Some(s) => s.services.iter().map(|s| s.name.clone()).collect(),
        None => std::fs::read_dir(&src.cgroup_services)
            .map(|d| {
                let mut v: Vec<String> = d
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect();
                v.sort();
                v
            })
            .unwrap_or_default(),
    };
    let mut cpu = Family::counter(
        "tessera_service_cpu_seconds_total",
        "CPU time of the service's cgroup, by mode (cgroup v2 cpu.stat).",
    );
    let mut mem = Family::gauge(
        "tessera_service_memory_bytes",
        "Memory charged to the service's cgroup (memory.current).",
    );
    let mut peak = Family::gauge(
        "tessera_service_memory_peak_bytes",
        "Highest memory use of the service's cgroup (memory.peak).",
    );
    let mut limit = Family::gauge(
        "tessera_service_memory_max_bytes",
        "Memory limit of the service's cgroup (memory.max; +Inf when unlimited).",
    );
    let mut pids = Family::gauge(
        "tessera_service_pids",
        "Processes and threads in the service's cgroup (pids.current).",
    );
    let mut io_read = Family::counter(
        "tessera_service_io_read_bytes_total",
        "Bytes the service's cgroup read from block devices (io.stat).",
    );
    let mut io_written = Family::counter(
        "tessera_service_io_written_bytes_total",
        "Bytes the service's cgroup wrote to block devices (io.stat).",
    );
    for name in &names {
        let dir = src.cgroup_services.join(name);
        let l = [("service", name.as_str())];
        if let Some((user, system)) =
            read(&dir.join("cpu.stat")).and_then(|t| cgroup::parse_cpu_stat(&t))
        {
            cpu.sample(&[("service", name), ("mode", "user")], user);
            cpu.sample(&[("service", name), ("mode", "system")], system);
        }
        for (family, file) in [
            (&mut mem, "memory.current"),
            (&mut peak, "memory.peak"),
            (&mut limit, "memory.max"),
            (&mut pids, "pids.current"),
        ] {
            if let Some(v) = read(&dir.join(file)).and_then(|t| cgroup::parse_single(&t)) {
                family.sample(&l, v);
            }
        }
        if let Some(text) = read(&dir.join("io.stat")) {
            let (r, w) = cgroup::parse_io_stat(&text);
            io_read.sample(&l, r as f64);
            io_written.sample(&l, w as f64);
        }
    }
    let mut out = vec![cpu, mem, peak, limit, pids, io_read, io_written];
    if let Some(status) = status {
        let mut up = Family::gauge(
            "tessera_service_up",
            "1 when the service is ready (long-run) or done (oneshot), else 0.",
        );
        let mut state = Family::gauge(
            "tessera_service_state",
            "The service's state as PID 1 reports it (1 for the current state).",
        );
        let mut restarts = Family::counter(
            "tessera_service_restarts_total",
            "Restarts of the service by the supervisor.",
        );
        for s in &status.services {
            let l = [("service", s.name.as_str())];
            let is_up = matches!(
                s.state,
                tessera_common::control::ServiceState::Ready
                    | tessera_common::control::ServiceState::Done
            );
            up.sample(&l, if is_up { 1.0 } else { 0.0 });
            state.sample(&[("service", &s.name), ("state", s.state.as_str())], 1.0);
            restarts.sample(&l, s.restarts as f64);
        }
        out.extend([up, state, restarts]);
    }
    out
}

/// The node agent's own resource use (getrusage), the rusage PID 1 does not expose.
pub fn self_families() -> Vec<Family> {
    let Ok(u) = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) else {
        return Vec::new();
    };
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    let mut cpu = Family::counter(
        "tessera_node_agent_cpu_seconds_total",
        "CPU time of the node agent (getrusage), by mode.",
    );
    cpu.sample(&[("mode", "user")], secs(u.user_time()));
    cpu.sample(&[("mode", "system")], secs(u.system_time()));
    vec![
        cpu,
        Family::gauge(
            "tessera_node_agent_max_rss_bytes",
            "Peak resident memory of the node agent (getrusage ru_maxrss).",
        )
        .single(u.max_rss() as f64 * 1024.0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> Sources {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/metrics");
        Sources {
            proc: dir.clone(),
            cgroup_services: dir.join("cgroup"),
        }
    }

    #[test]
    fn cpu_seconds_are_ticks_over_the_clock_rate() {
        let s = proc::parse_stat("cpu0 100 0 50 1000 0 0 0 0 0 0\n");
        let f = &stat_families(&s, 100.0)[0];
        assert_eq!(f.name, "node_cpu_seconds_total");
        assert_eq!(f.samples.len(), 8);
        assert_eq!(f.samples[0].1, 1.0);
        assert_eq!(f.samples[2].0[1], ("mode".into(), "system".into()));
        assert_eq!(f.samples[3].1, 10.0);
    }

    #[test]
    fn node_metrics_from_fixture_files_have_node_exporter_names() {
        let text = super::super::format::render(&node_families(&fixtures()));
        for name in [
            "node_cpu_seconds_total{cpu=\"0\",mode=\"user\"}",
            "node_memory_MemAvailable_bytes ",
            "node_load1 ",
            "node_disk_read_bytes_total{device=\"vda\"} 202466304",
            "node_network_receive_bytes_total{device=\"eth0\"} 1583772303",
            "node_network_transmit_packets_total{device=\"lo\"} 5214221",
            "node_filesystem_avail_bytes{device=\"rootfs\",fstype=\"rootfs\",mountpoint=\"/\"}",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }

    #[test]
    fn service_metrics_come_from_the_cgroup() {
        let dir = tempfile::tempdir().unwrap();
        let svc = dir.path().join("web");
        std::fs::create_dir(&svc).unwrap();
        let fx = fixtures().proc;
        std::fs::copy(fx.join("cpu.stat"), svc.join("cpu.stat")).unwrap();
        std::fs::copy(fx.join("io.stat"), svc.join("io.stat")).unwrap();
        std::fs::write(svc.join("memory.current"), "1048576\n").unwrap();
        std::fs::write(svc.join("memory.max"), "max\n").unwrap();
        std::fs::write(svc.join("pids.current"), "3\n").unwrap();
        let src = Sources {
            proc: fx,
            cgroup_services: dir.path().into(),
        };
        let text = super::super::format::render(&service_families(&src, None));
        for line in [
            "tessera_service_cpu_seconds_total{service=\"web\",mode=\"user\"} 1\n",
            "tessera_service_cpu_seconds_total{service=\"web\",mode=\"system\"} 0.52\n",
            "tessera_service_memory_bytes{service=\"web\"} 1048576\n",
            "tessera_service_memory_max_bytes{service=\"web\"} +Inf\n",
            "tessera_service_pids{service=\"web\"} 3\n",
            "tessera_service_io_read_bytes_total{service=\"web\"} 5096\n",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
