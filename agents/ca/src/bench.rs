//! `tessera bench ca`: certificate issuance over HTTPS, Tessera's CA against cfssl, in the
//! same run on the same machine.
//!
//! - Tessera: `POST /v1/redeem` — one-time token check and compare-and-swap, CSR signature
//!   check, signing under the profile, and the durable SQLite commit (WAL, synchronous=FULL,
//!   audit entries) before the reply. Tokens are minted and CSRs (ECDSA P-256) generated
//!   before the clock starts.
//! - cfssl (`cfssl serve`, Debian's golang-cfssl): `POST /api/v1/cfssl/sign` with the same
//!   CSRs, an equivalent profile (P-256 CA, 4 h, digital signature + client/server auth,
//!   subject O/OU/CN and the DNS SAN from the request; cfssl cannot write DC/UID or the
//!   capabilities extension) and no database (cfssl keeps no state by default). Over HTTPS by
//!   default, like Tessera; `--cfssl-http` measures it over plain HTTP.
//! - Both are driven by the same client: `--concurrency` keep-alive HTTPS connections.
//!   Rounds alternate between the two; the figures are medians over rounds.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use rustls::ClientConfig;
use serde_json::json;
use tessera_identity::profile;
use tessera_identity::tls::{self, CaTrust};

use crate::client::Connection;
use crate::files::StateDir;
use crate::server::{ServeOptions, Server};
use crate::setup;
use crate::state;
use crate::token::{self, Binding};

