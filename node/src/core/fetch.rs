//! Downloads: the queue of wanted remote versions, block lists, transfer
//! slots, batches of small files, retries with backoff.

use super::*;
use std::sync::atomic::Ordering;

/// Failed fetch attempts after which the file shows the error state.
const FETCH_ERROR_AFTER: u32 = 5;

/// Downloads are written in this many folders of the temp folder
/// (`tmp/parts-N`), a batch's worth of names in each in turn: a folder's
/// lock is taken to create a file in it and to rename one out of it, so
/// with one folder the writers creating files and the core thread moving
/// finished ones into the tree waited on each other (in a 200,000-file
/// sync the writers spent about a quarter of their time spinning on it).
const TEMP_DIRS: u64 = 8;
/// Temp names given out in one folder before the next (a batch's files).
const TEMP_DIR_RUN: u64 = MAX_FILES_PER_REQUEST as u64;
/// Names of those folders: the prefix, then the number.
pub(super) const TEMP_DIR_PREFIX: &str = "parts-";

impl Core {
    /// Starts downloads that are due, up to the concurrency limit. Small
    /// files whose content must come from a peer go in batches (one request
    /// and one filesystem sync per batch); a batch takes one slot. Content
    /// that came with entries is written even when every slot is taken
    /// (see [`Core::slots_full`]).
    pub(super) fn start_transfers(&mut self) {
        let slots_full = self.slots_full();
        if slots_full && self.writers_full() {
            return;
        }
        let now = Instant::now();
        let connected = self.io.links.peers();
        let due: Vec<RelPath> = self
            .needed
            .iter()
            .filter(|(_, n)| !n.in_flight && n.retry_at <= now)
            .filter(|(_, n)| !slots_full || n.given.is_some())
            .map(|(p, _)| p.clone())
            .take(MAX_TRANSFERS * MAX_FILES_PER_REQUEST)
            .collect();
        // Open batches by preferred peer, and of content peers sent.
        let mut batches: BTreeMap<NodeId, Vec<(FileEntry, PathBuf)>> = BTreeMap::new();
        let mut given: BTreeMap<NodeId, Vec<(FileEntry, PathBuf, transfer::Given)>> =
            BTreeMap::new();
        for path in due {
            let Some(n) = self.needed.get(&path) else {
                continue;
            };
            if n.given.is_none() && self.slots_full() {
                continue;
            }
            // Deletes, folders and metadata (which need no data) and
            // anything that failed before are carried out, or found to
            // need a fetch, by deciding again now; so is everything on a
            // send-only node, which fetches nothing it would decline.
            if (!n.w.entry.is_live_file()
                || n.error.is_some()
                || self.mode == crate::engine::Mode::SendOnly)
                && !matches!(self.settle(&path, None), super::remote::Settled::Fetch)
            {
                continue;
            }
            let writers_full = self.writers_full();
            let Some(n) = self.needed.get_mut(&path) else {
                continue;
            };
            if n.given.is_some() {
                // Its content came with its entry: written without asking
                // (when a writer is free; looked at again when one is).
                if writers_full {
                    continue;
                }
                let Some(g) = n.given.take() else { continue };
                n.in_flight = true;
                let (entry, from) = (n.w.entry.clone(), n.w.from);
                let tmp = self.temp_path();
                let batch = given.entry(from).or_default();
                batch.push((entry, tmp, g));
                if batch.len() == MAX_FILES_PER_REQUEST
                    && let Some(files) = given.remove(&from)
                {
                    self.spawn_given(files, from);
                }
                continue;
            }
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
                        index: i,
                    },
                    None => BlockSource::Remote,
                })
                .collect();
            let needs_peer = plan.iter().any(|b| matches!(b, BlockSource::Remote));
            let peers = self.peers_to_ask(from, &connected);
            if needs_peer && !peers.iter().any(|p| connected.contains(p)) {
                // Nobody to ask now; a peer coming up makes it due again.
                // (Still counted for pacing: its peer's link is down, and
                // it is fetched first when the link is up again.)
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
            // Our own older version of the file, if we hold one: blocks
            // that changed are asked as patches of it.
            let base = self
                .index
                .get(&path)
                .filter(|r| r.entry.is_live_file() && r.stat.is_some() && needs_peer)
                .map(|_| path.to_disk(&self.root));
            // After a failed try (say, blocks that did not match their
            // hashes), the sender checks each block before sending it.
            let verify = self.needed.get(&path).is_some_and(|n| n.attempts > 0);
            let job = transfer::Job {
                entry: entry.clone(),
                plan,
                tmp,
                peers,
                links: self.io.links.clone(),
                budget: self.budget.clone(),
                base,
                verify,
            };
            self.spawn_transfer(
                async move { vec![(path, entry.version, transfer::run(job).await)] },
            );
        }
        for (from, files) in batches {
            let peers = self.peers_to_ask(from, &connected);
            self.spawn_batch(files, peers);
        }
        for (from, files) in given {
            self.spawn_given(files, from);
        }
    }

    /// Completes the block list of the wanted version at `path`: from local
    /// content with the same hash if some appeared meanwhile, else from a
    /// peer, in the background (the answer comes back as
    /// [`CoreMsg::BlockList`]). Transfers are planned from complete lists.
    pub(super) fn get_block_list(&mut self, path: &RelPath, connected: &[NodeId]) {
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
    pub(super) fn on_block_list(
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
                self.unpace(&path);
                let attempts = self.needed.get(&path).map_or(0, |n| n.attempts);
                tracing::warn!(
                    "getting the block list of {path} failed (attempt {attempts}): {e}; retrying in {backoff:?}"
                );
            }
        }
    }

    /// Gives the wanted version at `path` its complete block list and
    /// claims the local files it reads blocks from; the transfer is due.
    pub(super) fn set_block_list(
        &mut self,
        path: &RelPath,
        blocks: Vec<tandem_common::ContentHash>,
    ) {
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
    pub(super) fn peers_to_ask(&self, from: NodeId, connected: &[NodeId]) -> Vec<NodeId> {
        let mut peers = vec![from];
        peers.extend(connected.iter().filter(|p| **p != from));
        peers
    }

    /// A fresh temp file name in the state folder. A counter suffices (the
    /// folder is this node's alone and emptied at start) and costs no
    /// system call for randomness per file.
    pub(super) fn temp_path(&mut self) -> PathBuf {
        self.temp_seq += 1;
        let n = (self.temp_seq / TEMP_DIR_RUN) % TEMP_DIRS;
        let dir = self
            .state_dir
            .join("tmp")
            .join(format!("{TEMP_DIR_PREFIX}{n}"));
        // Made on first use in a run (the temp folder is emptied at start);
        // the writers make it again if it is gone (deleted meanwhile), and
        // one that cannot be made fails the write, which is retried.
        if self.temp_dirs_made & (1 << n) == 0 && std::fs::create_dir_all(&dir).is_ok() {
            self.temp_dirs_made |= 1 << n;
        }
        dir.join(format!("{}.part", self.temp_seq))
    }

    /// A fresh name in the state folder for our file at `path` that
    /// `cause`'s delete sets aside (if a crash comes before the delete
    /// finishes, the start finishes it or keeps the file; see
    /// [`super::interrupted`]).
    pub(super) fn aside_path(&self, path: &RelPath, cause: &str) -> PathBuf {
        self.state_dir
            .join("tmp")
            .join(super::interrupted::aside_name(path, cause))
    }

    pub(super) fn spawn_batch(&mut self, files: Vec<(FileEntry, PathBuf)>, peers: Vec<NodeId>) {
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

    /// Writes small files whose content came from `from` with their
    /// entries (one slot, like a fetched batch).
    fn spawn_given(&mut self, files: Vec<(FileEntry, PathBuf, transfer::Given)>, from: NodeId) {
        let keys: Vec<(RelPath, VersionVector)> = files
            .iter()
            .map(|(e, _, _)| (e.path.clone(), e.version.clone()))
            .collect();
        tracing::debug!(
            "{} files came with {}'s index; writing them",
            files.len(),
            self.peer_name(from)
        );
        let writes = self.given_writes.clone();
        writes.fetch_add(1, Ordering::Relaxed);
        self.spawn_transfer(async move {
            let results = transfer::write_given(files, from).await;
            writes.fetch_sub(1, Ordering::Relaxed);
            keys.into_iter()
                .zip(results)
                .map(|((p, v), r)| (p, v, r))
                .collect()
        });
    }

    /// True when every transfer slot is taken. Writes of content that came
    /// with entries do not take one (they have [`MAX_GIVEN_WRITES`]): that
    /// content is held until written, and while it is held peers' index
    /// messages wait (see [`crate::pace`]), so long transfers of large
    /// files must not hold it up.
    pub(super) fn slots_full(&self) -> bool {
        let writes = self.given_writes.load(Ordering::Relaxed);
        self.running.saturating_sub(writes) >= MAX_TRANSFERS
    }

    /// True when [`MAX_GIVEN_WRITES`] batches of given content are being
    /// written.
    pub(super) fn writers_full(&self) -> bool {
        self.given_writes.load(Ordering::Relaxed) >= MAX_GIVEN_WRITES
    }

    /// Runs a transfer (one slot) and reports its results to the core.
    pub(super) fn spawn_transfer(
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
    pub(super) fn claim_sources(&mut self, entry: &FileEntry) -> Vec<RelPath> {
        let mut sources: Vec<RelPath> = entry
            .blocks
            .iter()
            .filter_map(|h| self.index.block_source(h).map(|(p, _)| p))
            .filter(|p| *p != entry.path)
            .collect();
        sources.sort();
        sources.dedup();
        for s in &sources {
            *self.in_use.entry(s.clone()).or_insert(0) += 1;
        }
        sources
    }

    pub(super) fn release_sources(&mut self, sources: &[RelPath]) {
        for s in sources {
            if let Some(c) = self.in_use.get_mut(s) {
                *c -= 1;
                if *c == 0 {
                    self.in_use.remove(s);
                }
            }
        }
    }

    pub(super) fn on_transfers_done(
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
        // What waited for a file to stop being a block source (a delete,
        // or a folder's delete after its files) is looked at again; it
        // waits again if still needed.
        let now = Instant::now();
        for p in std::mem::take(&mut self.waiting) {
            if let Some(n) = self.needed.get_mut(&p)
                && !n.in_flight
            {
                n.retry_at = n.retry_at.min(now);
            }
        }
    }

    pub(super) fn finish_transfer(
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
        let Some(need) = self.needed.get_mut(&path) else {
            return;
        };
        need.in_flight = false;
        let sources = std::mem::take(&mut need.sources);
        self.release_sources(&sources);
        match result {
            Err(e) => {
                let Some(need) = self.needed.get_mut(&path) else {
                    return;
                };
                need.attempts += 1;
                // A link that closed is retried when it is up again (still
                // counted for pacing, or every outage would let the peer
                // queue another window's worth on top).
                if e.cause != transfer::Cause::LinkClosed {
                    self.unpace(&path);
                }
                let Some(need) = self.needed.get_mut(&path) else {
                    return;
                };
                if e.cause == transfer::Cause::BadList
                    || (e.cause == transfer::Cause::ContentMismatch
                        && !tandem_common::blocklist::sent_inline(need.w.entry.blocks.len()))
                {
                    // A list that came from a peer may be what was wrong:
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
                // A fetch that keeps failing is shown, not just retried.
                if need.attempts >= FETCH_ERROR_AFTER {
                    self.show_apply_error(&path, &format!("cannot fetch it: {e}"));
                }
            }
            Ok(done) => {
                // Decided again with fresh disk facts (the temp file is
                // moved into place, or removed).
                self.settle(&path, Some(&done));
            }
        }
    }
}
