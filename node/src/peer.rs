//! Links to peer nodes: one task pair per link, generic over the byte
//! stream. A link exchanges indexes (only what the other has not seen, by
//! sequence number), then streams changes as they happen, and serves and
//! requests blocks for transfers. Entries of large files travel without
//! their block list; the link serves lists (group hashes, or the block
//! hashes of some groups) to receivers that need them.
//!
//! One link per pair of nodes: when both dial at once, both keep the link
//! dialed by the node with the smaller id and close the other.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_common::blocklist::{self, MAX_GROUPS_PER_REQUEST};
use tandem_common::buffers::SEGMENTS;
use tandem_common::codec::{FrameIo, FrameReader};
use tandem_common::delta;
use tandem_common::hashing::block_hash;
use tandem_common::model::BLOCK_SIZE;
use tandem_common::proto::{
    self, BlockBase, BlockData, BlockListPart, FileData, Hello, PeerError, PeerMessage, Role,
};
use tandem_common::{ContentHash, FileEntry, NodeId, RelPath};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::core::{CoreHandle, LockMsg, Served};
use crate::index::LocalStat;
use crate::links::{
    Answerer, LinkHandle, Links, MAX_BLOCKS_PER_REQUEST, MAX_FILES_PER_REQUEST, SMALL_FILE_MAX,
};
use crate::links::{BlockAnswer, FilesAnswer, ListAnswer, take_waiter};

/// Most entries one index message may carry (a batch of 2 MiB holds far
/// fewer); a peer sending more is cut off.
const MAX_ENTRIES_PER_INDEX: usize = 100_000;

pub use crate::pace::{INDEX_BATCH_BYTES, INDEX_WINDOW};

/// Index messages sent and not yet acknowledged by the peer.
struct IndexWindow {
    permits: tokio::sync::Semaphore,
    outstanding: AtomicUsize,
}

impl IndexWindow {
    fn new() -> Self {
        IndexWindow {
            permits: tokio::sync::Semaphore::new(INDEX_WINDOW),
            outstanding: AtomicUsize::new(0),
        }
    }

    /// Waits for room to send one more. False once the window is closed.
    async fn take(&self) -> bool {
        match self.permits.acquire().await {
            Ok(p) => {
                p.forget();
                self.outstanding.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    /// The peer took `n` more; acknowledgements of messages never sent
    /// are ignored (a peer cannot open the window wider than it is).
    fn taken(&self, n: u32) {
        let mut given = 0;
        let _ = self
            .outstanding
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |out| {
                given = out.min(n as usize);
                Some(out - given)
            });
        self.permits.add_permits(given);
    }
}

/// Index messages taken in from the peer and not yet acknowledged.
#[derive(Default)]
struct Unacknowledged {
    count: std::sync::atomic::AtomicU32,
    more: tokio::sync::Notify,
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
    /// The feed (events are relayed across links).
    pub events: Arc<crate::events::EventBus>,
    /// This node's TLS (its key).
    pub tls: tandem_common::tls::Tls,
    /// Which node ids are accepted as peers.
    pub trust: crate::trust::Trust,
    /// The synced folder (named in "how to trust" hints).
    pub dir: std::path::PathBuf,
    /// Routes the lock cluster's messages.
    pub mesh: Arc<crate::mesh::Mesh>,
    /// What is queued from each peer (peers' index messages are
    /// acknowledged while there is room).
    pub pace: Arc<crate::pace::Pace>,
}

/// How a link ended.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkEnd {
    /// Another link to the same peer is kept instead.
    Duplicate,
    /// The connection closed or failed.
    Closed,
}

/// Runs a handshaken link until it closes. `resumed`: the `Resume` this
/// side already sent (behind its hello).
pub async fn run_link<S>(
    io: FrameIo<S>,
    peer: NodeId,
    peer_name: String,
    dialed_by: NodeId,
    ctx: PeerCtx,
    resumed: Option<u64>,
) -> LinkEnd
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut writer, reader) = io.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<PeerMessage>();
    let index_window = Arc::new(IndexWindow::new());
    let unacknowledged = Arc::new(Unacknowledged::default());
    let handle = Arc::new(LinkHandle {
        peer,
        name: peer_name.clone(),
        dialed_by,
        tx: tx.clone(),
        blocks: Mutex::new(HashMap::new()),
        files: Mutex::new(HashMap::new()),
        lists: Mutex::new(HashMap::new()),
        answers: Mutex::new(HashMap::new()),
        next_req: AtomicU64::new(1),
        events_queued: AtomicUsize::new(0),
        queued_bytes: AtomicUsize::new(0),
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
        let link = handle.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = rx.recv() => match m {
                        Some(m) => {
                            let events = matches!(m, PeerMessage::Events(_));
                            let served = answer_bytes(&m);
                            // A peer that does not read blocks this write
                            // for good: closing the link must end it too.
                            let sent = tokio::select! {
                                r = writer.send_msg(m) => r,
                                _ = closed.cancelled() => break,
                            };
                            if let Err(e) = sent {
                                tracing::debug!("send failed: {e}");
                                break;
                            }
                            if events {
                                link.events_queued.fetch_sub(1, Ordering::Relaxed);
                            }
                            if served > 0 {
                                link.queued_bytes.fetch_sub(served, Ordering::Relaxed);
                            }
                        }
                        None => break,
                    },
                    _ = closed.cancelled() => break,
                }
            }
            closed.cancel();
        })
    };
    let (resume_tx, resume_rx) = watch::channel(None);
    let push_task = tokio::spawn(push_index(
        ctx.clone(),
        peer,
        tx.clone(),
        index_window.clone(),
        resume_rx,
        closed.clone(),
    ));
    let ack_task = tokio::spawn(acknowledge_index(
        ctx.pace.clone(),
        peer,
        handle.clone(),
        unacknowledged.clone(),
    ));
    let relay_task = tokio::spawn(relay_events(
        ctx.events.relayed(),
        handle.clone(),
        closed.clone(),
    ));
    if let Ok(ids) = ctx.core.ask_lock(crate::core::LockMsg::Snapshot).await {
        handle.post(PeerMessage::Identities(ids));
    }
    if resumed.is_none() {
        handle.post(PeerMessage::Resume { since });
    }
    let why = read_loop(
        reader,
        peer,
        &peer_name,
        &ctx,
        &handle,
        tx,
        resume_tx,
        Pacing {
            window: &index_window,
            unacknowledged: &unacknowledged,
        },
    )
    .await;
    closed.cancel();
    let _ = writer_task.await;
    let _ = push_task.await;
    let _ = ack_task.await;
    let _ = relay_task.await;
    ctx.links.unregister(&handle);
    // A link replaced by a newer one to the same peer is not the peer going down.
    if ctx.links.get(&peer).is_none() {
        ctx.core.peer_down(peer);
        ctx.mesh.link_closed(peer);
    }
    tracing::info!("peer {peer_name} disconnected: {why}");
    LinkEnd::Closed
}

