//! End-to-end tests of the container runtime: real shims, namespaces, mounts and processes
//! (run as root). Each test builds a bundle whose rootfs is Debian's static busybox with its
//! applet links, and a config.json from oci-spec's default (runc's default spec) adjusted.

use oci_spec::runtime::{MountBuilder, Spec, UserBuilder};
use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tessera_common::log::{LogEvent, Stream};
use tessera_container::runtime::{
    self, CreateOptions, Created, Exit, NetMode, RuntimeError, Signal, Status,
};

const SHIM: &str = env!("CARGO_BIN_EXE_tessera-container-shim");
const WAIT: Duration = Duration::from_secs(20);

struct Fixture {
    _tmp: tempfile::TempDir,
    id: String,
    bundle: PathBuf,
    state: PathBuf,
}

fn busybox_rootfs(rootfs: &Path) {
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    assert!(list.status.success());
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
    }
}

impl Fixture {
    fn new(id: &str) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let bundle = tmp.path().join("bundle");
        busybox_rootfs(&bundle.join("rootfs"));
        let state = tmp.path().join("run").join(id);
        Fixture {
            id: id.to_string(),
            bundle: std::fs::canonicalize(&bundle).unwrap(),
            state,
            _tmp: tmp,
        }
    }

    fn rootfs(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }

    /// runc's default spec running `args`, with a hostname of our own.
    fn spec(&self, args: &[&str]) -> Spec {
        let mut spec = Spec::default();
        spec.set_hostname(Some(format!("box-{}", self.id)));
        let mut process = spec.process().clone().unwrap();
        process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
        spec.set_process(Some(process));
        spec
    }

    fn write(&self, spec: &Spec) {
        spec.save(self.bundle.join("config.json")).unwrap();
    }

    fn create_with(&self, net: NetMode) -> Result<Created, RuntimeError> {
        let shim_args: Vec<String> = Vec::new();
        runtime::create(&CreateOptions {
            id: &self.id,
            bundle: &self.bundle,
            state_dir: &self.state,
            shim: Path::new(SHIM),
            shim_args: &shim_args,
            cgroup_parent: None,
            net,
            identity: None,
        })
    }

    fn create(&self, spec: &Spec) -> Result<Created, RuntimeError> {
        self.write(spec);
        self.create_with(NetMode::None)
    }

    /// create, start, wait: the exit and the output.
    fn run(&self, spec: &Spec) -> (Exit, Vec<LogEvent>) {
        self.create(spec).unwrap();
        runtime::start(&self.state).unwrap();
        let exit = runtime::wait(&self.state, WAIT).unwrap();
        (exit, self.logs())
    }

    fn logs(&self) -> Vec<LogEvent> {
        let text = std::fs::read_to_string(runtime::log_path(&self.state)).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn stdout(&self, spec: &Spec) -> Vec<String> {
        let (exit, logs) = self.run(spec);
        let out: Vec<String> = logs
            .iter()
            .filter(|e| e.stream == Some(Stream::Stdout))
            .map(|e| e.message.clone())
            .collect();
        assert_eq!(exit, Exit::Code(0), "output: {out:?} {logs:?}");
        out
    }

    fn status(&self) -> Status {
        runtime::state(&self.state).unwrap().status
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = runtime::delete_force(&self.state);
    }
}

