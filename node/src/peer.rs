//! Links to peer nodes: one task pair per link, generic over the byte
//! stream. A link exchanges indexes (only what the other has not seen, by
//! sequence number), then streams changes as they happen, and serves and
//! requests blocks for transfers.
//!
//! One link per pair of nodes: when both dial at once, both keep the link
//! dialed by the node with the smaller id and close the other.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_common::codec::{FrameIo, FrameReader};
use tandem_common::model::BLOCK_SIZE;
use tandem_common::proto::{
    self, ApiError, BlockData, Hello, PeerAnswer, PeerMessage, PeerQuery, Role,
};
use tandem_common::{ContentHash, NodeId, RelPath};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::core::{CoreHandle, LockMsg};

/// Most blocks one `GetBlocks` may ask for (keeps answers under the frame limit).
pub const MAX_BLOCKS_PER_REQUEST: usize = 64;
/// Index batches are cut at about this many bytes.
const INDEX_BATCH_BYTES: usize = 2 * 1024 * 1024;

type BlockReply = oneshot::Sender<Result<Vec<BlockData>, String>>;
type VoteReply = oneshot::Sender<Result<(), ApiError>>;
type AnswerReply = oneshot::Sender<Result<PeerAnswer, String>>;

/// Answers peers' questions (the merged table, node figures, the cache).
pub trait Answerer: Send + Sync {
    /// Answers `q`.
    fn answer(
        &self,
        q: PeerQuery,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<PeerAnswer, String>> + Send + '_>>;
}

/// A live link, as the rest of the node sees it.
pub struct LinkHandle {
    /// The peer's id.
    pub peer: NodeId,
    /// The peer's name.
    pub name: String,
    /// Who dialed this link.
    dialed_by: NodeId,
    tx: mpsc::UnboundedSender<PeerMessage>,
    pending: Mutex<HashMap<u64, BlockReply>>,
    votes: Mutex<HashMap<u64, VoteReply>>,
    answers: Mutex<HashMap<u64, AnswerReply>>,
    next_req: AtomicU64,
    closed: CancellationToken,
}

impl LinkHandle {
    /// Asks the peer for blocks of the version `hash` of `path`.
    pub async fn get_blocks(
        &self,
        path: RelPath,
        hash: ContentHash,
        blocks: Vec<u32>,
    ) -> Result<Vec<BlockData>, String> {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending_map().insert(req, tx);
        let msg = PeerMessage::GetBlocks {
            req,
            path,
            hash,
            blocks,
        };
        if self.tx.send(msg).is_err() {
            self.pending_map().remove(&req);
            return Err("link closed".into());
        }
        tokio::select! {
            r = rx => r.unwrap_or_else(|_| Err("link closed".into())),
            _ = self.closed.cancelled() => Err("link closed".into()),
        }
    }

    /// Queues a message to the peer (in order; never blocks).
    pub fn post(&self, msg: PeerMessage) {
        let _ = self.tx.send(msg);
    }

    /// Asks the peer to vote on a lock proposal.
    pub async fn propose(&self, lock: tandem_common::proto::LockRecord) -> Result<(), ApiError> {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.votes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(req, tx);
        self.post(PeerMessage::LockPropose { req, lock });
        let closed = || ApiError::Other(format!("the link to {} closed", self.name));
        tokio::select! {
            r = rx => r.unwrap_or_else(|_| Err(closed())),
            _ = self.closed.cancelled() => Err(closed()),
        }
    }

    /// Asks the peer a question.
    pub async fn query(&self, q: PeerQuery) -> Result<PeerAnswer, String> {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(req, tx);
        self.post(PeerMessage::Query { req, q });
        tokio::select! {
            r = rx => r.unwrap_or_else(|_| Err("link closed".into())),
            _ = self.closed.cancelled() => Err("link closed".into()),
        }
    }

