//! `tessera klog`: the kernel log as structured events. Reads /dev/kmsg from the start,
//! writes one JSON line per record (level from the record's priority) and follows new
//! records. It is ready as soon as /dev/kmsg is open: the kernel keeps the backlog until read.

use std::io::{Read, Write};
use tessera_common::log::Level;

/// One /dev/kmsg record: "<prio+facility>,<seq>,<usec>,<flags>[,...];<text>".
#[derive(Debug, PartialEq)]
pub struct Record {
    pub level: Level,
    pub seq: u64,
    pub usec: u64,
    pub text: String,
}

pub fn parse(record: &str) -> Option<Record> {
    let (head, body) = record.split_once(';')?;
    let mut f = head.split(',');
    let prio: u32 = f.next()?.parse().ok()?;
    let seq = f.next()?.parse().ok()?;
    let usec = f.next()?.parse().ok()?;
    // Continuation lines (" KEY=value" dictionary) follow the first line; keep the text only.
    let text = body.lines().next().unwrap_or("").to_string();
    Some(Record {
        level: Level::from_priority((prio & 7) as u8),
        seq,
        usec,
        text,
    })
}

pub fn run() -> anyhow::Result<()> {
    let mut kmsg = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot open /dev/kmsg: {e} (is this a Tessera node with devtmpfs mounted?)"
            )
        })?;
    let _ =
        tessera_common::notify::notify(&["READY=1".into(), "STATUS=following /dev/kmsg".into()]);
    let stdout = std::io::stdout();
    let mut buf = vec![0u8; 8192];
    loop {
        match kmsg.read(&mut buf) {
            Ok(n) => {
                if let Some(r) = parse(&String::from_utf8_lossy(&buf[..n])) {
                    let line = serde_json::json!({"level": r.level.as_str(), "message": r.text, "seq": r.seq, "kernel_time_us": r.usec});
                    let mut out = stdout.lock();
                    writeln!(out, "{line}")?;
                    out.flush()?;
                }
            }
            // EPIPE: records were overwritten before we read them; carry on with the next.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => wait_readable(&kmsg)?,
            Err(e) => return Err(anyhow::anyhow!("reading /dev/kmsg: {e}")),
        }
    }
}

fn wait_readable(file: &std::fs::File) -> anyhow::Result<()> {
    use std::os::fd::AsFd;
    let mut fds = [nix::poll::PollFd::new(
        file.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(e) => Err(anyhow::anyhow!("poll /dev/kmsg: {e}")),
    }
}

use std::os::unix::fs::OpenOptionsExt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmsg_records_parse() {
        let r =
            parse("6,339,5140900,-;virtio_net virtio0 eth0: renamed\n SUBSYSTEM=virtio\n").unwrap();
        assert_eq!(
            r,
            Record {
                level: Level::Info,
                seq: 339,
                usec: 5140900,
                text: "virtio_net virtio0 eth0: renamed".into()
            }
        );
        assert_eq!(parse("3,1,2,-;oops").unwrap().level, Level::Error);
        assert_eq!(
            parse("12,1,2,c;user facility warn").unwrap().level,
            Level::Warn,
            "facility bits are ignored"
        );
        assert!(parse("garbage").is_none());
    }
}
