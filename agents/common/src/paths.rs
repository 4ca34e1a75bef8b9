//! Every fixed path, socket name, kernel-argument name and default timeout of a node, in one
//! place, so that PID 1, the agents, the CLI and the image builder agree on them.

use std::time::Duration;

/// Where service manifests live in the image.
pub const SERVICES_DIR: &str = "/etc/tessera/services";
/// The list of kernel modules PID 1 loads at boot, one module name per line.
pub const BOOT_MODULES_FILE: &str = "/etc/tessera/modules.boot";
/// Root of the kernel modules tree in the image (`<dir>/<release>/modules.dep`).
pub const MODULES_DIR: &str = "/lib/modules";
/// Runtime state of PID 1 (tmpfs).
pub const RUNTIME_DIR: &str = "/run/tessera";
/// File name of the control socket inside the runtime directory.
pub const CONTROL_SOCKET_NAME: &str = "control.sock";
/// Directory (inside the runtime directory) of the per-service sd_notify sockets.
pub const NOTIFY_DIR_NAME: &str = "notify";
/// Environment variable the CLI reads to find a control socket other than the node's.
pub const CONTROL_SOCKET_ENV: &str = "TESSERA_CONTROL";
/// The cgroup v2 mount point and the sub-tree PID 1 puts services in.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
pub const CGROUP_SERVICES: &str = "/sys/fs/cgroup/services";
/// The container agent's API socket (root only): the console CLI and the node API use it.
pub const CONTAINER_SOCKET: &str = "/run/tessera/container.sock";
/// The firewall service's API socket (root only): the CLI and the container agent use it.
pub const FIREWALL_SOCKET: &str = "/run/tessera/firewall.sock";
/// The multi-call binary inside the image.
pub const TESSERA_BIN: &str = "/sbin/tessera";

/// Hostname used when neither `tessera.hostname=` nor user-data names one.
pub const DEFAULT_HOSTNAME: &str = "tessera";

/// Prefix of the one machine-readable line printed when every service has settled.
pub const READY_LINE_PREFIX: &str = "TESSERA-READY";
/// Prefix of the line printed as PID 1 starts.
pub const INIT_LINE_PREFIX: &str = "TESSERA-INIT";
/// Prefix of the line printed just before reboot(2) is called.
pub const SHUTDOWN_LINE_PREFIX: &str = "TESSERA-SHUTDOWN";

/// Default grace period between the stop signal and SIGKILL.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(5);
/// Grace period for processes left over after all services stopped.
pub const LEFTOVER_GRACE: Duration = Duration::from_secs(2);
/// Default restart intensity: at most this many restarts ...
pub const DEFAULT_MAX_RESTARTS: u32 = 5;
/// ... within this period.
pub const DEFAULT_RESTART_PERIOD: Duration = Duration::from_secs(10);
/// Default first restart delay, doubled on every restart up to the maximum.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(100);
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Default number of log events the in-memory ring keeps.
pub const DEFAULT_LOG_RING_EVENTS: usize = 4096;
/// Longest log line kept; longer lines are cut and marked as truncated.
pub const MAX_LOG_LINE: usize = 16 * 1024;

/// Control socket path inside a runtime directory.
pub fn control_socket(runtime_dir: &std::path::Path) -> std::path::PathBuf {
    runtime_dir.join(CONTROL_SOCKET_NAME)
}

/// The control socket the CLI should use: `$TESSERA_CONTROL` or the node's.
pub fn default_control_socket() -> std::path::PathBuf {
    match std::env::var_os(CONTROL_SOCKET_ENV) {
        Some(p) if !p.is_empty() => p.into(),
        _ => control_socket(std::path::Path::new(RUNTIME_DIR)),
    }
}
