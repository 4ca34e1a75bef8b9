//! Measures boot times of each mode: guest uptime when /init runs, wall time to /init, to
//! TESSERA-READY and to QEMU exit, and for PXE the TFTP transfer of kernel + initramfs.
//! By default it boots the busybox test initramfs with the Debian kernel (the same fixtures
//! as tests/boot.rs: the floor); `--image DIR` measures a built Tessera image instead (the
//! guest is told `tessera poweroff` after ready). Runs are sequential, medians are printed.
//!
//! `cargo run --release -p tessera-qemu --example boot-floor -- [RUNS] [--keep DIR] [--image DIR]`

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use tessera_qemu::{parse_kv_line, BootMode, Machine, Vm, VmConfig};

const T: Duration = Duration::from_secs(120);

struct Sample {
    init_uptime_ms: f64,
    wall_init_s: f64,
    wall_ready_s: f64,
    wall_exit_s: f64,
    tftp_s: Option<f64>,
}

fn boot(cfg: &VmConfig) -> Result<Sample, String> {
    let mut vm = Vm::start(cfg).map_err(|e| e.to_string())?;
    let init = vm.wait_for("TESSERA-INIT", T).map_err(|e| e.to_string())?;
    let wall_init_s = vm.elapsed().as_secs_f64();
    vm.wait_for("TESSERA-READY", T).map_err(|e| e.to_string())?;
    let wall_ready_s = vm.elapsed().as_secs_f64();
    // The floor guest powers off by itself; a real node waits to be told.
    if vm.wait_exit(Duration::from_secs(1)).is_err() {
        vm.send_line("tessera poweroff")
            .map_err(|e| e.to_string())?;
    }
    let exit = vm.wait_exit(T).map_err(|e| e.to_string())?;
    if !exit.is_clean_poweroff() {
        return Err(format!("{exit:?}"));
    }
    let lines = vm.console_lines();
    let at = |needle: &str| lines.iter().find(|l| l.text.contains(needle)).map(|l| l.at);
    let tftp_s = match (at("boot.ipxe :"), at("initramfs.img...")) {
        (Some(a), Some(b)) => Some((b - a).as_secs_f64()),
        _ => None,
    };
    Ok(Sample {
        init_uptime_ms: parse_kv_line(&init)["uptime_ms"]
            .parse()
            .unwrap_or(f64::NAN),
        wall_init_s,
        wall_ready_s,
        wall_exit_s: exit.elapsed.as_secs_f64(),
        tftp_s,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(5);
    let keep = args
        .iter()
        .position(|a| a == "--keep")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let given = args
        .iter()
        .position(|a| a == "--image")
        .and_then(|i| args.get(i + 1))
        .map(std::path::PathBuf::from);
    let fixture;
    let image: &std::path::Path = match &given {
        Some(dir) => dir,
        None => {
            let Some(dir) = support::pxe_image() else {
                eprintln!("no kernel or static busybox");
                std::process::exit(1);
            };
            if let Err(e) = support::add_disk_image(dir.path(), "console=ttyS0 quiet panic=-1") {
                eprintln!("no disk image: {e}");
            }
            fixture = dir;
            fixture.path()
        }
    };
    if let Some(dir) = &keep {
        let _ = std::fs::create_dir_all(format!("{dir}/pxe"));
        for f in [
            "pxe/vmlinuz",
            "pxe/initramfs.img",
            "pxe/boot.ipxe",
            "disk.qcow2",
        ] {
            let _ = std::fs::copy(image.join(f), format!("{dir}/{f}"));
        }
        eprintln!("test image kept in {dir}");
    }
    let kernel_size = std::fs::metadata(image.join("pxe/vmlinuz")).map_or(0, |m| m.len());
    let initrd_size = std::fs::metadata(image.join("pxe/initramfs.img")).map_or(0, |m| m.len());
    println!(
        "runs={runs} kernel={:.1} MB initramfs={:.1} MB (TCG, 1 vCPU, 512 MB)",
        kernel_size as f64 / 1e6,
        initrd_size as f64 / 1e6
    );
    println!("mode     machine  uptime@init  wall@init  wall@ready  wall@exit  tftp");
    let has_disk = image.join("disk.qcow2").is_file();
    for (boot, machine) in [
        (BootMode::Kernel, Machine::Q35),
        (BootMode::Kernel, Machine::Pc),
        (BootMode::Pxe, Machine::Q35),
        (BootMode::Pxe, Machine::Pc),
        (BootMode::Disk, Machine::Q35),
        (BootMode::Disk, Machine::Pc),
    ] {
        if boot == BootMode::Disk && !has_disk {
            continue;
        }
        let mut cfg = VmConfig::new(boot, image);
        cfg.machine = machine;
        let mut samples = Vec::new();
        for _ in 0..runs {
            match boot_one(&cfg) {
                Ok(s) => samples.push(s),
                Err(e) => eprintln!("{boot}/{}: {e}", machine.as_str()),
            }
        }
        let tftp: Vec<f64> = samples.iter().filter_map(|s| s.tftp_s).collect();
        println!(
            "{:<8} {:<8} {:>8.0} ms {:>8.2} s {:>9.2} s {:>8.2} s  {}",
            boot.as_str(),
            machine.as_str(),
            median(samples.iter().map(|s| s.init_uptime_ms).collect()),
            median(samples.iter().map(|s| s.wall_init_s).collect()),
            median(samples.iter().map(|s| s.wall_ready_s).collect()),
            median(samples.iter().map(|s| s.wall_exit_s).collect()),
            if tftp.is_empty() {
                "-".to_string()
            } else {
                let t = median(tftp);
                format!(
                    "{t:.2} s ({:.0} MB/s)",
                    (kernel_size + initrd_size) as f64 / 1e6 / t
                )
            }
        );
    }
}

fn boot_one(cfg: &VmConfig) -> Result<Sample, String> {
    boot(cfg)
}
