//! Runs `tessera init --subreaper` on the host with a directory of service files, and gives
//! the tests what a user would look at: the console, `status`, the log.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tessera_common::control::{Client, Reply, Request, ServiceStatus, Status};
use tessera_common::log::LogEvent;

pub const BIN: &str = env!("CARGO_BIN_EXE_tessera");

pub struct Node {
    child: Child,
    pub dir: tempfile::TempDir,
    console: Arc<Mutex<String>>,
}

/// Writes `services` as (file name, TOML text) and starts a supervisor on them.
pub fn start(services: &[(&str, &str)]) -> Node {
    start_with(|_| {}, services)
}

/// Like `start`, running `prepare` on the runtime directory first (to put fake peers there).
pub fn start_with(prepare: impl FnOnce(&Path), services: &[(&str, &str)]) -> Node {
    let dir = tempfile::tempdir().unwrap();
    prepare(&dir.path().join("run"));
    let sdir = dir.path().join("services");
    std::fs::create_dir(&sdir).unwrap();
    for (name, text) in services {
        std::fs::write(sdir.join(name), text).unwrap();
    }
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new(BIN)
        .args(["init", "--subreaper", "--services"])
        .arg(&sdir)
        .arg("--runtime")
        .arg(dir.path().join("run"))
        .env("PATH", path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let console = Arc::new(Mutex::new(String::new()));
    let out = child.stdout.take().unwrap();
    let sink = console.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let mut c = sink.lock().unwrap();
            c.push_str(&line);
            c.push('\n');
        }
    });
    let node = Node {
        child,
        dir,
        console,
    };
    // Until the socket answers, not merely exists: it is there from bind(), before listen(),
    // and a connect in between is refused (make test once met that).
    let deadline = Instant::now() + Duration::from_secs(10);
    while Client::call(&node.socket(), &Request::Status).is_err() {
        assert!(
            Instant::now() < deadline,
            "control socket never answered; console:\n{}",
            node.console()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    node
}

impl Node {
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/control.sock")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn console(&self) -> String {
        self.console.lock().unwrap().clone()
    }

    /// Waits for a console line containing `needle` and returns it.
    pub fn wait_console(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.console().lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no console line with {needle:?} within {timeout:?}; console:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn status(&self) -> Status {
        match Client::call(&self.socket(), &Request::Status).unwrap() {
            Reply::Status(s) => s,
            other => panic!("{other:?}"),
        }
    }

    pub fn service(&self, name: &str) -> ServiceStatus {
        self.status()
            .services
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no service {name}"))
    }

    /// Polls until `pred` holds for the service.
    pub fn wait_service(
        &self,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&ServiceStatus) -> bool,
    ) -> ServiceStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.service(name);
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "service {name} never reached the expected state; last {s:?}\nconsole:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> Vec<LogEvent> {
        let mut c = Client::send(
            &self.socket(),
            &Request::Logs {
                follow: false,
                service: None,
                tail: None,
            },
        )
        .unwrap();
        let mut out = Vec::new();
        while let Some(Reply::Event(e)) = c.next_reply().unwrap() {
            out.push(e);
        }
        out
    }

    /// Supervisor events ("init") with this message, as (service field, event).
    pub fn init_events(&self, message: &str) -> Vec<LogEvent> {
        self.logs()
            .into_iter()
            .filter(|e| e.service == "init" && e.message == message)
            .collect()
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(args)
            .env("TESSERA_CONTROL", self.socket())
            .output()
            .unwrap()
    }

    /// Asks for a poweroff and waits for the supervisor to exit.
    pub fn poweroff(mut self) -> (std::process::ExitStatus, String) {
        let out = self.cli(&["poweroff"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                return (st, self.console());
            }
            assert!(
                Instant::now() < deadline,
                "supervisor did not exit after poweroff:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // The services would outlive a killed supervisor: kill them too.
        for pid in tessera_init::shutdown::descendants(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn field<'a>(e: &'a LogEvent, key: &str) -> &'a str {
    e.fields.get(key).and_then(|v| v.as_str()).unwrap_or("")
}

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}
