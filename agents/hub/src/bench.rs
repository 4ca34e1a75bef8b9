//! `tessera bench hub`: call round trips through one hub (local) and through two hubs over
//! loopback (remote), against NATS request-reply through a local `nats-server` measured in the
//! same run with the same payload and concurrency; failure detection in a 10-hub in-process
//! cluster; convergence after a join at 3, 10, 30 and 100 hubs. Medians over repeated runs.
//!
//! Everything but nats-server runs in this process on a runtime of two worker threads: the
//! hubs, the callee and the callers share the same two cores the goal speaks of. The clusters
//! gossip over chitchat's in-memory transport with the service's own gossip interval and
//! failure-detector settings.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use hyper::body::Bytes;
use serde_json::{json, Value};

use tessera_common::bench_conditions::{verdict, Conditions};

use crate::client::{Client, Request};
use crate::defaults;
use crate::protocol::Target;
use crate::testbed::Testbed;

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 2s, 500ms)"))
}

#[derive(Debug, Clone, Args)]
pub struct HubBenchArgs {
    /// Repetitions of each measurement; medians are reported.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Callers in flight at once in the throughput runs.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Callers in flight at once in the latency runs (the p50/p99 of the HUB-BENCH line).
    #[arg(long, default_value_t = 1)]
    pub latency_concurrency: usize,
    /// Caller connections (the callers share them).
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Length of one throughput measurement.
    #[arg(long, default_value = "2s", value_parser = duration)]
    pub duration: Duration,
    /// Request payload size in bytes.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// The NATS server binary (Debian package nats-server).
    #[arg(long, default_value = "nats-server")]
    pub nats_server: PathBuf,
    /// Cluster sizes for the convergence measurement.
    #[arg(long, value_delimiter = ',', default_value = "3,10,30,100")]
    pub converge_sizes: Vec<usize>,
    /// Repetitions of the cluster measurements (detection, convergence).
    #[arg(long, default_value_t = 3)]
    pub cluster_runs: usize,
}

/// One throughput run.
#[derive(Debug, Clone, Copy)]
struct Run {
    per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64
}

/// Runs `concurrency` loops of `one` for `length` after a short warm-up.
async fn measure<F, Fut>(concurrency: usize, length: Duration, one: F) -> anyhow::Result<Run>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let one = Arc::new(one);
    let warm = Instant::now() + Duration::from_millis(300);
    let start = warm;
    let end = start + length;
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let one = one.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                one(i).await?;
                if t >= start {
                    lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                }
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort_unstable();
    Ok(Run {
        per_s: all.len() as f64 / length.as_secs_f64(),
        p50_us: percentile(&all, 0.50),
        p99_us: percentile(&all, 0.99),
    })
}

async fn echo_component(socket: &std::path::Path) -> anyhow::Result<Client> {
    let c = Client::connect(socket, "echo", "bench")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    c.on_call(|inv, r| r.reply_with(Ok(inv.inputs), inv.attachments));
    c.register(&["bench"])
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(c)
}

async fn hub_calls(
    args: &HubBenchArgs,
    t: &Testbed,
    caller_hub: usize,
    concurrency: usize,
) -> anyhow::Result<Run> {
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        clients.push(
            Client::connect_anonymous(&t.socket(caller_hub))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        );
    }
    let clients = Arc::new(clients);
    let payload = Value::String("x".repeat(args.payload));
    measure(concurrency, args.duration, move |i| {
        let clients = clients.clone();
        let payload = payload.clone();
        async move {
            let c = &clients[i % clients.len()];
            c.request(Request::new(Target::Group("bench".into()), "echo").inputs(payload))
                .await
                .result
                .map_err(|e| anyhow::anyhow!("call failed: {e}"))?;
            Ok(())
        }
    })
    .await
}

struct NatsServer {
    child: Child,
    url: String,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_nats(bin: &PathBuf) -> anyhow::Result<NatsServer> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "starting {}; install it with `apt-get install -y nats-server` or pass --nats-server",
                bin.display()
            )
        })?;
    let server = NatsServer {
        child,
        url: format!("nats://127.0.0.1:{port}"),
    };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(server);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("nats-server did not listen on 127.0.0.1:{port} within 5 s")
}