/// Processes whose command line mentions `needle` (the shim and an init not yet exec'd have
/// the state directory in theirs).
fn processes_mentioning(needle: &Path) -> Vec<u32> {
    let needle = needle.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(&needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_process_is_pid_1_and_sees_only_its_own_processes() {
    let f = Fixture::new("pidns");
    let out = f.stdout(&f.spec(&[
        "sh",
        "-c",
        "echo pid=$$; ls /proc | grep -E '^[0-9]+$'; true",
    ]));
    assert_eq!(out[0], "pid=1");
    let pids: Vec<u32> = out[1..].iter().map(|p| p.parse().unwrap()).collect();
    assert!(pids.contains(&1), "{pids:?}");
    assert!(
        pids.len() <= 4 && pids.iter().all(|&p| p < 10),
        "other processes visible: {pids:?}"
    );
}

#[test]
fn hostname_comes_from_the_spec() {
    let f = Fixture::new("uts");
    assert_eq!(
        f.stdout(&f.spec(&["hostname"])),
        vec!["box-uts".to_string()]
    );
}

#[test]
fn mounts_are_the_rootfs_proc_dev_pts_shm_and_a_readonly_sys() {
    let f = Fixture::new("mounts");
    let out = f.stdout(&f.spec(&["cat", "/proc/self/mountinfo"]));
    // mountinfo: id parent major:minor root mountpoint options … - fstype source superoptions
    let mounts: Vec<(String, String, String, String)> = out
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-").unwrap();
            (
                f[3].to_string(),
                f[4].to_string(),
                f[5].to_string(),
                f[sep + 1].to_string(),
            )
        })
        .collect();
    let find = |mp: &str| {
        mounts
            .iter()
            .find(|m| m.1 == mp)
            .unwrap_or_else(|| panic!("no {mp} in {out:#?}"))
    };
    let root = find("/");
    assert_eq!(
        Path::new(&root.0),
        f.rootfs(),
        "/ is not the bundle's rootfs: {root:?}"
    );
    assert!(
        root.2.split(',').any(|o| o == "ro"),
        "root.readonly not applied: {root:?}"
    );
    assert_eq!(find("/proc").3, "proc");
    assert_eq!(find("/dev").3, "tmpfs");
    assert_eq!(find("/dev/pts").3, "devpts");
    assert_eq!(find("/dev/shm").3, "tmpfs");
    assert_eq!(find("/dev/mqueue").3, "mqueue");
    let sys = find("/sys");
    assert_eq!(sys.3, "sysfs");
    assert!(
        sys.2.split(',').any(|o| o == "ro"),
        "/sys is not read-only: {sys:?}"
    );
    assert_eq!(find("/sys/fs/cgroup").3, "cgroup2");
    // Nothing of the node's mount tree is left.
    assert!(
        mounts
            .iter()
            .all(|m| !m.1.starts_with("/tmp") && !m.1.starts_with("/work")),
        "{out:#?}"
    );
}

#[test]
fn dev_has_the_default_devices_and_symlinks() {
    let f = Fixture::new("dev");
    let script = "for d in null zero full random urandom tty; do stat -c '%n %F %t:%T %a' /dev/$d; done; \
                  for l in fd stdin stdout stderr ptmx core; do echo /dev/$l $(readlink /dev/$l); done; \
                  echo x > /dev/null && head -c 4 /dev/zero | wc -c";
    let out = f.stdout(&f.spec(&["sh", "-c", script]));
    let want = [
        "/dev/null character special file 1:3 666",
        "/dev/zero character special file 1:5 666",
        "/dev/full character special file 1:7 666",
        "/dev/random character special file 1:8 666",
        "/dev/urandom character special file 1:9 666",
        "/dev/tty character special file 5:0 666",
        "/dev/fd /proc/self/fd",
        "/dev/stdin /proc/self/fd/0",
        "/dev/stdout /proc/self/fd/1",
        "/dev/stderr /proc/self/fd/2",
        "/dev/ptmx pts/ptmx",
        "/dev/core /proc/kcore",
        "4",
    ];
    assert_eq!(out, want);
}

#[test]
fn masked_paths_read_empty() {
    let f = Fixture::new("masked");
    // Not empty on the node (checked, so the test means something here).
    assert!(!std::fs::read("/proc/keys").unwrap().is_empty());
    assert!(std::fs::read_dir("/sys/firmware").unwrap().count() > 0);
    let out = f.stdout(&f.spec(&[
        "sh",
        "-c",
        "wc -c < /proc/keys; wc -c < /proc/timer_list; ls -A /sys/firmware | wc -l",
    ]));
    assert_eq!(out, ["0", "0", "0"]);
}

