//! Kernel modules: which ones the image ships (`image/modules.toml`), their dependency closure
//! (read from each `.ko`'s `.modinfo` section, since the Debian package has no modules.dep),
//! and the `modules.dep` / `modules.alias` files written for the shipped set.
//!
//! `modules.dep` uses the standard depmod format and order, so that busybox `modprobe` (the
//! kernel's `request_module` helper in the image) and kmod read it as they read any other:
//! each line lists the module's whole dependency closure with every module *before* the
//! modules it depends on (deepest last). Load a line from the end towards the start.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::ImageError;

/// `image/modules.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleLists {
    /// Modules PID 1 loads at boot (written to /etc/tessera/modules.boot).
    #[serde(default)]
    pub boot: Vec<String>,
    /// Modules shipped for agents to load later.
    #[serde(default)]
    pub ship: Vec<String>,
}

impl ModuleLists {
    pub fn load(path: &Path) -> Result<ModuleLists, ImageError> {
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ImageError::MissingInput {
                what: "module list".into(),
                path: path.to_path_buf(),
                fix: "restore image/modules.toml from git".into(),
            },
            _ => ImageError::io("read", path, e),
        })?;
        toml::from_str(&text).map_err(|e| ImageError::BadInput {
            path: path.to_path_buf(),
            problem: e.to_string().trim().to_string(),
            fix: "it must hold `boot = [..]` and `ship = [..]` lists of module names".into(),
        })
    }
}

/// The kernel's module-name convention: `-` and `_` are the same character.
pub fn normalize(name: &str) -> String {
    name.trim().replace('-', "_")
}

/// The fields of `.modinfo` the builder uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    pub name: Option<String>,
    /// Normalized names of the modules this one needs loaded first.
    pub depends: Vec<String>,
    pub aliases: Vec<String>,
}

/// Parses the raw `.modinfo` section: NUL-separated `key=value` strings.
pub fn parse_modinfo_section(section: &[u8]) -> ModInfo {
    let mut info = ModInfo::default();
    for field in section.split(|b| *b == 0) {
        let Ok(field) = std::str::from_utf8(field) else {
            continue;
        };
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        match key {
            "name" => info.name = Some(normalize(value)),
            "depends" => info.depends.extend(
                value
                    .split(',')
                    .filter(|d| !d.trim().is_empty())
                    .map(normalize),
            ),
            "alias" => info.aliases.push(value.to_string()),
            _ => {}
        }
    }
    info
}

/// Reads `.modinfo` out of a `.ko` (a relocatable ELF file).
pub fn parse_modinfo(elf: &[u8]) -> Result<ModInfo, String> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(elf).map_err(|e| format!("not an ELF object: {e}"))?;
    let section = file
        .section_by_name(".modinfo")
        .ok_or_else(|| "no .modinfo section".to_string())?;
    let data = section
        .data()
        .map_err(|e| format!("unreadable .modinfo: {e}"))?;
    Ok(parse_modinfo_section(data))
}

/// One module of the shipped closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Path relative to `/lib/modules/<release>/`, e.g. `kernel/fs/btrfs/btrfs.ko`.
    pub path: String,
    pub depends: Vec<String>,
    pub aliases: Vec<String>,
}

/// Computes the dependency closure of `roots`. `lookup(name)` returns the module or `None`
/// when the kernel has no such module; the error names the module and who needed it.
pub fn closure<F>(
    roots: &[String],
    mut lookup: F,
) -> Result<BTreeMap<String, Module>, (String, String)>
where
    F: FnMut(&str) -> Option<Module>,
{
    let mut out = BTreeMap::new();
    let mut queue: Vec<(String, String)> = roots
        .iter()
        .map(|r| (normalize(r), "listed in image/modules.toml".to_string()))
        .collect();
    while let Some((name, needed_by)) = queue.pop() {
        if out.contains_key(&name) {
            continue;
        }
        let module = lookup(&name).ok_or_else(|| (name.clone(), needed_by))?;
        for dep in &module.depends {
            queue.push((dep.clone(), format!("needed by {name}")));
        }
        out.insert(name, module);
    }
    Ok(out)
}

