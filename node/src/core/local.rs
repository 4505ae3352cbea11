//! Local changes: watcher hints and scans become observations in the
//! index (never the other way round), and uploads (`put`) become local
//! versions.

use std::os::unix::fs::MetadataExt;

use super::apply::move_file;
use super::*;
use crate::engine::DiskFacts;
use crate::index::LocalStat;
use tandem_common::hashing::Hashed;

/// Paths waiting to be looked at beyond which a new file's name is not
/// compared with them as a rename (each is a lookup).
const MAX_RENAME_CANDIDATES: usize = 1000;

/// Where a file that may show up under another name was (see
/// [`Core::process_due`]).
pub(super) enum Moved {
    /// At a path this batch found gone: what it held.
    Gone(Hashed),
    /// At a path to look at soon: its record is still there.
    Soon(RelPath),
}

/// A folder of kept files (conflict copies or versions) and how it names
/// them.
struct Shelf {
    dir: PathBuf,
    mark: &'static str,
    /// Who the replaced current version is said to be by; `None`: its
    /// author (conflict copies name the version's author).
    who: Option<String>,
}

/// The ignore patterns in force when the node last ran (state folder).
const IGNORES_SEEN: &str = "ignores.seen";

impl Core {
    /// Puts an upload in place (replacing what is there by the normal
    /// rules: it becomes a new local version) unless the path is locked by
    /// someone else than `by`. The lock's owner may put its file through
    /// the node the lock was taken through, where its changes flow at
    /// once (elsewhere the upload would only be held until the unlock).
    pub(super) fn put(
        &mut self,
        path: &RelPath,
        tmp: &Path,
        mtime_ns: i64,
        mode: u32,
        who: &str,
        by: uuid::Uuid,
    ) -> Result<(), ApiError> {
        if let Some(lock) = self.locks.get(path) {
            let l = &lock.info;
            if l.owner != by {
                return Err(ApiError::LockedBy {
                    path: path.to_string(),
                    owner_name: l.owner_name.clone(),
                    owner: l.owner,
                    since: tandem_common::display::local_time(l.since_ns),
                });
            }
            if lock.via != self.index.me() {
                return Err(ApiError::Other(format!(
                    "you locked {path} through node {}, so a change made here would be held until you unlock it; put it through {} (tandem --node ITS-ADDRESS put …), or unlock first; nothing was changed",
                    l.via, l.via
                )));
            }
        }
        if let Some(rule) = self.ignores.matched(path, false) {
            return Err(ApiError::Other(format!(
                "{path} is ignored here (pattern {:?} in {}): it would not sync, so nothing was uploaded",
                rule.pattern, rule.source
            )));
        }
        let full = path.to_disk(&self.root);
        let io = |e: std::io::Error| ApiError::Other(format!("cannot write {path}: {e}"));
        if let Some(c) = self.other_spelling(path).map_err(io)? {
            return Err(ApiError::Other(format!(
                "{c}; nothing was uploaded (upload it under another name)"
            )));
        }
        if !scan::parents_are_dirs(&self.root, path).map_err(io)? {
            return Err(ApiError::Other(format!(
                "{path} is under a symlink or a file here; refusing to write through it"
            )));
        }
        if full.is_dir() {
            return Err(ApiError::Other(format!("{path} is a directory here")));
        }
        std::fs::set_permissions(
            tmp,
            std::fs::Permissions::from_mode(mode & tandem_common::model::SYNCED_MODE_BITS),
        )
        .map_err(io)?;
        filetime::set_file_mtime(tmp, file_time(mtime_ns)).map_err(io)?;
        // Anything on disk not yet indexed is indexed first, so it is a
        // version that the upload replaces, not something silently lost.
        if let Err(e) = self.refresh(path) {
            return Err(io(e));
        }
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
            self.dirs_to_sync.insert(parent.to_path_buf());
        }
        // Our indexed file is swapped out and removed only if it is still
        // ours (as an install does): a save landing meanwhile is kept.
        // Where nothing is indexed, nothing that appears meanwhile is
        // replaced; an indexed link is replaced (a change made here).
        let indexed = self.index.get(path).map(|r| r.entry).filter(|e| !e.deleted);
        let put_io = |e: std::io::Error| {
            ApiError::Other(format!(
                "cannot write {path}: {e}; the upload was not stored (put it again)"
            ))
        };
        if let Some(l) = indexed.as_ref().filter(|e| e.is_live_file()) {
            let inode = std::fs::metadata(tmp).map_err(io)?.ino();
            let expect = Some((self.index.stat_of(path), l.hash));
            let not_kept = crate::versions::Keeper {
                dir: None,
                max_bytes: 0,
                path: path.clone(),
                cause: who.to_string(),
            };
            let swapped =
                |inode, tag| super::apply::swapped_path(&self.state_dir, path, inode, tag, None);
            let keep = (&not_kept, false);
            let out = super::apply::place(tmp, inode, &full, expect, mtime_ns, keep, &swapped)
                .map_err(put_io)?;
            if let Some(out) = out.came_out {
                let me = self.index.me();
                let name = self.name.clone();
                if let Err(e) = self.keep_aside(&out.path, path, &name, out.mtime_ns, me) {
                    // The upload is in place; what came out stays where
                    // the next start keeps it as a conflict copy.
                    tracing::error!(
                        "cannot keep the change to {path} that the upload replaced as a conflict copy ({e}); it is at {}, kept as one when the node starts again",
                        out.path.display()
                    );
                }
            }
        } else if indexed.is_some() {
            move_file(tmp, &full).map_err(io)?;
        } else {
            super::apply::move_no_replace(tmp, &full).map_err(put_io)?;
        }
        tracing::info!("{who} put {path}");
        let seen = scan::stat(&full).map_err(io)?;
        self.look_at(path, seen, true);
        Ok(())
    }

    /// Why `path` may not be changed by a client here: it is locked.
    fn locked_error(&self, path: &RelPath) -> Option<ApiError> {
        self.locks.get(path).map(|l| ApiError::LockedBy {
            path: path.to_string(),
            owner_name: l.info.owner_name.clone(),
            owner: l.info.owner,
            since: tandem_common::display::local_time(l.info.since_ns),
        })
    }

    /// The conflicts folder.
    pub(super) fn conflicts_dir(&self) -> PathBuf {
        crate::conflicts::folder(&self.state_dir)
    }

    /// Restores or discards a kept conflict copy (see [`crate::conflicts`]).
    pub(super) fn resolve_conflict(
        &mut self,
        id: &str,
        action: ConflictAction,
        by: &str,
    ) -> Result<ConflictResolution, ApiError> {
        let replaced_as = match action {
            ConflictAction::Discard => {
                crate::conflicts::discard(&self.conflicts_dir(), &self.name, id)?;
                tracing::info!("{by} discarded the conflict copy {id}");
                self.io.events.emit(EventKind::ConflictDiscarded {
                    id: id.to_string(),
                    by: by.to_string(),
                });
                None
            }
            ConflictAction::Restore => self.restore_conflict(id, by)?,
        };
        Ok(ConflictResolution {
            node: self.name.clone(),
            id: id.to_string(),
            action,
            path: crate::conflicts::parse_id(id)
                .map(|(p, _)| p)
                .filter(|_| action == ConflictAction::Restore),
            replaced_as,
        })
    }

    /// Makes the kept copy `id` the current version of its file (see
    /// [`Core::restore_kept`]); the version it replaces is kept as a
    /// conflict copy. Returns where.
    fn restore_conflict(&mut self, id: &str, by: &str) -> Result<Option<String>, ApiError> {
        let dir = self.conflicts_dir();
        let kept = crate::conflicts::locate(&dir, &self.name, id)?;
        let Some((path, _)) = crate::conflicts::parse_id(id) else {
            return Err(ApiError::Other(format!(
                "the name of the conflict copy {id} does not say which file it is a version of; copy it into place by hand from {}",
                kept.display()
            )));
        };
        let shelf = Shelf {
            dir,
            mark: ".conflict-",
            who: None,
        };
        let replaced_as = self.restore_kept(&shelf, &kept, &path)?;
        tracing::info!(
            "{by} restored {path} from the conflict copy {id}{}",
            replaced_as
                .as_ref()
                .map(|r| format!("; the version it replaced is kept as {r}"))
                .unwrap_or_default()
        );
        self.io.events.emit(EventKind::ConflictRestored {
            path,
            by: by.to_string(),
            replaced_as: replaced_as.clone(),
        });
        Ok(replaced_as)
    }

    /// Makes the kept version `id` (see [`crate::versions`]) the current
    /// one again, like a conflict copy; the version it replaces is kept as
    /// a version in turn.
    pub(super) fn restore_version(
        &mut self,
        id: &str,
        by: &str,
    ) -> Result<tandem_common::proto::VersionRestoration, ApiError> {
        let dir = crate::versions::folder(&self.state_dir);
        let (kept, path) = crate::versions::locate(&dir, &self.name, id)?;
        let shelf = Shelf {
            dir,
            mark: crate::versions::MARK,
            who: Some(self.name.clone()),
        };
        let replaced_as = self.restore_kept(&shelf, &kept, &path)?;
        tracing::info!(
            "{by} restored {path} from the version {id}{}",
            replaced_as
                .as_ref()
                .map(|r| format!("; the version it replaced is kept as {r}"))
                .unwrap_or_default()
        );
        self.io.events.emit(EventKind::VersionRestored {
            path: path.clone(),
            by: by.to_string(),
        });
        Ok(tandem_common::proto::VersionRestoration {
            node: self.name.clone(),
            id: id.to_string(),
            path,
            replaced_as,
        })
    }

    /// Makes the kept file at `kept` (on `shelf`) the current version of
    /// `path`: a new local change (modified now, so it is also the newest),
    /// which syncs everywhere. What was there is indexed first and kept on
    /// the shelf; the two are swapped in one step (`RENAME_EXCHANGE`), so
    /// the path is never empty (a crash in between would read as a delete).
    /// Returns where the replaced version is kept (relative to the shelf).
    fn restore_kept(
        &mut self,
        shelf: &Shelf,
        kept: &Path,
        path: &RelPath,
    ) -> Result<Option<String>, ApiError> {
        let path = path.clone();
        let dir = &shelf.dir;
        if self.is_ignored(&path, false) {
            return Err(ApiError::Other(format!(
                "cannot restore {path}: it is ignored here, so it would not sync"
            )));
        }
        if let Some(e) = self.locked_error(&path) {
            return Err(e);
        }
        let io = |e: std::io::Error| ApiError::Other(format!("cannot restore {path}: {e}"));
        if !scan::parents_are_dirs(&self.root, &path).map_err(io)? {
            return Err(ApiError::Other(format!(
                "cannot restore {path}: a folder above it is a file or a link here"
            )));
        }
        let full = path.to_disk(&self.root);
        // Whatever is there is indexed first: it becomes the version the
        // restore replaces.
        self.refresh(&path).map_err(io)?;
        let current = match std::fs::symlink_metadata(&full) {
            Ok(m) if m.is_dir() => {
                return Err(ApiError::Other(format!(
                    "cannot restore {path}: it is a folder here; move it away first"
                )));
            }
            Ok(m) if m.is_file() => {
                let who = shelf.who.clone().unwrap_or_else(|| {
                    self.index
                        .get(&path)
                        .filter(|r| !r.entry.deleted)
                        .map_or_else(|| self.name.clone(), |r| self.author_of(&r.entry))
                });
                Some((who, scan::mtime_ns(&m)))
            }
            Ok(_) => {
                return Err(ApiError::Other(format!(
                    "cannot restore {path}: it is neither a file nor a folder here; refusing to replace it"
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(e)),
        };
        // Modified now while it is still kept: if anything below fails,
        // the tree is as it was.
        filetime::set_file_mtime(kept, file_time(now_ns())).map_err(io)?;
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let replaced = match current {
            None => {
                if let Err(e) = super::apply::move_no_replace(kept, &full) {
                    if full.symlink_metadata().is_ok() {
                        return Err(ApiError::Other(format!(
                            "cannot restore {path}: a file appeared there meanwhile; nothing was changed, try again"
                        )));
                    }
                    return Err(io(e));
                }
                crate::conflicts::remove_empty_parents(dir, kept);
                None
            }
            Some((who, mtime)) => Some(self.swap_in(shelf, kept, &full, &path, &who, mtime)?),
        };
        if let Some(parent) = full.parent() {
            self.dirs_to_sync.insert(parent.to_path_buf());
        }
        let replaced_as = replaced.map(|r| {
            r.strip_prefix(dir)
                .unwrap_or(&r)
                .to_string_lossy()
                .into_owned()
        });
        let seen = scan::stat(&full).map_err(io)?;
        self.look_at(&path, seen, true);
        Ok(replaced_as)
    }

    /// Swaps the kept file at `kept` with the current file at `full`, then
    /// gives the current version (now at `kept`) a name of its own on the
    /// shelf (made by `who`, modified at `mtime`). Returns where it is kept.
    fn swap_in(
        &mut self,
        shelf: &Shelf,
        kept: &Path,
        full: &Path,
        path: &RelPath,
        who: &str,
        mtime: i64,
    ) -> Result<PathBuf, ApiError> {
        let dir = &shelf.dir;
        let name = || crate::conflicts::aside_dest_marked(dir, shelf.mark, path, who, mtime);
        let io = |e: std::io::Error| ApiError::Other(format!("cannot restore {path}: {e}"));
        match super::apply::rename2(kept, full, libc::RENAME_EXCHANGE) {
            Ok(()) => {}
            Err(e) if super::apply::unsupported(&e) => {
                // No exchange here (a state folder on another filesystem):
                // the current version leaves the tree first (in one step,
                // then copied), then the copy goes in where nothing is (a
                // save landing in between stays, and the current version
                // is put back only where nothing is either).
                let dest = name().map_err(io)?;
                super::apply::move_out_of_tree(full, &dest).map_err(io)?;
                if let Err(e) = super::apply::move_no_replace(kept, full) {
                    if let Err(back) = super::apply::move_no_replace(&dest, full) {
                        return Err(ApiError::Other(format!(
                            "cannot restore {path}: {e}; and the current version could not be put back ({back}): it is kept as {}",
                            dest.display()
                        )));
                    }
                    return Err(io(e));
                }
                crate::conflicts::remove_empty_parents(dir, kept);
                return Ok(dest);
            }
            Err(e) => return Err(io(e)),
        }
        // Restored. The replaced version sits under the kept file's old
        // name until it gets its own; if that rename fails it stays there.
        let named = name().and_then(|dest| std::fs::rename(kept, &dest).map(|()| dest));
        match named {
            Ok(dest) => {
                crate::conflicts::remove_empty_parents(dir, kept);
                Ok(dest)
            }
            Err(e) => {
                tracing::warn!(
                    "{path} restored; the version it replaced is kept as {} (cannot rename it: {e})",
                    kept.display()
                );
                Ok(kept.to_path_buf())
            }
        }
    }

    /// Looks at every pending path whose time has come.
    pub(super) fn process_due(&mut self) {
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
        let seen: Vec<(RelPath, std::io::Result<Seen>)> = due
            .into_iter()
            .map(|p| {
                let s = scan::stat_rel(&self.root, &p);
                (p, s)
            })
            .collect();
        // Where a file that shows up under another name (a rename) may
        // come from, so that it is not read and hashed again: a file this
        // batch finds gone (its content is kept here: the batch replaces
        // its record), or one at a path to look at soon (a rename into a
        // new folder is seen in two batches; its record is read when a
        // new name matches).
        let gone = seen
            .iter()
            .filter(|(_, s)| matches!(s, Ok(Seen::Absent | Seen::Other)))
            .filter_map(|(p, _)| {
                let (st, h) = self.indexed_content(p)?;
                Some((st.inode, (st, Moved::Gone(h))))
            });
        let soon = (self.pending.len() <= MAX_RENAME_CANDIDATES)
            .then_some(self.pending.keys())
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let st = self.index.stat_of(p)?;
                Some((st.inode, (st, Moved::Soon(p.clone()))))
            });
        self.moved_away = soon.chain(gone).collect();
        let mut covered: Option<RelPath> = None;
        for (p, stat) in seen {
            // A directory rescanned in this batch already covered its children.
            if covered.as_ref().is_some_and(|c| p.is_inside(c)) {
                continue;
            }
            if p.as_str() == crate::ignores::IGNORE_FILE {
                self.reload_ignores();
            }
            match stat {
                Ok(Seen::Dir { .. }) if self.is_ignored(&p, true) => {}
                Ok(Seen::Dir { .. }) => {
                    self.reconcile(Some(&p));
                    covered = Some(p);
                }
                Ok(Seen::File(_) | Seen::Link(_)) if self.is_ignored(&p, false) => {}
                Ok(_) if self.ignores_indexed(&p) => {}
                Ok(seen) => {
                    self.look_at(&p, seen, true);
                }
                Err(e) => self.retry_later(&p, &e),
            }
        }
        self.moved_away.clear();
    }

    /// The stat and content of the file indexed at `p`, if any.
    fn indexed_content(&self, p: &RelPath) -> Option<(LocalStat, Hashed)> {
        let r = self.index.get(p)?;
        // Not a list that does not make the content hash (one of the older
        // kind, see `Index::relist`), nor a file found to hold other content
        // (see `Index::distrust`): the file is read instead.
        let st = self
            .index
            .trusted_stat(p)
            .filter(|_| tandem_common::hashing::makes_hash(&r.entry))?;
        let h = Hashed {
            size: r.entry.size,
            hash: r.entry.hash,
            blocks: r.entry.blocks.clone(),
        };
        Some((st, h))
    }

    /// The content of a file with stat `st`, when it is a file indexed
    /// under another name that is being looked at now or soon (see
    /// [`Core::process_due`]): the same inode, size and mtime, the test by
    /// which an unchanged file goes unread.
    fn known_content(&self, st: &LocalStat) -> Option<Hashed> {
        let (was, from) = self.moved_away.get(&st.inode)?;
        if was.size != st.size || was.mtime_ns != st.mtime_ns {
            return None;
        }
        match from {
            Moved::Gone(h) => Some(h.clone()),
            Moved::Soon(p) => self
                .indexed_content(p)
                .filter(|(now, _)| now == was)
                .map(|(_, h)| h),
        }
    }

    /// A path could not be looked at (EACCES, EMFILE, EIO...): that is not
    /// knowing, never a change. Look again later, backing off per path.
    pub(super) fn retry_later(&mut self, p: &RelPath, e: &dyn std::fmt::Display) {
        let n = self.io_retries.entry(p.clone()).or_insert(0);
        *n += 1;
        let delay = Duration::from_millis(250 * (1u64 << (*n).min(7)));
        tracing::warn!(
            "cannot read {p}: {e}; nothing is changed for it, looking again in {delay:?} (attempt {n})"
        );
        self.pending.insert(p.clone(), Instant::now() + delay);
    }

    /// Re-examines one non-directory path. Returns the number of changes.
    pub(super) fn look_at(&mut self, p: &RelPath, seen: Seen, log: bool) -> usize {
        // The ignore file is read as a file, never through a link: a link
        // there is not synced (every node would refuse to start with it).
        let seen = match seen {
            Seen::Link(_) if p.as_str() == crate::ignores::IGNORE_FILE => Seen::Other,
            s => s,
        };
        if self.hold_local(p, &seen) {
            return 0;
        }
        // A file is known again once hashed, a folder once walked (see
        // `reconcile`); a path that is gone is known to be gone.
        if matches!(seen, Seen::Absent | Seen::Other) {
            self.io_retries.remove(p);
        }
        match seen {
            Seen::Absent | Seen::Other => {
                // A folder made for a peer's file that is gone waits no more.
                self.made_dirs.remove(p);
                let gone = self.index.observe_missing(p);
                for g in &gone {
                    if log {
                        tracing::info!("deleted {g}");
                    }
                    if self
                        .index
                        .get(g)
                        .is_some_and(|r| r.entry.kind != EntryKind::Dir)
                    {
                        self.io.events.emit(EventKind::Deleted {
                            path: g.clone(),
                            by: self.name.clone(),
                        });
                    }
                }
                gone.len()
            }
            Seen::Dir { .. } if self.awaits_folder_entry(p) => 0,
            Seen::Dir { mode } => {
                let c = self.index.observe_dir(p, mode);
                self.log_change(p, c, log)
            }
            Seen::Link(st) => {
                if !self.index.needs_hash(p, &st) {
                    return 0;
                }
                match scan::read_link(&p.to_disk(&self.root)) {
                    Ok(target) => {
                        self.io_retries.remove(p);
                        let c = self.index.observe_link(p, st, target);
                        self.log_change(p, c, log)
                    }
                    // Replaced meanwhile: look again.
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                        self.pending.insert(p.clone(), Instant::now() + QUICK);
                        0
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        self.pending.insert(p.clone(), Instant::now() + QUICK);
                        0
                    }
                    Err(e) => {
                        self.retry_later(p, &format!("link: {e}"));
                        0
                    }
                }
            }
            Seen::File(st) => {
                if !self.index.needs_hash(p, &st) {
                    return 0;
                }
                // Renamed here: the same inode, size and mtime that left
                // another path a moment ago (the same test that lets an
                // unchanged file go unread).
                if let Some(h) = self.known_content(&st) {
                    tracing::debug!("{p}: a file known here under another name; not read again");
                    self.io_retries.remove(p);
                    let c = self.index.observe_file(p, st, &h);
                    return self.log_change(p, c, log);
                }
                match scan::hash_file(&p.to_disk(&self.root)) {
                    Ok((st, h)) => {
                        self.io_retries.remove(p);
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
                        self.retry_later(p, &e);
                        0
                    }
                }
            }
        }
    }

    pub(super) fn log_change(&self, p: &RelPath, c: Option<ChangeKind>, log: bool) -> usize {
        let Some(c) = c else { return 0 };
        let (size, dir) = self
            .index
            .get(p)
            .map(|r| (r.entry.size, r.entry.kind == EntryKind::Dir))
            .unwrap_or((0, false));
        let path = p.clone();
        match (c, dir) {
            // Logged by the index; the peer's change was shown when made.
            (ChangeKind::Applied, _) => return 1,
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
                (ChangeKind::Applied, _) => {}
            }
        }
        1
    }

    /// Reads the ignore patterns again (the file changed, or may have). When
    /// they differ: puts them in force, has the watcher follow, looks at the
    /// whole tree again (what is no longer ignored is picked up as local
    /// changes) and asks every peer to send its index again from the start
    /// (its changes to what was ignored here were not taken). A file that
    /// cannot be read leaves the patterns in force as they are.
    pub(super) fn reload_ignores(&mut self) {
        let new = match crate::ignores::Ignores::load(&self.root, &self.ignore_extra) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(
                    "cannot read {}: {e}; the ignore patterns in force stay",
                    crate::ignores::IGNORE_FILE
                );
                return;
            }
        };
        if *self.ignores == new {
            return;
        }
        for p in new.problems() {
            tracing::warn!("{p}");
        }
        if self.ignores.same_patterns(&new) {
            // Only where they are written changed (a comment line).
            let new = Arc::new(new);
            self.ignores = new.clone();
            self.shared_ignores.set(new);
            return;
        }
        tracing::info!(
            "the ignore patterns changed: {} in force now (`tandem ignored` lists what they match)",
            new.rules().len()
        );
        let new = Arc::new(new);
        self.ignores = new.clone();
        self.shared_ignores.set(new);
        self.remember_ignores();
        if let Some(w) = &self.watch_control {
            w.rewatch();
        }
        // Queued changes to what is ignored now are not wanted any more.
        let dropped: Vec<RelPath> = self
            .needed
            .iter()
            .filter(|(p, n)| self.is_ignored(p, n.w.entry.kind == EntryKind::Dir))
            .map(|(p, _)| p.clone())
            .collect();
        for p in dropped {
            self.drop_need(&p);
        }
        self.reconcile(None);
        self.ask_everything_again();
    }

    /// Every peer sends its whole index again: now over the links up, and
    /// from the start when the others link (also after a restart).
    pub(super) fn ask_everything_again(&mut self) {
        for (peer, (seq, _)) in self.peers.iter_mut() {
            *seq = 0;
            self.peers_dirty.insert(*peer);
        }
        for peer in self.io.links.peers() {
            if let Some(link) = self.io.links.get(&peer) {
                link.post(tandem_common::proto::PeerMessage::Resume { since: 0 });
            }
        }
    }

    /// Records the patterns in force in the state folder. Returns true when
    /// they differ from those recorded before (the last run's, when the
    /// node starts): what peers sent while the old ones were in force may
    /// have been dropped here.
    pub(super) fn remember_ignores(&mut self) -> bool {
        let path = self.state_dir.join(IGNORES_SEEN);
        let now: String = self
            .ignores
            .rules()
            .iter()
            .map(|r| format!("{}\t{}\n", r.source, r.pattern))
            .collect();
        let before = std::fs::read_to_string(&path).unwrap_or_default();
        if before == now {
            return false;
        }
        let tmp = self.state_dir.join(format!("{IGNORES_SEEN}.tmp"));
        if let Err(e) = std::fs::write(&tmp, &now).and_then(|()| std::fs::rename(&tmp, &path)) {
            // At worst the next start asks peers for everything again.
            tracing::warn!(
                "cannot record the ignore patterns in {}: {e}",
                path.display()
            );
        }
        true
    }

    /// Brings the index in line with the disk for the whole tree (`None`) or
    /// one directory and everything under it. Files whose stat matches the
    /// index are not read; the others are hashed in parallel.
    pub(super) fn reconcile(&mut self, dir: Option<&RelPath>) -> usize {
        let mut changed = 0;
        let base = dir.map_or(self.root.clone(), |d| d.to_disk(&self.root));
        if let Some(d) = dir {
            // The directory itself.
            match scan::stat_rel(&self.root, d) {
                Ok(seen) => changed += self.look_at(d, seen, true),
                Err(e) => {
                    self.retry_later(d, &e);
                    return 0;
                }
            }
        }
        let walk = match (dir, self.walked.take()) {
            (None, Some(walk)) => walk,
            _ => scan::walk(&self.root, &base, &self.state_dir, &self.ignores),
        };
        // Paths are made from the walk's text only where they are needed:
        // folders, and what changed or is locked.
        let rel = |p: &str| RelPath::new(p).ok();
        let mut to_hash: Vec<(RelPath, LocalStat)> = Vec::new();
        let mut locked: Vec<(RelPath, Seen)> = Vec::new();
        let mut seen: Vec<(RelPath, Seen)> = Vec::new();
        // Walked paths with a live record (not ignored), counted and summed
        // by a mark of each record: when both match those of the live
        // records, every live record was walked, nothing is missing, and
        // the sets below need not be built (at a million files they take
        // most of the comparison's time). The sum catches a path listed
        // twice (a file system may repeat an entry of a folder changing
        // while it is listed) beside one that is gone.
        let mut found = Tally::default();
        for (p, s) in walk.iter() {
            let stat = match s {
                Seen::File(st) | Seen::Link(st) => Some(st),
                _ => None,
            };
            let at = self.index.compare_seen(p, stat.as_ref());
            if at.live
                && !matches!(s, Seen::Other | Seen::Absent)
                && !self.ignores_walked(p, at.dir)
            {
                found.add(at.seq);
            }
            let is_locked = self.locks.contains_key(p);
            if is_locked {
                locked.extend(rel(p).map(|r| (r, s)));
            }
            match s {
                Seen::File(st) if !is_locked && at.needs_hash => {
                    to_hash.extend(rel(p).map(|r| (r, st)));
                }
                Seen::Dir { .. } => seen.extend(rel(p).map(|r| (r, s))),
                Seen::Link(_) if !is_locked && at.needs_hash => seen.extend(rel(p).map(|r| (r, s))),
                _ => {}
            }
        }
        let live = match dir {
            None => {
                let mut t = Tally::default();
                for (p, seq) in self.index.live_seqs() {
                    if !self.ignores_indexed(p) {
                        t.add(seq);
                    }
                }
                Some(t)
            }
            // Small, usually: found the way the sets below find them.
            Some(_) => None,
        };
        let missing: Vec<RelPath> = if live == Some(found) {
            Vec::new()
        } else {
            let mut known = match dir {
                None => self.index.live_paths(),
                Some(d) => self.index.live_under(d),
            };
            // What is ignored was not walked: its entries stay as they are.
            known.retain(|p| !self.ignores_indexed(p));
            let present: HashSet<&str> = walk
                .iter()
                .filter(|(_, s)| !matches!(s, Seen::Other | Seen::Absent))
                .map(|(p, _)| p)
                .collect();
            // Under a folder that could not be read, nothing is known to be
            // gone.
            known
                .into_iter()
                .filter(|p| !present.contains(p.as_str()) && !walk.unknown(&self.root, p))
                .collect()
        };
        if walk.unreadable.is_empty()
            && let Some(d) = dir
        {
            self.io_retries.remove(d);
        }
        for (u, e) in &walk.unreadable {
            match RelPath::from_disk(&self.root, u) {
                Ok(rel) => self.retry_later(&rel, e),
                Err(_) => {
                    tracing::warn!(
                        "cannot read {}: {e}; nothing is changed for it, scanning again in 30s",
                        u.display()
                    );
                    self.verify_at = self.verify_at.min(Instant::now() + Duration::from_secs(30));
                }
            }
        }
        drop(walk);
        for (p, s) in &locked {
            self.hold_local(p, s);
        }
        let log = to_hash.len() + missing.len() <= LOG_EACH_LIMIT;
        // Renamed in (see `known_content`): recorded without reading.
        let mut known = Vec::new();
        let to_hash: Vec<RelPath> = to_hash
            .into_iter()
            .filter_map(|(p, st)| match self.known_content(&st) {
                Some(h) => {
                    known.push((p, st, h));
                    None
                }
                None => Some(p),
            })
            .collect();
        for (p, s) in &seen {
            match s {
                Seen::Dir { .. } if self.awaits_folder_entry(p) => {}
                Seen::Dir { mode } => {
                    let c = self.index.observe_dir(p, *mode);
                    changed += self.log_change(p, c, log);
                }
                // A readlink is cheap: no need to do it in parallel.
                Seen::Link(_) => changed += self.look_at(p, *s, log),
                _ => {}
            }
        }
        for (p, st, h) in known {
            tracing::debug!("{p}: a file known here under another name; not read again");
            let c = self.index.observe_file(&p, st, &h);
            changed += self.log_change(&p, c, log);
        }
        // Read HASH_CHUNK files at a time, each chunk recorded before the
        // next is read; above SLICED_ABOVE, also saved every HASH_SLICE
        // files: a cold scan of a million files would otherwise hold every
        // record to save at once. (At start-up the store is written here;
        // on a later scan the writer thread takes a slice while the next is
        // read, and the rest waits for the scan's end.) Names are checked
        // once the whole scan is recorded: between slices, a renamed file
        // can be in the index under both names.
        let sliced = to_hash.len() > SLICED_ABOVE;
        let mut to_hash = to_hash.into_iter().peekable();
        let mut unsaved = 0;
        while to_hash.peek().is_some() {
            let chunk: Vec<RelPath> = to_hash.by_ref().take(HASH_CHUNK).collect();
            unsaved += chunk.len();
            let root = &self.root;
            let hashed: Vec<(RelPath, _)> = chunk
                .into_par_iter()
                .map(|p| {
                    let r = scan::hash_file(&p.to_disk(root));
                    (p, r)
                })
                .collect();
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
                    Err(HashError::Io(e)) => self.retry_later(&p, &e),
                }
            }
            if sliced && unsaved >= HASH_SLICE && to_hash.peek().is_some() {
                unsaved = 0;
                self.save_changes();
                self.compact_if_grown();
            }
        }
        for p in missing {
            // Already tombstoned as part of a removed parent.
            if self.index.is_tombstone(&p) {
                continue;
            }
            changed += self.look_at(&p, Seen::Absent, log);
        }
        if !log {
            tracing::info!("{changed} paths changed under {}", base.display());
        }
        changed
    }

    /// Makes sure the index agrees with the disk at `p` before deciding
    /// anything about it: a local change not yet indexed becomes a version
    /// first, so it takes part in the decision instead of being overwritten.
    /// Answers what the disk shows there, for the engine; an error reading
    /// it is returned, never taken as absence.
    pub(super) fn refresh(&mut self, p: &RelPath) -> std::io::Result<DiskFacts> {
        if !scan::parents_are_dirs(&self.root, p)? {
            return Ok(DiskFacts::ParentNotDir);
        }
        let seen = scan::stat(&p.to_disk(&self.root))?;
        let rec = self.index.get(p).filter(|r| !r.entry.deleted);
        let stale = match (seen, rec) {
            (Seen::File(st) | Seen::Link(st), _) => self.index.needs_hash(p, &st),
            (Seen::Absent | Seen::Other, Some(_)) => true,
            (Seen::Absent | Seen::Other, None) => false,
            (Seen::Dir { mode }, Some(r)) => r.entry.kind != EntryKind::Dir || r.entry.mode != mode,
            (Seen::Dir { .. }, None) => true,
        };
        if stale {
            self.look_at(p, seen, true);
        }
        Ok(match seen {
            Seen::Other => DiskFacts::OtherKind,
            _ => DiskFacts::Indexed,
        })
    }
}

