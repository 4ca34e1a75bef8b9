//! `tessera image` without the rest of the multi-call binary, for working on the builder:
//! `cargo run -p tessera-image --example tessera-image -- build --tessera-bin /bin/busybox`.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "tessera-image",
    about = "tessera image: build the node image, pin its packages"
)]
struct Cli {
    #[command(subcommand)]
    command: tessera_image::ImageCommand,
}

fn main() -> std::process::ExitCode {
    match tessera_image::run(Cli::parse().command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
