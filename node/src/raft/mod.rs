//! The cluster's lock table as a replicated state machine on Raft (openraft
//! 0.9, storage v2).
//!
//! - [`machine`]: the PURE lock table every member applies in log order.
//! - [`types`]: openraft's type configuration (member ids are Tandem node ids).
//! - [`store`]: log, vote, applied table and snapshot in `STATE/raft.db`.
//! - [`network`]: Raft messages over a [`RaftTransport`] the node provides.
//!
//! [`RaftLocks`] is what the node uses: [`RaftLocks::submit`] commits a lock
//! command through the leader (forwarding it when this member is not the
//! leader) and answers within [`RaftSettings::answer_within`] with the
//! command's outcome, a definite refusal when no majority can be reached
//! ([`SubmitError::NoMajority`], naming who is missing), or an honest
//! [`SubmitError::Unknown`] when the command was handed over but no answer
//! came (a retried `Lock` by the same owner answers `AlreadyHeld`, so
//! retrying is safe). Reads ([`RaftLocks::view`]) come from this member's
//! applied, hence committed, state; `submit` returns once this member has
//! applied the command too. [`RaftLocks::answer`] serves the requests other
//! members send (openraft's RPCs, forwarded commands, pings).
//!
//! How "no majority" is told apart, and how fast:
//! - on the leader: before writing, unless it had a command committed
//!   within a tenth of a heartbeat and every voter's link is still up
//!   ([`RaftTransport::heard_within`]), it confirms its leadership
//!   (`Raft::get_read_log_id`, one heartbeat round bounded by the heartbeat
//!   interval) and refuses with openraft's `QuorumNotEnough` (which lists
//!   who answered) before writing anything;
//! - elsewhere: when there is no known leader or the leader cannot be
//!   reached, every voter is pinged (bounded by `probe_timeout`); fewer than
//!   a majority answering is a refusal, otherwise the member waits for the
//!   election and tries again until the deadline.

pub mod machine;
pub mod network;
pub mod store;
pub mod types;

#[cfg(test)]
mod memnet;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::{ChangeMembers, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tandem_common::NodeId;
use tokio::time::Instant;

pub use self::machine::{Claim, LockCommand, LockOutcome, LockTable, PathLock};
pub use self::network::{Formation, RaftReply, RaftRequest, RaftTransport, TransportError};
pub use self::store::{LockView, RAFT_DB, RaftStoreError};
pub use self::types::{Applied, LockRaft, Member, MemberId, Metrics, TypeConfig};

use self::network::LockNetwork;

/// Timing and compaction of the lock cluster. Every member should use the
/// same values.
#[derive(Clone, Debug)]
pub struct RaftSettings {
    /// How often the leader sends heartbeats.
    pub heartbeat: Duration,
    /// A follower that hears no leader for a random time in
    /// `election_min..election_max` stands for election.
    pub election_min: Duration,
    /// See `election_min`.
    pub election_max: Duration,
    /// A submitted command is answered within this time.
    pub answer_within: Duration,
    /// How long a ping for "who is reachable" waits.
    pub probe_timeout: Duration,
    /// A snapshot is built after this many new log entries.
    pub snapshot_every: u64,
    /// Entries kept behind a snapshot (a follower lagging by fewer gets
    /// entries, not the snapshot).
    pub keep_after_snapshot: u64,
    /// Snapshots travel in chunks of at most this many bytes.
    pub snapshot_chunk: u64,
    /// Time allowed for sending one snapshot chunk.
    pub snapshot_chunk_timeout: Duration,
    /// Pause before retrying an unreachable member.
    pub backoff: Duration,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            heartbeat: Duration::from_millis(500),
            election_min: Duration::from_millis(1000),
            election_max: Duration::from_millis(1500),
            answer_within: Duration::from_millis(4500),
            probe_timeout: Duration::from_millis(1000),
            snapshot_every: 1000,
            keep_after_snapshot: 200,
            snapshot_chunk: 1024 * 1024,
            snapshot_chunk_timeout: Duration::from_secs(10),
            backoff: Duration::from_millis(500),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RaftSettings {
    /// The defaults with leader heartbeats every `every`: a follower that
    /// hears none for 2 to 3 of them stands for election (and a member
    /// votes for it once 3 passed: openraft's leader lease).
    pub fn with_heartbeat(every: Duration) -> RaftSettings {
        RaftSettings {
            heartbeat: every,
            election_min: every * 2,
            election_max: every * 3,
            ..RaftSettings::default()
        }
    }

    fn openraft_config(&self) -> Result<openraft::Config, RaftLocksError> {
        openraft::Config {
            cluster_name: "tandem-locks".into(),
            heartbeat_interval: millis(self.heartbeat),
            election_timeout_min: millis(self.election_min),
            election_timeout_max: millis(self.election_max),
            install_snapshot_timeout: millis(self.snapshot_chunk_timeout),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_after_snapshot,
            snapshot_max_chunk_size: self.snapshot_chunk,
            ..Default::default()
        }
        .validate()
        .map_err(|e| RaftLocksError::Config(e.to_string()))
    }

    /// A commit this recent spares the leader its majority check before a
    /// write.
    fn fresh_ack(&self) -> Duration {
        self.heartbeat / 10
    }

    /// A leader not heard from for this long is taken for gone.
    fn stale_after(&self) -> Duration {
        self.heartbeat * 3
    }
}

/// Who can be reached, as seen from one member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quorum {
    /// Names of the voters that answered (this member included).
    pub reachable: Vec<String>,
    /// Names of the voters that did not.
    pub down: Vec<String>,
    /// How many voters make a majority.
    pub needed: usize,
}

impl Quorum {
    /// Number of voters.
    pub fn total(&self) -> usize {
        self.reachable.len() + self.down.len()
    }

