//! The file table: every file the cluster holds (compactly, in
//! [`Rows`]), filtered and sorted for the screen and patched in place by
//! feed events (so a busy cluster never re-sorts the whole list), and
//! [`visible_offset`], the scrolling that every list on screen shares.

use std::cmp::Ordering;
use std::collections::HashSet;

use tandem_common::RelPath;
use tandem_common::proto::ListedFile;

use super::RowState;
use super::rows::Rows;
use crate::ui::text::width;

/// Order of the file table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// By path, A→Z, ignoring case.
    Name,
    /// Largest first.
    Size,
    /// Newest first.
    Modified,
    /// Most in need of attention first (conflict, held, stale, missing,
    /// syncing, in sync; see [`RowState::rank`]).
    State,
    /// Locked files first, by owner (ignoring case).
    Lock,
}

impl SortKey {
    /// The next order for `s`.
    pub fn next(self) -> SortKey {
        match self {
            SortKey::Name => SortKey::Size,
            SortKey::Size => SortKey::Modified,
            SortKey::Modified => SortKey::State,
            SortKey::State => SortKey::Lock,
            SortKey::Lock => SortKey::Name,
        }
    }

    /// How the header names it.
    pub fn word(self) -> &'static str {
        match self {
            SortKey::Name => "name",
            SortKey::Size => "size",
            SortKey::Modified => "modified",
            SortKey::State => "state",
            SortKey::Lock => "lock",
        }
    }

    /// The arrow of its natural direction (↑ A→Z and first-things-first,
    /// ↓ largest/newest first), flipped when `reversed`.
    pub fn arrow(self, reversed: bool) -> &'static str {
        let up = matches!(self, SortKey::Name | SortKey::State | SortKey::Lock);
        if up != reversed { "↑" } else { "↓" }
    }
}

/// Letters folded to lower case, for orders that ignore case. Compared
/// char by char, so it agrees with comparing the folded strings.
fn folded(s: &str) -> impl Iterator<Item = char> + '_ {
    s.chars().flat_map(char::to_lowercase)
}

/// Paths ignoring case, then exactly (a total order: `a` and `A` differ).
fn cmp_names(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        // The same order without decoding characters: sorting a million
        // rows compares about twenty million times.
        let o = a
            .bytes()
            .map(|c| c.to_ascii_lowercase())
            .cmp(b.bytes().map(|c| c.to_ascii_lowercase()));
        return o.then_with(|| a.cmp(b));
    }
    folded(a).cmp(folded(b)).then_with(|| a.cmp(b))
}

/// What orders a row, read from a whole row or a compact one.
struct Key<'a> {
    path: &'a str,
    size: u64,
    mtime_ns: i64,
    /// [`RowState::rank`]; only read when sorting by state.
    rank: u8,
    owner: Option<&'a str>,
}

/// The file table: rows in stable slots, plus the filtered and sorted view
/// as slot numbers. Feed events patch rows in place and move single slots
/// in the view; the view is rebuilt only when the whole list, the filter or
/// the sort changes.
#[derive(Debug, Clone)]
pub struct FileTable {
    rows: Rows,
    /// Slots of `rows`, filtered and in order.
    view: Vec<u32>,
    filter: String,
    filter_lower: String,
    sort: SortKey,
    /// The sort's direction is flipped (a second click on a header).
    reversed: bool,
    /// The last filter typed, lower case: what `n`/`N` look for, also
    /// once the filter is cleared.
    search: String,
    /// Position of the selection in the view.
    sel: usize,
    /// First view position on screen (kept so the selection stays on the
    /// same screen line when rows move above it).
    offset: usize,
    total_bytes: u64,
    /// Files that had a conflict resolved since they last changed.
    conflicts: HashSet<RelPath>,
    /// Cells the widest path takes (the Name column's wish; it only grows
    /// between full loads, so columns do not jump while scrolling).
    widest: usize,
    /// How many times the view was rebuilt from scratch (tests check that
    /// feed patches do not rebuild).
    pub rebuilds: u64,
}

