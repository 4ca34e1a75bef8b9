//! `tessera bench boot`: the whole node's boot, three ways, against the busybox floor in the
//! same run (the same kernel with a busybox /init that powers off at once). Each run boots,
//! interleaved so that drift on the machine hits every kind alike:
//! - the floor, direct kernel;
//! - `standalone`: the default image with no configuration (node-local CA);
//! - `ca-token`: a one-time token of a CA on this host on the kernel command line, as PXE
//!   delivers it;
//! - `nocloud`: NoCloud user-data with the CA, the token and a blank data disk (Btrfs, made
//!   on this first boot);
//! - with `--pxe`, the floor and `standalone` again by PXE.
//!
//! Reported, medians and spread: PID 1's start, every service's start → ready, the node
//! certificate in the keyring, the node `available` (node API serving with its certificate and
//! the hub joined), TESSERA-READY, PID 1's RSS and the agents' sum at idle, and the image's
//! sizes; the goals' verdicts unless the machine was busy; a `BOOT-BENCH` line last.

use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tessera_certmgr::bench::HostCa;
use tessera_qemu::{BootMode, Vm, VmConfig};

use crate::conditions::{verdict, Conditions};
use crate::timeline::{Memory, Timeline, RSS_COMMAND};

#[derive(clap::Args)]
pub struct BootBenchArgs {
    /// Boots of each kind.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Image to measure (output of `tessera image build`).
    #[arg(long, default_value = "out")]
    pub image: PathBuf,
    /// Where the busybox floor image is built.
    #[arg(long, default_value = "out/floor")]
    pub floor: PathBuf,
    /// Also boot the floor and the standalone node by PXE (the slowest boots).
    #[arg(long)]
    pub pxe: bool,
}

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the node is left alone after READY before its memory is read.
const SETTLE: Duration = Duration::from_secs(2);

/// Goals (issue 10 §2).
const STANDALONE_READY_GOAL_MS: u64 = 500;
const FLOOR_RATIO_GOAL: f64 = 1.3;
const CERT_GOAL_MS: u64 = 300;
const AVAILABLE_GOAL_MS: u64 = 800;
const INITRAMFS_GOAL_BYTES: u64 = 8_000_000;
const PID1_RSS_GOAL_KIB: u64 = 4096;
const AGENTS_RSS_GOAL_KIB: u64 = 24 * 1024;

/// The kinds of node boot, in the order they run and are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Standalone,
    CaToken,
    NoCloud,
    Pxe,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Standalone => "standalone",
            Kind::CaToken => "ca-token",
            Kind::NoCloud => "nocloud",
            Kind::Pxe => "pxe",
        }
    }
}

/// One boot of the node: its timeline, memory at idle and wall time to READY.
struct NodeBoot {
    timeline: Timeline,
    memory: Memory,
    wall_ms: u64,
}

