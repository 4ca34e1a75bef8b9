//! The `userdata` service: passes over the sources until one configures the node, or until
//! there is nothing left worth asking again.
//!
//! Never hangs the boot: every network source has a time budget per pass (IMDS 3 s, the
//! `tessera.config` URL 10 s, each request bounded by the time left), so the first pass ends
//! in bounded time, and READY=1 is sent right after it whatever it found. Then:
//!
//! - configured → the configuration is written to /run/tessera/userdata.toml (0600, temp file +
//!   fsync + rename), `STATUS=config from <source>`, exit 0. On a node the one-time token is
//!   not written there: it goes to the kernel keyring (a possessor-only `user` key
//!   `tessera:bootstrap-token` in root's user keyring, which certmgr reads, redeems and
//!   invalidates), and the file says `token = "keyring:tessera:bootstrap-token"` instead;
//! - no configuration anywhere, every source sure of it → `STATUS=standalone (no user-data)`,
//!   nothing written, exit 0;
//! - a bad configuration, a configured source that could not be fetched, or a metadata
//!   service that did not answer → the reason in `STATUS=` and as an error event, and the
//!   service stays up, running whole passes again with backoff (2 s doubling to 60 s, with
//!   jitter) until one succeeds — then it writes the file and exits as above. A repeated
//!   failure is logged at debug level, so the console is not flooded.

use crate::cmdline::CmdlineSource;
use crate::defaults;
use crate::events::Events;
use crate::http::HttpUrl;
use crate::imds::ImdsSource;
use crate::nocloud::NoCloudSource;
use crate::retry::{Backoff, RetryPolicy};
use crate::source::{error_fields, run_pass, Fetched, Outcome, Source, SourceError};
use anyhow::Context;
use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tessera_common::cmdline::KernelArgs;
use tessera_common::log::Level;
use tessera_common::notify;

/// Everything the service reads from the node, so that tests can point it elsewhere.
pub struct ServiceOptions {
    pub cmdline: KernelArgs,
    pub sys_block: PathBuf,
    pub dev_dir: PathBuf,
    pub mount_dir: PathBuf,
    /// Where the validated configuration goes.
    pub output: PathBuf,
    /// The metadata endpoint (`None`: the IMDS source is off), or why the override given is
    /// unusable.
    pub imds_endpoint: Result<Option<HttpUrl>, String>,
    pub imds_retry: RetryPolicy,
    pub config_retry: RetryPolicy,
    pub pass_backoff_initial: Duration,
    pub pass_backoff_max: Duration,
    /// Stop after this many passes even if retrying is worthwhile (tests); `None` on a node.
    pub max_passes: Option<u32>,
    /// The keyring (a serial or a `KEY_SPEC_*` value) that receives the bootstrap token in
    /// place of the file: root's user keyring on a node; `None` keeps it in the file.
    pub token_keyring: Option<i32>,
}

impl ServiceOptions {
    /// The node's: /proc/cmdline, /sys/class/block, /dev, /run/tessera.
    pub fn for_node() -> std::io::Result<Self> {
        let text = std::fs::read_to_string("/proc/cmdline")?;
        let cmdline = KernelArgs::parse(&text);
        let env = std::env::var(defaults::IMDS_ENDPOINT_ENV).ok();
        let mut opts = Self::with_cmdline(cmdline, env.as_deref());
        opts.token_keyring = Some(token_handoff::USER_KEYRING);
        Ok(opts)
    }

    /// Node defaults with this command line (and `$TESSERA_IMDS_ENDPOINT`, if given).
    pub fn with_cmdline(cmdline: KernelArgs, imds_env: Option<&str>) -> Self {
        let imds_endpoint = imds_endpoint(&cmdline, imds_env);
        ServiceOptions {
            cmdline,
            sys_block: defaults::SYS_CLASS_BLOCK.into(),
            dev_dir: defaults::DEV_DIR.into(),
            mount_dir: defaults::NOCLOUD_MOUNT_DIR.into(),
            output: defaults::USERDATA_FILE.into(),
            imds_endpoint,
            imds_retry: RetryPolicy {
                budget: defaults::IMDS_BUDGET,
                initial: defaults::RETRY_INITIAL,
                max: defaults::RETRY_MAX,
                connect_timeout: defaults::IMDS_CONNECT_TIMEOUT,
                io_timeout: defaults::IMDS_IO_TIMEOUT,
            },
            config_retry: RetryPolicy {
                budget: defaults::CONFIG_URL_BUDGET,
                initial: defaults::RETRY_INITIAL,
                max: defaults::RETRY_MAX,
                connect_timeout: defaults::CONFIG_URL_CONNECT_TIMEOUT,
                io_timeout: defaults::CONFIG_URL_IO_TIMEOUT,
            },
            pass_backoff_initial: defaults::PASS_BACKOFF_INITIAL,
            pass_backoff_max: defaults::PASS_BACKOFF_MAX,
            max_passes: None,
            token_keyring: None,
        }
    }

