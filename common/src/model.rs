//! The file model: what a node knows about each path, and the version vectors
//! that order changes between nodes.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::path::RelPath;

/// Files are hashed in fixed-size blocks of this many bytes; the block list
/// is what lets a receiver reuse data it already has.
pub const BLOCK_SIZE: u64 = 128 * 1024;

/// A node's permanent identity: the id of its key (see [`crate::identity`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub Uuid);

impl NodeId {
    /// A fresh random id (tests; real nodes derive theirs from their key).
    pub fn random() -> Self {
        NodeId(Uuid::new_v4())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::identity::format_id(&self.0))
    }
}

impl std::str::FromStr for NodeId {
    type Err = crate::identity::IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::identity::parse_id(s).map(NodeId)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The first group is enough to tell nodes apart in logs.
        let s = crate::identity::format_id(&self.0);
        write!(f, "node:{}", &s[..7])
    }
}

/// The permission bits Tandem syncs: read, write, execute for owner, group
/// and others. Setuid, setgid and sticky are never read into the index nor
/// applied from the network, so no peer or client can plant a setuid file.
pub const SYNCED_MODE_BITS: u32 = 0o777;

/// A BLAKE3 hash of a file's content, or of one block of it (see
/// [`crate::hashing::block_hash`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    /// Hash of `data`.
    pub fn of(data: &[u8]) -> Self {
        ContentHash(*blake3::hash(data).as_bytes())
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..12])
    }
}

/// How two version vectors relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VvOrder {
    /// Same history.
    Equal,
    /// `self` happened before `other` (other dominates).
    Before,
    /// `self` happened after `other` (self dominates).
    After,
    /// Neither saw the other: a conflict.
    Concurrent,
}

/// Node id → counter. A change made on top of a version dominates it.
///
/// Kept as a vector sorted by node id: vectors have a handful of entries,
/// and a node indexes one per path, so a map's per-entry allocation would
/// dominate the index's memory. Deserialization normalises (sorts, merges
/// duplicates, drops zeros), so a peer cannot hand us a malformed vector.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<(NodeId, u64)>")]
pub struct VersionVector(Vec<(NodeId, u64)>);

impl From<Vec<(NodeId, u64)>> for VersionVector {
    fn from(mut v: Vec<(NodeId, u64)>) -> Self {
        v.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        v.dedup_by_key(|(n, _)| *n);
        v.retain(|(_, c)| *c > 0);
        VersionVector(v)
    }
}

impl VersionVector {
    /// The empty vector (no history).
    pub fn new() -> Self {
        Self::default()
    }

    /// Counter of `node` (0 when absent).
    pub fn get(&self, node: NodeId) -> u64 {
        match self.0.binary_search_by(|(n, _)| n.cmp(&node)) {
            Ok(i) => self.0[i].1,
            Err(_) => 0,
        }
    }

    /// Sets `node`'s counter.
    pub fn set(&mut self, node: NodeId, counter: u64) {
        match self.0.binary_search_by(|(n, _)| n.cmp(&node)) {
            Ok(i) if counter == 0 => {
                self.0.remove(i);
            }
            Ok(i) => self.0[i].1 = counter,
            Err(_) if counter == 0 => {}
            Err(i) => {
                // Exactly one more slot: a plain insert would round an empty
                // vector up to four (96 bytes instead of 24), and the index
                // holds one vector per path.
                self.0.reserve_exact(1);
                self.0.insert(i, (node, counter))
            }
        }
    }

    /// Largest counter of any node.
    pub fn max_counter(&self) -> u64 {
        self.0.iter().map(|(_, c)| *c).max().unwrap_or(0)
    }

    /// Element-wise maximum of the two vectors.
    pub fn merge(&self, other: &VersionVector) -> VersionVector {
        let mut out = self.clone();
        for &(n, c) in &other.0 {
            if c > out.get(n) {
                out.set(n, c);
            }
        }
        out
    }

