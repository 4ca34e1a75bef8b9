//! `tessera bench container` (issue 9 §5, `make bench-container`): per storage backend, one
//! boot of the image under QEMU with a blank data disk, NoCloud user-data naming it, and the
//! crun disk of [`crate::disks`] holding one bundle that runs /bin/true. On the console it
//! imports the bundle's tar into a template and runs `tessera container bench` (the guest
//! half, `tessera_container::bench`): ours vs `crun run` of the same bundle, interleaved,
//! the template clone alone, the agent's idle RSS and the per-container overhead. Prints the
//! figures with the run's conditions, the goals' verdicts, and LAST one `CONTAINER-BENCH`
//! line (the first backend's figures, Btrfs by default).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use tessera_qemu::{BootMode, Vm, VmConfig};

use crate::conditions::{verdict, Conditions};
use crate::disks::{self, default_config, DiskBuilder};

#[derive(clap::Args, Debug)]
pub struct ContainerBenchArgs {
    /// Cycles per side (ours, crun, clone); medians over these.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Sleeping containers for the per-container overhead.
    #[arg(long, default_value_t = 5)]
    pub sleepers: usize,
    /// Storage backends, one boot each; the first gives the CONTAINER-BENCH line.
    #[arg(long, value_delimiter = ',', default_value = "btrfs,lvm-thin")]
    pub backends: Vec<String>,
    /// Image to boot (output of `tessera image build`).
    #[arg(long, default_value = "out")]
    pub image: PathBuf,
}

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const SETTLE: Duration = Duration::from_secs(120);
const BUNDLE: &str = "true";

/// Goals of issue 9 §5.
const CLONE_GOAL_MS: f64 = 10.0;
const AGENT_RSS_GOAL_KIB: f64 = 8.0 * 1024.0;
const PER_CONTAINER_GOAL_KIB: f64 = 1024.0;

/// One backend's guest figures (`CONTAINER-GUEST-BENCH` keys).
type Figures = BTreeMap<String, String>;

pub fn run(args: ContainerBenchArgs) -> anyhow::Result<()> {
    if args.runs < 20 {
        bail!("--runs must be at least 20: the medians of issue 9 §5 are over 20 runs or more");
    }
    for b in &args.backends {
        if !matches!(b.as_str(), "btrfs" | "lvm-thin") {
            bail!("unknown backend {b:?}: use btrfs and/or lvm-thin");
        }
    }
    let initramfs = args.image.join("pxe/initramfs.img");
    if !initramfs.exists() {
        bail!(
            "{} is missing: build the image first (`make image`)",
            initramfs.display()
        );
    }
    let mut conditions = tessera_qemu::config::vm_conditions();
    let work = args.image.join("bench-container");
    let mut results = Vec::new();
    for backend in &args.backends {
        eprintln!("[bench] {backend}: boot with a data disk and the crun disk");
        let dir = work.join(backend);
        let figures =
            boot_and_measure(&args, backend, &dir).with_context(|| format!("backend {backend}"))?;
        results.push((backend.clone(), figures));
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&work);
    conditions.finish();
    print_report(&args, &conditions, &results);
    Ok(())
}

fn boot_and_measure(
    args: &ContainerBenchArgs,
    backend: &str,
    dir: &Path,
) -> anyhow::Result<Figures> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let data = dir.join("data.qcow2");
    crate::qcow2_disk(&data, "4G")?;
    let user_data =
        format!("version = 1\n\n[storage]\nbackend = \"{backend}\"\ndevice = \"/dev/vdb\"\n");
    let seed = tessera_qemu::seed::nocloud(&dir.join("seed"), &user_data)?;
    let builder = DiskBuilder::new(dir)?;
    builder.add_bundle(BUNDLE, &default_config(&["/bin/true"]), &[])?;
    let crun = builder.finish(&dir.join("crun.img"))?;

    let mut cfg = VmConfig::new(BootMode::Kernel, &args.image);
    cfg.name = format!("bench-container-{backend}");
    cfg.memory_mb = 1024;
    cfg.append = vec!["tessera.imds=off".into()];
    // Direct kernel boot has no boot disk: seed /dev/vda, data /dev/vdb, crun disk /dev/vdc.
    cfg.disks = vec![seed, data, crun];
    cfg.log_file = Some(dir.with_extension("log"));
    let mut vm = Vm::start(&cfg)?;
    let result = measure(&vm, args);
    vm.kill();
    result
}

