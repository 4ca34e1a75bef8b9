//! The filter's BPF program, laid out from per-syscall rules. seccompiler's `SeccompFilter`
//! has one match action for the whole filter, but an OCI profile gives each syscall its own
//! (ALLOW here, ERRNO(ENOSYS) there), so the layout is done here; each rule's argument
//! comparisons are still seccompiler's (`SeccompRule` → BPF).
//!
//! ```text
//! load arch
//!   x86_64 → native
//!   i386   → RET foreign          (listed in `architectures`, see `Layout::foreign`)
//!   other  → RET KILL_PROCESS
//! native: load nr
//!   nr ≥ 0x40000000 (x32 ABI; not -1) → RET foreign (x32 listed) or KILL_PROCESS
//!   per syscall, in number order:
//!     nr == N ? [conditional rules: match → RET its action] RET its unconditional action
//!               (or the default when it has none)
//!   RET default
//! ```
//! A rule's comparisons overwrite the accumulator, so every syscall block ends in a RET:
//! control never falls from one block into the next with an argument loaded.

use seccompiler::{sock_filter, BpfProgram, SeccompCondition, SeccompRule};
use std::collections::BTreeMap;

// Classic BPF opcodes: BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_JMP|BPF_JGE|BPF_K,
// BPF_JMP|BPF_JA, BPF_RET|BPF_K.
const LD_W_ABS: u16 = 0x20;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGE_K: u16 = 0x35;
const JMP_JA: u16 = 0x05;
const RET_K: u16 = 0x06;

const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;

const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The kernel's limit on a filter's length (BPF_MAXINSNS).
pub(super) const MAX_INSNS: usize = 4096;

pub(super) const RET_KILL_PROCESS: u32 = 0x8000_0000;

/// One syscall's rules, in the order they are tried.
#[derive(Default)]
pub(super) struct SyscallRules {
    /// (comparisons, all of which must hold; action).
    pub conditional: Vec<(Vec<SeccompCondition>, u32)>,
    /// The action when no conditional rule matched; None: the default action.
    pub unconditional: Option<u32>,
}

pub(super) struct Layout {
    pub default: u32,
    /// What i386 (`int 0x80`) and x32 syscalls get when `architectures` lists them. We have
    /// no i386/x32 syscall table, so they cannot be matched one by one.
    pub foreign_i386: u32,
    pub foreign_x32: u32,
    pub syscalls: BTreeMap<i64, SyscallRules>,
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// The program, or its length when it exceeds the kernel's limit.
pub(super) fn assemble(layout: Layout) -> Result<BpfProgram, BuildError> {
    let mut prog = vec![
        stmt(LD_W_ABS, OFFSET_ARCH),
        jump(JMP_JEQ_K, AUDIT_ARCH_X86_64, 3, 0),
        jump(JMP_JEQ_K, AUDIT_ARCH_I386, 0, 1),
        stmt(RET_K, layout.foreign_i386),
        stmt(RET_K, RET_KILL_PROCESS),
        stmt(LD_W_ABS, OFFSET_NR),
        // -1 is what a tracer leaves when it skips a syscall: not an x32 number.
        jump(JMP_JEQ_K, u32::MAX, 2, 0),
        jump(JMP_JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(RET_K, layout.foreign_x32),
    ];
    for (nr, rules) in layout.syscalls {
        let nr = u32::try_from(nr).map_err(|_| BuildError::Number(nr))?;
        let mut body = Vec::new();
        for (conditions, action) in rules.conditional {
            let rule = SeccompRule::new(conditions).map_err(BuildError::Rule)?;
            // A rule's BPF falls through to the instruction after it on a match and jumps
            // past that instruction otherwise.
            let mut bpf: BpfProgram = rule.into();
            bpf.push(stmt(RET_K, action));
            body.append(&mut bpf);
        }
        body.push(stmt(RET_K, rules.unconditional.unwrap_or(layout.default)));
        if body.len() == 1 {
            // nr == N ? RET : skip it.
            prog.push(jump(JMP_JEQ_K, nr, 0, 1));
        } else {
            // nr == N ? skip the jump over the body : take it.
            // Longer than u32 cannot pass the length check below either.
            let skip = u32::try_from(body.len()).unwrap_or(u32::MAX);
            prog.push(jump(JMP_JEQ_K, nr, 1, 0));
            prog.push(stmt(JMP_JA, skip));
        }
        prog.append(&mut body);
    }
    prog.push(stmt(RET_K, layout.default));
    if prog.len() > MAX_INSNS {
        return Err(BuildError::TooLong(prog.len()));
    }
    Ok(prog)
}

#[derive(Debug, thiserror::Error)]
pub(super) enum BuildError {
    #[error("syscall number {0} does not fit the filter")]
    Number(i64),
    #[error("{0}")]
    Rule(seccompiler::BackendError),
    #[error("the filter has {0} BPF instructions, more than the kernel's {MAX_INSNS}")]
    TooLong(usize),
}
