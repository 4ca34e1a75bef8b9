//! A Tessera CA on the host for the identity tests: `tessera ca init` in a fresh state
//! directory under out/e2e-ca/, `tessera ca serve` on 127.0.0.1 (the guest reaches it as
//! 10.0.2.2 through QEMU's user network; `init` puts 10.0.2.2 in the server certificate), and
//! the operator's commands (`token`, `fingerprint`, `list`, `audit`) run the way an operator
//! runs them. Multi-VM tests serve it inside their private network instead
//! ([`HostCa::serve_in`]: the bridge's address, VMs on a private bridge cannot reach 10.0.2.2).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{repo_root, tessera_bin, PrivateNet};

pub struct HostCa {
    pub state: PathBuf,
    pub port: u16,
    pub fingerprint: String,
    /// Lifetime of the certificates it issues (`tessera ca serve --lifetime`); the CA's
    /// default when `None`.
    pub lifetime: Option<String>,
    server: Option<Child>,
}

impl HostCa {
    /// A new CA (cluster `prod`) on a free port, not serving yet.
    pub fn init(name: &str) -> HostCa {
        HostCa::init_with_sans(name, &[])
    }

    /// [`HostCa::init`] with these names in the CA's HTTPS certificate (default: localhost,
    /// 127.0.0.1, 10.0.2.2).
    pub fn init_with_sans(name: &str, sans: &[&str]) -> HostCa {
        let state = repo_root()
            .join("out/e2e-ca")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        std::fs::create_dir_all(state.parent().expect("state has a parent"))
            .expect("create out/e2e-ca");
        let out = Command::new(tessera_bin())
            .args(["ca", "init", "--cluster", "prod", "--state"])
            .arg(&state)
            .args(sans.iter().flat_map(|s| ["--san", s]))
            .output()
            .expect("run tessera ca init");
        assert!(
            out.status.success(),
            "tessera ca init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut ca = HostCa {
            state,
            port,
            fingerprint: String::new(),
            lifetime: None,
            server: None,
        };
        ca.fingerprint = ca.run(&["fingerprint"]);
        ca
    }

    /// A new CA, serving.
    pub fn start(name: &str) -> HostCa {
        let mut ca = HostCa::init(name);
        ca.serve();
        ca
    }

    /// `tessera ca serve --listen 127.0.0.1:<port>`, waiting until it accepts connections.
    pub fn serve(&mut self) {
        let port = self.port;
        self.serve_with(
            Command::new(tessera_bin()),
            &format!("127.0.0.1:{port}"),
            "",
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
    }

    /// `tessera ca serve --listen <ip>:<port>` inside `net`'s namespace (whose bridge has
    /// `ip`), waiting until it accepts connections there.
    pub fn serve_in(&mut self, net: &PrivateNet, ip: &str) {
        let probe = format!("exec 3<>/dev/tcp/{ip}/{}", self.port);
        // `ip netns exec` execs the program: killing the child kills the CA.
        self.serve_with(
            net.command(&tessera_bin()),
            &format!("{ip}:{}", self.port),
            &format!(" in {}", net.netns),
            || {
                net.command(Path::new("/bin/bash"))
                    .args(["-c", &probe])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            },
        );
    }

    /// Runs `tessera` (`cmd`) as `ca serve --listen addr`, its log beside the state, and waits
    /// up to 30 s until `listening`; `place` completes the failure message.
    fn serve_with(
        &mut self,
        mut cmd: Command,
        addr: &str,
        place: &str,
        listening: impl Fn() -> bool,
    ) {
        let log = std::fs::File::create(self.state.with_extension("serve.log"))
            .expect("create the CA's log");
        let child = cmd
            .args(["ca", "serve", "--state"])
            .arg(&self.state)
            .args(["--listen", addr])
            .args(
                self.lifetime
                    .iter()
                    .flat_map(|l| ["--lifetime", l.as_str()]),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run tessera ca serve");
        self.server = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !listening() {
            assert!(
                Instant::now() < deadline,
                "the CA never listened on {addr}{place}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `tessera ca <args> --state <dir>` and returns its stdout; fails the test if it fails.
    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new(tessera_bin())
            .arg("ca")
            .args(args)
            .arg("--state")
            .arg(&self.state)
            .output()
            .expect("run tessera ca");
        assert!(
            out.status.success(),
            "tessera ca {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A node token: `tessera ca token --node <node> --subsystem certmgr` (the default
    /// capabilities: the default image's agents).
    pub fn token(&self, node: &str) -> String {
        self.run(&["token", "--node", node, "--subsystem", "certmgr"])
    }

    /// The kernel arguments PXE would deliver for `node` with `token`.
    pub fn kernel_args(&self, token: &str, node: &str) -> Vec<String> {
        vec![
            format!("tessera.ca=https://10.0.2.2:{}", self.port),
            format!("tessera.ca_fp={}", self.fingerprint),
            format!("tessera.token={token}"),
            format!("tessera.hostname={node}"),
        ]
    }

    /// `tessera ca list`.
    pub fn list(&self) -> String {
        self.run(&["list"])
    }

    /// `tessera ca audit`.
    pub fn audit(&self) -> String {
        self.run(&["audit"])
    }
}

impl Drop for HostCa {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.state);
    }
}
