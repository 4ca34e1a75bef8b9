//! The process's capability sets from config.json's `process.capabilities`, set the way crun
//! 1.8.1 sets them: every capability not in `bounding` is dropped from the bounding set; then
//! one capset(2) sets effective, permitted and inheritable together; then the ambient set is
//! cleared and each `ambient` capability raised. `None` drops every capability.
//!
//! The init calls [`apply`] after it has changed identity, as crun does: keepcaps
//! (prctl PR_SET_KEEPCAPS) → setgroups → setresgid → setresuid → `apply`. Keepcaps keeps the permitted set across
//! the change to a non-root uid; the kernel empties the effective set then, so `apply` first
//! raises effective to permitted to regain CAP_SETPCAP, which dropping from the bounding set
//! needs. Rlimits go before (raising a hard limit needs CAP_SYS_RESOURCE), and so does the
//! seccomp filter when no_new_privs is not set (see `seccomp::install`).
//!
//! Like crun, a failed ambient raise (a capability that is not both permitted and
//! inheritable) is ignored: the kernel refuses it and the set stays without it. Unlike crun,
//! a capability this kernel does not know is an error naming it (crun's capset silently drops
//! it), and so is an effective capability outside permitted (crun reports capset's EPERM).

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};
use std::io;
use std::str::FromStr;

/// Why the capability sets cannot be set.
#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    #[error("unknown capability {0:?}: refused; use a name from capabilities(7), such as CAP_NET_BIND_SERVICE")]
    Unknown(String),
    #[error("process.capabilities.{set} has {name} (number {number}), which this kernel does not know (its last is {last}): refused; remove it from process.capabilities")]
    NotInKernel {
        set: &'static str,
        name: String,
        number: u8,
        last: u8,
    },
    #[error("process.capabilities.effective has {0}, which permitted lacks: refused; add it to process.capabilities.permitted or remove it from effective")]
    EffectiveNotPermitted(String),
    #[error("{step}: {source}; {hint}")]
    Syscall {
        step: String,
        source: io::Error,
        hint: &'static str,
    },
}