#[test]
fn readonly_paths_and_sys_refuse_writes() {
    let f = Fixture::new("readonly");
    let script = "echo 1 > /proc/sys/kernel/domainname && echo wrote-proc-sys; \
                  echo 1 > /proc/irq/default_smp_affinity && echo wrote-proc-irq; \
                  mkdir /sys/x && echo wrote-sys; \
                  grep -E ' /proc/sys | /proc/irq | /sys ' /proc/self/mountinfo | cut -d' ' -f5,6";
    let (exit, logs) = f.run(&f.spec(&["sh", "-c", script]));
    assert_eq!(exit, Exit::Code(0));
    let out: Vec<&str> = logs
        .iter()
        .filter(|e| e.stream == Some(Stream::Stdout))
        .map(|e| e.message.as_str())
        .collect();
    assert!(!out.iter().any(|l| l.starts_with("wrote")), "{out:?}");
    assert!(
        out.iter().any(|l| l.starts_with("/proc/sys ro,")),
        "{out:?}"
    );
    assert!(
        out.iter().any(|l| l.starts_with("/proc/irq ro,")),
        "{out:?}"
    );
    assert!(out.iter().any(|l| l.starts_with("/sys ro,")), "{out:?}");
    let errors: Vec<&str> = logs
        .iter()
        .filter(|e| e.stream == Some(Stream::Stderr))
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(
        errors
            .iter()
            .filter(|l| l.contains("Read-only file system"))
            .count(),
        3,
        "{errors:?}"
    );
}

#[test]
fn user_and_groups_come_from_the_spec() {
    let f = Fixture::new("user");
    let mut spec = f.spec(&["cat", "/proc/self/status"]);
    let mut process = spec.process().clone().unwrap();
    process.set_user(
        UserBuilder::default()
            .uid(1000u32)
            .gid(1000u32)
            .additional_gids(vec![1001u32, 1002])
            .build()
            .unwrap(),
    );
    spec.set_process(Some(process));
    let out = f.stdout(&spec);
    let field = |name: &str| {
        out.iter()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} in {out:?}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(field("Uid"), "1000 1000 1000 1000");
    assert_eq!(field("Gid"), "1000 1000 1000 1000");
    assert_eq!(field("Groups"), "1001 1002");
    assert_eq!(field("NoNewPrivs"), "1");
    // The default spec's bounding set: CAP_KILL (5), CAP_NET_BIND_SERVICE (10), CAP_AUDIT_WRITE (29).
    assert_eq!(field("CapBnd"), "0000000020000420");
}

/// As crun: exactly process.env, plus HOME from the container's /etc/passwd ("/" for a user
/// it does not list) when process.env has none.
#[test]
fn the_environment_is_the_spec_plus_home_as_crun_sets_it() {
    let f = Fixture::new("env");
    let mut spec = f.spec(&["env"]);
    let mut process = spec.process().clone().unwrap();
    let env = vec![
        "PATH=/bin".to_string(),
        "GREETING=hello world".into(),
        "EMPTY=".into(),
    ];
    process.set_env(Some(env.clone()));
    spec.set_process(Some(process));
    let out: BTreeSet<String> = f.stdout(&spec).into_iter().collect();
    let mut want: BTreeSet<String> = env.iter().cloned().collect();
    want.insert("HOME=/".into());
    assert_eq!(out, want);
    // A HOME in process.env is kept as given.
    let f = Fixture::new("env-home");
    let mut spec = f.spec(&["env"]);
    let mut with_home = env.clone();
    with_home.push("HOME=/srv".into());
    let mut process = spec.process().clone().unwrap();
    process.set_env(Some(with_home.clone()));
    spec.set_process(Some(process));
    let out: BTreeSet<String> = f.stdout(&spec).into_iter().collect();
    assert_eq!(out, with_home.into_iter().collect::<BTreeSet<_>>());
}

#[test]
fn stdout_and_stderr_lines_arrive_in_the_log_with_their_stream() {
    let f = Fixture::new("logs");
    let (exit, logs) = f.run(&f.spec(&[
        "sh",
        "-c",
        "echo out1; echo err1 >&2; echo out2; printf tail",
    ]));
    assert_eq!(exit, Exit::Code(0));
    let got: Vec<(Stream, &str)> = logs
        .iter()
        .map(|e| (e.stream.unwrap(), e.message.as_str()))
        .collect();
    let stdout: Vec<&str> = got
        .iter()
        .filter(|g| g.0 == Stream::Stdout)
        .map(|g| g.1)
        .collect();
    let stderr: Vec<&str> = got
        .iter()
        .filter(|g| g.0 == Stream::Stderr)
        .map(|g| g.1)
        .collect();
    assert_eq!(stdout, ["out1", "out2", "tail"]);
    assert_eq!(stderr, ["err1"]);
    let state = runtime::state(&f.state).unwrap();
    for e in &logs {
        assert_eq!(e.service, "logs");
        assert_eq!(e.pid, state.init_pid);
        assert!(e.time.ends_with('Z') && e.time.len() == 24, "{}", e.time);
    }
}