/// The closure of `name` in modules.dep order: a module before its dependencies, deepest last.
/// Ties are broken by name so the file is reproducible.
pub fn dependency_order(name: &str, modules: &BTreeMap<String, Module>) -> Vec<String> {
    // Post-order DFS yields deepest first; reversing it gives depmod's order.
    fn visit(
        n: &str,
        modules: &BTreeMap<String, Module>,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) {
        if !seen.insert(n.to_string()) {
            return;
        }
        if let Some(m) = modules.get(n) {
            let mut deps = m.depends.clone();
            deps.sort();
            for d in &deps {
                visit(d, modules, seen, out);
            }
        }
        out.push(n.to_string());
    }
    let mut seen = BTreeSet::new();
    let mut post = Vec::new();
    visit(name, modules, &mut seen, &mut post);
    post.pop(); // the module itself
    post.reverse();
    post
}

/// `roots` (normalized) and everything they depend on, transitively.
pub fn dependency_closure(
    roots: &[String],
    modules: &BTreeMap<String, Module>,
) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for root in roots {
        let root = normalize(root);
        found.extend(dependency_order(&root, modules));
        found.insert(root);
    }
    found
}

/// `modules.dep` for the shipped set (standard depmod format, see the module docs).
pub fn modules_dep(modules: &BTreeMap<String, Module>) -> String {
    let mut lines: Vec<(String, String)> = modules
        .iter()
        .map(|(name, m)| {
            let deps: Vec<&str> = dependency_order(name, modules)
                .iter()
                .map(|d| modules[d].path.as_str())
                .collect::<Vec<_>>();
            let line = if deps.is_empty() {
                format!("{}:", m.path)
            } else {
                format!("{}: {}", m.path, deps.join(" "))
            };
            (m.path.clone(), line)
        })
        .collect();
    lines.sort();
    lines.into_iter().map(|(_, l)| l + "\n").collect()
}

/// `modules.alias` for the shipped set (`alias <pattern> <module>`), so that the kernel's
/// `request_module("nft-expr-ct")` finds `nft_ct` through busybox modprobe.
pub fn modules_alias(modules: &BTreeMap<String, Module>) -> String {
    let mut lines = BTreeSet::new();
    for (name, m) in modules {
        for a in &m.aliases {
            lines.insert(format!("alias {a} {name}\n"));
        }
    }
    lines.into_iter().collect()
}

/// The modules of an unpacked kernel package: `lib/modules/<release>/`.
#[derive(Debug)]
pub struct KernelModules {
    pub dir: PathBuf,
    /// Normalized name → path relative to `dir`.
    index: BTreeMap<String, String>,
}

