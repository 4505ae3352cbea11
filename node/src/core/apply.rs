//! Carrying out decisions on the disk: install a fetched file, delete,
//! make a directory, set metadata, move a conflict's loser aside.

use super::remote::Settled;
use super::*;

/// How long a folder an install made waits for the peer's entry for it
/// before a look records it as a folder made here: the entry may have come
/// and been declined before, and then it does not come again.
const MADE_DIR_WAIT: Duration = Duration::from_secs(60);

/// How often a folder whose peer's entry is queued here is looked at
/// again once its wait is over (see [`Core::awaits_folder_entry`]).
const MADE_DIR_RECHECK: Duration = Duration::from_secs(5);

/// Folders an install waits for at most (past it, a folder it makes is
/// recorded as made here, as before).
const MADE_DIRS_MAX: usize = 10_000;

/// Makes `dir` and the folders above it that are missing (below `root`);
/// returns those it made, topmost first. `journal` writes them down first
/// (see [`Core::note_made`]).
pub(super) fn make_parents(
    root: &Path,
    dir: &Path,
    journal: &mut super::journal::Journal,
) -> std::io::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut d = dir;
    while d != root
        && matches!(std::fs::symlink_metadata(d), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
    {
        missing.push(d.to_path_buf());
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    missing.reverse();
    for m in &missing {
        if let Ok(rel) = RelPath::from_disk(root, m) {
            journal.note_made(rel);
        }
    }
    std::fs::create_dir_all(dir)?;
    Ok(missing)
}

impl Core {
    /// Notes folders an install made for a peer's file (see
    /// [`make_parents`]). The peer holds the file, so it holds the folder,
    /// and its entry for the folder is on its way (a message's folders are
    /// taken before its files, but a folder announced again comes after
    /// them). Until it comes, a look leaves the folder unrecorded: recorded
    /// as made here, it would be a write of this node's concurrent with
    /// the peer's folder, which a delete of the folder on the peer's side
    /// would not cover, and the folder would come back.
    ///
    /// The folders are written down in the journal (by [`make_parents`],
    /// before it makes them, and again while they wait), so a restart goes
    /// on waiting (see [`Core::await_made`]).
    pub(super) fn note_made(&mut self, made: Vec<PathBuf>) {
        let made = made
            .iter()
            .filter_map(|m| RelPath::from_disk(&self.root, m).ok())
            .collect();
        self.await_made(made);
    }

    /// Folders made for a peer's file wait for the peer's entry (see
    /// [`Core::note_made`]); also those the last run wrote down.
    pub(super) fn await_made(&mut self, made: Vec<RelPath>) {
        let now = Instant::now();
        for rel in made {
            // Past the bound, recorded as made here (as before): each note
            // goes when its folder is looked at again, at the latest when
            // its wait ends.
            if self.made_dirs.len() >= MADE_DIRS_MAX {
                break;
            }
            // Looked at when its wait ends, whether or not the watcher
            // reports it meanwhile.
            self.pending
                .entry(rel.clone())
                .or_insert(now + MADE_DIR_WAIT);
            self.made_dirs.insert(rel, now);
        }
    }

    /// Whether a look leaves the folder `p` unrecorded for now: an install
    /// made it lately and nothing live is recorded there (nothing, or an
    /// older deletion; see [`Core::note_made`]).
    pub(super) fn awaits_folder_entry(&mut self, p: &RelPath) -> bool {
        let Some(t) = self.made_dirs.get(p) else {
            return false;
        };
        // The peer's entry for it may be queued here (waiting for files
        // inside to go, for a lock): it still waits, however long.
        let waiting = self.still_awaited(p, *t);
        if waiting && self.index.get(p).is_none_or(|r| r.entry.deleted) {
            // Looked at again when the wait ends (or, past it, now and
            // then), so a folder whose entry never came is then recorded
            // and announced.
            let at = (*t + MADE_DIR_WAIT).max(Instant::now() + MADE_DIR_RECHECK);
            self.pending.entry(p.clone()).or_insert(at);
            return true;
        }
        self.made_dirs.remove(p);
        false
    }

    /// Whether the peer's entry for the folder made at `p` (at `made`) is
    /// still awaited: within its minute, or while that entry is queued
    /// here (waiting for files inside to go) or held for a lock, however
    /// long.
    fn still_awaited(&self, p: &RelPath, made: Instant) -> bool {
        made.elapsed() < MADE_DIR_WAIT || self.needed.contains_key(p) || self.held.count(p) > 0
    }

    /// The folders made for a peer's file whose peer's entry is still
    /// awaited (see [`Core::note_made`]), at most `most` of them (`None`
    /// past that).
    pub(super) fn awaited_folders(&self, most: usize) -> Option<Vec<RelPath>> {
        let awaited: Vec<RelPath> = self
            .made_dirs
            .iter()
            .filter(|(p, t)| self.still_awaited(p, **t))
            .map(|(p, _)| p.clone())
            .take(most + 1)
            .collect();
        (awaited.len() <= most).then_some(awaited)
    }

    /// The folder an install made at `p` as the engine is to see it when
    /// a peer's entry for the path comes: a folder with no write of this
    /// node's in its history (`gone`: the deletion recorded there, if any,
    /// whose history and other live writes it keeps, but not the
    /// deletion's own write), which any peer's entry that the deletion did
    /// not replace replaces in turn (their folder is taken, their deletion
    /// removes it unless it holds files new here: neither keeps a write of
    /// the folder live). `None` when no such folder is there; an error
    /// when what is there cannot be read (not a decision: the entry waits).
    pub(super) fn made_folder(
        &mut self,
        p: &RelPath,
        gone: Option<&FileEntry>,
    ) -> std::io::Result<Option<FileEntry>> {
        if !self.awaits_folder_entry(p) {
            return Ok(None);
        }
        let meta = match std::fs::symlink_metadata(p.to_disk(&self.root)) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(meta.is_dir().then(|| FileEntry {
            path: p.clone(),
            kind: EntryKind::Dir,
            size: 0,
            mtime_ns: 0,
            mode: meta.mode() & tandem_common::model::SYNCED_MODE_BITS,
            hash: tandem_common::ContentHash::default(),
            blocks: Vec::new(),
            version: gone.map(|g| g.version.clone()).unwrap_or_default(),
            written: Default::default(),
            losers: gone.map(|g| g.losers.clone()).unwrap_or_default(),
            deleted: false,
        }))
    }
}

impl Core {
    /// Removes our file or (empty) folder and records the tombstone. A file
    /// that a running transfer reads blocks from (the other half of a
    /// rename) waits for it; so does a folder whose files are still to go.
    /// `keep`: our file lost a conflict to the delete (a receive-only
    /// node's unsent edit) and goes to the conflicts folder, not versions.
    pub(super) fn apply_delete(
        &mut self,
        peer: NodeId,
        entry: FileEntry,
        local: Option<FileEntry>,
        keep: bool,
        origin: Option<NodeId>,
    ) -> std::io::Result<Settled> {
        let full = entry.path.to_disk(&self.root);
        let path = entry.path.clone();
        let mut keep_dir = None;
        if let Some(l) = local.filter(|l| !l.deleted) {
            match l.kind {
                EntryKind::File | EntryKind::Link(_) => {
                    if self.in_use.contains_key(&path) {
                        return Ok(Settled::Wait);
                    }
                    if keep {
                        self.keep_conflict(&l, peer)?;
                    } else {
                        self.remove_ours(peer, &l)?;
                    }
                }
                EntryKind::Dir => match std::fs::remove_dir(&full) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
                        if self.deletes_queued_inside(&path) {
                            // Its files are still to be deleted (some wait to
                            // be copied elsewhere: a moved folder): after them.
                            return Ok(Settled::Wait);
                        }
                        // Only what is ignored here is left: not ours to
                        // delete, and not new either (keeping the folder as
                        // a new version would bring it back everywhere).
                        // Shown and retried until those files go.
                        let walk = scan::walk(&self.root, &full, &self.state_dir, &self.ignores);
                        if walk.is_empty() && walk.unreadable.is_empty() {
                            return Err(std::io::Error::other(format!(
                                "the folder holds files ignored here; delete them (see `tandem ignored`) to let the deletion of {path} through"
                            )));
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
            crate::crashpoint::reached("delete-done");
            if keep_dir.is_none() {
                tracing::info!("deleted {path} (deleted on {})", self.peer_name(peer));
                if l.kind != EntryKind::Dir {
                    self.io.events.emit(EventKind::Deleted {
                        path: path.clone(),
                        by: self.peer_name(peer),
                    });
                }
            }
        }
        if keep_dir.is_none() {
            self.made_dirs.remove(&path);
        }
        self.index.record_remote(entry, None, origin);
        if let Some(mode) = keep_dir {
            tracing::info!(
                "kept directory {path}: deleted on {}, but it holds files that are new here",
                self.peer_name(peer)
            );
            self.index.observe_dir(&path, mode);
        }
        Ok(Settled::Done)
    }

    pub(super) fn apply_dir(
        &mut self,
        peer: NodeId,
        entry: FileEntry,
        local: Option<FileEntry>,
        keep: bool,
        origin: Option<NodeId>,
    ) -> std::io::Result<()> {
        let full = entry.path.to_disk(&self.root);
        self.clear_for(peer, local.as_ref(), keep)?;
        if let Some(parent) = full.parent() {
            let made = make_parents(&self.root, parent, &mut self.journal)?;
            self.note_made(made);
        }
        std::fs::create_dir_all(&full)?;
        crate::crashpoint::held("folder-created");
        // Removed here right after it was made (a person deleting what
        // just appeared): the peer's folder was applied, and its removal
        // is a change of ours, found by the look that follows. Retrying
        // would make it again and undo that deletion.
        let removed = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
        // A link to a folder put there meanwhile satisfies create_dir_all;
        // its target's mode must not be changed through it.
        let set = match std::fs::symlink_metadata(&full) {
            Ok(m) if !m.is_dir() => {
                return Err(std::io::Error::other(
                    "something not a folder appeared here while the folder was being made; deciding again",
                ));
            }
            Ok(_) => std::fs::set_permissions(
                &full,
                std::fs::Permissions::from_mode(
                    entry.mode & tandem_common::model::SYNCED_MODE_BITS,
                ),
            ),
            Err(e) => Err(e),
        };
        match set {
            Ok(()) => {}
            Err(e) if removed(&e) => {
                tracing::info!(
                    "{}: removed here right after it was made for {}; the removal is a change of ours",
                    entry.path,
                    self.peer_name(peer)
                );
                self.pending
                    .insert(entry.path.clone(), std::time::Instant::now());
                self.index.record_remote(entry, None, origin);
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        crate::crashpoint::reached("folder-made");
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

    /// Takes our file or link at the path out of the way of `peer`'s change
    /// of another kind: into the conflicts folder when it lost a conflict
    /// (`keep`), else into the versions folder.
    fn clear_for(
        &mut self,
        peer: NodeId,
        local: Option<&FileEntry>,
        keep: bool,
    ) -> std::io::Result<()> {
        let Some(l) = local.filter(|l| l.is_live_file() || l.live_link().is_some()) else {
            return Ok(());
        };
        if keep {
            self.keep_conflict(l, peer).map(|_| ())
        } else {
            self.remove_ours(peer, l)
        }
    }

    /// Makes the link `entry` describes: written beside the path under a
    /// temp name, given its mtime, then renamed over what is there (a
    /// rename replaces a link or a file, and follows neither). Our file or
    /// link there is kept first (a version, or a conflict copy when it
    /// lost); a folder there must be empty (its files' deletions come
    /// first), else this fails and is retried.
    pub(super) fn apply_link(
        &mut self,
        peer: NodeId,
        entry: FileEntry,
        local: Option<FileEntry>,
        keep: bool,
        origin: Option<NodeId>,
    ) -> std::io::Result<Settled> {
        let EntryKind::Link(target) = &entry.kind else {
            return Err(std::io::Error::other("not a link"));
        };
        let path = entry.path.clone();
        let full = path.to_disk(&self.root);
        if local.as_ref().and_then(|l| l.live_link()) == Some(target.as_str()) {
            // The same link, a newer version of it: only its mtime can
            // differ, set on the link itself (never through it).
            let t = file_time(entry.mtime_ns);
            filetime::set_symlink_file_times(&full, t, t)?;
            let st = scan::local_stat(&std::fs::symlink_metadata(&full)?);
            self.index.record_remote(entry, Some(st), origin);
            return Ok(Settled::Done);
        }
        if local.as_ref().is_some_and(|l| l.is_live_dir()) {
            match std::fs::remove_dir(&full) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
                    if self.deletes_queued_inside(&path) {
                        return Ok(Settled::Wait);
                    }
                    // It holds files the peer has not seen: keep it, as a
                    // new version concurrent with the peer's link, which
                    // the peer then keeps as a conflict copy (a folder
                    // beats a link), as with a file (`place_fetched`).
                    tracing::info!(
                        "kept folder {path}: {}'s link of that name would replace it, but it holds files that are new here",
                        self.peer_name(peer)
                    );
                    let mode = local.as_ref().map_or(0o755, |l| l.mode);
                    self.index.keep_dir(&path, mode);
                    return Ok(Settled::Done);
                }
                Err(e) => return Err(e),
            }
        } else {
            self.clear_for(peer, local.as_ref(), keep)?;
        }
        let parent = full
            .parent()
            .ok_or_else(|| std::io::Error::other("a link at the root"))?;
        let made = make_parents(&self.root, parent, &mut self.journal)?;
        self.note_made(made);
        // Made in the temp folder (emptied at start, so a crash leaves
        // nothing in the tree) and renamed in; beside the path when the
        // state folder is on another file system.
        let mut placed = Err(std::io::Error::other("no place to make the link"));
        for dir in [self.state_dir.join("tmp"), parent.to_path_buf()] {
            let tmp = dir.join(format!(
                "{}{}",
                scan::TEMP_PREFIX,
                uuid::Uuid::new_v4().simple()
            ));
            std::os::unix::fs::symlink(target, &tmp)?;
            let t = file_time(entry.mtime_ns);
            placed = filetime::set_symlink_file_times(&tmp, t, t)
                .and_then(|()| std::fs::symlink_metadata(&tmp))
                .and_then(|m| {
                    // Nothing expected there now: something that appeared
                    // meanwhile is a change not decided on yet.
                    match rename2(&tmp, &full, libc::RENAME_NOREPLACE) {
                        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => Err(e),
                        Err(e) if unsupported(&e) => std::fs::rename(&tmp, &full),
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                            Err(std::io::Error::other(
                                "something appeared here while the link was being made; deciding again",
                            ))
                        }
                        r => r,
                    }
                    .map(|()| scan::local_stat(&m))
                });
            match &placed {
                Ok(_) => break,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    if e.raw_os_error() != Some(libc::EXDEV) {
                        break;
                    }
                }
            }
        }
        let st = placed?;
        self.dirs_to_sync.insert(parent.to_path_buf());
        tracing::info!(
            "made link {path} -> {target} (from {})",
            self.peer_name(peer)
        );
        self.index.record_remote(entry, Some(st), origin);
        Ok(Settled::Done)
    }

    /// Same content, new metadata (mtime, mode) or just a newer version.
    pub(super) fn apply_meta(
        &mut self,
        peer: NodeId,
        entry: FileEntry,
        origin: Option<NodeId>,
    ) -> std::io::Result<()> {
        // Only on our indexed version: a change that landed since the look
        // would otherwise take the peer's mtime and be recorded with its
        // stat as the peer's content, and never be seen (chaos chain3 seed
        // 1, mesh3 seed 55: an edit then replaced as a mere version).
        let expect = (self.index.stat_of(&entry.path), entry.hash);
        let st = set_meta_checked(&entry.path.to_disk(&self.root), &entry, Some(expect))?;
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

    /// `install`'s first half: keeps our losing content aside, makes room
    /// (a folder replaced by the file), and puts the temp file in place
    /// without losing a write that lands meanwhile. Returns the stat to
    /// record, or `None` when a folder holding files new here was kept
    /// instead (nothing installed).
    fn place_fetched(
        &mut self,
        from: NodeId,
        entry: &FileEntry,
        local: Option<FileEntry>,
        keep_ours_as_conflict: bool,
        done: &transfer::Done,
    ) -> std::io::Result<Option<crate::index::LocalStat>> {
        let path = &entry.path;
        let full = path.to_disk(&self.root);
        let ours_kept = |l: &&FileEntry| l.is_live_file() || l.live_link().is_some();
        if keep_ours_as_conflict && let Some(l) = local.as_ref().filter(ours_kept) {
            // Only our indexed version is the loser: a write that landed
            // since we looked is a change we have not decided on yet.
            let indexed = self.index.stat_of(path);
            let now = std::fs::symlink_metadata(&full).map(|m| scan::local_stat(&m));
            if let (Some(want), Ok(got)) = (indexed, now)
                && want != got
            {
                return Err(std::io::Error::other(
                    "the file was changed here while the peer's version was being fetched; deciding again",
                ));
            }
            // A link is moved aside first; a file is swapped out below, in
            // the same step that puts the winner in (the path is never
            // empty: a crash in between would read as a delete made here).
            if l.live_link().is_some() {
                self.keep_conflict(l, from)?;
                crate::crashpoint::reached("conflict-kept");
            }
        }
        // The folder is made only when the rename finds it missing (most
        // files land in folders that exist: a look and a failing mkdir
        // each, saved).
        if let Some(parent) = full.parent() {
            self.dirs_to_sync.insert(parent.to_path_buf());
        }
        if !keep_ours_as_conflict
            && let Some(l) = local.as_ref().filter(|l| l.live_link().is_some())
        {
            // A link replaced by a file: the link is kept as a version.
            self.remove_ours(from, l)?;
        }
        if local
            .as_ref()
            .is_some_and(|l| !l.deleted && l.kind == EntryKind::Dir)
        {
            // A directory replaced by a file: it must be empty by now (its
            // files' deletions come first; if some are still queued, the
            // caller retries after them).
            match std::fs::remove_dir(&full) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::DirectoryNotEmpty
                        && !self.deletes_queued_inside(path) =>
                {
                    // It holds files the peer has not seen: keep it, as a
                    // new version concurrent with the peer's file, which
                    // the peer then keeps as a conflict copy (a folder
                    // beats a file).
                    tracing::info!(
                        "kept folder {path}: {}'s file of that name would replace it, but it holds files that are new here",
                        self.peer_name(from)
                    );
                    let mode = local.as_ref().map_or(0o755, |l| l.mode);
                    self.index.keep_dir(path, mode);
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        // What should be there now: our indexed file, or nothing.
        let ours = local.as_ref().filter(|l| l.is_live_file());
        let expect = ours.map(|l| (self.index.stat_of(path), l.hash));
        // Who made ours, if it loses a conflict (kept as a copy of theirs).
        let loser = ours
            .filter(|_| keep_ours_as_conflict)
            .map(|l| self.author_of(l));
        // The stat recorded is the temp file's, taken before it is in
        // place (a rename keeps inode, size, mtime and mode): a write that
        // lands right after the rename then differs from it and is seen as
        // a local change, instead of being recorded as ours.
        let st = done.stat;
        let keeper = self.keeper(path, from);
        // What a crash leaves swapped out: a version of the peer's change,
        // unless ours lost a conflict.
        let replaced_by = loser.is_none().then_some(keeper.cause.as_str());
        let swapped = |inode, tag| swapped_path(&self.state_dir, path, inode, tag, replaced_by);
        let place_it = || {
            place(
                &done.tmp,
                st.inode,
                &full,
                expect,
                entry.mtime_ns,
                (&keeper, loser.is_some()),
                &swapped,
            )
        };
        let mut made = Vec::new();
        let placed = match place_it() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Its folder is missing (a temp file gone would fail again).
                if let Some(parent) = full.parent() {
                    made = make_parents(&self.root, parent, &mut self.journal)?;
                }
                place_it()
            }
            r => r,
        };
        self.note_made(made);
        let placed = match (placed, ours.filter(|_| loser.is_some())) {
            (Err(e), Some(l)) if unsupported(&e) => {
                // No exchange here: ours is moved to the conflicts folder
                // first (checked to be ours, put back if not), then the
                // winner is put in place.
                self.keep_conflict(l, from)?;
                crate::crashpoint::reached("conflict-kept");
                let swapped =
                    |inode, tag| swapped_path(&self.state_dir, path, inode, tag, replaced_by);
                let keep = (&keeper, false);
                place(
                    &done.tmp,
                    st.inode,
                    &full,
                    None,
                    entry.mtime_ns,
                    keep,
                    &swapped,
                )
            }
            (r, _) => r,
        };
        let placed = placed?;
        if let Some(CameOut {
            path: out,
            mtime_ns,
            indexed,
        }) = placed.came_out
        {
            // Our version that lost the conflict, or a change someone made
            // between our last look and the swap (never indexed): kept as
            // a conflict copy; the fetched one is in place.
            let (author, mtime_ns) = match (&loser, ours, indexed) {
                (Some(author), Some(l), true) => (author.clone(), l.mtime_ns),
                _ => (self.name.clone(), mtime_ns),
            };
            if let Err(e) = self.keep_aside(&out, path, &author, mtime_ns, from) {
                // Where a person looks first (the start-up would keep it
                // from the temp folder, but only at the next start): beside
                // the file, under a name that says what it is.
                let side = full.with_file_name(format!(
                    "{}.unsynced-{}",
                    path.file_name(),
                    uuid::Uuid::new_v4().simple()
                ));
                match move_file(&out, &side) {
                    Ok(()) => tracing::error!(
                        "cannot keep {author}'s version of {path} as a conflict copy ({e}); it is at {}",
                        side.display()
                    ),
                    // The fetched file is in place: no error may make the
                    // caller treat it as not installed and remove `tmp`.
                    Err(e2) => tracing::error!(
                        "cannot keep {author}'s version of {path} as a conflict copy ({e}) nor beside it ({e2}); it stays at {}, which the node keeps as a conflict copy when it starts again",
                        out.display()
                    ),
                }
            }
        }
        // Across file systems the file in place is a copy of the temp file
        // (another inode): recorded with the temp file's stat, the next look
        // would read and hash it again.
        let st = placed
            .copy
            .map_or(st, |copy| stat_in_place(&full, st, copy));
        Ok(Some(st))
    }

    /// Removes our file `l` for `peer`'s change, keeping it as a version;
    /// refused when it changed since it was indexed (an edit beats it).
    pub(super) fn remove_ours(&mut self, peer: NodeId, l: &FileEntry) -> std::io::Result<()> {
        let path = &l.path;
        let full = path.to_disk(&self.root);
        let stat = self.index.stat_of(path);
        let keeper = self.keeper(path, peer);
        let scratch = self.aside_path(path, &keeper.cause);
        let link = l.live_link().is_some();
        if let Some(stranded) = remove_checked(&full, &scratch, stat, l.hash, link, &keeper)? {
            let name = self.name.clone();
            self.keep_aside(&stranded, path, &name, l.mtime_ns, peer)?;
            return Err(std::io::Error::other(
                "it changed here while being deleted; the changed file is kept as a conflict copy",
            ));
        }
        Ok(())
    }

    /// Where what `peer`'s change replaces at `path` goes.
    pub(super) fn keeper(&self, path: &RelPath, peer: NodeId) -> crate::versions::Keeper {
        crate::versions::Keeper {
            dir: self
                .retention
                .keeps()
                .then(|| crate::versions::folder(&self.state_dir)),
            max_bytes: self.retention.max_bytes,
            path: path.clone(),
            cause: self.peer_name(peer),
        }
    }

    /// Deletes of paths inside `dir` are queued (waiting for a transfer
    /// that reads from them, or retried after a failure).
    fn deletes_queued_inside(&self, dir: &RelPath) -> bool {
        self.needed
            .range(dir.clone()..)
            .take_while(|(p, _)| p.as_str().starts_with(dir.as_str()))
            .any(|(p, n)| p.is_inside(dir) && n.w.entry.deleted)
    }

    /// Moves our losing version of a file into the conflicts folder.
    pub(super) fn keep_conflict(
        &mut self,
        loser: &FileEntry,
        winner_peer: NodeId,
    ) -> std::io::Result<PathBuf> {
        let author = self.author_of(loser);
        let src = loser.path.to_disk(&self.root);
        let indexed = self.index.stat_of(&loser.path);
        let dest = crate::conflicts::aside_dest(
            &self.conflicts_dir(),
            &loser.path,
            &author,
            loser.mtime_ns,
        )?;
        move_out_of_tree(&src, &dest)?;
        // What was moved must be the loser: a write that landed between the
        // decision and the move is a change not decided on yet (newest
        // wins), so it goes back and the path is decided again.
        let link = loser.live_link().is_some();
        if !holds_indexed(&dest, indexed, loser.hash, link).unwrap_or(true) {
            match move_no_replace(&dest, &src) {
                Ok(()) => {
                    return Err(std::io::Error::other(
                        "the file was changed here while it was being kept as a conflict copy; deciding again",
                    ));
                }
                // A new file took the name meanwhile: both are the user's;
                // the moved one stays kept (announced below).
                Err(e) => tracing::warn!(
                    "{}: changed here while being kept as a conflict copy, and the name was taken again ({e}); the change is kept as {}",
                    loser.path,
                    dest.display()
                ),
            }
        }
        self.announce_kept(&loser.path, &author, &dest, winner_peer);
        Ok(dest)
    }

    /// The node that made version `e` (the one with the highest counter).
    pub(super) fn author_of(&self, e: &FileEntry) -> String {
        e.version
            .iter()
            .max_by_key(|(_, c)| *c)
            .map(|(n, _)| self.peer_name(n))
            .unwrap_or_else(|| self.name.clone())
    }

    /// Moves `src` (a version of `path` by `author`, modified at
    /// `mtime_ns`) into the conflicts folder, under a name that says so.
    pub(super) fn keep_aside(
        &mut self,
        src: &Path,
        path: &RelPath,
        author: &str,
        mtime_ns: i64,
        winner_peer: NodeId,
    ) -> std::io::Result<PathBuf> {
        let dest = crate::conflicts::aside_dest(&self.conflicts_dir(), path, author, mtime_ns)?;
        move_file(src, &dest)?;
        self.announce_kept(path, author, &dest, winner_peer);
        Ok(dest)
    }

    /// Counts, shows and logs a conflict whose loser was kept as `dest`.
    fn announce_kept(&self, path: &RelPath, author: &str, dest: &Path, winner_peer: NodeId) {
        crate::metrics::Metrics::add(&self.io.metrics.conflicts, 1);
        self.io.events.emit(EventKind::Conflict {
            path: path.clone(),
            winner: self.peer_name(winner_peer),
            loser: author.to_string(),
            kept_as: dest.display().to_string(),
        });
        tracing::warn!(
            "conflict on {}: {}'s version wins; {}'s version kept as {}",
            path,
            self.peer_name(winner_peer),
            author,
            dest.display()
        );
    }

    /// Puts a verified temp file in place as `entry` (the engine has just
    /// decided, with fresh disk facts, that it is to be taken), keeping our
    /// content aside first if it lost a conflict. The temp file is moved
    /// (or removed by the caller when this fails).
    pub(super) fn install(
        &mut self,
        from: NodeId,
        entry: FileEntry,
        local: Option<FileEntry>,
        keep_ours_as_conflict: bool,
        origin: Option<NodeId>,
        done: &transfer::Done,
    ) -> std::io::Result<()> {
        let placed = self.place_fetched(from, &entry, local, keep_ours_as_conflict, done);
        let st = match placed {
            Ok(st) => st,
            Err(e) => {
                // Not in place: the fetched content is fetched again later.
                let _ = std::fs::remove_file(&done.tmp);
                return Err(e);
            }
        };
        let Some(st) = st else {
            // The folder was kept; nothing is installed.
            let _ = std::fs::remove_file(&done.tmp);
            return Ok(());
        };
        crate::crashpoint::reached("install-placed");
        let path = &entry.path;
        // In place now: whatever happens next must not retry the install.
        let st = Some(st);
        let from = self.peer_name(done.from.unwrap_or(from));
        tracing::info!(
            "received {path} from {from}: {} in {:.1?} ({} over the network, {} reused locally)",
            human_size(entry.size),
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
            size: entry.size,
            sent: done.bytes_received,
            millis: done.took.as_millis() as u64,
        });
        self.index.record_remote(entry, st, origin);
        Ok(())
    }
}

/// Puts the finished temp file `tmp` (inode `fetched_inode`) at `full`
/// without losing anything a
/// person wrote there since the node last looked. `expect` is what should
/// be there: our indexed file (its stat when known, and its hash), or
/// nothing. Nothing expected: the rename refuses to replace a file that
/// appeared meanwhile (an error: decided again). Our file expected: the two
/// are swapped atomically (`RENAME_EXCHANGE`), and if what came out is not
/// our file, it is left at `swapped` and returned with its mtime, to be
/// kept as a conflict copy, unless it is newer than the version being
/// installed (`incoming_mtime`): then newest-wins says it stays, so the two
/// are swapped back and an error returned (decided again once the scan has
/// indexed the change). Filesystems without `renameat2` get a plain rename.
/// Our replaced file goes to `keeper` (the versions folder). On an error
/// the fetched content is back at `tmp` (or, if that fails, removed).
///
/// What an exchange takes out of the tree may be the only copy of a file
/// (a person's change, or ours while versions are kept), so the temp file
/// is first renamed to a fresh name from `swapped`, one the start-up keeps
/// (`SWAPPED_SUFFIX`; see [`super::interrupted`]: as a version when it is
/// still our indexed file and its name gives the peer whose change
/// replaced it, else as a conflict copy) unless it still holds the fetched
/// file (the name says its inode): a crash before what came out is kept
/// loses nothing.
pub(super) fn place(
    tmp: &Path,
    fetched_inode: u64,
    full: &Path,
    expect: Option<(Option<crate::index::LocalStat>, tandem_common::ContentHash)>,
    incoming_mtime: i64,
    keep: (&crate::versions::Keeper, bool),
    swapped: &dyn Fn(u64, bool) -> PathBuf,
) -> std::io::Result<Placed> {
    let Some((stat, hash)) = expect else {
        return place_new(tmp, full).map(Placed::copied);
    };
    let rename = |to: &Path| match rename2(tmp, to, libc::RENAME_NOREPLACE) {
        Err(e) if unsupported(&e) => std::fs::rename(tmp, to),
        r => r,
    };
    let name_for = swapped;
    let mut swapped = name_for(fetched_inode, true);
    if let Err(e) = rename(&swapped) {
        // A name the state folder's file system refuses (too long, or a
        // character it cannot hold): the name without the path.
        if !matches!(
            e.raw_os_error(),
            Some(libc::ENAMETOOLONG | libc::EINVAL | libc::EILSEQ)
        ) {
            return Err(e);
        }
        swapped = name_for(fetched_inode, false);
        rename(&swapped)?;
    }
    crate::crashpoint::reached("install-swapping");
    let placed = exchange(
        &swapped,
        full,
        (stat, hash),
        fetched_inode,
        incoming_mtime,
        keep,
    );
    if placed.is_err() && std::fs::rename(&swapped, tmp).is_err() {
        // Every way to an error leaves the fetched content at `swapped`
        // (nothing came out, or it went back): back at `tmp` for the
        // caller (a retry once the folder is made, or removal), or gone.
        let _ = std::fs::remove_file(&swapped);
    }
    placed
}

/// The stat to record for a fetched file (stat `fetched`) that was copied
/// to `full` across file systems (the copy's stat: `copy`): the copy's, if
/// that copy is what is there now, unchanged; else `fetched`, which differs
/// from whatever is there (another inode), so the next look reads it as a
/// change (a write that landed since, or another file renamed over it).
pub(super) fn stat_in_place(
    full: &Path,
    fetched: crate::index::LocalStat,
    copy: crate::index::LocalStat,
) -> crate::index::LocalStat {
    let now = std::fs::symlink_metadata(full)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| scan::local_stat(&m));
    if now == Some(copy) { copy } else { fetched }
}

/// A fresh name in the state folder's temp folder for the fetched file
/// (inode `inode`) about to be swapped with ours (see [`place`]).
/// `replaced_by`: the node whose change replaces ours without a conflict.
pub(super) fn swapped_path(
    state_dir: &Path,
    path: &RelPath,
    inode: u64,
    tag: bool,
    replaced_by: Option<&str>,
) -> PathBuf {
    state_dir.join("tmp").join(super::interrupted::swapped_name(
        path,
        inode,
        tag,
        replaced_by,
    ))
}

/// [`place`] where nothing is expected at `full`. Returns the stat of the
/// copy put there, if it had to be copied (see [`move_no_replace_copied`]).
fn place_new(tmp: &Path, full: &Path) -> std::io::Result<Option<crate::index::LocalStat>> {
    move_no_replace_copied(tmp, full)
}

/// Moves `from` to `to` unless something is there (then fails, and both
/// stay), across file systems too. Where the file system cannot refuse
/// (no `renameat2`, no hard links), whatever is there is replaced.
pub(super) fn move_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    move_no_replace_copied(from, to).map(drop)
}

