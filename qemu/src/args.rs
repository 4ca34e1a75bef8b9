//! QEMU's command line for a VM: first `prepare` checks and creates the files the command
//! line refers to (TFTP root, UEFI variable store), then `qemu_args` builds the argument list.
//! `qemu_args` is a pure function so each mode's command line is unit-tested.

use std::path::{Path, PathBuf};

use crate::config::{Accel, BootMode, Network, VmConfig, IPXE_VIRTIO_ROM};
use crate::error::VmError;
use crate::image::{self, BootFiles, DiskFormat};
use crate::ovmf::{self, Firmware};
use crate::pxe::{self, TftpRoot};

/// Where the serial console goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleMode {
    /// QEMU's stdin/stdout carry the serial port; the runner reads and types into them.
    Captured,
    /// The serial port and QEMU's monitor share the terminal (Ctrl-A X quits, Ctrl-A C
    /// switches to the monitor); QEMU itself appends the console to `log`.
    Terminal { log: Option<PathBuf> },
}

/// The boot-mode specific files, ready to be named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreparedBoot {
    Kernel {
        kernel: PathBuf,
        initrd: PathBuf,
        cmdline: String,
    },
    Pxe {
        tftp: TftpRoot,
        /// SeaBIOS "serial console" setting: makes the BIOS and the iPXE ROM print to the
        /// serial port, so PXE progress is on the console.
        sercon: PathBuf,
    },
    Disk {
        firmware: Firmware,
        disk: PathBuf,
        format: DiskFormat,
    },
}

/// Everything `qemu_args` needs besides the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub boot: PreparedBoot,
    pub data_disks: Vec<(PathBuf, DiskFormat)>,
    pub qmp_socket: PathBuf,
    pub console: ConsoleMode,
}

/// Validates `cfg`, checks that every file it names exists, and creates the per-VM files
/// under `runtime_dir`.
pub fn prepare(
    cfg: &VmConfig,
    runtime_dir: &Path,
    console: ConsoleMode,
) -> Result<Prepared, VmError> {
    cfg.validate()?;
    let files = image::locate(cfg)?;
    let data_disks = image::data_disks(cfg)?;
    let boot = match files {
        BootFiles::Kernel { kernel, initrd } => PreparedBoot::Kernel {
            kernel,
            initrd,
            cmdline: cfg.kernel_cmdline(),
        },
        BootFiles::Pxe { dir, .. } => {
            let rom = Path::new(IPXE_VIRTIO_ROM);
            if !rom.is_file() {
                return Err(VmError::IpxeRomMissing {
                    path: rom.to_path_buf(),
                });
            }
            let tftp = pxe::prepare(&dir, &cfg.append, runtime_dir)?;
            let sercon = runtime_dir.join("sercon-port");
            // A little-endian I/O port number: 0x3f8 is COM1, where the console is.
            std::fs::write(&sercon, 0x3f8u16.to_le_bytes())
                .map_err(|e| VmError::io(format!("cannot write {}", sercon.display()), e))?;
            PreparedBoot::Pxe { tftp, sercon }
        }
        BootFiles::Disk { disk, format } => PreparedBoot::Disk {
            firmware: ovmf::prepare(&cfg.ovmf_code, &cfg.ovmf_vars, runtime_dir)?,
            disk,
            format,
        },
    };
    Ok(Prepared {
        boot,
        data_disks,
        qmp_socket: runtime_dir.join("qmp.sock"),
        console,
    })
}