    /// The sources in the order they are asked: command line, NoCloud, IMDS.
    pub fn sources(&self) -> Vec<Box<dyn Source + '_>> {
        let imds: Option<Box<dyn Source>> = match &self.imds_endpoint {
            Ok(Some(endpoint)) => Some(Box::new(ImdsSource {
                endpoint: endpoint.clone(),
                retry: self.imds_retry,
                token_ttl_seconds: defaults::IMDS_TOKEN_TTL_SECONDS,
            })),
            Ok(None) => None,
            Err(reason) => Some(Box::new(Unusable {
                name: "imds",
                reason: reason.clone(),
            })),
        };
        let mut sources: Vec<Box<dyn Source>> = vec![
            Box::new(CmdlineSource {
                args: self.cmdline.clone(),
                retry: self.config_retry,
            }),
            Box::new(NoCloudSource {
                sys_block: self.sys_block.clone(),
                dev_dir: self.dev_dir.clone(),
                mount_dir: self.mount_dir.clone(),
            }),
        ];
        sources.extend(imds);
        sources
    }
}

/// `tessera.imds=` wins over `$TESSERA_IMDS_ENDPOINT`, which wins over 169.254.169.254.
/// `off` turns the IMDS source off (bare metal, test images): `Ok(None)`.
pub fn imds_endpoint(args: &KernelArgs, env: Option<&str>) -> Result<Option<HttpUrl>, String> {
    let (given, origin) = match (args.get(defaults::IMDS_KERNEL_ARG), env) {
        (Some(v), _) => (v, "kernel argument tessera.imds"),
        (None, Some(v)) if !v.is_empty() => (v, defaults::IMDS_ENDPOINT_ENV),
        _ => (defaults::IMDS_ENDPOINT, "default"),
    };
    if given.eq_ignore_ascii_case(defaults::IMDS_OFF) {
        return Ok(None);
    }
    HttpUrl::parse(given).map(Some).map_err(|e| {
        format!("bad metadata endpoint ({origin}): {e}; give http://host:port or \"off\"")
    })
}

/// A source whose settings are wrong: it fails every pass with the reason.
struct Unusable {
    name: &'static str,
    reason: String,
}

impl Source for Unusable {
    fn name(&self) -> &str {
        self.name
    }
    fn fetch(&self, _: &Events) -> Result<Option<Fetched>, SourceError> {
        Err(SourceError::Failed(self.reason.clone()))
    }
}

/// Entry point of `tessera agent userdata`.
pub fn run_service() -> anyhow::Result<()> {
    let events = Events::stdout();
    let opts = ServiceOptions::for_node().context("cannot read /proc/cmdline")?;
    let mut send = |assignments: &[String]| match notify::notify(assignments) {
        Ok(()) => {}
        // Run by hand, not by the supervisor: nobody to tell.
        Err(notify::NotifyError::NoSocket) => {}
        Err(e) => events.warn(
            "cannot notify the supervisor",
            &[("reason", e.to_string().into())],
        ),
    };
    run(&opts, &events, &mut send)?;
    Ok(())
}

/// The service loop; `notify` receives the sd_notify assignments. Returns the last outcome.
pub fn run(
    opts: &ServiceOptions,
    events: &Events,
    notify: &mut dyn FnMut(&[String]),
) -> anyhow::Result<Outcome> {
    let sources = opts.sources();
    let names: Vec<&str> = sources.iter().map(|s| s.name()).collect();
    events.info(
        "looking for user-data",
        &[("sources", names.join(", ").into())],
    );
    let mut backoff = Backoff::new(opts.pass_backoff_initial, opts.pass_backoff_max);
    let mut ready_sent = false;
    let mut last_status = String::new();
    let mut passes = 0;
    loop {
        passes += 1;
        let outcome = run_pass(&sources, events, passes > 1);
        let mut status = outcome.status();
        let mut written = Ok(());
        if let Outcome::Configured { source, fetched } = &outcome {
            written = write_config(&opts.output, source, fetched, opts.token_keyring);
            if let Err(e) = &written {
                status =
                    format!("config from {source} could not be written: {e:#}").replace('\n', " ");
            }
        }
        report(
            events,
            &outcome,
            &status,
            status == last_status,
            &opts.output,
        );
        let mut message = Vec::new();
        if !ready_sent {
            message.push("READY=1".to_string());
            ready_sent = true;
        }
        message.push(format!("STATUS={status}"));
        notify(&message);
        written?;
        let stop = opts.max_passes.is_some_and(|max| passes >= max);
        if !outcome.worth_retrying() || stop {
            return Ok(outcome);
        }
        last_status = status;
        let delay = backoff.next_delay();
        events.debug(
            "next pass",
            &[("delay_ms", (delay.as_millis() as u64).into())],
        );
        std::thread::sleep(delay);
    }
}

