//! Instances: a container's writable COW snapshot of its template (`ctr-<name>`), holding the
//! container's own config.json (the template's, with the operator's overrides applied) and
//! `tessera-container.json`, the record the agent finds again after a restart or a reboot.
//! Writes in one instance are invisible to the template and to its siblings.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
pub use tessera_userdata::schema::Port;

use crate::spec;
use crate::storage::{Storage, StorageError};
use crate::templates::Template;

const PREFIX: &str = "ctr-";
/// The record beside config.json and rootfs/ in the instance.
pub const RECORD: &str = "tessera-container.json";

/// What restarts a container when it ends on its own (Docker's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never (the default for containers made by hand).
    #[default]
    No,
    /// After a non-zero exit or a signal.
    OnFailure,
    /// Whenever it ends, until an operator stops it.
    Always,
}

impl RestartPolicy {
    pub fn parse(s: &str) -> Option<RestartPolicy> {
        match s {
            "no" | "never" => Some(RestartPolicy::No),
            "on-failure" => Some(RestartPolicy::OnFailure),
            "always" => Some(RestartPolicy::Always),
            _ => None,
        }
    }
}

/// What the operator (or user-data) asks for on top of the template's config.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// Replaces process.args.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// `KEY=VALUE`, replacing a variable of the same name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_max: Option<i64>,
    /// Share of one CPU in percent (50 = half a CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<u32>,
    /// Binds the node's hub socket directory into the container (a component inside).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hub: bool,
    /// A certmgr certificate at every start (not part of config.json: see `identity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<crate::identity::IdentitySpec>,
}

/// The hub's local socket directory (`tessera_hub::defaults::SOCKET_DIR`), bound into
/// containers that ask for the hub.
pub const HUB_SOCKET_DIR: &str = "/run/tessera/hub";

/// The record of one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    pub template: String,
    pub template_volume: String,
    /// The instance volume, its path: the bundle the runtime runs.
    pub volume: String,
    pub bundle: PathBuf,
    pub restart: RestartPolicy,
    /// `bridge` (a veth on the node's container bridge), `none` (its own network namespace,
    /// lo only) or `host`.
    pub net: String,
    /// The container's address on the bridge (`net = "bridge"`), kept for its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::Ipv4Addr>,
    /// Host ports published to the container while it runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    pub overrides: Overrides,
    /// Made by user-data (kept in step with it at boot) or by an operator.
    pub declared: bool,
    pub created: String,
}

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("container name {0:?} is invalid: use 1-56 lower-case letters, digits or '-', starting with a letter or digit (e.g. web-1)")]
    BadName(String),
    #[error("a container named {0} exists; delete it first (`tessera container rm {0}`) or choose another name")]
    Exists(String),
    #[error("no container named {0}; `tessera container list` shows them")]
    NotFound(String),
    // Transparent: with "{0}" and #[from] the cause is also the source, and a CLI printing
    // the chain (`{:#}`) said everything twice.
    #[error(transparent)]
    Storage(#[from] StorageError),
    // Transparent: with "{0}" and #[from] the cause is also the source, and a CLI printing
    // the chain (`{:#}`) said everything twice.
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Bad(String),
}

impl InstanceError {
    pub fn code(&self) -> &str {
        match self {
            InstanceError::BadName(_) | InstanceError::Bad(_) | InstanceError::Spec(_) => {
                "bad_request"
            }
            InstanceError::Exists(_) => "exists",
            InstanceError::NotFound(_) => "not_found",
            InstanceError::Storage(e) => e.code(),
            InstanceError::Io { .. } => "internal",
        }
    }
}

/// Checks a container name: it names a volume (`ctr-<name>`), a cgroup and a state directory.
pub fn check_name(name: &str) -> Result<(), InstanceError> {
    if tessera_common::names::is_container_name(name) {
        Ok(())
    } else {
        Err(InstanceError::BadName(name.chars().take(80).collect()))
    }
}

pub fn volume_name(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// What a new instance is made of.
pub struct New<'a> {
    pub name: &'a str,
    pub template: &'a Template,
    pub overrides: Overrides,
    pub restart: RestartPolicy,
    pub net: &'a str,
    /// Given by the agent for `bridge` (allocated from the subnet).
    pub address: Option<std::net::Ipv4Addr>,
    pub ports: Vec<Port>,
    pub declared: bool,
}

/// The network modes a container can have.
pub const NETS: [&str; 3] = ["bridge", "none", "host"];

