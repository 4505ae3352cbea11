//! The core's share of locks, client identities and held changes: the
//! lock table itself is the lock cluster's (`crate::lock_service`), mirrored
//! here; this holds changes to locked paths, persists identities and held
//! changes, and tells peers.

use tandem_common::proto::{
    ApiError, EventKind, HeldChange, HeldKind, IdentityRecord, PeerMessage,
};
use tandem_common::{EntryKind, FileEntry, NodeId, RelPath};
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
        match self.index.get(path).map(|r| &r.entry) {
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
            if self.locks.get(path).is_none_or(|old| old.owner != l.owner) {
                tracing::info!("{path} locked by {} (through {})", l.owner_name, l.via);
            }
        }
        let unlocked: Vec<RelPath> = self
            .locks
            .keys()
            .filter(|p| !table.contains_key(*p))
            .cloned()
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

    /// If `p` is locked, holds this local change instead of indexing it.
    /// Returns true when the path is locked (whether or not it changed).
    pub(super) fn hold_local(&mut self, p: &RelPath, seen: &Seen) -> bool {
        let Some(lock) = self.locks.get(p) else {
            return false;
        };
        let owner = lock.owner_name.clone();
        let rec = self.index.get(p).filter(|r| !r.entry.deleted);
        let (kind, size, mtime_ns) = match seen {
            Seen::File(st) => {
                if !self.index.needs_hash(p, st) {
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
            lock.owner_name
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

    /// Hands every change held for `path` back to the normal rules.
    fn release_held(&mut self, path: &RelPath) -> Vec<HeldChange> {
        let items = self.held.take(path);
        if items.is_empty() {
            return Vec::new();
        }
        self.held_dirty = true;
        let mut out = Vec::new();
        for h in items {
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
            match h.remote {
                Some((peer, entry)) => self.on_remote_entry(peer, entry),
                None => {
                    self.pending.insert(path.clone(), std::time::Instant::now());
                }
            }
            out.push(h.info);
        }
        out
    }
}
