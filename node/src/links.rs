//! The registry of live peer links and the handle the rest of the node
//! uses to talk over one (requests with answers, posted messages), plus the
//! protocol's per-request limits. Its own module so that the core and
//! transfers can use links without importing the peer protocol task (which
//! talks to the core through its handle): no import circle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tandem_common::proto::{
    ApiError, BlockBase, BlockData, BlockListPart, FileData, PeerAnswer, PeerError, PeerMessage,
    PeerQuery,
};
use tandem_common::{ContentHash, NodeId, RelPath};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// Most blocks one `GetBlocks` may ask for (keeps answers under the frame limit).
pub const MAX_BLOCKS_PER_REQUEST: usize = 64;
/// Answer bytes queued for one peer at most (far above what a peer's own
/// transfer windows ask for at once).
pub const MAX_LINK_QUEUED_BYTES: usize = 256 << 20;
/// Most files one `GetFiles` may ask for.
pub const MAX_FILES_PER_REQUEST: usize = 128;
/// Largest file `GetFiles` serves (with the count limit, answers stay far
/// under the frame limit).
pub const SMALL_FILE_MAX: u64 = 64 * 1024;

/// An error a request can end with when the peer gives no answer at all.
pub(crate) trait Unanswered {
    /// The link closed first.
    fn closed() -> Self;
    /// Nothing came from `peer` in time.
    fn timed_out(peer: &str) -> Self;
}

impl Unanswered for PeerError {
    fn closed() -> Self {
        PeerError::LinkClosed
    }
    fn timed_out(peer: &str) -> Self {
        PeerError::Timeout(peer.to_string())
    }
}

impl Unanswered for ApiError {
    fn closed() -> Self {
        ApiError::Other("link closed".into())
    }
    fn timed_out(peer: &str) -> Self {
        ApiError::Other(format!("{peer} did not answer in time"))
    }
}

/// Requests waiting for their answer, by request number.
pub(crate) type Pending<T> = Mutex<HashMap<u64, oneshot::Sender<T>>>;
pub(crate) type BlockAnswer = Result<Vec<BlockData>, PeerError>;
pub(crate) type FilesAnswer = Result<Vec<Result<FileData, PeerError>>, PeerError>;
pub(crate) type ListAnswer = Result<BlockListPart, PeerError>;

/// Removes and returns the waiter for `req` (a poisoned map only means
/// another task panicked mid-insert; the map itself is still usable).
pub(crate) fn take_waiter<T>(map: &Pending<T>, req: u64) -> Option<oneshot::Sender<T>> {
    map.lock().unwrap_or_else(|e| e.into_inner()).remove(&req)
}

/// Answers peers' questions (the merged table, node figures, the cache).
pub trait Answerer: Send + Sync {
    /// Answers `q`.
    fn answer(
        &self,
        q: PeerQuery,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<PeerAnswer, ApiError>> + Send + '_>,
    >;
}

/// A live link, as the rest of the node sees it.
pub struct LinkHandle {
    /// The peer's id.
    pub peer: NodeId,
    /// The peer's name.
    pub name: String,
    /// Who dialed this link.
    pub(crate) dialed_by: NodeId,
    pub(crate) tx: mpsc::UnboundedSender<PeerMessage>,
    pub(crate) blocks: Pending<BlockAnswer>,
    pub(crate) files: Pending<FilesAnswer>,
    pub(crate) lists: Pending<ListAnswer>,
    pub(crate) answers: Pending<Result<PeerAnswer, ApiError>>,
    pub(crate) next_req: AtomicU64,
    /// Feed event batches queued for this peer and not yet written.
    pub(crate) events_queued: AtomicUsize,
    /// Bytes of answers (blocks, files) made for the peer and not yet
    /// written to it: a peer that asks without reading is cut off at
    /// [`MAX_LINK_QUEUED_BYTES`].
    pub(crate) queued_bytes: AtomicUsize,
    pub(crate) closed: CancellationToken,
}

impl LinkHandle {
    /// Sends the request `msg(req)` and waits for the answer registered in
    /// `map` under `req`, or `closed()` when the link goes away first.
    async fn request<T>(
        &self,
        map: &Pending<T>,
        msg: impl FnOnce(u64) -> PeerMessage,
        closed: impl Fn() -> T,
    ) -> T {
        /// Forgets the waiter when the request ends any way, including
        /// being dropped by a caller's timeout.
        struct Forget<'a, T>(&'a Pending<T>, u64);
        impl<T> Drop for Forget<'_, T> {
            fn drop(&mut self) {
                take_waiter(self.0, self.1);
            }
        }
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        map.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(req, tx);
        let _forget = Forget(map, req);
        if self.tx.send(msg(req)).is_err() {
            return closed();
        }
        tokio::select! {
            r = rx => r.unwrap_or_else(|_| closed()),
            _ = self.closed.cancelled() => closed(),
        }
    }

    /// Asks the peer for blocks of the version `hash` of `path`; those
    /// with a base come back as their changed chunks only. With `verify`
    /// the peer checks every block against its hash before sending it.
    pub async fn get_blocks(
        &self,
        path: RelPath,
        hash: ContentHash,
        blocks: Vec<u32>,
        bases: Vec<BlockBase>,
        verify: bool,
    ) -> BlockAnswer {
        let msg = |req| PeerMessage::GetBlocks {
            req,
            path,
            hash,
            blocks,
            bases,
            verify,
        };
        self.request(&self.blocks, msg, || Err(PeerError::LinkClosed))
            .await
    }

    /// Asks the peer for the whole content of several small files.
    pub async fn get_files(&self, files: Vec<(RelPath, ContentHash)>) -> FilesAnswer {
        let msg = |req| PeerMessage::GetFiles { req, files };
        self.request(&self.files, msg, || Err(PeerError::LinkClosed))
            .await
    }

    /// Asks the peer for part of the block list of the version `hash` of
    /// `path`: the group hashes (`None`) or the block hashes of some groups.
    pub async fn get_block_list(
        &self,
        path: RelPath,
        hash: ContentHash,
        groups: Option<Vec<u32>>,
    ) -> ListAnswer {
        let msg = |req| PeerMessage::GetBlockList {
            req,
            path,
            hash,
            groups,
        };
        self.request(&self.lists, msg, || Err(PeerError::LinkClosed))
            .await
    }

    /// Whether this link has closed (its requests fail).
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Queues a message to the peer (in order; never blocks).
    pub fn post(&self, msg: PeerMessage) {
        let _ = self.tx.send(msg);
    }

    /// Asks the peer a question.
    pub async fn query(&self, q: PeerQuery) -> Result<PeerAnswer, ApiError> {
        let msg = |req| PeerMessage::Query { req, q };
        self.request(&self.answers, msg, || Err(ApiError::closed()))
            .await
    }
}

