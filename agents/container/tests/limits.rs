//! The container's limit modules (rlimits, seccomp, capabilities, cgroup v2), run as root.
//!
//! Each process-level test re-executes this test binary for itself only (`--exact <name>`)
//! with TESSERA_LIMITS_CHILD=<name>: in that child the same test function applies its plan
//! in the init's order (compile → rlimits → seccomp without no_new_privs → keepcaps, setresuid
//! → capabilities → no_new_privs, seccomp), prints its own capability sets and the results of
//! raw syscalls, then execs busybox, whose /proc/self/status shows what survived execve. The
//! parent asserts on that output. The cgroup tests use the host's cgroup2 mount (on a hybrid
//! host, /sys/fs/cgroup/unified, where memory/cpu/pids/io are bound to v1 and cannot be
//! delegated: there the limits test asserts the refusal instead).

use oci_spec::runtime::{Capability, LinuxCapabilities, LinuxResources, LinuxSeccomp, PosixRlimit};
use serde_json::json;
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use tessera_container::runtime::cgroup::{self, Cgroup, Missing};
use tessera_container::runtime::{capabilities, rlimits, seccomp};

const BUSYBOX: &str = "/bin/busybox";
const CHILD_ENV: &str = "TESSERA_LIMITS_CHILD";

/// Values no process has (pid_max is at most 2^22): a syscall given one fails with ESRCH
/// unless the filter answers first.
const NOPID: u64 = 0x7fff_0001;

// ---------------------------------------------------------------------------------------
// The child side.

enum Filter {
    Default,
    Spec(LinuxSeccomp),
}

#[derive(Default)]
struct Plan {
    rlimits: Vec<PosixRlimit>,
    seccomp: Option<Filter>,
    /// None: capabilities::apply is not called; Some(x): apply(x).
    caps: Option<Option<LinuxCapabilities>>,
    uid: Option<u32>,
    no_new_privs: bool,
    /// A step's error is printed and the child goes on (to show what it left).
    continue_on_error: bool,
    probes: Vec<(&'static str, i64, [u64; 6])>,
    exec: Vec<String>,
}

fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = out.write_all(format!("{line}\n").as_bytes());
    let _ = out.flush();
}

fn step(plan: &Plan, what: &str, r: std::io::Result<()>) {
    if let Err(e) = r {
        say(&format!("ERROR {what}: {e}"));
        if !plan.continue_on_error {
            std::process::exit(97);
        }
    }
}

fn child_main(plan: &Plan) -> ! {
    let filter = plan.seccomp.as_ref().map(|f| match f {
        Filter::Default => seccomp::compile(None),
        Filter::Spec(s) => seccomp::compile(Some(s)),
    });
    let filter = match filter.transpose() {
        Ok(f) => f,
        Err(e) => {
            say(&format!("ERROR compile: {e}"));
            std::process::exit(97);
        }
    };
    step(plan, "rlimits", rlimits::apply(&plan.rlimits));
    if let (Some(f), false) = (&filter, plan.no_new_privs) {
        step(plan, "seccomp", seccomp::install(f));
    }
    if let Some(uid) = plan.uid {
        // SAFETY: prctl with integer arguments only.
        assert_eq!(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) }, 0);
        nix::unistd::setgroups(&[]).unwrap();
        let (u, g) = (
            nix::unistd::Uid::from_raw(uid),
            nix::unistd::Gid::from_raw(uid),
        );
        nix::unistd::setresgid(g, g, g).unwrap();
        nix::unistd::setresuid(u, u, u).unwrap();
    }
    if let Some(caps) = &plan.caps {
        step(plan, "capabilities", capabilities::apply(caps.as_ref()));
    }
    if plan.no_new_privs {
        // SAFETY: prctl with integer arguments only.
        assert_eq!(
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
            0
        );
        if let Some(f) = &filter {
            step(plan, "seccomp", seccomp::install(f));
        }
    }
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
    for line in status.lines().filter(|l| {
        l.starts_with("Cap") || l.starts_with("NoNewPrivs") || l.starts_with("Seccomp:")
    }) {
        say(&format!("PRE {line}"));
    }
    for (label, nr, a) in &plan.probes {
        // SAFETY: each probe is a syscall whose pointer arguments are NULL; a clone that
        // succeeds returns 0 in the copy, which exits at once.
        let r = unsafe { libc::syscall(*nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
        let errno = if r < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        };
        if r == 0 && *nr == libc::SYS_clone {
            // SAFETY: _exit in the cloned copy; it must not run the test's code.
            unsafe { libc::_exit(0) };
        }
        say(&format!("PROBE {label} {r} {errno}"));
    }
    let argv: Vec<std::ffi::CString> = plan
        .exec
        .iter()
        .map(|a| std::ffi::CString::new(a.as_str()).unwrap())
        .collect();
    let e = nix::unistd::execv(&argv[0], &argv).unwrap_err();
    say(&format!("ERROR exec: {e}"));
    std::process::exit(98)
}

struct Run {
    out: String,
    err: String,
    status: ExitStatus,
}

/// Runs `plan` in a child (see the module doc); in the child, never returns.
fn run(name: &str, plan: &Plan) -> Run {
    if std::env::var(CHILD_ENV).as_deref() == Ok(name) {
        child_main(plan);
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(CHILD_ENV, name)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
        status: out.status,
    }
}

