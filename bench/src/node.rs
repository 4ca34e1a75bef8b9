//! `tessera bench node`: the node agent's figures (issue 4 §9), per storage backend. Each run
//! boots the image under QEMU with a blank qcow2 data disk and NoCloud user-data naming it,
//! then reads:
//! - snapshot create+delete latency inside the guest (`tessera volume bench`: our Btrfs ioctls
//!   against the `btrfs subvolume` CLI, our LVM thin API against `lvcreate -s`/`lvremove`,
//!   same VM, same run);
//! - each node-agent service's start → ready time from the supervisor's console events
//!   (`service started` / `service ready`, wall clock of the guest);
//! - each node-agent process's RSS at idle (VmRSS after the node has settled).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use tessera_qemu::{BootMode, Vm, VmConfig};

use crate::boot::median;

#[derive(clap::Args, Debug)]
pub struct NodeBenchArgs {
    /// Boots per backend.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Snapshot create+delete cycles per boot (each side).
    #[arg(long, default_value_t = 100)]
    pub snapshots: usize,
    /// Storage backends to measure.
    #[arg(long, value_delimiter = ',', default_value = "btrfs,lvm-thin")]
    pub backends: Vec<String>,
    /// Image to boot (output of `tessera image build`).
    #[arg(long, default_value = "out")]
    pub image: PathBuf,
}

/// The services that make up the node agent (the thesis's node controller).
const AGENT_SERVICES: [&str; 5] = ["net", "firewall", "storage", "node", "ssh"];

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// Quiet time after READY before RSS is read, so start-up allocations have settled.
const SETTLE: Duration = Duration::from_secs(3);

/// One boot's figures.
#[derive(Debug, Default)]
struct Run {
    /// `ours_median_ms`, `cli_median_ms`, … from the guest's NODE-STORAGE-BENCH line.
    storage: BTreeMap<String, f64>,
    /// Service → start-to-ready milliseconds.
    start_ready_ms: BTreeMap<String, u64>,
    /// Service → VmRSS KiB at idle.
    rss_kib: BTreeMap<String, u64>,
}

pub fn run(args: NodeBenchArgs) -> anyhow::Result<()> {
    if args.runs == 0 || args.snapshots == 0 {
        bail!("--runs and --snapshots must be at least 1");
    }
    for b in &args.backends {
        if !matches!(b.as_str(), "btrfs" | "lvm-thin") {
            bail!("unknown backend {b:?}: use btrfs and/or lvm-thin");
        }
    }
    if !args.image.join("pxe/initramfs.img").exists() {
        bail!(
            "{} is missing: build the image first (`make image`)",
            args.image.join("pxe/initramfs.img").display()
        );
    }
    // Data disks are written (4 GiB virtual each); under the image directory, removed after
    // each boot.
    let work = args.image.join("bench-node");
    let mut conditions = tessera_qemu::config::vm_conditions();
    let mut results: BTreeMap<String, Vec<Run>> = BTreeMap::new();
    for run in 1..=args.runs {
        for backend in &args.backends {
            eprintln!("[bench] run {run}/{}: {backend}", args.runs);
            let dir = work.join(format!("{backend}-{run}"));
            let r = boot(&args, backend, &dir, run)
                .with_context(|| format!("run {run}, backend {backend}"))?;
            results.entry(backend.clone()).or_default().push(r);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    conditions.finish();
    print_report(&args, &conditions, &results);
    Ok(())
}

fn boot(args: &NodeBenchArgs, backend: &str, dir: &Path, run: usize) -> anyhow::Result<Run> {
    std::fs::create_dir_all(dir)?;
    let disk = dir.join("data.qcow2");
    crate::qcow2_disk(&disk, "4G")?;
    let user_data = format!(
        "version = 1\n\n[node]\nhostname = \"bench{run}.node\"\n\n[storage]\nbackend = \"{backend}\"\ndevice = \"/dev/vdb\"\n"
    );
    let seed = tessera_qemu::seed::nocloud(&dir.join("seed"), &user_data)?;
    let mut cfg = VmConfig::new(BootMode::Kernel, &args.image);
    cfg.name = format!("bench-node-{backend}-{run}");
    cfg.memory_mb = 1024;
    cfg.append = vec!["tessera.imds=off".into()];
    // Direct kernel boot has no boot disk: the seed is /dev/vda, the data disk /dev/vdb.
    cfg.disks = vec![seed, disk];
    let mut vm = Vm::start(&cfg)?;
    let result = measure(&vm, args.snapshots);
    vm.kill();
    result
}

fn measure(vm: &Vm, snapshots: usize) -> anyhow::Result<Run> {
    vm.wait_for("TESSERA-READY", BOOT_TIMEOUT)?;
    std::thread::sleep(SETTLE);
    let console = vm.console();
    let status = vm.run_command("tessera status", Duration::from_secs(60))?;
    let mut r = Run {
        start_ready_ms: start_to_ready(&console),
        ..Run::default()
    };
    for (service, pid) in pids(&status) {
        let line = vm.run_command(
            &format!("grep VmRSS /proc/{pid}/status"),
            Duration::from_secs(30),
        )?;
        if let Some(kib) = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()) {
            r.rss_kib.insert(service, kib);
        }
    }
    let bench = vm.run_command(
        &format!("tessera volume bench --runs {snapshots}"),
        Duration::from_secs(3600),
    )?;
    for (k, v) in crate::guest_line(&bench, "NODE-STORAGE-BENCH", "tessera volume bench")? {
        if let Ok(x) = v.parse::<f64>() {
            r.storage.insert(k, x);
        }
    }
    Ok(r)
}

/// Start → ready per node-agent service, from the supervisor's events on the console.
fn start_to_ready(console: &str) -> BTreeMap<String, u64> {
    let mut started = BTreeMap::new();
    let mut out = BTreeMap::new();
    for line in console.lines() {
        let kv = tessera_qemu::parse_kv_line(line);
        let Some(service) = kv
            .get("service")
            .filter(|s| AGENT_SERVICES.contains(&s.as_str()))
        else {
            continue;
        };
        let Some(t) = tessera_qemu::kv::clock_ms(line) else {
            continue;
        };
        if line.contains(" init: service started ") {
            started.entry(service.clone()).or_insert(t);
        } else if line.contains(" init: service ready ") {
            if let Some(s) = started.get(service) {
                out.entry(service.clone()).or_insert(t.saturating_sub(*s));
            }
        }
    }
    out
}

/// Node-agent services with a PID in `tessera status`'s table.
fn pids(status: &str) -> Vec<(String, u32)> {
    status
        .lines()
        .skip_while(|l| !l.starts_with("SERVICE"))
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let (name, pid) = (*cols.first()?, cols.get(3)?.parse().ok()?);
            AGENT_SERVICES
                .contains(&name)
                .then(|| (name.to_string(), pid))
        })
        .collect()
}

