//! Container inputs for the end-to-end tests: an OCI runtime bundle made from Debian's
//! busybox-static (no network), its digest, and a small HTTP server that hands it to nodes
//! the way an image registry or artifact store would (`image = "http://10.0.2.2:PORT/…"`).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::host;

/// A bundle tar in `dir`: busybox and its applets as rootfs/, config.json from the agent's
/// default spec running `echo default`.
pub fn busybox_bundle(dir: &Path) -> PathBuf {
    bundle_with(dir, &[], &[])
}

/// [`busybox_bundle`] with the node's static `tessera` binary as /sbin/tessera: a container
/// that runs a component of the hub (`tessera hub component serve`).
pub fn component_bundle(dir: &Path) -> PathBuf {
    bundle_with(dir, &[(crate::tessera_node_bin(), "sbin/tessera")], &[])
}

/// A busybox bundle with extra host files copied into the rootfs (`(source, path in rootfs)`)
/// and extra busybox applets in /bin.
pub fn bundle_with(dir: &Path, extra: &[(PathBuf, &str)], applets: &[&str]) -> PathBuf {
    let root = dir.join("bundle");
    let rootfs = root.join("rootfs");
    for d in ["bin", "proc", "dev", "sys", "etc", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    for (source, path) in extra {
        let target = rootfs.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::copy(source, &target)
            .unwrap_or_else(|e| panic!("copy {} into the bundle: {e}", source.display()));
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .expect("/bin/busybox (Debian's busybox-static, installed by scripts/install-deps.sh)");
    let base = [
        "sh", "echo", "cat", "ps", "hostname", "ls", "sleep", "true", "id",
    ];
    for applet in base.iter().chain(applets) {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    let mut spec = tessera_container::spec::default_spec();
    if let Some(p) = spec.process_mut() {
        p.set_args(Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo default".into(),
        ]));
    }
    if let Some(r) = spec.root_mut() {
        r.set_readonly(Some(false));
    }
    std::fs::write(
        root.join("config.json"),
        serde_json::to_vec_pretty(&spec).unwrap(),
    )
    .unwrap();
    let tar = dir.join("bundle.tar");
    host(
        "tar",
        &[
            "-C",
            root.to_str().unwrap(),
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            "-cf",
            tar.to_str().unwrap(),
            "config.json",
            "rootfs",
        ],
    );
    let len = std::fs::metadata(&tar).unwrap().len();
    assert_eq!(len % 512, 0, "a tar is whole 512-byte blocks");
    tar
}

/// `sha256:<hex>` of a file, by `sha256sum`.
pub fn sha256_of(file: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(file)
        .output()
        .expect("run sha256sum");
    assert!(
        out.status.success(),
        "sha256sum {}: {out:?}",
        file.display()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    format!(
        "sha256:{}",
        text.split_whitespace().next().unwrap_or_default()
    )
}

/// Serves one file at `/<its file name>` over HTTP/1.1 on 127.0.0.1 (10.0.2.2 from a VM on
/// QEMU's user network) until dropped; everything else is 404. Counts the files it sent.
pub struct FileServer {
    pub port: u16,
    pub served: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FileServer {
    pub fn start(file: &Path) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the file server");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let bytes = std::fs::read(file).expect("read the served file");
        let path = format!("/{}", file.file_name().unwrap().to_string_lossy());
        let served = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, halt) = (served.clone(), stop.clone());
        std::thread::spawn(move || {
            while !halt.load(Ordering::SeqCst) {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    continue;
                };
                let _ = s.set_nonblocking(false);
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                if line.starts_with(&format!("GET {path} ")) {
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        bytes.len()
                    );
                    let _ = s.write_all(&bytes);
                    count.fetch_add(1, Ordering::SeqCst);
                } else {
                    let _ = s.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            }
        });
        FileServer { port, served, stop }
    }

    /// The URL a VM on QEMU's user network reaches the file at.
    pub fn url_for_vm(&self, file: &Path) -> String {
        format!(
            "http://10.0.2.2:{}/{}",
            self.port,
            file.file_name().unwrap().to_string_lossy()
        )
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
