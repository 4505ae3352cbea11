//! The core: one thread that owns the index and the store and makes every
//! decision. Watcher hints, client requests and (later) peer messages reach
//! it through one channel, so decisions happen in a single obvious order and
//! nothing else needs a lock.
//!
//! It runs on its own OS thread rather than a tokio task because SQLite
//! commits and file hashing block; async callers talk to it through
//! [`CoreHandle`] and get answers on oneshot channels.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use tandem_common::display::human_size;
use tandem_common::proto::{
    ApiError, ConflictAction, ConflictCopy, ConflictResolution, EventKind, FileSummary,
};
use tandem_common::{EntryKind, FileEntry, NodeId, RelPath, VersionVector};
use tokio::sync::{Semaphore, oneshot, watch};

use crate::engine;
use crate::index::{ChangeKind, Index, LocalStat};
use crate::links::{Links, MAX_FILES_PER_REQUEST, SMALL_FILE_MAX};
use crate::scan::{self, HashError, Seen};
use crate::store::{Batch, Encoded, Store, Wanted};
use crate::transfer::{self, BlockSource};
use crate::watch::WatchMsg;

mod apply;
mod fetch;
mod interrupted;
mod journal;
mod local;
mod locking;
pub mod mirror;
mod names;
mod queries;
mod remote;
mod saver;

pub use crate::clock::{file_time, now_ns};
pub use apply::move_file;
pub use locking::LockMsg;

/// Records stored, at least, before the index's maps are made whole again
/// (see [`Core::compact_when_settled`]).
const COMPACT_AFTER: usize = 10_000;

/// Records stored since the maps were last made whole past which they are
/// made whole at once, busy or not, when that is a quarter of the index or
/// more (see [`Core::compact_if_grown`]).
const COMPACT_GROWN: usize = 1 << 18;

/// How long the index must be still before its maps are made whole again
/// (see [`Core::compact_when_settled`]).
const COMPACT_QUIET: Duration = Duration::from_secs(2);

/// Transfers running at once.
const MAX_TRANSFERS: usize = 16;
/// Block lists being asked for at once. Bounded because a node catching up
/// may want thousands of large files: their lists (up to 256 KiB per GiB)
/// would otherwise all be queued on the peer's link at the same time.
const MAX_LIST_FETCHES: usize = 16;
/// Bytes of remote blocks asked for and not yet written, across all
/// transfers, in KiB; the sending peer holds about this much in answers
/// waiting for the link. 1 GiB of 4 MiB files into an empty peer
/// (`bench/sync.sh` case 2): with segments of 2 MiB, 8 MiB (four
/// segments) was about 8 % faster than 6 (three), for about 2 MiB more at
/// each node's peak (hand script, 8 interleaved runs each, session 31;
/// 10 and 12 MiB, 4 runs each, not faster beyond noise). Both nodes' peak
/// is then about 55 MiB, within the 64 MiB they may use (session 20,
/// with segments of 1 MiB and more memory elsewhere: 61 MiB with 6, 67
/// with 8, 78 with 16). 8 is still more than ten times a WAN link's
/// bandwidth-delay product (100 Mbit/s × 50 ms: 625 KB). A segment holds
/// its share until its blocks are written, and later segments of a
/// transfer wait to be written behind an earlier one, so a peer that stops
/// answering stalls other transfers once its stuck ones hold the budget
/// (each at most a window of segments, until the request times out).
const BUDGET_KIB: usize = 8 * 1024;
/// The largest segment (with our older copy of its blocks beside it) fits
/// in the budget: a request for more permits than there are would wait for
/// ever.
const _: () = assert!(
    2 * transfer::SEGMENT_BLOCKS * (tandem_common::model::BLOCK_SIZE as usize / 1024) <= BUDGET_KIB
);
/// Batches of such content being written at once. Each ends in a `syncfs`
/// (5 ms median on a fresh ext4, 11 ms p90), which two writers spent about
/// half their time waiting for: four wrote 20,000 small files into an
/// empty peer in 1.02-1.19 s against 1.11-1.34 s (six alternating runs on
/// fresh images), eight no faster than four. Many more would contend for
/// the temp folders (16 at once, when there was one, spent most of a core
/// spinning on its lock).
const MAX_GIVEN_WRITES: usize = 4;

/// How long a path must be quiet after a write without a close before it is
/// looked at (the writer is probably still busy).
const SETTLE: Duration = Duration::from_millis(100);
/// Coalescing window for hints that need no settling (closes, renames,
/// deletes): a burst such as `rm -r` lands in one batch.
const QUICK: Duration = Duration::from_millis(3);
/// A full scan logs each change only when there are at most this many.
const LOG_EACH_LIMIT: usize = 20;
/// How long the core waits before sending the store writer another batch
/// after one could not be written.
const STORE_RETRY: Duration = Duration::from_secs(1);
/// Index records copied out (and encoded) together when a batch is saved.
const RECORD_CHUNK: usize = 1024;
/// Messages handled per pass before the core acts and commits.
const DRAIN_LIMIT: usize = 1024;
/// How often the whole tree is compared with the index when not told
/// otherwise (`--verify-every`); Syncthing rescans hourly by default too.
pub const VERIFY_EVERY: Duration = Duration::from_secs(3600);

