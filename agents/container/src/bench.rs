//! `tessera container bench`, run on the node (`make bench-container` drives it from the
//! host): in one run, interleaved,
//! - ours: create+start, wait, delete of a container of one template through the agent's
//!   socket, as `tessera container create --start` / `wait` / `rm` do (the create includes
//!   the instance's COW snapshot), with each phase's median;
//! - crun: `crun run` of the same bundle (its directory, not a snapshot);
//! - clone: the instance snapshot of the template alone, through the storage service;
//! - the agent's VmRSS at idle, and with 5 sleeping containers each shim's VmRSS and PSS and
//!   the agent's growth.
//!
//! Prints a `CONTAINER-GUEST-BENCH key=value…` line for the host side to parse.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::storage::Storage;
use crate::templates;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The template the containers are made from (digest or 12+ hex digits).
    #[arg(long)]
    pub template: String,
    /// The same bundle as a directory, for crun.
    #[arg(long)]
    pub crun_bundle: PathBuf,
    /// How to run crun (split on spaces), e.g. its loader, `--library-path DIR` and crun.
    #[arg(long, default_value = "crun")]
    pub crun: String,
    /// Cycles per side.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Sleeping containers for the per-container overhead.
    #[arg(long, default_value_t = 5)]
    pub sleepers: usize,
}

const TIMEOUT: Duration = Duration::from_secs(60);