fn report(events: &Events, outcome: &Outcome, status: &str, repeated: bool, output: &Path) {
    // The same failure again is not news: keep it off the console.
    let level = |l: Level| if repeated { Level::Debug } else { l };
    match outcome {
        Outcome::Configured { source, fetched } => {
            let mut fields: Vec<(&str, Value)> = vec![
                ("source", source.clone().into()),
                ("detail", fetched.detail.clone().into()),
                ("path", output.display().to_string().into()),
            ];
            if let Some(h) = &fetched.config.node.hostname {
                fields.push(("hostname", h.clone().into()));
            }
            if let Some(ca) = &fetched.config.ca {
                fields.push(("ca", ca.url.clone().into()));
            }
            events.info("node configured", &fields);
            events.debug(
                "configuration",
                &[("summary", fetched.config.summary().into())],
            );
        }
        Outcome::Broken { source, error } => {
            let msg = match error {
                SourceError::Invalid { .. } => "invalid user-data",
                _ => "cannot get user-data",
            };
            let mut fields = error_fields(source, error);
            fields.push(("status", status.into()));
            events.emit(level(Level::Error), msg, &fields);
        }
        Outcome::Standalone { unanswered } => {
            let mut fields: Vec<(&str, Value)> = vec![("status", status.into())];
            if !unanswered.is_empty() {
                let (names, reasons): (Vec<&str>, Vec<&str>) = unanswered
                    .iter()
                    .map(|(s, r)| (s.as_str(), r.as_str()))
                    .unzip();
                fields.push(("source", names.join(", ").into()));
                fields.push(("reason", reasons.join("; ").into()));
            }
            events.emit(level(Level::Info), "no user-data: standalone node", &fields);
        }
    }
}

/// Writes the configuration as a v1 document with a header saying where it came from. With
/// `token_keyring`, the one-time token goes to the kernel keyring instead of the file.
fn write_config(
    path: &Path,
    source: &str,
    fetched: &Fetched,
    token_keyring: Option<i32>,
) -> anyhow::Result<()> {
    let mut config = fetched.config.clone();
    let mut where_token = "Holds the one-time token: mode 0600.";
    if let (Some(ca), Some(ring)) = (config.ca.as_mut(), token_keyring) {
        token_handoff::store(ring, ca.token.expose().as_bytes()).with_context(|| {
            format!(
                "cannot hand the bootstrap token to certmgr in the kernel keyring (`{}`)",
                token_handoff::TOKEN_DESC
            )
        })?;
        ca.token = crate::values::Secret::new(token_handoff::TOKEN_IN_KEYRING);
        where_token =
            "The one-time token is in the kernel keyring (tessera:bootstrap-token), not here.";
    }
    let text = format!(
        "# Node configuration from {source} ({}), validated by `tessera agent userdata`.\n# Schema version 1: agents/userdata/SCHEMA.md. {where_token}\n{}",
        fetched.detail.replace('\n', " "),
        config.to_toml()
    );
    write_atomically(path, text.as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The bootstrap token's way to certmgr: never a file, argv or the environment, but a `user`
/// key that only possessors may see, read, update, find or invalidate. On a node it goes to
/// root's user keyring, which every root service possesses through its default session (the
/// user-session keyring links it) and nobody else can reach; certmgr invalidates it once the
/// token is redeemed or refused. Raw add_key(2)/keyctl(2): this crate depends on no identity
/// code.
pub mod token_handoff {
    /// `KEY_SPEC_USER_KEYRING`.
    pub const USER_KEYRING: i32 = -4;
    /// The key's description.
    pub const TOKEN_DESC: &str = "tessera:bootstrap-token";
    /// What `ca.token` says in the written file when the token is in the keyring.
    pub const TOKEN_IN_KEYRING: &str = "keyring:tessera:bootstrap-token";
    /// Possessor: view, read, write, search, setattr; user, group, other: nothing.
    const PERM: u32 = 0x2f00_0000;
    const KEYCTL_SETPERM: libc::c_ulong = 5;

    /// Adds (or updates) the token key in `keyring` and restricts it to possessors.
    pub fn store(keyring: i32, token: &[u8]) -> std::io::Result<i32> {
        let key_type = c"user";
        let desc = c"tessera:bootstrap-token";
        // SAFETY: two NUL-terminated static strings, and a payload pointer and length from
        // one live slice.
        let serial = unsafe {
            libc::syscall(
                libc::SYS_add_key,
                key_type.as_ptr(),
                desc.as_ptr(),
                token.as_ptr(),
                token.len(),
                keyring as libc::c_long,
            )
        };
        if serial < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a key serial and an integer mask, no pointers.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                KEYCTL_SETPERM,
                serial,
                PERM as libc::c_ulong,
            )
        };
        if ret < 0 {
            return Err(std::io::Error::last_os_error());
        }
        i32::try_from(serial).map_err(|_| std::io::Error::other("key serial out of range"))
    }
}

