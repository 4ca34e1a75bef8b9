//! 160-bit target identifiers, crafted as thesis 4.7.4 proposes (not digests of keys):
//!
//! ```text
//! bits   0..16   virtual-node prefix: the top log2(V) bits are the virtual node of the ring
//! bits  16..32   category (component, group, component type, …)
//! bits  32..64   sub-element (objects, attributes); zero for the target itself
//! bits  64..160  unique
//! ```
//!
//! Component types are clustered into a fraction of the virtual nodes: a type fixes
//! [`crate::defaults::TYPE_BITS`] bits in the *middle* of the virtual-node index (not the
//! first bits, which would unbalance the ring), so all its components fall into
//! `V / 2^TYPE_BITS` virtual nodes. Groups get the same layout with every bit but the category
//! and sub-element taken from the SHA-1 of the name, so every hub computes the same id.

use std::fmt;
use std::str::FromStr;

use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bits of the virtual-node prefix.
pub const PREFIX_BITS: u8 = 16;

/// The category field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Category(pub u16);

impl Category {
    pub const COMPONENT: Category = Category(1);
    pub const GROUP: Category = Category(2);
    pub const COMPONENT_TYPE: Category = Category(3);
}

/// A target (component or group), or one of its sub-elements.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetId(pub [u8; 20]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("target id {0:?} is not 40 hexadecimal digits; copy it from `tessera hub select`")]
    Malformed(String),
    #[error("the system random generator failed; the kernel has no entropy source")]
    Random,
    #[error("virtual nodes {0} is not a power of two between 1 and 65536")]
    BadVnodes(u32),
}

/// How component types are clustered into virtual nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// log2 of the number of virtual nodes.
    pub vnode_bits: u8,
    /// Bits of the virtual-node index a component type fixes.
    pub type_bits: u8,
}

impl Layout {
    pub fn new(vnodes: u32, type_bits: u8) -> Result<Layout, IdError> {
        if !vnodes.is_power_of_two() || vnodes > 1 << PREFIX_BITS {
            return Err(IdError::BadVnodes(vnodes));
        }
        let vnode_bits = vnodes.trailing_zeros() as u8;
        Ok(Layout {
            vnode_bits,
            type_bits: type_bits.min(vnode_bits),
        })
    }

    pub fn vnodes(&self) -> u32 {
        1 << self.vnode_bits
    }

    /// Mask and shift of the type bits inside the 16-bit prefix: centred in the vnode index.
    fn type_field(&self) -> (u16, u32) {
        let start = (self.vnode_bits - self.type_bits) / 2;
        let shift = (PREFIX_BITS - start - self.type_bits) as u32;
        let mask = (((1u32 << self.type_bits) - 1) << shift) as u16;
        (mask, shift)
    }

    /// The prefix bits a component type fixes: `(mask, value)`.
    pub fn type_bits_of(&self, component_type: &str) -> (u16, u16) {
        let (mask, shift) = self.type_field();
        let digest = sha1(&[b"tessera-type\0", component_type.as_bytes()]);
        let value = ((u16::from_be_bytes([digest[0], digest[1]]) as u32) << shift) as u16 & mask;
        (mask, value)
    }

    /// The virtual nodes a component type may occupy.
    pub fn type_vnodes(&self, component_type: &str) -> Vec<u32> {
        let (mask, value) = self.type_bits_of(component_type);
        let shift = PREFIX_BITS - self.vnode_bits;
        (0..self.vnodes())
            .filter(|v| ((*v << shift) as u16) & mask == value)
            .collect()
    }
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            vnode_bits: crate::defaults::VIRTUAL_NODES.trailing_zeros() as u8,
            type_bits: crate::defaults::TYPE_BITS,
        }
    }
}

fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 20];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn random<const N: usize>() -> Result<[u8; N], IdError> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| IdError::Random)?;
    Ok(out)
}

impl TargetId {
    /// A new component of `component_type`, in virtual node `vnode` if given (it must be one
    /// of the type's, see [`Layout::type_vnodes`]), else in a random one of the type's.
    pub fn new_component(
        layout: &Layout,
        component_type: &str,
        vnode: Option<u32>,
    ) -> Result<TargetId, IdError> {
        let mut bytes: [u8; 20] = random()?;
        let mut prefix = u16::from_be_bytes([bytes[0], bytes[1]]);
        if let Some(v) = vnode {
            let shift = PREFIX_BITS - layout.vnode_bits;
            let low = if shift == 0 {
                0
            } else {
                prefix & ((1u32 << shift) - 1) as u16
            };
            prefix = ((v << shift) as u16) | low;
        }
        let (mask, value) = layout.type_bits_of(component_type);
        prefix = (prefix & !mask) | value;
        bytes[0..2].copy_from_slice(&prefix.to_be_bytes());
        bytes[2..4].copy_from_slice(&Category::COMPONENT.0.to_be_bytes());
        bytes[4..8].copy_from_slice(&[0; 4]);
        Ok(TargetId(bytes))
    }

    /// The id of group `name`: the same on every hub.
    pub fn group(name: &str) -> TargetId {
        let mut bytes = sha1(&[b"tessera-group\0", name.as_bytes()]);
        bytes[2..4].copy_from_slice(&Category::GROUP.0.to_be_bytes());
        bytes[4..8].copy_from_slice(&[0; 4]);
        TargetId(bytes)
    }

    pub fn prefix(&self) -> u16 {
        u16::from_be_bytes([self.0[0], self.0[1]])
    }

    pub fn category(&self) -> Category {
        Category(u16::from_be_bytes([self.0[2], self.0[3]]))
    }

