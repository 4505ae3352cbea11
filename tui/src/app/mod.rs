//! The terminal UI's state and its pure update function.
//!
//! Everything that happens (a key, a feed event, an answer from the node, a
//! clock tick) arrives as a [`Msg`]; [`update`] changes the [`AppState`] and
//! returns the [`Effect`]s to carry out (requests to the node, quitting).
//! No I/O and no clock here: times come in the messages, so every behaviour
//! can be tested without a terminal or a node. [`crate::ui_main`] runs the
//! effects and feeds their results back; [`crate::ui`] draws the state.
//!
//! This module holds the state and `update`, which hands each message to
//! the module that owns it: `msg` (the messages and effects), `input`
//! (keys, mouse) with `line_edit` (every text box) and `command` (the
//! command line and the requests to the node), `fetch` (fetching to this
//! machine: folder, overwrite question, cancel, rate), `events` (the
//! node's feed), `schedule` (when to ask the node again), `conflicts` (the
//! Conflicts view's list, restore and discard, and the questions before
//! them), `detail` (one file's detail pane), `versions` (restoring a kept
//! version from the pane, after a question), and the state's parts
//! [`FileTable`] (`table`, its rows held compactly in [`Rows`] (`rows`),
//! their [`RowState`] in `row_state`) and [`Feed`] (`feed`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use ratatui::layout::Rect;
use tandem_common::RelPath;
use tandem_common::proto::{
    CacheReport, ConflictCopy, FeedCursor, HeldChange, KeptVersion, LockInfo, NodeStatus,
};

mod command;
mod conflicts;
mod detail;
mod events;
mod feed;
mod fetch;
mod input;
mod line_edit;
mod mirror;
mod msg;
mod row_state;
mod rows;
mod schedule;
mod table;
mod versions;

pub use feed::{FEED_CAP, Feed, FeedLine};
pub use fetch::{FetchError, OverwriteQuestion, RATE_WINDOW_NS, RateMeter, Saved, fetch_dest};
pub use input::WHEEL_ROWS;
pub use msg::{Effect, Msg};
pub use row_state::RowState;
pub use rows::{Holders, Rows};
pub use schedule::{DEBOUNCE_NS, RECONNECT_NS, REFRESH_NS};
pub use table::{FileTable, SortKey, visible_offset};
pub use versions::RestoreError;

pub use crate::transfer::Wanted;
use events::{on_event, on_missed, on_subscribed};
use input::{on_key, on_mouse};
use schedule::{ListRefresh, ReportRefresh, on_tick};

/// Clock offsets beyond this are flagged.
pub const SKEW_WARN_MS: i64 = 1000;

/// The tabs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The merged file table and the feed.
    Files,
    /// The node's cache.
    Cache,
    /// The cluster's nodes.
    Nodes,
    /// The conflict copies every node keeps.
    Conflicts,
}

impl View {
    /// Every tab, in order.
    pub const ALL: [View; 4] = [View::Files, View::Cache, View::Nodes, View::Conflicts];

    /// Tab title.
    pub fn title(self) -> &'static str {
        match self {
            View::Files => "Files",
            View::Cache => "Cache",
            View::Nodes => "Nodes",
            View::Conflicts => "Conflicts",
        }
    }

    fn index(self) -> usize {
        match self {
            View::Files => 0,
            View::Cache => 1,
            View::Nodes => 2,
            View::Conflicts => 3,
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
    /// Keys are commands (see [`crate::keys::BINDINGS`]).
    Normal,
    /// Editing the filter (`/`).
    Filter,
    /// Typing a command (`:`).
    Command(String),
    /// Asking where to fetch `what` to.
    FetchPrompt {
        /// The file or conflict copy.
        what: Wanted,
        /// The destination directory typed so far.
        input: String,
    },
    /// Asking whether a fetch may replace the file already there.
    Overwrite(OverwriteQuestion),
    /// The help overlay.
    Help,
    /// A node's own files (Enter on the Nodes view).
    Discover(DiscoverPopup),
    /// A question before an action that changes other people's work.
    Confirm(Confirm),
    /// One file in detail (Enter on the Files view).
    Detail(DetailPane),
}

/// What the detail pane shows beyond the table's row: the lock with its
/// queue, the changes held back, the conflict copies of the file and the
/// versions of it that nodes kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDetail {
    /// The lock, if the file is locked.
    pub lock: Option<LockInfo>,
    /// Changes held back by the lock, on any node.
    pub held: Vec<HeldChange>,
    /// Kept conflict copies of this file, on any node.
    pub conflicts: Vec<ConflictCopy>,
    /// Nodes that did not say which conflict copies they keep.
    pub unanswered: Vec<String>,
    /// Versions of the file that nodes kept when a peer's change replaced
    /// or deleted it (of the files under it too, for a path that was a
    /// folder), newest kept first.
    pub versions: Vec<KeptVersion>,
    /// Nodes that did not say which versions they keep, with why.
    pub versions_unanswered: Vec<String>,
}