/// [`move_no_replace`], returning the stat of the copy now at `to` when it
/// had to be copied across file systems (another inode than `from`'s), or
/// `None` when `from` itself was moved.
fn move_no_replace_copied(
    from: &Path,
    to: &Path,
) -> std::io::Result<Option<crate::index::LocalStat>> {
    match rename2(from, to, libc::RENAME_NOREPLACE) {
        Ok(()) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(appeared()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => move_across(from, to, false),
        Err(e) if unsupported(&e) => link_no_replace(from, to),
        Err(e) => Err(e),
    }
}

/// Within one file system without `renameat2`: a hard link refuses a
/// taken name as the rename cannot; without hard links, a plain rename.
fn link_no_replace(from: &Path, to: &Path) -> std::io::Result<Option<crate::index::LocalStat>> {
    match std::fs::hard_link(from, to) {
        Ok(()) => std::fs::remove_file(from).map(|()| None),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(appeared()),
        // Two file systems (a kernel without `renameat2` says so only here).
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => move_across(from, to, false),
        // No hard links here: nothing can refuse a taken name.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EPERM | libc::EOPNOTSUPP | libc::ENOSYS)
            ) =>
        {
            std::fs::rename(from, to).map(|()| None)
        }
        Err(e) => Err(e),
    }
}

