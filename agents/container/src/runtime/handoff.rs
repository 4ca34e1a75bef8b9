//! The shim's part of a container identity (crate::identity): the agent gives the shim a
//! pipe holding a one-time certmgr token as its stdin and `--identity SOCKET`; the shim
//!
//! 1. moves the pipe to fd 3 before it opens anything else ([`take_stdin`]), so the cloned
//!    init inherits it there and execve keeps it (it is the one descriptor without
//!    close-on-exec), and puts /dev/null on its stdin;
//! 2. adds to the spec it sends the init, never to config.json ([`prepare`]):
//!    `TESSERA_IDENTITY_FD=3`, certmgr's socket bound at its usual path, and, when config.json
//!    has no `linux.seccomp`, the default profile plus the keyring calls redemption needs;
//! 3. closes its own copy once the init is cloned ([`release`]), so nothing of the node keeps
//!    the token but the pipe the container's process reads it from.

use super::protocol::{Origin, StepError};
use super::seccomp;
use oci_spec::runtime::{Linux, MountBuilder, Spec};
use std::os::fd::AsRawFd;
use std::path::Path;

/// The token's descriptor in the container (crate::identity::FD).
pub const FD: i32 = crate::identity::FD;

/// Step 1: stdin → fd 3, /dev/null → stdin. Call first thing in the shim.
pub fn take_stdin() -> Result<(), String> {
    nix::unistd::dup2(0, FD).map_err(|e| format!("move the identity pipe to fd {FD}: {e}"))?;
    let null = std::fs::File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;
    nix::unistd::dup2(null.as_raw_fd(), 0).map_err(|e| format!("stdin from /dev/null: {e}"))?;
    Ok(())
}

/// Step 3: the shim's copy of the token pipe, closed after the clone.
pub fn release() {
    // SAFETY: closes fd 3, which take_stdin made and nothing in the shim owns or uses.
    unsafe { libc::close(FD) };
}

/// Step 2: what the init gets for a container with an identity, certmgr at `socket`.
pub fn prepare(spec: &mut Spec, socket: &Path) -> Result<(), StepError> {
    let var = format!("{}={FD}", tessera_certmgr::defaults::IDENTITY_FD_ENV);
    let prefix = format!("{}=", tessera_certmgr::defaults::IDENTITY_FD_ENV);
    if let Some(process) = spec.process_mut() {
        let mut env = process.env().clone().unwrap_or_default();
        env.retain(|e| !e.starts_with(&prefix));
        env.push(var);
        process.set_env(Some(env));
    }
    let mount = MountBuilder::default()
        .destination(crate::identity::CERTMGR_SOCKET)
        .typ("bind")
        .source(socket)
        .options(vec![
            "bind".to_string(),
            "nosuid".to_string(),
            "nodev".to_string(),
            "noexec".to_string(),
        ])
        .build()
        .map_err(|e| StepError::new(Origin::Shim, "bind certmgr's socket").detail(e.to_string()))?;
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.retain(|m| m.destination() != Path::new(crate::identity::CERTMGR_SOCKET));
    mounts.push(mount);
    spec.set_mounts(Some(mounts));
    let mut linux: Linux = spec.linux().clone().unwrap_or_default();
    if linux.seccomp().is_none() {
        let bounding = spec
            .process()
            .as_ref()
            .and_then(|p| p.capabilities().as_ref())
            .and_then(|c| c.bounding().clone())
            .unwrap_or_default();
        let mut profile = seccomp::default_profile(&bounding);
        let mut syscalls = profile.syscalls().clone().unwrap_or_default();
        syscalls.extend(seccomp::keyring_rules());
        profile.set_syscalls(Some(syscalls));
        linux.set_seccomp(Some(profile));
        spec.set_linux(Some(linux));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_init_gets_the_variable_the_socket_and_the_keyring_calls_only() {
        let mut spec = Spec::default();
        if let Some(p) = spec.process_mut() {
            p.set_env(Some(vec![
                "PATH=/bin".into(),
                "TESSERA_IDENTITY_FD=9".into(),
            ]));
        }
        prepare(&mut spec, Path::new("/run/tessera/certmgr.sock")).unwrap();
        let env = spec.process().as_ref().unwrap().env().clone().unwrap();
        assert_eq!(env, vec!["PATH=/bin", "TESSERA_IDENTITY_FD=3"]);
        assert!(
            env.iter().all(|e| e.len() < 30),
            "no token in the environment"
        );
        let mounts = spec.mounts().clone().unwrap();
        let m = mounts.last().unwrap();
        assert_eq!(m.destination(), Path::new("/run/tessera/certmgr.sock"));
        assert_eq!(m.typ().as_deref(), Some("bind"));
        let profile = spec.linux().as_ref().unwrap().seccomp().clone().unwrap();
        let allowed: Vec<(String, Option<u64>)> = profile
            .syscalls()
            .clone()
            .unwrap()
            .iter()
            .flat_map(|s| {
                let v = s.args().as_ref().and_then(|a| a.first()).map(|a| a.value());
                s.names()
                    .iter()
                    .map(move |n| (n.clone(), v))
                    .collect::<Vec<_>>()
            })
            .filter(|(n, _)| ["keyctl", "request_key", "add_key"].contains(&n.as_str()))
            .collect();
        assert!(allowed.contains(&("request_key".into(), None)));
        assert!(
            !allowed.iter().any(|(n, _)| n == "add_key"),
            "add_key stays denied"
        );
        let ops: Vec<u64> = allowed
            .iter()
            .filter(|(n, _)| n == "keyctl")
            .filter_map(|(_, v)| *v)
            .collect();
        assert_eq!(ops, vec![0, 6, 10, 11, 24, 26, 27]);
        assert_eq!(
            allowed
                .iter()
                .filter(|(n, v)| n == "keyctl" && v.is_none())
                .count(),
            0,
            "keyctl only with the listed operations"
        );
        seccomp::compile(Some(&profile)).expect("the profile compiles");
    }

    #[test]
    fn a_profile_of_config_json_is_left_alone() {
        let mut spec = Spec::default();
        let mut linux = spec.linux().clone().unwrap_or_default();
        linux.set_seccomp(Some(oci_spec::runtime::LinuxSeccomp::default()));
        spec.set_linux(Some(linux));
        prepare(&mut spec, Path::new("/s")).unwrap();
        let p = spec.linux().as_ref().unwrap().seccomp().clone().unwrap();
        assert!(p.syscalls().is_none());
    }
}
