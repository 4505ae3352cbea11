//! The compact form in which the index holds a record in memory.
//!
//! A node holds one record per path it knows, so the per-record cost is
//! the node's memory at 100,000 or 1,000,000 files. A [`Record`] as the
//! rest of the node sees it costs about 500 bytes with its allocations: a
//! version vector, a set of writes and a block list each on the heap, node
//! ids of 16 bytes, and the disk stat repeating the entry's size and time.
//! [`Packed`] keeps the common case in 96 bytes and no allocation beside
//! the path (which the index's map owns):
//!
//! - node ids are numbers into the index's [`Nodes`] table;
//! - a version vector of up to two nodes (counters under 2^32), the write
//!   one of its entries counts, and no conflict losers are inline;
//! - the block list of an empty file or of a one-block file (whose only
//!   block hash is the content hash) is implied;
//! - the stat is its inode when size, time and mode are the entry's.
//!
//! Everything else (a link's target, a longer block list or vector, losers,
//! a stat that differs) goes into one boxed [`Extra`]. Packing and
//! unpacking give back exactly the record packed (see the tests).

use std::collections::HashMap;

use tandem_common::model::{Dot, Writes};
use tandem_common::{ContentHash, EntryKind, FileEntry, NodeId, RelPath, VersionVector};

use super::{LocalStat, Record};

/// Node ids seen in records, numbered in the order first seen. The table
/// only grows; its size is bounded by [`Nodes::MAX`], past which records
/// keep their ids in full (in [`Extra`]), so a peer inventing ids costs at
/// most this table.
#[derive(Default)]
pub(super) struct Nodes {
    ids: Vec<NodeId>,
    of: HashMap<NodeId, u16>,
}

impl Nodes {
    /// Most ids numbered (`u16::MAX` is kept free so that a number plus
    /// one still fits, see [`Packed::origin`]).
    const MAX: usize = u16::MAX as usize - 1;

    /// Ids looked up by a scan of `ids` rather than hashed: a cluster has
    /// a handful of nodes, and each record asks two or three times.
    const SCANNED: usize = 8;

    /// The number of `n`, numbering it if new; `None` when the table is full.
    pub(super) fn intern(&mut self, n: NodeId) -> Option<u16> {
        if let Some(i) = self.find(n) {
            return Some(i);
        }
        if self.ids.len() >= Self::MAX {
            return None;
        }
        let i = self.ids.len() as u16;
        self.ids.push(n);
        self.of.insert(n, i);
        Some(i)
    }

    /// The number of `n`, if it has one.
    pub(super) fn find(&self, n: NodeId) -> Option<u16> {
        if self.ids.len() <= Self::SCANNED {
            return self.ids.iter().position(|&m| m == n).map(|i| i as u16);
        }
        self.of.get(&n).copied()
    }

    fn id(&self, i: u16) -> NodeId {
        self.ids[i as usize]
    }
}

/// What does not fit inline; absent for most records.
#[derive(Default)]
struct Extra {
    /// The block list, unless implied (see [`Blocks`]).
    blocks: Vec<ContentHash>,
    /// A link's target.
    target: Option<String>,
    /// The stat, when it is not the entry's size, time and mode.
    stat: Option<LocalStat>,
    /// The version vector, when it is not inline.
    version: Option<VersionVector>,
    /// The writes shown, when they are not one inline write.
    written: Option<Writes>,
    /// Conflict losers still live.
    losers: Writes,
    /// Permission bits past 16 bits (only a peer would send them).
    mode: Option<u32>,
}

impl Extra {
    /// Nothing out of line.
    fn is_empty(&self) -> bool {
        self.target.is_none()
            && self.stat.is_none()
            && self.blocks.is_empty()
            && self.version.is_none()
            && self.written.is_none()
            && self.losers.is_empty()
            && self.mode.is_none()
    }
}

const KIND_FILE: u8 = 0;
const KIND_DIR: u8 = 1;
const KIND_LINK: u8 = 2;
const KIND_MASK: u8 = 0b11;
const DELETED: u8 = 1 << 2;
/// The stat is `inode` with the entry's size, time and mode.
const STAT_INLINE: u8 = 1 << 3;
/// One write, the one the first inline vector entry counts (a node's
/// counter for the write that made the content, until the vector grows
/// without a new write there).
const WRITTEN_VV0: u8 = 1 << 4;
/// One write, the one the second inline vector entry counts.
const WRITTEN_VV1: u8 = 1 << 7;
/// The block list is `[hash]`.
const BLOCKS_SELF: u8 = 1 << 5;
/// The block list is in [`Extra`] (else it is empty).
const BLOCKS_EXTRA: u8 = 1 << 6;

/// Version vector entries kept inline.
const INLINE_VV: usize = 2;
/// `vv_len` when the vector is in [`Extra`].
const VV_EXTRA: u8 = u8::MAX;