/// Files a large scan reads and records before it saves (see `reconcile`).
const HASH_SLICE: usize = 16 * 1024;

/// Files read at once (in parallel) before their results are recorded:
/// the results wait in memory meanwhile (20,000 files read at once held a
/// 2.2 MiB list and 0.6 MiB of block lists at a cold start's peak). A
/// whole number of them make a [`HASH_SLICE`], so saves come where they
/// did. Each chunk waits for its slowest file (one of 16 MiB or more is
/// hashed on two threads).
const HASH_CHUNK: usize = 4 * 1024;
const _: () = assert!(HASH_SLICE.is_multiple_of(HASH_CHUNK));

/// A scan reading more files than this saves between slices (see
/// `reconcile`); a smaller one saves at the end. (Measured when a smaller
/// scan also read all its files at once:) slices lower the peak (1,000,000 files: 679-791 ->
/// 408 MiB) but leave a few MiB more resident after the scan (100,000
/// files: 39.3-41.2 -> 41.5-45.1 MiB, two to three runs each), which
/// below this size matters more than the peak (82 against 65 MiB).
const SLICED_ABOVE: usize = 8 * HASH_SLICE;

/// A count of records and a sum of a mark of each (see `reconcile`): two
/// sets of records with the same tally are, but for a chance of 2^-64, the
/// same set.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    count: u64,
    sum: u64,
}

impl Tally {
    fn add(&mut self, seq: u64) {
        // SplitMix64's finalizer: sequence numbers are dense, their marks
        // are not.
        let mut z = seq.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        self.count += 1;
        self.sum = self.sum.wrapping_add(z);
    }
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn a_tally_tells_a_repeated_path_beside_a_gone_one() {
        let of = |seqs: &[u64]| {
            let mut t = Tally::default();
            for &s in seqs {
                t.add(s);
            }
            t
        };
        assert_eq!(of(&[3, 1, 2]), of(&[1, 2, 3]), "order does not matter");
        // 3 listed twice, 2 gone: as many, but not the same records.
        assert_ne!(of(&[1, 3, 3]), of(&[1, 2, 3]));
        assert_ne!(of(&[1, 2]), of(&[1, 2, 3]));
    }
}
