//! `image/packages.lock`: the Debian packages the image contains, pinned by version, pool file
//! name and sha256 of the .deb, and its regeneration from the current apt candidates.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::{ImageError, LOCK_FIX};
use crate::programs::ProgramList;

/// Format version of the lock file; bump when the schema changes.
pub const LOCK_FORMAT: u32 = 1;
/// The metapackage that names the kernel Tessera follows.
pub const KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";
/// Package that provides the static busybox in /bin/busybox.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// Package that provides the UKI stub `linuxx64.efi.stub`.
pub const EFI_STUB_PACKAGE: &str = "systemd-boot-efi";

/// What a pinned package is used for. `kernel`, `busybox` and `efi-stub` are pinned exactly
/// once; `program` (a package named by image/programs.toml) and `library` (a `lib*` package in
/// the Depends closure of a program package) as often as the programs need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The kernel image and its modules (`linux-image-<release>`).
    Kernel,
    /// `/bin/busybox` and its applet links.
    Busybox,
    /// The systemd-boot EFI stub the UKI is built from.
    EfiStub,
    /// A package a program of image/programs.toml is shipped from.
    Program,
    /// A shared-library package the programs may need (resolved by `DT_NEEDED` at build).
    Library,
}

impl Role {
    /// The roles pinned exactly once.
    pub const SINGLE: [Role; 3] = [Role::Kernel, Role::Busybox, Role::EfiStub];

    pub fn is_single(self) -> bool {
        Role::SINGLE.contains(&self)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Kernel => "kernel",
            Role::Busybox => "busybox",
            Role::EfiStub => "efi-stub",
            Role::Program => "program",
            Role::Library => "library",
        })
    }
}

/// One pinned Debian package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    pub role: Role,
    pub name: String,
    pub version: String,
    /// Lower-case hex sha256 of the .deb file.
    pub sha256: String,
    /// Path of the .deb in the Debian pool (informational: where to find it by hand).
    pub filename: String,
}

impl LockedPackage {
    /// `name@version`, the origin string used in the manifest.
    pub fn origin(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// The whole lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    pub format: u32,
    #[serde(rename = "package")]
    pub packages: Vec<LockedPackage>,
}

impl LockFile {
    /// Parses and validates lock-file text; the error says what is wrong (not where the file is).
    pub fn parse(text: &str) -> Result<LockFile, String> {
        let lock: LockFile = toml::from_str(text).map_err(|e| e.to_string().trim().to_string())?;
        if lock.format != LOCK_FORMAT {
            return Err(format!(
                "format = {} is not supported (this builder reads format {LOCK_FORMAT})",
                lock.format
            ));
        }
        let mut seen = BTreeMap::new();
        let mut names = std::collections::BTreeSet::new();
        for p in &lock.packages {
            validate_package(p)?;
            if p.role.is_single() && seen.insert(p.role, &p.name).is_some() {
                return Err(format!("role `{}` is pinned more than once", p.role));
            }
            if !p.role.is_single() && !names.insert(&p.name) {
                return Err(format!("package {} is pinned more than once", p.name));
            }
        }
        for role in Role::SINGLE {
            if !seen.contains_key(&role) {
                return Err(format!("no package with role = \"{role}\""));
            }
        }
        Ok(lock)
    }