/// One record, compact. See the module's doc.
pub(super) struct Packed {
    hash: ContentHash,
    size: u64,
    mtime_ns: i64,
    seq: u64,
    inode: u64,
    extra: Option<Box<Extra>>,
    vv_counters: [u32; INLINE_VV],
    mode: u16,
    vv_nodes: [u16; INLINE_VV],
    /// The peer the record was taken from unchanged: its number in
    /// [`Nodes`] plus one, 0 for none.
    origin: u16,
    vv_len: u8,
    flags: u8,
}

impl Packed {
    /// Packs `r`, numbering its node ids in `nodes`.
    pub(super) fn pack(r: Record, nodes: &mut Nodes) -> Packed {
        let Record { entry, seq, stat } = r;
        let FileEntry {
            path: _,
            kind,
            size,
            mtime_ns,
            mode,
            hash,
            blocks,
            version,
            written,
            losers,
            deleted,
        } = entry;
        let mut extra = Extra::default();
        let mut flags = match kind {
            EntryKind::File => KIND_FILE,
            EntryKind::Dir => KIND_DIR,
            EntryKind::Link(t) => {
                extra.target = Some(t);
                KIND_LINK
            }
        };
        if deleted {
            flags |= DELETED;
        }
        let mut inode = 0;
        match stat {
            Some(s) if s.size == size && s.mtime_ns == mtime_ns && s.mode == mode => {
                flags |= STAT_INLINE;
                inode = s.inode;
            }
            other => extra.stat = other,
        }
        if blocks.len() == 1 && blocks[0] == hash {
            flags |= BLOCKS_SELF;
        } else if !blocks.is_empty() {
            flags |= BLOCKS_EXTRA;
            extra.blocks = blocks;
        }
        let short_mode = u16::try_from(mode).ok();
        if short_mode.is_none() {
            extra.mode = Some(mode);
        }
        let (mut vv_nodes, mut vv_counters, mut vv_len) = ([0; INLINE_VV], [0; INLINE_VV], 0);
        // Counters past 32 bits (a peer's doing: clocks count events) keep
        // the vector out of line.
        let mut inline = version.iter().count() <= INLINE_VV;
        for (k, (n, c)) in version.iter().enumerate().take(INLINE_VV) {
            match (nodes.intern(n), u32::try_from(c)) {
                (Some(n), Ok(c)) => {
                    vv_nodes[k] = n;
                    vv_counters[k] = c;
                    vv_len += 1;
                }
                _ => inline = false,
            }
        }
        if !inline {
            (vv_nodes, vv_counters, vv_len) = ([0; INLINE_VV], [0; INLINE_VV], VV_EXTRA);
            extra.version = Some(version);
        }
        // The one write, when an inline vector entry counts exactly it.
        let single = {
            let mut it = written.iter();
            match (it.next(), it.next()) {
                (
                    Some(Dot {
                        node: Some(n),
                        counter,
                    }),
                    None,
                ) if vv_len != VV_EXTRA => (0..vv_len as usize).find(|&k| {
                    nodes.find(n) == Some(vv_nodes[k]) && u64::from(vv_counters[k]) == counter
                }),
                _ => None,
            }
        };
        match single {
            Some(0) => flags |= WRITTEN_VV0,
            Some(_) => flags |= WRITTEN_VV1,
            None if written.is_empty() => {}
            None => extra.written = Some(written),
        }
        extra.losers = losers;
        let needed = !extra.is_empty();
        Packed {
            hash,
            size,
            mtime_ns,
            seq,
            inode,
            vv_counters,
            mode: short_mode.unwrap_or_default(),
            vv_nodes,
            origin: 0,
            vv_len,
            flags,
            extra: needed.then(|| Box::new(extra)),
        }
    }

    /// The record, whole, at `path`.
    pub(super) fn unpack(&self, path: &RelPath, nodes: &Nodes) -> Record {
        self.unpack_with(path, nodes, true)
    }

