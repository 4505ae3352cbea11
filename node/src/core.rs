//! The core: one thread that owns the index and the store and makes every
//! decision. Watcher hints, client requests and (later) peer messages reach
//! it through one channel, so decisions happen in a single obvious order and
//! nothing else needs a lock.
//!
//! It runs on its own OS thread rather than a tokio task because SQLite
//! commits and file hashing block; async callers talk to it through
//! [`CoreHandle`] and get answers on oneshot channels.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use tandem_common::display::human_size;
use tandem_common::proto::{ApiError, ListedFile};
use tandem_common::{EntryKind, RelPath};
use tokio::sync::oneshot;

use crate::index::{ChangeKind, Index};
use crate::scan::{self, HashError, Seen};
use crate::store::Store;
use crate::watch::WatchMsg;

/// How long a path must be quiet after a write without a close before it is
/// looked at (the writer is probably still busy).
const SETTLE: Duration = Duration::from_millis(100);
/// Coalescing window for hints that need no settling (closes, renames,
/// deletes): a burst such as `rm -r` lands in one batch.
const QUICK: Duration = Duration::from_millis(3);
/// A full scan logs each change only when there are at most this many.
const LOG_EACH_LIMIT: usize = 20;

/// Messages to the core.
pub enum CoreMsg {
    /// From the filesystem watcher.
    Watch(WatchMsg),
    /// The file table, for a client.
    List(oneshot::Sender<Vec<ListedFile>>),
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

    /// Asks the core to flush and stop.
    pub fn shutdown(&self) {
        let _ = self.tx.send(CoreMsg::Shutdown);
    }
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
}

impl Core {
    /// Builds the core from an opened store.
    pub fn new(
        root: PathBuf,
        state_dir: PathBuf,
        name: String,
        store: Store,
    ) -> anyhow::Result<Core> {
        let me = store.node_id()?;
        let records = store.load()?;
        Ok(Core {
            root,
            state_dir,
            name,
            index: Index::new(me, records),
            store,
            pending: HashMap::new(),
        })
    }

    /// Scans the whole directory, then serves messages until shutdown or
    /// until every sender is gone.
    pub fn run(mut self, rx: Receiver<CoreMsg>) {
        let started = Instant::now();
        let n = self.reconcile(None);
        tracing::info!(
            "indexed {} in {:.2?}: {} entries, {n} changed since last run",
            self.root.display(),
            started.elapsed(),
            self.index.len()
        );
        loop {
            let timeout = self
                .pending
                .values()
                .min()
                .map(|d| d.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(3600));
            match rx.recv_timeout(timeout) {
                Ok(CoreMsg::Shutdown) => break,
                Ok(msg) => {
                    if !self.handle(msg) {
                        break;
                    }
                    // Take everything already queued before acting.
                    while let Ok(msg) = rx.try_recv() {
                        if matches!(msg, CoreMsg::Shutdown) || !self.handle(msg) {
                            self.process_due();
                            self.flush();
                            return;
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.process_due();
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
                locked_by: None,
            })
            .collect()
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
        let mut changed = 0;
        for p in due {
            // A directory rescanned in this batch already covered its children.
            if covered.as_ref().is_some_and(|c| p.is_inside(c)) {
                continue;
            }
            match scan::stat(&p.to_disk(&self.root)) {
                Ok(Seen::Dir { .. }) => {
                    changed += self.reconcile(Some(&p));
                    covered = Some(p);
                }
                Ok(seen) => changed += self.look_at(&p, seen, true),
                Err(e) => tracing::warn!("cannot read {p}: {e}"),
            }
        }
        if changed > 0 || !self.pending.is_empty() {
            self.flush();
        }
    }

    /// Re-examines one non-directory path. Returns the number of changes.
    fn look_at(&mut self, p: &RelPath, seen: Seen, log: bool) -> usize {
        match seen {
            Seen::Absent => {
                let gone = self.index.observe_missing(p);
                for g in &gone {
                    if log {
                        tracing::info!("deleted {g}");
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
        if log {
            let (size, dir) = self
                .index
                .get(p)
                .map(|r| (r.entry.size, r.entry.kind == EntryKind::Dir))
                .unwrap_or((0, false));
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
            match scan::stat(&base) {
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
                Seen::File(st) if self.index.needs_hash(p, st) => Some(p),
                _ => None,
            })
            .collect();
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
        self.flush();
        changed
    }

    fn flush(&mut self) {
        let dirty = self.index.take_dirty();
        let n = dirty.len();
        if let Err(e) = self.store.save(&dirty) {
            // Keep running: the disk is the truth, and the next start re-scans.
            tracing::error!("cannot save {n} index entries: {e}");
        }
    }
}
