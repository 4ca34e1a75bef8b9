//! Source 2: NoCloud — a volume labelled `CIDATA` (any case), vfat or iso9660, holding
//! `user-data` (a v1 TOML document) and optionally `meta-data`.
//!
//! Every block device in /sys/class/block (disks, partitions, CD-ROMs, loop devices; not
//! RAM disks or empty devices) is probed by reading its superblock; the first (by name) with
//! the label is mounted read-only at a private directory under /run, its two files are read
//! (regular files only, size-limited, links not followed), and it is unmounted again.
//!
//! `meta-data` is the cloud-init format (`key: value` lines, or JSON); `local-hostname`
//! becomes `node.hostname` when user-data does not set one, and `instance-id` is reported.
//! A volume with meta-data but no (or a blank) user-data configures only the host name; one
//! with neither is no configuration. A CIDATA volume that cannot be mounted fails the pass.

use crate::defaults::{MAX_META_DATA, NOCLOUD_LABEL};
use crate::events::Events;
use crate::label::{self, Probe};
use crate::mount;
use crate::schema::{self, ConfigError, Document, Overlay};
use crate::source::{Fetched, Source, SourceError};
use crate::values::MAX_DOCUMENT;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub struct NoCloudSource {
    /// Normally /sys/class/block.
    pub sys_block: PathBuf,
    /// Normally /dev.
    pub dev_dir: PathBuf,
    /// Private mount point, normally /run/tessera/nocloud.
    pub mount_dir: PathBuf,
}

/// A labelled volume found by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub device: PathBuf,
    pub probe: Probe,
}

/// The block device names under `sys_block` worth probing, sorted.
pub fn candidates(sys_block: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("ram") && !n.starts_with("zram"))
        .filter(|n| {
            // Size in 512-byte sectors; 0 for an empty loop device or a CD-ROM without media.
            std::fs::read_to_string(sys_block.join(n).join("size"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .is_none_or(|s| s > 0)
        })
        .collect();
    names.sort();
    names
}

/// Probes every candidate; returns the volumes labelled CIDATA, in name order.
pub fn scan(sys_block: &Path, dev_dir: &Path, events: &Events) -> Vec<Volume> {
    let mut found = Vec::new();
    for name in candidates(sys_block) {
        let device = dev_dir.join(&name);
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&device)
        {
            Ok(f) => f,
            Err(e) => {
                events.debug(
                    "cannot open block device",
                    &[
                        ("device", device.display().to_string().into()),
                        ("reason", e.to_string().into()),
                    ],
                );
                continue;
            }
        };
        match label::probe(&file) {
            Ok(Some(probe)) if probe.label.eq_ignore_ascii_case(NOCLOUD_LABEL) => {
                found.push(Volume { device, probe })
            }
            Ok(_) => {}
            Err(e) => events.debug(
                "cannot read block device",
                &[
                    ("device", device.display().to_string().into()),
                    ("reason", e.to_string().into()),
                ],
            ),
        }
    }
    found
}

/// `local-hostname` and `instance-id` from cloud-init meta-data (YAML `key: value` lines or
/// a JSON object). Anything else in it is ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaData {
    pub local_hostname: Option<String>,
    pub instance_id: Option<String>,
}

pub fn parse_meta_data(bytes: &[u8]) -> MetaData {
    let text = String::from_utf8_lossy(bytes);
    let mut meta = MetaData::default();
    let mut set = |k: &str, v: &str| {
        let v = v.trim().trim_matches(|c| c == '"' || c == '\'').trim();
        if v.is_empty() {
            return;
        }
        match k.trim().trim_matches(|c| c == '"' || c == '\'') {
            "local-hostname" => meta.local_hostname = Some(v.to_string()),
            "instance-id" => meta.instance_id = Some(v.to_string()),
            _ => {}
        }
    };
    if text.trim_start().starts_with('{') {
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&text) {
            for (k, v) in map {
                if let Some(v) = v.as_str() {
                    set(&k, v);
                }
            }
        }
        return meta;
    }
    for line in text.lines() {
        // Top-level keys only: nested YAML is indented.
        if line.starts_with([' ', '\t', '#', '-']) {
            continue;
        }
        let line = line.split(" #").next().unwrap_or_default();
        if let Some((k, v)) = line.split_once(':') {
            set(k, v);
        }
    }
    meta
}

/// The configuration in a volume's two files (`None` when it holds none).
pub fn config_from_files(
    user_data: Option<&[u8]>,
    meta_data: Option<&[u8]>,
) -> Result<Option<schema::Config>, ConfigError> {
    let meta = meta_data.map(parse_meta_data).unwrap_or_default();
    let doc = match user_data {
        Some(u) if !schema::is_blank(u) => Some(schema::parse_document(u)?),
        _ => None,
    };
    let mut overlay = Overlay::default();
    if let Some(h) = &meta.local_hostname {
        if !doc.as_ref().is_some_and(Document::has_hostname) {
            overlay.set("node.hostname", h, "meta-data local-hostname")?;
        }
    }
    match doc {
        Some(doc) => schema::finish(doc, &overlay).map(Some),
        None if !overlay.is_empty() => schema::finish(Document::empty(), &overlay).map(Some),
        None => Ok(None),
    }
}

