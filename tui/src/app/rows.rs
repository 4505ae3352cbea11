//! The file table's rows, held compactly, so that a million files cost the
//! client about a fifth of what whole [`ListedFile`]s did (519 MiB for the
//! UI on a million files before; see bench/README.md). A row keeps its
//! path, size, time, hash and count of held changes in one fixed-size
//! record; who holds the file and each node's state for it are shared
//! among rows (in a calm cluster every row has the same: every node in
//! sync), and so are lock owners; link targets are kept aside (few rows
//! have one). Paths are kept end to end in one string (a path of 21
//! bytes costs 21, not 64 as its own allocation), and rows are found by
//! path through an index of slot numbers, so each path is held once. The
//! table is filled a page at a time as the node sends it
//! ([`Rows::extend`]); nothing holds the whole table twice.
//!
//! The paths of removed rows are dropped from that string once they are
//! half of it and over a mebibyte. Shared holders and owners are not forgotten when no row
//! uses them any more; the table is made anew on every full load, which
//! drops them.

use std::hash::{BuildHasher, Hash};

use hashbrown::{DefaultHashBuilder, HashMap, HashTable};
use tandem_common::proto::{ListedFile, NodeFileState};
use tandem_common::{ContentHash, RelPath};

/// `Row::holders` of an empty slot.
const EMPTY: u32 = u32::MAX;

/// Who holds a file's newest version and how each node stands with it:
/// shared by every row that has the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Holders {
    /// Names of the nodes holding the newest version.
    pub nodes: Vec<String>,
    /// Each node's state for the file.
    pub states: Vec<NodeFileState>,
}

/// One row without what it shares.
#[derive(Debug, Clone)]
struct Row {
    /// Where its path starts in `Rows::paths`.
    at: u64,
    /// Its path's length in bytes.
    len: u32,
    size: u64,
    mtime_ns: i64,
    hash: ContentHash,
    /// Index into `Rows::holders`; [`EMPTY`]: no row in this slot.
    holders: u32,
    /// Index into `Rows::owners` plus one; 0: not locked.
    owner: u32,
    held: u32,
}

/// The path of `r` in `paths` (`Rows::paths`).
fn path_in<'a>(paths: &'a str, r: &Row) -> &'a str {
    &paths[r.at as usize..r.at as usize + r.len as usize]
}

/// Values kept once and named by their place (holders, lock owners).
#[derive(Debug, Clone)]
struct Interned<T> {
    values: Vec<T>,
    index: HashTable<u32>,
    /// The last value asked for: rows of one page mostly share it.
    last: Option<u32>,
}

impl<T> Default for Interned<T> {
    fn default() -> Self {
        Interned {
            values: Vec::new(),
            index: HashTable::new(),
            last: None,
        }
    }
}

impl<T: Hash + Eq> Interned<T> {
    /// The place of `v`, kept now if it is new.
    fn id(&mut self, v: T, hasher: &DefaultHashBuilder) -> u32 {
        if let Some(last) = self.last
            && self.values[last as usize] == v
        {
            return last;
        }
        let h = hasher.hash_one(&v);
        let values = &self.values;
        let id = match self.index.find(h, |&i| values[i as usize] == v) {
            Some(&i) => i,
            None => {
                let i = u32::try_from(self.values.len()).expect("fewer than 2^32 values");
                self.values.push(v);
                let values = &self.values;
                self.index
                    .insert_unique(h, i, |&j| hasher.hash_one(&values[j as usize]));
                i
            }
        };
        self.last = Some(id);
        id
    }
}

/// The file table's rows in stable slots, found by path.
#[derive(Clone, Default)]
pub struct Rows {
    slots: Vec<Row>,
    /// Every row's path, end to end.
    paths: String,
    /// Bytes of `paths` no row uses (removed rows').
    dropped: usize,
    /// Slots emptied by `remove`, reused first.
    free: Vec<u32>,
    /// Live slots, by the hash of their path.
    by_path: HashTable<u32>,
    hasher: DefaultHashBuilder,
    holders: Interned<Holders>,
    owners: Interned<String>,
    /// Link targets, by slot.
    links: HashMap<u32, String>,
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rows")
            .field("len", &self.len())
            .field("holders", &self.holders.values.len())
            .field("owners", &self.owners.values.len())
            .finish()
    }
}

/// Equal when they hold the same rows in the same slots.
impl PartialEq for Rows {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self.slot_count() == other.slot_count()
            && (0..self.slot_count() as u32).all(|s| self.get(s) == other.get(s))
    }
}

