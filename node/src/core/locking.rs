//! The core's share of locks, client identities and held changes: the
//! decisions are in `crate::locks` (pure); this applies them to the core's
//! state, persists them, and tells peers.

use tandem_common::proto::{
    ApiError, EventKind, HeldChange, HeldKind, IdentityRecord, LockInfo, LockRecord, LockState,
    PeerMessage,
};
use tandem_common::{EntryKind, FileEntry, NodeId, RelPath};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{Core, now_ns};
use crate::locks::{Held, info};
use crate::scan::Seen;

/// Requests about locks, identities and held changes.
pub enum LockMsg {
    /// An identity written here (approve, register, first admin): the
    /// shared table already holds it; persist it and tell every peer.
    Identity(IdentityRecord),
    /// Identities from a peer.
    Identities(Vec<IdentityRecord>, NodeId),
    /// Validate and reserve a path for a proposed lock (local or a peer's).
    Propose {
        /// The proposal.
        lock: LockRecord,
        /// For a local proposal: check the path is a file we have.
        local: bool,
        /// Ok, or the reason (naming the holder).
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    /// A lock record changed (decided here, or told by a peer).
    Update(LockRecord, Option<NodeId>),
    /// Records from a peer on connect.
    Sync(Vec<LockRecord>, NodeId),
    /// Release a lock.
    Unlock {
        /// The file.
        path: RelPath,
        /// Who asks.
        client: Uuid,
        /// Their name.
        name: String,
        /// Release someone else's lock.
        force: bool,
        /// The released lock and the changes it held.
        reply: oneshot::Sender<Result<(LockInfo, Vec<HeldChange>), ApiError>>,
    },
    /// The granted locks.
    List(oneshot::Sender<Vec<LockInfo>>),
    /// The held changes.
    Held(oneshot::Sender<Vec<HeldChange>>),
    /// Every peer this node has ever linked with: (id, name).
    KnownPeers(oneshot::Sender<Vec<(NodeId, String)>>),
    /// What a new link should be told: all identities and lock records.
    Snapshot(oneshot::Sender<(Vec<IdentityRecord>, Vec<LockRecord>)>),
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
            LockMsg::Propose { lock, local, reply } => {
                let _ = reply.send(self.propose(lock, local));
            }
            LockMsg::Update(rec, from) => self.lock_update(rec, from),
            LockMsg::Sync(recs, from) => {
                for r in recs {
                    self.lock_update(r, Some(from));
                }
            }
            LockMsg::Unlock {
                path,
                client,
                name,
                force,
                reply,
            } => {
                let res = match self.locks.release(&path, client, &name, force) {
                    Ok(rec) => {
                        if let LockState::Released { forced: true, .. } = rec.state {
                            tracing::warn!(
                                "lock on {path} held by {} was FORCED open by {name} ({client})",
                                rec.owner_name
                            );
                        } else {
                            tracing::info!("{name} unlocked {path}");
                        }
                        self.locks_dirty.insert(path.clone());
                        self.io.events.emit(EventKind::Unlocked {
                            path: path.clone(),
                            by: name.clone(),
                            forced: rec.owner != client,
                        });
                        self.broadcast(PeerMessage::LockUpdate(rec.clone()), None);
                        let released = self.release_held(&path);
                        Ok((info(&rec), released))
                    }
                    Err(e) => Err(ApiError::Other(e.to_string())),
                };
                let _ = reply.send(res);
            }
            LockMsg::List(reply) => {
                let _ = reply.send(self.locks.held());
            }
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
                let ids = self.io.identities.all();
                let _ = reply.send((ids, self.locks.records()));
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

    fn propose(&mut self, lock: LockRecord, local: bool) -> Result<(), ApiError> {
        if local {
            match self.index.get(&lock.path).map(|r| &r.entry) {
                None => return Err(ApiError::Other(format!("{} does not exist", lock.path))),
                Some(e) if e.deleted => {
                    return Err(ApiError::Other(format!(
                        "{} does not exist (it was deleted)",
                        lock.path
                    )));
                }
                Some(e) if e.kind == EntryKind::Dir => {
                    return Err(ApiError::Other(format!(
                        "{} is a directory; only files can be locked",
                        lock.path
                    )));
                }
                Some(_) => {}
            }
        }
        let path = lock.path.clone();
        match self.locks.propose(lock, now_ns()) {
            Ok(()) => {
                self.locks_dirty.insert(path);
                Ok(())
            }
            Err(holder) if holder.state == LockState::Proposed => Err(ApiError::LockBusy {
                path: holder.path.to_string(),
                owner_name: holder.owner_name.clone(),
            }),
            Err(holder) => Err(ApiError::LockedBy {
                path: holder.path.to_string(),
                owner_name: holder.owner_name.clone(),
                owner: holder.owner,
                since: tandem_common::display::local_time(holder.since_ns),
            }),
        }
    }

    fn lock_update(&mut self, rec: LockRecord, from: Option<NodeId>) {
        let path = rec.path.clone();
        let was_held = self.locks.holder(&path).map(|l| l.id);
        if !self.locks.update(rec.clone()) {
            return;
        }
        self.locks_dirty.insert(path.clone());
        // The node that decided reports it on the feed; the others hear of
        // it through the relayed feed instead of each saying it again.
        let report = from.is_none();
        match &rec.state {
            LockState::Held => {
                tracing::info!(
                    "{} locked by {} (through {})",
                    path,
                    rec.owner_name,
                    rec.via
                );
                if report {
                    self.io.events.emit(EventKind::Locked {
                        path: path.clone(),
                        owner: rec.owner_name.clone(),
                        via: rec.via.clone(),
                    });
                }
            }
            LockState::Released { by, forced } => {
                if report {
                    self.io.events.emit(EventKind::Unlocked {
                        path: path.clone(),
                        by: by.clone(),
                        forced: *forced,
                    });
                }
                if *forced {
                    tracing::warn!(
                        "lock on {path} held by {} was forced open by {by}",
                        rec.owner_name
                    );
                } else {
                    tracing::info!("{path} unlocked by {by}");
                }
            }
            _ => {}
        }
        self.broadcast(PeerMessage::LockUpdate(rec), from);
        if was_held.is_some() && self.locks.holder(&path).is_none() {
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
        let Some(lock) = self.locks.holder(p) else {
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
        let Some(lock) = self.locks.holder(&remote.path) else {
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
