//! `tessera identity …`: the operator's view of the node identity.
//!
//! - `check [--mode kernel-rsa|ecdsa-p256]` proves on the running kernel that a key can be
//!   generated, certified and used for TLS 1.3 without the process being able to read it back
//!   (tessera_identity::keys::check).
//! - `status` asks certmgr what the node holds; `child-token` asks it for a one-time token
//!   (for piping only); `fetch` redeems a token through request_key(2); `keys` lists the
//!   Tessera keys this process can see; `scan` looks for leaked keys and tokens
//!   (tessera_certmgr).

use crate::{client, fetch, scan};
use clap::{Subcommand, ValueEnum};
use std::io::Read;
use std::path::PathBuf;
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
    /// What certmgr holds: mode (ca or standalone), state, the node certificate.
    Status {
        /// Print certmgr's JSON reply.
        #[arg(long)]
        json: bool,
    },
    /// Ask certmgr for a one-time token for a child identity and print it on stdout. For
    /// piping into the child only (`… | tessera identity fetch --token-fd 0`): never put a
    /// token in a file, an argument or the environment. Allowed for PID 1, for holders of an
    /// identity with the capability, and for the operator's root shell.
    ChildToken {
        subsystem: String,
        /// Default: the subsystem's name.
        agent_id: Option<String>,
        /// Capabilities to pass on (only ones the caller holds).
        #[arg(long, value_delimiter = ',')]
        capabilities: Vec<String>,
    },
    /// Redeem a one-time token read from a file descriptor through request_key(2): the
    /// kernel runs /sbin/request-key, which puts the certificate chain and the private key
    /// into this process's keyring. Prints the key ids and the certificate's subject.
    Fetch {
        /// Descriptor holding the token; default: $TESSERA_IDENTITY_FD.
        #[arg(long)]
        token_fd: Option<i32>,
        /// Then build the agent's mTLS server and client configurations from it (CA and CRL
        /// from certmgr) and run a TLS handshake between them: both sides sign with the
        /// kernel-held key and verify the other. Prints `IDENTITY-MTLS …`.
        #[arg(long)]
        mtls: bool,
    },
    /// The Tessera keys this process can see in the kernel keyring (/proc/keys), tokens
    /// shortened: `keyctl show` for a console without keyutils.
    Keys,
    /// Look through file systems and every process's environment and command line for
    /// private keys and, with --secrets-stdin, for the secrets (tokens) given on stdin, one
    /// per line. Prints one line per hit and `IDENTITY-SCAN files=… hits=…`; exits 1 on hits.
    Scan {
        /// Directories to walk (default /); /proc and /sys are skipped.
        roots: Vec<PathBuf>,
        /// Read secrets to look for from stdin.
        #[arg(long)]
        secrets_stdin: bool,
        /// Skip /proc/*/environ and /proc/*/cmdline.
        #[arg(long)]
        no_processes: bool,
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
        IdentityCommand::Status { json } => status(json),
        IdentityCommand::ChildToken {
            subsystem,
            agent_id,
            capabilities,
        } => {
            let agent_id = agent_id.unwrap_or_else(|| subsystem.clone());
            let token = client::child_token(
                &client::default_socket(),
                &subsystem,
                &agent_id,
                &capabilities,
            )?;
            println!("{}", token.as_str());
            Ok(ExitCode::SUCCESS)
        }
        IdentityCommand::Fetch { token_fd, mtls } => fetch_identity(token_fd, mtls),
        IdentityCommand::Keys => {
            let text = std::fs::read_to_string("/proc/keys")
                .map_err(|e| anyhow::anyhow!("cannot read /proc/keys: {e}"))?;
            print_keys(&text);
            Ok(ExitCode::SUCCESS)
        }
        IdentityCommand::Scan {
            roots,
            secrets_stdin,
            no_processes,
        } => run_scan(roots, secrets_stdin, !no_processes),
    }
}