pub fn run(args: BootBenchArgs) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    for f in ["pxe/vmlinuz", "pxe/initramfs.img", "disk.qcow2"] {
        if !args.image.join(f).exists() {
            bail!(
                "{} is missing: build the image first (`make image`)",
                args.image.join(f).display()
            );
        }
    }
    build_floor(&args.floor)?;
    let exe = std::env::current_exe().context("locating this executable")?;
    let ca = HostCa::start(&exe)?;
    let work = args.image.join("bench-boot");
    let mut conditions = tessera_qemu::config::vm_conditions();
    let mut floor = Vec::new();
    let mut floor_pxe = Vec::new();
    let mut boots: BTreeMap<Kind, Vec<NodeBoot>> = BTreeMap::new();
    let mut kinds = vec![Kind::Standalone, Kind::CaToken, Kind::NoCloud];
    if args.pxe {
        kinds.push(Kind::Pxe);
    }
    for run in 1..=args.runs {
        let step = |what: &str| eprintln!("[bench] run {run}/{}: {what}", args.runs);
        step("floor, direct kernel");
        floor.push(floor_boot(&args.floor, BootMode::Kernel)?);
        for &kind in &kinds {
            if kind == Kind::Pxe {
                step("floor, PXE");
                floor_pxe.push(floor_boot(&args.floor, BootMode::Pxe)?);
            }
            step(&format!("tessera, {}", kind.name()));
            let cfg = config(&args.image, kind, &ca, run, &work.join(kind.name()))?;
            let boot = node_boot(&cfg).with_context(|| format!("the {} boot", kind.name()))?;
            boots.entry(kind).or_default().push(boot);
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    conditions.finish();
    let sizes = Sizes::read(&args.image)?;
    print_report(args.runs, &conditions, [&floor, &floor_pxe], &boots, &sizes);
    Ok(())
}

/// How the node is booted for `kind`: kernel arguments, user-data and disks.
fn config(
    image: &Path,
    kind: Kind,
    ca: &HostCa,
    run: usize,
    dir: &Path,
) -> anyhow::Result<VmConfig> {
    let mode = if kind == Kind::Pxe {
        BootMode::Pxe
    } else {
        BootMode::Kernel
    };
    let mut cfg = VmConfig::new(mode, image);
    cfg.name = format!("bench-boot-{}", kind.name());
    let node = format!("node{run}.bench");
    match kind {
        Kind::Standalone | Kind::Pxe => {}
        Kind::CaToken => {
            let token = ca.token(&node)?;
            cfg.append = ca.kernel_args(&token, &node);
            cfg.append.push("tessera.imds=off".into());
        }
        Kind::NoCloud => {
            let _ = std::fs::remove_dir_all(dir);
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let token = ca.token(&node)?;
            let user_data = format!(
                "version = 1\n\n[node]\nhostname = \"{node}\"\n\n[ca]\nurl = \"{}\"\nfingerprint = \"{}\"\ntoken = \"{token}\"\n\n[storage]\nbackend = \"btrfs\"\ndevice = \"/dev/vdb\"\n",
                ca.guest_url(),
                ca.fingerprint()
            );
            // The seed first: /dev/vda, the blank data disk /dev/vdb.
            let seed = tessera_qemu::seed::nocloud(&dir.join("seed"), &user_data)?;
            let data = dir.join("data.qcow2");
            crate::qcow2_disk(&data, "2G")?;
            cfg.disks = vec![seed, data];
            cfg.append = vec!["tessera.imds=off".into()];
        }
    }
    Ok(cfg)
}

fn build_floor(dir: &Path) -> anyhow::Result<()> {
    eprintln!(
        "[bench] building the busybox floor image in {}",
        dir.display()
    );
    let exe = std::env::current_exe().context("locating this executable")?;
    let status = Command::new(&exe)
        .args(["image", "build", "--floor", "--out"])
        .arg(dir)
        .status()
        .context("running tessera image build --floor")?;
    if !status.success() {
        bail!("building the floor image failed (see above)");
    }
    Ok(())
}

fn floor_boot(dir: &Path, mode: BootMode) -> anyhow::Result<u64> {
    let mut cfg = VmConfig::new(mode, dir);
    cfg.name = format!("bench-floor-{}", mode.as_str());
    let mut vm = Vm::start(&cfg)?;
    let line = vm.wait_for("FLOOR-INIT uptime=", BOOT_TIMEOUT)?;
    let secs: f64 = line
        .split("uptime=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("unreadable floor line {line:?}"))?;
    vm.wait_exit(Duration::from_secs(60))?;
    Ok((secs * 1000.0).round() as u64)
}

fn node_boot(cfg: &VmConfig) -> anyhow::Result<NodeBoot> {
    let started = Instant::now();
    let mut vm = Vm::start(cfg)?;
    vm.wait_for("TESSERA-READY", BOOT_TIMEOUT)?;
    let wall_ms = started.elapsed().as_millis() as u64;
    std::thread::sleep(SETTLE);
    let rss = vm.run_command(RSS_COMMAND, Duration::from_secs(60))?;
    let timeline = Timeline::parse(&vm.console())?;
    let memory = Memory::parse(&rss)?;
    vm.send_line("tessera poweroff")?;
    let exit = vm.wait_exit(Duration::from_secs(120))?;
    if !exit.is_clean_poweroff() {
        bail!("the node did not power off cleanly: {}", exit.describe());
    }
    Ok(NodeBoot {
        timeline,
        memory,
        wall_ms,
    })
}

struct Sizes {
    vmlinuz: u64,
    initramfs: u64,
    initramfs_uncompressed: u64,
    disk: u64,
}

impl Sizes {
    fn read(image: &Path) -> anyhow::Result<Sizes> {
        let len = |f: &str| {
            std::fs::metadata(image.join(f))
                .map(|m| m.len())
                .with_context(|| format!("reading {}", image.join(f).display()))
        };
        Ok(Sizes {
            vmlinuz: len("pxe/vmlinuz")?,
            initramfs: len("pxe/initramfs.img")?,
            initramfs_uncompressed: tessera_image::initramfs::uncompressed_size(
                &image.join("pxe/initramfs.img"),
            )?,
            disk: len("disk.qcow2")?,
        })
    }
}

pub fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    let n = values.len();
    if n == 0 {
        0
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2
    }
}

/// Median, minimum and maximum of what the boots have (boots without the figure are left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Spread {
    median: u64,
    min: u64,
    max: u64,
    n: usize,
}