    /// How `self` relates to `other`.
    pub fn compare(&self, other: &VersionVector) -> VvOrder {
        let mut less = false;
        let mut greater = false;
        for (n, _) in self.0.iter().chain(other.0.iter()) {
            let (a, b) = (self.get(*n), other.get(*n));
            less |= a < b;
            greater |= a > b;
        }
        match (less, greater) {
            (false, false) => VvOrder::Equal,
            (true, false) => VvOrder::Before,
            (false, true) => VvOrder::After,
            (true, true) => VvOrder::Concurrent,
        }
    }

    /// Iterates over (node, counter), sorted by node.
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, u64)> + '_ {
        self.0.iter().copied()
    }
}

impl fmt::Debug for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(n, c)| (n, c)))
            .finish()
    }
}

/// The identity of one write: the node that made it and the counter it
/// gave itself. A node whose version vector covers a write's dot has seen
/// that content, even when vectors were merged since (a conflict's winner
/// keeps its dot while its vector grows).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Dot {
    /// The writing node.
    pub node: Option<NodeId>,
    /// Its counter for this write.
    pub counter: u64,
}

impl Dot {
    /// True if `v` has seen this write.
    pub fn seen_by(&self, v: &VersionVector) -> bool {
        match self.node {
            Some(n) => v.get(n) >= self.counter,
            None => true,
        }
    }
}

/// A set of writes ([`Dot`]s) to one path: those whose content an entry
/// shows, or those still live in its history beside it.
///
/// Sorted and without duplicates; decoding normalises, like
/// [`VersionVector`]. Small: the writes shown are concurrent (at most one
/// per node), and a loser is added per conflict on the path, until someone
/// writes over it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<Dot>")]
pub struct Writes(Vec<Dot>);

impl From<Vec<Dot>> for Writes {
    fn from(mut v: Vec<Dot>) -> Self {
        v.sort_unstable();
        v.dedup();
        Writes(v)
    }
}

impl From<Dot> for Writes {
    fn from(d: Dot) -> Self {
        Writes(vec![d])
    }
}

impl Writes {
    /// True if `d` is one of these writes.
    pub fn contains(&self, d: &Dot) -> bool {
        self.0.binary_search(d).is_ok()
    }

    /// Both sets of writes.
    pub fn union(&self, other: &Writes) -> Writes {
        self.0
            .iter()
            .chain(other.0.iter())
            .copied()
            .collect::<Vec<_>>()
            .into()
    }

    /// The writes for which `keep` is true.
    pub fn filter(&self, mut keep: impl FnMut(&Dot) -> bool) -> Writes {
        Writes(self.0.iter().copied().filter(|d| keep(d)).collect())
    }

    /// True when there are no writes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The writes, sorted.
    pub fn iter(&self) -> impl Iterator<Item = Dot> + '_ {
        self.0.iter().copied()
    }
}

impl fmt::Debug for Writes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.iter()).finish()
    }
}

/// What a path is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory (tracked so that empty directories sync too).
    Dir,
    /// A symbolic link, with its target text. Synced as a link and never
    /// followed: the target is only ever written into a new link. The
    /// entry's `size` is 0, `blocks` empty and `hash` the target's hash.
    Link(String),
}

/// The longest link target accepted (Linux's `PATH_MAX` less the NUL).
pub const MAX_LINK_TARGET: usize = 4095;

/// Why a link target is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkTargetError {
    /// Nothing to point at.
    #[error("an empty link target")]
    Empty,
    /// Over [`MAX_LINK_TARGET`] bytes.
    #[error("a link target of {0} bytes (at most {MAX_LINK_TARGET})")]
    TooLong(usize),
    /// A NUL byte cannot be in a path.
    #[error("a link target with a NUL byte")]
    Nul,
}