fn status(json: bool) -> anyhow::Result<ExitCode> {
    let v = client::status(&client::default_socket())?;
    if json {
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    let field = |v: &serde_json::Value, k: &str| {
        v.get(k).and_then(|x| x.as_str()).unwrap_or("-").to_string()
    };
    println!("mode       {}", field(&v, "mode"));
    println!("state      {}", field(&v, "state"));
    println!("status     {}", field(&v, "reason"));
    println!("key mode   {}", field(&v, "key_mode"));
    println!("child keys {}", field(&v, "child_key_mode"));
    if let Some(node) = v.get("node").filter(|n| !n.is_null()) {
        println!("subject    {}", field(node, "subject"));
        println!("serial     {}", field(node, "serial"));
        println!("not after  {}", field(node, "not_after"));
        println!("renew at   {}", field(node, "renew_at"));
        println!("issuer     {}", field(node, "issuer"));
        let caps: Vec<&str> = node
            .get("capabilities")
            .and_then(|c| c.as_array())
            .map(|a| a.iter().filter_map(|c| c.as_str()).collect())
            .unwrap_or_default();
        println!("may issue  {}", caps.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

fn fetch_identity(token_fd: Option<i32>, mtls: bool) -> anyhow::Result<ExitCode> {
    let fd = fetch::token_fd(
        token_fd,
        std::env::var(crate::defaults::IDENTITY_FD_ENV).ok(),
    )?;
    let token = fetch::read_token_fd(fd)?;
    if mtls {
        let socket = crate::client::default_socket();
        let id = crate::agent_identity::AgentIdentity::obtain(&token, &socket)?;
        drop(token);
        return mtls_check(&id);
    }
    let fetched = fetch::fetch(&token)?;
    drop(token);
    let (private, private_type) = match &fetched.private_key {
        Some((k, t)) => (k.serial().to_string(), t.clone()),
        None => ("none".into(), "none".into()),
    };
    println!(
        "IDENTITY-FETCH cert_key={} private_key={private} private_type={private_type} serial={} subject=\"{}\"",
        fetched.cert_key.serial(),
        fetched.peer.serial,
        crate::ca_client::subject_text(&fetched.peer)
    );
    if let Ok(text) = std::fs::read_to_string("/proc/keys") {
        print_keys(&text);
    }
    Ok(ExitCode::SUCCESS)
}

/// A handshake between this identity's own server and client configurations.
fn mtls_check(id: &crate::agent_identity::AgentIdentity) -> anyhow::Result<ExitCode> {
    let shown = |p: &Option<tessera_identity::profile::PeerIdentity>| match p {
        Some(p) => format!(
            "{} caps={}",
            crate::ca_client::subject_text(p),
            p.capabilities.join(",")
        ),
        None => "none".into(),
    };
    let outcome = tessera_identity::tls::loopback_handshake(
        id.client_config()?,
        id.server_config()?,
        &id.dns_name(),
    )
    .map_err(|e| anyhow::anyhow!("the mTLS handshake with this identity failed: {e}"))?;
    println!(
        "IDENTITY-MTLS result=ok version={} crls={} name={} server_saw=\"{}\" client_saw=\"{}\"",
        outcome.version,
        id.trust.crls().len(),
        id.dns_name(),
        shown(&outcome.client_seen_by_server),
        shown(&outcome.server_seen_by_client),
    );
    Ok(ExitCode::SUCCESS)
}

fn print_keys(proc_keys: &str) {
    for k in fetch::tessera_keys(proc_keys) {
        println!(
            "{:>10} {} uid {:>5} {:<11} {}",
            k.serial, k.perm, k.uid, k.key_type, k.rest
        );
    }
}

fn run_scan(roots: Vec<PathBuf>, secrets_stdin: bool, processes: bool) -> anyhow::Result<ExitCode> {
    let mut patterns = scan::key_patterns();
    if secrets_stdin {
        // The secrets stay in a locked, zeroized buffer (the patterns die with the process).
        let mut input = crate::secret::SecretBytes::with_capacity(64 * 1024);
        let mut stdin = std::io::stdin().lock();
        while !input.spare_mut().is_empty() {
            match stdin.read(input.spare_mut())? {
                0 => break,
                n => input.advance(n),
            }
        }
        patterns.extend(scan::secret_patterns(&String::from_utf8_lossy(
            input.as_slice(),
        )));
    }
    let roots = if roots.is_empty() {
        vec![PathBuf::from("/")]
    } else {
        roots
    };
    let report = scan::scan(&roots, &patterns, processes);
    for (path, pattern) in &report.hits {
        println!("SCAN-HIT path={} pattern=\"{pattern}\"", path.display());
    }
    for path in &report.skipped {
        println!(
            "SCAN-SKIPPED path={} reason=\"this program\"",
            path.display()
        );
    }
    println!(
        "IDENTITY-SCAN files={} proc_files={} patterns={} hits={}",
        report.files,
        report.proc_files,
        patterns.len(),
        report.hits.len()
    );
    Ok(if report.hits.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
