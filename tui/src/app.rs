//! The terminal UI's state and its pure update function.
//!
//! Everything that happens (a key, a feed event, an answer from the node, a
//! clock tick) arrives as a [`Msg`]; [`update`] changes the [`AppState`] and
//! returns the [`Effect`]s to carry out (requests to the node, quitting).
//! No I/O and no clock here: times come in the messages, so every behaviour
//! can be tested without a terminal or a node. [`crate::ui_main`] runs the
//! effects and feeds their results back; [`crate::ui`] draws the state.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;

use crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::layout::{Position, Rect};
use tandem_common::RelPath;
use tandem_common::proto::{
    CacheReport, Event, EventKind, FeedCursor, FileState, ListedFile, NodeFileState, NodeStatus,
};

use crate::cli::{describe_event, event_kind_name};
use crate::keys::{self, Action};

/// Feed lines kept (older ones are dropped).
pub const FEED_CAP: usize = 1000;
/// Cache and Nodes views are asked again this often while visible; the
/// whole file table at most this often after changes the feed cannot patch.
pub const REFRESH_NS: i64 = 2_000_000_000;
/// Wait this long after a change before refreshing, to batch bursts.
pub const DEBOUNCE_NS: i64 = 300_000_000;
/// Reconnect attempts this often while the node is away.
pub const RECONNECT_NS: i64 = 1_000_000_000;
/// Clock offsets beyond this are flagged.
pub const SKEW_WARN_MS: i64 = 1000;
/// Rows moved by one mouse-wheel notch.
pub const WHEEL_ROWS: usize = 3;

/// The tabs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The merged file table and the feed.
    Files,
    /// The node's cache.
    Cache,
    /// The cluster's nodes.
    Nodes,
}

impl View {
    /// Every tab, in order.
    pub const ALL: [View; 3] = [View::Files, View::Cache, View::Nodes];

    /// Tab title.
    pub fn title(self) -> &'static str {
        match self {
            View::Files => "Files",
            View::Cache => "Cache",
            View::Nodes => "Nodes",
        }
    }

    fn index(self) -> usize {
        match self {
            View::Files => 0,
            View::Cache => 1,
            View::Nodes => 2,
        }
    }
}

/// Order of the file table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// By path, A→Z.
    Name,
    /// Largest first.
    Size,
    /// Newest first.
    Modified,
}

impl SortKey {
    /// The next order for `s`.
    pub fn next(self) -> SortKey {
        match self {
            SortKey::Name => SortKey::Size,
            SortKey::Size => SortKey::Modified,
            SortKey::Modified => SortKey::Name,
        }
    }

    /// How the header names it.
    pub fn label(self) -> &'static str {
        match self {
            SortKey::Name => "name ↑",
            SortKey::Size => "size ↓",
            SortKey::Modified => "modified ↓",
        }
    }

    /// The table order: a total order (ties broken by path), so binary
    /// search finds a row's place.
    pub fn cmp(self, a: &ListedFile, b: &ListedFile) -> Ordering {
        match self {
            SortKey::Name => a.path.cmp(&b.path),
            SortKey::Size => b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path)),
            SortKey::Modified => b
                .mtime_ns
                .cmp(&a.mtime_ns)
                .then_with(|| a.path.cmp(&b.path)),
        }
    }
}

/// The time zone times are shown in (tests use UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// The machine's zone.
    Local,
    /// UTC.
    Utc,
}

impl Zone {
    /// Formats nanoseconds since the epoch with a chrono format string.
    pub fn format(self, ns: i64, fmt: &str) -> String {
        let t = chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(ns);
        match self {
            Zone::Utc => t.format(fmt).to_string(),
            Zone::Local => t.with_timezone(&chrono::Local).format(fmt).to_string(),
        }
    }
}

/// The connection to the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conn {
    /// Connected to the node of this name.
    Up {
        /// The node's name, from its welcome.
        name: String,
    },
    /// Not connected (yet, or any more).
    Down {
        /// Why the last attempt failed or the connection ended.
        reason: String,
        /// Since when (ns).
        since_ns: i64,
        /// Whether it was ever connected (the table is then stale).
        was_up: bool,
    },
}

/// What the keyboard is typing into, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Keys are commands (see [`keys::BINDINGS`]).
    Normal,
    /// Editing the filter (`/`).
    Filter,
    /// Typing a command (`:`).
    Command(String),
    /// Asking where to fetch `path` to.
    FetchPrompt {
        /// The file.
        path: RelPath,
        /// The destination directory typed so far.
        input: String,
    },
    /// The help overlay.
    Help,
    /// A node's own files (Enter on the Nodes view).
    Discover(DiscoverPopup),
}

/// The popup listing one node's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverPopup {
    /// The node.
    pub node: String,
    /// `None` while loading.
    pub files: Option<Result<Vec<ListedFile>, String>>,
    /// First row shown.
    pub scroll: usize,
}

/// How a status message reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Neutral.
    Info,
    /// Something worked.
    Ok,
    /// Something failed.
    Error,
}

/// The status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The words.
    pub text: String,
    /// Colour.
    pub level: Level,
}

/// A fetch in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchProgress {
    /// The file.
    pub path: RelPath,
    /// Destination directory.
    pub dest: PathBuf,
    /// Bytes received.
    pub done: u64,
    /// Bytes expected (0 until the node answered).
    pub total: u64,
    /// The serving node, once known.
    pub from: Option<String>,
}

/// One line of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedLine {
    /// When (ns).
    pub time_ns: i64,
    /// Reporting node ("" for the UI's own notes).
    pub node: String,
    /// [`event_kind_name`], or "note".
    pub kind: &'static str,
    /// The event in words.
    pub text: String,
}

/// The live feed: newest first, bounded.
#[derive(Debug, Clone, Default)]
pub struct Feed {
    /// Newest first.
    pub lines: VecDeque<FeedLine>,
    /// Lines scrolled away from the newest (0 = following).
    pub scroll: usize,
}

impl Feed {
    fn push(&mut self, line: FeedLine) {
        self.lines.push_front(line);
        self.lines.truncate(FEED_CAP);
        if self.scroll > 0 {
            // Keep what the reader is looking at in place.
            self.scroll = (self.scroll + 1).min(self.lines.len().saturating_sub(1));
        }
    }

    fn scroll_by(&mut self, delta: isize) {
        let max = self.lines.len().saturating_sub(1);
        self.scroll = self.scroll.saturating_add_signed(delta).min(max);
    }
}