/// Deletions of paths a node had never heard of that one peer may send per
/// minute (and at once). Nothing else makes a node's index grow without its
/// folder growing, so this caps what a trusted but misbehaving peer can
/// make it store. Deletions of known files (an `rm -r` of any size) do not
/// count. A legitimate burst beyond it (a node joining a cluster whose
/// history holds more deleted names) is slowed, not refused.
const NEW_TOMBSTONES_PER_MINUTE: u32 = 100_000;

/// The per-link budget for [`NEW_TOMBSTONES_PER_MINUTE`]. Over budget, the
/// link stops reading that peer until the budget refills: back-pressure,
/// so nothing the peer said is dropped.
struct TombstoneRate {
    limiter: governor::DefaultDirectRateLimiter,
    warned: bool,
}

impl TombstoneRate {
    fn new() -> Self {
        let n = std::num::NonZeroU32::new(NEW_TOMBSTONES_PER_MINUTE).expect("non-zero");
        TombstoneRate {
            limiter: governor::RateLimiter::direct(governor::Quota::per_minute(n)),
            warned: false,
        }
    }

    /// Charges `n` new deletions, waiting while over budget. False if the
    /// link closed meanwhile.
    async fn admit(&mut self, n: usize, peer_name: &str, closed: &CancellationToken) -> bool {
        let mut left = n;
        while left > 0 {
            let take = left.min(NEW_TOMBSTONES_PER_MINUTE as usize);
            left -= take;
            let take = std::num::NonZeroU32::new(take as u32).expect("non-zero");
            // Charges the budget when it allows.
            if matches!(self.limiter.check_n(take), Ok(Ok(()))) {
                continue;
            }
            if !self.warned {
                self.warned = true;
                tracing::warn!(
                    "peer {peer_name} sends deletions of unknown files faster than {NEW_TOMBSTONES_PER_MINUTE} a minute; reading it more slowly"
                );
            }
            tokio::select! {
                _ = self.limiter.until_n_ready(take) => {}
                _ = closed.cancelled() => return false,
            }
        }
        true
    }
}

/// How often live links are checked against the trust list.
const TRUST_RECHECK: Duration = Duration::from_secs(2);

/// Closes the link to any peer that is no longer trusted (`untrust`, or
/// the list edited by hand), within [`TRUST_RECHECK`]: trust is checked at
/// every handshake, and a link must not outlive it. A damaged list trusts
/// only `--peer` ids, so links to others close until it is fixed.
pub async fn drop_untrusted(ctx: PeerCtx) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TRUST_RECHECK) => {}
            _ = ctx.shutdown.cancelled() => return,
        }
        let linked = ctx.links.peers();
        if linked.is_empty() {
            continue;
        }
        let members = ctx.trust.members();
        for peer in linked.into_iter().filter(|p| !members.contains(p)) {
            if let Some(link) = ctx.links.get(&peer) {
                tracing::warn!(
                    "closing the link to {} ({peer}): it is no longer trusted; to link again run {}",
                    link.name,
                    ctx.trust.command_for(&ctx.dir, peer)
                );
                link.closed.cancel();
            }
        }
    }
}

/// Bytes of file content an answer carries (counted against the link's
/// budget while it waits to be written).
fn answer_bytes(m: &PeerMessage) -> usize {
    match m {
        PeerMessage::Blocks { data: Ok(d), .. } => d.iter().map(|b| b.bytes.len()).sum(),
        PeerMessage::Files { data: Ok(d), .. } => d.iter().flatten().map(|f| f.0.len()).sum(),
        _ => 0,
    }
}

/// A peer's repeated `Resume` is honoured at most this often.
const RESEND_EVERY: Duration = Duration::from_secs(5);

