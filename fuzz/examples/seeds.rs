//! Writes the seed corpus of every fuzz target into `fuzz/corpus/<target>/`
//! from real messages encoded by tandem-common's own functions (the codec,
//! `encode_hello`, the frame writer), so the fuzzers start from valid
//! frames of many variants instead of from nothing.
//!
//! Run it after a change to the wire types, from the repository root:
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds
//! ```
//!
//! It replaces the files it writes (named after what they hold) and leaves
//! others alone (regression inputs found by fuzzing).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use tandem_common::codec::{self, Body, FrameIo};
use tandem_common::identity::format_id;
use tandem_common::model::{Dot, Writes};
use tandem_common::proto::*;
use tandem_common::{ContentHash, EntryKind, FileEntry, NodeId, RelPath, VersionVector};
use tandem_fuzz::{BlockListCase, FrameSetup, STRANGER_MAX_FRAME, TypedReader};
use tokio::io::AsyncReadExt;
use uuid::Uuid;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut out = Out { root, count: 0 };
    peer_messages(&mut out);
    client_messages(&mut out);
    hellos(&mut out);
    frames(&mut out);
    paths(&mut out);
    identities(&mut out);
    block_lists(&mut out);
    println!(
        "wrote {} seed files under {}",
        out.count,
        out.root.display()
    );
}

struct Out {
    root: PathBuf,
    count: usize,
}

impl Out {
    fn put(&mut self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).expect("create the corpus folder");
        std::fs::write(dir.join(name), bytes).expect("write a seed");
        self.count += 1;
    }
}

fn node(n: u128) -> NodeId {
    NodeId(Uuid::from_u128(
        0x5eed_0000_0000_0000_0000_0000_0000_0000 | n,
    ))
}

fn path(s: &str) -> RelPath {
    RelPath::new(s).expect("a valid seed path")
}

fn entry(p: &str, size: u64, blocks: usize) -> FileEntry {
    let mut version = VersionVector::new();
    version.set(node(1), 3);
    version.set(node(2), 1);
    FileEntry {
        path: path(p),
        kind: EntryKind::File,
        size,
        mtime_ns: 1_764_000_000_000_000_000,
        mode: 0o644,
        hash: ContentHash::of(p.as_bytes()),
        blocks: (0..blocks).map(|i| ContentHash::of(&[i as u8])).collect(),
        version,
        written: Dot {
            node: Some(node(1)),
            counter: 3,
        }
        .into(),
        losers: Writes::from(vec![Dot {
            node: Some(node(2)),
            counter: 1,
        }]),
        deleted: false,
    }
}

fn summary(p: &str) -> FileSummary {
    let e = entry(p, 5, 1);
    FileSummary {
        differs: false,
        link: None,
        path: e.path,
        size: e.size,
        mtime_ns: e.mtime_ns,
        hash: e.hash,
        version: e.version,
        locked_by: Some("ann@laptop".into()),
        held: 1,
        syncing: false,
        present: true,
        error: None,
    }
}

fn event(seq: u64, kind: EventKind) -> Event {
    Event {
        epoch: 9,
        seq,
        time_ns: 1_764_000_000_000_000_000,
        node: "A".into(),
        kind,
    }
}

fn node_status() -> NodeStatus {
    NodeStatus {
        id: Some(node(2)),
        name: "B".into(),
        addr: "127.0.0.1:7202".into(),
        up: true,
        rtt_us: Some(180),
        files: 5,
        bytes: 3_000_000,
        cpu_percent: 1.5,
        rss: 40 << 20,
        uptime_s: 3600,
        clock_offset_ms: Some(-2),
        warnings: vec!["disk almost full".into()],
        history: vec![NodeSample {
            at_s: 1_764_000_000,
            cpu_percent: 12.5,
            rss: 40 << 20,
            sent_per_s: 1 << 20,
            received_per_s: 0,
            cache_hits: 3,
            cache_misses: 1,
        }],
        pending_files: 2,
        pending_bytes: 4096,
    }
}

