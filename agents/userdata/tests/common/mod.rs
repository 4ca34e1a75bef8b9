//! Test helpers: a faithful IMDSv2 server, a plain HTTP file server, image builders.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub status: u16,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the IMDS server does; shared with the test so that it can change it mid-run.
#[derive(Default)]
pub struct ImdsState {
    /// `None`: the instance has no user-data (404).
    pub user_data: Mutex<Option<Vec<u8>>>,
    /// Answer this many requests with 503 first.
    pub fail_first: AtomicU32,
    /// Forget every token issued so far, once (the next GET gets 401).
    pub revoke_tokens_once: AtomicBool,
    tokens: Mutex<Vec<(String, Instant)>>,
    counter: AtomicU32,
    pub seen: Mutex<Vec<Seen>>,
}

/// An IMDSv2 server on 127.0.0.1, speaking the protocol as EC2 documents it:
/// - `PUT /latest/api/token` needs `X-aws-ec2-metadata-token-ttl-seconds` (1-21600) → the
///   token; missing or bad TTL → 400; `X-Forwarded-For` → 403; other methods → 405;
/// - `GET /latest/user-data` needs a valid `X-aws-ec2-metadata-token` → 401 without; 404 when
///   the instance has no user-data;
/// - anything else → 404.
pub struct Imds {
    pub state: Arc<ImdsState>,
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl Imds {
    pub fn start(user_data: Option<&[u8]>) -> Imds {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        Self::serve(listener, port, user_data, Duration::ZERO)
    }

    /// Picks a free port now and starts listening on it only after `delay` (a metadata
    /// service that comes up late): connections are refused until then.
    pub fn start_late(user_data: Option<&[u8]>, delay: Duration) -> Imds {
        let port = free_port();
        let state = Arc::new(ImdsState::default());
        *state.user_data.lock().unwrap() = user_data.map(<[u8]>::to_vec);
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
            accept_loop(listener, s, st);
        });
        Imds { state, port, stop }
    }

    fn serve(listener: TcpListener, port: u16, user_data: Option<&[u8]>, _: Duration) -> Imds {
        let state = Arc::new(ImdsState::default());
        *state.user_data.lock().unwrap() = user_data.map(<[u8]>::to_vec);
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        std::thread::spawn(move || accept_loop(listener, s, st));
        Imds { state, port, stop }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

impl Drop for Imds {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn accept_loop(listener: TcpListener, state: Arc<ImdsState>, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(conn) = conn else { continue };
        let state = state.clone();
        std::thread::spawn(move || handle(conn, &state));
    }
}

/// Method, path and headers of a request.
pub type Head = (String, String, Vec<(String, String)>);

/// Reads one request head.
pub fn read_request(conn: &mut TcpStream) -> Option<Head> {
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut b = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut b).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some((method, path, headers))
}

pub fn respond(conn: &mut TcpStream, status: u16, reason: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\nServer: EC2ws\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
}

fn handle(mut conn: TcpStream, state: &ImdsState) {
    let Some((method, path, headers)) = read_request(&mut conn) else {
        return;
    };
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let (status, reason, body): (u16, &str, Vec<u8>) = if state
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        (503, "Service Unavailable", b"busy".to_vec())
    } else {
        match (method.as_str(), path.as_str()) {
            ("PUT", "/latest/api/token") => {
                let ttl = header("X-aws-ec2-metadata-token-ttl-seconds")
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|t| (1..=21600).contains(t));
                if header("X-Forwarded-For").is_some() {
                    (403, "Forbidden", Vec::new())
                } else if let Some(ttl) = ttl {
                    let n = state.counter.fetch_add(1, Ordering::SeqCst);
                    let token = format!("AQAEAtoken{n}x{}==", std::process::id());
                    state
                        .tokens
                        .lock()
                        .unwrap()
                        .push((token.clone(), Instant::now() + Duration::from_secs(ttl)));
                    (200, "OK", token.into_bytes())
                } else {
                    (400, "Bad Request", Vec::new())
                }
            }
            (_, "/latest/api/token") => (405, "Method Not Allowed", Vec::new()),
            ("GET", "/latest/user-data") => {
                if state.revoke_tokens_once.swap(false, Ordering::SeqCst) {
                    state.tokens.lock().unwrap().clear();
                }
                let valid = header("X-aws-ec2-metadata-token").is_some_and(|t| {
                    state
                        .tokens
                        .lock()
                        .unwrap()
                        .iter()
                        .any(|(k, exp)| *k == t && *exp > Instant::now())
                });
                if !valid {
                    (401, "Unauthorized", Vec::new())
                } else {
                    match state.user_data.lock().unwrap().clone() {
                        Some(d) => (200, "OK", d),
                        None => (404, "Not Found", b"<html>404 - Not Found</html>".to_vec()),
                    }
                }
            }
            _ => (404, "Not Found", Vec::new()),
        }
    };
    state.seen.lock().unwrap().push(Seen {
        method,
        path,
        headers: headers.clone(),
        status,
    });
    respond(&mut conn, status, reason, &body);
}

/// A server that answers every connection with `reply` and closes it.
pub fn garbage_server(reply: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut b = [0u8; 512];
            let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = conn.read(&mut b);
            let _ = conn.write_all(reply);
        }
    });
    port
}

/// A plain HTTP server for one path; other paths 404.
pub fn file_server(path: &'static str, body: Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            match read_request(&mut conn) {
                Some((_, p, _)) if p == path => respond(&mut conn, 200, "OK", &body),
                Some(_) => respond(&mut conn, 404, "Not Found", b""),
                None => {}
            }
        }
    });
    port
}

/// Runs a tool, failing the test with the install hint when it is missing.
pub fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {cmd}: {e}; install it (scripts/install-deps.sh: dosfstools, mtools, genisoimage, e2fsprogs)")
    });
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A NoCloud volume (`seed.img` in `dir`): FAT labelled CIDATA with `user_data` and an empty
/// meta-data.
pub fn nocloud_seed(dir: &Path, user_data: &str) -> PathBuf {
    fat_image(
        dir,
        "seed.img",
        2,
        &["-n", "CIDATA"],
        &[("user-data", user_data.as_bytes()), ("meta-data", b"")],
    )
}

/// A FAT image of `size_mib` MiB made by mkfs.vfat, with files copied in by mcopy.
pub fn fat_image(
    dir: &Path,
    name: &str,
    size_mib: u64,
    mkfs_args: &[&str],
    files: &[(&str, &[u8])],
) -> PathBuf {
    let img = dir.join(name);
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(size_mib * 1024 * 1024).unwrap();
    drop(f);
    let mut args: Vec<&str> = mkfs_args.to_vec();
    let img_s = img.to_str().unwrap().to_string();
    args.push(&img_s);
    run("mkfs.vfat", &args);
    for (fname, data) in files {
        let src = dir.join(format!("src-{name}-{fname}"));
        std::fs::write(&src, data).unwrap();
        run(
            "mcopy",
            &["-i", &img_s, src.to_str().unwrap(), &format!("::{fname}")],
        );
    }
    img
}

/// An ISO 9660 image made by genisoimage.
pub fn iso_image(dir: &Path, name: &str, extra: &[&str], files: &[(&str, &[u8])]) -> PathBuf {
    let content = dir.join(format!("iso-{name}"));
    std::fs::create_dir_all(&content).unwrap();
    for (fname, data) in files {
        std::fs::write(content.join(fname), data).unwrap();
    }
    let img = dir.join(name);
    let mut args: Vec<&str> = vec!["-quiet", "-o", img.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push(content.to_str().unwrap());
    run("genisoimage", &args);
    img
}