async fn nats_calls(args: &HubBenchArgs, url: &str, concurrency: usize) -> anyhow::Result<Run> {
    let responder = async_nats::connect(url).await?;
    let mut sub = responder.subscribe("bench.echo").await?;
    let r2 = responder.clone();
    let serve = tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            if let Some(reply) = msg.reply {
                let _ = r2.publish(reply, msg.payload).await;
            }
        }
    });
    responder.flush().await?;
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        clients.push(async_nats::connect(url).await?);
    }
    let clients = Arc::new(clients);
    // The same bytes the hub call carries as its input.
    let payload = Bytes::from(json!("x".repeat(args.payload)).to_string());
    let run = measure(concurrency, args.duration, move |i| {
        let clients = clients.clone();
        let payload = payload.clone();
        async move {
            clients[i % clients.len()]
                .request("bench.echo", payload)
                .await
                .map_err(|e| anyhow::anyhow!("NATS request failed: {e}"))?;
            Ok(())
        }
    })
    .await;
    serve.abort();
    run
}

/// Time for the nine survivors of a ten-hub cluster to drop a killed hub.
async fn detection(runs: usize) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    for r in 0..runs {
        let mut t = Testbed::start(10, defaults::GOSSIP_INTERVAL).await?;
        t.wait_for(Duration::from_secs(60), |t| t.converged())
            .await
            .context("10 hubs did not converge")?;
        // Let the failure detectors learn the heartbeat rate.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let victim = 1 + r % 9;
        let start = Instant::now();
        t.kill(victim).await;
        t.wait_for(Duration::from_secs(60), |t| t.converged())
            .await
            .context("the survivors did not drop the dead hub within 60 s")?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        eprintln!("detection run {}: {ms:.0} ms", r + 1);
        out.push(ms);
        t.stop().await;
    }
    Ok(out)
}

/// Time for all `n` hubs to see each other after the `n`th joins a converged cluster.
async fn convergence(n: usize, runs: usize) -> anyhow::Result<Vec<f64>> {
    let mut t = Testbed::start(n - 1, defaults::GOSSIP_INTERVAL).await?;
    t.wait_for(Duration::from_secs(120), |t| t.converged())
        .await
        .with_context(|| format!("{} hubs did not converge", n - 1))?;
    let mut out = Vec::new();
    for r in 0..runs {
        let start = Instant::now();
        let joined = t.add().await?;
        t.wait_for(Duration::from_secs(120), |t| t.converged())
            .await
            .with_context(|| format!("{n} hubs did not converge after a join"))?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        eprintln!("convergence {n} hubs run {}: {ms:.0} ms", r + 1);
        out.push(ms);
        // Back to n-1 hubs for the next run.
        t.kill(joined).await;
        t.wait_for(Duration::from_secs(120), |t| t.converged())
            .await
            .context("the cluster did not settle after the joined hub left")?;
    }
    t.stop().await;
    Ok(out)
}