fn cache_report() -> CacheReport {
    CacheReport {
        node: "A".into(),
        policy: "lru".into(),
        capacity: 1 << 30,
        used: 3 << 20,
        hits: 10,
        misses: 2,
        entries: vec![CacheEntry {
            path: path("big.bin"),
            size: 3 << 20,
            hits: 4,
            last_access_ns: 1_764_000_000_000_000_000,
        }],
    }
}

fn listed(p: &str) -> ListedFile {
    ListedFile {
        link: None,
        path: path(p),
        size: 7,
        mtime_ns: 1_764_000_000_000_000_000,
        hash: ContentHash::of(b"a.txt"),
        nodes: vec!["A".into(), "B".into()],
        locked_by: None,
        held: 0,
        states: vec![
            NodeFileState {
                node: "A".into(),
                state: FileState::InSync,
            },
            NodeFileState {
                node: "B".into(),
                state: FileState::Syncing,
            },
        ],
    }
}

fn blocks_answer() -> PeerMessage {
    PeerMessage::Blocks {
        req: 4,
        data: Ok(vec![
            BlockData::new(0, Bytes::from_static(b"first block ")),
            BlockData::new(3, Bytes::from_static(b"fourth")),
            BlockData::chunks(5, 0b101, Bytes::from_static(b"two chunks")),
        ]),
    }
}

fn chunk() -> NodeToClient {
    NodeToClient::Response {
        id: 6,
        body: ClientResponse::chunk(Bytes::from_static(b"file contents"), true),
    }
}