    /// Reads the lock file at `path`.
    pub fn load(path: &Path) -> Result<LockFile, ImageError> {
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ImageError::MissingInput {
                what: "package lock file".into(),
                path: path.to_path_buf(),
                fix: format!("create it with `tessera image lock` (`make lock`); {LOCK_FIX}"),
            },
            _ => ImageError::io("read", path, e),
        })?;
        LockFile::parse(&text).map_err(|problem| ImageError::BadInput {
            path: path.to_path_buf(),
            problem,
            fix: format!("repair it by hand or {LOCK_FIX}"),
        })
    }

    /// The program or library package pinned under `name`, if any.
    pub fn runtime(&self, name: &str) -> Option<&LockedPackage> {
        self.packages
            .iter()
            .find(|p| !p.role.is_single() && p.name == name)
    }

    /// The packages pinned with `role` (for `program` and `library`: sorted by name).
    pub fn with_role(&self, role: Role) -> Vec<&LockedPackage> {
        let mut v: Vec<&LockedPackage> = self.packages.iter().filter(|p| p.role == role).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The package pinned for a single `role` (present: `parse` checked every such role).
    pub fn get(&self, role: Role) -> &LockedPackage {
        self.packages
            .iter()
            .find(|p| p.role == role)
            .expect("LockFile::parse guarantees every role is pinned")
    }

    /// The lock file text, with a header saying how it is made.
    pub fn render(&self) -> String {
        let mut packages = self.packages.clone();
        packages.sort_by(|a, b| (a.role, &a.name).cmp(&(b.role, &b.name)));
        let body = toml::to_string(&LockFile {
            format: self.format,
            packages,
        })
        .expect("lock file serialises: only strings and integers");
        format!(
            "# Debian packages of the Tessera image, pinned by version and sha256 of the .deb.\n\
             # Generated by `tessera image lock --update` (`make lock`) from the apt candidates;\n\
             # commit it so that every build of a given commit contains the same bytes.\n\n{body}"
        )
    }

    /// Human-readable differences between `self` (the file) and `other` (the candidates).
    pub fn changes_to(&self, other: &LockFile) -> Vec<String> {
        let mut out = Vec::new();
        for role in Role::SINGLE {
            let (a, b) = (self.get(role), other.get(role));
            if a != b {
                out.push(format!(
                    "  {role}: {} {} -> {} {}",
                    a.name, a.version, b.name, b.version
                ));
            }
        }
        let runtime = |l: &LockFile| -> BTreeMap<String, LockedPackage> {
            l.packages
                .iter()
                .filter(|p| !p.role.is_single())
                .map(|p| (p.name.clone(), p.clone()))
                .collect()
        };
        let (mine, theirs) = (runtime(self), runtime(other));
        for (name, a) in &mine {
            match theirs.get(name) {
                None => out.push(format!("  {}: {name} {} -> (dropped)", a.role, a.version)),
                Some(b) if a != b => out.push(format!(
                    "  {}: {name} {} -> {}",
                    b.role, a.version, b.version
                )),
                Some(_) => {}
            }
        }
        for (name, b) in &theirs {
            if !mine.contains_key(name) {
                out.push(format!("  {}: (new) -> {name} {}", b.role, b.version));
            }
        }
        out
    }
}

/// Checks that `name` is a Debian package name (it ends up on apt-get's command line).
pub fn check_package_name(name: &str) -> Result<(), String> {
    let name_ok = name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    if name_ok {
        Ok(())
    } else {
        Err(format!(
            "package name `{name}` is not a Debian package name"
        ))
    }
}

fn validate_package(p: &LockedPackage) -> Result<(), String> {
    // Names and versions end up on apt-get's command line: keep them to Debian's alphabet.
    check_package_name(&p.name)?;
    let version_ok = p.version.starts_with(|c: char| c.is_ascii_digit())
        && p.version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+~:-".contains(c));
    if !version_ok {
        return Err(format!(
            "version `{}` of {} is not a Debian version",
            p.version, p.name
        ));
    }
    if p.sha256.len() != 64
        || !p
            .sha256
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        return Err(format!(
            "sha256 of {} must be 64 lower-case hex digits, got `{}`",
            p.name, p.sha256
        ));
    }
    if p.filename.is_empty() || !p.filename.ends_with(".deb") {
        return Err(format!(
            "filename of {} must be the pool path of a .deb",
            p.name
        ));
    }
    Ok(())
}

/// Parses one RFC 822 stanza of `apt-cache show` into field → value (continuation lines joined).
pub fn parse_stanza(text: &str) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.is_empty() {
            break; // one stanza only
        }
        if line.starts_with([' ', '\t']) {
            if let Some(v) = last.as_ref().and_then(|k| fields.get_mut(k)) {
                let v: &mut String = v;
                v.push('\n');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            fields.insert(k.trim().to_string(), v.trim().to_string());
            last = Some(k.trim().to_string());
        }
    }
    fields
}

/// The concrete kernel package a `linux-image-*` metapackage's `Depends:` names.
pub fn kernel_from_depends(depends: &str) -> Option<String> {
    depends
        .split([',', '|'])
        .map(|alt| alt.split_whitespace().next().unwrap_or(""))
        .find(|name| name.starts_with("linux-image-") && *name != KERNEL_METAPACKAGE)
        .map(str::to_string)
}

