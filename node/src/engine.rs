//! PURE sync decisions: given what this node has at a path, what a peer
//! announces, the lock state and what the disk here shows, decide the whole
//! action. No I/O, so every rule is table-tested and property-tested
//! (node/tests/planner_prop.rs). The core asks [`decide`] when an entry
//! arrives and again just before carrying the action out (the disk or our
//! version may have changed meanwhile); it never decides by itself.
//!
//! [`plan`] is the version-vector part (which history wins); [`decide`]
//! wraps it with everything else: malformed or overflowing entries are
//! rejected, a locked path holds the change, something of another kind in
//! the way (a socket or fifo, a parent that is a link or a file) blocks it, and
//! the operation that makes the disk match (fetch, delete, make a folder,
//! set metadata) is named.
//!
//! Rules (see ARCHITECTURE.md, "How sync decides"):
//! - remote dominates ours (version vectors) → take it, whatever its mtime;
//! - ours dominates, or equal → nothing;
//! - concurrent vectors, but one side's content was *replaced* in the
//!   other's history (the other has seen every write of it and keeps none
//!   live: someone overwrote or deleted it) → the other side wins, without a
//!   conflict copy. This happens after a conflict: the winner's vector is a
//!   merge, so a later change made on top of the winning content would
//!   otherwise look concurrent with it and old content (or a deleted file)
//!   could come back;
//! - a true conflict → a live version beats a deletion, a folder beats a
//!   file, then the newer mtime, the larger content hash, the mode, and
//!   finally the larger version vector; every node computes the same
//!   winner. The winner's version becomes the merge of both vectors,
//!   dominating both; the node whose version won announces it again so the
//!   loser's node decides the same conflict. When both entries are the same
//!   but for their history (the same content, mode and mtime; two folders
//!   of one mode) the winner's node also records the merge itself
//!   ([`Decision::Reassert`]): both writes live on in its version, so its
//!   next change (a delete, say) builds on both and is not taken for one
//!   concurrent with the other's.
//!
//! "Replaced" needs more than a vector: each entry also lists the writes
//! whose content it shows ([`FileEntry::written`]; several when the same
//! bytes were written concurrently) and the writes that lost a conflict but
//! that no one has written over yet ([`FileEntry::losers`]). Together that
//! is a dotted version vector with its live set: a write the vector covers
//! that is in neither list was replaced, by whichever node. A loser stays
//! live because the content that beat it may itself be overwritten or
//! deleted later; then the loser, not the replaced winner, is what the
//! merged histories keep. A local change replaces all of them (the user saw
//! the winner, and every loser was kept aside as a conflict copy).
//!
//! Both sides replaced in each other's history is a cycle (each side's
//! content was overwritten by a change that itself lost a conflict to it);
//! what is live then is content neither side shows, so it is decided like a
//! conflict and the loser is kept.

use std::cmp::Ordering;

use tandem_common::model::Writes;
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
        /// The writes to record as this content's origin: the remote's,
        /// plus ours when both sides wrote the same bytes concurrently.
        written: Writes,
        /// The other live writes of the merged history.
        losers: Writes,
        /// This settles a conflict: the taking node adds an event of its own
        /// to `version` (merge + increment), so two nodes that settle the
        /// same pair of histories differently never end up with equal
        /// vectors for different content.
        bump: bool,
    },
    /// Ours wins a true conflict over other content (or other metadata):
    /// announce ours again, unchanged (a new sequence number, the same
    /// version), so the peer, which may never hear of it otherwise, decides
    /// the same conflict and keeps its loser. Without this, a peer whose
    /// losing version was ignored here can replace it (say, delete it) and
    /// never learn that ours beat it.
    Announce,
    /// Ours wins because the peer's content is something we already saw and
    /// replaced, or because the peer's entry is ours exactly but for its
    /// history (`same`); record ours with `version` (the merge of both) so
    /// the peer takes it.
    Reassert {
        /// Our new version.
        version: VersionVector,
        /// Our writes still live in the merged history (and, when `same`,
        /// the peer's writes of the same entry).
        written: Writes,
        /// The other live writes of the merged history.
        losers: Writes,
        /// The peer's entry differs from ours in its history only.
        same: bool,
    },
}

/// Total order used to pick a conflict's winner; larger wins. A live
/// version beats a delete; a folder beats a file of the same name (the file
/// is kept as a conflict copy, while a folder may hold files of other
/// nodes that a file could only replace by deleting them); then the newer
/// mtime, the larger hash, the mode, and the larger vector.
pub fn conflict_key(e: &FileEntry) -> impl Ord + '_ {
    let vv: Vec<(tandem_common::NodeId, u64)> = e.version.iter().collect();
    let is_dir = e.kind == EntryKind::Dir;
    (!e.deleted, is_dir, e.mtime_ns, e.hash, e.mode, vv)
}

/// True when `a` beats `b` in a conflict.
pub fn wins(a: &FileEntry, b: &FileEntry) -> bool {
    conflict_key(a).cmp(&conflict_key(b)) == Ordering::Greater
}

fn same_bytes(a: &FileEntry, b: &FileEntry) -> bool {
    a.deleted == b.deleted && a.kind == b.kind && a.hash == b.hash
}

fn take_as_is(remote: &FileEntry) -> Decision {
    Decision::Take {
        version: remote.version.clone(),
        keep_ours_as_conflict: false,
        written: remote.written.clone(),
        losers: remote.losers.clone(),
        bump: false,
    }
}

