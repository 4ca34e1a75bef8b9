//! End-to-end, differential: the same OCI bundles run by our container agent (`tessera
//! container import/create/start/logs` on the console) and by Debian's crun 1.8.1 in the same
//! VM report the same process view. Each bundle runs /probe.sh, which prints one `P key =
//! value` line per field: uid/gid/groups, the capability sets, NoNewPrivs and the seccomp mode
//! (/proc/self/status), the hostname, the mount list's shape, the cgroup limits, the rlimits
//! (`ulimit -a`), the environment, cwd and umask, and what a syscall the bundle's seccomp
//! profile denies returns. crun and its libraries are on an ext4 disk (`tessera_bench::disks`)
//! with the bundles, each as a directory (crun runs it) and as a tar of that directory (our
//! agent imports it).

#[path = "../../agents/userdata/tests/common/mod.rs"]
mod userdata_helpers;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use tessera_bench::disks::{self, default_config, rlimit, DiskBuilder};
use tessera_e2e::*;
use tessera_qemu::{BootMode, Vm};
use userdata_helpers::nocloud_seed;

const SETTLE: Duration = Duration::from_secs(120);

/// Prints the process's view as `P key = value` lines (busybox sh).
const PROBE: &str = r#"#!/bin/sh
p() { echo "P $1 = $2"; }
p id "$(id)"
p cwd "$(pwd)"
p umask "$(umask)"
p hostname "$(hostname)"
grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp|Seccomp_filters):' /proc/self/status |
  while read -r k v; do p "status.${k%:}" "$v"; done
while read -r src mp fs opts rest; do p "mount.$mp" "$fs $opts"; done < /proc/self/mounts
cg=$(cut -d: -f3 /proc/self/cgroup)
p cgroup.path "$cg"
for f in memory.max memory.swap.max memory.high memory.low pids.max cpu.max cpu.weight; do
  p "cgroup.$f" "$(cat /sys/fs/cgroup$cg/$f 2>&1)"
