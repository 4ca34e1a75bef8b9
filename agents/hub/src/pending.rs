//! Requests waiting for replies, keyed by the hub's own request id, with the requester's
//! correlation id kept unique per requester while pending, and an expiry on every entry.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

/// Who asked: a session on this hub.
pub type SessionId = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub session: SessionId,
    pub corr: u64,
    /// Replies expected in all.
    pub expected: u32,
    pub received: u32,
    pub deadline: Instant,
}

#[derive(Debug, Default)]
pub struct Pending {
    next: u64,
    entries: HashMap<u64, Entry>,
    in_use: HashSet<(SessionId, u64)>,
    deadlines: BTreeSet<(Instant, u64)>,
}

/// What a reply does to its entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Hand the reply to `session` under `corr`; `remaining` replies still expected.
    Deliver {
        session: SessionId,
        corr: u64,
        remaining: u32,
    },
    /// The request expired or never existed: drop the late reply.
    Late,
}

impl Pending {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `corr` is in use by a pending request of `session`.
    pub fn in_use(&self, session: SessionId, corr: u64) -> bool {
        self.in_use.contains(&(session, corr))
    }

    /// Starts a request; `None` if the correlation id is in use by this session.
    pub fn insert(
        &mut self,
        session: SessionId,
        corr: u64,
        expected: u32,
        deadline: Instant,
    ) -> Option<u64> {
        if !self.in_use.insert((session, corr)) {
            return None;
        }
        self.next += 1;
        let id = self.next;
        self.entries.insert(
            id,
            Entry {
                session,
                corr,
                expected: expected.max(1),
                received: 0,
                deadline,
            },
        );
        self.deadlines.insert((deadline, id));
        Some(id)
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.entries.remove(&id)?;
        self.in_use.remove(&(e.session, e.corr));
        self.deadlines.remove(&(e.deadline, id));
        Some(e)
    }

    /// Counts one reply to request `id`.
    pub fn reply(&mut self, id: u64) -> Delivery {
        let Some(e) = self.entries.get_mut(&id) else {
            return Delivery::Late;
        };
        e.received += 1;
        let remaining = e.expected.saturating_sub(e.received);
        let (session, corr) = (e.session, e.corr);
        if remaining == 0 {
            self.remove(id);
        }
        Delivery::Deliver {
            session,
            corr,
            remaining,
        }
    }

    /// Fewer replies are coming than expected (a destination could not be reached): the
    /// entry completes sooner.
    pub fn expect_fewer(&mut self, id: u64, by: u32) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.expected = e.expected.saturating_sub(by);
        }
    }

    /// Removes and returns the entries whose deadline is at or before `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Entry> {
        let due: Vec<u64> = self
            .deadlines
            .iter()
            .take_while(|(d, _)| *d <= now)
            .map(|(_, id)| *id)
            .collect();
        due.into_iter().filter_map(|id| self.remove(id)).collect()
    }

    /// Forgets every request of a session that went away.
    pub fn drop_session(&mut self, session: SessionId) {
        let ids: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| e.session == session)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_correlation_id_is_refused_while_pending_and_free_afterwards() {
        let mut p = Pending::default();
        let t = Instant::now() + Duration::from_secs(5);
        let id = p.insert(1, 42, 1, t).unwrap();
        assert!(p.insert(1, 42, 1, t).is_none(), "reuse while pending");
        assert!(
            p.insert(2, 42, 1, t).is_some(),
            "another requester may use it"
        );
        assert_eq!(
            p.reply(id),
            Delivery::Deliver {
                session: 1,
                corr: 42,
                remaining: 0
            }
        );
        assert!(p.insert(1, 42, 1, t).is_some(), "free once answered");
    }

    #[test]
    fn a_fan_out_completes_after_all_replies() {
        let mut p = Pending::default();
        let id = p
            .insert(1, 7, 3, Instant::now() + Duration::from_secs(5))
            .unwrap();
        let remaining: Vec<u32> = (0..3)
            .map(|_| match p.reply(id) {
                Delivery::Deliver { remaining, .. } => remaining,
                Delivery::Late => 99,
            })
            .collect();
        assert_eq!(remaining, vec![2, 1, 0]);
        assert_eq!(p.reply(id), Delivery::Late);
        assert!(p.is_empty());
    }

    #[test]
    fn expiry_removes_due_entries_only_and_late_replies_are_dropped() {
        let mut p = Pending::default();
        let now = Instant::now();
        let early = p.insert(1, 1, 1, now + Duration::from_millis(10)).unwrap();
        let late = p.insert(1, 2, 1, now + Duration::from_secs(60)).unwrap();
        let gone = p.expire(now + Duration::from_millis(20));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].corr, 1);
        assert_eq!(p.reply(early), Delivery::Late, "late reply after expiry");
        assert!(matches!(p.reply(late), Delivery::Deliver { corr: 2, .. }));
        assert!(!p.in_use(1, 1), "expired correlation id is free again");
    }

    #[test]
    fn a_closed_session_leaves_nothing_behind() {
        let mut p = Pending::default();
        let t = Instant::now() + Duration::from_secs(5);
        p.insert(1, 1, 1, t);
        p.insert(1, 2, 1, t);
        p.insert(2, 1, 1, t);
        p.drop_session(1);
        assert_eq!(p.len(), 1);
        assert!(p.expire(t).iter().all(|e| e.session == 2));
    }
}
