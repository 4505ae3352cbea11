//! The core's share of locks, client identities and held changes: the
//! lock table itself is the lock cluster's (`crate::lock_service`), mirrored
//! here; this holds changes to locked paths, persists identities and held
//! changes, and tells peers.

use tandem_common::proto::{
    ApiError, EventKind, HeldChange, HeldKind, IdentityRecord, PeerMessage,
};
use tandem_common::{EntryKind, FileEntry, NodeId, RelPath, VvOrder};
use tokio::sync::oneshot;

use super::{Core, now_ns};
use crate::held::Held;
use crate::lock_service::LockMirror;
use crate::scan::Seen;

/// Requests about locks, identities and held changes.
pub enum LockMsg {
    /// An identity written here (approve, register, first admin): the
    /// shared table already holds it; persist it and tell every peer.
    Identity(IdentityRecord),
    /// Identities from a peer.
    Identities(Vec<IdentityRecord>, NodeId),
    /// Whether `path` can be locked (a file this node knows).
    Lockable(RelPath, oneshot::Sender<Result<(), ApiError>>),
    /// The lock cluster's applied table changed: the holder of each
    /// locked path.
    Table(LockMirror),
    /// The held changes.
    Held(oneshot::Sender<Vec<HeldChange>>),
    /// Every peer this node has ever linked with: (id, name).
    KnownPeers(oneshot::Sender<Vec<(NodeId, String)>>),
    /// What a new link should be told: all identities.
    Snapshot(oneshot::Sender<Vec<IdentityRecord>>),
}

impl Core {
    pub(super) fn on_lock_msg(&mut self, m: LockMsg) {
        match m {
            LockMsg::Identity(rec) => {
                tracing::info!(
                    "client {} ({:?}) now has role {} (by {})",
                    tandem_common::identity::format_id(&rec.id),
                    rec.name,
                    rec.role.map_or("none", |r| r.as_str()),
                    rec.by
                );
                self.identities_dirty.insert(rec.id);
                self.broadcast(PeerMessage::Identities(vec![rec]), None);
            }
            LockMsg::Identities(recs, from) => {
                for r in recs {
                    self.add_identity(r, Some(from));
                }
            }
            LockMsg::Lockable(path, reply) => {
                let _ = reply.send(self.lockable(&path));
            }
            LockMsg::Table(table) => self.lock_table(table),
            LockMsg::Held(reply) => {
                let _ = reply.send(self.held.list());
            }
            LockMsg::KnownPeers(reply) => {
                let mut v: Vec<(NodeId, String)> = self
                    .peers
                    .iter()
                    .map(|(id, (_, n))| (*id, n.clone()))
                    .collect();
                v.sort_by(|a, b| a.1.cmp(&b.1));
                let _ = reply.send(v);
            }
            LockMsg::Snapshot(reply) => {
                let _ = reply.send(self.io.identities.all());
            }
        }
    }

    /// A peer's record: kept (persisted, passed on) only if newer.
    fn add_identity(&mut self, rec: IdentityRecord, from: Option<NodeId>) {
        if !self.io.identities.merge(rec.clone()) {
            return;
        }
        self.identities_dirty.insert(rec.id);
        self.broadcast(PeerMessage::Identities(vec![rec]), from);
    }