/// Sends our index to the peer from where its `Resume` says, then every
/// change as it happens. A later `Resume` starts again from where it says
/// (a node whose ignore patterns changed asks for everything again; only
/// the latest one counts, so they cannot pile up). Small files travel with
/// their entries; at most [`INDEX_WINDOW`] messages are ahead of the
/// peer's acknowledgements.
async fn push_index(
    ctx: PeerCtx,
    peer: NodeId,
    tx: mpsc::UnboundedSender<PeerMessage>,
    window: Arc<IndexWindow>,
    mut resume: watch::Receiver<Option<u64>>,
    closed: CancellationToken,
) {
    let mut sent = tokio::select! {
        r = resume.wait_for(Option::is_some) => match r { Ok(s) => s.unwrap_or(0), Err(_) => return },
        _ = closed.cancelled() => return,
    };
    let mut seq = ctx.seq.clone();
    let mut last_resend: Option<tokio::time::Instant> = None;
    loop {
        seq.borrow_and_update();
        // In their wire form: long block lists are left out (the receiver
        // usually has most of the list, or all of it, and asks for the rest).
        let Ok((entries, upto)) = ctx.core.entries_since(sent, INDEX_BATCH_BYTES, peer).await
        else {
            return;
        };
        if upto > sent {
            sent = upto;
            if entries.is_empty() {
                continue;
            }
            // Given back when the peer says it took the message in.
            tokio::select! {
                ok = window.take() => if !ok { return },
                _ = closed.cancelled() => return,
            }
            let contents = small_contents(&ctx, &entries).await;
            if tx.send(PeerMessage::Index { entries, contents }).is_err() {
                return;
            }
            continue;
        }
        tokio::select! {
            r = seq.changed() => if r.is_err() { return },
            r = resume.changed() => match r {
                Ok(()) => {
                    // A peer may ask again, but not make this node queue
                    // its whole index over and over: once per RESEND_EVERY.
                    if let Some(wait) = last_resend.map(|t| RESEND_EVERY.saturating_sub(t.elapsed())) {
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            _ = closed.cancelled() => return,
                        }
                    }
                    last_resend = Some(tokio::time::Instant::now());
                    sent = resume.borrow_and_update().unwrap_or(sent);
                }
                Err(_) => return,
            },
            _ = closed.cancelled() => return,
        }
    }
}

/// Acknowledges the peer's index messages once the core has taken them in
/// and has room for more from this peer (or after
/// [`crate::pace::ACK_ANYWAY`]): the peer's window of index messages moves
/// at the pace this node installs what they announce.
async fn acknowledge_index(
    pace: Arc<crate::pace::Pace>,
    peer: NodeId,
    link: Arc<LinkHandle>,
    unacknowledged: Arc<Unacknowledged>,
) {
    loop {
        if unacknowledged.count.load(Ordering::Relaxed) == 0 {
            tokio::select! {
                () = unacknowledged.more.notified() => continue,
                _ = link.closed.cancelled() => return,
            }
        }
        // Only the messages taken in before the look at the room are
        // acknowledged: one that arrives meanwhile waits for a look of its
        // own (its content was not counted yet).
        let messages = unacknowledged.count.load(Ordering::Relaxed);
        let room = tokio::select! {
            room = pace.room_for(peer) => room,
            _ = link.closed.cancelled() => return,
        };
        if !room {
            tracing::debug!(
                "{}: {} files from it still to install; acknowledging its index anyway",
                link.name,
                pace.fresh(peer)
            );
        }
        unacknowledged.count.fetch_sub(messages, Ordering::Relaxed);
        link.post(PeerMessage::IndexTaken { messages });
    }
}

/// A link's two halves of index pacing, as the read loop sees them.
struct Pacing<'a> {
    /// Our messages to the peer: its acknowledgements open it again.
    window: &'a IndexWindow,
    /// The peer's messages to us, to be acknowledged.
    unacknowledged: &'a Unacknowledged,
}

