//! The container's output, kept by the shim as log events under the container's name in
//! `<state>/log.jsonl` (one JSON [`LogEvent`] per line: time, service, pid, level, stream,
//! message), bounded: past [`LOG_LIMIT`] bytes the file is renamed to `log.jsonl.1`
//! (replacing the previous one) and a new one begun.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use tessera_common::log::LogEvent;
use tessera_common::paths::MAX_LOG_LINE;

pub const LOG_FILE: &str = "log.jsonl";
pub const LOG_LIMIT: u64 = 1024 * 1024;

/// The rotating JSON-lines file.
pub struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    limit: u64,
}

impl LogFile {
    pub fn open(dir: &Path, limit: u64) -> io::Result<LogFile> {
        let path = dir.join(LOG_FILE);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path,
            file,
            size,
            limit,
        })
    }

    pub fn write(&mut self, event: &LogEvent) -> io::Result<()> {
        let mut line = serde_json::to_vec(event).map_err(io::Error::other)?;
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.limit {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            std::fs::rename(&self.path, &old)?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.size = 0;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }
}

/// Splits a byte stream into lines; a line longer than [`MAX_LOG_LINE`] is cut into pieces.
#[derive(Default)]
pub struct Lines {
    pending: Vec<u8>,
}

impl Lines {
    /// Adds bytes read from the stream and returns the lines they complete (without `\n`).
    pub fn push(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for &b in data {
            if b == b'\n' {
                out.push(std::mem::take(&mut self.pending));
            } else {
                self.pending.push(b);
                if self.pending.len() >= MAX_LOG_LINE {
                    out.push(std::mem::take(&mut self.pending));
                }
            }
        }
        out
    }

    /// What is left when the stream ends: a last line without `\n`.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_common::log::{Level, Stream};

    #[test]
    fn lines_are_split_kept_across_reads_and_cut_when_too_long() {
        let mut l = Lines::default();
        assert_eq!(l.push(b"ab"), Vec::<Vec<u8>>::new());
        assert_eq!(
            l.push(b"c\nd\n\ne"),
            vec![b"abc".to_vec(), b"d".to_vec(), vec![]]
        );
        assert_eq!(l.finish(), Some(b"e".to_vec()));
        assert_eq!(l.finish(), None);
        let long = vec![b'x'; MAX_LOG_LINE + 5];
        let lines = l.push(&long);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), MAX_LOG_LINE);
        assert_eq!(l.finish().map(|r| r.len()), Some(5));
    }

    #[test]
    fn log_rotates_past_the_limit_keeping_one_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogFile::open(dir.path(), 300).unwrap();
        for i in 0..20 {
            let e = LogEvent::from_service_line(
                "c1",
                1,
                Stream::Stdout,
                format!("line {i}").as_bytes(),
            );
            log.write(&e).unwrap();
        }
        let cur = std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
        let old = std::fs::read_to_string(dir.path().join("log.jsonl.1")).unwrap();
        assert!(
            cur.len() <= 300 && old.len() <= 300,
            "{} {}",
            cur.len(),
            old.len()
        );
        let last: LogEvent = serde_json::from_str(cur.lines().last().unwrap()).unwrap();
        assert_eq!(last.message, "line 19");
        assert_eq!(last.level, Level::Info);
        assert_eq!(last.service, "c1");
    }
}
