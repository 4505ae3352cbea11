//! The node's use of the lock cluster ([`crate::raft`]): its Raft member
//! over the mesh of peer links, forming the cluster and keeping its
//! membership equal to the trusted nodes, and the client-facing lock
//! operations (lock, wait, unlock, list) with their answers in words.
//!
//! Forming: a node that belongs to no lock cluster yet and has the
//! smallest id among itself and the nodes it trusts asks each of them
//! whether they are free and trust the same set; when every one answers
//! yes it forms the cluster of all of them (alone, when it trusts nobody).
//! Requiring every member's answer means two nodes can never form two
//! clusters: the one with the smallest id speaks for all. Afterwards the
//! leader adds trusted nodes that are not members and removes members it no
//! longer trusts (`tandem-node trust` / `untrust`, on every node); a member
//! that is only down stays a member.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tandem_common::proto::{ApiError, ClientResponse, LockInfo};
use tandem_common::{NodeId, RelPath};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::core::{CoreHandle, LockMsg, now_ns};
use crate::links::Links;
use crate::mesh::{Mesh, MeshTransport};
use crate::raft::{
    Claim, Formation, LockCommand, LockOutcome, MemberId, PathLock, Quorum, RaftLocks, RaftReply,
    RaftRequest, RaftSettings, RaftTransport, SubmitError,
};
use crate::trust::Trust;

/// How often forming is tried while this node belongs to no cluster.
const FORMING_EVERY: Duration = Duration::from_millis(250);
/// How often the leader compares the membership with the trust list.
const FORMATION_EVERY: Duration = Duration::from_secs(1);
/// How long a lock request made before the cluster is formed waits for it.
const WAIT_FOR_FORMING: Duration = Duration::from_secs(3);
/// How long "no majority" is tried again before it is the answer: links
/// come and go for a moment when a node restarts (both ends dial, one
/// link is kept), and a refusal then would be wrong a few ms later.
const RETRY_NO_MAJORITY: Duration = Duration::from_millis(1200);
/// How long a waiter missing from the queue here may be a `Wait` not yet
/// applied on this member.
const APPLY_GRACE: Duration = Duration::from_secs(2);
/// How long a formation question or a membership change may take.
const FORMATION_TIMEOUT: Duration = Duration::from_secs(2);
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(10);
/// Rounds in a row a member must be missing from the trust list before the
/// leader removes it.
const REMOVE_AFTER: u32 = 3;

/// A locked path as the core needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locked {
    /// The lock, for people.
    pub info: LockInfo,
    /// The node the owner works through: its changes to the path flow.
    pub via: NodeId,
}

/// The locks as the core needs them: the holder of each locked path.
pub type LockMirror = HashMap<RelPath, Locked>;

/// The node's lock service. Cheap to share (`Arc`).
pub struct LockService {
    raft: RaftLocks,
    transport: Arc<MeshTransport>,
    me: NodeId,
    name: String,
    trust: Trust,
    links: Links,
    /// Members missing from the trust list, and for how many rounds.
    absent: std::sync::Mutex<HashMap<NodeId, u32>>,
}