fn cat(files: &[&str]) -> Vec<String> {
    let mut v = vec![BUSYBOX.to_string(), "cat".to_string()];
    v.extend(files.iter().map(|f| f.to_string()));
    v
}

/// The value of "key:" in the output ("PRE CapEff" for the child's own line).
fn value<'a>(out: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}:");
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key:?} in the child's output:\n{out}"))
}

fn probe(out: &str, label: &str) -> (i64, i32) {
    let prefix = format!("PROBE {label} ");
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no probe {label} in the child's output:\n{out}"));
    let mut it = line.split(' ').map(|n| n.parse::<i64>().unwrap());
    (it.next().unwrap(), it.next().unwrap() as i32)
}

fn mask(caps: &[Capability]) -> String {
    format!(
        "{:016x}",
        caps.iter()
            .fold(0u64, |m, c| m | 1 << capabilities::number(*c))
    )
}

fn caps(v: serde_json::Value) -> LinuxCapabilities {
    serde_json::from_value(v).unwrap()
}

fn profile(v: serde_json::Value) -> LinuxSeccomp {
    serde_json::from_value(v).unwrap()
}

fn rlimit(typ: &str, soft: u64, hard: u64) -> PosixRlimit {
    serde_json::from_value(json!({"type": typ, "soft": soft, "hard": hard})).unwrap()
}

/// "soft hard" of a /proc/<pid>/limits line.
fn limits_of(out: &str, what: &str) -> String {
    let line = out
        .lines()
        .find(|l| l.starts_with(what))
        .unwrap_or_else(|| panic!("no {what:?} in the child's output:\n{out}"));
    let fields: Vec<&str> = line[what.len()..].split_whitespace().collect();
    format!("{} {}", fields[0], fields[1])
}

// ---------------------------------------------------------------------------------------
// Capabilities.

#[test]
fn capabilities_root_gets_each_set_as_written() {
    use Capability::*;
    let plan = Plan {
        caps: Some(Some(caps(json!({
            "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "effective": ["CAP_CHOWN", "CAP_KILL"],
            "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "inheritable": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
            // CAP_CHOWN is not inheritable, so the kernel refuses it; crun ignores that.
            "ambient": ["CAP_KILL", "CAP_CHOWN"],
        })))),
        exec: cat(&["/proc/self/status"]),
        ..Plan::default()
    };
    let r = run("capabilities_root_gets_each_set_as_written", &plan);
    assert!(r.status.success(), "{} {}", r.out, r.err);
    assert_eq!(
        value(&r.out, "PRE CapBnd"),
        mask(&[Chown, Kill, NetBindService])
    );
    assert_eq!(value(&r.out, "PRE CapEff"), mask(&[Chown, Kill]));
    assert_eq!(
        value(&r.out, "PRE CapPrm"),
        mask(&[Chown, Kill, NetBindService])
    );
    assert_eq!(value(&r.out, "PRE CapInh"), mask(&[Kill, NetBindService]));
    assert_eq!(value(&r.out, "PRE CapAmb"), mask(&[Kill]));
    // After execve as uid 0 the kernel grants bounding ∪ inheritable.
    assert_eq!(
        value(&r.out, "CapBnd"),
        mask(&[Chown, Kill, NetBindService])
    );
    assert_eq!(
        value(&r.out, "CapPrm"),
        mask(&[Chown, Kill, NetBindService])
    );
    assert_eq!(
        value(&r.out, "CapEff"),
        mask(&[Chown, Kill, NetBindService])
    );
    assert_eq!(value(&r.out, "CapInh"), mask(&[Kill, NetBindService]));
}

#[test]
fn capabilities_survive_setuid_with_keepcaps() {
    use Capability::*;
    let plan = Plan {
        uid: Some(1000),
        caps: Some(Some(caps(json!({
            "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW"],
            "effective": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW"],
            "inheritable": ["CAP_NET_BIND_SERVICE"],
            "ambient": ["CAP_NET_BIND_SERVICE"],
        })))),
        exec: cat(&["/proc/self/status"]),
        ..Plan::default()
    };
    let r = run("capabilities_survive_setuid_with_keepcaps", &plan);
    assert!(r.status.success(), "{} {}", r.out, r.err);
    assert_eq!(value(&r.out, "Uid"), "1000\t1000\t1000\t1000");
    assert_eq!(
        value(&r.out, "PRE CapBnd"),
        mask(&[Chown, Kill, NetBindService, NetRaw])
    );
    assert_eq!(value(&r.out, "PRE CapEff"), mask(&[Kill, NetBindService]));
    assert_eq!(
        value(&r.out, "PRE CapPrm"),
        mask(&[Kill, NetBindService, NetRaw])
    );
    assert_eq!(value(&r.out, "PRE CapInh"), mask(&[NetBindService]));
    assert_eq!(value(&r.out, "PRE CapAmb"), mask(&[NetBindService]));
    // A non-root program without file capabilities keeps only the ambient set.
    assert_eq!(
        value(&r.out, "CapBnd"),
        mask(&[Chown, Kill, NetBindService, NetRaw])
    );
    assert_eq!(value(&r.out, "CapPrm"), mask(&[NetBindService]));
    assert_eq!(value(&r.out, "CapEff"), mask(&[NetBindService]));
    assert_eq!(value(&r.out, "CapInh"), mask(&[NetBindService]));
    assert_eq!(value(&r.out, "CapAmb"), mask(&[NetBindService]));
}

