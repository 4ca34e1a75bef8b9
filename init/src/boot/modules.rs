//! Loading the kernel modules the image lists (`/etc/tessera/modules.boot`, plus any named by
//! `tessera.modules=`), each after its dependencies as `modules.dep` records them.

use crate::supervisor::logs::LogHub;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use tessera_common::log::{Level, LogEvent};
use tessera_common::paths;

/// `modules.dep` of one kernel release: module name → (path, dependency paths).
#[derive(Debug, Default)]
pub struct ModulesDep {
    modules: BTreeMap<String, (String, Vec<String>)>,
    builtin: BTreeSet<String>,
}

/// Kernel module names treat '-' and '_' alike.
pub fn module_name(path_or_name: &str) -> String {
    let file = path_or_name.rsplit('/').next().unwrap_or(path_or_name);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

impl ModulesDep {
    /// Parses `modules.dep` text and `modules.builtin` text (either may be empty).
    pub fn parse(dep: &str, builtin: &str) -> ModulesDep {
        let mut modules = BTreeMap::new();
        for line in dep.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim();
            if path.is_empty() {
                continue;
            }
            modules.insert(
                module_name(path),
                (
                    path.to_string(),
                    deps.split_whitespace().map(str::to_string).collect(),
                ),
            );
        }
        let builtin = builtin
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(module_name)
            .collect();
        ModulesDep { modules, builtin }
    }

    /// The module files to load for `wanted`, dependencies first, each once. Names that are
    /// neither in modules.dep nor built in come back as the error.
    pub fn load_order(&self, wanted: &[String]) -> (Vec<String>, Vec<String>) {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        let mut missing = Vec::new();
        for name in wanted {
            let name = module_name(name);
            if self.builtin.contains(&name) {
                continue;
            }
            if !self.modules.contains_key(&name) {
                missing.push(name);
                continue;
            }
            self.visit(&name, &mut seen, &mut order);
        }
        (order, missing)
    }

    fn visit(&self, name: &str, seen: &mut BTreeSet<String>, order: &mut Vec<String>) {
        if !seen.insert(name.to_string()) {
            return;
        }
        let Some((path, deps)) = self.modules.get(name) else {
            return;
        };
        for dep in deps {
            self.visit(&module_name(dep), seen, order);
        }
        order.push(path.clone());
    }
}

/// Reads the image's module list and loads it. Returns one problem per module that failed.
pub fn load_boot_modules(hub: &LogHub, extra: &[String]) -> Vec<String> {
    let listed = std::fs::read_to_string(paths::BOOT_MODULES_FILE).unwrap_or_default();
    let mut wanted: Vec<String> = listed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    wanted.extend(extra.iter().cloned());
    if wanted.is_empty() {
        return Vec::new();
    }
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = Path::new(paths::MODULES_DIR).join(&release);
    let dep = ModulesDep::parse(
        &std::fs::read_to_string(dir.join("modules.dep")).unwrap_or_default(),
        &std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default(),
    );
    let (order, missing) = dep.load_order(&wanted);
    let mut problems: Vec<String> = missing
        .into_iter()
        .map(|m| {
            let msg = format!("kernel module {m} is not in the image ({}/modules.dep has no such module): add it to image/modules.toml and rebuild the image, or drop it from tessera.modules=", dir.display());
            hub.push(LogEvent::new("init", Level::Error, "kernel module missing").field("module", m).field("fix", "add it to image/modules.toml and rebuild"));
            msg
        })
        .collect();
    for rel in order {
        let path = dir.join(&rel);
        match load_file(&path) {
            Ok(()) => hub.push(
                LogEvent::new("init", Level::Debug, "module loaded")
                    .field("module", module_name(&rel)),
            ),
            Err(e) => {
                hub.push(
                    LogEvent::new("init", Level::Error, "module load failed")
                        .field("module", module_name(&rel))
                        .field("error", e.clone()),
                );
                problems.push(format!("kernel module {}: {e}", module_name(&rel)));
            }
        }
    }
    problems
}

fn load_file(path: &PathBuf) -> Result<(), String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match nix::kmod::finit_module(&file, c"", nix::kmod::ModuleInitFlags::empty()) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(e) => Err(format!("finit_module {}: {}", path.display(), e.desc())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n\
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n\
kernel/net/core/failover.ko:\n\
kernel/drivers/md/dm-thin-pool.ko: kernel/drivers/md/dm-mod.ko\n\
kernel/drivers/md/dm-mod.ko:\n";

    #[test]
    fn dependencies_load_first_and_once() {
        let d = ModulesDep::parse(DEP, "");
        let (order, missing) = d.load_order(&["virtio_net".into(), "net_failover".into()]);
        assert!(missing.is_empty());
        assert_eq!(
            order,
            vec![
                "kernel/net/core/failover.ko",
                "kernel/drivers/net/net_failover.ko",
                "kernel/drivers/net/virtio_net.ko"
            ]
        );
    }

    #[test]
    fn dash_and_underscore_are_the_same_module() {
        let d = ModulesDep::parse(DEP, "");
        let (order, _) = d.load_order(&["dm-thin-pool".into()]);
        assert_eq!(
            order,
            vec![
                "kernel/drivers/md/dm-mod.ko",
                "kernel/drivers/md/dm-thin-pool.ko"
            ]
        );
        assert_eq!(d.load_order(&["dm_thin_pool".into()]).0.len(), 2);
    }

    #[test]
    fn missing_modules_are_named_and_builtins_skipped() {
        let d = ModulesDep::parse(DEP, "kernel/fs/ext4/ext4.ko\n");
        let (order, missing) =
            d.load_order(&["ext4".into(), "no_such_mod".into(), "failover".into()]);
        assert_eq!(missing, vec!["no_such_mod"]);
        assert_eq!(order, vec!["kernel/net/core/failover.ko"]);
    }
}