/// A line of the detail pane that can be selected: the conflict copies
/// come first, then the kept versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetailItem<'a> {
    /// A conflict copy.
    Copy(&'a ConflictCopy),
    /// A kept version.
    Version(&'a KeptVersion),
}

impl FileDetail {
    /// Lines the selection moves over: the copies, then the versions.
    pub fn items(&self) -> usize {
        self.conflicts.len() + self.versions.len()
    }

    /// Selectable line `i`.
    pub fn item(&self, i: usize) -> Option<DetailItem<'_>> {
        match i.checked_sub(self.conflicts.len()) {
            None => self.conflicts.get(i).map(DetailItem::Copy),
            Some(v) => self.versions.get(v).map(DetailItem::Version),
        }
    }
}

/// The detail pane of one file (or of a path the table does not have: a
/// file deleted everywhere, opened with `:versions PATH`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetailPane {
    /// The file.
    pub path: RelPath,
    /// `None` while loading.
    pub detail: Option<Result<FileDetail, String>>,
    /// Selected line: a conflict copy, or (after them) a kept version.
    pub sel: usize,
    /// A load is under way.
    loading: bool,
    /// Load again at this time (ns): the feed said the file changed.
    reload_due_ns: Option<i64>,
}

/// An action waiting for a yes (`y`); any other key cancels it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirm {
    /// What will happen, as a question.
    pub question: String,
    /// The status line while it is under way.
    pub doing: String,
    /// The effects that do it.
    pub yes: Vec<Effect>,
}

/// The popup listing one node's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverPopup {
    /// The node.
    pub node: String,
    /// `None` while loading. Rows are in the node's order (its slots: none
    /// is ever removed).
    pub files: Option<Result<Rows, String>>,
    /// First row shown.
    pub scroll: usize,
}