/// A file took a name that was free when it was decided to put one there.
fn appeared() -> std::io::Error {
    std::io::Error::other(
        "a file appeared here while the new version was being written; deciding again",
    )
}

/// What an install took out of the tree and the caller keeps as a
/// conflict copy.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct CameOut {
    /// Where it is now.
    pub path: PathBuf,
    /// Its mtime.
    pub mtime_ns: i64,
    /// It is our indexed version (that lost a conflict), not a change
    /// made here that was never indexed.
    indexed: bool,
}

/// What an install did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Placed {
    /// What it took out of the tree, for the caller to keep.
    pub came_out: Option<CameOut>,
    /// The stat of the copy it put in place, when the fetched file had to
    /// be copied across file systems (a state folder elsewhere, or a
    /// subfolder mounted from elsewhere); `None` when the fetched file
    /// itself was moved there.
    pub copy: Option<crate::index::LocalStat>,
}

impl Placed {
    fn out(came_out: Option<CameOut>) -> Placed {
        Placed {
            came_out,
            copy: None,
        }
    }

    fn copied(copy: Option<crate::index::LocalStat>) -> Placed {
        Placed {
            came_out: None,
            copy,
        }
    }
}

/// [`place`]'s swap of `tmp` (the fetched file, inode `fetched_inode`,
/// under a name the start-up keeps) with our file at `full` (`expect`).
/// `keep`: where ours goes once out: the keeper (versions), or, when it
/// lost a conflict (`true`), back to the caller to keep as a conflict copy.
fn exchange(
    tmp: &Path,
    full: &Path,
    expect: (Option<crate::index::LocalStat>, tandem_common::ContentHash),
    fetched_inode: u64,
    incoming_mtime: i64,
    keep: (&crate::versions::Keeper, bool),
) -> std::io::Result<Placed> {
    let (stat, hash) = expect;
    let (keeper, ours_lost) = keep;
    match rename2(tmp, full, libc::RENAME_EXCHANGE) {
        Ok(()) => {}
        // Deleted here meanwhile: an edit beats a delete, put it in place.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return place_new(tmp, full).map(Placed::copied);
        }
        // No exchange (a state folder on another file system): the caller
        // keeps our losing version the way that needs none.
        Err(e) if unsupported(&e) && ours_lost => return Err(e),
        Err(e) if unsupported(&e) => {
            // No exchange (a state folder on another file system, or no
            // `renameat2`). The slow steps come first: the fetched file is
            // copied beside ours if it must cross file systems, and a copy
            // of ours is kept as a version; then, only if what is there is
            // still ours (a change made here since is decided again, as a
            // conflict), one rename replaces it.
            let across = e.raw_os_error() == Some(libc::EXDEV) || !same_file_system(tmp, full);
            let (staged, copy) = if across {
                stage_copied(tmp, full)?
            } else {
                (tmp.to_path_buf(), None)
            };
            let unstage = |r: std::io::Result<()>| {
                if across {
                    let _ = std::fs::remove_file(&staged);
                }
                r.map(|()| Placed::default())
            };
            keep_a_copy(keeper, full, tmp);
            match holds_indexed(full, stat, hash, false) {
                Ok(true) => {}
                Ok(false) => {
                    return unstage(Err(std::io::Error::other(
                        "the file was changed here while the new version was being written; deciding again",
                    )));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !across => {
                    return place_new(tmp, full).map(Placed::copied);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    put_staged(&staged, full, false)?;
                    let _ = std::fs::remove_file(tmp);
                    return Ok(Placed::copied(copy));
                }
                Err(e) => return unstage(Err(e)),
            }
            if let Err(e) = std::fs::rename(&staged, full) {
                return unstage(Err(e));
            }
            if across {
                let _ = std::fs::remove_file(tmp);
            }
            return Ok(Placed::copied(copy));
        }
        Err(e) => return Err(e),
    }
    crate::crashpoint::reached("install-exchanged");
    // The new file is in place: from here on nothing may fail as "not in
    // place". What came out is removed only when it is certainly ours.
    let Ok(out) = std::fs::symlink_metadata(tmp) else {
        return Ok(Placed::default());
    };
    if out.is_dir() && rename2(tmp, full, libc::RENAME_EXCHANGE).is_ok() {
        // A folder took the path since it was looked at: it goes straight
        // back (swapped out whole, its files would read as deleted).
        return Err(std::io::Error::other(
            "a folder took this path while the new version was being written; deciding again",
        ));
    }
    let ours = holds_indexed(tmp, stat, hash, false).unwrap_or(false);
    if ours && ours_lost {
        return Ok(Placed::out(Some(CameOut {
            path: tmp.to_path_buf(),
            mtime_ns: scan::local_stat(&out).mtime_ns,
            indexed: true,
        })));
    }
    if ours {
        // Out of the tree: kept as a version (or removed).
        keeper.keep(tmp);
        return Ok(Placed::default());
    }
    let theirs = scan::local_stat(&out).mtime_ns;
    if out.file_type().is_file()
        && theirs > incoming_mtime
        && rename2(tmp, full, libc::RENAME_EXCHANGE).is_ok()
    {
        // What went back out must be the fetched file. A save (by rename)
        // that landed since the first swap is a person's newest change: it
        // goes back in (the next look at the disk finds it, a change made
        // here) and the older one that came out first is kept as a
        // conflict copy; neither is removed as the fetched file.
        return match std::fs::symlink_metadata(tmp) {
            Ok(m) if m.ino() != fetched_inode => {
                let back_in = rename2(tmp, full, libc::RENAME_EXCHANGE).is_ok();
                let kept = if back_in {
                    theirs
                } else {
                    scan::local_stat(&m).mtime_ns
                };
                Ok(Placed::out(Some(CameOut {
                    path: tmp.to_path_buf(),
                    mtime_ns: kept,
                    indexed: false,
                })))
            }
            _ => Err(std::io::Error::other(
                "a newer change was made here while the new version was being written; it stays, and is decided again",
            )),
        };
    }
    Ok(Placed::out(Some(CameOut {
        path: tmp.to_path_buf(),
        mtime_ns: theirs,
        indexed: false,
    })))
}

