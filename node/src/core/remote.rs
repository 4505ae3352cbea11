//! Remote changes: a peer's entries are decided by the sync engine
//! ([`crate::engine::decide`]) and the decision is carried out, at once when
//! no data is needed, else through the queue of wanted versions.
//!
//! Every queued version (a fetch, or a delete, folder or metadata change
//! that failed or had to wait) is persisted, retried with backoff and shown
//! until it is applied, and decided again from the peer's entry with fresh
//! disk facts just before it is carried out ([`Core::settle`]): our version
//! or the disk may have changed meanwhile, and the decision must stay the
//! engine's, not a drop.

use super::*;
use crate::engine::{Action, Apply, DiskFacts, Op};
use tandem_common::VvOrder;

/// How a queued decision ended this time.
pub(super) enum Settled {
    /// Applied, or no longer wanted: the queue entry is gone.
    Done,
    /// Waiting for something that will happen (a transfer to release its
    /// source file): no error, looked at again when it does.
    Wait,
    /// The content has to be fetched first.
    Fetch,
}

impl Core {
    /// Decides a peer's index message. Returns how many of its entries
    /// were deletions of paths this node had never heard of: the only
    /// entries that grow the index without growing the folder, which the
    /// link rate-limits.
    pub(super) fn on_remote_index(
        &mut self,
        peer: NodeId,
        entries: Vec<(u64, FileEntry)>,
        contents: HashMap<RelPath, tandem_common::proto::FileData>,
    ) -> usize {
        let Some(max) = entries.iter().map(|(s, _)| *s).max() else {
            return 0;
        };
        let unknown_tombstones = entries
            .iter()
            .filter(|(_, e)| e.deleted && self.index.get(&e.path).is_none())
            .count();
        // Live entries first, so a rename's new name can reuse the old
        // file's blocks before the old name is deleted; deletions deepest
        // first, so directories are empty when their turn comes.
        // Links last: a link that replaces a folder finds the deletions of
        // its files queued (they have no blocks to lend).
        let (mut tombs, lives): (Vec<FileEntry>, Vec<FileEntry>) =
            entries.into_iter().map(|(_, e)| e).partition(|e| e.deleted);
        tombs.sort_by(|a, b| b.path.cmp(&a.path));
        let (links, lives): (Vec<FileEntry>, Vec<FileEntry>) = lives
            .into_iter()
            .partition(|e| matches!(e.kind, EntryKind::Link(_)));
        // Folders before anything else, parents before their children:
        // a rename into a folder this node does not have yet would make
        // the folder itself, and the look that follows would record it as
        // a folder made here, a write of ours concurrent with the peer's
        // folder. A delete of that folder on the peer's side would then
        // not cover our write, and the folder would come back everywhere.
        let (mut dirs, lives): (Vec<FileEntry>, Vec<FileEntry>) =
            lives.into_iter().partition(|e| e.kind == EntryKind::Dir);
        dirs.sort_by(|a, b| a.path.cmp(&b.path));
        for e in dirs {
            self.on_remote_entry(peer, e);
        }
        self.move_renamed(peer, &lives, &tombs);
        let mut versions = Vec::with_capacity(contents.len());
        for e in lives.into_iter().chain(tombs).chain(links) {
            if contents.contains_key(&e.path) {
                versions.push((e.path.clone(), e.version.clone()));
            }
            self.on_remote_entry(peer, e);
        }
        self.take_contents(contents, versions);
        // Everything up to `max` is now applied or queued (and the queue is
        // saved in the same commit as this progress).
        let name = self.peer_name(peer);
        let e = self.peers.entry(peer).or_insert((0, name));
        e.0 = e.0.max(max);
        self.peers_dirty.insert(peer);
        unknown_tombstones
    }