/// Messages to the core.
pub enum CoreMsg {
    /// From the filesystem watcher.
    Watch(WatchMsg),
    /// The store writer is done with the batch it was given.
    Saved {
        /// The sequence number of the last batch written, if any was.
        upto: Option<u64>,
        /// A batch could not be written (it is tried again).
        failing: bool,
    },
    /// A page of this node's files for a merged table.
    SummaryPage {
        after: Option<RelPath>,
        limit: usize,
        reply: oneshot::Sender<(Vec<FileSummary>, bool)>,
    },
    /// This node's view of one file.
    SummaryOf(RelPath, oneshot::Sender<Option<FileSummary>>),
    /// Number of live files and their bytes.
    Counts(oneshot::Sender<Counts>),
    /// The kept conflict copies (see [`crate::conflicts`]).
    Conflicts(oneshot::Sender<std::io::Result<(Vec<ConflictCopy>, u64)>>),
    /// Restore or discard a kept conflict copy.
    ResolveConflict {
        /// The copy.
        id: String,
        /// What to do.
        action: ConflictAction,
        /// Who asked (for the log and the feed).
        by: String,
        /// What was done, or why not.
        reply: oneshot::Sender<Result<ConflictResolution, ApiError>>,
    },
    /// Push this send-only node's version over what it declined, or throw
    /// away this receive-only node's changes (see [`mirror`]).
    Mirror {
        /// Override (send-only) or revert (receive-only).
        action: mirror::MirrorAction,
        /// Under this path only.
        path: Option<RelPath>,
        /// Who asked.
        by: String,
        /// What was done, or why not.
        reply: oneshot::Sender<Result<tandem_common::proto::MirrorReport, ApiError>>,
    },
    /// Make a kept version the current one again.
    RestoreVersion {
        /// The version.
        id: String,
        /// Who asked.
        by: String,
        /// What was done, or why not.
        reply: oneshot::Sender<Result<tandem_common::proto::VersionRestoration, ApiError>>,
    },
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
        /// The uploading client's id (a lock's owner may put its file).
        by: uuid::Uuid,
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
    /// The highest of a peer's sequence numbers applied here (0 for a
    /// peer never heard from), for a link about to come up.
    PeerSeq {
        /// The peer.
        peer: NodeId,
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
        /// Small files' content sent with them, by path (checked against
        /// the entries' sizes; hashes are checked when written).
        contents: HashMap<RelPath, tandem_common::proto::FileData>,
        /// Answered when processed, with the number of deletions of paths
        /// this node did not know.
        reply: oneshot::Sender<usize>,
    },
    /// Our current entries at some paths, for serving blocks and files
    /// (in the order asked).
    Entries(Vec<RelPath>, oneshot::Sender<Vec<Option<Served>>>),
    /// A file read to be sent as content `hash` did not hold it: read it
    /// again whatever its stat (see [`Index::distrust`]).
    Reread {
        /// Where it is on disk.
        full: PathBuf,
        /// The content it was read as.
        hash: tandem_common::ContentHash,
    },
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

/// A node's totals and what is wrong with it, for `tandem nodes`.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Live files.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Problems that need a person (failed applies, unreadable paths,
    /// unwatched folders), one line each.
    pub warnings: Vec<String>,
    /// Changes from peers not applied here yet.
    pub pending_files: u64,
    /// The bytes of the files among them.
    pub pending_bytes: u64,
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

    /// A page of this node's files for a merged table: at most `limit`
    /// after `after`, sorted by path, and whether more follow.
    pub async fn summary_page(
        &self,
        after: Option<RelPath>,
        limit: usize,
    ) -> Result<(Vec<FileSummary>, bool), ApiError> {
        self.ask(|reply| CoreMsg::SummaryPage {
            after,
            limit,
            reply,
        })
        .await
    }

    /// The newest conflict copies kept here, and how many there are.
    pub async fn conflicts(&self) -> Result<(Vec<ConflictCopy>, u64), ApiError> {
        self.ask(CoreMsg::Conflicts)
            .await?
            .map_err(|e| ApiError::Other(format!("cannot read the conflicts folder: {e}")))
    }

    /// Restores or discards a conflict copy kept here.
    pub async fn resolve_conflict(
        &self,
        id: String,
        action: ConflictAction,
        by: String,
    ) -> Result<ConflictResolution, ApiError> {
        self.ask(|reply| CoreMsg::ResolveConflict {
            id,
            action,
            by,
            reply,
        })
        .await?
    }

    /// Makes a version kept here the current one again.
    pub async fn restore_version(
        &self,
        id: String,
        by: String,
    ) -> Result<tandem_common::proto::VersionRestoration, ApiError> {
        self.ask(|reply| CoreMsg::RestoreVersion { id, by, reply })
            .await?
    }

    /// `tandem override` / `tandem revert` (see [`mirror`]).
    pub async fn mirror(
        &self,
        action: mirror::MirrorAction,
        path: Option<RelPath>,
        by: String,
    ) -> Result<tandem_common::proto::MirrorReport, ApiError> {
        self.ask(|reply| CoreMsg::Mirror {
            action,
            path,
            by,
            reply,
        })
        .await?
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
        by: uuid::Uuid,
    ) -> Result<Result<(), ApiError>, ApiError> {
        self.ask(|reply| CoreMsg::Put {
            path,
            tmp,
            mtime_ns,
            mode,
            who,
            by,
            reply,
        })
        .await
    }

