//! The core: one thread that owns the index and the store and makes every
//! decision. Watcher hints, client requests and (later) peer messages reach
//! it through one channel, so decisions happen in a single obvious order and
//! nothing else needs a lock.
//!
//! It runs on its own OS thread rather than a tokio task because SQLite
//! commits and file hashing block; async callers talk to it through
//! [`CoreHandle`] and get answers on oneshot channels.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use tandem_common::display::human_size;
use tandem_common::proto::{ApiError, EventKind, FileSummary, ListedFile};
use tandem_common::{EntryKind, FileEntry, NodeId, RelPath, VersionVector};
use tokio::sync::{Semaphore, oneshot, watch};

use crate::index::{ChangeKind, Index};
use crate::peer::{Links, MAX_FILES_PER_REQUEST, SMALL_FILE_MAX};
use crate::planner::{self, Decision};
use crate::scan::{self, HashError, Seen};
use crate::store::{Batch, Store, Wanted};
use crate::transfer::{self, BlockSource};
use crate::watch::{Hint, WatchMsg};

mod locking;
pub use locking::LockMsg;

/// Transfers running at once.
const MAX_TRANSFERS: usize = 16;
/// Block lists being asked for at once. Bounded because a node catching up
/// may want thousands of large files: their lists (up to 256 KiB per GiB)
/// would otherwise all be queued on the peer's link at the same time.
const MAX_LIST_FETCHES: usize = 16;
/// Bytes of remote blocks in flight across all transfers, in KiB.
const BUDGET_KIB: usize = 32 * 1024;

/// How long a path must be quiet after a write without a close before it is
/// looked at (the writer is probably still busy).
const SETTLE: Duration = Duration::from_millis(100);
/// Coalescing window for hints that need no settling (closes, renames,
/// deletes): a burst such as `rm -r` lands in one batch.
const QUICK: Duration = Duration::from_millis(3);
/// A full scan logs each change only when there are at most this many.
const LOG_EACH_LIMIT: usize = 20;
/// Messages handled per pass before the core acts and commits.
const DRAIN_LIMIT: usize = 1024;

/// Messages to the core.
pub enum CoreMsg {
    /// From the filesystem watcher.
    Watch(WatchMsg),
    /// The file table, for a client.
    List(oneshot::Sender<Vec<ListedFile>>),
    /// This node's files for a merged table.
    Summary(oneshot::Sender<Vec<FileSummary>>),
    /// This node's view of one file.
    SummaryOf(RelPath, oneshot::Sender<Option<FileSummary>>),
    /// Number of live files and their bytes.
    Counts(oneshot::Sender<(u64, u64)>),
    /// A verified upload to put in place as a local change.
    Put {
        /// Where.
        path: RelPath,
        /// The verified temp file.
        tmp: PathBuf,
        /// mtime to give it.
        mtime_ns: i64,
        /// Permission bits.
        mode: u32,
        /// Who uploaded it (for the log).
        who: String,
        /// Ok or why not.
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    /// A link to a peer came up; answers the highest of its sequence
    /// numbers already applied here.
    PeerUp {
        /// The peer.
        peer: NodeId,
        /// Its name.
        name: String,
        /// Where to answer.
        reply: oneshot::Sender<u64>,
    },
    /// A link to a peer went down.
    PeerDown(NodeId),
    /// Entries changed after `since`, for a peer.
    EntriesSince {
        /// Sequence already sent.
        since: u64,
        /// Batch size limit.
        max_bytes: usize,
        /// The peer asking (entries taken unchanged from it are skipped).
        peer: NodeId,
        /// Where to answer: entries, and the last sequence covered.
        reply: oneshot::Sender<(Vec<(u64, FileEntry)>, u64)>,
    },
    /// Entries announced by a peer; answered once decided (backpressure).
    RemoteIndex {
        /// The peer.
        peer: NodeId,
        /// (peer's sequence, entry).
        entries: Vec<(u64, FileEntry)>,
        /// Answered when processed.
        reply: oneshot::Sender<()>,
    },
    /// Our current entries at some paths, with their disk paths, for
    /// serving blocks and files (in the order asked).
    Entries(
        Vec<RelPath>,
        oneshot::Sender<Vec<Option<(PathBuf, FileEntry)>>>,
    ),
    /// A transfer (one file) or a batch (several small files) finished:
    /// (path, version it built, outcome) per file.
    TransfersDone(
        Vec<(
            RelPath,
            VersionVector,
            Result<transfer::Done, transfer::Failure>,
        )>,
    ),
    /// The block list of a wanted version that arrived without one was
    /// fetched from a peer (or could not be).
    BlockList {
        /// Which file.
        path: RelPath,
        /// The version it is for (a newer one wanted meanwhile ignores it).
        version: VersionVector,
        /// The complete list, or why not.
        result: Result<Vec<tandem_common::ContentHash>, String>,
    },
    /// Lock, identity and held-change requests.
    Lock(locking::LockMsg),
    /// Flush and stop.
    Shutdown,
}

/// A cloneable way for async code to ask the core things.
#[derive(Clone)]
pub struct CoreHandle {
    tx: Sender<CoreMsg>,
}

impl CoreHandle {
    /// Wraps the core's channel.
    pub fn new(tx: Sender<CoreMsg>) -> Self {
        CoreHandle { tx }
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> CoreMsg,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).map_err(|_| ApiError::ShuttingDown)?;
        rx.await.map_err(|_| ApiError::ShuttingDown)
    }

    /// The node's file table, sorted by path.
    pub async fn list(&self) -> Result<Vec<ListedFile>, ApiError> {
        self.ask(CoreMsg::List).await
    }

    /// This node's files for a merged table.
    pub async fn summary(&self) -> Result<Vec<FileSummary>, ApiError> {
        self.ask(CoreMsg::Summary).await
    }

    /// This node's view of one file.
    pub async fn summary_of(&self, path: RelPath) -> Result<Option<FileSummary>, ApiError> {
        self.ask(|reply| CoreMsg::SummaryOf(path, reply)).await
    }

    /// Puts an uploaded file in place.
    pub async fn put(
        &self,
        path: RelPath,
        tmp: PathBuf,
        mtime_ns: i64,
        mode: u32,
        who: String,
    ) -> Result<Result<(), ApiError>, ApiError> {
        self.ask(|reply| CoreMsg::Put {
            path,
            tmp,
            mtime_ns,
            mode,
            who,
            reply,
        })
        .await
    }

    /// Number of live files and their total size.
    pub async fn counts(&self) -> Result<(u64, u64), ApiError> {
        self.ask(CoreMsg::Counts).await
    }

    /// Asks the core to flush and stop.
    pub fn shutdown(&self) {
        let _ = self.tx.send(CoreMsg::Shutdown);
    }

    /// Reports a peer link up; returns its sequence to resume from.
    pub async fn peer_up(&self, peer: NodeId, name: String) -> Result<u64, ApiError> {
        self.ask(|reply| CoreMsg::PeerUp { peer, name, reply })
            .await
    }

    /// Reports a peer link down.
    pub fn peer_down(&self, peer: NodeId) {
        let _ = self.tx.send(CoreMsg::PeerDown(peer));
    }

