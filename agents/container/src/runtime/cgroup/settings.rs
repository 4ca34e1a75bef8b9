//! `linux.resources` turned into the files and values of the container's cgroup, as crun 1.8.1
//! writes them on cgroup v2 (see the parent module's doc for the list).

use super::CgroupError;
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources, LinuxThrottleDevice};
use std::collections::BTreeSet;
use std::io;

/// One value written to one file of the container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub file: String,
    pub value: String,
    /// The config.json field it comes from, for errors.
    pub field: String,
    pub missing: Missing,
}

/// What to do when the file does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    Fail,
    /// memory.swap.max without swap accounting: skipped, as crun skips it.
    Skip,
    /// io.bfq.weight without BFQ: this file and value instead.
    Instead {
        file: String,
        value: String,
    },
}

fn setting(file: impl Into<String>, value: impl Into<String>, field: &str) -> Setting {
    Setting {
        file: file.into(),
        value: value.into(),
        field: field.to_string(),
        missing: Missing::Fail,
    }
}

/// "max" for a negative limit (crun's convention for the .max/.low files).
fn limit(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

/// The files and values crun 1.8.1 writes for `resources` on cgroup v2, in its order.
pub fn settings(resources: &LinuxResources) -> io::Result<Vec<Setting>> {
    Ok(plan(resources)?)
}

pub(super) fn plan(r: &LinuxResources) -> Result<Vec<Setting>, CgroupError> {
    let mut out = Vec::new();
    if r.network().is_some() {
        return Err(CgroupError::Unsupported {
            field: "network".into(),
            why: "a cgroup v1 limit (net_cls/net_prio)",
        });
    }
    if r.rdma().as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(CgroupError::Unsupported {
            field: "rdma".into(),
            why: "not applied by Tessera",
        });
    }
    if let Some(m) = r.memory() {
        memory(m, &mut out)?;
    }
    if let Some(p) = r.pids() {
        if p.limit() != 0 {
            out.push(setting("pids.max", limit(p.limit()), "pids.limit"));
        }
    }
    if let Some(c) = r.cpu() {
        cpu(c, &mut out)?;
    }
    for (i, h) in r.hugepage_limits().iter().flatten().enumerate() {
        let size = h.page_size();
        if size.is_empty() || size.contains('/') {
            return Err(CgroupError::Invalid {
                field: format!("hugepageLimits[{i}].pageSize"),
                why: format!("{size:?} is not a page size"),
                fix: "give a size such as 2MB or 1GB",
            });
        }
        out.push(setting(
            format!("hugetlb.{size}.max"),
            limit(h.limit()),
            &format!("hugepageLimits[{i}].limit"),
        ));
    }
    if let Some(b) = r.block_io() {
        block_io(b, &mut out)?;
    }
    let mut unified: Vec<_> = r.unified().iter().flatten().collect();
    unified.sort();
    for (key, value) in unified {
        let field = format!("unified.{key}");
        if key.contains('/') || key.is_empty() {
            return Err(CgroupError::Invalid {
                field,
                why: "the key must be a file name".into(),
                fix: "use the cgroup file's name, such as memory.high",
            });
        }
        // crun writes each line on its own: some files take one entry per write.
        out.extend(
            value
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| setting(key.as_str(), l, &field)),
        );
    }
    Ok(out)
}

fn memory(m: &LinuxMemory, out: &mut Vec<Setting>) -> Result<(), CgroupError> {
    let v1_only = [
        ("memory.kernel", m.kernel().is_some()),
        ("memory.kernelTCP", m.kernel_tcp().is_some()),
        ("memory.swappiness", m.swappiness().is_some()),
        (
            "memory.disableOOMKiller",
            m.disable_oom_killer() == Some(true),
        ),
        ("memory.useHierarchy", m.use_hierarchy().is_some()),
    ];
    if let Some((field, _)) = v1_only.iter().find(|(_, set)| *set) {
        return Err(CgroupError::Unsupported {
            field: field.to_string(),
            why: "a cgroup v1 limit",
        });
    }
    if let Some(l) = m.limit() {
        out.push(setting("memory.max", limit(l), "memory.limit"));
    }
    if let Some(swap) = m.swap() {
        // OCI's swap is memory+swap; cgroup v2's memory.swap.max is swap alone.
        let value = if swap > 0 {
            let Some(l) = m.limit().filter(|l| *l >= 0) else {
                return Err(CgroupError::Invalid {
                    field: "memory.swap".into(),
                    why: "a swap limit needs a memory limit".into(),
                    fix: "set linux.resources.memory.limit too",
                });
            };
            if swap < l {
                return Err(CgroupError::Invalid {
                    field: "memory.swap".into(),
                    why: format!("memory+swap {swap} is below the memory limit {l}"),
                    fix: "make memory.swap at least memory.limit (it counts memory plus swap)",
                });
            }
            (swap - l).to_string()
        } else {
            limit(swap)
        };
        let mut s = setting("memory.swap.max", value, "memory.swap");
        s.missing = Missing::Skip;
        out.push(s);
    }
    if let Some(r) = m.reservation() {
        out.push(setting("memory.low", limit(r), "memory.reservation"));
    }
    Ok(())
}

