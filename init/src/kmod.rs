//! The image's kernel modules: `modules.dep`, `modules.alias` and `modules.builtin` of the
//! running kernel, and loading a module after its dependencies. Modules the image does not
//! load at boot are stored as `.ko.zst` and decompressed here before `init_module(2)`.
//! PID 1 uses this at boot; `tessera modprobe` (also `/sbin/modprobe`, which the kernel runs
//! for `request_module()`) uses it later.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use tessera_common::paths;

/// Kernel module names treat '-' and '_' alike.
pub fn module_name(path_or_name: &str) -> String {
    let file = path_or_name.rsplit('/').next().unwrap_or(path_or_name);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

#[derive(Debug, Default)]
pub struct ModuleIndex {
    dir: PathBuf,
    /// name → (path relative to dir, dependency paths)
    modules: BTreeMap<String, (String, Vec<String>)>,
    builtin: BTreeSet<String>,
    /// (pattern, module name) from modules.alias
    aliases: Vec<(String, String)>,
    /// Where the kernel lists loaded modules (/sys/module); `None`: never asked (tests).
    loaded: Option<PathBuf>,
}

/// What became of a request for one module.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Loaded(Vec<String>),
    Builtin,
    NotFound,
}

impl ModuleIndex {
    /// Parses the three index files (any may be empty).
    pub fn parse(dir: &Path, dep: &str, builtin: &str, alias: &str) -> ModuleIndex {
        let mut modules = BTreeMap::new();
        for line in dep.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim();
            if !path.is_empty() {
                modules.insert(
                    module_name(path),
                    (
                        path.to_string(),
                        deps.split_whitespace().map(str::to_string).collect(),
                    ),
                );
            }
        }
        let builtin = builtin
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(module_name)
            .collect();
        let aliases = alias
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some("alias")).then_some(())?;
                Some((w.next()?.to_string(), module_name(w.next()?)))
            })
            .collect();
        ModuleIndex {
            dir: dir.to_path_buf(),
            modules,
            builtin,
            aliases,
            loaded: None,
        }
    }

    /// The index of the running kernel in the image (`/lib/modules/$(uname -r)`).
    pub fn for_running_kernel() -> ModuleIndex {
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = Path::new(paths::MODULES_DIR).join(release);
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        let mut index = ModuleIndex::parse(
            &dir,
            &read("modules.dep"),
            &read("modules.builtin"),
            &read("modules.alias"),
        );
        index.loaded = Some(PathBuf::from("/sys/module"));
        index
    }

    /// Whether the kernel already runs module `name` (its sysfs `initstate` says `live`).
    /// Loading it again would cost a decompression, a copy and a signature check in the
    /// kernel only to be told EEXIST: under TCG, hundreds of milliseconds for nf_tables.
    fn is_live(&self, name: &str) -> bool {
        self.loaded.as_ref().is_some_and(|dir| {
            std::fs::read_to_string(dir.join(name).join("initstate"))
                .is_ok_and(|s| s.trim() == "live")
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A module name, or an alias such as `fs-btrfs` or `nft-expr-ct`, to module names.
    pub fn resolve(&self, wanted: &str) -> Vec<String> {
        let name = module_name(wanted);
        if self.modules.contains_key(&name) || self.builtin.contains(&name) {
            return vec![name];
        }
        let mut found: Vec<String> = self
            .aliases
            .iter()
            .filter(|(p, _)| glob(p, wanted))
            .map(|(_, m)| m.clone())
            .collect();
        found.dedup();
        found
    }

    /// Module files to load for `names` (already resolved), dependencies first, each once;
    /// and the names that are neither shipped nor built in.
    pub fn load_order(&self, names: &[String]) -> (Vec<String>, Vec<String>) {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        let mut missing = Vec::new();
        for name in names {
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

    /// Loads one module file (relative path) into the kernel. Already loaded is success.
    pub fn load_file(&self, rel: &str) -> Result<(), String> {
        self.load_file_with(rel, c"")
    }

    fn load_file_with(&self, rel: &str, params: &std::ffi::CStr) -> Result<(), String> {
        let path = self.dir.join(rel);
        let result = if rel.ends_with(".zst") {
            let packed =
                std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let image = zstd::stream::decode_all(&packed[..])
                .map_err(|e| format!("cannot decompress {}: {e}", path.display()))?;
            nix::kmod::init_module(&image, params)
        } else {
            let file = std::fs::File::open(&path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            nix::kmod::finit_module(&file, params, nix::kmod::ModuleInitFlags::empty())
        };
        match result {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
            Err(e) => Err(format!("loading {}: {}", path.display(), e.desc())),
        }
    }

    /// Resolves `wanted` (name or alias) and loads it with its dependencies; `params`
    /// (`key=value ...`) go to the module itself.
    pub fn modprobe(&self, wanted: &str, params: &str) -> Result<Outcome, String> {
        let names = self.resolve(wanted);
        if names.is_empty() {
            return Ok(Outcome::NotFound);
        }
        let (order, missing) = self.load_order(&names);
        if order.is_empty() && missing.is_empty() {
            return Ok(Outcome::Builtin);
        }
        let params = std::ffi::CString::new(params)
            .map_err(|_| "module parameters contain a NUL byte".to_string())?;
        let last = order.len().saturating_sub(1);
        for (i, rel) in order.iter().enumerate() {
            if self.is_live(&module_name(rel)) {
                continue;
            }
            self.load_file_with(rel, if i == last { &params } else { c"" })?;
        }
        Ok(Outcome::Loaded(
            order.iter().map(|p| module_name(p)).collect(),
        ))
    }
}

/// Shell-style matching as modules.alias uses it: `*`, `?` and `[...]` classes.
pub fn glob(pattern: &str, text: &str) -> bool {
    fn class(p: &[u8], c: u8) -> Option<(bool, usize)> {
        // p starts after '['; returns (matched, length including the closing ']').
        let (negate, mut i) = if p.first() == Some(&b'!') || p.first() == Some(&b'^') {
            (true, 1)
        } else {
            (false, 0)
        };
        let mut hit = false;
        let start = i;
        while i < p.len() && (p[i] != b']' || i == start) {
            if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
                hit |= p[i] <= c && c <= p[i + 2];
                i += 3;
            } else {
                hit |= p[i] == c;
                i += 1;
            }
        }
        (i < p.len()).then_some((hit != negate, i + 1))
    }
    fn go(p: &[u8], t: &[u8]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some(b'*') => (0..=t.len()).any(|k| go(&p[1..], &t[k..])),
            Some(b'?') => !t.is_empty() && go(&p[1..], &t[1..]),
            Some(b'[') => match (t.first(), class(&p[1..], *t.first().unwrap_or(&0))) {
                (Some(_), Some((true, len))) => go(&p[1 + len..], &t[1..]),
                _ => false,
            },
            Some(&c) => t.first() == Some(&c) && go(&p[1..], &t[1..]),
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n\
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n\
kernel/net/core/failover.ko:\n\
kernel/drivers/md/dm-thin-pool.ko.zst: kernel/drivers/md/dm-mod.ko.zst\n\
kernel/drivers/md/dm-mod.ko.zst:\n\
kernel/net/netfilter/nft_ct.ko.zst:\n";
    const ALIAS: &str =
        "alias nft-expr-ct nft_ct\nalias fs-btrfs btrfs\nalias virtio:d00000001v* virtio_net\n";

    fn index() -> ModuleIndex {
        ModuleIndex::parse(
            Path::new("/lib/modules/x"),
            DEP,
            "kernel/fs/ext4/ext4.ko\n",
            ALIAS,
        )
    }

    #[test]
    fn dependencies_load_first_and_once() {
        let (order, missing) = index().load_order(&["virtio_net".into(), "net_failover".into()]);
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
    fn modprobe_skips_modules_the_kernel_already_runs() {
        let sys = tempfile::tempdir().unwrap();
        for m in ["failover", "net_failover"] {
            std::fs::create_dir(sys.path().join(m)).unwrap();
            std::fs::write(sys.path().join(m).join("initstate"), "live\n").unwrap();
        }
        let mut idx = index();
        idx.loaded = Some(sys.path().to_path_buf());
        // Only virtio_net is not live: it is the one loaded (and fails here, having no file).
        let e = idx.modprobe("virtio_net", "").unwrap_err();
        assert!(e.contains("virtio_net.ko"), "{e}");
        std::fs::create_dir(sys.path().join("virtio_net")).unwrap();
        std::fs::write(sys.path().join("virtio_net/initstate"), "coming\n").unwrap();
        assert!(
            idx.modprobe("virtio_net", "").is_err(),
            "a module still coming is loaded"
        );
        std::fs::write(sys.path().join("virtio_net/initstate"), "live\n").unwrap();
        assert_eq!(
            idx.modprobe("virtio_net", "").unwrap(),
            Outcome::Loaded(vec![
                "failover".into(),
                "net_failover".into(),
                "virtio_net".into()
            ])
        );
    }

    #[test]
    fn compressed_modules_keep_their_names() {
        let (order, _) = index().load_order(&["dm-thin-pool".into()]);
        assert_eq!(
            order,
            vec![
                "kernel/drivers/md/dm-mod.ko.zst",
                "kernel/drivers/md/dm-thin-pool.ko.zst"
            ]
        );
        assert_eq!(
            module_name("kernel/drivers/md/dm-thin-pool.ko.zst"),
            "dm_thin_pool"
        );
    }

    #[test]
    fn missing_modules_are_named_and_builtins_skipped() {
        let (order, missing) =
            index().load_order(&["ext4".into(), "no_such_mod".into(), "failover".into()]);
        assert_eq!(missing, vec!["no_such_mod"]);
        assert_eq!(order, vec!["kernel/net/core/failover.ko"]);
    }

    #[test]
    fn aliases_resolve_to_modules() {
        let i = index();
        assert_eq!(i.resolve("nft-expr-ct"), vec!["nft_ct"]);
        assert_eq!(i.resolve("virtio:d00000001v00001AF4"), vec!["virtio_net"]);
        assert_eq!(i.resolve("nft_ct"), vec!["nft_ct"]);
        assert_eq!(i.resolve("ext4"), vec!["ext4"]);
        assert!(i.resolve("net-pf-99").is_empty());
        assert_eq!(i.modprobe("ext4", ""), Ok(Outcome::Builtin));
        assert_eq!(i.modprobe("nope", ""), Ok(Outcome::NotFound));
    }

    #[test]
    fn glob_supports_star_question_and_classes() {
        assert!(glob(
            "pci:v00001AF4d*sv*",
            "pci:v00001AF4d00001000sv00001AF4"
        ));
        assert!(glob("a?c", "abc") && !glob("a?c", "ac"));
        assert!(glob("x[0-9]y", "x5y") && !glob("x[0-9]y", "xay"));
        assert!(glob("x[!0-9]y", "xay"));
        assert!(!glob("abc", "abcd"));
    }
}