/// Checks a link target received from elsewhere: what `symlink(2)` takes.
pub fn check_link_target(target: &str) -> Result<(), LinkTargetError> {
    if target.is_empty() {
        Err(LinkTargetError::Empty)
    } else if target.len() > MAX_LINK_TARGET {
        Err(LinkTargetError::TooLong(target.len()))
    } else if target.contains('\0') {
        Err(LinkTargetError::Nul)
    } else {
        Ok(())
    }
}

/// Everything a node knows about one path, as exchanged between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Where it lives, relative to the synced directory.
    pub path: RelPath,
    /// File or directory.
    pub kind: EntryKind,
    /// Size in bytes (0 for directories and tombstones).
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Unix permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// BLAKE3 of the whole content.
    pub hash: ContentHash,
    /// The hash of each `BLOCK_SIZE` block, in order (see
    /// [`crate::hashing::block_hash`]: together they make `hash`). Always complete in a
    /// node's index and store; empty on the wire for files of more than
    /// [`INLINE_BLOCKS`](crate::blocklist::INLINE_BLOCKS) blocks, whose
    /// receivers ask for the list when they need it (see
    /// [`crate::blocklist`]).
    pub blocks: Vec<ContentHash>,
    /// Causal history of this version: every write and conflict settling
    /// it includes.
    pub version: VersionVector,
    /// The writes that produced this content: one, or several when nodes
    /// wrote the same bytes concurrently (unchanged when only the vector
    /// grows by a merge).
    pub written: Writes,
    /// Other writes still live in this history: content that lost a
    /// conflict (and was kept aside) and that no one has written over yet.
    /// Usually empty. With `written` and `version` this is a dotted version
    /// vector: a write that `version` covers but that is in neither set was
    /// replaced, whichever node replaced it.
    pub losers: Writes,
    /// A tombstone: the path was deleted in this version.
    pub deleted: bool,
}

impl FileEntry {
    /// True for a regular file that exists.
    pub fn is_live_file(&self) -> bool {
        !self.deleted && self.kind == EntryKind::File
    }

    /// The target of a link that exists.
    pub fn live_link(&self) -> Option<&str> {
        match &self.kind {
            EntryKind::Link(t) if !self.deleted => Some(t),
            _ => None,
        }
    }

    /// True for a folder that exists.
    pub fn is_live_dir(&self) -> bool {
        !self.deleted && self.kind == EntryKind::Dir
    }

    /// True if write `d` is live in this history: not seen yet, or seen
    /// and not replaced since.
    pub fn keeps(&self, d: &Dot) -> bool {
        !d.seen_by(&self.version) || self.written.contains(d) || self.losers.contains(d)
    }

    /// True if `other`'s history replaced this content: `other` has seen
    /// every write of it and keeps none of them live. Such content never
    /// wins against `other` again, whatever its mtime.
    pub fn replaced_in(&self, other: &FileEntry) -> bool {
        self.written.iter().all(|d| !other.keeps(&d))
    }