#[allow(clippy::too_many_arguments)]
async fn read_loop<S>(
    mut reader: FrameReader<S>,
    peer: NodeId,
    peer_name: &str,
    ctx: &PeerCtx,
    handle: &Arc<LinkHandle>,
    tx: mpsc::UnboundedSender<PeerMessage>,
    resume_tx: watch::Sender<Option<u64>>,
    pacing: Pacing<'_>,
) -> String
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut tombstones = TombstoneRate::new();
    loop {
        let msg = tokio::select! {
            m = reader.recv_msg::<PeerMessage>() => m,
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
                let _ = resume_tx.send(Some(since));
            }
            PeerMessage::Index {
                mut entries,
                contents,
            } => {
                if entries.len() > MAX_ENTRIES_PER_INDEX {
                    tracing::warn!(
                        "closing link to {peer_name}: an index message of {} entries (at most {MAX_ENTRIES_PER_INDEX})",
                        entries.len()
                    );
                    return "oversized index message".into();
                }
                // Setuid, setgid and sticky bits are never taken from a peer.
                for (_, e) in &mut entries {
                    e.mode &= tandem_common::model::SYNCED_MODE_BITS;
                }
                let n = entries.len();
                let contents = match check_contents(&entries, contents) {
                    Ok(c) => c,
                    Err(why) => {
                        tracing::warn!("closing link to {peer_name}: {why}");
                        return why;
                    }
                };
                let Ok(unknown) = ctx.core.remote_index(peer, entries, contents).await else {
                    return "node shutting down".into();
                };
                tracing::debug!(
                    "{peer_name}: {n} index entries decided, {unknown} deletions of unknown files"
                );
                pacing.unacknowledged.count.fetch_add(1, Ordering::Relaxed);
                pacing.unacknowledged.more.notify_one();
                if !tombstones.admit(unknown, peer_name, &handle.closed).await {
                    return "closed".into();
                }
            }
            PeerMessage::GetBlocks {
                req,
                path,
                hash,
                blocks,
                bases,
                verify,
            } => {
                if let Some(why) = over_budget(handle, peer_name) {
                    return why;
                }
                let most = blocks.len().min(MAX_BLOCKS_PER_REQUEST) * BLOCK_SIZE as usize;
                let core = ctx.core.clone();
                answer_with_content(ctx, handle, &tx, most, async move {
                    let data = serve_blocks(&core, path, hash, blocks, bases, verify).await;
                    PeerMessage::Blocks { req, data }
                });
            }
            PeerMessage::GetFiles { req, files } => {
                if let Some(why) = over_budget(handle, peer_name) {
                    return why;
                }
                let most = files.len().min(MAX_FILES_PER_REQUEST) * SMALL_FILE_MAX as usize;
                let core = ctx.core.clone();
                answer_with_content(ctx, handle, &tx, most, async move {
                    let data = serve_files(&core, files).await;
                    PeerMessage::Files { req, data }
                });
            }
            PeerMessage::GetBlockList {
                req,
                path,
                hash,
                groups,
            } => {
                let (core, tx) = (ctx.core.clone(), tx.clone());
                let metrics = ctx.answerer_metrics.clone();
                tokio::spawn(async move {
                    let data = serve_block_list(&core, path, hash, groups).await;
                    let n = match &data {
                        Ok(BlockListPart::Groups(g)) => g.len(),
                        Ok(BlockListPart::Blocks(b)) => b.iter().map(Vec::len).sum(),
                        Err(_) => 0,
                    };
                    crate::metrics::Metrics::add(&metrics.bytes_sent, n as u64 * 32);
                    let _ = tx.send(PeerMessage::BlockList { req, data });
                });
            }
            PeerMessage::IndexTaken { messages } => pacing.window.taken(messages),
            PeerMessage::BlockList { req, data } => {
                if let Some(reply) = take_waiter(&handle.lists, req) {
                    let _ = reply.send(data);
                }
            }
            PeerMessage::Blocks { req, data } => {
                if let Some(reply) = take_waiter(&handle.blocks, req) {
                    let _ = reply.send(data);
                }
            }
            PeerMessage::Files { req, data } => {
                if let Some(reply) = take_waiter(&handle.files, req) {
                    let _ = reply.send(data);
                }
            }
            PeerMessage::Events(events) => {
                for ev in events {
                    ctx.events.relay(ev);
                }
            }
            PeerMessage::Identities(ids) => {
                ctx.core.tell_lock(LockMsg::Identities(ids, peer));
            }
            PeerMessage::Raft(env) => ctx.mesh.receive(peer, env),
            PeerMessage::Query { req, q } => {
                let (answerer, h) = (ctx.answerer.clone(), handle.clone());
                tokio::spawn(async move {
                    let a = answerer.answer(q).await;
                    h.post(PeerMessage::Answer { req, a });
                });
            }
            PeerMessage::Answer { req, a } => {
                if let Some(reply) = take_waiter(&handle.answers, req) {
                    let _ = reply.send(a);
                }
            }
        }
    }
}

/// The contents sent with an index message, keyed by their entry's path,
/// or why the message is malformed: each names a different entry that is
/// a live file of exactly its size, at most [`proto::INLINE_MAX`] bytes.
/// (Its hash is checked when it is written.)
fn check_contents(
    entries: &[(u64, FileEntry)],
    contents: Vec<(u32, FileData)>,
) -> Result<HashMap<RelPath, FileData>, String> {
    let mut out = HashMap::with_capacity(contents.len());
    for (i, data) in contents {
        let Some((_, e)) = entries.get(i as usize) else {
            return Err(format!(
                "index message content for entry {i} of {}",
                entries.len()
            ));
        };
        if !e.is_live_file() || e.size != data.0.len() as u64 || e.size > proto::INLINE_MAX {
            return Err(format!(
                "index message content of {} bytes for {} ({} bytes{})",
                data.0.len(),
                e.path,
                e.size,
                if e.is_live_file() { "" } else { ", not a file" }
            ));
        }
        if out.insert(e.path.clone(), data).is_some() {
            return Err(format!("index message content for {} twice", e.path));
        }
    }
    Ok(out)
}

/// Makes an answer that carries file content in the background and queues
/// it, counting its bytes as sent and against the link's budget (given back
/// by the writer once written). `most`, the largest the answer can be, is
/// taken from the budget at once, before the answer is made: requests read
/// faster than their answers are made count too.
fn answer_with_content(
    ctx: &PeerCtx,
    link: &Arc<LinkHandle>,
    tx: &mpsc::UnboundedSender<PeerMessage>,
    most: usize,
    answer: impl std::future::Future<Output = PeerMessage> + Send + 'static,
) {
    let (tx, link) = (tx.clone(), link.clone());
    let metrics = ctx.answerer_metrics.clone();
    link.queued_bytes.fetch_add(most, Ordering::Relaxed);
    tokio::spawn(async move {
        let m = answer.await;
        let n = answer_bytes(&m);
        crate::metrics::Metrics::add(&metrics.bytes_sent, n as u64);
        // From the reservation to the answer's real size.
        link.queued_bytes.fetch_add(n, Ordering::Relaxed);
        link.queued_bytes.fetch_sub(most, Ordering::Relaxed);
        if tx.send(m).is_err() {
            link.queued_bytes.fetch_sub(n, Ordering::Relaxed);
        }
    });
}

