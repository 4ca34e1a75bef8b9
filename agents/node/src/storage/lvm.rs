//! The LVM-thin backend: the data disk is one PV in the VG `tessera` with a thin pool `pool`;
//! every volume is a thin volume `v-<name>` with ext4 on it, mounted at
//! /var/lib/tessera/volumes/<name>; snapshots are thin snapshots (`lvcreate -s`; lvm2
//! suspends the origin, and device-mapper freezes its filesystem, so that they are clean). The thin volume `meta` is mounted at
//! /var/lib/tessera itself. Command lines are built here as data and run with Debian's lvm2.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::backend::{Backend, Kind, StorageError, Usage, Volume};
use super::command::run;
use super::config::BackendKind;
use super::mount;
use super::name::VolumeName;

/// lvm2's configuration directory (LVM_SYSTEM_DIR): the image has no /etc/lvm.
pub const CONFIG_DIR: &str = "/run/tessera/lvm";
pub const LVM: &str = "/sbin/lvm";
pub const VG: &str = super::probe::LVM_VG;
pub const POOL: &str = "pool";
/// The thin volume mounted at /var/lib/tessera.
pub const META: &str = "meta";
pub const META_SIZE: &str = "64m";
/// The virtual size of a volume created without `--size`.
pub const DEFAULT_SIZE: u64 = 1 << 30;
/// Thin volumes' filesystem (ext4 mounts snapshots that share their origin's UUID).
pub const FSTYPE: &str = "ext4";

/// lvm.conf for a node without udev, lvmetad, dmeventd or thin-provisioning-tools: lvm
/// makes its own /dev nodes and links, and keeps no metadata backups on the tmpfs root.
pub const CONFIG: &str = "\
devices {\n  obtain_device_list_from_udev = 0\n  use_devicesfile = 0\n  hints = \"none\"\n}\n\
activation {\n  udev_sync = 0\n  udev_rules = 0\n  monitoring = 0\n}\n\
global {\n  thin_check_executable = \"\"\n  event_activation = 0\n  locking_dir = \"/run/tessera/lvm/lock\"\n}\n\
backup {\n  backup = 0\n  archive = 0\n}\n";

pub fn write_config() -> Result<(), StorageError> {
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(Path::new(CONFIG_DIR).join("lock"))?;
        std::fs::write(Path::new(CONFIG_DIR).join("lvm.conf"), CONFIG)
    };
    write().map_err(|e| StorageError::Internal(format!("writing {CONFIG_DIR}/lvm.conf: {e}")))
}

fn lvm(args: &[&str]) -> Vec<String> {
    std::iter::once(LVM)
        .chain(args.iter().copied())
        .map(String::from)
        .collect()
}

/// The LV of a volume or snapshot.
pub fn lv_name(name: &VolumeName) -> String {
    format!("v-{name}")
}

pub fn device(lv: &str) -> PathBuf {
    Path::new("/dev").join(VG).join(lv)
}

/// The command lines of this backend, as data.
pub mod commands {
    use super::*;

