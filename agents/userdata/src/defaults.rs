//! Paths, names and timeouts of the userdata service. Proposed for `tessera_common::paths`;
//! kept here until they move.

use std::time::Duration;

/// Where the validated configuration is written (mode 0600, atomically).
pub const USERDATA_FILE: &str = "/run/tessera/userdata.toml";
/// Private mount point of the NoCloud volume while it is read (mode 0700, removed after).
pub const NOCLOUD_MOUNT_DIR: &str = "/run/tessera/nocloud";
/// Where block devices are listed.
pub const SYS_CLASS_BLOCK: &str = "/sys/class/block";
/// Where their device nodes are.
pub const DEV_DIR: &str = "/dev";
/// File system label of a NoCloud volume (compared without regard to case).
pub const NOCLOUD_LABEL: &str = "CIDATA";

/// The EC2 instance metadata service.
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254";
/// Kernel argument that points the IMDS source elsewhere: `tessera.imds=http://10.0.2.2:8080`.
/// (Needs adding to `tessera_common::cmdline::KNOWN_KEYS`.)
pub const IMDS_KERNEL_ARG: &str = "imds";
/// `tessera.imds=off`: no IMDS source at all (bare metal, test images: no probing delay).
pub const IMDS_OFF: &str = "off";
/// Environment variable that does the same (host tests; the kernel argument wins).
pub const IMDS_ENDPOINT_ENV: &str = "TESSERA_IMDS_ENDPOINT";
/// Lifetime asked for an IMDSv2 session token.
pub const IMDS_TOKEN_TTL_SECONDS: u32 = 300;

/// First pass: how long the IMDS source keeps retrying before the pass moves on.
pub const IMDS_BUDGET: Duration = Duration::from_secs(3);
pub const IMDS_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const IMDS_IO_TIMEOUT: Duration = Duration::from_secs(2);
/// First pass: how long `tessera.config=<url>` is retried before the pass gives up on it.
pub const CONFIG_URL_BUDGET: Duration = Duration::from_secs(10);
pub const CONFIG_URL_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const CONFIG_URL_IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Backoff inside a source's budget (doubling, with jitter).
pub const RETRY_INITIAL: Duration = Duration::from_millis(100);
pub const RETRY_MAX: Duration = Duration::from_secs(1);
/// Backoff between whole passes once READY=1 was sent (doubling, with jitter).
pub const PASS_BACKOFF_INITIAL: Duration = Duration::from_secs(2);
pub const PASS_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Largest `meta-data` file read from a NoCloud volume.
pub const MAX_META_DATA: usize = 64 * 1024;
