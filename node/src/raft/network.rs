//! Raft messages between members, carried by whatever the node provides
//! ([`RaftTransport`]): peer links with forwarding through intermediate
//! nodes in the node, an in-process hub in tests.
//!
//! A transport only moves a [`RaftRequest`] to a member and brings its
//! [`RaftReply`] back; the receiving node hands the request to
//! [`RaftLocks::answer`](super::RaftLocks::answer). Besides openraft's three
//! RPCs, members ask each other two things: `Submit` (a lock command sent to
//! the leader by the member a client talks to) and `Ping` (is this member
//! reachable, to name who is missing when there is no majority).
//!
//! The transport is a trait object, so openraft's core is instantiated once,
//! in this crate, whatever carries the messages (each instantiation costs
//! tens of seconds of release build).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{RPCTypes, RaftNetwork, RaftNetworkFactory};
use serde::{Deserialize, Serialize};

use super::machine::LockCommand;
use super::types::{Member, MemberId, TypeConfig};
use super::{Committed, SubmitError};

/// What one member asks another.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRequest {
    /// openraft: replicate entries (or heartbeat).
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// openraft: request a vote.
    Vote(VoteRequest<MemberId>),
    /// openraft: one chunk of a snapshot.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// Commit this command, as the leader; answer within `budget_ms`.
    Submit {
        /// The command a client asked for.
        command: LockCommand,
        /// How long the asking member still waits.
        budget_ms: u64,
    },
    /// Are you reachable?
    Ping,
    /// Are you free to form a lock cluster, and whom do you trust?
    Formation,
    /// A peer question, for a node with no direct link to this one (the
    /// node answers it, not the lock cluster).
    Query(tandem_common::proto::PeerQuery),
}

impl RaftRequest {
    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            RaftRequest::AppendEntries(_) => "append-entries",
            RaftRequest::Vote(_) => "vote",
            RaftRequest::InstallSnapshot(_) => "install-snapshot",
            RaftRequest::Submit { .. } => "submit",
            RaftRequest::Ping => "ping",
            RaftRequest::Formation => "formation",
            RaftRequest::Query(_) => "query",
        }
    }
}

/// The answer to a [`RaftRequest`], same variant.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftReply {
    /// Answer to `AppendEntries`.
    AppendEntries(Result<AppendEntriesResponse<MemberId>, RaftError<MemberId>>),
    /// Answer to `Vote`.
    Vote(Result<VoteResponse<MemberId>, RaftError<MemberId>>),
    /// Answer to `InstallSnapshot`.
    InstallSnapshot(
        Result<InstallSnapshotResponse<MemberId>, RaftError<MemberId, InstallSnapshotError>>,
    ),
    /// Answer to `Submit`.
    Submit(Result<Committed, SubmitError>),
    /// Answer to `Ping`.
    Pong,
    /// Answer to `Formation`.
    Formation(Formation),
    /// Answer to `Query`.
    Answer(Result<tandem_common::proto::PeerAnswer, tandem_common::proto::ApiError>),
}

/// What a node says when asked to form a lock cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Formation {
    /// It already belongs to a cluster.
    pub member: bool,
    /// The nodes it trusts (empty if its trust list cannot be read).
    pub trusted: Vec<tandem_common::NodeId>,
    /// Its name.
    pub name: String,
}

/// Why a request got no reply.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// There is no route to the member now; the request was not delivered.
    #[error("no route to node {0}")]
    Unreachable(MemberId),
    /// No reply in time; the request may or may not have been delivered.
    #[error("no reply from node {0} within {1:?}")]
    Timeout(MemberId, Duration),
    /// The route failed after sending; the request may have been delivered.
    #[error("link to node {to} failed: {reason}")]
    Failed {
        /// The member asked.
        to: MemberId,
        /// What failed.
        reason: String,
    },
}

