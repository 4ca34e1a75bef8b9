//! `process.rlimits` applied with setrlimit(2), in config.json's order (a type given twice:
//! the last wins), as crun does. The init applies them before it drops capabilities: raising
//! a hard limit above the current one needs CAP_SYS_RESOURCE. All entries are checked before
//! the first is applied, so a soft limit above its hard limit changes nothing.

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use oci_spec::runtime::{PosixRlimit, PosixRlimitType};
use std::io;

/// Why an rlimit cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum RlimitError {
    #[error(
        "process.rlimits {name}: soft {soft} is above hard {hard}: refused; make soft at most hard"
    )]
    SoftAboveHard {
        name: &'static str,
        soft: u64,
        hard: u64,
    },
    #[error("process.rlimits {name}: soft {soft} hard {hard}: {source}; {hint}")]
    Refused {
        name: &'static str,
        soft: u64,
        hard: u64,
        source: io::Error,
        hint: String,
    },
}

impl From<RlimitError> for io::Error {
    fn from(e: RlimitError) -> io::Error {
        let kind = match &e {
            RlimitError::Refused { source, .. } => source.kind(),
            RlimitError::SoftAboveHard { .. } => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

/// The resource and its name in config.json.
fn resource(typ: PosixRlimitType) -> (Resource, &'static str) {
    use PosixRlimitType as T;
    match typ {
        T::RlimitCpu => (Resource::RLIMIT_CPU, "RLIMIT_CPU"),
        T::RlimitFsize => (Resource::RLIMIT_FSIZE, "RLIMIT_FSIZE"),
        T::RlimitData => (Resource::RLIMIT_DATA, "RLIMIT_DATA"),
        T::RlimitStack => (Resource::RLIMIT_STACK, "RLIMIT_STACK"),
        T::RlimitCore => (Resource::RLIMIT_CORE, "RLIMIT_CORE"),
        T::RlimitRss => (Resource::RLIMIT_RSS, "RLIMIT_RSS"),
        T::RlimitNproc => (Resource::RLIMIT_NPROC, "RLIMIT_NPROC"),
        T::RlimitNofile => (Resource::RLIMIT_NOFILE, "RLIMIT_NOFILE"),
        T::RlimitMemlock => (Resource::RLIMIT_MEMLOCK, "RLIMIT_MEMLOCK"),
        T::RlimitAs => (Resource::RLIMIT_AS, "RLIMIT_AS"),
        T::RlimitLocks => (Resource::RLIMIT_LOCKS, "RLIMIT_LOCKS"),
        T::RlimitSigpending => (Resource::RLIMIT_SIGPENDING, "RLIMIT_SIGPENDING"),
        T::RlimitMsgqueue => (Resource::RLIMIT_MSGQUEUE, "RLIMIT_MSGQUEUE"),
        T::RlimitNice => (Resource::RLIMIT_NICE, "RLIMIT_NICE"),
        T::RlimitRtprio => (Resource::RLIMIT_RTPRIO, "RLIMIT_RTPRIO"),
        T::RlimitRttime => (Resource::RLIMIT_RTTIME, "RLIMIT_RTTIME"),
    }
}

/// Applies each rlimit; a refused value is an error naming the type and the values.
/// u64::MAX is RLIM_INFINITY ("unlimited").
pub fn apply(rlimits: &[PosixRlimit]) -> io::Result<()> {
    for r in rlimits {
        let (_, name) = resource(r.typ());
        if r.soft() > r.hard() {
            return Err(RlimitError::SoftAboveHard {
                name,
                soft: r.soft(),
                hard: r.hard(),
            }
            .into());
        }
    }
    for r in rlimits {
        let (res, name) = resource(r.typ());
        if let Err(errno) = setrlimit(res, r.soft(), r.hard()) {
            let hint = refusal_hint(res, errno);
            let source = io::Error::from(errno);
            return Err(RlimitError::Refused {
                name,
                soft: r.soft(),
                hard: r.hard(),
                source,
                hint,
            }
            .into());
        }
    }
    Ok(())
}

fn refusal_hint(res: Resource, errno: nix::errno::Errno) -> String {
    let hard = getrlimit(res)
        .map(|(_, h)| h.to_string())
        .unwrap_or_else(|_| "unknown".to_string());
    match errno {
        nix::errno::Errno::EPERM if res == Resource::RLIMIT_NOFILE => format!(
            "a hard limit above the current one ({hard}) needs CAP_SYS_RESOURCE, and RLIMIT_NOFILE may not exceed fs.nr_open ({}); lower it or apply rlimits before dropping capabilities",
            std::fs::read_to_string("/proc/sys/fs/nr_open").map(|s| s.trim().to_string()).unwrap_or_else(|_| "unknown".to_string())
        ),
        nix::errno::Errno::EPERM => format!(
            "a hard limit above the current one ({hard}) needs CAP_SYS_RESOURCE; lower it or apply rlimits before dropping capabilities"
        ),
        _ => "the kernel refused the value; lower it".to_string(),
    }
}