#[test]
fn capabilities_none_drops_every_capability() {
    let plan = Plan {
        caps: Some(None),
        exec: cat(&["/proc/self/status"]),
        ..Plan::default()
    };
    let r = run("capabilities_none_drops_every_capability", &plan);
    assert!(r.status.success(), "{} {}", r.out, r.err);
    for key in [
        "PRE CapBnd",
        "PRE CapEff",
        "PRE CapPrm",
        "PRE CapInh",
        "PRE CapAmb",
        "CapBnd",
        "CapEff",
        "CapPrm",
    ] {
        assert_eq!(value(&r.out, key), "0000000000000000", "{key}");
    }
}

#[test]
fn capability_names_unknown_ones_are_errors_naming_them() {
    let e = capabilities::parse("CAP_BOGUS").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(
        e.to_string().contains("\"CAP_BOGUS\"") && e.to_string().contains("refused"),
        "{e}"
    );
    assert_eq!(
        capabilities::parse("net_admin").unwrap(),
        Capability::NetAdmin
    );
    assert_eq!(
        capabilities::parse("CAP_SYS_ADMIN").unwrap(),
        Capability::SysAdmin
    );
    assert_eq!(
        capabilities::name(Capability::NetBindService),
        "CAP_NET_BIND_SERVICE"
    );
    assert_eq!(capabilities::number(Capability::CheckpointRestore), 40);
}

#[test]
fn capabilities_effective_outside_permitted_is_refused_and_changes_nothing() {
    let plan = Plan {
        caps: Some(Some(caps(json!({
            "bounding": ["CAP_KILL"], "effective": ["CAP_SYS_ADMIN"], "permitted": ["CAP_KILL"],
        })))),
        continue_on_error: true,
        exec: cat(&["/proc/self/status"]),
        ..Plan::default()
    };
    let r = run(
        "capabilities_effective_outside_permitted_is_refused_and_changes_nothing",
        &plan,
    );
    assert!(r.status.success(), "{} {}", r.out, r.err);
    let line = r
        .out
        .lines()
        .find(|l| l.starts_with("ERROR capabilities"))
        .unwrap_or_else(|| panic!("{}", r.out));
    assert!(
        line.contains("CAP_SYS_ADMIN") && line.contains("permitted"),
        "{line}"
    );
    let mine = std::fs::read_to_string("/proc/self/status").unwrap();
    assert_eq!(
        value(&r.out, "PRE CapBnd"),
        value(&mine, "CapBnd"),
        "the bounding set was touched"
    );
    assert_eq!(
        value(&r.out, "PRE CapEff"),
        value(&mine, "CapEff"),
        "the effective set was touched"
    );
}

// ---------------------------------------------------------------------------------------
// Rlimits.

#[test]
fn rlimits_are_seen_in_proc_limits() {
    let plan = Plan {
        rlimits: vec![
            rlimit("RLIMIT_NOFILE", 1024, 2048),
            rlimit("RLIMIT_CORE", 0, 4096),
            rlimit("RLIMIT_NPROC", 500, 1000),
            // Unlimited already: raising a hard limit needs CAP_SYS_RESOURCE, which the
            // test host may withhold.
            rlimit("RLIMIT_CPU", u64::MAX, u64::MAX),
        ],
        exec: cat(&["/proc/self/limits"]),
        ..Plan::default()
    };
    let r = run("rlimits_are_seen_in_proc_limits", &plan);
    assert!(r.status.success(), "{} {}", r.out, r.err);
    assert_eq!(limits_of(&r.out, "Max open files"), "1024 2048");
    assert_eq!(limits_of(&r.out, "Max core file size"), "0 4096");
    assert_eq!(limits_of(&r.out, "Max processes"), "500 1000");
    assert_eq!(limits_of(&r.out, "Max cpu time"), "unlimited unlimited");
}

#[test]
fn rlimits_soft_above_hard_is_refused_and_changes_nothing() {
    let plan = Plan {
        rlimits: vec![
            rlimit("RLIMIT_NOFILE", 1000, 1001),
            rlimit("RLIMIT_STACK", 1 << 24, 1 << 20),
        ],
        continue_on_error: true,
        exec: cat(&["/proc/self/limits"]),
        ..Plan::default()
    };
    let r = run(
        "rlimits_soft_above_hard_is_refused_and_changes_nothing",
        &plan,
    );
    assert!(r.status.success(), "{} {}", r.out, r.err);
    let line = r
        .out
        .lines()
        .find(|l| l.starts_with("ERROR rlimits"))
        .unwrap_or_else(|| panic!("{}", r.out));
    assert!(
        line.contains("RLIMIT_STACK") && line.contains("16777216") && line.contains("1048576"),
        "{line}"
    );
    let mine = std::fs::read_to_string("/proc/self/limits").unwrap();
    assert_eq!(
        limits_of(&r.out, "Max open files"),
        limits_of(&mine, "Max open files")
    );
    assert_eq!(
        limits_of(&r.out, "Max stack size"),
        limits_of(&mine, "Max stack size")
    );
}

// ---------------------------------------------------------------------------------------
// Seccomp.

