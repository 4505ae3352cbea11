//! The UI's vocabulary with the world outside: every [`Msg`] that can
//! happen to it, and every [`Effect`] it asks [`crate::ui_main`] to carry
//! out. Both are plain data, so tests can script and check them.

use std::path::PathBuf;

use crossterm::event::{KeyEvent, MouseEvent};
use tandem_common::RelPath;
use tandem_common::proto::{
    CacheReport, ConflictAction, ConflictCopy, ConflictResolution, Event, FeedCursor, MirrorReport,
    NodeStatus, VersionRestoration,
};

use super::Wanted;
use super::{FetchError, RestoreError, Rows, Saved};

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
        result: Result<Rows, String>,
        /// Now.
        now: i64,
    },
    /// The cache report arrived.
    CacheLoaded(Result<CacheReport, String>),
    /// The node list arrived.
    NodesLoaded(Result<Vec<NodeStatus>, String>),
    /// The conflict list arrived: the copies and the nodes that did not
    /// answer, or the error.
    ConflictsLoaded(Result<(Vec<ConflictCopy>, Vec<String>), String>),
    /// A conflict copy was restored or discarded, or the error.
    ConflictResolved(Result<ConflictResolution, String>),
    /// `:override` / `:revert` came back.
    Mirrored {
        /// `:revert` (else `:override`).
        revert: bool,
        /// What the node did, or why not.
        result: Result<MirrorReport, String>,
    },
    /// A kept version was restored, or why not.
    VersionRestored {
        /// The node asked to restore it (the one keeping it).
        node: String,
        /// The file.
        path: RelPath,
        /// What the node did, or why not.
        result: Result<VersionRestoration, RestoreError>,
    },
    /// The detail of one file arrived.
    DetailLoaded {
        /// The file.
        path: RelPath,
        /// Lock, held changes, conflict copies and kept versions, or the
        /// error.
        result: Result<super::FileDetail, String>,
    },
    /// A node's own files arrived.
    Discovered {
        /// The node.
        node: String,
        /// Rows, or the error.
        result: Result<Rows, String>,
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
        /// Now (the rate counts from here).
        now: i64,
    },
    /// Bytes of the fetch received so far.
    FetchProgress {
        /// Bytes received.
        done: u64,
        /// Now.
        now: i64,
    },
    /// The fetch ended: what it saved, or why not.
    FetchDone(Result<Saved, FetchError>),
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
    /// Fetch another node's cache report.
    RefreshCacheOf(String),
    /// Talk to the node at this address from now on.
    SwitchNode(String),
    /// Fetch the node list.
    RefreshNodes,
    /// Fetch every node's conflict copies.
    RefreshConflicts,
    /// Restore or discard a conflict copy.
    ResolveConflict {
        /// The node that keeps it.
        node: String,
        /// The copy.
        id: String,
        /// What to do.
        action: ConflictAction,
    },
    /// Make a kept version the current one again.
    RestoreVersion {
        /// The node that keeps it.
        node: String,
        /// The version ([`KeptVersion::id`](tandem_common::proto::KeptVersion::id)).
        id: String,
        /// The file it is a version of (for the words of the result).
        path: RelPath,
    },
    /// `:override` (`revert` false) or `:revert` on the connected node.
    Mirror {
        /// `:revert` (else `:override`).
        revert: bool,
        /// Under this path only.
        path: Option<RelPath>,
    },
    /// Load what the detail pane shows of one file.
    LoadDetail(RelPath),
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
        /// The file or conflict copy.
        what: Wanted,
        /// The directory (with the file's own folders unless `--flat`;
        /// made if missing).
        dest: PathBuf,
        /// Replace a file of that name in the directory (`:fetch … --force`,
        /// or `y` when asked).
        force: bool,
    },
    /// Stop the fetch under way, removing what it wrote.
    CancelFetch,
    /// Leave.
    Quit,
}