/// Temp file in the same directory (created with `mode`), write, fsync, rename over `path`,
/// fsync the directory: readers see the old file or the whole new one, never a part.
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&tmp)?;
        // The umask only takes bits away; make the mode exact anyway.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn atomic_write_replaces_the_file_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/userdata.toml");
        write_atomically(&path, b"one", 0o600).unwrap();
        write_atomically(&path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 1, "no temp file left: {left:?}");
    }

    #[test]
    fn the_token_goes_to_the_keyring_and_not_into_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("userdata.toml");
        // A scratch keyring under this process's keyring stands in for root's user keyring.
        // SAFETY: add_key of an empty keyring named by a static string into the process keyring.
        let ring = unsafe {
            libc::syscall(
                libc::SYS_add_key,
                c"keyring".as_ptr(),
                c"userdata-test-handoff".as_ptr(),
                std::ptr::null::<u8>(),
                0usize,
                -2 as libc::c_long,
            )
        } as i32;
        assert!(ring > 0, "{}", std::io::Error::last_os_error());
        let text = "version = 1\n[ca]\nurl = \"https://10.0.2.2:8443\"\nfingerprint = \"sha256:2b318f01675311f8c277886ba374ff2a250f1bbda0bfd7061b91f006a4082432\"\ntoken = \"tok-SECRET\"\n";
        let fetched = Fetched {
            config: crate::schema::parse(text.as_bytes()).unwrap(),
            detail: "test".into(),
            overlay: None,
        };
        write_config(&path, "test", &fetched, Some(ring)).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert!(!written.contains("tok-SECRET"), "{written}");
        assert!(
            written.contains(token_handoff::TOKEN_IN_KEYRING),
            "{written}"
        );
        let config = crate::load(&path).unwrap().unwrap();
        assert_eq!(
            config.ca.unwrap().token.expose(),
            token_handoff::TOKEN_IN_KEYRING
        );
        // The key is there, possessor-only, with the token.
        // SAFETY: KEYCTL_SEARCH (10) with two NUL-terminated strings and integers.
        let key = unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                10,
                ring as libc::c_long,
                c"user".as_ptr(),
                c"tessera:bootstrap-token".as_ptr(),
                0,
            )
        };
        assert!(key > 0, "{}", std::io::Error::last_os_error());
        let mut buf = [0u8; 64];
        // SAFETY: KEYCTL_READ (11) into a live buffer of its length.
        let n = unsafe { libc::syscall(libc::SYS_keyctl, 11, key, buf.as_mut_ptr(), buf.len()) };
        assert_eq!(&buf[..n as usize], b"tok-SECRET");
        // SAFETY: KEYCTL_INVALIDATE (21) of the scratch keyring, integers only.
        unsafe { libc::syscall(libc::SYS_keyctl, 21, ring as libc::c_long) };
    }

    #[test]
    fn imds_endpoint_override_order() {
        let none = KernelArgs::parse("");
        assert_eq!(
            imds_endpoint(&none, None).unwrap().unwrap().to_string(),
            "http://169.254.169.254/"
        );
        assert_eq!(
            imds_endpoint(&none, Some("http://127.0.0.1:9"))
                .unwrap()
                .unwrap()
                .port,
            9
        );
        let mut arg = KernelArgs::default();
        arg.values
            .insert("imds".into(), "http://10.0.2.2:8080".into());
        assert_eq!(
            imds_endpoint(&arg, Some("http://127.0.0.1:9"))
                .unwrap()
                .unwrap()
                .port,
            8080
        );
        arg.values.insert("imds".into(), "off".into());
        assert_eq!(imds_endpoint(&arg, Some("http://127.0.0.1:9")), Ok(None));
        arg.values.insert("imds".into(), "https://x".into());
        assert!(imds_endpoint(&arg, None)
            .unwrap_err()
            .contains("kernel argument tessera.imds"));
    }
}