/// The reason to close the link when the peer keeps asking for content
/// without reading the answers (memory would grow without end).
fn over_budget(link: &LinkHandle, peer_name: &str) -> Option<String> {
    let queued = link.queued_bytes.load(Ordering::Relaxed);
    if queued <= crate::links::MAX_LINK_QUEUED_BYTES {
        return None;
    }
    tracing::warn!(
        "closing link to {peer_name}: {queued} bytes of answers wait for it to read (at most {}); it asks without reading",
        crate::links::MAX_LINK_QUEUED_BYTES
    );
    Some("peer does not read its answers".into())
}

/// Feed event batches queued for one peer at most; more are dropped.
const MAX_QUEUED_EVENT_BATCHES: usize = 16;

/// After passing a batch on, the relay waits this long before it looks for
/// more, so that a burst (a file received every few microseconds in a big
/// sync, each with its event) wakes it once a pause instead of once an
/// event: each wake-up is a futex call on the thread that sent the event,
/// about 6 % of the core thread's time while it received 200,000 small
/// files. An event after a quiet spell still goes at once, and a full
/// batch ([`RELAY_BATCH`]) is followed by the next without a pause, so the
/// pause never limits how many events a second are passed on.
const RELAY_PAUSE: Duration = Duration::from_millis(5);

/// Feed events passed on to a peer in one message at most.
const RELAY_BATCH: usize = 256;

/// Passes feed events on to the peer, in batches, until the link closes.
/// Events are dropped, not queued without end, when the link is too slow
/// (more than [`MAX_QUEUED_EVENT_BATCHES`] batches waiting) or this task
/// falls behind the bus: peers then lose a part of the history, which is
/// only a feed's.
async fn relay_events(
    mut rx: tokio::sync::broadcast::Receiver<Arc<tandem_common::proto::Event>>,
    link: Arc<LinkHandle>,
    closed: CancellationToken,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let first = tokio::select! {
            r = rx.recv() => r,
            _ = closed.cancelled() => return,
        };
        let mut batch = match first {
            Ok(ev) => vec![Arc::unwrap_or_clone(ev)],
            Err(RecvError::Lagged(n)) => {
                tracing::debug!("{n} feed events not passed on to {}", link.name);
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        while batch.len() < RELAY_BATCH {
            match rx.try_recv() {
                Ok(ev) => batch.push(Arc::unwrap_or_clone(ev)),
                Err(_) => break,
            }
        }
        if link.events_queued.load(Ordering::Relaxed) >= MAX_QUEUED_EVENT_BATCHES {
            tracing::debug!(
                "{} feed events not passed on to {}: link busy",
                batch.len(),
                link.name
            );
            continue;
        }
        let full = batch.len() == RELAY_BATCH;
        link.events_queued.fetch_add(1, Ordering::Relaxed);
        link.post(PeerMessage::Events(batch));
        if full {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(RELAY_PAUSE) => {}
            _ = closed.cancelled() => return,
        }
    }
}

/// Block reads for peers at once, for all peers and forwarded questions
/// together (see [`serve_blocks`]). Reading (and hashing, when needed) a
/// 2 MiB segment from the page cache takes about a millisecond, so two
/// keep links busy; without a
/// bound a 1 GiB send ran a dozen reads at once, each on its own blocking
/// thread (and malloc arena), and the sender's peak was 48-51 MiB against
/// 39-40 with two. Each peer asks for at most its own budget of blocks at
/// once (8 MiB), so a request waits behind a few others, not a whole sync.
static BLOCK_READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Reads the asked blocks of our current version of `path`, checking that it
/// is still the version `hash` and that each block still matches (see
/// [`needs_check`]; with `verify`, always). A block with a base in `bases`
/// is answered with only the chunks that differ from it (see
/// [`tandem_common::delta`]).
pub(crate) async fn serve_blocks(
    core: &CoreHandle,
    path: RelPath,
    hash: ContentHash,
    blocks: Vec<u32>,
    bases: Vec<BlockBase>,
    verify: bool,
) -> BlockAnswer {
    let bad = |why: String| Err(PeerError::BadRequest(why));
    if blocks.len() > MAX_BLOCKS_PER_REQUEST {
        return bad(format!(
            "at most {MAX_BLOCKS_PER_REQUEST} blocks per request"
        ));
    }
    let mut sorted = blocks.clone();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return bad(format!("block {} asked twice in one request", w[0]));
    }
    let mut base_of: HashMap<u32, Vec<u64>> = HashMap::with_capacity(bases.len());
    for b in bases {
        if sorted.binary_search(&b.block).is_err() {
            return bad(format!(
                "a base was sent for block {}, which was not asked",
                b.block
            ));
        }
        if b.chunks.len() > delta::CHUNKS_PER_BLOCK {
            return bad(format!(
                "the base of block {} has {} chunk hashes (at most {})",
                b.block,
                b.chunks.len(),
                delta::CHUNKS_PER_BLOCK
            ));
        }
        if base_of.insert(b.block, b.chunks).is_some() {
            return bad(format!("block {} has two bases", b.block));
        }
    }
    let Served { full, entry, stat } = match core.entry(path.clone()).await {
        Ok(Some(x)) => x,
        Ok(None) => return Err(PeerError::NotHere(path)),
        Err(_) => return Err(PeerError::ShuttingDown),
    };
    if entry.hash != hash || !entry.is_live_file() {
        return Err(PeerError::Changed(path));
    }
    if entry.blocks.len() != blocklist::block_count(entry.size) {
        return Err(PeerError::NoBlockList(path));
    }
    let mut spans = Vec::with_capacity(blocks.len());
    let mut total = 0usize;
    for &i in &blocks {
        if i as usize >= entry.blocks.len() {
            return bad(format!("{path} has no block {i}"));
        }
        let off = i as u64 * BLOCK_SIZE;
        let len = (entry.size - off).min(BLOCK_SIZE) as usize;
        spans.push((i, off, total, len));
        total += len;
    }
    // The semaphore is static and never closed.
    let Ok(reading) = BLOCK_READS.acquire().await else {
        return Err(PeerError::ShuttingDown);
    };
    // One buffer for the whole answer: its blocks go out as slices of it,
    // without further copies. Made here, not on the blocking thread: each
    // of those has its own malloc arena, and answers freed into a dozen
    // arenas kept about 20 MiB more resident on a 1 GiB send. (A patch's
    // answer, only the changed chunks, is still made there: it is small.)
    let mut buf = SEGMENTS.take(total);
    let disk = full.clone();
    let res = tokio::task::spawn_blocking(move || -> BlockAnswer {
        // Held by the read itself: it is not cut short if the request is.
        let _reading = reading;
        let unreadable = |e: std::io::Error| PeerError::Unreadable {
            path: path.clone(),
            reason: e.to_string(),
        };
        let f = crate::scan::open_nofollow(&disk).map_err(unreadable)?;
        let seen = f.metadata().ok().map(|m| crate::scan::local_stat(&m));
        let check = verify || needs_check(seen, stat, std::time::SystemTime::now());
        for &(i, off, at, len) in &spans {
            let b = &mut buf[at..at + len];
            f.read_exact_at(b, off).map_err(unreadable)?;
            if check && block_hash(b, i as usize, entry.size) != entry.blocks[i as usize] {
                return Err(PeerError::ChangedOnDisk(path));
            }
        }
        if base_of.is_empty() {
            let buf = SEGMENTS.freeze(buf);
            let out: Vec<BlockData> = spans
                .into_iter()
                .map(|(i, _, at, len)| BlockData::new(i, buf.slice(at..at + len)))
                .collect();
            return Ok(out);
        }
        // Some blocks go as their changed chunks only: gather what is sent
        // into a buffer of exactly its size (every slice of it keeps all of
        // it alive while queued, and only what is sent is counted there).
        let masks: Vec<Option<u32>> = spans
            .iter()
            .map(|&(i, _, at, len)| {
                let base = base_of.get(&i)?;
                Some(delta::changed_chunks(&buf[at..at + len], base))
            })
            .collect();
        let exact = spans
            .iter()
            .zip(&masks)
            .map(|(&(_, _, _, len), m)| m.map_or(Ok(len), |m| delta::masked_len(len, m)))
            .sum::<Result<usize, _>>()
            .map_err(|e| PeerError::BadRequest(format!("cannot answer for {path}: {e}")))?;
        let mut sent = Vec::with_capacity(exact);
        let mut parts = Vec::with_capacity(spans.len());
        for (&(i, _, at, len), &mask) in spans.iter().zip(&masks) {
            let block = &buf[at..at + len];
            let from = sent.len();
            match mask {
                Some(m) => delta::take_chunks(block, m, &mut sent),
                None => sent.extend_from_slice(block),
            }
            parts.push((i, mask, from..sent.len()));
        }
        SEGMENTS.give_back(buf);
        let sent = bytes::Bytes::from(sent);
        Ok(parts
            .into_iter()
            .map(|(i, mask, r)| match mask {
                Some(m) => BlockData::chunks(i, m, sent.slice(r)),
                None => BlockData::new(i, sent.slice(r)),
            })
            .collect())
    })
    .await
    .map_err(read_failed)?;
    if let Err(PeerError::ChangedOnDisk(_)) = &res {
        core.recheck(&full, hash);
    }
    res
}

