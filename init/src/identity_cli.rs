//! `tessera identity …`: the operator's view of the node identity's key handling. For now one
//! command, `tessera identity check [--mode kernel-rsa|ecdsa-p256]`, which proves on the
//! running kernel that a key can be generated, certified and used for TLS 1.3 without the
//! process being able to read it back (tessera_identity::keys::check).

use clap::{Subcommand, ValueEnum};
use std::process::ExitCode;
use tessera_identity::keys::{self, KeyMode};

#[derive(Subcommand)]
pub enum IdentityCommand {
    /// Generate a key, sign a certificate and a TLS 1.3 handshake through it, show it cannot
    /// be read back, and print the timings.
    Check {
        /// Key mode; default: what this kernel supports (kernel-rsa where it takes PKCS#8 RSA
        /// keys, else ecdsa-p256).
        #[arg(long, value_enum)]
        mode: Option<Mode>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Mode {
    /// RSA-2048 held by the kernel (asymmetric key); the process cannot read it.
    KernelRsa,
    /// ECDSA P-256 in a possessor-only user key, in locked memory only while signing.
    EcdsaP256,
}

impl From<Mode> for KeyMode {
    fn from(mode: Mode) -> KeyMode {
        match mode {
            Mode::KernelRsa => KeyMode::KernelRsa,
            Mode::EcdsaP256 => KeyMode::EcdsaP256,
        }
    }
}

pub fn run(cmd: IdentityCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        IdentityCommand::Check { mode } => Ok(check(mode.map(KeyMode::from))),
    }
}

/// Prints the report (its last line is `IDENTITY-CHECK key=value…`); on failure prints the
/// same line with `result=failed` and the reason, and exits 1.
fn check(mode: Option<KeyMode>) -> ExitCode {
    let mode = mode.unwrap_or_else(|| {
        let detected = KeyMode::detect_with_reason();
        println!("key mode {} (detected: {})", detected.mode, detected.reason);
        detected.mode
    });
    match keys::check(mode) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let reason = e.to_string().replace(['\n', '"'], " ");
            println!("IDENTITY-CHECK mode={mode} result=failed reason=\"{reason}\"");
            eprintln!("tessera identity check: {e}");
            ExitCode::FAILURE
        }
    }
}