impl Spread {
    fn of(values: impl Iterator<Item = Option<u64>>) -> Option<Spread> {
        let mut v: Vec<u64> = values.flatten().collect();
        if v.is_empty() {
            return None;
        }
        let (min, max) = (*v.iter().min()?, *v.iter().max()?);
        let n = v.len();
        Some(Spread {
            median: median(&mut v),
            min,
            max,
            n,
        })
    }

    /// `412 ms (398–450)`, or `—`.
    fn show(s: Option<Spread>, unit: &str) -> String {
        match s {
            Some(s) if s.min == s.max => format!("{}{unit}", s.median),
            Some(s) => format!("{}{unit} ({}–{})", s.median, s.min, s.max),
            None => "—".to_string(),
        }
    }
}

fn spread(boots: &[NodeBoot], f: impl Fn(&NodeBoot) -> Option<u64>) -> Option<Spread> {
    Spread::of(boots.iter().map(f))
}

fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1_000_000.0)
}

fn print_report(
    runs: usize,
    c: &Conditions,
    floors: [&[u64]; 2],
    boots: &BTreeMap<Kind, Vec<NodeBoot>>,
    sizes: &Sizes,
) {
    let floor = Spread::of(floors[0].iter().map(|&v| Some(v)));
    let floor_pxe = Spread::of(floors[1].iter().map(|&v| Some(v)));
    println!();
    println!("Boot benchmark: {runs} boots of each kind, interleaved, QEMU TCG, 1 vCPU, 512 MB; median (min–max); times since PID 1 started unless said");
    c.print();
    println!();
    println!("| boot | PID 1 start (uptime) | node certificate | node available | TESSERA-READY | READY (uptime) | READY / floor | failed | PID 1 RSS | PID 1 PSS | agents' RSS | agents' PSS | wall to READY |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| busybox floor, direct kernel | {} | — | — | — | — | 1.00 | — | — | — | — | — | — |",
        Spread::show(floor, " ms")
    );
    if floor_pxe.is_some() {
        println!(
            "| busybox floor, PXE | {} | — | — | — | — | 1.00 | — | — | — | — | — | — |",
            Spread::show(floor_pxe, " ms")
        );
    }
    for (kind, bs) in boots {
        let reference = if *kind == Kind::Pxe { floor_pxe } else { floor };
        let ready_up = spread(bs, |b| Some(b.timeline.ready_uptime_ms));
        let ratio = match (ready_up, reference) {
            (Some(r), Some(f)) => format!("{:.2}", r.median as f64 / f.median.max(1) as f64),
            _ => "—".into(),
        };
        println!(
            "| tessera, {} | {} | {} | {} | {} | {} | {ratio} | {} | {} | {} | {} | {} | {} |",
            kind.name(),
            Spread::show(spread(bs, |b| Some(b.timeline.init_uptime_ms)), " ms"),
            Spread::show(spread(bs, |b| b.timeline.cert_ms), " ms"),
            Spread::show(spread(bs, |b| b.timeline.available_ms()), " ms"),
            Spread::show(spread(bs, |b| Some(b.timeline.userspace_ms)), " ms"),
            Spread::show(ready_up, " ms"),
            Spread::show(spread(bs, |b| Some(b.timeline.failed)), ""),
            Spread::show(spread(bs, |b| Some(b.memory.pid1_kib)), " KiB"),
            Spread::show(spread(bs, |b| Some(b.memory.pid1_pss_kib)), " KiB"),
            Spread::show(spread(bs, |b| Some(b.memory.agents_rss_kib)), " KiB"),
            Spread::show(spread(bs, |b| Some(b.memory.agents_pss_kib)), " KiB"),
            Spread::show(spread(bs, |b| Some(b.wall_ms)), " ms"),
        );
    }
    print_services(boots);
    println!();
    println!("| artifact | size |");
    println!("| --- | --- |");
    println!("| vmlinuz | {} |", mb(sizes.vmlinuz));
    println!("| initramfs (zstd) | {} |", mb(sizes.initramfs));
    println!(
        "| initramfs (uncompressed) | {} |",
        mb(sizes.initramfs_uncompressed)
    );
    println!("| disk.qcow2 | {} |", mb(sizes.disk));
    print_goals(c, floor, boots, sizes);
    let med = |kind: Kind, f: &dyn Fn(&NodeBoot) -> Option<u64>| {
        boots
            .get(&kind)
            .and_then(|bs| spread(bs, f))
            .map_or("none".to_string(), |s| s.median.to_string())
    };
    let mut line = format!(
        "BOOT-BENCH runs={runs} busy={} floor_ms={} floor_pxe_ms={}",
        c.busy(),
        floor.map_or(0, |s| s.median),
        floor_pxe.map_or(0, |s| s.median)
    );
    for &kind in boots.keys() {
        let k = kind.name().replace('-', "_");
        line.push_str(&format!(
            " {k}_init_uptime_ms={} {k}_cert_ms={} {k}_available_ms={} {k}_ready_ms={} {k}_ready_uptime_ms={} {k}_failed={} {k}_pid1_rss_kib={} {k}_pid1_pss_kib={} {k}_agents_rss_kib={} {k}_agents_pss_kib={}",
            med(kind, &|b| Some(b.timeline.init_uptime_ms)),
            med(kind, &|b| b.timeline.cert_ms),
            med(kind, &|b| b.timeline.available_ms()),
            med(kind, &|b| Some(b.timeline.userspace_ms)),
            med(kind, &|b| Some(b.timeline.ready_uptime_ms)),
            med(kind, &|b| Some(b.timeline.failed)),
            med(kind, &|b| Some(b.memory.pid1_kib)),
            med(kind, &|b| Some(b.memory.pid1_pss_kib)),
            med(kind, &|b| Some(b.memory.agents_rss_kib)),
            med(kind, &|b| Some(b.memory.agents_pss_kib)),
        ));
    }
    line.push_str(&format!(
        " initramfs_bytes={} initramfs_uncompressed_bytes={} vmlinuz_bytes={} disk_bytes={}",
        sizes.initramfs, sizes.initramfs_uncompressed, sizes.vmlinuz, sizes.disk
    ));
    println!();
    println!("{line}");
}

