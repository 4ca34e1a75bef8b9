//! Loading the kernel modules the image lists (`/etc/tessera/modules.boot`, plus any named by
//! `tessera.modules=`), each after its dependencies as `modules.dep` records them.

use crate::kmod::{module_name, ModuleIndex};
use crate::supervisor::logs::LogHub;
use tessera_common::log::{Level, LogEvent};
use tessera_common::paths;

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
    let index = ModuleIndex::for_running_kernel();
    let (order, missing) = index.load_order(&wanted);
    let mut problems: Vec<String> = missing
        .into_iter()
        .map(|m| {
            hub.push(LogEvent::new("init", Level::Error, "kernel module missing").field("module", m.clone()).field("fix", "add it to image/modules.toml and rebuild"));
            format!(
                "kernel module {m} is not in the image ({}/modules.dep has no such module): add it to image/modules.toml and rebuild the image, or drop it from tessera.modules=",
                index.dir().display()
            )
        })
        .collect();
    for rel in order {
        match index.load_file(&rel) {
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