    fn lockable(&self, path: &RelPath) -> Result<(), ApiError> {
        match self.index.get(path).map(|r| r.entry).as_ref() {
            None => Err(ApiError::Other(format!("{path} does not exist"))),
            Some(e) if e.deleted => Err(ApiError::Other(format!(
                "{path} does not exist (it was deleted)"
            ))),
            Some(e) if e.kind == EntryKind::Dir => Err(ApiError::Other(format!(
                "{path} is a directory; only files can be locked"
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Takes the lock cluster's new table; changes held for a path that is
    /// no longer locked go back to the normal rules.
    fn lock_table(&mut self, table: LockMirror) {
        for (path, l) in &table {
            if self
                .locks
                .get(path)
                .is_none_or(|old| old.info.owner != l.info.owner)
            {
                tracing::info!(
                    "{path} locked by {} (through {})",
                    l.info.owner_name,
                    l.info.via
                );
            }
        }
        let unlocked: Vec<RelPath> = self
            .locks
            .keys()
            .filter(|p| !table.contains_key(*p))
            .cloned()
            .collect();
        // A lock handed to the next in its queue ends the previous owner's
        // hold just as an unlock does: what was held is reconciled against
        // the previous owner's version, then held again for the new owner
        // where it was not made on the new owner's node.
        let handed_over: Vec<RelPath> = self
            .locks
            .iter()
            .filter(|(p, old)| {
                table
                    .get(*p)
                    .is_some_and(|new| new.info.owner != old.info.owner || new.via != old.via)
            })
            .map(|(p, _)| p.clone())
            .collect();
        self.locks = table;
        for path in &unlocked {
            tracing::info!("{path} unlocked");
        }
        // Held changes whose lock is gone (this includes changes read back
        // from the store at start for a lock released meanwhile).
        let mut free: Vec<RelPath> = self
            .held
            .paths()
            .into_iter()
            .filter(|p| !self.locks.contains_key(p))
            .collect();
        free.extend(unlocked);
        free.extend(handed_over);
        free.sort();
        free.dedup();
        for path in free {
            self.release_held(&path);
        }
    }

    /// Sends `msg` to every connected peer but `except`.
    pub(super) fn broadcast(&self, msg: PeerMessage, except: Option<NodeId>) {
        for peer in self.io.links.peers() {
            if Some(peer) == except {
                continue;
            }
            if let Some(link) = self.io.links.get(&peer) {
                link.post(msg.clone());
            }
        }
    }

    /// Whether a peer's change to a locked path is held here: changes
    /// written on the node the owner works through flow as usual, unless a
    /// change made here is held (the two are reconciled at unlock); any
    /// other change waits for the unlock.
    pub(super) fn holds_remote(&self, remote: &FileEntry) -> bool {
        let Some(lock) = self.locks.get(&remote.path) else {
            return false;
        };
        let by_owner_node = remote.written.iter().next().is_some()
            && remote.written.iter().all(|d| d.node == Some(lock.via));
        !by_owner_node || self.held.has_local(&remote.path)
    }

    /// If `p` is locked, holds this local change instead of indexing it,
    /// unless this is the node the owner works through (the owner's edits
    /// flow as usual). Returns true when the change is held (or, for a
    /// locked path, nothing changed).
    pub(super) fn hold_local(&mut self, p: &RelPath, seen: &Seen) -> bool {
        let Some(lock) = self.locks.get(p) else {
            return false;
        };
        if lock.via == self.index.me() {
            return false;
        }
        let owner = lock.info.owner_name.clone();
        let rec = self.index.get(p).filter(|r| !r.entry.deleted);
        let (kind, size, mtime_ns) = match seen {
            Seen::File(st) | Seen::Link(st) => {
                if !self.index.stat_changed(p, st) {
                    return true;
                }
                (HeldKind::Modify, st.size, st.mtime_ns)
            }
            Seen::Absent | Seen::Other => {
                if rec.is_none() {
                    return true;
                }
                (HeldKind::Delete, 0, 0)
            }
            Seen::Dir { .. } => return false,
        };
        tracing::info!("held local {kind:?} of {p}: locked by {owner}");
        self.io.events.emit(EventKind::Held {
            path: p.clone(),
            from: self.name.clone(),
            kind,
        });
        self.held.hold(Held {
            info: HeldChange {
                path: p.clone(),
                node: self.name.clone(),
                kind,
                size,
                mtime_ns,
                since_ns: now_ns(),
            },
            remote: None,
        });
        true
    }

    /// If `p` is locked, holds a peer's change (already decided to take).
    pub(super) fn hold_remote(&mut self, peer: NodeId, remote: &FileEntry) -> bool {
        let Some(lock) = self.locks.get(&remote.path) else {
            return false;
        };
        let kind = if remote.deleted {
            HeldKind::Delete
        } else {
            HeldKind::Modify
        };
        tracing::info!(
            "held {kind:?} of {} from {}: locked by {}",
            remote.path,
            self.peer_name(peer),
            lock.info.owner_name
        );
        self.io.events.emit(EventKind::Held {
            path: remote.path.clone(),
            from: self.peer_name(peer),
            kind,
        });
        self.held.hold(Held {
            info: HeldChange {
                path: remote.path.clone(),
                node: self.peer_name(peer),
                kind,
                size: remote.size,
                mtime_ns: remote.mtime_ns,
                since_ns: now_ns(),
            },
            remote: Some((peer, remote.clone())),
        });
        self.held_dirty = true;
        true
    }

    /// Hands every change held for `path` back to the normal rules, after
    /// reconciling a change made here with the owner's version: when a
    /// newer version (the owner's) arrived while it was held, the change
    /// made here was not made on top of it, so it is kept as a conflict copy
    /// and the owner's version installed; otherwise it applies as usual.
    fn release_held(&mut self, path: &RelPath) -> Vec<HeldChange> {
        let mut items = self.held.take(path);
        if items.is_empty() {
            return Vec::new();
        }
        self.held_dirty = true;
        let base = self.index.get(path).map(|r| r.entry.version.clone());
        let newer = items.iter().find_map(|h| {
            let (peer, e) = h.remote.as_ref()?;
            let newer = base.as_ref().is_none_or(|b| {
                matches!(e.version.compare(b), VvOrder::After | VvOrder::Concurrent)
            });
            newer.then_some(*peer)
        });
        // The change made here first: deciding on a peer's version looks at
        // the disk, and would take the change made here for a new one.
        items.sort_by_key(|h| h.remote.is_some());
        let mut out = Vec::new();
        for h in items {
            let lost = match (&h.remote, newer) {
                (None, Some(winner)) => self.lose_held_local(path, &h.info, winner),
                _ => false,
            };
            if !lost {
                match h.info.kind {
                    HeldKind::Delete => tracing::warn!(
                        "released a held DELETE of {path} made on {}; reconciling it now",
                        h.info.node
                    ),
                    HeldKind::Modify => tracing::info!(
                        "released a held change of {path} made on {}; reconciling it now",
                        h.info.node
                    ),
                }
                self.io.events.emit(EventKind::Released {
                    path: path.clone(),
                    from: h.info.node.clone(),
                    kind: h.info.kind,
                });
            }
            match h.remote {
                Some((peer, entry)) => self.on_remote_entry(peer, entry),
                None if lost => {}
                None => {
                    self.pending.insert(path.clone(), std::time::Instant::now());
                }
            }
            out.push(h.info);
        }
        out
    }

    /// The change made here to `path` while it was locked lost to the
    /// owner's newer version (from `winner`): a modification is copied into
    /// the conflicts folder and the file taken for our indexed version, so
    /// the owner's version replaces it; a deletion simply loses. False when
    /// it cannot be set aside (then it is reconciled by the normal rules,
    /// which lose nothing either).
    fn lose_held_local(&mut self, path: &RelPath, info: &HeldChange, winner: NodeId) -> bool {
        if info.kind == HeldKind::Delete {
            tracing::warn!(
                "the DELETE of {path} made here while it was locked lost to the owner's newer version, which comes back"
            );
            return true;
        }
        let full = path.to_disk(&self.root);
        let meta = match std::fs::symlink_metadata(&full) {
            Ok(m) if m.is_file() => m,
            _ => return false,
        };
        let stat = crate::scan::local_stat(&meta);
        if self.index.get(path).is_none_or(|r| !r.entry.is_live_file()) {
            return false;
        }
        let copy = self
            .state_dir
            .join("tmp")
            .join(format!("held-{}", uuid::Uuid::new_v4().simple()));
        let kept = std::fs::copy(&full, &copy).and_then(|_| {
            let name = self.name.clone();
            self.keep_aside(&copy, path, &name, stat.mtime_ns, winner)
        });
        match kept {
            Ok(dest) => {
                self.index.adopt_stat(path, stat);
                tracing::warn!(
                    "the change made here to {path} while it was locked was not made on top of the owner's latest version: kept as {}; the owner's version is installed",
                    dest.display()
                );
                true
            }
            Err(e) => {
                let _ = std::fs::remove_file(&copy);
                tracing::error!(
                    "cannot keep the change made here to {path} aside ({e}); reconciling it by the normal rules"
                );
                false
            }
        }
    }
}