/// The file table: rows in stable slots, plus the filtered and sorted view
/// as slot numbers. Feed events patch rows in place and move single slots
/// in the view; the view is rebuilt only when the whole list, the filter or
/// the sort changes.
#[derive(Debug, Clone)]
pub struct FileTable {
    slots: Vec<Option<ListedFile>>,
    free: Vec<usize>,
    by_path: HashMap<RelPath, usize>,
    view: Vec<usize>,
    filter: String,
    filter_lower: String,
    sort: SortKey,
    /// Position of the selection in the view.
    sel: usize,
    /// First view position on screen (kept so the selection stays on the
    /// same screen line when rows move above it).
    offset: usize,
    total_bytes: u64,
    /// Files that had a conflict resolved since they last changed.
    conflicts: HashSet<RelPath>,
    /// How many times the view was rebuilt from scratch (tests check that
    /// feed patches do not rebuild).
    pub rebuilds: u64,
}

impl Default for FileTable {
    fn default() -> Self {
        FileTable {
            slots: Vec::new(),
            free: Vec::new(),
            by_path: HashMap::new(),
            view: Vec::new(),
            filter: String::new(),
            filter_lower: String::new(),
            sort: SortKey::Name,
            sel: 0,
            offset: 0,
            total_bytes: 0,
            conflicts: HashSet::new(),
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
        self.by_path.len()
    }

    /// Whether the table has no files.
    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    /// Rows shown (after the filter).
    pub fn view_len(&self) -> usize {
        self.view.len()
    }

    /// Sum of the sizes.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// The filter text.
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// The order.
    pub fn sort(&self) -> SortKey {
        self.sort
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
    pub fn row(&self, pos: usize) -> Option<&ListedFile> {
        self.view
            .get(pos)
            .and_then(|&slot| self.slots[slot].as_ref())
    }

    /// The selected row.
    pub fn selected(&self) -> Option<&ListedFile> {
        self.row(self.sel)
    }

    /// A file by path.
    pub fn get(&self, path: &str) -> Option<&ListedFile> {
        self.by_path
            .get(path)
            .and_then(|&slot| self.slots[slot].as_ref())
    }

    /// Whether a conflict was reported for `path` since it last changed.
    pub fn has_conflict(&self, path: &RelPath) -> bool {
        self.conflicts.contains(path)
    }

    /// Every file (in slot order).
    pub fn iter(&self) -> impl Iterator<Item = &ListedFile> {
        self.slots.iter().flatten()
    }

    /// The rows on screen: (view position, row) from `offset`, at most
    /// `height` of them. Only these are ever turned into widgets.
    pub fn window(
        &self,
        offset: usize,
        height: usize,
    ) -> impl Iterator<Item = (usize, &ListedFile)> {
        let end = (offset + height).min(self.view.len());
        let start = offset.min(end);
        self.view[start..end]
            .iter()
            .enumerate()
            .filter_map(move |(i, &slot)| self.slots[slot].as_ref().map(|f| (start + i, f)))
    }

    fn matches(&self, f: &ListedFile) -> bool {
        Matcher::new(&self.filter_lower).matches(f.path.as_str())
    }

    fn slot_row(&self, slot: usize) -> &ListedFile {
        self.slots[slot]
            .as_ref()
            .expect("the view holds only live slots")
    }

    /// Replaces every row (a fresh list from the node), keeping the
    /// selection on the same path when it is still there.
    pub fn replace_all(&mut self, files: Vec<ListedFile>) {
        let keep = self.selected().map(|f| f.path.clone());
        let old_sel = self.sel;
        let screen_line = self.sel.saturating_sub(self.offset);
        self.total_bytes = files.iter().map(|f| f.size).sum();
        self.by_path = HashMap::with_capacity(files.len());
        for (i, f) in files.iter().enumerate() {
            self.by_path.insert(f.path.clone(), i);
        }
        self.slots = files.into_iter().map(Some).collect();
        self.free.clear();
        self.conflicts
            .retain(|p| self.by_path.contains_key(p.as_str()));
        self.rebuild_view_inner();
        self.sel = keep
            .and_then(|p| self.by_path.get(&p).copied())
            .and_then(|slot| self.view.iter().position(|&s| s == slot))
            .unwrap_or_else(|| old_sel.min(self.view.len().saturating_sub(1)));
        self.offset = self.sel.saturating_sub(screen_line);
    }

    fn rebuild_view_inner(&mut self) {
        self.rebuilds += 1;
        let mut m = Matcher::new(&self.filter_lower);
        let mut view: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, f)| f.as_ref().filter(|f| m.matches(f.path.as_str())).map(|_| i))
            .collect();
        let slots = &self.slots;
        let row = |i: usize| slots[i].as_ref().expect("live slot");
        let path = |i: usize| &row(i).path;
        // Sort (key, slot) pairs, so that comparing two rows reads the
        // rows themselves only on ties (numbers are largest/newest first).
        let by_key = |view: &mut Vec<usize>, key: &dyn Fn(&ListedFile) -> i128| {
            let mut keyed: Vec<(i128, usize)> = view.iter().map(|&i| (-key(row(i)), i)).collect();
            keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| path(a.1).cmp(path(b.1))));
            *view = keyed.into_iter().map(|(_, i)| i).collect();
        };
        match self.sort {
            SortKey::Name => view.sort_unstable_by(|&a, &b| path(a).cmp(path(b))),
            SortKey::Size => by_key(&mut view, &|f| i128::from(f.size)),
            SortKey::Modified => by_key(&mut view, &|f| i128::from(f.mtime_ns)),
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
            let hit: Vec<bool> = self
                .slots
                .iter()
                .map(|f| f.as_ref().is_some_and(|f| m.matches(f.path.as_str())))
                .collect();
            self.view.retain(|&slot| hit[slot]);
            self.sel = keep
                .and_then(|slot| self.view.iter().position(|&s| s == slot))
                .unwrap_or(0);
            self.offset = self.sel.saturating_sub(screen_line);
        } else {
            self.rebuild_view();
        }
    }

    /// Sets the order.
    pub fn set_sort(&mut self, sort: SortKey) {
        if sort != self.sort {
            self.sort = sort;
            self.rebuild_view();
        }
    }

    /// Where `slot` belongs in the view (it must not be in it).
    fn insert_pos(&self, slot: usize) -> usize {
        let new = self.slot_row(slot);
        self.view
            .partition_point(|&i| self.sort.cmp(self.slot_row(i), new) == Ordering::Less)
    }

    /// The view position of `slot`, found by its current key.
    fn view_pos(&self, slot: usize) -> Option<usize> {
        let row = self.slot_row(slot);
        self.view
            .binary_search_by(|&i| self.sort.cmp(self.slot_row(i), row))
            .ok()
    }

    fn view_insert(&mut self, slot: usize) {
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
        if let Some(&slot) = self.by_path.get(&file.path) {
            self.modify(slot, |f| *f = file);
            return;
        }
        self.total_bytes += file.size;
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.by_path.insert(file.path.clone(), slot);
        let show = self.matches(&file);
        self.slots[slot] = Some(file);
        if show {
            self.view_insert(slot);
        }
    }

    /// Changes the row of `path` in place; `false` if there is none.
    pub fn patch(&mut self, path: &RelPath, f: impl FnOnce(&mut ListedFile)) -> bool {
        match self.by_path.get(path) {
            Some(&slot) => {
                self.modify(slot, f);
                true
            }
            None => false,
        }
    }

    fn modify(&mut self, slot: usize, f: impl FnOnce(&mut ListedFile)) {
        let pos = self.view_pos(slot);
        let row = self.slots[slot].as_mut().expect("live slot");
        let (size, mtime) = (row.size, row.mtime_ns);
        f(row);
        self.total_bytes = self.total_bytes - size + row.size;
        let moved = match self.sort {
            SortKey::Name => false,
            SortKey::Size => row.size != size,
            SortKey::Modified => row.mtime_ns != mtime,
        };
        if let (Some(pos), true) = (pos, moved) {
            let was_selected = pos == self.sel;
            self.view_remove(pos);
            self.view_insert(slot);
            if was_selected {
                // The selection follows the file.
                self.sel = self.view_pos(slot).unwrap_or(self.sel);
            }
        }
    }

    /// Removes `path`; `false` if it was not there.
    pub fn remove(&mut self, path: &RelPath) -> bool {
        let Some(&slot) = self.by_path.get(path) else {
            return false;
        };
        if let Some(pos) = self.view_pos(slot) {
            self.view_remove(pos);
        }
        self.by_path.remove(path);
        if let Some(f) = self.slots[slot].take() {
            self.total_bytes -= f.size;
        }
        self.free.push(slot);
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
    fn settle(&mut self, height: usize) {
        self.offset = visible_offset(self.offset, self.sel, self.view.len(), height);
    }
}

