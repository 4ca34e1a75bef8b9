//! `tessera volume bench --runs N`, run on the node: snapshot create+delete latency through
//! our backend (Btrfs ioctls, or lvm-thin driven by our backend with its freeze and mount)
//! against the Debian tools doing the same (`btrfs subvolume snapshot|delete`, or `lvcreate
//! -s` + `lvremove`), interleaved in the same run. Prints a small table and one
//! `NODE-STORAGE-BENCH …` line for scripts (`make bench-node`).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

use super::backend::{Backend, DATA_ROOT, SNAPSHOTS_DIR};
use super::btrfs::Btrfs;
use super::command::run;
use super::lvm::{self, Lvm};
use super::name::VolumeName;

/// Median and 90th percentile in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub median_ms: f64,
    pub p90_ms: f64,
}

pub fn stats(samples: &[Duration]) -> Stats {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    if ms.is_empty() {
        return Stats {
            median_ms: 0.0,
            p90_ms: 0.0,
        };
    }
    let n = ms.len();
    let median_ms = if n % 2 == 1 {
        ms[n / 2]
    } else {
        (ms[n / 2 - 1] + ms[n / 2]) / 2.0
    };
    let p90_ms = ms[(n * 9).div_ceil(10) - 1];
    Stats { median_ms, p90_ms }
}

/// The machine-readable line.
pub fn line(backend: &str, runs: usize, ours: Stats, cli: Stats) -> String {
    format!(
        "NODE-STORAGE-BENCH backend={backend} runs={runs} ours_median_ms={:.2} ours_p90_ms={:.2} cli_median_ms={:.2} cli_p90_ms={:.2} ratio={:.2}",
        ours.median_ms, ours.p90_ms, cli.median_ms, cli.p90_ms,
        if ours.median_ms > 0.0 { cli.median_ms / ours.median_ms } else { 0.0 }
    )
}

fn timed(f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed())
}

fn name(s: &str) -> VolumeName {
    // Constant names of this module, all valid.
    VolumeName::parse(s).unwrap_or_else(|e| unreachable!("{e}"))
}

pub fn run_bench(socket: &Path, runs: usize) -> anyhow::Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let status = super::client::call(socket, &json!({"op": "status"}))?;
    if status["state"] != "ready" {
        bail!(
            "the data disk is not ready ({}): {}",
            status["state"],
            status["reason"].as_str().unwrap_or("")
        );
    }
    let backend = status["backend"].as_str().unwrap_or("").to_string();
    let root = Path::new(DATA_ROOT);
    let b: Box<dyn Backend> = match backend.as_str() {
        "btrfs" => Box::new(Btrfs::new(root)?),
        "lvm-thin" => Box::new(Lvm::new(root)),
        other => bail!("unknown backend {other:?}"),
    };
    let (src, ours_name) = (name("bench-src"), name("bench-snap"));
    if b.list()?.iter().any(|v| v.name == src) {
        b.delete(&src)?;
    }
    b.create(&src, Some(256 << 20))
        .context("creating the source volume bench-src")?;
    let src_path = Path::new(DATA_ROOT).join("volumes").join(src.as_str());
    std::fs::write(src_path.join("payload"), vec![7u8; 1 << 20])?;
    let cli_cmds = |i: usize| -> (Vec<String>, Vec<String>) {
        match backend.as_str() {
            "btrfs" => {
                let dst = format!("{SNAPSHOTS_DIR}/bench-cli-{i}");
                (
                    vec![
                        "/bin/btrfs".into(),
                        "subvolume".into(),
                        "snapshot".into(),
                        src_path.display().to_string(),
                        dst.clone(),
                    ],
                    vec![
                        "/bin/btrfs".into(),
                        "subvolume".into(),
                        "delete".into(),
                        dst,
                    ],
                )
            }
            _ => {
                let lv = format!("bench-cli-{i}");
                (
                    vec![
                        lvm::LVM.into(),
                        "lvcreate".into(),
                        "-s".into(),
                        "-kn".into(),
                        "-n".into(),
                        lv.clone(),
                        format!("{}/{}", lvm::VG, lvm::lv_name(&src)),
                    ],
                    vec![
                        lvm::LVM.into(),
                        "lvremove".into(),
                        "-y".into(),
                        format!("{}/{lv}", lvm::VG),
                    ],
                )
            }
        }
    };
    let (mut ours, mut cli) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for i in 0..runs {
        ours.push(timed(|| {
            b.snapshot(&src, &ours_name, false)?;
            b.delete(&ours_name)?;
            Ok(())
        })?);
        let (make, remove) = cli_cmds(i);
        cli.push(timed(|| {
            run(&make)?;
            run(&remove)?;
            Ok(())
        })?);
    }
    b.delete(&src)?;
    let (o, c) = (stats(&ours), stats(&cli));
    let peer = if backend == "btrfs" {
        "btrfs subvolume snapshot+delete"
    } else {
        "lvcreate -s + lvremove"
    };
    let us = if backend == "btrfs" {
        "ours (ioctls)"
    } else {
        "ours (backend)"
    };
    println!(
        "{:<32} {:>10} {:>10}",
        "snapshot create+delete", "median ms", "p90 ms"
    );
    println!("{:<32} {:>10.2} {:>10.2}", us, o.median_ms, o.p90_ms);
    println!("{:<32} {:>10.2} {:>10.2}", peer, c.median_ms, c.p90_ms);
    println!("{}", line(&backend, runs, o, c));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p90() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|m| Duration::from_millis(*m))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            stats(&ms(&[5, 1, 3])),
            Stats {
                median_ms: 3.0,
                p90_ms: 5.0
            }
        );
        let s = stats(&ms(&(1..=10).collect::<Vec<_>>()));
        assert_eq!(
            s,
            Stats {
                median_ms: 5.5,
                p90_ms: 9.0
            }
        );
        assert_eq!(
            line("btrfs", 10, Stats { median_ms: 2.0, p90_ms: 3.0 }, Stats { median_ms: 8.0, p90_ms: 9.0 }),
            "NODE-STORAGE-BENCH backend=btrfs runs=10 ours_median_ms=2.00 ours_p90_ms=3.00 cli_median_ms=8.00 cli_p90_ms=9.00 ratio=4.00"
        );
    }
}