    /// The record at `path`, with its block list only if `blocks`.
    pub(super) fn unpack_with(&self, path: &RelPath, nodes: &Nodes, blocks: bool) -> Record {
        let extra = self.extra.as_deref();
        let kind = match self.flags & KIND_MASK {
            KIND_DIR => EntryKind::Dir,
            KIND_LINK => EntryKind::Link(extra.and_then(|x| x.target.clone()).unwrap_or_default()),
            _ => EntryKind::File,
        };
        let version = match extra.and_then(|x| x.version.as_ref()) {
            Some(v) => v.clone(),
            None => VersionVector::from(
                (0..self.vv_len as usize)
                    .map(|k| (nodes.id(self.vv_nodes[k]), self.vv_counters[k].into()))
                    .collect::<Vec<_>>(),
            ),
        };
        let written = match extra.and_then(|x| x.written.as_ref()) {
            Some(w) => w.clone(),
            None if self.flags & (WRITTEN_VV0 | WRITTEN_VV1) != 0 => {
                let k = usize::from(self.flags & WRITTEN_VV1 != 0);
                Writes::from(Dot {
                    node: Some(nodes.id(self.vv_nodes[k])),
                    counter: self.vv_counters[k].into(),
                })
            }
            None => Writes::default(),
        };
        Record {
            entry: FileEntry {
                path: path.clone(),
                kind,
                size: self.size,
                mtime_ns: self.mtime_ns,
                mode: self.mode(),
                hash: self.hash,
                blocks: if blocks {
                    self.blocks().to_vec()
                } else {
                    Vec::new()
                },
                version,
                written,
                losers: extra.map(|x| x.losers.clone()).unwrap_or_default(),
                deleted: self.deleted(),
            },
            seq: self.seq,
            stat: self.stat(),
        }
    }

    /// Local sequence number of the last change.
    pub(super) fn seq(&self) -> u64 {
        self.seq
    }

    /// A tombstone.
    pub(super) fn deleted(&self) -> bool {
        self.flags & DELETED != 0
    }

    /// A regular file that exists.
    pub(super) fn is_live_file(&self) -> bool {
        !self.deleted() && self.flags & KIND_MASK == KIND_FILE
    }

    /// A folder that exists.
    pub(super) fn is_live_dir(&self) -> bool {
        !self.deleted() && self.is_dir()
    }

    /// A folder's record, live or deleted.
    pub(super) fn is_dir(&self) -> bool {
        self.flags & KIND_MASK == KIND_DIR
    }

    /// The target of a link that exists.
    pub(super) fn live_link(&self) -> Option<&str> {
        if self.deleted() || self.flags & KIND_MASK != KIND_LINK {
            return None;
        }
        self.extra.as_ref().and_then(|x| x.target.as_deref())
    }

    /// Content hash.
    pub(super) fn hash(&self) -> &ContentHash {
        &self.hash
    }

    /// Size in bytes.
    pub(super) fn size(&self) -> u64 {
        self.size
    }

    /// Modification time.
    pub(super) fn mtime_ns(&self) -> i64 {
        self.mtime_ns
    }

    /// Permission bits.
    pub(super) fn mode(&self) -> u32 {
        match self.extra.as_ref().and_then(|x| x.mode) {
            Some(m) => m,
            None => self.mode.into(),
        }
    }

    /// The block list, without copying it.
    pub(super) fn blocks(&self) -> &[ContentHash] {
        if self.flags & BLOCKS_SELF != 0 {
            std::slice::from_ref(&self.hash)
        } else if self.flags & BLOCKS_EXTRA != 0 {
            self.extra.as_ref().map_or(&[], |x| x.blocks.as_slice())
        } else {
            &[]
        }
    }

    /// The disk stat at the last indexing.
    pub(super) fn stat(&self) -> Option<LocalStat> {
        if self.flags & STAT_INLINE != 0 {
            return Some(LocalStat {
                inode: self.inode,
                size: self.size,
                mtime_ns: self.mtime_ns,
                mode: self.mode(),
            });
        }
        self.extra.as_ref().and_then(|x| x.stat)
    }

    /// Replaces the stat, keeping the rest.
    pub(super) fn set_stat(&mut self, stat: LocalStat) {
        if stat.size == self.size && stat.mtime_ns == self.mtime_ns && stat.mode == self.mode() {
            self.flags |= STAT_INLINE;
            self.inode = stat.inode;
            if let Some(x) = self.extra.as_mut() {
                x.stat = None;
            }
            if self.extra.as_deref().is_some_and(Extra::is_empty) {
                self.extra = None;
            }
        } else {
            self.flags &= !STAT_INLINE;
            self.inode = 0;
            self.extra.get_or_insert_default().stat = Some(stat);
        }
    }

    /// The peer the record was taken from unchanged, as numbered in `nodes`.
    pub(super) fn origin(&self) -> Option<u16> {
        self.origin.checked_sub(1)
    }