#[test]
fn seccomp_default_profile_allows_and_refuses_as_docker() {
    let plan = Plan {
        seccomp: Some(Filter::Default),
        probes: vec![
            ("getpid", libc::SYS_getpid, [0; 6]),
            ("keyctl", libc::SYS_keyctl, [0, (-3i64) as u64, 0, 0, 0, 0]),
            (
                "unshare",
                libc::SYS_unshare,
                [libc::CLONE_NEWUTS as u64, 0, 0, 0, 0, 0],
            ),
            ("mount", libc::SYS_mount, [0; 6]),
            // Bad magic: the kernel would answer EINVAL, the filter EPERM.
            ("reboot", libc::SYS_reboot, [0; 6]),
            (
                "personality-query",
                libc::SYS_personality,
                [0xffff_ffff, 0, 0, 0, 0, 0],
            ),
            (
                "personality-norandom",
                libc::SYS_personality,
                [0x0040000, 0, 0, 0, 0, 0],
            ),
            (
                "clone-newuts",
                libc::SYS_clone,
                [(libc::CLONE_NEWUTS | libc::SIGCHLD) as u64, 0, 0, 0, 0, 0],
            ),
            ("clone3", libc::SYS_clone3, [0; 6]),
            (
                "socket-vsock",
                libc::SYS_socket,
                [40, libc::SOCK_STREAM as u64, 0, 0, 0, 0],
            ),
            (
                "socket-unix",
                libc::SYS_socket,
                [libc::AF_UNIX as u64, libc::SOCK_STREAM as u64, 0, 0, 0, 0],
            ),
        ],
        exec: cat(&["/proc/self/status"]),
        ..Plan::default()
    };
    let r = run(
        "seccomp_default_profile_allows_and_refuses_as_docker",
        &plan,
    );
    assert!(r.status.success(), "{} {}", r.out, r.err);
    assert!(probe(&r.out, "getpid").0 > 0);
    for denied in [
        "keyctl",
        "unshare",
        "mount",
        "reboot",
        "personality-norandom",
        "clone-newuts",
        "socket-vsock",
    ] {
        assert_eq!(probe(&r.out, denied), (-1, libc::EPERM), "{denied}");
    }
    assert!(probe(&r.out, "personality-query").0 >= 0);
    assert!(probe(&r.out, "socket-unix").0 >= 0);
    assert_eq!(
        probe(&r.out, "clone3"),
        (-1, libc::ENOSYS),
        "clone3 gets ENOSYS so glibc falls back to clone"
    );
    assert_eq!(value(&r.out, "Seccomp"), "2");
    assert_eq!(value(&r.out, "Seccomp_filters"), "1");
    assert_eq!(
        value(&r.out, "NoNewPrivs"),
        "0",
        "install must not set no_new_privs itself"
    );
}

#[test]
fn seccomp_default_profile_follows_the_capabilities() {
    let with_admin: oci_spec::runtime::Capabilities = [Capability::SysAdmin, Capability::Kill]
        .into_iter()
        .collect();
    let plan = Plan {
        seccomp: Some(Filter::Spec(seccomp::default_profile(&with_admin))),
        probes: vec![
            (
                "unshare",
                libc::SYS_unshare,
                [libc::CLONE_NEWUTS as u64, 0, 0, 0, 0, 0],
            ),
            ("mount", libc::SYS_mount, [0; 6]),
            ("clone3", libc::SYS_clone3, [0; 6]),
            ("reboot", libc::SYS_reboot, [0; 6]),
        ],
        exec: cat(&["/proc/self/status"]),
        ..Plan::default()
    };
    let r = run("seccomp_default_profile_follows_the_capabilities", &plan);
    assert!(r.status.success(), "{} {}", r.out, r.err);
    assert_eq!(probe(&r.out, "unshare"), (0, 0));
    assert_eq!(
        probe(&r.out, "mount"),
        (-1, libc::EFAULT),
        "mount reaches the kernel with CAP_SYS_ADMIN"
    );
    assert_eq!(
        probe(&r.out, "clone3"),
        (-1, libc::EINVAL),
        "clone3 reaches the kernel with CAP_SYS_ADMIN"
    );
    assert_eq!(
        probe(&r.out, "reboot"),
        (-1, libc::EPERM),
        "reboot still needs CAP_SYS_BOOT"
    );
}

#[test]
fn seccomp_oci_profile_refuses_one_syscall() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("made-by-child");
    let plan = Plan {
        seccomp: Some(Filter::Spec(profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
        })))),
        exec: vec![
            BUSYBOX.into(),
            "sh".into(),
            "-c".into(),
            format!(
                "{BUSYBOX} mkdir {}; {BUSYBOX} cat /proc/self/status",
                target.display()
            ),
        ],
        ..Plan::default()
    };
    let r = run("seccomp_oci_profile_refuses_one_syscall", &plan);
    assert!(
        r.err.contains("Operation not permitted"),
        "{} {}",
        r.out,
        r.err
    );
    assert!(!target.exists());
    assert_eq!(value(&r.out, "Seccomp"), "2");
}

