//! The container's syscall filter: config.json's `linux.seccomp` translated with crun 1.8.1's
//! (libseccomp's) semantics, or Docker's default profile when config.json has none. Its
//! parts: `profile` (the default profile), `syscalls` (x86_64 names → numbers), `bpf` (the
//! program's layout).
//!
//! Translation, as crun: the default errno is EPERM; an entry whose action equals the default
//! action is dropped; a syscall name this architecture lacks is skipped (listed in
//! [`Filter::skipped`]); the comparisons of one entry must all hold, except that entries
//! comparing the same argument twice become one rule per comparison (OR), as crun and runc
//! do; `SCMP_CMP_MASKED_EQ` is `(arg & value) == valueTwo`; comparisons are 64-bit.
//! Without `flags`, the filter is installed with SECCOMP_FILTER_FLAG_SPEC_ALLOW, as crun.
//!
//! Where we differ, always towards refusing:
//! - x86 (i386, `int 0x80`) and x32 syscalls cannot be matched by name (there is no table of
//!   their numbers here): when `architectures` lists them they all get the default action if
//!   it refuses (ERRNO, KILL, TRAP), else KILL_PROCESS so that a 32-bit caller cannot step
//!   around a deny list; unlisted, KILL_PROCESS (libseccomp: KILL_THREAD). So under the
//!   default profile a 32-bit program cannot make any syscall, where crun would run it.
//! - `SCMP_ACT_NOTIFY` and `listenerPath` are refused: there is no seccomp agent.
//! - One syscall in several entries: its conditional rules are tried first, in config.json's
//!   order, then its first unconditional one; later unconditional ones are ignored.
//! - A comparison index above 5 is refused even in an entry crun would drop.

mod bpf;
mod profile;
#[cfg(target_arch = "x86_64")]
mod syscalls;

pub use profile::{default_profile, keyring_rules, DOCKER_DEFAULT_CAPS, IDENTITY_KEYCTL_OPS};

use bpf::{Layout, SyscallRules, RET_KILL_PROCESS};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator,
};
use seccompiler::{BpfProgram, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition};
use std::collections::BTreeMap;
use std::io;

/// A compiled filter, ready to install.
#[derive(Debug, Clone)]
pub struct Filter {
    pub program: BpfProgram,
    /// seccomp(2) flags (SECCOMP_FILTER_FLAG_*).
    pub flags: u32,
    /// Syscall names of the profile this architecture does not have (skipped, as libseccomp
    /// skips them): worth a debug line, not an error; the default profile names i386 and arm
    /// syscalls too.
    pub skipped: Vec<String>,
}

/// Why a profile cannot be compiled or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("linux.seccomp.{field} is set for action {action}: refused; errnoRet goes only with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, remove it or change the action")]
    ErrnoWithoutErrnoAction {
        field: String,
        action: LinuxSeccompAction,
    },
    #[error("linux.seccomp.{field} is SCMP_ACT_NOTIFY: refused; Tessera runs no seccomp agent, use SCMP_ACT_ERRNO, SCMP_ACT_TRAP or SCMP_ACT_KILL_PROCESS")]
    Notify { field: String },
    #[error("linux.seccomp.listenerPath is set: refused; Tessera runs no seccomp agent, remove listenerPath")]
    Listener,
    #[error("linux.seccomp.syscalls[{entry}].args: index {index} is refused; a syscall's arguments are numbered 0 to 5")]
    ArgIndex { entry: usize, index: usize },
    #[error("linux.seccomp: the filter needs {0} BPF instructions, more than the kernel's {max}: refused; merge entries that share an action or drop argument conditions", max = bpf::MAX_INSNS)]
    TooLong(usize),
    #[error("linux.seccomp: {0}: refused; fix the entry's args")]
    Rule(String),
    #[error("linux.seccomp: filters are built for x86_64 only: refused on this architecture; remove linux.seccomp or run on x86_64")]
    Architecture,
    #[error("install the seccomp filter: {source}: refused by the kernel; {hint}")]
    Install {
        source: io::Error,
        hint: &'static str,
    },
}

