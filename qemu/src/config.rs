//! What a VM should look like: boot mode, image, resources, extra disks and port forwards.
//! Plain data with defaults; nothing here touches the file system or starts processes.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::VmError;

/// Kernel arguments every boot mode starts with. They match the `kernel` line of the image's
/// `pxe/boot.ipxe` and the command line baked into the disk image's unified kernel image,
/// so that the three modes boot the same way.
pub const BASE_CMDLINE: &str = "console=ttyS0 quiet panic=-1";

/// Longest kernel command line x86 Linux accepts (`COMMAND_LINE_SIZE`, including the NUL).
pub const MAX_CMDLINE: usize = 2047;

/// Where Debian's `ovmf` package installs the UEFI firmware (4 MiB flash layout).
pub const DEFAULT_OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const DEFAULT_OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// The QEMU binary looked up in `PATH` unless the configuration names another one.
pub const DEFAULT_QEMU: &str = "qemu-system-x86_64";

/// The conditions of a benchmark run that boots VMs: load, CPU, and the first line of
/// `qemu-system-x86_64 --version` (or why there is none).
pub fn vm_conditions() -> tessera_common::bench_conditions::Conditions {
    let version = std::process::Command::new(DEFAULT_QEMU)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| format!("unknown ({DEFAULT_QEMU} --version failed)"));
    tessera_common::bench_conditions::Conditions::before(Some(version))
}

/// The iPXE ROM QEMU loads for a virtio-net NIC (from Debian's `ipxe-qemu`); PXE boot needs it.
pub const IPXE_VIRTIO_ROM: &str = "/usr/lib/ipxe/qemu/efi-virtio.rom";

/// How the guest is booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum BootMode {
    /// QEMU loads `pxe/vmlinuz` and `pxe/initramfs.img` directly (fastest, for development).
    Kernel,
    /// Real network boot: the NIC's iPXE ROM fetches `pxe/boot.ipxe` over QEMU's TFTP server.
    Pxe,
    /// UEFI (OVMF) boots the unified kernel image on `disk.qcow2`, as a cloud VM would.
    Disk,
}

impl BootMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BootMode::Kernel => "kernel",
            BootMode::Pxe => "pxe",
            BootMode::Disk => "disk",
        }
    }
}

impl fmt::Display for BootMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// QEMU machine type. Measured under TCG (median of 5): pc reaches /init of a busybox
/// initramfs ~0.1 s sooner, but q35 brings the real image to TESSERA-READY 0.2-0.35 s sooner
/// (2.52 s vs 2.88 s wall, direct kernel), and it is the modern chipset: the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Machine {
    #[default]
    Q35,
    Pc,
}

impl Machine {
    pub fn as_str(self) -> &'static str {
        match self {
            Machine::Q35 => "q35",
            Machine::Pc => "pc",
        }
    }
}

/// CPU emulation. KVM does not work on the build machines, so TCG is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Accel {
    #[default]
    Tcg,
    Kvm,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

/// A host TCP port forwarded to a guest port through QEMU's user networking.
/// The host side binds 127.0.0.1 only, so a test VM is never reachable from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortForward {
    pub host: u16,
    pub guest: u16,
}

impl FromStr for PortForward {
    type Err = String;

    /// Parses `HOST:GUEST`, e.g. `8443:443`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, guest) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}` is not HOST:GUEST (e.g. 8443:443)"))?;
        let port = |p: &str, side: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|n| *n != 0)
                .ok_or_else(|| format!("`{p}` in `{s}` is not a {side} TCP port (1-65535)"))
        };
        Ok(PortForward {
            host: port(host, "host")?,
            guest: port(guest, "guest")?,
        })
    }
}

impl fmt::Display for PortForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.guest)
    }
}

/// How the VM's NIC is connected.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Network {
    /// QEMU's user-mode network (slirp): DHCP gives 10.0.2.15, the host is 10.0.2.2; port
    /// forwards and PXE's TFTP server live here.
    #[default]
    User,
    /// A tap device the caller made (e.g. in a network namespace, on a bridge with other VMs'
    /// taps): QEMU attaches to `ifname` without scripts, and is started inside `netns` with
    /// `ip netns exec` when one is named. Give each VM on one bridge its own `mac`.
    Tap {
        netns: Option<String>,
        ifname: String,
        mac: Option<String>,
    },
}

