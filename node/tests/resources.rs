//! Resource bounds and man-in-the-middle refusal, against the real binaries
//! on loopback. Each test attacks one node and checks two things: the bound
//! holds (a cap refuses with a typed reason, a budget cuts off, a rate limit
//! answers `RateLimited`, a key that is not the one named is refused), and
//! someone legitimate keeps being served while the attack is on.
//!
//! - connection caps: strangers (clients without a role, 16), approved
//!   clients (256) and peers (64) are each filled exactly and the next one
//!   is refused `Busy`, naming the kind and the cap, while the other kinds
//!   are served. The total (512) is filled with bare TCP connections and
//!   the next ones are closed unread; while it is full only sessions opened
//!   before are served (the total is judged before TLS, so a new admin is
//!   turned away too, until the stalls time out). Every connection that
//!   stalls before its hello is closed by the node after the handshake
//!   timeout, and capacity comes back.
//! - a trusted peer that asks for file content and never reads its socket
//!   is cut off at its link's budget, and the node's memory stays bounded.
//! - 2,000 registration attempts with bad codes: `RateLimited` after the
//!   tenth in a minute, nothing registered, answered quickly.
//! - a TLS-terminating proxy between two nodes (and between a client and a
//!   node) that presents its own key: every side refuses it, no plaintext
//!   crosses it, and no file reaches the other node.
//!
//! A block request that names one block twice is refused in
//! `hostile_peer.rs`, not here. The caps are the node's own constants
//! (`tandem_node::api`), so these tests follow them if they change.

mod harness;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use harness::*;
use serde_json::Value;
use tandem_common::identity::{KeyPair, format_id};
use tandem_common::proto::{
    self, ApiError, ClientRequest, ClientResponse, HandshakeError, Hello, HelloReply, NodeToClient,
    PeerMessage, Refusal, Request, Role, Welcomed,
};
use tandem_common::tls::{Side, Tls};
use tandem_common::{ContentHash, NodeId, RelPath};
use tandem_node::api::{
    MAX_CLIENT_CONNECTIONS, MAX_CONNECTIONS, MAX_PEER_CONNECTIONS, MAX_STRANGER_CONNECTIONS,
};

/// The node's own limit on TLS plus hello (not scaled: it is the node's).
const HELLO_TIMEOUT: Duration = tandem_node::peer::HANDSHAKE_TIMEOUT;
const MIB: u64 = 1024 * 1024;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("a tokio runtime")
}

/// A TLS connection to `node` proving `key`, hello said as `role`; the
/// node's welcome, or why it refused. A peer's key is put on the node's
/// trust list first.
async fn hello_as(
    node: &Node,
    key: &KeyPair,
    role: Role,
    name: &str,
) -> Result<(RawPeerIo, Welcomed), HandshakeError> {
    if role == Role::Peer {
        trust_in(&node.state_dir(), &NodeId(key.id()).to_string());
    }
    let mut io = tls_to(node, key, role == Role::Peer).await;
    let hello = Hello {
        role,
        name: name.into(),
    };
    proto::connect_handshake(&mut io, &hello)
        .await
        .map(|w| (io, w))
}

/// Asserts that `got` is the node's `Busy` refusal for `what` at `limit`.
fn assert_busy(
    node: &Node,
    got: Result<(RawPeerIo, Welcomed), HandshakeError>,
    what: &str,
    limit: usize,
) {
    match got {
        Err(HandshakeError::Refused(Refusal::Busy {
            node: n,
            what: w,
            limit: l,
        })) => assert_eq!(
            (n.as_str(), w.as_str(), l as usize),
            (node.name(), what, limit),
            "{}",
            node.fail("the Busy refusal names another node, kind or cap")
        ),
        Err(e) => panic!(
            "{}",
            node.fail(&format!(
                "expected a Busy refusal ({limit} {what} connections), got: {e}"
            ))
        ),
        Ok(_) => panic!(
            "{}",
            node.fail(&format!(
                "a {what} connection past the cap of {limit} was welcomed"
            ))
        ),
    }
}