impl From<SeccompError> for io::Error {
    fn from(e: SeccompError) -> io::Error {
        let kind = match &e {
            SeccompError::Install { source, .. } => source.kind(),
            SeccompError::Architecture => io::ErrorKind::Unsupported,
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

/// Compiles `linux.seccomp`; `None` gives Docker's default profile for Docker's default
/// capabilities ([`DOCKER_DEFAULT_CAPS`]). A caller that knows the process's capability list
/// (its bounding set, which is what Docker looks at) passes
/// `Some(&default_profile(&bounding))` instead, so the capability-dependent additions (mount
/// with CAP_SYS_ADMIN, reboot with CAP_SYS_BOOT, …) match.
///
/// Compiling only allocates; do it before [`install`] (a profile may deny what a late
/// compile or its error report would need).
pub fn compile(spec: Option<&LinuxSeccomp>) -> io::Result<Filter> {
    let default;
    let spec = match spec {
        Some(s) => s,
        None => {
            default = default_profile(&DOCKER_DEFAULT_CAPS.iter().copied().collect());
            &default
        }
    };
    Ok(translate(spec)?)
}

/// Installs the filter on the calling thread; it stays across execve and is inherited by
/// children. It does not set no_new_privs (seccompiler's `apply_filter` would, and so change
/// `NoNewPrivs` from what config.json asked): the kernel accepts the filter only from a thread
/// that has no_new_privs set or holds CAP_SYS_ADMIN. So the init follows crun's order:
/// - `process.noNewPrivileges: true`: … → setresuid → `capabilities::apply` →
///   prctl(PR_SET_NO_NEW_PRIVS) → `install` → execve (the filter then covers only the
///   program);
/// - otherwise: `install` while still root with CAP_SYS_ADMIN, before setresuid and
///   `capabilities::apply`; the filter then also covers the init's remaining syscalls
///   (setgroups, setresuid, capset, prctl, execve), which the default profile allows; a
///   profile that denies them makes the start fail, as with crun.
pub fn install(filter: &Filter) -> io::Result<()> {
    #[repr(C)]
    struct SockFprog {
        len: libc::c_ushort,
        filter: *const seccompiler::sock_filter,
    }
    let len = libc::c_ushort::try_from(filter.program.len())
        .map_err(|_| SeccompError::TooLong(filter.program.len()))?;
    let prog = SockFprog {
        len,
        filter: filter.program.as_ptr(),
    };
    let set = |flags: u32| {
        // SAFETY: seccomp(2) reads `prog` and the `len` instructions it points at, all alive
        // for the call; the kernel copies them.
        unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::c_ulong::from(flags),
                &prog as *const SockFprog,
            )
        }
    };
    let mut rc = set(filter.flags);
    if rc < 0
        && filter.flags != 0
        && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL)
    {
        // An older kernel that lacks one of the flags: crun retries without them.
        rc = set(0);
    }
    if rc == 0 {
        return Ok(());
    }
    let (source, hint) = if rc > 0 {
        (
            io::Error::other(format!("thread {rc} could not be synchronised (SECCOMP_FILTER_FLAG_TSYNC)")),
            "install the filter from a single-threaded process, or drop SECCOMP_FILTER_FLAG_TSYNC from linux.seccomp.flags",
        )
    } else {
        let e = io::Error::last_os_error();
        let hint = match e.raw_os_error() {
            Some(libc::EACCES) => "set no_new_privs first (process.noNewPrivileges) or install while the process still holds CAP_SYS_ADMIN",
            Some(libc::EINVAL) => "the kernel rejected the program or a flag in linux.seccomp.flags; remove the flags this kernel lacks",
            Some(libc::ENOMEM) => "the process's filters exceed the kernel's limit; install fewer filters",
            _ => "check that the kernel has CONFIG_SECCOMP_FILTER",
        };
        (e, hint)
    };
    Err(SeccompError::Install { source, hint }.into())
}