#[test]
fn seccomp_errno_ret_is_the_errno_returned() {
    let plan = Plan {
        seccomp: Some(Filter::Spec(profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EROFS}],
        })))),
        probes: vec![
            ("getppid", libc::SYS_getppid, [0; 6]),
            ("getpid", libc::SYS_getpid, [0; 6]),
        ],
        exec: cat(&["/proc/self/status"]),
        ..Plan::default()
    };
    let r = run("seccomp_errno_ret_is_the_errno_returned", &plan);
    assert!(r.status.success(), "{} {}", r.out, r.err);
    assert_eq!(probe(&r.out, "getppid"), (-1, libc::EROFS));
    assert!(probe(&r.out, "getpid").0 > 0);
}

#[test]
fn seccomp_argument_conditions_follow_libseccomp() {
    let errno = |name: &str, args: serde_json::Value| json!({"names": [name], "action": "SCMP_ACT_ERRNO", "args": args});
    let plan = Plan {
        seccomp: Some(Filter::Spec(profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                errno("getpgid", json!([{"index": 0, "value": NOPID, "op": "SCMP_CMP_EQ"}])),
                errno("getsid", json!([{"index": 0, "value": NOPID, "op": "SCMP_CMP_NE"}])),
                errno("sched_getscheduler", json!([{"index": 0, "value": NOPID, "op": "SCMP_CMP_GT"}])),
                errno("kill", json!([{"index": 0, "value": NOPID + 4, "op": "SCMP_CMP_GE"}])),
                errno("pidfd_open", json!([{"index": 0, "value": NOPID, "op": "SCMP_CMP_LT"}])),
                errno("getpriority", json!([{"index": 1, "value": NOPID, "op": "SCMP_CMP_LE"}])),
                errno("unshare", json!([{"index": 0, "value": libc::CLONE_NEWUTS, "valueTwo": libc::CLONE_NEWUTS, "op": "SCMP_CMP_MASKED_EQ"}])),
                // Different arguments: all must hold.
                errno("tgkill", json!([{"index": 0, "value": NOPID, "op": "SCMP_CMP_EQ"}, {"index": 2, "value": 0, "op": "SCMP_CMP_EQ"}])),
                // The same argument twice: either may hold (crun and runc split them).
                errno("sched_rr_get_interval", json!([{"index": 0, "value": NOPID, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": NOPID + 1, "op": "SCMP_CMP_EQ"}])),
            ],
        })))),
        probes: vec![
            ("eq-hit", libc::SYS_getpgid, [NOPID, 0, 0, 0, 0, 0]),
            ("eq-miss", libc::SYS_getpgid, [NOPID + 1, 0, 0, 0, 0, 0]),
            (
                "eq-64bit",
                libc::SYS_getpgid,
                [NOPID | (1 << 32), 0, 0, 0, 0, 0],
            ),
            ("ne-hit", libc::SYS_getsid, [NOPID + 1, 0, 0, 0, 0, 0]),
            ("ne-miss", libc::SYS_getsid, [NOPID, 0, 0, 0, 0, 0]),
            (
                "gt-hit",
                libc::SYS_sched_getscheduler,
                [NOPID + 1, 0, 0, 0, 0, 0],
            ),
            (
                "gt-miss",
                libc::SYS_sched_getscheduler,
                [NOPID, 0, 0, 0, 0, 0],
            ),
            ("ge-hit", libc::SYS_kill, [NOPID + 4, 0, 0, 0, 0, 0]),
            ("ge-miss", libc::SYS_kill, [NOPID + 3, 0, 0, 0, 0, 0]),
            ("lt-hit", libc::SYS_pidfd_open, [NOPID - 1, 0, 0, 0, 0, 0]),
            ("lt-miss", libc::SYS_pidfd_open, [NOPID, 0, 0, 0, 0, 0]),
            (
                "le-hit",
                libc::SYS_getpriority,
                [libc::PRIO_PROCESS as u64, NOPID, 0, 0, 0, 0],
            ),
            (
                "le-miss",
                libc::SYS_getpriority,
                [libc::PRIO_PROCESS as u64, NOPID + 1, 0, 0, 0, 0],
            ),
            (
                "masked-hit",
                libc::SYS_unshare,
                [
                    (libc::CLONE_NEWUTS | libc::CLONE_NEWIPC) as u64,
                    0,
                    0,
                    0,
                    0,
                    0,
                ],
            ),
            ("masked-miss", libc::SYS_unshare, [0; 6]),
            ("and-hit", libc::SYS_tgkill, [NOPID, 1, 0, 0, 0, 0]),
            (
                "and-miss",
                libc::SYS_tgkill,
                [NOPID, 1, libc::SIGTERM as u64, 0, 0, 0],
            ),
            (
                "or-first",
                libc::SYS_sched_rr_get_interval,
                [NOPID, 0, 0, 0, 0, 0],
            ),
            (
                "or-second",
                libc::SYS_sched_rr_get_interval,
                [NOPID + 1, 0, 0, 0, 0, 0],
            ),
            (
                "or-neither",
                libc::SYS_sched_rr_get_interval,
                [NOPID + 2, 0, 0, 0, 0, 0],
            ),
        ],
        exec: cat(&["/proc/self/status"]),
        ..Plan::default()
    };
    let r = run("seccomp_argument_conditions_follow_libseccomp", &plan);
    assert!(r.status.success(), "{} {}", r.out, r.err);
    for hit in [
        "eq-hit",
        "ne-hit",
        "gt-hit",
        "ge-hit",
        "lt-hit",
        "le-hit",
        "masked-hit",
        "and-hit",
        "or-first",
        "or-second",
    ] {
        assert_eq!(probe(&r.out, hit), (-1, libc::EPERM), "{hit}");
    }
    // Misses reach the kernel, which finds no such process.
    for miss in [
        "eq-miss",
        "eq-64bit",
        "ne-miss",
        "gt-miss",
        "ge-miss",
        "lt-miss",
        "le-miss",
        "and-miss",
        "or-neither",
    ] {
        assert_eq!(probe(&r.out, miss), (-1, libc::ESRCH), "{miss}");
    }
    assert_eq!(probe(&r.out, "masked-miss"), (0, 0));
}

