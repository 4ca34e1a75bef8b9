//! `tessera bench boot`: boots the image repeatedly under QEMU and reports medians of guest
//! uptime at PID 1 start and at TESSERA-READY, `userspace_ms` and PID 1's RSS, for the direct
//! kernel and PXE boots, beside the floor measured in the same run: the same kernel with a
//! busybox /init that powers off at once. Also reports the image's sizes.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tessera_qemu::{BootMode, Vm, VmConfig};

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
    /// Skip the PXE boots (they are the slowest).
    #[arg(long)]
    pub no_pxe: bool,
}

/// One boot of the Tessera image.
#[derive(Debug, Clone, Copy)]
struct NodeBoot {
    init_uptime_ms: u64,
    ready_uptime_ms: u64,
    userspace_ms: u64,
    rss_kib: u64,
    wall_ms: u64,
}

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

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
    let mut floor = Vec::new();
    let mut floor_pxe = Vec::new();
    let mut kernel = Vec::new();
    let mut pxe = Vec::new();
    for run in 1..=args.runs {
        // Interleaved, so that drift on the machine hits every kind alike.
        eprintln!("[bench] run {run}/{}: floor", args.runs);
        floor.push(floor_boot(&args.floor, BootMode::Kernel)?);
        eprintln!("[bench] run {run}/{}: tessera, direct kernel", args.runs);
        kernel.push(node_boot(&args.image, BootMode::Kernel)?);
        if !args.no_pxe {
            eprintln!("[bench] run {run}/{}: floor, PXE", args.runs);
            floor_pxe.push(floor_boot(&args.floor, BootMode::Pxe)?);
            eprintln!("[bench] run {run}/{}: tessera, PXE", args.runs);
            pxe.push(node_boot(&args.image, BootMode::Pxe)?);
        }
    }
    let sizes = Sizes::read(&args.image)?;
    print_report(args.runs, [&floor, &floor_pxe], &kernel, &pxe, &sizes);
    Ok(())
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

fn start(image: &Path, mode: BootMode, name: &str) -> anyhow::Result<Vm> {
    let mut cfg = VmConfig::new(mode, image);
    cfg.name = name.to_string();
    Ok(Vm::start(&cfg)?)
}

fn floor_boot(dir: &Path, mode: BootMode) -> anyhow::Result<u64> {
    let mut vm = start(dir, mode, &format!("bench-floor-{}", mode.as_str()))?;
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

fn node_boot(image: &Path, mode: BootMode) -> anyhow::Result<NodeBoot> {
    let started = Instant::now();
    let mut vm = start(image, mode, &format!("bench-{}", mode.as_str()))?;
    let init = tessera_qemu::parse_kv_line(&vm.wait_for("TESSERA-INIT", BOOT_TIMEOUT)?);
    let ready = tessera_qemu::parse_kv_line(&vm.wait_for("TESSERA-READY", BOOT_TIMEOUT)?);
    let wall_ms = started.elapsed().as_millis() as u64;
    let rss = vm.run_command("grep VmRSS /proc/1/status", Duration::from_secs(60))?;
    vm.send_line("tessera poweroff")?;
    let exit = vm.wait_exit(Duration::from_secs(60))?;
    if !exit.is_clean_poweroff() {
        bail!(
            "the {} boot did not power off cleanly: {}",
            mode.as_str(),
            exit.describe()
        );
    }
    let num = |m: &std::collections::BTreeMap<String, String>, k: &str| -> anyhow::Result<u64> {
        m.get(k)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {k}= in the console line"))
    };
    Ok(NodeBoot {
        init_uptime_ms: num(&init, "uptime_ms")?,
        ready_uptime_ms: num(&ready, "uptime_ms")?,
        userspace_ms: num(&ready, "userspace_ms")?,
        rss_kib: rss
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("unreadable VmRSS line {rss:?}"))?,
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

fn med(boots: &[NodeBoot], f: impl Fn(&NodeBoot) -> u64) -> u64 {
    median(&mut boots.iter().map(f).collect::<Vec<_>>())
}

fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1_000_000.0)
}

fn print_report(
    runs: usize,
    floors: [&[u64]; 2],
    kernel: &[NodeBoot],
    pxe: &[NodeBoot],
    sizes: &Sizes,
) {
    let floor_ms = median(&mut floors[0].to_vec());
    let floor_pxe_ms = median(&mut floors[1].to_vec());
    println!();
    println!("Boot benchmark: medians of {runs} boots each, QEMU TCG (same run, same kernel)");
    println!();
    println!("| boot | PID 1 start (uptime) | TESSERA-READY (uptime) | userspace_ms | ready / floor (same boot mode) | PID 1 RSS | wall to ready |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    println!("| busybox floor, direct kernel | {floor_ms} ms | — | — | 1.00 | — | — |");
    if !floors[1].is_empty() {
        println!("| busybox floor, PXE | {floor_pxe_ms} ms | — | — | 1.00 | — | — |");
    }
    for (name, boots, floor) in [
        ("tessera, direct kernel", kernel, floor_ms),
        ("tessera, PXE", pxe, floor_pxe_ms),
    ] {
        if boots.is_empty() {
            continue;
        }
        let ready = med(boots, |b| b.ready_uptime_ms);
        println!(
            "| {name} | {} ms | {ready} ms | {} ms | {:.2} | {} KiB | {:.1} s |",
            med(boots, |b| b.init_uptime_ms),
            med(boots, |b| b.userspace_ms),
            ready as f64 / floor.max(1) as f64,
            med(boots, |b| b.rss_kib),
            med(boots, |b| b.wall_ms) as f64 / 1000.0
        );
    }
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
    println!();
    println!(
        "BOOT-BENCH runs={runs} floor_ms={floor_ms} floor_pxe_ms={floor_pxe_ms} kernel_init_ms={} kernel_ready_ms={} kernel_userspace_ms={} pxe_ready_ms={} pxe_userspace_ms={} pid1_rss_kib={} initramfs_bytes={} initramfs_uncompressed_bytes={} vmlinuz_bytes={} disk_bytes={}",
        med(kernel, |b| b.init_uptime_ms),
        med(kernel, |b| b.ready_uptime_ms),
        med(kernel, |b| b.userspace_ms),
        med(pxe, |b| b.ready_uptime_ms),
        med(pxe, |b| b.userspace_ms),
        med(kernel, |b| b.rss_kib),
        sizes.initramfs,
        sizes.initramfs_uncompressed,
        sizes.vmlinuz,
        sizes.disk
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(super::median(&mut [5, 1, 3]), 3);
        assert_eq!(super::median(&mut [4, 1, 3, 2]), 2);
        assert_eq!(super::median(&mut []), 0);
    }
}