fn translate(spec: &LinuxSeccomp) -> Result<Filter, SeccompError> {
    if !cfg!(target_arch = "x86_64") {
        return Err(SeccompError::Architecture);
    }
    if spec.listener_path().is_some() {
        return Err(SeccompError::Listener);
    }
    let default = action(
        spec.default_action(),
        spec.default_errno_ret(),
        "defaultAction",
        "defaultErrnoRet",
    )?;
    let refusing = !matches!(
        spec.default_action(),
        LinuxSeccompAction::ScmpActAllow
            | LinuxSeccompAction::ScmpActLog
            | LinuxSeccompAction::ScmpActTrace
    );
    let arches = spec.architectures().as_deref().unwrap_or_default();
    let foreign = |arch: Arch| {
        if refusing && arches.contains(&arch) {
            default
        } else {
            RET_KILL_PROCESS
        }
    };

    let mut syscalls: BTreeMap<i64, SyscallRules> = BTreeMap::new();
    let mut skipped: Vec<String> = Vec::new();
    for (i, entry) in spec.syscalls().iter().flatten().enumerate() {
        let act = action(
            entry.action(),
            entry.errno_ret(),
            &format!("syscalls[{i}].action"),
            &format!("syscalls[{i}].errnoRet"),
        )?;
        let rules = conditions(i, entry.args().as_deref().unwrap_or_default())?;
        if act == default {
            continue;
        }
        for name in entry.names() {
            let Some(nr) = syscall_number(name) else {
                if !skipped.contains(name) {
                    skipped.push(name.clone());
                }
                continue;
            };
            let slot = syscalls.entry(nr).or_default();
            if rules.is_empty() {
                slot.unconditional.get_or_insert(act);
            } else {
                slot.conditional
                    .extend(rules.iter().map(|r| (r.clone(), act)));
            }
        }
    }
    let layout = Layout {
        default,
        foreign_i386: foreign(Arch::ScmpArchX86),
        foreign_x32: foreign(Arch::ScmpArchX32),
        syscalls,
    };
    let program = bpf::assemble(layout).map_err(|e| match e {
        bpf::BuildError::TooLong(n) => SeccompError::TooLong(n),
        other => SeccompError::Rule(other.to_string()),
    })?;
    Ok(Filter {
        program,
        flags: flags(spec.flags().as_deref()),
        skipped,
    })
}

#[cfg(target_arch = "x86_64")]
fn syscall_number(name: &str) -> Option<i64> {
    syscalls::number(name)
}

#[cfg(not(target_arch = "x86_64"))]
fn syscall_number(_: &str) -> Option<i64> {
    None
}

/// The SECCOMP_RET_* value of an OCI action.
fn action(
    act: LinuxSeccompAction,
    errno_ret: Option<u32>,
    field: &str,
    errno_field: &str,
) -> Result<u32, SeccompError> {
    use LinuxSeccompAction as A;
    if errno_ret.is_some() && !matches!(act, A::ScmpActErrno | A::ScmpActTrace) {
        return Err(SeccompError::ErrnoWithoutErrnoAction {
            field: errno_field.to_string(),
            action: act,
        });
    }
    let data = errno_ret.unwrap_or(libc::EPERM as u32) & libc::SECCOMP_RET_DATA;
    Ok(match act {
        A::ScmpActKill | A::ScmpActKillThread => libc::SECCOMP_RET_KILL_THREAD,
        A::ScmpActKillProcess => libc::SECCOMP_RET_KILL_PROCESS,
        A::ScmpActTrap => libc::SECCOMP_RET_TRAP,
        A::ScmpActErrno => libc::SECCOMP_RET_ERRNO | data,
        A::ScmpActTrace => libc::SECCOMP_RET_TRACE | data,
        A::ScmpActLog => libc::SECCOMP_RET_LOG,
        A::ScmpActAllow => libc::SECCOMP_RET_ALLOW,
        A::ScmpActNotify => {
            return Err(SeccompError::Notify {
                field: field.to_string(),
            })
        }
    })
}

/// An entry's comparisons as rules (each a list that must all hold); empty: unconditional.
fn conditions(
    entry: usize,
    args: &[LinuxSeccompArg],
) -> Result<Vec<Vec<SeccompCondition>>, SeccompError> {
    let mut all = Vec::with_capacity(args.len());
    let mut seen = [false; 6];
    let mut repeated = false;
    for a in args {
        let index =
            u8::try_from(a.index())
                .ok()
                .filter(|i| *i < 6)
                .ok_or(SeccompError::ArgIndex {
                    entry,
                    index: a.index(),
                })?;
        repeated |= std::mem::replace(&mut seen[usize::from(index)], true);
        let (op, value) = match a.op() {
            LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, a.value()),
            LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, a.value()),
            LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, a.value()),
            LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, a.value()),
            LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, a.value()),
            LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, a.value()),
            LinuxSeccompOperator::ScmpCmpMaskedEq => (
                SeccompCmpOp::MaskedEq(a.value()),
                a.value_two().unwrap_or(0),
            ),
        };
        let cond = SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value)
            .map_err(|e| SeccompError::Rule(format!("syscalls[{entry}].args: {e}")))?;
        all.push(cond);
    }
    if all.is_empty() {
        return Ok(Vec::new());
    }
    Ok(if repeated {
        all.into_iter().map(|c| vec![c]).collect()
    } else {
        vec![all]
    })
}

fn flags(list: Option<&[LinuxSeccompFilterFlag]>) -> u32 {
    let Some(list) = list else {
        return libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW as u32;
    };
    list.iter()
        .map(|f| match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
            }
        } as u32)
        .fold(0, |a, b| a | b)
}