fn measure(vm: &Vm, args: &ContainerBenchArgs) -> anyhow::Result<Figures> {
    vm.wait_for("TESSERA-READY", BOOT_TIMEOUT)?;
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let status = vm.run_command("tessera status", Duration::from_secs(60))?;
        if status
            .lines()
            .any(|l| l.split_whitespace().next() == Some("container") && l.contains(" ready"))
        {
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!("the container service was not ready after {SETTLE:?}:\n{status}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    vm.run_command(&disks::mount_in_guest("/dev/vdc"), Duration::from_secs(60))?;
    let import = vm.run_command(
        &format!(
            "tessera container import {}/bundles/{BUNDLE}.tar",
            disks::MOUNT
        ),
        Duration::from_secs(300),
    )?;
    let digest = import
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .with_context(|| format!("no template digest in the import's output:\n{import}"))?;
    eprintln!("[bench] {} cycles per side, in the guest", args.runs);
    let out = vm.run_command(
        &format!(
            "tessera container bench --template {digest} --crun-bundle {}/bundles/{BUNDLE} --crun '{}' --runs {} --sleepers {}",
            disks::MOUNT,
            disks::crun_in_guest(),
            args.runs,
            args.sleepers
        ),
        Duration::from_secs(3600),
    )?;
    crate::guest_line(&out, "CONTAINER-GUEST-BENCH", "tessera container bench")
}

fn num(f: &Figures, key: &str) -> f64 {
    f.get(key).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

fn print_report(args: &ContainerBenchArgs, c: &Conditions, results: &[(String, Figures)]) {
    println!();
    println!(
        "Container benchmark: one VM per backend (QEMU TCG, 1 vCPU), {} cycles per side, interleaved; p10 / median / p90",
        args.runs
    );
    c.print();
    println!();
    println!("| backend | ours: create+start+wait+delete of /bin/true | crun run, same VM | clone from template |");
    println!("| --- | --- | --- | --- |");
    for (backend, f) in results {
        let cell = |k: &str| {
            format!(
                "{:.1} / **{:.1}** / {:.1} ms",
                num(f, &format!("{k}_p10_ms")),
                num(f, &format!("{k}_median_ms")),
                num(f, &format!("{k}_p90_ms"))
            )
        };
        println!(
            "| {backend} | {} | {} | {} |",
            cell("ours"),
            cell("crun"),
            cell("clone")
        );
    }
    println!();
    for (backend, f) in results {
        println!(
            "{backend}, ours by phase (medians): create+start {:.1} ms, wait for the exit {:.1} ms, delete {:.1} ms",
            num(f, "ours_create_ms"),
            num(f, "ours_wait_ms"),
            num(f, "ours_delete_ms")
        );
    }
    let Some((first, f)) = results.first() else {
        return;
    };
    let (ours, crun, clone) = (
        num(f, "ours_median_ms"),
        num(f, "crun_median_ms"),
        num(f, "clone_median_ms"),
    );
    let agent = num(f, "agent_rss_kib");
    let per = num(f, "shim_rss_kib");
    println!();
    let sleepers = num(f, "sleepers");
    println!(
        "container agent: VmRSS {agent:.0} KiB idle, {:.0} KiB with {sleepers} sleeping containers (+{:.0} KiB each); per container: shim VmRSS {per:.0} KiB, PSS {:.0} KiB (the shim is the static tessera binary: most of its resident pages are shared)",
        num(f, "agent_busy_rss_kib"),
        (num(f, "agent_busy_rss_kib") - agent) / sleepers.max(1.0),
        num(f, "shim_pss_kib")
    );
    println!();
    let busy = c.busy();
    println!("goals ({first}):");
    println!(
        "  ours <= crun: {ours:.1} ms vs {crun:.1} ms: {}",
        verdict(ours <= crun, busy)
    );
    if first == "btrfs" {
        println!(
            "  clone <= {CLONE_GOAL_MS} ms on Btrfs: {clone:.2} ms: {}",
            verdict(clone <= CLONE_GOAL_MS, busy)
        );
    }
    println!(
        "  agent idle RSS <= 8 MiB: {agent:.0} KiB: {}",
        verdict(agent <= AGENT_RSS_GOAL_KIB, busy)
    );
    println!(
        "  per-container overhead <= 1 MiB (shim VmRSS): {per:.0} KiB: {}",
        verdict(per <= PER_CONTAINER_GOAL_KIB, busy)
    );
    println!();
    println!(
        "CONTAINER-BENCH ours_ms={ours:.1} crun_ms={crun:.1} clone_ms={clone:.2} agent_rss_kib={agent:.0} per_container_kib={per:.0}"
    );
}