/// Snapshots the template into the instance, writes its config.json and record.
pub fn create(storage: &Storage, new: New) -> Result<Record, InstanceError> {
    check_name(new.name)?;
    if !NETS.contains(&new.net) {
        return Err(InstanceError::Bad(format!(
            "network {:?} is not supported; use \"bridge\" (the node's container bridge), \"none\" (its own namespace, lo only) or \"host\"",
            new.net
        )));
    }
    if !new.ports.is_empty() && new.net != "bridge" {
        return Err(InstanceError::Bad(format!(
            "net {:?} has no ports to publish; use net \"bridge\" or publish nothing",
            new.net
        )));
    }
    let volume = volume_name(new.name);
    // The snapshot refuses an existing name itself: no volume list first.
    let snap = storage
        .snapshot(&new.template.name, &volume, false)
        .map_err(|e| match e.code() {
            "exists" => InstanceError::Exists(new.name.to_string()),
            _ => InstanceError::from(e),
        })?;
    let record = Record {
        name: new.name.to_string(),
        template: new.template.digest.clone(),
        template_volume: new.template.name.clone(),
        volume: volume.clone(),
        bundle: snap.path.clone(),
        restart: new.restart,
        net: new.net.to_string(),
        address: new.address,
        ports: new.ports,
        overrides: new.overrides,
        declared: new.declared,
        created: tessera_common::log::now_rfc3339(),
    };
    let written = write_config(&record).and_then(|()| write_record(&record));
    if let Err(e) = written {
        let _ = storage.delete(&volume);
        return Err(e);
    }
    Ok(record)
}

/// The template's config.json with the overrides applied, written into the instance.
fn write_config(record: &Record) -> Result<(), InstanceError> {
    let mut spec = spec::load(&record.bundle)?;
    apply(&mut spec, record)?;
    let path = record.bundle.join("config.json");
    let bytes = serde_json::to_vec_pretty(&spec).map_err(|e| InstanceError::Bad(e.to_string()))?;
    std::fs::write(&path, bytes).map_err(|source| InstanceError::Io {
        what: "write",
        path,
        source,
    })
}

/// Applies name and overrides to a spec: hostname = the container's name unless the bundle
/// sets one, then args, env and the cgroup limits.
pub fn apply(spec: &mut Spec, record: &Record) -> Result<(), InstanceError> {
    if spec.hostname().is_none() {
        spec.set_hostname(Some(record.name.clone()));
    }
    let o = &record.overrides;
    if let Some(process) = spec.process_mut() {
        if let Some(args) = &o.args {
            if args.is_empty() {
                return Err(InstanceError::Bad(
                    "args is empty; give the program to run first (e.g. [\"/bin/sh\", \"-c\", \"…\"])".into(),
                ));
            }
            process.set_args(Some(args.clone()));
        }
        if !o.env.is_empty() {
            let mut env = process.env().clone().unwrap_or_default();
            spec::merge_env(&mut env, &o.env)
                .map_err(|kv| InstanceError::Bad(format!("env {kv:?} is not KEY=VALUE")))?;
            process.set_env(Some(env));
        }
    }
    if o.hub {
        let bad = |e: oci_spec::OciSpecError| InstanceError::Bad(e.to_string());
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        mounts.retain(|m| m.destination() != Path::new(HUB_SOCKET_DIR));
        mounts.push(
            oci_spec::runtime::MountBuilder::default()
                .destination(HUB_SOCKET_DIR)
                .typ("bind")
                .source(HUB_SOCKET_DIR)
                .options(vec![
                    "rbind".to_string(),
                    "nosuid".into(),
                    "nodev".into(),
                    "noexec".into(),
                ])
                .build()
                .map_err(bad)?,
        );
        spec.set_mounts(Some(mounts));
    }
    if o.memory_max.is_some() || o.pids_max.is_some() || o.cpu_percent.is_some() {
        use oci_spec::runtime::{
            LinuxBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder,
            LinuxResourcesBuilder,
        };
        let bad = |e: oci_spec::OciSpecError| InstanceError::Bad(e.to_string());
        let mut linux = spec
            .linux()
            .clone()
            .map(Ok)
            .unwrap_or_else(|| LinuxBuilder::default().build())
            .map_err(bad)?;
        let mut resources = linux
            .resources()
            .clone()
            .map(Ok)
            .unwrap_or_else(|| LinuxResourcesBuilder::default().build())
            .map_err(bad)?;
        if let Some(bytes) = o.memory_max {
            resources.set_memory(Some(
                LinuxMemoryBuilder::default()
                    .limit(bytes)
                    .build()
                    .map_err(bad)?,
            ));
        }
        if let Some(pids) = o.pids_max {
            resources.set_pids(Some(
                LinuxPidsBuilder::default()
                    .limit(pids)
                    .build()
                    .map_err(bad)?,
            ));
        }
        if let Some(pct) = o.cpu_percent {
            let period: u64 = 100_000;
            resources.set_cpu(Some(
                LinuxCpuBuilder::default()
                    .period(period)
                    .quota(i64::from(pct) * 1_000)
                    .build()
                    .map_err(bad)?,
            ));
        }
        linux.set_resources(Some(resources));
        spec.set_linux(Some(linux));
    }
    Ok(())
}