#[test]
fn exit_code_is_reported() {
    let f = Fixture::new("exit3");
    let (exit, _) = f.run(&f.spec(&["sh", "-c", "exit 3"]));
    assert_eq!(exit, Exit::Code(3));
    assert_eq!(f.status(), Status::Stopped(Exit::Code(3)));
    let text = std::fs::read_to_string(f.state.join("exit.json")).unwrap();
    assert!(text.contains("\"code\": 3"), "{text}");
}

#[test]
fn death_by_signal_is_reported() {
    let f = Fixture::new("killed");
    f.create(&f.spec(&["sleep", "100"])).unwrap();
    runtime::start(&f.state).unwrap();
    runtime::kill(&f.state, Signal::SIGKILL).unwrap();
    let exit = runtime::wait(&f.state, WAIT).unwrap();
    assert_eq!(
        exit,
        Exit::Signal {
            signal: 9,
            oom_killed: false
        }
    );
    assert_eq!(f.status(), Status::Stopped(exit));
    assert!(matches!(
        runtime::kill(&f.state, Signal::SIGTERM),
        Err(RuntimeError::WrongState { .. })
    ));
}

#[test]
fn create_blocks_before_exec_and_start_releases_it() {
    let f = Fixture::new("lifecycle");
    let created = f
        .create(&f.spec(&["sh", "-c", "echo started; exec sleep 100"]))
        .unwrap();
    assert_eq!(f.status(), Status::Created);
    // The init waits in the runtime's code: nothing of process.args ran yet.
    std::thread::sleep(Duration::from_millis(200));
    assert!(f.logs().is_empty(), "{:?}", f.logs());
    assert!(created.netns().exists());
    let state = runtime::state(&f.state).unwrap();
    assert_eq!(state.init_pid, Some(created.init_pid));
    assert_eq!(state.shim_pid, created.shim_pid);
    assert!(state.started.is_none());

    runtime::start(&f.state).unwrap();
    assert_eq!(f.status(), Status::Running);
    assert!(runtime::state(&f.state).unwrap().started.is_some());
    wait_until("the started line", || {
        f.logs().iter().any(|e| e.message == "started")
    });
    assert!(matches!(
        runtime::start(&f.state),
        Err(RuntimeError::WrongState { .. })
    ));
    assert!(matches!(
        runtime::delete(&f.state),
        Err(RuntimeError::WrongState { .. })
    ));
    let exit = runtime::stop(&f.state, Duration::from_millis(200)).unwrap();
    assert_eq!(
        exit,
        Exit::Signal {
            signal: 9,
            oom_killed: false
        }
    );
}

#[test]
fn stop_lets_a_process_that_handles_sigterm_end_within_the_grace() {
    let f = Fixture::new("graceful");
    let script = "trap 'echo bye; exit 7' TERM; echo ready; while true; do sleep 0.1; done";
    f.create(&f.spec(&["sh", "-c", script])).unwrap();
    runtime::start(&f.state).unwrap();
    wait_until("the trap", || f.logs().iter().any(|e| e.message == "ready"));
    let t = Instant::now();
    let exit = runtime::stop(&f.state, Duration::from_secs(10)).unwrap();
    assert_eq!(exit, Exit::Code(7));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(f.logs().iter().any(|e| e.message == "bye"));
}

