//! The ring of virtual nodes (thesis 4.7.1, Dynamo's variant of Chord): the 160-bit id space
//! is split into `V` equal ranges (a power of two, default 64) named by the top bits of an
//! id's prefix; every live hub takes a share of them. Each virtual node has a preference list:
//! its primary hub and N−1 alternatives.
//!
//! Assignment is rendezvous hashing per virtual node: the owners of vnode `v` are the hubs
//! with the highest `score(hub, v)`. Every hub computes the same table from the same set of
//! live members without coordination, and a join or a leave moves only the virtual nodes the
//! joining hub wins or the leaving hub held — the minimum.

use std::collections::BTreeSet;

use crate::id::{IdError, TargetId};

#[derive(Debug, Clone)]
pub struct Ring {
    vnode_bits: u8,
    replicas: usize,
    members: Vec<String>,
    /// Per virtual node: member indices, best first (at most `replicas`).
    preference: Vec<Vec<usize>>,
}

fn score(member: &str, vnode: u32) -> u64 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(member.as_bytes());
    ctx.update(&[0]);
    ctx.update(&vnode.to_be_bytes());
    let d = ctx.finish();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_ref()[..8]);
    u64::from_be_bytes(b)
}

impl Ring {
    /// A ring of `vnodes` virtual nodes over `members` (hub ids).
    pub fn new(
        vnodes: u32,
        replicas: usize,
        members: impl IntoIterator<Item = String>,
    ) -> Result<Ring, IdError> {
        if !vnodes.is_power_of_two() || vnodes > 1 << crate::id::PREFIX_BITS {
            return Err(IdError::BadVnodes(vnodes));
        }
        let members: Vec<String> = members
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let replicas = replicas.max(1);
        let preference = (0..vnodes)
            .map(|v| {
                let mut scored: Vec<(u64, usize)> = members
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (score(m, v), i))
                    .collect();
                scored.sort_unstable_by(|a, b| b.cmp(a));
                scored.into_iter().take(replicas).map(|(_, i)| i).collect()
            })
            .collect();
        Ok(Ring {
            vnode_bits: vnodes.trailing_zeros() as u8,
            replicas,
            members,
            preference,
        })
    }

    pub fn vnodes(&self) -> u32 {
        1 << self.vnode_bits
    }

    pub fn vnode_bits(&self) -> u8 {
        self.vnode_bits
    }

    pub fn replicas(&self) -> usize {
        self.replicas
    }

    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// The primary hub of a virtual node; `None` on an empty ring.
    pub fn primary(&self, vnode: u32) -> Option<&str> {
        self.preference
            .get(vnode as usize)?
            .first()
            .map(|i| self.members[*i].as_str())
    }

    /// The primary hub and the alternatives of a virtual node.
    pub fn preference(&self, vnode: u32) -> Vec<&str> {
        self.preference
            .get(vnode as usize)
            .map(|p| p.iter().map(|i| self.members[*i].as_str()).collect())
            .unwrap_or_default()
    }

    /// The virtual node of an id in this ring.
    pub fn vnode_of(&self, id: &TargetId) -> u32 {
        id.vnode(self.vnode_bits)
    }

    /// The primary hub and the alternatives of a target.
    pub fn for_target(&self, id: &TargetId) -> Vec<&str> {
        self.preference(self.vnode_of(id))
    }

    /// The virtual nodes whose primary is `member`.
    pub fn owned_by(&self, member: &str) -> Vec<u32> {
        (0..self.vnodes())
            .filter(|v| self.primary(*v) == Some(member))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hubs(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("n{i}.example")).collect()
    }

    fn primaries(r: &Ring) -> Vec<String> {
        (0..r.vnodes())
            .map(|v| r.primary(v).unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn every_vnode_has_a_primary_and_distinct_alternatives() {
        let r = Ring::new(64, 3, hubs(5)).unwrap();
        for v in 0..64 {
            let p = r.preference(v);
            assert_eq!(p.len(), 3);
            assert_eq!(p.iter().collect::<BTreeSet<_>>().len(), 3);
            assert_eq!(Some(p[0]), r.primary(v));
        }
        // Fewer members than replicas: everyone, once.
        let r = Ring::new(64, 3, hubs(2)).unwrap();
        assert_eq!(r.preference(5).len(), 2);
        assert!(Ring::new(64, 3, Vec::<String>::new())
            .unwrap()
            .primary(0)
            .is_none());
    }

    #[test]
    fn all_hubs_compute_the_same_table_whatever_the_order() {
        let mut m = hubs(7);
        let a = Ring::new(64, 3, m.clone()).unwrap();
        m.reverse();
        let b = Ring::new(64, 3, m).unwrap();
        for v in 0..64 {
            assert_eq!(a.preference(v), b.preference(v));
        }
    }

    #[test]
    fn a_join_moves_only_the_vnodes_the_new_hub_takes() {
        let before = Ring::new(64, 3, hubs(5)).unwrap();
        let after = Ring::new(64, 3, hubs(6)).unwrap();
        let (b, a) = (primaries(&before), primaries(&after));
        let mut moved = 0;
        for v in 0..64 {
            if b[v] != a[v] {
                assert_eq!(a[v], "n5.example", "vnode {v} moved to an old hub");
                moved += 1;
            }
        }
        assert!(moved > 0, "the new hub takes a share");
        assert_eq!(moved, after.owned_by("n5.example").len());
    }

    #[test]
    fn a_leave_moves_only_the_leavers_vnodes() {
        let before = Ring::new(64, 3, hubs(6)).unwrap();
        let after = Ring::new(64, 3, hubs(6).into_iter().filter(|h| h != "n2.example")).unwrap();
        let (b, a) = (primaries(&before), primaries(&after));
        for v in 0..64 {
            if b[v] != "n2.example" {
                assert_eq!(b[v], a[v], "vnode {v} moved although its hub stayed");
            } else {
                assert_ne!(a[v], "n2.example");
                // The first alternative takes over: the data it holds is already there.
                assert_eq!(a[v], before.preference(v as u32)[1]);
            }
        }
    }

    #[test]
    fn vnodes_are_spread_over_the_hubs() {
        let r = Ring::new(64, 3, hubs(4)).unwrap();
        for h in hubs(4) {
            let owned = r.owned_by(&h).len();
            assert!((4..=32).contains(&owned), "{h} owns {owned} of 64");
        }
        let total: usize = hubs(4).iter().map(|h| r.owned_by(h).len()).sum();
        assert_eq!(total, 64);
    }

    #[test]
    fn targets_map_by_their_prefix() {
        let r = Ring::new(64, 3, hubs(3)).unwrap();
        let mut id = TargetId([0; 20]);
        id.0[0] = 0b1111_1100; // top six bits: vnode 63
        assert_eq!(r.vnode_of(&id), 63);
        assert_eq!(r.for_target(&id), r.preference(63));
    }
}
