//! config.json: parsing it with errors that name the field, checking a bundle's config before
//! it is run, the default spec, and the spec an OCI image's config turns into.
//!
//! The types are `oci_spec`'s (STYLE "Containers"); this module only adds what they lack:
//! field paths in errors (`serde_path_to_error`), the checks a runtime needs before it starts
//! (root, process, args, ociVersion) and the defaults `runc spec` writes.

use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    Capabilities, Capability, LinuxCapabilities, LinuxDeviceCgroup, LinuxNamespace,
    LinuxNamespaceType, Spec,
};

/// The runtime-spec version Tessera writes into the configs it makes.
pub const OCI_VERSION: &str = "1.2.0";

/// The PATH a process gets when its image sets none (the one Docker and runc use).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// config.json is small; anything bigger than this is not a config.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Why a config.json (or an image config) cannot be used. Display names the file, the field
/// and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{}: missing: an OCI bundle needs a config.json next to rootfs/; add one (`runc spec` writes a starting point)", .path.display())]
    Missing { path: PathBuf },
    #[error("{}: cannot read: {source}; check the file's permissions", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {field}: {message}; fix that field (OCI runtime spec, config.md)")]
    Parse {
        file: String,
        field: String,
        message: String,
    },
    #[error("{file}: {field}: {problem}; {fix}")]
    Invalid {
        file: String,
        field: String,
        problem: String,
        fix: String,
    },
}

impl SpecError {
    fn invalid(file: &str, field: &str, problem: impl Into<String>, fix: &str) -> Self {
        SpecError::Invalid {
            file: file.to_string(),
            field: field.to_string(),
            problem: problem.into(),
            fix: fix.to_string(),
        }
    }

    /// The field the error is about ("process.args"), when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            SpecError::Parse { field, .. } | SpecError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// Parses config.json; a type error names the field path ("process.args: invalid type …").
pub fn parse(bytes: &[u8]) -> Result<Spec, SpecError> {
    parse_json(bytes).map_err(|(field, message)| SpecError::Parse {
        file: "config.json".to_string(),
        field,
        message,
    })
}

/// Any JSON document into an oci-spec type; the error is (field path, message).
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, (String, String)> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." {
            "(top level)".to_string()
        } else {
            field
        };
        (field, e.into_inner().to_string())
    })?;
    de.end()
        .map_err(|e| ("(end of document)".to_string(), e.to_string()))?;
    Ok(value)
}

/// Loads `bundle/config.json` and checks what a runtime needs before it starts.
pub fn load(bundle: &Path) -> Result<Spec, SpecError> {
    let path = bundle.join("config.json");
    let bytes = read_config(&path)?;
    let spec = parse(&bytes)?;
    validate(&spec, bundle)?;
    Ok(spec)
}

fn read_config(path: &Path) -> Result<Vec<u8>, SpecError> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SpecError::Missing {
                path: path.to_path_buf(),
            })
        }
        Err(source) => {
            return Err(SpecError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(SpecError::invalid(
            "config.json",
            "(file)",
            format!("bigger than {MAX_CONFIG_BYTES} bytes"),
            "a config.json is a few KiB; rebuild the bundle with a real config",
        ));
    }
    Ok(bytes)
}

/// The checks `load` makes: ociVersion 1.x, root.path an existing directory (relative paths
/// are relative to `bundle`), process present with a non-empty args and an absolute cwd.
pub fn validate(spec: &Spec, bundle: &Path) -> Result<(), SpecError> {
    const F: &str = "config.json";
    let version = spec.version();
    if version.split('.').next() != Some("1") {
        return Err(SpecError::invalid(
            F,
            "ociVersion",
            format!("{version:?} is not a 1.x runtime-spec version"),
            "set ociVersion to the spec version the config was written for, e.g. \"1.2.0\"",
        ));
    }
    let root = spec.root().as_ref().ok_or_else(|| {
        SpecError::invalid(F, "root", "missing", "add \"root\": {\"path\": \"rootfs\"}")
    })?;
    let root_path = bundle.join(root.path());
    if !root_path.is_dir() {
        return Err(SpecError::invalid(
            F,
            "root.path",
            format!("{:?}: no such directory in the bundle", root.path()),
            "point root.path at the bundle's rootfs directory (usually \"rootfs\")",
        ));
    }
    let process = spec.process().as_ref().ok_or_else(|| {
        SpecError::invalid(
            F,
            "process",
            "missing",
            "add a \"process\" with \"args\" and \"cwd\"",
        )
    })?;
    let args = process.args().as_deref().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err(SpecError::invalid(
            F,
            "process.args",
            "empty: there is no program to run",
            "set process.args to the program and its arguments, e.g. [\"/bin/sh\"]",
        ));
    }
    if !process.cwd().is_absolute() {
        return Err(SpecError::invalid(
            F,
            "process.cwd",
            format!("{:?} is not an absolute path", process.cwd()),
            "set process.cwd to an absolute path inside the container, e.g. \"/\"",
        ));
    }
    Ok(())
}

/// Sets `KEY=VALUE` variables in `env`, each replacing a variable of the same name; the
/// first entry without `=` is returned as the error.
pub fn merge_env(env: &mut Vec<String>, vars: &[String]) -> Result<(), String> {
    for kv in vars {
        let Some((key, _)) = kv.split_once('=') else {
            return Err(kv.clone());
        };
        env.retain(|e| e.split_once('=').map(|(k, _)| k) != Some(key));
        env.push(kv.clone());
    }
    Ok(())
}