impl Source for NoCloudSource {
    fn name(&self) -> &str {
        "nocloud"
    }

    fn is_local(&self) -> bool {
        true
    }

    fn fetch(&self, events: &Events) -> Result<Option<Fetched>, SourceError> {
        let volumes = scan(&self.sys_block, &self.dev_dir, events);
        let Some(volume) = volumes.first() else {
            return Ok(None);
        };
        let device = volume.device.display().to_string();
        let fstype = volume.probe.fs.mount_type();
        if volumes.len() > 1 {
            let others: Vec<String> = volumes[1..]
                .iter()
                .map(|v| v.device.display().to_string())
                .collect();
            events.warn(
                "more than one CIDATA volume; using the first",
                &[
                    ("source", "nocloud".into()),
                    ("device", device.clone().into()),
                    ("ignored", others.join(", ").into()),
                ],
            );
        }
        events.info(
            "found NoCloud volume",
            &[
                ("source", "nocloud".into()),
                ("device", device.clone().into()),
                ("fstype", fstype.into()),
            ],
        );
        let files = mount::with_mounted(&volume.device, fstype, &self.mount_dir, |dir| {
            let user = mount::read_small_file(dir, "user-data", MAX_DOCUMENT);
            let meta = mount::read_small_file(dir, "meta-data", MAX_META_DATA);
            (user, meta)
        })
        .map_err(|e| SourceError::Failed(e.to_string()))?;
        let read_err = |what: &str, e: std::io::Error| {
            SourceError::Failed(format!("cannot read {what} on {device}: {e}"))
        };
        let user = files.0.map_err(|e| read_err("user-data", e))?;
        let meta = files.1.map_err(|e| read_err("meta-data", e))?;
        let instance_id = meta
            .as_deref()
            .map(parse_meta_data)
            .and_then(|m| m.instance_id);
        let document = if user.is_some() {
            format!("user-data on {device}")
        } else {
            format!("meta-data on {device}")
        };
        let config = config_from_files(user.as_deref(), meta.as_deref())
            .map_err(|error| SourceError::Invalid { document, error })?;
        let Some(config) = config else {
            events.warn(
                "CIDATA volume holds neither user-data nor a host name in meta-data",
                &[("source", "nocloud".into()), ("device", device.into())],
            );
            return Ok(None);
        };
        let mut detail = format!("{device} ({fstype})");
        if let Some(id) = instance_id {
            detail.push_str(&format!(", instance-id {id}"));
        }
        Ok(Some(Fetched {
            config,
            detail,
            overlay: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_data_yaml_and_json() {
        let m = parse_meta_data(
            b"instance-id: iid-local01\nlocal-hostname: 'n1.example' # comment\nnetwork-interfaces: |\n  auto eth0\n",
        );
        assert_eq!(m.instance_id.as_deref(), Some("iid-local01"));
        assert_eq!(m.local_hostname.as_deref(), Some("n1.example"));
        let m = parse_meta_data(br#"{"instance-id": "i-1", "local-hostname": "n2"}"#);
        assert_eq!(m.local_hostname.as_deref(), Some("n2"));
        assert_eq!(parse_meta_data(b"\xff\xfe"), MetaData::default());
    }

    #[test]
    fn user_data_hostname_wins_over_meta_data() {
        let c = config_from_files(
            Some(b"version = 1\n[node]\nhostname = \"ud.example\"\n"),
            Some(b"local-hostname: md.example\n"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.node.hostname.as_deref(), Some("ud.example"));
        let c = config_from_files(
            Some(b"version = 1\n"),
            Some(b"local-hostname: md.example\n"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.node.hostname.as_deref(), Some("md.example"));
    }

    #[test]
    fn meta_data_alone_configures_the_host_name_and_nothing_is_nothing() {
        let c = config_from_files(None, Some(b"local-hostname: md\n"))
            .unwrap()
            .unwrap();
        assert_eq!(c.node.hostname.as_deref(), Some("md"));
        assert_eq!(
            config_from_files(Some(b"\n# empty\n"), Some(b"instance-id: x\n")),
            Ok(None)
        );
        assert_eq!(config_from_files(None, None), Ok(None));
        let e = config_from_files(None, Some(b"local-hostname: bad_name\n")).unwrap_err();
        assert!(e.to_string().contains("(meta-data local-hostname)"), "{e}");
    }

    #[test]
    fn candidates_skip_empty_devices_and_ram_disks() {
        let sys = tempfile::tempdir().unwrap();
        for (name, size) in [
            ("vdb", "2048"),
            ("loop7", "0"),
            ("ram0", "8192"),
            ("sr0", "700"),
        ] {
            std::fs::create_dir(sys.path().join(name)).unwrap();
            std::fs::write(sys.path().join(name).join("size"), format!("{size}\n")).unwrap();
        }
        std::fs::create_dir(sys.path().join("vda1")).unwrap();
        assert_eq!(candidates(sys.path()), vec!["sr0", "vda1", "vdb"]);
    }
}
