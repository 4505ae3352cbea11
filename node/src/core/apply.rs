//! Carrying out decisions on the disk: install a fetched file, delete,
//! make a directory, set metadata, move a conflict's loser aside.

use super::remote::Settled;
use super::*;

impl Core {
    /// Removes our file or (empty) folder and records the tombstone. A file
    /// that a running transfer reads blocks from (the other half of a
    /// rename) waits for it; so does a folder whose files are still to go.
    pub(super) fn apply_delete(
        &mut self,
        peer: NodeId,
        entry: FileEntry,
        local: Option<FileEntry>,
        origin: Option<NodeId>,
    ) -> std::io::Result<Settled> {
        let full = entry.path.to_disk(&self.root);
        let path = entry.path.clone();
        let mut keep_dir = None;
        if let Some(l) = local.filter(|l| !l.deleted) {
            match l.kind {
                EntryKind::File => {
                    if self.in_use.contains_key(&path) {
                        return Ok(Settled::Wait);
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
                        if self
                            .needed
                            .range(path.clone()..)
                            .take_while(|(p, _)| p.as_str().starts_with(path.as_str()))
                            .any(|(p, n)| p.is_inside(&path) && n.w.entry.deleted)
                        {
                            // Its files are still to be deleted (some wait to
                            // be copied elsewhere: a moved folder): after them.
                            return Ok(Settled::Wait);
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
    pub(super) fn apply_meta(
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
    pub(super) fn keep_conflict(
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
        let path = &entry.path;
        let full = path.to_disk(&self.root);
        if keep_ours_as_conflict && let Some(l) = local.as_ref().filter(|l| l.is_live_file()) {
            self.keep_conflict(l, from)?;
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

/// Renames `from` to `to`; across filesystems (a state folder elsewhere),
/// copies to a hidden temp beside the target and renames that instead.
pub(super) fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
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