/// Deletes our file at `full` unless it changed since we indexed it (its
/// stat, or else its hash, differ): it is first moved aside to `scratch`
/// (atomically, so a write racing with us lands either before, and is
/// seen, or after, on a new file), checked, then unlinked; a changed file
/// is put back and the delete refused (decided again: an edit beats a
/// concurrent delete). What is deleted goes to `keeper` (the versions
/// folder). If a new file took the name before it could be put
/// back, the changed one is returned (at `scratch`) to be kept aside.
/// `link`: ours is a link (compared by its target), not a file.
/// Without `renameat2` or across filesystems it is checked in place, then
/// unlinked.
fn remove_checked(
    full: &Path,
    scratch: &Path,
    stat: Option<crate::index::LocalStat>,
    hash: tandem_common::ContentHash,
    link: bool,
    keeper: &crate::versions::Keeper,
) -> std::io::Result<Option<PathBuf>> {
    let ours = |p: &Path| holds_indexed(p, stat, hash, link);
    let changed = || {
        std::io::Error::other(
            "it changed here since it was last looked at; deciding again (an edit beats a delete)",
        )
    };
    match rename2(full, scratch, libc::RENAME_NOREPLACE) {
        Ok(()) => crate::crashpoint::reached("delete-aside"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if unsupported(&e) => {
            // Checked in place. The slow step first: a copy is kept as a
            // version (across file systems a move copies, and a save
            // landing during that copy would be removed with the file);
            // then it is removed right after the check.
            keep_a_copy(keeper, full, scratch);
            if !ours(full)? {
                return Err(changed());
            }
            return match std::fs::remove_file(full) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(None),
            };
        }
        Err(e) => return Err(e),
    }
    if ours(scratch)? {
        // Out of the tree: kept as a version (or removed).
        keeper.keep(scratch);
        return Ok(None);
    }
    // Back where it was. If a new file took the name meanwhile, both are
    // the user's: the caller keeps the moved-out one as a conflict copy.
    match rename2(scratch, full, libc::RENAME_NOREPLACE) {
        Ok(()) => Err(changed()),
        Err(_) => Ok(Some(scratch.to_path_buf())),
    }
}