/// Files whose mtime is at most this old may still be written within the
/// tick of the file system's coarse clock that stamped them (a few
/// milliseconds on ext4; two seconds on FAT), leaving their stat as it was.
/// This narrows the window, it does not close it: a write in the same tick
/// just after the file was hashed keeps its stat for good, and is caught
/// by the receiver's check (see [`needs_check`]). Linux 6.13 and later
/// close it on ext4, xfs, btrfs and tmpfs: a write after a stat always
/// gets a new, fine-grained mtime (multigrain timestamps; 2,000 of 2,000
/// on 6.18), and the scan stats a file before and after hashing it.
const RECENT: Duration = Duration::from_secs(3);

/// True when the blocks about to be read from a file whose stat is `seen`
/// must each be checked against their hash before they are sent: unless it
/// is the stat recorded with its content (`recorded`), and older than
/// [`RECENT`] at `now`. Skipping the check saves hashing every byte twice
/// on the sending side (once when indexed, once when sent; a seventh of
/// the sender's CPU in a 1 GiB sync). It is safe because the asker checks
/// every block against its hash whatever happens here: a file changed in
/// place with its stat kept fails that check, and the asker's next try
/// asks with `verify`, which finds it and makes this node read the file
/// again.
fn needs_check(
    seen: Option<LocalStat>,
    recorded: Option<LocalStat>,
    now: std::time::SystemTime,
) -> bool {
    let Some(recorded) = recorded else {
        return true;
    };
    let recent = std::time::UNIX_EPOCH
        .checked_add(Duration::from_nanos(recorded.mtime_ns.max(0) as u64))
        .and_then(|m| now.duration_since(m).ok())
        .is_none_or(|age| age < RECENT);
    recent || seen != Some(recorded)
}