/// A message: everything that can happen to the UI.
#[derive(Debug, Clone)]
pub enum Msg {
    /// A key press.
    Key(KeyEvent),
    /// The mouse (wheel, click).
    Mouse(MouseEvent),
    /// The terminal's new size (columns, rows).
    Resize(u16, u16),
    /// The clock: now (ns since the epoch).
    Tick(i64),
    /// A connection to the node was made.
    Connected {
        /// The node's name.
        node_name: String,
        /// Now.
        now: i64,
    },
    /// A connection attempt failed.
    ConnectFailed {
        /// Why.
        reason: String,
        /// Now.
        now: i64,
    },
    /// The connection ended.
    ConnectionLost {
        /// Why.
        reason: String,
        /// Now.
        now: i64,
    },
    /// The feed (re)started in the node's run `epoch`.
    Subscribed(Result<u64, String>),
    /// A feed event.
    Event(Event),
    /// Feed events were lost.
    Missed {
        /// Node run.
        epoch: u64,
        /// First lost.
        from: u64,
        /// Next to come.
        to: u64,
        /// Now.
        now: i64,
    },
    /// The file table arrived.
    ListLoaded {
        /// Rows, or the error.
        result: Result<Vec<ListedFile>, String>,
        /// Now.
        now: i64,
    },
    /// The cache report arrived.
    CacheLoaded(Result<CacheReport, String>),
    /// The node list arrived.
    NodesLoaded(Result<Vec<NodeStatus>, String>),
    /// A node's own files arrived.
    Discovered {
        /// The node.
        node: String,
        /// Rows, or the error.
        result: Result<Vec<ListedFile>, String>,
    },
    /// A lock was taken: (path, owner), or the error.
    LockDone(Result<(RelPath, String), String>),
    /// A `LockWait` is queued behind the holder.
    LockQueued {
        /// The file.
        path: RelPath,
        /// Who holds it now.
        holder: String,
        /// Place in the queue, 1 = next.
        position: usize,
    },
    /// A lock was released: (path, previous owner, held changes released).
    UnlockDone(Result<(RelPath, String, usize), String>),
    /// The node started sending a fetched file.
    FetchStarted {
        /// The file's size.
        total: u64,
        /// The serving node.
        from: String,
    },
    /// Bytes of the fetch received so far.
    FetchProgress(u64),
    /// The fetch ended: where the file was written, or the error.
    FetchDone(Result<PathBuf, String>),
}

/// Something for [`crate::ui_main`] to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Connect to the node.
    Connect,
    /// Start the feed after this cursor.
    Subscribe(Option<FeedCursor>),
    /// Fetch the whole file table.
    RefreshList,
    /// Fetch the cache report.
    RefreshCache,
    /// Fetch the node list.
    RefreshNodes,
    /// List one node's own files.
    Discover(String),
    /// Lock a file (logging in first).
    Lock(RelPath),
    /// Lock a file, or wait in its queue (on a connection of its own:
    /// closing it leaves the queue).
    LockWait(RelPath),
    /// Unlock a file.
    Unlock {
        /// The file.
        path: RelPath,
        /// Someone else's lock.
        force: bool,
    },
    /// Download a file into a directory.
    Fetch {
        /// The file.
        path: RelPath,
        /// The directory.
        dest: PathBuf,
        /// Replace a file of that name in the directory (`:fetch … --force`).
        force: bool,
    },
    /// Leave.
    Quit,
}

