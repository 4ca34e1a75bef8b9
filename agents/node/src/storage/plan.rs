//! What the service does with the data disk, decided from its content, the backend user-data
//! asks for and `storage.wipe`: format it, adopt it, or refuse (saying why and how to fix).

use std::path::Path;

use super::config::BackendKind;
use super::probe::Content;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Blank, or foreign with `storage.wipe = true` (`wipe`: clear the old signatures first).
    Format { wipe: bool },
    /// A Tessera data disk of this backend: activate and mount what is there.
    Adopt,
    /// Not touched; the reason names what was found and the fix.
    Refuse(String),
}

pub fn decide(content: &Content, backend: BackendKind, wipe: bool, device: &Path) -> Plan {
    let found = match (content, backend) {
        (Content::Blank, _) => return Plan::Format { wipe: false },
        (Content::TesseraBtrfs, BackendKind::Btrfs) | (Content::LvmPv, BackendKind::LvmThin) => {
            return Plan::Adopt
        }
        (Content::TesseraBtrfs, _) => {
            "a Tessera btrfs data disk, but storage.backend is lvm-thin".to_string()
        }
        (Content::LvmPv, _) => "an LVM2 physical volume, but storage.backend is btrfs".to_string(),
        (Content::Foreign(what), _) => what.to_string(),
    };
    if wipe {
        return Plan::Format { wipe: true };
    }
    Plan::Refuse(format!(
        "{} holds {found}; it was not formatted. To use it as the data disk (erasing it), set storage.wipe = true in user-data",
        device.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = "/dev/vdb";

    #[test]
    fn blank_is_formatted_ours_adopted() {
        let d = Path::new(DEV);
        assert_eq!(
            decide(&Content::Blank, BackendKind::Btrfs, false, d),
            Plan::Format { wipe: false }
        );
        assert_eq!(
            decide(&Content::TesseraBtrfs, BackendKind::Btrfs, false, d),
            Plan::Adopt
        );
        assert_eq!(
            decide(&Content::LvmPv, BackendKind::LvmThin, false, d),
            Plan::Adopt
        );
        // wipe never erases a disk of ours: a reboot with wipe = true keeps the volumes.
        assert_eq!(
            decide(&Content::TesseraBtrfs, BackendKind::Btrfs, true, d),
            Plan::Adopt
        );
    }

    #[test]
    fn foreign_is_refused_with_the_signature_and_the_fix() {
        let d = Path::new(DEV);
        let Plan::Refuse(why) = decide(
            &Content::Foreign("an ext2/ext3/ext4 filesystem"),
            BackendKind::Btrfs,
            false,
            d,
        ) else {
            panic!("not refused")
        };
        assert_eq!(why, "/dev/vdb holds an ext2/ext3/ext4 filesystem; it was not formatted. To use it as the data disk (erasing it), set storage.wipe = true in user-data");
        assert_eq!(
            decide(
                &Content::Foreign("a GPT partition table"),
                BackendKind::LvmThin,
                true,
                d
            ),
            Plan::Format { wipe: true }
        );
        assert!(
            matches!(decide(&Content::LvmPv, BackendKind::Btrfs, false, d), Plan::Refuse(w) if w.contains("LVM2 physical volume"))
        );
        assert!(
            matches!(decide(&Content::TesseraBtrfs, BackendKind::LvmThin, false, d), Plan::Refuse(w) if w.contains("storage.backend is lvm-thin"))
        );
    }
}
