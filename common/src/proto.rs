//! Every message on the wire.
//!
//! A connection is TLS 1.3 with both sides' keys proven (see
//! [`crate::tls`]). Inside it a handshake follows: the connecting side sends
//! a hello frame, the accepting side answers with a hello-reply frame (or,
//! for a node it does not trust, with a refusal before reading anything). Both start
//! with raw bytes, [`MAGIC`] then the protocol version as a big-endian `u32`,
//! *before* any serialized body, so a version mismatch is detected and named
//! even when the two sides could not decode each other's bodies.
//!
//! After the handshake the connection carries [`Request`] / [`NodeToClient`]
//! (role client) or [`PeerMessage`] (role peer). Only append enum variants
//! within a protocol version: bincode is not self-describing.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{self, CodecError};
use crate::model::{ContentHash, FileEntry, NodeId};
use crate::path::RelPath;

/// First bytes of every connection.
pub const MAGIC: [u8; 8] = *b"TANDEM\r\n";
/// Version of this protocol; bumped on any incompatible change.
/// 19: `PeerMessage::GetBlocks::verify`: a node sends a block of a file
/// whose stat is still the one it hashed (and a few seconds old) without
/// hashing it again, unless the asker sets `verify` (after a failed try,
/// and for a client's fetch). An older node is refused at hello
/// (`Refusal::VersionMismatch`).
/// 18: the block hashes of a file of more than one block are BLAKE3
/// chaining values, from which the content hash is made (see
/// [`crate::hashing`]); a list must make the entry's content hash. An older
/// node's lists would not, so it is refused at hello
/// (`Refusal::VersionMismatch`).
/// 17: typed errors in answers between nodes: `PeerError` for content
/// (`Blocks`, `Files`, `BlockList`, `PeerAnswer::Blocks`), `ApiError` for
/// a question's answer (`Answer`, and the lock cluster's forwarded
/// `Answer` reply), where text was sent before. An older node is refused
/// at hello (`Refusal::VersionMismatch`).
/// 16: receiver-paced index: `PeerMessage::IndexTaken` (the receiver has
/// room for that many more index messages); a node sends at most a window
/// of index messages ahead of it. A node of 15 (which never sends it) is
/// refused at hello like any other version.
/// 15: part of a block: `PeerMessage::GetBlocks::bases` (the asker's older
/// copy as chunk hashes), `BlockData::patch` (only the chunks that differ).
/// A node of 14 is refused at hello like any other version.
/// 14: small files' content travels inside the index message
/// (`PeerMessage::Index::contents`, at most [`INLINE_MAX`] bytes a file).
/// 13: one-way mirrors: `ClientRequest::Override`, `Revert`,
/// `ClientResponse::Mirrored`, `ApiError::WrongMode`, `FileState::Differs`,
/// `FileSummary::differs`.
/// 12: symbolic links: `EntryKind::Link` (an entry's target text),
/// `ListedFile::link`, `FileSummary::link`; `EventKind::NamesCollide` (two
/// names that differ only in case or Unicode form), `NameDifference`.
/// 11: versions: `ClientRequest::Versions`, `RestoreVersion`,
/// `PeerQuery::Versions`, `RestoreVersion`, `EventKind::VersionRestored`,
/// `ApiError::NoSuchVersion`.
/// 10: `ClientRequest::Ignored` (ignore patterns); a `Resume` may come again
/// on a link (send the index again from there).
/// 9: fetching through the mesh (`ClientRequest::FetchConflict`,
/// `PeerQuery::OpenConflict`, `ReadConflict`, `Blocks`); Raft envelope
/// bodies as bytes. 8: conflict copies listed and resolved. 7: node
/// figures over time.
/// 6: `NodeStatus::id`. Older nodes and clients are refused at hello with
/// both versions named (`Refusal::VersionMismatch`).
/// 5: TLS on every connection; ids are key ids; clients prove a key and
/// have roles (`Access`), no tokens. An older node or client cannot finish
/// the TLS handshake (it speaks plain text), and says so.
/// 4: `FileState::Error`, `FileSummary::error`, `EventKind::ApplyFailed`,
/// `ApplyRecovered` and `Unwatched`, `NodeStatus::warning`.
pub const PROTOCOL_VERSION: u32 = 19;

/// Largest file whose content may travel inside an index message (the
/// receiver installs it without asking: one crossing instead of three).
pub const INLINE_MAX: u64 = 16 * 1024;

/// What the connecting side is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Another node, for sync.
    Peer,
    /// A client (CLI or UI).
    Client,
}

/// The connecting side's introduction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// Peer or client (must match what TLS said).
    pub role: Role,
    /// Human name of the sender (at most [`MAX_NAME`] bytes).
    pub name: String,
}

/// The accepting node's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HelloReply {
    /// Accepted; here is who you are talking to.
    Welcome {
        /// The node's id.
        node_id: NodeId,
        /// The node's name.
        name: String,
        /// For a client: its id (from its key) and what it may do (`None`:
        /// nothing yet, it must register or be approved).
        client: Option<(Uuid, Option<Access>)>,
    },
    /// Refused, with the reason.
    Refused(Refusal),
}

/// Why a handshake was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// Different protocol versions.
    #[error(
        "protocol version mismatch: the node speaks version {node}, the connecting side speaks version {theirs}; run the same Tandem release on both"
    )]
    VersionMismatch {
        /// The accepting node's version.
        node: u32,
        /// The connecting side's version.
        theirs: u32,
    },
    /// A node connected to itself (its own id came back).
    #[error("connected to itself")]
    SelfConnection,
    /// The node does not trust the connecting node's id.
    #[error(
        "node {node} does not trust this node (id {id}); on {node} run: tandem-node --dir DIR trust {id}"
    )]
    NotTrusted {
        /// The refusing node's name.
        node: String,
        /// The connecting node's id, as the refusing node saw it.
        id: NodeId,
    },
    /// Too many connections of this kind; try later.
    #[error("node {node} has too many {what} connections ({limit}); try again later")]
    Busy {
        /// The refusing node's name.
        node: String,
        /// peer, client, not-yet-approved client.
        what: String,
        /// The cap.
        limit: u32,
    },
    /// The hello said another role than TLS did, or a name was too long.
    #[error("bad hello: {0}")]
    BadHello(String),
    /// Any other reason, in words.
    #[error("{0}")]
    Other(String),
}

/// Handshake errors as seen by either side.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The first bytes were not Tandem's magic.
    #[error("not a Tandem connection (bad magic bytes)")]
    BadMagic,
    /// Versions differ.
    #[error(
        "protocol version mismatch: we speak version {ours}, the other side speaks version {theirs}; run the same Tandem release on both"
    )]
    VersionMismatch {
        /// Our version.
        ours: u32,
        /// Theirs.
        theirs: u32,
    },
    /// The node refused us.
    #[error("refused by the node: {0}")]
    Refused(Refusal),
    /// Framing or decoding failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The other side closed before finishing the handshake.
    #[error("connection closed during the handshake")]
    Closed,
}