/// Everything the UI shows.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The node address asked for.
    pub node_addr: String,
    /// The connection.
    pub conn: Conn,
    /// The name of the node when it was last connected.
    pub last_node_name: Option<String>,
    /// A connection attempt is under way.
    pub connecting: bool,
    next_attempt_ns: i64,
    /// The current tab.
    pub view: View,
    /// What the keyboard types into.
    pub mode: Mode,
    /// The file table.
    pub files: FileTable,
    /// When the table was last loaded (ns).
    pub list_loaded_ns: Option<i64>,
    /// Why the last load failed (shown in the table while it is empty:
    /// "not authorized" says there what to ask an admin for).
    pub list_error: Option<String>,
    list_in_flight: bool,
    list_requested_ns: i64,
    list_due_ns: Option<i64>,
    list_dirty_in_flight: bool,
    /// The feed.
    pub feed: Feed,
    /// Where the feed left off, to resume after a reconnect.
    pub cursor: Option<FeedCursor>,
    /// The cursor the current subscription resumed from.
    resumed_from: Option<FeedCursor>,
    /// The last cache report.
    pub cache: Option<CacheReport>,
    /// Why the cache report is missing, if it is.
    pub cache_error: Option<String>,
    /// Selected cache entry.
    pub cache_sel: usize,
    cache_requested_ns: Option<i64>,
    cache_in_flight: bool,
    /// The last node list (empty until loaded).
    pub nodes: Vec<NodeStatus>,
    /// Why the node list is missing, if it is.
    pub nodes_error: Option<String>,
    /// Selected node.
    pub nodes_sel: usize,
    nodes_requested_ns: Option<i64>,
    nodes_in_flight: bool,
    nodes_due_ns: Option<i64>,
    /// Nodes known up (true) or down (false), from the node list, the feed
    /// and the table's replicas.
    pub known_nodes: BTreeMap<String, bool>,
    /// The status line.
    pub status: Option<Status>,
    /// The fetch under way.
    pub fetch: Option<FetchProgress>,
    /// Terminal size (columns, rows).
    pub size: (u16, u16),
    /// The latest time seen (ns).
    pub now_ns: i64,
    /// How times are shown.
    pub zone: Zone,
    /// Default fetch destination.
    pub cwd: PathBuf,
}

impl AppState {
    /// A UI for the node at `addr`, not connected yet. Call [`AppState::start`]
    /// for the first effects.
    pub fn new(addr: &str, zone: Zone, cwd: PathBuf, now_ns: i64, size: (u16, u16)) -> Self {
        AppState {
            node_addr: addr.to_string(),
            conn: Conn::Down {
                reason: "connecting…".into(),
                since_ns: now_ns,
                was_up: false,
            },
            last_node_name: None,
            connecting: false,
            next_attempt_ns: now_ns,
            view: View::Files,
            mode: Mode::Normal,
            files: FileTable::default(),
            list_loaded_ns: None,
            list_error: None,
            list_in_flight: false,
            list_requested_ns: i64::MIN / 2,
            list_due_ns: None,
            list_dirty_in_flight: false,
            feed: Feed::default(),
            cursor: None,
            resumed_from: None,
            cache: None,
            cache_error: None,
            cache_sel: 0,
            cache_requested_ns: None,
            cache_in_flight: false,
            nodes: Vec::new(),
            nodes_error: None,
            nodes_sel: 0,
            nodes_requested_ns: None,
            nodes_in_flight: false,
            nodes_due_ns: None,
            known_nodes: BTreeMap::new(),
            status: None,
            fetch: None,
            size,
            now_ns,
            zone,
            cwd,
        }
    }

    /// The first effects: connect.
    pub fn start(&mut self) -> Vec<Effect> {
        self.connecting = true;
        vec![Effect::Connect]
    }

    /// Whether the node is connected now.
    pub fn is_up(&self) -> bool {
        matches!(self.conn, Conn::Up { .. })
    }

    /// Nodes (up, down), counting at least the connected node.
    pub fn node_counts(&self) -> (usize, usize) {
        let up = self.known_nodes.values().filter(|u| **u).count();
        let down = self.known_nodes.len() - up;
        (up.max(usize::from(self.is_up())), down)
    }

    /// The screen's areas at the current size.
    pub fn areas(&self) -> crate::ui::Areas {
        crate::ui::layout(Rect::new(0, 0, self.size.0, self.size.1), self.view)
    }

    /// Rows of the file table on screen.
    pub fn table_height(&self) -> usize {
        crate::ui::table_rows(self.areas().main)
    }

    fn set_status(&mut self, level: Level, text: impl Into<String>) {
        self.status = Some(Status {
            text: text.into(),
            level,
        });
    }

    fn note(&mut self, text: impl Into<String>) {
        self.feed.push(FeedLine {
            time_ns: self.now_ns,
            node: String::new(),
            kind: "note",
            text: text.into(),
        });
    }

    /// Asks for the whole table after `DEBOUNCE_NS`, at most once per
    /// `REFRESH_NS`.
    fn schedule_list(&mut self) {
        if self.list_in_flight {
            self.list_dirty_in_flight = true;
            return;
        }
        let due = (self.now_ns + DEBOUNCE_NS).max(self.list_requested_ns + REFRESH_NS);
        self.list_due_ns = Some(self.list_due_ns.map_or(due, |d| d.min(due)));
    }

    fn request_list(&mut self, fx: &mut Vec<Effect>) {
        if !self.is_up() || self.list_in_flight {
            return;
        }
        self.list_in_flight = true;
        self.list_requested_ns = self.now_ns;
        self.list_due_ns = None;
        self.list_dirty_in_flight = false;
        fx.push(Effect::RefreshList);
    }

    /// Asks for the current view's report when it is older than
    /// `REFRESH_NS` (or `force`).
    fn refresh_view(&mut self, force: bool, fx: &mut Vec<Effect>) {
        if !self.is_up() {
            return;
        }
        let now = self.now_ns;
        let stale = |t: Option<i64>| force || t.is_none_or(|t| now - t >= REFRESH_NS);
        match self.view {
            View::Cache if !self.cache_in_flight && stale(self.cache_requested_ns) => {
                self.cache_in_flight = true;
                self.cache_requested_ns = Some(now);
                fx.push(Effect::RefreshCache);
            }
            View::Nodes if !self.nodes_in_flight && stale(self.nodes_requested_ns) => {
                self.nodes_in_flight = true;
                self.nodes_requested_ns = Some(now);
                fx.push(Effect::RefreshNodes);
            }
            View::Files if force => self.request_list(fx),
            _ => {}
        }
    }

    fn set_view(&mut self, v: View, fx: &mut Vec<Effect>) {
        self.view = v;
        self.refresh_view(false, fx);
    }

    fn page(&self) -> usize {
        match self.view {
            View::Files => self.table_height(),
            View::Cache => crate::ui::cache::table_rows(self.areas().main),
            View::Nodes => crate::ui::nodes::table_rows(self.areas().main),
        }
        .max(1)
    }

    fn settle(&mut self) {
        let h = self.table_height();
        self.files.settle(h);
    }