impl Default for FileTable {
    fn default() -> Self {
        FileTable {
            rows: Rows::default(),
            view: Vec::new(),
            filter: String::new(),
            filter_lower: String::new(),
            sort: SortKey::Name,
            reversed: false,
            search: String::new(),
            sel: 0,
            offset: 0,
            total_bytes: 0,
            conflicts: HashSet::new(),
            widest: 0,
            rebuilds: 0,
        }
    }
}

/// Case-insensitive substring test over many rows, reusing one buffer.
struct Matcher<'a> {
    /// Already lower case.
    needle: &'a str,
    buf: Vec<u8>,
}

impl<'a> Matcher<'a> {
    fn new(needle: &'a str) -> Self {
        Matcher {
            needle,
            buf: Vec::with_capacity(256),
        }
    }

    fn matches(&mut self, hay: &str) -> bool {
        if self.needle.is_empty() {
            return true;
        }
        if hay.is_ascii() {
            self.buf.clear();
            self.buf.extend_from_slice(hay.as_bytes());
            self.buf.make_ascii_lowercase();
            return std::str::from_utf8(&self.buf).is_ok_and(|h| h.contains(self.needle));
        }
        hay.to_lowercase().contains(self.needle)
    }
}

/// The first screen row for a view of `len` rows showing `height` rows,
/// starting from `offset` and keeping `sel` visible.
pub fn visible_offset(offset: usize, sel: usize, len: usize, height: usize) -> usize {
    if height == 0 {
        return sel;
    }
    let mut o = offset.min(len.saturating_sub(height));
    if sel < o {
        o = sel;
    } else if sel >= o + height {
        o = sel + 1 - height;
    }
    o
}

impl FileTable {
    /// Files in the table.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table has no files.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Rows shown (after the filter).
    pub fn view_len(&self) -> usize {
        self.view.len()
    }

    /// Sum of the sizes.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Cells the widest path takes (of every file, not only those shown).
    pub fn widest_name(&self) -> usize {
        self.widest
    }

    /// The filter text.
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// The order.
    pub fn sort(&self) -> SortKey {
        self.sort
    }

    /// Whether the order is reversed.
    pub fn reversed(&self) -> bool {
        self.reversed
    }

    /// The order in words, as the tab bar shows it (`name ↑`).
    pub fn sort_label(&self) -> String {
        format!("{} {}", self.sort.word(), self.sort.arrow(self.reversed))
    }

    /// The table's order of two rows: a total order (ties broken by
    /// path), so binary search finds a row's place.
    pub fn cmp_rows(&self, a: &ListedFile, b: &ListedFile) -> Ordering {
        self.cmp_keys(&self.file_key(a), &self.file_key(b))
    }

    fn cmp_keys(&self, a: &Key, b: &Key) -> Ordering {
        let by_path = || cmp_names(a.path, b.path);
        let o = match self.sort {
            SortKey::Name => by_path(),
            SortKey::Size => b.size.cmp(&a.size).then_with(by_path),
            SortKey::Modified => b.mtime_ns.cmp(&a.mtime_ns).then_with(by_path),
            SortKey::State => a.rank.cmp(&b.rank).then_with(by_path),
            SortKey::Lock => match (a.owner, b.owner) {
                (Some(x), Some(y)) => cmp_names(x, y).then_with(by_path),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => by_path(),
            },
        };
        if self.reversed { o.reverse() } else { o }
    }

