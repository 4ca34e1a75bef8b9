//! `tessera bench identity`: boot time added by the node identity, per key mode. A Tessera CA
//! runs on this host (`tessera ca serve` on 127.0.0.1, reached by the guest as 10.0.2.2); the
//! image boots under QEMU with a fresh token on the kernel command line, as PXE would deliver
//! it, and the console is read: PID 1's `TESSERA-INIT`/`TESSERA-READY` lines, the supervisor's
//! `service started … service=certmgr` event, and certmgr's events, which carry the guest
//! uptime (`uptime_ms=`). The skeleton boot (no CA arguments) is measured in the same run,
//! interleaved, as the reference.
//!
//! Reported per kind of boot (medians): PID 1 start → certmgr started (everything the
//! skeleton does before the identity), PID 1 start → node certificate in the keyring, the
//! difference (the time identity adds), the key generation alone, and PID 1 → TESSERA-READY.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use tessera_qemu::{BootMode, Vm, VmConfig};

#[derive(clap::Args, Debug)]
pub struct IdentityBenchArgs {
    /// Boots of each kind.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Image to boot (output of `tessera image build`).
    #[arg(long, default_value = "out")]
    pub image: PathBuf,
    /// Key modes to measure with the CA.
    #[arg(long, value_delimiter = ',', default_value = "kernel-rsa,ecdsa-p256")]
    pub modes: Vec<String>,
}

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// One boot's timeline, in guest uptime milliseconds.
#[derive(Debug, Clone, Copy, Default)]
struct Boot {
    init: u64,
    certmgr_started: u64,
    key_ms: u64,
    cert: u64,
    ready: u64,
}

impl Boot {
    fn until_cert(&self) -> u64 {
        self.cert.saturating_sub(self.init)
    }
    fn until_certmgr(&self) -> u64 {
        self.certmgr_started.saturating_sub(self.init)
    }
    fn added(&self) -> u64 {
        self.cert.saturating_sub(self.certmgr_started)
    }
    fn until_ready(&self) -> u64 {
        self.ready.saturating_sub(self.init)
    }
}

/// A Tessera CA on this host (`tessera ca serve` on 127.0.0.1, the guest reaches it as
/// 10.0.2.2), stopped on drop. The boot benchmark uses it too.
pub struct HostCa {
    child: Child,
    state: tempfile::TempDir,
    port: u16,
    fingerprint: String,
    exe: PathBuf,
}

