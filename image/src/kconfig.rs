//! The build-time kernel check: every option of `kernel-config/tessera.fragment` must be
//! built into the pinned kernel (`=y`), or be a module (`=m`) that the image ships, as mapped
//! by `kernel-config/modules.toml`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use crate::error::ImageError;
use crate::modules::normalize;

/// The value of one Kconfig option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Yes,
    Module,
    /// `# CONFIG_X is not set`
    NotSet,
    /// A string or number, kept verbatim (quotes included).
    Other(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Yes => f.write_str("y"),
            Value::Module => f.write_str("m"),
            Value::NotSet => f.write_str("is not set"),
            Value::Other(v) => f.write_str(v),
        }
    }
}

fn parse_line(line: &str) -> Option<(String, Value)> {
    let line = line.trim();
    if let Some(rest) = line.strip_prefix("# ") {
        let opt = rest.strip_suffix(" is not set")?;
        return opt
            .starts_with("CONFIG_")
            .then(|| (opt.to_string(), Value::NotSet));
    }
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let (k, v) = line.split_once('=')?;
    let value = match v {
        "y" => Value::Yes,
        "m" => Value::Module,
        "n" => Value::NotSet,
        other => Value::Other(other.to_string()),
    };
    Some((k.to_string(), value))
}

/// Parses a kernel `.config` (`/boot/config-<release>`).
pub fn parse_config(text: &str) -> BTreeMap<String, Value> {
    text.lines().filter_map(parse_line).collect()
}

/// Parses a fragment, in order; lines that are neither options nor comments are errors.
pub fn parse_fragment(text: &str) -> Result<Vec<(String, Value)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || (t.starts_with('#') && !t.ends_with(" is not set")) {
            continue;
        }
        match parse_line(t) {
            Some((k, v)) if k.starts_with("CONFIG_") => out.push((k, v)),
            _ => return Err(format!("line {}: `{t}` is not `CONFIG_X=value`", i + 1)),
        }
    }
    Ok(out)
}

/// `kernel-config/modules.toml`: option → the module(s) that provide it when it is `=m`.
pub fn parse_option_modules(text: &str) -> Result<BTreeMap<String, Vec<String>>, String> {
    let raw: BTreeMap<String, Vec<String>> =
        toml::from_str(text).map_err(|e| e.to_string().trim().to_string())?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| (k, v.iter().map(|m| normalize(m)).collect()))
        .collect())
}

/// Why a fragment option is not satisfied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The kernel does not have the option at all (or has it disabled).
    Absent { option: String },
    /// The option is a module in this kernel but not every providing module is shipped.
    ModuleNotShipped {
        option: String,
        modules: Vec<String>,
    },
    /// The option is a module but kernel-config/modules.toml does not say which.
    NoModuleMapping { option: String },
    /// A non-boolean option has another value (or one that must be unset is set).
    WrongValue {
        option: String,
        want: Value,
        got: Value,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Absent { option } => write!(f, "  {option}: absent from the kernel config"),
            Problem::ModuleNotShipped { option, modules } => write!(
                f,
                "  {option}: is a module (=m), but the image does not ship {}",
                modules.join(", ")
            ),
            Problem::NoModuleMapping { option } => write!(
                f,
                "  {option}: is a module (=m), but kernel-config/modules.toml names no module for it"
            ),
            Problem::WrongValue { option, want, got } => {
                write!(f, "  {option}: must be {want}, the kernel has {got}")
            }
        }
    }
}

/// Checks `fragment` against the kernel `config`, given the shipped (normalized) module names.
pub fn check(
    fragment: &[(String, Value)],
    config: &BTreeMap<String, Value>,
    option_modules: &BTreeMap<String, Vec<String>>,
    shipped: &BTreeSet<String>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (option, want) in fragment {
        let got = config.get(option).cloned().unwrap_or(Value::NotSet);
        let problem = match (want, &got) {
            (Value::Yes | Value::Module, Value::Yes) => None,
            (Value::Yes | Value::Module, Value::Module) => match option_modules.get(option) {
                None => Some(Problem::NoModuleMapping {
                    option: option.clone(),
                }),
                Some(mods) => {
                    let missing: Vec<String> = mods
                        .iter()
                        .filter(|m| !shipped.contains(*m))
                        .cloned()
                        .collect();
                    (!missing.is_empty() || mods.is_empty()).then(|| Problem::ModuleNotShipped {
                        option: option.clone(),
                        modules: missing,
                    })
                }
            },
            (Value::Yes | Value::Module, _) => Some(Problem::Absent {
                option: option.clone(),
            }),
            (Value::NotSet, Value::NotSet) => None,
            (want, got) if want == got => None,
            (want, got) => Some(Problem::WrongValue {
                option: option.clone(),
                want: want.clone(),
                got: got.clone(),
            }),
        };
        problems.extend(problem);
    }
    problems
}

