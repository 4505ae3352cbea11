//! The in-memory index: one [`Record`] per path the node knows, live or
//! deleted, and the rules that turn what is seen on disk into new versions.
//!
//! Pure: callers stat and hash; this module only decides. Every record it
//! touches is remembered until [`Index::take_dirty`] hands the batch to the
//! store. Records are held compact (see [`packed`]) and handed out whole,
//! as copies: a lookup costs a few small allocations, and the index of a
//! million files fits in a few hundred megabytes.

mod packed;
mod sorted;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tandem_common::blocklist;
use tandem_common::hashing::{Hashed, makes_hash};
use tandem_common::model::{Dot, Writes};
use tandem_common::{ContentHash, EntryKind, FileEntry, NodeId, RelPath, VersionVector, VvOrder};

use packed::{Nodes, Packed};

/// The key of a block in [`Index::block_source`]'s map: the first 8 bytes
/// of its hash.
fn block_key(h: &ContentHash) -> u64 {
    let mut k = [0u8; 8];
    k.copy_from_slice(&h.0[..8]);
    u64::from_le_bytes(k)
}

/// What the disk said about a file the last time it was indexed: if it still
/// says the same, the content is not hashed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalStat {
    /// Inode number.
    pub inode: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time in nanoseconds.
    pub mtime_ns: i64,
    /// Permission bits.
    pub mode: u32,
}

/// One path as the node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The versioned entry, as exchanged with peers.
    pub entry: FileEntry,
    /// Local sequence number of the entry's last change.
    pub seq: u64,
    /// Disk stat at the last indexing (live files only).
    pub stat: Option<LocalStat>,
}

/// What the index holds at a walked path (see [`Index::compare_seen`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenAt {
    /// A live record is there.
    pub live: bool,
    /// The record there (live or not) is a folder's.
    pub dir: bool,
    /// A file or link with the stat seen must be read: the record is not
    /// a live file or link with that stat, or its block list must be made
    /// again (see [`Index::relist`]).
    pub needs_hash: bool,
    /// The record's sequence number (0: none).
    pub seq: u64,
}

/// What a change to the index was, for events and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A path that did not exist now does.
    Added,
    /// New content or metadata.
    Modified,
    /// Deleted (a tombstone was recorded).
    Deleted,
    /// A peer's change this node had made on disk just before it stopped,
    /// recorded now as that peer's (see [`Index::expect_applied`]).
    Applied,
}

/// An index being built from stored records (see [`Index::loader`]).
pub struct Loader {
    ix: Index,
    packed: Vec<(RelPath, Packed)>,
    seqs: Vec<(u64, RelPath)>,
}

impl Loader {
    /// Adds a stored record.
    pub fn push(&mut self, r: Record) {
        let ix = &mut self.ix;
        ix.clock = ix.clock.max(r.entry.version.max_counter());
        ix.seq = ix.seq.max(r.seq);
        let path = r.entry.path.clone();
        self.seqs.push((r.seq, path.clone()));
        if r.entry.is_live_file() && !makes_hash(&r.entry) {
            // A list of the kind schema 6 held (or a damaged one): the
            // start-up scan reads the file again (see `Index::relist`); its
            // blocks are no place to read from meanwhile.
            ix.relist.insert(path.clone());
        } else {
            ix.add_sources(&r);
        }
        self.packed.push((path, Packed::pack(r, &mut ix.nodes)));
    }

    /// The index of the records pushed.
    pub fn finish(self) -> Index {
        let Loader {
            mut ix,
            mut packed,
            mut seqs,
        } = self;
        // Built from sorted input in bulk: full tree nodes, far less memory
        // than inserting one by one.
        seqs.sort_unstable_by_key(|(s, _)| *s);
        packed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        ix.by_seq = sorted::map_from_sorted(seqs);
        ix.records = sorted::map_from_sorted(packed);
        ix
    }
}

/// Records made again at a time by [`Index::compact`], at least; an eighth
/// of the index when that is more. At most that many (about 14 MiB at a
/// million records) are held twice. Each slice's merge moves the tree made
/// so far again, so there are at most about eight of them: the work stays
/// linear in the index's size. (Tests make many slices of few records.)
#[cfg(not(test))]
const COMPACT_SLICE: usize = 1 << 17;
#[cfg(test)]
const COMPACT_SLICE: usize = 7;

/// The index of one node.
pub struct Index {
    me: NodeId,
    records: BTreeMap<RelPath, Packed>,
    /// The node ids the records name, numbered (see [`packed`]).
    nodes: Nodes,
    /// Largest version counter seen anywhere (Lamport clock).
    clock: u64,
    /// Last sequence number issued.
    seq: u64,
    /// Sequence number → path, to send peers what they have not seen.
    by_seq: BTreeMap<u64, RelPath>,
    /// Where each block hash can be read locally: the sequence number of a
    /// record holding it and the block's position there (one place
    /// suffices; the reader verifies, so a stale place only costs a network
    /// fetch, and a record changed since has a new number and is not
    /// found). Keyed by the hash's first 8 bytes (see [`block_key`]), and
    /// holding a number rather than a path: 24 bytes an entry, one entry
    /// per distinct block of a file past
    /// [`INLINE_MAX`](tandem_common::proto::INLINE_MAX).
    blocks: HashMap<u64, (u64, u32)>,
    /// A live file holding each whole content whose block list is not sent
    /// inline: a peer's entry for it (a rename, a copy) arrives without a
    /// list, and this file's list is the same. Only large files are here,
    /// so many small files cost nothing; a stale path is checked on use.
    by_content: HashMap<ContentHash, RelPath>,
    /// Sequence numbers of the records changed since the last save (a
    /// record changed again leaves a stale number, skipped when taken).
    /// Numbers, not paths: a copy of every path seen by a cold scan, freed
    /// at the save, would leave holes between the records that pin most of
    /// the heap's pages.
    dirty: Vec<u64>,
    /// A receive-only node's writes with a counter above this were made
    /// while it was receive-only: they are never sent (see
    /// [`Index::is_unsent`]).
    withhold_above: Option<u64>,
    /// Paths forgotten since the last save.
    forgotten: Vec<RelPath>,
    /// Records stored since the maps were last made whole (see
    /// [`Index::compact`] and [`Index::changed_since_compact`]).
    changed_since_compact: usize,
    /// Peers' entries the last run wrote down before making them on disk,
    /// while the start-up looks at the tree (see [`Index::expect_applied`]).
    applied: HashMap<RelPath, Vec<(FileEntry, Option<NodeId>)>>,
    /// Live files whose block list does not make their content hash: lists
    /// made before block hashes were BLAKE3 chaining values (schema 6 and
    /// older), damaged ones, or none (recorded while no local file had the
    /// content). The next look that reads such a file (the start-up scan,
    /// unless it is locked or ignored) reads it whatever its stat, and it
    /// takes the list read (see [`Index::observe_file`]); meanwhile its
    /// blocks are no place to read from, and its list is not handed out.
    relist: BTreeSet<RelPath>,
    /// Live files found, when read to be sent, to hold other content than
    /// their record says (see [`Index::distrust`]): maybe changed in place
    /// with the stat kept, which a look by stat cannot see. The next look
    /// reads such a file whatever its stat, and until then it counts as
    /// changed and its stat is not taken to stand for its content.
    distrusted: BTreeSet<RelPath>,
}

impl Index {
    /// Builds the index from stored records.
    pub fn new(me: NodeId, records: impl IntoIterator<Item = Record>) -> Index {
        let mut l = Index::loader(me);
        for r in records {
            l.push(r);
        }
        l.finish()
    }

    /// Builds the index from stored records handed one at a time, packing
    /// each as it comes: a store's rows go straight into it, and no record
    /// is held whole beside the index.
    pub fn loader(me: NodeId) -> Loader {
        Loader {
            ix: Index {
                me,
                records: BTreeMap::new(),
                nodes: Nodes::default(),
                clock: 0,
                seq: 0,
                by_seq: BTreeMap::new(),
                blocks: HashMap::new(),
                by_content: HashMap::new(),
                dirty: Vec::new(),
                withhold_above: None,
                forgotten: Vec::new(),
                changed_since_compact: 0,
                applied: HashMap::new(),
                relist: BTreeSet::new(),
                distrusted: BTreeSet::new(),
            },
            packed: Vec::new(),
            seqs: Vec::new(),
        }
    }

    /// Forgets which records were taken unchanged from `peer` (so they are
    /// sent to it again).
    pub fn forget_origin_of(&mut self, peer: NodeId) {
        let Some(n) = self.nodes.find(peer) else {
            return;
        };
        for p in self.records.values_mut() {
            if p.origin() == Some(n) {
                p.set_origin(None);
            }
        }
    }