/// QEMU's arguments (without the binary) for `cfg` and its prepared files.
pub fn qemu_args(cfg: &VmConfig, p: &Prepared) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));

    push(&["-name", &opt_value(&cfg.name)]);
    push(&[
        "-machine",
        &format!("{},accel={}", cfg.machine.as_str(), cfg.accel.as_str()),
    ]);
    push(&[
        "-cpu",
        if cfg.accel == Accel::Kvm {
            "host"
        } else {
            "max"
        },
    ]);
    push(&["-m", &cfg.memory_mb.to_string()]);
    push(&["-smp", &cfg.cpus.to_string()]);
    // No default NIC, VGA, serial or monitor: every device below is chosen explicitly.
    push(&["-nodefaults", "-display", "none"]);
    // A guest reboot ends QEMU, so the runner sees it instead of a silent second boot.
    push(&["-no-reboot"]);
    // QMP says why QEMU stopped (guest power-off, reset or panic) without parsing the console.
    push(&[
        "-qmp",
        &format!("unix:{},server=on,wait=off", opt_path(&p.qmp_socket)),
    ]);
    match &p.console {
        ConsoleMode::Captured => push(&["-serial", "stdio"]),
        ConsoleMode::Terminal { log } => {
            let mut chardev = "stdio,id=console,mux=on,signal=off".to_string();
            if let Some(log) = log {
                chardev.push_str(&format!(",logfile={},logappend=on", opt_path(log)));
            }
            push(&["-chardev", &chardev]);
            push(&["-serial", "chardev:console"]);
            push(&["-mon", "chardev=console,mode=readline"]);
        }
    }
    push(&["-device", "virtio-rng-pci"]);

    let mut netdev = "user,id=net0".to_string();
    if let Network::Tap { ifname, .. } = &cfg.network {
        netdev = format!(
            "tap,id=net0,ifname={},script=no,downscript=no",
            opt_value(ifname)
        );
    }
    if let PreparedBoot::Pxe { tftp, .. } = &p.boot {
        netdev.push_str(&format!(
            ",tftp={},bootfile={}",
            opt_path(&tftp.dir),
            opt_value(&tftp.bootfile)
        ));
    }
    for f in &cfg.forwards {
        netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{}-:{}", f.host, f.guest));
    }
    push(&["-netdev", &netdev]);
    let mut nic = match cfg.boot {
        // QEMU's default ROM for virtio-net-pci is the iPXE ROM; that is the PXE client.
        BootMode::Pxe => "virtio-net-pci,netdev=net0,bootindex=0",
        // No option ROM: the firmware would otherwise spend time loading iPXE (and OVMF
        // would try to network-boot when the disk fails).
        BootMode::Kernel | BootMode::Disk => "virtio-net-pci,netdev=net0,romfile=",
    }
    .to_string();
    if let Network::Tap { mac: Some(mac), .. } = &cfg.network {
        nic.push_str(&format!(",mac={mac}"));
    }
    push(&["-device", &nic]);

    match &p.boot {
        PreparedBoot::Kernel {
            kernel,
            initrd,
            cmdline,
        } => {
            push(&["-kernel", &path_str(kernel)]);
            push(&["-initrd", &path_str(initrd)]);
            push(&["-append", cmdline]);
        }
        PreparedBoot::Pxe { sercon, .. } => {
            push(&["-boot", "n"]);
            push(&[
                "-fw_cfg",
                &format!("name=etc/sercon-port,file={}", opt_path(sercon)),
            ]);
        }
        PreparedBoot::Disk {
            firmware,
            disk,
            format,
        } => {
            push(&[
                "-drive",
                &format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={}",
                    opt_path(&firmware.code)
                ),
            ]);
            push(&[
                "-drive",
                &format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    opt_path(&firmware.vars)
                ),
            ]);
            // snapshot=on: guest writes go to a temporary overlay; the image is never changed.
            push(&[
                "-drive",
                &format!(
                    "if=none,id=boot,file={},format={},snapshot=on",
                    opt_path(disk),
                    format.as_str()
                ),
            ]);
            push(&["-device", "virtio-blk-pci,drive=boot,bootindex=0"]);
        }
    }

    for (i, (path, format)) in p.data_disks.iter().enumerate() {
        push(&[
            "-drive",
            &format!(
                "if=none,id=data{i},file={},format={}",
                opt_path(path),
                format.as_str()
            ),
        ]);
        // The serial shows up as /dev/disk/by-id/virtio-data<i> in the guest.
        push(&[
            "-device",
            &format!("virtio-blk-pci,drive=data{i},serial=data{i}"),
        ]);
    }
    a.extend(cfg.extra_qemu_args.iter().cloned());
    a
}

