//! `tessera volume …`: a client of the storage socket for the console and scripts.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::name::VolumeName;
use tessera_common::size::parse_size;

/// How long the CLI waits (an LVM volume runs lvcreate and mke2fs under TCG).
pub const TIMEOUT: Duration = Duration::from_secs(120);

pub fn call(socket: &Path, request: &Value) -> anyhow::Result<Value> {
    crate::ipc::call(socket, "storage", request, TIMEOUT)
}

fn checked(name: &str) -> anyhow::Result<String> {
    Ok(VolumeName::parse(name)?.to_string())
}

pub fn create(socket: &Path, name: &str, size: Option<&str>) -> anyhow::Result<()> {
    let mut req = json!({"op": "create", "name": checked(name)?});
    if let Some(s) = size {
        req["size"] = json!(parse_size(s).map_err(anyhow::Error::msg)?);
    }
    let v = call(socket, &req)?;
    println!(
        "created volume {} at {}",
        name,
        v["path"].as_str().unwrap_or("?")
    );
    Ok(())
}

pub fn snapshot(socket: &Path, source: &str, name: &str, readonly: bool) -> anyhow::Result<()> {
    let v = call(
        socket,
        &json!({"op": "snapshot", "source": checked(source)?, "name": checked(name)?, "readonly": readonly}),
    )?;
    println!(
        "created {}snapshot {name} of {source} at {}",
        if readonly { "read-only " } else { "" },
        v["path"].as_str().unwrap_or("?")
    );
    Ok(())
}

pub fn delete(socket: &Path, name: &str) -> anyhow::Result<()> {
    call(socket, &json!({"op": "delete", "name": checked(name)?}))?;
    println!("deleted {name}");
    Ok(())
}

pub fn list(socket: &Path, as_json: bool) -> anyhow::Result<()> {
    let v = call(socket, &json!({"op": "list"}))?;
    if as_json {
        println!("{v}");
    } else {
        print!("{}", render_list(&v));
    }
    Ok(())
}

fn mib(v: &Value) -> String {
    v.as_u64().map_or("-".into(), |b| format!("{}M", b >> 20))
}

/// The table of `tessera volume list` (also `tessera node volumes`).
pub fn render_list(v: &Value) -> String {
    let mut out = format!(
        "backend {}, {} free of {}\n",
        v["backend"].as_str().unwrap_or("?"),
        mib(&v["usage"]["free_bytes"]),
        mib(&v["usage"]["total_bytes"])
    );
    let vols = v["volumes"].as_array().cloned().unwrap_or_default();
    if vols.is_empty() {
        out.push_str("no volumes (`tessera volume create NAME`)\n");
        return out;
    }
    out.push_str(&format!(
        "{:<20} {:<9} {:<3} {:<16} {:<7} {}\n",
        "NAME", "KIND", "RO", "ORIGIN", "SIZE", "PATH"
    ));
    for x in vols {
        out.push_str(&format!(
            "{:<20} {:<9} {:<3} {:<16} {:<7} {}\n",
            x["name"].as_str().unwrap_or("?"),
            x["kind"].as_str().unwrap_or("?"),
            if x["readonly"].as_bool() == Some(true) {
                "ro"
            } else {
                "rw"
            },
            x["origin"].as_str().unwrap_or("-"),
            mib(&x["size_bytes"]),
            x["path"].as_str().unwrap_or("?"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_a_table() {
        let v = json!({"backend": "lvm-thin", "usage": {"total_bytes": 1u64 << 30, "free_bytes": 512u64 << 20},
            "volumes": [
                {"name": "data", "kind": "volume", "path": "/var/lib/tessera/volumes/data", "readonly": false, "origin": null, "size_bytes": 1u64 << 30},
                {"name": "s1", "kind": "snapshot", "path": "/var/lib/tessera/volumes/s1", "readonly": true, "origin": "data", "size_bytes": 1u64 << 30}]});
        let t = render_list(&v);
        assert!(
            t.starts_with("backend lvm-thin, 512M free of 1024M\n"),
            "{t}"
        );
        assert!(t.contains("data                 volume    rw  -                1024M   /var/lib/tessera/volumes/data\n"), "{t}");
        assert!(
            t.contains("s1                   snapshot  ro  data             1024M"),
            "{t}"
        );
        let empty = render_list(&json!({"backend": "btrfs", "volumes": []}));
        assert!(empty.contains("no volumes"), "{empty}");
    }
}