/// Answers a `GetBlockList` from our current entry for `path`, which must
/// still be the version `hash`.
async fn serve_block_list(
    core: &CoreHandle,
    path: RelPath,
    hash: ContentHash,
    groups: Option<Vec<u32>>,
) -> ListAnswer {
    if groups
        .as_ref()
        .is_some_and(|g| g.len() > MAX_GROUPS_PER_REQUEST)
    {
        return Err(PeerError::BadRequest(format!(
            "at most {MAX_GROUPS_PER_REQUEST} groups per block list request"
        )));
    }
    let entry = match core.entry(path.clone()).await {
        Ok(Some(s)) => s.entry,
        Ok(None) => return Err(PeerError::NotHere(path)),
        Err(_) => return Err(PeerError::ShuttingDown),
    };
    if entry.hash != hash || !entry.is_live_file() {
        return Err(PeerError::Changed(path));
    }
    let blocks = &entry.blocks;
    if blocks.len() != blocklist::block_count(entry.size) {
        return Err(PeerError::NoBlockList(path));
    }
    let count = blocklist::group_count(blocks.len());
    match groups {
        // Group hashes are 1/64 of the list: even a 4 TiB file's fit a frame.
        None => Ok(BlockListPart::Groups(blocklist::group_hashes(blocks))),
        Some(gs) => gs
            .into_iter()
            .map(|g| match g as usize {
                g if g < count => Ok(blocklist::group(blocks, g).to_vec()),
                _ => Err(PeerError::BadRequest(format!(
                    "{path} has no block group {g} ({count} groups)"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(BlockListPart::Blocks),
    }
}

/// Reads the whole content of small files for `GetFiles`: each must still
/// be our current version (`hash`) and still match it on disk.
async fn serve_files(core: &CoreHandle, files: Vec<(RelPath, ContentHash)>) -> FilesAnswer {
    if files.len() > MAX_FILES_PER_REQUEST {
        return Err(PeerError::BadRequest(format!(
            "at most {MAX_FILES_PER_REQUEST} files per request"
        )));
    }
    let (paths, hashes): (Vec<RelPath>, Vec<ContentHash>) = files.into_iter().unzip();
    let found = core
        .entries(paths.clone())
        .await
        .map_err(|_| PeerError::ShuttingDown)?;
    let (data, changed) = tokio::task::spawn_blocking(move || {
        let mut changed = Vec::new();
        let data: Vec<Result<FileData, PeerError>> = paths
            .into_iter()
            .zip(hashes)
            .zip(found)
            .map(|((path, hash), found)| match found {
                Some(Served { entry: e, .. }) if e.hash != hash || !e.is_live_file() => {
                    Err(PeerError::Changed(path))
                }
                Some(Served { entry: e, .. }) if e.size > SMALL_FILE_MAX => {
                    Err(PeerError::TooLarge {
                        path,
                        most: SMALL_FILE_MAX,
                    })
                }
                Some(Served { full, entry: e, .. }) => match read_at_most(&full, e.size) {
                    Ok(bytes) if ContentHash::of(&bytes) == hash => Ok(FileData(bytes)),
                    Ok(_) => {
                        changed.push((full, hash));
                        Err(PeerError::ChangedOnDisk(path))
                    }
                    Err(e) => Err(PeerError::Unreadable {
                        path,
                        reason: e.to_string(),
                    }),
                },
                None => Err(PeerError::NotHere(path)),
            })
            .collect();
        (data, changed)
    })
    .await
    .map_err(read_failed)?;
    for (full, hash) in changed {
        core.recheck(&full, hash);
    }
    Ok(data)
}

/// The content of the small files among `entries` (by position), read
/// from disk and checked against each entry's hash: the receiver installs
/// them without asking. A file that is not what its entry says any more
/// is left out (the receiver asks for it; the core is told to look again).
async fn small_contents(ctx: &PeerCtx, entries: &[(u64, FileEntry)]) -> Vec<(u32, FileData)> {
    let wanted: Vec<(u32, std::path::PathBuf, u64, ContentHash)> = entries
        .iter()
        .enumerate()
        .filter(|(_, (_, e))| e.is_live_file() && e.size <= proto::INLINE_MAX)
        .map(|(i, (_, e))| (i as u32, e.path.to_disk(&ctx.dir), e.size, e.hash))
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let read = tokio::task::spawn_blocking(move || {
        let mut changed = Vec::new();
        let mut out = Vec::with_capacity(wanted.len());
        for (i, full, size, hash) in wanted {
            match read_at_most(&full, size) {
                Ok(bytes) if bytes.len() as u64 == size && ContentHash::of(&bytes) == hash => {
                    out.push((i, FileData(bytes)));
                }
                Ok(_) => changed.push((full, hash)),
                // Gone or unreadable: the scanner reports it; the peer asks.
                Err(_) => {}
            }
        }
        (out, changed)
    })
    .await;
    let Ok((out, changed)) = read else {
        return Vec::new();
    };
    for (full, hash) in changed {
        ctx.core.recheck(&full, hash);
    }
    out
}

/// Why a blocking read for a peer ended without its result: the runtime
/// shutting down cancelled it, or it panicked (a bug, reported as such).
fn read_failed(e: tokio::task::JoinError) -> PeerError {
    if e.is_panic() {
        tracing::error!("a read for a peer failed: {e}");
        PeerError::Internal(e.to_string())
    } else {
        PeerError::ShuttingDown
    }
}

/// Reads `full`, but never more than one byte past `size` (a file that
/// grew meanwhile fails the hash check without being read whole).
fn read_at_most(full: &std::path::Path, size: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::with_capacity(size as usize);
    crate::scan::open_nofollow(full)?
        .take(size + 1)
        .read_to_end(&mut out)?;
    Ok(out)
}

/// Dials `addr` and keeps a link to it up, reconnecting with backoff.
pub async fn dial_loop(spec: crate::config::PeerSpec, ctx: PeerCtx) {
    let mut backoff = Duration::from_millis(100);
    let mut warned = String::new();
    loop {
        if ctx.shutdown.is_cancelled() {
            return;
        }
        match dial_once(&spec, &ctx).await {
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
                warned.clear();
            }
            Err(e) => {
                // Said once per distinct reason, then quietly retried.
                let why = format!("{e:#}");
                if why != warned {
                    tracing::warn!("cannot link with peer {spec}: {why}; retrying with backoff");
                    warned = why;
                } else {
                    tracing::debug!("cannot link with peer {spec}: {why}");
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

/// Connects to the first address `addr` resolves to that answers.
async fn connect_any(addr: &str) -> anyhow::Result<tokio::net::TcpStream> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot resolve {addr}: {e}"))?
        .collect();
    let mut last = anyhow::anyhow!("{addr} resolves to no address");
    for a in addrs {
        match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(a)).await
        {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = anyhow::anyhow!("cannot connect to {a}: {e}"),
            Err(_) => last = anyhow::anyhow!("connecting to {a} timed out"),
        }
    }
    Err(last)
}

async fn dial_once(
    spec: &crate::config::PeerSpec,
    ctx: &PeerCtx,
) -> anyhow::Result<(NodeId, LinkEnd)> {
    let stream = connect_any(&spec.addr).await?;
    let _ = stream.set_nodelay(true);
    let (stream, proven) = tokio::time::timeout(HANDSHAKE_TIMEOUT, ctx.tls.connect(stream))
        .await
        .map_err(|_| anyhow::anyhow!("TLS handshake timed out"))?
        .map_err(|e| anyhow::anyhow!("TLS handshake failed: {e}"))?;
    let proven = NodeId(proven);
    // Judged before a single message is sent or read.
    if proven == ctx.me {
        anyhow::bail!("{} is this node itself", spec.addr);
    }
    match spec.id {
        Some(want) if want != proven => anyhow::bail!(
            "refusing the node at {}: it proved id {proven}, but --peer names {want} (another node, or something in the middle); nothing was sent",
            spec.addr
        ),
        Some(_) => {}
        None if !ctx.trust.trusts(proven) => anyhow::bail!(
            "refusing the node at {} with id {proven}: it is not trusted; to trust it run: {}",
            spec.addr,
            ctx.trust.command_for(&ctx.dir, proven)
        ),
        None => {}
    }
    let mut io = FrameIo::new(stream);
    let hello = Hello {
        role: Role::Peer,
        name: ctx.name.clone(),
    };
    // Our `Resume` goes right behind the hello, so the peer starts sending
    // its index as soon as it has said welcome.
    let since = ctx.core.peer_seq(proven).await?;
    let handshake = async {
        proto::send_hello(&mut io, &hello).await?;
        io.send(&PeerMessage::Resume { since }).await?;
        anyhow::Ok(proto::recv_welcome(&mut io).await?)
    };
    let w = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| anyhow::anyhow!("handshake timed out"))??;
    if w.node_id != proven {
        anyhow::bail!(
            "the node at {} claims id {} but proved {proven}; link refused",
            spec.addr,
            w.node_id
        );
    }
    ctx.links
        .dialed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(spec.addr.clone(), proven);
    let end = run_link(io, proven, w.name, ctx.me, ctx.clone(), Some(since)).await;
    // (Another link to the same peer may have applied more since `since`
    // was read: the peer then sends a few entries twice, which is harmless.)
    Ok((proven, end))
}

/// How long a TLS handshake plus hello may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    /// Blocks go out unchecked only from a file whose stat is the one
    /// recorded with its content and older than a clock tick of the
    /// coarsest file systems.
    #[test]
    fn blocks_are_checked_unless_the_file_is_as_recorded_and_settled() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |secs_ago: u64| {
            let t = now - Duration::from_secs(secs_ago);
            LocalStat {
                inode: 7,
                size: 3 << 20,
                mtime_ns: t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64,
                mode: 0o644,
            }
        };
        let old = at(60);
        assert!(!needs_check(Some(old), Some(old), now));
        // Nothing recorded that stands for the content, or no stat seen.
        assert!(needs_check(Some(old), None, now));
        assert!(needs_check(None, Some(old), now));
        // Any part of the stat differs.
        for seen in [
            LocalStat { inode: 8, ..old },
            LocalStat { size: 1, ..old },
            LocalStat {
                mtime_ns: old.mtime_ns + 1,
                ..old
            },
            LocalStat { mode: 0o600, ..old },
        ] {
            assert!(needs_check(Some(seen), Some(old), now), "{seen:?}");
        }
        // Written within the last few seconds, or in the future.
        let fresh = at(1);
        assert!(needs_check(Some(fresh), Some(fresh), now));
        let ahead = LocalStat {
            mtime_ns: old.mtime_ns + 3_600_000_000_000,
            ..old
        };
        assert!(needs_check(Some(ahead), Some(ahead), now));
        assert!(!needs_check(Some(at(4)), Some(at(4)), now));
    }
}
