//! Supervisor semantics, checked on the host: `tessera init --subreaper` runs real processes
//! from service files, and each test looks at what a user would see.

mod harness;

use harness::{field, secs, start};
use tessera_common::control::ServiceState;

const NOTIFY_AFTER: &str = r#"exec = "/bin/sh"
ready = "notify"
"#;

fn notify_service(delay: f64, extra: &str) -> String {
    format!("{NOTIFY_AFTER}args = [\"-c\", \"sleep {delay}; tessera notify READY=1; exec sleep 1000\"]\n{extra}")
}

#[test]
fn dependents_start_only_after_what_they_require_is_ready() {
    let node = start(&[
        ("db.toml", &notify_service(0.4, "")),
        (
            "web.toml",
            "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nrequires = [\"db\"]\n",
        ),
    ]);
    node.wait_console("TESSERA-READY", secs(10.0));
    let events = node.logs();
    let pos = |msg: &str, svc: &str| {
        events
            .iter()
            .position(|e| e.message == msg && field(e, "service") == svc)
            .unwrap_or_else(|| panic!("no {msg} for {svc}"))
    };
    assert!(
        pos("service ready", "db") < pos("service started", "web"),
        "web started before db was ready"
    );
}

#[test]
fn independent_services_start_in_parallel() {
    let node = start(&[
        ("a.toml", &notify_service(0.5, "")),
        ("b.toml", &notify_service(0.5, "")),
        ("c.toml", &notify_service(0.5, "")),
    ]);
    let ready = node.wait_console("TESSERA-READY", secs(10.0));
    let ms: u64 = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("userspace_ms="))
        .unwrap()
        .parse()
        .unwrap();
    // Three services that each take 0.5 s to get ready: in parallel this is ~0.5 s, in series 1.5 s.
    assert!(
        ms < 1400,
        "ready after {ms} ms: services were started one after the other"
    );
    let events = node.logs();
    let last_start = events
        .iter()
        .rposition(|e| e.message == "service started")
        .unwrap();
    let first_ready = events
        .iter()
        .position(|e| e.message == "service ready")
        .unwrap();
    assert!(
        last_start < first_ready,
        "all three should be started before any is ready"
    );
}

#[test]
fn ready_line_waits_for_notify_readiness_and_reports_counts() {
    let node = start(&[
        ("slow.toml", &notify_service(0.3, "")),
        ("once.toml", "exec = \"/bin/true\"\nkind = \"oneshot\"\n"),
    ]);
    let line = node.wait_console("TESSERA-READY", secs(10.0));
    assert!(
        line.starts_with("TESSERA-READY services=2 userspace_ms="),
        "{line}"
    );
    assert!(line.ends_with("failed=0"), "{line}");
    assert_eq!(node.service("once").state, ServiceState::Done);
    assert_eq!(node.service("slow").state, ServiceState::Ready);
    assert_eq!(node.status().node.state, "available");
}