    /// The largest version counter seen anywhere.
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// Withholds from peers this node's writes with a counter above `c`
    /// (`None`: sends everything).
    pub fn withhold_above(&mut self, c: Option<u64>) {
        self.withhold_above = c;
        // The clock is rebuilt from the records at start; a revert may
        // have forgotten those above the mark, and a write numbered below
        // it would pass for one made before.
        if let Some(c) = c {
            self.clock = self.clock.max(c);
        }
    }

    /// True when `e` is a change made here that is withheld from peers (a
    /// receive-only node's).
    pub fn is_unsent(&self, e: &FileEntry) -> bool {
        self.withhold_above.is_some_and(|t| {
            e.written
                .iter()
                .any(|d| d.node == Some(self.me) && d.counter > t)
        })
    }

    /// Forgets `path` entirely, as if it had never been seen (a withheld
    /// change thrown away: peers never heard of it, and their version is
    /// taken again when they send it).
    pub fn forget(&mut self, path: &RelPath) {
        if let Some(old) = self.records.remove(path) {
            self.by_seq.remove(&old.seq());
            if self.by_content.get(old.hash()) == Some(path) {
                self.by_content.remove(old.hash());
            }
            self.forgotten.push(path.clone());
        }
    }

    /// Paths forgotten since the last save (to delete from the store).
    pub fn take_forgotten(&mut self) -> Vec<RelPath> {
        std::mem::take(&mut self.forgotten)
    }

    /// Makes this node's version of `path` win over `theirs` (a send-only
    /// node pushing its version): our content, or our absence (a
    /// tombstone), with a version that has seen `theirs` and adds a write
    /// of ours. Returns false when there is nothing to push.
    pub fn override_with(&mut self, path: &RelPath, theirs: &VersionVector) -> bool {
        let (mut entry, stat) = match self.get(path) {
            Some(r) => (r.entry, r.stat),
            None => (
                FileEntry {
                    path: path.clone(),
                    kind: EntryKind::File,
                    size: 0,
                    mtime_ns: 0,
                    mode: 0,
                    hash: ContentHash::default(),
                    blocks: Vec::new(),
                    version: VersionVector::new(),
                    written: Writes::default(),
                    losers: Writes::default(),
                    deleted: true,
                },
                None,
            ),
        };
        let merged = entry.version.merge(theirs);
        let (version, seq) = self.next_version(Some(&merged));
        entry.version = version;
        entry.written = self.dot();
        entry.losers = Writes::default();
        self.put(Record { entry, seq, stat });
        true
    }

    /// Rebuilds the maps in bulk: after many single inserts (a cold scan,
    /// a peer's many new files) the trees are half empty, and the paths lie
    /// between what was freed since. The records are made again a slice of
    /// [`COMPACT_SLICE`] at a time (paths in one run, after the slice's old
    /// pieces are freed) and merged into the new tree, so that what is held
    /// twice at any moment is one slice, not the index (made again in one
    /// go, a cold index of a million files peaked at 352-365 MiB against
    /// 291 before it).
    pub fn compact(&mut self) {
        // What is free already goes back first, so that the copies made
        // below take the place of freed memory rather than adding to it
        // (after a million-file sync, 489 -> ~440 MiB before the copies).
        crate::metrics::release_memory();
        let mut rest = std::mem::take(&mut self.records);
        self.by_seq = BTreeMap::new();
        self.by_content = HashMap::new();
        // Made again from the live records: places of blocks of files
        // since replaced or deleted are left out.
        self.blocks = HashMap::new();
        let mut seqs = Vec::with_capacity(rest.len());
        let slice_len = COMPACT_SLICE.max(rest.len() / 8);
        while !rest.is_empty() {
            let tail = match rest.keys().nth(slice_len).cloned() {
                Some(first_after) => rest.split_off(&first_after),
                None => BTreeMap::new(),
            };
            let slice = std::mem::replace(&mut rest, tail);
            let mut names = String::new();
            let mut packed = Vec::with_capacity(slice.len());
            for (p, r) in slice {
                names.push_str(p.as_str());
                packed.push((names.len(), r));
            }
            // Not I/O: the freed pieces are merged, and whole free pages
            // given back, before anything is made again. (With the rebuild
            // below: 45 -> 39 MiB after a cold index of 100k files.)
            crate::metrics::release_memory();
            let mut start = 0;
            let mut records = Vec::with_capacity(packed.len());
            for (end, r) in packed {
                // Checked when the record was made.
                let p = RelPath::new(&names[start..end]).expect("an indexed path");
                start = end;
                seqs.push((r.seq(), p.clone()));
                if r.is_live_file() {
                    self.add_blocks(&p, r.seq(), r.hash(), r.size(), r.blocks());
                }
                records.push((p, r));
            }
            drop(names);
            let mut part = sorted::map_from_sorted(records);
            // Every key of `part` is after every key already made, and
            // `append` frees both old trees as it builds the merged one.
            self.records.append(&mut part);
        }
        seqs.sort_unstable_by_key(|(s, _)| *s);
        self.by_seq = sorted::map_from_sorted(seqs);
        self.changed_since_compact = 0;
    }

    /// This node's id.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// The last sequence number issued.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Stores `record`, replacing what was at its path; the origin is
    /// cleared.
    fn insert(&mut self, record: Record) {
        let path = record.entry.path.clone();
        // Still doubted if the record is only announced again (same content,
        // same stat): only a read, or other content, settles it.
        if !self.distrusted.is_empty()
            && !self.records.get(&path).is_some_and(|old| {
                old.is_live_file()
                    && record.entry.is_live_file()
                    && *old.hash() == record.entry.hash
                    && old.stat() == record.stat
            })
        {
            self.distrusted.remove(&path);
        }
        if record.entry.is_live_file() && !makes_hash(&record.entry) {
            // Recorded without a list that makes its hash (a stored one of
            // the older kind carried over, or none when no local file had
            // the content): read again at the next look.
            self.relist.insert(path.clone());
        } else if !self.relist.is_empty() {
            self.relist.remove(&path);
        }
        if let Some(old) = self.records.get(&path) {
            self.by_seq.remove(&old.seq());
            if *old.hash() != record.entry.hash && self.by_content.get(old.hash()) == Some(&path) {
                self.by_content.remove(old.hash());
            }
        }
        self.by_seq.insert(record.seq, path.clone());
        self.add_sources(&record);
        let packed = Packed::pack(record, &mut self.nodes);
        self.records.insert(path, packed);
        self.changed_since_compact += 1;
    }

    /// Records stored since the last [`Index::compact`] (or the load): a
    /// tree filled by many changes in path order it did not choose keeps
    /// its nodes part empty, and the memory of the replaced pieces lies
    /// between live ones.
    pub fn changed_since_compact(&self) -> usize {
        self.changed_since_compact
    }

    /// Notes `r`'s blocks as readable here. Not those of small files: their
    /// content travels with their announcement (see
    /// [`proto::INLINE_MAX`](tandem_common::proto::INLINE_MAX)), so a peer
    /// seldom needs to fetch it, and a million small files would cost
    /// 35 MB of map for nothing.
    fn add_sources(&mut self, r: &Record) {
        if !r.entry.is_live_file() {
            return;
        }
        self.add_blocks(
            &r.entry.path,
            r.seq,
            &r.entry.hash,
            r.entry.size,
            &r.entry.blocks,
        );
    }

    fn add_blocks(
        &mut self,
        path: &RelPath,
        seq: u64,
        hash: &ContentHash,
        size: u64,
        blocks: &[ContentHash],
    ) {
        if size > tandem_common::proto::INLINE_MAX {
            for (i, b) in blocks.iter().enumerate() {
                self.blocks.insert(block_key(b), (seq, i as u32));
            }
        }
        if !blocklist::sent_inline(blocks.len()) {
            self.by_content.insert(*hash, path.clone());
        }
    }

    /// A local place to read the block with hash `h`, if any: a live file
    /// and the block's number in it. A place, not a promise: the reader
    /// checks what it reads against `h`.
    pub fn block_source(&self, h: &ContentHash) -> Option<(RelPath, u32)> {
        let (seq, i) = self.blocks.get(&block_key(h))?;
        let path = self.by_seq.get(seq)?;
        let r = self.records.get(path).filter(|r| r.is_live_file())?;
        (r.blocks().get(*i as usize) == Some(h)).then(|| (path.clone(), *i))
    }

    /// The complete block list of content `hash` of `size` bytes, if a live
    /// local file holds that content (preferring the one at `path`).
    pub fn blocks_of_content(
        &self,
        path: &RelPath,
        hash: &ContentHash,
        size: u64,
    ) -> Option<&[ContentHash]> {
        // A list that makes the content hash (not one of the older kind:
        // see `Index::relist`).
        let fits = |r: &&Packed| {
            r.is_live_file()
                && r.hash() == hash
                && r.size() == size
                && tandem_common::hashing::root_of(r.blocks(), size) == Some(*hash)
        };
        let at = |p: &RelPath| self.records.get(p).filter(fits);
        at(path)
            .or_else(|| self.by_content.get(hash).and_then(at))
            .map(|r| r.blocks())
    }