    /// Whether enough voters answered.
    pub fn has_majority(&self) -> bool {
        self.reachable.len() >= self.needed
    }
}

impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.has_majority() {
            write!(
                f,
                "{} of {} nodes reachable",
                self.reachable.len(),
                self.total()
            )?;
        } else {
            write!(
                f,
                "only {} of {} nodes reachable",
                self.reachable.len(),
                self.total()
            )?;
        }
        if !self.down.is_empty() {
            write!(f, " ({} down)", self.down.join(", "))?;
        }
        if !self.has_majority() {
            write!(f, "; a majority ({}) is needed", self.needed)?;
        }
        Ok(())
    }
}

/// A committed command: where it is in the log, and what it did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// Its log index.
    pub index: u64,
    /// What applying it answered.
    pub outcome: LockOutcome,
}

/// Why a submitted command got no outcome.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum SubmitError {
    /// Fewer than a majority of the voters can be reached. The command was
    /// not committed.
    #[error("{0}")]
    NoMajority(Quorum),
    /// The command was handed to a leader but no answer came in time: it
    /// may or may not be committed.
    #[error(
        "no answer from the cluster within {waited_ms} ms: the command may or may not have been applied; check the locks and retry"
    )]
    Unknown {
        /// How long the member waited.
        waited_ms: u64,
    },
    /// A majority is reachable but no leader was elected in time. The
    /// command was not committed.
    #[error("no leader was elected within {waited_ms} ms ({quorum}); retry")]
    NoLeader {
        /// How long the member waited.
        waited_ms: u64,
        /// Who is reachable.
        quorum: Quorum,
    },
    /// The member asked is not the leader (between members only).
    #[error("node is not the lock cluster's leader")]
    NotLeader {
        /// The leader it knows of.
        leader: Option<MemberId>,
    },
    /// This node is not a member of a lock cluster (yet).
    #[error("this node is not a member of a lock cluster")]
    NotMember,
    /// The Raft instance stopped (shutdown, or a storage failure).
    #[error("the lock service stopped: {0}")]
    Stopped(String),
}