/// Encodes a handshake frame: magic, version, then the body.
pub fn encode_hello<T: Serialize>(body: &T) -> Result<Bytes, CodecError> {
    encode_hello_with_version(PROTOCOL_VERSION, body)
}

/// Like [`encode_hello`] with an explicit version (tests use other versions).
pub fn encode_hello_with_version<T: Serialize>(
    version: u32,
    body: &T,
) -> Result<Bytes, CodecError> {
    let body = codec::encode(body)?;
    let mut b = BytesMut::with_capacity(12 + body.len());
    b.put_slice(&MAGIC);
    b.put_u32(version);
    b.put_slice(&body);
    Ok(b.freeze())
}

/// Splits a handshake frame into (version, body). The body is decoded only
/// when the version matches ours.
pub fn decode_hello<T: DeserializeOwned>(frame: &[u8]) -> Result<(u32, Option<T>), HandshakeError> {
    if frame.len() < 12 || frame[..8] != MAGIC {
        return Err(HandshakeError::BadMagic);
    }
    let version = u32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]);
    if version != PROTOCOL_VERSION {
        return Ok((version, None));
    }
    Ok((version, Some(codec::decode(&frame[12..])?)))
}

/// What the accepting node said about itself in its welcome.
#[derive(Debug, Clone)]
pub struct Welcomed {
    /// The node's id.
    pub node_id: NodeId,
    /// The node's name.
    pub name: String,
    /// For a client: its id and role.
    pub client: Option<(Uuid, Option<Access>)>,
}

/// The connecting side of the handshake: sends `hello`, reads the reply,
/// and returns what the accepting node said about itself.
pub async fn connect_handshake<S>(
    io: &mut crate::codec::FrameIo<S>,
    hello: &Hello,
) -> Result<Welcomed, HandshakeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    send_hello(io, hello).await?;
    recv_welcome(io).await
}

/// The connecting side's first step: its hello. Messages may follow at
/// once, before the answer (a peer's `Resume`: one round trip less).
pub async fn send_hello<S>(
    io: &mut crate::codec::FrameIo<S>,
    hello: &Hello,
) -> Result<(), HandshakeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    io.send_raw(encode_hello(hello)?).await?;
    Ok(())
}

/// The connecting side's second step: the accepting node's answer.
pub async fn recv_welcome<S>(io: &mut crate::codec::FrameIo<S>) -> Result<Welcomed, HandshakeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = io.recv_raw().await?.ok_or(HandshakeError::Closed)?;
    match decode_hello::<HelloReply>(&frame)? {
        (theirs, None) => Err(HandshakeError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs,
        }),
        (_, Some(HelloReply::Refused(r))) => Err(HandshakeError::Refused(r)),
        (
            _,
            Some(HelloReply::Welcome {
                node_id,
                name,
                client,
            }),
        ) => Ok(Welcomed {
            node_id,
            name,
            client,
        }),
    }
}

/// A client's request, tagged so responses can be matched.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the client; echoed in the response.
    pub id: u64,
    /// What is asked.
    pub body: ClientRequest,
}

/// Longest node or client name accepted, in bytes.
pub const MAX_NAME: usize = 128;

/// What a client may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Access {
    /// List, feed, fetch, cache, nodes, locks, held.
    Read,
    /// And put, lock, unlock own locks.
    Write,
    /// And force-unlock, approve clients, invite.
    Admin,
}

impl Access {
    /// Lower-case name, as typed on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Admin => "admin",
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Access {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "read" => Ok(Access::Read),
            "write" => Ok(Access::Write),
            "admin" => Ok(Access::Admin),
            _ => Err(format!("{s:?} is not a role; use read, write or admin")),
        }
    }
}

/// What a client can ask a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ClientRequest {
    /// The file table, streamed as one or more `Files` responses.
    List,
    /// Use a one-time invite code: this client gets the code's role.
    Register {
        /// The code `tandem invite` printed.
        code: String,
    },
    /// Admin: give a client a role (`None` takes every right away).
    Approve {
        /// The client's id.
        id: Uuid,
        /// The role.
        role: Option<Access>,
    },
    /// Admin: make a one-time code that registers a client with `role`.
    Invite {
        /// The role it grants.
        role: Access,
    },
    /// Every client identity the cluster knows, with its role.
    Identities,
    /// Lock a file for the logged-in client.
    Lock {
        /// Which file.
        path: RelPath,
        /// Queue behind the holder if it is locked (answered `Queued`)
        /// instead of being refused.
        wait: bool,
    },
    /// After `Queued`: answer `Locked` once the lock is this client's.
    /// Closing the connection (or sending anything else) first leaves the
    /// queue.
    AwaitLock {
        /// Which file.
        path: RelPath,
    },
    /// Release a lock.
    Unlock {
        /// Which file.
        path: RelPath,
        /// Release someone else's lock (logged with who did it).
        force: bool,
    },
    /// Every lock held in the cluster.
    Locks,
    /// Every change held back by a lock.
    Held,
    /// Every conflict copy kept in the cluster.
    Conflicts,
    /// Restore or discard one kept conflict copy.
    ResolveConflict {
        /// The node that keeps it (by name).
        node: String,
        /// The copy: [`ConflictCopy::id`].
        id: String,
        /// What to do with it.
        action: ConflictAction,
    },
    /// The clients connected to this node now.
    Clients,
    /// What this node ignores now: its patterns and the paths they match.
    Ignored,
    /// On a send-only node: push this node's version over every peer's
    /// version it declined (under `path`, or everywhere).
    Override {
        /// A file or folder; `None`: everything.
        path: Option<RelPath>,
    },
    /// On a receive-only node: throw away the changes made here (under
    /// `path`, or everywhere), keeping them as versions, and take the
    /// cluster's version again.
    Revert {
        /// A file or folder; `None`: everything.
        path: Option<RelPath>,
    },
    /// The versions of a file (or of the files in a folder) that nodes
    /// kept when a peer's change deleted or overwrote them.
    Versions {
        /// The file or folder.
        path: RelPath,
    },
    /// Make a kept version the current one again.
    RestoreVersion {
        /// The node that keeps it (by name).
        node: String,
        /// The version: [`KeptVersion::id`].
        id: String,
    },
    /// Stream events as they happen, after `after` when resuming.
    Subscribe {
        /// Where the client left off (from a previous `Event`).
        after: Option<FeedCursor>,
    },
    /// Download a file (streamed as `Chunk` responses).
    Fetch {
        /// Which file.
        path: RelPath,
        /// From this node (by name); the best holder when `None`.
        from: Option<String>,
    },
    /// Download a kept conflict copy (streamed like `Fetch`: `FetchStart`
    /// names the copy by its id, then `Chunk`s).
    FetchConflict {
        /// The node that keeps it (by name).
        node: String,
        /// The copy: [`ConflictCopy::id`].
        id: String,
    },
    /// The cache of a node (this one when `None`).
    Cache {
        /// Node name.
        node: Option<String>,
    },
    /// Every node of the cluster with its figures.
    Nodes,
    /// Round-trip time to a node.
    Ping {
        /// Node name.
        node: String,
    },
    /// A node's own files (streamed as `Files`).
    Discover {
        /// Node name.
        node: String,
    },
    /// Upload a file: this header, then `PutData` requests with the bytes.
    Put {
        /// Where it goes in the cluster.
        path: RelPath,
        /// Total size.
        size: u64,
        /// BLAKE3 of the content.
        hash: ContentHash,
        /// Modification time to give it (ns).
        mtime_ns: i64,
        /// Permission bits.
        mode: u32,
    },
    /// A piece of a `Put` upload, in order; empty `data` ends it.
    PutData {
        /// The bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
}