impl DiscoverPopup {
    /// Rows it lists (none while loading or after an error).
    fn listed(&self) -> usize {
        match &self.files {
            Some(Ok(v)) => v.len(),
            _ => 0,
        }
    }
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
    /// The file or conflict copy.
    pub what: Wanted,
    /// Destination directory.
    pub dest: PathBuf,
    /// Bytes received.
    pub done: u64,
    /// Bytes expected (0 until the node answered).
    pub total: u64,
    /// The serving node, once known.
    pub from: Option<String>,
    /// The rate, from the progress so far.
    pub meter: RateMeter,
    /// Esc was pressed: stopping.
    pub cancelling: bool,
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
    /// No reconnect attempt before this.
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
    /// When to reload the table.
    list_refresh: ListRefresh,
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
    /// The node whose cache is shown, when not the connected one.
    pub cache_of: Option<String>,
    /// Selected cache entry.
    pub cache_sel: usize,
    /// When to ask for the cache report again.
    cache_refresh: ReportRefresh,
    /// The last node list (empty until loaded).
    pub nodes: Vec<NodeStatus>,
    /// Why the node list is missing, if it is.
    pub nodes_error: Option<String>,
    /// Selected node.
    pub nodes_sel: usize,
    /// When to ask for the node list again.
    nodes_refresh: ReportRefresh,
    /// The conflict copies every node keeps (newest first), and the nodes
    /// that did not say; `None` until loaded.
    pub conflicts: Option<(Vec<ConflictCopy>, Vec<String>)>,
    /// Why the conflict list is missing, if it is.
    pub conflicts_error: Option<String>,
    /// Selected conflict copy.
    pub conflicts_sel: usize,
    /// When to ask for the conflict list again.
    conflicts_refresh: ReportRefresh,
    /// Nodes known up (true) or down (false), from the node list, the feed
    /// and the table's replicas.
    pub known_nodes: BTreeMap<String, bool>,
    /// The node a switch was meant to reach (by name), until it answers.
    pub switching_to: Option<String>,
    /// The status line.
    pub status: Option<Status>,
    /// Lines the help overlay is scrolled by (on screens too short for it).
    pub help_scroll: u16,
    /// The fetch under way.
    pub fetch: Option<FetchProgress>,
    /// Terminal size (columns, rows).
    pub size: (u16, u16),
    /// The latest time seen (ns).
    pub now_ns: i64,
    /// How times are shown.
    pub zone: Zone,
    /// The working directory: where fetches go until one goes elsewhere.
    pub cwd: PathBuf,
    /// The folder the last fetch went to (the default for the next one).
    pub last_fetch_folder: Option<PathBuf>,
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
            list_refresh: ListRefresh::default(),
            feed: Feed::default(),
            cursor: None,
            resumed_from: None,
            cache: None,
            cache_error: None,
            cache_of: None,
            cache_sel: 0,
            cache_refresh: ReportRefresh::default(),
            nodes: Vec::new(),
            nodes_error: None,
            nodes_sel: 0,
            nodes_refresh: ReportRefresh::default(),
            conflicts: None,
            conflicts_error: None,
            conflicts_sel: 0,
            conflicts_refresh: ReportRefresh::default(),
            known_nodes: BTreeMap::new(),
            switching_to: None,
            status: None,
            help_scroll: 0,
            fetch: None,
            size,
            now_ns,
            zone,
            cwd,
            last_fetch_folder: None,
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
        self.feed.note(self.now_ns, text.into());
    }

    /// Keeps the table's selection on screen after anything moved it.
    fn settle(&mut self) {
        let h = self.table_height();
        self.files.settle(h);
    }

    /// Counts `nodes` as up unless already known (a replica is proof of
    /// life; the node list and the feed have the last word).
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
        Msg::Mouse(m) => return on_mouse(s, m),
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
            // An address a far node gave may reach another node from here.
            match s.switching_to.take() {
                Some(want) if want != node_name => s.set_status(
                    Level::Error,
                    format!(
                        "{} answered as {node_name}, not {want}: from here that address reaches another node; use :connect HOST:PORT with {want}'s address",
                        s.node_addr
                    ),
                ),
                Some(_) => s.set_status(Level::Ok, format!("connected to {node_name}")),
                None => {}
            }
            s.resumed_from = s.cursor;
            fx.push(Effect::Subscribe(s.cursor));
            s.refresh_after_connect(&mut fx);
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
            s.abandon_requests();
        }
        Msg::Subscribed(Ok(epoch)) => on_subscribed(s, epoch),
        Msg::Subscribed(Err(e)) => {
            s.set_status(Level::Error, format!("cannot follow the feed: {e}"))
        }
        Msg::Event(e) => on_event(s, e),
        Msg::Missed {
            epoch,
            from,
            to,
            now,
        } => on_missed(s, epoch, from, to, now),
        Msg::ListLoaded { result, now } => {
            s.now_ns = s.now_ns.max(now);
            s.list_answered();
            match result {
                Ok(rows) => {
                    for h in rows.all_holders() {
                        s.mark_known(&h.nodes);
                    }
                    s.files.replace_all(rows);
                    s.settle();
                    s.list_loaded_ns = Some(now);
                    s.list_error = None;
                    if s.take_list_dirty() {
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
            s.cache_refresh.answered();
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
            s.nodes_refresh.answered();
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
        Msg::ConflictsLoaded(r) => s.conflicts_loaded(r),
        Msg::ConflictResolved(r) => s.conflict_resolved(r, &mut fx),
        Msg::VersionRestored { node, path, result } => s.version_restored(node, path, result),
        Msg::Mirrored { revert, result } => s.mirrored(revert, result),
        Msg::DetailLoaded { path, result } => s.detail_loaded(path, result),
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
        Msg::FetchStarted { total, from, now } => fetch::on_started(s, total, from, now),
        Msg::FetchProgress { done, now } => fetch::on_progress(s, done, now),
        Msg::FetchDone(r) => fetch::on_done(s, r),
    }
    fx
}