/// Asks apt for the candidate record of `package`.
fn apt_candidate(package: &str) -> Result<BTreeMap<String, String>, ImageError> {
    let command = format!("apt-cache show --no-all-versions {package}");
    let out = Command::new("apt-cache")
        .args(["show", "--no-all-versions", package])
        .output()
        .map_err(|e| ImageError::Tool {
            command: command.clone(),
            detail: e.to_string(),
            fix: "run on a Debian host with apt".into(),
        })?;
    let fields = parse_stanza(&String::from_utf8_lossy(&out.stdout));
    if !out.status.success() || !fields.contains_key("Version") {
        return Err(ImageError::Tool {
            command,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            fix: "check the apt sources (Debian bookworm main + security) and run `apt-get update`"
                .into(),
        });
    }
    Ok(fields)
}

fn locked_from_candidate(role: Role, package: &str) -> Result<LockedPackage, ImageError> {
    let f = apt_candidate(package)?;
    let field = |k: &str| f.get(k).cloned().unwrap_or_default();
    let p = LockedPackage {
        role,
        name: package.to_string(),
        version: field("Version"),
        sha256: field("SHA256"),
        filename: field("Filename"),
    };
    validate_package(&p).map_err(|problem| ImageError::Tool {
        command: format!("apt-cache show --no-all-versions {package}"),
        detail: problem,
        fix: "check the apt sources".into(),
    })?;
    Ok(p)
}

/// The package names of a `Depends:`/`Pre-Depends:` field: the first alternative of each
/// entry, without version constraints or architecture qualifiers.
pub fn depends_names(field: &str) -> Vec<String> {
    field
        .split(',')
        .filter_map(|entry| entry.split('|').next())
        .filter_map(|alt| alt.split_whitespace().next())
        .map(|name| name.split(':').next().unwrap_or(name).to_string())
        .filter(|name| !name.is_empty())
        .collect()
}

/// Library packages whose names do not start with `lib` (zlib's, which dropbear, btrfs-progs
/// and lvm2 link against).
const LIBRARY_PACKAGES_WITHOUT_LIB_PREFIX: &[&str] = &["zlib1g"];

/// Whether a dependency is a shared library package (followed by [`library_closure`]).
fn is_library_package(name: &str) -> bool {
    name.starts_with("lib") || LIBRARY_PACKAGES_WITHOUT_LIB_PREFIX.contains(&name)
}

/// The `lib*` packages (and zlib1g) in the Depends closure of `roots` (shared libraries are
/// packaged as `lib*` in Debian; other dependencies, such as `gcc-12-base` or `debconf`, ship
/// no library a program links against and are not followed). `libc6` is always there: it has
/// the loader.
pub fn library_closure(
    roots: &[String],
    depends_of: &mut dyn FnMut(&str) -> Result<Vec<String>, ImageError>,
) -> Result<Vec<String>, ImageError> {
    let mut seen = std::collections::BTreeSet::new();
    let mut queue: Vec<String> = roots.to_vec();
    queue.push("libc6".into());
    let mut libraries = std::collections::BTreeSet::new();
    while let Some(name) = queue.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if !roots.contains(&name) {
            libraries.insert(name.clone());
        }
        for dep in depends_of(&name)? {
            if is_library_package(&dep) && !seen.contains(&dep) {
                queue.push(dep);
            }
        }
    }
    Ok(libraries.into_iter().collect())
}

/// Builds a lock from today's apt candidates, resolving the kernel metapackage to the concrete
/// `linux-image-<release>` package it depends on, and pinning the packages of `programs` with
/// their library closure.
pub fn resolve_candidates(programs: &ProgramList) -> Result<LockFile, ImageError> {
    let meta = apt_candidate(KERNEL_METAPACKAGE)?;
    let depends = meta.get("Depends").cloned().unwrap_or_default();
    let kernel = kernel_from_depends(&depends).ok_or_else(|| ImageError::Tool {
        command: format!("apt-cache show --no-all-versions {KERNEL_METAPACKAGE}"),
        detail: format!("Depends: `{depends}` names no linux-image-* package"),
        fix: "check the apt sources".into(),
    })?;
    let mut packages = vec![
        locked_from_candidate(Role::Kernel, &kernel)?,
        locked_from_candidate(Role::Busybox, BUSYBOX_PACKAGE)?,
        locked_from_candidate(Role::EfiStub, EFI_STUB_PACKAGE)?,
    ];
    let roots = programs.packages();
    if !roots.is_empty() {
        for name in &roots {
            packages.push(locked_from_candidate(Role::Program, name)?);
        }
        let mut depends_of = |name: &str| -> Result<Vec<String>, ImageError> {
            let f = apt_candidate(name)?;
            let mut names = Vec::new();
            for field in ["Pre-Depends", "Depends"] {
                names.extend(depends_names(f.get(field).map_or("", String::as_str)));
            }
            Ok(names)
        };
        for name in library_closure(&roots, &mut depends_of)? {
            packages.push(locked_from_candidate(Role::Library, &name)?);
        }
    }
    Ok(LockFile {
        format: LOCK_FORMAT,
        packages,
    })
}