/// Gives the file at `full` the mode and mtime of `entry` (never through a
/// link put there since it was looked at) and returns its stat.
pub(super) fn set_meta(full: &Path, entry: &FileEntry) -> std::io::Result<crate::index::LocalStat> {
    set_meta_checked(full, entry, None)
}

/// [`set_meta`], only if the file opened is still `expect` (our indexed
/// version: its stat as indexed, or else its content hash); otherwise an
/// error, and nothing is changed (the path is decided again once the
/// change is seen).
fn set_meta_checked(
    full: &Path,
    entry: &FileEntry,
    expect: Option<(Option<crate::index::LocalStat>, tandem_common::ContentHash)>,
) -> std::io::Result<crate::index::LocalStat> {
    use std::os::unix::fs::OpenOptionsExt;
    // Opened for reading: the owner may set a read-only file's mode and
    // times, but not open it for writing (unless root). Opened for
    // writing only when it cannot be read (and nothing is to be hashed).
    let open = |read: bool| {
        std::fs::File::options()
            .read(read)
            .write(!read)
            // A fifo put there meanwhile must not block the core.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(full)
    };
    let f = match open(true) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && expect.is_none() => {
            open(false)?
        }
        r => r?,
    };
    if let Some((stat, hash)) = expect {
        let before = f.metadata()?;
        let same = stat == Some(scan::local_stat(&before))
            || (tandem_common::hashing::hash_reader(&f).is_ok_and(|h| h.hash == hash)
                && f.metadata()
                    .is_ok_and(|m| scan::local_stat(&m) == scan::local_stat(&before)));
        if !same {
            return Err(std::io::Error::other(
                "it changed here since it was looked at; deciding again",
            ));
        }
    }
    f.set_permissions(std::fs::Permissions::from_mode(
        entry.mode & tandem_common::model::SYNCED_MODE_BITS,
    ))?;
    filetime::set_file_handle_times(&f, None, Some(file_time(entry.mtime_ns)))?;
    Ok(scan::local_stat(&f.metadata()?))
}