/// The peer messages, named; a `Blocks` answer without its body (which
/// travels as the next frame).
fn peer_list() -> Vec<(&'static str, PeerMessage)> {
    let held = HeldChange {
        path: path("b.txt"),
        node: "B".into(),
        kind: HeldKind::Modify,
        size: 2,
        mtime_ns: 1,
        since_ns: 2,
    };
    let mut blocks = blocks_answer();
    let _ = blocks.take_body();
    vec![
        ("resume", PeerMessage::Resume { since: 3 }),
        ("index-taken", PeerMessage::IndexTaken { messages: 2 }),
        (
            "index",
            PeerMessage::Index {
                entries: vec![
                    (1, entry("a.txt", 7, 1)),
                    (2, entry("dir/big.bin", 3_000_000, 0)),
                ],
                contents: vec![(0, FileData(b"content".to_vec()))],
            },
        ),
        (
            "identities",
            PeerMessage::Identities(vec![IdentityRecord {
                id: Uuid::from_u128(5),
                name: "ann@laptop".into(),
                role: Some(Access::Write),
                changed_ns: 1,
                by: "first client over loopback".into(),
            }]),
        ),
        (
            "raft-request",
            PeerMessage::Raft(RaftEnvelope {
                id: 7,
                from: NodeId(Uuid::from_u128(1)),
                to: NodeId(Uuid::from_u128(2)),
                hops: 1,
                reply: false,
                body: vec![4, 0, 1, 2],
            }),
        ),
        (
            "raft-reply",
            PeerMessage::Raft(RaftEnvelope {
                id: 7,
                from: NodeId(Uuid::from_u128(2)),
                to: NodeId(Uuid::from_u128(1)),
                hops: 0,
                reply: true,
                body: vec![5],
            }),
        ),
        (
            "get-blocks",
            PeerMessage::GetBlocks {
                req: 4,
                path: path("dir/big.bin"),
                hash: ContentHash::of(b"big"),
                blocks: vec![0, 3, 17],
                bases: vec![BlockBase {
                    block: 17,
                    chunks: vec![1, 2, u64::MAX],
                }],
                verify: true,
            },
        ),
        (
            "get-files",
            PeerMessage::GetFiles {
                req: 5,
                files: vec![
                    (path("a.txt"), ContentHash::of(b"a")),
                    (path("notes.md"), ContentHash::of(b"n")),
                ],
            },
        ),
        (
            "files",
            PeerMessage::Files {
                req: 5,
                data: Ok(vec![
                    Ok(FileData(b"hello\n".to_vec())),
                    Err(PeerError::Changed(path("notes.md"))),
                ]),
            },
        ),
        (
            "events",
            PeerMessage::Events(vec![
                event(
                    1,
                    EventKind::Added {
                        path: path("a.txt"),
                        size: 7,
                    },
                ),
                event(
                    2,
                    EventKind::Conflict {
                        path: path("a.txt"),
                        winner: "A".into(),
                        loser: "B".into(),
                        kept_as: "a.sync-conflict-B.txt".into(),
                    },
                ),
                event(
                    3,
                    EventKind::NamesCollide {
                        path: path("Notes.txt"),
                        other: path("notes.txt"),
                        how: NameDifference::Case,
                    },
                ),
            ]),
        ),
        (
            "query-files",
            PeerMessage::Query {
                req: 8,
                q: PeerQuery::Files {
                    after: Some(path("a.txt")),
                },
            },
        ),
        (
            "query-status",
            PeerMessage::Query {
                req: 9,
                q: PeerQuery::Status,
            },
        ),
        (
            "query-resolve-conflict",
            PeerMessage::Query {
                req: 10,
                q: PeerQuery::ResolveConflict {
                    id: "notes/plan.conflict-20261203-060000-B.txt".into(),
                    action: ConflictAction::Restore,
                    by: "ann@laptop".into(),
                },
            },
        ),
        (
            "query-read-conflict",
            PeerMessage::Query {
                req: 11,
                q: PeerQuery::ReadConflict {
                    id: "../../etc/shadow".into(),
                    offset: u64::MAX - 3,
                    len: u32::MAX,
                },
            },
        ),
        (
            "query-versions",
            PeerMessage::Query {
                req: 13,
                q: PeerQuery::Versions { path: path("docs") },
            },
        ),
        (
            "answer-versions",
            PeerMessage::Answer {
                req: 13,
                a: Ok(PeerAnswer::Versions(vec![KeptVersion {
                    node: "B".into(),
                    id: "docs/a.version-20261203-060000-A.txt".into(),
                    path: path("docs/a.txt"),
                    cause: "A".into(),
                    size: 3,
                    mtime_ns: 1,
                    kept_ns: 2,
                }])),
            },
        ),
        (
            "query-blocks",
            PeerMessage::Query {
                req: 12,
                q: PeerQuery::Blocks {
                    path: path("a.txt"),
                    hash: ContentHash::of(b"a"),
                    blocks: vec![0, 0, 7],
                },
            },
        ),
        (
            "answer-blocks",
            PeerMessage::Answer {
                req: 12,
                a: Ok(PeerAnswer::Blocks(Ok(vec![InlineBlock {
                    index: 0,
                    data: FileData(b"block".to_vec()),
                }]))),
            },
        ),
        (
            "answer-files",
            PeerMessage::Answer {
                req: 8,
                a: Ok(PeerAnswer::Files(
                    vec![summary("a.txt"), summary("b.txt")],
                    true,
                )),
            },
        ),
        (
            "answer-status",
            PeerMessage::Answer {
                req: 9,
                a: Ok(PeerAnswer::Status(node_status(), 1_764_000_000_000)),
            },
        ),
        (
            "answer-cache",
            PeerMessage::Answer {
                req: 10,
                a: Ok(PeerAnswer::Cache(cache_report())),
            },
        ),
        (
            "answer-held",
            PeerMessage::Answer {
                req: 11,
                a: Ok(PeerAnswer::Held(vec![held])),
            },
        ),
        (
            "answer-error",
            PeerMessage::Answer {
                req: 12,
                a: Err(ApiError::ShuttingDown),
            },
        ),
        ("blocks-header", blocks),
        (
            "get-block-list",
            PeerMessage::GetBlockList {
                req: 13,
                path: path("dir/big.bin"),
                hash: ContentHash::of(b"big"),
                groups: Some(vec![0, 2]),
            },
        ),
        (
            "block-list",
            PeerMessage::BlockList {
                req: 13,
                data: Ok(BlockListPart::Groups(vec![
                    ContentHash::of(b"g0"),
                    ContentHash::of(b"g1"),
                ])),
            },
        ),
        (
            "blocks-error",
            PeerMessage::Blocks {
                req: 14,
                data: Err(PeerError::Unreadable {
                    path: path("a.txt"),
                    reason: "Input/output error (os error 5)".into(),
                }),
            },
        ),
    ]
}