/// Carries requests to other members and brings their replies back.
///
/// Contract: `Unreachable` only when the request was certainly not
/// delivered (a lock command is then known not to be committed through
/// it); give up after `timeout` with `Timeout`.
pub trait RaftTransport: Send + Sync + 'static {
    /// Sends `request` to `to` and waits for its reply.
    fn call(
        &self,
        to: MemberId,
        request: RaftRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<RaftReply, TransportError>>;

    /// Whether a message from `member` arrived within `within`. A member
    /// forwards a client's command to the leader only if it heard from it
    /// lately (a leader sends heartbeats): a command sent towards a leader
    /// that is gone may be lost or not, and its answer would be "unknown";
    /// one not sent is known not to be committed. The default (always
    /// true) suits transports that report `Unreachable` exactly.
    fn heard_within(&self, member: MemberId, within: Duration) -> bool {
        let _ = (member, within);
        true
    }

    /// How long ago a message from `member` last arrived, if ever (kept
    /// when a link closes, unlike [`RaftTransport::heard_within`]). `None`
    /// when the transport does not know.
    fn silent_for(&self, member: MemberId) -> Option<Duration> {
        let _ = member;
        None
    }
}

/// openraft's network factory over a [`RaftTransport`].
#[derive(Clone)]
pub(crate) struct LockNetwork {
    pub(crate) me: MemberId,
    pub(crate) transport: Arc<dyn RaftTransport>,
    /// Pause before retrying an unreachable member.
    pub(crate) backoff: Duration,
}

impl RaftNetworkFactory<TypeConfig> for LockNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: MemberId, _node: &Member) -> PeerClient {
        PeerClient {
            net: self.clone(),
            target,
        }
    }
}

/// openraft's client for one member.
pub(crate) struct PeerClient {
    net: LockNetwork,
    target: MemberId,
}

type RpcError<E = openraft::error::Infallible> = RPCError<MemberId, Member, RaftError<MemberId, E>>;

#[derive(Debug, thiserror::Error)]
#[error("node {0} answered {1} with a reply of another kind")]
struct WrongReply(MemberId, &'static str);

impl PeerClient {
    async fn call<E: std::error::Error>(
        &self,
        action: RPCTypes,
        request: RaftRequest,
        option: &RPCOption,
    ) -> Result<RaftReply, RpcError<E>> {
        let ttl = option.hard_ttl();
        match self.net.transport.call(self.target, request, ttl).await {
            Ok(reply) => Ok(reply),
            Err(e @ TransportError::Unreachable(_)) => {
                Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Err(TransportError::Timeout(..)) => Err(RPCError::Timeout(Timeout {
                action,
                id: self.net.me,
                target: self.target,
                timeout: ttl,
            })),
            Err(e @ TransportError::Failed { .. }) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }

    fn wrong<E: std::error::Error>(&self, what: &'static str) -> RpcError<E> {
        RPCError::Network(NetworkError::new(&WrongReply(self.target, what)))
    }

    fn remote<E: std::error::Error>(&self, e: RaftError<MemberId, E>) -> RpcError<E> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<MemberId>, RpcError> {
        match self
            .call(
                RPCTypes::AppendEntries,
                RaftRequest::AppendEntries(rpc),
                &option,
            )
            .await?
        {
            RaftReply::AppendEntries(r) => r.map_err(|e| self.remote(e)),
            _ => Err(self.wrong("append-entries")),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<MemberId>, RpcError<InstallSnapshotError>> {
        match self
            .call(
                RPCTypes::InstallSnapshot,
                RaftRequest::InstallSnapshot(rpc),
                &option,
            )
            .await?
        {
            RaftReply::InstallSnapshot(r) => r.map_err(|e| self.remote(e)),
            _ => Err(self.wrong("install-snapshot")),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<MemberId>,
        option: RPCOption,
    ) -> Result<VoteResponse<MemberId>, RpcError> {
        match self
            .call(RPCTypes::Vote, RaftRequest::Vote(rpc), &option)
            .await?
        {
            RaftReply::Vote(r) => r.map_err(|e| self.remote(e)),
            _ => Err(self.wrong("vote")),
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(self.net.backoff))
    }
}
