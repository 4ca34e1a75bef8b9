//! Errors of the VM runner. Each message names the cause and, where there is one, the fix.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{path} not found: run `make image` (or `tessera image build --out {dir}`) first", path = .path.display(), dir = .image_dir.display())]
    ImageFileMissing { path: PathBuf, image_dir: PathBuf },

    #[error("QEMU (`{binary}`) not found: install it with `apt-get install qemu-system-x86`", binary = .binary.display())]
    QemuMissing { binary: PathBuf },

    #[error("UEFI firmware {path} not found: install it with `apt-get install ovmf` (disk boot needs OVMF)", path = .path.display())]
    FirmwareMissing { path: PathBuf },

    #[error("iPXE ROM {path} not found: install it with `apt-get install ipxe-qemu` (PXE boot needs the NIC's iPXE ROM)", path = .path.display())]
    IpxeRomMissing { path: PathBuf },

    #[error("disk boot cannot take extra kernel arguments ({args}): the command line is baked into the unified kernel image on disk.qcow2; use `--boot kernel` or `--boot pxe`, or rebuild the image with these arguments")]
    AppendInDiskMode { args: String },

    #[error("kernel argument `{arg}` cannot be passed through iPXE: {reason}; use `--boot kernel` for it")]
    UnsafeIpxeArg { arg: String, reason: &'static str },

    #[error("kernel command line is {len} bytes, over the {max}-byte limit of x86 Linux: pass fewer or shorter `--append` arguments")]
    CmdlineTooLong { len: usize, max: usize },

    #[error("data disk {path} not found: create it first, e.g. `truncate -s 1G {path}` (raw) or `qemu-img create -f qcow2 {path} 1G`", path = .path.display())]
    DiskMissing { path: PathBuf },

    #[error(
        "host port {port} is forwarded more than once: give each `--forward` its own host port"
    )]
    DuplicateForward { port: u16 },

    #[error("network: {reason}")]
    BadNetwork { reason: String },

    #[error("{memory_mb} MB of memory and {cpus} CPUs cannot boot a guest: give at least 64 MB and 1 CPU")]
    BadResources { memory_mb: u32, cpus: u32 },

    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot start {binary}: {source}", binary = .binary.display())]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("timed out after {waited:?} waiting for `{needle}` on the console; last console lines:\n{tail}")]
    Timeout {
        needle: String,
        waited: Duration,
        tail: String,
    },

    #[error("kernel panic while waiting for `{needle}`; console around the panic:\n{tail}")]
    KernelPanic { needle: String, tail: String },

    #[error(
        "QEMU exited ({status}) while waiting for `{needle}`{stderr}; last console lines:\n{tail}"
    )]
    Exited {
        needle: String,
        status: String,
        stderr: String,
        tail: String,
    },

    #[error("QEMU still running after {waited:?}; last console lines:\n{tail}")]
    ExitTimeout { waited: Duration, tail: String },

    #[error("`{command}` failed in the guest with exit status {status}; its output:\n{output}")]
    CommandFailed {
        command: String,
        status: i32,
        output: String,
    },

    #[error("cannot type into the console: QEMU's input is closed ({source}); the VM has probably exited")]
    ConsoleClosed {
        #[source]
        source: std::io::Error,
    },
}

impl VmError {
    pub(crate) fn io(action: impl Into<String>, source: std::io::Error) -> Self {
        VmError::Io {
            action: action.into(),
            source,
        }
    }
}
