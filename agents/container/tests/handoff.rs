//! The runtime's part of a container identity, with real shims and namespaces (run as root):
//! a pipe given to `create` becomes fd 3 of the container's process, which finds
//! `TESSERA_IDENTITY_FD=3` and certmgr's socket bound at its node path, and the token is in
//! no file of the bundle or the state directory. (certmgr itself is the node's: the QEMU test
//! tests/tests/container_identity.rs redeems a real token.)

use oci_spec::runtime::Spec;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tessera_common::log::{LogEvent, Stream};
use tessera_container::runtime::{self, CreateOptions, Exit, Handoff, NetMode};

const SHIM: &str = env!("CARGO_BIN_EXE_tessera-container-shim");
const TOKEN: &str = "Qx7vN2pL9sR4tW8yB3mK6hJ1fD5gZ0cV-_aEiOuYnTq";

fn busybox_rootfs(rootfs: &Path) {
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
    }
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        } else if meta.is_file() {
            let bytes = std::fs::read(&p).unwrap_or_default();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

#[test]
fn the_token_pipe_is_fd_3_of_the_process_and_nowhere_else() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = std::fs::canonicalize(tmp.path()).unwrap().join("bundle");
    busybox_rootfs(&bundle.join("rootfs"));
    let mut spec = Spec::default();
    let mut process = spec.process().clone().unwrap();
    process.set_args(Some(
        [
            "/bin/sh",
            "-c",
            "echo TOKEN $(cat <&3); echo FD $TESSERA_IDENTITY_FD; test -e /run/tessera/certmgr.sock && echo BOUND; grep Seccomp: /proc/self/status",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    ));
    spec.set_process(Some(process));
    spec.save(bundle.join("config.json")).unwrap();
    // Stands in for certmgr's socket: the bind source must exist.
    let socket = tmp.path().join("certmgr.sock");
    std::fs::write(&socket, b"").unwrap();
    let (read, write) = nix::unistd::pipe().unwrap();
    std::fs::File::from(write)
        .write_all(format!("{TOKEN}\n").as_bytes())
        .unwrap();
    let state = tmp.path().join("run/handoff");
    let none: Vec<String> = Vec::new();
    runtime::create(&CreateOptions {
        id: "handoff",
        bundle: &bundle,
        state_dir: &state,
        shim: Path::new(SHIM),
        shim_args: &none,
        cgroup_parent: None,
        net: NetMode::None,
        identity: Some(Handoff {
            token: &read,
            certmgr_socket: &socket,
        }),
    })
    .unwrap();
    drop(read);
    runtime::start(&state).unwrap();
    let exit = runtime::wait(&state, Duration::from_secs(20)).unwrap();
    let log = std::fs::read_to_string(runtime::log_path(&state)).unwrap();
    let out: Vec<String> = log
        .lines()
        .map(|l| serde_json::from_str::<LogEvent>(l).unwrap())
        .filter(|e| e.stream == Some(Stream::Stdout))
        .map(|e| e.message)
        .collect();
    assert_eq!(exit, Exit::Code(0), "{out:?}");
    assert_eq!(out[0], format!("TOKEN {TOKEN}"), "{out:?}");
    assert_eq!(out[1], "FD 3", "{out:?}");
    assert_eq!(out[2], "BOUND", "{out:?}");
    assert!(
        out[3].starts_with("Seccomp:") && out[3].ends_with('2'),
        "{out:?}"
    );
    // Only the log of this test's own `echo` holds it: not config.json, the rootfs, the
    // state file or the shim's log.
    let hits = files_holding(tmp.path(), TOKEN.as_bytes());
    assert_eq!(hits, vec![runtime::log_path(&state).display().to_string()]);
    runtime::delete_force(&state).unwrap();
}