    pub fn pvcreate(device: &Path) -> Vec<String> {
        lvm(&["pvcreate", "-ff", "-y", &device.display().to_string()])
    }
    pub fn vgcreate(device: &Path) -> Vec<String> {
        lvm(&["vgcreate", VG, &device.display().to_string()])
    }
    /// The pool takes most of the VG; lvm2 keeps room for its metadata spare.
    pub fn thin_pool() -> Vec<String> {
        lvm(&[
            "lvcreate",
            "--type",
            "thin-pool",
            "-l",
            "90%FREE",
            "-n",
            POOL,
            VG,
        ])
    }
    /// A full pool fails writes at once instead of queueing them for a minute
    /// (lvcreate does not take `--errorwhenfull` for a pool; lvchange does).
    pub fn error_when_full() -> Vec<String> {
        lvm(&["lvchange", "--errorwhenfull", "y", &format!("{VG}/{POOL}")])
    }
    pub fn thin_volume(lv: &str, size: &str) -> Vec<String> {
        lvm(&[
            "lvcreate",
            "-V",
            size,
            "-T",
            &format!("{VG}/{POOL}"),
            "-n",
            lv,
        ])
    }
    /// A thin snapshot, activated like any volume (`-kn`), read-only with `-pr`.
    pub fn snapshot(origin: &str, lv: &str, readonly: bool) -> Vec<String> {
        let mut c = lvm(&["lvcreate", "-s", "-kn", "-n", lv]);
        if readonly {
            c.extend(["-pr".to_string()]);
        }
        c.push(format!("{VG}/{origin}"));
        c
    }
    pub fn remove(lv: &str) -> Vec<String> {
        lvm(&["lvremove", "-y", &format!("{VG}/{lv}")])
    }
    pub fn activate() -> Vec<String> {
        lvm(&["vgchange", "-ay", VG])
    }
    pub fn report() -> Vec<String> {
        lvm(&[
            "lvs",
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "lv_name,origin,lv_size,lv_attr,data_percent",
            VG,
        ])
    }
    pub fn mkfs(device: &Path) -> Vec<String> {
        vec![
            "/sbin/mke2fs".into(),
            "-q".into(),
            "-F".into(),
            "-t".into(),
            FSTYPE.into(),
            "-E".into(),
            "nodiscard".into(),
            device.display().to_string(),
        ]
    }
}

/// One row of `lvs --reportformat json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Lv {
    pub lv_name: String,
    #[serde(default)]
    pub origin: String,
    pub lv_size: String,
    pub lv_attr: String,
    #[serde(default)]
    pub data_percent: String,
}

#[derive(Deserialize)]
struct Report {
    report: Vec<ReportLvs>,
}

#[derive(Deserialize)]
struct ReportLvs {
    #[serde(default)]
    lv: Vec<Lv>,
}

pub fn parse_report(json: &str) -> Result<Vec<Lv>, StorageError> {
    let r: Report = serde_json::from_str(json)
        .map_err(|e| StorageError::Internal(format!("lvs printed something unexpected: {e}")))?;
    Ok(r.report.into_iter().flat_map(|r| r.lv).collect())
}

impl Lv {
    /// Volumes and snapshots are `v-*`; the pool and `meta` are the backend's own.
    pub fn volume(&self, root: &Path) -> Option<Volume> {
        let name = VolumeName::parse(self.lv_name.strip_prefix("v-")?).ok()?;
        let origin = self.origin.strip_prefix("v-").map(String::from);
        Some(Volume {
            path: root
                .join("volumes")
                .join(name.as_str())
                .display()
                .to_string(),
            name,
            kind: if origin.is_some() {
                Kind::Snapshot
            } else {
                Kind::Volume
            },
            readonly: self.lv_attr.as_bytes().get(1) == Some(&b'r'),
            origin,
            size_bytes: self.lv_size.parse().ok(),
        })
    }

    /// Free bytes of a thin pool row.
    pub fn pool_usage(&self) -> Option<Usage> {
        let total: u64 = self.lv_size.parse().ok()?;
        let used: f64 = self.data_percent.parse().ok()?;
        let free = (total as f64 * (100.0 - used) / 100.0).max(0.0) as u64;
        Some(Usage {
            total_bytes: total,
            free_bytes: free,
        })
    }
}

pub struct Lvm {
    root: PathBuf,
}

impl Lvm {
    pub fn new(root: &Path) -> Lvm {
        Lvm {
            root: root.to_path_buf(),
        }
    }

    /// A blank (or wiped) disk: PV, VG, thin pool, `meta` with ext4 at the data root.
    pub fn format(device: &Path, root: &Path) -> Result<Lvm, StorageError> {
        run(&commands::pvcreate(device))?;
        run(&commands::vgcreate(device))?;
        run(&commands::thin_pool())?;
        run(&commands::error_when_full())?;
        run(&commands::thin_volume(META, META_SIZE))?;
        run(&commands::mkfs(&self::device(META)))?;
        mount::mount_at(&self::device(META), root, FSTYPE, false)?;
        Ok(Lvm::new(root))
    }