/// Where a feed left off: the node's run (it restarts at 0 on restart) and
/// the last sequence seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedCursor {
    /// Identifies one run of the node.
    pub epoch: u64,
    /// Last sequence received.
    pub seq: u64,
}

/// Everything a node sends a client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum NodeToClient {
    /// The answer (or one part of it) to request `id`.
    Response {
        /// The request's id.
        id: u64,
        /// The answer.
        body: ClientResponse,
    },
    /// A feed event (after `Subscribe`).
    Event(Event),
    /// Events between two sequences were dropped (backlog exceeded or node
    /// restarted); the client should refresh its view.
    Missed {
        /// The node's current run.
        epoch: u64,
        /// First sequence that can no longer be sent.
        from: u64,
        /// The next sequence that will be sent.
        to: u64,
    },
}

/// Something that happened, as the feed reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The reporting node's run.
    pub epoch: u64,
    /// Sequence within that run.
    pub seq: u64,
    /// When (ns since the epoch).
    pub time_ns: i64,
    /// The node reporting it.
    pub node: String,
    /// What happened.
    pub kind: EventKind,
}

/// The kinds of events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A file appeared on `node` (made there).
    Added {
        /// Which.
        path: RelPath,
        /// Size.
        size: u64,
    },
    /// A file changed on `node` (made there).
    Changed {
        /// Which.
        path: RelPath,
        /// New size.
        size: u64,
    },
    /// A file was deleted on `node` (there, or applying a peer's delete).
    Deleted {
        /// Which.
        path: RelPath,
        /// The node where the delete was made.
        by: String,
    },
    /// A file was copied from one node to another.
    Transferred {
        /// Which.
        path: RelPath,
        /// Source node.
        from: String,
        /// Destination node.
        to: String,
        /// File size.
        size: u64,
        /// Bytes that crossed the network.
        sent: u64,
        /// How long it took (ms).
        millis: u64,
    },
    /// A conflict was resolved; the loser was kept.
    Conflict {
        /// Which.
        path: RelPath,
        /// Node whose version won.
        winner: String,
        /// Node whose version lost.
        loser: String,
        /// Where the loser is kept (on `node`).
        kept_as: String,
    },
    /// A file was locked.
    Locked {
        /// Which.
        path: RelPath,
        /// Owner name.
        owner: String,
        /// Node it was taken through.
        via: String,
    },
    /// A file was unlocked.
    Unlocked {
        /// Which.
        path: RelPath,
        /// Who unlocked it.
        by: String,
        /// Forced by someone other than the owner.
        forced: bool,
    },
    /// A change to a locked file was held.
    Held {
        /// Which.
        path: RelPath,
        /// Where the change was made.
        from: String,
        /// Modify or delete.
        kind: HeldKind,
    },
    /// Held changes were released on unlock.
    Released {
        /// Which.
        path: RelPath,
        /// Where the change was made.
        from: String,
        /// Modify or delete.
        kind: HeldKind,
    },
    /// A peer node came up.
    NodeUp {
        /// Its name.
        name: String,
    },
    /// A peer node went away.
    NodeDown {
        /// Its name.
        name: String,
    },
    /// A client connected.
    ClientConnected {
        /// Its name.
        name: String,
        /// Its address.
        addr: String,
    },
    /// A client disconnected.
    ClientDisconnected {
        /// Its name.
        name: String,
        /// Its address.
        addr: String,
    },
    /// A node could not apply a change to its disk; it keeps retrying.
    ApplyFailed {
        /// Which file.
        path: RelPath,
        /// Where the change came from.
        from: String,
        /// Why, as the node's disk said it.
        error: String,
    },
    /// A change that had failed to apply is now applied (or no longer wanted).
    ApplyRecovered {
        /// Which file.
        path: RelPath,
    },
    /// A kept conflict copy was made the current version again.
    ConflictRestored {
        /// The file it is a version of.
        path: RelPath,
        /// Who asked.
        by: String,
        /// Where the version it replaced is kept now (if there was one).
        replaced_as: Option<String>,
    },
    /// A kept version was made the current one again.
    VersionRestored {
        /// The file.
        path: RelPath,
        /// Who asked.
        by: String,
    },
    /// A kept conflict copy was deleted.
    ConflictDiscarded {
        /// The copy (its place in the node's conflicts folder).
        id: String,
        /// Who asked.
        by: String,
    },
    /// The node cannot watch every folder (the inotify limit) and rescans
    /// the tree periodically instead.
    Unwatched {
        /// Why.
        reason: String,
        /// Seconds between rescans.
        rescan_secs: u64,
    },
    /// Two names in the node's folder differ only in case or Unicode form
    /// (`Notes.txt`, `notes.txt`): both are kept there, but a
    /// case-insensitive or normalizing file system cannot hold both.
    NamesCollide {
        /// One of the two (the first in path order).
        path: RelPath,
        /// The other.
        other: RelPath,
        /// How they differ.
        how: NameDifference,
    },
}

/// How two spellings of one name differ, for a file system that does not
/// tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NameDifference {
    /// Only in upper and lower case (`Notes.txt`, `notes.txt`).
    Case,
    /// Only in Unicode form: the same letters, composed differently (NFC
    /// `café`, one character for `é`, and NFD `café`, `e` and an accent).
    Unicode,
    /// Both.
    CaseAndUnicode,
}

impl fmt::Display for NameDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameDifference::Case => "only in case",
            NameDifference::Unicode => {
                "only in Unicode form (an accented letter written as one character or as two)"
            }
            NameDifference::CaseAndUnicode => "only in case and Unicode form",
        })
    }
}

