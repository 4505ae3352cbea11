//! PURE sync decisions: given what this node has at a path and what a peer
//! announces, decide what to do. No I/O, so every rule is table-tested and
//! property-tested (node/tests/planner_prop.rs).
//!
//! Rules (see ARCHITECTURE.md, "How sync decides"):
//! - remote dominates ours (version vectors) → take it, whatever its mtime;
//! - ours dominates, or equal → nothing;
//! - concurrent vectors, but one side's *content* was already seen by the
//!   other (its write's dot is covered by the other's vector) → the side
//!   that saw it and moved on wins, without a conflict copy. This happens
//!   after a conflict: the winner's vector is a merge, so a later change
//!   made on top of the winning content would otherwise look concurrent
//!   with it and the old content (or a deleted file) could come back;
//! - a true conflict → a live version beats a deletion, then the newer
//!   mtime, the larger content hash, the kind, the mode, and finally the
//!   larger version vector; every node computes the same winner. The
//!   winner's version becomes the merge of both vectors, dominating both.

use std::cmp::Ordering;

use tandem_common::model::Dot;
use tandem_common::{EntryKind, FileEntry, VersionVector, VvOrder};

/// Of two writes of the same bytes, the one to remember: a write not yet
/// overwritten by its author (in `v`), the later one first; the same choice
/// on every node.
fn best_dot(a: Dot, b: Dot, v: &VersionVector) -> Dot {
    let alive = |d: &Dot| !d.superseded_in(v);
    let key = |d: &Dot| (alive(d), d.counter, d.node);
    if key(&a) >= key(&b) { a } else { b }
}

fn same_bytes(a: &FileEntry, b: &FileEntry) -> bool {
    a.deleted == b.deleted && a.kind == b.kind && a.hash == b.hash
}

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
        /// The write to record as this content's origin (the remote's,
        /// unless both sides wrote the same bytes and the remote's write was
        /// already overwritten).
        written: Dot,
        /// This settles a conflict: the taking node adds an event of its own
        /// to `version` (merge + increment), so two nodes that settle the
        /// same pair of histories differently never end up with equal
        /// vectors for different content.
        bump: bool,
    },
    /// Ours wins because the peer's content is something we already saw and
    /// replaced; record ours with `version` (the merge of both) so the peer
    /// takes it.
    Reassert {
        /// Our new version.
        version: VersionVector,
    },
}

/// Total order used to pick a conflict's winner; larger wins.
pub fn conflict_key(e: &FileEntry) -> impl Ord + '_ {
    let vv: Vec<(tandem_common::NodeId, u64)> = e.version.iter().collect();
    let kind = match e.kind {
        EntryKind::Dir => 0u8,
        EntryKind::File => 1,
    };
    (!e.deleted, e.mtime_ns, e.hash, kind, e.mode, vv)
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
            written: remote.written,
            bump: false,
        };
    };
    match remote.version.compare(&local.version) {
        VvOrder::Equal | VvOrder::Before => Decision::Ignore,
        VvOrder::After => Decision::Take {
            version: remote.version.clone(),
            keep_ours_as_conflict: false,
            written: remote.written,
            bump: false,
        },
        VvOrder::Concurrent => {
            let merged = remote.version.merge(&local.version);
            // Obsolete: the content's own author wrote over it later, and
            // the other side knows. Strongest evidence, checked first.
            let theirs_dead = remote.written.superseded_in(&local.version);
            let ours_dead = local.written.superseded_in(&remote.version);
            let we_saw_theirs = remote.written.seen_by(&local.version);
            let they_saw_ours = local.written.seen_by(&remote.version);
            let remote_wins = match (theirs_dead, ours_dead, we_saw_theirs, they_saw_ours) {
                (true, false, _, _) => false,
                (false, true, _, _) => true,
                (_, _, true, false) => false,
                (_, _, false, true) => true,
                // Both or neither: a real conflict (or the same knowledge
                // twice): decide it the same way everywhere.
                _ => wins(remote, local),
            };
            // Both dead: each side's content was overwritten by a change
            // that itself lost a conflict (a cycle no rule can order); decide
            // by the conflict rule and keep the loser, so nothing is lost.
            let both_dead = theirs_dead && ours_dead;
            let we_saw_theirs = we_saw_theirs || theirs_dead;
            let they_saw_ours = they_saw_ours || ours_dead;
            let true_conflict = both_dead || (!we_saw_theirs && !they_saw_ours);
            if remote_wins {
                // Our own dots die with the bump below, so the remote's write
                // is the one to remember whenever it is still alive.
                let written = if same_bytes(remote, local) && remote.written.superseded_in(&merged)
                {
                    best_dot(remote.written, local.written, &merged)
                } else {
                    remote.written
                };
                Decision::Take {
                    keep_ours_as_conflict: true_conflict
                        && local.is_live_file()
                        && !(remote.kind == EntryKind::File && remote.hash == local.hash),
                    version: merged,
                    written,
                    bump: true,
                }
            } else if (theirs_dead && !ours_dead) || (we_saw_theirs && !they_saw_ours) {
                Decision::Reassert { version: merged }
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
        // The write is the last pair's: the node that made this version.
        let written = vv
            .last()
            .map(|&(n, c)| tandem_common::model::Dot {
                node: Some(n),
                counter: c,
            })
            .unwrap_or_default();
        FileEntry {
            written,
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
            written: v.written,
            bump: false,
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
                ..
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
    fn a_merged_winner_does_not_beat_a_later_change_to_it() {
        let (a, b) = (NodeId::random(), NodeId::random());
        // a wrote c1 ({a:1}); b took it in a conflict and merged: {a:1, b:1},
        // still a's write.
        let mut merged = entry(&[(b, 1), (a, 1)], 10, "c1", false);
        assert_eq!(merged.written.node, Some(a));
        // Meanwhile a deleted it on top of c1: {a:2}.
        let deleted = entry(&[(a, 2)], 10, "", true);
        // At a: b's merged entry brings nothing new; a re-asserts its delete.
        match plan(Some(&deleted), &merged) {
            Decision::Reassert { version } => {
                assert_eq!(version.compare(&merged.version), VvOrder::After);
            }
            d => panic!("expected reassert, got {d:?}"),
        }
        // At b: a's delete was made on top of the content b has: take it,
        // no conflict copy.
        assert_eq!(
            plan(Some(&merged), &deleted),
            Decision::Take {
                version: merged.version.merge(&deleted.version),
                keep_ours_as_conflict: false,
                written: deleted.written,
                bump: true,
            }
        );
        // Same with a later edit carrying an OLDER mtime.
        let edit = entry(&[(a, 2)], 1, "c2", false);
        assert!(matches!(
            plan(Some(&edit), &merged),
            Decision::Reassert { .. }
        ));
        merged.mtime_ns = 1_000;
        assert!(matches!(
            plan(Some(&merged), &edit),
            Decision::Take {
                keep_ours_as_conflict: false,
                ..
            }
        ));
    }

    #[test]
    fn mode_breaks_ties_before_vectors() {
        let (a, b) = (NodeId::random(), NodeId::random());
        let mut x = entry(&[(a, 1)], 100, "same", false);
        let mut y = entry(&[(b, 1)], 100, "same", false);
        x.mode = 0o600;
        y.mode = 0o644;
        assert!(wins(&y, &x));
        assert!(matches!(plan(Some(&x), &y), Decision::Take { .. }));
        assert_eq!(plan(Some(&y), &x), Decision::Ignore);
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