fn request(id: u64, body: ClientRequest) -> Request {
    Request { id, body }
}

fn request_list() -> Vec<(&'static str, Request)> {
    vec![
        ("list", request(1, ClientRequest::List)),
        (
            "register",
            request(
                2,
                ClientRequest::Register {
                    code: "K7DQ-PL2M".into(),
                },
            ),
        ),
        (
            "approve",
            request(
                3,
                ClientRequest::Approve {
                    id: Uuid::from_u128(5),
                    role: Some(Access::Admin),
                },
            ),
        ),
        (
            "lock",
            request(
                4,
                ClientRequest::Lock {
                    path: path("b.txt"),
                    wait: false,
                },
            ),
        ),
        (
            "lock-wait",
            request(
                4,
                ClientRequest::Lock {
                    path: path("b.txt"),
                    wait: true,
                },
            ),
        ),
        (
            "await-lock",
            request(
                5,
                ClientRequest::AwaitLock {
                    path: path("b.txt"),
                },
            ),
        ),
        (
            "unlock",
            request(
                5,
                ClientRequest::Unlock {
                    path: path("b.txt"),
                    force: true,
                },
            ),
        ),
        (
            "subscribe",
            request(
                6,
                ClientRequest::Subscribe {
                    after: Some(FeedCursor { epoch: 9, seq: 2 }),
                },
            ),
        ),
        (
            "fetch",
            request(
                7,
                ClientRequest::Fetch {
                    path: path("dir/big.bin"),
                    from: Some("B".into()),
                },
            ),
        ),
        (
            "put",
            request(
                8,
                ClientRequest::Put {
                    path: path("up/new.txt"),
                    size: 6,
                    hash: ContentHash::of(b"hello\n"),
                    mtime_ns: 1,
                    mode: 0o644,
                },
            ),
        ),
        (
            "put-data",
            request(
                8,
                ClientRequest::PutData {
                    data: b"hello\n".to_vec(),
                },
            ),
        ),
        ("ping", request(9, ClientRequest::Ping { node: "B".into() })),
        ("conflicts", request(10, ClientRequest::Conflicts)),
        ("ignored", request(13, ClientRequest::Ignored)),
        (
            "versions",
            request(14, ClientRequest::Versions { path: path("docs") }),
        ),
        (
            "restore-version",
            request(
                15,
                ClientRequest::RestoreVersion {
                    node: "B".into(),
                    id: "../../etc/passwd".into(),
                },
            ),
        ),
        (
            "resolve-conflict",
            request(
                11,
                ClientRequest::ResolveConflict {
                    node: "B".into(),
                    id: "../../etc/passwd".into(),
                    action: ConflictAction::Discard,
                },
            ),
        ),
        (
            "fetch-conflict",
            request(
                12,
                ClientRequest::FetchConflict {
                    node: "B".into(),
                    id: "notes/plan.conflict-20261203-060000-B.txt".into(),
                },
            ),
        ),
    ]
}

fn response(id: u64, body: ClientResponse) -> NodeToClient {
    NodeToClient::Response { id, body }
}

