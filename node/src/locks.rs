//! PURE lock table and held-change queue.
//!
//! A lock is granted only when every known peer has voted yes on a
//! proposal; each node lets at most one proposal or holder exist per path,
//! so two racing proposals can both fail but never both succeed. Proposals
//! that are never decided (a node died mid-vote) expire. Records are kept
//! after release, so a node that was down learns of the release when it
//! comes back (records are merged on every link).
//!
//! While a path is locked, changes to it are held here instead of being
//! applied or announced; unlocking hands them back for the normal rules.

use std::collections::{BTreeMap, HashMap};

use tandem_common::proto::{HeldChange, LockInfo, LockRecord, LockState};
use tandem_common::{FileEntry, NodeId, RelPath};
use uuid::Uuid;

/// A proposal not decided within this time no longer blocks others.
pub const PROPOSAL_TTL_NS: i64 = 15_000_000_000;

/// Why an unlock was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnlockError {
    /// Nobody holds a lock on it.
    #[error("{0} is not locked")]
    NotLocked(RelPath),
    /// Someone else holds it and `force` was not given.
    #[error("{} is locked by {} ({}); only the owner can unlock it (or use --force)", .0.path, .0.owner_name, .0.owner)]
    NotOwner(Box<LockRecord>),
}

/// Every lock record this node knows, one per path (the latest).
#[derive(Debug, Default)]
pub struct LockTable {
    records: HashMap<RelPath, LockRecord>,
    /// When each proposal was first seen here (local clock).
    proposed_at: HashMap<Uuid, i64>,
}

impl LockTable {
    /// A table from persisted records.
    pub fn new(records: Vec<LockRecord>, now_ns: i64) -> LockTable {
        let mut t = LockTable::default();
        for r in records {
            if r.state == LockState::Proposed {
                t.proposed_at.insert(r.id, now_ns);
            }
            t.records.insert(r.path.clone(), r);
        }
        t
    }

    /// The granted lock on `path`, if any.
    pub fn holder(&self, path: &RelPath) -> Option<&LockRecord> {
        self.records
            .get(path)
            .filter(|r| r.state == LockState::Held)
    }

    /// The record for `path`, whatever its state.
    pub fn record(&self, path: &RelPath) -> Option<&LockRecord> {
        self.records.get(path)
    }

    /// Every granted lock, sorted by path.
    pub fn held(&self) -> Vec<LockInfo> {
        let mut v: Vec<LockInfo> = self
            .records
            .values()
            .filter(|r| r.state == LockState::Held)
            .map(info)
            .collect();
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v
    }

    /// Every record, for syncing with a peer.
    pub fn records(&self) -> Vec<LockRecord> {
        self.records.values().cloned().collect()
    }

    fn blocking(&self, path: &RelPath, id: Uuid, now_ns: i64) -> Option<&LockRecord> {
        let cur = self.records.get(path)?;
        if cur.id == id {
            return None;
        }
        match cur.state {
            LockState::Held => Some(cur),
            LockState::Proposed => {
                let at = self.proposed_at.get(&cur.id).copied().unwrap_or(now_ns);
                (now_ns - at < PROPOSAL_TTL_NS).then_some(cur)
            }
            LockState::Aborted | LockState::Released { .. } => None,
        }
    }

    /// Reserves `path` for the proposal `rec` (state `Proposed`), unless
    /// another proposal or holder is in the way (returned).
    pub fn propose(&mut self, rec: LockRecord, now_ns: i64) -> Result<(), Box<LockRecord>> {
        if let Some(b) = self.blocking(&rec.path, rec.id, now_ns) {
            return Err(Box::new(b.clone()));
        }
        if self.records.get(&rec.path).is_some_and(|c| c.id == rec.id) {
            return Ok(());
        }
        self.proposed_at.insert(rec.id, now_ns);
        self.records.insert(
            rec.path.clone(),
            LockRecord {
                state: LockState::Proposed,
                ..rec
            },
        );
        Ok(())
    }