#[test]
fn stop_kills_after_the_grace_a_process_that_ignores_sigterm() {
    let f = Fixture::new("stubborn");
    f.create(&f.spec(&["sleep", "100"])).unwrap();
    runtime::start(&f.state).unwrap();
    let t = Instant::now();
    let exit = runtime::stop(&f.state, Duration::from_millis(300)).unwrap();
    assert_eq!(
        exit,
        Exit::Signal {
            signal: 9,
            oom_killed: false
        }
    );
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn delete_removes_the_state_directory() {
    let f = Fixture::new("delete");
    let (exit, _) = f.run(&f.spec(&["true"]));
    assert_eq!(exit, Exit::Code(0));
    assert!(f.state.join("state.json").exists());
    runtime::delete(&f.state).unwrap();
    assert!(!f.state.exists());
    assert!(matches!(
        runtime::state(&f.state),
        Err(RuntimeError::NotFound(_))
    ));
}

#[test]
fn delete_force_removes_a_running_container_and_its_processes() {
    let f = Fixture::new("force");
    let c = f.create(&f.spec(&["sleep", "100"])).unwrap();
    runtime::start(&f.state).unwrap();
    runtime::delete_force(&f.state).unwrap();
    assert!(!f.state.exists());
    assert!(
        !Path::new(&format!("/proc/{}", c.init_pid)).exists() || {
            let s =
                std::fs::read_to_string(format!("/proc/{}/stat", c.init_pid)).unwrap_or_default();
            s.contains(") Z")
        }
    );
}

#[test]
fn a_missing_program_fails_create_with_the_step_and_leaves_nothing() {
    let f = Fixture::new("noprog");
    let e = f
        .create(&f.spec(&["/bin/no-such-program"]))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("container init: find process.args[0] \"/bin/no-such-program\": ENOENT"),
        "{e}"
    );
    assert!(e.contains("fix process.args"), "{e}");
    assert!(!f.state.exists(), "state left behind");
    assert!(
        processes_mentioning(&f.state).is_empty(),
        "processes left behind"
    );

    let e = f
        .create(&f.spec(&["no-such-program"]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no executable of that name in the container's PATH"),
        "{e}"
    );
    assert!(!f.state.exists(), "state left behind");
}

#[test]
fn a_missing_mount_source_fails_create_with_the_step_and_leaves_nothing() {
    let f = Fixture::new("nosource");
    let mut spec = f.spec(&["true"]);
    let mut mounts = spec.mounts().clone().unwrap();
    mounts.push(
        MountBuilder::default()
            .destination("/mnt/data")
            .typ("bind")
            .source("/no/such/source")
            .options(vec!["rbind".to_string(), "ro".to_string()])
            .build()
            .unwrap(),
    );
    spec.set_mounts(Some(mounts));
    let e = f.create(&spec).unwrap_err().to_string();
    assert!(
        e.starts_with("container init: mount /no/such/source on /mnt/data: ENOENT"),
        "{e}"
    );
    assert!(e.contains("fix mounts[].source"), "{e}");
    assert!(!f.state.exists(), "state left behind");
    assert!(
        processes_mentioning(&f.state).is_empty(),
        "processes left behind"
    );
}

#[test]
fn a_bad_config_fails_create_naming_the_field() {
    let f = Fixture::new("badconfig");
    std::fs::write(f.bundle.join("config.json"), r#"{"ociVersion":"1.0.2","process":{"args":"sh","cwd":"/","user":{"uid":0,"gid":0}},"root":{"path":"rootfs"}}"#).unwrap();
    let e = f.create_with(NetMode::None).unwrap_err().to_string();
    assert!(e.starts_with("shim: read "), "{e}");
    assert!(e.contains("process.args"), "{e}");
    assert!(!f.state.exists());
}

#[test]
fn a_second_create_with_the_same_state_directory_is_refused() {
    let f = Fixture::new("twice");
    f.create(&f.spec(&["sleep", "100"])).unwrap();
    let e = f.create_with(NetMode::None).unwrap_err();
    assert!(matches!(e, RuntimeError::Exists(_)), "{e}");
    assert_eq!(
        f.status(),
        Status::Created,
        "the first container was disturbed"
    );
}

#[test]
fn network_none_has_only_lo_and_it_is_up() {
    let f = Fixture::new("netnone");
    let out = f.stdout(&f.spec(&["sh", "-c", "ls /sys/class/net; cat /sys/class/net/lo/flags"]));
    assert_eq!(out, ["lo", "0x9"]);
}

#[test]
fn network_host_sees_the_node_interfaces() {
    let f = Fixture::new("nethost");
    f.write(&f.spec(&["ls", "/sys/class/net"]));
    f.create_with(NetMode::Host).unwrap();
    runtime::start(&f.state).unwrap();
    assert_eq!(runtime::wait(&f.state, WAIT).unwrap(), Exit::Code(0));
    let got: BTreeSet<String> = f.logs().into_iter().map(|e| e.message).collect();
    let node: BTreeSet<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(got, node);
}

const CREATOR_ENV: &str = "TESSERA_RUNTIME_TEST_CREATOR";

/// The shim survives the death of the process that called create() (the agent, killed -9),
/// and a state() from another process still follows the container to its end.
#[test]
fn the_container_outlives_a_sigkill_of_its_creator() {
    if let Ok(dirs) = std::env::var(CREATOR_ENV) {
        // The creator's role: create, start, say so, then wait to be killed.
        let (bundle, state) = dirs.split_once(':').unwrap();
        let none: Vec<String> = Vec::new();
        let c = runtime::create(&CreateOptions {
            id: "orphan",
            bundle: Path::new(bundle),
            state_dir: Path::new(state),
            shim: Path::new(SHIM),
            shim_args: &none,
            cgroup_parent: None,
            net: NetMode::None,
            identity: None,
        })
        .unwrap();
        runtime::start(Path::new(state)).unwrap();
        println!("CREATED {} {}", c.init_pid, c.shim_pid);
        loop {
            std::thread::sleep(Duration::from_secs(60));
        }
    }
    let f = Fixture::new("orphan");
    f.write(&f.spec(&["sh", "-c", "sleep 1; exit 4"]));
    let mut creator = Command::new(std::env::current_exe().unwrap())
        .args([
            "the_container_outlives_a_sigkill_of_its_creator",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            CREATOR_ENV,
            format!("{}:{}", f.bundle.display(), f.state.display()),
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut created = None;
    for line in std::io::BufReader::new(creator.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        // libtest prints "test NAME ... " before the test's own output, on the same line.
        if let Some(at) = line.find("CREATED ") {
            created = Some(line[at + "CREATED ".len()..].to_string());
            break;
        }
    }
    let created = created.expect("the creator did not create");
    let shim_pid: u32 = created.split(' ').nth(1).unwrap().parse().unwrap();
    creator.kill().unwrap();
    creator.wait().unwrap();

    assert_eq!(f.status(), Status::Running);
    let stat = std::fs::read_to_string(format!("/proc/{shim_pid}/stat")).unwrap();
    let ppid: u32 = stat[stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(ppid, creator.id(), "the shim's parent is still the creator");
    assert_eq!(runtime::wait(&f.state, WAIT).unwrap(), Exit::Code(4));
    assert_eq!(f.status(), Status::Stopped(Exit::Code(4)));
}

#[test]
fn an_exec_failure_fails_start_with_the_step_and_leaves_nothing() {
    let f = Fixture::new("badexec");
    // Executable, so create's lookup accepts it, but not a format the kernel runs.
    let bad = f.rootfs().join("bin/not-a-program");
    std::fs::write(&bad, b"\x00\x01garbage").unwrap();
    std::fs::set_permissions(&bad, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    f.create(&f.spec(&["/bin/not-a-program"])).unwrap();
    let e = runtime::start(&f.state).unwrap_err().to_string();
    assert!(
        e.starts_with("container init: exec /bin/not-a-program: ENOEXEC"),
        "{e}"
    );
    assert!(!f.state.exists(), "state left behind");
    assert!(
        processes_mentioning(&f.state).is_empty(),
        "processes left behind"
    );
}

/// The node's root is an initramfs, where pivot_root(2) fails with EINVAL. The same refusal is
/// had here by running the shim chrooted into a mount whose parent is shared (in a private
/// mount namespace made with unshare); the init must then take the MS_MOVE + chroot path.
#[test]
fn where_pivot_root_is_refused_the_rootfs_is_moved_onto_root_and_chrooted() {
    let f = Fixture::new("moveroot");
    let node = tempfile::tempdir().unwrap();
    let fixture_dir = f.bundle.parent().unwrap().to_path_buf();
    let shim_dir = Path::new(SHIM).parent().unwrap().to_path_buf();
    let script = r#"set -e
        p=$1; fixture=$2; shimdir=$3; shift 3
        mount -t tmpfs node "$p"; mount --make-shared "$p"
        mkdir "$p/root"; mount --bind "$p/root" "$p/root"; r=$p/root
        for d in usr proc dev sys "$fixture" "$shimdir"; do mkdir -p "$r/$d"; done
        ln -s usr/lib "$r/lib"; ln -s usr/lib64 "$r/lib64"; ln -s usr/bin "$r/bin"
        mount --rbind /usr "$r/usr"; mount --rbind /proc "$r/proc"; mount --rbind /dev "$r/dev"
        mount --rbind /sys "$r/sys"; mount --rbind "$fixture" "$r/$fixture"; mount --bind "$shimdir" "$r/$shimdir"
        exec /usr/sbin/chroot "$r" "$@""#;
    let shim_args: Vec<String> = [
        "--mount",
        "--propagation",
        "private",
        "/bin/sh",
        "-c",
        script,
        "sh",
        &node.path().to_string_lossy(),
        &fixture_dir.to_string_lossy(),
        &shim_dir.to_string_lossy(),
        SHIM,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut spec = f.spec(&[
        "sh",
        "-c",
        "cut -d' ' -f4,5 /proc/self/mountinfo; ls -a /..; chroot / true || echo no-chroot",
    ]);
    let mut process = spec.process().clone().unwrap();
    let mut caps = process.capabilities().clone().unwrap();
    let mut bounding = caps.bounding().clone().unwrap();
    bounding.insert(oci_spec::runtime::Capability::SysChroot);
    caps.set_bounding(Some(bounding));
    process.set_capabilities(Some(caps));
    spec.set_process(Some(process));
    f.write(&spec);
    runtime::create(&CreateOptions {
        id: &f.id,
        bundle: &f.bundle,
        state_dir: &f.state,
        shim: Path::new("/usr/bin/unshare"),
        shim_args: &shim_args,
        cgroup_parent: None,
        net: NetMode::None,
        identity: None,
    })
    .unwrap();
    assert_eq!(
        runtime::state(&f.state).unwrap().root_switch,
        Some(runtime::RootSwitch::MoveChroot)
    );
    runtime::start(&f.state).unwrap();
    assert_eq!(runtime::wait(&f.state, WAIT).unwrap(), Exit::Code(0));
    let logs = f.logs();
    let out: Vec<&str> = logs
        .iter()
        .filter(|e| e.stream == Some(Stream::Stdout))
        .map(|e| e.message.as_str())
        .collect();
    // "/" is the rootfs, and the node's mounts (/usr, the node's /proc, …) were detached.
    assert!(
        out.contains(&format!("{} /", f.rootfs().display()).as_str()),
        "{out:?}"
    );
    assert!(
        !out.iter()
            .any(|l| l.ends_with(" /usr") || l.ends_with("/tgt-runtime/debug")),
        "{out:?}"
    );
    // ".." of "/" is "/": the rootfs's own entries, nothing of the node's.
    assert!(out.contains(&"bin") && !out.contains(&"usr"), "{out:?}");
    // The spec granted CAP_SYS_CHROOT, which a chroot'ed container could use: the log says so.
    assert!(
        logs.iter()
            .any(|e| e.stream.is_none() && e.message.contains("CAP_SYS_CHROOT")),
        "no warning in {logs:?}"
    );
}

/// The first cgroup2 mount point of this host (/sys/fs/cgroup, or /sys/fs/cgroup/unified on
/// a hybrid host).
fn cgroup2_mount() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split(' ').next()? == "cgroup2")
                .then(|| PathBuf::from(left.split(' ').nth(4).unwrap()))
        })
        .expect("this test needs a cgroup2 mount (/sys/fs/cgroup or /sys/fs/cgroup/unified)")
}

#[test]
fn with_a_cgroup_parent_the_init_is_in_its_own_cgroup_and_namespace_until_delete() {
    let f = Fixture::new("cgrouped");
    let scratch =
        CgroupScratch(cgroup2_mount().join(format!("tessera-runtime-test-{}", std::process::id())));
    let parent = scratch.0.join("containers");
    f.write(&f.spec(&["sh", "-c", "cat /proc/self/cgroup; echo up; exec sleep 100"]));
    let shim_args: Vec<String> = Vec::new();
    let created = runtime::create(&CreateOptions {
        id: &f.id,
        bundle: &f.bundle,
        state_dir: &f.state,
        shim: Path::new(SHIM),
        shim_args: &shim_args,
        cgroup_parent: Some(&parent),
        net: NetMode::None,
        identity: None,
    })
    .unwrap();
    let dir = parent.join("cgrouped");
    assert_eq!(
        runtime::state(&f.state).unwrap().cgroup.as_deref(),
        Some(dir.as_path())
    );
    // In before any of process.args runs.
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
    assert_eq!(procs.trim(), created.init_pid.to_string());
    runtime::start(&f.state).unwrap();
    wait_until("the container's output", || {
        f.logs().iter().any(|e| e.message == "up")
    });
    // Its cgroup namespace is rooted at its cgroup (the v2 line; a hybrid host lists v1 too).
    let logs = f.logs();
    let v2: Vec<&str> = logs
        .iter()
        .map(|e| e.message.as_str())
        .filter(|m| m.starts_with("0::"))
        .collect();
    assert_eq!(v2, ["0::/"]);
    let exit = runtime::stop(&f.state, Duration::from_millis(100)).unwrap();
    assert_eq!(
        exit,
        Exit::Signal {
            signal: 9,
            oom_killed: false
        }
    );
    runtime::delete(&f.state).unwrap();
    assert!(!dir.exists(), "the container's cgroup is left");
}

/// A cgroup directory of the test, removed with what is below it even when the test fails.
struct CgroupScratch(PathBuf);

impl Drop for CgroupScratch {
    fn drop(&mut self) {
        let c = tessera_container::runtime::cgroup::Cgroup::open(self.0.clone());
        let _ = c.kill();
        let _ = c.remove();
    }
}

/// `exec` through the test shim binary: a fresh single-threaded process, as the CLI is.
fn exec_in(f: &Fixture, env: &[&str], cmd: &[&str]) -> std::process::Output {
    let mut c = Command::new(SHIM);
    c.arg("exec").arg(&f.state);
    for e in env {
        c.args(["-e", e]);
    }
    c.arg("--").args(cmd).output().unwrap()
}

fn status_lines(status: &str, keys: &[&str]) -> Vec<String> {
    status
        .lines()
        .filter(|l| keys.iter().any(|k| l.starts_with(&format!("{k}:"))))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn exec_runs_a_command_inside_a_running_container_set_up_like_its_process() {
    let f = Fixture::new("exec1");
    let c = f.create(&f.spec(&["sleep", "30"])).unwrap();
    runtime::start(&f.state).unwrap();
    let out = exec_in(
        &f,
        &["FOO=bar"],
        &[
            "sh",
            "-c",
            "echo pid $$; hostname; echo foo $FOO; ls -d /proc/[0-9]* | wc -l; cat /proc/self/status",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<&str> = text.lines().collect();
    let pid: u32 = lines[0].strip_prefix("pid ").unwrap().parse().unwrap();
    assert!(
        pid > 1 && pid < 10,
        "a PID of the container's namespace: {text}"
    );
    assert_eq!(lines[1], "box-exec1", "its UTS namespace");
    assert_eq!(lines[2], "foo bar", "the extra environment");
    let seen: usize = lines[3].trim().parse().unwrap();
    assert!(seen <= 4, "only the container's processes: {text}");
    // The same credentials, capabilities, no_new_privs and seccomp mode as the init.
    let keys = [
        "Uid",
        "Gid",
        "CapBnd",
        "CapEff",
        "CapPrm",
        "NoNewPrivs",
        "Seccomp",
    ];
    let init = std::fs::read_to_string(format!("/proc/{}/status", c.init_pid)).unwrap();
    assert_eq!(status_lines(&text, &keys), status_lines(&init, &keys));
    assert!(
        status_lines(&text, &["Seccomp"]) == ["Seccomp: 2"],
        "{text}"
    );

    // The command's exit status comes back; a missing program is a clear failure.
    assert_eq!(
        exec_in(&f, &[], &["sh", "-c", "exit 7"]).status.code(),
        Some(7)
    );
    let missing = exec_in(&f, &[], &["/bin/nope"]);
    assert_eq!(missing.status.code(), Some(127));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("/bin/nope"),
        "{missing:?}"
    );
    // Only into a running container.
    runtime::kill(&f.state, runtime::Signal::SIGKILL).unwrap();
    runtime::wait(&f.state, WAIT).unwrap();
    let refused = exec_in(&f, &[], &["true"]);
    assert_eq!(refused.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("start it first"),
        "{refused:?}"
    );
}