#[test]
fn status_text_from_notify_is_shown() {
    let node = start(&[("s.toml", "exec = \"/bin/sh\"\nready = \"notify\"\nargs = [\"-c\", \"tessera notify --status 'warming caches' --ready; exec sleep 1000\"]\n")]);
    node.wait_console("TESSERA-READY", secs(10.0));
    assert_eq!(node.service("s").status.as_deref(), Some("warming caches"));
    let out = node.cli(&["status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("warming caches"));
}

#[test]
fn crash_loop_is_given_up_after_its_intensity_and_the_node_stays_up() {
    let node = start(&[
        ("crash.toml", "exec = \"/bin/sh\"\nargs = [\"-c\", \"exit 3\"]\nintensity = { max = 3, period = \"30s\" }\nbackoff = { initial = \"20ms\", max = \"100ms\" }\n"),
        ("steady.toml", "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n"),
    ]);
    let s = node.wait_service("crash", secs(10.0), |s| s.state == ServiceState::Failed);
    assert_eq!(s.restarts, 3);
    assert!(
        s.reason
            .as_deref()
            .unwrap_or("")
            .contains("restart intensity exceeded: 4 restarts within 30s"),
        "{s:?}"
    );
    assert_eq!(node.service("steady").state, ServiceState::Ready);
    assert_eq!(
        node.init_events("service started")
            .iter()
            .filter(|e| field(e, "service") == "crash")
            .count(),
        4
    );
    let st = node.status();
    assert_eq!(st.node.state, "available");
    assert!(st.node.reason.unwrap_or_default().contains("crash"));
}

#[test]
fn permanent_restarts_after_a_clean_exit_transient_does_not() {
    let node = start(&[
        ("perm.toml", "exec = \"/bin/sh\"\nargs = [\"-c\", \"sleep 0.2; exit 0\"]\nrestart = \"permanent\"\nintensity = { max = 100, period = \"60s\" }\nbackoff = { initial = \"10ms\", max = \"10ms\" }\n"),
        ("trans.toml", "exec = \"/bin/sh\"\nargs = [\"-c\", \"sleep 0.2; exit 0\"]\nrestart = \"transient\"\n"),
    ]);
    node.wait_service("perm", secs(10.0), |s| s.restarts >= 2);
    // Ready, then a clean exit that is not restarted: it finished its work.
    let t = node.wait_service("trans", secs(10.0), |s| s.state == ServiceState::Done);
    assert_eq!(t.restarts, 0);
}

#[test]
fn transient_restarts_after_a_failure_temporary_does_not() {
    let node = start(&[
        ("trans.toml", "exec = \"/bin/sh\"\nargs = [\"-c\", \"sleep 0.2; exit 1\"]\nrestart = \"transient\"\nintensity = { max = 100, period = \"60s\" }\nbackoff = { initial = \"10ms\", max = \"10ms\" }\n"),
        ("temp.toml", "exec = \"/bin/sh\"\nargs = [\"-c\", \"sleep 0.2; exit 1\"]\nrestart = \"temporary\"\n"),
    ]);
    node.wait_service("trans", secs(10.0), |s| s.restarts >= 2);
    let t = node.wait_service("temp", secs(10.0), |s| s.state == ServiceState::Failed);
    assert_eq!(t.restarts, 0);
    assert_eq!(t.reason.as_deref(), Some("exited with status 1"));
}

#[test]
fn killed_service_is_restarted_and_ready_again() {
    let node = start(&[("svc.toml", &notify_service(0.1, ""))]);
    node.wait_console("TESSERA-READY", secs(10.0));
    let before = node.service("svc").pid.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(before as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let after = node.wait_service("svc", secs(10.0), |s| {
        s.state == ServiceState::Ready && s.pid != Some(before)
    });
    assert_eq!(after.restarts, 1);
    let exit = node
        .init_events("service exited")
        .into_iter()
        .find(|e| e.fields["pid"] == before)
        .unwrap();
    assert_eq!(field(&exit, "status"), "killed by SIGKILL");
}

#[test]
fn rest_for_one_restarts_dependents_one_for_one_does_not() {
    let node = start(&[
        (
            "base.toml",
            &notify_service(0.1, "escalation = \"rest_for_one\"\n"),
        ),
        ("mid.toml", &notify_service(0.1, "requires = [\"base\"]\n")),
        (
            "top.toml",
            "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nrequires = [\"mid\"]\n",
        ),
        ("solo.toml", &notify_service(0.1, "")),
        (
            "leaf.toml",
            "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nrequires = [\"solo\"]\n",
        ),
    ]);
    node.wait_console("TESSERA-READY", secs(10.0));
    let pids = |n: &str| node.service(n).pid.unwrap();
    let (base, mid, top, solo, leaf) = (
        pids("base"),
        pids("mid"),
        pids("top"),
        pids("solo"),
        pids("leaf"),
    );
    let kill = |p: u32| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap()
    };
    kill(base);
    kill(solo);
    node.wait_service("top", secs(10.0), |s| {
        s.state == ServiceState::Ready && s.pid.is_some_and(|p| p != top)
    });
    assert_ne!(
        node.wait_service("mid", secs(5.0), |s| s.state == ServiceState::Ready)
            .pid,
        Some(mid)
    );
    assert_ne!(node.service("base").pid, Some(base));
    node.wait_service("solo", secs(10.0), |s| {
        s.state == ServiceState::Ready && s.pid != Some(solo)
    });
    assert_eq!(
        node.service("leaf").pid,
        Some(leaf),
        "one_for_one: the dependent keeps running"
    );
    // Dependents restarted by escalation do not count as their own crashes.
    assert_eq!(node.service("mid").restarts, 0);
}

#[test]
fn failed_requirement_fails_dependents_with_a_reason() {
    let node = start(&[
        ("broken.toml", "exec = \"/nonexistent/binary\"\nintensity = { max = 1, period = \"10s\" }\nbackoff = { initial = \"10ms\", max = \"10ms\" }\n"),
        ("user.toml", "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nrequires = [\"broken\"]\n"),
    ]);
    let line = node.wait_console("TESSERA-READY", secs(10.0));
    assert!(line.ends_with("failed=2"), "{line}");
    let b = node.service("broken");
    assert!(b.reason.unwrap().contains("/nonexistent/binary"));
    assert_eq!(
        node.service("user").reason.as_deref(),
        Some("required service \"broken\" is failed")
    );
}

#[test]
fn shutdown_stops_in_reverse_order_with_grace_then_sigkill() {
    let node = start(&[
        ("base.toml", "exec = \"/bin/sh\"\nargs = [\"-c\", \"trap '' TERM; while :; do sleep 0.05; done\"]\nstop_grace = \"300ms\"\n"),
        ("mid.toml", "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nrequires = [\"base\"]\n"),
        ("top.toml", "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nafter = [\"mid\"]\n"),
    ]);
    node.wait_console("TESSERA-READY", secs(10.0));
    let (status, console) = node.poweroff();
    assert!(status.success());
    let stops: Vec<&str> = console
        .lines()
        .filter(|l| l.contains("stopping service"))
        .map(|l| {
            l.rsplit("service=")
                .next()
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(stops, vec!["top", "mid", "base"], "{console}");
    assert!(
        console.contains("service did not stop in time; killing grace_ms=300 service=base"),
        "{console}"
    );
    let base_exit = console
        .lines()
        .find(|l| l.contains("service exited") && l.contains("service=base"))
        .unwrap();
    assert!(base_exit.contains("killed by SIGKILL"), "{base_exit}");
}

#[test]
fn orphans_are_reaped() {
    // The service's child leaves a grandchild behind; it is re-parented to the supervisor.
    let node = start(&[(
        "forker.toml",
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"sh -c 'sleep 0.3 &' ; exec sleep 1000\"]\n",
    )]);
    node.wait_console("TESSERA-READY", secs(10.0));
    let deadline = std::time::Instant::now() + secs(5.0);
    while node.init_events("reaped orphan").is_empty() {
        assert!(std::time::Instant::now() < deadline, "no orphan reaped");
        std::thread::sleep(secs(0.05));
    }
    let zombies: Vec<u32> = tessera_init::shutdown::descendants(node.pid())
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
        })
        .collect();
    assert!(zombies.is_empty(), "zombies left: {zombies:?}");
}

#[test]
fn output_is_captured_as_structured_events() {
    let node = start(&[("talker.toml", "exec = \"/bin/sh\"\nargs = [\"-c\", \"echo plain words; echo '{\\\"level\\\":\\\"error\\\",\\\"msg\\\":\\\"disk slow\\\",\\\"ms\\\":250}'; echo to-stderr >&2; exec sleep 1000\"]\n")]);
    node.wait_console("TESSERA-READY", secs(10.0));
    let deadline = std::time::Instant::now() + secs(5.0);
    let events = loop {
        let ev: Vec<_> = node
            .logs()
            .into_iter()
            .filter(|e| e.service == "talker")
            .collect();
        if ev.len() >= 3 || std::time::Instant::now() > deadline {
            break ev;
        }
        std::thread::sleep(secs(0.05));
    };
    let plain = events
        .iter()
        .find(|e| e.message == "plain words")
        .expect("plain line");
    assert_eq!(plain.stream, Some(tessera_common::log::Stream::Stdout));
    assert!(plain.pid.is_some());
    let json = events
        .iter()
        .find(|e| e.message == "disk slow")
        .expect("json line");
    assert_eq!(json.level, tessera_common::log::Level::Error);
    assert_eq!(json.fields["ms"], 250);
    let err = events
        .iter()
        .find(|e| e.message == "to-stderr")
        .expect("stderr line");
    assert_eq!(err.stream, Some(tessera_common::log::Stream::Stderr));
    let out = node.cli(&["logs", "--json", "talker"]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines
        .iter()
        .all(|l| l["service"] == "talker" && l["time"].is_string()));
}

#[test]
fn logs_follow_streams_new_events() {
    let node = start(&[("ticker.toml", "exec = \"/bin/sh\"\nargs = [\"-c\", \"i=0; while :; do i=$((i+1)); echo tick-$i; sleep 0.1; done\"]\n")]);
    node.wait_console("TESSERA-READY", secs(10.0));
    let mut child = std::process::Command::new(harness::BIN)
        .args(["logs", "-f", "-n", "0", "ticker"])
        .env("TESSERA_CONTROL", node.socket())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let first = lines.next().unwrap().unwrap();
    let second = lines.next().unwrap().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let n = |l: &str| l.rsplit("tick-").next().unwrap().parse::<u32>().unwrap();
    assert_eq!(n(&second), n(&first) + 1, "{first} / {second}");
}

#[test]
fn malformed_service_file_is_skipped_with_file_and_line_and_the_rest_boot() {
    let node = start(&[
        ("good.toml", "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n"),
        (
            "bad.toml",
            "exec = \"/bin/true\"\n\nrestart = \"sometimes\"\n",
        ),
    ]);
    let line = node.wait_console("TESSERA-READY", secs(10.0));
    assert!(line.contains("services=1"), "{line}");
    let err = node.wait_console("service file skipped", secs(1.0));
    assert!(err.contains("bad.toml:3:11"), "{err}");
    let st = node.status();
    assert_eq!(st.services.len(), 1);
    assert!(
        st.node.problems[0].contains("bad.toml:3:11: unknown variant `sometimes`"),
        "{:?}",
        st.node.problems
    );
}

#[test]
fn watchdog_expiry_restarts_the_service() {
    let node = start(&[("wd.toml", "exec = \"/bin/sh\"\nready = \"notify\"\nwatchdog = \"300ms\"\nargs = [\"-c\", \"tessera notify READY=1; exec sleep 1000\"]\nbackoff = { initial = \"10ms\", max = \"10ms\" }\n")]);
    let s = node.wait_service("wd", secs(10.0), |s| s.restarts >= 1);
    assert!(
        s.reason
            .as_deref()
            .unwrap_or("watchdog expired")
            .contains("watchdog"),
        "{s:?}"
    );
    assert!(!node.init_events("watchdog expired").is_empty());
}

#[test]
fn watchdog_pings_keep_the_service_alive() {
    let node = start(&[("wd.toml", "exec = \"/bin/sh\"\nready = \"notify\"\nwatchdog = \"400ms\"\nargs = [\"-c\", \"tessera notify READY=1; while :; do tessera notify WATCHDOG=1; sleep 0.1; done\"]\n")]);
    node.wait_console("TESSERA-READY", secs(10.0));
    std::thread::sleep(secs(1.5));
    assert_eq!(node.service("wd").restarts, 0);
}

#[test]
fn operator_stop_start_restart_through_the_cli() {
    let node = start(&[("svc.toml", &notify_service(0.05, ""))]);
    node.wait_console("TESSERA-READY", secs(10.0));
    let first = node.service("svc").pid;
    let out = node.cli(&["service", "stop", "svc"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(node.service("svc").state, ServiceState::Stopped);
    let out = node.cli(&["service", "start", "svc"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().last(),
        Some("svc: ready")
    );
    let second = node.service("svc").pid;
    assert_ne!(first, second);
    let out = node.cli(&["service", "restart", "svc"]);
    assert!(out.status.success());
    let third = node.service("svc");
    assert_eq!(third.state, ServiceState::Ready);
    assert_ne!(third.pid, second);
    assert_eq!(third.restarts, 0, "operator actions are not crashes");
    let out = node.cli(&["service", "restart", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no service named \"nope\"; known: svc"));
}

#[test]
fn transient_oneshot_is_retried_until_it_succeeds_and_dependents_wait_for_it() {
    let flag = std::env::temp_dir().join(format!(
        "tessera-flaky-{}-{:?}",
        std::process::id(),
        std::time::Instant::now()
    ));
    let flaky = format!(
        "exec = \"/bin/sh\"\nkind = \"oneshot\"\nrestart = \"transient\"\nbackoff = {{ initial = \"10ms\", max = \"10ms\" }}\nargs = [\"-c\", \"if [ -e '{f}' ]; then exit 0; fi; touch '{f}'; exit 1\"]\n",
        f = flag.display()
    );
    let node = start(&[
        ("flaky.toml", &flaky),
        (
            "after.toml",
            "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nrequires = [\"flaky\"]\n",
        ),
    ]);
    node.wait_console("TESSERA-READY", secs(10.0));
    let _ = std::fs::remove_file(&flag);
    let f = node.service("flaky");
    assert_eq!((f.state, f.restarts), (ServiceState::Done, 1));
    assert_eq!(node.service("after").state, ServiceState::Ready);
}

#[test]
fn sigterm_to_the_subreaper_stops_services_in_order_and_exits() {
    let node = start(&[
        ("a.toml", "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n"),
        (
            "b.toml",
            "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nrequires = [\"a\"]\n",
        ),
    ]);
    node.wait_console("TESSERA-READY", secs(10.0));
    let pids: Vec<u32> = ["a", "b"]
        .iter()
        .map(|n| node.service(n).pid.unwrap())
        .collect();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(node.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    node.wait_console("all services stopped", secs(10.0));
    let console = node.console();
    assert!(
        console.contains("shutdown requested by signal mode=poweroff signal=SIGTERM"),
        "{console}"
    );
    let stopped = |svc: &str| {
        console
            .lines()
            .position(|l| l.contains("stopping service") && l.contains(&format!("service={svc} ")))
            .unwrap()
    };
    let (a, b) = (stopped("a"), stopped("b"));
    assert!(b < a, "{console}");
    for p in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{p}")).exists()
                || std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .is_ok_and(|s| s.contains(") Z")),
            "service {p} still running"
        );
    }
}

#[test]
fn ready_then_clean_exit_is_done_and_what_requires_it_starts() {
    // READY=1 and exit 0 arrive together: the supervisor must see the READY first.
    let node = start(&[
        ("setup.toml", "exec = \"/bin/sh\"\nready = \"notify\"\nrestart = \"transient\"\nargs = [\"-c\", \"tessera notify READY=1 STATUS=configured; exit 0\"]\n"),
        ("user.toml", "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nrequires = [\"setup\"]\n"),
    ]);
    let line = node.wait_console("TESSERA-READY", secs(10.0));
    assert!(
        line.contains("services=2") && line.ends_with("failed=0"),
        "{line}"
    );
    let setup = node.service("setup");
    assert_eq!(
        (setup.state, setup.status.as_deref()),
        (ServiceState::Done, Some("configured"))
    );
    assert_eq!(node.service("user").state, ServiceState::Ready);
}

/// A stand-in for certmgr's socket: answers child-token requests with numbered tokens, and
/// refuses subsystem "forbidden".
fn fake_certmgr(runtime: &std::path::Path) {
    use std::io::{BufRead, Write};
    std::fs::create_dir_all(runtime).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(runtime.join("certmgr.sock")).unwrap();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            let _ = std::io::BufReader::new(&stream).read_line(&mut line);
            let req: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            let reply = if req["subsystem"] == "forbidden" {
                serde_json::json!({"error": "capability_missing", "reason": "no capability for forbidden"})
            } else {
                assert_eq!(req["op"], "child-token");
                serde_json::json!({"token": format!("tok-{n}-{}-{}", req["subsystem"].as_str().unwrap_or(""), req["agent_id"].as_str().unwrap_or("")), "expires_s": 300})
            };
            let _ = writeln!(stream, "{reply}");
        }
    });
}

#[test]
fn service_with_identity_gets_its_token_on_fd_3_and_nowhere_else() {
    let node = harness::start_with(fake_certmgr, &[(
        "hub.toml",
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"read t <&3; echo got=$t fd=$TESSERA_IDENTITY_FD; exec sleep 1000\"]\nidentity = { subsystem = \"hub\" }\n",
    )]);
    node.wait_console("TESSERA-READY", secs(10.0));
    let deadline = std::time::Instant::now() + secs(5.0);
    let line = loop {
        if let Some(e) = node
            .logs()
            .into_iter()
            .find(|e| e.service == "hub" && e.message.starts_with("got="))
        {
            break e.message;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the service never printed its token"
        );
        std::thread::sleep(secs(0.05));
    };
    assert_eq!(line, "got=tok-0-hub-hub fd=3");
    let pid = node.service("hub").pid.unwrap();
    for f in ["environ", "cmdline"] {
        let text = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/{f}")).unwrap())
            .into_owned();
        assert!(!text.contains("tok-0"), "token leaked into /proc/{pid}/{f}");
    }
}

#[test]
fn certmgr_refusal_fails_the_start_with_its_reason() {
    let node = harness::start_with(fake_certmgr, &[(
        "bad.toml",
        "exec = \"/bin/true\"\nidentity = { subsystem = \"forbidden\", agent_id = \"x\" }\nintensity = { max = 0, period = \"10s\" }\n",
    )]);
    let s = node.wait_service("bad", secs(10.0), |s| s.state == ServiceState::Failed);
    assert!(s
        .reason
        .unwrap_or_default()
        .contains("certmgr refused an identity for subsystem \"forbidden\": capability_missing"));
}