    /// Applies a record's new state (from this node's decision or a peer).
    /// Returns true when something changed (so it is worth forwarding).
    pub fn update(&mut self, rec: LockRecord) -> bool {
        match self.records.get(&rec.path) {
            Some(cur) if cur.id == rec.id => {
                let ok = match (&cur.state, &rec.state) {
                    (a, b) if a == b => false,
                    (LockState::Proposed, _) => true,
                    (LockState::Held, LockState::Released { .. }) => true,
                    _ => false,
                };
                if ok {
                    self.records.insert(rec.path.clone(), rec);
                }
                ok
            }
            cur => {
                // A different lock (or none) here. Only a grant or a newer
                // release matters; two grants cannot happen while every node
                // votes, but if they ever meet, the earlier one wins everywhere.
                let take = match (&rec.state, cur) {
                    (LockState::Held, None) => true,
                    (LockState::Held, Some(c)) => match c.state {
                        LockState::Held => (rec.since_ns, rec.id) < (c.since_ns, c.id),
                        _ => true,
                    },
                    (LockState::Released { .. }, None) => true,
                    (LockState::Released { .. }, Some(c)) => {
                        c.state != LockState::Held
                            && c.state != LockState::Proposed
                            && rec.since_ns > c.since_ns
                    }
                    _ => false,
                };
                if take {
                    self.records.insert(rec.path.clone(), rec);
                }
                take
            }
        }
    }

    /// Releases the lock on `path` on behalf of `client`.
    pub fn release(
        &mut self,
        path: &RelPath,
        client: Uuid,
        by_name: &str,
        force: bool,
    ) -> Result<LockRecord, UnlockError> {
        let Some(cur) = self.holder(path).cloned() else {
            return Err(UnlockError::NotLocked(path.clone()));
        };
        if cur.owner != client && !force {
            return Err(UnlockError::NotOwner(Box::new(cur)));
        }
        let rec = LockRecord {
            state: LockState::Released {
                by: by_name.to_string(),
                forced: cur.owner != client,
            },
            ..cur
        };
        self.records.insert(path.clone(), rec.clone());
        Ok(rec)
    }
}

/// The client-facing view of a record.
pub fn info(r: &LockRecord) -> LockInfo {
    LockInfo {
        path: r.path.clone(),
        owner_name: r.owner_name.clone(),
        owner: r.owner,
        since_ns: r.since_ns,
        via: r.via.clone(),
    }
}

/// One held change: what it was, and (for a peer's change) the entry to
/// run through the planner on unlock.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Held {
    /// What users see.
    pub info: HeldChange,
    /// The peer and its entry, for a remote change; `None` for a local one
    /// (the disk is looked at again on unlock).
    pub remote: Option<(NodeId, FileEntry)>,
}

/// Changes held back by locks, per path.
#[derive(Debug, Default)]
pub struct HeldQueue {
    items: BTreeMap<RelPath, Vec<Held>>,
}

impl HeldQueue {
    /// Holds a change; a newer change from the same source replaces the older.
    pub fn hold(&mut self, h: Held) {
        let v = self.items.entry(h.info.path.clone()).or_default();
        let src = h.remote.as_ref().map(|(n, _)| *n);
        v.retain(|x| x.remote.as_ref().map(|(n, _)| *n) != src);
        v.push(h);
    }

    /// Takes every change held for `path`.
    pub fn take(&mut self, path: &RelPath) -> Vec<Held> {
        self.items.remove(path).unwrap_or_default()
    }

    /// Number of changes held for `path`.
    pub fn count(&self, path: &RelPath) -> usize {
        self.items.get(path).map_or(0, Vec::len)
    }

    /// Every held change, sorted by path.
    pub fn list(&self) -> Vec<HeldChange> {
        self.items
            .values()
            .flatten()
            .map(|h| h.info.clone())
            .collect()
    }