fn write_record(record: &Record) -> Result<(), InstanceError> {
    let path = record.bundle.join(RECORD);
    let bytes = serde_json::to_vec_pretty(record).map_err(|e| InstanceError::Bad(e.to_string()))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| InstanceError::Io {
            what: "write",
            path,
            source,
        })
}

fn read_record(bundle: &Path) -> Option<Record> {
    let bytes = std::fs::read(bundle.join(RECORD)).ok()?;
    let mut r: Record = serde_json::from_slice(&bytes).ok()?;
    r.bundle = bundle.to_path_buf();
    Some(r)
}

/// Every instance on the data disk.
pub fn list(storage: &Storage) -> Result<Vec<Record>, InstanceError> {
    Ok(storage
        .list()?
        .into_iter()
        .filter(|v| v.name.starts_with(PREFIX) && !v.readonly)
        .filter_map(|v| read_record(&v.path))
        .collect())
}

/// Whether a record read earlier still has its file in its instance volume.
pub fn still_there(record: &Record) -> bool {
    record.bundle.join(RECORD).exists()
}

pub fn find(storage: &Storage, name: &str) -> Result<Record, InstanceError> {
    check_name(name)?;
    storage
        .find(&volume_name(name))?
        .and_then(|v| read_record(&v.path))
        .ok_or_else(|| InstanceError::NotFound(name.to_string()))
}

/// Deletes the instance's snapshot (the container must be stopped and deleted first).
pub fn delete(storage: &Storage, record: &Record) -> Result<(), InstanceError> {
    storage.delete(&record.volume).map_err(InstanceError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(overrides: Overrides) -> Record {
        Record {
            name: "web-1".into(),
            template: "sha256:00".into(),
            template_volume: "tpl-00".into(),
            volume: "ctr-web-1".into(),
            bundle: PathBuf::from("/nonexistent"),
            restart: RestartPolicy::No,
            net: "none".into(),
            address: None,
            ports: Vec::new(),
            overrides,
            declared: false,
            created: String::new(),
        }
    }

    #[test]
    fn names_are_checked() {
        for good in ["web", "web-1", "a", &"x".repeat(56)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-web", "Web", "we_b", "a.b", "a/b", &"x".repeat(57)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn overrides_set_hostname_args_env_and_limits() {
        let mut s = spec::default_spec();
        let r = record(Overrides {
            args: Some(vec!["/bin/echo".into(), "hi".into()]),
            env: vec!["PATH=/bin".into(), "A=1".into()],
            memory_max: Some(64 << 20),
            pids_max: Some(32),
            cpu_percent: Some(50),
            hub: true,
            identity: None,
        });
        apply(&mut s, &r).unwrap();
        let hub: Vec<_> = s
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|m| m.destination() == Path::new(HUB_SOCKET_DIR))
            .collect();
        assert_eq!(hub.len(), 1, "the hub socket directory is bound once");
        assert_eq!(hub[0].source().as_deref(), Some(Path::new(HUB_SOCKET_DIR)));
        apply(&mut s, &r).unwrap();
        let again = s.mounts().as_ref().unwrap();
        assert_eq!(
            again
                .iter()
                .filter(|m| m.destination() == Path::new(HUB_SOCKET_DIR))
                .count(),
            1,
            "applying twice does not bind it twice"
        );
        assert_eq!(s.hostname().as_deref(), Some("web-1"));
        let p = s.process().as_ref().unwrap();
        assert_eq!(
            p.args().as_ref().unwrap(),
            &vec!["/bin/echo".to_string(), "hi".to_string()]
        );
        let env = p.env().as_ref().unwrap();
        assert_eq!(env.iter().filter(|e| e.starts_with("PATH=")).count(), 1);
        assert!(env.contains(&"PATH=/bin".to_string()) && env.contains(&"A=1".to_string()));
        let res = s.linux().as_ref().unwrap().resources().as_ref().unwrap();
        assert_eq!(res.memory().as_ref().unwrap().limit(), Some(64 << 20));
        assert_eq!(res.pids().as_ref().unwrap().limit(), 32);
        assert_eq!(res.cpu().as_ref().unwrap().quota(), Some(50_000));
    }

    #[test]
    fn bad_overrides_are_refused_with_the_reason() {
        let mut s = spec::default_spec();
        let e = apply(
            &mut s,
            &record(Overrides {
                args: Some(vec![]),
                ..Default::default()
            }),
        )
        .unwrap_err();
        assert!(e.to_string().contains("args is empty"), "{e}");
        let e = apply(
            &mut s,
            &record(Overrides {
                env: vec!["NOEQUALS".into()],
                ..Default::default()
            }),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not KEY=VALUE"), "{e}");
    }
}