/// Answers to client requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ClientResponse {
    /// Part of the file table; `more` says another part follows.
    Files {
        /// Rows, sorted by path.
        files: Vec<ListedFile>,
        /// Another `Files` part follows.
        more: bool,
    },
    /// The request failed.
    Error(ApiError),
    /// The invite was accepted: this client now has `role`.
    Registered {
        /// The role.
        role: Access,
    },
    /// A client's role was set.
    Approved(IdentityRecord),
    /// A one-time code, valid until `expires_ns`, on this node only.
    Invited {
        /// The code.
        code: String,
        /// When it stops working (ns).
        expires_ns: i64,
    },
    /// The cluster's client identities.
    IdentityList(Vec<IdentityRecord>),
    /// A lock was taken.
    Locked(LockInfo),
    /// The lock request waits in the file's queue.
    Queued {
        /// The lock as it stands (holder and queue).
        lock: LockInfo,
        /// Place in the queue, 1 = next.
        position: usize,
    },
    /// A lock was released; the changes it held are now being reconciled.
    Unlocked {
        /// The lock that was released.
        lock: LockInfo,
        /// The held changes released with it.
        released: Vec<HeldChange>,
        /// What became of each, in the order of `released`, as the nodes
        /// holding them reported within a moment of the unlock.
        outcomes: Vec<HeldFate>,
    },
    /// The cluster's locks.
    LockList(Vec<LockInfo>),
    /// Changes held back by locks.
    HeldList(Vec<HeldChange>),
    /// Live clients of the node.
    ClientList(Vec<ClientInfo>),
    /// The feed started; events follow as `NodeToClient::Event`.
    Subscribed {
        /// The node's current run.
        epoch: u64,
    },
    /// Start of a fetched file.
    FetchStart {
        /// The version being sent.
        file: ListedFile,
        /// The node that serves it.
        from: String,
    },
    /// Part of a fetched file; `last` ends it. Build it with
    /// [`ClientResponse::chunk`].
    Chunk {
        /// Bytes in `data`.
        len: u32,
        /// The bytes; they travel as the raw frame after this message
        /// (see [`codec::Body`]).
        #[serde(skip)]
        data: Bytes,
        /// No more chunks follow.
        last: bool,
    },
    /// A node's cache.
    CacheReport(CacheReport),
    /// The cluster's nodes.
    NodeList(Vec<NodeStatus>),
    /// A ping's round-trip time.
    Pong {
        /// Microseconds.
        rtt_us: u64,
    },
    /// An upload was stored.
    Stored {
        /// Where.
        path: RelPath,
    },
    /// Every kept conflict copy (answer to `Conflicts`).
    ConflictList {
        /// The copies, newest first.
        copies: Vec<ConflictCopy>,
        /// Nodes that could not say what they keep, with why ("B: timed
        /// out"): their copies are missing from `copies`.
        unanswered: Vec<String>,
        /// Older copies kept but not listed (each node lists its newest
        /// ones only).
        not_listed: u64,
    },
    /// A conflict copy was restored or discarded.
    ConflictResolved(ConflictResolution),
    /// What the node ignores (answer to `Ignored`).
    IgnoredList(IgnoredReport),
    /// Kept versions (answer to `Versions`).
    VersionList {
        /// The versions, newest kept first.
        versions: Vec<KeptVersion>,
        /// Nodes that could not say what they keep, with why.
        unanswered: Vec<String>,
    },
    /// A kept version is the current one again.
    VersionRestored(VersionRestoration),
    /// What `Override` or `Revert` did.
    Mirrored(MirrorReport),
}

/// What `tandem override` or `tandem revert` did on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorReport {
    /// The node.
    pub node: String,
    /// The paths pushed over the others' version (override) or thrown
    /// away here (revert), at most [`MirrorReport::LISTED`] of them.
    pub paths: Vec<RelPath>,
    /// How many there were in all.
    pub count: u64,
    /// Paths left as they were, with why (at most
    /// [`MirrorReport::LISTED`]); the node's log has them all.
    pub not_done: Vec<String>,
}

impl MirrorReport {
    /// At most this many paths are named.
    pub const LISTED: usize = 1000;
}

/// A version a node kept when a peer's change deleted or overwrote it
/// (in its `.tandem/versions/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptVersion {
    /// The node that keeps it.
    pub node: String,
    /// Its place in that node's versions folder, which identifies it there.
    pub id: String,
    /// The file it is a version of.
    pub path: RelPath,
    /// The node whose change replaced it.
    pub cause: String,
    /// Size.
    pub size: u64,
    /// The version's own modification time (ns).
    pub mtime_ns: i64,
    /// When it was kept (ns).
    pub kept_ns: i64,
}

impl KeptVersion {
    /// A short id for people to type (`tandem restore f --version 3f2a9c1`).
    pub fn short_id(&self) -> String {
        let h = blake3::hash(format!("{}\0{}", self.node, self.id).as_bytes());
        h.to_hex()[..7].to_string()
    }
}

/// What restoring a version did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRestoration {
    /// The node that kept it (and made the change).
    pub node: String,
    /// The version restored.
    pub id: String,
    /// The file.
    pub path: RelPath,
    /// Where the version it replaced is kept now (in the node's versions
    /// folder), if there was one.
    pub replaced_as: Option<String>,
}

/// What a node ignores now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IgnoredReport {
    /// The node.
    pub node: String,
    /// Its patterns, in the order they apply.
    pub patterns: Vec<IgnoreRule>,
    /// Lines of the ignore file that are not patterns, with why.
    pub problems: Vec<String>,
    /// Paths on its disk that a pattern matches (an ignored folder once,
    /// not what is in it), by path.
    pub paths: Vec<IgnoredPath>,
    /// Matching paths not listed (the list is capped).
    pub not_listed: u64,
}

/// One ignore pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IgnoreRule {
    /// As written.
    pub pattern: String,
    /// `.tandemignore:LINE`, or `--ignore`.
    pub source: String,
}

/// A path a node ignores, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IgnoredPath {
    /// The path.
    pub path: RelPath,
    /// It is a folder (nothing in it is synced either).
    pub dir: bool,
    /// The pattern that matched it.
    pub rule: IgnoreRule,
}

/// A losing version kept in a node's conflicts folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictCopy {
    /// The node that keeps it.
    pub node: String,
    /// Its place in that node's conflicts folder (`.tandem/conflicts/`),
    /// which identifies it there.
    pub id: String,
    /// The file it is a version of; `None` when its name does not say (a
    /// file set aside by a delete that a crash interrupted).
    pub path: Option<RelPath>,
    /// The node whose version it is, as its name records it.
    pub author: String,
    /// Size in bytes.
    pub size: u64,
    /// Its modification time (ns since the epoch).
    pub mtime_ns: i64,
    /// When it was kept (ns since the epoch).
    pub kept_ns: i64,
}

impl ConflictCopy {
    /// A short id for people to type (`tandem conflicts restore 3f2a9c1`):
    /// the first hex digits of a hash of the node and the copy's id.
    pub fn short_id(&self) -> String {
        let h = blake3::hash(format!("{}\0{}", self.node, self.id).as_bytes());
        h.to_hex()[..7].to_string()
    }
}

/// What to do with a kept conflict copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConflictAction {
    /// Make it the current version (a new local change on the node that
    /// keeps it, which then syncs everywhere); the version it replaces is
    /// kept as a conflict copy in its turn.
    Restore,
    /// Delete it.
    Discard,
}