/// Per service: when it started and how long it took to be ready, per kind of boot.
fn print_services(boots: &BTreeMap<Kind, Vec<NodeBoot>>) {
    let mut names: Vec<&String> = boots
        .values()
        .flatten()
        .flat_map(|b| b.timeline.services.keys())
        .collect();
    names.sort();
    names.dedup();
    // In the order they started in the first kind's boots.
    if let Some(first) = boots.values().next() {
        let started = |n: &str| {
            spread(first, |b| {
                b.timeline.services.get(n).and_then(|s| s.started)
            })
            .map_or(u64::MAX, |s| s.median)
        };
        names.sort_by_key(|n| started(n));
    }
    println!();
    let kinds: Vec<&Kind> = boots.keys().collect();
    let header: Vec<String> = kinds
        .iter()
        .map(|k| format!("{}: started, start → ready", k.name()))
        .collect();
    println!("| service | {} |", header.join(" | "));
    println!("| --- |{}", " --- |".repeat(kinds.len()));
    for name in names {
        let cells: Vec<String> = kinds
            .iter()
            .map(|k| {
                let bs = &boots[k];
                let times = |b: &NodeBoot| b.timeline.services.get(name.as_str()).copied();
                format!(
                    "{}, {}",
                    Spread::show(spread(bs, |b| times(b)?.started), " ms"),
                    Spread::show(spread(bs, |b| times(b)?.start_to_ready()), " ms")
                )
            })
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
}

fn print_goals(
    c: &Conditions,
    floor: Option<Spread>,
    boots: &BTreeMap<Kind, Vec<NodeBoot>>,
    sizes: &Sizes,
) {
    let busy = c.busy();
    let med = |kind: Kind, f: &dyn Fn(&NodeBoot) -> Option<u64>| {
        boots
            .get(&kind)
            .and_then(|bs| spread(bs, f))
            .map(|s| s.median)
    };
    println!();
    println!("| goal | measured | verdict |");
    println!("| --- | --- | --- |");
    let goal = |what: &str, measured: String, pass: Option<bool>| {
        let v = pass.map_or("not measured", |p| verdict(p, busy));
        println!("| {what} | {measured} | {v} |");
    };
    let ready = med(Kind::Standalone, &|b| Some(b.timeline.userspace_ms));
    goal(
        &format!("standalone: TESSERA-READY ≤ {STANDALONE_READY_GOAL_MS} ms after PID 1"),
        ready.map_or("—".into(), |v| format!("{v} ms")),
        ready.map(|v| v <= STANDALONE_READY_GOAL_MS),
    );
    let ready_up = med(Kind::Standalone, &|b| Some(b.timeline.ready_uptime_ms));
    let ratio = ready_up
        .zip(floor)
        .map(|(r, f)| r as f64 / f.median.max(1) as f64);
    goal(
        &format!("standalone: READY uptime ≤ {FLOOR_RATIO_GOAL}× the floor's"),
        ratio.map_or("—".into(), |r| format!("{r:.2}×")),
        ratio.map(|r| r <= FLOOR_RATIO_GOAL),
    );
    let cert = med(Kind::CaToken, &|b| b.timeline.cert_ms);
    goal(
        &format!("CA token: node certificate ≤ {CERT_GOAL_MS} ms after PID 1"),
        cert.map_or("—".into(), |v| format!("{v} ms")),
        cert.map(|v| v <= CERT_GOAL_MS),
    );
    let available = med(Kind::CaToken, &|b| b.timeline.available_ms());
    goal(
        &format!("CA token: node available ≤ {AVAILABLE_GOAL_MS} ms after PID 1"),
        available.map_or("—".into(), |v| format!("{v} ms")),
        available.map(|v| v <= AVAILABLE_GOAL_MS),
    );
    goal(
        "initramfs ≤ 8 MB (zstd)",
        mb(sizes.initramfs),
        Some(sizes.initramfs <= INITRAMFS_GOAL_BYTES),
    );
    let pid1 = med(Kind::Standalone, &|b| Some(b.memory.pid1_kib));
    let pid1_pss = med(Kind::Standalone, &|b| Some(b.memory.pid1_pss_kib));
    goal(
        "PID 1 RSS ≤ 4 MiB",
        pid1.map_or("—".into(), |v| {
            format!("{v} KiB (PSS {} KiB)", pid1_pss.unwrap_or(0))
        }),
        pid1.map(|v| v <= PID1_RSS_GOAL_KIB),
    );
    let agents = boots
        .values()
        .filter_map(|bs| spread(bs, |b| Some(b.memory.agents_pss_kib)))
        .map(|s| s.median)
        .max();
    goal(
        "all agents together ≤ 24 MiB at idle (sum of PSS, the largest kind)",
        agents.map_or("—".into(), |v| format!("{v} KiB")),
        agents.map(|v| v <= AGENTS_RSS_GOAL_KIB),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [5, 1, 3]), 3);
        assert_eq!(median(&mut [4, 1, 3, 2]), 2);
        assert_eq!(median(&mut []), 0);
    }

    #[test]
    fn spread_leaves_out_boots_without_the_figure() {
        let s = Spread::of([Some(30), None, Some(10), Some(20)].into_iter()).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (20, 10, 30, 3));
        assert_eq!(Spread::show(Some(s), " ms"), "20 ms (10–30)");
        assert_eq!(Spread::show(None, " ms"), "—");
        assert!(Spread::of([None, None].into_iter()).is_none());
    }
}