impl KernelModules {
    /// Indexes every `.ko` under `dir/kernel`.
    pub fn scan(dir: &Path) -> Result<KernelModules, ImageError> {
        let mut index = BTreeMap::new();
        let mut stack = vec![dir.join("kernel")];
        while let Some(d) = stack.pop() {
            let entries = std::fs::read_dir(&d).map_err(|e| ImageError::io("list", &d, e))?;
            for e in entries {
                let e = e.map_err(|e| ImageError::io("list", &d, e))?;
                let p = e.path();
                let ft = e
                    .file_type()
                    .map_err(|err| ImageError::io("stat", &p, err))?;
                if ft.is_dir() {
                    stack.push(p);
                } else if let Some(stem) = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".ko"))
                {
                    let rel = p
                        .strip_prefix(dir)
                        .unwrap_or(&p)
                        .to_string_lossy()
                        .into_owned();
                    index.insert(normalize(stem), rel);
                }
            }
        }
        Ok(KernelModules {
            dir: dir.to_path_buf(),
            index,
        })
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The shipped closure of `roots`; `package` names the kernel package in errors.
    pub fn resolve(
        &self,
        roots: &[String],
        package: &str,
    ) -> Result<BTreeMap<String, Module>, ImageError> {
        let mut bad_ko: Option<ImageError> = None;
        let result = closure(roots, |name| {
            let rel = self.index.get(name)?;
            let full = self.dir.join(rel);
            let parsed = std::fs::read(&full)
                .map_err(|e| e.to_string())
                .and_then(|bytes| parse_modinfo(&bytes));
            match parsed {
                Ok(info) => Some(Module {
                    path: rel.clone(),
                    depends: info.depends,
                    aliases: info.aliases,
                }),
                Err(problem) => {
                    bad_ko.get_or_insert(ImageError::BadInput {
                        path: full,
                        problem,
                        fix: "delete the unpacked package from the cache and rebuild".into(),
                    });
                    None
                }
            }
        });
        if let Some(e) = bad_ko {
            return Err(e);
        }
        result.map_err(|(module, needed_by)| ImageError::ModuleNotFound {
            module,
            needed_by,
            package: package.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(path: &str, deps: &[&str]) -> Module {
        Module {
            path: path.into(),
            depends: deps.iter().map(|s| s.to_string()).collect(),
            aliases: vec![],
        }
    }

    fn fake_kernel() -> BTreeMap<String, Module> {
        // The shape of the real virtio_net / dm-thin-pool dependencies.
        [
            (
                "virtio_net",
                m(
                    "kernel/drivers/net/virtio_net.ko",
                    &["virtio_ring", "virtio", "net_failover"],
                ),
            ),
            (
                "net_failover",
                m("kernel/drivers/net/net_failover.ko", &["failover"]),
            ),
            ("failover", m("kernel/net/core/failover.ko", &[])),
            ("virtio", m("kernel/drivers/virtio/virtio.ko", &[])),
            (
                "virtio_ring",
                m("kernel/drivers/virtio/virtio_ring.ko", &[]),
            ),
            (
                "dm_thin_pool",
                m(
                    "kernel/drivers/md/dm-thin-pool.ko",
                    &["dm_bio_prison", "dm_persistent_data", "dm_mod"],
                ),
            ),
            (
                "dm_persistent_data",
                m(
                    "kernel/drivers/md/persistent-data/dm-persistent-data.ko",
                    &["dm_bufio", "libcrc32c"],
                ),
            ),
            (
                "dm_bio_prison",
                m("kernel/drivers/md/dm-bio-prison.ko", &["dm_mod"]),
            ),
            ("dm_bufio", m("kernel/drivers/md/dm-bufio.ko", &[])),
            ("dm_mod", m("kernel/drivers/md/dm-mod.ko", &[])),
            ("libcrc32c", m("kernel/lib/libcrc32c.ko", &[])),
            ("unrelated", m("kernel/x/unrelated.ko", &[])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    #[test]
    fn modinfo_section_fields_are_parsed() {
        let info = parse_modinfo_section(
            b"license=GPL\0depends=dm-bio-prison,dm-persistent-data,dm-mod\0alias=dm-thin\0name=dm_thin_pool\0",
        );
        assert_eq!(info.name.as_deref(), Some("dm_thin_pool"));
        assert_eq!(
            info.depends,
            ["dm_bio_prison", "dm_persistent_data", "dm_mod"]
        );
        assert_eq!(info.aliases, ["dm-thin"]);
        assert!(parse_modinfo_section(b"depends=\0").depends.is_empty());
    }

    #[test]
    fn modinfo_is_read_from_an_elf_section() {
        use object::write::{Object, StandardSection};
        let mut obj = Object::new(
            object::BinaryFormat::Elf,
            object::Architecture::X86_64,
            object::Endianness::Little,
        );
        let text = obj.section_id(StandardSection::Text);
        obj.append_section_data(text, &[0xc3], 1);
        let modinfo = obj.add_section(vec![], b".modinfo".to_vec(), object::SectionKind::Data);
        obj.append_section_data(
            modinfo,
            b"depends=virtio,virtio_ring,net-failover\0name=virtio_net\0",
            1,
        );
        let elf = obj.write().unwrap();
        let info = parse_modinfo(&elf).unwrap();
        assert_eq!(info.depends, ["virtio", "virtio_ring", "net_failover"]);
        assert_eq!(info.name.as_deref(), Some("virtio_net"));
        assert!(parse_modinfo(b"not an elf").unwrap_err().contains("ELF"));
    }

    #[test]
    fn modinfo_of_golden_section_is_parsed() {
        // The .modinfo section of dm-thin-pool.ko from linux-image-6.1.0-56-cloud-amd64
        // (`objcopy -O binary --only-section=.modinfo`).
        let section = include_bytes!("../tests/data/dm-thin-pool.modinfo");
        let info = parse_modinfo_section(section);
        assert_eq!(info.name.as_deref(), Some("dm_thin_pool"));
        assert_eq!(
            info.depends,
            ["dm_bio_prison", "dm_persistent_data", "dm_mod"]
        );
        assert!(info.aliases.is_empty(), "{:?}", info.aliases);
    }

    #[test]
    fn closure_follows_dependencies_and_accepts_dashes() {
        let k = fake_kernel();
        let c = closure(&["virtio-net".into(), "dm-thin-pool".into()], |n| {
            k.get(n).cloned()
        })
        .unwrap();
        let names: Vec<&str> = c.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "dm_bio_prison",
                "dm_bufio",
                "dm_mod",
                "dm_persistent_data",
                "dm_thin_pool",
                "failover",
                "libcrc32c",
                "net_failover",
                "virtio",
                "virtio_net",
                "virtio_ring"
            ]
        );
    }

    #[test]
    fn closure_names_missing_module_and_who_needed_it() {
        let mut k = fake_kernel();
        k.remove("failover");
        let (name, by) = closure(&["virtio_net".into()], |n| k.get(n).cloned()).unwrap_err();
        assert_eq!(name, "failover");
        assert_eq!(by, "needed by net_failover");
        let (name, by) = closure(&["no_such".into()], |n| k.get(n).cloned()).unwrap_err();
        assert_eq!(
            (name.as_str(), by.as_str()),
            ("no_such", "listed in image/modules.toml")
        );
    }

    #[test]
    fn dependency_closure_covers_transitive_dependencies() {
        let k = fake_kernel();
        let c = closure(&["virtio_net".into(), "dm_thin_pool".into()], |n| {
            k.get(n).cloned()
        })
        .unwrap();
        let boot = dependency_closure(&["virtio-net".into()], &c);
        assert!(
            boot.contains("virtio_net")
                && boot.contains("failover")
                && boot.contains("virtio_ring"),
            "{boot:?}"
        );
        assert!(!boot.contains("dm_thin_pool"));
    }

    #[test]
    fn modules_dep_lists_dependents_before_dependencies() {
        let k = fake_kernel();
        let c = closure(&["virtio_net".into(), "dm_thin_pool".into()], |n| {
            k.get(n).cloned()
        })
        .unwrap();
        let order = dependency_order("dm_thin_pool", &c);
        let pos = |n: &str| order.iter().position(|x| x == n).unwrap();
        assert_eq!(order.len(), 5);
        // Every module comes before each of its own dependencies.
        for name in &order {
            for d in &c[name].depends {
                assert!(pos(name) < pos(d), "{name} must precede {d} in {order:?}");
            }
        }
        let dep = modules_dep(&c);
        assert!(dep.contains(
            "kernel/drivers/net/virtio_net.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n"
        ), "{dep}");
        assert!(dep.contains("kernel/net/core/failover.ko:\n"));
        assert!(!dep.contains("unrelated"));
        assert_eq!(dep.lines().count(), c.len());
    }
}