    pub fn sub_element(&self) -> u32 {
        u32::from_be_bytes([self.0[4], self.0[5], self.0[6], self.0[7]])
    }

    /// The 96 unique bits.
    pub fn unique(&self) -> &[u8] {
        &self.0[8..]
    }

    /// The virtual node of this id in a ring of `2^vnode_bits` virtual nodes.
    pub fn vnode(&self, vnode_bits: u8) -> u32 {
        if vnode_bits == 0 {
            return 0;
        }
        (self.prefix() >> (PREFIX_BITS - vnode_bits)) as u32
    }

    /// The id of sub-element `n` (an object or attribute) of this target.
    pub fn element(&self, n: u32) -> TargetId {
        let mut bytes = self.0;
        bytes[4..8].copy_from_slice(&n.to_be_bytes());
        TargetId(bytes)
    }

    /// The target this id belongs to (sub-element bits cleared).
    pub fn target(&self) -> TargetId {
        self.element(0)
    }

    pub fn to_hex(&self) -> String {
        let buf = self.hex_bytes();
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// The 40 lower-case hex digits, without allocating.
    fn hex_bytes(&self) -> [u8; 40] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 40];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = DIGITS[(b >> 4) as usize];
            out[2 * i + 1] = DIGITS[(b & 15) as usize];
        }
        out
    }
}

impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let buf = self.hex_bytes();
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for TargetId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IdError::Malformed(s.chars().take(64).collect());
        if s.len() != 40 {
            return Err(bad());
        }
        let bytes = hex::decode(s).map_err(|_| bad())?;
        let mut out = [0u8; 20];
        out.copy_from_slice(&bytes);
        Ok(TargetId(out))
    }
}

impl Serialize for TargetId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let buf = self.hex_bytes();
        s.serialize_str(std::str::from_utf8(&buf).map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> Deserialize<'de> for TargetId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn component_id_has_the_layout_fields() {
        let layout = Layout::default();
        let id = TargetId::new_component(&layout, "web", None).unwrap();
        assert_eq!(id.category(), Category::COMPONENT);
        assert_eq!(id.sub_element(), 0);
        assert_eq!(id.unique().len(), 12);
        let obj = id.element(7);
        assert_eq!(obj.sub_element(), 7);
        assert_eq!(obj.target(), id);
        assert_eq!(obj.vnode(6), id.vnode(6));
        assert_eq!(obj.category(), Category::COMPONENT);
    }

    #[test]
    fn components_of_one_type_cluster_into_a_fraction_of_the_vnodes() {
        let layout = Layout::new(64, 3).unwrap();
        let mut seen = BTreeSet::new();
        for _ in 0..2000 {
            let id = TargetId::new_component(&layout, "database", None).unwrap();
            seen.insert(id.vnode(layout.vnode_bits));
        }
        let allowed: BTreeSet<u32> = layout.type_vnodes("database").into_iter().collect();
        assert_eq!(allowed.len(), 8, "1/8 of 64 virtual nodes");
        assert_eq!(
            seen, allowed,
            "2000 random ids reach all and only the type's vnodes"
        );
        // The type bits are in the middle of the index: the first bit still varies, so the
        // type spans both halves of the ring.
        assert!(allowed.iter().any(|v| v & 32 == 0) && allowed.iter().any(|v| v & 32 != 0));
    }

    #[test]
    fn different_types_use_different_vnode_sets() {
        let layout = Layout::default();
        let sets: BTreeSet<Vec<u32>> = ["web", "database", "queue", "cache", "batch", "proxy"]
            .iter()
            .map(|t| layout.type_vnodes(t))
            .collect();
        assert!(sets.len() >= 3, "types spread over the ring: {sets:?}");
    }

    #[test]
    fn a_component_can_be_placed_in_a_chosen_vnode_of_its_type() {
        let layout = Layout::default();
        for v in layout.type_vnodes("web") {
            let id = TargetId::new_component(&layout, "web", Some(v)).unwrap();
            assert_eq!(id.vnode(layout.vnode_bits), v);
        }
    }

    #[test]
    fn ids_are_unique() {
        let layout = Layout::default();
        let ids: BTreeSet<TargetId> = (0..10_000)
            .map(|_| TargetId::new_component(&layout, "web", None).unwrap())
            .collect();
        assert_eq!(ids.len(), 10_000);
    }

    #[test]
    fn group_ids_are_deterministic_and_categorised() {
        let a = TargetId::group("web");
        assert_eq!(a, TargetId::group("web"));
        assert_ne!(a, TargetId::group("db"));
        assert_eq!(a.category(), Category::GROUP);
        assert_eq!(a.sub_element(), 0);
    }

    #[test]
    fn hex_form_round_trips_and_bad_text_is_refused() {
        let id = TargetId::new_component(&Layout::default(), "web", None).unwrap();
        let text = id.to_string();
        assert_eq!(text.len(), 40);
        assert_eq!(text.parse::<TargetId>().unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<TargetId>(&json).unwrap(), id);
        for bad in ["", "zz", &"g".repeat(40), &"a".repeat(39), &"a".repeat(42)] {
            assert!(bad.parse::<TargetId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn vnode_counts_must_be_powers_of_two() {
        assert!(Layout::new(64, 3).is_ok());
        assert!(Layout::new(1, 3).is_ok());
        assert_eq!(Layout::new(48, 3), Err(IdError::BadVnodes(48)));
        assert_eq!(Layout::new(0, 3), Err(IdError::BadVnodes(0)));
    }
}