/// What resolving a conflict copy did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictResolution {
    /// The node that kept it.
    pub node: String,
    /// The copy.
    pub id: String,
    /// What was done.
    pub action: ConflictAction,
    /// The file it was restored as (`Restore`).
    pub path: Option<RelPath>,
    /// Where the version it replaced is kept now (`Restore` over an
    /// existing file).
    pub replaced_as: Option<String>,
}

/// One entry of a node's cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// Which file.
    pub path: RelPath,
    /// Size in bytes.
    pub size: u64,
    /// Hits since it was cached.
    pub hits: u64,
    /// Last access (ns).
    pub last_access_ns: i64,
}

/// A node's cache and its totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheReport {
    /// The node.
    pub node: String,
    /// Policy name.
    pub policy: String,
    /// Capacity in bytes.
    pub capacity: u64,
    /// Bytes in use.
    pub used: u64,
    /// Hits.
    pub hits: u64,
    /// Misses.
    pub misses: u64,
    /// Entries.
    pub entries: Vec<CacheEntry>,
}

/// One node as `tandem nodes` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Its id (the one its key proves), when known.
    pub id: Option<NodeId>,
    /// Name.
    pub name: String,
    /// Address (as configured or seen).
    pub addr: String,
    /// Reachable now.
    pub up: bool,
    /// Round-trip time measured now (µs), when up.
    pub rtt_us: Option<u64>,
    /// Live files.
    pub files: u64,
    /// Bytes in live files.
    pub bytes: u64,
    /// Process CPU %.
    pub cpu_percent: f32,
    /// Resident memory (bytes).
    pub rss: u64,
    /// Uptime (s).
    pub uptime_s: u64,
    /// Its clock minus the asked node's clock (ms), when up.
    pub clock_offset_ms: Option<i64>,
    /// Problems that need a person, one line each.
    pub warnings: Vec<String>,
    /// Its figures over the last minutes, oldest first, one sample every
    /// few seconds (empty for a node that is down).
    pub history: Vec<NodeSample>,
    /// Changes from peers it has not applied yet (0: in sync).
    pub pending_files: u64,
    /// The bytes of the files among them.
    pub pending_bytes: u64,
}

/// A node's figures over one sampling interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NodeSample {
    /// End of the interval (seconds since the epoch).
    pub at_s: i64,
    /// Process CPU use over the interval, in percent of one core.
    pub cpu_percent: f32,
    /// Resident memory at the end (bytes).
    pub rss: u64,
    /// File data sent to peers, bytes per second.
    pub sent_per_s: u64,
    /// File data received from peers, bytes per second.
    pub received_per_s: u64,
    /// Cache hits in the interval.
    pub cache_hits: u32,
    /// Cache misses in the interval.
    pub cache_misses: u32,
}

/// A client connected to a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// Its proven identity, once logged in.
    pub id: Option<Uuid>,
    /// Its display name.
    pub name: String,
    /// Its address.
    pub addr: String,
    /// Connected since (ns).
    pub since_ns: i64,
}

/// A lock as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The locked file.
    pub path: RelPath,
    /// Owner's display name.
    pub owner_name: String,
    /// Owner's client id.
    pub owner: Uuid,
    /// When it was taken (ns since the epoch).
    pub since_ns: i64,
    /// The node it was taken through.
    pub via: String,
    /// Who waits for it, first in line first.
    pub waiting: Vec<String>,
}

/// What became of a held change at unlock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeldFate {
    /// Handed back to the normal rules: a change made on top of the owner's
    /// latest version applies; a peer's change is decided as usual.
    Released,
    /// Not made on top of the owner's latest version: kept as a conflict
    /// copy on the node that held it; the owner's version stays.
    KeptAsConflict {
        /// The node that kept it.
        on: String,
        /// Where (in that node's state folder).
        kept_as: String,
    },
    /// The node holding it did not report in time (it is reconciled there
    /// all the same; the feed says how).
    NotReported,
}

/// What kind of change a lock is holding back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeldKind {
    /// New content or metadata.
    Modify,
    /// A deletion.
    Delete,
}

/// A change held back by a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldChange {
    /// Which file.
    pub path: RelPath,
    /// The node where the change was made.
    pub node: String,
    /// Modify or delete.
    pub kind: HeldKind,
    /// Size of the new content.
    pub size: u64,
    /// Its mtime (ns).
    pub mtime_ns: i64,
    /// When it was held (ns since the epoch).
    pub since_ns: i64,
}

/// A typed error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApiError {
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The client's role does not allow the request.
    #[error(
        "not authorized: this client ({id}) has {} and `{what}` needs the {need} role; ask an admin to run `tandem approve {id} --role {need}` (or use an invite code: `tandem register CODE`)",
        .have.map_or("no role".to_string(), |r| format!("the {r} role"))
    )]
    NotAuthorized {
        /// The client's id, in its text form.
        id: String,
        /// Its role.
        have: Option<Access>,
        /// The role the request needs.
        need: Access,
        /// The request, in words.
        what: String,
    },
    /// An invite code was wrong, used or expired.
    #[error("invite code refused: {0}")]
    BadInvite(String),
    /// Too many attempts; wait before trying again.
    #[error("too many {what}; try again in {retry_secs} s")]
    RateLimited {
        /// What was limited.
        what: String,
        /// Seconds to wait.
        retry_secs: u64,
    },
    /// The lock cluster cannot decide: fewer than a majority of its nodes
    /// can be reached. Nothing was changed.
    #[error(
        "lock refused: only {} of {} nodes reachable{}; a majority ({needed}) is needed",
        .reachable.len(),
        .reachable.len() + .down.len(),
        if .down.is_empty() { String::new() } else { format!(" ({} down)", .down.join(", ")) }
    )]
    NoMajority {
        /// Names of the nodes that answered.
        reachable: Vec<String>,
        /// Names of the nodes that did not.
        down: Vec<String>,
        /// How many make a majority.
        needed: usize,
    },
    /// The request reached the lock cluster but no answer came in time:
    /// it may or may not have been applied.
    #[error(
        "no answer from the lock cluster within {waited_ms} ms: the lock may or may not have changed; check `tandem locks` and retry"
    )]
    LockUnknown {
        /// How long the node waited.
        waited_ms: u64,
    },
    /// The lock cluster is not available for another reason (not formed
    /// yet, no leader elected in time, stopped); nothing was changed.
    #[error("lock service unavailable: {0}")]
    LockService(String),
    /// Someone else holds the lock.
    #[error("{path} is locked by {owner_name} ({owner}) since {since}")]
    LockedBy {
        /// The file.
        path: String,
        /// Holder's name.
        owner_name: String,
        /// Holder's id.
        owner: Uuid,
        /// Since when, human-readable.
        since: String,
    },
    /// No such conflict copy on that node (already restored or discarded?).
    #[error("{node} keeps no conflict copy {id:?} (see `tandem conflicts`)")]
    NoSuchConflict {
        /// The node asked.
        node: String,
        /// The copy asked for.
        id: String,
    },
    /// No such kept version on that node.
    #[error("{node} keeps no version {id:?} (see `tandem versions PATH`)")]
    NoSuchVersion {
        /// The node asked.
        node: String,
        /// The version asked for.
        id: String,
    },
    /// The request is for a node of another mode.
    #[error(
        "{node} is {mode}; `tandem {request}` is for a {needed} node (`tandem-node --mode {needed}`)"
    )]
    WrongMode {
        /// The node asked.
        node: String,
        /// Its mode.
        mode: String,
        /// The request.
        request: String,
        /// The mode the request is for.
        needed: String,
    },
    /// No trusted node of that name.
    #[error("no node named {name:?} in the cluster; its nodes are {} (see `tandem nodes`)", .known.join(", "))]
    NoSuchNode {
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: Vec<String>,
    },
    /// Anything else, in words.
    #[error("{0}")]
    Other(String),
}