/// Failures starting or steering a member.
#[derive(Debug, thiserror::Error)]
pub enum RaftLocksError {
    /// The Raft database.
    #[error(transparent)]
    Store(#[from] RaftStoreError),
    /// The settings were refused by openraft.
    #[error("invalid raft settings: {0}")]
    Config(String),
    /// openraft stopped or refused.
    #[error("raft: {0}")]
    Raft(String),
    /// A membership change has to be made on the leader.
    #[error("membership changes are made on the leader (node {leader:?})")]
    NotLeader {
        /// The leader this member knows of.
        leader: Option<MemberId>,
    },
}

struct Inner {
    me: MemberId,
    /// When this member, leading, last had a command committed.
    last_commit: std::sync::Mutex<Option<Instant>>,
    raft: LockRaft,
    view: LockView,
    transport: Arc<dyn RaftTransport>,
    settings: RaftSettings,
}

/// One member of the lock cluster: its Raft instance, its applied table and
/// the way to reach the others. Cheap to clone.
#[derive(Clone)]
pub struct RaftLocks {
    inner: Arc<Inner>,
}

impl RaftLocks {
    /// Opens `STATE/raft.db` and starts this node's Raft instance. A node
    /// that never joined a cluster waits for [`RaftLocks::initialize`] here
    /// or on another member.
    pub async fn start(
        me: NodeId,
        state_dir: &Path,
        transport: Arc<dyn RaftTransport>,
        settings: RaftSettings,
    ) -> Result<RaftLocks, RaftLocksError> {
        let me = MemberId(me);
        let path = state_dir.join(RAFT_DB);
        let (log, sm) = tokio::task::spawn_blocking(move || store::open(&path, me))
            .await
            .map_err(|e| RaftStoreError::Task(e.to_string()))??;
        let view = sm.view();
        let config = Arc::new(settings.openraft_config()?);
        let network = LockNetwork {
            me,
            transport: transport.clone(),
            backoff: settings.backoff,
        };
        let raft = LockRaft::new(me, config, network, log, sm)
            .await
            .map_err(|e| RaftLocksError::Raft(e.to_string()))?;
        Ok(RaftLocks {
            inner: Arc::new(Inner {
                me,
                last_commit: std::sync::Mutex::new(None),
                raft,
                view,
                transport,
                settings,
            }),
        })
    }

    /// Whether this member belongs to a cluster (has a membership).
    pub fn is_member(&self) -> bool {
        self.inner
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .next()
            .is_some()
    }

    /// This member's id.
    pub fn me(&self) -> MemberId {
        self.inner.me
    }

    /// The applied table of this member.
    pub fn view(&self) -> &LockView {
        &self.inner.view
    }

    /// openraft's live state report of this member.
    pub fn metrics(&self) -> tokio::sync::watch::Receiver<Metrics> {
        self.inner.raft.metrics()
    }

    /// The Raft instance (for inspection and tests).
    pub fn raft(&self) -> &LockRaft {
        &self.inner.raft
    }

    /// Forms a new cluster of `members` (node id → name), this node among
    /// them. Answers `false` when this member already belongs to a cluster
    /// (then nothing changes: members join by [`RaftLocks::add_member`]).
    pub async fn initialize(
        &self,
        members: BTreeMap<NodeId, String>,
    ) -> Result<bool, RaftLocksError> {
        let members: BTreeMap<MemberId, Member> = members
            .into_iter()
            .map(|(id, name)| (MemberId(id), Member { name }))
            .collect();
        match self.inner.raft.initialize(members).await {
            Ok(()) => Ok(true),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(RaftLocksError::Raft(e.to_string())),
        }
    }

    /// Adds a voter (on the leader): it first catches up as a learner.
    pub async fn add_member(&self, id: NodeId, name: String) -> Result<(), RaftLocksError> {
        let id = MemberId(id);
        let raft = &self.inner.raft;
        raft.add_learner(id, Member { name }, true)
            .await
            .map_err(membership_error)?;
        raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(membership_error)?;
        Ok(())
    }

    /// Removes a voter for good (on the leader).
    pub async fn remove_member(&self, id: NodeId) -> Result<(), RaftLocksError> {
        self.inner
            .raft
            .change_membership(
                ChangeMembers::RemoveVoters(BTreeSet::from([MemberId(id)])),
                false,
            )
            .await
            .map_err(membership_error)?;
        Ok(())
    }

