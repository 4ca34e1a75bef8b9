//! Per-service cgroup v2 directories under `<base>/services/<name>`, with the controllers
//! enabled and the service's limits (memory.max, cpu.max, pids.max) written before it starts.

use super::manifest::Limits;
use super::spawn::write_control;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

pub struct Cgroups {
    services: PathBuf,
}

const CONTROLLERS: &[&str] = &["cpu", "memory", "pids"];

impl Cgroups {
    /// Creates `<base>/services` and enables the controllers for it and its children.
    /// Controllers the kernel lacks are reported, not fatal.
    pub fn setup(base: &Path) -> std::io::Result<(Cgroups, Vec<String>)> {
        let services = base.join("services");
        std::fs::create_dir_all(&services)?;
        let mut missing = Vec::new();
        for dir in [base, services.as_path()] {
            for c in CONTROLLERS {
                if let Err(e) = write_control(&dir.join("cgroup.subtree_control"), &format!("+{c}"))
                {
                    missing.push(format!("{c} in {}: {e}", dir.display()));
                }
            }
        }
        Ok((Cgroups { services }, missing))
    }

    pub fn dir(&self, service: &str) -> PathBuf {
        self.services.join(service)
    }

    /// Makes the service's cgroup, writes its limits and opens `cgroup.procs` for the child to
    /// join. Limits that were there before and are no longer wanted are reset to "max".
    pub fn prepare(&self, service: &str, limits: &Limits) -> std::io::Result<File> {
        let dir = self.dir(service);
        let fresh = match std::fs::create_dir(&dir) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(e),
        };
        for file in ["memory.max", "pids.max", "cpu.max"] {
            let wanted = limits
                .files()
                .into_iter()
                .find(|(f, _)| *f == file)
                .map(|(_, v)| v);
            match wanted {
                Some(v) => write_control(&dir.join(file), v)?,
                // A new cgroup starts unlimited; a reused one may hold an old limit.
                None if !fresh && dir.join(file).exists() => write_control(&dir.join(file), "max")?,
                None => {}
            }
        }
        OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
    }

    /// Kills every process left in the service's cgroup (kernel ≥ 5.14).
    pub fn kill(&self, service: &str) -> std::io::Result<()> {
        write_control(&self.dir(service).join("cgroup.kill"), "1")
    }
}