    /// The path at row number `n` as shown in the `#` column.
    fn path_at(&self, n: usize) -> Result<RelPath, String> {
        n.checked_sub(1)
            .and_then(|i| self.files.row(i))
            .map(|f| f.path.clone())
            .ok_or_else(|| {
                format!(
                    "there is no file #{n}: the table shows {} row(s)",
                    self.files.view_len()
                )
            })
    }

    fn not_connected(&mut self) -> Vec<Effect> {
        let addr = self.node_addr.clone();
        self.set_status(
            Level::Error,
            format!("not connected to {addr}; reconnecting by itself"),
        );
        Vec::new()
    }

    fn lock(&mut self, path: RelPath) -> Vec<Effect> {
        if !self.is_up() {
            return self.not_connected();
        }
        self.set_status(Level::Info, format!("locking {path}…"));
        vec![Effect::Lock(path)]
    }

    fn lock_wait(&mut self, path: RelPath) -> Vec<Effect> {
        if !self.is_up() {
            return self.not_connected();
        }
        self.set_status(Level::Info, format!("locking {path} (or waiting for it)…"));
        vec![Effect::LockWait(path)]
    }

    fn unlock(&mut self, path: RelPath, force: bool) -> Vec<Effect> {
        if !self.is_up() {
            return self.not_connected();
        }
        self.set_status(Level::Info, format!("unlocking {path}…"));
        vec![Effect::Unlock { path, force }]
    }

    fn fetch(&mut self, path: RelPath, dest: PathBuf, force: bool) -> Vec<Effect> {
        if !self.is_up() {
            return self.not_connected();
        }
        if let Some(f) = &self.fetch {
            let p = f.path.clone();
            self.set_status(
                Level::Error,
                format!("{p} is still being fetched; wait for it to finish"),
            );
            return Vec::new();
        }
        self.fetch = Some(FetchProgress {
            path: path.clone(),
            dest: dest.clone(),
            done: 0,
            total: 0,
            from: None,
        });
        self.status = None;
        vec![Effect::Fetch { path, dest, force }]
    }

    fn mark_known(&mut self, nodes: &[String]) {
        for n in nodes {
            self.known_nodes.entry(n.clone()).or_insert(true);
        }
    }
}

/// Applies `msg` to the state; returns what to do.
pub fn update(s: &mut AppState, msg: Msg) -> Vec<Effect> {
    let mut fx = Vec::new();
    match msg {
        Msg::Key(k) => return on_key(s, k),
        Msg::Mouse(m) => on_mouse(s, m),
        Msg::Resize(w, h) => {
            s.size = (w, h);
            s.settle();
        }
        Msg::Tick(now) => on_tick(s, now, &mut fx),
        Msg::Connected { node_name, now } => {
            s.now_ns = s.now_ns.max(now);
            let was_up = matches!(s.conn, Conn::Down { was_up: true, .. });
            s.connecting = false;
            s.known_nodes.insert(node_name.clone(), true);
            s.last_node_name = Some(node_name.clone());
            s.conn = Conn::Up {
                name: node_name.clone(),
            };
            if was_up {
                s.set_status(Level::Ok, format!("reconnected to {node_name}"));
                s.note(format!("reconnected to {node_name}"));
            }
            s.resumed_from = s.cursor;
            fx.push(Effect::Subscribe(s.cursor));
            s.list_in_flight = false;
            s.request_list(&mut fx);
            s.cache_in_flight = false;
            s.nodes_in_flight = false;
            // The header's node counts come from the node list.
            s.nodes_in_flight = true;
            s.nodes_requested_ns = Some(s.now_ns);
            fx.push(Effect::RefreshNodes);
            s.refresh_view(false, &mut fx);
        }
        Msg::ConnectFailed { reason, now } => {
            s.now_ns = s.now_ns.max(now);
            s.connecting = false;
            s.next_attempt_ns = now + RECONNECT_NS;
            let (since_ns, was_up) = match &s.conn {
                Conn::Down {
                    since_ns, was_up, ..
                } => (*since_ns, *was_up),
                Conn::Up { .. } => (now, true),
            };
            s.conn = Conn::Down {
                reason,
                since_ns,
                was_up,
            };
        }
        Msg::ConnectionLost { reason, now } => {
            s.now_ns = s.now_ns.max(now);
            if let Conn::Up { name } = &s.conn {
                let name = name.clone();
                s.note(format!("lost the connection to {name}: {reason}"));
                s.known_nodes.insert(name, false);
            }
            s.conn = Conn::Down {
                reason,
                since_ns: now,
                was_up: true,
            };
            s.connecting = false;
            s.next_attempt_ns = now + RECONNECT_NS;
            s.list_in_flight = false;
            s.cache_in_flight = false;
            s.nodes_in_flight = false;
        }
        Msg::Subscribed(Ok(epoch)) => {
            if s.resumed_from.take().is_some_and(|c| c.epoch != epoch) {
                s.note("the node restarted; events from its previous run may be missing");
                if s.cursor.is_some_and(|c| c.epoch != epoch) {
                    s.cursor = None;
                }
                s.schedule_list();
            }
        }
        Msg::Subscribed(Err(e)) => {
            s.set_status(Level::Error, format!("cannot follow the feed: {e}"))
        }
        Msg::Event(e) => on_event(s, e),
        Msg::Missed {
            epoch,
            from,
            to,
            now,
        } => {
            s.now_ns = s.now_ns.max(now);
            s.cursor = Some(FeedCursor {
                epoch,
                seq: to.saturating_sub(1),
            });
            s.note(format!(
                "missed events {from}..{to} (the feed fell behind); reloading the table"
            ));
            s.list_due_ns = Some(s.now_ns);
            s.schedule_list();
        }
        Msg::ListLoaded { result, now } => {
            s.now_ns = s.now_ns.max(now);
            s.list_in_flight = false;
            match result {
                Ok(files) => {
                    for f in &files {
                        for n in &f.nodes {
                            if !s.known_nodes.contains_key(n) {
                                s.known_nodes.insert(n.clone(), true);
                            }
                        }
                    }
                    s.files.replace_all(files);
                    s.settle();
                    s.list_loaded_ns = Some(now);
                    s.list_error = None;
                    if std::mem::take(&mut s.list_dirty_in_flight) {
                        s.schedule_list();
                    }
                }
                Err(e) => {
                    s.set_status(Level::Error, format!("cannot load the file list: {e}"));
                    s.list_error = Some(e.to_string());
                }
            }
        }
        Msg::CacheLoaded(r) => {
            s.cache_in_flight = false;
            match r {
                Ok(c) => {
                    s.cache_sel = s.cache_sel.min(c.entries.len().saturating_sub(1));
                    s.cache = Some(c);
                    s.cache_error = None;
                }
                Err(e) => {
                    if s.cache_error.as_deref() != Some(e.as_str()) && s.view == View::Cache {
                        s.set_status(Level::Error, format!("cache: {e}"));
                    }
                    s.cache_error = Some(e);
                }
            }
        }
        Msg::NodesLoaded(r) => {
            s.nodes_in_flight = false;
            match r {
                Ok(nodes) => {
                    s.known_nodes = nodes.iter().map(|n| (n.name.clone(), n.up)).collect();
                    s.nodes_sel = s.nodes_sel.min(nodes.len().saturating_sub(1));
                    s.nodes = nodes;
                    s.nodes_error = None;
                }
                Err(e) => {
                    if s.nodes_error.as_deref() != Some(e.as_str()) && s.view == View::Nodes {
                        s.set_status(Level::Error, format!("nodes: {e}"));
                    }
                    s.nodes_error = Some(e);
                }
            }
        }
        Msg::Discovered { node, result } => {
            if let Mode::Discover(p) = &mut s.mode
                && p.node == node
            {
                p.files = Some(result);
                p.scroll = 0;
            }
        }
        Msg::LockDone(r) => match r {
            Ok((path, owner)) => {
                s.files.patch(&path, |f| f.locked_by = Some(owner.clone()));
                s.set_status(Level::Ok, format!("locked {path} (owner {owner})"));
            }
            Err(e) => s.set_status(Level::Error, format!("lock failed: {e}")),
        },
        Msg::LockQueued {
            path,
            holder,
            position,
        } => s.set_status(
            Level::Info,
            format!(
                "waiting for {path}: locked by {holder}; you are number {position} in its queue (quit to give up)"
            ),
        ),
        Msg::UnlockDone(r) => match r {
            Ok((path, owner, released)) => {
                s.files.patch(&path, |f| {
                    f.locked_by = None;
                    f.held = 0;
                });
                s.set_status(
                    Level::Ok,
                    format!(
                        "unlocked {path} (was locked by {owner}); {released} held change(s) released"
                    ),
                );
            }
            Err(e) => s.set_status(Level::Error, format!("unlock failed: {e}")),
        },
        Msg::FetchStarted { total, from } => {
            if let Some(f) = &mut s.fetch {
                f.total = total;
                f.from = Some(from);
            }
        }
        Msg::FetchProgress(done) => {
            if let Some(f) = &mut s.fetch {
                f.done = done;
            }
        }
        Msg::FetchDone(r) => {
            let path = s
                .fetch
                .take()
                .map(|f| f.path.to_string())
                .unwrap_or_default();
            match r {
                Ok(to) => s.set_status(
                    Level::Ok,
                    format!("fetched {path} to {} (hash verified)", to.display()),
                ),
                Err(e) => s.set_status(Level::Error, format!("fetch of {path} failed: {e}")),
            }
        }
    }
    fx
}