/// Decides what to do with `remote`, given our entry at the same path.
pub fn plan(local: Option<&FileEntry>, remote: &FileEntry) -> Decision {
    let Some(local) = local else {
        return take_as_is(remote);
    };
    match remote.version.compare(&local.version) {
        VvOrder::Equal | VvOrder::Before => Decision::Ignore,
        VvOrder::After => take_as_is(remote),
        VvOrder::Concurrent => {
            let merged = remote.version.merge(&local.version);
            let live = remote.merged_live(local);
            let theirs_replaced = remote.replaced_in(local);
            let ours_replaced = local.replaced_in(remote);
            // Neither replaced: a real conflict. Both: a cycle, decided the
            // same way (and the loser kept) since no history orders it.
            let true_conflict = theirs_replaced == ours_replaced;
            let remote_wins = if true_conflict {
                wins(remote, local)
            } else {
                ours_replaced
            };
            let (winner, loser) = if remote_wins {
                (remote, local)
            } else {
                (local, remote)
            };
            // The winner's writes that stay live; the same bytes written on
            // the other side too live on in it (neither was overwritten).
            // In a cycle none is live: keep them shown all the same.
            let mut written = winner.written.filter(|d| live.contains(d));
            if true_conflict && !theirs_replaced && same_bytes(winner, loser) {
                written = written.union(&loser.written.filter(|d| live.contains(d)));
            }
            if written.is_empty() {
                written = winner.written.clone();
            }
            let losers = live.filter(|d| !written.contains(d));
            // Ours wins over an entry that is ours but for its history (the
            // same content, mode and mtime; a folder each, as folders are
            // recorded without an mtime): both writes live on in ours, so
            // ours is recorded with the merged history. Announced
            // unchanged, a later change here (a delete) would build on our
            // write alone and be concurrent with theirs, which would then
            // win over it (a live version beats a deletion) and come back.
            // Only an identical entry: two nodes that each merged a
            // different pair of entries differing in mode or mtime could
            // otherwise hold equal vectors for different entries (the
            // bump of a `Take` is what keeps those apart).
            let merge_ours = true_conflict
                && !theirs_replaced
                && same_bytes(local, remote)
                && local.mode == remote.mode
                && local.mtime_ns == remote.mtime_ns;
            if remote_wins {
                Decision::Take {
                    keep_ours_as_conflict: true_conflict
                        && (local.is_live_file() || local.live_link().is_some())
                        && !(remote.kind == local.kind && remote.hash == local.hash),
                    version: merged,
                    written,
                    losers,
                    bump: true,
                }
            } else if !true_conflict || merge_ours {
                Decision::Reassert {
                    version: merged,
                    written,
                    losers,
                    same: merge_ours,
                }
            } else {
                Decision::Announce
            }
        }
    }
}

/// Counters above this are refused in entries from peers: a node adds 1 to
/// the largest counter it has seen, so one near `u64::MAX` would wrap.
/// 2^62 leaves room for more writes than any cluster will make.
pub const MAX_COUNTER: u64 = 1 << 62;

/// What the disk here shows at the path, looked at just before deciding
/// (after the core brought the index in line with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskFacts {
    /// The index describes the disk at this path.
    Indexed,
    /// Something Tandem does not sync has the name: a socket, a fifo, a
    /// device. It is never written, deleted or chmod-ed through.
    OtherKind,
    /// A parent of the path is a symlink or a file here.
    ParentNotDir,
    /// Another spelling of the path, or of one of its folders, is here, and
    /// this file system takes the two for one name (see [`crate::names`]).
    OtherSpelling(crate::names::Clash),
}

/// How a node takes part in the cluster (`tandem-node --mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Sends its changes and takes the others'.
    #[default]
    SendReceive,
    /// Sends its changes, never takes the others': a peer's change is
    /// declined ([`Action::Declined`]) and stays shown until this node's
    /// version is pushed over it (`tandem override`) or it goes.
    SendOnly,
    /// Takes the others' changes, never sends its own: a change made here
    /// stays here, shown, until thrown away (`tandem revert`); a peer's
    /// newer change beats it (it is kept as a conflict copy).
    ReceiveOnly,
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "send-receive" => Ok(Mode::SendReceive),
            "send-only" => Ok(Mode::SendOnly),
            "receive-only" => Ok(Mode::ReceiveOnly),
            _ => Err(format!(
                "{s:?} is not a mode: use send-receive, send-only or receive-only"
            )),
        }
    }
}

impl Mode {
    /// The mode as `--mode` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::SendReceive => "send-receive",
            Mode::SendOnly => "send-only",
            Mode::ReceiveOnly => "receive-only",
        }
    }
}

/// The rest of what a decision depends on.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// What the disk shows.
    pub disk: DiskFacts,
    /// The path is locked (changes from elsewhere are held).
    pub locked: bool,
    /// The version already queued to be applied at this path, if any.
    pub queued: Option<&'a VersionVector>,
    /// The path matches an ignore pattern here (see [`crate::ignores`]).
    pub ignored: bool,
    /// How this node takes part.
    pub mode: Mode,
    /// Our entry is a change made here that was never sent (a receive-only
    /// node's): it never wins against a peer's change.
    pub ours_unsent: bool,
}

/// Why a peer's entry is refused outright (bad input changes nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// A live file's block list matches neither its size nor "left out".
    #[error("{blocks} block hashes for {size} bytes")]
    BlockList {
        /// Hashes sent.
        blocks: usize,
        /// Size announced.
        size: u64,
    },
    /// A version counter so large that counting on would wrap.
    #[error("a version counter of {0} (above the limit of {MAX_COUNTER})")]
    CounterOverflow(u64),
    /// A link whose target no link can have.
    #[error("{0}")]
    LinkTarget(tandem_common::model::LinkTargetError),
    /// A link whose hash is not its target's (versions would be compared
    /// wrongly).
    #[error("a link whose hash is not its target's")]
    LinkHash,
    /// The ignore file as something other than a file.
    #[error("a {} that is not a regular file", crate::ignores::IGNORE_FILE)]
    IgnoreFileKind,
}