    /// Entries changed after `since` that `peer` may not have, and the
    /// last sequence covered.
    pub async fn entries_since(
        &self,
        since: u64,
        max_bytes: usize,
        peer: NodeId,
    ) -> Result<(Vec<(u64, FileEntry)>, u64), ApiError> {
        self.ask(|reply| CoreMsg::EntriesSince {
            since,
            max_bytes,
            peer,
            reply,
        })
        .await
    }

    /// Hands a peer's entries to the core; returns once they are decided.
    pub async fn remote_index(
        &self,
        peer: NodeId,
        entries: Vec<(u64, FileEntry)>,
    ) -> Result<(), ApiError> {
        self.ask(|reply| CoreMsg::RemoteIndex {
            peer,
            entries,
            reply,
        })
        .await
    }

    /// Our entry at `path` and where it is on disk.
    pub async fn entry(&self, path: RelPath) -> Result<Option<(PathBuf, FileEntry)>, ApiError> {
        Ok(self.entries(vec![path]).await?.pop().flatten())
    }

    /// Our entries at `paths` and where they are on disk, in that order.
    pub async fn entries(
        &self,
        paths: Vec<RelPath>,
    ) -> Result<Vec<Option<(PathBuf, FileEntry)>>, ApiError> {
        self.ask(|reply| CoreMsg::Entries(paths, reply)).await
    }

    /// A lock/identity request that expects an answer.
    pub async fn ask_lock<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> LockMsg,
    ) -> Result<T, ApiError> {
        self.ask(|tx| CoreMsg::Lock(make(tx))).await
    }

    /// A lock/identity notice (no answer).
    pub fn tell_lock(&self, m: LockMsg) {
        let _ = self.tx.send(CoreMsg::Lock(m));
    }

    /// Asks the core to look at a disk path again.
    pub fn recheck(&self, full: &Path) {
        let _ = self.tx.send(CoreMsg::Watch(WatchMsg::Paths(vec![Hint {
            path: full.to_path_buf(),
            settle: false,
        }])));
    }
}

/// A remote version being fetched. Its entry may lack its block list (a
/// large file's entry travels without one): the list is then completed
/// first, from local content with the same hash or from a peer, and the
/// transfer is planned from the complete list.
struct Need {
    w: Wanted,
    in_flight: bool,
    retry_at: Instant,
    attempts: u32,
    /// Local files this transfer reads blocks from (not deleted meanwhile).
    sources: Vec<RelPath>,
}

/// True when a wanted entry has its whole block list (entries of large
/// files arrive without one; see [`tandem_common::blocklist`]).
fn has_list(e: &FileEntry) -> bool {
    !e.is_live_file() || e.blocks.len() == tandem_common::blocklist::block_count(e.size)
}

/// Everything the core needs from the outside world.
pub struct CoreIo {
    /// Runtime to spawn transfers on.
    pub rt: tokio::runtime::Handle,
    /// Live peer links.
    pub links: Links,
    /// The core's own channel, for transfer results.
    pub tx: Sender<CoreMsg>,
    /// Publishes the latest sequence number to peer links.
    pub seq_tx: watch::Sender<u64>,
    /// The live feed.
    pub events: Arc<crate::events::EventBus>,
    /// Counters.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The core's state.
pub struct Core {
    root: PathBuf,
    state_dir: PathBuf,
    name: String,
    store: Store,
    index: Index,
    /// Paths to look at again, and when.
    pending: HashMap<RelPath, Instant>,
    io: CoreIo,
    /// Peers: highest of their sequence numbers applied here, and name.
    peers: HashMap<NodeId, (u64, String)>,
    peers_dirty: HashSet<NodeId>,
    needed: BTreeMap<RelPath, Need>,
    wanted_dirty: HashSet<RelPath>,
    unwanted: Vec<RelPath>,
    /// Local files in use as block sources, with counts.
    in_use: HashMap<RelPath, usize>,
    /// Remote deletions waiting for a file to stop being a block source.
    deferred: Vec<(NodeId, FileEntry)>,
    budget: Arc<Semaphore>,
    dirs_to_sync: HashSet<PathBuf>,
    /// Transfer tasks running (including superseded ones not yet finished).
    running: usize,
    /// Block list requests running (see [`MAX_LIST_FETCHES`]).
    lists_running: usize,
    locks: crate::locks::LockTable,
    held: crate::locks::HeldQueue,
    identities: HashMap<uuid::Uuid, tandem_common::proto::IdentityRecord>,
    locks_dirty: HashSet<RelPath>,
    identities_dirty: HashSet<uuid::Uuid>,
    held_dirty: bool,
}

impl Core {
    /// Builds the core from an opened store.
    pub fn new(
        root: PathBuf,
        state_dir: PathBuf,
        name: String,
        store: Store,
        io: CoreIo,
    ) -> anyhow::Result<Core> {
        let me = store.node_id()?;
        let records = store.load()?;
        let peers = store
            .peers()?
            .into_iter()
            .map(|(id, seq, name)| (id, (seq, name)))
            .collect();
        let now = Instant::now();
        let needed = store
            .needed()?
            .into_iter()
            .map(|w| {
                let need = Need {
                    w,
                    in_flight: false,
                    retry_at: now,
                    attempts: 0,
                    sources: Vec::new(),
                };
                (need.w.entry.path.clone(), need)
            })
            .collect();
        let locks = store.locks()?;
        let identities = store.identities()?.into_iter().map(|i| (i.id, i)).collect();
        let mut held = crate::locks::HeldQueue::default();
        for h in store.held()? {
            held.hold(h);
        }
        // Leftovers of transfers cut off by a crash: the pending downloads
        // are in the store and start again from scratch.
        let tmp = state_dir.join("tmp");
        if let Ok(rd) = std::fs::read_dir(&tmp) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        std::fs::create_dir_all(&tmp)?;
        Ok(Core {
            root,
            state_dir,
            name,
            index: Index::new(me, records),
            store,
            pending: HashMap::new(),
            io,
            peers,
            peers_dirty: HashSet::new(),
            needed,
            wanted_dirty: HashSet::new(),
            unwanted: Vec::new(),
            in_use: HashMap::new(),
            deferred: Vec::new(),
            budget: Arc::new(Semaphore::new(BUDGET_KIB)),
            dirs_to_sync: HashSet::new(),
            running: 0,
            lists_running: 0,
            locks: crate::locks::LockTable::new(locks, now_ns()),
            held,
            identities,
            locks_dirty: HashSet::new(),
            identities_dirty: HashSet::new(),
            held_dirty: false,
        })
    }