impl LockService {
    /// Opens `STATE/raft.db`, starts this node's member and the tasks that
    /// form the cluster and tell the core what is locked.
    pub async fn start(
        state_dir: &Path,
        settings: RaftSettings,
        mesh: Arc<Mesh>,
        core: CoreHandle,
        stop: CancellationToken,
    ) -> anyhow::Result<Arc<LockService>> {
        let (me, name) = (mesh.me(), mesh.name().to_string());
        let (trust, links) = (mesh.trust().clone(), mesh.links().clone());
        let transport = Arc::new(MeshTransport(mesh.clone()));
        let raft = RaftLocks::start(
            me,
            state_dir,
            transport.clone() as Arc<dyn RaftTransport>,
            settings,
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot start the lock service: {e}"))?;
        mesh.attach(raft.clone());
        let s = Arc::new(LockService {
            raft,
            transport,
            me,
            name,
            trust,
            links,
            absent: Default::default(),
        });
        tokio::spawn(s.clone().formation_loop(stop.clone()));
        tokio::spawn(s.clone().mirror_loop(core, stop));
        Ok(s)
    }

    /// Stops the member (its database stays).
    pub async fn shutdown(&self) {
        self.raft.shutdown().await;
    }

    /// A name for node `id`: its own, the lock cluster's, a link's, the
    /// trust list's, or the id.
    pub fn name_of(&self, id: NodeId) -> String {
        if id == self.me {
            return self.name.clone();
        }
        let from_membership = {
            let m = self.raft.metrics();
            let m = m.borrow();
            m.membership_config
                .membership()
                .get_node(&MemberId(id))
                .map(|n| n.name.clone())
        };
        if let Some(n) = from_membership.filter(|n| !n.is_empty()) {
            return n;
        }
        if let Some(l) = self.links.get(&id) {
            return l.name.clone();
        }
        if let Some(n) = self.trust.name_of(id) {
            return n;
        }
        id.to_string()
    }

    fn info(&self, path: &RelPath, lock: &PathLock) -> LockInfo {
        LockInfo {
            path: path.clone(),
            owner_name: lock.holder.owner_name.clone(),
            owner: lock.holder.owner,
            since_ns: lock.holder.at_ns,
            via: self.name_of(lock.holder.via),
            waiting: lock.queue.iter().map(|w| w.owner_name.clone()).collect(),
        }
    }

    fn claim_info(&self, path: &RelPath, claim: &Claim) -> LockInfo {
        match self.raft.view().get(path) {
            Ok(Some(l)) if l.holder.owner == claim.owner => self.info(path, &l),
            _ => self.info(
                path,
                &PathLock {
                    holder: claim.clone(),
                    queue: Default::default(),
                },
            ),
        }
    }

    /// Every lock of the cluster (as applied here), in path order.
    pub fn list(&self) -> Result<Vec<LockInfo>, ApiError> {
        let locks = self.raft.view().locks().map_err(service_error)?;
        Ok(locks.iter().map(|(p, l)| self.info(p, l)).collect())
    }

    /// Takes the lock on `path` for `owner` (or queues, with `wait`).
    /// Answers `Locked` or `Queued`.
    pub async fn lock(
        &self,
        path: RelPath,
        owner: Uuid,
        owner_name: &str,
        wait: bool,
    ) -> Result<ClientResponse, ApiError> {
        let claim = Claim {
            owner,
            owner_name: owner_name.to_string(),
            via: self.me,
            at_ns: now_ns(),
        };
        let cmd = if wait {
            LockCommand::Wait {
                path: path.clone(),
                claim,
            }
        } else {
            LockCommand::Lock {
                path: path.clone(),
                claim,
            }
        };
        match self.submit(cmd).await? {
            LockOutcome::Granted(c) | LockOutcome::AlreadyHeld(c) => {
                Ok(ClientResponse::Locked(self.claim_info(&path, &c)))
            }
            LockOutcome::Refused { holder } => Err(locked_by(&path, &holder)),
            LockOutcome::Queued { holder, position } => {
                let lock = match self.raft.view().get(&path) {
                    Ok(Some(l)) => self.info(&path, &l),
                    _ => self.claim_info(&path, &holder),
                };
                Ok(ClientResponse::Queued { lock, position })
            }
            LockOutcome::QueueFull { holder } => Err(ApiError::Other(format!(
                "{path} is locked by {} and {} requests already wait for it; try again later",
                holder.owner_name,
                crate::raft::machine::MAX_WAITERS
            ))),
            LockOutcome::TableFull => Err(ApiError::Other(format!(
                "the cluster already holds {} locks; unlock some first",
                crate::raft::machine::MAX_LOCKS
            ))),
            LockOutcome::NameTooLong => Err(ApiError::Other(format!(
                "the client name is longer than {} bytes; pick a shorter one (--name)",
                crate::raft::machine::MAX_NAME
            ))),
            other => Err(unexpected(other)),
        }
    }

    /// Submits `cmd`, giving a forming cluster and a passing lack of
    /// majority a moment (a command refused for want of a majority was not
    /// committed, so trying it again is safe).
    async fn submit(&self, cmd: LockCommand) -> Result<LockOutcome, ApiError> {
        self.wait_for_forming().await;
        let started = tokio::time::Instant::now();
        loop {
            match self.raft.submit(cmd.clone()).await {
                Err(SubmitError::NoMajority(_)) if started.elapsed() < RETRY_NO_MAJORITY => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                r => return r.map_err(submit_error),
            }
        }
    }

    /// Gives a cluster being formed (nodes just started) a moment; a node
    /// that trusts nobody forms its cluster of one now.
    async fn wait_for_forming(&self) {
        if !self.raft.is_member()
            && self.trust.try_members().is_ok_and(|t| t.is_empty())
            && let Some(n) = self.try_to_form(true).await
        {
            tracing::info!("lock cluster: {n}");
        }
        let mut metrics = self.raft.metrics();
        let _ = tokio::time::timeout(WAIT_FOR_FORMING, async {
            while !self.raft.is_member() {
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    /// Waits until `owner` holds the lock on `path` (answers `Locked`), or
    /// is no longer in its queue (an error). This member may apply the
    /// `Wait` a moment after it was committed: missing from the queue
    /// counts only after [`APPLY_GRACE`].
    pub async fn await_grant(&self, path: &RelPath, owner: Uuid) -> Result<LockInfo, ApiError> {
        let mut metrics = self.raft.metrics();
        let grace = tokio::time::Instant::now() + APPLY_GRACE;
        loop {
            let queued = match self.raft.view().get(path).map_err(service_error)? {
                Some(l) if l.holder.owner == owner => return Ok(self.info(path, &l)),
                Some(l) => l.queue.iter().any(|w| w.owner == owner),
                None => false,
            };
            let changed = if queued {
                metrics.changed().await
            } else if tokio::time::Instant::now() < grace {
                match tokio::time::timeout_at(grace, metrics.changed()).await {
                    Ok(r) => r,
                    Err(_) => Ok(()), // look once more
                }
            } else {
                return Err(ApiError::Other(format!(
                    "not waiting for {path}: the request left its queue (cancelled, or the lock service restarted)"
                )));
            };
            if changed.is_err() {
                return Err(ApiError::ShuttingDown);
            }
        }
    }

    /// A client waiting for `path` went away: its place is given up, and
    /// if the lock came to it meanwhile (it never learned), released.
    /// Tried a few times: a client gone must not keep a lock.
    pub async fn cancel_wait(&self, path: RelPath, owner: Uuid) {
        for attempt in 1..=5u32 {
            let cmd = LockCommand::CancelWait {
                path: path.clone(),
                owner,
            };
            let r = match self.raft.submit(cmd).await {
                Ok(LockOutcome::NotWaiting) => match self.raft.view().get(&path) {
                    Ok(Some(l)) if l.holder.owner == owner => {
                        let cmd = LockCommand::Unlock {
                            path: path.clone(),
                            by: owner,
                            force: false,
                            at_ns: now_ns(),
                        };
                        self.raft
                            .submit(cmd)
                            .await
                            .map(|_| "released the lock it was given")
                    }
                    _ => Ok("it was no longer waiting"),
                },
                Ok(_) => Ok("its place was given up"),
                Err(e) => Err(e),
            };
            match r {
                Ok(what) => {
                    tracing::info!("a client waiting for {path} left; {what}");
                    return;
                }
                Err(e) if attempt == 5 => {
                    tracing::warn!(
                        "a client waiting for {path} left and could not be taken out of its queue ({e}); it may get the lock: `tandem unlock --force` frees it"
                    );
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await,
            }
        }
    }

    /// Releases the lock on `path` on behalf of `by` (anyone's, with
    /// `force`; authorization is checked before). Answers the released
    /// lock and who holds it now (the first waiter), if anyone.
    pub async fn unlock(
        &self,
        path: RelPath,
        by: Uuid,
        force: bool,
    ) -> Result<(LockInfo, Option<LockInfo>), ApiError> {
        let cmd = LockCommand::Unlock {
            path: path.clone(),
            by,
            force,
            at_ns: now_ns(),
        };
        match self.submit(cmd).await? {
            LockOutcome::Released { released, next } => Ok((
                self.claim_info(&path, &released),
                next.map(|n| self.claim_info(&path, &n)),
            )),
            LockOutcome::NotLocked => Err(ApiError::Other(format!("{path} is not locked"))),
            LockOutcome::NotOwner { holder } => Err(ApiError::Other(format!(
                "{path} is locked by {} ({}); only the owner can unlock it (an admin can use --force)",
                holder.owner_name, holder.owner
            ))),
            other => Err(unexpected(other)),
        }
    }

    /// Forms the cluster when this node is the one to, then keeps the
    /// membership equal to the trusted set while it leads.
    async fn formation_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut said = String::new();
        let mut first = true;
        loop {
            let pause = if first {
                Duration::ZERO
            } else if self.raft.is_member() {
                FORMATION_EVERY
            } else {
                FORMING_EVERY
            };
            first = false;
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.cancelled() => return,
            }
            let (voters, leader) = {
                let m = self.raft.metrics();
                let m = m.borrow();
                let voters: BTreeSet<NodeId> = m
                    .membership_config
                    .membership()
                    .voter_ids()
                    .map(|v| v.0)
                    .collect();
                (voters, m.current_leader)
            };
            let news = if voters.is_empty() {
                self.try_to_form(false).await
            } else if leader == Some(MemberId(self.me)) {
                self.follow_trust(&voters).await
            } else {
                None
            };
            // Each distinct situation is logged once, not every second.
            match news {
                Some(n) if n != said => {
                    tracing::info!("lock cluster: {n}");
                    said = n;
                }
                _ => {}
            }
        }
    }

    /// One attempt to form the cluster; what stands in the way, in words.
    /// `alone_now`: a lock was asked here, so a node that trusts nobody
    /// forms a cluster of its own.
    async fn try_to_form(&self, alone_now: bool) -> Option<String> {
        let trusted = match self.trust.try_members() {
            Ok(t) => t,
            Err(e) => return Some(format!("not formed: {e}")),
        };
        let mut all: BTreeSet<NodeId> = trusted.into_iter().collect();
        all.insert(self.me);
        if all.len() == 1 && !alone_now {
            // A node that trusts nobody yet is usually being set up: a
            // cluster of one formed now could never merge with the one its
            // peers form. It forms alone only when a lock is asked here.
            return Some("not formed: this node trusts no other node yet".into());
        }
        let smallest = *all.iter().next().expect("holds me");
        if smallest != self.me {
            return Some(format!(
                "waiting for {} (the node with the smallest id) to form it, or for a member to add this node",
                self.name_of(smallest)
            ));
        }
        let mut members = BTreeMap::from([(self.me, self.name.clone())]);
        for &id in all.iter().filter(|id| **id != self.me) {
            let answer = self
                .transport
                .call(MemberId(id), RaftRequest::Formation, FORMATION_TIMEOUT)
                .await;
            let f: Formation = match answer {
                Ok(RaftReply::Formation(f)) => f,
                Ok(_) => return Some(format!("not formed: {} answered oddly", self.name_of(id))),
                Err(_) => {
                    return Some(format!(
                        "not formed yet: waiting for {} to be reachable",
                        self.name_of(id)
                    ));
                }
            };
            if f.member {
                return Some(format!(
                    "not formed: {} already belongs to a lock cluster; this node waits to be added",
                    f.name
                ));
            }
            let mut theirs: BTreeSet<NodeId> = f.trusted.into_iter().collect();
            theirs.insert(id);
            if theirs != all {
                return Some(format!(
                    "not formed: {} does not trust the same nodes as this one (every node must trust every other: tandem-node trust ID)",
                    f.name
                ));
            }
            members.insert(id, f.name);
        }
        let names: Vec<String> = members.values().cloned().collect();
        match self.raft.initialize(members).await {
            Ok(true) => Some(format!("formed with {}", names.join(", "))),
            Ok(false) => None,
            Err(e) => Some(format!("not formed: {e}")),
        }
    }

    /// On the leader: adds trusted nodes that are not members, removes
    /// members no longer trusted. A damaged trust list changes nothing; a
    /// member is removed only after its absence from the list was seen
    /// [`REMOVE_AFTER`] times in a row (a file being rewritten by an editor
    /// reads empty for a moment), and never because the list is empty.
    async fn follow_trust(&self, voters: &BTreeSet<NodeId>) -> Option<String> {
        let trusted: BTreeSet<NodeId> = match self.trust.try_members() {
            Ok(t) => t.into_iter().collect(),
            Err(e) => return Some(format!("membership left as it is: {e}")),
        };
        for &id in trusted.difference(voters) {
            // Its own name (it may have no link here), whether it is there
            // at all (a voter that cannot catch up is not added), and
            // whether it already belongs to another cluster.
            let name = match self
                .transport
                .call(MemberId(id), RaftRequest::Formation, FORMATION_TIMEOUT)
                .await
            {
                Ok(RaftReply::Formation(f)) if f.member => {
                    let name = if f.name.is_empty() {
                        self.name_of(id)
                    } else {
                        f.name
                    };
                    return Some(format!(
                        "{name} is trusted but belongs to another lock cluster (formed before the nodes trusted each other); to join this one, stop it, remove STATE/{} there (release its locks first) and start it again",
                        crate::raft::RAFT_DB
                    ));
                }
                Ok(RaftReply::Formation(f)) if !f.name.is_empty() => f.name,
                Ok(_) => self.name_of(id),
                Err(_) => {
                    return Some(format!(
                        "{} is trusted but not reachable; it is added when it is",
                        self.name_of(id)
                    ));
                }
            };
            let add =
                tokio::time::timeout(MEMBERSHIP_TIMEOUT, self.raft.add_member(id, name.clone()));
            match add.await {
                Ok(Ok(())) => tracing::info!("lock cluster: {name} added (now trusted)"),
                Ok(Err(e)) => return Some(format!("cannot add {name}: {e}")),
                Err(_) => return Some(format!("adding {name}: waiting for it to catch up")),
            }
        }
        let untrusted: Vec<NodeId> = voters
            .iter()
            .filter(|v| **v != self.me && !trusted.contains(v))
            .copied()
            .collect();
        let confirmed = {
            let mut seen = self.absent.lock().unwrap_or_else(|e| e.into_inner());
            seen.retain(|id, _| untrusted.contains(id));
            for id in &untrusted {
                *seen.entry(*id).or_default() += 1;
            }
            untrusted
                .iter()
                .filter(|id| seen.get(id).is_some_and(|n| *n >= REMOVE_AFTER))
                .copied()
                .collect::<Vec<_>>()
        };
        if trusted.is_empty() && !confirmed.is_empty() {
            return Some(
                "the trust list names no node: membership left as it is (untrust members one by one)".into(),
            );
        }
        for id in confirmed {
            let name = self.name_of(id);
            let remove = tokio::time::timeout(MEMBERSHIP_TIMEOUT, self.raft.remove_member(id));
            match remove.await {
                Ok(Ok(())) => tracing::info!("lock cluster: {name} removed (no longer trusted)"),
                Ok(Err(e)) => return Some(format!("cannot remove {name}: {e}")),
                Err(_) => return Some(format!("removing {name}: no majority yet")),
            }
        }
        None
    }

    /// The applied table as the core needs it. An error (the table's lock
    /// poisoned by a panic) is never read as "nothing is locked".
    pub fn mirror(&self) -> Result<LockMirror, crate::raft::RaftStoreError> {
        Ok(self
            .raft
            .view()
            .locks()?
            .iter()
            .map(|(p, l)| {
                let info = self.info(p, l);
                (
                    p.clone(),
                    Locked {
                        info,
                        via: l.holder.via,
                    },
                )
            })
            .collect())
    }

    /// Tells the core the applied table whenever it changes.
    async fn mirror_loop(self: Arc<Self>, core: CoreHandle, stop: CancellationToken) {
        let mut metrics = self.raft.metrics();
        let mut last = None;
        loop {
            let applied = metrics.borrow_and_update().last_applied;
            if applied != last {
                last = applied;
                match self.mirror() {
                    Ok(m) => core.tell_lock(LockMsg::Table(m)),
                    // The core keeps the table it has: held changes stay held.
                    Err(e) => tracing::error!("cannot read the applied lock table: {e}"),
                }
            }
            tokio::select! {
                r = metrics.changed() => if r.is_err() { return },
                _ = stop.cancelled() => return,
            }
        }
    }
}

fn locked_by(path: &RelPath, holder: &Claim) -> ApiError {
    ApiError::LockedBy {
        path: path.to_string(),
        owner_name: holder.owner_name.clone(),
        owner: holder.owner,
        since: tandem_common::display::local_time(holder.at_ns),
    }
}

fn no_majority(q: Quorum) -> ApiError {
    ApiError::NoMajority {
        reachable: q.reachable,
        down: q.down,
        needed: q.needed,
    }
}

fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::NoMajority(q) => no_majority(q),
        SubmitError::Unknown { waited_ms } => ApiError::LockUnknown { waited_ms },
        SubmitError::NotMember => ApiError::LockService(
            "this node is not in a lock cluster yet (every node must trust every other; the node log says what it waits for)".into(),
        ),
        e => ApiError::LockService(e.to_string()),
    }
}

fn service_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::LockService(format!("cannot read the lock table: {e}"))
}

fn unexpected(o: LockOutcome) -> ApiError {
    ApiError::LockService(format!("unexpected answer from the lock table: {o:?}"))
}
