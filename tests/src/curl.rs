//! `curl` against a node's API through a forwarded port: the name resolved to 127.0.0.1, the
//! cluster CA pinned, and optionally the operator certificate `tessera ca init` wrote.

use std::path::PathBuf;
use std::process::{Command, Output};

pub struct Curl {
    /// The forwarded host port.
    pub port: u16,
    /// The CA's state directory (ca.pem, admin.pem, admin.key).
    pub state: PathBuf,
    /// The name the node API's certificate carries (`node.<hostname>`).
    pub name: String,
}

impl Curl {
    /// `curl` against https://<name>:<port><path>; `with_cert` adds the operator certificate.
    pub fn run(&self, with_cert: bool, extra: &[&str], path: &str) -> Output {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "20", "--resolve"])
            .arg(format!("{}:{}:127.0.0.1", self.name, self.port))
            .arg("--cacert")
            .arg(self.state.join("ca.pem"));
        if with_cert {
            cmd.arg("--cert")
                .arg(self.state.join("admin.pem"))
                .arg("--key")
                .arg(self.state.join("admin.key"));
        }
        cmd.args(extra)
            .arg(format!("https://{}:{}{path}", self.name, self.port))
            .output()
            .expect("run curl")
    }

    /// [`Curl::run`] with the operator certificate; fails the test if curl fails.
    pub fn ok(&self, extra: &[&str], path: &str) -> String {
        let out = self.run(true, extra, path);
        assert!(
            out.status.success(),
            "curl {path} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The body and the HTTP status of a request with the operator certificate.
    pub fn status(&self, extra: &[&str], path: &str) -> (String, u16) {
        let mut args = extra.to_vec();
        args.extend(["-w", "\n%{http_code}"]);
        let text = self.ok(&args, path);
        let (body, code) = text
            .trim_end()
            .rsplit_once('\n')
            .unwrap_or(("", text.trim()));
        (body.to_string(), code.trim().parse().unwrap_or(0))
    }
}