/// True if what is at `p` is our indexed version: the same stat as when it
/// was indexed (`stat`), or else the same content (`hash`; a link's hash is
/// its target's). `link`: ours is a link, not a file.
pub(super) fn holds_indexed(
    p: &Path,
    stat: Option<crate::index::LocalStat>,
    hash: tandem_common::ContentHash,
    link: bool,
) -> std::io::Result<bool> {
    let m = std::fs::symlink_metadata(p)?;
    if m.file_type().is_symlink() != link {
        // A file where our link was, or the other way round: changed.
        return Ok(false);
    }
    if link {
        return Ok(stat == Some(scan::local_stat(&m))
            || scan::read_link(p)
                .is_ok_and(|t| tandem_common::ContentHash::of(t.as_bytes()) == hash));
    }
    if !m.file_type().is_file() {
        return Ok(false);
    }
    if stat == Some(scan::local_stat(&m)) {
        return Ok(true);
    }
    // The same content, and not written while it was read.
    let same = scan::hash_file(p).is_ok_and(|(_, h)| h.hash == hash);
    Ok(same
        && std::fs::symlink_metadata(p)
            .is_ok_and(|now| scan::local_stat(&now) == scan::local_stat(&m)))
}

/// `renameat2(2)` with `flags`.
pub(super) fn rename2(from: &Path, to: &Path, flags: libc::c_uint) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::other("a path with a NUL byte"))
    };
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: two valid NUL-terminated paths, relative to the cwd (both
    // are absolute here), and flags the kernel checks.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The filesystem (or the two paths' placement) cannot do `renameat2`.
pub(super) fn unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::EXDEV | libc::ENOTSUP)
    )
}

/// Renames `from` to `to`; across filesystems (a state folder elsewhere),
/// copies to a hidden temp beside the target and renames that instead.
pub fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => move_across(from, to, true).map(drop),
        r => r,
    }
}

/// [`move_file`] across file systems: a copy beside `to` is renamed onto
/// it (over what is there only if `replace`; else a file that appeared
/// meanwhile stays and this fails), then `from` is removed. Returns the
/// copy's stat (see [`stage_copied`]).
fn move_across(
    from: &Path,
    to: &Path,
    replace: bool,
) -> std::io::Result<Option<crate::index::LocalStat>> {
    let (side, copy) = stage_copied(from, to)?;
    put_staged(&side, to, replace)?;
    // In place (its name synced): the original goes. A crash before that
    // leaves it where it was: in the state folder's temp folder (emptied
    // at start), or under a hidden name in the tree (left there: see
    // `move_out_of_tree`).
    let _ = std::fs::remove_file(from);
    Ok(copy)
}

/// Keeps a copy of `full` (still in the tree) as a version, made beside
/// `near` (in the state folder), when versions are kept; a copy that
/// cannot be made is logged, as [`crate::versions::Keeper::keep`] logs one
/// it cannot keep.
fn keep_a_copy(keeper: &crate::versions::Keeper, full: &Path, near: &Path) {
    if keeper.dir.is_none() {
        return;
    }
    match stage(full, near) {
        Ok(copy) => {
            keeper.keep(&copy);
        }
        Err(e) => tracing::warn!(
            "cannot keep the version of {} that {}'s change replaces ({e}); it is not kept",
            keeper.path,
            keeper.cause
        ),
    }
}

/// Whether `a` and the folder of `b` are on one file system (unknown: no).
fn same_file_system(a: &Path, b: &Path) -> bool {
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev());
    match (dev(a), b.parent().map(dev)) {
        (Ok(x), Some(Ok(y))) => x == y,
        _ => false,
    }
}

/// A fresh hidden name beside `to` (never indexed, never listed).
fn side_of(to: &Path) -> PathBuf {
    to.with_file_name(format!(
        "{}{}",
        scan::TEMP_PREFIX,
        uuid::Uuid::new_v4().simple()
    ))
}

/// Copies `from` (a regular file, synced, with its mode and mtime; or a
/// link, as a link) to a new hidden name beside `to`, and returns that
/// name. Anything else at `from` (a fifo, a device: a copy would block or
/// never end) is refused, as is a link that takes a file's place meanwhile.
fn stage(from: &Path, to: &Path) -> std::io::Result<PathBuf> {
    stage_copied(from, to).map(|(side, _)| side)
}

/// [`stage`], also returning the stat of the copy of a regular file, taken
/// from the copy itself once it is synced (a link's copy: `None`).
fn stage_copied(
    from: &Path,
    to: &Path,
) -> std::io::Result<(PathBuf, Option<crate::index::LocalStat>)> {
    use std::os::unix::fs::OpenOptionsExt;
    let side = side_of(to);
    if std::fs::symlink_metadata(from)?.file_type().is_symlink() {
        // A link is copied as a link, never through it.
        std::os::unix::fs::symlink(std::fs::read_link(from)?, &side)?;
        return Ok((side, None));
    }
    let mut src = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(from)?;
    let meta = src.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            from.display()
        )));
    }
    let copied = (|| {
        use std::os::unix::fs::OpenOptionsExt;
        // Readable by nobody else while it is made; its own mode at the end.
        let mut dst = std::fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&side)?;
        let n = std::io::copy(&mut src, &mut dst)?;
        if n != meta.len() {
            return Err(std::io::Error::other(format!(
                "{} changed size while it was copied",
                from.display()
            )));
        }
        dst.set_permissions(std::fs::Permissions::from_mode(
            meta.mode() & tandem_common::model::SYNCED_MODE_BITS,
        ))?;
        let mtime = filetime::FileTime::from_last_modification_time(&meta);
        filetime::set_file_handle_times(&dst, None, Some(mtime))?;
        dst.sync_all()?;
        Ok(scan::local_stat(&dst.metadata()?))
    })();
    match copied {
        Ok(stat) => Ok((side, Some(stat))),
        Err(e) => {
            let _ = std::fs::remove_file(&side);
            Err(e)
        }
    }
}

/// Renames a copy made by [`stage`] onto `to` (over what is there only if
/// `replace`); removes it if that fails.
fn put_staged(side: &Path, to: &Path, replace: bool) -> std::io::Result<()> {
    let placed = if replace {
        std::fs::rename(side, to)
    } else {
        match rename2(side, to, libc::RENAME_NOREPLACE) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(appeared()),
            Err(e) if unsupported(&e) => link_no_replace(side, to).map(drop),
            r => r,
        }
    };
    if placed.is_err() {
        let _ = std::fs::remove_file(side);
    }
    placed?;
    // Its name is on disk before the caller removes the original.
    if let Some(dir) = to.parent()
        && let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all())
    {
        tracing::warn!("cannot sync folder {}: {e}", dir.display());
    }
    Ok(())
}