/// Why a change that should be applied cannot be, here and now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Obstacle {
    /// Something Tandem does not sync (a socket, a fifo, a device) has the
    /// name.
    #[error(
        "something that is not a regular file, folder or link (a socket? a fifo?) has this name here; move it away to let the change in"
    )]
    OtherKind,
    /// A parent is a symlink or a file.
    #[error("a parent folder here is a symlink or a file; move it away to let the change in")]
    ParentNotDir,
    /// Another spelling of the name is here and the file system cannot hold
    /// both: writing this one would overwrite that one.
    #[error("{0}; rename one of them (on a node that has both) to let both in")]
    OtherSpelling(crate::names::Clash),
}

/// What carrying out a decision does to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Get the content (from local blocks and peers) and install it.
    Fetch,
    /// Remove the file or (empty) folder, then record the tombstone.
    Delete,
    /// Make the folder (replacing a file, kept aside if it lost a conflict).
    MakeDir,
    /// Same content: set mtime and mode.
    SetMeta,
    /// Make the link (replacing what is there, kept aside if it lost a
    /// conflict; a folder only if it is empty).
    MakeLink,
}

/// A remote version to make ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Apply {
    /// The entry to end with: the remote's content, with the planned
    /// version, writes and losers.
    pub entry: FileEntry,
    /// Add an event of this node to the version first (settling a conflict).
    pub bump: bool,
    /// Our current content loses a conflict: move it aside first.
    pub keep_ours_as_conflict: bool,
    /// `entry` is exactly the remote's (so it is not announced back to it).
    pub exact: bool,
    /// What to do to the disk.
    pub op: Op,
}

/// The whole decision about a remote entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ours is the same, newer, wins, or the same version is queued.
    Ignore,
    /// The path is ignored here: nothing is applied or kept queued, whatever
    /// the versions say (what was queued for it is dropped).
    Excluded,
    /// Refused: a malformed or dangerous entry.
    Reject(Invalid),
    /// Ours wins a true conflict: announce it again (see
    /// [`Decision::Announce`]; also an identical entry on a locked path).
    Announce,
    /// Keep ours, recorded with a merged version (see [`Decision::Reassert`]).
    Reassert {
        /// Our new version.
        version: VersionVector,
        /// Our writes still live (and the peer's of an identical entry).
        written: Writes,
        /// Other live writes.
        losers: Writes,
    },
    /// The path is locked: hold the change until unlock.
    Hold,
    /// Take it, but the disk here is in the way: keep it queued, show it,
    /// look again later.
    Blocked(Apply, Obstacle),
    /// Take it.
    Apply(Apply),
    /// This node is send-only: it would take it, but does not. Kept and
    /// shown as a difference (see [`Mode::SendOnly`]).
    Declined,
}

fn check(remote: &FileEntry) -> Result<(), Invalid> {
    let blocks_ok = if remote.is_live_file() {
        (remote.blocks.is_empty() && tandem_common::blocklist::list_fits(remote.size))
            || remote.blocks.len() == tandem_common::blocklist::block_count(remote.size)
    } else {
        remote.blocks.is_empty() || remote.deleted
    };
    if !blocks_ok {
        return Err(Invalid::BlockList {
            blocks: remote.blocks.len(),
            size: remote.size,
        });
    }
    if remote.path.as_str() == crate::ignores::IGNORE_FILE
        && !remote.deleted
        && remote.kind != EntryKind::File
    {
        // Every node must be able to read it as a file (it is refused as
        // anything else when the node starts).
        return Err(Invalid::IgnoreFileKind);
    }
    if let EntryKind::Link(target) = &remote.kind {
        tandem_common::model::check_link_target(target).map_err(Invalid::LinkTarget)?;
        // A tombstone's hash is no content's.
        if !remote.deleted && remote.hash != tandem_common::ContentHash::of(target.as_bytes()) {
            return Err(Invalid::LinkHash);
        }
    }
    let counters = remote
        .version
        .iter()
        .map(|(_, c)| c)
        .chain(remote.written.iter().map(|d| d.counter))
        .chain(remote.losers.iter().map(|d| d.counter));
    match counters.max() {
        Some(c) if c > MAX_COUNTER => Err(Invalid::CounterOverflow(c)),
        _ => Ok(()),
    }
}

/// True when a peer's entry with version `remote` may take the place of
/// the version `queued` at its path: unless it is the same or older. A
/// repeated or late message must never put back a version the queue has
/// moved past: the peer's sequence is already acknowledged beyond the newer
/// one, so nothing would send it again. [`decide`] ignores such an entry;
/// the core applies the same rule when it queues an entry undecided (the
/// disk could not be read).
pub fn replaces_queued(remote: &VersionVector, queued: Option<&VersionVector>) -> bool {
    queued.is_none_or(|q| !matches!(remote.compare(q), VvOrder::Equal | VvOrder::Before))
}

/// True when taking `remote` changes nothing on our disk: the same
/// content, kind, mode and mtime as ours (a newer version of it, as when
/// a peer settled a conflict ours won), or a delete of what we do not
/// have. A send-only node takes those: declining them would show a
/// difference where there is none.
fn changes_nothing(local: Option<&FileEntry>, remote: &FileEntry) -> bool {
    match local.filter(|l| !l.deleted) {
        Some(l) => {
            !remote.deleted
                && remote.kind == l.kind
                && remote.hash == l.hash
                && remote.mode == l.mode
                && remote.mtime_ns == l.mtime_ns
        }
        None => remote.deleted,
    }
}

