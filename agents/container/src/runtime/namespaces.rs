//! Which namespaces a container gets, decided from config.json's `linux.namespaces` and the
//! agent's [`NetMode`], and the calls that create or join them.
//!
//! Three moments, because of how the kernel attaches namespaces:
//! - a PID namespace to join is entered by the shim before it clones the init (setns on a PID
//!   namespace only moves the caller's future children);
//! - new mount, PID, IPC, UTS and network namespaces are made by the clone itself, so the init
//!   is PID 1 of its namespace;
//! - the init makes its cgroup namespace with unshare once the shim has moved it into the
//!   container's cgroup (the namespace's root is the cgroup of the process making it), and
//!   joins the other namespaces that name a `path`.
//!
//! User namespaces are not supported (the node runs containers as real root, dropping
//! privileges with capabilities, seccomp and uid/gid); config.json asking for one is refused,
//! as is a time namespace.

use super::protocol::{Origin, StepError};
use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The container's network, chosen by the agent (it overrides config.json's network entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetMode {
    /// Its own network namespace with only `lo` (up).
    None,
    /// The node's network namespace.
    Host,
    /// Its own network namespace (with `lo` up) for the caller to wire, e.g. with a veth,
    /// between create and start: `/proc/<init_pid>/ns/net`.
    New,
}

impl NetMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetMode::None => "none",
            NetMode::Host => "host",
            NetMode::New => "new",
        }
    }

    pub fn parse(s: &str) -> Option<NetMode> {
        match s {
            "none" => Some(NetMode::None),
            "host" => Some(NetMode::Host),
            "new" => Some(NetMode::New),
            _ => None,
        }
    }
}

/// The namespace decisions for one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Created by the clone of the init.
    pub clone: Vec<LinuxNamespaceType>,
    /// Created by the init with unshare (cgroup), after it is in the container's cgroup.
    pub unshare: Vec<LinuxNamespaceType>,
    /// Joined with setns: the PID one by the shim, the others by the init.
    pub join: Vec<(LinuxNamespaceType, PathBuf)>,
}

fn refuse(step: String, hint: &str) -> StepError {
    StepError::new(Origin::Shim, step).hint(hint)
}

impl Plan {
    pub fn new(spec: &[LinuxNamespace], net: NetMode) -> Result<Plan, StepError> {
        let mut plan = Plan {
            clone: Vec::new(),
            unshare: Vec::new(),
            join: Vec::new(),
        };
        let mut seen = Vec::new();
        for ns in spec {
            let typ = ns.typ();
            if seen.contains(&typ) {
                return Err(refuse(
                    format!("read linux.namespaces: {typ} is listed twice"),
                    "keep one entry per namespace type in config.json",
                ));
            }
            seen.push(typ);
            if typ == LinuxNamespaceType::Network {
                continue; // the agent's NetMode decides
            }
            match (typ, ns.path()) {
                (LinuxNamespaceType::User, _) => {
                    return Err(refuse(
                        "read linux.namespaces: a user namespace".into(),
                        "user namespaces are not supported: remove the \"user\" entry (and uidMappings/gidMappings) from config.json",
                    ))
                }
                (LinuxNamespaceType::Time, _) => {
                    return Err(refuse(
                        "read linux.namespaces: a time namespace".into(),
                        "time namespaces are not supported: remove the \"time\" entry from config.json",
                    ))
                }
                (LinuxNamespaceType::Mount, Some(_)) => {
                    return Err(refuse(
                        "read linux.namespaces: joining a mount namespace".into(),
                        "a container needs its own mount namespace: remove the \"path\" of the \"mount\" entry",
                    ))
                }
                (_, Some(path)) => plan.join.push((typ, path.clone())),
                (LinuxNamespaceType::Cgroup, None) => plan.unshare.push(typ),
                (_, None) => plan.clone.push(typ),
            }
        }
        if !plan.clone.contains(&LinuxNamespaceType::Mount) {
            return Err(refuse(
                "read linux.namespaces: no mount namespace".into(),
                "a container needs its own mount namespace: add {\"type\": \"mount\"} to linux.namespaces",
            ));
        }
        if net != NetMode::Host {
            plan.clone.push(LinuxNamespaceType::Network);
        }
        Ok(plan)
    }

    pub fn clone_flags(&self) -> CloneFlags {
        self.clone
            .iter()
            .fold(CloneFlags::empty(), |f, t| f | flag(*t))
    }

