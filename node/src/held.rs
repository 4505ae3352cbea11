//! PURE: changes held back by locks, per path.
//!
//! While a path is locked, changes to it are held here instead of being
//! applied or announced; when the lock cluster's table shows the path free
//! again, they go back to the normal rules.

use std::collections::BTreeMap;

use tandem_common::proto::HeldChange;
use tandem_common::{FileEntry, NodeId, RelPath};

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

    /// Every path with held changes.
    pub fn paths(&self) -> Vec<RelPath> {
        self.items.keys().cloned().collect()
    }

    /// Whether a change made on this node is held for `path`.
    pub fn has_local(&self, path: &RelPath) -> bool {
        self.items
            .get(path)
            .is_some_and(|v| v.iter().any(|h| h.remote.is_none()))
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