/// What `tessera image lock` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOutcome {
    /// There was no lock file; it was written.
    Created(LockFile),
    /// The lock file already matched the candidates.
    UpToDate(LockFile),
    /// `--update`: the lock file was rewritten; the strings describe what changed.
    Updated(LockFile, Vec<String>),
}

/// `tessera image lock [--update]`: creates a missing lock file; with an existing one, checks it
/// against the apt candidates and rewrites it only with `update` (otherwise a stale lock is an
/// error listing the changes).
pub fn lock(path: &Path, programs: &ProgramList, update: bool) -> Result<LockOutcome, ImageError> {
    let candidates = resolve_candidates(programs)?;
    if !path.exists() {
        write_lock(path, &candidates)?;
        return Ok(LockOutcome::Created(candidates));
    }
    // An unreadable old lock is replaced on --update: that is how a broken lock gets fixed.
    let current = match LockFile::load(path) {
        Ok(l) => Some(l),
        Err(e) if !update => return Err(e),
        Err(_) => None,
    };
    let changes = match &current {
        Some(c) => c.changes_to(&candidates),
        None => vec!["  (the old lock file was unreadable)".to_string()],
    };
    if changes.is_empty() && current.as_ref() == Some(&candidates) {
        return Ok(LockOutcome::UpToDate(candidates));
    }
    if !update {
        let changes = if changes.is_empty() {
            "  (same versions, different hashes or pool paths)".to_string()
        } else {
            changes.join("\n")
        };
        return Err(ImageError::LockStale {
            lock: path.to_path_buf(),
            changes,
        });
    }
    write_lock(path, &candidates)?;
    Ok(LockOutcome::Updated(candidates, changes))
}