fn call(request: Value) -> anyhow::Result<Value> {
    tessera_common::ipc::call(
        Path::new(crate::service::SOCKET),
        "container",
        &request,
        TIMEOUT,
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sorted samples → (p10, median, p90).
fn spread(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (at(0.1), median, at(0.9))
}

/// One cycle of ours, whole and by phase (ms).
#[derive(Default)]
struct Phases {
    total: Vec<f64>,
    create: Vec<f64>,
    wait: Vec<f64>,
    delete: Vec<f64>,
}

/// create --start, wait (the agent blocks on the shim's pidfd: nothing polls), delete.
fn ours_cycle(template: &str, name: &str, phases: &mut Phases) -> anyhow::Result<()> {
    let t = Instant::now();
    // net none: the bundle's own network namespace with lo only, as `crun run` makes it.
    call(json!({"op": "create", "name": name, "template": template,
        "args": ["/bin/true"], "net": "none", "start": true}))?;
    let created = t.elapsed();
    let v = call(json!({"op": "wait", "name": name, "timeout_ms": TIMEOUT.as_millis() as u64}))?;
    if v["exit"]["code"] != 0 {
        bail!("container {name} running /bin/true did not exit 0: {v}");
    }
    let waited = t.elapsed();
    call(json!({"op": "delete", "name": name}))?;
    let total = t.elapsed();
    phases.total.push(ms(total));
    phases.create.push(ms(created));
    phases.wait.push(ms(waited - created));
    phases.delete.push(ms(total - waited));
    Ok(())
}

fn crun_cycle(crun: &[&str], bundle: &Path, id: &str) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let out = Command::new(crun[0])
        .args(&crun[1..])
        .args(["run", "--no-pivot", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", crun.join(" ")))?;
    let took = t.elapsed();
    if !out.status.success() {
        bail!(
            "crun run {id} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(took)
}

/// PIDs whose command line has `words` in a row (`agent container`, `container shim`).
fn pids_running(words: &[&str]) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            args.windows(words.len())
                .any(|w| w.iter().zip(words).all(|(a, b)| *a == b.as_bytes()))
        })
        .collect()
}

/// A `Key:   N kB` figure of /proc/<pid>/<file>.
fn kib(pid: u32, file: &str, key: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .with_context(|| format!("reading /proc/{pid}/{file}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {key} in /proc/{pid}/{file}"))
}

fn agent_rss() -> anyhow::Result<u64> {
    match pids_running(&["agent", "container"]).as_slice() {
        [pid] => kib(*pid, "status", "VmRSS:"),
        other => bail!("expected one `tessera agent container` process, found {other:?}"),
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.runs < 1 {
        bail!("--runs must be at least 1");
    }
    let crun: Vec<&str> = args.crun.split_whitespace().collect();
    if crun.is_empty() {
        bail!("--crun is empty: give the crun command");
    }
    let storage = Storage::default();
    let template = templates::resolve(&storage, &args.template)?;
    let idle_rss = agent_rss()?;

    // One of each first: page cache and the agent's first allocations are not measured.
    ours_cycle(&template.digest, "bench-warm", &mut Phases::default())?;
    crun_cycle(&crun, &args.crun_bundle, "bench-warm")?;
    let mut ours = Phases::default();
    let (mut theirs, mut clone) = (Vec::new(), Vec::new());
    for i in 0..args.runs {
        eprintln!("[bench] cycle {}/{}", i + 1, args.runs);
        ours_cycle(&template.digest, &format!("bench-{i}"), &mut ours)?;
        theirs.push(ms(crun_cycle(
            &crun,
            &args.crun_bundle,
            &format!("bench-{i}"),
        )?));
        let name = format!("bench-clone-{i}");
        let t = Instant::now();
        storage.snapshot(&template.name, &name, false)?;
        clone.push(ms(t.elapsed()));
        storage.delete(&name)?;
    }

    // Per-container overhead: sleeping containers, their shims, the agent's growth.
    for i in 0..args.sleepers {
        call(json!({"op": "create", "name": format!("bench-sleep-{i}"),
            "template": template.digest, "args": ["/bin/sleep", "3600"], "net": "none",
            "start": true}))?;
    }
    std::thread::sleep(Duration::from_secs(2));
    let shims = pids_running(&["container", "shim"]);
    if shims.len() != args.sleepers {
        bail!(
            "expected {} shims, found {}: {shims:?}",
            args.sleepers,
            shims.len()
        );
    }
    let (mut shim_rss, mut shim_pss) = (0, 0);
    for pid in &shims {
        shim_rss += kib(*pid, "status", "VmRSS:")?;
        shim_pss += kib(*pid, "smaps_rollup", "Pss:")?;
    }
    let busy_rss = agent_rss()?;
    for i in 0..args.sleepers {
        call(json!({"op": "delete", "name": format!("bench-sleep-{i}"), "force": true}))?;
    }
    let n = args.sleepers.max(1) as u64;
    let (o, c, k) = (
        spread(&mut ours.total),
        spread(&mut theirs),
        spread(&mut clone),
    );
    let median = |v: &mut Vec<f64>| spread(v).1;
    println!(
        "CONTAINER-GUEST-BENCH runs={} backend={} ours_p10_ms={:.1} ours_median_ms={:.1} ours_p90_ms={:.1} crun_p10_ms={:.1} crun_median_ms={:.1} crun_p90_ms={:.1} clone_p10_ms={:.2} clone_median_ms={:.2} clone_p90_ms={:.2} ours_create_ms={:.1} ours_wait_ms={:.1} ours_delete_ms={:.1} agent_rss_kib={idle_rss} agent_busy_rss_kib={busy_rss} sleepers={} shim_rss_kib={} shim_pss_kib={}",
        args.runs,
        storage.backend()?,
        o.0, o.1, o.2, c.0, c.1, c.2, k.0, k.1, k.2,
        median(&mut ours.create),
        median(&mut ours.wait),
        median(&mut ours.delete),
        args.sleepers,
        shim_rss / n,
        shim_pss / n,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn spread_is_p10_median_p90() {
        let mut v: Vec<f64> = (1..=11).rev().map(f64::from).collect();
        assert_eq!(super::spread(&mut v), (2.0, 6.0, 10.0));
        assert_eq!(super::spread(&mut [3.0]), (3.0, 3.0, 3.0));
    }
}