/// Reads the fragment, the option → module map and the kernel config, and checks them.
pub fn check_files(
    fragment_path: &Path,
    option_modules_path: &Path,
    kernel_config_path: &Path,
    release: &str,
    shipped: &BTreeSet<String>,
) -> Result<usize, ImageError> {
    let read = |what: &str, path: &Path| {
        std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ImageError::MissingInput {
                what: what.to_string(),
                path: path.to_path_buf(),
                fix: "restore it from git".into(),
            },
            _ => ImageError::io("read", path, e),
        })
    };
    let fragment =
        parse_fragment(&read("kernel config fragment", fragment_path)?).map_err(|problem| {
            ImageError::BadInput {
                path: fragment_path.to_path_buf(),
                problem,
                fix: "use Kconfig syntax".into(),
            }
        })?;
    let option_modules = parse_option_modules(&read("option → module map", option_modules_path)?)
        .map_err(|problem| ImageError::BadInput {
        path: option_modules_path.to_path_buf(),
        problem,
        fix: "it maps `CONFIG_X = [\"module\", ..]`".into(),
    })?;
    let config = parse_config(&read(
        "kernel config of the pinned kernel",
        kernel_config_path,
    )?);
    let problems = check(&fragment, &config, &option_modules, shipped);
    if problems.is_empty() {
        Ok(fragment.len())
    } else {
        let problems = problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        Err(ImageError::KernelConfig {
            release: release.to_string(),
            problems,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "\
# comment
CONFIG_DEVTMPFS=y
CONFIG_BTRFS_FS=m
CONFIG_VFAT_FS=m
CONFIG_MODPROBE_PATH=\"/sbin/modprobe\"
# CONFIG_MODULE_SIG_FORCE is not set
";

    fn setup(fragment: &str) -> Vec<Problem> {
        let frag = parse_fragment(fragment).unwrap();
        let config = parse_config(CONFIG);
        let map = parse_option_modules(
            "CONFIG_BTRFS_FS = [\"btrfs\"]\nCONFIG_VFAT_FS = [\"vfat\", \"fat\"]\n",
        )
        .unwrap();
        let shipped: BTreeSet<String> = ["btrfs", "fat"].iter().map(|s| s.to_string()).collect();
        check(&frag, &config, &map, &shipped)
    }

    #[test]
    fn satisfied_fragment_has_no_problems() {
        let p = setup(
            "# builtin and shipped module\nCONFIG_DEVTMPFS=y\nCONFIG_BTRFS_FS=y\n\
             CONFIG_MODPROBE_PATH=\"/sbin/modprobe\"\n# CONFIG_MODULE_SIG_FORCE is not set\n",
        );
        assert_eq!(p, []);
    }

    #[test]
    fn missing_option_is_named() {
        let p = setup("CONFIG_DEVTMPFS=y\nCONFIG_NOPE=y\n");
        assert_eq!(
            p,
            [Problem::Absent {
                option: "CONFIG_NOPE".into()
            }]
        );
        assert!(p[0].to_string().contains("CONFIG_NOPE: absent"));
    }

    #[test]
    fn module_not_shipped_is_named_with_the_module() {
        let p = setup("CONFIG_VFAT_FS=y\n");
        assert_eq!(
            p,
            [Problem::ModuleNotShipped {
                option: "CONFIG_VFAT_FS".into(),
                modules: vec!["vfat".into()]
            }]
        );
        assert!(p[0].to_string().contains("does not ship vfat"), "{}", p[0]);
    }

    #[test]
    fn module_without_mapping_and_wrong_values_are_reported() {
        let frag = parse_fragment("CONFIG_BTRFS_FS=y\nCONFIG_MODPROBE_PATH=\"/bin/x\"\n").unwrap();
        let p = check(
            &frag,
            &parse_config(CONFIG),
            &BTreeMap::new(),
            &BTreeSet::new(),
        );
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[0],
            Problem::NoModuleMapping {
                option: "CONFIG_BTRFS_FS".into()
            }
        );
        assert!(p[1].to_string().contains("must be \"/bin/x\""), "{}", p[1]);
    }

    #[test]
    fn fragment_syntax_errors_name_the_line() {
        let err = parse_fragment("CONFIG_A=y\nnonsense\n").unwrap_err();
        assert!(err.starts_with("line 2"), "{err}");
    }
}