impl From<CapabilityError> for io::Error {
    fn from(e: CapabilityError) -> io::Error {
        let kind = match &e {
            CapabilityError::Syscall { source, .. } => source.kind(),
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

/// The kernel's number of a capability (linux/capability.h).
pub fn number(cap: Capability) -> u8 {
    use Capability as C;
    match cap {
        C::Chown => 0,
        C::DacOverride => 1,
        C::DacReadSearch => 2,
        C::Fowner => 3,
        C::Fsetid => 4,
        C::Kill => 5,
        C::Setgid => 6,
        C::Setuid => 7,
        C::Setpcap => 8,
        C::LinuxImmutable => 9,
        C::NetBindService => 10,
        C::NetBroadcast => 11,
        C::NetAdmin => 12,
        C::NetRaw => 13,
        C::IpcLock => 14,
        C::IpcOwner => 15,
        C::SysModule => 16,
        C::SysRawio => 17,
        C::SysChroot => 18,
        C::SysPtrace => 19,
        C::SysPacct => 20,
        C::SysAdmin => 21,
        C::SysBoot => 22,
        C::SysNice => 23,
        C::SysResource => 24,
        C::SysTime => 25,
        C::SysTtyConfig => 26,
        C::Mknod => 27,
        C::Lease => 28,
        C::AuditWrite => 29,
        C::AuditControl => 30,
        C::Setfcap => 31,
        C::MacOverride => 32,
        C::MacAdmin => 33,
        C::Syslog => 34,
        C::WakeAlarm => 35,
        C::BlockSuspend => 36,
        C::AuditRead => 37,
        C::Perfmon => 38,
        C::Bpf => 39,
        C::CheckpointRestore => 40,
    }
}

/// `CAP_SYS_ADMIN` for [`Capability::SysAdmin`].
pub fn name(cap: Capability) -> String {
    format!("CAP_{cap}")
}

/// A capability from its name, `CAP_NET_ADMIN` or `net_admin`; an unknown name is an error
/// naming it.
pub fn parse(name: &str) -> io::Result<Capability> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    Ok(Capability::from_str(bare).map_err(|_| CapabilityError::Unknown(name.to_string()))?)
}

/// Sets the calling thread's capability sets for a process about to exec (see the module
/// doc for what the init must do before).
pub fn apply(caps: Option<&LinuxCapabilities>) -> io::Result<()> {
    let last = last_cap();
    let set = |which: &'static str, list: Option<&Capabilities>| -> Result<u64, CapabilityError> {
        let mut mask = 0u64;
        for cap in list.into_iter().flatten() {
            let n = number(*cap);
            if n > last {
                return Err(CapabilityError::NotInKernel {
                    set: which,
                    name: name(*cap),
                    number: n,
                    last,
                });
            }
            mask |= 1 << n;
        }
        Ok(mask)
    };
    let bounding = set("bounding", caps.and_then(|c| c.bounding().as_ref()))?;
    let effective = set("effective", caps.and_then(|c| c.effective().as_ref()))?;
    let permitted = set("permitted", caps.and_then(|c| c.permitted().as_ref()))?;
    let inheritable = set("inheritable", caps.and_then(|c| c.inheritable().as_ref()))?;
    let ambient = set("ambient", caps.and_then(|c| c.ambient().as_ref()))?;
    if let Some(n) = (0..=last).find(|n| effective & !permitted & (1 << n) != 0) {
        return Err(CapabilityError::EffectiveNotPermitted(cap_name(n)).into());
    }

    let now = capget()?;
    if now.effective != now.permitted {
        capset(Sets {
            effective: now.permitted,
            ..now
        })
        .map_err(|e| {
            syscall_error(
                "raise the effective set to the permitted set",
                e,
                "the init must hold its capabilities until apply (keepcaps before setresuid)",
            )
        })?;
    }
    for n in (0..=last).filter(|n| bounding & (1 << n) == 0) {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(n), 0, 0, 0) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(syscall_error(
                    &format!("drop {} from the bounding set", cap_name(n)),
                    e,
                    "it needs CAP_SETPCAP: call apply before CAP_SETPCAP is given up (keepcaps → setresuid → apply)",
                )
                .into());
            }
        }
    }
    capset(Sets { effective, permitted, inheritable }).map_err(|e| {
        syscall_error(
            "set the effective, permitted and inheritable sets",
            e,
            "process.capabilities asks for capabilities the init no longer holds, or inheritable ones outside bounding",
        )
    })?;

    // SAFETY: prctl with integer arguments only.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    } != 0
    {
        let e = io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EPERM)) {
            return Err(syscall_error(
                "clear the ambient set",
                e,
                "this kernel refuses PR_CAP_AMBIENT",
            )
            .into());
        }
    }
    for n in (0..=last).filter(|n| ambient & (1 << n) != 0) {
        // SAFETY: prctl with integer arguments only. EINVAL/EPERM (not permitted and
        // inheritable, or no ambient support) are ignored, as crun ignores them.
        let rc = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE,
                libc::c_ulong::from(n),
                0,
                0,
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EPERM)) {
                return Err(syscall_error(
                    &format!("raise {} in the ambient set", cap_name(n)),
                    e,
                    "this kernel refuses PR_CAP_AMBIENT_RAISE",
                )
                .into());
            }
        }
    }
    Ok(())
}

fn syscall_error(step: &str, source: io::Error, hint: &'static str) -> CapabilityError {
    CapabilityError::Syscall {
        step: step.to_string(),
        source,
        hint,
    }
}

fn cap_name(n: u8) -> String {
    ALL.iter()
        .find(|c| number(**c) == n)
        .map(|c| name(*c))
        .unwrap_or_else(|| format!("capability {n}"))
}

const ALL: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// The highest capability number this kernel knows (what /proc/sys/kernel/cap_last_cap says;
/// probed so that it works before /proc is mounted).
fn last_cap() -> u8 {
    let mut last = 0;
    for n in 0..64u8 {
        // SAFETY: prctl with integer arguments only; it reads nothing from us.
        if unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(n), 0, 0, 0) } < 0 {
            break;
        }
        last = n;
    }
    last
}

#[derive(Clone, Copy)]
struct Sets {
    effective: u64,
    permitted: u64,
    inheritable: u64,
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn capget() -> io::Result<Sets> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes one header and two data structs (version 3), all ours and live.
    if unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    } != 0
    {
        return Err(syscall_error(
            "read the capability sets",
            io::Error::last_os_error(),
            "capget(2) must work in the init",
        )
        .into());
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok(Sets {
        effective: join(data[0].effective, data[1].effective),
        permitted: join(data[0].permitted, data[1].permitted),
        inheritable: join(data[0].inheritable, data[1].inheritable),
    })
}

fn capset(sets: Sets) -> io::Result<()> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let split = |v: u64| (v as u32, (v >> 32) as u32);
    let (e, p, i) = (
        split(sets.effective),
        split(sets.permitted),
        split(sets.inheritable),
    );
    let data = [
        CapData {
            effective: e.0,
            permitted: p.0,
            inheritable: i.0,
        },
        CapData {
            effective: e.1,
            permitted: p.1,
            inheritable: i.1,
        },
    ];
    // SAFETY: capset reads one header and two data structs (version 3), all ours and live.
    if unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
