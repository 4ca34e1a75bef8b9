//! The directories from the cgroup2 mount down to a container's cgroup: found from
//! /proc/self/mountinfo, made when missing, each delegating to its children the controllers
//! the limits need (and the usual ones for stats where offered); then the limits written.

use super::settings::{needed, Missing, Setting};
use super::{io_error, Cgroup, CgroupError};
use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

/// Controllers a container cgroup gets whenever the hierarchy offers them (for its stats);
/// the ones its limits need are required.
const USUAL: &[&str] = &["cpu", "io", "memory", "pids"];

/// The directories from the cgroup2 mount that holds `parent` down to `parent`.
pub(super) fn chain_to(parent: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    if !parent.is_absolute()
        || parent
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(CgroupError::BadParent(parent.to_path_buf()));
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| {
        io_error(
            "read",
            Path::new("/proc/self/mountinfo"),
            e,
            "/proc must be mounted",
        )
    })?;
    let root = mountinfo
        .lines()
        .filter_map(cgroup2_mount_point)
        .filter(|m| parent.starts_with(m))
        .max_by_key(|m| m.components().count())
        .ok_or_else(|| CgroupError::NotCgroup2(parent.to_path_buf()))?;
    let mut chain = vec![root.clone()];
    let mut dir = root.clone();
    for c in parent
        .strip_prefix(&root)
        .unwrap_or(Path::new(""))
        .components()
    {
        dir.push(c);
        chain.push(dir.clone());
    }
    Ok(chain)
}

/// The mount point of a mountinfo line whose filesystem is cgroup2.
fn cgroup2_mount_point(line: &str) -> Option<PathBuf> {
    let (left, right) = line.split_once(" - ")?;
    if right.split(' ').next()? != "cgroup2" {
        return None;
    }
    let point = left.split(' ').nth(4)?;
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let mut out = Vec::new();
    let bytes = point.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|o| std::str::from_utf8(o).ok())
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(PathBuf::from(String::from_utf8(out).ok()?))
}

pub(super) fn build(
    chain: &[PathBuf],
    id: &str,
    settings: &[Setting],
    made: &mut Vec<PathBuf>,
) -> Result<Cgroup, CgroupError> {
    for dir in chain.iter().skip(1) {
        match std::fs::create_dir(dir) {
            Ok(()) => made.push(dir.clone()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(io_error(
                    "create",
                    dir,
                    e,
                    "the cgroup parent's parent must be writable (the shim runs as root)",
                ))
            }
        }
    }
    let needed = needed(settings);
    let mut wanted: Vec<String> = USUAL.iter().map(|c| c.to_string()).collect();
    wanted.extend(
        needed
            .iter()
            .filter(|c| !USUAL.contains(&c.as_str()))
            .cloned(),
    );
    for dir in chain {
        delegate(dir, &mut wanted, &needed)?;
    }
    let target = chain
        .last()
        .map(|p| p.join(id))
        .unwrap_or_else(|| PathBuf::from(id));
    match std::fs::create_dir(&target) {
        Ok(()) => made.push(target.clone()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(CgroupError::Exists(target))
        }
        Err(e) => {
            return Err(io_error(
                "create",
                &target,
                e,
                "the cgroup parent must be writable",
            ))
        }
    }
    for s in settings {
        write_setting(&target, s)?;
    }
    Ok(Cgroup { dir: target })
}

/// Enables in `dir`'s cgroup.subtree_control the wanted controllers it does not delegate
/// yet: a needed one that cannot be is an error, another is dropped from `wanted`.
fn delegate(
    dir: &Path,
    wanted: &mut Vec<String>,
    needed: &BTreeSet<String>,
) -> Result<(), CgroupError> {
    let read = |file: &str| {
        let path = dir.join(file);
        std::fs::read_to_string(&path).map_err(|e| {
            io_error(
                "read",
                &path,
                e,
                "the cgroup parent must be a cgroup v2 directory",
            )
        })
    };
    let available = read("cgroup.controllers")?;
    let enabled = read("cgroup.subtree_control")?;
    let control = dir.join("cgroup.subtree_control");
    let mut keep = Vec::new();
    for c in wanted.drain(..) {
        let is_needed = needed.contains(&c);
        if enabled.split_whitespace().any(|e| e == c) {
            keep.push(c);
            continue;
        }
        if !available.split_whitespace().any(|a| a == c) {
            if is_needed {
                return Err(CgroupError::ControllerUnavailable {
                    controller: c,
                    dir: dir.to_path_buf(),
                    available: available.trim().to_string(),
                });
            }
            continue;
        }
        let value = format!("+{c}");
        match OpenOptions::new()
            .write(true)
            .open(&control)
            .and_then(|mut f| f.write_all(value.as_bytes()))
        {
            Ok(()) => keep.push(c),
            Err(e) if is_needed => {
                let hint = if e.raw_os_error() == Some(libc::EBUSY) {
                    "a cgroup that holds processes cannot delegate controllers (cgroup v2's no-internal-process rule): pick a cgroup parent whose ancestors hold no processes"
                } else {
                    "the shim must run as root with the cgroup hierarchy writable"
                };
                return Err(io_error(format!("write {value:?} to"), &control, e, hint));
            }
            Err(_) => {}
        }
    }
    *wanted = keep;
    Ok(())
}

fn write_setting(dir: &Path, s: &Setting) -> Result<(), CgroupError> {
    let attempt = |file: &str, value: &str| {
        let path = dir.join(file);
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(value.as_bytes()))
    };
    let err = match attempt(&s.file, &s.value) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let (file, value, err) = match (&s.missing, err.kind()) {
        (Missing::Skip, io::ErrorKind::NotFound) => return Ok(()),
        (Missing::Instead { file, value }, io::ErrorKind::NotFound) => match attempt(file, value) {
            Ok(()) => return Ok(()),
            Err(e) => (file.as_str(), value.as_str(), e),
        },
        _ => (s.file.as_str(), s.value.as_str(), err),
    };
    let controller = file.split_once('.').map(|(c, _)| c).unwrap_or(file);
    let hint = match err.raw_os_error() {
        Some(libc::ENOENT) => format!(
            "the {controller} controller is not enabled for this cgroup (linux.resources.{})",
            s.field
        ),
        Some(libc::EINVAL) | Some(libc::ERANGE) => format!(
            "the kernel refused the value: fix linux.resources.{}",
            s.field
        ),
        Some(libc::EBUSY) => format!(
            "the value conflicts with the cgroup's current use: fix linux.resources.{}",
            s.field
        ),
        _ => "the shim must run as root with the cgroup writable".to_string(),
    };
    Err(io_error(
        format!("write {value:?} to"),
        &dir.join(file),
        err,
        hint,
    ))
}