/// Moves our file `src` in the tree to `dest` in the state folder (where
/// nothing is). Across file systems it is copied to `dest` first (it stays
/// in the tree meanwhile, so a crash loses nothing), then leaves its name
/// in one step and is removed only if it is still what was copied: a save
/// that landed during the copy goes back under its name and this fails
/// (the copy is removed: it is an older version the save replaced).
pub(super) fn move_out_of_tree(src: &Path, dest: &Path) -> std::io::Result<()> {
    match std::fs::rename(src, dest) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {}
        r => return r,
    }
    let copied = scan::local_stat(&std::fs::symlink_metadata(src)?);
    let staged = stage(src, dest)?;
    put_staged(&staged, dest, false)?;
    let side = side_of(src);
    if let Err(e) = std::fs::rename(src, &side) {
        let _ = std::fs::remove_file(dest);
        return Err(e);
    }
    let left = std::fs::symlink_metadata(&side).map(|m| scan::local_stat(&m));
    if left.as_ref().is_ok_and(|l| *l == copied) {
        let _ = std::fs::remove_file(&side);
        return Ok(());
    }
    match move_no_replace(&side, src) {
        Ok(()) => {
            let _ = std::fs::remove_file(dest);
            Err(std::io::Error::other(
                "it was changed here while it was being copied; deciding again",
            ))
        }
        // Saved twice meanwhile: the newest is in the tree, the one that
        // came out is kept where it is, and said where.
        Err(back) => {
            tracing::error!(
                "{} was changed here twice while being copied out of the tree; the change that came out is at {} ({back}), the older version at {}",
                src.display(),
                side.display(),
                dest.display()
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A peer's newer version of our content changes only its metadata,
    /// and only on our indexed file: a change that landed since the look
    /// (other content, not yet indexed) is refused untouched, where it
    /// used to take the peer's mtime and be recorded as the peer's content.
    #[test]
    fn metadata_is_set_only_on_our_indexed_version() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"ours").unwrap();
        let indexed = scan::local_stat(&std::fs::metadata(&p).unwrap());
        let entry = FileEntry {
            path: RelPath::new("f").unwrap(),
            kind: EntryKind::File,
            size: 4,
            mtime_ns: 1_000_000_000,
            mode: 0o600,
            hash: tandem_common::ContentHash::of(b"ours"),
            blocks: vec![],
            version: Default::default(),
            written: Default::default(),
            losers: Default::default(),
            deleted: false,
        };
        // A person's edit, not indexed yet: refused, nothing changed.
        std::fs::write(&p, b"an edit made here").unwrap();
        let edited = scan::local_stat(&std::fs::metadata(&p).unwrap());
        let e = set_meta_checked(&p, &entry, Some((Some(indexed), entry.hash))).unwrap_err();
        assert!(e.to_string().contains("changed here"), "{e}");
        assert_eq!(scan::local_stat(&std::fs::metadata(&p).unwrap()), edited);
        // Our content under another stat (rewritten as it was): set.
        std::fs::write(&p, b"ours").unwrap();
        let st = set_meta_checked(&p, &entry, Some((Some(indexed), entry.hash))).unwrap();
        assert_eq!((st.mtime_ns, st.mode & 0o777), (1_000_000_000, 0o600));
    }

    /// A keeper of `f` that keeps no versions (what is replaced is removed).
    fn no_versions() -> crate::versions::Keeper {
        crate::versions::Keeper {
            dir: None,
            max_bytes: 0,
            path: RelPath::new("f").unwrap(),
            cause: "B".into(),
        }
    }

    fn set_mtime(p: &Path, ns: i64) {
        let t = filetime::FileTime::from_unix_time(ns / 1_000_000_000, (ns % 1_000_000_000) as u32);
        filetime::set_file_mtime(p, t).unwrap();
    }

    #[test]
    fn a_copy_in_place_is_recorded_under_its_own_inode_unless_written_since() {
        let dir = tempfile::tempdir().unwrap();
        let (tmp, full) = (dir.path().join("tmp"), dir.path().join("f"));
        std::fs::write(&tmp, b"fetched").unwrap();
        set_mtime(&tmp, 1_500_000_000_000_000_000);
        let fetched = scan::local_stat(&std::fs::symlink_metadata(&tmp).unwrap());
        // A copy put in place (as across file systems): another inode.
        let (side, copy) = stage_copied(&tmp, &full).unwrap();
        put_staged(&side, &full, false).unwrap();
        let copy = copy.unwrap();
        assert_ne!(copy.inode, fetched.inode);
        assert_eq!(
            (copy.size, copy.mtime_ns, copy.mode),
            (fetched.size, fetched.mtime_ns, fetched.mode)
        );
        assert_eq!(stat_in_place(&full, fetched, copy), copy);
        // Written since it was put there, even at the same length: the
        // fetched stat stays, so the next look sees the write as a change.
        std::fs::write(&full, b"fetchex").unwrap();
        assert_eq!(stat_in_place(&full, fetched, copy), fetched);
        // Only its mode changed (mtime put back): the same. (Another mode
        // than the fetched one whatever the umask made that.)
        set_mtime(&full, 1_500_000_000_000_000_000);
        let other_mode = std::fs::Permissions::from_mode(fetched.mode ^ 0o100);
        std::fs::set_permissions(&full, other_mode).unwrap();
        assert_eq!(stat_in_place(&full, fetched, copy), fetched);
        // Another file renamed over it with the same length, mode and mtime
        // to the nanosecond: another inode, so not taken for the copy.
        let other = dir.path().join("other");
        std::fs::write(&other, b"FETCHED").unwrap();
        set_mtime(&other, 1_500_000_000_000_000_000);
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(fetched.mode)).unwrap();
        std::fs::rename(&other, &full).unwrap();
        assert_eq!(stat_in_place(&full, fetched, copy), fetched);
        // A link, or nothing: the fetched stat.
        std::fs::remove_file(&full).unwrap();
        std::os::unix::fs::symlink("tmp", &full).unwrap();
        assert_eq!(stat_in_place(&full, fetched, copy), fetched);
        std::fs::remove_file(&full).unwrap();
        assert_eq!(stat_in_place(&full, fetched, copy), fetched);
    }

    /// Across file systems (a temp file in `/dev/shm`, where that is
    /// another file system than the temp folder's), an install says which
    /// copy it put in place; on one file system it put the file itself.
    #[test]
    fn an_install_across_file_systems_returns_the_copy_it_put_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
        let shm = Path::new("/dev/shm");
        let elsewhere = (dev(shm).is_some() && dev(shm) != dev(dir.path()))
            .then(|| tempfile::tempdir_in(shm).ok())
            .flatten();
        let here = tempfile::tempdir_in(dir.path()).unwrap();
        let keep = (&no_versions(), false);
        for (state, across) in [(here.path(), false)]
            .into_iter()
            .chain(elsewhere.as_ref().map(|d| (d.path(), true)))
        {
            let full = dir.path().join(format!("new-{across}"));
            let tmp = state.join("t");
            // As the state folder's temp names are: beside `tmp`.
            let swapped = state.join("swapped");
            let no_name = |_: u64, _: bool| swapped.clone();
            std::fs::write(&tmp, b"fetched").unwrap();
            let ino = std::fs::metadata(&tmp).unwrap().ino();
            let placed = place(&tmp, ino, &full, None, 0, keep, &no_name).unwrap();
            let now = scan::local_stat(&std::fs::symlink_metadata(&full).unwrap());
            assert_eq!(
                placed.copy,
                across.then_some(now),
                "new file, across: {across}"
            );
            // Over our indexed version (no exchange across file systems).
            let expect = Some((Some(now), tandem_common::ContentHash::of(b"fetched")));
            std::fs::write(&tmp, b"fetched again").unwrap();
            let ino = std::fs::metadata(&tmp).unwrap().ino();
            let placed = place(&tmp, ino, &full, expect, 0, keep, &no_name).unwrap();
            assert_eq!(std::fs::read(&full).unwrap(), b"fetched again");
            let now = scan::local_stat(&std::fs::symlink_metadata(&full).unwrap());
            assert_eq!(
                placed.copy,
                across.then_some(now),
                "replaced, across: {across}"
            );
        }
        if elsewhere.is_none() {
            eprintln!("across file systems not tried: no /dev/shm on another file system");
        }
    }

    #[test]
    fn only_the_indexed_version_counts_as_ours() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"indexed").unwrap();
        let stat = Some(scan::local_stat(&std::fs::symlink_metadata(&p).unwrap()));
        let hash = tandem_common::ContentHash::of(b"indexed");
        assert!(holds_indexed(&p, stat, hash, false).unwrap());
        // Touched: another stat, the same content.
        set_mtime(&p, 1_000_000_000);
        assert!(holds_indexed(&p, stat, hash, false).unwrap());
        // Written over: not ours.
        std::fs::write(&p, b"a newer write").unwrap();
        assert!(!holds_indexed(&p, stat, hash, false).unwrap());
        // A link where our file was: not ours either.
        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink("indexed", &p).unwrap();
        assert!(!holds_indexed(&p, stat, hash, false).unwrap());
    }

    /// A folder that took the path since it was looked at is swapped
    /// straight back: its files stay in the tree.
    #[test]
    fn a_folder_swapped_out_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let (tmp, full) = (dir.path().join("t"), dir.path().join("f"));
        std::fs::write(&tmp, b"fetched").unwrap();
        let ino = std::fs::metadata(&tmp).unwrap().ino();
        std::fs::create_dir(&full).unwrap();
        std::fs::write(full.join("inside"), b"a file in the folder").unwrap();
        let expect = (None, tandem_common::ContentHash::of(b"ours"));
        let r = exchange(&tmp, &full, expect, ino, 0, (&no_versions(), false));
        assert!(r.is_err(), "{r:?}");
        assert_eq!(
            std::fs::read(full.join("inside")).unwrap(),
            b"a file in the folder"
        );
        assert_eq!(std::fs::read(&tmp).unwrap(), b"fetched");
    }

    /// How many hidden temp names (`.tandem-tmp-…`) are in `dir`.
    fn temp_names_in(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(scan::TEMP_PREFIX)
            })
            .count()
    }

    /// A folder on another file system than the temp folder (`/dev/shm`),
    /// or `None` where there is none (the test then checks nothing).
    fn elsewhere() -> Option<tempfile::TempDir> {
        let dev = |p: &Path| std::fs::metadata(p).ok().map(|m| m.dev());
        let shm = Path::new("/dev/shm");
        (dev(shm).is_some() && dev(shm) != dev(&std::env::temp_dir()))
            .then(|| tempfile::tempdir_in(shm).ok())
            .flatten()
    }

    /// Across file systems (no exchange, no atomic move): an install
    /// never replaces a change made here since the decision (versions off:
    /// it would be gone), nor a file that appeared where none was; a
    /// conflict's loser leaves the tree before it is copied, so a save
    /// landing meanwhile stays; nothing is left under a temp name.
    #[test]
    fn across_file_systems_nothing_made_here_is_replaced() {
        let Some(state) = elsewhere() else {
            eprintln!("skipped: no /dev/shm on another file system");
            return;
        };
        let tree = tempfile::tempdir().unwrap();
        let (tmp, full) = (state.path().join("t"), tree.path().join("f"));
        let fetched = |b: &[u8]| {
            std::fs::write(&tmp, b).unwrap();
            std::fs::metadata(&tmp).unwrap().ino()
        };
        let leftovers = || temp_names_in(tree.path());
        // Ours was indexed as "indexed"; a person wrote over it since.
        std::fs::write(&full, b"indexed").unwrap();
        let stat = Some(scan::local_stat(&std::fs::symlink_metadata(&full).unwrap()));
        let hash = tandem_common::ContentHash::of(b"indexed");
        std::fs::write(&full, b"a change made here").unwrap();
        let ino = fetched(b"the peer's");
        let keep = (&no_versions(), false);
        let r = exchange(&tmp, &full, (stat, hash), ino, 0, keep);
        assert!(r.is_err(), "{r:?}");
        assert_eq!(std::fs::read(&full).unwrap(), b"a change made here");
        assert_eq!(std::fs::read(&tmp).unwrap(), b"the peer's");
        // Ours untouched: replaced, and kept as a version.
        std::fs::write(&full, b"indexed").unwrap();
        let stat = Some(scan::local_stat(&std::fs::symlink_metadata(&full).unwrap()));
        let versions = crate::versions::Keeper {
            dir: Some(state.path().join("versions")),
            max_bytes: u64::MAX,
            ..no_versions()
        };
        let keep = (&versions, false);
        assert_eq!(
            exchange(&tmp, &full, (stat, hash), ino, 0, keep)
                .unwrap()
                .came_out,
            None
        );
        assert_eq!(std::fs::read(&full).unwrap(), b"the peer's");
        assert!(!tmp.exists());
        let kept: Vec<_> = walkdir::WalkDir::new(state.path().join("versions"))
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .map(|e| std::fs::read(e.path()).unwrap())
            .collect();
        assert_eq!(kept, [b"indexed".to_vec()]);
        // A new file where nothing was expected stays.
        fetched(b"the peer's new file");
        let r = place_new(&tmp, &full);
        assert!(r.is_err(), "{r:?}");
        assert_eq!(std::fs::read(&full).unwrap(), b"the peer's");
        // A conflict's loser is kept; the path is free for a save.
        let dest = state.path().join("kept");
        move_out_of_tree(&full, &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"the peer's");
        assert!(!full.exists());
        assert_eq!(leftovers(), 0);
        // A file already at the destination is not replaced, and ours goes
        // back under its name.
        std::fs::write(&full, b"ours again").unwrap();
        assert!(move_out_of_tree(&full, &dest).is_err());
        assert_eq!(std::fs::read(&full).unwrap(), b"ours again");
        assert_eq!(std::fs::read(&dest).unwrap(), b"the peer's");
        assert_eq!(leftovers(), 0);
        let in_state: Vec<_> = walkdir::WalkDir::new(state.path())
            .into_iter()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(scan::TEMP_PREFIX)
            })
            .map(|e| e.path().to_path_buf())
            .collect();
        assert!(in_state.is_empty(), "{in_state:?}");
    }

    /// A copy on its way across keeps mode and mtime (a read-only file
    /// too), a link stays a link, and a fifo is refused at once (a copy
    /// of it would block the node).
    #[test]
    fn stage_copies_files_and_links_and_refuses_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (f, to) = (dir.path().join("f"), dir.path().join("to"));
        std::fs::write(&f, b"read only").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o444)).unwrap();
        set_mtime(&f, 1_700_000_000_123_456_789);
        let side = stage(&f, &to).unwrap();
        assert_eq!(std::fs::read(&side).unwrap(), b"read only");
        let m = std::fs::metadata(&side).unwrap();
        assert_eq!(m.mode() & 0o777, 0o444);
        assert_eq!(scan::mtime_ns(&m), 1_700_000_000_123_456_789);
        let link = dir.path().join("l");
        std::os::unix::fs::symlink("f", &link).unwrap();
        let side = stage(&link, &to).unwrap();
        assert_eq!(std::fs::read_link(&side).unwrap(), Path::new("f"));
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert!(stage(&fifo, &to).is_err());
        let sides = temp_names_in(dir.path());
        assert_eq!(sides, 2, "the two copies made, nothing for the fifo");
    }

    /// Every way through `place` with our file expected: the fetched file
    /// ends in place or back at `tmp`, never under the swapped name.
    #[test]
    fn place_leaves_nothing_under_the_swapped_name() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        let swapped = dir.path().join("x.swapped");
        let keeper = no_versions();
        let ours = tandem_common::ContentHash::of(b"indexed");
        let run = |full: &Path| {
            std::fs::write(&tmp, b"fetched").unwrap();
            let inode = std::fs::metadata(&tmp).unwrap().ino();
            let r = place(
                &tmp,
                inode,
                full,
                Some((None, ours)),
                0,
                (&keeper, false),
                &|_, _| swapped.clone(),
            );
            assert!(!swapped.exists(), "{r:?}");
            r
        };
        // Our file: swapped in, ours out of the tree (not kept: no folder).
        let full = dir.path().join("f");
        std::fs::write(&full, b"indexed").unwrap();
        assert_eq!(run(&full).unwrap(), Placed::default());
        assert_eq!(std::fs::read(&full).unwrap(), b"fetched");
        assert!(!tmp.exists());
        // Deleted here meanwhile: put in place.
        std::fs::remove_file(&full).unwrap();
        assert_eq!(run(&full).unwrap(), Placed::default());
        assert_eq!(std::fs::read(&full).unwrap(), b"fetched");
        // Its folder gone: an error, the fetched file back at `tmp` for
        // the caller's retry.
        let deep = dir.path().join("gone/f");
        let e = run(&deep).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
        assert_eq!(std::fs::read(&tmp).unwrap(), b"fetched");
    }

    /// When the swap is undone for a newer change made here and something
    /// other than the fetched file comes back out (a save that landed in
    /// between; here: an inode that is not the fetched file's), that
    /// newest save goes back in and the older change is returned to keep.
    #[test]
    fn a_save_between_the_swaps_goes_back_in() {
        let dir = tempfile::tempdir().unwrap();
        let (tmp, full) = (dir.path().join("tmp"), dir.path().join("f"));
        let newer = 2_000_000_000_000_000_000;
        std::fs::write(&tmp, b"saved in between").unwrap();
        std::fs::write(&full, b"newer change").unwrap();
        set_mtime(&full, newer);
        let keeper = no_versions();
        let ours = tandem_common::ContentHash::of(b"indexed");
        let not_it = std::fs::metadata(&tmp).unwrap().ino() + 1;
        let r = exchange(
            &tmp,
            &full,
            (None, ours),
            not_it,
            newer - 1,
            (&keeper, false),
        );
        assert_eq!(
            r.unwrap().came_out,
            Some(CameOut {
                path: tmp.clone(),
                mtime_ns: newer,
                indexed: false
            })
        );
        assert_eq!(std::fs::read(&full).unwrap(), b"saved in between");
        assert_eq!(std::fs::read(&tmp).unwrap(), b"newer change");
    }

    /// A write nobody indexed lands before the swap: an older one is kept
    /// aside (the peer's newer version goes in), a newer one stays.
    #[test]
    fn an_unseen_write_is_kept_aside_when_older_and_stays_when_newer() {
        let dir = tempfile::tempdir().unwrap();
        let (tmp, full) = (dir.path().join("tmp"), dir.path().join("f"));
        let ours = tandem_common::ContentHash::of(b"indexed");
        let incoming = 2_000_000_000_000_000_000;
        for (local_mtime, stays) in [
            (incoming - 1_000_000_000, false),
            (incoming + 1_000_000_000, true),
        ] {
            std::fs::write(&tmp, b"fetched").unwrap();
            std::fs::write(&full, b"written here, never indexed").unwrap();
            set_mtime(&full, local_mtime);
            let keeper = no_versions();
            let swapped = dir.path().join(format!("{local_mtime}.swapped"));
            let inode = std::fs::metadata(&tmp).unwrap().ino();
            let r = place(
                &tmp,
                inode,
                &full,
                Some((None, ours)),
                incoming,
                (&keeper, false),
                &|_, _| swapped.clone(),
            );
            if stays {
                assert!(r.is_err(), "{r:?}");
                assert_eq!(
                    std::fs::read(&full).unwrap(),
                    b"written here, never indexed"
                );
                // The fetched content is back where the caller had it.
                assert_eq!(std::fs::read(&tmp).unwrap(), b"fetched");
                assert!(!swapped.exists());
            } else {
                assert_eq!(
                    r.unwrap().came_out,
                    Some(CameOut {
                        path: swapped.clone(),
                        mtime_ns: local_mtime,
                        indexed: false
                    })
                );
                assert_eq!(std::fs::read(&full).unwrap(), b"fetched");
                assert_eq!(
                    std::fs::read(&swapped).unwrap(),
                    b"written here, never indexed"
                );
                assert!(!tmp.exists());
            }
        }
    }
}