    /// Stops this member's Raft instance (the database stays as it is).
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!("raft did not stop cleanly: {e}");
        }
    }

    /// Commits `command` through the leader and answers its outcome, within
    /// [`RaftSettings::answer_within`]. When it answers, this member's
    /// [`view`](RaftLocks::view) usually shows the command applied already
    /// (it waits for that, within the same deadline; the command is
    /// committed either way).
    pub async fn submit(&self, command: LockCommand) -> Result<LockOutcome, SubmitError> {
        let deadline = Instant::now() + self.inner.settings.answer_within;
        let done = self.submit_until(command, deadline, true).await?;
        let wait = deadline.saturating_duration_since(Instant::now());
        let applied = self
            .inner
            .raft
            .wait(Some(wait))
            .applied_index_at_least(Some(done.index), "apply a committed lock command")
            .await;
        if let Err(e) = applied {
            tracing::debug!(
                "lock command {} committed, not applied here yet: {e}",
                done.index
            );
        }
        Ok(done.outcome)
    }

    /// Answers a request from another member (`from`, already authenticated
    /// by the transport).
    pub async fn answer(&self, from: MemberId, request: RaftRequest) -> RaftReply {
        tracing::trace!("raft {} from {from}", request.kind());
        let raft = &self.inner.raft;
        match request {
            RaftRequest::AppendEntries(r) => RaftReply::AppendEntries(raft.append_entries(r).await),
            RaftRequest::Vote(r) => RaftReply::Vote(raft.vote(r).await),
            RaftRequest::InstallSnapshot(r) => {
                RaftReply::InstallSnapshot(raft.install_snapshot(r).await)
            }
            RaftRequest::Submit { command, budget_ms } => {
                // Answer a little before the asking member gives up.
                let budget =
                    Duration::from_millis(budget_ms).min(self.inner.settings.answer_within);
                let deadline = Instant::now() + budget * 9 / 10;
                RaftReply::Submit(self.submit_until(command, deadline, false).await)
            }
            RaftRequest::Ping => RaftReply::Pong,
            // The node answers this itself (it knows whom it trusts).
            RaftRequest::Formation => RaftReply::Formation(Formation {
                member: self.is_member(),
                trusted: Vec::new(),
                name: String::new(),
            }),
            RaftRequest::Query(_) => RaftReply::Answer(Err(tandem_common::proto::ApiError::Other(
                "questions are answered by the node".into(),
            ))),
        }
    }

    async fn submit_until(
        &self,
        command: LockCommand,
        deadline: Instant,
        may_forward: bool,
    ) -> Result<Committed, SubmitError> {
        let started = Instant::now();
        let me = self.inner.me;
        let mut metrics = self.inner.raft.metrics();
        // A leader named by a member that turned out not to lead: tried at
        // once, but only a few times in a row (two members with stale views
        // could name each other).
        let mut hint: Option<MemberId> = None;
        let mut hints_followed = 0;
        // When a majority last answered a probe: while an election runs,
        // the members are not asked again every round.
        let mut majority_at: Option<Instant> = None;
        let mut stood = false;
        loop {
            let (leader, member) = {
                let m = metrics.borrow_and_update();
                let member = m
                    .membership_config
                    .membership()
                    .voter_ids()
                    .next()
                    .is_some();
                (hint.take().or(m.current_leader), member)
            };
            if !member {
                return Err(SubmitError::NotMember);
            }
            let mut probe = false;
            match leader {
                Some(l) if l == me => match self.write_as_leader(&command, deadline, started).await
                {
                    Err(SubmitError::NotLeader { leader }) => hint = leader.filter(|l| *l != me),
                    r => return r,
                },
                Some(l)
                    if may_forward
                        && !self
                            .inner
                            .transport
                            .heard_within(l, self.inner.settings.stale_after()) =>
                {
                    // A leader gone quiet: not handed over (see
                    // `RaftTransport::heard_within`); find out who is there.
                    probe = true;
                }
                Some(l) if may_forward => match self.forward(l, &command, deadline).await {
                    Ok(Err(SubmitError::NotLeader { leader })) => hint = leader.filter(|x| *x != l),
                    Ok(r) => return r,
                    Err(TransportError::Unreachable(_)) => probe = true,
                    Err(e) => {
                        tracing::debug!("lock command handed to {l}, no answer: {e}");
                        return Err(unknown(started));
                    }
                },
                Some(l) => return Err(SubmitError::NotLeader { leader: Some(l) }),
                None if !may_forward => return Err(SubmitError::NotLeader { leader: None }),
                None => probe = true,
            }
            if hint.is_some() {
                hints_followed += 1;
                if hints_followed > 2 {
                    hint = None;
                    hints_followed = 0;
                }
            }
            let fresh = majority_at.is_some_and(|t| t.elapsed() < self.inner.settings.election_max);
            if probe && !fresh {
                let quorum = self.probe().await;
                if !quorum.has_majority() {
                    return Err(SubmitError::NoMajority(quorum));
                }
                majority_at = Some(Instant::now());
            }
            if probe && may_forward && !stood {
                // A majority answers but the leader is silent: once the
                // other members stop honouring its lease, this member stands
                // for election at once instead of waiting for its timer
                // (and maybe splitting the vote with another member whose
                // timer fires at the same moment).
                if let Some(l) = leader.filter(|l| *l != me) {
                    stood = self.stand_when_lease_expires(l, deadline).await;
                }
            }
            let now = Instant::now();
            if now + self.inner.settings.probe_timeout >= deadline {
                // No time for another round: say who can be reached.
                return Err(refusal(started, self.probe().await));
            }
            if hint.is_none() {
                // Wait for news (an election, a new leader), bounded.
                let wait = deadline
                    .saturating_duration_since(now)
                    .saturating_sub(self.inner.settings.probe_timeout)
                    .min(self.inner.settings.election_max);
                if let Ok(Err(_)) = tokio::time::timeout(wait, metrics.changed()).await {
                    return Err(SubmitError::Stopped("raft stopped".into()));
                }
            }
        }
    }

    /// Waits until `leader` has been silent for a whole leader lease (the
    /// other members then vote again), within `deadline`, and stands for
    /// election unless a new leader is known by then. True once it stood
    /// (or a new leader came).
    async fn stand_when_lease_expires(&self, leader: MemberId, deadline: Instant) -> bool {
        let lease = self.inner.settings.election_max;
        let Some(silent) = self.inner.transport.silent_for(leader) else {
            return true; // the transport cannot tell: leave it to the timers
        };
        let wait = lease.saturating_sub(silent) + self.inner.settings.heartbeat / 5;
        if Instant::now() + wait + self.inner.settings.probe_timeout >= deadline {
            return false;
        }
        tokio::time::sleep(wait).await;
        let still = self.inner.raft.metrics().borrow().current_leader == Some(leader);
        if still && !self.inner.transport.heard_within(leader, lease) {
            tracing::debug!("the lock cluster's leader {leader} is silent; standing for election");
            if let Err(e) = self.inner.raft.trigger().elect().await {
                tracing::debug!("cannot stand for election: {e}");
            }
        }
        true
    }

    async fn write_as_leader(
        &self,
        command: &LockCommand,
        deadline: Instant,
        started: Instant,
    ) -> Result<Committed, SubmitError> {
        let raft = &self.inner.raft;
        // Our own clock of the last commit: openraft's
        // `millis_since_quorum_ack` is as old as its last metrics report.
        let acked_lately = self
            .inner
            .last_commit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() <= self.inner.settings.fresh_ack());
        // A fresh acknowledgement says nothing of a member whose link has
        // closed since: then the leadership is confirmed as usual (a write
        // without that member's majority would wait out the deadline and
        // come back "unknown" instead of "not reachable").
        if !acked_lately || !self.voters_heard() {
            // Before writing, the leader confirms a majority still follows
            // it (one heartbeat round, bounded by openraft; the deadline is
            // a backstop that leaves time to probe), unless a majority
            // acknowledged it a moment ago (a busy cluster): a command
            // appended by a leader that lost its majority would stay
            // undecided, maybe committed much later, and the client could
            // only be told "unknown".
            let check_by = deadline
                .checked_sub(self.inner.settings.probe_timeout)
                .filter(|t| *t > Instant::now())
                .unwrap_or(deadline);
            match tokio::time::timeout_at(check_by, raft.get_read_log_id()).await {
                Ok(Ok(_)) => {}
                Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                    return Err(SubmitError::NotLeader {
                        leader: f.leader_id,
                    });
                }
                Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)))) => {
                    return Err(SubmitError::NoMajority(
                        self.quorum_of(|id| q.got.contains(id)),
                    ));
                }
                Ok(Err(RaftError::Fatal(f))) => return Err(SubmitError::Stopped(f.to_string())),
                Err(_) => return Err(refusal(started, self.probe().await)),
            }
        }
        match tokio::time::timeout_at(deadline, raft.client_write(command.clone())).await {
            Ok(Ok(resp)) => match resp.data {
                Applied::Lock(outcome) => {
                    *self
                        .inner
                        .last_commit
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                    Ok(Committed {
                        index: resp.log_id.index,
                        outcome,
                    })
                }
                Applied::Nothing => Err(SubmitError::Stopped(
                    "a lock command was applied as a blank entry".into(),
                )),
            },
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                // Not appended, or truncated by a new leader: not committed.
                Err(SubmitError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                Err(SubmitError::Stopped(e.to_string()))
            }
            Ok(Err(RaftError::Fatal(f))) => Err(SubmitError::Stopped(f.to_string())),
            Err(_) => Err(unknown(started)),
        }
    }

    async fn forward(
        &self,
        leader: MemberId,
        command: &LockCommand,
        deadline: Instant,
    ) -> Result<Result<Committed, SubmitError>, TransportError> {
        let budget = deadline.saturating_duration_since(Instant::now());
        let request = RaftRequest::Submit {
            command: command.clone(),
            budget_ms: millis(budget),
        };
        match self.inner.transport.call(leader, request, budget).await? {
            RaftReply::Submit(r) => Ok(r),
            _ => Err(TransportError::Failed {
                to: leader,
                reason: "answered a lock command with a reply of another kind".into(),
            }),
        }
    }

    /// Pings every voter and says who answered.
    pub async fn probe(&self) -> Quorum {
        let me = self.inner.me;
        let membership = self.inner.raft.metrics().borrow().membership_config.clone();
        let timeout = self.inner.settings.probe_timeout;
        let pings = membership
            .membership()
            .voter_ids()
            .filter(|id| *id != me)
            .map(|id| {
                let transport = self.inner.transport.clone();
                async move {
                    let reply = transport.call(id, RaftRequest::Ping, timeout).await;
                    (id, matches!(reply, Ok(RaftReply::Pong)))
                }
            });
        let answered: BTreeSet<MemberId> = futures::future::join_all(pings)
            .await
            .into_iter()
            .filter_map(|(id, ok)| ok.then_some(id))
            .collect();
        self.quorum_of(|id| *id == me || answered.contains(id))
    }

    /// Whether every other voter was heard from lately over a link that is
    /// still up (see [`RaftTransport::heard_within`]).
    fn voters_heard(&self) -> bool {
        let me = self.inner.me;
        let membership = self.inner.raft.metrics().borrow().membership_config.clone();
        let stale = self.inner.settings.stale_after();
        membership
            .membership()
            .voter_ids()
            .filter(|id| *id != me)
            .all(|id| self.inner.transport.heard_within(id, stale))
    }

    /// The voters split by `reachable`, with their names.
    fn quorum_of(&self, reachable: impl Fn(&MemberId) -> bool) -> Quorum {
        let membership = self.inner.raft.metrics().borrow().membership_config.clone();
        let m = membership.membership();
        let mut q = Quorum {
            reachable: Vec::new(),
            down: Vec::new(),
            needed: 0,
        };
        let mut voters = 0;
        for id in m.voter_ids() {
            voters += 1;
            let name = match m.get_node(&id) {
                Some(n) if !n.name.is_empty() => n.name.clone(),
                _ => id.to_string(),
            };
            if reachable(&id) {
                q.reachable.push(name);
            } else {
                q.down.push(name);
            }
        }
        q.needed = voters / 2 + 1;
        q
    }
}

/// The refusal of a command that was not handed to any leader.
fn refusal(started: Instant, quorum: Quorum) -> SubmitError {
    if quorum.has_majority() {
        SubmitError::NoLeader {
            waited_ms: millis(started.elapsed()),
            quorum,
        }
    } else {
        SubmitError::NoMajority(quorum)
    }
}

fn unknown(started: Instant) -> SubmitError {
    SubmitError::Unknown {
        waited_ms: millis(started.elapsed()),
    }
}

fn membership_error(e: RaftError<MemberId, ClientWriteError<MemberId, Member>>) -> RaftLocksError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => RaftLocksError::NotLeader {
            leader: f.leader_id,
        },
        e => RaftLocksError::Raft(e.to_string()),
    }
}