#[test]
fn seccomp_kill_process_kills_with_sigsys() {
    let plan = Plan {
        seccomp: Some(Filter::Spec(profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"}],
        })))),
        probes: vec![("getppid", libc::SYS_getppid, [0; 6])],
        exec: cat(&["/proc/self/status"]),
        ..Plan::default()
    };
    let r = run("seccomp_kill_process_kills_with_sigsys", &plan);
    assert_eq!(
        r.status.signal(),
        Some(libc::SIGSYS),
        "{:?} {} {}",
        r.status,
        r.out,
        r.err
    );
    assert!(!r.out.contains("PROBE getppid"));
}

#[test]
fn seccomp_refuses_what_it_cannot_translate() {
    let bad = [
        (
            json!({"defaultAction": "SCMP_ACT_NOTIFY"}),
            "SCMP_ACT_NOTIFY",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 5}),
            "defaultErrnoRet",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "errnoRet": 3}]}),
            "syscalls[0].errnoRet",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}),
            "index 6",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock"}),
            "listenerPath",
        ),
    ];
    for (spec, names) in bad {
        let e = seccomp::compile(Some(&profile(spec))).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert!(
            e.to_string().contains(names) && e.to_string().contains("refused"),
            "{e}"
        );
    }
    let f = seccomp::compile(Some(&profile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "no_such_syscall", "chown32"], "action": "SCMP_ACT_ERRNO"}],
    }))))
    .unwrap();
    assert_eq!(f.skipped, ["no_such_syscall", "chown32"]);
    assert_eq!(
        f.flags,
        libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW as u32,
        "crun's flag when linux.seccomp.flags is absent"
    );
    let d = seccomp::compile(None).unwrap();
    assert!(d.skipped.iter().any(|s| s == "mmap2") && !d.skipped.iter().any(|s| s == "read"));
    assert!(d.program.len() < 4096);
    let explicit =
        profile(json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_LOG"]}));
    assert_eq!(
        seccomp::compile(Some(&explicit)).unwrap().flags,
        libc::SECCOMP_FILTER_FLAG_LOG as u32
    );
}

// ---------------------------------------------------------------------------------------
// cgroup v2.

fn resources(v: serde_json::Value) -> LinuxResources {
    serde_json::from_value(v).unwrap()
}

fn files(r: &LinuxResources) -> Vec<(String, String)> {
    cgroup::settings(r)
        .unwrap()
        .into_iter()
        .map(|s| (s.file, s.value))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(f, v)| (f.to_string(), v.to_string()))
        .collect()
}

#[test]
fn cgroup_settings_are_crun_s() {
    let r = resources(json!({
        "memory": {"limit": 268435456, "swap": 536870912, "reservation": 134217728},
        "pids": {"limit": 100},
        "cpu": {"shares": 1024, "quota": 50000, "period": 100000},
        "blockIO": {
            "weight": 500,
            "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
            "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 300}],
        },
        "unified": {"memory.high": "200000000"},
    }));
    assert_eq!(
        files(&r),
        pairs(&[
            ("memory.max", "268435456"),
            ("memory.swap.max", "268435456"),
            ("memory.low", "134217728"),
            ("pids.max", "100"),
            ("cpu.weight", "39"),
            ("cpu.max", "50000 100000"),
            ("io.bfq.weight", "500"),
            ("io.max", "8:0 rbps=1048576"),
            ("io.max", "8:16 wiops=300"),
            ("memory.high", "200000000"),
        ])
    );
    let all = cgroup::settings(&r).unwrap();
    assert_eq!(
        all[1].missing,
        Missing::Skip,
        "no swap accounting: skipped, as crun"
    );
    assert_eq!(
        all[6].missing,
        Missing::Instead {
            file: "io.weight".into(),
            value: "4950".into()
        }
    );

    let unlimited = resources(
        json!({"memory": {"limit": -1, "swap": -1}, "pids": {"limit": -1}, "cpu": {"quota": -1, "period": 50000}}),
    );
    assert_eq!(
        files(&unlimited),
        pairs(&[
            ("memory.max", "max"),
            ("memory.swap.max", "max"),
            ("pids.max", "max"),
            ("cpu.max", "max 50000")
        ])
    );
    let quota_only = resources(json!({"cpu": {"quota": 20000, "shares": 2}}));
    assert_eq!(
        files(&quota_only),
        pairs(&[("cpu.weight", "1"), ("cpu.max", "20000 100000")])
    );
    assert_eq!(
        files(&resources(json!({"cpu": {"shares": 262144}}))),
        pairs(&[("cpu.weight", "10000")])
    );

    let refused = [
        (json!({"memory": {"swap": 1000}}), "memory.swap"),
        (
            json!({"memory": {"limit": 2000, "swap": 1000}}),
            "memory.swap",
        ),
        (json!({"memory": {"kernel": 1000}}), "memory.kernel"),
        (json!({"memory": {"swappiness": 10}}), "memory.swappiness"),
        (json!({"cpu": {"realtimeRuntime": 1000}}), "cpu.realtime"),
        (json!({"network": {"classID": 1}}), "network"),
        (json!({"unified": {"../memory.max": "1"}}), "unified"),
    ];
    for (spec, field) in refused {
        let e = cgroup::settings(&resources(spec)).unwrap_err();
        assert!(
            e.to_string().contains(field) && e.to_string().contains("refused"),
            "{e}"
        );
    }
}

