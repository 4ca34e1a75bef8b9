//! The two ways the supervisor runs: as PID 1 of a node (early boot, then the supervisor,
//! then reboot(2)) and as a child subreaper on a host (tests, development). PID 1 never exits:
//! a panic is logged and the process falls back to reaping orphans forever, so the kernel
//! does not panic and the console stays usable.

use crate::supervisor::{logs::LogHub, Options, Supervisor};
use crate::{boot, shutdown};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_common::control::ShutdownMode;
use tessera_common::paths;

/// PATH for services and the console.
pub const DEFAULT_PATH: &str = "/sbin:/bin:/usr/sbin:/usr/bin";

fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        // Straight to fd 2: the hook must work even when the log hub is what broke.
        let _ = writeln!(std::io::stderr(), "tessera init: internal error: {info}; PID 1 keeps running (reaping only). Please report this.");
    }));
}

/// Entry point when the kernel runs us as /init.
pub fn main() -> ! {
    let started = Instant::now();
    install_panic_hook();
    let hub = Arc::new(LogHub::new(
        paths::DEFAULT_LOG_RING_EVENTS,
        Box::new(std::io::stdout()),
    ));
    hub.console_line(&format!(
        "{} uptime_ms={}",
        paths::INIT_LINE_PREFIX,
        crate::supervisor::uptime_ms()
    ));
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let boot = boot::run(&hub);
        let opts = Options {
            services_dir: paths::SERVICES_DIR.into(),
            runtime_dir: paths::RUNTIME_DIR.into(),
            cgroup_base: Some(paths::CGROUP_ROOT.into()),
            pid1: true,
            started,
            problems: boot.problems,
            service_path: DEFAULT_PATH.into(),
        };
        run_supervisor(opts, hub.clone())
    }));
    match outcome {
        Ok(Ok(mode)) => {
            shutdown::finish(mode, true, &hub);
            idle_forever()
        }
        Ok(Err(e)) => {
            hub.console_line(&format!(
                "tessera init: cannot run the supervisor: {e}; PID 1 keeps reaping"
            ));
            idle_forever()
        }
        Err(_) => idle_forever(),
    }
}

/// Host mode: `tessera init --subreaper`. Returns when a shutdown completed.
pub fn subreaper_main(services_dir: PathBuf, runtime_dir: PathBuf) -> anyhow::Result<()> {
    let started = Instant::now();
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        anyhow::bail!(
            "cannot become a child subreaper: {}",
            std::io::Error::last_os_error()
        );
    }
    std::fs::create_dir_all(&runtime_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create the runtime directory {}: {e}",
            runtime_dir.display()
        )
    })?;
    let hub = Arc::new(LogHub::new(
        paths::DEFAULT_LOG_RING_EVENTS,
        Box::new(std::io::stdout()),
    ));
    let opts = Options {
        services_dir,
        runtime_dir,
        cgroup_base: None,
        pid1: false,
        started,
        problems: Vec::new(),
        service_path: std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.into()),
    };
    let mode = run_supervisor(opts, hub.clone())?;
    shutdown::finish(mode, false, &hub);
    Ok(())
}

fn run_supervisor(opts: Options, hub: Arc<LogHub>) -> std::io::Result<ShutdownMode> {
    // One thread: PID 1 stays small, and there is no thread to race the reaper.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    Ok(runtime.block_on(Supervisor::new(opts, hub).run()))
}

/// The last resort of PID 1: keep reaping whatever exits, forever.
pub fn idle_forever() -> ! {
    loop {
        if waitpid(Pid::from_raw(-1), None).is_err() {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}
