//! dropbear as the ssh service runs it: the command line, its stderr lines turned into
//! structured events, and whether it listens yet.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// dropbear from Debian's dropbear-bin.
pub const DROPBEAR: &str = "/usr/sbin/dropbear";
/// The console's port.
pub const PORT: u16 = 22;

/// dropbear's arguments: in the foreground (`-F`, PID 1 supervises it through the agent),
/// logging to stderr (`-E`, there is no syslog), no password logins at all (`-s`: root logs
/// in by key only; `-w` would forbid root, who is the console's only user), the port, each
/// host key (`-r`), and a pid file in tmpfs (`-P`; the default /var/run does not exist).
pub fn args(port: u16, host_keys: &[PathBuf], pid_file: &Path) -> Vec<String> {
    let mut args: Vec<String> = ["-F", "-E", "-s", "-p"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(port.to_string());
    for key in host_keys {
        args.push("-r".into());
        args.push(key.display().to_string());
    }
    args.push("-P".into());
    args.push(pid_file.display().to_string());
    args
}

/// One dropbear log line as an event: (level, message, fields). `-E` lines look like
/// `[1234] Nov 25 20:47:01 Pubkey auth succeeded for 'root' with ssh-ed25519 key SHA256:… from 10.0.2.2:40000`.
pub fn event(line: &str) -> (&'static str, &'static str, Value) {
    let (pid, text) = split_prefix(line);
    if let Some(login) = pubkey_login(text) {
        let mut fields = login;
        fields["dropbear_pid"] = json!(pid);
        return ("info", "login accepted", fields);
    }
    // "Exit before auth … (user 'root', 0 fails)" is a client giving up: not a warning.
    let level = if ["Failed", "Bad", "Error", "Premature"]
        .iter()
        .any(|w| text.starts_with(w))
    {
        "warn"
    } else {
        "info"
    };
    (
        level,
        "dropbear",
        json!({"dropbear_pid": pid, "text": text}),
    )
}

/// `[pid] Mon DD HH:MM:SS ` off the front of a line (when it is there).
fn split_prefix(line: &str) -> (Option<u32>, &str) {
    let Some(rest) = line.strip_prefix('[') else {
        return (None, line.trim_end());
    };
    let Some((pid, rest)) = rest.split_once("] ") else {
        return (None, line.trim_end());
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return (None, line.trim_end());
    };
    // "Nov 25 20:47:01 " is 16 characters (the day is space-padded).
    let text = match rest.get(..16) {
        Some(stamp) if stamp.as_bytes().get(9) == Some(&b':') => &rest[16..],
        _ => rest,
    };
    (Some(pid), text.trim_end())
}

/// `Pubkey auth succeeded for 'root' with ssh-ed25519 key SHA256:… from 10.0.2.2:40000`.
fn pubkey_login(text: &str) -> Option<Value> {
    let rest = text.strip_prefix("Pubkey auth succeeded for '")?;
    let (user, rest) = rest.split_once("' with ")?;
    let (key_type, rest) = rest.split_once(" key ")?;
    let (fingerprint, from) = rest.split_once(" from ")?;
    Some(json!({"user": user, "key_type": key_type, "key_fingerprint": fingerprint, "from": from}))
}

/// Whether /proc/net/tcp or tcp6 text (`tables`) has a socket listening on `port`.
pub fn listening(tables: &[String], port: u16) -> bool {
    tables.iter().any(|table| {
        table.lines().skip(1).any(|line| {
            let w: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st …; local is HEXADDR:HEXPORT, LISTEN is 0A.
            w.len() > 3
                && w[3] == "0A"
                && w[1]
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                    == Some(port)
        })
    })
}

/// The kernel's TCP socket tables (a missing one, IPv6 off, is empty).
pub fn tcp_tables() -> Vec<String> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_foreground_key_only_with_every_host_key() {
        let keys = [
            PathBuf::from("/run/tessera/ssh/dropbear_ed25519_host_key"),
            PathBuf::from("/run/tessera/ssh/dropbear_ecdsa_host_key"),
        ];
        let a = args(22, &keys, Path::new("/run/tessera/ssh/dropbear.pid"));
        assert_eq!(
            a,
            [
                "-F",
                "-E",
                "-s",
                "-p",
                "22",
                "-r",
                "/run/tessera/ssh/dropbear_ed25519_host_key",
                "-r",
                "/run/tessera/ssh/dropbear_ecdsa_host_key",
                "-P",
                "/run/tessera/ssh/dropbear.pid"
            ]
        );
        // Root is the console's user: never -w (no root logins), never -B (blank passwords).
        assert!(!a.iter().any(|x| x == "-w" || x == "-B"));
    }

    #[test]
    fn a_key_login_becomes_a_login_event_with_its_fields() {
        let (level, msg, fields) = event(
            "[612] Nov 25 20:47:01 Pubkey auth succeeded for 'root' with ssh-ed25519 key SHA256:iznaJ+eDOz/Mf9 from 10.0.2.2:40522\n",
        );
        assert_eq!((level, msg), ("info", "login accepted"));
        assert_eq!(
            fields,
            json!({"user": "root", "key_type": "ssh-ed25519", "key_fingerprint": "SHA256:iznaJ+eDOz/Mf9",
                   "from": "10.0.2.2:40522", "dropbear_pid": 612})
        );
    }

    #[test]
    fn other_lines_keep_their_text_and_failures_are_warnings() {
        let (level, msg, fields) = event("[88] Nov  5 09:01:02 Not backgrounding");
        assert_eq!((level, msg), ("info", "dropbear"));
        assert_eq!(
            fields,
            json!({"dropbear_pid": 88, "text": "Not backgrounding"})
        );
        let (level, _, fields) =
            event("[90] Nov 25 20:47:03 Failed listening on '22': Error listening: Address in use");
        assert_eq!(level, "warn");
        assert_eq!(
            fields["text"],
            "Failed listening on '22': Error listening: Address in use"
        );
        let (level, _, _) = event(
            "[91] Nov 25 21:13:12 Exit before auth from <10.0.2.2:51460>: (user 'root', 0 fails): Exited normally",
        );
        assert_eq!(level, "info");
        let (_, _, fields) = event("no prefix at all");
        assert_eq!(
            fields,
            json!({"dropbear_pid": null, "text": "no prefix at all"})
        );
    }

    #[test]
    fn a_listening_socket_on_the_port_is_found_in_either_table() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                  0: 00000000:1CA3 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1\n\
                  1: 0F02000A:0016 0202000A:9C40 01 00000000:00000000 00:00000000 00000000     0        0 1235 1\n"
            .to_string();
        // Port 22 only in an established connection: not listening.
        assert!(!listening(std::slice::from_ref(&v4), 22));
        assert!(listening(std::slice::from_ref(&v4), 7331));
        let v6 = "  sl  local_address                         remote_address                        st\n\
                  0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 99 1\n"
            .to_string();
        assert!(listening(&[v4, v6], 22));
        assert!(!listening(&[String::new()], 22));
    }
}