#[derive(Debug, Clone, clap::Args)]
pub struct CaBenchArgs {
    /// Issuances per round for each CA.
    #[arg(long, default_value_t = 4000)]
    pub count: usize,
    /// Concurrent keep-alive client connections (many nodes booting at once; each request
    /// waits for its durable commit, so fewer clients measure the disk's fsync latency).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Rounds per CA (figures are medians over rounds).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Worker threads of Tessera's CA server.
    #[arg(long, default_value_t = 2)]
    pub server_threads: usize,
    /// Worker threads of the load generator.
    #[arg(long, default_value_t = 2)]
    pub client_threads: usize,
    /// The cfssl program.
    #[arg(long, default_value = "cfssl")]
    pub cfssl: String,
    /// Talk to cfssl over plain HTTP (default: HTTPS, like Tessera).
    #[arg(long)]
    pub cfssl_http: bool,
    /// Measure Tessera only.
    #[arg(long)]
    pub no_cfssl: bool,
    /// Keep the CA state and cfssl files here (default: a temporary directory).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

/// One round's measurements.
#[derive(Debug, Clone)]
struct Round {
    per_s: f64,
    p50: Duration,
    p99: Duration,
    /// CPU time (user + system) of everything involved per issuance: this process (client,
    /// and Tessera's server) plus the cfssl process when measuring cfssl.
    cpu_us: f64,
}

/// User + system CPU time of a process so far, from /proc (clock ticks of 10 ms).
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// What a round sends: one request body per issuance.
type Bodies = Arc<Vec<String>>;

/// One server under test and the requests it gets.
struct Target {
    /// The server's process, when it is not this one (its CPU time counts too).
    pid: Option<u32>,
    addr: SocketAddr,
    /// `None`: plain HTTP.
    tls: Option<Arc<ClientConfig>>,
    path: &'static str,
    bodies: Vec<String>,
    /// Does a 200 reply's body say success?
    check: fn(&[u8]) -> bool,
}

impl Target {
    /// Sends requests `from..from + n` over `concurrency` connections.
    async fn round(&self, from: usize, n: usize, concurrency: usize) -> anyhow::Result<Round> {
        round(
            self.pid,
            self.addr,
            self.tls.clone(),
            self.path,
            Arc::new(self.bodies[from..from + n].to_vec()),
            concurrency,
            self.check,
        )
        .await
    }
}

/// Runs `bodies` against `path` with `concurrency` connections; fails on any non-200.
async fn round(
    other_pid: Option<u32>,
    addr: SocketAddr,
    config: Option<Arc<ClientConfig>>,
    path: &'static str,
    bodies: Bodies,
    concurrency: usize,
    check: fn(&[u8]) -> bool,
) -> anyhow::Result<Round> {
    let mut conns = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        conns.push(Connection::connect(addr, "localhost", config.clone()).await?);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let cpu = || {
        cpu_time("self")
            + other_pid
                .map(|p| cpu_time(&p.to_string()))
                .unwrap_or_default()
    };
    let cpu_before = cpu();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for mut conn in conns {
        let (next, bodies) = (next.clone(), bodies.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let t = Instant::now();
                let reply = conn.post(path, body.clone()).await?;
                latencies.push(t.elapsed());
                if reply.status != 200 || !check(&reply.body) {
                    bail!(
                        "request {i} to {path} failed: {} {}",
                        reply.status,
                        reply.text()
                    );
                }
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(bodies.len());
    for t in tasks {
        latencies.extend(t.await??);
    }
    let wall = started.elapsed();
    let cpu_used = cpu().saturating_sub(cpu_before);
    latencies.sort();
    Ok(Round {
        per_s: bodies.len() as f64 / wall.as_secs_f64(),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        cpu_us: cpu_used.as_secs_f64() * 1e6 / bodies.len() as f64,
    })
}

fn csrs(n: usize) -> anyhow::Result<Vec<String>> {
    (0..n)
        .map(|_| {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            Ok(profile::csr_pem(&key)?)
        })
        .collect()
}

/// Mints `n` tokens for `certmgr` on one node, the way `tessera ca token` does.
fn mint(state: &StateDir, n: usize) -> anyhow::Result<Vec<String>> {
    let binding = Binding::new(
        "n1.bench.example",
        "certmgr",
        None,
        vec!["node".into()],
        vec![],
    )
    .map_err(|e| anyhow::anyhow!(e.reason))?;
    let mut conn = state::open(&state.database())?;
    state::transaction(&mut conn, |c| {
        let now = state::now();
        (0..n)
            .map(|_| {
                token::create(c, &binding, Duration::from_secs(3600), "bench", now).map(|t| t.token)
            })
            .collect()
    })
    .map_err(|e| anyhow::anyhow!(e.reason))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A cfssl server with its own P-256 CA, killed on drop.
struct Cfssl {
    child: Child,
    addr: SocketAddr,
    ca_pem: String,
}

impl Drop for Cfssl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_cfssl(program: &str, dir: &Path, https: bool) -> anyhow::Result<Cfssl> {
    std::fs::create_dir_all(dir)?;
    // The same kind of CA as Tessera's: P-256, CA:TRUE pathlen 0.
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut p = CertificateParams::default();
    p.distinguished_name
        .push(DnType::CommonName, "cfssl bench CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = p.self_signed(&ca_key)?;
    let ca_pem = ca_cert.pem();
    let issuer = rcgen::Issuer::new(p, &ca_key);
    let tls_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut t = CertificateParams::new(vec!["localhost".to_string()])?;
    t.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse()?));
    let tls_cert = t.signed_by(&tls_key, &issuer)?;
    let write = |name: &str, body: &str| {
        std::fs::write(dir.join(name), body).with_context(|| format!("writing {name}"))
    };
    write("ca.pem", &ca_pem)?;
    write("ca-key.pem", &ca_key.serialize_pem())?;
    write("tls.pem", &(tls_cert.pem() + &ca_pem))?;
    write("tls-key.pem", &tls_key.serialize_pem())?;
    write(
        "config.json",
        &json!({"signing": {"default": {
            "expiry": "4h",
            "usages": ["digital signature", "client auth", "server auth"]
        }}})
        .to_string(),
    )?;
    let port = free_port()?;
    let mut cmd = Command::new(program);
    cmd.current_dir(dir)
        .args(["serve", "-address", "127.0.0.1", "-port", &port.to_string()])
        .args([
            "-ca",
            "ca.pem",
            "-ca-key",
            "ca-key.pem",
            "-config",
            "config.json",
            "-loglevel",
            "5",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if https {
        cmd.args(["-tls-cert", "tls.pem", "-tls-key", "tls-key.pem"]);
    }
    let child = cmd.spawn().with_context(|| {
        format!("starting {program}: install it with `apt-get install golang-cfssl`, pass --cfssl PATH, or use --no-cfssl")
    })?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let cfssl = Cfssl {
        child,
        addr,
        ca_pem,
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            bail!("cfssl did not start listening on {addr} within 15 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(cfssl)
}

fn tessera_ok(body: &[u8]) -> bool {
    body.windows(16).any(|w| w == b"certificate_pem\"")
}

fn cfssl_ok(body: &[u8]) -> bool {
    body.windows(14).any(|w| w == b"\"success\":true")
}

fn summarize(name: &str, rounds: &[Round]) -> (f64, f64, f64, f64) {
    let per_s = median(rounds.iter().map(|r| r.per_s).collect());
    let p50 = median(rounds.iter().map(|r| r.p50.as_secs_f64() * 1e3).collect());
    let p99 = median(rounds.iter().map(|r| r.p99.as_secs_f64() * 1e3).collect());
    let cpu = median(rounds.iter().map(|r| r.cpu_us).collect());
    let each: Vec<String> = rounds.iter().map(|r| format!("{:.0}", r.per_s)).collect();
    println!(
        "{name:<10} {per_s:>7.0} /s   p50 {p50:>7.2} ms   p99 {p99:>7.2} ms   CPU {cpu:>4.0} µs/issuance   (rounds: {} /s)",
        each.join(", ")
    );
    (per_s, p50, p99, cpu)
}

/// Runs the benchmark and prints the figures and one `CA-BENCH` line.
pub fn bench(args: CaBenchArgs) -> anyhow::Result<()> {
    if args.count == 0 || args.rounds == 0 || args.concurrency == 0 {
        bail!("--count, --rounds and --concurrency must be at least 1");
    }
    let mut conditions = tessera_common::bench_conditions::Conditions::before(None);
    let temp;
    let work = match &args.work_dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile_dir()?;
            temp.path.clone()
        }
    };
    let warmup = (args.concurrency * 10).min(args.count);
    let total = args.count * args.rounds + warmup;

    eprintln!("preparing: {total} ECDSA P-256 CSRs, {total} tokens …");
    let state = StateDir::new(work.join("tessera"));
    setup::init(&state, "bench", &["localhost".into(), "127.0.0.1".into()])?;
    let csr_list = csrs(total)?;
    let tokens = mint(&state, total)?;
    let tessera_bodies: Vec<String> = tokens
        .iter()
        .zip(&csr_list)
        .map(|(t, c)| json!({ "token": t, "csr_pem": c }).to_string())
        .collect();
    let cfssl_bodies: Vec<String> = csr_list
        .iter()
        .map(|c| {
            json!({
                "certificate_request": c,
                "hosts": ["certmgr.n1.bench.example"],
                "subject": {"CN": "certmgr", "names": [{"O": "certmgr", "OU": "n1.bench.example"}]},
            })
            .to_string()
        })
        .collect();

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads)
        .thread_name("ca-server")
        .enable_all()
        .build()?;
    let server = server_rt.block_on(Server::bind(ServeOptions {
        state: state.clone(),
        listen: "127.0.0.1:0".parse()?,
        lifetime: profile::DEFAULT_LIFETIME,
    }))?;
    let addr = server.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    server_rt.spawn(server.run(async {
        let _ = stopped.await;
    }));
    let trust = CaTrust::from_pem(&state.read(crate::files::CA_CERT)?)?;
    let tessera_tls = tls::client_config(None, &trust)?;

    let cfssl = if args.no_cfssl {
        None
    } else {
        Some(start_cfssl(
            &args.cfssl,
            &work.join("cfssl"),
            !args.cfssl_http,
        )?)
    };
    let cfssl_tls = match &cfssl {
        Some(c) if !args.cfssl_http => {
            let der = rustls::pki_types::pem::PemObject::from_pem_slice(c.ca_pem.as_bytes())
                .map_err(|e| anyhow::anyhow!("cfssl CA: {e}"))?;
            Some(tls::client_config(None, &CaTrust::new(der)?)?)
        }
        _ => None,
    };

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .thread_name("ca-bench-client")
        .enable_all()
        .build()?;
    let tessera = Target {
        pid: None,
        addr,
        tls: Some(tessera_tls),
        path: "/v1/redeem",
        bodies: tessera_bodies,
        check: tessera_ok,
    };
    let cfssl_target = cfssl.as_ref().map(|c| Target {
        pid: Some(c.child.id()),
        addr: c.addr,
        tls: cfssl_tls,
        path: "/api/v1/cfssl/sign",
        bodies: cfssl_bodies,
        check: cfssl_ok,
    });

    client_rt.block_on(async {
        eprintln!("warm-up: {warmup} issuances each");
        tessera.round(0, warmup, args.concurrency).await?;
        if let Some(c) = &cfssl_target {
            c.round(0, warmup, args.concurrency).await?;
        }
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for r in 0..args.rounds {
            let from = warmup + r * args.count;
            let t = tessera.round(from, args.count, args.concurrency).await?;
            eprintln!("round {}: tessera {:.0}/s", r + 1, t.per_s);
            ours.push(t);
            if let Some(c) = &cfssl_target {
                let t = c.round(from, args.count, args.concurrency).await?;
                eprintln!("round {}: cfssl {:.0}/s", r + 1, t.per_s);
                theirs.push(t);
            }
        }
        println!(
            "CA issuance: tessera over HTTPS, cfssl over {}; {} keep-alive connections, {} issuances x {} rounds (medians), {} CPUs",
            if args.cfssl_http { "HTTP" } else { "HTTPS" },
            args.concurrency,
            args.count,
            args.rounds,
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
        );
        let (t_s, t50, t99, t_cpu) = summarize("tessera", &ours);
        let (c_s, _, _, c_cpu) = if theirs.is_empty() {
            (f64::NAN, f64::NAN, f64::NAN, f64::NAN)
        } else {
            summarize(if args.cfssl_http { "cfssl/http" } else { "cfssl" }, &theirs)
        };
        let ratio = t_s / c_s;
        if !theirs.is_empty() {
            println!(
                "ratio      {ratio:.2}x issuances per second; {:.2}x CPU per issuance (cfssl / tessera)",
                c_cpu / t_cpu
            );
        }
        conditions.finish();
        conditions.print();
        println!("CA-BENCH tessera_per_s={t_s:.0} cfssl_per_s={c_s:.0} ratio={ratio:.2} p50_ms={t50:.2} p99_ms={t99:.2}");
        Ok::<_, anyhow::Error>(())
    })?;
    let _ = stop.send(());
    drop(cfssl);
    server_rt.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

/// A temporary directory removed on drop (tempfile is a dev-dependency only).
struct TempDir {
    path: PathBuf,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn tempfile_dir() -> anyhow::Result<TempDir> {
    let path = std::env::temp_dir().join(format!("tessera-bench-ca-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path)?;
    Ok(TempDir { path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn tiny_run_against_tessera_only() {
        let dir = tempfile::tempdir().unwrap();
        bench(CaBenchArgs {
            count: 20,
            concurrency: 4,
            rounds: 1,
            server_threads: 1,
            client_threads: 1,
            cfssl: "cfssl".into(),
            cfssl_http: false,
            no_cfssl: true,
            work_dir: Some(dir.path().to_path_buf()),
        })
        .unwrap();
    }

    #[test]
    fn missing_cfssl_is_reported_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let e = start_cfssl("/nonexistent/cfssl", dir.path(), true)
            .err()
            .unwrap();
        assert!(
            format!("{e:#}").contains("apt-get install golang-cfssl"),
            "{e:#}"
        );
    }
}