fn to_client_list() -> Vec<(&'static str, NodeToClient)> {
    let lock_info = LockInfo {
        path: path("b.txt"),
        owner_name: "ann@laptop".into(),
        owner: Uuid::from_u128(5),
        since_ns: 1,
        via: "A".into(),
        waiting: vec!["bob".into()],
    };
    let mut chunk = chunk();
    let _ = chunk.take_body();
    vec![
        (
            "files",
            response(
                1,
                ClientResponse::Files {
                    files: vec![listed("a.txt"), listed("dir/big.bin")],
                    more: false,
                },
            ),
        ),
        (
            "error",
            response(
                3,
                ClientResponse::Error(ApiError::NotAuthorized {
                    id: format_id(&Uuid::from_u128(5)),
                    have: Some(Access::Read),
                    need: Access::Admin,
                    what: "approve".into(),
                }),
            ),
        ),
        (
            "locked",
            response(4, ClientResponse::Locked(lock_info.clone())),
        ),
        (
            "ignored-list",
            response(
                6,
                ClientResponse::IgnoredList(IgnoredReport {
                    node: "A".into(),
                    patterns: vec![IgnoreRule {
                        pattern: "build/".into(),
                        source: ".tandemignore:1".into(),
                    }],
                    problems: vec![".tandemignore:2: \"a{b\" is not a pattern".into()],
                    paths: vec![IgnoredPath {
                        path: path("build"),
                        dir: true,
                        rule: IgnoreRule {
                            pattern: "build/".into(),
                            source: ".tandemignore:1".into(),
                        },
                    }],
                    not_listed: 3,
                }),
            ),
        ),
        (
            "queued",
            response(
                4,
                ClientResponse::Queued {
                    lock: lock_info.clone(),
                    position: 2,
                },
            ),
        ),
        (
            "unlocked",
            response(
                5,
                ClientResponse::Unlocked {
                    lock: lock_info,
                    released: vec![HeldChange {
                        path: path("b.txt"),
                        node: "B".into(),
                        kind: HeldKind::Delete,
                        size: 0,
                        mtime_ns: 1,
                        since_ns: 2,
                    }],
                    outcomes: vec![HeldFate::KeptAsConflict {
                        on: "B".into(),
                        kept_as: "/s/.tandem/conflicts/b.conflict.txt".into(),
                    }],
                },
            ),
        ),
        (
            "fetch-start",
            response(
                7,
                ClientResponse::FetchStart {
                    file: listed("dir/big.bin"),
                    from: "B".into(),
                },
            ),
        ),
        ("chunk-header", chunk),
        (
            "cache",
            response(10, ClientResponse::CacheReport(cache_report())),
        ),
        (
            "nodes",
            response(11, ClientResponse::NodeList(vec![node_status()])),
        ),
        (
            "event",
            NodeToClient::Event(event(
                3,
                EventKind::Transferred {
                    path: path("late.txt"),
                    from: "B".into(),
                    to: "A".into(),
                    size: 5,
                    sent: 5,
                    millis: 3,
                },
            )),
        ),
        (
            "missed",
            NodeToClient::Missed {
                epoch: 9,
                from: 4,
                to: 40,
            },
        ),
    ]
}

fn peer_messages(out: &mut Out) {
    for (name, msg) in peer_list() {
        out.put("peer_message", name, &codec::encode(&msg).unwrap());
    }
}

fn client_messages(out: &mut Out) {
    for (name, req) in request_list() {
        let name = format!("request-{name}");
        out.put("client_request", &name, &codec::encode(&req).unwrap());
    }
    for (name, msg) in to_client_list() {
        let name = format!("to-client-{name}");
        out.put("client_request", &name, &codec::encode(&msg).unwrap());
    }
}

fn hello_list() -> Vec<(&'static str, Bytes)> {
    let peer = Hello {
        role: Role::Peer,
        name: "A".into(),
    };
    let client = Hello {
        role: Role::Client,
        name: "ann@laptop".into(),
    };
    let welcome_client = HelloReply::Welcome {
        node_id: node(1),
        name: "A".into(),
        client: Some((Uuid::from_u128(5), Some(Access::Write))),
    };
    let welcome_peer = HelloReply::Welcome {
        node_id: node(2),
        name: "B".into(),
        client: None,
    };
    let not_trusted = HelloReply::Refused(Refusal::NotTrusted {
        node: "B".into(),
        id: node(1),
    });
    let busy = HelloReply::Refused(Refusal::Busy {
        node: "B".into(),
        what: "client".into(),
        limit: 64,
    });
    let mismatch = HelloReply::Refused(Refusal::VersionMismatch {
        node: PROTOCOL_VERSION,
        theirs: 4,
    });
    vec![
        ("hello-peer", encode_hello(&peer).unwrap()),
        ("hello-client", encode_hello(&client).unwrap()),
        (
            "reply-welcome-client",
            encode_hello(&welcome_client).unwrap(),
        ),
        ("reply-welcome-peer", encode_hello(&welcome_peer).unwrap()),
        ("reply-not-trusted", encode_hello(&not_trusted).unwrap()),
        ("reply-busy", encode_hello(&busy).unwrap()),
        ("reply-version-mismatch", encode_hello(&mismatch).unwrap()),
        (
            "hello-old-version",
            encode_hello_with_version(PROTOCOL_VERSION - 1, &peer).unwrap(),
        ),
    ]
}