impl Eq for Rows {}

impl FromIterator<ListedFile> for Rows {
    fn from_iter<I: IntoIterator<Item = ListedFile>>(iter: I) -> Self {
        let mut rows = Rows::default();
        rows.extend(iter);
        rows
    }
}

impl From<Vec<ListedFile>> for Rows {
    fn from(files: Vec<ListedFile>) -> Self {
        files.into_iter().collect()
    }
}

impl Extend<ListedFile> for Rows {
    fn extend<I: IntoIterator<Item = ListedFile>>(&mut self, iter: I) {
        for f in iter {
            self.upsert(f);
        }
    }
}

impl Rows {
    /// Files held.
    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    /// Whether no file is held.
    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    /// One past the highest slot number in use (for per-slot tables).
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The live slots, in slot order.
    pub fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, r)| r.holders != EMPTY)
            .map(|(i, _)| i as u32)
    }

    /// Every distinct set of holders some row has or had since this table
    /// was made.
    pub fn all_holders(&self) -> &[Holders] {
        &self.holders.values
    }

    /// Every lock owner some row has or had since this table was made;
    /// [`Rows::owner_id`] is a place in it plus one.
    pub fn all_owners(&self) -> &[String] {
        &self.owners.values
    }

    /// At most `take` rows from the `skip`th, in slot order: the order
    /// they were taken in, when none was removed (then without looking
    /// through the rows before them).
    pub fn in_order(&self, skip: usize, take: usize) -> Vec<ListedFile> {
        if self.free.is_empty() {
            let end = skip.saturating_add(take).min(self.slots.len());
            return (skip.min(end)..end)
                .filter_map(|s| self.get(s as u32))
                .collect();
        }
        self.slots()
            .skip(skip)
            .take(take)
            .filter_map(|s| self.get(s))
            .collect()
    }

    /// The slot of `path`.
    pub fn find(&self, path: &str) -> Option<u32> {
        let h = self.hasher.hash_one(path);
        self.by_path
            .find(h, |&s| self.path_of(&self.slots[s as usize]) == path)
            .copied()
    }

    fn path_of(&self, r: &Row) -> &str {
        path_in(&self.paths, r)
    }

    /// Adds `f`, or replaces the row of the same path; its slot.
    pub fn upsert(&mut self, f: ListedFile) -> u32 {
        if let Some(slot) = self.find(f.path.as_str()) {
            self.set(slot, f);
            return slot;
        }
        let path = f.path.as_str();
        let h = self.hasher.hash_one(path);
        let row = Row {
            at: self.paths.len() as u64,
            len: u32::try_from(path.len()).expect("paths are short"),
            size: 0,
            mtime_ns: 0,
            hash: ContentHash::default(),
            holders: EMPTY,
            owner: 0,
            held: 0,
        };
        self.paths.push_str(path);
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = row;
                s
            }
            None => {
                self.slots.push(row);
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 rows")
            }
        };
        self.store(slot, f);
        let (slots, paths, hasher) = (&self.slots, &self.paths, &self.hasher);
        self.by_path.insert_unique(h, slot, |&s| {
            hasher.hash_one(path_in(paths, &slots[s as usize]))
        });
        slot
    }

    /// Replaces the row in `slot` with `f`, of the same path; an empty
    /// slot stays empty (use [`Rows::upsert`] to add).
    pub fn set(&mut self, slot: u32, f: ListedFile) {
        let Some(r) = self.live(slot) else {
            return;
        };
        debug_assert_eq!(self.path_of(r), f.path.as_str());
        self.store(slot, f);
    }

    fn store(&mut self, slot: u32, f: ListedFile) {
        let holders = self.holders.id(
            Holders {
                nodes: f.nodes,
                states: f.states,
            },
            &self.hasher,
        );
        let owner = match f.locked_by {
            Some(o) => self.owners.id(o, &self.hasher) + 1,
            None => 0,
        };
        match f.link {
            Some(t) => self.links.insert(slot, t),
            None => self.links.remove(&slot),
        };
        let r = &mut self.slots[slot as usize];
        r.size = f.size;
        r.mtime_ns = f.mtime_ns;
        r.hash = f.hash;
        r.holders = holders;
        r.owner = owner;
        r.held = f.held;
    }

    /// Removes the row in `slot`; `false` if it was empty.
    pub fn remove(&mut self, slot: u32) -> bool {
        let Some(r) = self.live(slot) else {
            return false;
        };
        let h = self.hasher.hash_one(self.path_of(r));
        let len = r.len as usize;
        if let Ok(e) = self.by_path.find_entry(h, |&s| s == slot) {
            e.remove();
        }
        self.slots[slot as usize].holders = EMPTY;
        self.links.remove(&slot);
        self.free.push(slot);
        self.dropped += len;
        if self.dropped > self.paths.len() / 2 && self.dropped > 1 << 20 {
            self.compact_paths();
        }
        true
    }

    /// Copies the live rows' paths into a new string, without the dropped.
    fn compact_paths(&mut self) {
        let mut paths = String::with_capacity(self.paths.len() - self.dropped);
        for r in self.slots.iter_mut().filter(|r| r.holders != EMPTY) {
            let old = path_in(&self.paths, r);
            let at = paths.len() as u64;
            paths.push_str(old);
            r.at = at;
        }
        self.paths = paths;
        self.dropped = 0;
    }

    fn live(&self, slot: u32) -> Option<&Row> {
        self.slots.get(slot as usize).filter(|r| r.holders != EMPTY)
    }

    fn row(&self, slot: u32) -> &Row {
        self.live(slot).expect("only live slots are asked for")
    }

    /// The whole row in `slot`, if it is live.
    pub fn get(&self, slot: u32) -> Option<ListedFile> {
        let r = self.live(slot)?;
        let h = &self.holders.values[r.holders as usize];
        Some(ListedFile {
            // Stored from a valid `RelPath`, so this is one again.
            path: RelPath::new(self.path_of(r)).ok()?,
            size: r.size,
            mtime_ns: r.mtime_ns,
            hash: r.hash,
            nodes: h.nodes.clone(),
            locked_by: self.owner(slot).map(str::to_string),
            held: r.held,
            states: h.states.clone(),
            link: self.links.get(&slot).cloned(),
        })
    }

    /// The path of the (live) row in `slot`.
    pub fn path(&self, slot: u32) -> &str {
        self.path_of(self.row(slot))
    }

    /// Its size.
    pub fn size(&self, slot: u32) -> u64 {
        self.row(slot).size
    }

    /// Its modification time (ns).
    pub fn mtime_ns(&self, slot: u32) -> i64 {
        self.row(slot).mtime_ns
    }

    /// Its changes held by a lock.
    pub fn held(&self, slot: u32) -> u32 {
        self.row(slot).held
    }

    /// Who holds it and how each node stands.
    pub fn holders(&self, slot: u32) -> &Holders {
        &self.holders.values[self.row(slot).holders as usize]
    }

    /// Its lock owner's place in [`Rows::all_owners`] plus one; 0: not
    /// locked.
    pub fn owner_id(&self, slot: u32) -> u32 {
        self.row(slot).owner
    }

    /// Its lock owner.
    pub fn owner(&self, slot: u32) -> Option<&str> {
        match self.row(slot).owner {
            0 => None,
            o => Some(self.owners.values[o as usize - 1].as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_common::proto::FileState;

    fn file(p: &str, node: &str, owner: Option<&str>, link: Option<&str>) -> ListedFile {
        ListedFile {
            path: RelPath::new(p).unwrap(),
            size: p.len() as u64,
            mtime_ns: 7,
            hash: ContentHash::of(p.as_bytes()),
            nodes: vec![node.into()],
            locked_by: owner.map(Into::into),
            held: 2,
            states: vec![NodeFileState {
                node: node.into(),
                state: FileState::InSync,
            }],
            link: link.map(Into::into),
        }
    }

    #[test]
    fn rows_come_back_whole_and_share_what_they_have_in_common() {
        let files: Vec<ListedFile> = (0..1000)
            .map(|i| {
                let owner = (i % 100 == 0).then_some(if i % 200 == 0 { "ana" } else { "bo" });
                let link = (i == 7).then_some("../elsewhere");
                file(&format!("d/f{i:04}"), ["A", "B"][i % 2], owner, link)
            })
            .collect();
        let rows: Rows = files.clone().into();
        assert_eq!(rows.len(), 1000);
        assert_eq!(rows.all_holders().len(), 2, "{rows:?}");
        assert_eq!(rows.all_owners().len(), 2);
        for f in &files {
            let slot = rows.find(f.path.as_str()).expect("found by path");
            assert_eq!(rows.get(slot).as_ref(), Some(f));
        }
        assert_eq!(rows.find("d/f1000"), None);
    }

    #[test]
    fn rows_are_read_in_the_order_they_came() {
        let files: Vec<ListedFile> = (0..10)
            .map(|i| file(&format!("f{i}"), "A", None, None))
            .collect();
        let mut rows: Rows = files.clone().into();
        assert_eq!(rows, files.clone().into());
        assert_eq!(rows.in_order(3, 4), files[3..7].to_vec());
        assert_eq!(rows.in_order(8, 5), files[8..].to_vec());
        assert_eq!(rows.in_order(12, 5), vec![]);
        // With a row removed, the live ones are counted.
        rows.remove(rows.find("f4").unwrap());
        assert_ne!(rows, files.clone().into());
        let mut left = files.clone();
        left.remove(4);
        assert_eq!(rows.in_order(3, 3), left[3..6].to_vec());
        assert_eq!(rows.in_order(0, usize::MAX), left);
    }

    #[test]
    fn a_path_is_held_once_and_removed_slots_are_reused() {
        let mut rows = Rows::default();
        let a = rows.upsert(file("a", "A", None, Some("t")));
        let b = rows.upsert(file("b", "A", None, None));
        // The same path again replaces the row, link and all.
        assert_eq!(rows.upsert(file("a", "B", Some("ana"), None)), a);
        assert_eq!(rows.len(), 2);
        let got = rows.get(a).unwrap();
        assert_eq!(
            (got.nodes, got.locked_by, got.link),
            (vec!["B".to_string()], Some("ana".into()), None)
        );
        assert!(rows.remove(a));
        assert!(!rows.remove(a), "already empty");
        assert_eq!(rows.find("a"), None);
        assert_eq!(rows.get(a), None);
        assert_eq!(rows.len(), 1);
        let c = rows.upsert(file("c", "A", None, None));
        assert_eq!(c, a, "the emptied slot is used again");
        assert_eq!(rows.slots().collect::<Vec<_>>(), vec![a, b]);
        assert_eq!(rows.path(c), "c");
        assert_eq!(rows.find("b"), Some(b));
        // Many more, so the index grows and moves its entries.
        for i in 0..5000 {
            rows.upsert(file(&format!("x{i}"), "A", None, None));
        }
        assert_eq!(rows.len(), 5002);
        assert!((0..5000).all(|i| rows.find(&format!("x{i}")).is_some()));
        assert_eq!(rows.find("c"), Some(c));
    }

    #[test]
    fn paths_of_removed_rows_are_dropped_once_they_are_half_the_string_and_over_a_mebibyte() {
        let name = |i: usize| format!("some/deeper/folder/with/a/longer/name-{i:06}");
        let mut rows: Rows = (0..40_000)
            .map(|i| file(&name(i), "A", None, None))
            .collect();
        let full = rows.paths.len();
        assert!(full > 1 << 20, "{full} bytes: enough to be compacted");
        let gone = |i: usize| !i.is_multiple_of(4);
        for i in (0..40_000).filter(|&i| gone(i)) {
            assert!(rows.remove(rows.find(&name(i)).unwrap()));
        }
        let kept = rows.paths.len();
        assert!(kept < full / 2, "{kept} of {full} bytes kept");
        // What is held is the kept rows' paths and what was removed since
        // the last compaction.
        let live: usize = rows.slots().map(|s| rows.path(s).len()).sum();
        assert_eq!(live, 10_000 * name(0).len());
        assert_eq!(kept, live + rows.dropped);
        assert_eq!(rows.len(), 10_000);
        for i in 0..40_000 {
            let found = rows
                .find(&name(i))
                .map(|s| rows.get(s).unwrap().path.to_string());
            assert_eq!(found, (!gone(i)).then(|| name(i)), "row {i}");
        }
        // New rows go on after the kept paths and into the emptied slots.
        let slot = rows.upsert(file("new", "B", None, None));
        assert_eq!(rows.path(slot), "new");
        assert!(rows.paths.ends_with("new") && rows.paths.len() == kept + 3);
        assert_eq!(rows.slot_count(), 40_000);
        // A small table is not compacted: copying it would cost more than
        // it gives back.
        let mut small: Rows = (0..100).map(|i| file(&name(i), "A", None, None)).collect();
        let before = small.paths.len();
        for i in 0..90 {
            small.remove(small.find(&name(i)).unwrap());
        }
        assert_eq!(small.paths.len(), before);
        // `set` on an emptied slot leaves it empty.
        let emptied = (0..100).find(|&s| small.get(s).is_none()).unwrap();
        small.set(emptied, file(&name(0), "A", None, None));
        assert_eq!((small.get(emptied), small.len()), (None, 10));
    }
}
