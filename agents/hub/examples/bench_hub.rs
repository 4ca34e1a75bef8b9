//! The hub benchmark without the multi-call binary:
//! `cargo run --release -p tessera-hub --example bench_hub -- [--runs N] [--concurrency N] …`
//! (the same flags as `tessera bench hub`).

use clap::Parser;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    bench: tessera_hub::bench::HubBenchArgs,
}

fn main() -> anyhow::Result<()> {
    tessera_hub::bench::run(Args::parse().bench)
}
