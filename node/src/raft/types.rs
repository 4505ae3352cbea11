//! The openraft type configuration of the lock table: who the members are,
//! what the log carries (lock commands) and what applying it answers.
//!
//! A member's Raft id is the Tandem node id itself, all 16 bytes, wrapped in
//! [`MemberId`] only because openraft wants `Default` (which a real node id
//! has no business implementing). No mapping table, no truncation to 64 bits
//! (a collision there would merge two members' votes), and every vote, log id
//! and membership names nodes exactly as the rest of Tandem does. The
//! membership's node record ([`Member`]) carries the node's name, so "B, C
//! down" can be said without asking anyone.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};
use tandem_common::NodeId;
use uuid::Uuid;

use super::machine::{LockCommand, LockOutcome};

/// A Raft member's id: a Tandem node id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MemberId(pub NodeId);

impl Default for MemberId {
    /// The nil id, which no key hashes to; openraft only uses it as a
    /// placeholder.
    fn default() -> Self {
        MemberId(NodeId(Uuid::nil()))
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl From<NodeId> for MemberId {
    fn from(id: NodeId) -> Self {
        MemberId(id)
    }
}

/// What the membership records about a member.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's name when it was made a member, for messages.
    pub name: String,
}

/// What applying one log entry answers: blank and membership entries
/// answer `Nothing` (openraft wants one answer per entry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// A blank or membership entry.
    Nothing,
    /// A lock command's outcome.
    Lock(LockOutcome),
}

openraft::declare_raft_types!(
    /// The lock table's Raft types.
    pub TypeConfig:
        D = LockCommand,
        R = Applied,
        NodeId = MemberId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A running Raft instance of the lock table.
pub type LockRaft = openraft::Raft<TypeConfig>;
/// One log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log position (leader's term and node, index).
pub type LogId = openraft::LogId<MemberId>;
/// A vote (term, candidate, committed).
pub type Vote = openraft::Vote<MemberId>;
/// Membership with the log id that introduced it.
pub type StoredMembership = openraft::StoredMembership<MemberId, Member>;
/// A snapshot's header.
pub type SnapshotMeta = openraft::SnapshotMeta<MemberId, Member>;
/// A snapshot: header and serialized lock table.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// What storage errors look like to openraft (fatal: Raft stops).
pub type StorageError = openraft::StorageError<MemberId>;
/// openraft's state report of one instance.
pub type Metrics = openraft::RaftMetrics<MemberId, Member>;

/// openraft's storage test suite names members by small numbers.
#[cfg(test)]
impl From<u64> for MemberId {
    fn from(n: u64) -> Self {
        MemberId(NodeId(Uuid::from_u128(u128::from(n))))
    }
}
