//! `tessera identity scan`: looks through the node's file systems and every process's
//! environment and command line for private keys (PEM markers, PKCS#8 DER of RSA and P-256
//! keys) and for secrets given on stdin (tokens), and names every file that holds one. An
//! operator's audit that keys and tokens stayed in the kernel; the end-to-end tests run it.
//!
//! This program's own executable is skipped (and reported as skipped): it embeds a public
//! throwaway probe key (`tessera_identity::keys::KeyMode::detect`) and PEM parsers.

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A byte string to look for, and the name reported (never the bytes).
#[derive(Debug, Clone)]
pub struct Pattern {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Private-key markers: PEM armour and the start of a PKCS#8 PrivateKeyInfo (version 0 and
/// the algorithm) for RSA and for P-256.
pub fn key_patterns() -> Vec<Pattern> {
    vec![
        Pattern {
            name: "PEM private key".into(),
            bytes: b"PRIVATE KEY-----".to_vec(),
        },
        Pattern {
            name: "PKCS#8 RSA key (DER)".into(),
            bytes: vec![
                0x02, 0x01, 0x00, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01,
                0x01, 0x01, 0x05, 0x00, 0x04,
            ],
        },
        Pattern {
            name: "PKCS#8 P-256 key (DER)".into(),
            bytes: vec![
                0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
                0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x04,
            ],
        },
    ]
}

/// Secrets read from `input`, one per line, named `secret #1`, `secret #2`, …
pub fn secret_patterns(input: &str) -> Vec<Pattern> {
    input
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, l)| Pattern {
            name: format!("secret #{}", i + 1),
            bytes: l.as_bytes().to_vec(),
        })
        .collect()
}

#[derive(Debug, Default)]
pub struct ScanReport {
    /// (path, pattern name)
    pub hits: Vec<(PathBuf, String)>,
    pub files: usize,
    pub proc_files: usize,
    pub skipped: Vec<PathBuf>,
}

/// Largest file read whole; bigger ones are read up to this size (images and modules are
/// smaller on a node).
const MAX_FILE: u64 = 256 * 1024 * 1024;

/// Scans the files under `roots` (not following symlinks, staying off /proc, /sys and device
/// nodes) and, with `processes`, /proc/*/environ and /proc/*/cmdline.
pub fn scan(roots: &[PathBuf], patterns: &[Pattern], processes: bool) -> ScanReport {
    let mut report = ScanReport::default();
    let me = std::fs::metadata("/proc/self/exe")
        .ok()
        .map(|m| (m.dev(), m.ino()));
    let mut seen = HashSet::new();
    let mut stack: Vec<PathBuf> = roots.to_vec();
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        if meta.is_dir() {
            if path == Path::new("/proc") || path == Path::new("/sys") {
                continue;
            }
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        } else if meta.is_file() {
            if Some((meta.dev(), meta.ino())) == me {
                report.skipped.push(path);
                continue;
            }
            report.files += 1;
            if let Ok(bytes) = read_limited(&path) {
                for p in patterns {
                    if contains(&bytes, &p.bytes) {
                        report.hits.push((path.clone(), p.name.clone()));
                    }
                }
            }
        }
    }
    if processes {
        if let Ok(entries) = std::fs::read_dir("/proc") {
            let mut pids: Vec<u32> = entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect();
            pids.sort_unstable();
            let own = std::process::id();
            for pid in pids {
                for name in ["environ", "cmdline"] {
                    let path = PathBuf::from(format!("/proc/{pid}/{name}"));
                    let Ok(bytes) = std::fs::read(&path) else {
                        continue;
                    };
                    report.proc_files += 1;
                    for p in patterns {
                        // This scan's own command line names no secret (they come on stdin),
                        // but skip it anyway: it is not a process of the node.
                        if pid != own && contains(&bytes, &p.bytes) {
                            report.hits.push((path.clone(), p.name.clone()));
                        }
                    }
                }
            }
        }
    }
    report
}

fn read_limited(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE)
        .read_to_end(&mut out)?;
    Ok(out)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_pem_pkcs8_and_secrets_but_not_in_clean_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("clean"), b"nothing here").unwrap();
        std::fs::write(
            dir.path().join("pem"),
            b"-----BEGIN PRIVATE KEY-----\nMIG...\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let p256 =
            crate::keygen::ChildKey::generate(tessera_identity::keys::KeyMode::EcdsaP256, None)
                .unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let mut der = b"junk".to_vec();
        der.extend_from_slice(p256.pkcs8());
        std::fs::write(dir.path().join("sub/der"), &der).unwrap();
        std::fs::write(dir.path().join("tok"), b"x tok-SECRET-123 y").unwrap();
        let mut patterns = key_patterns();
        patterns.extend(secret_patterns("\ntok-SECRET-123\n"));
        let report = scan(&[dir.path().to_path_buf()], &patterns, false);
        assert_eq!(report.files, 4);
        let mut hits: Vec<(String, String)> = report
            .hits
            .iter()
            .map(|(p, n)| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    n.clone(),
                )
            })
            .collect();
        hits.sort();
        assert_eq!(
            hits,
            vec![
                ("der".into(), "PKCS#8 P-256 key (DER)".into()),
                ("pem".into(), "PEM private key".into()),
                ("tok".into(), "secret #1".into()),
            ]
        );
    }

    #[test]
    fn process_environments_and_command_lines_are_scanned() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("LEAK", "tok-IN-ENV-42")
            .spawn()
            .unwrap();
        // vfork-based spawn returns once the child has dropped our memory, a moment before
        // the kernel has set up the new program's environment: wait for it to appear.
        let environ = format!("/proc/{}/environ", child.id());
        for _ in 0..200 {
            if std::fs::read(&environ).is_ok_and(|b| !b.is_empty()) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let report = scan(&[], &secret_patterns("tok-IN-ENV-42"), true);
        let _ = child.kill();
        let _ = child.wait();
        assert!(report.proc_files > 2);
        assert!(
            report
                .hits
                .iter()
                .any(|(p, _)| p == &PathBuf::from(format!("/proc/{}/environ", child.id()))),
            "{:?}",
            report.hits
        );
    }
}