#[cfg(test)]
impl LinkHandle {
    /// A link with no connection behind it (for tests): what is posted to
    /// it arrives at the receiver returned.
    pub(crate) fn detached(
        peer: NodeId,
        dialed_by: NodeId,
    ) -> (Arc<LinkHandle>, mpsc::UnboundedReceiver<PeerMessage>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let h = LinkHandle {
            peer,
            name: format!("{peer}"),
            dialed_by,
            tx,
            blocks: Default::default(),
            files: Default::default(),
            lists: Default::default(),
            answers: Default::default(),
            next_req: AtomicU64::new(1),
            events_queued: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            closed: CancellationToken::new(),
        };
        (Arc::new(h), rx)
    }
}

/// How long a request whose link closed waits for the link that replaces
/// it (the other dial of a simultaneous pair) before it fails.
const REPLACED_WITHIN: std::time::Duration = std::time::Duration::from_millis(500);

/// The registry of live links.
#[derive(Clone)]
pub struct Links {
    pub(crate) me: NodeId,
    pub(crate) map: Arc<Mutex<HashMap<NodeId, Arc<LinkHandle>>>>,
    pub(crate) changed: Arc<watch::Sender<u64>>,
    /// Which node answered at each configured peer address.
    pub(crate) dialed: Arc<Mutex<HashMap<String, NodeId>>>,
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
    pub fn dialed(&self, addr: &str) -> Option<NodeId> {
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
    pub(crate) fn register(&self, h: Arc<LinkHandle>) -> bool {
        let keeper = self.me.min(h.peer);
        let mut map = self.lock();
        if let Some(old) = map.get(&h.peer) {
            if old.dialed_by == keeper || h.dialed_by != keeper {
                return false;
            }
            old.closed.cancel();
        }
        map.insert(h.peer, h);
        drop(map);
        self.changed.send_modify(|g| *g += 1);
        true
    }

    pub(crate) fn unregister(&self, h: &Arc<LinkHandle>) {
        let mut map = self.lock();
        if map.get(&h.peer).is_some_and(|cur| Arc::ptr_eq(cur, h)) {
            map.remove(&h.peer);
        }
        drop(map);
        self.changed.send_modify(|g| *g += 1);
    }

    /// Asks `peer` over its link, each try within `per_try` and all of it
    /// within `within`. When both nodes dialed at once, the link a request
    /// went out on may be replaced by the one both keep: the request is
    /// then asked again on that one (at most three tries) instead of
    /// failing. `None` when the peer is not connected.
    pub(crate) async fn ask<T, E, F, Fut>(
        &self,
        peer: &NodeId,
        per_try: std::time::Duration,
        within: std::time::Duration,
        ask: F,
    ) -> Option<(Arc<LinkHandle>, Result<T, E>)>
    where
        F: Fn(Arc<LinkHandle>) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        E: Unanswered,
    {
        let deadline = tokio::time::Instant::now() + within;
        let mut link = self.get(peer)?;
        let mut tries = 0;
        loop {
            tries += 1;
            let until = deadline.min(tokio::time::Instant::now() + per_try);
            let res = tokio::time::timeout_at(until, ask(link.clone()))
                .await
                .unwrap_or_else(|_| Err(E::timed_out(&link.name)));
            if res.is_ok() || tries == 3 || !link.is_closed() {
                return Some((link, res));
            }
            // The other dial of a simultaneous pair may still be finishing
            // its handshake.
            let until = deadline.min(tokio::time::Instant::now() + REPLACED_WITHIN);
            match tokio::time::timeout_at(until, self.wait_replaced(*peer, &link)).await {
                Ok(newer) => link = newer,
                Err(_) => return Some((link, res)),
            }
        }
    }

    /// Waits until a live link to `peer` other than `old` is up.
    pub(crate) async fn wait_replaced(
        &self,
        peer: NodeId,
        old: &Arc<LinkHandle>,
    ) -> Arc<LinkHandle> {
        let mut rx = self.changed.subscribe();
        loop {
            let now = self.get(&peer);
            if let Some(h) = now.filter(|h| !Arc::ptr_eq(h, old) && !h.closed.is_cancelled()) {
                return h;
            }
            if rx.changed().await.is_err() {
                // The registry lives as long as the node: not reached.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Waits until there is no link to `peer`.
    pub(crate) async fn wait_gone(&self, peer: NodeId) {
        let mut rx = self.changed.subscribe();
        while self.get(&peer).is_some() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Answers on the link `good` only; on any other, fails once it closes.
    async fn answer_on(
        good: Option<Arc<LinkHandle>>,
        l: Arc<LinkHandle>,
    ) -> Result<u32, PeerError> {
        if good.is_some_and(|g| Arc::ptr_eq(&g, &l)) {
            return Ok(2);
        }
        l.closed.cancelled().await;
        Err(PeerError::LinkClosed)
    }

    /// A request on a link that a newer one replaces is asked again on the
    /// newer one; with no newer link it fails soon after its link closed.
    #[tokio::test(start_paused = true)]
    async fn a_request_follows_the_link_that_replaces_its_own() {
        const MINUTE: Duration = Duration::from_secs(60);
        let (me, peer) = (NodeId::random(), NodeId::random());
        let links = Links::new(me);
        let (old, _rx) = LinkHandle::detached(peer, me.max(peer));
        assert!(links.register(old.clone()));
        let (new, _rx2) = LinkHandle::detached(peer, me.min(peer));
        let tried = Arc::new(Mutex::new(Vec::new()));
        let asking = tokio::spawn({
            let (links, new, tried) = (links.clone(), new.clone(), tried.clone());
            async move {
                let ask = |l: Arc<LinkHandle>| {
                    tried.lock().unwrap().push(l.clone());
                    answer_on(Some(new.clone()), l)
                };
                links.ask(&peer, MINUTE, MINUTE, ask).await
            }
        });
        while tried.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        assert!(links.register(new.clone()));
        let (via, r) = asking.await.unwrap().expect("connected");
        assert!(Arc::ptr_eq(&via, &new));
        assert_eq!(r, Ok(2));
        let tried = tried.lock().unwrap().clone();
        assert!(
            tried.len() == 2 && Arc::ptr_eq(&tried[0], &old),
            "asked on the first link, then again"
        );

        // Closed for good: no newer link comes.
        let t0 = tokio::time::Instant::now();
        let asking = tokio::spawn({
            let links = links.clone();
            async move {
                links
                    .ask(&peer, MINUTE, MINUTE, |l| answer_on(None, l))
                    .await
            }
        });
        tokio::task::yield_now().await;
        new.closed.cancel();
        let (_, r) = asking.await.unwrap().expect("was connected");
        assert_eq!(r, Err(PeerError::LinkClosed));
        assert!(t0.elapsed() <= REPLACED_WITHIN, "{:?}", t0.elapsed());
        let unknown = NodeId::random();
        assert!(
            links
                .ask(&unknown, MINUTE, MINUTE, |l| answer_on(None, l))
                .await
                .is_none()
        );

        // All of it within `within`, however long one try may take.
        links.unregister(&new);
        let (slow, _rx3) = LinkHandle::detached(peer, me.min(peer));
        assert!(links.register(slow));
        let t0 = tokio::time::Instant::now();
        let (_, r) = links
            .ask(&peer, MINUTE, Duration::from_secs(5), |l| {
                answer_on(None, l)
            })
            .await
            .expect("connected");
        assert!(r.is_err());
        assert_eq!(t0.elapsed(), Duration::from_secs(5));
    }
}