    /// Keeps the content that came with entries now queued for a fetch,
    /// fresh (not failing, not declined) and still the version that came
    /// with it, up to [`crate::pace::GIVEN_MAX_HELD`] bytes held; the rest
    /// is dropped (asked for when its turn comes).
    fn take_contents(
        &mut self,
        mut contents: HashMap<RelPath, tandem_common::proto::FileData>,
        versions: Vec<(RelPath, VersionVector)>,
    ) {
        for (path, version) in versions {
            let Some(data) = contents.remove(&path) else {
                continue;
            };
            if self.io.pace.given_held() + data.0.len() > crate::pace::GIVEN_MAX_HELD {
                break;
            }
            if let Some(n) = self.needed.get_mut(&path)
                && n.w.entry.version == version
                && n.w.entry.is_live_file()
                && !n.in_flight
                && n.error.is_none()
                && !n.declined
            {
                n.given = Some(transfer::Given::new(data, &self.io.pace));
            }
        }
    }

    /// Renames in this batch: a new name whose content is a file of ours
    /// that the same batch deletes is made by renaming that file, not by
    /// copying its blocks (a 100 MiB rename costs a rename). Both halves
    /// are decided by the engine first, and the file must still be what
    /// the index says; otherwise (or when the rename fails) the normal
    /// path rebuilds it from the blocks. The deletion then finds the old
    /// name gone and only records it. A crash after the rename leaves the
    /// file at its new name: nothing is lost.
    fn move_renamed(&mut self, peer: NodeId, lives: &[FileEntry], tombs: &[FileEntry]) {
        if tombs.is_empty() {
            return;
        }
        // New files of the batch by content, to pair each deletion in one
        // lookup (a batch can hold thousands of both).
        let mut by_hash: HashMap<tandem_common::ContentHash, Vec<&FileEntry>> = HashMap::new();
        for e in lives.iter().filter(|e| e.is_live_file()) {
            by_hash.entry(e.hash).or_default().push(e);
        }
        let mut taken = HashSet::new();
        for t in tombs {
            let Some(old) = self.index.get(&t.path).map(|r| (r.entry.clone(), r.stat)) else {
                continue;
            };
            let (old, Some(old_stat)) = old else { continue };
            if !old.is_live_file() || self.in_use.contains_key(&old.path) {
                continue;
            }
            let Some(new) = by_hash.get(&old.hash).and_then(|c| {
                c.iter().copied().find(|e| {
                    e.size == old.size
                        && !taken.contains(&e.path)
                        && self.index.get(&e.path).is_none_or(|r| r.entry.deleted)
                })
            }) else {
                continue;
            };
            match self.rename_into(peer, &old, old_stat, t, new) {
                Ok(true) => {
                    taken.insert(new.path.clone());
                }
                Ok(false) => {}
                Err(e) => tracing::debug!(
                    "{} is not renamed to {} ({e}); it is rebuilt from its blocks",
                    old.path,
                    new.path
                ),
            }
        }
    }