done
ulimit -a | while read -r line; do f=${line##*(}; p "ulimit.${f%%)*}" "${line##* }"; done
env | sort | while IFS== read -r k v; do p "env.$k" "$v"; done
p mkdir "$(mkdir /tmp/probe-dir 2>&1 && echo created)"
"#;

/// One bundle of the comparison, and the fields it may legitimately report differently.
struct Case {
    name: &'static str,
    config: Value,
    /// Fields not compared, each with the reason (see [`cases`]).
    skip: &'static [(&'static str, &'static str)],
}

fn probe_config() -> Value {
    default_config(&["/bin/sh", "/probe.sh"])
}

fn cases() -> Vec<Case> {
    // The default spec, unchanged. Two fields differ by design, not by runtime: the agent
    // names an instance after the container when config.json has no hostname (crun keeps
    // the node's), and the runtime installs Docker's default seccomp profile when
    // config.json has none (issue 9 §3; crun installs no filter). The `docker-seccomp`
    // bundle below gives that profile to both explicitly, and `limits` a hostname.
    let default = Case {
        name: "default",
        config: probe_config(),
        skip: &[
            (
                "hostname",
                "the agent names an instance without one after the container",
            ),
            (
                "status.Seccomp",
                "no linux.seccomp: ours applies Docker's default profile",
            ),
            ("status.Seccomp_filters", "as status.Seccomp"),
        ],
    };

    let mut user = probe_config();
    user["hostname"] = json!("probe-user");
    user["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [10]});
    user["process"]["cwd"] = json!("/tmp");
    user["process"]["noNewPrivileges"] = json!(true);
    user["process"]["env"]
        .as_array_mut()
        .expect("the default spec has process.env")
        .extend([json!("GREETING=hello world"), json!("EMPTY=")]);
    user["process"]["capabilities"] = json!({
        "bounding": ["CAP_KILL", "CAP_CHOWN"],
        "effective": ["CAP_KILL"],
        "permitted": ["CAP_KILL", "CAP_CHOWN"],
        "inheritable": ["CAP_KILL"],
        "ambient": ["CAP_KILL"],
    });
    user["linux"]["seccomp"] = docker_profile();

    let mut limits = probe_config();
    limits["hostname"] = json!("limited");
    limits["process"]["rlimits"] = json!([
        rlimit("RLIMIT_NOFILE", 256, 512),
        rlimit("RLIMIT_NPROC", 100, 200),
        rlimit("RLIMIT_CORE", 0, 1 << 20),
        rlimit("RLIMIT_STACK", 4 << 20, 8 << 20),
    ]);
    limits["linux"]["resources"]["memory"] = json!({"limit": 64 << 20});
    limits["linux"]["resources"]["pids"] = json!({"limit": 32});
    limits["linux"]["resources"]["cpu"] = json!({"quota": 50000, "period": 100000, "shares": 512});
    limits["linux"]["seccomp"] = docker_profile();

    let mut seccomp = probe_config();
    seccomp["hostname"] = json!("filtered");
    seccomp["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}],
    });

    let mut docker = probe_config();
    docker["hostname"] = json!("docker");
    docker["root"]["readonly"] = json!(false);
    docker["linux"]["seccomp"] = docker_profile();

    vec![
        default,
        Case {
            name: "user",
            config: user,
            skip: &[],
        },
        Case {
            name: "limits",
            config: limits,
            skip: &[],
        },
        Case {
            name: "seccomp",
            config: seccomp,
            skip: &[],
        },
        Case {
            name: "docker-seccomp",
            config: docker,
            skip: &[],
        },
    ]
}

/// Docker's default profile, as the runtime applies it for the default capabilities.
fn docker_profile() -> Value {
    let caps = tessera_container::runtime::seccomp::DOCKER_DEFAULT_CAPS
        .iter()
        .copied()
        .collect();
    serde_json::to_value(tessera_container::runtime::seccomp::default_profile(&caps))
        .expect("the profile serializes")
}

/// The probe's fields from console or log text: key → value (a repeated key, such as a path
/// mounted twice, gets `#2`, `#3`, …). The root mount's source and file system are the
/// instance's snapshot under ours and the ext4 disk under crun: only its options' ro/rw is
/// kept.
fn fields(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.split_once("P ").map(|(_, r)| r) else {
            continue;
        };
        let Some((key, value)) = rest
            .split_once(" = ")
            .or_else(|| rest.strip_suffix(" =").map(|k| (k, "")))
        else {
            continue;
        };
        let (mut key, mut value) = (key.trim().to_string(), value.trim_end().to_string());
        if key == "mount./" {
            let rw = value
                .split_whitespace()
                .nth(1)
                .and_then(|o| o.split(',').next());
            value = format!("(root) {}", rw.unwrap_or("?"));
        }
        let base = key.clone();
        let mut n = 1;
        while out.contains_key(&key) {
            n += 1;
            key = format!("{base}#{n}");
        }
        out.insert(key, value);
    }
    out
}

/// Field-by-field differences, skipping `skip`'s fields.
fn differences(
    ours: &BTreeMap<String, String>,
    crun: &BTreeMap<String, String>,
    skip: &[(&str, &str)],
) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = ours.keys().chain(crun.keys()).collect();
    keys.into_iter()
        .filter(|k| !skip.iter().any(|(s, _)| s == k))
        .filter_map(|k| {
            let (a, b) = (ours.get(k), crun.get(k));
            (a != b).then(|| {
                format!(
                    "  {k}: ours {} | crun {}",
                    a.map_or("(absent)".to_string(), |v| format!("{v:?}")),
                    b.map_or("(absent)".to_string(), |v| format!("{v:?}"))
                )
            })
        })
        .collect()
}