/// Checks a MAC address written as six hex pairs separated by `:`.
pub fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Everything needed to start one VM.
#[derive(Debug, Clone, PartialEq)]
pub struct VmConfig {
    pub boot: BootMode,
    /// Output directory of `tessera image build` (holds `pxe/` and `disk.qcow2`).
    pub image_dir: PathBuf,
    pub memory_mb: u32,
    pub cpus: u32,
    /// Extra kernel arguments (kernel and pxe modes only; disk mode refuses them).
    pub append: Vec<String>,
    /// Extra data disks, attached as virtio disks in order; `.qcow2` files are qcow2, any
    /// other name is raw.
    pub disks: Vec<PathBuf>,
    pub forwards: Vec<PortForward>,
    /// The NIC's network: user-mode (default) or a tap device.
    pub network: Network,
    /// File the console is appended to as it arrives.
    pub log_file: Option<PathBuf>,
    /// Shown as QEMU's process name and in messages.
    pub name: String,
    pub machine: Machine,
    pub accel: Accel,
    pub qemu_binary: PathBuf,
    pub ovmf_code: PathBuf,
    /// Template of the UEFI variable store; each VM gets its own writable copy.
    pub ovmf_vars: PathBuf,
    /// Arguments appended verbatim to QEMU's command line (escape hatch for tests).
    pub extra_qemu_args: Vec<String>,
}

impl VmConfig {
    pub fn new(boot: BootMode, image_dir: impl Into<PathBuf>) -> Self {
        VmConfig {
            boot,
            image_dir: image_dir.into(),
            memory_mb: 512,
            cpus: 1,
            append: Vec::new(),
            disks: Vec::new(),
            forwards: Vec::new(),
            network: Network::User,
            log_file: None,
            name: "tessera".to_string(),
            machine: Machine::default(),
            accel: Accel::default(),
            qemu_binary: PathBuf::from(DEFAULT_QEMU),
            ovmf_code: PathBuf::from(DEFAULT_OVMF_CODE),
            ovmf_vars: PathBuf::from(DEFAULT_OVMF_VARS),
            extra_qemu_args: Vec::new(),
        }
    }

    /// The full kernel command line for kernel and pxe boots.
    pub fn kernel_cmdline(&self) -> String {
        let mut line = BASE_CMDLINE.to_string();
        for arg in &self.append {
            line.push(' ');
            line.push_str(arg);
        }
        line
    }
}

