//! `tessera vm run` without the multi-call binary, for working on this crate:
//! `cargo run -p tessera-qemu --example vm-run -- run --boot pxe --image out`.

use clap::Parser;

#[derive(clap::Parser)]
struct Cli {
    #[command(subcommand)]
    vm: tessera_qemu::VmCommand,
}

fn main() -> std::process::ExitCode {
    match tessera_qemu::run(Cli::parse().vm) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