fn boot_node(dir: &std::path::Path, cases: &[Case]) -> Vm {
    let seed = nocloud_seed(
        dir,
        "version = 1\n\n[storage]\nbackend = \"btrfs\"\ndevice = \"/dev/vdb\"\n",
    );
    let data = data_disk(dir, "3G");
    let builder = DiskBuilder::new(dir).unwrap_or_else(|e| panic!("{e:#}"));
    for c in cases {
        builder
            .add_bundle(c.name, &c.config, &[("/probe.sh", PROBE)])
            .unwrap_or_else(|e| panic!("bundle {}: {e:#}", c.name));
    }
    let crun_disk = builder
        .finish(&dir.join("crun.img"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let vm = boot_with_disks(
        &default_image(),
        BootMode::Kernel,
        "container-crun",
        &[],
        &[seed, data, crun_disk],
    );
    wait_ready(&vm, BootMode::Kernel);
    sh_until(&vm, "tessera status", SETTLE, |s| {
        s.lines()
            .any(|l| l.split_whitespace().next() == Some("container") && l.contains(" ready"))
    });
    sh(&vm, &disks::mount_in_guest("/dev/vdc"));
    vm
}

/// Imports, creates and starts bundle `name` with our agent; its stdout once it has exited.
fn run_ours(vm: &Vm, name: &str) -> String {
    let import = sh(
        vm,
        &format!(
            "tessera container import {}/bundles/{name}.tar",
            disks::MOUNT
        ),
    );
    let digest = import
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no template digest in the import's output:\n{import}"));
    let container = format!("p-{name}");
    sh(
        vm,
        // --net none: the bundle's own network namespace with lo only, as crun makes it (the
        // agent's default, bridge, adds a veth and the node's DNS, which crun knows nothing of).
        &format!(
            "tessera container create {container} --template {} --net none --start",
            &digest[7..19]
        ),
    );
    let list = sh_until(vm, "tessera container list", SETTLE, |out| {
        out.lines().any(|l| {
            l.split_whitespace().next() == Some(container.as_str()) && l.contains("exited")
        })
    });
    assert!(
        list.lines()
            .any(|l| l.starts_with(&container) && l.contains("exited(0)")),
        "bundle {name} under our agent did not exit 0:\n{list}\n{}",
        sh(vm, &format!("tessera container logs {container}"))
    );
    sh(vm, &format!("tessera container logs {container}"))
}

/// `crun run` of bundle `name`; what it printed, with its exit status checked.
fn run_crun(vm: &Vm, name: &str) -> String {
    let out = sh(
        vm,
        &format!(
            "{} run --no-pivot --bundle {}/bundles/{name} c-{name}; echo crun-rc=$?",
            disks::crun_in_guest(),
            disks::MOUNT
        ),
    );
    assert!(
        out.contains("crun-rc=0"),
        "crun run of bundle {name} failed:\n{out}"
    );
    out
}

#[test]
fn the_same_bundles_report_the_same_process_view_under_our_runtime_and_crun() {
    let dir = test_dir("container-crun");
    let cases = cases();
    let vm = boot_node(&dir, &cases);
    let mut failures = Vec::new();
    for case in &cases {
        let ours_text = run_ours(&vm, case.name);
        let crun_text = run_crun(&vm, case.name);
        let (ours, crun) = (fields(&ours_text), fields(&crun_text));
        // A probe that printed nothing would compare equal to another empty one.
        for (who, f, text) in [("ours", &ours, &ours_text), ("crun", &crun, &crun_text)] {
            assert!(
                f.contains_key("status.CapEff")
                    && f.contains_key("mount./")
                    && f.contains_key("ulimit.-n"),
                "bundle {}: the probe's output under {who} is incomplete:\n{text}",
                case.name
            );
        }
        let diff = differences(&ours, &crun, case.skip);
        if !diff.is_empty() {
            failures.push(format!("bundle {}:\n{}", case.name, diff.join("\n")));
        }
    }
    // The default bundle's skipped fields still say what they should under ours.
    let ours = fields(&sh(&vm, "tessera container logs p-default"));
    assert_eq!(ours.get("hostname").map(String::as_str), Some("p-default"));
    assert_eq!(ours.get("status.Seccomp").map(String::as_str), Some("2"));
    assert!(
        failures.is_empty(),
        "our runtime and crun {} disagree (ours | crun):\n{}",
        disks::CRUN_VERSION,
        failures.join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn probe_fields_parse_and_differences_name_the_field() {
    let ours = fields("12:00:00.000 stdout: P id = uid=0(root)\n12:00:00.001 stdout: P mount./ = btrfs rw,relatime,subvol=/x\nP env.EMPTY =\n");
    let crun =
        fields("P id = uid=0(root)\nP mount./ = ext4 rw,relatime\nP env.EMPTY = \nP extra = 1\n");
    assert_eq!(ours.get("mount./").map(String::as_str), Some("(root) rw"));
    assert_eq!(ours.get("env.EMPTY").map(String::as_str), Some(""));
    let diff = differences(&ours, &crun, &[]);
    assert_eq!(
        diff,
        vec!["  extra: ours (absent) | crun \"1\"".to_string()]
    );
    assert!(differences(&ours, &crun, &[("extra", "test")]).is_empty());
}