/// The first cgroup2 mount point of this host.
fn cgroup2_mount() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split(' ').next()? == "cgroup2")
                .then(|| PathBuf::from(left.split(' ').nth(4).unwrap()))
        })
        .expect("this test needs a cgroup2 mount (/sys/fs/cgroup or /sys/fs/cgroup/unified)")
}

/// A scratch directory under the cgroup2 mount, removed (processes killed) on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        Scratch(cgroup2_mount().join(format!("tessera-limits-{tag}-{}", std::process::id())))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let c = Cgroup::open(self.0.clone());
        let _ = c.kill();
        let _ = c.remove();
    }
}

fn sleeper() -> std::process::Child {
    Command::new(BUSYBOX)
        .args(["sleep", "30"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

fn procs(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

#[test]
fn cgroup_holds_kills_and_removes_its_processes() {
    let scratch = Scratch::new("life");
    let parent = scratch.0.join("containers");
    let cg = Cgroup::create(&parent, "c1", None).unwrap();
    assert_eq!(cg.dir, parent.join("c1"));
    assert!(cg.dir.join("cgroup.procs").is_file());

    let mut a = sleeper();
    let mut b = sleeper();
    cg.add(a.id() as i32).unwrap();
    {
        use std::io::Write;
        cg.procs_file()
            .unwrap()
            .write_all(b.id().to_string().as_bytes())
            .unwrap();
    }
    let mut inside = procs(&cg.dir);
    inside.sort();
    let mut expected = vec![a.id(), b.id()];
    expected.sort();
    assert_eq!(inside, expected);

    let stats = cg.stats().unwrap();
    assert!(
        stats.cpu.is_some(),
        "cpu.stat is in every cgroup v2 directory"
    );
    let enabled = std::fs::read_to_string(cg.dir.join("cgroup.controllers")).unwrap();
    assert_eq!(
        stats.memory.is_some(),
        enabled.split_whitespace().any(|c| c == "memory")
    );
    assert_eq!(
        stats.pids.is_some(),
        enabled.split_whitespace().any(|c| c == "pids")
    );
    let json = serde_json::to_value(&stats).unwrap();
    assert!(json["cpu"]["usage_usec"].is_u64(), "{json}");

    let again = Cgroup::open(cg.dir.clone());
    again.kill().unwrap();
    assert_eq!(a.wait().unwrap().signal(), Some(libc::SIGKILL));
    assert_eq!(b.wait().unwrap().signal(), Some(libc::SIGKILL));
    again.remove().unwrap();
    assert!(!cg.dir.exists());
    again.remove().unwrap();
    assert!(
        Cgroup::create(&parent, "c1", None).is_ok(),
        "the name is free again"
    );
    let e = Cgroup::create(&parent, "c1", None).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
}

#[test]
fn cgroup_limits_need_their_controllers() {
    let scratch = Scratch::new("limits");
    let parent = scratch.0.join("a").join("b");
    let r = resources(json!({"memory": {"limit": 268435456}, "pids": {"limit": 100}}));
    let root = cgroup2_mount();
    let offered = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap();
    let has = |c: &str| offered.split_whitespace().any(|o| o == c);
    if has("memory") && has("pids") {
        let cg = Cgroup::create(&parent, "c", Some(&r)).unwrap();
        assert_eq!(
            std::fs::read_to_string(cg.dir.join("memory.max"))
                .unwrap()
                .trim(),
            "268435456"
        );
        assert_eq!(
            std::fs::read_to_string(cg.dir.join("pids.max"))
                .unwrap()
                .trim(),
            "100"
        );
        let stats = cg.stats().unwrap();
        assert_eq!(stats.memory.as_ref().and_then(|m| m.max), Some(268435456));
        assert_eq!(stats.pids.as_ref().and_then(|p| p.max), Some(100));
        cg.remove().unwrap();
    } else {
        // A hybrid host: memory and pids are bound to cgroup v1.
        let e = Cgroup::create(&parent, "c", Some(&r)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::Unsupported, "{e}");
        assert!(
            e.to_string().contains("controller is not available")
                && e.to_string().contains(root.to_str().unwrap()),
            "{e}"
        );
        assert!(
            !scratch.0.exists(),
            "the directories the call made are gone"
        );
    }
}

#[test]
fn cgroup_refuses_bad_names_and_leaves_nothing() {
    let scratch = Scratch::new("names");
    for id in ["", "..", "a/b"] {
        let e = Cgroup::create(&scratch.0, id, None).unwrap_err();
        assert!(e.to_string().contains("refused"), "{e}");
    }
    let e = Cgroup::create(Path::new("relative/parent"), "c", None).unwrap_err();
    assert!(e.to_string().contains("absolute"), "{e}");
    let tmp = tempfile::tempdir().unwrap();
    let e = Cgroup::create(&tmp.path().join("p"), "c", None).unwrap_err();
    assert!(e.to_string().contains("not under a cgroup2 mount"), "{e}");
    assert!(!tmp.path().join("p").exists());
    let e = Cgroup::create(
        &scratch.0,
        "c",
        Some(&resources(json!({"memory": {"kernel": 1}}))),
    )
    .unwrap_err();
    assert!(e.to_string().contains("memory.kernel"), "{e}");
    assert!(!scratch.0.exists());
}

// ---------------------------------------------------------------------------------------
// Against crun.

const COMPARED: &[&str] = &[
    "CapInh",
    "CapPrm",
    "CapEff",
    "CapBnd",
    "CapAmb",
    "NoNewPrivs",
    "Seccomp",
    "Seccomp_filters",
    "Speculation_Store_Bypass",
];

fn crun_run(config: &serde_json::Value) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    std::fs::create_dir_all(bundle.join("rootfs/bin")).unwrap();
    std::fs::create_dir_all(bundle.join("rootfs/proc")).unwrap();
    std::fs::create_dir_all(bundle.join("rootfs/dev")).unwrap();
    std::fs::copy(BUSYBOX, bundle.join("rootfs/bin/busybox")).unwrap();
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(config).unwrap(),
    )
    .unwrap();
    let state = tmp.path().join("state");
    let id = format!(
        "tessera-limits-{}-{}",
        std::process::id(),
        config["process"]["user"]["uid"]
    );
    // crun refuses a hybrid host whose cgroup2 mount has any controller ("drop all
    // controllers from cgroupv2"), even without a cgroup manager: hide that mount from it
    // in a mount namespace of its own, where it sees a cgroup v1 host.
    let hybrid = std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
        .is_ok_and(|c| !c.trim().is_empty());
    let mut cmd = if hybrid {
        let mut c = Command::new("unshare");
        c.args([
            "--mount",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            "umount /sys/fs/cgroup/unified && exec crun \"$@\"",
            "sh",
        ]);
        c
    } else {
        Command::new("crun")
    };
    let out = cmd
        .arg("--root")
        .arg(&state)
        .args(["--cgroup-manager=disabled", "run", "-b"])
        .arg(&bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .output()
        .expect("crun is needed for this test: apt-get install -y crun");
    let _ = Command::new("crun")
        .arg("--root")
        .arg(&state)
        .args(["delete", "-f", &id])
        .output();
    assert!(
        out.status.success(),
        "crun: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn compare_with_crun(name: &str, uid: u32, no_new_privs: bool) {
    let caps_json = json!({
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_SETUID", "CAP_SETGID"],
        "effective": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID"],
        "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SYS_CHROOT"],
        "inheritable": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
        "ambient": ["CAP_NET_BIND_SERVICE"],
    });
    let bounding = caps(caps_json.clone()).bounding().clone().unwrap();
    let seccomp_profile = seccomp::default_profile(&bounding);
    let rlimits = json!([{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 2048}, {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}]);
    let files = ["/proc/self/status", "/proc/self/limits"];
    let plan = Plan {
        rlimits: serde_json::from_value(rlimits.clone()).unwrap(),
        seccomp: Some(Filter::Spec(seccomp_profile.clone())),
        caps: Some(Some(caps(caps_json.clone()))),
        uid: (uid != 0).then_some(uid),
        no_new_privs,
        exec: cat(&files),
        ..Plan::default()
    };
    let ours = run(name, &plan);
    assert!(ours.status.success(), "{} {}", ours.out, ours.err);
    let config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": uid},
            "args": ["/bin/busybox", "cat", files[0], files[1]],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "capabilities": caps_json,
            "rlimits": rlimits,
            "noNewPrivileges": no_new_privs,
        },
        "root": {"path": "rootfs"},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}], "seccomp": seccomp_profile},
    });
    let theirs = crun_run(&config);
    let pick = |out: &str| -> BTreeMap<String, String> {
        let mut m: BTreeMap<String, String> = COMPARED
            .iter()
            .filter_map(|k| {
                let prefix = format!("{k}:");
                out.lines()
                    .find_map(|l| l.strip_prefix(&prefix))
                    .map(|v| (k.to_string(), v.trim().to_string()))
            })
            .collect();
        for limit in ["Max open files", "Max core file size"] {
            m.insert(limit.to_string(), limits_of(out, limit));
        }
        m
    };
    let (a, b) = (pick(&ours.out), pick(&theirs));
    assert_eq!(a.len(), COMPARED.len() + 2, "{}", ours.out);
    assert_eq!(
        a, b,
        "ours (left) and crun's (right) differ\n--- ours:\n{}\n--- crun:\n{theirs}",
        ours.out
    );
    assert_eq!(a["Seccomp"], "2");
}

#[test]
fn crun_agrees_as_root_without_no_new_privs() {
    compare_with_crun("crun_agrees_as_root_without_no_new_privs", 0, false);
}

#[test]
fn crun_agrees_as_uid_1000_with_no_new_privs() {
    compare_with_crun("crun_agrees_as_uid_1000_with_no_new_privs", 1000, true);
}