    /// Sets (or clears) the peer the record was taken from unchanged.
    pub(super) fn set_origin(&mut self, origin: Option<u16>) {
        self.origin = origin.map_or(0, |i| i + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot(n: NodeId, c: u64) -> Dot {
        Dot {
            node: Some(n),
            counter: c,
        }
    }

    fn record(kind: EntryKind, blocks: Vec<ContentHash>, stat: Option<LocalStat>) -> Record {
        let hash = ContentHash::of(b"content");
        Record {
            entry: FileEntry {
                path: RelPath::new("d/f").unwrap(),
                kind,
                size: 7,
                mtime_ns: 1_700_000_000_000_000_001,
                mode: 0o644,
                hash,
                blocks,
                version: VersionVector::new(),
                written: Writes::default(),
                losers: Writes::default(),
                deleted: false,
            },
            seq: 42,
            stat,
        }
    }

    #[test]
    fn packing_gives_back_the_record() {
        let (a, b, c) = (NodeId::random(), NodeId::random(), NodeId::random());
        let same = LocalStat {
            inode: 9,
            size: 7,
            mtime_ns: 1_700_000_000_000_000_001,
            mode: 0o644,
        };
        let other = LocalStat {
            inode: 9,
            size: 8,
            ..same
        };
        let h = ContentHash::of(b"content");
        let mut cases = vec![
            record(EntryKind::File, vec![h], Some(same)),
            record(EntryKind::File, vec![h], Some(other)),
            record(EntryKind::File, vec![], None),
            record(EntryKind::File, vec![ContentHash::of(b"x")], None),
            record(EntryKind::File, vec![h, ContentHash::of(b"x")], Some(same)),
            record(EntryKind::Dir, vec![], None),
            record(EntryKind::Link("../t".into()), vec![], Some(other)),
        ];
        let mut more = Vec::new();
        for (i, r) in cases.iter().enumerate() {
            let mut r = r.clone();
            let mut v = VersionVector::new();
            match i % 4 {
                0 => v.set(a, 3),
                1 => {
                    v.set(a, 3);
                    v.set(b, 5);
                }
                2 => {
                    v.set(a, 3);
                    v.set(b, 5);
                    v.set(c, 1);
                }
                _ => {}
            }
            r.entry.version = v;
            r.entry.written = match i % 3 {
                0 => dot(b, 5).into(),
                1 => vec![dot(a, 3), dot(b, 5)].into(),
                _ => Writes::from(Dot {
                    node: None,
                    counter: 0,
                }),
            };
            if i % 2 == 0 {
                r.entry.losers = dot(c, 1).into();
            }
            r.entry.deleted = i == 3;
            if i == 5 {
                // Beyond what is inline: a counter past 32 bits, a mode
                // past 16 bits.
                r.entry.version.set(b, 1 << 40);
                r.entry.mode = 0x1_0000;
            }
            more.push(r);
            let mut r = more.last().unwrap().clone();
            // The one write is what an inline entry counts.
            let n = r.entry.version.iter().last();
            r.entry.written = n.map_or(Writes::default(), |(n, c)| dot(n, c).into());
            more.push(r);
        }
        cases.extend(more);
        let mut nodes = Nodes::default();
        for r in cases {
            let p = Packed::pack(r.clone(), &mut nodes);
            assert_eq!(p.unpack(&r.entry.path, &nodes), r);
            assert_eq!(p.blocks(), r.entry.blocks.as_slice());
            assert_eq!(p.stat(), r.stat);
        }
    }

    #[test]
    fn a_common_record_has_nothing_boxed() {
        let a = NodeId::random();
        let h = ContentHash::of(b"content");
        let mut r = record(
            EntryKind::File,
            vec![h],
            Some(LocalStat {
                inode: 1,
                size: 7,
                mtime_ns: 1_700_000_000_000_000_001,
                mode: 0o644,
            }),
        );
        r.entry.version.set(a, 4);
        r.entry.written = dot(a, 4).into();
        let mut nodes = Nodes::default();
        let mut p = Packed::pack(r.clone(), &mut nodes);
        assert!(p.extra.is_none());
        assert!(std::mem::size_of::<Packed>() <= 96);
        // A stat that moves away from the entry's goes out of line and back.
        let moved = LocalStat {
            inode: 2,
            size: 8,
            mtime_ns: 5,
            mode: 0o600,
        };
        p.set_stat(moved);
        assert_eq!(p.stat(), Some(moved));
        p.set_stat(r.stat.unwrap());
        assert_eq!(p.unpack(&r.entry.path, &nodes), r);
        assert!(p.extra.is_none(), "nothing is left boxed");
    }

    #[test]
    fn a_full_table_keeps_ids_in_full() {
        let mut nodes = Nodes::default();
        for _ in 0..Nodes::MAX {
            nodes.intern(NodeId::random()).unwrap();
        }
        let (a, b) = (NodeId::random(), NodeId::random());
        assert_eq!(nodes.intern(a), None);
        let mut r = record(EntryKind::File, vec![], None);
        r.entry.version.set(a, 1);
        r.entry.version.set(b, 2);
        r.entry.written = dot(b, 2).into();
        let mut p = Packed::pack(r.clone(), &mut nodes);
        assert!(p.extra.is_some());
        assert_eq!(p.unpack(&r.entry.path, &nodes), r);
        p.set_origin(Some(Nodes::MAX as u16 - 1));
        assert_eq!(p.origin(), Some(Nodes::MAX as u16 - 1));
    }
}
