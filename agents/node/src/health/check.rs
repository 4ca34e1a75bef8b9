//! Running one health check: a TCP connect, an HTTP GET (2xx or 3xx passes), a program that
//! must exit 0, or the service's main process being alive — each bounded by its timeout.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::spec::{HealthSpec, Target};

/// Ok(detail) when healthy, Err(reason) when not.
pub async fn run(spec: &HealthSpec, pid: Option<u32>) -> Result<String, String> {
    let work = async {
        match &spec.target {
            Target::Process => process(pid),
            Target::Tcp { addr } => TcpStream::connect(addr)
                .await
                .map(|_| format!("connected to {addr}"))
                .map_err(|e| format!("connect to {addr}: {e}")),
            Target::Http { addr, host, path } => http(*addr, host, path).await,
            Target::Exec { argv } => exec(argv).await,
        }
    };
    match tokio::time::timeout(spec.timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(spec.timeout)
        )),
    }
}

fn process(pid: Option<u32>) -> Result<String, String> {
    let pid = pid.ok_or("the service has no running process")?;
    // kill(pid, 0) checks that the process exists without signalling it.
    let alive = i32::try_from(pid)
        .ok()
        .is_some_and(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok());
    if alive {
        Ok(format!("process {pid} is alive"))
    } else {
        Err(format!("process {pid} is gone"))
    }
}

/// HTTP/1.0 GET, reading only the status line.
async fn http(addr: std::net::SocketAddr, host: &str, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: tessera-health\r\n\r\n");
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut buf = vec![0u8; 256];
    let mut len = 0;
    while len < buf.len() && !buf[..len].contains(&b'\n') {
        match s.read(&mut buf[len..]).await {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) => return Err(format!("read from {addr}: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&buf[..len]);
    let line = line.lines().next().unwrap_or_default();
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET http://{host}{path}: not an HTTP reply ({line:?})"))?;
    if (200..400).contains(&code) {
        Ok(format!("GET http://{host}{path}: {code}"))
    } else {
        Err(format!("GET http://{host}{path}: {code}"))
    }
}

async fn exec(argv: &[String]) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let status = cmd
        .status()
        .await
        .map_err(|e| format!("run {}: {e}", argv[0]))?;
    if status.success() {
        Ok(format!("{} exited 0", argv[0]))
    } else {
        Err(format!("{} failed: {status}", argv[0]))
    }
}

/// How long to wait before the first check of a service, spread so checks do not align.
pub fn first_delay(index: usize) -> Duration {
    Duration::from_millis(200 * (index as u64 % 10))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spec(target: Target) -> HealthSpec {
        HealthSpec {
            target,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn tcp_passes_on_a_listener_and_fails_without_one() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        assert!(run(&spec(Target::Tcp { addr }), None).await.is_ok());
        drop(l);
        let e = run(&spec(Target::Tcp { addr }), None).await.unwrap_err();
        assert!(e.contains("connect"), "{e}");
    }

    #[tokio::test]
    async fn http_reads_the_status_code() {
        for (reply, ok) in [
            ("HTTP/1.1 200 OK\r\n\r\n", true),
            ("HTTP/1.1 503 Busy\r\n\r\n", false),
        ] {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut s, _) = l.accept().await.unwrap();
                let mut b = [0u8; 512];
                let _ = s.read(&mut b).await;
                let _ = s.write_all(reply.as_bytes()).await;
            });
            let r = run(
                &spec(Target::Http {
                    addr,
                    host: addr.to_string(),
                    path: "/healthz".into(),
                }),
                None,
            )
            .await;
            assert_eq!(r.is_ok(), ok, "{r:?}");
        }
    }

    #[tokio::test]
    async fn exec_needs_exit_zero_and_process_needs_a_live_pid() {
        assert!(run(
            &spec(Target::Exec {
                argv: vec!["/bin/true".into()]
            }),
            None
        )
        .await
        .is_ok());
        assert!(run(
            &spec(Target::Exec {
                argv: vec!["/bin/false".into()]
            }),
            None
        )
        .await
        .is_err());
        assert!(run(&spec(Target::Process), Some(std::process::id()))
            .await
            .is_ok());
        assert!(run(&spec(Target::Process), None).await.is_err());
    }

    #[tokio::test]
    async fn a_check_that_hangs_fails_at_its_timeout() {
        let mut s = spec(Target::Exec {
            argv: vec!["/bin/sleep".into(), "5".into()],
        });
        s.timeout = Duration::from_millis(200);
        let e = run(&s, None).await.unwrap_err();
        assert!(e.contains("no answer within"), "{e}");
    }
}