    /// The writes live in both histories merged: those live in one that the
    /// other keeps too (has not seen, or has not replaced).
    pub fn merged_live(&self, other: &FileEntry) -> Writes {
        let mine = self.written.union(&self.losers);
        let theirs = other.written.union(&other.losers);
        mine.filter(|d| other.keeps(d))
            .union(&theirs.filter(|d| self.keeps(d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vv(pairs: &[(NodeId, u64)]) -> VersionVector {
        let mut v = VersionVector::new();
        for &(n, c) in pairs {
            v.set(n, c);
        }
        v
    }

    #[test]
    fn set_allocates_no_slack() {
        let (a, b) = (NodeId::random(), NodeId::random());
        let v = vv(&[(a, 1)]);
        assert_eq!(v.0.capacity(), 1);
        let v = vv(&[(a, 1), (b, 2)]);
        assert_eq!(v.0.capacity(), 2);
    }

    #[test]
    fn compare_table() {
        let (a, b) = (NodeId::random(), NodeId::random());
        let cases = [
            (vv(&[]), vv(&[]), VvOrder::Equal),
            (vv(&[(a, 1)]), vv(&[(a, 1)]), VvOrder::Equal),
            (vv(&[(a, 1)]), vv(&[(a, 2)]), VvOrder::Before),
            (vv(&[(a, 2)]), vv(&[(a, 1)]), VvOrder::After),
            (vv(&[(a, 1)]), vv(&[(a, 1), (b, 1)]), VvOrder::Before),
            (vv(&[(a, 2)]), vv(&[(a, 1), (b, 1)]), VvOrder::Concurrent),
            (vv(&[(a, 0)]), vv(&[]), VvOrder::Equal),
        ];
        for (x, y, want) in cases {
            assert_eq!(x.compare(&y), want, "{x:?} vs {y:?}");
        }
    }

    #[test]
    fn decoding_normalises_hostile_vectors() {
        let (a, b) = (NodeId::random(), NodeId::random());
        let v: VersionVector = vec![(b, 2), (a, 1), (b, 5), (a, 0)].into();
        assert_eq!(v.get(b), 5);
        assert_eq!(v.get(a), 1);
        assert_eq!(v.iter().count(), 2);
        let mut w = VersionVector::new();
        w.set(a, 1);
        w.set(b, 5);
        assert_eq!(v, w, "one canonical form");
        w.set(a, 0);
        assert_eq!(w.iter().count(), 1, "zero counters are dropped");
    }

    #[test]
    fn writes_decode_sorted_without_duplicates() {
        let (a, b) = (NodeId::random(), NodeId::random());
        let d = |n, c| Dot {
            node: Some(n),
            counter: c,
        };
        let w: Writes = vec![d(b, 2), d(a, 1), d(b, 2)].into();
        assert_eq!(w.iter().count(), 2);
        assert_eq!(w, Writes::from(vec![d(a, 1), d(b, 2)]));
        assert!(w.contains(&d(b, 2)) && !w.contains(&d(b, 1)));
    }

    #[test]
    fn replaced_means_seen_and_not_kept() {
        let (a, b) = (NodeId::random(), NodeId::random());
        let d = |n, c| Dot {
            node: Some(n),
            counter: c,
        };
        let entry = |v: &[(NodeId, u64)], written: Dot, losers: Vec<Dot>| FileEntry {
            path: RelPath::new("f").unwrap(),
            kind: EntryKind::File,
            size: 0,
            mtime_ns: 0,
            mode: 0o644,
            hash: ContentHash::default(),
            blocks: vec![],
            version: vv(v),
            written: written.into(),
            losers: losers.into(),
            deleted: false,
        };
        // a wrote a:1; b wrote over it (b:2), on top of a:1.
        let old = entry(&[(a, 1)], d(a, 1), vec![]);
        let over = entry(&[(a, 1), (b, 2)], d(b, 2), vec![]);
        assert!(old.replaced_in(&over));
        assert!(!over.replaced_in(&old), "not seen");
        // a:1 lost a conflict instead: still live, as a loser.
        let beat = entry(&[(a, 1), (b, 2)], d(b, 2), vec![d(a, 1)]);
        assert!(!old.replaced_in(&beat));
        // Merged, a:1 stays live only where neither side replaced it.
        assert_eq!(beat.merged_live(&old), vec![d(a, 1), d(b, 2)].into());
        assert_eq!(over.merged_live(&beat), d(b, 2).into());
    }

    #[test]
    fn merge_dominates_both() {
        let (a, b) = (NodeId::random(), NodeId::random());
        let x = vv(&[(a, 3), (b, 1)]);
        let y = vv(&[(a, 1), (b, 4)]);
        let m = x.merge(&y);
        assert_eq!(m, vv(&[(a, 3), (b, 4)]));
        assert!(matches!(m.compare(&x), VvOrder::After));
        assert!(matches!(m.compare(&y), VvOrder::After));
        assert_eq!(m.max_counter(), 4);
    }
}