    fn file_key<'a>(&self, f: &'a ListedFile) -> Key<'a> {
        Key {
            path: f.path.as_str(),
            size: f.size,
            mtime_ns: f.mtime_ns,
            rank: self.state_rank(f),
            owner: f.locked_by.as_deref(),
        }
    }

    fn slot_key(&self, slot: u32) -> Key<'_> {
        let r = &self.rows;
        Key {
            path: r.path(slot),
            size: r.size(slot),
            mtime_ns: r.mtime_ns(slot),
            rank: if self.sort == SortKey::State {
                self.slot_rank(slot)
            } else {
                0
            },
            owner: r.owner(slot),
        }
    }

    /// What sorting by state orders by (rows without per-node states
    /// count as in sync: the number of nodes up must not move rows).
    fn state_rank(&self, f: &ListedFile) -> u8 {
        RowState::of(f, self.conflicts.contains(&f.path), 0).rank()
    }

    /// [`FileTable::state_rank`] of a compact row.
    fn slot_rank(&self, slot: u32) -> u8 {
        let r = &self.rows;
        let h = r.holders(slot);
        let conflict = !self.conflicts.is_empty() && self.conflicts.contains(r.path(slot));
        RowState::of_parts(&h.nodes, &h.states, r.held(slot), conflict, 0).rank()
    }

    /// Position of the selection in the view.
    pub fn selected_pos(&self) -> usize {
        self.sel
    }

    /// The stored screen offset (see [`visible_offset`]).
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The row at view position `pos` (0-based; the `#` column is pos + 1).
    pub fn row(&self, pos: usize) -> Option<ListedFile> {
        self.view.get(pos).and_then(|&slot| self.rows.get(slot))
    }

    /// The selected row.
    pub fn selected(&self) -> Option<ListedFile> {
        self.row(self.sel)
    }

    /// A file by path.
    pub fn get(&self, path: &str) -> Option<ListedFile> {
        self.rows.find(path).and_then(|slot| self.rows.get(slot))
    }

    /// Whether a conflict was reported for `path` since it last changed.
    pub fn has_conflict(&self, path: &RelPath) -> bool {
        self.conflicts.contains(path)
    }

    /// Marks `path` as having had a conflict resolved.
    pub(super) fn mark_conflict(&mut self, path: RelPath) {
        match self.rows.find(path.as_str()) {
            // Sorted by state, the row moves.
            Some(slot) => self.reposition(slot, |t| {
                t.conflicts.insert(path);
            }),
            None => {
                self.conflicts.insert(path);
            }
        }
    }

    /// Forgets `path`'s conflict: it changed since.
    pub(super) fn clear_conflict(&mut self, path: &RelPath) {
        match self.rows.find(path.as_str()) {
            Some(slot) => self.reposition(slot, |t| {
                t.conflicts.remove(path);
            }),
            None => {
                self.conflicts.remove(path);
            }
        }
    }

    /// The rows on screen: (view position, row) from `offset`, at most
    /// `height` of them. Only these are ever turned into widgets.
    pub fn window(
        &self,
        offset: usize,
        height: usize,
    ) -> impl Iterator<Item = (usize, ListedFile)> {
        let end = (offset + height).min(self.view.len());
        let start = offset.min(end);
        self.view[start..end]
            .iter()
            .enumerate()
            .filter_map(move |(i, &slot)| self.rows.get(slot).map(|f| (start + i, f)))
    }

    /// Replaces every row (a fresh list from the node), keeping the
    /// selection on the same path when it is still there.
    pub fn replace_all(&mut self, rows: Rows) {
        let keep = self
            .view
            .get(self.sel)
            .map(|&s| self.rows.path(s).to_string());
        let old_sel = self.sel;
        let screen_line = self.sel.saturating_sub(self.offset);
        self.total_bytes = rows.slots().map(|s| rows.size(s)).sum();
        self.widest = rows.slots().map(|s| width(rows.path(s))).max().unwrap_or(0);
        self.rows = rows;
        let rows = &self.rows;
        self.conflicts.retain(|p| rows.find(p.as_str()).is_some());
        self.rebuild_view_inner();
        self.sel = keep
            .and_then(|p| self.rows.find(&p))
            .and_then(|slot| self.view.iter().position(|&s| s == slot))
            .unwrap_or_else(|| old_sel.min(self.view.len().saturating_sub(1)));
        self.offset = self.sel.saturating_sub(screen_line);
    }

    fn rebuild_view_inner(&mut self) {
        self.rebuilds += 1;
        let rows = &self.rows;
        let mut m = Matcher::new(&self.filter_lower);
        let mut view: Vec<u32> = rows.slots().filter(|&s| m.matches(rows.path(s))).collect();
        // Every order ends with the path: sort by it first (mostly a check,
        // linear: the node sends rows by path), then by the key with each
        // row's place in that order breaking ties, so that sorting a
        // million rows by size compares no strings (0.57-0.64 s when ties
        // compared paths). Numbers are largest/newest first. Every arm
        // must order exactly as `cmp_keys` does.
        view.sort_unstable_by(|&a, &b| cmp_names(rows.path(a), rows.path(b)));
        fn by<K: Ord>(view: &mut Vec<u32>, key: impl Fn(u32) -> K) {
            let mut keyed: Vec<(K, u32, u32)> = view
                .iter()
                .enumerate()
                .map(|(place, &s)| (key(s), place as u32, s))
                .collect();
            keyed.sort_unstable();
            *view = keyed.into_iter().map(|(_, _, s)| s).collect();
        }
        match self.sort {
            SortKey::Name => {}
            SortKey::Size => by(&mut view, |s| std::cmp::Reverse(rows.size(s))),
            SortKey::Modified => by(&mut view, |s| std::cmp::Reverse(rows.mtime_ns(s))),
            SortKey::State => by(&mut view, |s| self.slot_rank(s)),
            SortKey::Lock => {
                // Owners ordered once; rows by their owner's place.
                let owners = rows.all_owners();
                let mut order: Vec<u32> = (0..owners.len() as u32).collect();
                order
                    .sort_unstable_by(|&a, &b| cmp_names(&owners[a as usize], &owners[b as usize]));
                let mut place = vec![0u32; owners.len()];
                for (p, &o) in order.iter().enumerate() {
                    place[o as usize] = p as u32;
                }
                by(&mut view, |s| match rows.owner_id(s) {
                    0 => (true, 0),
                    o => (false, place[o as usize - 1]),
                })
            }
        }
        if self.reversed {
            view.reverse();
        }
        self.view = view;
    }

    /// Rebuilds the view (after the filter or sort changed), keeping the
    /// selected file selected and on the same screen line.
    fn rebuild_view(&mut self) {
        let keep = self.view.get(self.sel).copied();
        let screen_line = self.sel.saturating_sub(self.offset);
        self.rebuild_view_inner();
        self.sel = keep
            .and_then(|slot| self.view.iter().position(|&s| s == slot))
            .unwrap_or(0);
        self.offset = self.sel.saturating_sub(screen_line);
    }

    /// Sets the filter (substring of the path, case-insensitive).
    pub fn set_filter(&mut self, filter: &str) {
        if filter == self.filter {
            return;
        }
        let lower = filter.to_lowercase();
        if !lower.is_empty() {
            self.search = lower.clone();
        }
        let narrower = lower.contains(self.filter_lower.as_str());
        self.filter = filter.to_string();
        self.filter_lower = lower;
        if narrower {
            // Typing on: the matches are a subset of the current view,
            // already in order. Test the rows in slot order (sequential
            // memory), then keep the view's order without sorting again.
            let keep = self.view.get(self.sel).copied();
            let screen_line = self.sel.saturating_sub(self.offset);
            let mut m = Matcher::new(&self.filter_lower);
            let mut hit = vec![false; self.rows.slot_count()];
            for s in self.rows.slots() {
                hit[s as usize] = m.matches(self.rows.path(s));
            }
            self.view.retain(|&slot| hit[slot as usize]);
            self.sel = keep
                .and_then(|slot| self.view.iter().position(|&s| s == slot))
                .unwrap_or(0);
            self.offset = self.sel.saturating_sub(screen_line);
        } else {
            self.rebuild_view();
        }
    }

    /// Sets the order, in its natural direction.
    pub fn set_sort(&mut self, sort: SortKey) {
        if sort != self.sort || self.reversed {
            self.sort = sort;
            self.reversed = false;
            self.rebuild_view();
        }
    }

    /// Sorts by `sort` as a click on its column header does: the same
    /// column again reverses the order.
    pub fn sort_by_column(&mut self, sort: SortKey) {
        if sort == self.sort {
            self.reversed = !self.reversed;
        } else {
            self.sort = sort;
            self.reversed = false;
        }
        self.rebuild_view();
    }

    /// What `n`/`N` look for: the last filter typed (kept after the filter
    /// is cleared, as vi keeps the last search).
    pub fn search(&self) -> &str {
        &self.search
    }

    /// The view position of the next row after the selection (`forward`)
    /// or before it whose path contains the search text, going round the
    /// end; and whether it went round.
    pub fn find_match(&self, forward: bool) -> Option<(usize, bool)> {
        let len = self.view.len();
        if self.search.is_empty() || len == 0 {
            return None;
        }
        let mut m = Matcher::new(&self.search);
        (1..=len)
            .map(|step| {
                if forward {
                    ((self.sel + step) % len, self.sel + step >= len)
                } else {
                    ((self.sel + len - step) % len, step > self.sel)
                }
            })
            .find(|&(pos, _)| {
                self.view
                    .get(pos)
                    .is_some_and(|&s| m.matches(self.rows.path(s)))
            })
    }

    /// Where `slot` belongs in the view (it must not be in it).
    fn insert_pos(&self, slot: u32) -> usize {
        let new = self.slot_key(slot);
        self.view
            .partition_point(|&i| self.cmp_keys(&self.slot_key(i), &new) == Ordering::Less)
    }

    /// The view position of `slot`, found by its current key.
    fn view_pos(&self, slot: u32) -> Option<usize> {
        let row = self.slot_key(slot);
        self.view
            .binary_search_by(|&i| self.cmp_keys(&self.slot_key(i), &row))
            .ok()
    }

    fn view_insert(&mut self, slot: u32) {
        let had_rows = !self.view.is_empty();
        let pos = self.insert_pos(slot);
        self.view.insert(pos, slot);
        if had_rows && pos <= self.sel {
            self.sel += 1;
            self.offset += 1;
        }
    }

    fn view_remove(&mut self, pos: usize) {
        self.view.remove(pos);
        if pos < self.sel {
            self.sel -= 1;
            self.offset = self.offset.saturating_sub(1);
        }
        self.sel = self.sel.min(self.view.len().saturating_sub(1));
    }

    /// Adds a file, or replaces the row of the same path.
    pub fn upsert(&mut self, file: ListedFile) {
        if let Some(slot) = self.rows.find(file.path.as_str()) {
            self.modify(slot, |f| *f = file);
            return;
        }
        self.total_bytes += file.size;
        self.widest = self.widest.max(width(file.path.as_str()));
        let show = Matcher::new(&self.filter_lower).matches(file.path.as_str());
        let slot = self.rows.upsert(file);
        if show {
            self.view_insert(slot);
        }
    }

    /// Changes the row of `path` in place; `false` if there is none.
    pub fn patch(&mut self, path: &RelPath, f: impl FnOnce(&mut ListedFile)) -> bool {
        match self.rows.find(path.as_str()) {
            Some(slot) => {
                self.modify(slot, f);
                true
            }
            None => false,
        }
    }

    /// Changes the row in `slot` through a whole copy of it (the path
    /// stays: a change of path is a removal and an addition).
    fn modify(&mut self, slot: u32, f: impl FnOnce(&mut ListedFile)) {
        self.reposition(slot, |t| {
            let mut row = t.rows.get(slot).expect("live slot");
            let (path, size) = (row.path.clone(), row.size);
            f(&mut row);
            row.path = path;
            t.total_bytes = t.total_bytes - size + row.size;
            t.rows.set(slot, row);
        });
    }

    /// Makes `change` (to the row in `slot`, or to what orders it), then
    /// moves the row to its new place in the view if its key changed; the
    /// selection follows the file.
    fn reposition(&mut self, slot: u32, change: impl FnOnce(&mut Self)) {
        // Found by the key it had: before the change.
        let pos = self.view_pos(slot);
        let r = &self.rows;
        let before = (
            r.size(slot),
            r.mtime_ns(slot),
            self.slot_rank(slot),
            r.owner(slot).map(str::to_string),
        );
        change(self);
        let Some(pos) = pos else { return };
        let r = &self.rows;
        let moved = match self.sort {
            SortKey::Name => false,
            SortKey::Size => r.size(slot) != before.0,
            SortKey::Modified => r.mtime_ns(slot) != before.1,
            SortKey::State => self.slot_rank(slot) != before.2,
            SortKey::Lock => r.owner(slot) != before.3.as_deref(),
        };
        if moved {
            let was_selected = pos == self.sel;
            self.view_remove(pos);
            self.view_insert(slot);
            if was_selected {
                self.sel = self.view_pos(slot).unwrap_or(self.sel);
            }
        }
    }

    /// Removes `path`; `false` if it was not there.
    pub fn remove(&mut self, path: &RelPath) -> bool {
        let Some(slot) = self.rows.find(path.as_str()) else {
            return false;
        };
        if let Some(pos) = self.view_pos(slot) {
            self.view_remove(pos);
        }
        self.total_bytes -= self.rows.size(slot);
        self.rows.remove(slot);
        self.conflicts.remove(path);
        true
    }

    /// Moves the selection by `delta` rows (clamped).
    pub fn move_by(&mut self, delta: isize) {
        if self.view.is_empty() {
            return;
        }
        self.sel = self
            .sel
            .saturating_add_signed(delta)
            .min(self.view.len() - 1);
    }

    /// Selects view position `pos` (clamped).
    pub fn select(&mut self, pos: usize) {
        self.sel = pos.min(self.view.len().saturating_sub(1));
    }

    /// Keeps the stored offset consistent with a viewport of `height` rows.
    pub(super) fn settle(&mut self, height: usize) {
        self.offset = visible_offset(self.offset, self.sel, self.view.len(), height);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tandem_common::ContentHash;
    use tandem_common::proto::{FileState, NodeFileState};

    use super::*;

    /// splitmix64: enough randomness for a test, replayable from its seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
            &from[self.below(from.len())]
        }
    }

    /// Names that tie when case is ignored, fold to more than one letter
    /// or are not ASCII, so every comparison path is taken.
    const PARTS: [&str; 8] = ["a", "A", "b", "é", "É", "ß", "ss", "K"];
    const OWNERS: [Option<&str>; 5] = [None, Some("ana"), Some("Ana"), Some("bo"), Some("Öz")];
    const FILTERS: [&str; 7] = ["", "a", "A", "é", "ss", "/", "b/"];
    const STATES: [FileState; 4] = [
        FileState::InSync,
        FileState::Syncing,
        FileState::Stale,
        FileState::Held,
    ];

    fn random_file(r: &mut Rng) -> ListedFile {
        let depth = 1 + r.below(3);
        let path: Vec<String> = (0..depth)
            .map(|_| (0..1 + r.below(2)).map(|_| *r.pick(&PARTS)).collect())
            .collect();
        let nodes: Vec<String> = ["A", "B"]
            .iter()
            .filter(|_| r.below(3) > 0)
            .map(|n| n.to_string())
            .collect();
        let states = if r.below(4) == 0 {
            Vec::new()
        } else {
            ["A", "B"]
                .iter()
                .map(|n| NodeFileState {
                    node: n.to_string(),
                    state: *r.pick(&STATES),
                })
                .collect()
        };
        ListedFile {
            path: RelPath::new(path.join("/")).unwrap(),
            size: r.below(3) as u64,
            mtime_ns: r.below(2) as i64,
            hash: ContentHash::default(),
            nodes,
            locked_by: r.pick(&OWNERS).map(str::to_string),
            held: (r.below(5) == 0) as u32,
            states,
            link: (r.below(9) == 0).then(|| "target".to_string()),
        }
    }

    fn check(t: &FileTable, model: &BTreeMap<String, ListedFile>, seed: u64, step: usize) {
        let at = format!("seed {seed}, step {step} (TABLE_SEEDS={seed} to replay)");
        let view: Vec<ListedFile> = (0..t.view_len()).map(|i| t.row(i).unwrap()).collect();
        for w in view.windows(2) {
            assert!(
                t.cmp_rows(&w[0], &w[1]).is_lt(),
                "{at}: {:?} before {:?} sorting by {} reversed {}",
                w[0].path,
                w[1].path,
                t.sort.word(),
                t.reversed
            );
        }
        let shown: Vec<&str> = {
            let mut v: Vec<&str> = view.iter().map(|f| f.path.as_str()).collect();
            v.sort_unstable();
            v
        };
        let lower = t.filter.to_lowercase();
        let want: Vec<&str> = model
            .keys()
            .map(String::as_str)
            .filter(|p| p.to_lowercase().contains(&lower))
            .collect();
        assert_eq!(shown, want, "{at}: the view holds the matching rows");
        assert_eq!(t.len(), model.len(), "{at}");
        for (p, f) in model {
            assert_eq!(t.get(p).as_ref(), Some(f), "{at}");
        }
        let total: u64 = model.values().map(|f| f.size).sum();
        assert_eq!(t.total_bytes(), total, "{at}");
        assert!(t.view_len() == 0 || t.selected_pos() < t.view_len(), "{at}");
    }

    /// Random tables, orders, filters and feed patches: the view is always
    /// in the table's order (so binary searches find rows) and holds
    /// exactly the matching rows, whatever changed. `TABLE_SEEDS=7` replays
    /// one seed.
    #[test]
    fn the_view_stays_in_order_through_random_changes() {
        let seeds: Vec<u64> = match std::env::var("TABLE_SEEDS") {
            Ok(s) => vec![s.parse().expect("TABLE_SEEDS: one seed")],
            Err(_) => (1..=40).collect(),
        };
        let sorts = [
            SortKey::Name,
            SortKey::Size,
            SortKey::Modified,
            SortKey::State,
            SortKey::Lock,
        ];
        for seed in seeds {
            eprintln!("seed {seed}");
            let mut r = Rng(seed);
            let mut t = FileTable::default();
            let mut model = BTreeMap::new();
            let first: Vec<ListedFile> = (0..r.below(60)).map(|_| random_file(&mut r)).collect();
            for f in &first {
                model.insert(f.path.to_string(), f.clone());
            }
            t.replace_all(first.into());
            check(&t, &model, seed, 0);
            for step in 1..=300 {
                let any = |r: &mut Rng, m: &BTreeMap<String, ListedFile>| {
                    (!m.is_empty()).then(|| m.keys().nth(r.below(m.len())).unwrap().clone())
                };
                match r.below(10) {
                    0 | 1 => {
                        let f = random_file(&mut r);
                        model.insert(f.path.to_string(), f.clone());
                        t.upsert(f);
                    }
                    2 => {
                        if let Some(p) = any(&mut r, &model) {
                            model.remove(&p);
                            assert!(t.remove(&RelPath::new(&p).unwrap()));
                        }
                    }
                    3 | 4 => {
                        if let Some(p) = any(&mut r, &model) {
                            let new = random_file(&mut r);
                            let row = model.get_mut(&p).unwrap();
                            let change = |f: &mut ListedFile| {
                                f.size = new.size;
                                f.mtime_ns = new.mtime_ns;
                                f.locked_by = new.locked_by.clone();
                                f.held = new.held;
                                f.states = new.states.clone();
                                f.nodes = new.nodes.clone();
                            };
                            change(row);
                            assert!(t.patch(&RelPath::new(&p).unwrap(), change));
                        }
                    }
                    5 => {
                        if let Some(p) = any(&mut r, &model) {
                            let p = RelPath::new(&p).unwrap();
                            if r.below(2) == 0 {
                                t.mark_conflict(p);
                            } else {
                                t.clear_conflict(&p);
                            }
                        }
                    }
                    6 => t.set_sort(*r.pick(&sorts)),
                    7 => t.sort_by_column(*r.pick(&sorts)),
                    8 => {
                        let f = FILTERS[r.below(FILTERS.len())];
                        t.set_filter(f)
                    }
                    _ => {
                        let delta = r.below(7) as isize - 3;
                        t.move_by(delta);
                    }
                }
                check(&t, &model, seed, step);
            }
        }
    }
}