/// Runs the benchmark and prints the table and the `HUB-BENCH` line.
pub fn run(args: HubBenchArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: HubBenchArgs) -> anyhow::Result<()> {
    let mut conditions = Conditions::before(None);
    eprintln!(
        "hub benchmark: {} runs x {:?}, {} callers on {} connections, {}-byte payload",
        args.runs, args.duration, args.concurrency, args.connections, args.payload
    );
    // Local: caller, callee and hub on one node.
    let local_bed = Testbed::start(1, defaults::GOSSIP_INTERVAL).await?;
    let _echo = echo_component(&local_bed.socket(0)).await?;
    // Remote: callee on hub 0, callers on hub 1.
    let remote_bed = Testbed::start(2, defaults::GOSSIP_INTERVAL).await?;
    let _remote_echo = echo_component(&remote_bed.socket(0)).await?;
    remote_bed
        .wait_for(Duration::from_secs(60), |t| {
            t.node(1)
                .hub
                .select("bench", crate::protocol::Selector::All)
                .map(|m| m.len() == 1)
                .unwrap_or(false)
        })
        .await
        .context("the second hub never saw the callee")?;
    let nats = start_nats(&args.nats_server).await?;

    // Per run: a latency measurement (few callers) and a throughput one (many), for each of
    // local, remote and NATS, interleaved so that background load hits all alike.
    let mut lat: [Vec<Run>; 3] = Default::default();
    let mut thr: [Vec<Run>; 3] = Default::default();
    let (lc, tc) = (args.latency_concurrency.max(1), args.concurrency.max(1));
    for r in 0..args.runs {
        let row = [
            (
                hub_calls(&args, &local_bed, 0, lc)
                    .await
                    .context("local latency")?,
                hub_calls(&args, &local_bed, 0, tc)
                    .await
                    .context("local throughput")?,
            ),
            (
                hub_calls(&args, &remote_bed, 1, lc)
                    .await
                    .context("remote latency")?,
                hub_calls(&args, &remote_bed, 1, tc)
                    .await
                    .context("remote throughput")?,
            ),
            (
                nats_calls(&args, &nats.url, lc)
                    .await
                    .context("NATS latency")?,
                nats_calls(&args, &nats.url, tc)
                    .await
                    .context("NATS throughput")?,
            ),
        ];
        eprintln!(
            "run {}: local {:.0}/s p99 {:.0} µs (1 caller: {:.0} µs), remote {:.0}/s, nats {:.0}/s",
            r + 1,
            row[0].1.per_s,
            row[0].1.p99_us,
            row[0].0.p99_us,
            row[1].1.per_s,
            row[2].1.per_s,
        );
        for (i, (l, t)) in row.into_iter().enumerate() {
            lat[i].push(l);
            thr[i].push(t);
        }
    }
    drop(nats);
    local_bed.stop().await;
    remote_bed.stop().await;

    let med = |v: &[Run], f: fn(&Run) -> f64| median(v.iter().map(f).collect());
    println!();
    println!(
        "call round trip, {}-byte payload, median of {} runs of {:?} each",
        args.payload, args.runs, args.duration
    );
    println!(
        "{:<26} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "",
        format!("p50/{lc}"),
        format!("p99/{lc}"),
        format!("p50/{tc}"),
        format!("p99/{tc}"),
        "calls/s"
    );
    for (i, name) in [
        "hub, local (one hub)",
        "hub, remote (two hubs)",
        "NATS request-reply",
    ]
    .iter()
    .enumerate()
    {
        println!(
            "{name:<26} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>10.0}",
            med(&lat[i], |r| r.p50_us),
            med(&lat[i], |r| r.p99_us),
            med(&thr[i], |r| r.p50_us),
            med(&thr[i], |r| r.p99_us),
            med(&thr[i], |r| r.per_s),
        );
    }
    println!("(p50/N, p99/N: microseconds with N callers in flight; calls/s with {tc} callers on {} connections)", args.connections);
    let (local, remote, peer) = (&thr[0], &thr[1], &thr[2]);
    let detect = detection(args.cluster_runs).await?;
    let mut converge = Vec::new();
    for n in &args.converge_sizes {
        let n = (*n).max(2);
        converge.push((n, median(convergence(n, args.cluster_runs).await?)));
    }
    let detect_ms = median(detect);
    println!();
    println!(
        "cluster (gossip every {:?}, phi threshold {}), median of {} runs",
        defaults::GOSSIP_INTERVAL,
        defaults::PHI_THRESHOLD,
        args.cluster_runs
    );
    println!(
        "{:<28} {:>10.0} ms",
        "failure detection, 10 hubs", detect_ms
    );
    for (n, ms) in &converge {
        println!(
            "{:<28} {:>10.0} ms   ({:.0} ms per log2(N))",
            format!("convergence after join, {n}"),
            ms,
            ms / (*n as f64).log2()
        );
    }
    let converge_100 = converge
        .iter()
        .find(|(n, _)| *n == 100)
        .or(converge.last())
        .map(|(_, ms)| *ms)
        .unwrap_or(f64::NAN);
    let local_p99 = med(&lat[0], |r| r.p99_us);
    let local_s = med(local, |r| r.per_s);
    let nats_s = med(peer, |r| r.per_s);
    conditions.finish();
    println!();
    conditions.print();
    let busy = conditions.busy();
    println!(
        "goals: local p99 ({lc} caller) <= 200 µs: {}; >= 100,000 calls/s: {}; >= 2x NATS ({:.2}x): {}; detection <= 5 s: {}",
        verdict(local_p99 <= 200.0, busy),
        verdict(local_s >= 100_000.0, busy),
        local_s / nats_s,
        verdict(local_s >= 2.0 * nats_s, busy),
        verdict(detect_ms <= 5000.0, busy),
    );
    println!(
        "HUB-BENCH local_p99_us={:.0} local_calls_per_s={:.0} remote_p99_us={:.0} remote_calls_per_s={:.0} nats_calls_per_s={:.0} detect_10_ms={:.0} converge_100_ms={:.0}",
        local_p99,
        local_s,
        med(&lat[1], |r| r.p99_us),
        med(remote, |r| r.per_s),
        nats_s,
        detect_ms,
        converge_100
    );
    Ok(())
}