    fn pending_map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, BlockReply>> {
        // A poisoned map only means another task panicked mid-insert; the
        // map itself is still usable.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The registry of live links.
#[derive(Clone)]
pub struct Links {
    me: NodeId,
    map: Arc<Mutex<HashMap<NodeId, Arc<LinkHandle>>>>,
    changed: Arc<watch::Sender<u64>>,
    /// Which node answered at each configured peer address.
    dialed: Arc<Mutex<HashMap<SocketAddr, NodeId>>>,
}

impl Links {
    /// An empty registry for node `me`.
    pub fn new(me: NodeId) -> Links {
        Links {
            me,
            map: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
            dialed: Arc::default(),
        }
    }

    /// The node last seen at a configured peer address.
    pub fn dialed(&self, addr: &SocketAddr) -> Option<NodeId> {
        self.dialed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(addr)
            .copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Arc<LinkHandle>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The link to `peer`, if up.
    pub fn get(&self, peer: &NodeId) -> Option<Arc<LinkHandle>> {
        self.lock().get(peer).cloned()
    }

    /// Ids of every connected peer.
    pub fn peers(&self) -> Vec<NodeId> {
        self.lock().keys().copied().collect()
    }

    /// Adds a link; false if an existing link to that peer is the one to keep.
    fn register(&self, h: Arc<LinkHandle>) -> bool {
        let keeper = self.me.min(h.peer);
        let mut map = self.lock();
        if let Some(old) = map.get(&h.peer) {
            if old.dialed_by == keeper || h.dialed_by != keeper {
                return false;
            }
            old.closed.cancel();
        }
        map.insert(h.peer, h);
        true
    }

    fn unregister(&self, h: &Arc<LinkHandle>) {
        let mut map = self.lock();
        if map.get(&h.peer).is_some_and(|cur| Arc::ptr_eq(cur, h)) {
            map.remove(&h.peer);
        }
        drop(map);
        self.changed.send_modify(|g| *g += 1);
    }

    /// Waits until there is no link to `peer`.
    async fn wait_gone(&self, peer: NodeId) {
        let mut rx = self.changed.subscribe();
        while self.get(&peer).is_some() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// What a link task needs.
#[derive(Clone)]
pub struct PeerCtx {
    /// The core.
    pub core: CoreHandle,
    /// Live links.
    pub links: Links,
    /// This node.
    pub me: NodeId,
    /// This node's name.
    pub name: String,
    /// The core's latest sequence number.
    pub seq: watch::Receiver<u64>,
    /// Stops everything.
    pub shutdown: CancellationToken,
    /// Answers peers' questions.
    pub answerer: Arc<dyn Answerer>,
    /// Traffic counters.
    pub answerer_metrics: Arc<crate::metrics::Metrics>,
}

/// How a link ended.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkEnd {
    /// Another link to the same peer is kept instead.
    Duplicate,
    /// The connection closed or failed.
    Closed,
}

/// Runs a handshaken link until it closes.
pub async fn run_link<S>(
    io: FrameIo<S>,
    peer: NodeId,
    peer_name: String,
    dialed_by: NodeId,
    ctx: PeerCtx,
) -> LinkEnd
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut writer, reader) = io.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<PeerMessage>();
    let handle = Arc::new(LinkHandle {
        peer,
        name: peer_name.clone(),
        dialed_by,
        tx: tx.clone(),
        pending: Mutex::new(HashMap::new()),
        votes: Mutex::new(HashMap::new()),
        answers: Mutex::new(HashMap::new()),
        next_req: AtomicU64::new(1),
        closed: ctx.shutdown.child_token(),
    });
    if !ctx.links.register(handle.clone()) {
        tracing::debug!("closing duplicate link to {peer_name}");
        return LinkEnd::Duplicate;
    }
    tracing::info!("peer {peer_name} connected");
    let closed = handle.closed.clone();
    let since = ctx.core.peer_up(peer, peer_name.clone()).await.unwrap_or(0);

    let writer_task = {
        let closed = closed.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = rx.recv() => match m {
                        Some(m) => if let Err(e) = writer.send(&m).await {
                            tracing::debug!("send failed: {e}");
                            break;
                        },
                        None => break,
                    },
                    _ = closed.cancelled() => break,
                }
            }
            closed.cancel();
        })
    };
    let (resume_tx, resume_rx) = oneshot::channel();
    let push_task = tokio::spawn(push_index(
        ctx.clone(),
        peer,
        tx.clone(),
        resume_rx,
        closed.clone(),
    ));
    if let Ok((ids, locks)) = ctx.core.ask_lock(crate::core::LockMsg::Snapshot).await {
        handle.post(PeerMessage::Identities(ids));
        handle.post(PeerMessage::LockSync(locks));
    }
    handle.post(PeerMessage::Resume { since });
    let why = read_loop(reader, peer, &peer_name, &ctx, &handle, tx, resume_tx).await;
    closed.cancel();
    let _ = writer_task.await;
    let _ = push_task.await;
    for (_, reply) in handle.pending_map().drain() {
        let _ = reply.send(Err("link closed".into()));
    }
    for (_, reply) in handle
        .votes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain()
    {
        let _ = reply.send(Err(ApiError::Other("link closed".into())));
    }
    ctx.links.unregister(&handle);
    // A link replaced by a newer one to the same peer is not the peer going down.
    if ctx.links.get(&peer).is_none() {
        ctx.core.peer_down(peer);
    }
    tracing::info!("peer {peer_name} disconnected: {why}");
    LinkEnd::Closed
}

