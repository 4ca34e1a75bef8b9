//! The counters of a container's cgroup: memory.current/max/events, cpu.stat, pids.current/max
//! and io.stat, each part None when its controller is not enabled there.

use super::{io_error, Cgroup, CgroupError};
use serde::Serialize;
use std::io;

/// What [`Cgroup::stats`] reads; a part is None when its controller is not enabled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub memory: Option<MemoryStats>,
    pub cpu: Option<CpuStats>,
    pub pids: Option<PidsStats>,
    pub io: Option<IoStats>,
}

/// memory.current, memory.max (None: "max"), memory.events' oom_kill.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MemoryStats {
    pub current: u64,
    pub max: Option<u64>,
    pub oom_kill: u64,
}

/// cpu.stat, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CpuStats {
    pub usage_usec: u64,
    pub user_usec: u64,
    pub system_usec: u64,
}

/// pids.current, pids.max (None: "max").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PidsStats {
    pub current: u64,
    pub max: Option<u64>,
}

/// io.stat's rbytes and wbytes summed over devices.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IoStats {
    pub rbytes: u64,
    pub wbytes: u64,
}

impl Cgroup {
    /// Memory, CPU, pids and I/O counters.
    pub fn stats(&self) -> io::Result<Stats> {
        let memory = match self.read_opt("memory.current")? {
            None => None,
            Some(current) => Some(MemoryStats {
                current: self.number("memory.current", &current)?,
                max: match self.read_opt("memory.max")? {
                    Some(v) => self.limit_value("memory.max", &v)?,
                    None => None,
                },
                oom_kill: match self.read_opt("memory.events")? {
                    Some(v) => self.key("memory.events", &v, "oom_kill")?.unwrap_or(0),
                    None => 0,
                },
            }),
        };
        let cpu = match self.read_opt("cpu.stat")? {
            None => None,
            Some(v) => Some(CpuStats {
                usage_usec: self.key("cpu.stat", &v, "usage_usec")?.unwrap_or(0),
                user_usec: self.key("cpu.stat", &v, "user_usec")?.unwrap_or(0),
                system_usec: self.key("cpu.stat", &v, "system_usec")?.unwrap_or(0),
            }),
        };
        let pids = match self.read_opt("pids.current")? {
            None => None,
            Some(current) => Some(PidsStats {
                current: self.number("pids.current", &current)?,
                max: match self.read_opt("pids.max")? {
                    Some(v) => self.limit_value("pids.max", &v)?,
                    None => None,
                },
            }),
        };
        let io = match self.read_opt("io.stat")? {
            None => None,
            Some(v) => {
                let mut s = IoStats::default();
                for field in v.split_whitespace() {
                    let (target, value) = match field.split_once('=') {
                        Some(("rbytes", n)) => (&mut s.rbytes, n),
                        Some(("wbytes", n)) => (&mut s.wbytes, n),
                        _ => continue,
                    };
                    *target = target.saturating_add(self.number("io.stat", value)?);
                }
                Some(s)
            }
        };
        Ok(Stats {
            memory,
            cpu,
            pids,
            io,
        })
    }

    fn read_opt(&self, file: &str) -> Result<Option<String>, CgroupError> {
        let path = self.dir.join(file);
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.dir.is_dir() => Ok(None),
            Err(e) => Err(io_error(
                "read",
                &path,
                e,
                "the cgroup must exist (Cgroup::create) and be readable",
            )),
        }
    }

    fn number(&self, file: &str, text: &str) -> Result<u64, CgroupError> {
        text.trim().parse().map_err(|_| {
            let source = io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{:?} is not a number", text.trim()),
            );
            io_error(
                "parse",
                &self.dir.join(file),
                source,
                "the kernel's format changed: report it",
            )
        })
    }

    fn limit_value(&self, file: &str, text: &str) -> Result<Option<u64>, CgroupError> {
        match text.trim() {
            "max" => Ok(None),
            v => self.number(file, v).map(Some),
        }
    }

    /// The value of `key` in a flat keyed file ("key value" lines).
    fn key(&self, file: &str, text: &str, key: &str) -> Result<Option<u64>, CgroupError> {
        match text
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        {
            Some(v) => self.number(file, v).map(Some),
            None => Ok(None),
        }
    }
}
