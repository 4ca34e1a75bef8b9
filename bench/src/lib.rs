//! Host side of Tessera's benchmarks (operator tools, never in the node image): boot the image
//! in QEMU with the disks a benchmark needs, run the benchmark's guest half on the console,
//! parse its result line, and print the figures with the conditions of the run.
//!
//! - `disks`: what a VM is handed besides its data disk: OCI bundles made from Debian's
//!   busybox-static, and Debian's crun with its shared libraries, on one ext4 image (the
//!   end-to-end differential test uses the same disk);
//! - `conditions`: load average, CPU model and QEMU version of the run;
//! - `boot`: `tessera bench boot` (the whole node's boot three ways, against the busybox floor);
//! - `timeline`: a boot's console read into times since PID 1 started, and idle memory;
//! - `node`: `tessera bench node` (the node agent's snapshots, start-up and RSS);
//! - `container`: `tessera bench container` (issue 9 §5);
//! - `command`: the `tessera bench …` subcommands, dispatched to the above and to the CA,
//!   identity and hub benchmarks of their own crates.
//!
//! It must not be linked into the node build (`tessera-node`): init depends on it only under
//! its `host` feature.

pub mod boot;
pub mod command;
pub use tessera_common::bench_conditions as conditions;
pub mod container;
pub mod disks;
pub mod node;
pub mod timeline;

/// A blank qcow2 data disk of `size` at `path`, made by qemu-img.
pub fn qcow2_disk(path: &std::path::Path, size: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg(size)
        .output()
        .context("running qemu-img (apt-get install qemu-utils)")?;
    if !out.status.success() {
        anyhow::bail!(
            "qemu-img create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The `PREFIX k=v …` line a guest command printed, by key; the error names the command.
pub fn guest_line(
    out: &str,
    prefix: &str,
    command: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let line = out
        .lines()
        .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
        .ok_or_else(|| anyhow::anyhow!("`{command}` printed no {prefix} line:\n{out}"))?;
    Ok(tessera_qemu::parse_kv_line(line))
}

/// Median of `v` (sorted in place); `None` when empty.
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(super::median(&mut []), None);
        assert_eq!(super::median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(super::median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