fn on_tick(s: &mut AppState, now: i64, fx: &mut Vec<Effect>) {
    s.now_ns = s.now_ns.max(now);
    if !s.is_up() {
        if !s.connecting && now >= s.next_attempt_ns {
            s.connecting = true;
            fx.push(Effect::Connect);
        }
        return;
    }
    if s.list_due_ns.is_some_and(|d| now >= d) {
        s.request_list(fx);
    }
    if s.nodes_due_ns.is_some_and(|d| now >= d) && !s.nodes_in_flight && s.view != View::Nodes {
        s.nodes_due_ns = None;
        s.nodes_in_flight = true;
        s.nodes_requested_ns = Some(now);
        fx.push(Effect::RefreshNodes);
    }
    s.refresh_view(false, fx);
}

/// Applies a feed event: a line in the feed, and a patch of the table.
fn on_event(s: &mut AppState, e: Event) {
    s.now_ns = s.now_ns.max(e.time_ns);
    s.cursor = Some(FeedCursor {
        epoch: e.epoch,
        seq: e.seq,
    });
    s.feed.push(FeedLine {
        time_ns: e.time_ns,
        node: e.node.clone(),
        kind: event_kind_name(&e.kind),
        text: describe_event(&e.kind),
    });
    let node = e.node;
    match e.kind {
        // A new version made on `node`: only it holds it so far. The event
        // has no hash or mtime: show the event's time until the table is
        // reloaded (debounced, at most every REFRESH_NS).
        EventKind::Added { path, size } | EventKind::Changed { path, size } => {
            s.files.conflicts.remove(&path);
            let mtime_ns = e.time_ns;
            let patched = s.files.patch(&path, |f| {
                f.size = size;
                f.mtime_ns = mtime_ns;
                f.nodes = vec![node.clone()];
                for st in &mut f.states {
                    if st.node != node && st.state == FileState::InSync {
                        st.state = FileState::Stale;
                    }
                }
                set_node_state(f, &node, FileState::InSync);
            });
            if !patched {
                s.files.upsert(ListedFile {
                    path,
                    size,
                    mtime_ns,
                    hash: tandem_common::ContentHash::default(),
                    nodes: vec![node.clone()],
                    locked_by: None,
                    held: 0,
                    states: vec![NodeFileState {
                        node: node.clone(),
                        state: FileState::InSync,
                    }],
                });
            }
            s.mark_known(&[node]);
            s.schedule_list();
        }
        EventKind::Deleted { path, .. } => {
            s.files.remove(&path);
        }
        EventKind::Transferred { path, to, size, .. } => {
            let known = s.files.patch(&path, |f| {
                f.size = size;
                if !f.nodes.contains(&to) {
                    f.nodes.push(to.clone());
                }
                set_node_state(f, &to, FileState::InSync);
            });
            if !known {
                s.schedule_list();
            }
            s.mark_known(&[to]);
        }
        EventKind::Conflict { path, .. } => {
            s.files.conflicts.insert(path);
            s.schedule_list();
        }
        EventKind::Locked { path, owner, .. } => {
            s.files.patch(&path, |f| f.locked_by = Some(owner));
        }
        EventKind::Unlocked { path, .. } => {
            s.files.patch(&path, |f| {
                f.locked_by = None;
                f.held = 0;
            });
        }
        EventKind::Held { path, .. } => {
            s.files.patch(&path, |f| f.held += 1);
        }
        EventKind::Released { path, .. } => {
            s.files.patch(&path, |f| f.held = f.held.saturating_sub(1));
        }
        // Counted at once; the node list (asked a moment later) has the
        // last word, as a peer may have another connection still up.
        EventKind::NodeUp { name } => {
            s.known_nodes.insert(name, true);
            s.nodes_due_ns.get_or_insert(s.now_ns + 2 * DEBOUNCE_NS);
        }
        EventKind::NodeDown { name } => {
            s.known_nodes.insert(name, false);
            s.nodes_due_ns.get_or_insert(s.now_ns + 2 * DEBOUNCE_NS);
        }
        EventKind::ClientConnected { .. } | EventKind::ClientDisconnected { .. } => {}
        // The table's state column comes from the next reload.
        EventKind::ApplyFailed { .. }
        | EventKind::ApplyRecovered { .. }
        | EventKind::Unwatched { .. } => {}
    }
    s.settle();
}