impl VmConfig {
    /// Checks what can be checked without touching the file system: arguments the boot mode
    /// cannot carry, the command-line length, duplicate forwards, zero resources.
    pub fn validate(&self) -> Result<(), VmError> {
        match self.boot {
            BootMode::Disk if !self.append.is_empty() => {
                return Err(VmError::AppendInDiskMode {
                    args: self.append.join(" "),
                })
            }
            BootMode::Pxe => {
                for arg in &self.append {
                    crate::pxe::check_ipxe_arg(arg)?;
                }
            }
            _ => {}
        }
        let len = self.kernel_cmdline().len();
        if self.boot != BootMode::Disk && len > MAX_CMDLINE {
            return Err(VmError::CmdlineTooLong {
                len,
                max: MAX_CMDLINE,
            });
        }
        if let Network::Tap { ifname, mac, netns } = &self.network {
            let bad = |reason: String| Err(VmError::BadNetwork { reason });
            if self.boot == BootMode::Pxe {
                return bad("PXE boot needs the user network's TFTP server; boot a tap-networked VM with `--boot kernel` or `--boot disk`".into());
            }
            if !self.forwards.is_empty() {
                return bad("port forwards need the user network; reach a tap-networked VM at its address on the tap's network".into());
            }
            let name_ok = |n: &str| {
                !n.is_empty()
                    && n.len() <= 15
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            };
            if !name_ok(ifname) {
                return bad(format!(
                    "tap name `{ifname}` is not an interface name (1-15 letters, digits, - _ .)"
                ));
            }
            if let Some(ns) = netns {
                let ns_ok = !ns.is_empty()
                    && ns.len() <= 64
                    && ns
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                if !ns_ok {
                    return bad(format!(
                        "network namespace name `{ns}` is not a plain name (letters, digits, - _ .)"
                    ));
                }
            }
            if let Some(mac) = mac {
                if !valid_mac(mac) {
                    return bad(format!(
                        "MAC address `{mac}` is not six hex pairs like 52:54:00:12:34:56"
                    ));
                }
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in &self.forwards {
            if !seen.insert(f.host) {
                return Err(VmError::DuplicateForward { port: f.host });
            }
        }
        if self.memory_mb < 64 || self.cpus == 0 {
            return Err(VmError::BadResources {
                memory_mb: self.memory_mb,
                cpus: self.cpus,
            });
        }
        Ok(())
    }
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig::new(BootMode::Kernel, "out")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_forward_parses_host_and_guest() {
        assert_eq!(
            "8443:443".parse::<PortForward>(),
            Ok(PortForward {
                host: 8443,
                guest: 443
            })
        );
    }

    #[test]
    fn port_forward_rejects_missing_colon_zero_and_overflow() {
        assert!("8443".parse::<PortForward>().is_err());
        assert!("0:22".parse::<PortForward>().is_err());
        assert!("70000:22".parse::<PortForward>().is_err());
        assert!("22:x".parse::<PortForward>().is_err());
    }

    #[test]
    fn disk_mode_refuses_extra_kernel_args_and_says_why() {
        let mut cfg = VmConfig::new(BootMode::Disk, "out");
        assert!(cfg.validate().is_ok());
        cfg.append = vec!["tessera.token=x".into()];
        let msg = cfg.validate().unwrap_err().to_string();
        assert!(
            msg.contains("disk boot cannot take extra kernel arguments"),
            "{msg}"
        );
        assert!(msg.contains("baked into the unified kernel image"), "{msg}");
        assert!(msg.contains("--boot kernel"), "{msg}");
    }

    #[test]
    fn overlong_command_line_is_refused() {
        let mut cfg = VmConfig::new(BootMode::Kernel, "out");
        cfg.append = vec!["x".repeat(MAX_CMDLINE)];
        let msg = cfg.validate().unwrap_err().to_string();
        assert!(msg.contains("over the 2047-byte limit"), "{msg}");
    }

    #[test]
    fn duplicate_host_port_is_refused() {
        let mut cfg = VmConfig::new(BootMode::Kernel, "out");
        cfg.forwards = vec!["2222:22".parse().unwrap(), "2222:23".parse().unwrap()];
        let msg = cfg.validate().unwrap_err().to_string();
        assert!(
            msg.contains("host port 2222 is forwarded more than once"),
            "{msg}"
        );
    }

    #[test]
    fn pxe_mode_checks_args_against_ipxe_parsing() {
        let mut cfg = VmConfig::new(BootMode::Pxe, "out");
        cfg.append = vec!["tessera.hostname=\"a b\"".into()];
        assert!(matches!(cfg.validate(), Err(VmError::UnsafeIpxeArg { .. })));
        cfg.boot = BootMode::Kernel;
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn tap_network_refuses_pxe_forwards_and_bad_names() {
        let mut cfg = VmConfig::new(BootMode::Kernel, "out");
        cfg.network = Network::Tap {
            netns: Some("tessera-fw-1".into()),
            ifname: "tap0".into(),
            mac: Some("52:54:00:77:00:0a".into()),
        };
        assert!(cfg.validate().is_ok());
        cfg.forwards = vec!["2222:22".parse().unwrap()];
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("port forwards need the user network"));
        cfg.forwards.clear();
        cfg.boot = BootMode::Pxe;
        assert!(cfg.validate().unwrap_err().to_string().contains("TFTP"));
        cfg.boot = BootMode::Kernel;
        cfg.network = Network::Tap {
            netns: None,
            ifname: "tap0".into(),
            mac: Some("52:54:00:77:00".into()),
        };
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("MAC address"));
        assert!(valid_mac("52:54:00:AB:cd:01"));
    }

    #[test]
    fn kernel_cmdline_appends_extra_args_after_the_base() {
        let mut cfg = VmConfig::new(BootMode::Kernel, "out");
        cfg.append = vec!["tessera.hostname=n1".into(), "loglevel=7".into()];
        assert_eq!(
            cfg.kernel_cmdline(),
            "console=ttyS0 quiet panic=-1 tessera.hostname=n1 loglevel=7"
        );
    }
}