    /// [`Core::move_renamed`] for one pair: true when `new` is in place.
    fn rename_into(
        &mut self,
        peer: NodeId,
        old: &FileEntry,
        old_stat: crate::index::LocalStat,
        tomb: &FileEntry,
        new: &FileEntry,
    ) -> std::io::Result<bool> {
        let started = Instant::now();
        let queued = |p: &RelPath| self.needed.get(p).map(|n| n.w.entry.version.clone());
        let (q_old, q_new) = (queued(&tomb.path), queued(&new.path));
        let gone = match self.decide(tomb, q_old.as_ref())? {
            (Action::Apply(a), _) if a.op == Op::Delete && !a.keep_ours_as_conflict => a,
            _ => return Ok(false),
        };
        let Apply {
            mut entry,
            bump,
            keep_ours_as_conflict,
            exact,
            op,
        } = match self.decide(new, q_new.as_ref())? {
            (Action::Apply(a), None) => a,
            (Action::Apply(a), Some(l)) if l.deleted => a,
            _ => return Ok(false),
        };
        if op != Op::Fetch || keep_ours_as_conflict {
            return Ok(false);
        }
        let (from, to) = (old.path.to_disk(&self.root), new.path.to_disk(&self.root));
        // Still the file the index describes (deciding looked at the disk).
        let now = std::fs::symlink_metadata(&from)?;
        if !now.is_file() || scan::local_stat(&now) != old_stat {
            return Ok(false);
        }
        let parent = to
            .parent()
            .ok_or_else(|| std::io::Error::other("no parent"))?;
        if bump {
            self.index.bump(&mut entry.version);
        }
        let mut tombstone = gone.entry;
        if gone.bump {
            self.index.bump(&mut tombstone.version);
        }
        self.journal.note(&mut entry, exact.then_some(peer));
        self.journal
            .note(&mut tombstone, gone.exact.then_some(peer));
        let made = super::apply::make_parents(&self.root, parent, &mut self.journal)?;
        self.note_made(made);
        super::apply::rename2(&from, &to, libc::RENAME_NOREPLACE)?;
        crate::crashpoint::held("rename-moved");
        let st = match super::apply::set_meta(&to, &entry) {
            Ok(st) => Some(st),
            // Removed (or moved away) here right after it was renamed: the
            // peer's rename is done, and the removal is a change of ours,
            // found by the look that follows. (It cannot be renamed back,
            // and rebuilding the new name would undo the removal.)
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(
                    "{}: removed here right after it was renamed for {}; the removal is a change of ours",
                    new.path,
                    self.peer_name(peer)
                );
                self.pending.insert(new.path.clone(), Instant::now());
                None
            }
            Err(e) => {
                // Back where it was, so nothing looks like a rename made
                // here; the new name is then rebuilt from the blocks.
                if let Err(back) = super::apply::rename2(&to, &from, libc::RENAME_NOREPLACE) {
                    tracing::warn!(
                        "cannot put {} back at {} after failing to set its metadata ({back}); it is looked at as it is",
                        new.path,
                        old.path
                    );
                }
                return Err(e);
            }
        };
        crate::crashpoint::reached("rename-placed");
        for d in [from.parent(), Some(parent)].into_iter().flatten() {
            self.dirs_to_sync.insert(d.to_path_buf());
        }
        let from_name = self.peer_name(peer);
        tracing::info!(
            "received {} from {from_name}: {} in {:.1?} (0 B over the network, renamed from {})",
            new.path,
            human_size(entry.size),
            started.elapsed(),
            old.path
        );
        crate::metrics::Metrics::add(&self.io.metrics.transfers, 1);
        self.io.events.emit(EventKind::Transferred {
            path: new.path.clone(),
            from: from_name,
            to: self.name.clone(),
            size: entry.size,
            sent: 0,
            millis: started.elapsed().as_millis() as u64,
        });
        // First: its block list comes from the old name's record.
        self.index.record_remote(entry, st, exact.then_some(peer));
        // The old name's deletion is recorded now, before anything looks
        // at the disk there again (it would take the missing file for a
        // delete made here).
        let from_name = self.peer_name(peer);
        tracing::info!("deleted {} (deleted on {from_name})", old.path);
        self.io.events.emit(EventKind::Deleted {
            path: old.path.clone(),
            by: from_name,
        });
        self.index
            .record_remote(tombstone, None, gone.exact.then_some(peer));
        Ok(true)
    }

    /// Decides a peer's entry and carries the decision out.
    pub(super) fn on_remote_entry(&mut self, peer: NodeId, mut remote: FileEntry) {
        let queued = self
            .needed
            .get(&remote.path)
            .map(|n| n.w.entry.version.clone());
        let (action, local) = match self.decide(&remote, queued.as_ref()) {
            Ok(d) => d,
            Err(e) => {
                // Not knowing what is here is not a decision: keep the
                // peer's entry queued (unless a newer one already is) and
                // decide when the disk answers.
                let path = remote.path.clone();
                if engine::replaces_queued(&remote.version, queued.as_ref()) {
                    self.enqueue(peer, remote);
                }
                self.apply_failed(&path, &format!("cannot read it here: {e}"));
                return;
            }
        };
        let path = remote.path.clone();
        match action {
            Action::Apply(a) if a.op != Op::Fetch => match self.carry_out(peer, a, local, None) {
                Ok(Settled::Done) => self.drop_need(&path),
                Ok(_) => {
                    self.enqueue(peer, remote);
                    self.wait(&path);
                }
                Err(e) => {
                    self.enqueue(peer, remote);
                    self.apply_failed(&path, &e);
                }
            },
            Action::Apply(_) => {
                // A list left out is the same as that of local content with
                // the same hash (a rename or a copy): take it now, so the
                // transfer's sources are claimed before the old name's
                // deletion in this batch runs.
                self.index.fill_blocks(&mut remote);
                self.enqueue(peer, remote);
            }
            Action::Blocked(_, why) => {
                self.enqueue(peer, remote);
                self.apply_failed(&path, &why);
            }
            Action::Declined => {
                if engine::replaces_queued(&remote.version, queued.as_ref()) {
                    self.enqueue(peer, remote);
                }
                self.decline(&path);
            }
            other => self.not_applied(peer, &remote, other),
        }
    }

    /// A send-only node does not take the queued version at `path`: it
    /// stays queued (and saved), shown as a difference, and is looked at
    /// again only now and then (it is decided again whenever a newer
    /// version arrives, and dropped by `tandem override`).
    pub(super) fn decline(&mut self, path: &RelPath) {
        self.unpace(path);
        let Some(n) = self.needed.get_mut(path) else {
            return;
        };
        n.in_flight = false;
        n.given = None;
        n.retry_at = Instant::now() + Duration::from_secs(3600);
        if !n.declined {
            n.declined = true;
            let from = n.w.from;
            let from = self.peer_name(from);
            tracing::info!(
                "not taking {from}'s change to {path}: this node is send-only (`tandem override` pushes this node's version)"
            );
        }
    }

    /// Asks the engine about `remote`, with fresh facts from the disk.
    fn decide(
        &mut self,
        remote: &FileEntry,
        queued: Option<&VersionVector>,
    ) -> std::io::Result<(Action, Option<FileEntry>)> {
        // An ignored path is not looked at (nor indexed) for a peer's sake;
        // nor is one of our temp names (never indexed here: taken, it would
        // look deleted to the next scan).
        let ignored = scan::is_temp_name(&remote.path)
            || self.is_ignored(&remote.path, remote.kind == EntryKind::Dir);
        let disk = if ignored {
            DiskFacts::Indexed
        } else {
            self.disk_facts(&remote.path)?
        };
        // After the refresh: it may have indexed a local change.
        let local = match self.index.get(&remote.path) {
            Some(r) if !r.entry.deleted => Some(r.entry),
            // An entry our deletion replaced is decided against it, folder
            // made here or not: it wins (as before).
            Some(r) if remote.replaced_in(&r.entry) => Some(r.entry),
            gone => {
                let tomb = gone.map(|r| r.entry);
                match self.made_folder(&remote.path, tomb.as_ref())? {
                    Some(made) => Some(made),
                    None => tomb,
                }
            }
        };
        let cx = engine::Context {
            disk,
            locked: self.holds_remote(remote),
            queued,
            ignored,
            mode: self.mode,
            ours_unsent: local.as_ref().is_some_and(|l| self.index.is_unsent(l)),
        };
        Ok((engine::decide(local.as_ref(), remote, &cx), local))
    }

    /// The decisions that take nothing from the peer: ignore, refuse,
    /// re-announce ours, or hold the change for a lock.
    fn not_applied(&mut self, peer: NodeId, remote: &FileEntry, action: Action) {
        let path = &remote.path;
        // A queued older version of the same history is not wanted either:
        // the peer has moved past it, and we do not take where it went.
        if matches!(
            action,
            Action::Ignore | Action::Announce | Action::Reassert { .. }
        ) && self
            .needed
            .get(path)
            .is_some_and(|n| remote.version.compare(&n.w.entry.version) == VvOrder::After)
        {
            self.drop_need(path);
        }
        match action {
            Action::Ignore => {}
            Action::Excluded => {
                self.drop_need(path);
                tracing::debug!(
                    "{path}: ignored here; {}'s change is not taken",
                    self.peer_name(peer)
                );
            }
            Action::Announce => {
                tracing::debug!(
                    "{path}: ours wins a conflict with {}'s version; announcing ours again",
                    self.peer_name(peer)
                );
                self.index.reannounce(path);
            }
            Action::Reject(why) => tracing::warn!(
                "ignoring a malformed entry for {path} from {}: {why}",
                self.peer_name(peer)
            ),
            Action::Reassert {
                version,
                written,
                losers,
            } => {
                tracing::debug!(
                    "{path}: {}'s version is one ours replaced, or ours but for its history; ours recorded with both histories and announced again",
                    self.peer_name(peer)
                );
                self.index.reassert(path, version, written, losers);
            }
            Action::Hold => {
                self.drop_need(path);
                self.hold_remote(peer, remote);
            }
            Action::Apply(_) | Action::Blocked(..) | Action::Declined => {
                unreachable!("not_applied is only given decisions that take nothing")
            }
        }
    }

    /// Queues the peer's entry (replacing an older one at the path).
    fn enqueue(&mut self, peer: NodeId, entry: FileEntry) {
        let path = entry.path.clone();
        let sources = if entry.is_live_file() {
            self.claim_sources(&entry)
        } else {
            Vec::new()
        };
        let need = Need {
            w: Wanted { entry, from: peer },
            in_flight: false,
            retry_at: Instant::now(),
            attempts: 0,
            sources,
            error: None,
            declined: false,
            given: None,
            paced: true,
        };
        self.io.pace.add(peer);
        self.wanted_dirty.insert(path.clone());
        // An older version's transfer that is still running finishes as
        // superseded and its result is dropped.
        if let Some(old) = self.needed.insert(path.clone(), need) {
            if old.paced {
                self.io.pace.sub(old.w.from);
            }
            self.release_sources(&old.sources);
            if let Some(n) = self.needed.get_mut(&path) {
                // Still failing until shown otherwise.
                n.error = old.error;
            }
        }
    }

    /// The queued version at `path` waits for a transfer that reads from
    /// the file (see [`Core::on_transfers_done`]), not for a timer.
    pub(super) fn wait(&mut self, path: &RelPath) {
        self.unpace(path);
        if let Some(n) = self.needed.get_mut(path) {
            n.in_flight = false;
            n.retry_at = Instant::now() + Duration::from_secs(3600);
            self.waiting.insert(path.clone());
        }
    }

    /// The queued version at `path` may stay queued for a while (it failed,
    /// waits for a transfer, or is declined): its peer's link no longer
    /// waits for it (see [`crate::pace`]).
    pub(super) fn unpace(&mut self, path: &RelPath) {
        if let Some(n) = self.needed.get_mut(path)
            && std::mem::take(&mut n.paced)
        {
            self.io.pace.sub(n.w.from);
        }
    }

    /// Forgets the queued version at `path`. A folder's queued delete that
    /// waits for what is inside to go is looked at again now.
    pub(super) fn drop_need(&mut self, path: &RelPath) {
        if let Some(old) = self.needed.remove(path) {
            if old.paced {
                self.io.pace.sub(old.w.from);
            }
            let mut parent = path.parent();
            while let Some(p) = parent {
                if let Some(n) = self.needed.get_mut(&p)
                    && !n.in_flight
                {
                    n.retry_at = n.retry_at.min(Instant::now());
                }
                parent = p.parent();
            }
            self.release_sources(&old.sources);
            self.wanted_dirty.remove(path);
            self.unwanted.push(path.clone());
            if old.error.is_some() {
                self.io
                    .events
                    .emit(EventKind::ApplyRecovered { path: path.clone() });
                tracing::info!("{path}: the change that could not be applied is settled now");
            }
        }
    }

    /// The queued version at `path` could not be applied: say so (once per
    /// distinct reason), and try again later with backoff.
    pub(super) fn apply_failed(&mut self, path: &RelPath, why: &dyn std::fmt::Display) {
        self.unpace(path);
        let Some(n) = self.needed.get_mut(path) else {
            return;
        };
        n.in_flight = false;
        n.given = None;
        n.attempts += 1;
        let backoff = Duration::from_millis(250 * (1u64 << n.attempts.min(7)));
        n.retry_at = Instant::now() + backoff;
        let why = why.to_string();
        tracing::debug!("cannot apply {path}: {why}; retrying in {backoff:?}");
        self.show_apply_error(path, &why);
    }

    /// Shows why the queued version at `path` is not applied: the file's
    /// state is "error" until it is, and the log and the feed say why (once
    /// per distinct reason).
    pub(super) fn show_apply_error(&mut self, path: &RelPath, why: &str) {
        let Some(n) = self.needed.get(path) else {
            return;
        };
        if n.error.as_deref() == Some(why) {
            return;
        }
        let from = self.peer_name(n.w.from);
        tracing::error!("cannot apply {path} (from {from}): {why}; retrying with backoff");
        self.io.events.emit(EventKind::ApplyFailed {
            path: path.clone(),
            from,
            error: why.to_string(),
        });
        if let Some(n) = self.needed.get_mut(path) {
            n.error = Some(why.to_string());
        }
    }

    /// Carries out the queued version at `path` now: decides again with
    /// fresh disk facts, then installs `fetched` (the content, when it was
    /// fetched), or deletes, makes the folder or sets metadata. Whatever
    /// the engine says now is what happens; a failure stays queued.
    pub(super) fn settle(&mut self, path: &RelPath, fetched: Option<&transfer::Done>) -> Settled {
        let Some(n) = self.needed.get(path) else {
            return Settled::Done;
        };
        let (remote, from) = (n.w.entry.clone(), n.w.from);
        let decided = self.decide(&remote, None);
        // A fetched temp file is `install`'s to move or remove; when the
        // decision no longer installs it, it is of no use.
        let installs = matches!(&decided, Ok((Action::Apply(a), _)) if a.op == Op::Fetch);
        if let Some(done) = fetched
            && !installs
        {
            let _ = std::fs::remove_file(&done.tmp);
        }
        let outcome = match decided {
            Err(e) => Err(format!("cannot read it here: {e}")),
            Ok((Action::Apply(a), local)) => self
                .carry_out(from, a, local, fetched)
                .map_err(|e| e.to_string()),
            Ok((Action::Blocked(_, why), _)) => Err(why.to_string()),
            Ok((Action::Declined, _)) => {
                self.decline(path);
                return Settled::Wait;
            }
            Ok((other, _)) => {
                self.drop_need(path);
                self.not_applied(from, &remote, other);
                return Settled::Done;
            }
        };
        match outcome {
            Ok(Settled::Done) => {
                self.drop_need(path);
                Settled::Done
            }
            Ok(Settled::Wait) => {
                self.wait(path);
                Settled::Wait
            }
            Ok(Settled::Fetch) => Settled::Fetch,
            Err(e) => {
                self.apply_failed(path, &e);
                Settled::Wait
            }
        }
    }

    /// Makes the disk and the index show `a`. `fetched` is its content when
    /// the operation is a fetch.
    fn carry_out(
        &mut self,
        from: NodeId,
        a: Apply,
        local: Option<FileEntry>,
        fetched: Option<&transfer::Done>,
    ) -> std::io::Result<Settled> {
        let Apply {
            mut entry,
            bump,
            keep_ours_as_conflict,
            exact,
            op,
        } = a;
        if bump {
            self.index.bump(&mut entry.version);
        }
        let origin = exact.then_some(from);
        // Written down when it changes the disk: not a fetch still to be
        // made, nor the deletion of what is not here.
        let changes_disk = match op {
            Op::Fetch => fetched.is_some(),
            Op::Delete => local.as_ref().is_some_and(|l| !l.deleted),
            _ => true,
        };
        if changes_disk {
            self.journal.note(&mut entry, origin);
        }
        match op {
            Op::Delete => self.apply_delete(from, entry, local, keep_ours_as_conflict, origin),
            Op::MakeDir => self
                .apply_dir(from, entry, local, keep_ours_as_conflict, origin)
                .map(|()| Settled::Done),
            Op::SetMeta => self.apply_meta(from, entry, origin).map(|()| Settled::Done),
            Op::MakeLink => self.apply_link(from, entry, local, keep_ours_as_conflict, origin),
            Op::Fetch => match fetched {
                Some(done) => self
                    .install(from, entry, local, keep_ours_as_conflict, origin, done)
                    .map(|()| Settled::Done),
                None => Ok(Settled::Fetch),
            },
        }
    }
}