    /// Fills in the block list of a live file's entry that arrived without
    /// one, from local content with the same hash. False when no local
    /// file has it (the list must be fetched).
    pub fn fill_blocks(&self, entry: &mut FileEntry) -> bool {
        if !entry.is_live_file() || makes_hash(entry) {
            return true;
        }
        // None, or one that cannot be this content's (a peer's error):
        // ours for the same content, else fetched (and checked) again.
        entry.blocks.clear();
        match self.blocks_of_content(&entry.path, &entry.hash, entry.size) {
            Some(b) => {
                entry.blocks = b.to_vec();
                true
            }
            None => false,
        }
    }

    /// Entries changed after sequence `since`, oldest first, up to roughly
    /// `max_bytes` (at least one entry), leaving out those taken unchanged
    /// from `peer`, and none above `upto_max` (what is written to the store).
    /// They are in their wire form: without long block lists (see
    /// [`blocklist::for_wire`]); the index keeps them whole. Also returns
    /// the last sequence covered.
    pub fn entries_since(
        &self,
        since: u64,
        upto_max: u64,
        max_bytes: usize,
        peer: Option<NodeId>,
    ) -> (Vec<(u64, FileEntry)>, u64) {
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut upto = since;
        if upto_max <= since {
            return (out, upto);
        }
        // A peer never numbered sent us nothing.
        let from = peer.and_then(|p| self.nodes.find(p));
        for (seq, path) in self.by_seq.range(since + 1..=upto_max) {
            upto = *seq;
            let Some(p) = self.records.get(path) else {
                continue;
            };
            if from.is_some() && p.origin() == from {
                continue;
            }
            // Long lists are not sent (nor copied).
            let inline = blocklist::sent_inline(p.blocks().len());
            let entry = p.unpack_with(path, &self.nodes, inline).entry;
            if self.is_unsent(&entry) {
                continue;
            }
            // What the entry costs on the wire.
            bytes += entry.blocks.len() * 32;
            bytes += 128;
            // Small files' content travels with them.
            if entry.is_live_file() && entry.size <= tandem_common::proto::INLINE_MAX {
                bytes += entry.size as usize;
            }
            out.push((*seq, entry));
            if bytes >= max_bytes {
                break;
            }
        }
        (out, upto)
    }

    /// Records a version received from a peer (already written to disk, or
    /// a tombstone), with the local stat of what was written. `origin` is
    /// the peer it came from when recorded exactly as that peer has it.
    /// An entry that arrived without its block list gets the list of the
    /// local content with the same hash: the index (and the store) always
    /// keep complete lists, since this node serves them to others.
    pub fn record_remote(
        &mut self,
        mut entry: FileEntry,
        stat: Option<LocalStat>,
        origin: Option<NodeId>,
    ) {
        if !self.fill_blocks(&mut entry) {
            // Not expected: callers record only content they hold. A peer
            // asking for its blocks or its list is then told this node has
            // no block list for it (`PeerError::NoBlockList`) until the
            // file is rescanned.
            tracing::error!(
                "recording {} without its block list: no local file has its content",
                entry.path
            );
        }
        self.clock = self.clock.max(entry.version.max_counter());
        self.seq += 1;
        let seq = self.seq;
        let path = entry.path.clone();
        self.put(Record { entry, seq, stat });
        if let Some(o) = origin {
            let n = self.nodes.intern(o);
            if let Some(p) = self.records.get_mut(&path) {
                p.set_origin(n);
            }
        }
    }

    /// The record at `path` (a copy).
    pub fn get(&self, path: &RelPath) -> Option<Record> {
        self.records.get(path).map(|p| p.unpack(path, &self.nodes))
    }