/// Opens `n` connections as `role` with `key` that are welcomed and then
/// say nothing (a few at a time: the node has two cores for handshakes). A
/// `Busy` refusal is retried until a deadline: a client process the harness
/// ran a moment ago may still hold its place.
async fn fill(node: &Node, key: &KeyPair, role: Role, n: usize) -> Vec<RawPeerIo> {
    use futures::StreamExt;
    let deadline = Instant::now() + scaled(CHANGE_TIMEOUT);
    let one = |i: usize| async move {
        loop {
            match hello_as(node, key, role, &format!("filler-{i}")).await {
                Ok((io, _)) => return io,
                Err(HandshakeError::Refused(Refusal::Busy { .. })) if Instant::now() < deadline => {
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => panic!(
                    "{}",
                    node.fail(&format!(
                        "connection {i} of {n} ({role:?}) was refused: {e}"
                    ))
                ),
            }
        }
    };
    futures::stream::iter(0..n)
        .map(one)
        .buffer_unordered(4)
        .collect()
        .await
}

/// True once the node closed `s` (non-blocking; bytes read are dropped).
fn tcp_closed(s: &TcpStream) -> bool {
    let mut b = [0u8; 64];
    match (&*s).read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Runs the real client as someone without a role (a key of its own);
/// returns its stderr and whether it succeeded.
fn tandem_as_stranger(node: &Node, args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("client.key");
    let mut all = vec!["--identity", key.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    let out = node.tandem(&all);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `tandem identities --json` as the harness's admin.
fn identities(node: &Node) -> Vec<Value> {
    let out = node.tandem(&["identities", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        node.fail(&format!(
            "tandem identities failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    );
    serde_json::from_slice(&out.stdout).expect("identities --json is JSON")
}

/// Resident memory of the node now (VmRSS), in KiB.
fn rss_kib(node: &Node) -> u64 {
    let pid = node.pid().expect("the node runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc status")
}

// ---------------------------------------------------------------------------
// Connection caps

#[test]
fn strangers_past_their_cap_are_refused_busy_and_approved_clients_keep_working() {
    let node = Node::start("A");
    let rt = runtime();
    // Strangers that said hello and then nothing hold their place until the
    // idle timeout (5 min): the cap is full for the whole test.
    let mut held: Vec<RawPeerIo> = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..MAX_STRANGER_CONNECTIONS {
            v.push(stranger(&node).await);
        }
        v
    });
    let what = "not-yet-approved client";
    let got = rt.block_on(hello_as(&node, &fresh_key(), Role::Client, "one more"));
    assert_busy(&node, got, what, MAX_STRANGER_CONNECTIONS);
    node.wait_log(&format!("refused a {what} connection from 127.0.0.1:"));
    // The real client says why, in words.
    let (ok, err) = tandem_as_stranger(&node, &["whoami"]);
    let words = format!("too many {what} connections ({MAX_STRANGER_CONNECTIONS})");
    assert!(
        !ok && err.contains(&words),
        "{}",
        node.fail(&format!("`tandem whoami` as a stranger: {err}"))
    );
    // Approved clients have places of their own.
    let t = Instant::now();
    node.list();
    eprintln!(
        "tandem list with every stranger place taken: {:.1?}",
        t.elapsed()
    );

    // One stranger leaves: a new one gets its place.
    drop(held.pop());
    wait_until(
        CHANGE_TIMEOUT,
        "a stranger place to come back",
        &[&node],
        || {
            rt.block_on(hello_as(&node, &fresh_key(), Role::Client, "next"))
                .map(|(io, _)| held.push(io))
        },
    );

    // A stranger that finishes TLS but never says hello holds a place for
    // the node's hello timeout at most, and is then closed without a word.
    drop(held);
    let closed_after = rt.block_on(async {
        let deadline = Instant::now() + scaled(CHANGE_TIMEOUT);
        loop {
            let mut io = tls_to(&node, &fresh_key(), false).await;
            let t = Instant::now();
            let limit = scaled(HELLO_TIMEOUT + Duration::from_secs(20));
            match tokio::time::timeout(limit, io.recv_raw()).await {
                Err(_) => panic!(
                    "{}",
                    node.fail("a stranger that never said hello kept its connection")
                ),
                // A refusal: the places just given back were not free yet.
                Ok(Ok(Some(frame))) if Instant::now() < deadline => {
                    let refusal = proto::decode_hello::<HelloReply>(&frame);
                    assert!(
                        matches!(
                            refusal,
                            Ok((_, Some(HelloReply::Refused(Refusal::Busy { .. }))))
                        ),
                        "{}",
                        node.fail(&format!("unexpected answer to a stall: {refusal:?}"))
                    );
                    tokio::time::sleep(POLL).await;
                }
                Ok(Ok(Some(_))) => panic!("{}", node.fail("no stranger place came back")),
                Ok(_) => return t.elapsed(),
            }
        }
    });
    let line = node.wait_log(&format!("no hello within {HELLO_TIMEOUT:?}"));
    eprintln!("a stranger without hello was closed after {closed_after:.1?}: {line}");
    node.list();
}

#[test]
fn clients_past_their_cap_are_refused_busy_and_peers_keep_syncing() {
    let (a, b) = linked_pair(&[]);
    let key = fresh_key();
    let id = format_id(&key.id());
    let out = a.tandem(&["approve", &id, "--role", "read"]);
    assert!(out.status.success(), "{}", a.fail("approve"));
    let rt = runtime();
    let t = Instant::now();
    let held = rt.block_on(fill(&a, &key, Role::Client, MAX_CLIENT_CONNECTIONS));
    eprintln!(
        "{MAX_CLIENT_CONNECTIONS} client connections opened in {:.1?}",
        t.elapsed()
    );
    let got = rt.block_on(hello_as(&a, &key, Role::Client, "one more"));
    assert_busy(&a, got, "client", MAX_CLIENT_CONNECTIONS);
    // The admin is a client too: turned away, with the reason.
    let err = a.try_list().expect_err("a client past the cap was served");
    let words = format!("too many client connections ({MAX_CLIENT_CONNECTIONS})");
    assert!(err.contains(&words), "{}", a.fail(&err));
    // Peers and strangers have places of their own: a file written on B
    // still reaches A, and a new peer and a stranger are welcomed.
    put(b.path("during.txt"), b"synced while the client cap is full");
    wait_until(CHANGE_TIMEOUT * 3, "during.txt on A", &[&a, &b], || {
        std::fs::read(a.path("during.txt"))
            .ok()
            .filter(|d| d == b"synced while the client cap is full")
    });
    rt.block_on(async {
        let (_peer, _) = raw_peer(&a, "newcomer").await;
        let _stranger = stranger(&a).await;
    });
    // A client leaves: the admin is served again.
    let mut held = held;
    drop(held.pop());
    wait_until(CHANGE_TIMEOUT, "the admin served again", &[&a], || {
        a.try_list()
    });
    drop(held);
}

#[test]
fn peers_past_their_cap_are_refused_busy_and_clients_keep_working() {
    let node = Node::start("A");
    let rt = runtime();
    let t = Instant::now();
    let mut held: Vec<RawPeerIo> = rt.block_on(async {
        let mut v = Vec::new();
        for i in 0..MAX_PEER_CONNECTIONS {
            let (io, _) = raw_peer(&node, &format!("p{i}")).await;
            v.push(io);
        }
        v
    });
    eprintln!(
        "{MAX_PEER_CONNECTIONS} peer links opened in {:.1?}",
        t.elapsed()
    );
    let got = rt.block_on(hello_as(&node, &fresh_key(), Role::Peer, "one more"));
    assert_busy(&node, got, "peer", MAX_PEER_CONNECTIONS);
    node.wait_log("refused a peer connection from 127.0.0.1:");
    // Clients are served meanwhile. (`list` asks every linked peer for its
    // files; these peers never answer, so it takes the node's query
    // timeout, 5 s, and still succeeds.)
    let t = Instant::now();
    node.list();
    eprintln!(
        "tandem list with every peer place taken: {:.1?}",
        t.elapsed()
    );
    // A peer leaves: a new one is welcomed.
    drop(held.pop());
    let key = fresh_key();
    wait_until(
        CHANGE_TIMEOUT,
        "a peer place to come back",
        &[&node],
        || {
            rt.block_on(hello_as(&node, &key, Role::Peer, "next"))
                .map(|(io, _)| held.push(io))
        },
    );
    drop(held);
}

#[test]
fn the_total_cap_closes_further_connections_unread_and_stalls_expire() {
    let node = Node::start("A");
    let rt = runtime();
    // An admin session opened before the flood.
    let (admin_key, _) = KeyPair::load_or_create(harness_identity()).expect("the harness key");
    let (mut admin, w) = rt
        .block_on(hello_as(&node, &admin_key, Role::Client, "admin"))
        .unwrap_or_else(|e| panic!("{}", node.fail(&format!("admin session: {e}"))));
    assert_eq!(
        w.client.and_then(|(_, r)| r),
        Some(proto::Access::Admin),
        "the harness key is the node's admin"
    );
    // Bare TCP connections that never start TLS, more than the total cap.
    const EXTRA: usize = 8;
    let opened = Instant::now();
    let stalls: Vec<TcpStream> = (0..MAX_CONNECTIONS + EXTRA)
        .map(|i| {
            let s = TcpStream::connect(node.addr())
                .unwrap_or_else(|e| panic!("{}", node.fail(&format!("connection {i}: {e}"))));
            s.set_nonblocking(true).expect("non-blocking");
            s
        })
        .collect();
    node.wait_log("connections are open already");
    // The admin session is one of the MAX_CONNECTIONS: at least EXTRA + 1
    // of the stalls are closed at once.
    let refused = EXTRA + 1;
    let mut closed = vec![false; stalls.len()];
    let count = wait_until(
        CHANGE_TIMEOUT,
        "the connections past the cap to be closed",
        &[&node],
        || {
            for (c, s) in closed.iter_mut().zip(&stalls) {
                *c = *c || tcp_closed(s);
            }
            let n = closed.iter().filter(|c| **c).count();
            (n >= refused).then_some(n)
        },
    );
    let held = stalls.len() - count;
    eprintln!(
        "{} bare connections: {held} kept, {count} closed at once, after {:.1?}",
        stalls.len(),
        opened.elapsed()
    );
    assert!(
        held < MAX_CONNECTIONS,
        "{}",
        node.fail(&format!("{held} stalls and an admin session were all kept"))
    );
    // Until the first stall times out, only the cap closes connections:
    // the node kept all it had room for (one place may still have been
    // held by the harness's last client process).
    if opened.elapsed() < HELLO_TIMEOUT {
        assert!(
            held + 3 >= MAX_CONNECTIONS,
            "{}",
            node.fail(&format!("only {held} of {} stalls were kept", stalls.len()))
        );
    }
    // The session opened before the flood is still served.
    rt.block_on(async {
        let req = Request {
            id: 1,
            body: ClientRequest::List,
        };
        admin.send(&req).await.expect("send");
        let got =
            tokio::time::timeout(scaled(CLIENT_TIMEOUT), admin.recv_msg::<NodeToClient>()).await;
        assert!(
            matches!(
                got,
                Ok(Ok(Some(NodeToClient::Response {
                    id: 1,
                    body: ClientResponse::Files { .. }
                })))
            ),
            "{}",
            node.fail(&format!("the admin session during the flood: {got:?}"))
        );
    });
    // The node closes every stall after its hello timeout; then new
    // clients are served again.
    wait_until(
        HELLO_TIMEOUT + Duration::from_secs(20),
        "every stalled connection closed by the node",
        &[&node],
        || {
            for (c, s) in closed.iter_mut().zip(&stalls) {
                *c = *c || tcp_closed(s);
            }
            let open = closed.iter().filter(|c| !**c).count();
            if open == 0 {
                Ok(())
            } else {
                Err(format!("{open} still open"))
            }
        },
    );
    // One log line per stall closed by the timeout (the count of stalls
    // kept may include the one or two a lingering place refused late).
    assert!(
        node.log_count("no TLS handshake within") + 2 >= held,
        "{}",
        node.fail("each stall is closed with a log line")
    );
    wait_until(CHANGE_TIMEOUT, "new clients served again", &[&node], || {
        node.try_list()
    });
    drop(admin);
}

// ---------------------------------------------------------------------------
// A peer that asks and never reads

/// Asks for blocks `reqs` (request numbers; each asks for the next 64
/// blocks of the file, round the file) without reading any answer. Stops
/// when the node has closed the connection; returns how many were sent.
async fn ask_blocks(
    io: &mut RawPeerIo,
    path: &RelPath,
    hash: ContentHash,
    blocks: u32,
    reqs: std::ops::Range<u32>,
) -> u32 {
    let mut sent = 0;
    const PER_REQUEST: u32 = tandem_node::links::MAX_BLOCKS_PER_REQUEST as u32;
    for k in reqs {
        let first = (k * PER_REQUEST) % blocks;
        let msg = PeerMessage::GetBlocks {
            req: u64::from(k) + 1,
            path: path.clone(),
            hash,
            blocks: (first..first + PER_REQUEST).collect(),
            bases: vec![],
            verify: false,
        };
        // Small frames: they fit in the socket buffers even when the node
        // has stopped reading; an error means it has cut the link.
        if io.send(&msg).await.is_err() {
            break;
        }
        sent += 1;
    }
    sent
}

#[test]
fn a_peer_that_never_reads_is_cut_off_at_its_budget_and_memory_stays_bounded() {
    // 512 blocks of 128 KiB; one request asks for 64 of them (8 MiB).
    const SIZE: usize = 64 * MIB as usize;
    const ANSWER_KIB: u64 = 8 * 1024;
    let budget_kib = tandem_node::links::MAX_LINK_QUEUED_BYTES as u64 / 1024;
    // The budget, one answer past it (the check lets the request that
    // reaches it in), and 56 MiB for TLS and socket buffers, answers being
    // read and the allocator. A node that queues without bound, or makes
    // every asked answer at once, exceeds it: 1 GiB is asked for below.
    let allowed_kib = budget_kib + ANSWER_KIB + 56 * 1024;

    let node = Node::start("A");
    let data = pattern(SIZE, 7);
    let hash = ContentHash::of(&data);
    put(node.path("big.bin"), &data);
    drop(data);
    node.wait_list("big.bin indexed", |l| {
        find(l, "big.bin").is_some_and(|r| r["hash"] == hash.to_hex())
    });
    let base = rss_kib(&node);
    let rt = runtime();
    let path = RelPath::new("big.bin").expect("path");
    let blocks = (SIZE as u64).div_ceil(tandem_common::model::BLOCK_SIZE) as u32;
    let peak_ok = |what: &str| {
        let peak = node.peak_rss_kib().expect("VmHWM");
        assert!(
            peak.saturating_sub(base) <= allowed_kib,
            "{}",
            node.fail(&format!(
                "{what}: peak RSS {peak} KiB, {} KiB over the {base} KiB before the attack (allowed {allowed_kib} KiB)",
                peak.saturating_sub(base)
            ))
        );
    };
    let cut_off = |name: &str| {
        wait_until(
            CHANGE_TIMEOUT * 6,
            &format!("the node to cut off {name}, which does not read"),
            &[&node],
            || {
                peak_ok(&format!("while {name} asked without reading"));
                node.log().lines().any(|l| {
                    l.contains(&format!("closing link to {name}:"))
                        && l.contains("it asks without reading")
                })
            },
        );
        // The link goes, and its queued answers with it.
        node.wait_log(&format!("peer {name} disconnected"));
        peak_ok(&format!("after {name} was cut off"));
        wait_until(CHANGE_TIMEOUT, "memory given back", &[&node], || {
            let now = rss_kib(&node);
            if now <= base + 32 * 1024 {
                Ok(())
            } else {
                Err(format!("VmRSS {now} KiB, {base} KiB before the attack"))
            }
        });
    };

    // 1. Paced: 30 requests (240 MiB, under the budget) are answered and
    //    wait behind the peer's full socket; the writer is stuck. Then more.
    let under = (budget_kib / ANSWER_KIB - 2) as u32;
    let mut paced = rt.block_on(async {
        let (mut io, _) = raw_peer(&node, "paced").await;
        let sent = ask_blocks(&mut io, &path, hash, blocks, 0..under).await;
        assert_eq!(sent, under, "{}", node.fail("cut off under the budget"));
        io
    });
    wait_until(
        CHANGE_TIMEOUT * 6,
        "the answers made and queued",
        &[&node],
        || {
            peak_ok("while the answers were made");
            let now = rss_kib(&node);
            let want = base + (u64::from(under) - 4) * ANSWER_KIB;
            if now >= want {
                Ok(())
            } else {
                Err(format!("VmRSS {now} KiB, waiting for {want} KiB"))
            }
        },
    );
    // Clients are served while the peer hogs its link. (`list` asks every
    // peer for its files; this one never answers, so it takes the node's
    // query timeout, 5 s, and still succeeds.)
    let t = Instant::now();
    node.list();
    eprintln!("tandem list during the attack: {:.1?}", t.elapsed());
    rt.block_on(ask_blocks(
        &mut paced,
        &path,
        hash,
        blocks,
        under..under + 8,
    ));
    cut_off("paced");
    drop(paced);

    // 2. A burst: 128 requests (1 GiB of answers) at once, read by the node
    //    long before their answers are made.
    let burst = rt.block_on(async {
        let (mut io, _) = raw_peer(&node, "burst").await;
        let sent = ask_blocks(&mut io, &path, hash, blocks, 0..128).await;
        eprintln!("the burst got {sent} requests out before the node cut it off");
        io
    });
    cut_off("burst");
    drop(burst);

    eprintln!(
        "RSS before {base} KiB, peak {} KiB, now {} KiB",
        node.peak_rss_kib().unwrap_or(0),
        rss_kib(&node)
    );
    node.list();
}

// ---------------------------------------------------------------------------
// Registration attempts

#[test]
fn two_thousand_bad_registrations_are_rate_limited_and_register_nothing() {
    const ATTEMPTS: usize = 2000;
    const CONNECTIONS: usize = 4;
    let per_minute = tandem_node::access::REGISTER_PER_MINUTE as usize;
    let node = Node::start("A");
    let before = identities(&node);
    let rt = runtime();
    let keys: Vec<KeyPair> = (0..CONNECTIONS).map(|_| fresh_key()).collect();

    /// One bad code; the answer: `Ok(true)` refused as a bad code,
    /// `Ok(false)` rate limited, `Err` anything else.
    async fn attempt(io: &mut RawPeerIo, id: u64) -> Result<bool, String> {
        let req = Request {
            id,
            body: ClientRequest::Register {
                code: format!("BADCODE{id:05}-AAAAAAAA-AAAAAAAA"),
            },
        };
        io.send(&req).await.map_err(|e| e.to_string())?;
        let got = tokio::time::timeout(scaled(CLIENT_TIMEOUT), io.recv_msg::<NodeToClient>())
            .await
            .map_err(|_| format!("no answer to attempt {id}"))?;
        match got {
            Ok(Some(NodeToClient::Response {
                id: got_id,
                body: ClientResponse::Error(e),
            })) if got_id == id => match e {
                ApiError::BadInvite(_) => Ok(true),
                ApiError::RateLimited { what, retry_secs }
                    if what == "registration attempts" && (1..=60).contains(&retry_secs) =>
                {
                    Ok(false)
                }
                e => Err(format!("attempt {id}: {e:?}")),
            },
            other => Err(format!("attempt {id}: {other:?}")),
        }
    }

    let started = Instant::now();
    let mut conns: Vec<RawPeerIo> = rt.block_on(async {
        let mut v = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let (io, w) = hello_as(&node, k, Role::Client, &format!("guesser-{i}"))
                .await
                .unwrap_or_else(|e| panic!("{}", node.fail(&e.to_string())));
            assert_eq!(w.client.map(|(_, r)| r), Some(None), "no role");
            v.push(io);
        }
        v
    });
    // One connection, in order: the first ten are judged, then limited.
    let first: Vec<bool> = rt.block_on(async {
        let mut v = Vec::new();
        for id in 1..=2 * per_minute as u64 {
            v.push(
                attempt(&mut conns[0], id)
                    .await
                    .unwrap_or_else(|e| panic!("{}", node.fail(&e))),
            );
        }
        v
    });
    let in_first_minute = started.elapsed() < Duration::from_secs(60);
    if in_first_minute {
        let want: Vec<bool> = (0..2 * per_minute).map(|i| i < per_minute).collect();
        assert_eq!(
            first, want,
            "attempts 1-{per_minute} are judged, the next ones answered RateLimited"
        );
    }
    // Then all connections at once, as fast as they are answered, until
    // ATTEMPTS are made and an admin's `tandem list` has finished meanwhile.
    let sent = Arc::new(AtomicUsize::new(first.len()));
    let judged = Arc::new(AtomicUsize::new(first.iter().filter(|b| **b).count()));
    let list_done = Arc::new(AtomicBool::new(false));
    let addr = node.addr();
    let lister = {
        let done = list_done.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            let r = try_list_json(addr);
            done.store(true, Ordering::SeqCst);
            (r, t.elapsed())
        })
    };
    let deadline = Instant::now() + scaled(Duration::from_secs(60));
    let results: Vec<Result<(), String>> = rt.block_on(async {
        let tasks: Vec<_> = conns
            .drain(..)
            .enumerate()
            .map(|(c, mut io)| {
                let (sent, judged, done) = (sent.clone(), judged.clone(), list_done.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    loop {
                        let total = sent.load(Ordering::SeqCst);
                        let enough = total >= ATTEMPTS && done.load(Ordering::SeqCst);
                        if enough || total >= 20 * ATTEMPTS || Instant::now() > deadline {
                            return Ok(());
                        }
                        n += 1;
                        let id = 1_000_000 * (c as u64 + 1) + n;
                        if attempt(&mut io, id).await? {
                            judged.fetch_add(1, Ordering::SeqCst);
                        }
                        sent.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        futures::future::join_all(tasks)
            .await
            .into_iter()
            .map(|r| r.map_err(|e| e.to_string()).and_then(|r| r))
            .collect()
    });
    let elapsed = started.elapsed();
    for r in results {
        r.unwrap_or_else(|e| panic!("{}", node.fail(&e)));
    }
    let (listed, list_took) = lister.join().expect("the lister thread");
    let sent = sent.load(Ordering::SeqCst);
    let judged = judged.load(Ordering::SeqCst);
    eprintln!(
        "{sent} registration attempts in {elapsed:.1?} ({:.0}/s); {judged} judged; tandem list took {list_took:.1?}",
        sent as f64 / elapsed.as_secs_f64()
    );
    listed.unwrap_or_else(|e| panic!("{}", node.fail(&format!("the admin's list: {e}"))));
    assert!(
        sent >= ATTEMPTS && elapsed < scaled(Duration::from_secs(60)),
        "{}",
        node.fail(&format!("only {sent} attempts answered in {elapsed:.1?}"))
    );
    // Ten per started minute at most.
    let minutes = elapsed.as_secs() as usize / 60 + 1;
    assert!(
        judged <= per_minute * minutes,
        "{}",
        node.fail(&format!(
            "{judged} of {sent} bad codes were judged in {elapsed:.1?} (at most {per_minute} a minute)"
        ))
    );
    // The real client names the limit.
    let (ok, err) = tandem_as_stranger(&node, &["register", "WRONG-CODE-0000"]);
    assert!(!ok, "{}", node.fail("a bad code was accepted"));
    if started.elapsed() < Duration::from_secs(60) {
        assert!(
            err.contains("too many registration attempts; try again in"),
            "{}",
            node.fail(&format!("tandem register: {err}"))
        );
    }
    // Nothing was registered: same identities, and the guessers still have
    // no role.
    assert_eq!(
        identities(&node),
        before,
        "{}",
        node.fail("identities changed")
    );
    rt.block_on(async {
        for k in &keys {
            let (_, w) = hello_as(&node, k, Role::Client, "again")
                .await
                .unwrap_or_else(|e| panic!("{}", node.fail(&e.to_string())));
            assert_eq!(w.client.map(|(_, r)| r), Some(None), "a guesser got a role");
        }
    });
}

// ---------------------------------------------------------------------------
// Man in the middle

/// What the man in the middle got on one connection it accepted.
#[derive(Debug, Clone)]
struct Intercepted {
    /// The id the dialer proved to the proxy.
    dialer: NodeId,
    /// What the dialer said it is (ALPN).
    side: Side,
    /// Plaintext the dialer sent (through the proxy's TLS).
    from_dialer: Vec<u8>,
    /// Plaintext the target sent.
    from_target: Vec<u8>,
}

/// A TCP proxy on loopback that ends TLS on both sides with a key of its
/// own, then relays (and keeps) whatever plaintext either side sends.
struct Mitm {
    addr: SocketAddr,
    id: NodeId,
    seen: Arc<Mutex<Vec<Intercepted>>>,
    /// Dropping it stops the proxy's tasks.
    _rt: tokio::runtime::Runtime,
}

impl Mitm {
    fn start(target: SocketAddr) -> Mitm {
        let rt = runtime();
        let key = fresh_key();
        let id = NodeId(key.id());
        let tls = (
            Tls::node(&key).expect("tls"),
            Tls::client(&key).expect("tls"),
        );
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        rt.spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                tokio::spawn(intercept(down, target, tls.clone(), s.clone()));
            }
        });
        Mitm {
            addr,
            id,
            seen,
            _rt: rt,
        }
    }

    fn seen(&self) -> Vec<Intercepted> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Connections from `dialer` whose TLS with the proxy went through.
    fn from(&self, dialer: &str) -> Vec<Intercepted> {
        self.seen()
            .into_iter()
            .filter(|c| c.dialer.to_string() == dialer)
            .collect()
    }
}

async fn intercept(
    down: tokio::net::TcpStream,
    target: SocketAddr,
    (as_node, as_client): (Tls, Tls),
    seen: Arc<Mutex<Vec<Intercepted>>>,
) {
    let limit = Duration::from_secs(30);
    let Ok(Ok((down, dialer, side))) = tokio::time::timeout(limit, as_node.accept(down)).await
    else {
        return;
    };
    let k = {
        let mut s = seen.lock().unwrap_or_else(PoisonError::into_inner);
        s.push(Intercepted {
            dialer: NodeId(dialer),
            side,
            from_dialer: Vec::new(),
            from_target: Vec::new(),
        });
        s.len() - 1
    };
    let Ok(up) = tokio::net::TcpStream::connect(target).await else {
        return;
    };
    // Toward the target it says it is whatever the dialer said it is.
    let tls = if side == Side::Peer {
        &as_node
    } else {
        &as_client
    };
    let Ok(Ok((up, _))) = tokio::time::timeout(limit, tls.connect(up)).await else {
        return;
    };
    let (dr, dw) = tokio::io::split(down);
    let (ur, uw) = tokio::io::split(up);
    let relays = futures::future::join(
        relay(dr, uw, seen.clone(), k, true),
        relay(ur, dw, seen.clone(), k, false),
    );
    let _ = tokio::time::timeout(limit, relays).await;
}

async fn relay(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    seen: Arc<Mutex<Vec<Intercepted>>>,
    k: usize,
    from_dialer: bool,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        {
            let mut s = seen.lock().unwrap_or_else(PoisonError::into_inner);
            let c = &mut s[k];
            let kept = if from_dialer {
                &mut c.from_dialer
            } else {
                &mut c.from_target
            };
            kept.extend_from_slice(&buf[..n]);
        }
        if to.write_all(&buf[..n]).await.is_err() || to.flush().await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Asserts that `bytes` (what a node sent the proxy) is exactly one
/// handshake frame refusing the proxy's id as not trusted.
fn assert_not_trusted_refusal(bytes: &[u8], proxy: NodeId, node: &Node) {
    let ok = bytes.len() >= 4 && {
        let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        bytes.len() == 4 + len
            && matches!(
                proto::decode_hello::<HelloReply>(&bytes[4..]),
                Ok((_, Some(HelloReply::Refused(Refusal::NotTrusted { id, .. })))) if id == proxy
            )
    };
    assert!(
        ok,
        "{}",
        node.fail(&format!(
            "the node sent the proxy something other than a refusal of its id: {} bytes",
            bytes.len()
        ))
    );
}

#[test]
fn a_man_in_the_middle_with_its_own_key_is_refused_by_nodes_and_clients() {
    let b = Node::start("B");
    let b_id = b.id().expect("B's id").to_string();
    // The id the test names is the one B runs with.
    b.wait_log(&format!("with id {b_id} serving"));
    let mitm = Mitm::start(b.addr());
    let proxy_id = mitm.id.to_string();
    // A trusts B and names B's id, but dials the proxy's address.
    let a = Node::builder("A")
        .trusts(&b)
        .arg("--peer")
        .arg(format!("{b_id}@{}", mitm.addr))
        .start();
    let a_id = a.id().expect("A's id").to_string();
    let marker = b"only for B, never for the proxy";
    put(a.path("secret.txt"), marker);

    // A refuses: the other side proved another id than the one it named.
    let line = a.wait_log(&format!("it proved id {proxy_id}, but --peer names {b_id}"));
    assert!(line.contains("nothing was sent"), "{}", a.fail(&line));
    // B refuses the proxy's key, naming it and how to trust it.
    let line = b.wait_log(&format!("refused node {proxy_id} connecting from"));
    assert!(
        line.contains("it is not trusted; to trust it run: tandem-node --dir")
            && line.contains(&format!("trust {proxy_id}")),
        "{}",
        b.fail(&line)
    );

    // Negative check, bounded: A keeps dialing through the proxy (each dial
    // would carry its index if a link came up); after two more dials past
    // the moment secret.txt is in A's index, it is still not on B.
    a.wait_list("secret.txt indexed on A", |l| {
        find(l, "secret.txt").is_some()
    });
    let dials = mitm.from(&a_id).len();
    wait_until(
        LINK_TIMEOUT,
        "two more dials of A through the proxy",
        &[&a, &b],
        || {
            assert!(
                !b.path("secret.txt").exists(),
                "{}",
                fail_with_logs("secret.txt crossed the proxy", &[&a, &b])
            );
            mitm.from(&a_id).len() >= dials + 2
        },
    );
    assert!(
        !b.path("secret.txt").exists(),
        "{}",
        b.fail("secret.txt on B")
    );
    assert_eq!(a.log_count("peer B connected"), 0, "{}", a.fail("linked"));
    assert_eq!(b.log_count("peer A connected"), 0, "{}", b.fail("linked"));

    // A node that dials the proxy without naming an id refuses its unknown
    // key too.
    let a2 = Node::builder("A2").trusts(&b).peer(mitm.addr).start();
    let a2_id = a2.id().expect("A2's id").to_string();
    let line = a2.wait_log(&format!("with id {proxy_id}: it is not trusted"));
    assert!(
        line.contains(&format!("trust {proxy_id}")),
        "{}",
        a2.fail(&line)
    );

    // A client that names B's id, or pinned it for that address, refuses
    // the proxy before it sends anything.
    let known = tempfile::tempdir().expect("temp dir");
    let pins = known.path().join("known_nodes");
    std::fs::write(&pins, format!("{} {b_id}\n", mitm.addr)).expect("pin");
    let client = |node: String, known_nodes: &std::path::Path| {
        let mut cmd = std::process::Command::new(client_bin());
        cmd.arg("--node")
            .arg(node)
            .arg("list")
            .env_remove("TANDEM_NODE")
            .env("TANDEM_KNOWN_NODES", known_nodes)
            .env("TANDEM_IDENTITY", harness_identity());
        let out = run_with_timeout(cmd, CLIENT_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let null = std::path::Path::new("/dev/null");
    // Control: the same id, straight to B, is served.
    let (ok, err) = client(format!("{b_id}@{}", b.addr()), null);
    assert!(ok, "{}", b.fail(&format!("straight to B: {err}")));
    let (ok, err) = client(format!("{b_id}@{}", mitm.addr), null);
    assert!(
        !ok && err.contains(&format!("proved id {proxy_id}, but you asked for {b_id}"))
            && err.contains("something in the middle"),
        "client naming B's id through the proxy: {err}"
    );
    let (ok, err) = client(mitm.addr.to_string(), &pins);
    assert!(
        !ok && err.contains(&format!(
            "proved id {proxy_id}, but it proved {b_id} before"
        )),
        "client with B's id pinned, through the proxy: {err}"
    );

    // Nothing crossed the proxy: no dialer sent it a byte of plaintext,
    // and all B ever sent it is the refusal of its key (to the node side;
    // to the client side, B waits for a hello that never comes).
    let seen = wait_until(
        CHANGE_TIMEOUT,
        "the proxy to have taken both clients and a refusal from B",
        &[&a, &b],
        || {
            let seen = mitm.seen();
            let clients = seen.iter().filter(|c| c.side == Side::Client).count();
            let refused = seen.iter().any(|c| !c.from_target.is_empty());
            if clients == 2 && refused {
                Ok(seen)
            } else {
                Err(format!("{seen:?}"))
            }
        },
    );
    let from_a = seen.iter().filter(|c| c.dialer.to_string() == a_id).count();
    let from_a2 = seen
        .iter()
        .filter(|c| c.dialer.to_string() == a2_id)
        .count();
    let clients = seen.iter().filter(|c| c.side == Side::Client).count();
    assert!(
        from_a >= 3 && from_a2 >= 1,
        "the proxy saw {from_a} dials of A and {from_a2} of A2: {seen:?}"
    );
    let mut refusals = 0;
    for c in &seen {
        assert!(
            c.from_dialer.is_empty(),
            "{} sent the proxy {} bytes of plaintext",
            c.dialer,
            c.from_dialer.len()
        );
        if c.side == Side::Peer && !c.from_target.is_empty() {
            assert_not_trusted_refusal(&c.from_target, mitm.id, &b);
            refusals += 1;
        } else {
            assert!(c.from_target.is_empty(), "B sent a client-side proxy {c:?}");
        }
    }
    assert!(refusals >= 1, "B never judged the proxy's key: {seen:?}");
    eprintln!(
        "the proxy took {from_a} dials of A, {from_a2} of A2 and {clients} clients; B refused it {refusals} times; nothing relayed"
    );
}