    /// Held remote changes, for persisting.
    pub fn remote(&self) -> Vec<Held> {
        self.items
            .values()
            .flatten()
            .filter(|h| h.remote.is_some())
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_common::proto::HeldKind;

    fn rec(path: &str, owner: Uuid, since: i64) -> LockRecord {
        LockRecord {
            id: Uuid::new_v4(),
            path: RelPath::new(path).unwrap(),
            owner,
            owner_name: "o".into(),
            since_ns: since,
            via: "A".into(),
            state: LockState::Proposed,
        }
    }

    #[test]
    fn one_proposal_at_a_time_then_grant_and_release() {
        let (c1, c2) = (Uuid::new_v4(), Uuid::new_v4());
        let mut t = LockTable::default();
        let a = rec("f", c1, 1);
        let b = rec("f", c2, 1);
        assert!(t.propose(a.clone(), 0).is_ok());
        assert!(
            t.propose(a.clone(), 0).is_ok(),
            "re-proposing is idempotent"
        );
        assert_eq!(t.propose(b.clone(), 1).unwrap_err().id, a.id);
        assert!(t.holder(&a.path).is_none(), "a proposal is not a lock");
        assert!(t.update(LockRecord {
            state: LockState::Held,
            ..a.clone()
        }));
        assert_eq!(t.holder(&a.path).unwrap().owner, c1);
        assert_eq!(
            t.propose(b.clone(), PROPOSAL_TTL_NS * 2).unwrap_err().id,
            a.id,
            "a grant never expires"
        );

        assert!(matches!(
            t.release(&a.path, c2, "x", false),
            Err(UnlockError::NotOwner(_))
        ));
        let r = t.release(&a.path, c2, "x", true).unwrap();
        assert_eq!(
            r.state,
            LockState::Released {
                by: "x".into(),
                forced: true
            }
        );
        assert!(t.holder(&a.path).is_none());
        assert!(matches!(
            t.release(&a.path, c1, "o", false),
            Err(UnlockError::NotLocked(_))
        ));
        // A released record does not come back by a stale grant.
        assert!(!t.update(LockRecord {
            state: LockState::Held,
            ..a.clone()
        }));
        assert!(t.propose(b, 0).is_ok());
    }

    #[test]
    fn undecided_proposals_expire_and_aborts_free_the_path() {
        let mut t = LockTable::default();
        let a = rec("f", Uuid::new_v4(), 1);
        let b = rec("f", Uuid::new_v4(), 1);
        t.propose(a.clone(), 0).unwrap();
        assert!(t.propose(b.clone(), PROPOSAL_TTL_NS - 1).is_err());
        assert!(t.propose(b.clone(), PROPOSAL_TTL_NS).is_ok());
        assert!(t.update(LockRecord {
            state: LockState::Aborted,
            ..b.clone()
        }));
        assert!(t.propose(a, 0).is_ok());
    }

    #[test]
    fn merging_grants_is_deterministic_and_releases_propagate() {
        let (mut t1, mut t2) = (LockTable::default(), LockTable::default());
        let early = LockRecord {
            state: LockState::Held,
            ..rec("f", Uuid::new_v4(), 1)
        };
        let late = LockRecord {
            state: LockState::Held,
            ..rec("f", Uuid::new_v4(), 2)
        };
        t1.update(early.clone());
        t1.update(late.clone());
        t2.update(late.clone());
        t2.update(early.clone());
        assert_eq!(t1.holder(&early.path).unwrap().id, early.id);
        assert_eq!(t2.holder(&early.path).unwrap().id, early.id);
        // A node that missed the release learns it from a peer's record.
        let released = LockRecord {
            state: LockState::Released {
                by: "o".into(),
                forced: false,
            },
            ..early.clone()
        };
        assert!(t2.update(released.clone()));
        assert!(t2.holder(&early.path).is_none());
        assert!(!t2.update(released), "already known: nothing to forward");
    }

    #[test]
    fn held_queue_keeps_the_latest_per_source() {
        let mut q = HeldQueue::default();
        let p = RelPath::new("f").unwrap();
        let change = |size| HeldChange {
            path: p.clone(),
            node: "B".into(),
            kind: HeldKind::Modify,
            size,
            mtime_ns: 0,
            since_ns: 0,
        };
        q.hold(Held {
            info: change(1),
            remote: None,
        });
        q.hold(Held {
            info: change(2),
            remote: None,
        });
        assert_eq!(q.count(&p), 1);
        assert_eq!(q.list()[0].size, 2);
        assert_eq!(q.take(&p).len(), 1);
        assert_eq!(q.count(&p), 0);
    }
}
