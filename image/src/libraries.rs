//! The shared-library closure of the programs of image/programs.toml: each program's file,
//! then every `DT_NEEDED` library (and the `PT_INTERP` loader) found in the pinned program
//! and library packages, transitively. Only what the loader will open is shipped; a library
//! that is a symlink in its package (`libfoo.so.1 -> libfoo.so.1.2.3`) is shipped as a
//! regular file under the name the programs ask for.

use std::collections::{BTreeMap, VecDeque};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use crate::elf;
use crate::error::{ImageError, LOCK_FIX};
use crate::fetch::FetchedPackage;
use crate::programs::ProgramList;

/// Directories of a package searched for `DT_NEEDED` names, in the order glibc's loader
/// searches them on Debian without an /etc/ld.so.cache.
pub const LIBRARY_DIRS: [&str; 5] = [
    "lib/x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu",
    "lib64",
    "lib",
    "usr/lib",
];

/// Longest chain of symlinks followed inside a package.
const MAX_LINKS: usize = 16;

/// One path of the image the closure adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShippedKind {
    File { data: Vec<u8>, mode: u32 },
    Symlink { target: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipped {
    /// Absolute path in the image.
    pub path: String,
    pub kind: ShippedKind,
    /// `name@version` of the package it comes from.
    pub origin: String,
}

/// What [`resolve`] found: every path to add, and per program the libraries it pulled in.
#[derive(Debug, Clone, Default)]
pub struct Closure {
    pub files: BTreeMap<String, Shipped>,
}

impl Closure {
    /// Bytes of the regular files.
    pub fn bytes(&self) -> u64 {
        self.files
            .values()
            .map(|s| match &s.kind {
                ShippedKind::File { data, .. } => data.len() as u64,
                ShippedKind::Symlink { .. } => 0,
            })
            .sum()
    }
}

/// Lexically normalizes a relative path (`a/b/../c` → `a/c`); `None` if it leaves the root.
fn normalize(rel: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Follows symlinks of `rel` inside `root` (absolute targets are relative to `root`); the
/// real file's relative path, or `None` if it is missing or leaves the package.
fn resolve_in(root: &Path, rel: &Path) -> Option<PathBuf> {
    let mut cur = normalize(rel)?;
    for _ in 0..MAX_LINKS {
        let meta = std::fs::symlink_metadata(root.join(&cur)).ok()?;
        if !meta.file_type().is_symlink() {
            return meta.is_file().then_some(cur);
        }
        let target = std::fs::read_link(root.join(&cur)).ok()?;
        cur = if target.is_absolute() {
            normalize(&target)?
        } else {
            normalize(&cur.parent().unwrap_or(Path::new("")).join(target))?
        };
    }
    None
}

/// Where a `DT_NEEDED` name is found: the package index and the path of the name in it.
fn find_library(packages: &[FetchedPackage], name: &str) -> Option<(usize, PathBuf)> {
    for dir in LIBRARY_DIRS {
        for (i, p) in packages.iter().enumerate() {
            let rel = Path::new(dir).join(name);
            if resolve_in(&p.root, &rel).is_some() {
                return Some((i, rel));
            }
        }
    }
    None
}

fn read_file(root: &Path, rel: &Path) -> Result<(Vec<u8>, u32), ImageError> {
    let path = root.join(rel);
    let data = std::fs::read(&path).map_err(|e| ImageError::io("read", &path, e))?;
    let mode = std::fs::metadata(&path)
        .map_err(|e| ImageError::io("stat", &path, e))?
        .permissions()
        .mode()
        & 0o7777;
    Ok((data, mode))
}

fn abs(rel: &Path) -> String {
    format!("/{}", rel.display())
}

/// Resolves the closure of `programs` against `packages` (the fetched program and library
/// packages). `list` names image/programs.toml in errors.
pub fn resolve(
    programs: &ProgramList,
    packages: &[FetchedPackage],
    list: &Path,
) -> Result<Closure, ImageError> {
    let mut closure = Closure::default();
    // (package index, path in the package of the ELF file to scan, name of who needed it)
    let mut queue: VecDeque<(usize, PathBuf, String)> = VecDeque::new();
    let bad = |problem: String, fix: String| ImageError::BadInput {
        path: list.to_path_buf(),
        problem,
        fix,
    };

    for prog in &programs.programs {
        let Some(i) = packages.iter().position(|p| p.locked.name == prog.package) else {
            return Err(bad(
                format!("package {} of {} is not pinned", prog.package, prog.path),
                LOCK_FIX.into(),
            ));
        };
        let pkg = &packages[i];
        let rel = PathBuf::from(prog.path.trim_start_matches('/'));
        let Some(real) = resolve_in(&pkg.root, &rel) else {
            return Err(bad(
                format!(
                    "{} is not a file in {} {}",
                    prog.path, pkg.locked.name, pkg.locked.version
                ),
                "fix `path` or `package` of that entry (`dpkg -c` on the .deb lists its files)"
                    .into(),
            ));
        };
        let (data, mode) = read_file(&pkg.root, &real)?;
        closure.files.insert(
            prog.path.clone(),
            Shipped {
                path: prog.path.clone(),
                kind: ShippedKind::File { data, mode },
                origin: pkg.locked.origin(),
            },
        );
        for link in &prog.links {
            closure.files.insert(
                link.clone(),
                Shipped {
                    path: link.clone(),
                    kind: ShippedKind::Symlink {
                        target: prog.path.clone(),
                    },
                    origin: pkg.locked.origin(),
                },
            );
        }
        queue.push_back((i, real, prog.path.clone()));
    }

    while let Some((i, rel, shipped_as)) = queue.pop_front() {
        let pkg = &packages[i];
        let path = pkg.root.join(&rel);
        let data = std::fs::read(&path).map_err(|e| ImageError::io("read", &path, e))?;
        if !data.starts_with(b"\x7fELF") {
            continue; // a script: nothing for the loader to do
        }
        let info = elf::dynamic_info(&data).map_err(|problem| ImageError::BadInput {
            path: path.clone(),
            problem,
            fix: format!(
                "{shipped_as} must be an x86-64 program; check `path` in {}",
                list.display()
            ),
        })?;
        let mut wanted: Vec<(String, Option<(usize, PathBuf)>)> = Vec::new();
        if let Some(interp) = &info.interpreter {
            let rel = PathBuf::from(interp.trim_start_matches('/'));
            let found = packages
                .iter()
                .position(|p| resolve_in(&p.root, &rel).is_some())
                .map(|j| (j, rel));
            wanted.push((interp.clone(), found));
        }
        for name in &info.needed {
            wanted.push((name.clone(), find_library(packages, name)));
        }
        for (name, found) in wanted {
            let Some((j, at)) = found else {
                return Err(bad(
                    format!(
                        "{name}, needed by {shipped_as}, is in none of the pinned program and library packages"
                    ),
                    format!(
                        "{LOCK_FIX}; `make lock` pins the lib* packages of each program's Depends"
                    ),
                ));
            };
            let dest = abs(&at);
            if closure.files.contains_key(&dest) {
                continue;
            }
            let p = &packages[j];
            let Some(real) = resolve_in(&p.root, &at) else {
                continue; // checked by find_library / position above
            };
            let (data, mode) = read_file(&p.root, &real)?;
            if name.starts_with('/') && real != at {
                // The loader: keep the package's link (/lib64/ld-linux-x86-64.so.2 -> …).
                let target = abs(&real);
                closure.files.insert(
                    dest.clone(),
                    Shipped {
                        path: dest.clone(),
                        kind: ShippedKind::Symlink {
                            target: target.clone(),
                        },
                        origin: p.locked.origin(),
                    },
                );
                if closure.files.contains_key(&target) {
                    continue;
                }
                closure.files.insert(
                    target.clone(),
                    Shipped {
                        path: target.clone(),
                        kind: ShippedKind::File { data, mode },
                        origin: p.locked.origin(),
                    },
                );
                queue.push_back((j, real, target));
                continue;
            }
            closure.files.insert(
                dest.clone(),
                Shipped {
                    path: dest.clone(),
                    kind: ShippedKind::File { data, mode },
                    origin: p.locked.origin(),
                },
            );
            queue.push_back((j, real, dest));
        }
    }
    Ok(closure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_package_only() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("lib/x86_64-linux-gnu")).unwrap();
        std::fs::create_dir_all(root.join("lib64")).unwrap();
        std::fs::write(root.join("lib/x86_64-linux-gnu/libx.so.1.2"), b"x").unwrap();
        std::os::unix::fs::symlink("libx.so.1.2", root.join("lib/x86_64-linux-gnu/libx.so.1"))
            .unwrap();
        std::os::unix::fs::symlink("/lib/x86_64-linux-gnu/libx.so.1", root.join("lib64/abs.so"))
            .unwrap();
        std::os::unix::fs::symlink("../../../../etc/passwd", root.join("lib64/escape")).unwrap();
        assert_eq!(
            resolve_in(root, Path::new("lib/x86_64-linux-gnu/libx.so.1")),
            Some(PathBuf::from("lib/x86_64-linux-gnu/libx.so.1.2"))
        );
        assert_eq!(
            resolve_in(root, Path::new("lib64/abs.so")),
            Some(PathBuf::from("lib/x86_64-linux-gnu/libx.so.1.2"))
        );
        assert_eq!(resolve_in(root, Path::new("lib64/escape")), None);
        assert_eq!(resolve_in(root, Path::new("lib64/missing")), None);
    }
}