    /// Whether the container gets a namespace of its own of this type.
    pub fn creates(&self, typ: LinuxNamespaceType) -> bool {
        self.clone.contains(&typ) || self.unshare.contains(&typ)
    }

    /// The PID namespace to join, which the shim enters before the clone.
    pub fn pid_to_join(&self) -> Option<&PathBuf> {
        self.join
            .iter()
            .find(|(t, _)| *t == LinuxNamespaceType::Pid)
            .map(|(_, p)| p)
    }
}

fn flag(typ: LinuxNamespaceType) -> CloneFlags {
    match typ {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        // Refused by Plan::new; clone(2) has no flag for it.
        LinuxNamespaceType::Time => CloneFlags::empty(),
    }
}

/// Enters the namespace at `path` (setns), naming it in the error.
pub fn join(
    origin: Origin,
    typ: LinuxNamespaceType,
    path: &std::path::Path,
) -> Result<(), StepError> {
    let step = || format!("join the {typ} namespace {}", path.display());
    let file = std::fs::File::open(path).map_err(|e| {
        StepError::io(origin, step(), &e)
            .hint("the namespace file is gone: is the process owning it still running?")
    })?;
    nix::sched::setns(&file, flag(typ)).map_err(|e| {
        StepError::errno(origin, step(), e)
            .hint("the file is not a namespace of this type: fix the \"path\" in linux.namespaces")
    })
}

/// The init's own namespace work: joins, then the cgroup namespace.
pub fn enter_in_init(plan: &Plan) -> Result<(), StepError> {
    for (typ, path) in &plan.join {
        if *typ != LinuxNamespaceType::Pid {
            join(Origin::ContainerInit, *typ, path)?;
        }
    }
    let flags = plan
        .unshare
        .iter()
        .fold(CloneFlags::empty(), |f, t| f | flag(*t));
    if !flags.is_empty() {
        nix::sched::unshare(flags).map_err(|e| {
            StepError::errno(Origin::ContainerInit, "create the cgroup namespace", e)
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{get_default_namespaces, LinuxNamespaceBuilder};

    #[test]
    fn default_namespaces_give_clone_flags_and_a_late_cgroup_namespace() {
        let plan = Plan::new(&get_default_namespaces(), NetMode::None).unwrap();
        let f = plan.clone_flags();
        for want in [
            CloneFlags::CLONE_NEWNS,
            CloneFlags::CLONE_NEWPID,
            CloneFlags::CLONE_NEWIPC,
            CloneFlags::CLONE_NEWUTS,
            CloneFlags::CLONE_NEWNET,
        ] {
            assert!(f.contains(want), "{want:?} missing");
        }
        assert!(!f.contains(CloneFlags::CLONE_NEWCGROUP));
        assert_eq!(plan.unshare, vec![LinuxNamespaceType::Cgroup]);
    }

    #[test]
    fn host_network_has_no_network_namespace_whatever_the_spec_says() {
        let plan = Plan::new(&get_default_namespaces(), NetMode::Host).unwrap();
        assert!(!plan.clone_flags().contains(CloneFlags::CLONE_NEWNET));
        assert!(!plan.creates(LinuxNamespaceType::Network));
    }

    #[test]
    fn a_path_is_joined_and_the_pid_one_by_the_shim() {
        let mut ns = get_default_namespaces();
        ns.retain(|n| n.typ() != LinuxNamespaceType::Pid);
        ns.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Pid)
                .path("/proc/1/ns/pid")
                .build()
                .unwrap(),
        );
        let plan = Plan::new(&ns, NetMode::None).unwrap();
        assert!(!plan.clone_flags().contains(CloneFlags::CLONE_NEWPID));
        assert_eq!(plan.pid_to_join(), Some(&PathBuf::from("/proc/1/ns/pid")));
    }

    #[test]
    fn user_namespace_and_missing_mount_namespace_are_refused_with_the_fix() {
        let mut ns = get_default_namespaces();
        ns.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::User)
                .build()
                .unwrap(),
        );
        let e = Plan::new(&ns, NetMode::None).unwrap_err().to_string();
        assert!(e.contains("user namespaces are not supported"), "{e}");

        let mut ns = get_default_namespaces();
        ns.retain(|n| n.typ() != LinuxNamespaceType::Mount);
        let e = Plan::new(&ns, NetMode::None).unwrap_err().to_string();
        assert!(e.contains("add {\"type\": \"mount\"}"), "{e}");
    }
}
