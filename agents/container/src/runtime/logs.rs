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

/// Lines of a container's log as [`read`] returns them, and where the next read starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Whole lines, without `\n`.
    pub lines: Vec<String>,
    /// Offset in `log.jsonl` after the last line returned.
    pub offset: u64,
}

/// Reads the log in `dir` from `offset` (None: from the beginning, the rotated file first),
/// whole lines up to about `max_bytes`; `tail` keeps only the last N lines of a first read.
/// An offset past the end means the file was rotated or begun anew: it starts over at 0.
/// No log yet reads as nothing.
pub fn read(
    dir: &Path,
    offset: Option<u64>,
    tail: Option<usize>,
    max_bytes: usize,
) -> io::Result<Chunk> {
    use std::io::{BufRead, Seek, SeekFrom};
    let path = dir.join(LOG_FILE);
    let mut lines = Vec::new();
    if offset.is_none() {
        let mut old = path.clone().into_os_string();
        old.push(".1");
        if let Ok(text) = std::fs::read_to_string(&old) {
            lines.extend(text.lines().map(str::to_string));
        }
    }
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Chunk { lines, offset: 0 }),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let mut at = offset.unwrap_or(0);
    if at > len {
        at = 0;
    }
    file.seek(SeekFrom::Start(at))?;
    let mut reader = io::BufReader::new(file);
    let mut line = String::new();
    let mut taken = 0usize;
    while (tail.is_some() || taken < max_bytes) && reader.read_line(&mut line)? > 0 {
        if !line.ends_with('\n') {
            break; // being written: the rest comes next time
        }
        at += line.len() as u64;
        taken += line.len();
        lines.push(line.trim_end_matches('\n').to_string());
        line.clear();
    }
    if let Some(n) = tail {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    Ok(Chunk { lines, offset: at })
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
    fn reads_resume_at_their_offset_include_the_rotated_file_first_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read(dir.path(), None, None, 1 << 20).unwrap().lines.len(),
            0
        );
        let line = serde_json::to_vec(&LogEvent::from_service_line(
            "c1",
            1,
            Stream::Stdout,
            b"line 0",
        ))
        .unwrap()
        .len() as u64
            + 1;
        // Four lines to a file: six lines rotate once.
        let mut log = LogFile::open(dir.path(), 4 * line).unwrap();
        let event = |i: usize| {
            LogEvent::from_service_line("c1", 1, Stream::Stdout, format!("line {i}").as_bytes())
        };
        for i in 0..6 {
            log.write(&event(i)).unwrap();
        }
        assert!(dir.path().join("log.jsonl.1").exists());
        let message = |l: &String| serde_json::from_str::<LogEvent>(l).unwrap().message;
        let all = read(dir.path(), None, None, 1 << 20).unwrap();
        let seen: Vec<String> = all.lines.iter().map(message).collect();
        assert_eq!(
            seen,
            (0..6).map(|i| format!("line {i}")).collect::<Vec<_>>(),
            "rotated lines come first"
        );
        assert_eq!(
            read(dir.path(), Some(all.offset), None, 1 << 20)
                .unwrap()
                .lines,
            Vec::<String>::new()
        );
        log.write(&event(6)).unwrap();
        let next = read(dir.path(), Some(all.offset), None, 1 << 20).unwrap();
        assert_eq!(
            next.lines.iter().map(message).collect::<Vec<_>>(),
            vec!["line 6"]
        );
        let tail = read(dir.path(), None, Some(2), 1 << 20).unwrap();
        assert_eq!(
            tail.lines.iter().map(message).collect::<Vec<_>>(),
            vec!["line 5", "line 6"]
        );
        // A small budget returns whole lines and resumes where it stopped.
        let first = read(dir.path(), Some(0), None, 1).unwrap();
        assert_eq!(first.lines.len(), 1);
        let rest = read(dir.path(), Some(first.offset), None, 1 << 20).unwrap();
        assert!(!rest.lines.contains(&first.lines[0]));
        // Past the end (the file was begun anew): from the start.
        let again = read(dir.path(), Some(1 << 30), None, 1 << 20).unwrap();
        assert!(!again.lines.is_empty());
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