    /// Every record, sorted by path (copies, made as iterated).
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        self.records
            .iter()
            .map(|(path, p)| p.unpack(path, &self.nodes))
    }

    /// The records after `after` (all of them for `None`), sorted by path
    /// (copies, made as iterated): a page of a table starts here.
    pub fn records_after(&self, after: Option<&RelPath>) -> impl Iterator<Item = Record> + '_ {
        use std::ops::Bound;
        let from = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        self.records
            .range::<RelPath, _>((from, Bound::Unbounded))
            .map(|(path, p)| p.unpack(path, &self.nodes))
    }

    /// The disk stat recorded for `path`, without copying its record.
    pub fn stat_of(&self, path: &RelPath) -> Option<LocalStat> {
        self.records.get(path).and_then(|p| p.stat())
    }

    /// True when `path` is known and deleted (a tombstone).
    pub fn is_tombstone(&self, path: &RelPath) -> bool {
        self.records.get(path).is_some_and(|p| p.deleted())
    }

    /// Number of records (live and deleted).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when the index is empty.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Live paths strictly inside `dir`.
    pub fn live_under(&self, dir: &RelPath) -> Vec<RelPath> {
        let start = format!("{}/", dir.as_str());
        self.records
            .range::<str, _>((
                std::ops::Bound::Included(start.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(p, _)| p.as_str().starts_with(&start))
            .filter(|(_, r)| !r.deleted())
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Live paths directly inside `dir` (the top level for `None`), sorted.
    /// Each folder's own paths are skipped in one step, so this costs one
    /// lookup per child, however deep the tree below.
    pub fn live_children(&self, dir: Option<&RelPath>) -> Vec<&RelPath> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let prefix = dir.map_or(String::new(), |d| format!("{}/", d.as_str()));
        let mut out = Vec::new();
        let mut from = Included(prefix.clone());
        loop {
            let bound = match &from {
                Included(s) => Included(s.as_str()),
                Excluded(s) => Excluded(s.as_str()),
                Unbounded => Unbounded,
            };
            let Some((p, r)) = self.records.range::<str, _>((bound, Unbounded)).next() else {
                break;
            };
            let Some(rest) = p.as_str().strip_prefix(prefix.as_str()) else {
                break;
            };
            match rest.find('/') {
                None => {
                    if !r.deleted() {
                        out.push(p);
                    }
                    from = Excluded(p.as_str().to_string());
                }
                // Inside a child folder: on past everything under it
                // (`x/…` sorts before `x0`, '0' following '/').
                Some(i) => from = Included(format!("{prefix}{}0", &rest[..i])),
            }
        }
        out
    }

    /// Every live file's path and size, sorted by path (nothing copied).
    pub fn live_files(&self) -> impl Iterator<Item = (&RelPath, u64)> {
        self.records
            .iter()
            .filter(|(_, r)| r.is_live_file())
            .map(|(p, r)| (p, r.size()))
    }

    /// Every live path.
    pub fn live_paths(&self) -> Vec<RelPath> {
        self.live().cloned().collect()
    }

    /// Every live path with its record's sequence number, sorted.
    pub fn live_seqs(&self) -> impl Iterator<Item = (&RelPath, u64)> {
        self.records
            .iter()
            .filter(|(_, r)| !r.deleted())
            .map(|(p, r)| (p, r.seq()))
    }

    /// Every live path, sorted (nothing copied).
    pub fn live(&self) -> impl Iterator<Item = &RelPath> {
        self.records
            .iter()
            .filter(|(_, r)| !r.deleted())
            .map(|(p, _)| p)
    }

    /// True when the file or link at `path` is not as last recorded: no
    /// live record, another stat, or found to hold other content (see
    /// [`Index::distrust`]; unlike [`Index::needs_hash`], a list to make
    /// again does not count: nothing was changed on disk).
    pub fn stat_changed(&self, path: &RelPath, stat: &LocalStat) -> bool {
        self.records
            .get(path)
            .filter(|r| r.is_live_file() || r.live_link().is_some())
            .is_none_or(|r| r.stat().as_ref() != Some(stat))
            || self.is_distrusted(path)
    }

    /// Notes that the file at `path`, read to be sent as content `hash`,
    /// did not hold it while its stat may be the one recorded: if that is
    /// still the live file's recorded content, the next look reads it
    /// whatever its stat (see [`Index::distrusted`]). A record that moved
    /// on meanwhile (a newer version installed, an edit already read) is
    /// left alone.
    pub fn distrust(&mut self, path: &RelPath, hash: &ContentHash) {
        if self
            .records
            .get(path)
            .is_some_and(|r| r.is_live_file() && r.hash() == hash)
        {
            self.distrusted.insert(path.clone());
        }
    }

    fn is_distrusted<P>(&self, path: &P) -> bool
    where
        RelPath: std::borrow::Borrow<P>,
        P: Ord + ?Sized,
    {
        !self.distrusted.is_empty() && self.distrusted.contains(path)
    }

    /// The stat recorded for the live file at `path`, when it may be taken
    /// to stand for the recorded content: a file with this stat still
    /// holds it, unless it was changed in place with its stat kept (a
    /// reader that relies on this must have another check behind it). Not
    /// for a file whose list is to be made again or that was found changed.
    pub fn trusted_stat(&self, path: &RelPath) -> Option<LocalStat> {
        let r = self.records.get(path).filter(|r| r.is_live_file())?;
        let doubted =
            (!self.relist.is_empty() && self.relist.contains(path)) || self.is_distrusted(path);
        if doubted { None } else { r.stat() }
    }

    /// True if a file (or link) with this stat must be (re)hashed (read).
    pub fn needs_hash<P>(&self, path: &P, stat: &LocalStat) -> bool
    where
        RelPath: std::borrow::Borrow<P>,
        P: Ord + ?Sized,
    {
        self.compare_seen(path, Some(stat)).needs_hash
    }

    /// What a walk's comparison needs to know of `path`, in one lookup;
    /// `stat` is that of the file or link seen there.
    pub fn compare_seen<P>(&self, path: &P, stat: Option<&LocalStat>) -> SeenAt
    where
        RelPath: std::borrow::Borrow<P>,
        P: Ord + ?Sized,
    {
        let r = self.records.get(path);
        let needs_hash = match r {
            Some(r) if r.is_live_file() || r.live_link().is_some() => {
                r.stat().as_ref() != stat
                    || (!self.relist.is_empty() && self.relist.contains(path))
                    || self.is_distrusted(path)
            }
            _ => true,
        };
        SeenAt {
            live: r.is_some_and(|r| !r.deleted()),
            dir: r.is_some_and(|r| r.is_dir()),
            needs_hash,
            seq: r.map_or(0, |r| r.seq()),
        }
    }

    /// True when the record at `path` is a folder's (live or deleted).
    pub fn is_dir(&self, path: &RelPath) -> bool {
        self.records.get(path).is_some_and(|r| r.is_dir())
    }

    fn next_version(&mut self, prev: Option<&VersionVector>) -> (VersionVector, u64) {
        let mut v = prev.cloned().unwrap_or_default();
        self.clock = self.clock.max(v.max_counter()).saturating_add(1);
        v.set(self.me, self.clock);
        self.seq += 1;
        (v, self.seq)
    }

    /// The write just versioned by [`Index::next_version`]: it replaces
    /// every write shown before.
    fn dot(&self) -> Writes {
        Dot {
            node: Some(self.me),
            counter: self.clock,
        }
        .into()
    }

    /// Adds an event of this node to `v` (settling a conflict).
    pub fn bump(&mut self, v: &mut VersionVector) {
        self.clock = self.clock.max(v.max_counter()).saturating_add(1);
        v.set(self.me, self.clock);
    }

    /// Keeps our content but records `version` (ours merged with a peer's
    /// that had only seen an older write, or that was ours exactly but for
    /// its history) and the writes still live in it, so the peer takes ours.
    pub fn reassert(
        &mut self,
        path: &RelPath,
        version: VersionVector,
        written: Writes,
        losers: Writes,
    ) {
        let Some(mut r) = self.get(path) else {
            return;
        };
        self.clock = self.clock.max(version.max_counter());
        self.seq += 1;
        r.entry.version = version;
        r.entry.written = written;
        r.entry.losers = losers;
        r.seq = self.seq;
        self.put(r);
    }

    /// Takes the file now at `path` (whose stat is `stat`) for our indexed
    /// version without reading it: its content was just kept aside as a
    /// conflict copy (a change that lost to a lock owner's version), and
    /// the version about to be installed replaces it. False when there is
    /// no live file here.
    pub fn adopt_stat(&mut self, path: &RelPath, stat: LocalStat) -> bool {
        let Some(r) = self.records.get_mut(path) else {
            return false;
        };
        if !r.is_live_file() {
            return false;
        }
        r.set_stat(stat);
        self.dirty.push(r.seq());
        // Taken as the recorded content: not to be read again for a doubt
        // raised before (what it held then was dealt with by the caller).
        if !self.distrusted.is_empty() {
            self.distrusted.remove(path);
        }
        true
    }

    /// Announces our entry at `path` again, unchanged: a new sequence
    /// number, so every peer (the one it came from too) is sent it again.
    pub fn reannounce(&mut self, path: &RelPath) {
        let Some(mut r) = self.get(path) else {
            return;
        };
        self.seq += 1;
        r.seq = self.seq;
        self.put(r);
    }

    fn put(&mut self, record: Record) {
        self.dirty.push(record.seq);
        self.insert(record);
    }

    /// Records a new stat for the unchanged record at `path` (same sequence
    /// number: peers are not sent it again, the store is).
    fn restat(&mut self, path: &RelPath, stat: LocalStat) {
        let Some(r) = self.records.get_mut(path) else {
            return;
        };
        if r.stat() == Some(stat) {
            return;
        }
        r.set_stat(stat);
        r.set_origin(None);
        self.dirty.push(r.seq());
        // As a new record would: this file is where its content is now
        // (another copy may have gone since it was noted).
        if r.is_live_file() {
            let (seq, hash, size) = (r.seq(), *r.hash(), r.size());
            let r = &self.records[path];
            let blocks = r.blocks().to_vec();
            self.add_blocks(path, seq, &hash, size, &blocks);
        }
    }

    /// Records the block list read from the unchanged file at `path`, where
    /// the record holds another list for the same content: one made before
    /// block hashes were BLAKE3 chaining values (schema 6), or none (see
    /// [`Index::relist`]). Same sequence number, version and origin: the
    /// content did not change, and peers that reset their progress (as a
    /// migration from schema 6 does) are sent it again.
    fn reblock(&mut self, path: &RelPath, stat: LocalStat, blocks: &[ContentHash]) {
        let Some(r) = self.records.get(path) else {
            return;
        };
        let origin = r.origin();
        let mut record = r.unpack(path, &self.nodes);
        record.entry.blocks = blocks.to_vec();
        record.stat = Some(stat);
        self.put(record);
        if let Some(p) = self.records.get_mut(path) {
            p.set_origin(origin);
        }
    }

    /// Peers' entries that the last run wrote down just before making them
    /// on disk (see `core::journal`). Until [`Index::end_applied`], a path
    /// seen to differ from its record is recorded as such an entry (the
    /// peer's version, with the peer as its origin) rather than as a change
    /// made here, when the disk shows exactly that entry and the entry is
    /// newer than the record: the crash came after the step and before the
    /// record was saved. Of several entries for a path (a step written down
    /// may have waited or failed), the newest the disk shows counts.
    pub fn expect_applied(&mut self, entries: Vec<(FileEntry, Option<NodeId>)>) {
        for (e, origin) in entries {
            self.applied
                .entry(e.path.clone())
                .or_default()
                .push((e, origin));
        }
    }

    /// The start-up has looked at the tree: entries not found on disk were
    /// not made (or were made over since); they are dropped. Returns how
    /// many paths had some.
    pub fn end_applied(&mut self) -> usize {
        let n = self.applied.len();
        self.applied = HashMap::new();
        n
    }

    /// Records the newest entry written down for `path` that `shown` says
    /// the disk shows and that is newer than our record (see
    /// [`Index::expect_applied`]), with `stat` and, for a file, the block
    /// list read from it. False when there is none.
    fn finish_applied(
        &mut self,
        path: &RelPath,
        stat: Option<LocalStat>,
        blocks: Option<&[ContentHash]>,
        shown: impl Fn(&FileEntry) -> bool,
    ) -> bool {
        let Some(noted) = self.applied.get(path) else {
            return false;
        };
        let ours = self.get(path).map(|r| r.entry.version);
        let newer = |e: &FileEntry| {
            ours.as_ref()
                .is_none_or(|v| e.version.compare(v) == VvOrder::After)
        };
        // The last written down wins, unless an earlier one is newer (the
        // later step waited or failed, and another was made over it).
        let mut best: Option<usize> = None;
        for (i, (e, _)) in noted.iter().enumerate() {
            if !shown(e) || !newer(e) {
                continue;
            }
            if best.is_none_or(|b| noted[b].0.version.compare(&e.version) != VvOrder::After) {
                best = Some(i);
            }
        }
        let Some(i) = best else {
            return false;
        };
        let Some(mut noted) = self.applied.remove(path) else {
            return false;
        };
        let (mut e, origin) = noted.swap_remove(i);
        if let Some(b) = blocks {
            e.blocks = b.to_vec();
        }
        tracing::info!(
            "{path}: recorded as the peer's change it is (made here just before the node stopped, not yet recorded then)"
        );
        self.record_remote(e, stat, origin);
        true
    }

    /// Records a file seen on disk with the given stat and content.
    pub fn observe_file(
        &mut self,
        path: &RelPath,
        stat: LocalStat,
        h: &Hashed,
    ) -> Option<ChangeKind> {
        // Read now: what it holds is recorded below, whatever it is.
        if !self.distrusted.is_empty() {
            self.distrusted.remove(path);
        }
        if self.relist.remove(path)
            && let Some(r) = self.records.get(path)
            && r.is_live_file()
            && *r.hash() == h.hash
            && r.size() == h.size
            && r.stat() == Some(stat)
        {
            // Read again for its list only, and not changed since it was
            // recorded (same stat): whatever the entry says of its time
            // and mode (a file system may keep them coarser).
            self.reblock(path, stat, &h.blocks);
            return None;
        }
        if let Some(r) = self.records.get(path)
            && r.is_live_file()
            && *r.hash() == h.hash
            && r.size() == h.size
            && r.mtime_ns() == stat.mtime_ns
            && r.mode() == stat.mode
        {
            if r.blocks() != h.blocks.as_slice() {
                self.reblock(path, stat, &h.blocks);
            } else {
                self.restat(path, stat);
            }
            return None;
        }
        let shown = |e: &FileEntry| {
            e.is_live_file()
                && e.hash == h.hash
                && e.size == h.size
                && e.mtime_ns == stat.mtime_ns
                && e.mode == stat.mode
        };
        if self.finish_applied(path, Some(stat), Some(&h.blocks), shown) {
            return Some(ChangeKind::Applied);
        }
        let (size, hash, blocks) = (h.size, h.hash, h.blocks.clone());
        Some(
            self.local_change(path, Some(stat), |version, written| FileEntry {
                path: path.clone(),
                kind: EntryKind::File,
                size,
                mtime_ns: stat.mtime_ns,
                mode: stat.mode,
                hash,
                blocks,
                version,
                written,
                losers: Writes::default(),
                deleted: false,
            }),
        )
    }

    /// Records a symbolic link seen on disk, with its target text.
    pub fn observe_link(
        &mut self,
        path: &RelPath,
        stat: LocalStat,
        target: String,
    ) -> Option<ChangeKind> {
        if let Some(r) = self.records.get(path)
            && r.live_link() == Some(target.as_str())
            && r.mtime_ns() == stat.mtime_ns
        {
            self.restat(path, stat);
            return None;
        }
        let shown =
            |e: &FileEntry| e.live_link() == Some(target.as_str()) && e.mtime_ns == stat.mtime_ns;
        if self.finish_applied(path, Some(stat), None, shown) {
            return Some(ChangeKind::Applied);
        }
        let hash = ContentHash::of(target.as_bytes());
        Some(
            self.local_change(path, Some(stat), |version, written| FileEntry {
                path: path.clone(),
                kind: EntryKind::Link(target),
                size: 0,
                mtime_ns: stat.mtime_ns,
                mode: 0,
                hash,
                blocks: Vec::new(),
                version,
                written,
                losers: Writes::default(),
                deleted: false,
            }),
        )
    }

    /// Records a directory seen on disk. Directory mtimes are not versioned:
    /// they change whenever a child does.
    pub fn observe_dir(&mut self, path: &RelPath, mode: u32) -> Option<ChangeKind> {
        if self
            .records
            .get(path)
            .is_some_and(|r| r.is_live_dir() && r.mode() == mode)
        {
            return None;
        }
        if self.finish_applied(path, None, None, |e| e.is_live_dir() && e.mode == mode) {
            return Some(ChangeKind::Applied);
        }
        Some(self.dir_change(path, mode))
    }

    /// Records the folder at `path` as a new local version although it did
    /// not change: it was kept against a peer's change that would have
    /// removed it (it holds files that peer has not seen). The new version
    /// is concurrent with that change, so every node settles the pair as a
    /// conflict (a folder beats a file; a live folder beats a delete).
    pub fn keep_dir(&mut self, path: &RelPath, mode: u32) {
        self.dir_change(path, mode);
    }

    fn dir_change(&mut self, path: &RelPath, mode: u32) -> ChangeKind {
        self.local_change(path, None, |version, written| FileEntry {
            path: path.clone(),
            kind: EntryKind::Dir,
            size: 0,
            mtime_ns: 0,
            mode,
            hash: ContentHash::default(),
            blocks: Vec::new(),
            version,
            written,
            losers: Writes::default(),
            deleted: false,
        })
    }

    /// Records a change made here at `path`: a new version on top of ours,
    /// built by `make` from that version and the write's dot. It replaces
    /// the writes shown before; conflict losers stay live (the user did not
    /// write over them, they are in the conflicts folder).
    fn local_change(
        &mut self,
        path: &RelPath,
        stat: Option<LocalStat>,
        make: impl FnOnce(VersionVector, Writes) -> FileEntry,
    ) -> ChangeKind {
        let prev = self.get(path);
        let kind = match &prev {
            Some(r) if !r.entry.deleted => ChangeKind::Modified,
            _ => ChangeKind::Added,
        };
        let (prev_version, losers) = match prev {
            Some(r) => (Some(r.entry.version), r.entry.losers),
            None => (None, Writes::default()),
        };
        let (version, seq) = self.next_version(prev_version.as_ref());
        let entry = FileEntry {
            losers,
            ..make(version, self.dot())
        };
        self.put(Record { entry, seq, stat });
        kind
    }

    /// Records that `path` is gone: it and everything under it become
    /// tombstones. Returns the paths deleted here (not those whose peer's
    /// deletion was made before a restart: see [`Index::expect_applied`]).
    pub fn observe_missing(&mut self, path: &RelPath) -> Vec<RelPath> {
        let mut gone = self.live_under(path);
        if self.records.get(path).is_some_and(|r| !r.deleted()) {
            gone.push(path.clone());
        }
        gone.retain(|p| {
            let applied =
                !self.applied.is_empty() && self.finish_applied(p, None, None, |e| e.deleted);
            if !applied {
                self.tombstone(p);
            }
            !applied
        });
        gone
    }

    fn tombstone(&mut self, path: &RelPath) {
        let Some(prev) = self.get(path) else {
            return;
        };
        let prev_entry = prev.entry;
        let (version, seq) = self.next_version(Some(&prev_entry.version));
        self.put(Record {
            entry: FileEntry {
                size: 0,
                hash: ContentHash::default(),
                blocks: Vec::new(),
                version,
                written: self.dot(),
                deleted: true,
                ..prev_entry
            },
            seq,
            stat: None,
        });
    }

    /// Gives back what [`Index::take_forgotten`] and
    /// [`Index::take_dirty_paths`] took when it could not be saved, for the
    /// next save: forgotten paths ahead of any forgotten since, and the
    /// records of the dirty paths still held.
    pub fn restore_unsaved(&mut self, forgotten: Vec<RelPath>, dirty: &[RelPath]) {
        let mut later = std::mem::replace(&mut self.forgotten, forgotten);
        self.forgotten.append(&mut later);
        for p in dirty {
            if let Some(r) = self.records.get(p) {
                self.dirty.push(r.seq());
            }
        }
    }

    /// Whether changes wait to be taken for the store.
    pub fn has_unsaved(&self) -> bool {
        !self.dirty.is_empty() || !self.forgotten.is_empty()
    }

    /// The records changed since the last call, for the store (copies).
    /// Sorted by path, as the store's table is.
    pub fn take_dirty(&mut self) -> Vec<Record> {
        let paths = self.take_dirty_paths();
        paths.iter().filter_map(|p| self.get(p)).collect()
    }

    /// The paths of the records changed since the last call, sorted: a
    /// caller that saves a whole cold scan copies the records a few at a
    /// time instead of all at once.
    pub fn take_dirty_paths(&mut self) -> Vec<RelPath> {
        let mut seqs = std::mem::take(&mut self.dirty);
        seqs.sort_unstable();
        seqs.dedup();
        let mut paths: Vec<RelPath> = seqs
            .iter()
            .filter_map(|s| self.by_seq.get(s).cloned())
            .collect();
        paths.sort_unstable();
        paths
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_common::VvOrder;
    use tandem_common::hashing::hash_reader;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn stat(inode: u64, size: u64, mtime_ns: i64) -> LocalStat {
        LocalStat {
            inode,
            size,
            mtime_ns,
            mode: 0o644,
        }
    }

    /// A peer's entry for `path` with `content` at mtime 10, its version
    /// `prev` plus the peer's counter `c`.
    fn peers_file(
        peer: NodeId,
        path: &RelPath,
        content: &[u8],
        prev: Option<&VersionVector>,
        c: u64,
    ) -> FileEntry {
        let h = hash_reader(content).unwrap();
        let mut version = prev.cloned().unwrap_or_default();
        version.set(peer, c);
        FileEntry {
            path: path.clone(),
            kind: EntryKind::File,
            size: h.size,
            mtime_ns: 10,
            mode: 0o644,
            hash: h.hash,
            blocks: Vec::new(),
            version,
            written: Writes::default(),
            losers: Writes::default(),
            deleted: false,
        }
    }

    #[test]
    fn a_peers_change_written_down_and_on_disk_is_recorded_as_the_peers() {
        let (me, peer) = (NodeId::random(), NodeId::random());
        let mut ix = Index::new(me, vec![]);
        let (a, b, gone, old) = (p("a"), p("b"), p("gone"), p("old"));
        let one = hash_reader(&b"one"[..]).unwrap();
        ix.observe_file(&b, stat(1, 3, 10), &one);
        ix.observe_file(&gone, stat(2, 3, 10), &one);
        ix.observe_file(&old, stat(3, 3, 10), &one);
        let b_was = ix.get(&b).unwrap().entry.version;
        let old_was = ix.get(&old).unwrap().entry.version;
        // a: new; b: an edit, written down twice (the second step waited,
        // so the disk shows the first); gone: deleted; old: an entry older
        // than our record (saved long ago, edited here since).
        let a_e = peers_file(peer, &a, b"two", None, 1);
        let b1 = peers_file(peer, &b, b"three", Some(&b_was), 2);
        let b2 = peers_file(peer, &b, b"four", Some(&b1.version), 3);
        let mut gone_e = peers_file(
            peer,
            &gone,
            b"",
            Some(&ix.get(&gone).unwrap().entry.version),
            4,
        );
        gone_e.deleted = true;
        let mut stale = peers_file(peer, &old, b"five", None, 5);
        stale.version = VersionVector::default();
        stale.version.set(peer, 5);
        assert_eq!(stale.version.compare(&old_was), VvOrder::Concurrent);
        ix.expect_applied(vec![
            (a_e.clone(), Some(peer)),
            (b1.clone(), Some(peer)),
            (b2, Some(peer)),
            (gone_e.clone(), None),
            (stale.clone(), Some(peer)),
        ]);
        let two = hash_reader(&b"two"[..]).unwrap();
        assert_eq!(
            ix.observe_file(&a, stat(4, 3, 10), &two),
            Some(ChangeKind::Applied)
        );
        let r = ix.get(&a).unwrap();
        assert_eq!(
            r.entry.version, a_e.version,
            "the peer's version, no write of ours"
        );
        assert_eq!(r.entry.blocks, two.blocks, "the list read from the file");
        assert_eq!(r.stat, Some(stat(4, 3, 10)));
        let three = hash_reader(&b"three"[..]).unwrap();
        assert_eq!(
            ix.observe_file(&b, stat(5, 5, 10), &three),
            Some(ChangeKind::Applied)
        );
        assert_eq!(ix.get(&b).unwrap().entry.version, b1.version);
        assert!(
            ix.observe_missing(&gone).is_empty(),
            "not a delete made here"
        );
        let r = ix.get(&gone).unwrap();
        assert!(r.entry.deleted && r.entry.version == gone_e.version);
        // Not newer than ours: a change made here, on top of ours.
        let five = hash_reader(&b"five"[..]).unwrap();
        assert_eq!(
            ix.observe_file(&old, stat(6, 4, 10), &five),
            Some(ChangeKind::Modified)
        );
        assert_eq!(
            ix.get(&old).unwrap().entry.version.compare(&old_was),
            VvOrder::After
        );
        // A file that is not what was written down: ours.
        let mut c_e = peers_file(peer, &p("c"), b"six", None, 6);
        ix.expect_applied(vec![(c_e.clone(), None)]);
        let six = hash_reader(&b"six"[..]).unwrap();
        assert_eq!(
            ix.observe_file(&p("c"), stat(7, 3, 11), &six),
            Some(ChangeKind::Added)
        );
        // Once the start-up is over, nothing written down counts.
        c_e.path = p("d");
        ix.expect_applied(vec![(c_e, None)]);
        assert_eq!(ix.end_applied(), 3, "old, c and d were not taken");
        assert_eq!(
            ix.observe_file(&p("d"), stat(8, 3, 10), &six),
            Some(ChangeKind::Added)
        );
        let folder = FileEntry {
            kind: EntryKind::Dir,
            size: 0,
            hash: ContentHash::default(),
            mode: 0o755,
            ..peers_file(peer, &p("f"), b"", None, 7)
        };
        ix.expect_applied(vec![(folder.clone(), Some(peer))]);
        assert_eq!(
            ix.observe_dir(&p("f"), 0o700),
            Some(ChangeKind::Added),
            "another mode"
        );
        ix.expect_applied(vec![(
            FileEntry {
                path: p("g"),
                ..folder
            },
            Some(peer),
        )]);
        assert_eq!(ix.observe_dir(&p("g"), 0o755), Some(ChangeKind::Applied));
        // Two concurrent entries the disk shows alike (a step written down
        // failed, another not built on it was made): the later one.
        let other = NodeId::random();
        let first = peers_file(peer, &p("h"), b"same", None, 8);
        let later = peers_file(other, &p("h"), b"same", None, 9);
        ix.expect_applied(vec![(first, Some(peer)), (later.clone(), Some(other))]);
        let same = hash_reader(&b"same"[..]).unwrap();
        assert_eq!(
            ix.observe_file(&p("h"), stat(9, 4, 10), &same),
            Some(ChangeKind::Applied)
        );
        assert_eq!(ix.get(&p("h")).unwrap().entry.version, later.version);
    }

    /// A file found to hold other content than its record (when read to
    /// be sent) with its stat kept: read at the next look whatever its
    /// stat, counted as changed, its stat not trusted; then recorded as
    /// what it holds.
    #[test]
    fn a_distrusted_file_is_read_again_with_its_stat_kept() {
        let mut ix = Index::new(NodeId::random(), vec![]);
        let (a, b) = (p("a"), p("b"));
        let one = hash_reader(&b"one"[..]).unwrap();
        let two = hash_reader(&b"two"[..]).unwrap();
        let st = stat(1, 3, 10);
        ix.observe_file(&a, st, &one);
        ix.observe_file(&b, stat(2, 3, 10), &one);
        assert!(!ix.needs_hash(&a, &st));
        assert!(!ix.stat_changed(&a, &st));
        assert_eq!(ix.trusted_stat(&a), Some(st));

        // Not for content the record no longer holds (it moved on since the
        // read), nor for what is not a live file.
        ix.distrust(&a, &two.hash);
        ix.distrust(&p("nothing"), &one.hash);
        assert!(!ix.needs_hash(&a, &st));
        ix.distrust(&a, &one.hash);
        assert!(ix.needs_hash(&a, &st));
        assert!(ix.stat_changed(&a, &st));
        assert_eq!(ix.trusted_stat(&a), None);
        assert!(!ix.needs_hash(&b, &stat(2, 3, 10)));
        assert!(ix.trusted_stat(&b).is_some());
        // Announced again unchanged: still to be read.
        ix.reannounce(&a);
        assert!(ix.needs_hash(&a, &st));

        // Read: the content it holds is a new version, and it is trusted
        // again.
        let v1 = ix.get(&a).unwrap().entry.version.clone();
        assert_eq!(ix.observe_file(&a, st, &two), Some(ChangeKind::Modified));
        assert_eq!(ix.get(&a).unwrap().entry.hash, two.hash);
        assert_ne!(ix.get(&a).unwrap().entry.version, v1);
        assert!(!ix.needs_hash(&a, &st));
        assert_eq!(ix.trusted_stat(&a), Some(st));

        // A false alarm (it holds what its record says) changes nothing.
        ix.distrust(&b, &one.hash);
        assert_eq!(ix.observe_file(&b, stat(2, 3, 10), &one), None);
        assert!(!ix.needs_hash(&b, &stat(2, 3, 10)));
        assert!(ix.trusted_stat(&b).is_some());

        // Taken for the recorded content without a read (its change was
        // kept aside): no longer doubted.
        ix.distrust(&b, &one.hash);
        assert!(ix.adopt_stat(&b, stat(3, 3, 10)));
        assert!(!ix.needs_hash(&b, &stat(3, 3, 10)));
        assert_eq!(ix.trusted_stat(&b), Some(stat(3, 3, 10)));
    }

    #[test]
    fn add_modify_touch_delete_bump_versions() {
        let me = NodeId::random();
        let mut ix = Index::new(me, vec![]);
        let h1 = hash_reader(&b"one"[..]).unwrap();
        let h2 = hash_reader(&b"two"[..]).unwrap();
        let a = p("a");

        assert_eq!(
            ix.observe_file(&a, stat(1, 3, 10), &h1),
            Some(ChangeKind::Added)
        );
        let v1 = ix.get(&a).unwrap().entry.version.clone();
        assert_eq!(ix.take_dirty().len(), 1);

        // Same content, same mtime, new inode (e.g. our own rename): stat only.
        assert_eq!(ix.observe_file(&a, stat(2, 3, 10), &h1), None);
        assert_eq!(ix.get(&a).unwrap().entry.version, v1);
        assert_eq!(ix.take_dirty().len(), 1, "stat change must still be saved");
        assert!(!ix.needs_hash(&a, &stat(2, 3, 10)));
        assert!(ix.needs_hash(&a, &stat(2, 3, 11)));

        // Only the mtime moved (touch): a new version, because mtime syncs.
        assert_eq!(
            ix.observe_file(&a, stat(2, 3, 11), &h1),
            Some(ChangeKind::Modified)
        );
        let v2 = ix.get(&a).unwrap().entry.version.clone();
        assert_eq!(v2.compare(&v1), VvOrder::After);

        assert_eq!(
            ix.observe_file(&a, stat(2, 3, 12), &h2),
            Some(ChangeKind::Modified)
        );
        let seq_before = ix.get(&a).unwrap().seq;

        assert_eq!(ix.observe_missing(&a), vec![a.clone()]);
        let r = ix.get(&a).unwrap().clone();
        assert!(r.entry.deleted && r.seq > seq_before && r.stat.is_none());
        assert!(
            ix.observe_missing(&a).is_empty(),
            "deleting twice is a no-op"
        );

        // Re-creating after a delete is an add on top of the tombstone.
        assert_eq!(
            ix.observe_file(&a, stat(3, 3, 13), &h1),
            Some(ChangeKind::Added)
        );
        assert_eq!(
            ix.get(&a)
                .unwrap()
                .entry
                .version
                .compare(&r.entry.version.clone()),
            VvOrder::After
        );
    }

    #[test]
    fn compacting_in_slices_keeps_every_record_at_slice_edges() {
        let h = hash_reader(&b"x"[..]).unwrap();
        for n in [
            0,
            1,
            COMPACT_SLICE,
            COMPACT_SLICE + 1,
            2 * COMPACT_SLICE,
            70,
        ] {
            let mut ix = Index::new(NodeId::random(), vec![]);
            for i in 0..n as u64 {
                ix.observe_file(&p(&format!("f{i:03}")), stat(i + 1, 1, 1), &h);
            }
            let before: Vec<_> = ix.records().map(|r| format!("{r:?}")).collect();
            let seqs: Vec<_> = ix.by_seq.iter().map(|(s, p)| (*s, p.clone())).collect();
            ix.compact();
            let after: Vec<_> = ix.records().map(|r| format!("{r:?}")).collect();
            assert_eq!(before, after, "{n} records");
            assert!(
                ix.by_seq.iter().map(|(s, p)| (*s, p.clone())).eq(seqs),
                "{n}"
            );
        }
    }

    #[test]
    fn compacting_keeps_every_record_and_counts_changes_from_zero() {
        let mut ix = Index::new(NodeId::random(), vec![]);
        let h = hash_reader(&b"x"[..]).unwrap();
        for i in 0..50u64 {
            ix.observe_file(&p(&format!("f{i:02}")), stat(i + 1, 1, 1), &h);
        }
        ix.observe_missing(&p("f07"));
        assert_eq!(ix.changed_since_compact(), 51);
        let before: Vec<_> = ix.records().map(|r| format!("{r:?}")).collect();
        let since = |ix: &Index| {
            let (e, upto) = ix.entries_since(40, u64::MAX, usize::MAX, None);
            (e.iter().map(|(s, _)| *s).collect::<Vec<u64>>(), upto)
        };
        let sent = since(&ix);
        assert_eq!(sent.0.len(), 11);
        ix.compact();
        assert_eq!(ix.changed_since_compact(), 0);
        let after: Vec<_> = ix.records().map(|r| format!("{r:?}")).collect();
        assert_eq!(before, after);
        assert_eq!(since(&ix), sent, "the sequence map too");
        ix.observe_file(&p("f07"), stat(99, 1, 1), &h);
        assert_eq!(ix.changed_since_compact(), 1);

        // Places of blocks: a large file's block is found where it is, and
        // the place of a block of content since replaced is dropped.
        let one = vec![1u8; 20_000];
        let two = vec![2u8; 20_000];
        let (h1, h2) = (
            hash_reader(&one[..]).unwrap(),
            hash_reader(&two[..]).unwrap(),
        );
        ix.observe_file(&p("big"), stat(200, 20_000, 1), &h1);
        ix.observe_file(&p("big"), stat(200, 20_000, 2), &h2);
        assert_eq!(ix.blocks.len(), 2, "the stale place is still there");
        ix.compact();
        assert_eq!(ix.blocks.len(), 1);
        assert_eq!(ix.block_source(&h2.blocks[0]), Some((p("big"), 0)));
        assert_eq!(ix.block_source(&h1.blocks[0]), None);
    }

    #[test]
    fn removing_a_directory_tombstones_its_subtree_only() {
        let mut ix = Index::new(NodeId::random(), vec![]);
        let h = hash_reader(&b"x"[..]).unwrap();
        ix.observe_dir(&p("d"), 0o755);
        ix.observe_file(&p("d/x"), stat(1, 1, 1), &h);
        ix.observe_file(&p("d/e/y"), stat(2, 1, 1), &h);
        ix.observe_file(&p("d2"), stat(3, 1, 1), &h);
        ix.observe_file(&p("d.txt"), stat(4, 1, 1), &h);
        let mut gone = ix.observe_missing(&p("d"));
        gone.sort();
        assert_eq!(gone, vec![p("d"), p("d/e/y"), p("d/x")]);
        assert!(!ix.get(&p("d2")).unwrap().entry.deleted);
        assert!(!ix.get(&p("d.txt")).unwrap().entry.deleted);
    }

    #[test]
    fn children_of_a_folder_skip_what_is_deeper() {
        let mut ix = Index::new(NodeId::random(), vec![]);
        let h = hash_reader(&b"x"[..]).unwrap();
        for (i, f) in [
            "d/x", "d/e/y", "d/e/z/w", "d.txt", "d-e", "d/f", "top", "d/E",
        ]
        .iter()
        .enumerate()
        {
            ix.observe_file(&p(f), stat(i as u64, 1, 1), &h);
        }
        ix.observe_dir(&p("d"), 0o755);
        ix.observe_dir(&p("d/e"), 0o755);
        ix.observe_missing(&p("d/f"));
        let names = |d: Option<&str>| -> Vec<String> {
            let d = d.map(p);
            ix.live_children(d.as_ref())
                .into_iter()
                .map(|r| r.to_string())
                .collect()
        };
        assert_eq!(names(None), ["d", "d-e", "d.txt", "top"]);
        assert_eq!(names(Some("d")), ["d/E", "d/e", "d/x"]);
        assert_eq!(names(Some("d/e")), ["d/e/y"], "z is not a record itself");
        assert!(names(Some("nope")).is_empty());
    }

    #[test]
    fn entries_since_and_block_sources() {
        let mut ix = Index::new(NodeId::random(), vec![]);
        let h = hash_reader(&b"x"[..]).unwrap();
        ix.observe_file(&p("a"), stat(1, 1, 1), &h);
        ix.observe_file(&p("b"), stat(2, 1, 1), &h);
        ix.observe_file(&p("a"), stat(1, 1, 2), &h);
        let got: Vec<(u64, String)> = ix
            .entries_since(0, u64::MAX, usize::MAX, None)
            .0
            .into_iter()
            .map(|(s, e)| (s, e.path.to_string()))
            .collect();
        assert_eq!(got, vec![(2, "b".into()), (3, "a".into())]);
        assert_eq!(ix.entries_since(2, u64::MAX, usize::MAX, None).0.len(), 1);
        // Nothing above what the store holds.
        let (capped, upto) = ix.entries_since(0, 2, usize::MAX, None);
        assert_eq!((capped.len(), capped[0].0, upto), (1, 2, 2));
        assert_eq!(ix.entries_since(2, 2, usize::MAX, None), (vec![], 2));
        assert_eq!(
            ix.entries_since(0, u64::MAX, 1, None).0.len(),
            1,
            "at least one entry per batch"
        );
        // Small files' blocks are not sources (their content travels with
        // them); a larger file's are, until it changes or goes.
        assert!(ix.block_source(&h.blocks[0]).is_none());
        let mut remote = ix.get(&p("b")).unwrap().entry.clone();
        remote.path = p("c");
        let mut v = VersionVector::new();
        v.set(NodeId::random(), 40);
        remote.version = v;
        let peer = NodeId::random();
        ix.record_remote(remote, None, Some(peer));
        assert_eq!(ix.get(&p("c")).unwrap().seq, 4);
        // Not echoed to the peer it came from, but the sequence still advances.
        assert_eq!(
            ix.entries_since(3, u64::MAX, usize::MAX, Some(peer)),
            (vec![], 4)
        );
        assert_eq!(ix.entries_since(3, u64::MAX, usize::MAX, None).0.len(), 1);
        // The clock moved past the remote counter: our next change dominates.
        ix.observe_file(&p("c"), stat(9, 1, 9), &h);
        assert_eq!(ix.get(&p("c")).unwrap().entry.version.get(ix.me()), 41);
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let big = hash_reader(&data[..]).unwrap();
        ix.observe_file(&p("big"), stat(7, big.size, 1), &big);
        assert_eq!(ix.block_source(&big.blocks[1]), Some((p("big"), 1)));
        ix.observe_missing(&p("big"));
        assert_eq!(ix.block_source(&big.blocks[1]), None);
    }

    /// A stored record whose block list is of the kind schema 6 held (each
    /// block hashed alone, which does not make the content hash) is read
    /// again at the next look, unchanged stat or not, and takes the list
    /// read: same version and sequence number, saved again, its blocks
    /// found by their new hashes. Its time on disk may be coarser than the
    /// entry's (as on FAT): still no new version.
    #[test]
    fn a_stored_list_of_the_older_kind_is_read_again() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let h = hash_reader(&data[..]).unwrap();
        let old: Vec<ContentHash> = data
            .chunks(tandem_common::model::BLOCK_SIZE as usize)
            .map(ContentHash::of)
            .collect();
        assert_ne!(old, h.blocks);
        let on_disk = stat(5, h.size, 2_000_000_000);
        let mut r = crate::store::tests::record("a", 7, false);
        r.entry.size = h.size;
        r.entry.hash = h.hash;
        r.entry.blocks = old.clone();
        r.entry.mtime_ns = on_disk.mtime_ns + 123;
        r.stat = Some(on_disk);
        let mut ix = Index::new(NodeId::random(), vec![r.clone()]);
        assert!(
            ix.compare_seen(&p("a"), Some(&on_disk)).needs_hash,
            "read again"
        );
        assert_eq!(ix.block_source(&old[1]), None, "no place to read from");
        assert_eq!(
            ix.blocks_of_content(&p("a"), &h.hash, h.size),
            None,
            "not handed out"
        );
        // Announced again as it is (its old list carried over): still to
        // be read again.
        ix.reannounce(&p("a"));
        assert!(ix.compare_seen(&p("a"), Some(&on_disk)).needs_hash);
        let r = ix.get(&p("a")).unwrap();
        assert_eq!(ix.observe_file(&p("a"), on_disk, &h), None, "no change");
        let after = ix.get(&p("a")).unwrap();
        assert_eq!(after.entry.blocks, h.blocks);
        assert_eq!(
            (after.seq, &after.entry.version, after.entry.mtime_ns),
            (r.seq, &r.entry.version, r.entry.mtime_ns)
        );
        assert_eq!(ix.take_dirty(), vec![after], "saved again");
        assert!(!ix.compare_seen(&p("a"), Some(&on_disk)).needs_hash);
        assert_eq!(ix.block_source(&h.blocks[1]), Some((p("a"), 1)));
        assert_eq!(
            ix.blocks_of_content(&p("a"), &h.hash, h.size),
            Some(&h.blocks[..])
        );
    }

    /// A peer's entry whose list does not make its content hash takes ours
    /// for the same content, or none (then it is fetched and checked).
    #[test]
    fn a_peers_list_that_does_not_make_the_hash_is_not_taken() {
        let mut ix = Index::new(NodeId::random(), vec![]);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
        let h = hash_reader(&data[..]).unwrap();
        let mut e = crate::store::tests::record("b", 1, false).entry;
        e.size = h.size;
        e.hash = h.hash;
        e.blocks = vec![h.blocks[0]; h.blocks.len()];
        assert!(!ix.fill_blocks(&mut e), "nothing local has it");
        assert!(e.blocks.is_empty());
        // Ours at the same path, for the same content.
        ix.observe_file(&p("b"), stat(1, h.size, 1), &h);
        e.blocks = vec![h.blocks[0]; h.blocks.len()];
        assert!(ix.fill_blocks(&mut e));
        assert_eq!(e.blocks, h.blocks);
    }

    #[test]
    fn a_file_seen_again_is_where_its_blocks_are_read() {
        let mut ix = Index::new(NodeId::random(), vec![]);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let h = hash_reader(&data[..]).unwrap();
        ix.observe_file(&p("a"), stat(1, h.size, 1), &h);
        ix.observe_file(&p("c"), stat(2, h.size, 1), &h);
        assert_eq!(ix.block_source(&h.blocks[2]), Some((p("c"), 2)));
        ix.observe_missing(&p("c"));
        assert_eq!(ix.block_source(&h.blocks[2]), None, "c is gone");
        // a's inode changed (its own rename): a stat-only change, and a is
        // where the blocks are.
        assert_eq!(ix.observe_file(&p("a"), stat(3, h.size, 1), &h), None);
        assert_eq!(ix.block_source(&h.blocks[2]), Some((p("a"), 2)));
        assert_eq!(ix.block_source(&h.blocks[0]), Some((p("a"), 0)));
    }

    #[test]
    fn dirty_records_are_taken_once_in_path_order() {
        let mut ix = Index::new(NodeId::random(), vec![]);
        let h = hash_reader(&b"x"[..]).unwrap();
        ix.observe_file(&p("b"), stat(1, 1, 1), &h);
        ix.observe_file(&p("a"), stat(2, 1, 1), &h);
        ix.observe_file(&p("b"), stat(1, 1, 2), &h);
        ix.observe_file(&p("b"), stat(3, 1, 2), &h); // stat only: same seq
        let taken: Vec<(String, u64)> = ix
            .take_dirty()
            .into_iter()
            .map(|r| (r.entry.path.to_string(), r.seq))
            .collect();
        assert_eq!(taken, vec![("a".into(), 2), ("b".into(), 3)]);
        assert!(ix.take_dirty().is_empty());
    }

    #[test]
    fn stripped_entries_take_the_list_of_local_content() {
        use tandem_common::model::BLOCK_SIZE;
        let mut ix = Index::new(NodeId::random(), vec![]);
        let data: Vec<u8> = (0..BLOCK_SIZE as usize * 9 + 7).map(|i| i as u8).collect();
        let h = hash_reader(&data[..]).unwrap();
        assert!(!blocklist::sent_inline(h.blocks.len()));
        ix.observe_file(&p("big"), stat(1, h.size, 1), &h);
        // A rename elsewhere: same content under another name, no list.
        let mut moved = ix.get(&p("big")).unwrap().entry.clone();
        moved.path = p("moved");
        moved.blocks.clear();
        assert!(ix.fill_blocks(&mut moved));
        assert_eq!(moved.blocks, h.blocks);
        // Unknown content: nothing to fill from.
        let mut other = moved.clone();
        other.hash = ContentHash::of(b"other");
        other.blocks.clear();
        assert!(!ix.fill_blocks(&mut other));
        // Recording a stripped entry stores the complete list.
        moved.blocks.clear();
        let mut v = VersionVector::new();
        v.set(NodeId::random(), 5);
        moved.version = v;
        ix.record_remote(moved, None, None);
        assert_eq!(ix.get(&p("moved")).unwrap().entry.blocks, h.blocks);
        // The lookup follows the content: once both names are gone, or
        // hold something else, there is nothing to take.
        ix.observe_missing(&p("big"));
        ix.observe_missing(&p("moved"));
        let mut again = ix.get(&p("moved")).unwrap().entry.clone();
        again.hash = h.hash;
        again.size = h.size;
        again.deleted = false;
        again.path = p("third");
        assert!(!ix.fill_blocks(&mut again));
    }

    #[test]
    fn reload_continues_clock_and_sequence() {
        let me = NodeId::random();
        let mut ix = Index::new(me, vec![]);
        let h = hash_reader(&b"x"[..]).unwrap();
        ix.observe_file(&p("a"), stat(1, 1, 1), &h);
        ix.observe_file(&p("b"), stat(2, 1, 1), &h);
        let saved: Vec<Record> = ix.records().collect();
        let mut ix2 = Index::new(me, saved);
        ix2.observe_file(&p("c"), stat(3, 1, 1), &h);
        let c = ix2.get(&p("c")).unwrap();
        assert_eq!(c.seq, 3);
        assert_eq!(c.entry.version.get(me), 3);
    }
}
