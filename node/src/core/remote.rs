//! Remote changes: a peer's entries are decided by the sync engine and
//! turned into work (a fetch, or a change applied to the disk).

use super::*;

impl Core {
    pub(super) fn on_remote_index(&mut self, peer: NodeId, entries: Vec<(u64, FileEntry)>) {
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

    pub(super) fn on_remote_entry(&mut self, peer: NodeId, remote: FileEntry) {
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
}