    /// A disk of ours after a reboot: activate the VG and mount `meta` and every volume.
    pub fn adopt(root: &Path) -> Result<Lvm, StorageError> {
        run(&commands::activate())?;
        if !mount::is_mounted(root) {
            mount::mount_at(&device(META), root, FSTYPE, false)?;
        }
        let lvm = Lvm::new(root);
        for v in lvm.list()? {
            let target = PathBuf::from(&v.path);
            if !mount::is_mounted(&target) {
                mount::mount_at(&device(&lv_name(&v.name)), &target, FSTYPE, v.readonly)?;
            }
        }
        Ok(lvm)
    }

    fn lvs(&self) -> Result<Vec<Lv>, StorageError> {
        parse_report(&run(&commands::report())?)
    }

    /// Whether `name` has an LV: lvm2 links /dev/tessera/<lv> for every active LV, and the
    /// service activates them all, so no `lvs` run (~0.3 s under TCG) is needed to know.
    fn exists(name: &VolumeName) -> bool {
        device(&lv_name(name)).exists()
    }

    fn target(&self, name: &VolumeName) -> PathBuf {
        self.root.join("volumes").join(name.as_str())
    }

    /// Mounts a new LV; if that fails the LV goes again, so a failure leaves nothing behind.
    fn mount_new(
        &self,
        name: &VolumeName,
        origin: Option<&VolumeName>,
        readonly: bool,
        size_bytes: Option<u64>,
    ) -> Result<Volume, StorageError> {
        let lv = lv_name(name);
        let target = self.target(name);
        if let Err(e) = mount::mount_at(&device(&lv), &target, FSTYPE, readonly) {
            let _ = run(&commands::remove(&lv));
            return Err(e);
        }
        Ok(Volume {
            name: name.clone(),
            kind: if origin.is_some() {
                Kind::Snapshot
            } else {
                Kind::Volume
            },
            path: target.display().to_string(),
            readonly,
            origin: origin.map(VolumeName::to_string),
            size_bytes,
        })
    }
}

impl Backend for Lvm {
    fn kind(&self) -> BackendKind {
        BackendKind::LvmThin
    }

    fn create(&self, name: &VolumeName, size: Option<u64>) -> Result<Volume, StorageError> {
        if Self::exists(name) {
            return Err(StorageError::exists(name));
        }
        let lv = lv_name(name);
        let bytes = size.unwrap_or(DEFAULT_SIZE);
        run(&commands::thin_volume(&lv, &format!("{bytes}b")))?;
        if let Err(e) = run(&commands::mkfs(&device(&lv))) {
            let _ = run(&commands::remove(&lv));
            return Err(e);
        }
        self.mount_new(name, None, false, Some(bytes))
    }

    fn snapshot(
        &self,
        source: &VolumeName,
        name: &VolumeName,
        readonly: bool,
    ) -> Result<Volume, StorageError> {
        if !Self::exists(source) {
            return Err(StorageError::not_found(source));
        }
        if Self::exists(name) {
            return Err(StorageError::exists(name));
        }
        run(&commands::snapshot(
            &lv_name(source),
            &lv_name(name),
            readonly,
        ))?;
        self.mount_new(name, Some(source), readonly, None)
    }

    fn delete(&self, name: &VolumeName) -> Result<(), StorageError> {
        if !Self::exists(name) {
            return Err(StorageError::not_found(name));
        }
        let target = self.target(name);
        mount::unmount(&target)?;
        run(&commands::remove(&lv_name(name)))?;
        let _ = std::fs::remove_dir(&target);
        Ok(())
    }

