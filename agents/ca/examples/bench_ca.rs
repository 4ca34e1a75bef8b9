//! The CA benchmark without the multi-call binary:
//! `cargo run --release -p tessera-ca --example bench_ca -- [--count N] [--concurrency N] …`
//! (the same flags as `tessera bench ca`).

use clap::Parser;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    bench: tessera_ca::CaBenchArgs,
}

fn main() -> anyhow::Result<()> {
    tessera_ca::bench(Args::parse().bench)
}