fn write_lock(path: &Path, lock: &LockFile) -> Result<(), ImageError> {
    // Write-then-rename so an interrupted update never leaves half a lock file.
    let tmp = path.with_extension("lock.tmp");
    std::fs::write(&tmp, lock.render()).map_err(|e| ImageError::io("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| ImageError::io("replace", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
format = 1

[[package]]
role = "kernel"
name = "linux-image-6.1.0-56-cloud-amd64"
version = "6.1.192-2"
sha256 = "e7d02b943971edcb8790e256c02cfab3bca6c3d37c1bf25392a57c71300615ee"
filename = "pool/updates/main/l/linux-signed-amd64/linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb"

[[package]]
role = "busybox"
name = "busybox-static"
version = "1:1.35.0-4+deb12u1+b1"
sha256 = "3d3fdbe91d4660c873e14b092c213fe81c1da6362daa236eb25d0171eb108744"
filename = "pool/main/b/busybox/busybox-static_1.35.0-4+deb12u1+b1_amd64.deb"

[[package]]
role = "efi-stub"
name = "systemd-boot-efi"
version = "252.39-1~deb12u2"
sha256 = "8f2b81bdcfafc466882a0cae460272dbf10d8d97c6a3c1c6ea33038c155a2f5e"
filename = "pool/main/s/systemd/systemd-boot-efi_252.39-1~deb12u2_amd64.deb"
"#;

    #[test]
    fn good_lock_parses_and_round_trips() {
        let lock = LockFile::parse(GOOD).unwrap();
        assert_eq!(lock.get(Role::Busybox).version, "1:1.35.0-4+deb12u1+b1");
        assert_eq!(LockFile::parse(&lock.render()).unwrap(), lock);
    }

    #[test]
    fn lock_parse_error_names_missing_field() {
        let text = GOOD.replace("version = \"6.1.192-2\"\n", "");
        let err = LockFile::parse(&text).unwrap_err();
        assert!(err.contains("version"), "{err}");
    }

    #[test]
    fn lock_parse_error_rejects_short_sha256() {
        let text = GOOD.replace("e7d02b943971edcb", "");
        let err = LockFile::parse(&text).unwrap_err();
        assert!(
            err.contains("sha256 of linux-image-6.1.0-56-cloud-amd64"),
            "{err}"
        );
    }

    #[test]
    fn lock_parse_error_names_missing_role() {
        let cut = GOOD.find("[[package]]\nrole = \"efi-stub\"").unwrap();
        let err = LockFile::parse(&GOOD[..cut]).unwrap_err();
        assert!(err.contains("efi-stub"), "{err}");
    }

    #[test]
    fn lock_parse_error_rejects_duplicate_role_unknown_field_and_bad_name() {
        let dup = GOOD.replace("role = \"efi-stub\"", "role = \"busybox\"");
        assert!(LockFile::parse(&dup)
            .unwrap_err()
            .contains("more than once"));
        let unknown = GOOD.replace("format = 1", "format = 1\nsurprise = true");
        assert!(LockFile::parse(&unknown).unwrap_err().contains("surprise"));
        let bad = GOOD.replace("name = \"busybox-static\"", "name = \"--option\"");
        assert!(LockFile::parse(&bad).unwrap_err().contains("--option"));
        let fmt = GOOD.replace("format = 1", "format = 7");
        assert!(LockFile::parse(&fmt).unwrap_err().contains("format = 7"));
    }

    #[test]
    fn program_and_library_roles_may_repeat_but_not_a_name() {
        let extra = "\n[[package]]\nrole = \"program\"\nname = \"nftables\"\nversion = \"1.0.6-2\"\nsha256 = \"e7d02b943971edcb8790e256c02cfab3bca6c3d37c1bf25392a57c71300615ee\"\nfilename = \"pool/main/n/nftables/nftables_1.0.6-2_amd64.deb\"\n";
        let lib = extra
            .replace("program", "library")
            .replace("nftables", "libmnl0");
        let lock = LockFile::parse(&format!("{GOOD}{extra}{lib}")).unwrap();
        assert_eq!(lock.runtime("libmnl0").unwrap().role, Role::Library);
        assert_eq!(lock.with_role(Role::Program).len(), 1);
        assert_eq!(LockFile::parse(&lock.render()).unwrap(), lock);
        let err = LockFile::parse(&format!("{GOOD}{extra}{extra}")).unwrap_err();
        assert!(err.contains("nftables is pinned more than once"), "{err}");
        let mut newer = lock.clone();
        newer.packages.retain(|p| p.name != "libmnl0");
        assert_eq!(
            lock.changes_to(&newer),
            ["  library: libmnl0 1.0.6-2 -> (dropped)"]
        );
    }

    #[test]
    fn library_closure_follows_lib_packages_only() {
        let mut deps = |name: &str| -> Result<Vec<String>, ImageError> {
            Ok(depends_names(match name {
                "nftables" => {
                    "libnftables1 (= 1.0.6), libc6 (>= 2.34), libedit2 | libreadline8, zlib1g"
                }
                "libnftables1" => "libmnl0, libc6:any",
                "libc6" => "libgcc-s1",
                "libgcc-s1" => "gcc-12-base (= 12.2), libc6",
                _ => "",
            }))
        };
        let libs = library_closure(&["nftables".into()], &mut deps).unwrap();
        assert_eq!(
            libs,
            [
                "libc6",
                "libedit2",
                "libgcc-s1",
                "libmnl0",
                "libnftables1",
                "zlib1g"
            ]
        );
    }

    #[test]
    fn stanza_and_kernel_dependency_are_parsed() {
        let f = parse_stanza(
            "Package: linux-image-cloud-amd64\nVersion: 6.1.192-2\nDepends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)\nDescription: x\n more\n\nPackage: other\n",
        );
        assert_eq!(f["Version"], "6.1.192-2");
        assert_eq!(f["Description"], "x\nmore");
        assert_eq!(
            kernel_from_depends(&f["Depends"]).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(kernel_from_depends("kmod, linux-base"), None);
    }
}
