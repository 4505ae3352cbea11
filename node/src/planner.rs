//! PURE sync decisions: given what this node has at a path and what a peer
//! announces, decide what to do. No I/O, so every rule is table-tested and
//! property-tested.
//!
//! Rules (see ARCHITECTURE.md, "How sync decides"):
//! - remote dominates ours (version vectors) → take it, whatever its mtime;
//! - ours dominates, or equal → nothing;
//! - concurrent → a conflict: a live version beats a deletion, then the newer
//!   mtime wins, then the larger content hash, then the larger version
//!   vector; every node computes the same winner. The winner's version
//!   becomes the merge of both vectors, so it dominates both.

use std::cmp::Ordering;

use tandem_common::{EntryKind, FileEntry, VersionVector, VvOrder};

/// What to do with a remote entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Ours is the same, newer, or wins the conflict: do nothing.
    Ignore,
    /// Make the remote version ours, recorded with `version`.
    Take {
        /// The version to record (the merge of both on a conflict).
        version: VersionVector,
        /// This was a conflict and our current content loses: keep it aside.
        keep_ours_as_conflict: bool,
    },
}

/// Total order used to pick a conflict's winner; larger wins.
pub fn conflict_key(e: &FileEntry) -> impl Ord + '_ {
    let vv: Vec<(tandem_common::NodeId, u64)> = e.version.iter().collect();
    (!e.deleted, e.mtime_ns, e.hash, vv)
}

/// True when `a` beats `b` in a conflict.
pub fn wins(a: &FileEntry, b: &FileEntry) -> bool {
    conflict_key(a).cmp(&conflict_key(b)) == Ordering::Greater
}

/// Decides what to do with `remote`, given our entry at the same path.
pub fn plan(local: Option<&FileEntry>, remote: &FileEntry) -> Decision {
    let Some(local) = local else {
        return Decision::Take {
            version: remote.version.clone(),
            keep_ours_as_conflict: false,
        };
    };
    match remote.version.compare(&local.version) {
        VvOrder::Equal | VvOrder::Before => Decision::Ignore,
        VvOrder::After => Decision::Take {
            version: remote.version.clone(),
            keep_ours_as_conflict: false,
        },
        VvOrder::Concurrent => {
            if wins(remote, local) {
                Decision::Take {
                    version: remote.version.merge(&local.version),
                    keep_ours_as_conflict: local.is_live_file()
                        && !(remote.kind == EntryKind::File && remote.hash == local.hash),
                }
            } else {
                Decision::Ignore
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_common::{ContentHash, NodeId, RelPath};

    fn entry(vv: &[(NodeId, u64)], mtime: i64, content: &str, deleted: bool) -> FileEntry {
        let mut version = VersionVector::new();
        for &(n, c) in vv {
            version.set(n, c);
        }
        FileEntry {
            path: RelPath::new("f").unwrap(),
            kind: EntryKind::File,
            size: content.len() as u64,
            mtime_ns: mtime,
            mode: 0o644,
            hash: ContentHash::of(content.as_bytes()),
            blocks: vec![],
            version,
            deleted,
        }
    }

    #[test]
    fn decision_table() {
        let (a, b) = (NodeId::random(), NodeId::random());
        let take = |v: &FileEntry| Decision::Take {
            version: v.version.clone(),
            keep_ours_as_conflict: false,
        };
        // Unknown path: take whatever comes, tombstones included.
        let r = entry(&[(a, 1)], 5, "x", false);
        assert_eq!(plan(None, &r), take(&r));
        let t = entry(&[(a, 1)], 5, "", true);
        assert_eq!(plan(None, &t), take(&t));

        // A sequential edit with an OLDER mtime still wins: history beats clocks.
        let ours = entry(&[(a, 1)], 100, "old", false);
        let newer_history = entry(&[(a, 1), (b, 2)], 50, "new", false);
        assert_eq!(plan(Some(&ours), &newer_history), take(&newer_history));
        assert_eq!(plan(Some(&newer_history), &ours), Decision::Ignore);
        assert_eq!(plan(Some(&ours), &ours.clone()), Decision::Ignore);

        // Concurrent edits: the newer mtime wins; the loser is kept.
        let mine = entry(&[(a, 2)], 100, "mine", false);
        let theirs = entry(&[(a, 1), (b, 2)], 200, "theirs", false);
        match plan(Some(&mine), &theirs) {
            Decision::Take {
                version,
                keep_ours_as_conflict,
            } => {
                assert!(keep_ours_as_conflict);
                assert_eq!(version.compare(&mine.version), VvOrder::After);
                assert_eq!(version.compare(&theirs.version), VvOrder::After);
            }
            d => panic!("expected take, got {d:?}"),
        }
        assert_eq!(plan(Some(&theirs), &mine), Decision::Ignore);

        // Delete vs concurrent modify: the modification survives, even if older.
        let del = entry(&[(a, 2)], 900, "", true);
        let edit = entry(&[(a, 1), (b, 2)], 1, "edit", false);
        assert!(matches!(
            plan(Some(&del), &edit),
            Decision::Take {
                keep_ours_as_conflict: false,
                ..
            }
        ));
        assert_eq!(plan(Some(&edit), &del), Decision::Ignore);

        // Same content concurrently: no conflict copy needed.
        let s1 = entry(&[(a, 2)], 100, "same", false);
        let s2 = entry(&[(a, 1), (b, 2)], 200, "same", false);
        assert!(matches!(
            plan(Some(&s1), &s2),
            Decision::Take {
                keep_ours_as_conflict: false,
                ..
            }
        ));
    }

    #[test]
    fn exact_tie_is_decided_the_same_everywhere() {
        let (a, b) = (NodeId::random(), NodeId::random());
        let x = entry(&[(a, 1)], 100, "x", false);
        let y = entry(&[(b, 1)], 100, "y", false);
        // Exactly one direction takes.
        let xy = matches!(plan(Some(&x), &y), Decision::Take { .. });
        let yx = matches!(plan(Some(&y), &x), Decision::Take { .. });
        assert!(xy ^ yx);
        // Two concurrent deletions with identical fields still resolve one way.
        let d1 = entry(&[(a, 2)], 100, "", true);
        let d2 = entry(&[(b, 2)], 100, "", true);
        let t1 = matches!(plan(Some(&d1), &d2), Decision::Take { .. });
        let t2 = matches!(plan(Some(&d2), &d1), Decision::Take { .. });
        assert!(t1 ^ t2);
    }
}