impl Drop for HostCa {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl HostCa {
    /// Initialises a CA with `exe` (`tessera ca init`) in a temporary directory and serves it.
    pub fn start(exe: &Path) -> anyhow::Result<HostCa> {
        let state = tempfile::tempdir().context("temporary CA state directory")?;
        let dir = state.path().join("ca");
        let status = Command::new(exe)
            .args(["ca", "init", "--cluster", "bench", "--state"])
            .arg(&dir)
            .stdout(Stdio::null())
            .status()
            .context("tessera ca init")?;
        if !status.success() {
            bail!("tessera ca init failed");
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(exe)
            .args(["ca", "serve", "--state"])
            .arg(&dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("tessera ca serve")?;
        let fingerprint = output(
            Command::new(exe)
                .args(["ca", "fingerprint", "--state"])
                .arg(&dir),
        )?;
        let ca = HostCa {
            child,
            state,
            port,
            fingerprint,
            exe: exe.to_path_buf(),
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(ca);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("the CA did not start listening on 127.0.0.1:{port}")
    }

    /// The URL a guest on QEMU's user network reaches the CA at.
    pub fn guest_url(&self) -> String {
        format!("https://10.0.2.2:{}", self.port)
    }

    /// The CA's `sha256:…` fingerprint, for `ca_fp`.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The kernel arguments of a node booting with `token` as `node`, as PXE would give them.
    pub fn kernel_args(&self, token: &str, node: &str) -> Vec<String> {
        vec![
            format!("tessera.ca={}", self.guest_url()),
            format!("tessera.ca_fp={}", self.fingerprint),
            format!("tessera.token={token}"),
            format!("tessera.hostname={node}"),
        ]
    }

    /// A node token for `node` that may hand out the default image's identities.
    pub fn token(&self, node: &str) -> anyhow::Result<String> {
        output(
            Command::new(&self.exe)
                .args(["ca", "token", "--state"])
                .arg(self.state.path().join("ca"))
                .args([
                    "--node",
                    node,
                    "--subsystem",
                    "certmgr",
                    "--capabilities",
                    "node,container,hub",
                ]),
        )
    }
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stderr(Stdio::null())
        .output()
        .context("running tessera")?;
    if !out.status.success() {
        bail!("{cmd:?} failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn bench(args: IdentityBenchArgs) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if !args.image.join("pxe/initramfs.img").exists() {
        bail!(
            "{} is missing: build the image first (`make image`)",
            args.image.join("pxe/initramfs.img").display()
        );
    }
    for m in &args.modes {
        m.parse::<tessera_identity::keys::KeyMode>()?;
    }
    let mut conditions = tessera_qemu::config::vm_conditions();
    let exe = std::env::current_exe().context("locating this executable")?;
    let ca = HostCa::start(&exe)?;
    eprintln!("[bench] CA on 127.0.0.1:{} ({})", ca.port, ca.fingerprint);
    let mut results: BTreeMap<String, Vec<Boot>> = BTreeMap::new();
    for run in 1..=args.runs {
        eprintln!(
            "[bench] run {run}/{}: skeleton (no CA arguments)",
            args.runs
        );
        results
            .entry("skeleton (standalone)".into())
            .or_default()
            .push(boot(
                &args.image,
                &[],
                &format!("bench-identity-skeleton-{run}"),
            )?);
        for mode in &args.modes {
            eprintln!("[bench] run {run}/{}: CA, {mode}", args.runs);
            let node = format!("node{run}.bench");
            let token = ca.token(&node)?;
            let mut append = ca.kernel_args(&token, &node);
            append.push(format!("tessera.certmgr_key={mode}"));
            append.push("tessera.imds=off".into());
            let refs: Vec<&str> = append.iter().map(String::as_str).collect();
            results.entry(format!("CA, {mode}")).or_default().push(boot(
                &args.image,
                &refs,
                &format!("bench-identity-{mode}-{run}"),
            )?);
        }
    }
    conditions.finish();
    print_report(args.runs, &conditions, &results);
    Ok(())
}

fn boot(image: &Path, append: &[&str], name: &str) -> anyhow::Result<Boot> {
    let mut cfg = VmConfig::new(BootMode::Kernel, image);
    cfg.name = name.to_string();
    cfg.append = append.iter().map(|s| s.to_string()).collect();
    let mut vm = Vm::start(&cfg)?;
    let result = read_boot(&vm);
    vm.kill();
    result
}

fn read_boot(vm: &Vm) -> anyhow::Result<Boot> {
    vm.wait_for("TESSERA-READY", BOOT_TIMEOUT)?;
    // certmgr's events reach the console just before READY; give the mirror a moment.
    std::thread::sleep(Duration::from_millis(200));
    parse_console(&vm.console())
}

fn parse_console(text: &str) -> anyhow::Result<Boot> {
    let mut b = Boot::default();
    let mut started_clock = None;
    let mut offset = None; // wall clock - uptime, from a certmgr event carrying both
    for line in text.lines() {
        let kv = tessera_qemu::parse_kv_line(line);
        let num = |k: &str| tessera_qemu::kv::kv_u64(&kv, k);
        if line.starts_with("TESSERA-INIT ") {
            b.init = num("uptime_ms").unwrap_or(0);
        } else if line.starts_with("TESSERA-READY ") {
            b.ready = num("uptime_ms").unwrap_or(0);
        } else if line.contains(" init: service started ")
            && kv.get("service").map(String::as_str) == Some("certmgr")
        {
            started_clock = started_clock.or(tessera_qemu::kv::clock_ms(line));
        } else if line.contains(" certmgr[") {
            if line.contains(": node key generated") {
                b.key_ms = num("ms").unwrap_or(0);
            }
            if let (Some(up), Some(clock)) = (num("uptime_ms"), tessera_qemu::kv::clock_ms(line)) {
                offset = offset.or(Some(clock as i64 - up as i64));
                if line.contains(": node certificate stored in the keyring")
                    || line.contains(": standalone identity (node-local CA)")
                {
                    b.cert = up;
                }
            }
        }
    }
    if b.init == 0 || b.ready == 0 || b.cert == 0 {
        bail!("the console lacks TESSERA-INIT, TESSERA-READY or certmgr's certificate event");
    }
    b.certmgr_started = match (started_clock, offset) {
        (Some(c), Some(o)) => (c as i64 - o).max(0) as u64,
        _ => bail!("the console lacks certmgr's start"),
    };
    Ok(b)
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    match v.len() {
        0 => 0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

fn print_report(
    runs: usize,
    conditions: &tessera_common::bench_conditions::Conditions,
    results: &BTreeMap<String, Vec<Boot>>,
) {
    let med = |boots: &[Boot], f: fn(&Boot) -> u64| median(boots.iter().map(f).collect());
    println!();
    println!("Identity boot benchmark: medians of {runs} boots each, QEMU TCG, direct kernel, CA on the host");
    println!();
    println!("| boot | PID 1 → certmgr started | PID 1 → node certificate in the keyring | added by identity (certmgr start → certificate) | key generation | PID 1 → TESSERA-READY |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut line = String::from("IDENTITY-BENCH");
    for (name, boots) in results {
        println!(
            "| {name} | {} ms | {} ms | {} ms | {} ms | {} ms |",
            med(boots, Boot::until_certmgr),
            med(boots, Boot::until_cert),
            med(boots, Boot::added),
            med(boots, |b| b.key_ms),
            med(boots, Boot::until_ready),
        );
        let tag: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect::<String>()
            .split('_')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("_");
        line.push_str(&format!(
            " {tag}_cert_ms={} {tag}_added_ms={} {tag}_key_ms={}",
            med(boots, Boot::until_cert),
            med(boots, Boot::added),
            med(boots, |b| b.key_ms)
        ));
    }
    println!();
    conditions.print();
    println!("{line} runs={runs}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_timeline_is_read_in_uptime() {
        let text = "TESSERA-INIT uptime_ms=2000\n\
            16:13:30.100 init: service started pid=9 service=certmgr\n\
            16:13:30.150 certmgr[9]: node key generated key_mode=ecdsa-p256 ms=6 uptime_ms=2150\n\
            16:13:30.200 certmgr[9]: node certificate stored in the keyring serial=ab uptime_ms=2200\n\
            TESSERA-READY services=5 userspace_ms=300 uptime_ms=2300 failed=0\n";
        let b = parse_console(text).unwrap();
        assert_eq!(
            (b.init, b.certmgr_started, b.cert, b.ready, b.key_ms),
            (2000, 2100, 2200, 2300, 6)
        );
        assert_eq!(
            (
                b.until_certmgr(),
                b.until_cert(),
                b.added(),
                b.until_ready()
            ),
            (100, 200, 100, 300)
        );
        assert!(parse_console("TESSERA-INIT uptime_ms=1\n").is_err());
        assert_eq!(median(vec![5, 1, 3]), 3);
        assert_eq!(median(vec![4, 1, 3, 2]), 2);
    }
}