/// crun 1.8.1's conversion of cgroup v1 shares (2..262144) to cgroup v2 weight (1..10000).
fn weight_from_shares(shares: u64) -> u64 {
    1 + (shares.saturating_sub(2) * 9999) / 262_142
}

fn cpu(c: &LinuxCpu, out: &mut Vec<Setting>) -> Result<(), CgroupError> {
    if c.realtime_period().is_some_and(|v| v != 0) || c.realtime_runtime().is_some_and(|v| v != 0) {
        return Err(CgroupError::Unsupported {
            field: "cpu.realtimePeriod/realtimeRuntime".into(),
            why: "a cgroup v1 limit",
        });
    }
    if let Some(shares) = c.shares().filter(|s| *s != 0) {
        if shares > 262_144 {
            return Err(CgroupError::Invalid {
                field: "cpu.shares".into(),
                why: format!("{shares} is above 262144"),
                fix: "give shares from 2 to 262144",
            });
        }
        out.push(setting(
            "cpu.weight",
            weight_from_shares(shares).to_string(),
            "cpu.shares",
        ));
    }
    // 0 means unset for both, as in crun.
    let quota = c.quota().filter(|q| *q != 0);
    let period = c.period().filter(|p| *p != 0);
    if quota.is_some_and(|q| q > 0) || period.is_some() {
        let period = period.unwrap_or(100_000);
        let value = match quota {
            Some(q) if q > 0 => format!("{q} {period}"),
            _ => format!("max {period}"),
        };
        out.push(setting("cpu.max", value, "cpu.quota/period"));
    }
    if let Some(idle) = c.idle() {
        out.push(setting("cpu.idle", idle.to_string(), "cpu.idle"));
    }
    if let Some(burst) = c.burst() {
        out.push(setting("cpu.max.burst", burst.to_string(), "cpu.burst"));
    }
    if let Some(cpus) = c.cpus() {
        out.push(setting("cpuset.cpus", cpus.as_str(), "cpu.cpus"));
    }
    if let Some(mems) = c.mems() {
        out.push(setting("cpuset.mems", mems.as_str(), "cpu.mems"));
    }
    Ok(())
}

fn block_io(b: &LinuxBlockIo, out: &mut Vec<Setting>) -> Result<(), CgroupError> {
    if b.leaf_weight().is_some_and(|w| w != 0) {
        return Err(CgroupError::Unsupported {
            field: "blockIO.leafWeight".into(),
            why: "a cgroup v1 limit",
        });
    }
    if let Some(w) = b.weight().filter(|w| *w != 0) {
        let w = u64::from(w);
        // crun's linear conversion from BFQ's 10..1000 to io.weight's 1..10000.
        let io_weight = 1 + (w.saturating_sub(10) * 9999) / 990;
        let mut s = setting("io.bfq.weight", w.to_string(), "blockIO.weight");
        s.missing = Missing::Instead {
            file: "io.weight".into(),
            value: io_weight.to_string(),
        };
        out.push(s);
    }
    for (i, d) in b.weight_device().iter().flatten().enumerate() {
        let value = format!("{}:{} {}", d.major(), d.minor(), d.weight().unwrap_or(0));
        out.push(setting(
            "io.bfq.weight",
            value,
            &format!("blockIO.weightDevice[{i}]"),
        ));
    }
    let throttles: [(&str, &str, &Option<Vec<LinuxThrottleDevice>>); 4] = [
        (
            "rbps",
            "throttleReadBpsDevice",
            b.throttle_read_bps_device(),
        ),
        (
            "wbps",
            "throttleWriteBpsDevice",
            b.throttle_write_bps_device(),
        ),
        (
            "riops",
            "throttleReadIOPSDevice",
            b.throttle_read_iops_device(),
        ),
        (
            "wiops",
            "throttleWriteIOPSDevice",
            b.throttle_write_iops_device(),
        ),
    ];
    for (key, field, list) in throttles {
        for (i, d) in list.iter().flatten().enumerate() {
            let value = format!("{}:{} {key}={}", d.major(), d.minor(), d.rate());
            out.push(setting("io.max", value, &format!("blockIO.{field}[{i}]")));
        }
    }
    Ok(())
}

/// The controllers `settings` need (the prefix of each file name).
pub(super) fn needed(settings: &[Setting]) -> BTreeSet<String> {
    settings
        .iter()
        .filter_map(|s| s.file.split_once('.').map(|(c, _)| c.to_string()))
        .filter(|c| c != "cgroup")
        .collect()
}