fn hellos(out: &mut Out) {
    for (name, frame) in hello_list() {
        out.put("hello", name, &frame);
    }
}

/// A message the frame writer sends after the hello.
enum Send {
    Peer(PeerMessage),
    Request(Request),
    ToClient(NodeToClient),
}

/// The bytes the real frame writer puts on the wire for a hello frame (if
/// any), then these messages (with their bodies).
fn wire(hello: Option<Bytes>, sends: Vec<Send>) -> Vec<u8> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(async move {
            let (a, mut b) = tokio::io::duplex(1 << 20);
            let mut io = FrameIo::new(a);
            if let Some(frame) = hello {
                io.send_raw(frame).await.unwrap();
            }
            let (mut w, r) = io.split();
            for s in sends {
                match s {
                    Send::Peer(m) => w.send_msg(m).await.unwrap(),
                    Send::Request(r) => w.send(&r).await.unwrap(),
                    Send::ToClient(m) => w.send_msg(m).await.unwrap(),
                }
            }
            drop((w, r));
            let mut bytes = Vec::new();
            b.read_to_end(&mut bytes).await.unwrap();
            bytes
        })
}

fn setup(max_frame: usize, reader: TypedReader, stall: bool, chunk: usize) -> Vec<u8> {
    FrameSetup {
        max_frame,
        reader,
        stall,
        chunk,
    }
    .to_bytes()
    .to_vec()
}

fn frames(out: &mut Out) {
    use TypedReader::*;
    const MAX: usize = codec::MAX_FRAME;
    const ALL: usize = usize::MAX;
    let hello = |name: &str| {
        hello_list()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| b)
    };
    let peer = |names: &[&str]| -> Vec<Send> {
        let mut list = peer_list();
        names
            .iter()
            .map(|n| match *n {
                "blocks" => Send::Peer(blocks_answer()),
                _ => {
                    let i = list.iter().position(|(m, _)| m == n).unwrap();
                    Send::Peer(list.swap_remove(i).1)
                }
            })
            .collect()
    };
    let requests = |names: &[&str]| -> Vec<Send> {
        let mut list = request_list();
        names
            .iter()
            .map(|n| {
                let i = list.iter().position(|(m, _)| m == n).unwrap();
                Send::Request(list.swap_remove(i).1)
            })
            .collect()
    };
    let to_client = |names: &[&str]| -> Vec<Send> {
        let mut list = to_client_list();
        names
            .iter()
            .map(|n| match *n {
                "chunk" => Send::ToClient(chunk()),
                _ => {
                    let i = list.iter().position(|(m, _)| m == n).unwrap();
                    Send::ToClient(list.swap_remove(i).1)
                }
            })
            .collect()
    };
    let with = |head: Vec<u8>, stream: &[u8]| [head, stream.to_vec()].concat();

    let client = wire(
        hello("hello-client"),
        requests(&["list", "lock", "put", "put-data"]),
    );
    out.put(
        "frame",
        "client-session",
        &with(setup(MAX, Client, false, ALL), &client),
    );
    out.put(
        "frame",
        "client-session-stranger-stalling",
        &with(setup(STRANGER_MAX_FRAME, Client, true, 3), &client),
    );
    let session = wire(
        hello("reply-welcome-peer"),
        peer(&["resume", "index", "blocks", "get-blocks"]),
    );
    out.put(
        "frame",
        "peer-session",
        &with(setup(MAX, HelloReplyThenPeer, false, ALL), &session),
    );
    let links = wire(None, peer(&["resume", "blocks", "events", "files"]));
    out.put(
        "frame",
        "peer-link-in-pieces",
        &with(setup(MAX, Peer, false, 7), &links),
    );
    out.put(
        "frame",
        "peer-link-tiny-limit",
        &with(setup(16, Peer, false, ALL), &links),
    );
    let node = wire(
        None,
        to_client(&["files", "fetch-start", "chunk", "event", "missed"]),
    );
    out.put(
        "frame",
        "to-client",
        &with(setup(MAX, NodeToClient, true, 64), &node),
    );

    // How streams end.
    let resume = wire(None, peer(&["resume"]));
    let head = setup(MAX, Peer, false, ALL);
    out.put(
        "frame",
        "end-after-prefix",
        &[&head[..], &resume, &[0, 0, 0, 9]].concat(),
    );
    out.put(
        "frame",
        "end-in-frame",
        &with(head.clone(), &links[..links.len() - 3]),
    );
    out.put(
        "frame",
        "end-in-prefix",
        &[&head[..], &resume, &[0, 0]].concat(),
    );
    out.put("frame", "end-clean-empty", &head);
    out.put(
        "frame",
        "prefix-over-limit",
        &[&head[..], &[0xff; 8]].concat(),
    );
    out.put(
        "frame",
        "prefix-over-stranger-limit",
        &with(
            setup(STRANGER_MAX_FRAME, Client, false, ALL),
            &[0, 1, 0x11, 0x71],
        ),
    );
    out.put(
        "frame",
        "empty-frames-zero-limit",
        &with(setup(0, Peer, false, 1), &[0; 12]),
    );
}