/// Sends the peer every entry it has not seen, then each change as it happens.
async fn push_index(
    ctx: PeerCtx,
    peer: NodeId,
    tx: mpsc::UnboundedSender<PeerMessage>,
    resume: oneshot::Receiver<u64>,
    closed: CancellationToken,
) {
    let mut sent = tokio::select! {
        r = resume => match r { Ok(s) => s, Err(_) => return },
        _ = closed.cancelled() => return,
    };
    let mut seq = ctx.seq.clone();
    loop {
        seq.borrow_and_update();
        let Ok((entries, upto)) = ctx.core.entries_since(sent, INDEX_BATCH_BYTES, peer).await
        else {
            return;
        };
        if upto > sent {
            sent = upto;
            if !entries.is_empty() && tx.send(PeerMessage::Index { entries }).is_err() {
                return;
            }
            continue;
        }
        tokio::select! {
            r = seq.changed() => if r.is_err() { return },
            _ = closed.cancelled() => return,
        }
    }
}

async fn read_loop<S>(
    mut reader: FrameReader<S>,
    peer: NodeId,
    peer_name: &str,
    ctx: &PeerCtx,
    handle: &Arc<LinkHandle>,
    tx: mpsc::UnboundedSender<PeerMessage>,
    resume_tx: oneshot::Sender<u64>,
) -> String
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut resume_tx = Some(resume_tx);
    loop {
        let msg = tokio::select! {
            m = reader.recv::<PeerMessage>() => m,
            _ = handle.closed.cancelled() => return "closed".into(),
        };
        let msg = match msg {
            Ok(Some(m)) => m,
            Ok(None) => return "connection closed".into(),
            Err(e) => {
                tracing::warn!("closing link to {peer_name}: {e}");
                return e.to_string();
            }
        };
        match msg {
            PeerMessage::Resume { since } => {
                if let Some(t) = resume_tx.take() {
                    let _ = t.send(since);
                }
            }
            PeerMessage::Index { entries } => {
                if ctx.core.remote_index(peer, entries).await.is_err() {
                    return "node shutting down".into();
                }
            }
            PeerMessage::GetBlocks {
                req,
                path,
                hash,
                blocks,
            } => {
                let (core, tx) = (ctx.core.clone(), tx.clone());
                let metrics = ctx.answerer_metrics.clone();
                tokio::spawn(async move {
                    let data = serve_blocks(&core, path, hash, blocks).await;
                    if let Ok(d) = &data {
                        let n: usize = d.iter().map(|b| b.bytes.len()).sum();
                        crate::metrics::Metrics::add(&metrics.bytes_sent, n as u64);
                    }
                    let _ = tx.send(PeerMessage::Blocks { req, data });
                });
            }
            PeerMessage::Blocks { req, data } => {
                if let Some(reply) = handle.pending_map().remove(&req) {
                    let _ = reply.send(data);
                }
            }
            PeerMessage::Identities(ids) => {
                ctx.core.tell_lock(LockMsg::Identities(ids, peer));
            }
            PeerMessage::LockSync(locks) => {
                ctx.core.tell_lock(LockMsg::Sync(locks, peer));
            }
            PeerMessage::LockUpdate(lock) => {
                ctx.core.tell_lock(LockMsg::Update(lock, Some(peer)));
            }
            PeerMessage::LockPropose { req, lock } => {
                let (core, h) = (ctx.core.clone(), handle.clone());
                tokio::spawn(async move {
                    let result = match core
                        .ask_lock(|reply| LockMsg::Propose {
                            lock,
                            local: false,
                            reply,
                        })
                        .await
                    {
                        Ok(r) => r,
                        Err(e) => Err(e),
                    };
                    h.post(PeerMessage::LockVote { req, result });
                });
            }
            PeerMessage::Query { req, q } => {
                let (answerer, h) = (ctx.answerer.clone(), handle.clone());
                tokio::spawn(async move {
                    let a = answerer.answer(q).await;
                    h.post(PeerMessage::Answer { req, a });
                });
            }
            PeerMessage::Answer { req, a } => {
                let reply = handle
                    .answers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&req);
                if let Some(reply) = reply {
                    let _ = reply.send(a);
                }
            }
            PeerMessage::LockVote { req, result } => {
                let reply = handle
                    .votes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&req);
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
        }
    }
}