/// The spec `runc spec` writes, with these differences (oci_spec's `Spec::default()` is the
/// base; where it differs from runc, runc wins):
/// - `terminal` false: Tessera's containers are services, their stdio goes to the log;
/// - no `hostname`: the agent names each instance (runc writes "runc", oci_spec "youki");
/// - `ociVersion` [`OCI_VERSION`] (oci_spec writes "1.0.2-dev");
/// - capabilities only in bounding/effective/permitted, as runc does since CVE-2022-29162
///   (oci_spec also fills inheritable and ambient, which would hand them to non-root users);
/// - devices cgroup denies all (`{"allow": false, "access": "rwm"}`, runc) where oci_spec's
///   list is empty; masked paths include runc's `/sys/devices/virtual/tpm`;
/// - no empty `annotations` map; the cgroup namespace is always on (cgroup v2 only).
pub fn default_spec() -> Spec {
    let mut spec = Spec::default();
    spec.set_version(OCI_VERSION.to_string());
    spec.set_hostname(None);
    spec.set_annotations(None);
    if let Some(process) = spec.process_mut() {
        process.set_terminal(Some(false));
        let caps: Capabilities = [
            Capability::AuditWrite,
            Capability::Kill,
            Capability::NetBindService,
        ]
        .into_iter()
        .collect();
        let mut c = LinuxCapabilities::default();
        c.set_bounding(Some(caps.clone()));
        c.set_effective(Some(caps.clone()));
        c.set_permitted(Some(caps));
        c.set_inheritable(None);
        c.set_ambient(None);
        process.set_capabilities(Some(c));
    }
    if let Some(linux) = spec.linux_mut() {
        let mut deny_all = LinuxDeviceCgroup::default();
        deny_all.set_allow(false);
        deny_all.set_access(Some("rwm".to_string()));
        if let Some(resources) = linux.resources_mut() {
            resources.set_devices(Some(vec![deny_all]));
        }
        let mut masked = oci_spec::runtime::get_default_maskedpaths();
        masked.push("/sys/devices/virtual/tpm".to_string());
        linux.set_masked_paths(Some(masked));
        let namespaces = [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Cgroup,
        ]
        .into_iter()
        .map(|typ| {
            let mut ns = LinuxNamespace::default();
            ns.set_typ(typ);
            ns
        })
        .collect();
        linux.set_namespaces(Some(namespaces));
    }
    spec
}

/// The spec for a container made from an OCI image: Entrypoint + Cmd become args, Env (with a
/// default PATH), WorkingDir (default "/"), User resolved against the image's own
/// /etc/passwd and /etc/group (read inside `rootfs`, never through a symlink that leaves it);
/// everything else is [`default_spec`].
pub fn from_image_config(cfg: &ImageConfiguration, rootfs: &Path) -> Result<Spec, SpecError> {
    const F: &str = "image config";
    let empty = oci_spec::image::Config::default();
    let c = cfg.config().as_ref().unwrap_or(&empty);

    let mut args: Vec<String> = c.entrypoint().clone().unwrap_or_default();
    args.extend(c.cmd().clone().unwrap_or_default());
    if args.is_empty() || args[0].is_empty() {
        return Err(SpecError::invalid(
            F,
            "Entrypoint/Cmd",
            "neither is set: there is no program to run",
            "rebuild the image with an ENTRYPOINT or CMD",
        ));
    }

    let mut env: Vec<String> = c.env().clone().unwrap_or_default();
    if let Some(bad) = env.iter().find(|e| !e.contains('=') || e.starts_with('=')) {
        return Err(SpecError::invalid(
            F,
            "Env",
            format!("{bad:?} is not NAME=value"),
            "rebuild the image with ENV entries of the form NAME=value",
        ));
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }

    let cwd = match c.working_dir().as_deref() {
        None | Some("") => PathBuf::from("/"),
        Some(dir) if dir.starts_with('/') => PathBuf::from(dir),
        // Docker's builder always writes an absolute WORKDIR; a relative one means "from /".
        Some(dir) => Path::new("/").join(dir),
    };

    let user = crate::image::user::resolve(c.user().as_deref().unwrap_or(""), rootfs)?;

    let mut spec = default_spec();
    if let Some(process) = spec.process_mut() {
        process.set_args(Some(args));
        process.set_env(Some(env));
        process.set_cwd(cwd);
        let u = process.user_mut();
        u.set_uid(user.uid);
        u.set_gid(user.gid);
        u.set_additional_gids((!user.additional_gids.is_empty()).then_some(user.additional_gids));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_matches_runc_where_oci_spec_differs() {
        let spec = default_spec();
        assert_eq!(spec.version(), OCI_VERSION);
        assert_eq!(spec.hostname(), &None);
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.terminal(), Some(false));
        let caps = process.capabilities().as_ref().unwrap();
        assert!(caps.ambient().is_none() && caps.inheritable().is_none());
        assert_eq!(caps.bounding().as_ref().unwrap().len(), 3);
        let linux = spec.linux().as_ref().unwrap();
        let devices = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .as_ref()
            .unwrap();
        assert_eq!(devices.len(), 1);
        assert!(!devices[0].allow());
        assert!(linux
            .masked_paths()
            .as_ref()
            .unwrap()
            .contains(&"/sys/devices/virtual/tpm".into()));
    }

    #[test]
    fn parse_names_the_field_of_a_type_error() {
        let json =
            br#"{"ociVersion":"1.0.0","process":{"user":{"uid":0,"gid":0},"args":"sh","cwd":"/"}}"#;
        let err = parse(json).unwrap_err();
        assert_eq!(err.field(), Some("process.args"), "{err}");
        assert!(
            err.to_string()
                .starts_with("config.json: process.args: invalid type"),
            "{err}"
        );
    }
}