/// One row of the file table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedFile {
    /// The file's path.
    pub path: RelPath,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Content hash.
    pub hash: ContentHash,
    /// Names of the nodes holding this (newest) version.
    pub nodes: Vec<String>,
    /// Name of the lock holder, if locked.
    pub locked_by: Option<String>,
    /// Changes held back by the lock.
    pub held: u32,
    /// Each node's state for this file.
    pub states: Vec<NodeFileState>,
    /// A symbolic link: its target (never followed; not fetched).
    pub link: Option<String>,
}

/// How one node stands with one file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeFileState {
    /// The node.
    pub node: String,
    /// Its state.
    pub state: FileState,
}

/// A node's state for a file, relative to the newest version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FileState {
    /// Holds the newest version.
    InSync,
    /// Fetching the newest version now.
    Syncing,
    /// A change to it is held by a lock.
    Held,
    /// Has an older version and is not fetching (yet).
    Stale,
    /// Does not have it.
    Missing,
    /// A change to it could not be applied here (retried until it is).
    Error,
    /// Differs by the node's mode: a send-only node did not take the
    /// others' version, or a receive-only node did not send its own.
    Differs,
}

impl FileState {
    /// Lowercase words for tables and JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            FileState::InSync => "in sync",
            FileState::Syncing => "syncing",
            FileState::Held => "held",
            FileState::Stale => "stale",
            FileState::Missing => "missing",
            FileState::Error => "error",
            FileState::Differs => "differs",
        }
    }
}

/// One node's view of one of its files, for merging tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSummary {
    /// The file.
    pub path: RelPath,
    /// Size.
    pub size: u64,
    /// Modification time (ns).
    pub mtime_ns: i64,
    /// Content hash.
    pub hash: ContentHash,
    /// Version.
    pub version: crate::model::VersionVector,
    /// Name of the lock holder, if locked.
    pub locked_by: Option<String>,
    /// Changes held on this node.
    pub held: u32,
    /// This node is fetching a newer version.
    pub syncing: bool,
    /// The node has it (false: only known as wanted).
    pub present: bool,
    /// A change to it could not be applied here: why (retried until it is).
    pub error: Option<String>,
    /// A symbolic link: its target.
    pub link: Option<String>,
    /// This node's version is not the cluster's by its mode: a send-only
    /// node declined a peer's change, or a receive-only node's change is
    /// not sent.
    pub differs: bool,
}

/// Questions a node asks a peer on behalf of a client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerQuery {
    /// Your files (for the merged table), sorted by path, the page after
    /// `after`.
    Files {
        /// Last path of the previous page.
        after: Option<RelPath>,
    },
    /// Your figures (for `nodes`), and your clock.
    Status,
    /// Nothing: measures the round trip.
    Ping,
    /// Your cache.
    Cache,
    /// Your held changes.
    Held,
    /// Your view of one file.
    File {
        /// Which.
        path: RelPath,
    },
    /// Your kept conflict copies.
    Conflicts,
    /// Restore or discard one of your conflict copies (a client with the
    /// write role asked the node that sends this).
    ResolveConflict {
        /// The copy.
        id: String,
        /// What to do.
        action: ConflictAction,
        /// Who asked (for the log and the feed).
        by: String,
    },
    /// Your kept versions of this file, or of the files in this folder.
    Versions {
        /// The file or folder.
        path: RelPath,
    },
    /// Make one of your kept versions the current one again (a client with
    /// the write role asked the node that sends this).
    RestoreVersion {
        /// The version.
        id: String,
        /// Who asked.
        by: String,
    },
    /// Describe one of your conflict copies with its content hash (a
    /// client is about to fetch it through this node).
    OpenConflict {
        /// The copy.
        id: String,
    },
    /// Bytes of one of your conflict copies.
    ReadConflict {
        /// The copy.
        id: String,
        /// Where to start.
        offset: u64,
        /// How many bytes (at most [`MAX_MESH_READ`]).
        len: u32,
    },
    /// Blocks of a file of yours, like `PeerMessage::GetBlocks` but
    /// answered through the mesh (a client of a node with no link to you
    /// fetches the file).
    Blocks {
        /// Which file.
        path: RelPath,
        /// Which version of it (whole-content hash).
        hash: ContentHash,
        /// Block indexes wanted (at most 8, so an answer stays small).
        blocks: Vec<u32>,
    },
}

/// Most bytes one answer read through the mesh carries (`ReadConflict`,
/// `Blocks`): each node on the way holds it whole.
pub const MAX_MESH_READ: u32 = 1024 * 1024;

/// A conflict copy about to be fetched: what it is and its content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenedCopy {
    /// The copy.
    pub copy: ConflictCopy,
    /// BLAKE3 of its content.
    pub hash: ContentHash,
}

/// One block's bytes inside a message (answers through the mesh carry
/// their data in the message, not as a raw frame after it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InlineBlock {
    /// Block index in the file.
    pub index: u32,
    /// The bytes.
    pub data: FileData,
}

/// Answers to [`PeerQuery`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerAnswer {
    /// A page of files, and whether more follow.
    Files(Vec<FileSummary>, bool),
    /// Figures; `addr` and `rtt_us`/`clock_offset_ms` are filled by the asker.
    Status(NodeStatus, i64),
    /// Pong.
    Pong,
    /// Cache.
    Cache(CacheReport),
    /// Held changes.
    Held(Vec<HeldChange>),
    /// One file (if the node knows it).
    File(Option<FileSummary>),
    /// Kept conflict copies (the newest ones), and how many there are.
    Conflicts(Vec<ConflictCopy>, u64),
    /// What resolving a conflict copy did, or why it was refused.
    ConflictResolved(Result<ConflictResolution, ApiError>),
    /// A conflict copy about to be fetched, or why not.
    ConflictOpened(Result<OpenedCopy, ApiError>),
    /// Kept versions.
    Versions(Vec<KeptVersion>),
    /// What restoring a version did, or why it was refused.
    VersionRestored(Result<VersionRestoration, ApiError>),
    /// Bytes of a conflict copy (fewer than asked only at its end).
    ConflictData(Result<FileData, ApiError>),
    /// Blocks, in the order asked, or why not (the file changed or went).
    Blocks(Result<Vec<InlineBlock>, PeerError>),
}

