//! An image config's `User` ("uid", "uid:gid", "name", "name:group", mixed) resolved to ids
//! with the image's own /etc/passwd and /etc/group, as Docker and runc do: a named user must
//! exist; a bare uid takes its primary group from passwd when listed (else 0); the user's
//! supplementary groups come from /etc/group.
//!
//! The files are read inside the rootfs with their symlinks resolved there
//! (`fsat::read_in_root`): an image whose /etc/passwd links to the host's cannot make the agent
//! read it.

use std::path::Path;

use crate::archive::fsat;
use crate::spec::SpecError;

const MAX_DB: u64 = 8 << 20;

/// The ids the container's process runs with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

struct Passwd {
    name: String,
    uid: u32,
    gid: u32,
}

struct Group {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn invalid(user: &str, problem: String, fix: &str) -> SpecError {
    SpecError::Invalid {
        file: "image config".to_string(),
        field: format!("User {user:?}"),
        problem,
        fix: fix.to_string(),
    }
}

/// Reads an /etc file of the image; None when the image has none.
fn read_db(rootfs: &Path, rel: &str, user: &str) -> Result<Option<String>, SpecError> {
    match fsat::read_in_root(rootfs, rel, MAX_DB) {
        Ok(bytes) => Ok(bytes.map(|b| String::from_utf8_lossy(&b).into_owned())),
        Err(e) => Err(invalid(
            user,
            format!("cannot read /{rel} in the image: {e}"),
            "rebuild the image with a readable plain file there, or use numeric ids",
        )),
    }
}

fn passwd(text: &str) -> Vec<Passwd> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(Passwd {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

fn groups(text: &str) -> Vec<Group> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(Group {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Resolves `user` (an image config's User, possibly empty) against `rootfs`.
pub(crate) fn resolve(user: &str, rootfs: &Path) -> Result<Ids, SpecError> {
    if user.is_empty() {
        return Ok(Ids::default());
    }
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let users = read_db(rootfs, "etc/passwd", user)?;
    let entries = users.as_deref().map(passwd).unwrap_or_default();
    let (uid, default_gid, name) = match user_part.parse::<u32>() {
        Ok(uid) => {
            let found = entries.iter().find(|p| p.uid == uid);
            (
                uid,
                found.map_or(0, |p| p.gid),
                found.map(|p| p.name.clone()),
            )
        }
        Err(_) if users.is_none() => {
            return Err(invalid(
                user,
                "the image has no /etc/passwd to look the name up in".to_string(),
                "add /etc/passwd to the image or use a numeric uid",
            ))
        }
        Err(_) => match entries.iter().find(|p| p.name == user_part) {
            Some(p) => (p.uid, p.gid, Some(p.name.clone())),
            None => {
                return Err(invalid(
                    user,
                    "no such user in /etc/passwd".to_string(),
                    "add the user to the image's /etc/passwd or use a numeric uid",
                ))
            }
        },
    };
    let group_db = read_db(rootfs, "etc/group", user)?;
    let group_entries = group_db.as_deref().map(groups).unwrap_or_default();
    let gid = match group_part {
        None | Some("") => default_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => match group_entries.iter().find(|e| e.name == g) {
                Some(e) => e.gid,
                None => {
                    return Err(invalid(
                        user,
                        "no such group in /etc/group".to_string(),
                        "add the group to the image's /etc/group or use a numeric gid",
                    ))
                }
            },
        },
    };
    let mut additional_gids: Vec<u32> = match &name {
        Some(name) => group_entries
            .iter()
            .filter(|g| g.members.iter().any(|m| m == name) && g.gid != gid)
            .map(|g| g.gid)
            .collect(),
        None => Vec::new(),
    };
    additional_gids.dedup();
    Ok(Ids {
        uid,
        gid,
        additional_gids,
    })
}