fn med_f(runs: &[Run], key: &str) -> Option<f64> {
    let mut v: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.storage.get(key).copied())
        .collect();
    crate::median(&mut v)
}

fn med_map<'a>(
    runs: impl IntoIterator<Item = &'a Run>,
    f: impl Fn(&Run) -> Option<u64>,
) -> Option<u64> {
    let mut v: Vec<u64> = runs.into_iter().filter_map(f).collect();
    (!v.is_empty()).then(|| median(&mut v))
}

fn print_report(
    args: &NodeBenchArgs,
    conditions: &crate::conditions::Conditions,
    results: &BTreeMap<String, Vec<Run>>,
) {
    let show = |x: Option<f64>| x.map_or("—".to_string(), |v| format!("{v:.2} ms"));
    println!();
    println!(
        "Node agent benchmark: medians over {} boots per backend, {} snapshot create+delete cycles per side per boot, QEMU TCG",
        args.runs, args.snapshots
    );
    println!();
    println!("| backend | ours: snapshot create+delete | CLI, same VM | CLI / ours |");
    println!("| --- | --- | --- | --- |");
    let mut line = format!("NODE-BENCH runs={} snapshots={}", args.runs, args.snapshots);
    for (backend, runs) in results {
        let ours = med_f(runs, "ours_median_ms");
        let cli = med_f(runs, "cli_median_ms");
        let ratio = ours.zip(cli).map(|(o, c)| c / o.max(f64::EPSILON));
        println!(
            "| {backend} | {} | {} | {} |",
            show(ours),
            show(cli),
            ratio.map_or("—".into(), |r| format!("{r:.1}×"))
        );
        let key = backend.replace('-', "_");
        line.push_str(&format!(
            " {key}_ours_ms={:.2} {key}_cli_ms={:.2}",
            ours.unwrap_or(f64::NAN),
            cli.unwrap_or(f64::NAN)
        ));
    }
    let all = || results.values().flatten();
    println!();
    println!("| service | start → ready | RSS at idle |");
    println!("| --- | --- | --- |");
    let mut total_rss = 0;
    for s in AGENT_SERVICES {
        let t = med_map(all(), |r| r.start_ready_ms.get(s).copied());
        let rss = med_map(all(), |r| r.rss_kib.get(s).copied());
        total_rss += rss.unwrap_or(0);
        println!(
            "| {s} | {} | {} |",
            t.map_or("—".into(), |v| format!("{v} ms")),
            rss.map_or("—".into(), |v| format!("{:.1} MiB", v as f64 / 1024.0))
        );
        line.push_str(&format!(
            " {s}_ready_ms={} {s}_rss_kib={}",
            t.unwrap_or(0),
            rss.unwrap_or(0)
        ));
    }
    println!(
        "| all node-agent processes | — | {:.1} MiB |",
        total_rss as f64 / 1024.0
    );
    println!();
    conditions.print();
    println!("{line} agent_rss_kib={total_rss}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_to_ready_pairs_the_supervisor_events_of_agent_services() {
        let console = "18:23:16.734 init: service started pid=94 service=node\n\
                       18:23:16.800 init: service started pid=95 service=klog\n\
                       18:23:17.376 node[94]: node identity obtained name=node.tessera\n\
                       18:23:17.409 init: service ready service=node\n\
                       18:23:17.500 init: service ready service=klog\n";
        let m = start_to_ready(console);
        assert_eq!(m.get("node"), Some(&675));
        assert!(!m.contains_key("klog"), "klog is not a node-agent service");
    }

    #[test]
    fn pids_come_from_the_status_table() {
        let status = "node: x\nSERVICE   KIND      STATE  PID  RESTARTS  DETAIL\n\
                      firewall  long-run  ready  84   0         ruleset\n\
                      klog      long-run  ready  80   0\n\
                      userdata  long-run  done   -    0         standalone\n\
                      node      long-run  ready  94   0         node API\n";
        assert_eq!(
            pids(status),
            vec![("firewall".to_string(), 84), ("node".to_string(), 94)]
        );
    }
}