/// Why a node did not give the content asked (blocks, whole files, a block
/// list). Typed, so the asker acts on the kind (look again, retry, try
/// another peer) and never on the words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum PeerError {
    /// This node has no entry for the path (never heard of it, or it is
    /// ignored here); a path deleted here answers [`PeerError::Changed`].
    #[error("{0} is not available here")]
    NotHere(RelPath),
    /// Our version of the path is not the one asked for.
    #[error("{0} has changed here")]
    Changed(RelPath),
    /// The file on disk no longer matched its indexed version when read
    /// (the node looks at it again); ask again later.
    #[error("{0} changed on disk while being sent")]
    ChangedOnDisk(RelPath),
    /// Too large to be sent whole: ask for its blocks.
    #[error("{path} is larger than {most} bytes; ask for its blocks")]
    TooLarge {
        /// The file.
        path: RelPath,
        /// The largest file sent whole.
        most: u64,
    },
    /// The block list of this version is not held here.
    #[error("the block list of {0} is not available here")]
    NoBlockList(RelPath),
    /// Reading the file failed.
    #[error("cannot read {path}: {reason}")]
    Unreadable {
        /// The file.
        path: RelPath,
        /// The error, in words.
        reason: String,
    },
    /// The request broke a rule of the protocol (a limit, a block asked
    /// twice): a correct node never sends one. Says which rule.
    #[error("request refused: {0}")]
    BadRequest(String),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// Answering failed on the answering node (a bug there); says how.
    #[error("the node failed to answer: {0}")]
    Internal(String),
    /// The link closed before the answer came. Made by the asker, which
    /// decides by its own link's state, not by this kind: a peer that
    /// sends it is taken at its word only for the log.
    #[error("link closed")]
    LinkClosed,
    /// No answer within the asker's deadline (made by the asker; names
    /// the peer).
    #[error("{0} did not answer in time")]
    Timeout(String),
}

/// Messages between two nodes after the handshake.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerMessage {
    /// "I have seen your changes up to `since`; send me the rest."
    Resume {
        /// Highest of the receiver's sequence numbers already applied.
        since: u64,
    },
    /// Index entries, each with the sender's local sequence number.
    Index {
        /// (sequence, entry), ascending by sequence.
        entries: Vec<(u64, FileEntry)>,
        /// The content of some small files among `entries` (by position in
        /// `entries`; each at most [`INLINE_MAX`] bytes, checked against
        /// its entry's size and hash before it is used). A file left out
        /// is asked for as usual.
        contents: Vec<(u32, FileData)>,
    },
    /// Client identities known to the sender (replicated cluster-wide).
    Identities(Vec<IdentityRecord>),
    /// A message of the lock cluster (Raft), possibly for another node:
    /// forwarded towards its destination (see the node's `mesh` module).
    Raft(RaftEnvelope),
    /// Ask for blocks of the file at `path` whose content hash is `hash`.
    GetBlocks {
        /// Matches the answer to the question.
        req: u64,
        /// Which file.
        path: RelPath,
        /// Which version of it (whole-content hash).
        hash: ContentHash,
        /// Block indexes wanted.
        blocks: Vec<u32>,
        /// For some of `blocks`, the chunk hashes of the asker's older copy
        /// of that block: only the chunks that differ are sent back (see
        /// [`crate::delta`]). Each names a block of `blocks`, at most once.
        bases: Vec<BlockBase>,
        /// Check each block against its hash before sending it, whatever
        /// the file's stat says. A node sets it when an earlier try at the
        /// file failed (a file changed in place with its stat kept is
        /// caught by the asker's own check, then by this one, which makes
        /// the sender read it again), and for a client's fetch, which only
        /// checks the content whole at its end.
        verify: bool,
    },
    /// Ask for the whole content of several small files at once, so many
    /// small files cost one round trip instead of one each.
    GetFiles {
        /// Matches the answer.
        req: u64,
        /// (path, whole-content hash of the version wanted).
        files: Vec<(RelPath, ContentHash)>,
    },
    /// Whole contents, in the order asked.
    Files {
        /// The request answered.
        req: u64,
        /// `Ok(content)` per file or why that file is not available; an
        /// `Err` for the whole request when it was refused.
        data: Result<Vec<Result<FileData, PeerError>>, PeerError>,
    },
    /// Feed events, numbered by the node that reported them (relayed
    /// through the cluster; see the node's `events` module).
    Events(Vec<Event>),
    /// A question for the peer.
    Query {
        /// Matches the answer.
        req: u64,
        /// What.
        q: PeerQuery,
    },
    /// The answer to a question.
    Answer {
        /// The question answered.
        req: u64,
        /// The answer, or why not.
        a: Result<PeerAnswer, ApiError>,
    },
    /// Block data, in the order asked.
    Blocks {
        /// The request answered.
        req: u64,
        /// `Ok(data per block)`, or why not (file changed or gone).
        data: Result<Vec<BlockData>, PeerError>,
    },
    /// Ask for (part of) the block list of the file at `path` whose content
    /// hash is `hash` (entries of large files travel without their list;
    /// see [`crate::blocklist`]).
    GetBlockList {
        /// Matches the answer.
        req: u64,
        /// Which file.
        path: RelPath,
        /// Which version of it (whole-content hash).
        hash: ContentHash,
        /// `None`: the group hashes. `Some(groups)`: the block hashes of
        /// these groups (at most
        /// [`MAX_GROUPS_PER_REQUEST`](crate::blocklist::MAX_GROUPS_PER_REQUEST)).
        groups: Option<Vec<u32>>,
    },
    /// The answer to `GetBlockList`.
    BlockList {
        /// The request answered.
        req: u64,
        /// The list part asked, or why not (file changed or gone).
        data: Result<BlockListPart, PeerError>,
    },
    /// "I have taken `messages` more of your `Index` messages and have room
    /// for as many again": the sender keeps at most a window of index
    /// messages unacknowledged, so announcements go no faster than the
    /// receiver installs. More than were sent is ignored.
    IndexTaken {
        /// Index messages acknowledged by this message.
        messages: u32,
    },
}

/// Part of a block list, as asked by `GetBlockList`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockListPart {
    /// The hash of every group, in order.
    Groups(Vec<ContentHash>),
    /// The block hashes of each group asked, in the order asked.
    Blocks(Vec<Vec<ContentHash>>),
}

/// A client identity as replicated between trusted nodes: no secret, only
/// the id of the client's key and what it may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRecord {
    /// The client id (the id of its public key).
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// What it may do; `None` when every right was taken away.
    pub role: Option<Access>,
    /// When this record was written (ns); the newest record of an id wins.
    pub changed_ns: i64,
    /// Who wrote it (a client's name, or "first client over loopback").
    pub by: String,
}

/// Most nodes a [`RaftEnvelope`] may cross; one that would cross more is
/// dropped (a route loop, or a cluster larger than any Tandem supports).
pub const MAX_RAFT_HOPS: u8 = 16;