    /// Scans the whole directory, then serves messages until shutdown or
    /// until every sender is gone.
    pub fn run(mut self, rx: Receiver<CoreMsg>) {
        let started = Instant::now();
        let n = self.reconcile(None);
        self.flush();
        if n > 1000 {
            self.index.compact();
        }
        // The start-up scan's temporary buffers are freed now; hand the
        // memory back instead of keeping it for the node's lifetime.
        self.store.release_memory();
        crate::metrics::release_memory();
        tracing::info!(
            "indexed {} in {:.2?}: {} entries, {n} changed since last run",
            self.root.display(),
            started.elapsed(),
            self.index.len()
        );
        let mut stop = false;
        while !stop {
            // Queued downloads only matter for the wake-up time when a
            // transfer slot is free; otherwise a finishing transfer wakes us
            // (waking for them anyway would spin on a due-but-blocked queue).
            let retry = if self.running < MAX_TRANSFERS {
                self.needed
                    .values()
                    .filter(|n| !n.in_flight)
                    .map(|n| n.retry_at)
                    .min()
            } else {
                None
            };
            let timeout = self
                .pending
                .values()
                .copied()
                .chain(retry)
                .min()
                .map(|d| d.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(3600));
            match rx.recv_timeout(timeout) {
                Ok(msg) => {
                    stop = !self.handle(msg);
                    // Take what is already queued (bounded) before acting, so
                    // a burst becomes one decision pass and one commit.
                    for _ in 0..DRAIN_LIMIT {
                        if stop {
                            break;
                        }
                        match rx.try_recv() {
                            Ok(msg) => stop = !self.handle(msg),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stop = true,
            }
            self.process_due();
            if !stop {
                self.start_transfers();
            }
            self.flush();
        }
        self.flush();
        tracing::info!("index saved; core stopped");
    }

    /// Handles one message; false means stop.
    fn handle(&mut self, msg: CoreMsg) -> bool {
        match msg {
            CoreMsg::Shutdown => return false,
            CoreMsg::Watch(WatchMsg::Rescan) => {
                self.reconcile(None);
            }
            CoreMsg::Watch(WatchMsg::Paths(hints)) => {
                let now = Instant::now();
                for h in hints {
                    match RelPath::from_disk(&self.root, &h.path) {
                        Ok(rel) if scan::is_temp_name(&rel) => {}
                        Ok(rel) => {
                            let delay = if h.settle { SETTLE } else { QUICK };
                            self.pending.insert(rel, now + delay);
                        }
                        Err(tandem_common::path::PathError::NotUtf8(p)) => {
                            tracing::warn!("skipping {}: name is not valid UTF-8", p.display());
                        }
                        Err(_) => {}
                    }
                }
            }
            CoreMsg::List(reply) => {
                let _ = reply.send(self.list());
            }
            CoreMsg::Summary(reply) => {
                let _ = reply.send(self.summary());
            }
            CoreMsg::SummaryOf(path, reply) => {
                let _ = reply.send(self.summary_of(&path));
            }
            CoreMsg::Put {
                path,
                tmp,
                mtime_ns,
                mode,
                who,
                reply,
            } => {
                let _ = reply.send(self.put(&path, &tmp, mtime_ns, mode, &who));
            }
            CoreMsg::Counts(reply) => {
                let (mut files, mut bytes) = (0u64, 0u64);
                for r in self.index.records().filter(|r| r.entry.is_live_file()) {
                    files += 1;
                    bytes += r.entry.size;
                }
                let _ = reply.send((files, bytes));
            }
            CoreMsg::PeerUp { peer, name, reply } => {
                self.io
                    .events
                    .emit(EventKind::NodeUp { name: name.clone() });
                let e = self.peers.entry(peer).or_insert((0, name.clone()));
                if e.1 != name {
                    e.1 = name;
                    self.peers_dirty.insert(peer);
                }
                let _ = reply.send(e.0);
                // Pending downloads may now have a source.
                for n in self.needed.values_mut() {
                    n.retry_at = n.retry_at.min(Instant::now());
                }
            }
            CoreMsg::PeerDown(peer) => {
                let name = self.peer_name(peer);
                self.io.events.emit(EventKind::NodeDown { name });
            }
            CoreMsg::EntriesSince {
                since,
                max_bytes,
                peer,
                reply,
            } => {
                let _ = reply.send(self.index.entries_since(since, max_bytes, Some(peer)));
            }
            CoreMsg::RemoteIndex {
                peer,
                entries,
                reply,
            } => {
                self.on_remote_index(peer, entries);
                let _ = reply.send(());
            }
            CoreMsg::Entries(paths, reply) => {
                let r = paths
                    .into_iter()
                    .map(|p| {
                        let e = self.index.get(&p).map(|r| r.entry.clone())?;
                        Some((p.to_disk(&self.root), e))
                    })
                    .collect();
                let _ = reply.send(r);
            }
            CoreMsg::TransfersDone(results) => self.on_transfers_done(results),
            CoreMsg::BlockList {
                path,
                version,
                result,
            } => self.on_block_list(path, version, result),
            CoreMsg::Lock(m) => self.on_lock_msg(m),
        }
        true
    }

    fn list(&self) -> Vec<ListedFile> {
        self.index
            .records()
            .filter(|r| r.entry.is_live_file())
            .map(|r| ListedFile {
                path: r.entry.path.clone(),
                size: r.entry.size,
                mtime_ns: r.entry.mtime_ns,
                hash: r.entry.hash,
                nodes: vec![self.name.clone()],
                locked_by: self
                    .locks
                    .holder(&r.entry.path)
                    .map(|l| l.owner_name.clone()),
                held: self.held.count(&r.entry.path) as u32,
                states: vec![tandem_common::proto::NodeFileState {
                    node: self.name.clone(),
                    state: tandem_common::proto::FileState::InSync,
                }],
            })
            .collect()
    }

    /// Puts an upload in place (replacing what is there by the normal
    /// rules: it becomes a new local version) unless the path is locked.
    fn put(
        &mut self,
        path: &RelPath,
        tmp: &Path,
        mtime_ns: i64,
        mode: u32,
        who: &str,
    ) -> Result<(), ApiError> {
        if let Some(l) = self.locks.holder(path) {
            return Err(ApiError::LockedBy {
                path: path.to_string(),
                owner_name: l.owner_name.clone(),
                owner: l.owner,
                since: tandem_common::display::local_time(l.since_ns),
            });
        }
        let full = path.to_disk(&self.root);
        let io = |e: std::io::Error| ApiError::Other(format!("cannot write {path}: {e}"));
        if !scan::parents_are_dirs(&self.root, path).map_err(io)? {
            return Err(ApiError::Other(format!(
                "{path} is under a symlink or a file here; refusing to write through it"
            )));
        }
        if full.is_dir() {
            return Err(ApiError::Other(format!("{path} is a directory here")));
        }
        std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(mode & 0o7777))
            .map_err(io)?;
        filetime::set_file_mtime(tmp, file_time(mtime_ns)).map_err(io)?;
        // Anything on disk not yet indexed is indexed first, so it is a
        // version that the upload replaces, not something silently lost.
        let _ = self.refresh(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
            self.dirs_to_sync.insert(parent.to_path_buf());
        }
        move_file(tmp, &full).map_err(io)?;
        tracing::info!("{who} put {path}");
        let seen = scan::stat(&full).map_err(io)?;
        self.look_at(path, seen, true);
        Ok(())
    }

    /// This node's view of one path (see [`Core::summary`]).
    fn summary_of(&self, path: &RelPath) -> Option<FileSummary> {
        match self.index.get(path).filter(|r| r.entry.is_live_file()) {
            Some(r) => Some(self.summarise(&r.entry, true)),
            None => self
                .needed
                .get(path)
                .map(|n| self.summarise(&n.w.entry, false)),
        }
    }

    /// This node's files for a merged table: live files, plus files it is
    /// fetching but does not have yet.
    fn summary(&self) -> Vec<FileSummary> {
        let mut out: Vec<FileSummary> = self
            .index
            .records()
            .filter(|r| r.entry.is_live_file())
            .map(|r| self.summarise(&r.entry, true))
            .collect();
        for (p, n) in &self.needed {
            if self.index.get(p).is_none_or(|r| !r.entry.is_live_file()) {
                out.push(self.summarise(&n.w.entry, false));
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    /// One file for a merged table: `present` when it is on disk here, else
    /// the version being fetched.
    fn summarise(&self, e: &FileEntry, present: bool) -> FileSummary {
        FileSummary {
            path: e.path.clone(),
            size: e.size,
            mtime_ns: e.mtime_ns,
            hash: e.hash,
            version: e.version.clone(),
            locked_by: present
                .then(|| self.locks.holder(&e.path).map(|l| l.owner_name.clone()))
                .flatten(),
            held: if present {
                self.held.count(&e.path) as u32
            } else {
                0
            },
            syncing: !present || self.needed.contains_key(&e.path),
            present,
        }
    }

    /// Looks at every pending path whose time has come.
    fn process_due(&mut self) {
        let now = Instant::now();
        let mut due: Vec<RelPath> = self
            .pending
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(p, _)| p.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        for p in &due {
            self.pending.remove(p);
        }
        due.sort();
        let mut covered: Option<RelPath> = None;
        for p in due {
            // A directory rescanned in this batch already covered its children.
            if covered.as_ref().is_some_and(|c| p.is_inside(c)) {
                continue;
            }
            match scan::stat_rel(&self.root, &p) {
                Ok(Seen::Dir { .. }) => {
                    self.reconcile(Some(&p));
                    covered = Some(p);
                }
                Ok(seen) => {
                    self.look_at(&p, seen, true);
                }
                Err(e) => tracing::warn!("cannot read {p}: {e}"),
            }
        }
    }

    /// Re-examines one non-directory path. Returns the number of changes.
    fn look_at(&mut self, p: &RelPath, seen: Seen, log: bool) -> usize {
        if self.hold_local(p, &seen) {
            return 0;
        }
        match seen {
            Seen::Absent => {
                let gone = self.index.observe_missing(p);
                for g in &gone {
                    if log {
                        tracing::info!("deleted {g}");
                    }
                    if self
                        .index
                        .get(g)
                        .is_some_and(|r| r.entry.kind == EntryKind::File)
                    {
                        self.io.events.emit(EventKind::Deleted {
                            path: g.clone(),
                            by: self.name.clone(),
                        });
                    }
                }
                gone.len()
            }
            Seen::Dir { mode } => {
                let c = self.index.observe_dir(p, mode);
                self.log_change(p, c, log)
            }
            Seen::File(st) => {
                if !self.index.needs_hash(p, &st) {
                    return 0;
                }
                match scan::hash_file(&p.to_disk(&self.root)) {
                    Ok((st, h)) => {
                        let c = self.index.observe_file(p, st, &h);
                        self.log_change(p, c, log)
                    }
                    Err(HashError::Unstable) => {
                        self.pending.insert(p.clone(), Instant::now() + SETTLE);
                        0
                    }
                    Err(HashError::Gone) => {
                        self.pending.insert(p.clone(), Instant::now() + QUICK);
                        0
                    }
                    Err(HashError::Io(e)) => {
                        tracing::warn!("cannot read {p}: {e}; will retry when it changes");
                        0
                    }
                }
            }
        }
    }

    fn log_change(&self, p: &RelPath, c: Option<ChangeKind>, log: bool) -> usize {
        let Some(c) = c else { return 0 };
        let (size, dir) = self
            .index
            .get(p)
            .map(|r| (r.entry.size, r.entry.kind == EntryKind::Dir))
            .unwrap_or((0, false));
        let path = p.clone();
        match (c, dir) {
            (_, true) => {}
            (ChangeKind::Added, false) => self.io.events.emit(EventKind::Added { path, size }),
            (ChangeKind::Modified, false) => self.io.events.emit(EventKind::Changed { path, size }),
            (ChangeKind::Deleted, false) => self.io.events.emit(EventKind::Deleted {
                path,
                by: self.name.clone(),
            }),
        }
        if log {
            match (c, dir) {
                (ChangeKind::Added, true) => tracing::info!("added directory {p}"),
                (ChangeKind::Modified, true) => tracing::info!("changed directory {p}"),
                (ChangeKind::Added, false) => tracing::info!("added {p} ({})", human_size(size)),
                (ChangeKind::Modified, false) => {
                    tracing::info!("changed {p} ({})", human_size(size))
                }
                (ChangeKind::Deleted, _) => tracing::info!("deleted {p}"),
            }
        }
        1
    }

    /// Brings the index in line with the disk for the whole tree (`None`) or
    /// one directory and everything under it. Files whose stat matches the
    /// index are not read; the others are hashed in parallel.
    fn reconcile(&mut self, dir: Option<&RelPath>) -> usize {
        let mut changed = 0;
        let base = dir.map_or(self.root.clone(), |d| d.to_disk(&self.root));
        if let Some(d) = dir {
            // The directory itself.
            match scan::stat_rel(&self.root, d) {
                Ok(seen) => changed += self.look_at(d, seen, true),
                Err(e) => tracing::warn!("cannot read {d}: {e}"),
            }
        }
        let seen = scan::walk(&self.root, &base, &self.state_dir);
        let known = match dir {
            None => self.index.live_paths(),
            Some(d) => self.index.live_under(d),
        };
        let present: HashSet<&RelPath> = seen.iter().map(|(p, _)| p).collect();
        let missing: Vec<RelPath> = known.into_iter().filter(|p| !present.contains(p)).collect();

        let to_hash: Vec<&RelPath> = seen
            .iter()
            .filter_map(|(p, s)| match s {
                Seen::File(st)
                    if self.index.needs_hash(p, st) && self.locks.holder(p).is_none() =>
                {
                    Some(p)
                }
                _ => None,
            })
            .collect();
        let locked: Vec<(RelPath, Seen)> = seen
            .iter()
            .filter(|(p, _)| self.locks.holder(p).is_some())
            .cloned()
            .collect();
        for (p, s) in &locked {
            self.hold_local(p, s);
        }
        let log = to_hash.len() + missing.len() <= LOG_EACH_LIMIT;
        let root = &self.root;
        let hashed: Vec<_> = to_hash
            .par_iter()
            .map(|p| (*p, scan::hash_file(&p.to_disk(root))))
            .collect();
        let hashed: Vec<(RelPath, _)> = hashed.into_iter().map(|(p, r)| (p.clone(), r)).collect();
        for (p, s) in &seen {
            if let Seen::Dir { mode } = s {
                let c = self.index.observe_dir(p, *mode);
                changed += self.log_change(p, c, log);
            }
        }
        for (p, r) in hashed {
            match r {
                Ok((st, h)) => {
                    let c = self.index.observe_file(&p, st, &h);
                    changed += self.log_change(&p, c, log);
                }
                Err(HashError::Unstable) => {
                    self.pending.insert(p, Instant::now() + SETTLE);
                }
                Err(HashError::Gone) => {
                    self.pending.insert(p, Instant::now() + QUICK);
                }
                Err(HashError::Io(e)) => tracing::warn!("cannot read {p}: {e}"),
            }
        }
        for p in missing {
            // Already tombstoned as part of a removed parent.
            if self.index.get(&p).is_some_and(|r| r.entry.deleted) {
                continue;
            }
            changed += self.look_at(&p, Seen::Absent, log);
        }
        if !log {
            tracing::info!("{changed} paths changed under {}", base.display());
        }
        changed
    }

    fn flush(&mut self) {
        // Directory entries of renamed-in files first: a crash after the
        // index commit must not find the rename undone.
        for d in self.dirs_to_sync.drain() {
            if let Ok(f) = std::fs::File::open(&d) {
                let _ = f.sync_all();
            }
        }
        let records = self.index.take_dirty();
        let peers: Vec<(NodeId, u64, String)> = self
            .peers_dirty
            .drain()
            .filter_map(|id| self.peers.get(&id).map(|(s, n)| (id, *s, n.clone())))
            .collect();
        let wanted: Vec<&Wanted> = self
            .wanted_dirty
            .drain()
            .filter_map(|p| self.needed.get(&p).map(|n| &n.w))
            .collect();
        let unwanted = std::mem::take(&mut self.unwanted);
        let locks: Vec<&tandem_common::proto::LockRecord> = self
            .locks_dirty
            .drain()
            .filter_map(|p| self.locks.record(&p))
            .collect();
        let identities: Vec<&tandem_common::proto::IdentityRecord> = self
            .identities_dirty
            .drain()
            .filter_map(|id| self.identities.get(&id))
            .collect();
        let held = std::mem::take(&mut self.held_dirty).then(|| self.held.remote());
        let n = records.len();
        let batch = Batch {
            records: &records,
            peers: &peers,
            wanted: &wanted,
            unwanted: &unwanted,
            locks: &locks,
            identities: &identities,
            held: held.as_deref(),
        };
        if let Err(e) = self.store.save_batch(&batch) {
            // Keep running: the disk is the truth, and the next start re-scans.
            tracing::error!("cannot save {n} index entries: {e}");
        }
        let seq = self.index.seq();
        self.io.seq_tx.send_if_modified(|s| {
            let changed = *s != seq;
            *s = seq;
            changed
        });
    }

    fn peer_name(&self, id: NodeId) -> String {
        if id == self.index.me() {
            return self.name.clone();
        }
        self.peers
            .get(&id)
            .map(|(_, n)| n.clone())
            .unwrap_or_else(|| format!("{id:?}"))
    }

    /// Makes sure the index agrees with the disk at `p` before deciding
    /// anything about it: a local change not yet indexed becomes a version
    /// first, so it takes part in the decision instead of being overwritten.
    /// Answers whether every parent of `p` is a directory (or missing), as
    /// `scan::parents_are_dirs` would.
    fn refresh(&mut self, p: &RelPath) -> std::io::Result<bool> {
        let parents_ok = scan::parents_are_dirs(&self.root, p).inspect_err(|e| {
            tracing::warn!("cannot read {p}: {e}");
        })?;
        let seen = match parents_ok {
            true => scan::stat(&p.to_disk(&self.root)),
            false => Ok(Seen::Absent),
        };
        let seen = match seen {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot read {p}: {e}");
                return Ok(parents_ok);
            }
        };
        let rec = self.index.get(p).filter(|r| !r.entry.deleted);
        let stale = match (seen, rec) {
            (Seen::File(st), _) => self.index.needs_hash(p, &st),
            (Seen::Absent, Some(_)) => true,
            (Seen::Absent, None) => false,
            (Seen::Dir { mode }, Some(r)) => r.entry.kind != EntryKind::Dir || r.entry.mode != mode,
            (Seen::Dir { .. }, None) => true,
        };
        if stale {
            self.look_at(p, seen, true);
        }
        Ok(parents_ok)
    }

    fn on_remote_index(&mut self, peer: NodeId, entries: Vec<(u64, FileEntry)>) {
        let Some(max) = entries.iter().map(|(s, _)| *s).max() else {
            return;
        };
        // Live entries first, so a rename's new name can reuse the old
        // file's blocks before the old name is deleted; deletions deepest
        // first, so directories are empty when their turn comes.
        let (mut tombs, lives): (Vec<FileEntry>, Vec<FileEntry>) =
            entries.into_iter().map(|(_, e)| e).partition(|e| e.deleted);
        tombs.sort_by(|a, b| b.path.cmp(&a.path));
        for e in lives.into_iter().chain(tombs) {
            self.on_remote_entry(peer, e);
        }
        let name = self.peer_name(peer);
        let e = self.peers.entry(peer).or_insert((0, name));
        e.0 = e.0.max(max);
        self.peers_dirty.insert(peer);
    }

    fn on_remote_entry(&mut self, peer: NodeId, remote: FileEntry) {
        let path = remote.path.clone();
        // A live file's block list must match its size, or be left out (a
        // large file's list is fetched when needed); anything else is a
        // malformed entry from a broken or hostile peer: ignore it.
        let blocks_ok = if remote.is_live_file() {
            (remote.blocks.is_empty() && tandem_common::blocklist::list_fits(remote.size))
                || remote.blocks.len() == tandem_common::blocklist::block_count(remote.size)
        } else {
            remote.blocks.is_empty() || remote.deleted
        };
        if !blocks_ok {
            tracing::warn!(
                "ignoring a malformed entry for {path} from {}: {} block hashes for {} bytes",
                self.peer_name(peer),
                remote.blocks.len(),
                remote.size
            );
            return;
        }
        if let Some(n) = self.needed.get(&path) {
            match remote.version.compare(&n.w.entry.version) {
                tandem_common::VvOrder::Equal | tandem_common::VvOrder::Before => return,
                _ => {}
            }
        }
        if !self.refresh(&path).unwrap_or(false) {
            tracing::warn!(
                "not applying {path} from {}: a parent directory here is a symlink or a file",
                self.peer_name(peer)
            );
            return;
        }
        let local = self.index.get(&path).map(|r| r.entry.clone());
        let (version, keep_ours_as_conflict, written, losers) =
            match planner::plan(local.as_ref(), &remote) {
                Decision::Ignore => return,
                Decision::Reassert {
                    version,
                    written,
                    losers,
                } => {
                    if self.locks.holder(&path).is_none() {
                        tracing::debug!(
                            "{path}: {} has only seen an older write; re-announcing ours",
                            self.peer_name(peer)
                        );
                        self.index.reassert(&path, version, written, losers);
                    }
                    return;
                }
                Decision::Take {
                    mut version,
                    keep_ours_as_conflict,
                    written,
                    losers,
                    bump,
                } => {
                    if bump {
                        self.index.bump(&mut version);
                    }
                    (version, keep_ours_as_conflict, written, losers)
                }
            };
        if self.hold_remote(peer, &remote) {
            return;
        }
        let origin =
            (version == remote.version && written == remote.written && losers == remote.losers)
                .then_some(peer);
        let mut entry = FileEntry {
            version,
            written,
            losers,
            ..remote.clone()
        };
        // A list left out is the same as that of local content with the same
        // hash (a rename or a copy): take it now, so the transfer's sources
        // are claimed before the old name's deletion in this batch runs.
        self.index.fill_blocks(&mut entry);
        let needs_data = entry.is_live_file()
            && !local
                .as_ref()
                .is_some_and(|l| l.is_live_file() && l.hash == entry.hash);
        if !needs_data && let Some(old) = self.needed.remove(&path) {
            self.release_sources(&old.sources);
            self.unwanted.push(path.clone());
        }
        let res = if entry.deleted {
            self.apply_delete(peer, remote, entry, local, origin)
        } else if entry.kind == EntryKind::Dir {
            self.apply_dir(peer, entry, local, keep_ours_as_conflict, origin)
        } else if !needs_data {
            self.apply_meta(peer, entry, origin)
        } else {
            let sources = self.claim_sources(&entry);
            let need = Need {
                w: Wanted {
                    entry,
                    keep_ours_as_conflict,
                    from: peer,
                    exact: origin.is_some(),
                    based_on: local.map(|l| l.version),
                },
                in_flight: false,
                retry_at: Instant::now(),
                attempts: 0,
                sources,
            };
            self.wanted_dirty.insert(path.clone());
            if let Some(old) = self.needed.insert(path.clone(), need) {
                self.release_sources(&old.sources);
            }
            Ok(())
        };
        if let Err(e) = res {
            tracing::error!("cannot apply {path} from {}: {e}", self.peer_name(peer));
        }
    }

    fn apply_delete(
        &mut self,
        peer: NodeId,
        remote: FileEntry,
        entry: FileEntry,
        local: Option<FileEntry>,
        origin: Option<NodeId>,
    ) -> std::io::Result<()> {
        let full = entry.path.to_disk(&self.root);
        let path = entry.path.clone();
        let mut keep_dir = None;
        if let Some(l) = local.filter(|l| !l.deleted) {
            match l.kind {
                EntryKind::File => {
                    if self.in_use.contains_key(&path) {
                        self.deferred.push((peer, remote));
                        return Ok(());
                    }
                    match std::fs::remove_file(&full) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
                EntryKind::Dir => match std::fs::remove_dir(&full) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
                        if self.deferred.iter().any(|(_, d)| d.path.is_inside(&path)) {
                            // Its files wait to be copied elsewhere (a moved
                            // directory): delete it after them.
                            self.deferred.push((peer, remote));
                            return Ok(());
                        }
                        // Something new is inside: an edit beats a delete.
                        keep_dir = Some(l.mode);
                    }
                    Err(e) => return Err(e),
                },
            }
            if let Some(parent) = full.parent() {
                self.dirs_to_sync.insert(parent.to_path_buf());
            }
            if keep_dir.is_none() {
                tracing::info!("deleted {path} (deleted on {})", self.peer_name(peer));
                if l.kind == EntryKind::File {
                    self.io.events.emit(EventKind::Deleted {
                        path: path.clone(),
                        by: self.peer_name(peer),
                    });
                }
            }
        }
        self.index.record_remote(entry, None, origin);
        if let Some(mode) = keep_dir {
            tracing::info!(
                "kept directory {path}: deleted on {}, but it holds files that are new here",
                self.peer_name(peer)
            );
            self.index.observe_dir(&path, mode);
        }
        Ok(())
    }

    fn apply_dir(
        &mut self,
        peer: NodeId,
        entry: FileEntry,
        local: Option<FileEntry>,
        keep: bool,
        origin: Option<NodeId>,
    ) -> std::io::Result<()> {
        let full = entry.path.to_disk(&self.root);
        if let Some(l) = local.as_ref().filter(|l| l.is_live_file()) {
            if keep {
                self.keep_conflict(l, peer)?;
            } else {
                std::fs::remove_file(&full)?;
            }
        }
        std::fs::create_dir_all(&full)?;
        std::fs::set_permissions(&full, std::fs::Permissions::from_mode(entry.mode))?;
        if local.as_ref().is_none_or(|l| l.deleted) {
            tracing::info!(
                "created directory {} (from {})",
                entry.path,
                self.peer_name(peer)
            );
        }
        self.index.record_remote(entry, None, origin);
        Ok(())
    }

    /// Same content, new metadata (mtime, mode) or just a newer version.
    fn apply_meta(
        &mut self,
        peer: NodeId,
        entry: FileEntry,
        origin: Option<NodeId>,
    ) -> std::io::Result<()> {
        let full = entry.path.to_disk(&self.root);
        let f = std::fs::File::options().write(true).open(&full)?;
        f.set_permissions(std::fs::Permissions::from_mode(entry.mode))?;
        filetime::set_file_handle_times(&f, None, Some(file_time(entry.mtime_ns)))?;
        let st = scan::local_stat(&f.metadata()?);
        if let Some(r) = self.index.get(&entry.path)
            && (r.entry.mtime_ns != entry.mtime_ns || r.entry.mode != entry.mode)
        {
            tracing::info!(
                "updated {} metadata (from {})",
                entry.path,
                self.peer_name(peer)
            );
        }
        self.index.record_remote(entry, Some(st), origin);
        Ok(())
    }

    /// Moves our losing version of a file into the conflicts folder.
    fn keep_conflict(
        &mut self,
        loser: &FileEntry,
        winner_peer: NodeId,
    ) -> std::io::Result<PathBuf> {
        let author = loser
            .version
            .iter()
            .max_by_key(|(_, c)| *c)
            .map(|(n, _)| self.peer_name(n))
            .unwrap_or_else(|| self.name.clone());
        let when = chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(loser.mtime_ns)
            .format("%Y%m%d-%H%M%S");
        let rel = loser.path.as_str();
        let (dir, name) = rel.rsplit_once('/').map_or(("", rel), |(d, n)| (d, n));
        let (stem, ext) = match name.rfind('.') {
            Some(i) if i > 0 => (&name[..i], &name[i..]),
            _ => (name, ""),
        };
        let safe_author: String = author
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let base = self.state_dir.join("conflicts").join(dir);
        std::fs::create_dir_all(&base)?;
        let mut dest = base.join(format!("{stem}.conflict-{when}-{safe_author}{ext}"));
        let mut n = 1;
        while dest.exists() {
            n += 1;
            dest = base.join(format!("{stem}.conflict-{when}-{safe_author}-{n}{ext}"));
        }
        move_file(&loser.path.to_disk(&self.root), &dest)?;
        crate::metrics::Metrics::add(&self.io.metrics.conflicts, 1);
        self.io.events.emit(EventKind::Conflict {
            path: loser.path.clone(),
            winner: self.peer_name(winner_peer),
            loser: author.clone(),
            kept_as: dest.display().to_string(),
        });
        tracing::warn!(
            "conflict on {}: {}'s version wins; {}'s version kept as {}",
            loser.path,
            self.peer_name(winner_peer),
            author,
            dest.display()
        );
        Ok(dest)
    }

    /// Starts downloads that are due, up to the concurrency limit. Small
    /// files whose content must come from a peer go in batches (one request
    /// and one filesystem sync per batch); a batch takes one slot.
    fn start_transfers(&mut self) {
        if self.running >= MAX_TRANSFERS {
            return;
        }
        let now = Instant::now();
        let connected = self.io.links.peers();
        let due: Vec<RelPath> = self
            .needed
            .iter()
            .filter(|(_, n)| !n.in_flight && n.retry_at <= now)
            .map(|(p, _)| p.clone())
            .take(MAX_TRANSFERS * MAX_FILES_PER_REQUEST)
            .collect();
        // Open batches by preferred peer.
        let mut batches: BTreeMap<NodeId, Vec<(FileEntry, PathBuf)>> = BTreeMap::new();
        for path in due {
            if self.running >= MAX_TRANSFERS {
                break;
            }
            let Some(n) = self.needed.get(&path) else {
                continue;
            };
            if !has_list(&n.w.entry) {
                self.get_block_list(&path, &connected);
                continue;
            }
            let (entry, from) = (n.w.entry.clone(), n.w.from);
            let plan: Vec<BlockSource> = entry
                .blocks
                .iter()
                .map(|h| match self.index.block_source(h) {
                    Some((p, i)) => BlockSource::Local {
                        path: p.to_disk(&self.root),
                        index: *i,
                    },
                    None => BlockSource::Remote,
                })
                .collect();
            let needs_peer = plan.iter().any(|b| matches!(b, BlockSource::Remote));
            let peers = self.peers_to_ask(from, &connected);
            if needs_peer && !peers.iter().any(|p| connected.contains(p)) {
                // Nobody to ask now; a peer coming up makes it due again.
                if let Some(n) = self.needed.get_mut(&path) {
                    n.retry_at = now + Duration::from_secs(5);
                }
                continue;
            }
            if let Some(n) = self.needed.get_mut(&path) {
                n.in_flight = true;
            }
            let tmp = self.temp_path();
            let whole_from_peer = plan.iter().all(|b| matches!(b, BlockSource::Remote));
            if needs_peer && whole_from_peer && entry.size <= SMALL_FILE_MAX {
                let batch = batches.entry(from).or_default();
                batch.push((entry, tmp));
                if batch.len() == MAX_FILES_PER_REQUEST
                    && let Some(files) = batches.remove(&from)
                {
                    self.spawn_batch(files, peers);
                }
                continue;
            }
            let job = transfer::Job {
                entry: entry.clone(),
                plan,
                tmp,
                peers,
                links: self.io.links.clone(),
                budget: self.budget.clone(),
            };
            self.spawn_transfer(
                async move { vec![(path, entry.version, transfer::run(job).await)] },
            );
        }
        for (from, files) in batches {
            let peers = self.peers_to_ask(from, &connected);
            self.spawn_batch(files, peers);
        }
    }

    /// Completes the block list of the wanted version at `path`: from local
    /// content with the same hash if some appeared meanwhile, else from a
    /// peer, in the background (the answer comes back as
    /// [`CoreMsg::BlockList`]). Transfers are planned from complete lists.
    fn get_block_list(&mut self, path: &RelPath, connected: &[NodeId]) {
        let now = Instant::now();
        let Some(n) = self.needed.get(path) else {
            return;
        };
        let mut entry = n.w.entry.clone();
        if self.index.fill_blocks(&mut entry) {
            self.set_block_list(path, entry.blocks);
            return;
        }
        let peers = self.peers_to_ask(n.w.from, connected);
        let Some(n) = self.needed.get_mut(path) else {
            return;
        };
        if !peers.iter().any(|p| connected.contains(p)) {
            // Nobody to ask now; a peer coming up makes it due again.
            n.retry_at = now + Duration::from_secs(5);
            return;
        }
        if self.lists_running >= MAX_LIST_FETCHES {
            // Looked at again shortly (a finishing request frees a slot).
            n.retry_at = now + Duration::from_millis(20);
            return;
        }
        self.lists_running += 1;
        n.in_flight = true;
        // Our own version of the path: the groups that did not change are
        // taken from it instead of being sent.
        let ours = self
            .index
            .get(path)
            .filter(|r| r.entry.is_live_file())
            .map(|r| r.entry.blocks.clone())
            .unwrap_or_default();
        let (links, tx, path) = (self.io.links.clone(), self.io.tx.clone(), path.clone());
        self.io.rt.spawn(async move {
            let result = transfer::fetch_block_list(&links, &peers, &entry, &ours).await;
            let _ = tx.send(CoreMsg::BlockList {
                path,
                version: entry.version,
                result,
            });
        });
    }

    /// A block list fetched for a wanted version arrived.
    fn on_block_list(
        &mut self,
        path: RelPath,
        version: VersionVector,
        result: Result<Vec<tandem_common::ContentHash>, String>,
    ) {
        self.lists_running = self.lists_running.saturating_sub(1);
        let Some(n) = self.needed.get_mut(&path) else {
            return;
        };
        if n.w.entry.version != version || !n.in_flight || has_list(&n.w.entry) {
            // Superseded by a newer version while it was asked for.
            return;
        }
        n.in_flight = false;
        match result {
            Ok(blocks) => {
                tracing::debug!("got the block list of {path} ({} blocks)", blocks.len());
                self.set_block_list(&path, blocks);
            }
            Err(e) => {
                n.attempts += 1;
                let backoff = Duration::from_millis(200 * (1u64 << n.attempts.min(7)));
                n.retry_at = Instant::now() + backoff;
                tracing::warn!(
                    "getting the block list of {path} failed (attempt {}): {e}; retrying in {backoff:?}",
                    n.attempts
                );
            }
        }
    }

    /// Gives the wanted version at `path` its complete block list and
    /// claims the local files it reads blocks from; the transfer is due.
    fn set_block_list(&mut self, path: &RelPath, blocks: Vec<tandem_common::ContentHash>) {
        let Some(n) = self.needed.get_mut(path) else {
            return;
        };
        n.w.entry.blocks = blocks;
        n.retry_at = Instant::now();
        let entry = n.w.entry.clone();
        let sources = self.claim_sources(&entry);
        if let Some(n) = self.needed.get_mut(path) {
            let old = std::mem::replace(&mut n.sources, sources);
            self.release_sources(&old);
        }
        self.wanted_dirty.insert(path.clone());
    }

    /// `from` first, then every other connected peer.
    fn peers_to_ask(&self, from: NodeId, connected: &[NodeId]) -> Vec<NodeId> {
        let mut peers = vec![from];
        peers.extend(connected.iter().filter(|p| **p != from));
        peers
    }

    /// A fresh temp file name in the state folder.
    fn temp_path(&self) -> PathBuf {
        self.state_dir
            .join("tmp")
            .join(format!("{}.part", uuid::Uuid::new_v4().simple()))
    }

    fn spawn_batch(&mut self, files: Vec<(FileEntry, PathBuf)>, peers: Vec<NodeId>) {
        let keys: Vec<(RelPath, VersionVector)> = files
            .iter()
            .map(|(e, _)| (e.path.clone(), e.version.clone()))
            .collect();
        let batch = transfer::Batch {
            files,
            peers,
            links: self.io.links.clone(),
        };
        self.spawn_transfer(async move {
            let results = transfer::run_batch(batch).await;
            keys.into_iter()
                .zip(results)
                .map(|((p, v), r)| (p, v, r))
                .collect()
        });
    }

    /// Runs a transfer (one slot) and reports its results to the core.
    fn spawn_transfer(
        &mut self,
        work: impl std::future::Future<
            Output = Vec<(
                RelPath,
                VersionVector,
                Result<transfer::Done, transfer::Failure>,
            )>,
        > + Send
        + 'static,
    ) {
        self.running += 1;
        let tx = self.io.tx.clone();
        self.io.rt.spawn(async move {
            let _ = tx.send(CoreMsg::TransfersDone(work.await));
        });
    }

    /// Marks the local files holding blocks of `entry` as in use, so a
    /// deletion in the same batch (the other half of a rename) waits until
    /// the blocks are copied.
    fn claim_sources(&mut self, entry: &FileEntry) -> Vec<RelPath> {
        let mut sources: Vec<RelPath> = entry
            .blocks
            .iter()
            .filter_map(|h| self.index.block_source(h).map(|(p, _)| p.clone()))
            .filter(|p| *p != entry.path)
            .collect();
        sources.sort();
        sources.dedup();
        for s in &sources {
            *self.in_use.entry(s.clone()).or_insert(0) += 1;
        }
        sources
    }

    fn release_sources(&mut self, sources: &[RelPath]) {
        for s in sources {
            if let Some(c) = self.in_use.get_mut(s) {
                *c -= 1;
                if *c == 0 {
                    self.in_use.remove(s);
                }
            }
        }
    }

    fn on_transfers_done(
        &mut self,
        results: Vec<(
            RelPath,
            VersionVector,
            Result<transfer::Done, transfer::Failure>,
        )>,
    ) {
        self.running = self.running.saturating_sub(1);
        for (path, version, result) in results {
            self.finish_transfer(path, version, result);
        }
        let deferred = std::mem::take(&mut self.deferred);
        for (peer, e) in deferred {
            if self.in_use.contains_key(&e.path) {
                self.deferred.push((peer, e));
            } else {
                self.on_remote_entry(peer, e);
            }
        }
    }

    fn finish_transfer(
        &mut self,
        path: RelPath,
        version: VersionVector,
        result: Result<transfer::Done, transfer::Failure>,
    ) {
        let current = self
            .needed
            .get(&path)
            .is_some_and(|n| n.in_flight && n.w.entry.version == version);
        if !current {
            // Superseded by a newer version while it ran.
            if let Ok(done) = result {
                let _ = std::fs::remove_file(&done.tmp);
            }
            return;
        }
        let Some(mut need) = self.needed.remove(&path) else {
            return;
        };
        let sources = std::mem::take(&mut need.sources);
        self.release_sources(&sources);
        match result {
            Err(e) => {
                need.in_flight = false;
                need.attempts += 1;
                if e.cause == transfer::Cause::ContentMismatch
                    && !tandem_common::blocklist::sent_inline(need.w.entry.blocks.len())
                {
                    // A list that came from a peer may be what was wrong
                    // (only some of it is checked against group hashes):
                    // complete it again (from local content first, free).
                    need.w.entry.blocks.clear();
                }
                // A link replaced by a newer one fails its transfers: retry
                // those at once; anything else backs off.
                let backoff = if e.cause == transfer::Cause::LinkClosed && need.attempts < 3 {
                    Duration::from_millis(20)
                } else {
                    Duration::from_millis(200 * (1u64 << need.attempts.min(7)))
                };
                need.retry_at = Instant::now() + backoff;
                tracing::warn!(
                    "fetching {path} failed (attempt {}): {e}; retrying in {backoff:?}",
                    need.attempts
                );
                self.needed.insert(path, need);
            }
            Ok(done) => {
                let mut moved = false;
                match self.install(&path, need.w.clone(), &done) {
                    Ok(m) => {
                        moved = m;
                        self.unwanted.push(path.clone());
                    }
                    Err(e) if need.attempts < 10 => {
                        // E.g. a directory here still holds files whose
                        // deletion is on its way: try again shortly.
                        need.in_flight = false;
                        need.attempts += 1;
                        let backoff = Duration::from_millis(200 * (1u64 << need.attempts.min(7)));
                        need.retry_at = Instant::now() + backoff;
                        tracing::warn!("cannot write {path} yet: {e}; retrying in {backoff:?}");
                        self.needed.insert(path.clone(), need);
                    }
                    Err(e) => {
                        tracing::error!("cannot write {path}: {e}; giving up on this version");
                        self.unwanted.push(path.clone());
                    }
                }
                if !moved {
                    let _ = std::fs::remove_file(&done.tmp);
                }
            }
        }
    }

    /// Puts a verified temp file in place, unless our version changed since
    /// the decision (then the peer will see ours and the rules run again).
    /// True when the temp file was moved into place.
    fn install(
        &mut self,
        path: &RelPath,
        w: Wanted,
        done: &transfer::Done,
    ) -> std::io::Result<bool> {
        if self.hold_remote(w.from, &w.entry) {
            return Ok(false);
        }
        let parents_ok = self.refresh(path)?;
        let local = self.index.get(path).map(|r| r.entry.clone());
        if local.as_ref().map(|l| &l.version) != w.based_on.as_ref() {
            tracing::info!("not applying {path}: it changed here meanwhile; deciding again");
            return Ok(false);
        }
        let full = path.to_disk(&self.root);
        if !parents_ok {
            tracing::warn!("not writing {path}: a parent directory here is a symlink or a file");
            return Ok(false);
        }
        if w.keep_ours_as_conflict
            && let Some(l) = local.as_ref().filter(|l| l.is_live_file())
        {
            self.keep_conflict(l, w.from)?;
        }
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)?;
            self.dirs_to_sync.insert(parent.to_path_buf());
        }
        if local
            .as_ref()
            .is_some_and(|l| !l.deleted && l.kind == EntryKind::Dir)
        {
            // A directory replaced by a file: it must be empty by now (its
            // files' deletions come first); if not, the caller retries.
            match std::fs::remove_dir(&full) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        move_file(&done.tmp, &full)?;
        // In place now: whatever happens next must not retry the install.
        // Without a stat, the next look at the path hashes it again.
        let st = std::fs::symlink_metadata(&full)
            .map(|m| scan::local_stat(&m))
            .inspect_err(|e| tracing::warn!("cannot stat {path} after writing it: {e}"))
            .ok();
        let from = self.peer_name(done.from.unwrap_or(w.from));
        tracing::info!(
            "received {path} from {from}: {} in {:.1?} ({} over the network, {} reused locally)",
            human_size(w.entry.size),
            done.took,
            human_size(done.bytes_received),
            human_size(done.bytes_reused),
        );
        crate::metrics::Metrics::add(&self.io.metrics.transfers, 1);
        crate::metrics::Metrics::add(&self.io.metrics.bytes_received, done.bytes_received);
        self.io.events.emit(EventKind::Transferred {
            path: path.clone(),
            from,
            to: self.name.clone(),
            size: w.entry.size,
            sent: done.bytes_received,
            millis: done.took.as_millis() as u64,
        });
        let origin = w.exact.then_some(w.from);
        self.index.record_remote(w.entry, st, origin);
        Ok(true)
    }
}

/// Nanoseconds since the epoch as a `FileTime`.
pub fn file_time(ns: i64) -> filetime::FileTime {
    filetime::FileTime::from_unix_time(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    )
}

/// Renames `from` to `to`; across filesystems (a state folder elsewhere),
/// copies to a hidden temp beside the target and renames that instead.
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let name = to.file_name().and_then(|n| n.to_str()).unwrap_or("file");
            let side = to.with_file_name(format!("{}{name}", scan::TEMP_PREFIX));
            std::fs::copy(from, &side)?;
            std::fs::File::open(&side)?.sync_all()?;
            std::fs::rename(&side, to)?;
            // In place: a temp file left behind is removed at the next start.
            let _ = std::fs::remove_file(from);
            Ok(())
        }
        r => r,
    }
}

/// Now, in nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}