    fn list(&self) -> Result<Vec<Volume>, StorageError> {
        let mut v: Vec<Volume> = self
            .lvs()?
            .iter()
            .filter_map(|lv| lv.volume(&self.root))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    fn usage(&self) -> Result<Usage, StorageError> {
        self.lvs()?
            .iter()
            .find(|lv| lv.lv_name == POOL)
            .and_then(Lv::pool_usage)
            .ok_or_else(|| StorageError::Internal(format!("no thin pool {VG}/{POOL} in `lvs`")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines() {
        let j = |c: Vec<String>| c.join(" ");
        assert_eq!(
            j(commands::pvcreate(Path::new("/dev/vdb"))),
            "/sbin/lvm pvcreate -ff -y /dev/vdb"
        );
        assert_eq!(
            j(commands::vgcreate(Path::new("/dev/vdb"))),
            "/sbin/lvm vgcreate tessera /dev/vdb"
        );
        assert_eq!(
            j(commands::thin_pool()),
            "/sbin/lvm lvcreate --type thin-pool -l 90%FREE -n pool tessera"
        );
        assert_eq!(
            j(commands::error_when_full()),
            "/sbin/lvm lvchange --errorwhenfull y tessera/pool"
        );
        assert_eq!(
            j(commands::thin_volume("v-data", "1073741824b")),
            "/sbin/lvm lvcreate -V 1073741824b -T tessera/pool -n v-data"
        );
        assert_eq!(
            j(commands::snapshot("v-data", "v-s1", true)),
            "/sbin/lvm lvcreate -s -kn -n v-s1 -pr tessera/v-data"
        );
        assert_eq!(
            j(commands::snapshot("v-data", "v-s2", false)),
            "/sbin/lvm lvcreate -s -kn -n v-s2 tessera/v-data"
        );
        assert_eq!(
            j(commands::remove("v-s1")),
            "/sbin/lvm lvremove -y tessera/v-s1"
        );
        assert_eq!(j(commands::activate()), "/sbin/lvm vgchange -ay tessera");
        assert_eq!(
            j(commands::mkfs(&device("v-data"))),
            "/sbin/mke2fs -q -F -t ext4 -E nodiscard /dev/tessera/v-data"
        );
    }

    #[test]
    fn the_lvs_report_becomes_volumes_and_pool_usage() {
        let json = r#"{"report":[{"lv":[
            {"lv_name":"meta","origin":"","lv_size":"67108864","lv_attr":"Vwi-aotz--","data_percent":"6.00"},
            {"lv_name":"pool","origin":"","lv_size":"1000000000","lv_attr":"twi-aotz--","data_percent":"25.00"},
            {"lv_name":"v-data","origin":"","lv_size":"1073741824","lv_attr":"Vwi-aotz--","data_percent":"1.00"},
            {"lv_name":"v-s1","origin":"v-data","lv_size":"1073741824","lv_attr":"Vri-aotz--","data_percent":"1.00"}
        ]}]}"#;
        let lvs = parse_report(json).unwrap();
        let root = Path::new("/var/lib/tessera");
        let vols: Vec<Volume> = lvs.iter().filter_map(|l| l.volume(root)).collect();
        assert_eq!(vols.len(), 2);
        assert_eq!(vols[0].kind, Kind::Volume);
        assert_eq!(vols[0].path, "/var/lib/tessera/volumes/data");
        assert!(!vols[0].readonly);
        assert_eq!(vols[1].kind, Kind::Snapshot);
        assert_eq!(vols[1].origin.as_deref(), Some("data"));
        assert!(vols[1].readonly);
        assert_eq!(vols[1].size_bytes, Some(1 << 30));
        let pool = lvs.iter().find(|l| l.lv_name == "pool").unwrap();
        assert_eq!(
            pool.pool_usage(),
            Some(Usage {
                total_bytes: 1_000_000_000,
                free_bytes: 750_000_000
            })
        );
        assert!(parse_report("not json").is_err());
    }
}