/// Sets `node`'s state for the file, adding it when missing.
fn set_node_state(f: &mut ListedFile, node: &str, state: FileState) {
    match f.states.iter_mut().find(|s| s.node == node) {
        Some(s) => s.state = state,
        None => f.states.push(NodeFileState {
            node: node.to_string(),
            state,
        }),
    }
}

fn is_ctrl_c(k: &KeyEvent) -> bool {
    k.modifiers.contains(KeyModifiers::CONTROL) && matches!(k.code, KeyCode::Char('c' | 'C'))
}

fn on_key(s: &mut AppState, k: KeyEvent) -> Vec<Effect> {
    if k.kind == KeyEventKind::Release {
        return Vec::new();
    }
    if is_ctrl_c(&k) {
        return vec![Effect::Quit];
    }
    match std::mem::replace(&mut s.mode, Mode::Normal) {
        Mode::Normal => match keys::lookup(s.view, &k) {
            Some(a) => on_action(s, a, &k),
            None => Vec::new(),
        },
        Mode::Help => Vec::new(),
        Mode::Filter => {
            match k.code {
                KeyCode::Enter => {}
                KeyCode::Esc => s.files.set_filter(""),
                KeyCode::Backspace => {
                    let mut f = s.files.filter().to_string();
                    f.pop();
                    s.files.set_filter(&f);
                    s.mode = Mode::Filter;
                }
                KeyCode::Up | KeyCode::Down | KeyCode::PageUp | KeyCode::PageDown => {
                    s.mode = Mode::Filter;
                    let a = keys::lookup(View::Files, &k);
                    return a.map(|a| on_action(s, a, &k)).unwrap_or_default();
                }
                KeyCode::Char(c) if !k.modifiers.contains(KeyModifiers::CONTROL) => {
                    let f = format!("{}{c}", s.files.filter());
                    s.files.set_filter(&f);
                    s.mode = Mode::Filter;
                }
                _ => s.mode = Mode::Filter,
            }
            s.settle();
            Vec::new()
        }
        Mode::Command(mut input) => match k.code {
            KeyCode::Enter => run_command(s, &input),
            KeyCode::Esc => Vec::new(),
            KeyCode::Backspace => {
                if input.pop().is_some() {
                    s.mode = Mode::Command(input);
                }
                Vec::new()
            }
            KeyCode::Char(c) if !k.modifiers.contains(KeyModifiers::CONTROL) => {
                input.push(c);
                s.mode = Mode::Command(input);
                Vec::new()
            }
            _ => {
                s.mode = Mode::Command(input);
                Vec::new()
            }
        },
        Mode::FetchPrompt { path, mut input } => match k.code {
            KeyCode::Enter => {
                let dest = if input.trim().is_empty() {
                    s.cwd.clone()
                } else {
                    PathBuf::from(input.trim())
                };
                s.fetch(path, dest, false)
            }
            KeyCode::Esc => Vec::new(),
            KeyCode::Backspace => {
                input.pop();
                s.mode = Mode::FetchPrompt { path, input };
                Vec::new()
            }
            KeyCode::Char('u') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                s.mode = Mode::FetchPrompt {
                    path,
                    input: String::new(),
                };
                Vec::new()
            }
            KeyCode::Char(c) if !k.modifiers.contains(KeyModifiers::CONTROL) => {
                input.push(c);
                s.mode = Mode::FetchPrompt { path, input };
                Vec::new()
            }
            _ => {
                s.mode = Mode::FetchPrompt { path, input };
                Vec::new()
            }
        },
        Mode::Discover(mut p) => {
            let len = match &p.files {
                Some(Ok(v)) => v.len(),
                _ => 0,
            };
            let page = discover_rows(s);
            match k.code {
                KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q') => return Vec::new(),
                KeyCode::Up | KeyCode::Char('k') => p.scroll = p.scroll.saturating_sub(1),
                KeyCode::Down | KeyCode::Char('j') => p.scroll += 1,
                KeyCode::PageUp => p.scroll = p.scroll.saturating_sub(page),
                KeyCode::PageDown => p.scroll += page,
                KeyCode::Home | KeyCode::Char('g') => p.scroll = 0,
                KeyCode::End | KeyCode::Char('G') => p.scroll = len,
                _ => {}
            }
            p.scroll = p.scroll.min(len.saturating_sub(page));
            s.mode = Mode::Discover(p);
            Vec::new()
        }
    }
}

fn discover_rows(s: &AppState) -> usize {
    crate::ui::nodes::discover_rows(Rect::new(0, 0, s.size.0, s.size.1)).max(1)
}

fn move_selection(s: &mut AppState, delta: isize) {
    match s.view {
        View::Files => {
            s.files.move_by(delta);
            s.settle();
        }
        View::Cache => {
            let len = s.cache.as_ref().map_or(0, |c| c.entries.len());
            s.cache_sel = s
                .cache_sel
                .saturating_add_signed(delta)
                .min(len.saturating_sub(1));
        }
        View::Nodes => {
            s.nodes_sel = s
                .nodes_sel
                .saturating_add_signed(delta)
                .min(s.nodes.len().saturating_sub(1));
        }
    }
}