/// Decides what to do with `remote`, given our entry at the same path and
/// the context. See the module docs.
pub fn decide(local: Option<&FileEntry>, remote: &FileEntry, cx: &Context<'_>) -> Action {
    if let Err(e) = check(remote) {
        return Action::Reject(e);
    }
    if cx.ignored {
        return Action::Excluded;
    }
    if !replaces_queued(&remote.version, cx.queued) {
        return Action::Ignore;
    }
    let mut decision = plan(local, remote);
    if let Some(l) = local.filter(|_| cx.ours_unsent && cx.mode == Mode::ReceiveOnly)
        && matches!(remote.version.compare(&l.version), VvOrder::Concurrent)
    {
        // A change never sent loses to any change made elsewhere that did
        // not build on it (none did: it was never sent); it is kept.
        let differs = !(remote.kind == l.kind && remote.hash == l.hash && !remote.deleted);
        decision = Decision::Take {
            version: remote.version.clone(),
            keep_ours_as_conflict: differs && (l.is_live_file() || l.live_link().is_some()),
            written: remote.written.clone(),
            losers: remote.losers.clone(),
            bump: false,
        };
    }
    if cx.mode == Mode::SendOnly
        && matches!(decision, Decision::Take { .. })
        && !changes_nothing(local, remote)
    {
        return Action::Declined;
    }
    let (version, keep_ours_as_conflict, written, losers, bump) = match decision {
        Decision::Ignore => return Action::Ignore,
        Decision::Announce => return Action::Announce,
        // Locked: nothing recorded; the peer still hears ours won.
        Decision::Reassert { same: true, .. } if cx.locked => return Action::Announce,
        Decision::Reassert { .. } if cx.locked => return Action::Ignore,
        Decision::Reassert {
            version,
            written,
            losers,
            ..
        } => {
            return Action::Reassert {
                version,
                written,
                losers,
            };
        }
        Decision::Take { .. } if cx.locked => return Action::Hold,
        Decision::Take {
            version,
            keep_ours_as_conflict,
            written,
            losers,
            bump,
        } => (version, keep_ours_as_conflict, written, losers, bump),
    };
    let exact =
        !bump && version == remote.version && written == remote.written && losers == remote.losers;
    let entry = FileEntry {
        version,
        written,
        losers,
        ..remote.clone()
    };
    let local_live = local.filter(|l| !l.deleted);
    let op = if entry.deleted {
        Op::Delete
    } else if entry.kind == EntryKind::Dir {
        Op::MakeDir
    } else if matches!(entry.kind, EntryKind::Link(_)) {
        Op::MakeLink
    } else if local_live.is_some_and(|l| l.kind == EntryKind::File && l.hash == entry.hash) {
        Op::SetMeta
    } else {
        Op::Fetch
    };
    let apply = Apply {
        entry,
        bump,
        keep_ours_as_conflict,
        exact,
        op,
    };
    // Recording a tombstone where nothing of ours is touches no disk.
    let touches_disk = op != Op::Delete || local_live.is_some();
    match &cx.disk {
        DiskFacts::Indexed => Action::Apply(apply),
        _ if !touches_disk => Action::Apply(apply),
        DiskFacts::OtherKind => Action::Blocked(apply, Obstacle::OtherKind),
        DiskFacts::ParentNotDir => Action::Blocked(apply, Obstacle::ParentNotDir),
        DiskFacts::OtherSpelling(c) => Action::Blocked(apply, Obstacle::OtherSpelling(c.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_common::model::{Dot, LinkTargetError};
    use tandem_common::{ContentHash, NodeId, RelPath};

    fn entry(vv: &[(NodeId, u64)], mtime: i64, content: &str, deleted: bool) -> FileEntry {
        let mut version = VersionVector::new();
        for &(n, c) in vv {
            version.set(n, c);
        }
        // The write is the last pair's: the node that made this version.
        let written = vv
            .last()
            .map(|&(n, c)| Dot {
                node: Some(n),
                counter: c,
            })
            .unwrap_or_default()
            .into();
        let losers = Default::default();
        FileEntry {
            written,
            losers,
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

    /// A folder an install made here for a peer's file, over our older
    /// deletion of the path (as the core hands it to the engine: the
    /// deletion's history, no write of ours): the peer's folder is taken
    /// without a conflict, and the peer's later deletion, concurrent with
    /// our old one, removes it (a folder recorded as a write of ours would
    /// beat that deletion and come back).
    #[test]
    fn a_folder_made_for_a_peers_file_over_our_deletion_is_not_ours() {
        let (us, peer) = (NodeId::random(), NodeId::random());
        let dir = |mut e: FileEntry| {
            e.kind = EntryKind::Dir;
            e.size = 0;
            e.hash = ContentHash::default();
            e
        };
        let mut made = dir(entry(&[(us, 3)], 0, "", false));
        made.written = Default::default();
        let theirs = dir(entry(&[(peer, 5)], 0, "", false));
        let Decision::Take {
            version,
            written,
            keep_ours_as_conflict,
            ..
        } = plan(Some(&made), &theirs)
        else {
            panic!(
                "the peer's folder is not taken: {:?}",
                plan(Some(&made), &theirs)
            );
        };
        assert!(!keep_ours_as_conflict);
        assert_eq!(written, theirs.written, "no write of ours in it");
        let taken = FileEntry {
            version,
            written,
            ..theirs.clone()
        };
        // The peer deletes it without having seen our old deletion.
        let gone = dir(entry(&[(peer, 6)], 0, "", true));
        assert!(
            matches!(plan(Some(&taken), &gone), Decision::Take { .. }),
            "the peer's deletion does not remove it: {:?}",
            plan(Some(&taken), &gone)
        );
        // Straight from the made folder, too.
        assert!(matches!(plan(Some(&made), &gone), Decision::Take { .. }));
        // A folder recorded as made here (a write of ours) would win.
        let ours = dir(entry(&[(us, 4)], 0, "", false));
        assert!(!matches!(plan(Some(&ours), &gone), Decision::Take { .. }));
    }

    #[test]
    fn decision_table() {
        let (a, b) = (NodeId::random(), NodeId::random());
        let take = |v: &FileEntry| Decision::Take {
            version: v.version.clone(),
            keep_ours_as_conflict: false,
            written: v.written.clone(),
            losers: v.losers.clone(),
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
        assert_eq!(plan(Some(&theirs), &mine), Decision::Announce);

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
        assert_eq!(plan(Some(&edit), &del), Decision::Announce);

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
        assert_eq!(merged.written.iter().collect::<Vec<_>>(), vec![dot(a, 1)]);
        // Meanwhile a deleted it on top of c1: {a:2}.
        let deleted = entry(&[(a, 2)], 10, "", true);
        // At a: b's merged entry brings nothing new; a re-asserts its delete.
        match plan(Some(&deleted), &merged) {
            Decision::Reassert { version, .. } => {
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
                written: deleted.written.clone(),
                losers: Default::default(),
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

    fn dot(n: NodeId, c: u64) -> Dot {
        Dot {
            node: Some(n),
            counter: c,
        }
    }

    #[test]
    fn an_overwrite_survives_taking_the_same_bytes_from_elsewhere() {
        // The 4-node chain proptest found. n1 wrote c1 (n1@1). n3 took it and
        // wrote c0 over it (n3@2); then took n0's concurrent write of the
        // same bytes c0 (n0@1, winning on mode).
        let (n0, n1, n2, n3) = (
            NodeId::random(),
            NodeId::random(),
            NodeId::random(),
            NodeId::random(),
        );
        let ours = entry(&[(n1, 1), (n3, 2)], 0, "c0", false);
        let mut zero = entry(&[(n0, 1)], 0, "c0", false);
        zero.mode = 0o755;
        let Decision::Take {
            version, written, ..
        } = plan(Some(&ours), &zero)
        else {
            panic!("expected take");
        };
        assert_eq!(written, vec![dot(n0, 1), dot(n3, 2)].into(), "both live");
        let n3_now = FileEntry {
            version,
            written,
            ..zero.clone()
        };
        // n2 settled n1's c1 (newer mtime) against n0's c0: c0 is a loser.
        let mut settled = entry(&[(n0, 1), (n1, 1), (n2, 2)], 1, "c1", false);
        settled.written = dot(n1, 1).into();
        settled.losers = dot(n0, 1).into();
        // At n3, c1 is content it wrote over: it must not come back.
        assert!(matches!(
            plan(Some(&n3_now), &settled),
            Decision::Reassert { .. }
        ));
        assert!(matches!(
            plan(Some(&settled), &n3_now),
            Decision::Take {
                keep_ours_as_conflict: false,
                ..
            }
        ));
    }

    #[test]
    fn a_loser_comes_back_when_its_winner_is_deleted() {
        let (a, b) = (NodeId::random(), NodeId::random());
        // At a: b's c0 (b@1, newer) beat a's c1 (a@1), kept aside.
        let mut at_a = entry(&[(a, 2), (b, 1)], 1, "c0", false);
        at_a.written = dot(b, 1).into();
        at_a.losers = dot(a, 1).into();
        // At b: b deleted c0 (b@2); a's c1 then beat the delete.
        let mut at_b = entry(&[(a, 1), (b, 3)], 0, "c1", false);
        at_b.written = dot(a, 1).into();
        at_b.losers = dot(b, 2).into();
        // c0 was deleted by b; c1 only lost to it: c1 is what lives on.
        match plan(Some(&at_a), &at_b) {
            Decision::Take {
                keep_ours_as_conflict,
                written,
                losers,
                ..
            } => {
                assert!(!keep_ours_as_conflict);
                assert_eq!(written, dot(a, 1).into());
                assert_eq!(losers, dot(b, 2).into());
            }
            d => panic!("expected take, got {d:?}"),
        }
        assert!(matches!(
            plan(Some(&at_b), &at_a),
            Decision::Reassert { .. }
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
        // Other modes: the loser's node settles it (with a bump).
        assert_eq!(plan(Some(&y), &x), Decision::Announce);
    }

    /// Chaos chain3 seed 66: A made a folder (a file installed there made
    /// it; A's scan took it for A's own) while C's folder of that name was
    /// on its way; A's won the tie. A then deleted the folder; C's folder,
    /// relayed by B after the delete, came back everywhere: A had
    /// announced its folder unchanged, so its delete built on A's write
    /// alone and was concurrent with C's, and a live folder beats a
    /// deletion. The winner now records the merge, and its delete
    /// dominates C's folder.
    #[test]
    fn a_folder_made_on_two_nodes_then_deleted_on_one_stays_deleted() {
        let (a, c) = (NodeId::random(), NodeId::random());
        // Folders are recorded without an mtime: the vectors decide.
        let dir = |vv: &[(NodeId, u64)]| FileEntry {
            kind: EntryKind::Dir,
            size: 0,
            hash: ContentHash::default(),
            mode: 0o755,
            ..entry(vv, 0, "", false)
        };
        let (x, y) = (dir(&[(a, 1)]), dir(&[(c, 1)]));
        let (won, lost, winner) = if wins(&x, &y) { (x, y, a) } else { (y, x, c) };
        let Decision::Reassert {
            version,
            written,
            same: true,
            ..
        } = plan(Some(&won), &lost)
        else {
            panic!("expected the merge to be recorded");
        };
        assert_eq!(written, won.written.union(&lost.written), "both live");
        // The winner deletes the folder on top of what it recorded.
        let mut deleted = FileEntry {
            version,
            written,
            ..won.clone()
        };
        deleted.version.set(winner, 2);
        deleted.written = dot(winner, 2).into();
        deleted.deleted = true;
        // The other folder, arriving late, changes nothing; on its node the
        // delete wins.
        assert_eq!(plan(Some(&deleted), &lost), Decision::Ignore);
        assert!(matches!(
            plan(Some(&lost), &deleted),
            Decision::Take {
                keep_ours_as_conflict: false,
                ..
            }
        ));
        // Locked, nothing is recorded, and ours is announced as before.
        let locked = Context {
            locked: true,
            ..cx(DiskFacts::Indexed)
        };
        assert_eq!(decide(Some(&won), &lost, &locked), Action::Announce);
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

    fn cx(disk: DiskFacts) -> Context<'static> {
        Context {
            disk,
            locked: false,
            queued: None,
            ignored: false,
            mode: Mode::SendReceive,
            ours_unsent: false,
        }
    }

    #[test]
    fn decide_rejects_bad_entries() {
        let a = NodeId::random();
        let mut huge = entry(&[(a, u64::MAX - 1)], 5, "x", false);
        let fine = Context {
            ..cx(DiskFacts::Indexed)
        };
        assert!(matches!(
            decide(None, &huge, &fine),
            Action::Reject(Invalid::CounterOverflow(_))
        ));
        huge.version = entry(&[(a, 1)], 5, "x", false).version;
        huge.losers = dot(a, MAX_COUNTER + 1).into();
        assert!(matches!(
            decide(None, &huge, &fine),
            Action::Reject(Invalid::CounterOverflow(_))
        ));
        let mut bad = entry(&[(a, 1)], 5, "x", false);
        bad.blocks = vec![bad.hash; 3];
        assert!(matches!(
            decide(None, &bad, &fine),
            Action::Reject(Invalid::BlockList { blocks: 3, .. })
        ));
    }

    #[test]
    fn decide_names_the_operation() {
        let (a, b) = (NodeId::random(), NodeId::random());
        let fine = cx(DiskFacts::Indexed);
        let op = |l: Option<&FileEntry>, r: &FileEntry| match decide(l, r, &fine) {
            Action::Apply(a) => a.op,
            other => panic!("expected apply, got {other:?}"),
        };
        let ours = entry(&[(a, 1)], 5, "x", false);
        assert_eq!(op(None, &ours), Op::Fetch);
        let touched = entry(&[(a, 1), (b, 2)], 9, "x", false);
        assert_eq!(op(Some(&ours), &touched), Op::SetMeta);
        let changed = entry(&[(a, 1), (b, 2)], 9, "y", false);
        assert_eq!(op(Some(&ours), &changed), Op::Fetch);
        let gone = entry(&[(a, 1), (b, 2)], 9, "", true);
        assert_eq!(op(Some(&ours), &gone), Op::Delete);
        let mut dir = entry(&[(a, 1), (b, 2)], 9, "", false);
        dir.kind = EntryKind::Dir;
        assert_eq!(op(Some(&ours), &dir), Op::MakeDir);
        // Taken exactly as sent: not announced back to the sender.
        match decide(None, &ours, &fine) {
            Action::Apply(a) => assert!(a.exact && !a.bump),
            other => panic!("{other:?}"),
        }
    }

    fn link(vv: &[(NodeId, u64)], mtime: i64, target: &str) -> FileEntry {
        FileEntry {
            kind: EntryKind::Link(target.into()),
            size: 0,
            mode: 0,
            ..entry(vv, mtime, target, false)
        }
    }

    #[test]
    fn links_are_made_checked_and_lose_to_folders_as_conflict_copies() {
        let (a, b) = (NodeId::random(), NodeId::random());
        let fine = cx(DiskFacts::Indexed);
        let ours = entry(&[(a, 1)], 5, "x", false);
        // A link replacing our file (seen by its author): made, no copy.
        let l = link(&[(a, 1), (b, 2)], 9, "x");
        match decide(Some(&ours), &l, &fine) {
            Action::Apply(x) => assert!(x.op == Op::MakeLink && !x.keep_ours_as_conflict),
            other => panic!("{other:?}"),
        }
        // A link made concurrently with our newer file: ours wins; with an
        // older one, the link wins and our file is kept as a conflict copy.
        let concurrent = link(&[(b, 1)], 9, "target");
        assert_eq!(
            decide(Some(&entry(&[(a, 1)], 10, "x", false)), &concurrent, &fine),
            Action::Announce
        );
        match decide(Some(&ours), &concurrent, &fine) {
            Action::Apply(x) => assert!(x.op == Op::MakeLink && x.keep_ours_as_conflict),
            other => panic!("{other:?}"),
        }
        // A folder beats a link made concurrently, newer or not; our link
        // is kept as a conflict copy.
        let mut dir = entry(&[(b, 1)], 1, "", false);
        dir.kind = EntryKind::Dir;
        let our_link = link(&[(a, 1)], 50, "elsewhere");
        match decide(Some(&our_link), &dir, &fine) {
            Action::Apply(x) => assert!(x.op == Op::MakeDir && x.keep_ours_as_conflict),
            other => panic!("{other:?}"),
        }
        assert_eq!(decide(Some(&dir), &our_link, &fine), Action::Announce);
        // The same link made on both sides: no copy.
        let same = link(&[(b, 1)], 60, "elsewhere");
        match decide(Some(&our_link), &same, &fine) {
            Action::Apply(x) => assert!(!x.keep_ours_as_conflict),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_way_modes_decline_or_never_win() {
        let (a, b) = (NodeId::random(), NodeId::random());
        let send_only = Context {
            mode: Mode::SendOnly,
            ..cx(DiskFacts::Indexed)
        };
        let ours = entry(&[(a, 1)], 5, "x", false);
        let newer = entry(&[(a, 1), (b, 2)], 9, "y", false);
        assert_eq!(decide(Some(&ours), &newer, &send_only), Action::Declined);
        assert_eq!(decide(None, &newer, &send_only), Action::Declined);
        // Ours still wins a conflict it wins, and is announced.
        let older_conflict = entry(&[(b, 1)], 1, "z", false);
        assert_eq!(
            decide(Some(&ours), &older_conflict, &send_only),
            Action::Announce
        );
        // What changes nothing here is taken: a newer version of our very
        // content, a delete of what we do not have.
        let same = entry(&[(a, 1), (b, 2)], 5, "x", false);
        assert!(matches!(
            decide(Some(&ours), &same, &send_only),
            Action::Apply(_)
        ));
        let gone = entry(&[(b, 1)], 5, "", true);
        assert!(matches!(decide(None, &gone, &send_only), Action::Apply(_)));
        assert_eq!(
            decide(
                Some(&ours),
                &entry(&[(a, 1), (b, 2)], 5, "", true),
                &send_only
            ),
            Action::Declined
        );

        let receive_only = |unsent| Context {
            mode: Mode::ReceiveOnly,
            ours_unsent: unsent,
            ..cx(DiskFacts::Indexed)
        };
        // Our unsent change, newer than a concurrent one from elsewhere:
        // theirs is taken as it is, ours kept as a conflict copy.
        let mine = entry(&[(b, 1), (a, 1)], 50, "mine", false);
        let theirs = entry(&[(b, 2)], 10, "theirs", false);
        match decide(Some(&mine), &theirs, &receive_only(true)) {
            Action::Apply(x) => {
                assert!(x.keep_ours_as_conflict && x.exact && !x.bump);
                assert_eq!(x.entry.version, theirs.version);
            }
            other => panic!("{other:?}"),
        }
        // A change that was sent wins as usual.
        assert_eq!(
            decide(Some(&mine), &theirs, &receive_only(false)),
            Action::Announce
        );
        // The version ours was made on top of changes nothing.
        let base = entry(&[(b, 1)], 5, "base", false);
        assert_eq!(
            decide(Some(&mine), &base, &receive_only(true)),
            Action::Ignore
        );
        // A delete made elsewhere beats it too; ours is kept as a copy.
        let deleted = entry(&[(b, 2)], 10, "", true);
        match decide(Some(&mine), &deleted, &receive_only(true)) {
            Action::Apply(x) => assert!(x.op == Op::Delete && x.keep_ours_as_conflict),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn impossible_links_are_refused() {
        let a = NodeId::random();
        let fine = cx(DiskFacts::Indexed);
        let mut empty = link(&[(a, 1)], 5, "");
        assert_eq!(
            decide(None, &empty, &fine),
            Action::Reject(Invalid::LinkTarget(LinkTargetError::Empty))
        );
        empty.deleted = true;
        assert_eq!(
            decide(None, &empty, &fine),
            Action::Reject(Invalid::LinkTarget(LinkTargetError::Empty))
        );
        let long = "x".repeat(tandem_common::model::MAX_LINK_TARGET + 1);
        assert_eq!(
            decide(None, &link(&[(a, 1)], 5, &long), &fine),
            Action::Reject(Invalid::LinkTarget(LinkTargetError::TooLong(long.len())))
        );
        assert_eq!(
            decide(None, &link(&[(a, 1)], 5, "a\0b"), &fine),
            Action::Reject(Invalid::LinkTarget(LinkTargetError::Nul))
        );
        let mut lying = link(&[(a, 1)], 5, "t");
        lying.hash = ContentHash::of(b"not t");
        assert_eq!(
            decide(None, &lying, &fine),
            Action::Reject(Invalid::LinkHash)
        );
        // A tombstone's hash is no content's.
        lying.deleted = true;
        assert!(matches!(decide(None, &lying, &fine), Action::Apply(_)));
    }

    #[test]
    fn decide_holds_blocks_and_skips_queued() {
        let (a, b) = (NodeId::random(), NodeId::random());
        let ours = entry(&[(a, 1)], 5, "x", false);
        let newer = entry(&[(a, 1), (b, 2)], 9, "y", false);
        let locked = Context {
            locked: true,
            ..cx(DiskFacts::Indexed)
        };
        assert_eq!(decide(Some(&ours), &newer, &locked), Action::Hold);
        // A lock never re-announces ours either.
        assert_eq!(decide(Some(&newer), &ours, &locked), Action::Ignore);
        // Something that is not ours to touch is in the way: blocked.
        for disk in [DiskFacts::OtherKind, DiskFacts::ParentNotDir] {
            assert!(matches!(
                decide(None, &newer, &cx(disk)),
                Action::Blocked(Apply { op: Op::Fetch, .. }, _)
            ));
        }
        // Recording a tombstone where nothing of ours is touches no disk.
        let gone = entry(&[(a, 1), (b, 2)], 9, "", true);
        assert!(matches!(
            decide(None, &gone, &cx(DiskFacts::OtherKind)),
            Action::Apply(Apply { op: Op::Delete, .. })
        ));
        // The same version (or an older one) is already queued.
        let queued = Context {
            queued: Some(&newer.version),
            ..cx(DiskFacts::Indexed)
        };
        assert_eq!(decide(Some(&ours), &newer, &queued), Action::Ignore);
        assert_eq!(decide(Some(&ours), &ours, &queued), Action::Ignore);
        // An ignored path takes nothing, newer or not, locked or not.
        let ignored = Context {
            ignored: true,
            ..locked
        };
        assert_eq!(decide(Some(&ours), &newer, &ignored), Action::Excluded);
        assert_eq!(decide(None, &gone, &ignored), Action::Excluded);
    }

    /// Another spelling of the name is here and the file system takes both
    /// for one: a file or folder is not written over it, and says why; a
    /// deletion of the spelling that never came here touches nothing.
    #[test]
    fn another_spelling_here_blocks_what_would_be_written() {
        let (a, b) = (NodeId::random(), NodeId::random());
        let clash = crate::names::Clash {
            ours: "Notes.txt".into(),
            theirs: "notes.txt".into(),
            how: tandem_common::proto::NameDifference::Case,
        };
        let here = cx(DiskFacts::OtherSpelling(clash.clone()));
        let new = entry(&[(a, 1)], 5, "x", false);
        let mut dir = entry(&[(a, 1)], 5, "", false);
        dir.kind = EntryKind::Dir;
        for (e, want) in [(&new, Op::Fetch), (&dir, Op::MakeDir)] {
            match decide(None, e, &here) {
                Action::Blocked(Apply { op, .. }, why) => {
                    assert_eq!(op, want);
                    assert_eq!(why, Obstacle::OtherSpelling(clash.clone()));
                    assert_eq!(
                        why.to_string(),
                        "Notes.txt is here, and this file system cannot hold notes.txt beside it (the names differ only in case); rename one of them (on a node that has both) to let both in"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        let gone = entry(&[(a, 1), (b, 2)], 9, "", true);
        assert!(matches!(
            decide(None, &gone, &here),
            Action::Apply(Apply { op: Op::Delete, .. })
        ));
    }

    /// The planner_prop case: a re-sent older entry arrives while the disk
    /// cannot be read and a newer version of the same history is queued.
    /// It must not take the queued one's place: after the disk recovers it
    /// would be decided `Ignore`/`Announce` and dropped, and the newer
    /// version, already acknowledged to the peer, would never come again.
    #[test]
    fn an_older_entry_never_replaces_a_newer_queued_one() {
        let (a, b) = (NodeId::random(), NodeId::random());
        let old = entry(&[(a, 1)], 5, "x", false).version;
        let newer = entry(&[(a, 3), (b, 1)], 5, "x", false).version;
        let concurrent = entry(&[(b, 2)], 5, "x", false).version;
        assert!(replaces_queued(&old, None));
        assert!(!replaces_queued(&old, Some(&newer)));
        assert!(!replaces_queued(&newer, Some(&newer)));
        assert!(replaces_queued(&newer, Some(&old)));
        // Another history: the engine decides between them, not the queue.
        assert!(replaces_queued(&concurrent, Some(&newer)));
    }

    /// What the core does just before installing a fetched version: decide
    /// again from the peer's entry. A local edit made meanwhile, without
    /// having seen the fetched version, is concurrent with it: the newer
    /// mtime wins and the loser is kept (never a silent drop).
    #[test]
    fn deciding_again_at_install_keeps_both() {
        let (a, b) = (NodeId::random(), NodeId::random());
        let base = entry(&[(a, 1)], 5, "x", false);
        let remote = entry(&[(a, 1), (b, 2)], 100, "remote", false);
        let fine = cx(DiskFacts::Indexed);
        assert!(matches!(
            decide(Some(&base), &remote, &fine),
            Action::Apply(Apply {
                op: Op::Fetch,
                keep_ours_as_conflict: false,
                ..
            })
        ));
        // Edited here meanwhile, with an older mtime: the fetched one wins,
        // ours is kept aside, and the result dominates both.
        let edited = entry(&[(a, 3)], 50, "local", false);
        match decide(Some(&edited), &remote, &fine) {
            Action::Apply(x) => {
                assert_eq!(x.op, Op::Fetch);
                assert!(x.keep_ours_as_conflict && x.bump && !x.exact);
                assert_eq!(x.entry.version.compare(&edited.version), VvOrder::After);
            }
            other => panic!("{other:?}"),
        }
        // Edited with a newer mtime: ours wins; the peer takes it from us.
        let newer_here = entry(&[(a, 3)], 500, "local", false);
        assert_eq!(decide(Some(&newer_here), &remote, &fine), Action::Announce);
        assert!(matches!(
            decide(Some(&remote), &newer_here, &fine),
            Action::Apply(Apply {
                keep_ours_as_conflict: true,
                ..
            })
        ));
    }

    #[test]
    fn a_folder_beats_a_file_of_the_same_name() {
        let (a, b) = (NodeId::random(), NodeId::random());
        let file = entry(&[(a, 1)], 900, "f", false);
        let mut dir = entry(&[(b, 1)], 1, "", false);
        dir.kind = EntryKind::Dir;
        dir.hash = ContentHash::default();
        dir.size = 0;
        // The older folder wins; the file is kept aside.
        match decide(Some(&file), &dir, &cx(DiskFacts::Indexed)) {
            Action::Apply(x) => {
                assert_eq!(x.op, Op::MakeDir);
                assert!(x.keep_ours_as_conflict);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(plan(Some(&dir), &file), Decision::Announce);
    }
}