fn paths(out: &mut Out) {
    let ok = [
        "a.txt",
        "dir/sub/notes.md",
        ".hidden",
        "dir/.tandem",
        "..a",
        "a..",
        "...",
        "spaces in name",
        "ünïcödé/日本",
        "a/b/c/d/e/f/g/h",
    ];
    let bad = [
        "",
        "/etc/passwd",
        "..",
        "../x",
        "a/../../x",
        "./a",
        "a//b",
        "a/",
        "a\0b",
        "..\\..\\x",
        ".tandem",
        ".tandem/index.db",
    ];
    for (i, s) in ok.iter().chain(&bad).enumerate() {
        out.put("path", &format!("path-{i:02}"), s.as_bytes());
    }
    // Pairs for is_inside, and a name that is not UTF-8 on disk.
    out.put("path", "pair-inside", b"dir/sub/notes.md\xffdir/sub");
    out.put("path", "pair-prefix", b"dirt/x\xffdir");
    out.put("path", "not-utf8", b"dir/\xfe\x80.txt");
    out.put("path", "long-name", "x".repeat(256).as_bytes());
}

fn identities(out: &mut Out) {
    let id = Uuid::from_u128(0x52a3_bd70_1b33_4d98_a0c1_55e2_9d1f_0042);
    out.put("identity", "formatted", format_id(&id).as_bytes());
    out.put(
        "identity",
        "lower-no-dashes",
        format_id(&id).replace('-', "").to_lowercase().as_bytes(),
    );
    out.put(
        "identity",
        "spaced",
        format_id(&id).replace('-', " ").as_bytes(),
    );
    out.put("identity", "malformed", b"hello");
    let mut raw = id.as_bytes().to_vec();
    raw.extend((0..64u8).map(|i| i.wrapping_mul(37)));
    out.put("identity", "bytes-and-mangling", &raw);
}

fn block_lists(out: &mut Out) {
    let case = |theirs, ours, attack, edits: Vec<(u16, u8)>| BlockListCase {
        theirs,
        ours,
        attack,
        edits,
        source: (0..=255u8).collect(),
    };
    let cases = [
        ("same", case(130, 130, 0, vec![])),
        ("one-edit", case(200, 200, 0, vec![(70, 1)])),
        ("grown", case(201, 200, 0, vec![])),
        ("shrunk", case(64, 129, 0, vec![])),
        ("from-nothing", case(130, 0, 0, vec![])),
        ("empty", case(0, 10, 0, vec![])),
        ("dropped-group", case(300, 300, 1, vec![(5, 9), (140, 2)])),
        ("cut-group", case(300, 300, 2, vec![(5, 9)])),
        ("altered-block", case(300, 300, 4, vec![(5, 9)])),
        ("out-of-range", case(130, 130, 5, vec![(3, 3)])),
        ("wrong-hashes", case(130, 60, 8, vec![(1, 1)])),
        ("duplicate", case(300, 300, 9, vec![(5, 9), (70, 1)])),
    ];
    for (name, c) in cases {
        out.put("blocklist", name, &c.to_bytes());
    }
}
