//! The VM runner of Tessera: boots a built image in QEMU the three ways a node boots —
//! direct kernel, real PXE (the NIC's iPXE ROM over QEMU's TFTP server) and UEFI disk
//! (OVMF + the unified kernel image) — captures the serial console, waits for the guest's
//! `TESSERA-*` lines, types into the console and runs commands on its shell, and reports how
//! the VM ended. It also provides the `tessera vm run` command.
//!
//! This crate owns QEMU's command line, the per-VM runtime files (TFTP root, UEFI variable
//! store, QMP socket) and console capture. It must not build or modify images (the image
//! crate does; disks are opened with `snapshot=on`), must not contain guest-side logic, and
//! must not leave QEMU running when its `Vm` is dropped or its caller dies.
//!
//! ```no_run
//! use std::time::Duration;
//! use tessera_qemu::{BootMode, Vm, VmConfig};
//!
//! let mut vm = Vm::start(&VmConfig::new(BootMode::Kernel, "out"))?;
//! let ready = vm.wait_for("TESSERA-READY", Duration::from_secs(60))?;
//! let status = vm.run_command("tessera status", Duration::from_secs(30))?;
//! vm.send_line("tessera poweroff")?;
//! let exit = vm.wait_exit(Duration::from_secs(30))?;
//! assert!(exit.is_clean_poweroff(), "{ready}\n{status}");
//! # Ok::<(), tessera_qemu::VmError>(())
//! ```

pub mod args;
pub mod cli;
pub mod config;
pub mod console;
pub mod error;
pub mod image;
pub mod kv;
pub mod ovmf;
pub mod process;
pub mod pxe;
pub mod qmp;
pub mod seed;
pub mod shell;
pub mod vm;

pub use cli::{run, RunArgs, VmCommand};
pub use config::{Accel, BootMode, Machine, Network, PortForward, VmConfig};
pub use console::ConsoleLine;
pub use error::VmError;
pub use kv::parse_kv_line;
pub use vm::{run_on_terminal, CommandOutput, ExitReason, Vm, VmExit};