/// Reads the asked blocks of our current version of `path`, checking that it
/// is still the version `hash` and that each block still matches.
async fn serve_blocks(
    core: &CoreHandle,
    path: RelPath,
    hash: ContentHash,
    blocks: Vec<u32>,
) -> Result<Vec<BlockData>, String> {
    if blocks.len() > MAX_BLOCKS_PER_REQUEST {
        return Err(format!(
            "at most {MAX_BLOCKS_PER_REQUEST} blocks per request"
        ));
    }
    let (full, entry) = match core.entry(path.clone()).await {
        Ok(Some(x)) => x,
        _ => return Err(format!("{path} is not available here")),
    };
    if entry.hash != hash || !entry.is_live_file() {
        return Err(format!("{path} has changed here"));
    }
    let disk = full.clone();
    let res = tokio::task::spawn_blocking(move || -> Result<Vec<BlockData>, String> {
        let f = std::fs::File::open(&disk).map_err(|e| format!("cannot open {path}: {e}"))?;
        let mut out = Vec::with_capacity(blocks.len());
        for i in blocks {
            let Some(expected) = entry.blocks.get(i as usize) else {
                return Err(format!("{path} has no block {i}"));
            };
            let off = i as u64 * BLOCK_SIZE;
            let len = (entry.size - off).min(BLOCK_SIZE) as usize;
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, off)
                .map_err(|e| format!("cannot read {path}: {e}"))?;
            if ContentHash::of(&buf) != *expected {
                return Err(format!("{path} changed on disk while being sent"));
            }
            out.push(BlockData {
                index: i,
                bytes: buf,
            });
        }
        Ok(out)
    })
    .await
    .map_err(|e| e.to_string())?;
    if let Err(e) = &res
        && e.contains("changed on disk")
    {
        core.recheck(&full);
    }
    res
}

/// Dials `addr` and keeps a link to it up, reconnecting with backoff.
pub async fn dial_loop(addr: SocketAddr, ctx: PeerCtx) {
    let mut backoff = Duration::from_millis(100);
    let mut warned = false;
    loop {
        if ctx.shutdown.is_cancelled() {
            return;
        }
        match dial_once(addr, &ctx).await {
            Ok((peer, LinkEnd::Duplicate)) => {
                backoff = Duration::from_millis(100);
                tokio::select! {
                    _ = ctx.links.wait_gone(peer) => {}
                    _ = ctx.shutdown.cancelled() => return,
                }
                continue;
            }
            Ok((_, LinkEnd::Closed)) => {
                backoff = Duration::from_millis(100);
                warned = false;
            }
            Err(e) => {
                if !warned {
                    tracing::warn!("cannot reach peer {addr}: {e}; retrying with backoff");
                    warned = true;
                } else {
                    tracing::debug!("cannot reach peer {addr}: {e}");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = ctx.shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn dial_once(addr: SocketAddr, ctx: &PeerCtx) -> anyhow::Result<(NodeId, LinkEnd)> {
    let stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("connect timed out"))??;
    let _ = stream.set_nodelay(true);
    let mut io = FrameIo::new(stream);
    let hello = Hello {
        role: Role::Peer,
        id: ctx.me.0,
        name: ctx.name.clone(),
    };
    let w = tokio::time::timeout(
        Duration::from_secs(10),
        proto::connect_handshake(&mut io, &hello),
    )
    .await
    .map_err(|_| anyhow::anyhow!("handshake timed out"))??;
    ctx.links
        .dialed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(addr, w.node_id);
    let end = run_link(io, w.node_id, w.name, ctx.me, ctx.clone()).await;
    Ok((w.node_id, end))
}