/// A path as a whole argument (`-kernel PATH`): no escaping needed.
fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A path inside a comma-separated option list, where QEMU reads `,,` as a literal comma.
fn opt_path(p: &Path) -> String {
    opt_value(&p.to_string_lossy())
}

fn opt_value(s: &str) -> String {
    s.replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PortForward;

    fn kernel_prepared() -> Prepared {
        Prepared {
            boot: PreparedBoot::Kernel {
                kernel: "/img/pxe/vmlinuz".into(),
                initrd: "/img/pxe/initramfs.img".into(),
                cmdline: "console=ttyS0 quiet panic=-1 a=b".into(),
            },
            data_disks: vec![],
            qmp_socket: "/run/vm/qmp.sock".into(),
            console: ConsoleMode::Captured,
        }
    }

    /// The value following each occurrence of `flag`.
    fn values<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn kernel_mode_loads_kernel_initrd_and_cmdline_directly() {
        let cfg = VmConfig::default();
        let args = qemu_args(&cfg, &kernel_prepared());
        assert_eq!(values(&args, "-kernel"), ["/img/pxe/vmlinuz"]);
        assert_eq!(values(&args, "-initrd"), ["/img/pxe/initramfs.img"]);
        assert_eq!(
            values(&args, "-append"),
            ["console=ttyS0 quiet panic=-1 a=b"]
        );
        assert_eq!(values(&args, "-machine"), ["q35,accel=tcg"]);
        assert_eq!(values(&args, "-cpu"), ["max"]);
        assert_eq!(values(&args, "-m"), ["512"]);
        assert_eq!(values(&args, "-smp"), ["1"]);
        assert_eq!(values(&args, "-serial"), ["stdio"]);
        assert!(args.iter().any(|a| a == "-no-reboot"));
        assert!(args.iter().any(|a| a == "-nodefaults"));
        assert!(values(&args, "-device").contains(&"virtio-rng-pci"));
        assert!(values(&args, "-device").contains(&"virtio-net-pci,netdev=net0,romfile="));
        assert_eq!(values(&args, "-netdev"), ["user,id=net0"]);
        assert_eq!(
            values(&args, "-qmp"),
            ["unix:/run/vm/qmp.sock,server=on,wait=off"]
        );
    }

    #[test]
    fn forwards_become_loopback_hostfwd_rules() {
        let mut cfg = VmConfig::new(BootMode::Kernel, "out");
        cfg.forwards = vec![
            PortForward {
                host: 2222,
                guest: 22,
            },
            PortForward {
                host: 8443,
                guest: 443,
            },
        ];
        let args = qemu_args(&cfg, &kernel_prepared());
        assert_eq!(
            values(&args, "-netdev"),
            ["user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.0.0.1:8443-:443"]
        );
    }

    #[test]
    fn tap_network_uses_the_tap_without_scripts_and_the_mac() {
        let mut cfg = VmConfig::new(BootMode::Kernel, "out");
        cfg.network = Network::Tap {
            netns: Some("ns1".into()),
            ifname: "tap1".into(),
            mac: Some("52:54:00:77:00:0b".into()),
        };
        let args = qemu_args(&cfg, &kernel_prepared());
        assert_eq!(
            values(&args, "-netdev"),
            ["tap,id=net0,ifname=tap1,script=no,downscript=no"]
        );
        assert!(values(&args, "-device")
            .contains(&"virtio-net-pci,netdev=net0,romfile=,mac=52:54:00:77:00:0b"));
    }

    #[test]
    fn data_disks_are_virtio_with_format_and_serial() {
        let cfg = VmConfig::default();
        let mut p = kernel_prepared();
        p.data_disks = vec![
            ("/d/a.qcow2".into(), DiskFormat::Qcow2),
            ("/d/b,c.img".into(), DiskFormat::Raw),
        ];
        let args = qemu_args(&cfg, &p);
        let drives = values(&args, "-drive");
        assert_eq!(
            drives,
            [
                "if=none,id=data0,file=/d/a.qcow2,format=qcow2",
                "if=none,id=data1,file=/d/b,,c.img,format=raw"
            ]
        );
        let devices = values(&args, "-device");
        assert!(devices.contains(&"virtio-blk-pci,drive=data0,serial=data0"));
        assert!(devices.contains(&"virtio-blk-pci,drive=data1,serial=data1"));
    }

    #[test]
    fn pxe_mode_network_boots_from_the_tftp_root_with_the_ipxe_rom() {
        let cfg = VmConfig::new(BootMode::Pxe, "/img");
        let p = Prepared {
            boot: PreparedBoot::Pxe {
                tftp: TftpRoot {
                    dir: "/run/vm/tftp".into(),
                    bootfile: "tessera.ipxe".into(),
                },
                sercon: "/run/vm/sercon-port".into(),
            },
            ..kernel_prepared()
        };
        let args = qemu_args(&cfg, &p);
        assert_eq!(values(&args, "-boot"), ["n"]);
        assert_eq!(
            values(&args, "-netdev"),
            ["user,id=net0,tftp=/run/vm/tftp,bootfile=tessera.ipxe"]
        );
        assert!(values(&args, "-device").contains(&"virtio-net-pci,netdev=net0,bootindex=0"));
        assert!(values(&args, "-kernel").is_empty());
        assert_eq!(
            values(&args, "-fw_cfg"),
            ["name=etc/sercon-port,file=/run/vm/sercon-port"]
        );
    }

    #[test]
    fn disk_mode_boots_ovmf_with_a_private_vars_copy_and_a_snapshot_disk() {
        let cfg = VmConfig::new(BootMode::Disk, "/img");
        let p = Prepared {
            boot: PreparedBoot::Disk {
                firmware: Firmware {
                    code: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
                    vars: "/run/vm/OVMF_VARS.fd".into(),
                },
                disk: "/img/disk.qcow2".into(),
                format: DiskFormat::Qcow2,
            },
            ..kernel_prepared()
        };
        let args = qemu_args(&cfg, &p);
        assert_eq!(
            values(&args, "-drive"),
            [
                "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
                "if=pflash,format=raw,unit=1,file=/run/vm/OVMF_VARS.fd",
                "if=none,id=boot,file=/img/disk.qcow2,format=qcow2,snapshot=on",
            ]
        );
        assert!(values(&args, "-device").contains(&"virtio-blk-pci,drive=boot,bootindex=0"));
        assert!(values(&args, "-append").is_empty());
    }

    #[test]
    fn terminal_console_muxes_serial_and_monitor_and_logs() {
        let cfg = VmConfig::default();
        let p = Prepared {
            console: ConsoleMode::Terminal {
                log: Some("/out/vm.log".into()),
            },
            ..kernel_prepared()
        };
        let args = qemu_args(&cfg, &p);
        assert_eq!(
            values(&args, "-chardev"),
            ["stdio,id=console,mux=on,signal=off,logfile=/out/vm.log,logappend=on"]
        );
        assert_eq!(values(&args, "-serial"), ["chardev:console"]);
        assert_eq!(values(&args, "-mon"), ["chardev=console,mode=readline"]);
    }

    #[test]
    fn prepare_in_disk_mode_refuses_append_before_touching_files() {
        let rt = tempfile::tempdir().unwrap();
        let mut cfg = VmConfig::new(BootMode::Disk, "/nonexistent");
        cfg.append = vec!["x=y".into()];
        let err = prepare(&cfg, rt.path(), ConsoleMode::Captured).unwrap_err();
        assert!(matches!(err, VmError::AppendInDiskMode { .. }), "{err}");
    }

    #[test]
    fn prepare_in_kernel_mode_reports_the_missing_image() {
        let rt = tempfile::tempdir().unwrap();
        let cfg = VmConfig::new(BootMode::Kernel, "out-missing");
        let msg = prepare(&cfg, rt.path(), ConsoleMode::Captured)
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("out-missing/pxe/vmlinuz not found: run `make image`"),
            "{msg}"
        );
    }
}