/// A message between two members of the lock cluster, carried over peer
/// links and forwarded by the nodes in between. The body is the node's
/// own encoding of a Raft request or reply (opaque here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftEnvelope {
    /// Numbered by `from`; a reply carries its request's number.
    pub id: u64,
    /// The node that wrote it.
    pub from: NodeId,
    /// The node it is for.
    pub to: NodeId,
    /// Links crossed so far.
    pub hops: u8,
    /// A reply (true) or a request.
    pub reply: bool,
    /// The request or reply.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// The asker's older copy of one block, as chunk hashes (see
/// [`crate::delta`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockBase {
    /// Block index in the file.
    pub block: u32,
    /// [`delta::chunk_hashes`](crate::delta::chunk_hashes) of the asker's
    /// copy: at most [`CHUNKS_PER_BLOCK`](crate::delta::CHUNKS_PER_BLOCK).
    pub chunks: Vec<u64>,
}

/// One block's bytes, or some of its chunks. Build it with
/// [`BlockData::new`] or [`BlockData::chunks`].
#[derive(Clone, Serialize, Deserialize)]
pub struct BlockData {
    /// Block index in the file.
    pub index: u32,
    /// Bytes in `bytes`.
    pub len: u32,
    /// `None`: `bytes` is the whole block. `Some(mask)`: `bytes` holds
    /// only the chunks whose bit is set, in order; the others are the same
    /// as in the asker's base (only for a block asked with a base).
    pub patch: Option<u32>,
    /// The bytes; the blocks of one answer travel together as the raw
    /// frame after it (see [`codec::Body`]).
    #[serde(skip)]
    pub bytes: Bytes,
}

impl BlockData {
    /// Block `index` holding `bytes`.
    pub fn new(index: u32, bytes: Bytes) -> Self {
        BlockData {
            index,
            len: bytes.len() as u32,
            patch: None,
            bytes,
        }
    }

    /// The chunks in `mask` of block `index`, in order, in `bytes`.
    pub fn chunks(index: u32, mask: u32, bytes: Bytes) -> Self {
        BlockData {
            patch: Some(mask),
            ..BlockData::new(index, bytes)
        }
    }
}

impl ClientResponse {
    /// A part of a fetched file.
    pub fn chunk(data: Bytes, last: bool) -> Self {
        ClientResponse::Chunk {
            len: data.len() as u32,
            data,
            last,
        }
    }
}

impl codec::Body for PeerMessage {
    fn body_len(&self) -> Option<usize> {
        match self {
            PeerMessage::Blocks { data: Ok(b), .. } => Some(b.iter().map(|b| b.len as usize).sum()),
            _ => None,
        }
    }

    fn take_body(&mut self) -> Vec<Bytes> {
        match self {
            PeerMessage::Blocks { data: Ok(b), .. } => {
                b.iter_mut().map(|b| std::mem::take(&mut b.bytes)).collect()
            }
            _ => Vec::new(),
        }
    }

    fn put_body(&mut self, mut body: Bytes) {
        if let PeerMessage::Blocks { data: Ok(b), .. } = self {
            for block in b {
                // body_len() summed these lengths, so each split fits.
                block.bytes = body.split_to(block.len as usize);
            }
        }
    }
}

impl codec::Body for NodeToClient {
    fn body_len(&self) -> Option<usize> {
        match self {
            NodeToClient::Response {
                body: ClientResponse::Chunk { len, .. },
                ..
            } => Some(*len as usize),
            _ => None,
        }
    }

    fn take_body(&mut self) -> Vec<Bytes> {
        match self {
            NodeToClient::Response {
                body: ClientResponse::Chunk { data, .. },
                ..
            } => vec![std::mem::take(data)],
            _ => Vec::new(),
        }
    }

    fn put_body(&mut self, body: Bytes) {
        if let NodeToClient::Response {
            body: ClientResponse::Chunk { data, .. },
            ..
        } = self
        {
            *data = body;
        }
    }
}

/// One small file's whole content (answer to `GetFiles`).
#[derive(Clone, Serialize, Deserialize)]
pub struct FileData(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl fmt::Debug for FileData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileData({} bytes)", self.0.len())
    }
}

impl fmt::Debug for BlockData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.patch {
            None => write!(f, "BlockData(#{}, {} bytes)", self.index, self.bytes.len()),
            Some(m) => write!(
                f,
                "BlockData(#{}, chunks {m:#x}, {} bytes)",
                self.index,
                self.bytes.len()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trip_and_version_mismatch() {
        let hello = Hello {
            role: Role::Client,
            name: "me".into(),
        };
        let frame = encode_hello(&hello).unwrap();
        let (v, body) = decode_hello::<Hello>(&frame).unwrap();
        assert_eq!(v, PROTOCOL_VERSION);
        assert_eq!(body.unwrap().name, "me");

        let other = encode_hello_with_version(99, &"anything").unwrap();
        let (v, body) = decode_hello::<Hello>(&other).unwrap();
        assert_eq!(v, 99);
        assert!(
            body.is_none(),
            "a foreign version's body must not be decoded"
        );

        assert!(matches!(
            decode_hello::<Hello>(b"GET / HTTP/1.1\r\n"),
            Err(HandshakeError::BadMagic)
        ));
    }

    /// A refusal crosses the wire as its kind, so the asker can act on it
    /// without reading words, and still says what failed on what.
    #[test]
    fn a_peer_error_keeps_its_kind_across_the_wire() {
        let p = RelPath::new("dir/a.txt").unwrap();
        let errors = [
            PeerError::NotHere(p.clone()),
            PeerError::Changed(p.clone()),
            PeerError::ChangedOnDisk(p.clone()),
            PeerError::TooLarge {
                path: p.clone(),
                most: 65536,
            },
            PeerError::NoBlockList(p.clone()),
            PeerError::Unreadable {
                path: p.clone(),
                reason: "Permission denied (os error 13)".into(),
            },
            PeerError::BadRequest("block 3 asked twice in one request".into()),
            PeerError::ShuttingDown,
            PeerError::Internal("task 7 panicked".into()),
        ];
        for e in errors {
            let m = PeerMessage::Blocks {
                req: 7,
                data: Err(e.clone()),
            };
            let bytes = codec::encode(&m).unwrap();
            let Ok(PeerMessage::Blocks { req: 7, data }) = codec::decode::<PeerMessage>(&bytes)
            else {
                panic!("{e:?} did not come back as a Blocks answer");
            };
            assert_eq!(data.unwrap_err(), e);
            let words = e.to_string();
            let names_path = !matches!(
                e,
                PeerError::BadRequest(_) | PeerError::ShuttingDown | PeerError::Internal(_)
            );
            assert!(!names_path || words.contains("dir/a.txt"), "{words}");
        }
    }

    #[test]
    fn refusal_names_both_versions() {
        let msg = Refusal::VersionMismatch { node: 1, theirs: 2 }.to_string();
        assert!(
            msg.contains("version 1") && msg.contains("version 2"),
            "{msg}"
        );
    }
}