fn on_action(s: &mut AppState, a: Action, k: &KeyEvent) -> Vec<Effect> {
    let mut fx = Vec::new();
    let page = s.page() as isize;
    match a {
        Action::Quit => fx.push(Effect::Quit),
        Action::Help => s.mode = Mode::Help,
        Action::NextView => {
            let v = View::ALL[(s.view.index() + 1) % View::ALL.len()];
            s.set_view(v, &mut fx);
        }
        Action::PrevView => {
            let v = View::ALL[(s.view.index() + View::ALL.len() - 1) % View::ALL.len()];
            s.set_view(v, &mut fx);
        }
        Action::ViewByNumber => {
            if let KeyCode::Char(c) = k.code
                && let Some(v) = c
                    .to_digit(10)
                    .and_then(|d| View::ALL.get((d as usize).wrapping_sub(1)))
            {
                s.set_view(*v, &mut fx);
            }
        }
        Action::Refresh => {
            s.refresh_view(true, &mut fx);
            if fx.is_empty() && !s.is_up() {
                return s.not_connected();
            }
        }
        Action::Up => move_selection(s, -1),
        Action::Down => move_selection(s, 1),
        Action::PageUp => move_selection(s, -page),
        Action::PageDown => move_selection(s, page),
        Action::Home => move_selection(s, isize::MIN / 2),
        Action::End => move_selection(s, isize::MAX / 2),
        Action::Filter => s.mode = Mode::Filter,
        Action::Clear => {
            s.files.set_filter("");
            s.status = None;
            s.settle();
        }
        Action::Sort => {
            let next = s.files.sort().next();
            s.files.set_sort(next);
            s.settle();
        }
        Action::Lock => match s.files.selected() {
            Some(f) => return s.lock(f.path.clone()),
            None => s.set_status(Level::Error, "no file selected"),
        },
        Action::LockWait => match s.files.selected() {
            Some(f) => return s.lock_wait(f.path.clone()),
            None => s.set_status(Level::Error, "no file selected"),
        },
        Action::Unlock => match s.files.selected() {
            Some(f) => return s.unlock(f.path.clone(), false),
            None => s.set_status(Level::Error, "no file selected"),
        },
        Action::Fetch => match s.files.selected() {
            Some(f) => {
                s.mode = Mode::FetchPrompt {
                    path: f.path.clone(),
                    input: s.cwd.display().to_string(),
                }
            }
            None => s.set_status(Level::Error, "no file selected"),
        },
        Action::Command => s.mode = Mode::Command(String::new()),
        Action::FeedOlder => s.feed.scroll_by(1),
        Action::FeedNewer => s.feed.scroll_by(-1),
        Action::Open => {
            if let Some(n) = s.nodes.get(s.nodes_sel) {
                let node = n.name.clone();
                if !s.is_up() {
                    return s.not_connected();
                }
                s.mode = Mode::Discover(DiscoverPopup {
                    node: node.clone(),
                    files: None,
                    scroll: 0,
                });
                fx.push(Effect::Discover(node));
            }
        }
    }
    fx
}

/// Runs a command line (`lock 3`, `unlock 3`, `fetch NAME [DIR] [--force]`,
/// `list`).
fn run_command(s: &mut AppState, line: &str) -> Vec<Effect> {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    // `--force` anywhere in a fetch: replace a file already there.
    let force_fetch = words.first() == Some(&"fetch") && words.contains(&"--force");
    if force_fetch {
        words.retain(|w| *w != "--force");
    }
    let usage = || {
        let cmds: Vec<&str> = keys::COMMANDS.iter().map(|(c, _)| *c).collect();
        format!("commands: {}", cmds.join(", "))
    };
    let target = |s: &AppState, w: &str| -> Result<RelPath, String> {
        match w.parse::<usize>() {
            Ok(n) => s.path_at(n),
            Err(_) => RelPath::new(w).map_err(|e| format!("invalid path {w:?}: {e}")),
        }
    };
    let result = match words.as_slice() {
        [] => return Vec::new(),
        ["lock", t] => target(s, t).map(|p| s.lock(p)),
        ["lock", "--wait" | "-w" | "wait", t] | ["lock", t, "--wait" | "-w" | "wait"] => {
            target(s, t).map(|p| s.lock_wait(p))
        }
        ["unlock", t] => target(s, t).map(|p| s.unlock(p, false)),
        ["unlock", t, "--force" | "-f" | "force"] | ["unlock", "--force" | "-f", t] => {
            target(s, t).map(|p| s.unlock(p, true))
        }
        ["fetch", t] => target(s, t).map(|p| {
            let cwd = s.cwd.clone();
            s.fetch(p, cwd, force_fetch)
        }),
        ["fetch", t, dir] => target(s, t).map(|p| s.fetch(p, PathBuf::from(dir), force_fetch)),
        ["list"] => {
            let mut fx = Vec::new();
            if s.is_up() {
                s.set_status(Level::Info, "reloading the file list…");
                s.request_list(&mut fx);
                Ok(fx)
            } else {
                Ok(s.not_connected())
            }
        }
        ["quit" | "q"] => Ok(vec![Effect::Quit]),
        ["help"] => {
            s.mode = Mode::Help;
            Ok(Vec::new())
        }
        [cmd, ..] => Err(format!("unknown command {cmd:?}; {}", usage())),
    };
    result.unwrap_or_else(|e| {
        s.set_status(Level::Error, e);
        Vec::new()
    })
}

fn on_mouse(s: &mut AppState, m: MouseEvent) {
    let at = Position::new(m.column, m.row);
    let areas = s.areas();
    let over_feed = areas.feed.is_some_and(|f| f.contains(at));
    let delta = match m.kind {
        MouseEventKind::ScrollDown => WHEEL_ROWS as isize,
        MouseEventKind::ScrollUp => -(WHEEL_ROWS as isize),
        MouseEventKind::Down(MouseButton::Left) => {
            // A click on a row of the table selects it.
            let main = areas.main;
            if s.mode == Mode::Normal && s.view == View::Files && main.contains(at) {
                let first_row = main.y + 2; // border + header
                if m.row >= first_row && m.row < main.bottom().saturating_sub(1) {
                    let h = s.table_height();
                    let off = visible_offset(
                        s.files.offset(),
                        s.files.selected_pos(),
                        s.files.view_len(),
                        h,
                    );
                    let pos = off + usize::from(m.row - first_row);
                    if pos < s.files.view_len() {
                        s.files.select(pos);
                        s.settle();
                    }
                }
            }
            return;
        }
        _ => return,
    };
    match &mut s.mode {
        Mode::Discover(p) => {
            let len = match &p.files {
                Some(Ok(v)) => v.len(),
                _ => 0,
            };
            let page = crate::ui::nodes::discover_rows(Rect::new(0, 0, s.size.0, s.size.1));
            p.scroll = p
                .scroll
                .saturating_add_signed(delta)
                .min(len.saturating_sub(page));
        }
        Mode::Help => {}
        _ if over_feed => s.feed.scroll_by(delta.signum()),
        _ => move_selection(s, delta),
    }
}