    /// Number of live files, their total size, and what is wrong.
    pub async fn counts(&self) -> Result<Counts, ApiError> {
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

    /// The highest of `peer`'s sequence numbers applied here.
    pub async fn peer_seq(&self, peer: NodeId) -> Result<u64, ApiError> {
        self.ask(|reply| CoreMsg::PeerSeq { peer, reply }).await
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

    /// Hands a peer's entries to the core; returns once they are decided,
    /// with the number of deletions of paths this node did not know.
    pub async fn remote_index(
        &self,
        peer: NodeId,
        entries: Vec<(u64, FileEntry)>,
        contents: HashMap<RelPath, tandem_common::proto::FileData>,
    ) -> Result<usize, ApiError> {
        self.ask(|reply| CoreMsg::RemoteIndex {
            peer,
            entries,
            contents,
            reply,
        })
        .await
    }

    /// Our entry at `path` and where it is on disk.
    pub async fn entry(&self, path: RelPath) -> Result<Option<Served>, ApiError> {
        Ok(self.entries(vec![path]).await?.pop().flatten())
    }

    /// Our entries at `paths` and where they are on disk, in that order.
    pub async fn entries(&self, paths: Vec<RelPath>) -> Result<Vec<Option<Served>>, ApiError> {
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

    /// Tells the core that the file at a disk path, read to be sent as
    /// content `hash`, did not hold it: it is read again (its stat may be
    /// the one recorded, so a look by stat would not read it).
    pub fn recheck(&self, full: &Path, hash: tandem_common::ContentHash) {
        let _ = self.tx.send(CoreMsg::Reread {
            full: full.to_path_buf(),
            hash,
        });
    }

    /// Asks the core to look at a disk path again (by its stat, as after a
    /// watcher's event): a read of it for a client failed.
    pub fn look_again(&self, full: &Path) {
        let _ = self
            .tx
            .send(CoreMsg::Watch(WatchMsg::Paths(vec![crate::watch::Hint {
                path: full.to_path_buf(),
                settle: false,
            }])));
    }
}

/// Our record of a file, as a node sending it needs it.
#[derive(Debug, Clone)]
pub struct Served {
    /// Where it is on disk.
    pub full: PathBuf,
    /// Our current entry.
    pub entry: FileEntry,
    /// The stat recorded with its content, if it can be taken to stand
    /// for that content (see [`Index::trusted_stat`]).
    pub stat: Option<LocalStat>,
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
    /// Why the last attempt to apply it failed (shown until it succeeds).
    error: Option<String>,
    /// This node is send-only and does not take it (shown as a difference
    /// until `tandem override` or a newer version settles it).
    declined: bool,
    /// Its content, when it came with the peer's entry: written without
    /// asking (dropped when the first attempt does not use it).
    given: Option<transfer::Given>,
    /// Counted as on its way in from `w.from` (see [`crate::pace`]).
    paced: bool,
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
    /// Client identities (shared with the connection tasks).
    pub identities: crate::access::Identities,
    /// What is queued from each peer (the links pace peers by it).
    pub pace: Arc<crate::pace::Pace>,
}

/// The core's state.
pub struct Core {
    root: PathBuf,
    state_dir: PathBuf,
    name: String,
    /// The store, while the core writes it itself (at start and at the
    /// end); in between the saver thread has it.
    store: Option<Store>,
    saver: Option<saver::Saver>,
    /// Batches the core could not write itself (given to the saver).
    unsaved: saver::Backlog,
    /// Writing the store fails: the next batch is sent at this time.
    store_retry_at: Option<Instant>,
    /// The highest sequence number known to be written to the store:
    /// peers are sent nothing above it (a crash must not renumber what a
    /// peer has seen).
    saved_seq: u64,
    index: Index,
    /// Paths to look at again, and when.
    pending: HashMap<RelPath, Instant>,
    /// Peers' changes written down before they are made on disk.
    journal: journal::Journal,
    /// Folders an install made for a peer's file (its folder's entry had
    /// not come yet), and when: not recorded as folders made here while
    /// that entry is awaited (see [`Core::make_parents`]).
    made_dirs: HashMap<RelPath, Instant>,
    io: CoreIo,
    /// Peers: highest of their sequence numbers applied here, and name.
    peers: HashMap<NodeId, (u64, String)>,
    peers_dirty: HashSet<NodeId>,
    needed: BTreeMap<RelPath, Need>,
    wanted_dirty: HashSet<RelPath>,
    unwanted: Vec<RelPath>,
    /// Local files in use as block sources, with counts.
    in_use: HashMap<RelPath, usize>,
    /// Queued changes that wait for a transfer to finish (see
    /// [`Core::wait`]), looked at again when one does.
    waiting: HashSet<RelPath>,
    /// Files that may show up under another name in the batch of changes
    /// being looked at, by inode (see [`Core::process_due`]).
    moved_away: HashMap<u64, (crate::index::LocalStat, local::Moved)>,
    /// Paths that could not be read, with the attempts so far (backoff).
    io_retries: HashMap<RelPath, u32>,
    /// When the whole tree is next compared with the index.
    verify_at: Instant,
    budget: Arc<Semaphore>,
    /// Batches of given content being written (see [`MAX_GIVEN_WRITES`]).
    given_writes: Arc<std::sync::atomic::AtomicUsize>,
    dirs_to_sync: HashSet<PathBuf>,
    /// The last temp file number given out (see [`Core::temp_path`]).
    temp_seq: u64,
    /// The folders for temp files made in this run, a bit each.
    temp_dirs_made: u32,
    /// Transfer tasks running (including superseded ones not yet finished).
    running: usize,
    /// The count of changes last seen by [`Core::compact_when_settled`],
    /// and when the maps may be made whole if it has not moved by then.
    compact_check: Option<(usize, Instant)>,
    /// Block list requests running (see [`MAX_LIST_FETCHES`]).
    lists_running: usize,
    /// The lock cluster's table, as last applied here.
    locks: crate::lock_service::LockMirror,
    held: crate::held::HeldQueue,
    identities_dirty: HashSet<uuid::Uuid>,
    held_dirty: bool,
    /// How often the whole tree is compared with the index.
    verify_every: Duration,
    /// Why some folders are not watched (the inotify limit): they are
    /// rescanned every [`UNWATCHED_RESCAN`] instead.
    unwatched: Option<String>,
    /// The whole tree as listed at start, once every folder was watched
    /// (made beside loading the index): the first scan compares it instead
    /// of listing again.
    walked: Option<crate::scan::Walk>,
    /// The ignore patterns in force (also published in `shared_ignores`).
    ignores: Arc<crate::ignores::Ignores>,
    shared_ignores: crate::ignores::SharedIgnores,
    /// `--ignore` patterns, added to the file's when it is read again.
    ignore_extra: Vec<String>,
    watch_control: Option<crate::watch::WatchControl>,
    /// How long, and how much of, what peers' changes replace is kept.
    retention: crate::versions::Retention,
    /// Names the file system here takes for one, and pairs of them here.
    names: names::Names,
    /// How this node takes part (`--mode`).
    mode: engine::Mode,
}

/// Folders made for a peer's file and waiting for its entry (see
/// [`Core::note_made`]) that are written down again when the journal file
/// holding them is emptied, at most (past it, none are).
const MADE_DIRS_NOTED: usize = 256;

/// How often the tree is rescanned while some folders cannot be watched.
const UNWATCHED_RESCAN: Duration = Duration::from_secs(30);

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
        let mut loader = Index::loader(me);
        store.load_each(|r| loader.push(r))?;
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
                    error: None,
                    declined: false,
                    given: None,
                    // No link waits for what an earlier run queued.
                    paced: false,
                };
                (need.w.entry.path.clone(), need)
            })
            .collect();
        io.identities.load(store.identities()?);
        let mut held = crate::held::HeldQueue::default();
        for h in store.held()? {
            held.hold(h);
        }
        // Leftovers of transfers cut off by a crash: the pending downloads
        // are in the store and start again from scratch; what a delete or
        // an install had taken out of the tree is kept (as a version when
        // it is still what the saved index holds there: the step is
        // finished; else as a conflict copy).
        let mut index = loader.finish();
        let (journal, noted) = journal::Journal::open(&state_dir);
        let (made, applied): (Vec<_>, Vec<_>) = noted
            .into_iter()
            .partition(|(e, _)| journal::is_made_folder(e));
        index.expect_applied(applied);
        let indexed = |path: &RelPath, p: &Path| {
            index.get(path).is_some_and(|r| {
                let link = r.entry.live_link().is_some();
                (r.entry.is_live_file() || link)
                    && apply::holds_indexed(p, r.stat, r.entry.hash, link).unwrap_or(false)
            })
        };
        let kept = interrupted::clear_temp(&state_dir, &name, fetch::TEMP_DIR_PREFIX, &indexed);
        crate::metrics::Metrics::add(&io.metrics.conflicts, kept.len() as u64);
        let tmp = state_dir.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        let mut core = Core {
            root,
            state_dir,
            name,
            index,
            store: Some(store),
            saver: None,
            unsaved: Default::default(),
            store_retry_at: None,
            saved_seq: 0,
            pending: HashMap::new(),
            journal,
            made_dirs: HashMap::new(),
            io,
            peers,
            peers_dirty: HashSet::new(),
            needed,
            wanted_dirty: HashSet::new(),
            unwanted: Vec::new(),
            in_use: HashMap::new(),
            waiting: HashSet::new(),
            io_retries: HashMap::new(),
            moved_away: HashMap::new(),
            verify_at: now + VERIFY_EVERY,
            verify_every: VERIFY_EVERY,
            unwatched: None,
            walked: None,
            budget: Arc::new(Semaphore::new(BUDGET_KIB)),
            given_writes: Arc::default(),
            dirs_to_sync: HashSet::new(),
            temp_seq: 0,
            temp_dirs_made: 0,
            running: 0,
            compact_check: None,
            lists_running: 0,
            locks: Default::default(),
            held,
            identities_dirty: HashSet::new(),
            held_dirty: false,
            ignores: Default::default(),
            shared_ignores: Default::default(),
            ignore_extra: Vec::new(),
            watch_control: None,
            retention: crate::versions::Retention {
                max_age: Duration::from_secs(30 * 86_400),
                max_bytes: 1 << 30,
            },
            names: Default::default(),
            mode: engine::Mode::SendReceive,
        };
        // Queued fetches read blocks from local files (the other half of a
        // rename): those files' queued deletes wait for them, as before the
        // restart.
        let fetches: Vec<FileEntry> = core
            .needed
            .values()
            .filter(|n| n.w.entry.is_live_file())
            .map(|n| n.w.entry.clone())
            .collect();
        for e in fetches {
            let sources = core.claim_sources(&e);
            if let Some(n) = core.needed.get_mut(&e.path) {
                n.sources = sources;
            }
        }
        core.saved_seq = core.index.seq();
        core.await_made(made.into_iter().map(|(e, _)| e.path).collect());
        Ok(core)
    }

    /// Uses the ignore patterns in `shared` (loaded from the folder and
    /// `extra`), reloading them when the ignore file changes; `watch` is
    /// told when they do.
    pub fn ignores(
        mut self,
        shared: crate::ignores::SharedIgnores,
        extra: Vec<String>,
        watch: crate::watch::WatchControl,
    ) -> Self {
        self.ignores = shared.get();
        self.shared_ignores = shared;
        self.ignore_extra = extra;
        self.watch_control = Some(watch);
        if self.remember_ignores() {
            // Not the patterns of the last run: peers' changes to what was
            // ignored then were dropped. Every peer sends everything again.
            for (peer, (seq, _)) in self.peers.iter_mut() {
                *seq = 0;
                self.peers_dirty.insert(*peer);
            }
        }
        self
    }

    /// Takes part as `mode` says. A node that starts receive-only
    /// remembers from which version counter on its writes are withheld; one
    /// that is no longer receive-only sends what it withheld.
    pub fn mode(mut self, mode: engine::Mode) -> Self {
        self.mode = mode;
        let Some(store) = self.store.as_mut() else {
            return self;
        };
        let since = store.receive_only_since().unwrap_or_else(|e| {
            tracing::error!("cannot read the receive-only mark in the state folder: {e}");
            None
        });
        match (mode, since) {
            (engine::Mode::ReceiveOnly, Some(c)) => self.index.withhold_above(Some(c)),
            (engine::Mode::ReceiveOnly, None) => {
                let c = self.index.clock();
                if let Err(e) = store.set_receive_only_since(Some(c)) {
                    tracing::error!("cannot save the receive-only mark in the state folder: {e}");
                }
                self.index.withhold_above(Some(c));
            }
            (_, Some(c)) => {
                self.index.withhold_above(Some(c));
                let unsent: Vec<RelPath> = self
                    .index
                    .records()
                    .filter(|r| self.index.is_unsent(&r.entry))
                    .map(|r| r.entry.path.clone())
                    .collect();
                self.index.withhold_above(None);
                for p in &unsent {
                    self.index.reannounce(p);
                }
                if !unsent.is_empty() {
                    tracing::warn!(
                        "no longer receive-only: the {} change(s) made here meanwhile are sent now",
                        unsent.len()
                    );
                }
                // Saved before the mark goes: a crash in between must not
                // leave them numbered below what peers have already seen.
                let records = self.index.take_dirty();
                if let Err(e) = store.save(&records) {
                    tracing::error!(
                        "cannot save the changes made while receive-only ({e}); they are sent once this succeeds at a later start"
                    );
                    return self;
                }
                if let Err(e) = store.set_receive_only_since(None) {
                    tracing::error!("cannot clear the receive-only mark in the state folder: {e}");
                }
            }
            (_, None) => {}
        }
        if mode != engine::Mode::SendReceive {
            tracing::info!("this node is {}", mode.as_str());
        }
        self
    }

    /// Keeps what peers' changes replace under `r` (see [`crate::versions`]).
    pub fn versions(mut self, r: crate::versions::Retention) -> Self {
        self.retention = r;
        self
    }

    /// Whether `p` is ignored here (`is_dir`: it is a folder).
    pub(super) fn is_ignored(&self, p: &RelPath, is_dir: bool) -> bool {
        !self.ignores.is_empty() && self.ignores.is_ignored(p, is_dir)
    }

    /// Whether the indexed path `p` is ignored here.
    pub(super) fn ignores_indexed(&self, p: &RelPath) -> bool {
        !self.ignores.is_empty() && self.is_ignored(p, self.index.is_dir(p))
    }

    /// Whether the walked path `p` is ignored here, its record being a
    /// folder or not (as [`Core::ignores_indexed`] judges it).
    pub(super) fn ignores_walked(&self, p: &str, dir_record: bool) -> bool {
        !self.ignores.is_empty()
            && RelPath::new(p).is_ok_and(|r| self.ignores.is_ignored(&r, dir_record))
    }

    /// Compares the whole tree with the index every `every` (a full stat
    /// walk; only changed files are read) instead of [`VERIFY_EVERY`].
    pub fn verify_every(mut self, every: Duration) -> Self {
        self.verify_every = every;
        self.verify_at = Instant::now() + every;
        self
    }

    /// The lock cluster's table as the node starts (updates follow as
    /// [`LockMsg::Table`]).
    pub fn locks(mut self, table: crate::lock_service::LockMirror) -> Self {
        self.locks = table;
        self
    }

    /// Some folders cannot be watched (`why`): rescan periodically.
    pub fn unwatched(mut self, why: Option<String>) -> Self {
        if let Some(w) = &why {
            self.note_unwatched(w.clone());
        }
        self.unwatched = why;
        self
    }

    /// The tree as listed at start, after its watches were set up with the
    /// ignore patterns in force: the first scan uses it (changes made after
    /// the listing arrive as watch events).
    pub fn walked(mut self, walk: crate::scan::Walk) -> Self {
        self.walked = Some(walk);
        self
    }

    fn note_unwatched(&mut self, why: String) {
        if self.unwatched.is_none() {
            tracing::warn!(
                "{why}: some folders are not watched; rescanning the whole tree every {UNWATCHED_RESCAN:?} instead (a limit: raise fs.inotify.max_user_watches; a folder: make it readable and restart)"
            );
            self.io.events.emit(EventKind::Unwatched {
                reason: why.clone(),
                rescan_secs: UNWATCHED_RESCAN.as_secs(),
            });
        }
        self.verify_at = self.verify_at.min(Instant::now() + UNWATCHED_RESCAN);
        self.unwatched = Some(why);
    }

    /// The interval until the next full comparison of tree and index.
    fn verify_interval(&self) -> Duration {
        match self.unwatched {
            Some(_) => self.verify_every.min(UNWATCHED_RESCAN),
            None => self.verify_every,
        }
    }

    /// Scans the whole directory, then serves messages until shutdown or
    /// until every sender is gone.
    pub fn run(mut self, rx: Receiver<CoreMsg>) {
        let started = Instant::now();
        let n = self.reconcile(None);
        let unmade = self.index.end_applied();
        if unmade > 0 {
            tracing::debug!(
                "{unmade} peers' changes written down by the last run are not on disk as written (not made, or changed since)"
            );
        }
        self.journal.started();
        self.flush();
        if n > 1000 {
            self.index.compact();
        }
        // The start-up scan's temporary buffers are freed now; hand the
        // memory back instead of keeping it for the node's lifetime.
        if let Some(store) = self.store.as_ref() {
            store.release_memory();
        }
        crate::metrics::release_memory();
        // From here on the store is written beside the core.
        if let Some(store) = self.store.take() {
            let backlog = std::mem::take(&mut self.unsaved);
            match saver::Saver::start(store, backlog, self.io.tx.clone()) {
                Ok(s) => self.saver = Some(s),
                Err(failed) => {
                    let (store, backlog, e) = *failed;
                    tracing::error!(
                        "cannot start the store writer thread ({e}); the core writes the store itself"
                    );
                    self.store = Some(store);
                    self.unsaved = backlog;
                }
            }
        }
        tracing::info!(
            "indexed {} in {:.2?}: {} entries, {n} changed since last run",
            self.root.display(),
            started.elapsed(),
            self.index.len()
        );
        let mut stop = false;
        while !stop {
            // A message already waiting is taken without working out how
            // long to wait (that looks through the whole queue of wanted
            // versions, once a turn, and a busy sync turns for every
            // message).
            let got = match rx.try_recv() {
                Ok(msg) => Ok(msg),
                Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => rx.recv_timeout(self.wait_for()),
            };
            match got {
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
            if !stop && Instant::now() >= self.verify_at {
                // The disk is the truth: whatever the watcher missed (or
                // could not watch) is found here.
                // The watcher may have missed the ignore file too.
                self.reload_ignores();
                let n = self.reconcile(None);
                tracing::info!("verified the tree against the index: {n} changes found");
                self.verify_at = Instant::now() + self.verify_interval();
            }
            if !stop {
                self.start_transfers();
            }
            self.flush();
            if !stop {
                self.compact_when_settled();
            }
        }
        // The last batches: the writer finishes its own and gives the
        // store back for what gathered meanwhile.
        if let Some(saver) = self.saver.take() {
            match saver.stop() {
                Some((store, backlog)) => {
                    self.store = Some(store);
                    self.unsaved = backlog;
                }
                None => tracing::error!(
                    "the store writer thread died; the last changes are not saved (the next start scans the folder again)"
                ),
            }
        }
        self.store_retry_at = None;
        self.flush();
        if self.index.has_unsaved() || !self.unsaved.is_empty() {
            tracing::warn!(
                "core stopped with index changes not saved (see the errors above); the next start scans the folder again"
            );
        } else {
            tracing::info!("index saved; core stopped");
        }
    }

    /// How long the loop may wait for a message before something is due.
    fn wait_for(&self) -> Duration {
        // Queued downloads only matter for the wake-up time when a
        // transfer slot is free; otherwise a finishing transfer wakes us
        // (waking for them anyway would spin on a due-but-blocked queue).
        // The same holds for content to write while the writers are busy.
        let (slots_full, writers_full) = (self.slots_full(), self.writers_full());
        let retry = if slots_full && writers_full {
            None
        } else {
            self.needed
                .values()
                .filter(|n| !n.in_flight)
                .filter(|n| match n.given {
                    Some(_) => !writers_full,
                    None => !slots_full,
                })
                .map(|n| n.retry_at)
                .min()
        };
        self.pending
            .values()
            .copied()
            .chain(retry)
            .chain(self.store_retry_at)
            .chain(self.compact_check.map(|(_, due)| due))
            .chain([self.verify_at])
            .chain(self.names.due())
            .min()
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600))
    }

    /// Makes the index's maps whole again, and gives the memory freed back,
    /// at once when it grew by a quarter or more (see
    /// [`Core::compact_if_grown`]); otherwise once many records were stored
    /// since it was last done and the index has then been still for
    /// [`COMPACT_QUIET`] with no transfer running:
    /// a peer's million new files leave the maps' nodes part empty and the
    /// memory of what was replaced between live pieces (after a
    /// million-file sync: 489 MiB resident, of which 306 MiB in use). It
    /// takes about a second at a million records, so it waits for a lull;
    /// it does not wait for every queue to empty, since some never do (a
    /// send-only node's declined versions, a file that cannot be read).
    fn compact_when_settled(&mut self) {
        if self.compact_if_grown() {
            return;
        }
        let changed = self.index.changed_since_compact();
        if changed < COMPACT_AFTER.max(self.index.len() / 4) {
            self.compact_check = None;
            return;
        }
        let now = Instant::now();
        match self.compact_check {
            Some((seen, due)) if seen == changed && now >= due => {}
            Some((seen, _)) if seen == changed => return,
            _ => {
                self.compact_check = Some((changed, now + COMPACT_QUIET));
                return;
            }
        }
        if self.running > 0 || self.needed.values().any(|n| n.given.is_some()) {
            self.compact_check = Some((changed, now + COMPACT_QUIET));
            return;
        }
        self.compact_now(changed);
    }

    /// Makes the maps whole at once when at least [`COMPACT_GROWN`] records,
    /// and a quarter of the index, were stored since they last were:
    /// records stored one by one take about 270 bytes each against 190 once
    /// made whole, so a peer's million new files (or a cold scan of them)
    /// would otherwise leave the receiver at 302 MiB by the end. Made whole
    /// every 262,144 records up to a million (about 1.7 s of work in all),
    /// the index grows by the smaller figure for all but the last of them.
    /// True when it compacted.
    pub(super) fn compact_if_grown(&mut self) -> bool {
        let changed = self.index.changed_since_compact();
        if changed < COMPACT_GROWN.max(self.index.len() / 4) {
            return false;
        }
        self.compact_now(changed);
        true
    }

    fn compact_now(&mut self, changed: usize) {
        self.compact_check = None;
        let t0 = Instant::now();
        self.index.compact();
        // Sets that grew with the sync and are empty now keep their room.
        self.in_use.shrink_to_fit();
        self.wanted_dirty.shrink_to_fit();
        self.waiting.shrink_to_fit();
        self.pending.shrink_to_fit();
        self.io_retries.shrink_to_fit();
        self.moved_away.shrink_to_fit();
        self.dirs_to_sync.shrink_to_fit();
        crate::metrics::release_memory();
        tracing::info!(
            "made the index's maps whole again after {changed} changes ({} records) in {:.2?}",
            self.index.len(),
            t0.elapsed()
        );
    }

    /// Handles one message; false means stop.
    fn handle(&mut self, msg: CoreMsg) -> bool {
        match msg {
            CoreMsg::Shutdown => return false,
            CoreMsg::Watch(WatchMsg::Unwatched(why)) => {
                self.note_unwatched(why);
                self.reload_ignores();
                self.reconcile(None);
            }
            CoreMsg::Watch(WatchMsg::Rescan) => {
                // Events were lost: maybe the ignore file's too.
                self.reload_ignores();
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
            CoreMsg::SummaryPage {
                after,
                limit,
                reply,
            } => {
                let _ = reply.send(self.summary_page(after.as_ref(), limit));
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
                by,
                reply,
            } => {
                let _ = reply.send(self.put(&path, &tmp, mtime_ns, mode, &who, by));
            }
            CoreMsg::Conflicts(reply) => {
                let _ = reply.send(crate::conflicts::list(&self.conflicts_dir(), &self.name));
            }
            CoreMsg::ResolveConflict {
                id,
                action,
                by,
                reply,
            } => {
                let _ = reply.send(self.resolve_conflict(&id, action, &by));
            }
            CoreMsg::RestoreVersion { id, by, reply } => {
                let _ = reply.send(self.restore_version(&id, &by));
            }
            CoreMsg::Mirror {
                action,
                path,
                by,
                reply,
            } => {
                let _ = reply.send(self.mirror(action, path.as_ref(), &by));
            }
            CoreMsg::Counts(reply) => {
                let _ = reply.send(self.counts());
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
            CoreMsg::PeerSeq { peer, reply } => {
                let _ = reply.send(self.peers.get(&peer).map_or(0, |p| p.0));
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
                if since == 0 {
                    // The peer asks for everything (it is new, lost its
                    // state, or forgot paths: a revert, new ignore
                    // patterns): what it once sent us is no longer
                    // assumed to be there.
                    self.index.forget_origin_of(peer);
                }
                let (mut entries, upto) =
                    self.index
                        .entries_since(since, self.saved_seq, max_bytes, Some(peer));
                // What is ignored here is never sent.
                entries.retain(|(_, e)| !self.is_ignored(&e.path, e.kind == EntryKind::Dir));
                let _ = reply.send((entries, upto));
            }
            CoreMsg::RemoteIndex {
                peer,
                entries,
                contents,
                reply,
            } => {
                let _ = reply.send(self.on_remote_index(peer, entries, contents));
            }
            CoreMsg::Entries(paths, reply) => {
                let r = paths
                    .into_iter()
                    .map(|p| {
                        // Nothing ignored here is served either.
                        if self.ignores_indexed(&p) {
                            return None;
                        }
                        let entry = self.index.get(&p)?.entry;
                        let stat = self.index.trusted_stat(&p);
                        Some(Served {
                            full: p.to_disk(&self.root),
                            entry,
                            stat,
                        })
                    })
                    .collect();
                let _ = reply.send(r);
            }
            CoreMsg::Reread { full, hash } => match RelPath::from_disk(&self.root, &full) {
                Ok(rel) => {
                    self.index.distrust(&rel, &hash);
                    self.pending.insert(rel, Instant::now() + QUICK);
                }
                Err(e) => tracing::debug!("not rereading {}: {e}", full.display()),
            },
            CoreMsg::TransfersDone(results) => self.on_transfers_done(results),
            CoreMsg::Saved { upto, failing } => {
                if let Some(s) = self.saver.as_mut() {
                    s.busy = false;
                }
                if let Some(seq) = upto {
                    self.saved(seq);
                }
                self.store_retry_at = failing.then(|| Instant::now() + STORE_RETRY);
            }
            CoreMsg::BlockList {
                path,
                version,
                result,
            } => self.on_block_list(path, version, result),
            CoreMsg::Lock(m) => self.on_lock_msg(m),
        }
        true
    }

    /// Hands what changed to the store writer (or writes it here when
    /// there is none). While the writer is busy, changes gather for the
    /// next batch: its [`CoreMsg::Saved`] brings the core back here.
    fn flush(&mut self) {
        self.save_changes();
        // Also when the writer is busy: its own timer must not spin the
        // loop meanwhile.
        self.check_names();
    }

    /// Hands what changed to the store writer (or writes it here before
    /// the writer starts), unless the writer is still busy with the last
    /// batch or the store failed and waits to be tried again.
    pub(super) fn save_changes(&mut self) {
        let wait = self.saver.as_ref().is_some_and(|s| s.busy)
            || self.store_retry_at.is_some_and(|t| t > Instant::now());
        if wait {
            return;
        }
        // The pause is over (only a failure sets it again: the writer's
        // report, or one below); left set, it would wake the core loop at
        // once for ever when no writer thread answers.
        let retrying = self.store_retry_at.take().is_some();
        // Directory entries of renamed-in files are synced before the
        // index commit: a crash after it must not find the rename undone.
        let dirs: Vec<PathBuf> = self.dirs_to_sync.drain().collect();
        let forgotten = self.index.take_forgotten();
        let dirty = self.index.take_dirty_paths();
        for p in &dirty {
            self.names.touched(p);
        }
        let peers: Vec<(NodeId, u64, String)> = self
            .peers_dirty
            .drain()
            .filter_map(|id| self.peers.get(&id).map(|(s, n)| (id, *s, n.clone())))
            .collect();
        let wanted_paths: Vec<RelPath> = self.wanted_dirty.drain().collect();
        let wanted: Vec<&Wanted> = wanted_paths
            .iter()
            .filter_map(|p| self.needed.get(p).map(|n| &n.w))
            .collect();
        let unwanted = std::mem::take(&mut self.unwanted);
        let identities: Vec<tandem_common::proto::IdentityRecord> =
            if self.identities_dirty.is_empty() {
                Vec::new()
            } else {
                let dirty = std::mem::take(&mut self.identities_dirty);
                let all = self.io.identities.all();
                all.into_iter().filter(|r| dirty.contains(&r.id)).collect()
            };
        let identities: Vec<&tandem_common::proto::IdentityRecord> = identities.iter().collect();
        let held = std::mem::take(&mut self.held_dirty).then(|| self.held.remote());
        let n = dirty.len();
        let batch = Batch {
            records: &[],
            peers: &peers,
            wanted: &wanted,
            unwanted: &unwanted,
            forgotten: &forgotten,
            identities: &identities,
            held: held.as_deref(),
        };
        let seq = self.index.seq();
        self.journal.seal(seq);
        // While the core holds the store itself (before the writer thread
        // starts: the start-up scan or a slice of it; the last flush after
        // it stops; throughout if it could not be started), many records
        // are encoded a chunk at a time as they are written, in one
        // transaction, instead of all held encoded at once. If that fails,
        // they go the way of any batch below: tried again at once, and
        // kept until they are written.
        if n > RECORD_CHUNK
            && self.saver.is_none()
            && self.unsaved.is_empty()
            && let Some(store) = self.store.as_mut()
        {
            let index = &self.index;
            let written = Encoded::of(&batch).map(|head| {
                saver::sync_dirs(&dirs);
                let chunks = dirty
                    .chunks(RECORD_CHUNK)
                    .map(|c| c.iter().filter_map(|p| index.get(p)).collect());
                // A panic in the database layer is a failed write.
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    store.write_chunked(&head, chunks)
                }))
            });
            match written {
                Ok(Ok(Ok(()))) => {
                    self.saved(seq);
                    return;
                }
                Ok(Ok(Err(e))) | Err(e) => {
                    tracing::warn!(
                        "cannot save {n} index entries chunk by chunk ({e}); trying again as one batch"
                    );
                }
                Ok(Err(_)) => tracing::warn!(
                    "saving {n} index entries chunk by chunk failed (panicked); trying again as one batch"
                ),
            }
        }
        // Records are copied out of the index a slice at a time: a cold
        // scan's million would otherwise all be held twice, as records and
        // encoded.
        let encoded = Encoded::of(&batch).and_then(|mut enc| {
            if crate::crashpoint::fails("encode-batch") {
                return Err(crate::store::StoreError::FailPoint("encode-batch"));
            }
            enc.reserve_records(n);
            for chunk in dirty.chunks(RECORD_CHUNK) {
                let records: Vec<crate::index::Record> =
                    chunk.iter().filter_map(|p| self.index.get(p)).collect();
                enc.add_records(&records)?;
            }
            Ok(enc)
        });
        let encoded = match encoded {
            Ok(encoded) => encoded,
            Err(e) => {
                // Not written, so not saved: everything taken goes back to
                // wait for the next try, as a batch the store refused does
                // (an empty batch here would count as saved, and the
                // journal that still holds these changes would be emptied).
                tracing::error!(
                    "cannot encode {n} index entries for the store: {e}; trying again in {STORE_RETRY:?} (peers are sent no newer changes until this succeeds)"
                );
                self.dirs_to_sync.extend(dirs);
                self.index.restore_unsaved(forgotten, &dirty);
                self.peers_dirty.extend(peers.iter().map(|(id, ..)| *id));
                self.wanted_dirty.extend(wanted_paths);
                self.unwanted.extend(unwanted);
                self.identities_dirty
                    .extend(identities.iter().map(|r| r.id));
                self.held_dirty |= held.is_some();
                self.store_retry_at = Some(Instant::now() + STORE_RETRY);
                return;
            }
        };
        let job = saver::Job {
            dirs,
            batch: encoded,
            seq,
        };
        // Nothing to write and nothing left unwritten: all is saved. (A
        // failing store gets even an empty batch: the writer then tries
        // its backlog again.)
        let idle =
            job.dirs.is_empty() && job.batch.is_empty() && !retrying && self.unsaved.is_empty();
        if idle {
            self.saved(seq);
        } else if let Some(s) = self.saver.as_mut() {
            if let Err(n) = s.send(job) {
                tracing::error!(
                    "the store writer thread is gone; {n} index entries are not saved (the next start scans the folder again)"
                );
                self.saver = None;
            }
        } else if let Some(store) = self.store.as_mut() {
            self.unsaved.push_back(job);
            if let Some(seq) = saver::write_backlog(store, &mut self.unsaved) {
                self.saved(seq);
            }
            if !self.unsaved.is_empty() {
                self.store_retry_at = Some(Instant::now() + STORE_RETRY);
            }
        }
    }

    /// Everything up to `seq` is in the store: peers may be sent it.
    fn saved(&mut self, seq: u64) {
        self.saved_seq = self.saved_seq.max(seq);
        let seq = self.saved_seq;
        if self.journal.saved(seq) {
            // Folders still waiting stay written down when the file that
            // held them is emptied (past a few hundred they are not: each
            // emptying would write them all again).
            for p in self.awaited_folders(MADE_DIRS_NOTED).unwrap_or_default() {
                self.journal.note_made(p);
            }
        }
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
}
